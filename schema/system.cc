#include "schema/system.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace tally {

Status EnsureOpenFileLimit(uint64_t needed, std::string_view what) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0)
    return Status::Error(std::string("cannot read the open-file limit: ") + std::strerror(errno));
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= needed) return Status::Ok();
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
    // A process with CAP_SYS_RESOURCE (root, or a service granted it) may raise the hard limit
    // itself, up to the kernel's fs.nr_open: try that before giving up.
    rlimit raised{needed, needed};
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) return Status::Ok();
    return Status::Error(std::string(what) + " needs up to " + std::to_string(needed) +
                         " open files, but this process may open at most " +
                         std::to_string(limit.rlim_max) +
                         " (hard limit; raise it with `ulimit -Hn` as root, LimitNOFILE= in a "
                         "systemd unit, or nofile in /etc/security/limits.conf)");
  }
  // Raise to the hard limit, not just to `needed`: connections come and go, and the kernel
  // charges nothing for an unused allowance.
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0)
    return Status::Error(std::string("cannot raise the open-file limit to ") +
                         std::to_string(limit.rlim_max) + ": " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace tally
