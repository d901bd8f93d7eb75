// The arithmetic of a round, in one place: inputs, pairwise masks and the hospital's sum are
// vectors of u64 added modulo 2^64 (schema/PROTOCOL.md, "Masks" and "Plaintext"). The keys come
// from the seal (Sealer::Masks, nodes/seal.h); what is done with them is here. Shamir
// reconstruction and fixed-point decoding belong here too.
// Thread-compatible.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "keys/keys.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

inline constexpr size_t kRoundMaskKeyBytes = 32;  // a ChaCha20-IETF key

// One party's masks for one round: a ChaCha20 key per other participant, in participant order,
// in guarded memory, and whether that peer's stream is added or subtracted.
struct RoundMasks {
  SecretBytes keys;       // kRoundMaskKeyBytes per peer
  std::vector<bool> add;  // per peer: true if we are the lower-named of the pair
};

// values[e] += stream_p[e] or -= it, for every peer p (mod 2^64), where stream_p[e] is bytes
// [8e, 8e+8) of ChaCha20-IETF(key_p, nonce 0, counter 0) as a little-endian u64. Every mask is
// added by one party of its pair and subtracted by the other, so they cancel in the sum.
void ApplyMasks(const RoundMasks& masks, std::span<uint64_t> values);

// The hospital's running sum of masked inputs, `length` elements mod 2^64; wiped when dropped.
class Sum {
 public:
  explicit Sum(uint32_t length) : values_(length, 0) {}
  ~Sum();
  Sum(const Sum&) = delete;
  Sum& operator=(const Sum&) = delete;

  // Adds the values of a masked input's plaintext (EncodePayload's format, checked for `kind`
  // and this sum's length) without copying them; the sum is unchanged on error.
  Status AddPayload(std::span<const uint8_t> payload, EnvelopeKind kind);
  const std::vector<uint64_t>& values() const { return values_; }
  // Whether every element is at most `range`: each input is, their sum need not be.
  bool AtMost(uint64_t range) const;

 private:
  std::vector<uint64_t> values_;
};

}  // namespace tally
