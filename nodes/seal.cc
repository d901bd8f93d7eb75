// The end-to-end crypto of a round: see seal.h.
#include "nodes/seal.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "schema/protocol.h"

namespace tally {
namespace {

// Each label names the version of its own construction, which changes when what it covers
// changes: protocol 3 added round keys, signatures, shares and self masks, and the view binds the
// round digest and the round keys (v4); the sealing key is protocol 2's. Review them with every
// protocol version.
static_assert(kProtocolVersion == 3, "review the labels with the protocol version");
constexpr std::string_view kBindingTag = "tally/3";
constexpr std::string_view kSealLabel = "tally seal v2";
constexpr std::string_view kDigestLabel = "tally round v3";
constexpr std::string_view kViewLabel = "tally view v4";
constexpr std::string_view kKeysLabel = "tally keys v3";
constexpr std::string_view kConfirmLabel = "tally confirm v4";
constexpr std::string_view kShareLabel = "tally share v3";
constexpr std::string_view kShareTag = "tally/3 share";
constexpr std::string_view kMaskLabel = "tally mask v4";
constexpr std::string_view kSelfLabel = "tally self v3";
constexpr std::string_view kGraphLabel = "tally graph request v5";
constexpr std::string_view kSurvivorsLabel = "tally survivors v5";

static_assert(kSealNonceSize == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
static_assert(kSealTagSize == crypto_aead_xchacha20poly1305_ietf_ABYTES);
static_assert(SecretKey::size() == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(SecretKey::size() == crypto_box_BEFORENMBYTES);
static_assert(kRoundKeySize == crypto_box_PUBLICKEYBYTES);
static_assert(SecretKey::size() == crypto_box_SECRETKEYBYTES);
static_assert(kSealedShareSize == kSealNonceSize + 2 * kShareSize + kSealTagSize);
static_assert(kSignatureSize == crypto_sign_BYTES);
static_assert(SecretKey::size() == crypto_sign_SEEDBYTES);

// Local rather than schema's KindName: the error text must not depend on the wire codec.
std::string_view KindWord(EnvelopeKind kind) {
  switch (kind) {
    case EnvelopeKind::kPartial:
      return "partial";
    case EnvelopeKind::kUnmask:
      return "unmask";
  }
  return "payload";
}

// BLAKE2b-256, optionally keyed, over pieces added one by one; the state is wiped when done.
class Hash {
 public:
  explicit Hash(const uint8_t* key = nullptr, size_t key_size = 0) {
    crypto_generichash_init(&state_, key, key_size, 32);
  }
  ~Hash() { sodium_memzero(&state_, sizeof state_); }
  Hash& Add(const void* bytes, size_t size) {
    crypto_generichash_update(&state_, static_cast<const uint8_t*>(bytes), size);
    return *this;
  }
  Hash& Add(std::string_view s) { return Add(s.data(), s.size()); }
  Hash& Add(std::span<const uint8_t> s) { return Add(s.data(), s.size()); }
  Hash& U64(uint64_t v) {
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(v >> (8 * i));
    return Add(le, sizeof le);
  }
  // One length byte, then the name (names are at most 32 bytes: unambiguous).
  Hash& Name(std::string_view name) {
    const auto size = static_cast<uint8_t>(name.size());
    return Add(&size, 1).Add(name);
  }
  void Final(uint8_t* out) { crypto_generichash_final(&state_, out, 32); }
  std::array<uint8_t, 32> Final() {
    std::array<uint8_t, 32> out{};
    Final(out.data());
    return out;
  }

 private:
  crypto_generichash_state state_;
};

// key = BLAKE2b-256(32 bytes of key material || label), 32 bytes at `out`.
void DeriveKey(const uint8_t* material, std::string_view label, uint8_t* out) {
  Hash().Add(material, 32).Add(label).Final(out);
}

}  // namespace

RoundDigest DigestOf(const RoundId& round, const RoundParams& params) {
  Hash h;
  h.Add(kDigestLabel).Add(round).Name(params.hospital).U64(params.range).U64(params.length);
  h.U64(params.columns.size());
  for (const Column& c : params.columns) {
    // Bounds as two's complement.
    h.Name(c.name).U64(static_cast<uint64_t>(c.lower)).U64(static_cast<uint64_t>(c.upper));
    h.U64(c.decimals);
  }
  h.U64(params.weight.max).U64(params.weight.decimals).U64(params.threshold);
  h.U64(params.participants.size());
  for (const std::string& p : params.participants) h.Name(p);
  if (params.graph) {
    const Neighbourhood& g = *params.graph;
    h.U64(g.corrupt_ppm).U64(g.dropout_ppm).U64(g.degree).U64(g.threshold).Add(g.seed);
  }
  return h.Final();
}

Result<SignedKeys> KeysOf(const Batch& batch, const Members& joined, std::span<const uint32_t> from,
                          std::string_view whom) {
  SignedKeys out{std::vector<RoundPublicKeys>(from.size()), std::vector<Signature>(from.size())};
  size_t members = 0;
  for (uint32_t v : from) members += v < joined.size() && joined[v];
  // The decoder refuses an index given twice too; a batch built in-process is checked here.
  bool fits = batch.kind == BatchKind::kKeys && batch.items.size() == members;
  std::vector<bool> seen(from.size(), false);
  for (const BatchItem& item : batch.items) {
    const auto at = std::lower_bound(from.begin(), from.end(), item.index);
    const size_t slot = static_cast<size_t>(at - from.begin());
    fits = fits && at != from.end() && *at == item.index && item.index < joined.size() &&
           joined[item.index] && !seen[slot] && item.data.size() == kKeysItemSize;
    if (!fits) break;
    seen[slot] = true;
    auto data = item.data.begin();
    std::copy_n(data, kRoundKeySize, out.keys[slot].cpk.begin());
    std::copy_n(data + kRoundKeySize, kRoundKeySize, out.keys[slot].spk.begin());
    std::copy_n(data + 2 * kRoundKeySize, kSignatureSize, out.signatures[slot].begin());
  }
  if (!fits)
    return Status::Error("the keys batch is not one for each " + std::string(whom) +
                         " that joined");
  return out;
}

Result<SignedKeys> KeysOf(const Batch& batch, const Members& joined, std::optional<size_t> me) {
  std::vector<uint32_t> from;
  for (size_t v = 0; v < joined.size(); ++v)
    if (v != me) from.push_back(static_cast<uint32_t>(v));
  Result<SignedKeys> keys = KeysOf(batch, joined, from, "other patient");
  if (!keys.ok())
    return me ? keys.status() : Status::Error("the keys batch does not match those who joined");
  if (me && *me < joined.size()) {  // per participant: an empty entry for ourselves
    keys->keys.insert(keys->keys.begin() + static_cast<ptrdiff_t>(*me), RoundPublicKeys{});
    keys->signatures.insert(keys->signatures.begin() + static_cast<ptrdiff_t>(*me), Signature{});
  }
  return keys;
}

namespace {

// What every signed statement starts with: label || 32-byte digest || u8 len(signer) || signer.
std::vector<uint8_t> StatementOf(std::string_view label, const std::array<uint8_t, 32>& digest,
                                 std::string_view signer) {
  std::vector<uint8_t> out(label.begin(), label.end());
  out.insert(out.end(), digest.begin(), digest.end());
  out.push_back(static_cast<uint8_t>(signer.size()));
  out.insert(out.end(), signer.begin(), signer.end());
  return out;
}

}  // namespace

std::vector<uint8_t> KeysStatement(const RoundDigest& digest, std::string_view owner,
                                   const RoundPublicKeys& keys) {
  std::vector<uint8_t> out = StatementOf(kKeysLabel, digest, owner);
  out.insert(out.end(), keys.cpk.begin(), keys.cpk.end());
  out.insert(out.end(), keys.spk.begin(), keys.spk.end());
  return out;
}

std::vector<uint8_t> ConfirmStatement(const ViewDigest& view, std::string_view signer,
                                      const Members& masked) {
  std::vector<uint8_t> out = StatementOf(kConfirmLabel, view, signer);
  const std::vector<uint8_t> bits = MembersBits(masked);
  out.insert(out.end(), bits.begin(), bits.end());
  return out;
}

std::vector<uint8_t> GraphStatement(uint64_t ticket, const RoundParams& params) {
  std::vector<uint8_t> out(kGraphLabel.begin(), kGraphLabel.end());
  auto name = [&out](std::string_view n) {
    out.push_back(static_cast<uint8_t>(n.size()));
    out.insert(out.end(), n.begin(), n.end());
  };
  auto le = [&out](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  name(params.hospital);
  le(ticket, 8);
  le(params.participants.size(), 8);
  for (const std::string& p : params.participants) name(p);
  const Neighbourhood& g = *params.graph;
  for (uint32_t v : {params.threshold, g.corrupt_ppm, g.dropout_ppm, g.degree, g.threshold})
    le(v, 4);
  out.insert(out.end(), g.seed.begin(), g.seed.end());
  return out;
}

std::vector<uint8_t> SurvivorsStatement(const RoundDigest& digest, const RoundSets& sets) {
  std::vector<uint8_t> out(kSurvivorsLabel.begin(), kSurvivorsLabel.end());
  out.insert(out.end(), digest.begin(), digest.end());
  for (const Members* set : {&sets.shared, &sets.masked}) {
    const std::vector<uint8_t> bits = MembersBits(*set);
    out.insert(out.end(), bits.begin(), bits.end());
  }
  return out;
}

Status DistinctKeys(std::span<const RoundPublicKeys> keys, const Members& joined,
                    const std::vector<std::string>& names) {
  std::vector<uint32_t> everyone(keys.size());
  for (size_t v = 0; v < everyone.size(); ++v) everyone[v] = static_cast<uint32_t>(v);
  return DistinctKeys(keys, everyone, joined, names);
}

Status DistinctKeys(std::span<const RoundPublicKeys> keys, std::span<const uint32_t> who,
                    const Members& joined, const std::vector<std::string>& names) {
  std::map<RoundKey, size_t> seen;
  for (size_t slot = 0; slot < keys.size(); ++slot) {
    const size_t v = who[slot];
    if (!joined[v]) continue;
    for (const RoundKey* key : {&keys[slot].cpk, &keys[slot].spk}) {
      auto [at, fresh] = seen.emplace(*key, v);
      if (!fresh)
        return Status::Error(at->second == v ? "the round keys of " + names[v] + " are the same"
                                             : "the round keys of " + names[at->second] + " and " +
                                                   names[v] + " are the same");
    }
  }
  return Status::Ok();
}

ViewDigest RoundView(const RoundDigest& digest, std::span<const PublicKey> seal_keys,
                     const Members& shared, std::span<const RoundPublicKeys> keys) {
  Hash h;
  h.Add(kViewLabel).Add(digest).Add(seal_keys[0]);
  const uint8_t member = 1, outsider = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    h.Add(seal_keys[i + 1]);
    if (shared[i]) {
      h.Add(&member, 1).Add(keys[i].cpk).Add(keys[i].spk);
    } else {
      h.Add(&outsider, 1);
    }
  }
  return h.Final();
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

Result<Sealer> Sealer::Create(const SecretCertificate& me, const Roster& roster, SealPeers peers) {
  return Create(me, std::make_shared<const Roster>(roster), peers);
}

Result<Sealer> Sealer::Create(const SecretCertificate& me, std::shared_ptr<const Roster> roster,
                              SealPeers peers) {
  if (sodium_init() < 0) return Status::Error("libsodium failed to initialise");
  const std::string& my_name = me.pub.name;
  const Certificate* mine = roster->Find(my_name);
  if (mine == nullptr) return Status::Error(my_name + " is not in the roster");
  if (mine->seal_public != me.pub.seal_public) {
    return Status::Error("the roster's seal public key for " + my_name +
                         " does not match its secret certificate");
  }
  Sealer sealer;
  sealer.name_ = my_name;
  size_t count = 0;
  for (const Certificate& peer : roster->all()) {
    // Nobody seals to the broker, and sealing to oneself is never needed.
    if (peer.role == Role::kBroker || peer.name == my_name) continue;
    if (peers == SealPeers::kRoundPeers && peer.role == mine->role) continue;
    sealer.peer_index_.emplace(peer.name, count++);
  }
  sealer.peer_secrets_ = SecretBytes(count * kPeerKeyBytes);
  SecretKey box_key;  // guarded scratch for each X25519 result; wiped when dropped
  for (const auto& [name, index] : sealer.peer_index_) {
    const PublicKey& peer_public = roster->Find(name)->seal_public;
    if (crypto_box_beforenm(box_key.data(), peer_public.data(), me.seal_secret.data()) != 0)
      return Status::Error("cannot derive keys with " + name + ": invalid seal public key");
    DeriveKey(box_key.data(), kSealLabel, sealer.peer_secrets_.data() + index * kPeerKeyBytes);
  }
  sealer.sign_secret_ = SecretBytes(crypto_sign_SECRETKEYBYTES);
  PublicKey derived{};
  if (crypto_sign_seed_keypair(derived.data(), sealer.sign_secret_.data(), me.sign_seed.data()) !=
          0 ||
      derived != mine->sign_public)
    return Status::Error("the roster's sign public key for " + my_name +
                         " does not match its secret certificate");
  sealer.roster_ = std::move(roster);
  return sealer;
}

const uint8_t* Sealer::PeerKeys(std::string_view peer) const {
  auto it = peer_index_.find(peer);
  return it == peer_index_.end() ? nullptr : peer_secrets_.data() + it->second * kPeerKeyBytes;
}

const Certificate* Sealer::NodeCert(std::string_view name) const {
  const Certificate* c = roster_->Find(name);
  return c != nullptr && c->role != Role::kBroker ? c : nullptr;
}

Result<ViewDigest> Sealer::View(const RoundId& round, const RoundParams& params,
                                const Members& shared, std::span<const RoundPublicKeys> keys,
                                std::span<const uint32_t> closed) const {
  const size_t n = params.participants.size();
  const size_t m = closed.empty() ? n : closed.size();
  if (shared.size() != n || keys.size() != m)
    return Status::Error("the view needs the shared set and round keys of every participant");
  std::vector<PublicKey> seal_keys;
  seal_keys.reserve(1 + m);
  Members in_view(m);
  for (size_t slot = 0; slot <= m; ++slot) {
    const size_t v = slot == 0 ? 0 : closed.empty() ? slot - 1 : closed[slot - 1];
    if (v >= n) return Status::Error("the view names a participant beyond the round's");
    const std::string& name = slot == 0 ? params.hospital : params.participants[v];
    const Certificate* node = NodeCert(name);
    if (node == nullptr) return Status::Error(name + " is not in " + name_ + "'s roster");
    seal_keys.push_back(node->seal_public);
    if (slot > 0) in_view[slot - 1] = shared[v];
  }
  return RoundView(DigestOf(round, params), seal_keys, in_view, keys);
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

Signature Sealer::Sign(std::span<const uint8_t> statement) const {
  Signature out{};
  crypto_sign_detached(out.data(), nullptr, statement.data(), statement.size(),
                       sign_secret_.data());
  return out;
}

bool Sealer::Verify(std::string_view signer, std::span<const uint8_t> statement,
                    std::span<const uint8_t> signature) const {
  const Certificate* node = NodeCert(signer);
  return node != nullptr && signature.size() == kSignatureSize &&
         crypto_sign_verify_detached(signature.data(), statement.data(), statement.size(),
                                     node->sign_public.data()) == 0;
}

RoundKeyPair RoundKeyPair::Generate() {
  RoundKeyPair pair;
  crypto_box_keypair(pair.pub.data(), pair.secret.data());
  return pair;
}

// Scratch for an X25519 result on the stack, wiped on every path: a guarded allocation per peer
// costs more than the scalar multiplication (BENCHMARKS.md).
struct Point {
  uint8_t bytes[crypto_scalarmult_BYTES];
  ~Point() { sodium_memzero(bytes, sizeof bytes); }
};

Status ShareKey(const SecretKey& c_secret, const RoundKey& peer_cpk, uint8_t* out) {
  Point point;
  if (crypto_scalarmult(point.bytes, c_secret.data(), peer_cpk.data()) != 0)
    return Status::Error("a round key of small order");
  DeriveKey(point.bytes, kShareLabel, out);
  return Status::Ok();
}

namespace {
// "tally/3 share" || round || u8 len(from) || from || u8 len(to) || to, presized and filled in
// place (as BindingBytes).
std::vector<uint8_t> ShareAd(const RoundId& round, std::string_view from, std::string_view to) {
  std::vector<uint8_t> ad(kShareTag.size() + round.size() + 2 + from.size() + to.size());
  uint8_t* p = std::copy(kShareTag.begin(), kShareTag.end(), ad.data());
  p = std::copy(round.begin(), round.end(), p);
  for (std::string_view name : {from, to}) {
    *p++ = static_cast<uint8_t>(name.size());
    p = std::copy(name.begin(), name.end(), p);
  }
  return ad;
}
}  // namespace

std::vector<uint8_t> SealShare(const uint8_t* key, const RoundId& round, std::string_view from,
                               std::string_view to, std::span<const uint8_t> pair) {
  const std::vector<uint8_t> ad = ShareAd(round, from, to);
  std::vector<uint8_t> sealed(kSealNonceSize + pair.size() + kSealTagSize);
  randombytes_buf(sealed.data(), kSealNonceSize);
  crypto_aead_xchacha20poly1305_ietf_encrypt(sealed.data() + kSealNonceSize, nullptr, pair.data(),
                                             pair.size(), ad.data(), ad.size(), nullptr,
                                             sealed.data(), key);
  return sealed;
}

Status OpenShare(const uint8_t* key, const RoundId& round, std::string_view from,
                 std::string_view to, std::span<const uint8_t> sealed, std::span<uint8_t> pair) {
  if (sealed.size() != kSealNonceSize + pair.size() + kSealTagSize)
    return Status::Error("a sealed share of " + std::to_string(sealed.size()) + " bytes");
  const std::vector<uint8_t> ad = ShareAd(round, from, to);
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          pair.data(), nullptr, nullptr, sealed.data() + kSealNonceSize,
          sealed.size() - kSealNonceSize, ad.data(), ad.size(), sealed.data(), key) != 0)
    return Status::Unauthentic("authentication failed");
  return Status::Ok();
}

Status PairMaskKey(const uint8_t* s_secret, const RoundKey& peer_spk, const RoundDigest& digest,
                   size_t i, size_t j, uint8_t* out) {
  Point point;
  if (crypto_scalarmult(point.bytes, s_secret, peer_spk.data()) != 0)
    return Status::Error("a round key of small order");
  Hash h;
  h.Add(point.bytes, sizeof point.bytes).Add(kMaskLabel).Add(digest);
  for (const size_t index : {std::min(i, j), std::max(i, j)}) {
    const uint32_t le = static_cast<uint32_t>(index);
    const uint8_t bytes[4] = {static_cast<uint8_t>(le), static_cast<uint8_t>(le >> 8),
                              static_cast<uint8_t>(le >> 16), static_cast<uint8_t>(le >> 24)};
    h.Add(bytes, sizeof bytes);
  }
  h.Final(out);
  return Status::Ok();
}

void SelfMaskKey(const uint8_t* b, uint8_t* out) { DeriveKey(b, kSelfLabel, out); }

bool MatchesPublicKey(const uint8_t* secret, const RoundKey& expected) {
  RoundKey derived{};
  crypto_scalarmult_base(derived.data(), secret);
  return sodium_memcmp(derived.data(), expected.data(), derived.size()) == 0;
}

}  // namespace tally
