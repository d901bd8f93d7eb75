// Protocol constants: every number the wire, the capture format and the round use.
// schema/PROTOCOL.md documents each of them for implementers in other languages.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

namespace tally {

inline constexpr uint32_t kProtocolVersion = 3;  // first element of every wire message
inline constexpr size_t kRoundIdSize = 16;       // 128-bit random round ids
inline constexpr size_t kRoundKeySize = 32;      // an X25519 public key of a round
inline constexpr size_t kSignatureSize = 64;     // an Ed25519 signature
// A keys item: a patient's cpk || spk || its signature on them.
inline constexpr size_t kKeysItemSize = 2 * kRoundKeySize + kSignatureSize;
inline constexpr size_t kShareSize = 32;  // one Shamir share of a 32-byte secret
// A sealed share: nonce || (share of b || share of s) || Poly1305 tag.
inline constexpr size_t kSealedShareSize = 24 + 2 * kShareSize + 16;
inline constexpr size_t kMaxNameLength = 32;            // party names: [a-z0-9_-]{1,32}
inline constexpr size_t kMaxParticipants = 10000;       // patients in a neighbourhood round
inline constexpr size_t kMaxFullRound = 1000;           // patients in a full round
inline constexpr uint32_t kMaxVectorLength = 1u << 20;  // elements per input (8 MiB of u64)
inline constexpr size_t kMaxReasonLength = 200;         // abort / refuse / notice reasons
inline constexpr size_t kMaxColumns = 256;              // named columns in one round
inline constexpr uint32_t kMaxDecimalsInRound = 18;     // digits after the point, per column
inline constexpr size_t kSealNonceSize = 24;            // XChaCha20-Poly1305 nonce
inline constexpr size_t kSealTagSize = 16;              // Poly1305 tag
inline constexpr size_t kSealOverhead = kSealNonceSize + kSealTagSize;
// Bytes a sealed payload adds around its values blob (msgpack array header, version, kind,
// bin header) — a generous bound used to size limits, not an exact figure.
inline constexpr size_t kPayloadOverhead = 64;
// Bytes an envelope adds around its sealed payload: header fields and msgpack framing.
inline constexpr size_t kEnvelopeOverhead = 256;

inline constexpr uint32_t kCaptureFormatVersion = 3;

using RoundId = std::array<uint8_t, kRoundIdSize>;
using RoundKey = std::array<uint8_t, kRoundKeySize>;  // a patient's per-round public key
using Signature = std::array<uint8_t, kSignatureSize>;
using Share = std::array<uint8_t, kShareSize>;

// Largest sealed payload in rounds of vectors of `length` elements and `participants` patients:
// a masked input (8 bytes per element) or an unmask (a share per participant and their set).
constexpr size_t MaxSealedSize(uint32_t length, size_t participants = kMaxParticipants) {
  return std::max(size_t{length} * 8, participants * kShareSize + (participants + 7) / 8) +
         kPayloadOverhead + kSealOverhead;
}
// Largest wire message for vectors of `length` elements and `participants` names: at most an
// envelope (its sealed payload, or an unmask of a share per participant) plus a phase update's
// name per participant, or a batch (an item of at most kKeysItemSize bytes, with its array and
// index, per participant): what ZMQ_MAXMSGSIZE is set from.
constexpr size_t MaxMessageSize(uint32_t length, size_t participants = kMaxParticipants) {
  return MaxSealedSize(length, participants) + kEnvelopeOverhead +
         participants * (kMaxNameLength + 2 + kKeysItemSize + 8);
}

}  // namespace tally
