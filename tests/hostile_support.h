// Helpers for hostile-peer tests: a tiny msgpack writer for hand-built frames, and a tally of
// the broker's reject lines that a test can wait on without rescanning every log line.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "schema/log.h"

namespace tally::test {

// Appends msgpack encodings, one value per call, so a test can build any shape — including
// ones schema.cc would never encode. Smallest encodings, as msgpack-c writes them.
class Pack {
 public:
  Pack& Array(size_t n) {
    if (n < 16) return Byte(0x90 | n);
    if (n <= 0xffff) return Byte(0xdc).Be(n, 2);
    return Byte(0xdd).Be(n, 4);
  }
  Pack& Map(size_t n) {
    if (n < 16) return Byte(0x80 | n);
    return Byte(0xde).Be(n, 2);
  }
  Pack& Uint(uint64_t v) {
    if (v < 128) return Byte(v);
    if (v <= 0xff) return Byte(0xcc).Be(v, 1);
    if (v <= 0xffff) return Byte(0xcd).Be(v, 2);
    if (v <= 0xffffffffull) return Byte(0xce).Be(v, 4);
    return Byte(0xcf).Be(v, 8);
  }
  Pack& NegInt(int64_t v) {  // REQUIRES: v < 0
    if (v >= -32) return Byte(static_cast<uint8_t>(v));
    return Byte(0xd3).Be(static_cast<uint64_t>(v), 8);
  }
  Pack& Nil() { return Byte(0xc0); }
  Pack& Bool(bool b) { return Byte(b ? 0xc3 : 0xc2); }
  Pack& Float(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    return Byte(0xcb).Be(bits, 8);
  }
  Pack& Str(std::string_view s) {
    if (s.size() < 32)
      Byte(0xa0 | s.size());
    else if (s.size() <= 0xff)
      Byte(0xd9).Be(s.size(), 1);
    else
      Byte(0xda).Be(s.size(), 2);
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  Pack& Bin(const std::vector<uint8_t>& b) {
    if (b.size() <= 0xff)
      Byte(0xc4).Be(b.size(), 1);
    else
      Byte(0xc5).Be(b.size(), 2);
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return *this;
  }
  Pack& Ext(uint8_t type, uint8_t value) { return Byte(0xd4).Byte(type).Byte(value); }  // fixext1
  Pack& Raw(const std::vector<uint8_t>& b) {
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return *this;
  }
  std::vector<uint8_t> bytes() const { return bytes_; }

 private:
  Pack& Byte(uint64_t b) {
    bytes_.push_back(static_cast<uint8_t>(b));
    return *this;
  }
  Pack& Be(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  std::vector<uint8_t> bytes_;
};

// One `broker event=reject from=NAME reason="..." size=N` line, unquoted.
struct RejectLine {
  std::string from;
  std::string reason;
  uint64_t size = 0;
  auto operator<=>(const RejectLine&) const = default;
  friend void PrintTo(const RejectLine& r, std::ostream* os) {
    *os << "{from=" << r.from << " reason=\"" << r.reason << "\" size=" << r.size << "}";
  }
};

// Parses reject lines as they are logged. A flood logs tens of thousands of lines; waiting on a
// running total keeps each wake-up O(1) where LogWatcher would rescan every line.
class RejectTally {
 public:
  // A sink that records reject lines, then passes every line on to `next` (if any).
  LogSink Sink(LogSink next) {
    return [this, next](const std::string& line) {
      if (auto r = Parse(line)) {
        std::lock_guard<std::mutex> lock(mu_);
        lines_.push_back(*r);
        cv_.notify_all();
      }
      if (next) next(line);
    };
  }
  // True once `n` reject lines have been logged in total (waits up to `timeout`).
  bool WaitTotal(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return lines_.size() >= n; });
  }
  size_t Total() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_.size();
  }
  std::vector<RejectLine> Lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }
  // Lines from one sender, in the order the broker logged them.
  std::vector<RejectLine> From(const std::string& from) {
    std::vector<RejectLine> out;
    for (auto& l : Lines())
      if (l.from == from) out.push_back(l);
    return out;
  }

  static std::optional<RejectLine> Parse(const std::string& line) {
    constexpr std::string_view kHead = "broker event=reject from=";
    if (line.rfind(kHead, 0) != 0) return std::nullopt;
    RejectLine r;
    size_t i = kHead.size();
    size_t sp = line.find(' ', i);
    if (sp == std::string::npos) return std::nullopt;
    r.from = line.substr(i, sp - i);
    constexpr std::string_view kReason = " reason=\"";
    if (line.compare(sp, kReason.size(), kReason) != 0) return std::nullopt;
    i = sp + kReason.size();
    for (; i < line.size() && line[i] != '"'; ++i) {
      if (line[i] == '\\' && i + 1 < line.size()) ++i;
      r.reason += line[i];
    }
    constexpr std::string_view kSize = "\" size=";
    if (line.compare(i, kSize.size(), kSize) != 0) return std::nullopt;
    r.size = std::stoull(line.substr(i + kSize.size()));
    return r;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<RejectLine> lines_;
};

}  // namespace tally::test
