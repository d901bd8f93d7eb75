// Shamir secret sharing of 32-byte secrets (Shamir, "How to share a secret", CACM 22(11), 1979),
// over GF(2^16) with the reduction polynomial x^16 + x^12 + x^3 + x + 1 (0x1100b), as in
// schema/PROTOCOL.md, "Shamir sharing".
//
// A secret is 16 little-endian 16-bit words w_0..w_15, each shared on its own: with threshold T,
// word k of the share for point x is w_k + a_1,k·x + … + a_{T−1},k·x^{T−1}, and a share is the
// 16 values as little-endian words (kShareSize = 32 bytes). Participant i (0-based, in the
// round's participant order) gets the share for x = i + 1, so points are non-zero and there can
// be at most 65,535 of them. Any T shares rebuild the secret by Lagrange interpolation at 0;
// fewer reveal nothing about it.
//
// Splitting never fails: its preconditions are the caller's (REQUIRES). ShamirCombiner::Create
// refuses a set of points that cannot be interpolated (none, a 0, one twice) with a message
// naming the problem. Secret material in temporary buffers is wiped (sodium_memzero); the
// field's log/exp tables are built once, on first use, thread-safely. The tables are indexed by
// secret values, so the running time is not independent of them against an observer of this
// process's cache.
// Thread-safe: the functions keep no state but the tables; a ShamirCombiner is immutable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "schema/protocol.h"
#include "schema/status.h"

namespace tally {

// a·b in GF(2^16) modulo 0x1100b. Exposed for tests.
uint16_t GfMul(uint16_t a, uint16_t b);
// The b with a·b == 1 in GF(2^16). REQUIRES: a != 0 (0 has no inverse; returns 0 for it).
// Exposed for tests.
uint16_t GfInverse(uint16_t a);

// Shares of `secret` with threshold `threshold` (any `threshold` of them rebuild it): out[i] is
// the share for point xs[i]. The T−1 coefficients of each word are fresh from randombytes_buf
// and wiped after use. REQUIRES: sodium_init() has succeeded; 1 <= threshold <= 65535; the xs
// are distinct and non-zero; out.size() == xs.size().
void ShamirSplit(std::span<const uint8_t, kShareSize> secret, uint32_t threshold,
                 std::span<const uint16_t> xs, std::span<Share> out);

// ShamirSplit with given coefficients, for known-answer tests: `coefficients` holds (T−1) × 16
// words, a_1's 16 words (one per secret word) first, then a_2's, and so on; T−1 = 0 (empty)
// makes every share the secret itself. REQUIRES: coefficients.size() % 16 == 0 and
// coefficients.size() / 16 <= 65534; the xs are distinct and non-zero;
// out.size() == xs.size().
void ShamirSplitWith(std::span<const uint8_t, kShareSize> secret,
                     std::span<const uint16_t> coefficients, std::span<const uint16_t> xs,
                     std::span<Share> out);

// Rebuilds secrets from the shares of a fixed set of points. The Lagrange coefficients at 0 are
// computed once by Create (O(n²)), since every secret of a round is rebuilt from the same
// senders' shares; each Combine is then O(n). The points are public, so nothing here is secret.
class ShamirCombiner {
 public:
  // Fails for no points ("no points to combine shares from"), a point 0 ("point 0 is the
  // secret's, not a share's") or a point given twice ("point 7 is given twice").
  static Result<ShamirCombiner> Create(std::span<const uint16_t> xs);

  size_t size() const { return log_coefficients_.size(); }
  // The secret from one share per point, in the order of the xs given to Create. With at least
  // T shares of one split this is its secret; with T−1 it is the secret plus a_{T−1}·Π x_m,
  // uniformly random over the split's draws.
  // REQUIRES: shares.size() == size().
  void Combine(std::span<const Share> shares, std::span<uint8_t, kShareSize> out) const;

 private:
  explicit ShamirCombiner(std::vector<uint16_t> log_coefficients)
      : log_coefficients_(std::move(log_coefficients)) {}
  // The discrete logarithm (base x) of each point's Lagrange coefficient, never 0 in the field:
  // a product by it is one table lookup.
  std::vector<uint16_t> log_coefficients_;
};

}  // namespace tally
