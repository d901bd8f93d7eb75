// Log lines. Every Tally process logs one line per event to stderr:
//   2026-11-30T23:50:08.123Z broker event=phase round=4c0d… phase=sum seq=2
// The component ("broker", "node alice", "launch") and the key=value fields come from the
// library that logs; the timestamp (RFC 3339, UTC, milliseconds) is added by the sink that
// writes the line, so in-process tests get the bare lines. Never a secret or a plaintext.
// Thread-safety: StderrLog's sink may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>

namespace tally {

// One line, without a trailing newline.
using LogSink = std::function<void(const std::string& line)>;

// "2026-11-30T23:50:08.123Z" (RFC 3339, UTC, milliseconds).
std::string Rfc3339(std::chrono::system_clock::time_point t);

// A sink that writes "TIMESTAMP LINE\n" to stderr in one write(2): lines never interleave.
LogSink StderrLog();

}  // namespace tally
