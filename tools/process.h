// Child processes for launchers, benchmarks and tests: spawn, read stdout lines with a
// deadline, wait for exit with a deadline, stop. Waiting is on file descriptors (the child's
// stdout pipe and a pidfd), never on sleeps.
// Thread-compatible.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "schema/status.h"

namespace tally {

class Child {
 public:
  // Starts argv[0] (a path) with argv. Its stdout is a pipe read by ReadLine; its stderr goes
  // to `stderr_path` (appended) when given, into the stdout pipe when `merge_stderr`, else is
  // inherited. `nice`: the child's scheduling niceness (setpriority, before exec; 0 leaves it).
  static Result<Child> Spawn(const std::vector<std::string>& argv,
                             const std::filesystem::path& stderr_path = {},
                             bool merge_stderr = false, int nice = 0);
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();  // SIGKILLs and reaps a child still running

  pid_t pid() const { return pid_; }
  // The next stdout line (without newline), or nullopt on EOF or when `timeout` passes.
  std::optional<std::string> ReadLine(std::chrono::milliseconds timeout);
  // Everything left on stdout until EOF or `timeout`.
  std::string ReadAll(std::chrono::milliseconds timeout);
  // The exit code (128+N for a signal N), or nullopt if still running after `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool running();
  void Signal(int sig);
  // SIGTERM, then SIGKILL if not gone after `grace`. Returns the exit code.
  int Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

 private:
  Child() = default;
  void Close();
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int pid_fd_ = -1;
  std::optional<int> status_;
  std::string buffer_;
  bool eof_ = false;
};

// The last non-empty line of a text file ("" if none): for showing why a process failed.
std::string LastLine(const std::filesystem::path& path);
// A whole file as bytes or text ("" / empty if it cannot be read), and text split into lines
// (without their newlines): for logs, outputs and results files.
std::vector<uint8_t> ReadBytes(const std::filesystem::path& path);
std::string ReadText(const std::filesystem::path& path);
std::vector<std::string> Lines(const std::string& text);
// The permission bits of a file (st_mode & 07777), or 0 when it cannot be read.
mode_t FileMode(const std::filesystem::path& path);
// How many times `needle` occurs in `text` (overlapping occurrences count).
size_t CountOf(const std::string& text, const std::string& needle);

}  // namespace tally
