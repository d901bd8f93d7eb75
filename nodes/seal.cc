// End-to-end sealing: see seal.h.
#include "nodes/seal.h"

#include <sodium.h>

#include <cstring>
#include <utility>

#include "schema/protocol.h"

namespace tally {
namespace {

// The binding's version tag spells the protocol version; a new version must change both.
static_assert(kProtocolVersion == 1, "update kBindingTag with the protocol version");
constexpr std::string_view kBindingTag = "tally/1";
constexpr std::string_view kKeyLabel = "tally seal v1";

static_assert(kSealNonceSize == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
static_assert(kSealTagSize == crypto_aead_xchacha20poly1305_ietf_ABYTES);
static_assert(SecretKey::size() == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(SecretKey::size() == crypto_box_BEFORENMBYTES);

// Local rather than schema's KindName: the error text must not depend on the wire codec.
std::string_view KindWord(EnvelopeKind kind) {
  switch (kind) {
    case EnvelopeKind::kShare:
      return "share";
    case EnvelopeKind::kPartial:
      return "partial";
  }
  return "payload";
}

// shared = BLAKE2b-256(crypto_box_beforenm(peer_pk, my_sk) || "tally seal v1"). beforenm is
// symmetric, so both ends of a pair derive the same key.
Status DeriveSharedKey(const PublicKey& peer_public, const SecretKey& my_secret,
                       SecretKey& shared) {
  SecretKey box_key;  // guarded scratch for the intermediate key; wiped when dropped
  if (crypto_box_beforenm(box_key.data(), peer_public.data(), my_secret.data()) != 0) {
    return Status::Error("invalid seal public key");
  }
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, SecretKey::size());
  crypto_generichash_update(&state, box_key.data(), SecretKey::size());
  crypto_generichash_update(&state, reinterpret_cast<const uint8_t*>(kKeyLabel.data()),
                            kKeyLabel.size());
  crypto_generichash_final(&state, shared.data(), SecretKey::size());
  sodium_memzero(&state, sizeof state);
  return Status::Ok();
}

}  // namespace

std::vector<uint8_t> BindingBytes(const Binding& binding) {
  // Presized and filled in place (GCC 12 misreports vector::insert after reserve as an
  // overflow under -Wstringop-overflow).
  std::vector<uint8_t> out(kBindingTag.size() + 1 + binding.round.size() + 1 +
                           binding.sender.size() + 1 + binding.recipient.size());
  uint8_t* p = out.data();
  auto put = [&p](const void* bytes, size_t size) {
    if (size != 0) std::memcpy(p, bytes, size);
    p += size;
  };
  put(kBindingTag.data(), kBindingTag.size());
  *p++ = static_cast<uint8_t>(binding.kind);
  put(binding.round.data(), binding.round.size());
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
  for (const Certificate& peer : roster.all()) {
    // Nobody seals to the broker, and sealing to oneself is never needed.
    if (peer.name == my_name || peer.role == Role::kBroker) continue;
    SecretKey shared;
    Status status = DeriveSharedKey(peer.seal_public, me.seal_secret, shared);
    if (!status.ok()) {
      return Status::Error("cannot derive a sealing key with " + peer.name + ": " +
                           status.message());
    }
    sealer.peer_keys_.emplace(peer.name, std::move(shared));
  }
  return sealer;
}

Result<std::vector<uint8_t>> Sealer::Seal(const Binding& binding,
                                          std::span<const uint8_t> plaintext) const {
  if (binding.sender != name_) {
    return Status::Error("cannot seal as " + std::string(binding.sender) + ": this is " + name_);
  }
  if (binding.recipient == name_) return Status::Error(name_ + " cannot seal to itself");
  auto key = peer_keys_.find(binding.recipient);
  if (key == peer_keys_.end()) {
    return Status::Error("no sealing key for recipient " + std::string(binding.recipient));
  }
  const std::vector<uint8_t> ad = BindingBytes(binding);
  std::vector<uint8_t> sealed(kSealNonceSize + plaintext.size() + kSealTagSize);
  randombytes_buf(sealed.data(), kSealNonceSize);
  unsigned long long sealed_length = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(sealed.data() + kSealNonceSize, &sealed_length,
                                             plaintext.data(), plaintext.size(), ad.data(),
                                             ad.size(), nullptr, sealed.data(), key->second.data());
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
  auto key = peer_keys_.find(binding.sender);
  if (key == peer_keys_.end()) {
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
          sealed.size() - kSealNonceSize, ad.data(), ad.size(), sealed.data(),
          key->second.data()) != 0) {
    return Status::Error("cannot open " + what + ": authentication failed");
  }
  plaintext.resize(plaintext_length);
  return plaintext;
}

}  // namespace tally
