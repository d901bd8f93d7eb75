#include "nodes/hospital_round.h"

#include <sodium.h>

namespace tally {

HospitalRound::HospitalRound(const Sealer& sealer, const RoundId& round, const RoundParams& params)
    : sealer_(sealer),
      round_(round),
      params_(params),
      sum_(static_cast<uint32_t>(PayloadLength(params))),
      partials_(params.participants.size(), false) {}

Status HospitalRound::Learn(const Batch& keys, const RoundSets& sets) {
  Result<SignedKeys> round_keys = KeysOf(keys, sets.joined);
  if (!round_keys.ok()) return round_keys.status();
  // The hospital holds every patient's signing key too: keys the broker put in a patient's place
  // are refused here, before anything opens under them.
  const RoundDigest digest = DigestOf(round_, params_);
  for (size_t v = 0; v < sets.joined.size(); ++v) {
    const std::string& name = params_.participants[v];
    if (sets.joined[v] && !sealer_.Verify(name, KeysStatement(digest, name, round_keys->keys[v]),
                                          round_keys->signatures[v]))
      return Status::Error("the keys of " + name + " are not signed by " + name);
  }
  TALLY_RETURN_IF_ERROR(DistinctKeys(round_keys->keys, sets.joined, params_.participants));
  Result<ViewDigest> view = sealer_.View(round_, params_, sets.shared, round_keys->keys);
  if (!view.ok()) return view.status();
  keys_ = std::move(round_keys->keys);
  view_ = *view;
  return Status::Ok();
}

Status HospitalRound::AddPartial(const Envelope& env, size_t from) {
  if (partials_[from]) return Status::Error("a second masked input from " + env.from);
  auto opened =
      sealer_.Open(Binding{env.round, env.kind, env.from, sealer_.name(), *view_}, env.sealed);
  if (!opened.ok()) return opened.status();
  Status added = sum_.AddPayload(opened.value(), env.kind);
  sodium_memzero(opened->data(), opened->size());
  if (!added.ok()) return Status::Error("payload from " + env.from + ": " + added.message());
  partials_[from] = true;
  return Status::Ok();
}

Result<bool> HospitalRound::AddUnmask(const Envelope& env, size_t from, const RoundSets& sets) {
  auto opened =
      sealer_.Open(Binding{env.round, env.kind, env.from, sealer_.name(), *view_}, env.sealed);
  if (!opened.ok()) return opened.status();
  Result<UnmaskShares> shares = DecodeUnmask(*opened, params_.participants.size());
  sodium_memzero(opened->data(), opened->size());
  if (!shares.ok()) return Status::Error("unmask from " + env.from + ": " + shares.message());
  TALLY_RETURN_IF_ERROR(CheckUnmask(sets, env.from, *shares));
  if (unmaskers_.size() >= params_.threshold) return false;  // T rebuild every secret
  unmaskers_.push_back(static_cast<uint32_t>(from));
  unmasks_.push_back(std::move(shares.value()));
  return true;
}

bool HospitalRound::Ready(const RoundSets& sets) const {
  return !sets.masked.empty() && partials_ == sets.masked && unmaskers_.size() >= params_.threshold;
}

Result<std::vector<uint64_t>> HospitalRound::Aggregate(const RoundSets& sets) {
  std::vector<const UnmaskShares*> unmasks;
  for (const UnmaskShares& shares : unmasks_) unmasks.push_back(&shares);
  Result<RoundMasks> masks = UnmaskingMasks(round_, params_, sets, keys_, unmaskers_, unmasks);
  unmasks_.clear();  // wiped: the shares are not needed again
  if (!masks.ok()) return masks.status();
  sum_.Apply(*masks);
  return sum_.values();
}

}  // namespace tally
