// A patient's part in one round, the steps of schema/PROTOCOL.md "Order of a round" as pure
// functions of what the broker sends: no socket and no clock, so the patient role (patient.h),
// tests that play a patient, and the benchmark all do exactly the same steps.
//   Join           fresh round keys c and s, signed
//   Shares         checks the other members' signed keys (the keys batch), draws the self-mask
//                  seed b, and seals each other member of U1 its Shamir share of b and of s
//   Masked         opens the shares sent to it, masks the input (a self mask and a pairwise mask
//                  with each other member of U2) and seals it to the hospital under the view
//   Confirmation   after a dropout: its signature on its view (U2 and the round keys) and U3
//   Unmask         checks T - 1 other survivors' confirmations (after a dropout), then seals the
//                  hospital its share of each survivor's b and of each dropped member's s
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
  // when U3 differs from U2.
  Result<Envelope> Unmask(const PhaseUpdate& u, const Batch* confirmations);

  // The view this patient masked under (after Masked).
  const ViewDigest& view() const { return view_; }

 private:
  PatientRound(const Sealer& sealer) : sealer_(sealer) {}
  const Sealer& sealer_;
  RoundDigest digest_{};
  size_t me_ = 0;
  std::vector<uint64_t> values_;       // the input; wiped once masked
  RoundKeyPair c_, s_;                 // the round keys: sealing shares, pairwise masks
  SecretKey b_;                        // the self-mask seed, drawn at Shares
  std::vector<RoundPublicKeys> keys_;  // per participant, from the keys batch (ours too)
  // Per participant v, the share of v's b and of v's s that v sent us (ours at `me_`).
  SecretBytes shares_{0};
  // Per participant, the key of the shares between it and us (ShareKey), from Shares.
  SecretBytes share_keys_{0};
  ViewDigest view_{};
  tally::Join join_;
  // The last step that succeeded: each needs the one before (a caller that goes on after a
  // failed step gets an error, not a read of what that step did not fill).
  enum class Step { kJoined, kShared, kMasked } done_ = Step::kJoined;
};

}  // namespace tally
