#include "nodes/patient_round.h"

#include <sodium.h>

#include <algorithm>

#include "nodes/aggregate.h"
#include "nodes/shamir.h"

namespace tally {
namespace {

constexpr size_t kPairSize = 2 * kShareSize;  // a share of b || a share of s

// Whether `items` hold exactly one item for each of `peers` in `set` (the decoder already refused
// an index given twice).
bool OnePerPeerIn(const std::vector<BatchItem>& items, std::span<const uint32_t> peers,
                  const Members& set) {
  size_t members = 0;
  for (uint32_t v : peers) members += set[v];
  if (items.size() != members) return false;
  return std::all_of(items.begin(), items.end(), [&](const BatchItem& item) {
    return item.index < set.size() && set[item.index] &&
           std::binary_search(peers.begin(), peers.end(), item.index);
  });
}

}  // namespace

PatientRound::~PatientRound() { sodium_memzero(values_.data(), values_.size() * sizeof(uint64_t)); }

Result<PatientRound> PatientRound::Join(const Sealer& sealer, const PhaseUpdate& opened,
                                        std::vector<uint64_t> values) {
  Result<RoundGraph> graph = RoundGraph::Of(opened.params);
  if (!graph.ok()) return graph.status();
  PatientRound r(sealer, std::move(graph.value()));
  const auto& ps = opened.params.participants;
  r.me_ = static_cast<size_t>(std::find(ps.begin(), ps.end(), sealer.name()) - ps.begin());
  r.closed_ = r.graph_.Closed(static_cast<uint32_t>(r.me_));
  r.peers_ = r.graph_.Peers(static_cast<uint32_t>(r.me_));
  r.digest_ = DigestOf(opened.round, opened.params);
  r.values_ = std::move(values);
  // Fresh for every join: the round's masks and shares depend on nothing used before.
  r.c_ = RoundKeyPair::Generate();
  r.s_ = RoundKeyPair::Generate();
  r.join_ = tally::Join{opened.round, r.c_.pub, r.s_.pub,
                        sealer.Sign(KeysStatement(r.digest_, sealer.name(), {r.c_.pub, r.s_.pub}))};
  return r;
}

size_t PatientRound::SlotOf(uint32_t v) const {
  return static_cast<size_t>(std::lower_bound(closed_.begin(), closed_.end(), v) - closed_.begin());
}

Result<Batch> PatientRound::Shares(const PhaseUpdate& u, const Batch& keys) {
  if (done_ != Step::kJoined) return Status::Error("the shares were sent already");
  const auto& ps = u.params.participants;
  const Members& joined = u.sets.joined;
  Result<SignedKeys> signed_keys =
      KeysOf(keys, joined, peers_, graph_.complete() ? "other patient" : "neighbour");
  if (!signed_keys.ok()) return signed_keys.status();
  keys_.assign(closed_.size(), RoundPublicKeys{});
  for (size_t slot = 0; slot < peers_.size(); ++slot) {
    const uint32_t v = peers_[slot];
    if (!joined[v]) continue;
    if (!sealer_.Verify(ps[v], KeysStatement(digest_, ps[v], signed_keys->keys[slot]),
                        signed_keys->signatures[slot]))
      return Status::Error("the keys of " + ps[v] + " are not signed by " + ps[v]);
    keys_[SlotOf(v)] = signed_keys->keys[slot];
  }
  keys_[SlotOf(static_cast<uint32_t>(me_))] = {c_.pub, s_.pub};
  TALLY_RETURN_IF_ERROR(DistinctKeys(keys_, closed_, joined, ps));
  randombytes_buf(b_.data(), SecretKey::size());
  // A share for each member of U1 in N[me] (at x = its index + 1), of b and of s, each split with
  // its own coefficients.
  std::vector<uint16_t> xs;
  for (uint32_t v : closed_)
    if (joined[v]) xs.push_back(static_cast<uint16_t>(v + 1));
  std::vector<Share> of_b(xs.size()), of_s(xs.size());
  ShamirSplit(std::span<const uint8_t, kShareSize>(b_.data(), kShareSize), graph_.threshold(), xs,
              of_b);
  ShamirSplit(std::span<const uint8_t, kShareSize>(s_.secret.data(), kShareSize),
              graph_.threshold(), xs, of_s);
  shares_ = SecretBytes(closed_.size() * kPairSize);
  share_keys_ = SecretBytes(closed_.size() * SecretKey::size());
  Batch out{u.round, BatchKind::kShares, {}};
  Status status = Status::Ok();
  for (size_t k = 0; k < xs.size(); ++k) {
    const uint32_t v = xs[k] - 1u;
    const size_t slot = SlotOf(v);
    uint8_t* pair = shares_.data() + slot * kPairSize;
    std::copy(of_b[k].begin(), of_b[k].end(), pair);
    std::copy(of_s[k].begin(), of_s[k].end(), pair + kShareSize);
    if (v == me_) continue;  // our own pair we keep
    uint8_t* key = share_keys_.data() + slot * SecretKey::size();
    if (!ShareKey(c_.secret, keys_[slot].cpk, key).ok()) {
      status = Status::Error("the round key of " + ps[v] + " is invalid");
      break;
    }
    out.items.push_back({v, SealShare(key, u.round, sealer_.name(), ps[v], {pair, kPairSize})});
    sodium_memzero(pair, kPairSize);  // only ours is needed later: the others travel sealed
  }
  for (auto* shares : {&of_b, &of_s}) sodium_memzero(shares->data(), shares->size() * kShareSize);
  if (!status.ok()) return status;
  done_ = Step::kShared;
  return out;
}

Result<Envelope> PatientRound::Masked(const PhaseUpdate& u, const Batch& shares) {
  if (done_ != Step::kShared) return Status::Error("a masked input without shares sent before");
  const auto& ps = u.params.participants;
  const Members& shared = u.sets.shared;
  if (!OnePerPeerIn(shares.items, peers_, shared))
    return Status::Error(graph_.complete()
                             ? "the shares batch is not one for each other patient that shared"
                             : "the shares batch is not one for each neighbour that shared");
  for (const BatchItem& item : shares.items) {
    const size_t slot = SlotOf(item.index);
    // Every member of U2 is in U1, so Shares made its key (the same both ways).
    const uint8_t* key = share_keys_.data() + slot * SecretKey::size();
    if (!OpenShare(key, u.round, ps[item.index], sealer_.name(), item.data,
                   {shares_.data() + slot * kPairSize, kPairSize})
             .ok())
      return Status::Error("the share from " + ps[item.index] + " does not open");
  }
  std::vector<RoundPublicKeys> peer_keys;
  for (uint32_t v : peers_) peer_keys.push_back(keys_[SlotOf(v)]);
  Result<RoundMasks> masks =
      PatientMasks(u.round, u.params, me_, peers_, shared, peer_keys, s_.secret, b_.data());
  if (!masks.ok()) return masks.status();
  Result<ViewDigest> view = sealer_.View(u.round, u.params, shared, keys_, closed_);
  if (!view.ok()) return view.status();
  view_ = *view;
  std::vector<uint64_t> masked = std::move(values_);
  values_.clear();
  ApplyMasks(*masks, masked);
  auto plaintext = EncodePayload(EnvelopeKind::kPartial, masked);
  sodium_memzero(masked.data(), masked.size() * sizeof(uint64_t));
  auto sealed = sealer_.Seal(
      Binding{u.round, EnvelopeKind::kPartial, sealer_.name(), u.params.hospital, view_},
      plaintext);
  sodium_memzero(plaintext.data(), plaintext.size());
  if (!sealed.ok()) return sealed.status();
  done_ = Step::kMasked;
  return Envelope{EnvelopeKind::kPartial, u.round, sealer_.name(), u.params.hospital,
                  std::move(sealed.value())};
}

Batch PatientRound::Confirmation(const PhaseUpdate& u) const {
  const Signature signature = sealer_.Sign(ConfirmStatement(view_, sealer_.name(), u.sets.masked));
  return Batch{u.round,
               BatchKind::kConfirm,
               {{static_cast<uint32_t>(me_), {signature.begin(), signature.end()}}}};
}

Status PatientRound::CheckConfirmed(const PhaseUpdate& u, const Batch* confirmations) const {
  const auto& ps = u.params.participants;
  const Members& masked = u.sets.masked;
  if (!graph_.complete()) {
    // Unmask only for the one survivor set the hospital signed (schema/PROTOCOL.md, "Why it is
    // private", neighbourhood rounds).
    const bool signed_by_hospital =
        confirmations != nullptr && confirmations->kind == BatchKind::kSurvivors &&
        confirmations->items.size() == 1 && confirmations->items[0].index == 0 &&
        sealer_.Verify(u.params.hospital, SurvivorsStatement(digest_, u.sets),
                       confirmations->items[0].data);
    if (!signed_by_hospital)
      return Status::Error("the survivors are not signed by " + u.params.hospital);
    return Status::Ok();
  }
  if (!HasConfirmPhase(u.params, u.sets)) return Status::Ok();
  // Someone dropped after sharing: reveal a mask secret only if T - 1 other survivors saw the
  // same sets (schema/PROTOCOL.md, "Why it is private").
  if (confirmations == nullptr || confirmations->kind != BatchKind::kConfirm)
    return Status::Error("the survivors changed and were not confirmed");
  // Each survivor counts once, however often a (malicious) broker repeats its signature.
  size_t confirmed = 0;
  Members counted(ps.size(), false);
  for (const BatchItem& item : confirmations->items) {
    if (item.index >= ps.size() || item.index == me_ || !masked[item.index] || counted[item.index])
      continue;
    if (sealer_.Verify(ps[item.index], ConfirmStatement(view_, ps[item.index], masked),
                       item.data)) {
      counted[item.index] = true;
      ++confirmed;
    }
  }
  if (confirmed + 1 < u.params.threshold)
    return Status::Error("only " + std::to_string(confirmed) +
                         " of the survivors confirmed them, the threshold is " +
                         std::to_string(u.params.threshold));
  return Status::Ok();
}

Result<Envelope> PatientRound::Unmask(const PhaseUpdate& u, const Batch* confirmations) {
  if (done_ == Step::kUnmasked) return Status::Error("the unmask was sent already");
  if (done_ != Step::kMasked) return Status::Error("an unmask without a masked input sent before");
  TALLY_RETURN_IF_ERROR(CheckConfirmed(u, confirmations));
  // For each v of N[me]: a share of b_v if v survived, of s_v if it dropped after sharing; never
  // both.
  UnmaskShares unmask;
  unmask.masked = u.sets.masked;
  for (size_t slot = 0; slot < closed_.size(); ++slot) {
    const uint32_t v = closed_[slot];
    const uint8_t* pair = shares_.data() + slot * kPairSize;
    if (u.sets.masked[v]) {
      std::copy_n(pair, kShareSize, unmask.self_seeds.emplace_back().begin());
    } else if (u.sets.shared[v]) {
      std::copy_n(pair + kShareSize, kShareSize, unmask.mask_secrets.emplace_back().begin());
    }
  }
  auto plaintext = EncodeUnmask(unmask);
  auto sealed = sealer_.Seal(
      Binding{u.round, EnvelopeKind::kUnmask, sealer_.name(), u.params.hospital, view_}, plaintext);
  sodium_memzero(plaintext.data(), plaintext.size());
  if (!sealed.ok()) return sealed.status();
  done_ = Step::kUnmasked;  // one unmask per round, whatever a caller does next
  return Envelope{EnvelopeKind::kUnmask, u.round, sealer_.name(), u.params.hospital,
                  std::move(sealed.value())};
}

}  // namespace tally
