// Helpers for the broker's tests over real sockets: a tiny msgpack writer for hand-built frames,
// a tally of the broker's reject lines that a test can wait on without rescanning every log line,
// and a hospital played by a test (TestHospital) that adds up what the broker routes to it.
#pragma once

#include <algorithm>
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

#include "nodes/hospital_round.h"
#include "schema/log.h"
#include "tests/support.h"

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

// The hospital played by a test over its own TestParty: it requests rounds, keeps what the
// broker sends it for a round (the keys batch, masked inputs, unmasks) and adds it up as
// tally-node does (HospitalRound, nodes/hospital_round.h), so a test checks the exact aggregate.
class TestHospital {
 public:
  TestHospital(const std::filesystem::path& keys, const std::string& router,
               const std::string& phases)
      : party_(keys, "hospital", router, phases), sealer_(MakeSealer(keys, "hospital")) {}

  TestParty& party() { return party_; }
  const Sealer& sealer() const { return sealer_; }

  // Asks for a round of `participants` (integers in [0, 1000]) with threshold `threshold` (0:
  // the broker's safe minimum) and each phase's deadline `deadline_ms` (0: the broker's), and
  // returns its open update (nullopt if none came for `ticket`).
  std::optional<PhaseUpdate> Request(uint64_t ticket, const std::vector<std::string>& participants,
                                     uint32_t threshold = 0, uint32_t deadline_ms = 0) {
    tally::Request request{ticket, {"", 1000, 1, participants}, deadline_ms};
    request.params.threshold = threshold;
    party_.Send(request);
    for (int tries = 0; tries < 8; ++tries) {  // skips a republished open of an earlier round
      auto open = party_.WaitPhase(Phase::kOpen);
      if (!open) break;
      if (open->ticket == ticket) return open;
    }
    ADD_FAILURE() << "no round opened for ticket " << ticket;
    return std::nullopt;
  }

  // Reads what the broker sends the hospital for `round` until it holds the keys batch,
  // `partials` masked inputs and `unmasks` unmasks (in the order they came); false if they did
  // not all come within `timeout`. A message for another round, or of another type, fails the
  // test.
  bool Collect(const RoundId& round, size_t partials, size_t unmasks,
               milliseconds timeout = kWait) {
    if (round != round_) {
      round_ = round;
      keys_.reset();
      partials_.clear();
      unmasks_.clear();
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!keys_ || partials_.size() < partials || unmasks_.size() < unmasks) {
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      std::optional<Message> m = party_.Receive(std::max(left, milliseconds(0)));
      if (!m) return false;
      if (auto* b = std::get_if<Batch>(&*m); b && b->round == round) {
        EXPECT_EQ(b->kind, BatchKind::kKeys) << "the hospital got a batch of another kind";
        EXPECT_FALSE(keys_.has_value()) << "the hospital got a second keys batch";
        keys_ = std::move(*b);
      } else if (auto* e = std::get_if<Envelope>(&*m); e && e->round == round) {
        EXPECT_EQ(e->to, "hospital");
        (e->kind == EnvelopeKind::kPartial ? partials_ : unmasks_).push_back(std::move(*e));
      } else {
        ADD_FAILURE() << "the hospital got message type " << m->index() << " unexpectedly";
      }
    }
    return true;
  }
  const std::optional<Batch>& keys() const { return keys_; }
  const std::vector<Envelope>& partials() const { return partials_; }
  const std::vector<Envelope>& unmasks() const { return unmasks_; }

  // What the hospital computes from what Collect kept, for the round whose unmask (or later)
  // update is `u`: its view from the keys batch, every masked input opened and added, the
  // unmasks opened and checked, the masks removed. Errors are HospitalRound's.
  Result<std::vector<uint64_t>> Aggregate(const PhaseUpdate& u) const {
    if (!keys_) return Status::Error("no keys batch");
    HospitalRound h(sealer_, u.round, u.params);
    TALLY_RETURN_IF_ERROR(h.Learn(*keys_, u.sets));
    const auto& ps = u.params.participants;
    auto index = [&ps](const std::string& name) {
      return static_cast<size_t>(std::find(ps.begin(), ps.end(), name) - ps.begin());
    };
    for (const Envelope& e : partials_) TALLY_RETURN_IF_ERROR(h.AddPartial(e, index(e.from)));
    for (const Envelope& e : unmasks_) {
      Result<bool> kept = h.AddUnmask(e, index(e.from), u.sets);
      if (!kept.ok()) return kept.status();
    }
    if (!h.Ready(u.sets))
      return Status::Error(std::to_string(partials_.size()) + " masked inputs and " +
                           std::to_string(h.unmasks()) + " unmasks do not make the round");
    return h.Aggregate(u.sets);
  }

  // The end of a round whose unmask update is `u`: collects the keys batch, every survivor's
  // masked input and `unmasks` unmasks (default: one from each unmasker), computes the aggregate,
  // acknowledges, and waits for done. Returns the (scalar) aggregate, or nullopt after a failure.
  std::optional<uint64_t> Finish(const PhaseUpdate& u, std::optional<size_t> unmasks = {}) {
    const size_t want = unmasks ? *unmasks : CountOf(Unmaskers(u.sets));
    if (!Collect(u.round, CountOf(u.sets.masked), want)) {
      ADD_FAILURE() << "the hospital got " << partials_.size() << " masked inputs and "
                    << unmasks_.size() << " unmasks" << (keys_ ? "" : " and no keys batch");
      return std::nullopt;
    }
    Result<std::vector<uint64_t>> sum = Aggregate(u);
    EXPECT_TRUE(sum.ok()) << sum.message();
    if (!sum.ok() || sum->size() != 1) return std::nullopt;
    party_.Send(Ack{u.round});
    EXPECT_TRUE(party_.WaitPhase(Phase::kDone, u.round).has_value()) << "no done after the ack";
    return (*sum)[0];
  }

 private:
  TestParty party_;
  Sealer sealer_;
  RoundId round_{};
  std::optional<Batch> keys_;
  std::vector<Envelope> partials_, unmasks_;
};

}  // namespace tally::test
