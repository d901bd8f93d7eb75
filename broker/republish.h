// Internal to tally_broker: when to publish the last phase update again, for subscribers that
// connected after it went out (the last-value cache of schema/PROTOCOL.md, "Phase updates, late
// subscribers"). Subscriptions ask for a republication; at most one happens per `gap` however
// many arrive, so one party's subscription flood is not amplified to every subscriber; and
// none while nothing has been published. Clock-free: every call takes `now`.
// Thread-compatible.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

namespace tally {

class Republisher {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Republisher(Clock::duration gap) : gap_(gap) {}

  // The broker published `update` (an encoded PhaseUpdate): the one a late subscriber needs.
  void Published(std::vector<uint8_t> update) { last_ = std::move(update); }
  const std::vector<uint8_t>& last() const { return last_; }

  // Subscriptions arrived.
  void Subscribed() { pending_ = !last_.empty(); }

  // The update to send again now, or nullptr: nothing asked for, nothing published yet, or the
  // last republication was less than `gap` ago.
  const std::vector<uint8_t>* Due(Clock::time_point now) {
    if (!pending_ || now < next_) return nullptr;
    pending_ = false;
    next_ = now + gap_;
    return &last_;
  }

  // When Due() will have something, for the poll loop's timeout; nullopt when nothing waits.
  std::optional<Clock::time_point> NextWake() const {
    return pending_ ? std::optional<Clock::time_point>(next_) : std::nullopt;
  }

 private:
  Clock::duration gap_;
  std::vector<uint8_t> last_;
  bool pending_ = false;
  Clock::time_point next_{};
};

}  // namespace tally
