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
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

class HospitalRound {
 public:
  // The round `round` over `params`, opened with `sealer`'s keys (the hospital's). REQUIRES:
  // `sealer` outlives the HospitalRound.
  HospitalRound(const Sealer& sealer, const RoundId& round, const RoundParams& params);

  // The view: from the keys batch the broker gave the hospital and U1, U2 in `sets`. Fails
  // when the batch does not match U1, a patient's keys are not signed by it, or the roster lacks
  // a party of the round.
  Status Learn(const Batch& keys, const RoundSets& sets);
  bool has_view() const { return view_.has_value(); }
  const ViewDigest& view() const { return *view_; }

  // Opens the masked input of participant `from` under the view and adds it to the sum. Fails
  // (leaving the sum as it was) when it does not open (Status::Code::kUnauthentic), its payload
  // is malformed, or one from `from` was added already. REQUIRES: has_view().
  Status AddPartial(const Envelope& env, size_t from);
  // Opens the unmask of participant `from` and checks it against `sets` (CheckUnmask); keeps
  // it while fewer than T are kept (true), else only checks it (false). REQUIRES: has_view().
  Result<bool> AddUnmask(const Envelope& env, size_t from, const RoundSets& sets);

  const Members& partials() const { return partials_; }
  size_t unmasks() const { return unmaskers_.size(); }
  // Every survivor's masked input is in (and no other), and T unmasks are kept.
  bool Ready(const RoundSets& sets) const;
  // Removes what is left of the masks from the sum (UnmaskingMasks) and returns it: the sum of
  // the survivors' inputs. Fails naming a dropped patient whose rebuilt secret does not match
  // its key. The unmasks are wiped either way. REQUIRES: Ready(sets).
  Result<std::vector<uint64_t>> Aggregate(const RoundSets& sets);

 private:
  const Sealer& sealer_;
  RoundId round_;
  RoundParams params_;
  std::vector<RoundPublicKeys> keys_;  // per participant, for the members of U1
  std::optional<ViewDigest> view_;
  Sum sum_;
  Members partials_;                   // whose masked input is in the sum
  std::vector<uint32_t> unmaskers_;    // the first T whose unmask opened and fit, in order
  std::vector<UnmaskShares> unmasks_;  // theirs
};

}  // namespace tally
