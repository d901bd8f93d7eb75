// The end-to-end crypto of a round (schema/PROTOCOL.md, "Keys of a round", "Sealed shares",
// "Masks", "The view", "The seal"): what patients and the hospital compute, and the broker
// cannot.
//
// Static keys. Each pair of parties derives a sealing key once from X25519 (crypto_box_beforenm)
// and BLAKE2b with a Tally label, for masked inputs and unmasks (patient -> hospital). A sealed
// payload is nonce(24) || XChaCha20-Poly1305 ciphertext and tag(16), with associated data binding
// protocol version, kind, round id, the round's view, sender and recipient. Each node also signs,
// with the Ed25519 key of its certificate (RFC 8032), its round keys and its confirmations.
// Round keys. In each round a patient draws two X25519 keypairs: `c` seals the Shamir shares it
// sends other patients (a key per pair from crypto_scalarmult), `s` makes its pairwise masks
// (Bonawitz et al., CCS 2017, "Practical Secure Aggregation for Privacy-Preserving Machine
// Learning", section 4). Both are signed, so the broker cannot put keys of its own in a
// patient's place, and nor can whoever stole another patient's static secrets.
//
// The broker does not link this library: it cannot open a payload even by mistake.
// Thread-compatible: a Sealer is immutable after Create, so concurrent calls are safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keys/keys.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

using RoundDigest = std::array<uint8_t, 32>;
using ViewDigest = std::array<uint8_t, 32>;

// BLAKE2b-256 of a round's id and every parameter ("Keys of a round"): what signatures and mask
// keys bind, so that patients shown different parameters refuse each other's keys.
RoundDigest DigestOf(const RoundId& round, const RoundParams& params);

// A participant's round keys as published in a join: `cpk` seals shares to it, `spk` makes its
// pairwise masks.
struct RoundPublicKeys {
  RoundKey cpk{};
  RoundKey spk{};
  bool operator==(const RoundPublicKeys&) const = default;
};

// The round keys in a keys batch, per participant, with each one's signature: one item for each
// member of `joined` but `me` (none for the hospital). Fails unless the batch holds exactly
// those; the signatures are the caller's to verify (KeysStatement).
struct SignedKeys {
  std::vector<RoundPublicKeys> keys;  // per participant
  std::vector<Signature> signatures;  // per participant
};
Result<SignedKeys> KeysOf(const Batch& batch, const Members& joined,
                          std::optional<size_t> me = std::nullopt);
// The same per slot of `from` (participant indices, ascending; a patient's neighbours in a
// neighbourhood round): one item for each member of `joined` in `from`, and no other; the
// entries of members outside `joined` stay zero. Fails with "the keys batch is not one for each
// <whom> that joined".
Result<SignedKeys> KeysOf(const Batch& batch, const Members& joined, std::span<const uint32_t> from,
                          std::string_view whom);

// What a patient signs for its round keys: "tally keys v3" || digest || u8 len(owner) || owner ||
// cpk || spk ("Keys of a round").
std::vector<uint8_t> KeysStatement(const RoundDigest& digest, std::string_view owner,
                                   const RoundPublicKeys& keys);
// What a survivor signs to confirm the survivors: "tally confirm v4" || view || u8 len(signer) ||
// signer || U3 bits ("Order of a round", confirm). The view binds U2 and every member's round
// keys, the signer's fresh ones included: a confirmation holds for one run of one round.
std::vector<uint8_t> ConfirmStatement(const ViewDigest& view, std::string_view signer,
                                      const Members& masked);
// What the hospital signs for a neighbourhood round's graph ("Neighbourhoods"): "tally graph
// request v5" || u8 len(hospital) || hospital || ticket (u64 LE) || n (u64 LE) || each
// participant (u8 len || name) || T || corrupt || dropout || k || t (u32 LE each) || seed.
// REQUIRES: params.graph.
std::vector<uint8_t> GraphStatement(uint64_t ticket, const RoundParams& params);
// What the hospital of a neighbourhood round signs for its survivors: "tally survivors v5" ||
// digest || U2 bits || U3 bits ("Neighbourhoods", confirm).
std::vector<uint8_t> SurvivorsStatement(const RoundDigest& digest, const RoundSets& sets);

// Fails, naming them, when two members of `joined` (per participant in `keys`) have the same cpk
// or spk, or one has cpk = spk: a patient that copies another's key must not make a pair of masks
// cancel ("Masks").
Status DistinctKeys(std::span<const RoundPublicKeys> keys, const Members& joined,
                    const std::vector<std::string>& names);
// The same for keys per slot of `who` (participant indices): what a patient of a neighbourhood
// round was given, its own keys included.
Status DistinctKeys(std::span<const RoundPublicKeys> keys, std::span<const uint32_t> who,
                    const Members& joined, const std::vector<std::string>& names);

// BLAKE2b-256 over the digest, the hospital's sealing key, and per participant its sealing key and,
// for a member of U2, its round keys ("The view"). `seal_keys` holds the hospital's key then each
// participant's, as the viewer's roster has them; `keys` one entry per participant (read for
// members of `shared` only). A masked input made for another set, other round keys or another
// roster's key fails to open at the hospital instead of summing to a wrong aggregate.
// REQUIRES: seal_keys.size() == 1 + n, shared.size() == keys.size() == n.
ViewDigest RoundView(const RoundDigest& digest, std::span<const PublicKey> seal_keys,
                     const Members& shared, std::span<const RoundPublicKeys> keys);

struct Binding {
  RoundId round{};
  EnvelopeKind kind = EnvelopeKind::kPartial;
  std::string_view sender;
  std::string_view recipient;
  ViewDigest view{};
};

