#include "nodes/hospital_round.h"

#include <sodium.h>

namespace tally {

HospitalRound::HospitalRound(const Sealer& sealer, const RoundId& round, const RoundParams& params,
                             RoundGraph graph)
    : sealer_(sealer),
      round_(round),
      params_(params),
      graph_(std::move(graph)),
      digest_(DigestOf(round, params)),
      sum_(static_cast<uint32_t>(PayloadLength(params))),
      partials_(params.participants.size(), false),
      of_b_(params.participants.size(), 0),
      of_s_(params.participants.size(), 0) {}

Result<HospitalRound> HospitalRound::Create(const Sealer& sealer, const RoundId& round,
                                            const RoundParams& params) {
  Result<RoundGraph> graph = RoundGraph::Of(params);
  if (!graph.ok()) return graph.status();
  return HospitalRound(sealer, round, params, std::move(graph.value()));
}

Status HospitalRound::Learn(const Batch& keys, const RoundSets& sets) {
  Result<SignedKeys> round_keys = KeysOf(keys, sets.joined);
  if (!round_keys.ok()) return round_keys.status();
  // The hospital holds every patient's signing key too: keys the broker put in a patient's place
  // are refused here, before anything opens under them.
  for (size_t v = 0; v < sets.joined.size(); ++v) {
    const std::string& name = params_.participants[v];
    if (sets.joined[v] && !sealer_.Verify(name, KeysStatement(digest_, name, round_keys->keys[v]),
                                          round_keys->signatures[v]))
      return Status::Error("the keys of " + name + " are not signed by " + name);
  }
  TALLY_RETURN_IF_ERROR(DistinctKeys(round_keys->keys, sets.joined, params_.participants));
  keys_ = std::move(round_keys->keys);
  shared_ = sets.shared;
  views_.assign(graph_.complete() ? 1 : params_.participants.size(), std::nullopt);
  // Every party of the round is in the roster (else the view names who is not): checked once.
  Result<ViewDigest> first = ViewOf(0);
  if (!first.ok()) return first.status();
  learnt_ = true;
  return Status::Ok();
}

Result<ViewDigest> HospitalRound::ViewOf(size_t v) {
  std::optional<ViewDigest>& view = views_[graph_.complete() ? 0 : v];
  if (view) return *view;
  Result<ViewDigest> made = Status::Ok();
  if (graph_.complete()) {
    made = sealer_.View(round_, params_, shared_, keys_);
  } else {
    const std::vector<uint32_t> closed = graph_.Closed(static_cast<uint32_t>(v));
    std::vector<RoundPublicKeys> keys;
    for (uint32_t p : closed) keys.push_back(keys_[p]);
    made = sealer_.View(round_, params_, shared_, keys, closed);
  }
  if (made.ok()) view = *made;
  return made;
}

Status HospitalRound::AddPartial(const Envelope& env, size_t from) {
  if (partials_[from]) return Status::Error("a second masked input from " + env.from);
  Result<ViewDigest> view = ViewOf(from);
  if (!view.ok()) return view.status();
  auto opened =
      sealer_.Open(Binding{env.round, env.kind, env.from, sealer_.name(), *view}, env.sealed);
  if (!opened.ok()) return opened.status();
  Status added = sum_.AddPayload(opened.value(), env.kind);
  sodium_memzero(opened->data(), opened->size());
  if (!added.ok()) return Status::Error("payload from " + env.from + ": " + added.message());
  partials_[from] = true;
  return Status::Ok();
}

Status HospitalRound::CheckSurvivors(const RoundSets& sets) const {
  if (graph_.complete()) return Status::Ok();
  const auto& ps = params_.participants;
  const uint32_t t = graph_.threshold();
  for (uint32_t v = 0; v < ps.size(); ++v) {
    if (!sets.shared[v]) continue;
    const bool survived = sets.masked[v];
    const std::vector<uint32_t> holders = survived ? graph_.Closed(v) : graph_.Peers(v);
    size_t alive = 0;
    for (uint32_t w : holders) alive += sets.masked[w];
    if (alive < t)
      return Status::Error((survived ? "the self mask of " : "the mask secret of ") + ps[v] +
                           " cannot be rebuilt: " + std::to_string(alive) + " of " +
                           (survived ? "it and its " : "its ") +
                           std::to_string(graph_.Peers(v).size()) +
                           " neighbours survive, the threshold is " + std::to_string(t));
  }
  return Status::Ok();
}

Signature HospitalRound::SurvivorsSignature(const RoundSets& sets) const {
  return sealer_.Sign(SurvivorsStatement(digest_, sets));
}

Result<bool> HospitalRound::AddUnmask(const Envelope& env, size_t from, const RoundSets& sets) {
  Result<ViewDigest> view = ViewOf(from);
  if (!view.ok()) return view.status();
  auto opened =
      sealer_.Open(Binding{env.round, env.kind, env.from, sealer_.name(), *view}, env.sealed);
  if (!opened.ok()) return opened.status();
  Result<UnmaskShares> shares = DecodeUnmask(*opened, params_.participants.size());
  sodium_memzero(opened->data(), opened->size());
  if (!shares.ok()) return Status::Error("unmask from " + env.from + ": " + shares.message());
  const std::vector<uint32_t> closed =
      graph_.complete() ? std::vector<uint32_t>{} : graph_.Closed(static_cast<uint32_t>(from));
  TALLY_RETURN_IF_ERROR(CheckUnmask(sets, env.from, *shares, closed));
  if (Rebuildable()) return false;                 // every secret has its t shares already
  if (!lacking_) lacking_ = CountOf(sets.shared);  // each member of U2: its b or its s
  for (uint32_t v : graph_.Closed(static_cast<uint32_t>(from))) {
    if (!sets.shared[v]) continue;
    uint32_t& have = sets.masked[v] ? of_b_[v] : of_s_[v];
    if (++have == graph_.threshold()) --*lacking_;
  }
  unmaskers_.push_back(static_cast<uint32_t>(from));
  unmasks_.push_back(std::move(shares.value()));
  return true;
}

bool HospitalRound::Rebuildable() const {
  return unmaskers_.size() >= params_.threshold && lacking_ == 0;
}

bool HospitalRound::Ready(const RoundSets& sets) const {
  return !sets.masked.empty() && partials_ == sets.masked && Rebuildable();
}

Result<std::vector<uint64_t>> HospitalRound::Aggregate(const RoundSets& sets) {
  std::vector<const UnmaskShares*> unmasks;
  for (const UnmaskShares& shares : unmasks_) unmasks.push_back(&shares);
  Result<RoundMasks> masks =
      UnmaskingMasks(round_, params_, graph_, sets, keys_, unmaskers_, unmasks);
  unmasks_.clear();  // wiped: the shares are not needed again
  if (!masks.ok()) return masks.status();
  sum_.Apply(*masks);
  return sum_.values();
}

}  // namespace tally
