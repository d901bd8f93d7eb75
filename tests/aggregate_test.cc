// The arithmetic of a round (nodes/aggregate.h): masks that cancel and the hospital's sum,
// element-wise mod 2^64.
#include "nodes/aggregate.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <limits>
#include <vector>

#include "schema/schema.h"
#include "tests/contains.h"

namespace tally {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// One peer's mask key, added (we are the lower-named) or subtracted.
RoundMasks OneMask(uint8_t key_byte, bool add) {
  RoundMasks m{SecretBytes(kRoundMaskKeyBytes), {add}};
  std::fill_n(m.keys.data(), kRoundMaskKeyBytes, key_byte);
  return m;
}

// A pair's two masks cancel in the sum of its two masked inputs, across chunk boundaries
// (2048 elements) and for a length that is not a multiple of a ChaCha20 block.
TEST(Aggregate, APairsMasksCancelInTheSum) {
  ASSERT_GE(sodium_init(), 0);
  for (size_t length : {1u, 7u, 2048u, 5000u}) {
    std::vector<uint64_t> a(length, 3), b(length, kMax);
    ApplyMasks(OneMask(9, true), a);
    ApplyMasks(OneMask(9, false), b);
    EXPECT_NE(a, std::vector<uint64_t>(length, 3)) << length;
    for (size_t e = 0; e < length; ++e) ASSERT_EQ(a[e] + b[e], 2u) << length << " at " << e;
  }
}

// Sum::AddPayload is DecodePayload plus element-wise addition mod 2^64, without the copy.
TEST(Aggregate, SumAddsModTwoToTheSixtyFourAndIsUnchangedOnError) {
  const std::vector<uint64_t> first = {5, kMax, 1};
  const std::vector<uint64_t> second = {kMax, 2, 0x0102030405060708ull};
  Sum sum(3);
  ASSERT_TRUE(
      sum.AddPayload(EncodePayload(EnvelopeKind::kPartial, first), EnvelopeKind::kPartial).ok());
  const std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kPartial, second);
  ASSERT_TRUE(sum.AddPayload(bytes, EnvelopeKind::kPartial).ok());
  EXPECT_EQ(sum.values(), (std::vector<uint64_t>{4, 1, 0x0102030405060709ull}));

  Sum longer(4);
  Status wrong_length = longer.AddPayload(bytes, EnvelopeKind::kPartial);
  EXPECT_TRUE(Contains(wrong_length.message(), "values must be 32 bytes (4 elements), got 24"))
      << wrong_length.message();
  EXPECT_EQ(longer.values(), (std::vector<uint64_t>{0, 0, 0, 0}));
  const std::vector<uint8_t> truncated(bytes.begin(), bytes.end() - 1);
  EXPECT_FALSE(sum.AddPayload(truncated, EnvelopeKind::kPartial).ok());
  EXPECT_EQ(sum.values(), (std::vector<uint64_t>{4, 1, 0x0102030405060709ull}));
}

// Each input is at most the range; their sum need not be, and AggregateInRange says so.
TEST(Aggregate, AggregateInRangeChecksEveryElementAgainstTheRange) {
  RoundParams p{"hospital", 11, 2, {"alice", "bob"}};
  EXPECT_TRUE(AggregateInRange(p, std::vector<uint64_t>{10, 11}));
  p.range = 10;
  EXPECT_FALSE(AggregateInRange(p, std::vector<uint64_t>{10, 11}));
}

}  // namespace
}  // namespace tally
