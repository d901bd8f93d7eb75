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

// The binding's version tag spells the protocol version; a new version must change both.
static_assert(kProtocolVersion == 2, "update the labels with the protocol version");
constexpr std::string_view kBindingTag = "tally/2";
constexpr std::string_view kSealLabel = "tally seal v2";
constexpr std::string_view kMaskLabel = "tally mask v2";
constexpr std::string_view kViewLabel = "tally view v2";
// Mask streams are generated and applied this many elements at a time, for every peer in
// turn: the chunk of values stays in cache while each peer's stream is added.
constexpr size_t kMaskChunk = 2048;  // 16 KiB of u64, a multiple of the 64-byte block

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

ViewDigest RoundView(const PhaseUpdate& u, std::span<const PublicKey> seal_keys) {
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, std::tuple_size_v<ViewDigest>);
  HashUpdate(state, kViewLabel.data(), kViewLabel.size());
  HashUpdate(state, u.round.data(), u.round.size());
  HashName(state, u.hospital);
  if (!seal_keys.empty()) HashUpdate(state, seal_keys[0].data(), seal_keys[0].size());
  HashU64(state, u.range);
  HashU64(state, u.length);
  HashU64(state, u.participants.size());
  for (size_t i = 0; i < u.participants.size(); ++i) {
    HashName(state, u.participants[i]);
    if (i + 1 < seal_keys.size())
      HashUpdate(state, seal_keys[i + 1].data(), seal_keys[i + 1].size());
    if (i < u.nonces.size()) HashUpdate(state, u.nonces[i].data(), kJoinNonceSize);
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

Result<ViewDigest> Sealer::View(const PhaseUpdate& u) const {
  std::vector<PublicKey> keys;
  keys.reserve(1 + u.participants.size());
  for (const std::string* name = &u.hospital;;) {
    auto key = seal_public_.find(*name);
    if (key == seal_public_.end())
      return Status::Error(*name + " is not in " + name_ + "'s roster");
    keys.push_back(key->second);
    if (keys.size() > u.participants.size()) break;
    name = &u.participants[keys.size() - 1];
  }
  return RoundView(u, keys);
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
    return Status::Error("cannot open " + what + ": authentication failed");
  }
  plaintext.resize(plaintext_length);
  return plaintext;
}

Status Sealer::AddMasks(const PhaseUpdate& u, std::span<uint64_t> values) const {
  const auto& names = u.participants;
  if (u.nonces.size() != names.size())
    return Status::Error("the round has no join nonce for every participant");
  if (values.size() != u.length)
    return Status::Error("input has " + std::to_string(values.size()) +
                         " elements, the round asks for " + std::to_string(u.length));
  if (std::set<std::string_view>(names.begin(), names.end()).size() != names.size())
    return Status::Error("the round's participant list repeats a name");
  const auto mine = std::find(names.begin(), names.end(), name_);
  if (mine == names.end()) return Status::Error(name_ + " is not a participant of the round");
  const JoinNonce& my_nonce = u.nonces[static_cast<size_t>(mine - names.begin())];
  for (const auto& name : names) {
    if (name != name_ && PeerKeys(name) == nullptr) return Status::Error("no mask key for " + name);
  }

  // One ChaCha20 key per peer for this round, and whether its stream is added or subtracted.
  constexpr size_t kKey = crypto_stream_chacha20_ietf_KEYBYTES;
  std::vector<uint8_t> keys;
  keys.reserve(names.size() * kKey);  // never reallocated: no unwiped copy is left behind
  std::vector<bool> add;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name_) continue;
    const uint8_t* mask_key = PeerKeys(names[i]) + SecretKey::size();  // present: checked above
    const bool lower = name_ < names[i];
    keys.resize(keys.size() + kKey);
    RoundMaskKey(mask_key, u.round, lower ? my_nonce : u.nonces[i], lower ? u.nonces[i] : my_nonce,
                 keys.data() + keys.size() - kKey);
    add.push_back(lower);
  }

  static_assert(std::endian::native == std::endian::little,
                "mask elements are little-endian u64 from the stream");
  static_assert(kMaskChunk * 8 % 64 == 0, "chunks must start on a ChaCha20 block");
  const uint8_t zero_nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  std::vector<uint64_t> stream(std::min(kMaskChunk, values.size()));
  for (size_t start = 0; start < values.size(); start += kMaskChunk) {
    const size_t count = std::min(kMaskChunk, values.size() - start);
    const auto block = static_cast<uint32_t>(start * 8 / 64);
    for (size_t p = 0; p < add.size(); ++p) {
      std::fill_n(stream.begin(), count, 0);
      crypto_stream_chacha20_ietf_xor_ic(reinterpret_cast<uint8_t*>(stream.data()),
                                         reinterpret_cast<const uint8_t*>(stream.data()), count * 8,
                                         zero_nonce, block, keys.data() + p * kKey);
      uint64_t* v = values.data() + start;
      if (add[p]) {
        for (size_t e = 0; e < count; ++e) v[e] += stream[e];
      } else {
        for (size_t e = 0; e < count; ++e) v[e] -= stream[e];
      }
    }
  }
  sodium_memzero(keys.data(), keys.size());
  sodium_memzero(stream.data(), stream.size() * sizeof(uint64_t));
  return Status::Ok();
}

}  // namespace tally
