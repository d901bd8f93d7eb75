// End-to-end sealing: see seal.h.
#include "nodes/seal.h"

#include <sodium.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>
#include <utility>

#include "schema/protocol.h"

namespace tally {
namespace {

// Each label names the version of its own construction, which changes when what it covers
// changes: protocol 3 added the round's columns and weight to the view (v3); the seal, the
// mask keys and the binding are protocol 2's. Review them with every protocol version.
static_assert(kProtocolVersion == 3, "review the labels with the protocol version");
constexpr std::string_view kBindingTag = "tally/2";
constexpr std::string_view kSealLabel = "tally seal v2";
constexpr std::string_view kMaskLabel = "tally mask v2";
constexpr std::string_view kViewLabel = "tally view v3";

static_assert(kSealNonceSize == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
static_assert(kSealTagSize == crypto_aead_xchacha20poly1305_ietf_ABYTES);
static_assert(SecretKey::size() == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(SecretKey::size() == crypto_box_BEFORENMBYTES);

// Local rather than schema's KindName: the error text must not depend on the wire codec.
std::string_view KindWord(EnvelopeKind kind) {
  switch (kind) {
    case EnvelopeKind::kPartial:
      return "partial";
  }
  return "payload";
}

void HashUpdate(crypto_generichash_state& state, const void* bytes, size_t size) {
  crypto_generichash_update(&state, static_cast<const uint8_t*>(bytes), size);
}
void HashU64(crypto_generichash_state& state, uint64_t v) {
  uint8_t le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(v >> (8 * i));
  HashUpdate(state, le, sizeof le);
}
// One length byte, then the name (names are at most 32 bytes: unambiguous).
void HashName(crypto_generichash_state& state, std::string_view name) {
  const auto size = static_cast<uint8_t>(name.size());
  HashUpdate(state, &size, 1);
  HashUpdate(state, name.data(), name.size());
}

// key = BLAKE2b-256(crypto_box_beforenm(peer_pk, my_sk) || label), 32 bytes at `out`.
// beforenm is symmetric, so both ends of a pair derive the same keys.
void DeriveKey(const SecretKey& box_key, std::string_view label, uint8_t* out) {
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, SecretKey::size());
  HashUpdate(state, box_key.data(), SecretKey::size());
  HashUpdate(state, label.data(), label.size());
  crypto_generichash_final(&state, out, SecretKey::size());
  sodium_memzero(&state, sizeof state);
}

// The ChaCha20 key of one pair's mask in one round: BLAKE2b-256 keyed with the pair's 32-byte
// mask key over round id || nonce of the lower-named || nonce of the higher-named.
void RoundMaskKey(const uint8_t* mask_key, const RoundId& round, const JoinNonce& lower,
                  const JoinNonce& higher, uint8_t* out) {
  crypto_generichash_state state;
  crypto_generichash_init(&state, mask_key, SecretKey::size(),
                          crypto_stream_chacha20_ietf_KEYBYTES);
  HashUpdate(state, round.data(), round.size());
  HashUpdate(state, lower.data(), lower.size());
  HashUpdate(state, higher.data(), higher.size());
  crypto_generichash_final(&state, out, crypto_stream_chacha20_ietf_KEYBYTES);
  sodium_memzero(&state, sizeof state);
}

}  // namespace

ViewDigest RoundView(const RoundId& round, const RoundParams& params,
                     std::span<const JoinNonce> nonces, std::span<const PublicKey> seal_keys) {
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, std::tuple_size_v<ViewDigest>);
  HashUpdate(state, kViewLabel.data(), kViewLabel.size());
  HashUpdate(state, round.data(), round.size());
  HashName(state, params.hospital);
  if (!seal_keys.empty()) HashUpdate(state, seal_keys[0].data(), seal_keys[0].size());
  HashU64(state, params.range);
  HashU64(state, params.length);
  HashU64(state, params.columns.size());
  for (const Column& c : params.columns) {
    HashName(state, c.name);
    HashU64(state, static_cast<uint64_t>(c.lower));  // two's complement
    HashU64(state, static_cast<uint64_t>(c.upper));
    HashU64(state, c.decimals);
  }
  HashU64(state, params.weight.max);
  HashU64(state, params.weight.decimals);
  HashU64(state, params.participants.size());
  for (size_t i = 0; i < params.participants.size(); ++i) {
    HashName(state, params.participants[i]);
    if (i + 1 < seal_keys.size())
      HashUpdate(state, seal_keys[i + 1].data(), seal_keys[i + 1].size());
    if (i < nonces.size()) HashUpdate(state, nonces[i].data(), kJoinNonceSize);
  }
  ViewDigest out{};
  crypto_generichash_final(&state, out.data(), out.size());
  return out;
}

std::vector<uint8_t> BindingBytes(const Binding& binding) {
  // Presized and filled in place (GCC 12 misreports vector::insert after reserve as an
  // overflow under -Wstringop-overflow).
  std::vector<uint8_t> out(kBindingTag.size() + 1 + binding.round.size() + binding.view.size() + 1 +
                           binding.sender.size() + 1 + binding.recipient.size());
  uint8_t* p = out.data();
  auto put = [&p](const void* bytes, size_t size) {
    if (size != 0) std::memcpy(p, bytes, size);
    p += size;
  };
  put(kBindingTag.data(), kBindingTag.size());
  *p++ = static_cast<uint8_t>(binding.kind);
  put(binding.round.data(), binding.round.size());
  put(binding.view.data(), binding.view.size());
  // Names are at most kMaxNameLength (32) bytes, so one length byte is unambiguous; Seal and
  // Open only accept names from the roster.
  *p++ = static_cast<uint8_t>(binding.sender.size());
  put(binding.sender.data(), binding.sender.size());
  *p++ = static_cast<uint8_t>(binding.recipient.size());
  put(binding.recipient.data(), binding.recipient.size());
  return out;
}

Result<Sealer> Sealer::Create(const SecretCertificate& me, const Roster& roster) {
  if (sodium_init() < 0) return Status::Error("libsodium failed to initialise");
  const std::string& my_name = me.pub.name;
  const Certificate* mine = roster.Find(my_name);
  if (mine == nullptr) return Status::Error(my_name + " is not in the roster");
  if (mine->seal_public != me.pub.seal_public) {
    return Status::Error("the roster's seal public key for " + my_name +
                         " does not match its secret certificate");
  }
  Sealer sealer;
  sealer.name_ = my_name;
  size_t peers = 0;
  for (const Certificate& peer : roster.all()) {
    // Nobody seals to the broker, and sealing to oneself is never needed.
    if (peer.role == Role::kBroker) continue;
    sealer.seal_public_.emplace(peer.name, peer.seal_public);
    if (peer.name != my_name) sealer.peer_index_.emplace(peer.name, peers++);
  }
  sealer.peer_secrets_ = SecretBytes(peers * kPeerKeyBytes);
  SecretKey box_key;  // guarded scratch for each X25519 result; wiped when dropped
  for (const auto& [name, index] : sealer.peer_index_) {
    const PublicKey& peer_public = sealer.seal_public_.at(name);
    if (crypto_box_beforenm(box_key.data(), peer_public.data(), me.seal_secret.data()) != 0)
      return Status::Error("cannot derive keys with " + name + ": invalid seal public key");
    uint8_t* keys = sealer.peer_secrets_.data() + index * kPeerKeyBytes;
    DeriveKey(box_key, kSealLabel, keys);
    DeriveKey(box_key, kMaskLabel, keys + SecretKey::size());
  }
  return sealer;
}

const uint8_t* Sealer::PeerKeys(std::string_view peer) const {
  auto it = peer_index_.find(peer);
  return it == peer_index_.end() ? nullptr : peer_secrets_.data() + it->second * kPeerKeyBytes;
}

Result<ViewDigest> Sealer::View(const RoundId& round, const RoundParams& params,
                                std::span<const JoinNonce> nonces) const {
  std::vector<PublicKey> keys;
  keys.reserve(1 + params.participants.size());
  for (const std::string* name = &params.hospital;;) {
    auto key = seal_public_.find(*name);
    if (key == seal_public_.end())
      return Status::Error(*name + " is not in " + name_ + "'s roster");
    keys.push_back(key->second);
    if (keys.size() > params.participants.size()) break;
    name = &params.participants[keys.size() - 1];
  }
  return RoundView(round, params, nonces, keys);
}

Result<std::vector<uint8_t>> Sealer::Seal(const Binding& binding,
                                          std::span<const uint8_t> plaintext) const {
  if (binding.sender != name_) {
    return Status::Error("cannot seal as " + std::string(binding.sender) + ": this is " + name_);
  }
  if (binding.recipient == name_) return Status::Error(name_ + " cannot seal to itself");
  const uint8_t* key = PeerKeys(binding.recipient);
  if (key == nullptr) {
    return Status::Error("no sealing key for recipient " + std::string(binding.recipient));
  }
  const std::vector<uint8_t> ad = BindingBytes(binding);
  std::vector<uint8_t> sealed(kSealNonceSize + plaintext.size() + kSealTagSize);
  randombytes_buf(sealed.data(), kSealNonceSize);
  unsigned long long sealed_length = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(sealed.data() + kSealNonceSize, &sealed_length,
                                             plaintext.data(), plaintext.size(), ad.data(),
                                             ad.size(), nullptr, sealed.data(), key);
  sealed.resize(kSealNonceSize + sealed_length);
  return sealed;
}

Result<std::vector<uint8_t>> Sealer::Open(const Binding& binding,
                                          std::span<const uint8_t> sealed) const {
  const std::string what =
      std::string(KindWord(binding.kind)) + " from " + std::string(binding.sender);
  if (binding.recipient != name_) {
    return Status::Error("cannot open " + what + ": addressed to " +
                         std::string(binding.recipient) + ", this is " + name_);
  }
  const uint8_t* key = PeerKeys(binding.sender);
  if (key == nullptr) {
    return Status::Error("cannot open " + what + ": no sealing key for that sender");
  }
  if (sealed.size() < kSealOverhead) {
    return Status::Error("cannot open " + what + ": " + std::to_string(sealed.size()) +
                         " bytes is shorter than the " + std::to_string(kSealOverhead) +
                         "-byte seal overhead");
  }
  const std::vector<uint8_t> ad = BindingBytes(binding);
  std::vector<uint8_t> plaintext(sealed.size() - kSealOverhead);
  unsigned long long plaintext_length = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          plaintext.data(), &plaintext_length, nullptr, sealed.data() + kSealNonceSize,
          sealed.size() - kSealNonceSize, ad.data(), ad.size(), sealed.data(), key) != 0) {
    return Status::Unauthentic("cannot open " + what + ": authentication failed");
  }
  plaintext.resize(plaintext_length);
  return plaintext;
}

