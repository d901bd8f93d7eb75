// Shamir sharing over GF(2^16) (nodes/shamir.h, schema/PROTOCOL.md "Shamir sharing"): the field,
// known answers computed outside this code, round trips at the thresholds a round uses, and the
// points a combiner refuses.
#include "nodes/shamir.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace tally {
namespace {

using Secret = std::array<uint8_t, kShareSize>;

// The field by its definition, shift-and-reduce, independent of the tables.
uint16_t BitwiseMul(uint16_t a, uint16_t b) {
  uint32_t r = 0, x = a;
  for (; b != 0; b >>= 1) {
    if (b & 1) r ^= x;
    x <<= 1;
    if (x & 0x10000) x ^= 0x1100b;
  }
  return static_cast<uint16_t>(r);
}

std::string Hex(std::span<const uint8_t> bytes) {
  std::string out;
  char digits[3];
  for (uint8_t b : bytes) {
    std::snprintf(digits, sizeof digits, "%02x", b);
    out += digits;
  }
  return out;
}

Secret RandomSecret() {
  Secret s;
  randombytes_buf(s.data(), s.size());
  return s;
}

// The secret rebuilt from the shares at `indexes` (into xs and shares), in that order.
Secret CombineAt(std::span<const uint16_t> xs, std::span<const Share> shares,
                 std::span<const size_t> indexes) {
  std::vector<uint16_t> points;
  std::vector<Share> chosen;
  for (size_t i : indexes) {
    points.push_back(xs[i]);
    chosen.push_back(shares[i]);
  }
  Result<ShamirCombiner> combiner = ShamirCombiner::Create(points);
  EXPECT_TRUE(combiner.ok()) << combiner.message();
  Secret out{};
  if (combiner.ok()) combiner->Combine(chosen, out);
  return out;
}

TEST(Shamir, TheFieldReducesByItsPolynomialAndAgreesWithShiftAndReduce) {
  ASSERT_GE(sodium_init(), 0);
  EXPECT_EQ(GfMul(0x8000, 2), 0x100b);  // x^15·x = x^16 = x^12 + x^3 + x + 1
  EXPECT_EQ(GfMul(2, 0x8000), 0x100b);
  EXPECT_EQ(GfMul(0, 0x1234), 0);
  EXPECT_EQ(GfMul(0x1234, 0), 0);
  EXPECT_EQ(GfMul(1, 0x1234), 0x1234);
  // From the known-answer script below.
  EXPECT_EQ(GfMul(0x1234, 0xabcd), 0x4792);
  EXPECT_EQ(GfMul(0xffff, 0xffff), 0x0733);
  EXPECT_EQ(GfInverse(2), 0x8805);
  EXPECT_EQ(GfInverse(0x8000), 0x345d);
  EXPECT_EQ(GfInverse(0xffff), 0x0894);
  EXPECT_EQ(GfInverse(1), 1);

  // Every product by x (the table's generator) and by 0xffff, then random samples.
  for (uint32_t a = 0; a <= 0xffff; ++a) {
    ASSERT_EQ(GfMul(static_cast<uint16_t>(a), 2), BitwiseMul(static_cast<uint16_t>(a), 2)) << a;
    ASSERT_EQ(GfMul(static_cast<uint16_t>(a), 0xffff), BitwiseMul(static_cast<uint16_t>(a), 0xffff))
        << a;
  }
  std::array<uint16_t, 3 * 100000> samples;
  randombytes_buf(samples.data(), sizeof samples);
  for (size_t i = 0; i < samples.size(); i += 3) {
    const uint16_t a = samples[i], b = samples[i + 1], c = samples[i + 2];
    ASSERT_EQ(GfMul(a, b), BitwiseMul(a, b)) << a << " " << b;
    ASSERT_EQ(GfMul(a, b), GfMul(b, a)) << a << " " << b;
    ASSERT_EQ(GfMul(GfMul(a, b), c), GfMul(a, GfMul(b, c))) << a << " " << b << " " << c;
    ASSERT_EQ(GfMul(a, b ^ c), GfMul(a, b) ^ GfMul(a, c)) << a << " " << b << " " << c;
  }
}

TEST(Shamir, EveryNonZeroElementTimesItsInverseIsOne) {
  for (uint32_t a = 1; a <= 0xffff; ++a) {
    ASSERT_EQ(GfMul(static_cast<uint16_t>(a), GfInverse(static_cast<uint16_t>(a))), 1) << a;
  }
}

// Computed by this Python script (python3), which knows nothing of the tables: multiplication by
// shift-and-reduce, inverses as a^(2^16 - 2), Horner for the shares, Lagrange at 0 for the
// combination.
//
// def mul(a, b):  # shift-and-reduce modulo x^16 + x^12 + x^3 + x + 1
//     r = 0
//     while b:
//         r ^= a if b & 1 else 0
//         b, a = b >> 1, a << 1
//         a ^= 0x1100B if a & 0x10000 else 0
//     return r
// def inv(a):  # a^(2^16 - 2): a^(2^16 - 1) = 1
//     r = 1
//     for _ in range(65534): r = mul(r, a)
//     return r
// words = lambda b: [b[i] | b[i + 1] << 8 for i in range(0, len(b), 2)]
// hexw = lambda w: bytes(b for v in w for b in (v & 255, v >> 8)).hex()
// print([hex(mul(a, b)) for a, b in [(0x1234, 0xABCD), (0xFFFF, 0xFFFF)]],
//       [hex(inv(a)) for a in (2, 0x8000, 0xFFFF)])
// w, a = words(bytes(range(0x00, 0x20))), words(bytes(range(0x80, 0xC0)))  # a_1 = a[:16]
// for x in range(1, 6):
//     print(x, hexw([mul(mul(a[16 + k], x) ^ a[k], x) ^ w[k] for k in range(16)]))
// xs, ys, out = [2, 4, 5], [words(bytes(range(s, s + 32))) for s in (0x40, 0x60, 0xE0)], [0] * 16
// for j in range(3):
//     c = 1
//     for m in range(3):
//         c = mul(c, mul(xs[m], inv(xs[m] ^ xs[j]))) if m != j else c
//     out = [out[k] ^ mul(ys[j][k], c) for k in range(16)]
// print(hexw(out))
constexpr std::string_view kKnownShares[] = {
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",  // x = 1
    "9db493ba81a88fa6a58cab82b990b79eedc4e3caf1d8ffd6d5fcdbf2c9e0c7ee",  // x = 2
    "bd94b39aa188af8685ac8ba299b097becde4c3ead1f8dff6f5dcfbd2e9c0e7ce",  // x = 3
    "589d72b70cc926e3f035da1fa4618e4b03dc29f657887da2ab74815eff20d50a",  // x = 4
    "78bd52972ce906c3d015fa3f8441ae6b23fc09d677a85d828b54a17edf00f52a",  // x = 5
};

TEST(Shamir, SplitsAKnownSecretWithKnownCoefficientsIntoTheKnownShares) {
  Secret secret;
  std::iota(secret.begin(), secret.end(), 0x00);
  std::array<uint8_t, 64> coefficient_bytes;  // T = 3: a_1's 16 words, then a_2's
  std::iota(coefficient_bytes.begin(), coefficient_bytes.end(), 0x80);
  std::array<uint16_t, 32> coefficients;
  for (size_t i = 0; i < coefficients.size(); ++i) {
    coefficients[i] =
        static_cast<uint16_t>(coefficient_bytes[2 * i] | coefficient_bytes[2 * i + 1] << 8);
  }
  const std::array<uint16_t, 5> xs = {1, 2, 3, 4, 5};
  std::array<Share, 5> shares;
  ShamirSplitWith(secret, coefficients, xs, shares);
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(Hex(shares[i]), kKnownShares[i]) << xs[i];

  // Any 3 of them rebuild the secret, in any order.
  for (std::array<size_t, 3> subset : {std::array<size_t, 3>{0, 1, 2}, {1, 3, 4}, {4, 0, 2}}) {
    EXPECT_EQ(CombineAt(xs, shares, subset), secret) << subset[0] << subset[1] << subset[2];
  }
}

TEST(Shamir, CombinesKnownSharesIntoTheKnownSecret) {
  const std::array<uint16_t, 3> xs = {2, 4, 5};
  std::array<Share, 3> shares;
  const uint8_t starts[] = {0x40, 0x60, 0xe0};
  for (size_t j = 0; j < 3; ++j) std::iota(shares[j].begin(), shares[j].end(), starts[j]);
  Result<ShamirCombiner> combiner = ShamirCombiner::Create(xs);
  ASSERT_TRUE(combiner.ok()) << combiner.message();
  EXPECT_EQ(combiner->size(), 3u);
  Secret out{};
  combiner->Combine(shares, out);
  EXPECT_EQ(Hex(out), "413d433f4539473b49354b374d314f33512d532f5529572b59255b275d215f23");
}

TEST(Shamir, WithThresholdOneEveryShareIsTheSecret) {
  ASSERT_GE(sodium_init(), 0);
  const Secret secret = RandomSecret();
  const std::array<uint16_t, 4> xs = {1, 2, 9, 65535};
  std::array<Share, 4> shares;
  ShamirSplit(secret, 1, xs, shares);
  for (const Share& s : shares) EXPECT_EQ(s, secret);
}

TEST(Shamir, TwoSplitsOfOneSecretDrawFreshCoefficients) {
  ASSERT_GE(sodium_init(), 0);
  const Secret secret = RandomSecret();
  const std::array<uint16_t, 3> xs = {1, 2, 3};
  std::array<Share, 3> first, second;
  ShamirSplit(secret, 2, xs, first);
  ShamirSplit(secret, 2, xs, second);
  EXPECT_NE(first, second);
}

// Every tested T-subset of n shares (the first T, the last T, random ones in random order)
// rebuilds the secret; T−1 shares give another value (equal only if all 16 leading coefficients
// are 0: probability 2^-256 per trial).
TEST(Shamir, AnyThresholdOfSharesRebuildsTheSecretAndOneFewerDoesNot) {
  ASSERT_GE(sodium_init(), 0);
  std::mt19937 rng(20240601);  // which subsets; the secrets and coefficients are random
  struct Case {
    uint32_t threshold;
    size_t n;
    int trials;
  };
  for (Case c : {Case{1, 1, 5}, Case{1, 10, 5}, Case{2, 2, 50}, Case{2, 10, 50}, Case{3, 3, 50},
                 Case{3, 5, 50}, Case{7, 20, 50}, Case{7, 7, 20}, Case{667, 1000, 3}}) {
    SCOPED_TRACE("T = " + std::to_string(c.threshold) + ", n = " + std::to_string(c.n));
    std::vector<uint16_t> xs(c.n);
    std::iota(xs.begin(), xs.end(), 1);
    std::vector<Share> shares(c.n);
    std::vector<size_t> all(c.n);
    std::iota(all.begin(), all.end(), 0);
    for (int trial = 0; trial < c.trials; ++trial) {
      const Secret secret = RandomSecret();
      ShamirSplit(secret, c.threshold, xs, shares);
      const std::span<const size_t> indexes(all);
      ASSERT_EQ(CombineAt(xs, shares, indexes.first(c.threshold)), secret);
      ASSERT_EQ(CombineAt(xs, shares, indexes.last(c.threshold)), secret);
      for (int s = 0; s < 4; ++s) {
        std::vector<size_t> subset = all;
        std::shuffle(subset.begin(), subset.end(), rng);
        subset.resize(c.threshold);
        ASSERT_EQ(CombineAt(xs, shares, subset), secret) << "random subset " << s;
        if (c.threshold >= 2) {
          subset.pop_back();
          ASSERT_NE(CombineAt(xs, shares, subset), secret) << "T - 1 of random subset " << s;
        }
      }
      if (c.threshold >= 2) {
        ASSERT_NE(CombineAt(xs, shares, indexes.last(c.threshold - 1)), secret);
      }
    }
  }
}

// T − 1 points interpolate f(0) + a_{T−1}·Π x_m exactly (char 2: f minus its interpolant is
// a_{T−1}·Π (x − x_m)), so what they give is known, not just different.
TEST(Shamir, OneShareFewerGivesTheSecretPlusTheLeadingCoefficientTimesThePoints) {
  ASSERT_GE(sodium_init(), 0);
  const Secret secret = RandomSecret();
  const uint32_t threshold = 5;
  std::vector<uint16_t> coefficients((threshold - 1) * 16);
  randombytes_buf(coefficients.data(), coefficients.size() * sizeof(uint16_t));
  const std::array<uint16_t, 6> xs = {3, 1000, 65535, 7, 42, 65534};
  std::array<Share, 6> shares;
  ShamirSplitWith(secret, coefficients, xs, shares);
  const std::array<size_t, 4> subset = {5, 0, 2, 3};
  uint16_t points_product = 1;
  for (size_t i : subset) points_product = BitwiseMul(points_product, xs[i]);
  const Secret out = CombineAt(xs, shares, subset);
  for (size_t k = 0; k < 16; ++k) {
    const auto w = static_cast<uint16_t>(secret[2 * k] | secret[2 * k + 1] << 8);
    const auto got = static_cast<uint16_t>(out[2 * k] | out[2 * k + 1] << 8);
    const uint16_t leading = coefficients[(threshold - 2) * 16 + k];
    EXPECT_EQ(got, w ^ BitwiseMul(leading, points_product)) << k;
  }
  const std::array<size_t, 5> enough = {1, 4, 2, 3, 5};
  EXPECT_EQ(CombineAt(xs, shares, enough), secret);
}

TEST(Shamir, TheCombinerRefusesNoPointsAZeroAndARepeatedPoint) {
  EXPECT_EQ(ShamirCombiner::Create({}).message(), "no points to combine shares from");
  const std::array<uint16_t, 3> zero = {1, 0, 2};
  EXPECT_EQ(ShamirCombiner::Create(zero).message(), "point 0 is the secret's, not a share's");
  const std::array<uint16_t, 4> twice = {7, 1, 65535, 7};
  EXPECT_EQ(ShamirCombiner::Create(twice).message(), "point 7 is given twice");
  const std::array<uint16_t, 3> last = {65535, 2, 65535};
  EXPECT_EQ(ShamirCombiner::Create(last).message(), "point 65535 is given twice");
  const std::array<uint16_t, 1> one = {65535};
  EXPECT_TRUE(ShamirCombiner::Create(one).ok());
}

}  // namespace
}  // namespace tally
