// Process set-up shared by Tally's executables.
// Thread-safety: call from main() before starting threads.
#pragma once

#include <cstdint>
#include <string_view>

#include "schema/status.h"

namespace tally {

// Makes sure this process may hold at least `needed` open files: raises the soft
// RLIMIT_NOFILE towards the hard limit where it is lower. When the hard limit itself is lower,
// raises both to `needed` where this process may (CAP_SYS_RESOURCE), else fails, saying what to
// change. `what` says what needs them ("a roster of 1000 parties").
Status EnsureOpenFileLimit(uint64_t needed, std::string_view what);

}  // namespace tally