Result<RoundMasks> Sealer::Masks(const RoundId& round, const RoundParams& params,
                                 std::span<const JoinNonce> nonces) const {
  const auto& names = params.participants;
  if (nonces.size() != names.size())
    return Status::Error("the round has no join nonce for every participant");
  if (std::set<std::string_view>(names.begin(), names.end()).size() != names.size())
    return Status::Error("the round's participant list repeats a name");
  const auto mine = std::find(names.begin(), names.end(), name_);
  if (mine == names.end()) return Status::Error(name_ + " is not a participant of the round");
  const JoinNonce& my_nonce = nonces[static_cast<size_t>(mine - names.begin())];
  for (const auto& name : names) {
    if (name != name_ && PeerKeys(name) == nullptr) return Status::Error("no mask key for " + name);
  }
  RoundMasks masks{SecretBytes((names.size() - 1) * kRoundMaskKeyBytes), {}};
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name_) continue;
    const uint8_t* mask_key = PeerKeys(names[i]) + SecretKey::size();  // present: checked above
    const bool lower = name_ < names[i];
    RoundMaskKey(mask_key, round, lower ? my_nonce : nonces[i], lower ? nonces[i] : my_nonce,
                 masks.keys.data() + masks.add.size() * kRoundMaskKeyBytes);
    masks.add.push_back(lower);
  }
  return masks;
}

Status Sealer::AddMasks(const PhaseUpdate& u, std::span<uint64_t> values) const {
  Result<RoundMasks> masks = Masks(u.round, u.params, u.nonces);
  if (!masks.ok()) return masks.status();
  if (values.size() != PayloadLength(u.params))
    return Status::Error("input has " + std::to_string(values.size()) +
                         " elements, the round asks for " +
                         std::to_string(PayloadLength(u.params)));
  ApplyMasks(*masks, values);
  return Status::Ok();
}

}  // namespace tally
