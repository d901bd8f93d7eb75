#include "nodes/shamir.h"

#include <sodium.h>

#include <string>

namespace tally {
namespace {

constexpr size_t kWords = kShareSize / 2;  // 16-bit words per secret and per share
constexpr uint32_t kPolynomial = 0x1100b;  // x^16 + x^12 + x^3 + x + 1
constexpr uint32_t kOrder = 65535;         // of the multiplicative group

// Logarithms and powers of x, which generates the multiplicative group for this polynomial (its
// order is 65535: the polynomial is primitive). exp is doubled so that exp[log a + log b] needs
// no reduction modulo 65535. 384 KiB, built once on first use.
struct Tables {
  uint16_t log[kOrder + 1];  // log[0] is unused: products by 0 are masked to 0
  uint16_t exp[2 * kOrder];
  Tables() {
    uint32_t a = 1;
    for (uint32_t i = 0; i < kOrder; ++i) {
      exp[i] = exp[i + kOrder] = static_cast<uint16_t>(a);
      log[a] = static_cast<uint16_t>(i);
      a <<= 1;
      if (a & 0x10000) a ^= kPolynomial;
    }
    log[0] = 0;
  }
};

const Tables& GetTables() {
  static const Tables tables;  // initialised once, thread-safely
  return tables;
}

// a·b where log_b is b's logarithm (b != 0): one lookup, and a mask instead of a branch on
// a == 0, which random values would mispredict.
inline uint16_t MulByLog(const Tables& t, uint16_t a, uint32_t log_b) {
  const auto zero_mask = static_cast<uint16_t>(-static_cast<int32_t>(a != 0));
  return t.exp[t.log[a] + log_b] & zero_mask;
}

}  // namespace

uint16_t GfMul(uint16_t a, uint16_t b) {
  if (a == 0 || b == 0) return 0;
  const Tables& t = GetTables();
  return t.exp[t.log[a] + t.log[b]];
}

uint16_t GfInverse(uint16_t a) {
  if (a == 0) return 0;
  const Tables& t = GetTables();
  return t.exp[kOrder - t.log[a]];  // x^(65535 - log a)
}

void ShamirSplit(std::span<const uint8_t, kShareSize> secret, uint32_t threshold,
                 std::span<const uint16_t> xs, std::span<Share> out) {
  std::vector<uint16_t> coefficients(size_t{threshold - 1} * kWords);
  if (coefficients.empty()) {  // T = 1: every share is the secret (and data() may be null)
    ShamirSplitWith(secret, {}, xs, out);
    return;
  }
  randombytes_buf(coefficients.data(), coefficients.size() * sizeof(uint16_t));
  ShamirSplitWith(secret, coefficients, xs, out);
  sodium_memzero(coefficients.data(), coefficients.size() * sizeof(uint16_t));
}

void ShamirSplitWith(std::span<const uint8_t, kShareSize> secret,
                     std::span<const uint16_t> coefficients, std::span<const uint16_t> xs,
                     std::span<Share> out) {
  const Tables& t = GetTables();
  const size_t degree = coefficients.size() / kWords;
  uint16_t words[kWords];
  for (size_t k = 0; k < kWords; ++k) {
    words[k] = static_cast<uint16_t>(secret[2 * k] | secret[2 * k + 1] << 8);
  }
  uint16_t acc[kWords];
  for (size_t i = 0; i < xs.size(); ++i) {
    // Horner's rule, the 16 words side by side (independent chains of lookups, and a_j's words
    // are contiguous): acc = (…(a_{T−1}·x + a_{T−2})·x + …)·x + w.
    const uint32_t log_x = t.log[xs[i]];
    for (size_t k = 0; k < kWords; ++k) acc[k] = 0;
    for (size_t j = degree; j >= 1; --j) {
      const uint16_t* a = coefficients.data() + (j - 1) * kWords;
      for (size_t k = 0; k < kWords; ++k) acc[k] = MulByLog(t, acc[k], log_x) ^ a[k];
    }
    for (size_t k = 0; k < kWords; ++k) {
      const uint16_t y = MulByLog(t, acc[k], log_x) ^ words[k];
      out[i][2 * k] = static_cast<uint8_t>(y);
      out[i][2 * k + 1] = static_cast<uint8_t>(y >> 8);
    }
  }
  sodium_memzero(words, sizeof words);
  sodium_memzero(acc, sizeof acc);
}

Result<ShamirCombiner> ShamirCombiner::Create(std::span<const uint16_t> xs) {
  if (xs.empty()) return Status::Error("no points to combine shares from");
  std::vector<bool> seen(kOrder + 1);
  for (uint16_t x : xs) {
    if (x == 0) return Status::Error("point 0 is the secret's, not a share's");
    if (seen[x]) return Status::Error("point " + std::to_string(x) + " is given twice");
    seen[x] = true;
  }
  // c_j = Π_{m≠j} x_m / (x_m + x_j), as a logarithm: sums of logarithms modulo 65535. Distinct
  // non-zero points make every factor non-zero.
  const Tables& t = GetTables();
  uint64_t log_all = 0;  // log Π_m x_m
  for (uint16_t x : xs) log_all += t.log[x];
  std::vector<uint16_t> log_coefficients(xs.size());
  for (size_t j = 0; j < xs.size(); ++j) {
    uint64_t log_denominator = 0;
    for (size_t m = 0; m < xs.size(); ++m) {
      if (m != j) log_denominator += t.log[xs[m] ^ xs[j]];
    }
    const uint64_t log_numerator = (log_all - t.log[xs[j]]) % kOrder;
    log_coefficients[j] =
        static_cast<uint16_t>((log_numerator + kOrder - log_denominator % kOrder) % kOrder);
  }
  return ShamirCombiner(std::move(log_coefficients));
}

void ShamirCombiner::Combine(std::span<const Share> shares,
                             std::span<uint8_t, kShareSize> out) const {
  const Tables& t = GetTables();
  uint16_t acc[kWords] = {};
  for (size_t j = 0; j < log_coefficients_.size(); ++j) {
    const uint8_t* s = shares[j].data();
    const uint32_t log_c = log_coefficients_[j];
    for (size_t k = 0; k < kWords; ++k) {
      const auto y = static_cast<uint16_t>(s[2 * k] | s[2 * k + 1] << 8);
      acc[k] ^= MulByLog(t, y, log_c);
    }
  }
  for (size_t k = 0; k < kWords; ++k) {
    out[2 * k] = static_cast<uint8_t>(acc[k]);
    out[2 * k + 1] = static_cast<uint8_t>(acc[k] >> 8);
  }
  sodium_memzero(acc, sizeof acc);
}

}  // namespace tally
