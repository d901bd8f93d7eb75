// Status and Result<T>: the one error type every fallible Tally call returns.
// Values, not exceptions: adapters around cppzmq and msgpack catch and convert.
// Thread-compatible (plain values).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tally {

class [[nodiscard]] Status {
 public:
  // What a caller may branch on; the message is for people.
  enum class Code {
    kOk,
    kError,        // anything else
    kUnauthentic,  // a sealed payload did not open under its binding (key, binding or bytes)
  };
  Status() = default;  // ok
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message), Code::kError); }
  static Status Unauthentic(std::string message) {
    return Status(std::move(message), Code::kUnauthentic);
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // The reason, for logs and users. Empty when ok(). Never holds a secret or plaintext value.
  const std::string& message() const { return message_; }

 private:
  Status(std::string message, Code code) : message_(std::move(message)), code_(code) {}
  std::string message_;
  Code code_ = Code::kOk;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}       // NOLINT: implicit by design
  Result(Status error) : v_(std::move(error)) {}  // NOLINT; REQUIRES: !error.ok()

  bool ok() const { return std::holds_alternative<T>(v_); }
  // REQUIRES: ok()
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  // The error; Status::Ok() when ok().
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }
  const std::string& message() const {
    static const std::string kEmpty;
    return ok() ? kEmpty : std::get<Status>(v_).message();
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace tally

#define TALLY_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::tally::Status tally_status_ = (expr);        \
    if (!tally_status_.ok()) return tally_status_; \
  } while (0)
