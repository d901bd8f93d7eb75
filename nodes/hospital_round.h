// The hospital's part in one round (schema/PROTOCOL.md, "Order of a round", done): its view from
// the keys batch and the patients that shared, the survivors' masked inputs added up, the first
// T unmasks kept, and the masks removed with the secrets they rebuild. Pure: no socket, no
// clock, no file, so the hospital role (hospital.h), its audit of a capture (tally-replay) and
// tests compute a round's aggregate the same way.
// Thread-compatible.
#pragma once

#include <optional>
#include <vector>

#include "nodes/aggregate.h"
#include "nodes/seal.h"
#include "schema/round_graph.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

class HospitalRound {
 public:
  // The round `round` over `params`, opened with `sealer`'s keys (the hospital's). Fails when a
  // neighbourhood round's graph cannot be built. REQUIRES: `sealer` outlives the HospitalRound.
  static Result<HospitalRound> Create(const Sealer& sealer, const RoundId& round,
                                      const RoundParams& params);
  // The same for parameters whose graph is known to build (a full round's always does).
  // REQUIRES: RoundGraph::Of(params).ok().
  HospitalRound(const Sealer& sealer, const RoundId& round, const RoundParams& params)
      : HospitalRound(sealer, round, params, RoundGraph::Of(params).value()) {}
  HospitalRound(HospitalRound&&) = default;

  // The views: from the keys batch the broker gave the hospital and U1, U2 in `sets`. Fails
  // when the batch does not match U1, a patient's keys are not signed by it, or the roster lacks
  // a party of the round.
  Status Learn(const Batch& keys, const RoundSets& sets);
  bool has_view() const { return learnt_; }
  // The view every patient of a full round masked under. REQUIRES: has_view(), a full round.
  const ViewDigest& view() const { return *views_[0]; }

  // Opens the masked input of participant `from` under its view and adds it to the sum. Fails
  // (leaving the sum as it was) when it does not open (Status::Code::kUnauthentic), its payload
  // is malformed, or one from `from` was added already. REQUIRES: has_view().
  Status AddPartial(const Envelope& env, size_t from);
  // In a neighbourhood round, whether every secret the survivors `sets` need can be rebuilt from
  // the survivors (t of N[v] in U3 for a survivor v, t of N(v) for a dropped one), else why not;
  // always fine in a full round. What the hospital checks before it signs the survivors.
  Status CheckSurvivors(const RoundSets& sets) const;
  // Its signature on the survivors of a neighbourhood round (SurvivorsStatement).
  Signature SurvivorsSignature(const RoundSets& sets) const;
  // Opens the unmask of participant `from` and checks it against `sets` (CheckUnmask); keeps
  // it while some secret lacks its t shares or fewer than T are kept (true), else only checks it
  // (false). REQUIRES: has_view().
  Result<bool> AddUnmask(const Envelope& env, size_t from, const RoundSets& sets);

  const Members& partials() const { return partials_; }
  size_t unmasks() const { return unmaskers_.size(); }
  // Every survivor's masked input is in (and no other), at least T unmasks are kept, and every
  // secret has t shares among them.
  bool Ready(const RoundSets& sets) const;
  // Removes what is left of the masks from the sum (UnmaskingMasks) and returns it: the sum of
  // the survivors' inputs. Fails naming a dropped patient whose rebuilt secret does not match
  // its key. The unmasks are wiped either way. REQUIRES: Ready(sets).
  Result<std::vector<uint64_t>> Aggregate(const RoundSets& sets);

 private:
  HospitalRound(const Sealer& sealer, const RoundId& round, const RoundParams& params,
                RoundGraph graph);
  // The view participant v masked under (one for all in a full round), computed once.
  Result<ViewDigest> ViewOf(size_t v);
  // At least T unmasks kept, and t shares of every secret `sets` need among them.
  bool Rebuildable() const;
  const Sealer& sealer_;
  RoundId round_;
  RoundParams params_;
  RoundGraph graph_;
  RoundDigest digest_;
  std::vector<RoundPublicKeys> keys_;  // per participant, for the members of U1
  Members shared_;                     // U2, which the views bind
  bool learnt_ = false;
  std::vector<std::optional<ViewDigest>> views_;  // per participant (one in a full round)
  Sum sum_;
  Members partials_;                   // whose masked input is in the sum
  std::vector<uint32_t> of_b_, of_s_;  // per participant: shares of its b, its s among the kept
  std::optional<size_t> lacking_;      // secrets with fewer than t shares kept (from the first)
  std::vector<uint32_t> unmaskers_;    // whose unmask is kept, in order
  std::vector<UnmaskShares> unmasks_;  // theirs
};

}  // namespace tally
