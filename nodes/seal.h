// End-to-end sealing and pairwise masks between parties.
//
// Each pair of parties shares two keys derived once from X25519 (crypto_box_beforenm) and
// BLAKE2b with a Tally label: a sealing key and a mask key.
//   Sealing: a sealed payload is nonce(24) || XChaCha20-Poly1305 ciphertext and tag(16), with
//   associated data binding protocol version, kind, round id, the round's view (RoundView),
//   sender and recipient: a payload replayed into another round, redirected, presented as
//   from another sender, or sealed under another view of the round fails to open. Nonces are
//   fresh random.
//   Masks: for one round, patients a and b both derive the same ChaCha20 stream from their
//   mask key, the round id and both join nonces; the lower-named adds it to its input, the
//   other subtracts it, so every mask cancels in the sum of all patients' masked inputs
//   (schema/PROTOCOL.md, "Masks").
//
// The broker does not link this library: it cannot open a payload even by mistake.
// Thread-compatible: a Sealer is immutable after Create, so concurrent Seal/Open are safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keys/keys.h"
#include "nodes/aggregate.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

using ViewDigest = std::array<uint8_t, 32>;

// BLAKE2b-256 of what a patient's masked input depends on: round id, the hospital's name and
// sealing public key, range, length, and each participant's name, sealing public key and join
// nonce, in order (schema/PROTOCOL.md, "The view"). `seal_keys` holds the hospital's key then
// each participant's, as the party computing the view knows them from its own roster, so
// parties whose rosters disagree on a key compute different views, and a masked input made
// with a key the hospital does not know fails to open instead of summing to a wrong
// aggregate. REQUIRES: `nonces` is one per participant (the sum phase) and
// seal_keys.size() == 1 + params.participants.size().
ViewDigest RoundView(const RoundId& round, const RoundParams& params,
                     std::span<const JoinNonce> nonces, std::span<const PublicKey> seal_keys);
inline ViewDigest RoundView(const PhaseUpdate& u, std::span<const PublicKey> seal_keys) {
  return RoundView(u.round, u.params, u.nonces, seal_keys);
}

struct Binding {
  RoundId round{};
  EnvelopeKind kind = EnvelopeKind::kPartial;
  std::string_view sender;
  std::string_view recipient;
  ViewDigest view{};
};

// The associated data for a binding (exposed for PROTOCOL.md's test vectors and for tests).
std::vector<uint8_t> BindingBytes(const Binding& binding);

class Sealer {
 public:
  // Precomputes a shared key with every other party in the roster.
  static Result<Sealer> Create(const SecretCertificate& me, const Roster& roster);

  const std::string& name() const { return name_; }
  // RoundView with the sealing keys of this party's roster. Fails naming a party of the round
  // that the roster lacks. REQUIRES: `nonces` is one per participant.
  Result<ViewDigest> View(const RoundId& round, const RoundParams& params,
                          std::span<const JoinNonce> nonces) const;
  Result<ViewDigest> View(const PhaseUpdate& u) const { return View(u.round, u.params, u.nonces); }
  // REQUIRES: binding.sender == name(); the recipient is in the roster.
  Result<std::vector<uint8_t>> Seal(const Binding& binding,
                                    std::span<const uint8_t> plaintext) const;
  // REQUIRES: binding.recipient == name(). Fails unless the payload was sealed by
  // binding.sender to us under exactly this binding and is unmodified; when the seal itself does
  // not open, with Status::Code::kUnauthentic.
  Result<std::vector<uint8_t>> Open(const Binding& binding, std::span<const uint8_t> sealed) const;

  // This party's pairwise masks for a round (schema/PROTOCOL.md, "Masks"): one key per other
  // participant, from the pair's mask key, the round id and both join nonces, and whether its
  // stream is added (we are the lower-named) or subtracted. Fails unless this party is a
  // participant, the list repeats no name, `nonces` is one per participant and every peer is
  // in the roster.
  Result<RoundMasks> Masks(const RoundId& round, const RoundParams& params,
                           std::span<const JoinNonce> nonces) const;
  // Masks() for the round in `update`, applied to `values` (ApplyMasks, nodes/aggregate.h).
  // Fails, leaving `values` unchanged, as Masks() does or unless `values` has
  // PayloadLength(update.params) elements.
  Status AddMasks(const PhaseUpdate& update, std::span<uint64_t> values) const;

 private:
  Sealer() : peer_secrets_(0) {}
  // The sealing key (first 32 bytes) and mask key (next 32) shared with `peer`, or nullptr.
  const uint8_t* PeerKeys(std::string_view peer) const;
  static constexpr size_t kPeerKeyBytes = 64;
  std::string name_;
  std::map<std::string, size_t, std::less<>> peer_index_;  // into peer_secrets_, in 64s
  SecretBytes peer_secrets_;
  std::map<std::string, PublicKey, std::less<>> seal_public_;  // every node's, ours included
};

}  // namespace tally
