// Internal to tally_broker: parties found gone and not yet acted on (schema/PROTOCOL.md,
// "Connections and dropouts"). A party is found gone when its connection closes or a frame to it
// cannot be sent; what it sent before is still in the router's queue (a hospital's refusal, a
// patient's unmask) and is served first. The coordinator is told once the queue has been read to
// the end after the party was found, or `grace` after it was found while messages keep coming;
// and only about the round that was active when it was found, if it still is (ForRound: a
// hospital that refused, closed, reconnected and asked for the next round is not gone from that
// one). Clock-free: every call takes `now`. Thread-compatible.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "schema/schema.h"

namespace tally {

struct Gone {
  enum class Kind { kClosed, kUnreachable };
  Kind kind = Kind::kClosed;
  int fd = -1;         // kClosed: the connection's descriptor and that descriptor's epoch then
  uint64_t epoch = 0;  //
  std::vector<std::string> parties;  // kClosed: whose route it was then; kUnreachable: the one
  std::optional<RoundId> round;      // the round active when it was found; nullopt: none
  std::chrono::steady_clock::time_point found;

  // Whether the coordinator is to hear of it while `active` is the active round: only in the
  // round it was found in. Asked for each party as it is acted on, since acting on one can end
  // the round and open the next.
  bool ForRound(const std::optional<RoundId>& active) const {
    return round.has_value() && round == active;
  }
};

class GoneParties {
 public:
  using Clock = std::chrono::steady_clock;
  explicit GoneParties(Clock::duration grace) : grace_(grace) {}

  bool empty() const { return pending_.empty(); }

  void Add(Gone gone) {
    // A party whose frames keep failing is found once per round.
    if (gone.kind == Gone::Kind::kUnreachable) {
      for (const Gone& g : pending_)
        if (g.kind == gone.kind && g.round == gone.round && g.parties == gone.parties) return;
    }
    pending_.push_back(std::move(gone));
  }

  // What to act on now, in the order found: every entry once the router's queue was read to the
  // end (`drained`), else those found at least `grace` ago.
  std::vector<Gone> Due(bool drained, Clock::time_point now) {
    std::vector<Gone> due, kept;
    for (Gone& g : pending_)
      (drained || now - g.found >= grace_ ? due : kept).push_back(std::move(g));
    pending_ = std::move(kept);
    return due;
  }

 private:
  Clock::duration grace_;
  std::vector<Gone> pending_;
};

}  // namespace tally
