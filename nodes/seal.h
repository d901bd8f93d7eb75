// End-to-end sealing between parties: sender-authenticated encryption bound to its context.
//
// Each pair of parties shares a key derived once from X25519 (crypto_box_beforenm) and
// BLAKE2b with a Tally label. A sealed payload is nonce(24) || XChaCha20-Poly1305 ciphertext
// and tag(16), with associated data binding protocol version, round id, kind, sender and
// recipient: a payload replayed into another round, redirected to another recipient, or
// presented as from another sender or of another kind fails to open. Nonces are fresh random.
//
// The broker does not link this library: it cannot open a payload even by mistake.
// Thread-compatible: a Sealer is immutable after Create, so concurrent Seal/Open are safe.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keys/keys.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

struct Binding {
  RoundId round{};
  EnvelopeKind kind = EnvelopeKind::kShare;
  std::string_view sender;
  std::string_view recipient;
};

// The associated data for a binding (exposed for PROTOCOL.md's test vectors and for tests).
std::vector<uint8_t> BindingBytes(const Binding& binding);

class Sealer {
 public:
  // Precomputes a shared key with every other party in the roster.
  static Result<Sealer> Create(const SecretCertificate& me, const Roster& roster);

  const std::string& name() const { return name_; }
  // REQUIRES: binding.sender == name(); the recipient is in the roster.
  Result<std::vector<uint8_t>> Seal(const Binding& binding,
                                    std::span<const uint8_t> plaintext) const;
  // REQUIRES: binding.recipient == name(). Fails unless the payload was sealed by
  // binding.sender to us under exactly this binding and is unmodified.
  Result<std::vector<uint8_t>> Open(const Binding& binding, std::span<const uint8_t> sealed) const;

 private:
  std::string name_;
  std::map<std::string, SecretKey, std::less<>> peer_keys_;
};

}  // namespace tally
