// A patient's part in one round, the steps of schema/PROTOCOL.md "Order of a round" as pure
// functions of what the broker sends: no socket and no clock, so the patient role (patient.h),
// tests that play a patient, and the benchmark all do exactly the same steps.
//   Join           fresh round keys c and s, signed
//   Shares         checks its peers' signed keys (the keys batch), draws the self-mask seed b,
//                  and seals each peer in U1 its Shamir share of b and of s
//   Masked         opens the shares sent to it, masks the input (a self mask and a pairwise mask
//                  with each peer in U2) and seals it to the hospital under the view
//   Confirmation   after a dropout in a full round: its signature on its view and U3
//   Unmask         checks T - 1 other survivors' confirmations (a full round, after a dropout) or
//                  the hospital's signature on the survivors (a neighbourhood round), then seals
//                  the hospital its share of each survivor's b and of each dropped member's s
// Its peers are every other participant in a full round, its neighbours in a neighbourhood round
// (RoundGraph); what it keeps is per member of N[me], so a patient's memory grows with k, not N.
// Each step takes the phase update it answers, which must be the round as joined (the caller
// checks that); a step that fails says why the patient cannot go on, and the round's secrets
// are wiped when the PatientRound is dropped.
// Thread-compatible.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "keys/keys.h"
#include "nodes/seal.h"
#include "schema/round_graph.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

class PatientRound {
 public:
  // Joins the round `opened` (its open phase) with `values`, the input encoded for it
  // (EncodeInput): draws the round keys and signs them. REQUIRES: `sealer`'s party is a
  // participant; `sealer` outlives the PatientRound.
  static Result<PatientRound> Join(const Sealer& sealer, const PhaseUpdate& opened,
                                   std::vector<uint64_t> values);
  PatientRound(PatientRound&&) = default;
  PatientRound& operator=(PatientRound&&) = delete;
  ~PatientRound();  // wipes the input

  const tally::Join& join() const { return join_; }
  size_t me() const { return me_; }

  // The share phase `u` (U1 fixed, this patient in it) with the keys batch sent to it.
  Result<Batch> Shares(const PhaseUpdate& u, const Batch& keys);
  // The mask phase `u` (U2 fixed, this patient in it) with the shares batch sent to it.
  Result<Envelope> Masked(const PhaseUpdate& u, const Batch& shares);
  // The confirm phase `u` (U3 fixed, this patient in it): one item, this patient's signature.
  Batch Confirmation(const PhaseUpdate& u) const;
  // The unmask phase `u` (this patient among the unmaskers), with the confirmations sent to it
  // when U3 differs from U2 in a full round, or the hospital's survivors batch in a neighbourhood
  // round.
  Result<Envelope> Unmask(const PhaseUpdate& u, const Batch* confirmations);

  // The view this patient masked under (after Masked).
  const ViewDigest& view() const { return view_; }

 private:
  PatientRound(const Sealer& sealer, RoundGraph graph)
      : sealer_(sealer), graph_(std::move(graph)) {}
  // The slot of participant v in closed_. REQUIRES: v in closed_.
  size_t SlotOf(uint32_t v) const;
  // Whether the unmask phase `u` may reveal mask secrets: the confirmations or the hospital's
  // signature in `confirmations`, as the round's kind requires.
  Status CheckConfirmed(const PhaseUpdate& u, const Batch* confirmations) const;
  const Sealer& sealer_;
  RoundGraph graph_;
  RoundDigest digest_{};
  size_t me_ = 0;
  std::vector<uint32_t> closed_;       // N[me], ascending: what the slots below are of
  std::vector<uint32_t> peers_;        // N(me), ascending
  std::vector<uint64_t> values_;       // the input; wiped once masked
  RoundKeyPair c_, s_;                 // the round keys: sealing shares, pairwise masks
  SecretKey b_;                        // the self-mask seed, drawn at Shares
  std::vector<RoundPublicKeys> keys_;  // per slot, from the keys batch (ours too)
  // Per slot v, the share of v's b and of v's s that v sent us (ours at me's slot).
  SecretBytes shares_{0};
  // Per slot, the key of the shares between it and us (ShareKey), from Shares.
  SecretBytes share_keys_{0};
  ViewDigest view_{};
  tally::Join join_;
  // The last step that succeeded: each needs the one before (a caller that goes on after a
  // failed step gets an error, not a read of what that step did not fill).
  enum class Step { kJoined, kShared, kMasked, kUnmasked } done_ = Step::kJoined;
};

}  // namespace tally