// The associated data for a binding (exposed for PROTOCOL.md's test vectors and for tests).
std::vector<uint8_t> BindingBytes(const Binding& binding);

// Which parties a Sealer derives a static sealing key with when it is created (an X25519 each).
//   kEveryone:   every other patient and hospital of the roster: any of them may be sealed to or
//                opened from.
//   kRoundPeers: those a round needs: a patient's hospitals (it seals its masked input and its
//                unmask to them; the shares between patients use round keys), a hospital's
//                patients (it opens what they seal). A patient of a roster of N derives one key
//                instead of N - 1: a cohort of N on one machine no longer costs N^2 X25519.
enum class SealPeers { kEveryone, kRoundPeers };

class Sealer {
 public:
  // Precomputes the sealing key with `peers` of the roster. Fails for a roster key of small
  // order. The roster's public keys are read from it, not copied per Sealer: one roster can
  // serve many Sealers in one process (a load generator hosting thousands of patients).
  static Result<Sealer> Create(const SecretCertificate& me, std::shared_ptr<const Roster> roster,
                               SealPeers peers = SealPeers::kEveryone);
  // The same with a copy of `roster`.
  static Result<Sealer> Create(const SecretCertificate& me, const Roster& roster,
                               SealPeers peers = SealPeers::kEveryone);

  const std::string& name() const { return name_; }
  // RoundView with the sealing keys of this party's roster over the participants `closed`
  // (ascending; a patient's closed neighbourhood N[u] in a neighbourhood round), `keys` one per
  // slot of `closed`, `shared` per participant; empty `closed`: every participant. Fails naming a
  // party of the round that the roster lacks.
  Result<ViewDigest> View(const RoundId& round, const RoundParams& params, const Members& shared,
                          std::span<const RoundPublicKeys> keys,
                          std::span<const uint32_t> closed = {}) const;
  // REQUIRES: binding.sender == name(); the recipient is in the roster.
  Result<std::vector<uint8_t>> Seal(const Binding& binding,
                                    std::span<const uint8_t> plaintext) const;
  // REQUIRES: binding.recipient == name(). Fails unless the payload was sealed by
  // binding.sender to us under exactly this binding and is unmodified; when the seal itself does
  // not open, with Status::Code::kUnauthentic.
  Result<std::vector<uint8_t>> Open(const Binding& binding, std::span<const uint8_t> sealed) const;

  // This party's Ed25519 signature on `statement`.
  Signature Sign(std::span<const uint8_t> statement) const;
  // Whether `signature` is `signer`'s (a node of this party's roster) on `statement`.
  bool Verify(std::string_view signer, std::span<const uint8_t> statement,
              std::span<const uint8_t> signature) const;

 private:
  Sealer() : peer_secrets_(0) {}
  // The sealing key shared with `peer`, or nullptr.
  const uint8_t* PeerKeys(std::string_view peer) const;
  // A node's certificate (a patient's or a hospital's, ours included), or nullptr.
  const Certificate* NodeCert(std::string_view name) const;
  static constexpr size_t kPeerKeyBytes = 32;
  std::string name_;
  std::map<std::string, size_t, std::less<>> peer_index_;  // into peer_secrets_, in 32s
  SecretBytes peer_secrets_;
  SecretBytes sign_secret_{0};            // our Ed25519 secret key, expanded (64 bytes)
  std::shared_ptr<const Roster> roster_;  // every node's public keys
};

// --- Round keys ---------------------------------------------------------------------------

// A fresh X25519 keypair for one round (crypto_box_keypair); the secret in guarded memory.
struct RoundKeyPair {
  RoundKey pub{};
  SecretKey secret;
  static RoundKeyPair Generate();
};

// The key of the shares between two patients: BLAKE2b-256(crypto_scalarmult(c, peer_cpk) ||
// "tally share v3"), the same from both ends, 32 bytes at `out`. Fails for a peer key of small
// order.
Status ShareKey(const SecretKey& c_secret, const RoundKey& peer_cpk, uint8_t* out);
// A share pair (share of b || share of s, 2 x kShareSize bytes) sealed from `from` to `to` in
// `round`: kSealedShareSize bytes ("Sealed shares").
std::vector<uint8_t> SealShare(const uint8_t* key, const RoundId& round, std::string_view from,
                               std::string_view to, std::span<const uint8_t> pair);
// Opens SealShare's output into `pair` (2 x kShareSize bytes, the caller's guarded memory); fails
// unless it was sealed with `key` from `from` to `to` in `round`, unmodified.
Status OpenShare(const uint8_t* key, const RoundId& round, std::string_view from,
                 std::string_view to, std::span<const uint8_t> sealed, std::span<uint8_t> pair);

// The ChaCha20 key of the pairwise mask of participants i and j (s's owner and the owner of
// `peer_spk`, either order) in the round of `digest`: BLAKE2b-256(crypto_scalarmult(s, peer_spk)
// || "tally mask v4" || digest || u32 LE min(i, j) || u32 LE max(i, j)), 32 bytes at `out`
// ("Masks"). Fails for a peer key of small order.
Status PairMaskKey(const uint8_t* s_secret, const RoundKey& peer_spk, const RoundDigest& digest,
                   size_t i, size_t j, uint8_t* out);
// The ChaCha20 key of a self mask: BLAKE2b-256(b || "tally self v3"), 32 bytes at `out`.
void SelfMaskKey(const uint8_t* b, uint8_t* out);
// crypto_scalarmult_base(secret) == expected: a rebuilt mask secret matches its published key.
bool MatchesPublicKey(const uint8_t* secret, const RoundKey& expected);

}  // namespace tally
