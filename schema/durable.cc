#include "schema/durable.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace tally {
namespace {

std::string Errno() { return std::strerror(errno); }

}  // namespace

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

int Fd::Close() { return ::close(std::exchange(fd_, -1)); }

Status WriteAll(int fd, std::vector<std::span<const uint8_t>> pieces, std::string_view what) {
  std::vector<iovec> iov;
  for (auto p : pieces)
    if (!p.empty()) iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
  size_t first = 0;
  while (first < iov.size()) {
    const ssize_t n = ::writev(fd, iov.data() + first, static_cast<int>(iov.size() - first));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Error("cannot write " + std::string(what) + ": " + Errno());
    }
    size_t left = static_cast<size_t>(n);
    while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < iov.size()) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return Status::Ok();
}

Status SyncFile(int fd, std::string_view what) {
  if (::fsync(fd) != 0) return Status::Error("cannot sync " + std::string(what) + ": " + Errno());
  return Status::Ok();
}

Status SyncFolder(const std::filesystem::path& folder) {
  const std::filesystem::path dir = folder.empty() ? "." : folder;
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0)
    return Status::Error("cannot sync the folder " + dir.string() + ": " + Errno());
  return Status::Ok();
}

Status WriteFileAtomically(const std::filesystem::path& target, std::span<const uint8_t> bytes,
                           mode_t mode, bool replace) {
  const std::string label = target.string();
  const std::filesystem::path temp =
      target.parent_path() / ("." + target.filename().string() + ".tmp");
  const int flags = O_CREAT | O_EXCL | O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC;
  int raw = ::open(temp.c_str(), flags, mode);
  if (raw < 0 && errno == EEXIST) {
    // A leftover from an interrupted run: it was never renamed into place, so drop it.
    ::unlink(temp.c_str());
    raw = ::open(temp.c_str(), flags, mode);
  }
  if (raw < 0) return Status::Error(temp.string() + ": cannot create: " + Errno());
  Fd fd(raw);
  Status status = Status::Ok();
  if (::fchmod(fd.get(), mode) != 0)  // the umask may have removed bits we want (0644)
    status = Status::Error(temp.string() + ": cannot chmod: " + Errno());
  if (status.ok()) status = WriteAll(fd.get(), bytes, temp.string());
  if (status.ok()) status = SyncFile(fd.get(), temp.string());
  if (status.ok() && fd.Close() != 0)
    status = Status::Error(temp.string() + ": cannot close: " + Errno());
  if (status.ok()) {
    if (replace) {
      if (::rename(temp.c_str(), target.c_str()) != 0)
        status = Status::Error(label + ": cannot rename into place: " + Errno());
    } else if (::link(temp.c_str(), target.c_str()) != 0) {
      status = errno == EEXIST ? Status::Error(label + " exists; use --force to replace it")
                               : Status::Error(label + ": cannot link into place: " + Errno());
    }
  }
  ::unlink(temp.c_str());  // after rename it is gone already; after link it is a second name
  if (!status.ok()) return status;
  return SyncFolder(target.parent_path());
}

Result<AppendFile> AppendFile::Open(const std::filesystem::path& path, mode_t mode,
                                    std::string_view what) {
  const bool existed = ::access(path.c_str(), F_OK) == 0;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode);
  if (fd < 0)
    return Status::Error("cannot open " + std::string(what) + " " + path.string() + ": " + Errno());
  AppendFile file(fd, path);
  if (!existed) TALLY_RETURN_IF_ERROR(SyncFolder(path.parent_path()));  // the new name
  return file;
}

AppendFile::AppendFile(AppendFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

AppendFile& AppendFile::operator=(AppendFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status AppendFile::Append(std::span<const uint8_t> bytes) {
  TALLY_RETURN_IF_ERROR(WriteAll(fd_, bytes, path_.string()));
  return SyncFile(fd_, path_.string());
}

}  // namespace tally
