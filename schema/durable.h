// Files that survive a crash, written one way for keys, captures and results: bytes written
// whole (looping on short writes and EINTR), fsync'd, and a new name's folder entry fsync'd
// too (fsync(2) on the file does not make its directory entry durable; POSIX).
// Errors name the file and the system's reason. Thread-compatible.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schema/status.h"

namespace tally {

// An open file descriptor, closed when it goes out of scope. Move-only.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  // Closes now; close(2) can report a failed write-back, so the result matters.
  int Close();

 private:
  int fd_;
};

// write(2) until every byte of every piece is out (one writev(2) per loop). `what` names the
// file in an error ("cannot write WHAT: ...").
Status WriteAll(int fd, std::vector<std::span<const uint8_t>> pieces, std::string_view what);
inline Status WriteAll(int fd, std::span<const uint8_t> bytes, std::string_view what) {
  return WriteAll(fd, std::vector<std::span<const uint8_t>>{bytes}, what);
}
// A text's bytes, for the functions here.
inline std::span<const uint8_t> AsBytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}
// fsync(2) of an open file.
Status SyncFile(int fd, std::string_view what);
// fsync(2) of a folder: what makes a file created, renamed or linked in it durable by name.
Status SyncFolder(const std::filesystem::path& folder);

// `bytes` to `target` with `mode` via a temporary file in the same folder, fsync, then rename
// (`replace`) or link (fails if `target` exists: no window in which a concurrent writer's file
// is clobbered), then the folder's fsync. A crash leaves the old file or the new, never half.
Status WriteFileAtomically(const std::filesystem::path& target, std::span<const uint8_t> bytes,
                           mode_t mode, bool replace);

// A file appended to durably: each Append is written whole and fsync'd before it returns. Opening
// creates it with `mode` when missing, and then syncs its folder. Move-only.
class AppendFile {
 public:
  // `what` names the file in errors, e.g. "the results file".
  static Result<AppendFile> Open(const std::filesystem::path& path, mode_t mode,
                                 std::string_view what);
  AppendFile(AppendFile&& other) noexcept;
  AppendFile& operator=(AppendFile&& other) noexcept;
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  ~AppendFile();
  Status Append(std::span<const uint8_t> bytes);
  Status Append(std::string_view text) { return Append(AsBytes(text)); }
  const std::filesystem::path& path() const { return path_; }

 private:
  AppendFile(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::filesystem::path path_;
};

}  // namespace tally
