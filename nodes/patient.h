// Internal to tally_nodes: the patient role (schema/PROTOCOL.md, "Order of a round", "What a node
// does with each update"). For each round it is named in, the patient checks the round against
// its roster and its input and joins with fresh round keys, or refuses with a reason that never
// holds the input. Then, as the phases come (each with the batch the broker sends it): it checks
// the other patients' keys and sends them Shamir shares of its self-mask seed and mask secret;
// opens the shares sent to it and sends the hospital its masked input; confirms the survivors if
// someone dropped; and sends the hospital its shares for unmasking. After joining it never
// refuses: on anything wrong it stops taking part, and the round goes on without it if enough
// others remain. Its round secrets are wiped when the round ends for it. Thread-compatible.
#pragma once

#include <deque>
#include <optional>
#include <set>
#include <vector>

#include "nodes/node.h"
#include "nodes/patient_round.h"
#include "nodes/role.h"

namespace tally {

class Patient : public NodeRole {
 public:
  Patient(const NodeOptions& options, const Roster& roster, const Sealer& sealer, Link& link,
          LogSink log);
  ~Patient() override;

  void OnPhase(const PhaseUpdate& update) override;
  void OnEnvelope(const Envelope& envelope) override;
  void OnBatch(const Batch& batch) override;
  void OnNotice(const Notice& notice) override;
  void OnLost(std::string_view socket) override;
  void Tick(Clock::time_point now) override;

 private:
  // A round this patient joined, until it ends for it; its secrets are PatientRound's.
  struct Joined {
    PhaseUpdate opened;  // the round as we joined it
    PatientRound round;
    RoundSets seen;                     // the sets of the updates acted on
    Phase acted = Phase::kOpen;         // the last phase whose step we did
    std::optional<PhaseUpdate> latest;  // the latest update of the round
    std::optional<Batch> keys_batch, shares_batch, confirm_batch;  // kept until their phase
    Clock::time_point last_progress;
  };
  void OnOpen(const PhaseUpdate& u);
  // Does every step the round's latest update and the batches in hand allow, in order.
  void Step();
  // The step of phase `u` if the patient is in the set `member_of`, or why it cannot go on.
  std::optional<std::string> Act(const PhaseUpdate& u, const Members& member_of,
                                 const char* set_name);
  // Stops taking part in the current round with `why` (its secrets wiped); a --once patient
  // exits with it.
  void GiveUp(const std::string& why);
  void Remember(const RoundId& id);
  // Why this patient cannot take the neighbourhood round `u`: it takes full rounds only, the
  // graph is not the hospital's, it does not meet the bounds for its rates, or the rates assume
  // fewer corrupt patients than --max-corrupt. Never names the input.
  Status CheckGraph(const PhaseUpdate& u) const;
  // Our input encoded for the round `u`, or why this patient cannot answer it honestly (a
  // reason that never holds the input).
  Result<std::vector<uint64_t>> Encode(const PhaseUpdate& u) const;

  PatientInput input_;  // wiped on destruction
  const bool once_;
  const uint32_t min_patients_;
  const uint32_t max_corrupt_;
  const bool graph_;  // takes neighbourhood rounds
  const std::optional<Phase> vanish_at_;
  const std::function<void(Phase)> on_vanish_;
  bool vanished_ = false;  // reached vanish_at_: acts on nothing more
  const std::chrono::milliseconds idle_timeout_;
  std::optional<Joined> round_;
  std::set<RoundId> seen_;  // the latest rounds answered (updates are republished)
  std::deque<RoundId> seen_order_;
  std::set<RoundId> joined_;  // every round this process joined, for its whole life
};

}  // namespace tally
