#include "schema/log.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

namespace tally {

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch());
  const std::time_t seconds = static_cast<std::time_t>(ms.count() / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char out[64];  // room for any int fields, so the format can never be cut short
  std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(ms.count() % 1000));
  return out;
}

LogSink StderrLog() {
  return [](const std::string& line) {
    const std::string out = Rfc3339(std::chrono::system_clock::now()) + " " + line + "\n";
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::write(STDERR_FILENO, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // nowhere left to report it
      done += static_cast<size_t>(n);
    }
  };
}

}  // namespace tally
