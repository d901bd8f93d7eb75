// Internal to tally_nodes: the patient role (schema/PROTOCOL.md, "Order of a round").
// For each round it is named in, the patient checks the round against its roster and its
// input and joins with a fresh nonce, or refuses with a reason that never holds the input; in
// the sum phase of the round exactly as it joined it, it masks its input and seals it to the
// hospital under the round's view. Thread-compatible.
#pragma once

#include <deque>
#include <optional>
#include <set>
#include <vector>

#include "nodes/aggregate.h"
#include "nodes/node.h"
#include "nodes/role.h"

namespace tally {

class Patient : public NodeRole {
 public:
  Patient(const NodeOptions& options, const Roster& roster, const Sealer& sealer, Link& link,
          LogSink log);
  ~Patient() override;

  void OnPhase(const PhaseUpdate& update) override;
  void OnEnvelope(const Envelope& envelope) override;
  void OnNotice(const Notice& notice) override;
  void OnLost(std::string_view socket) override;
  void Tick(Clock::time_point now) override;

 private:
  struct Joined {
    PhaseUpdate opened;            // the round as we joined it
    JoinNonce nonce{};             // the nonce we joined with
    std::vector<uint64_t> values;  // our input encoded for this round; wiped when sent
    bool partial_sent = false;     // our masked input is out (or the round was refused)
    Clock::time_point last_progress;
    Joined() = default;
    Joined(const Joined&) = delete;
    Joined& operator=(const Joined&) = delete;
    ~Joined();  // wipes `values`
  };
  void OnOpen(const PhaseUpdate& u);
  void SendMasked(const PhaseUpdate& u);
  void Drop(const std::string& why);
  void Remember(const RoundId& id);
  // Our input encoded for the round `u`, or why this patient cannot answer it honestly (a
  // reason that never holds the input).
  Result<std::vector<uint64_t>> Encode(const PhaseUpdate& u) const;

  PatientInput input_;  // wiped on destruction
  const bool once_;
  const uint32_t min_patients_;
  const std::chrono::milliseconds idle_timeout_;
  std::optional<Joined> round_;
  std::set<RoundId> seen_;  // rounds already answered (updates are republished)
  std::deque<RoundId> seen_order_;
};

}  // namespace tally
