// The arithmetic of a round (nodes/aggregate.h): masks that cancel and the hospital's sum,
// element-wise mod 2^64; a patient's masks (its self mask and a pairwise mask with each other
// member of U2) against the documented construction; and the masks the hospital removes with the
// secrets it rebuilds from T unmasks, which leave exactly the survivors' inputs.
#include "nodes/aggregate.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "nodes/seal.h"
#include "nodes/shamir.h"
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
  // An unmask's plaintext is not a masked input.
  EXPECT_FALSE(sum.AddPayload(bytes, EnvelopeKind::kUnmask).ok());
  EXPECT_EQ(sum.values(), (std::vector<uint64_t>{4, 1, 0x0102030405060709ull}));
}

// Each input is at most the range; their sum need not be, and AggregateInRange says so.
TEST(Aggregate, AggregateInRangeChecksEveryElementAgainstTheRange) {
  RoundParams p{"hospital", 11, 2, {"alice", "bob"}};
  EXPECT_TRUE(AggregateInRange(p, std::vector<uint64_t>{10, 11}));
  p.range = 10;
  EXPECT_FALSE(AggregateInRange(p, std::vector<uint64_t>{10, 11}));
}

// ---- A round's masks ------------------------------------------------------------------------

// n patients' round secrets as PatientRound holds them: the mask keypair s and the self-mask
// seed b; their c keys play no part in the masks.
struct Patient {
  RoundKeyPair s = RoundKeyPair::Generate();
  SecretKey b;
  Patient() { randombytes_buf(b.data(), SecretKey::size()); }
};

class MasksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_GE(sodium_init(), 0); }

  static RoundId Round(uint8_t first) {
    RoundId round{};
    for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(first + i);
    return round;
  }
  static std::vector<std::string> Names(size_t n) {
    std::vector<std::string> out;
    for (size_t k = 1; k <= n; ++k) out.push_back((k < 10 ? "p0" : "p") + std::to_string(k));
    return out;
  }
  static RoundParams Params(std::vector<std::string> names, uint32_t length, uint32_t t = 0) {
    RoundParams p;
    p.hospital = "hospital";
    p.range = 1000;
    p.length = length;
    p.threshold = t != 0 ? t : SafeThreshold(names.size());
    p.participants = std::move(names);
    return p;
  }
  static std::vector<std::unique_ptr<Patient>> Draw(size_t n) {
    std::vector<std::unique_ptr<Patient>> out;
    for (size_t i = 0; i < n; ++i) out.push_back(std::make_unique<Patient>());
    return out;
  }
  // The round keys as the patients would publish them (only spk matters to the masks).
  static std::vector<RoundPublicKeys> KeysOf(const std::vector<std::unique_ptr<Patient>>& ps) {
    std::vector<RoundPublicKeys> keys;
    for (const auto& p : ps) keys.push_back({RoundKeyPair::Generate().pub, p->s.pub});
    return keys;
  }
  // Patient i's masks alone (over zeros).
  static std::vector<uint64_t> MasksOf(const RoundId& round, const RoundParams& p, size_t i,
                                       const Members& shared,
                                       const std::vector<RoundPublicKeys>& keys,
                                       const Patient& patient) {
    Result<RoundMasks> masks =
        PatientMasks(round, p, i, shared, keys, patient.s.secret, patient.b.data());
    EXPECT_TRUE(masks.ok()) << masks.message();
    std::vector<uint64_t> v(PayloadLength(p), 0);
    if (masks.ok()) ApplyMasks(*masks, v);
    return v;
  }
  // The stream of ChaCha20-IETF(key, nonce 0, counter 0) as `length` little-endian u64s.
  static std::vector<uint64_t> Stream(const uint8_t* key, size_t length) {
    const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
    std::vector<uint8_t> bytes(length * 8);
    crypto_stream_chacha20_ietf(bytes.data(), bytes.size(), nonce, key);
    std::vector<uint64_t> out(length);
    for (size_t e = 0; e < length; ++e)
      for (int b = 7; b >= 0; --b) out[e] = (out[e] << 8) | bytes[e * 8 + static_cast<size_t>(b)];
    return out;
  }
  // "Masks", written out with libsodium independently of nodes/: PRG(selfkey_u) plus, for each
  // other member v of U2, PRG(m_uv) if u's name sorts first, else minus it; m_uv over the DH
  // point, "tally mask v4", the round digest and the pair's indexes, lower first (u32 LE).
  static std::vector<uint64_t> ReferenceMasks(const RoundId& round, const RoundParams& p, size_t me,
                                              const Members& shared,
                                              const std::vector<RoundPublicKeys>& keys,
                                              const Patient& patient) {
    const size_t length = PayloadLength(p);
    uint8_t key[32];
    std::vector<uint8_t> in(patient.b.data(), patient.b.data() + 32);
    for (char c : std::string_view("tally self v3")) in.push_back(static_cast<uint8_t>(c));
    crypto_generichash(key, sizeof key, in.data(), in.size(), nullptr, 0);
    std::vector<uint64_t> total = Stream(key, length);
    const RoundDigest digest = DigestOf(round, p);
    for (size_t v = 0; v < p.participants.size(); ++v) {
      if (v == me || !shared[v]) continue;
      uint8_t point[32];
      EXPECT_EQ(crypto_scalarmult(point, patient.s.secret.data(), keys[v].spk.data()), 0);
      in.assign(point, point + 32);
      for (char c : std::string_view("tally mask v4")) in.push_back(static_cast<uint8_t>(c));
      in.insert(in.end(), digest.begin(), digest.end());
      for (const size_t index : {std::min(me, v), std::max(me, v)})
        for (int k = 0; k < 4; ++k) in.push_back(static_cast<uint8_t>(index >> (8 * k)));
      crypto_generichash(key, sizeof key, in.data(), in.size(), nullptr, 0);
      const std::vector<uint64_t> stream = Stream(key, length);
      const bool add = p.participants[me] < p.participants[v];
      for (size_t e = 0; e < length; ++e)
        total[e] = add ? total[e] + stream[e] : total[e] - stream[e];
    }
    return total;
  }
  // The self mask of a patient alone, as the hospital removes it.
  static void SubtractSelfMask(const Patient& patient, std::vector<uint64_t>& values) {
    RoundMasks m{SecretBytes(kRoundMaskKeyBytes), {false}};
    SelfMaskKey(patient.b.data(), m.keys.data());
    ApplyMasks(m, values);
  }
};

// The heart of the protocol: every member of U2 adds its masks to its input, and in the sum of
// their masked inputs the pairwise masks cancel exactly (mod 2^64), leaving the inputs and the
// self masks; for inputs anywhere in u64 and lengths within one chunk of the mask stream and
// across two. A participant outside U2 masks with nobody.
TEST_F(MasksTest, PairwiseMasksCancelInTheSumOfU2LeavingTheSelfMasks) {
  std::mt19937_64 rng(20260125);
  for (size_t n : {size_t{2}, size_t{3}, size_t{10}}) {
    for (uint32_t length : {1u, 1000u, 2049u}) {
      SCOPED_TRACE("N=" + std::to_string(n) + " L=" + std::to_string(length));
      const RoundId round = Round(0xa0);
      const RoundParams p = Params(Names(n + 1), length);
      Members shared(n + 1, true);
      shared[n / 2] = false;  // joined, never shared
      const auto patients = Draw(n + 1);
      const auto keys = KeysOf(patients);
      std::vector<uint64_t> total(length, 0), sum(length, 0), without_first(length, 0);
      std::vector<uint64_t> inputs_without_first(length, 0);
      bool first = true;
      for (size_t i = 0; i <= n; ++i) {
        if (!shared[i]) continue;
        std::vector<uint64_t> values(length);
        for (uint32_t e = 0; e < length; ++e) values[e] = e % 3 == 0 ? kMax - i : rng();
        for (uint32_t e = 0; e < length; ++e) sum[e] += values[e];
        if (!first)
          for (uint32_t e = 0; e < length; ++e) inputs_without_first[e] += values[e];
        Result<RoundMasks> masks =
            PatientMasks(round, p, i, shared, keys, patients[i]->s.secret, patients[i]->b.data());
        ASSERT_TRUE(masks.ok()) << masks.message();
        EXPECT_EQ(masks->add.size(), n);  // its self mask and one per other member
        ApplyMasks(*masks, values);
        SubtractSelfMask(*patients[i], values);
        for (uint32_t e = 0; e < length; ++e) total[e] += values[e];
        if (!first)
          for (uint32_t e = 0; e < length; ++e) without_first[e] += values[e];
        first = false;
      }
      EXPECT_EQ(total, sum);
      // Without one member the pairwise masks do not cancel.
      for (uint32_t e = 0; e < length; ++e)
        ASSERT_NE(without_first[e], inputs_without_first[e]) << e;
    }
  }
}

// A single masked input reveals nothing of the input by equality: every element differs, even
// in a round of two where the pairwise mask is the other's negation.
TEST_F(MasksTest, AMaskedInputDiffersFromTheInput) {
  for (size_t n : {size_t{2}, size_t{10}}) {
    const RoundParams p = Params(Names(n), 2049);
    const Members shared(n, true);
    const auto patients = Draw(n);
    const auto keys = KeysOf(patients);
    for (size_t i = 0; i < n; ++i) {
      const std::vector<uint64_t> masks = MasksOf(Round(1), p, i, shared, keys, *patients[i]);
      for (size_t e = 0; e < masks.size(); ++e) ASSERT_NE(masks[e], 0u) << i << " " << e;
    }
  }
}

// PatientMasks computes exactly the documented construction (ReferenceMasks), element for
// element, across the chunk boundary at 2048 elements, for names out of order and with a
// participant outside U2; for a round with columns over its whole payload.
TEST_F(MasksTest, PatientMasksFollowTheDocumentedConstruction) {
  const RoundParams p = Params({"p03", "p01", "p10", "p02", "p05"}, 4100, 4);
  const Members shared = {true, true, true, false, true};
  const auto patients = Draw(5);
  const auto keys = KeysOf(patients);
  for (size_t i = 0; i < 5; ++i) {
    if (!shared[i]) continue;
    EXPECT_EQ(MasksOf(Round(2), p, i, shared, keys, *patients[i]),
              ReferenceMasks(Round(2), p, i, shared, keys, *patients[i]))
        << p.participants[i];
  }
  RoundParams columns = p;
  columns.range = 0;
  columns.length = 3;
  columns.columns = {{"bmi", -15, 800, 1}, {"bp", 40, 200, 0}};
  columns.weight = {100, 0};
  const std::vector<uint64_t> masks = MasksOf(Round(2), columns, 1, shared, keys, *patients[1]);
  EXPECT_EQ(masks.size(), 2 * 3 + 2 * 2u);
  EXPECT_EQ(masks, ReferenceMasks(Round(2), columns, 1, shared, keys, *patients[1]));
}

// Masks are fresh per round: another round id or parameter (the digest), another self-mask seed,
// or any other member's mask key changes every element. The keys of someone
// outside U2 do not change them, and the same round gives the same masks (the hospital
// recomputes the pairs with dropped members).
TEST_F(MasksTest, MasksChangeWithTheRoundTheSeedAndEveryMembersKey) {
  const RoundParams p = Params(Names(4), 8);
  const Members shared = {true, true, true, false};
  const auto patients = Draw(4);
  const auto keys = KeysOf(patients);
  const std::vector<uint64_t> base = MasksOf(Round(3), p, 0, shared, keys, *patients[0]);
  EXPECT_EQ(MasksOf(Round(3), p, 0, shared, keys, *patients[0]), base);
  auto all_differ = [&base](const std::vector<uint64_t>& masks) {
    for (size_t e = 0; e < base.size(); ++e)
      if (masks[e] == base[e]) return false;
    return true;
  };
  EXPECT_TRUE(all_differ(MasksOf(Round(4), p, 0, shared, keys, *patients[0])));
  Patient reseeded;
  reseeded.s.pub = patients[0]->s.pub;
  std::copy_n(patients[0]->s.secret.data(), 32, reseeded.s.secret.data());
  EXPECT_TRUE(all_differ(MasksOf(Round(3), p, 0, shared, keys, reseeded)));
  for (size_t v : {1, 2}) {
    auto other = keys;
    other[v].spk = RoundKeyPair::Generate().pub;
    EXPECT_TRUE(all_differ(MasksOf(Round(3), p, 0, shared, other, *patients[0]))) << v;
  }
  auto outsider = keys;
  outsider[3].spk = RoundKeyPair::Generate().pub;
  EXPECT_EQ(MasksOf(Round(3), p, 0, shared, outsider, *patients[0]), base);
  // The pair masks bind the round digest, so another threshold changes them too; the self mask
  // alone does not (p04 is outside U2, so a round where p01 is alone in U2 shows it).
  RoundParams other_t = p;
  other_t.threshold = 4;
  const std::vector<uint64_t> other_threshold =
      MasksOf(Round(3), other_t, 0, shared, keys, *patients[0]);
  EXPECT_TRUE(all_differ(other_threshold));
  const Members alone = {true, false, false, false};
  EXPECT_EQ(MasksOf(Round(3), other_t, 0, alone, keys, *patients[0]),
            MasksOf(Round(3), p, 0, alone, keys, *patients[0]));
}

// A member of U2 whose round key is of small order gives no mask key: PatientMasks names it
// (the patient gives the round up); outside U2 it is never used.
TEST_F(MasksTest, PatientMasksNameAMemberWhoseRoundKeyIsOfSmallOrder) {
  const RoundParams p = Params(Names(4), 2);
  const auto patients = Draw(4);
  auto keys = KeysOf(patients);
  keys[2].spk = RoundKey{};
  Result<RoundMasks> masks = PatientMasks(Round(5), p, 0, {true, true, true, true}, keys,
                                          patients[0]->s.secret, patients[0]->b.data());
  ASSERT_FALSE(masks.ok());
  EXPECT_EQ(masks.message(), "the round key of p03 is invalid");
  EXPECT_TRUE(PatientMasks(Round(5), p, 0, {true, true, false, true}, keys, patients[0]->s.secret,
                           patients[0]->b.data())
                  .ok());
}

// ---- Unmasking ------------------------------------------------------------------------------

// A round played out in numbers: who joined, shared and survived, every member's shares of b and
// s (split T-of-U1 at x = index + 1, as PatientRound does), and the survivors' masked inputs.
struct PlayedRound {
  RoundId round{};
  RoundParams params;
  RoundSets sets;
  std::vector<std::unique_ptr<Patient>> patients;
  std::vector<RoundPublicKeys> keys;
  // of_b[u][w], of_s[u][w]: u's share of b_u and of s_u for participant w (members of U1).
  std::vector<std::vector<Share>> of_b, of_s;
  std::vector<uint64_t> sum;       // the survivors' masked inputs, added up
  std::vector<uint64_t> expected;  // the survivors' inputs, added up
};

PlayedRound Play(const RoundParams& params, const Members& joined, const Members& shared,
                 const Members& masked, std::mt19937_64& rng) {
  PlayedRound r;
  r.round[0] = static_cast<uint8_t>(rng());
  r.params = params;
  r.sets = {joined, shared, masked, {}};
  const size_t n = params.participants.size();
  for (size_t i = 0; i < n; ++i) r.patients.push_back(std::make_unique<Patient>());
  for (const auto& p : r.patients) r.keys.push_back({RoundKeyPair::Generate().pub, p->s.pub});
  std::vector<uint16_t> xs;
  for (size_t w = 0; w < n; ++w)
    if (joined[w]) xs.push_back(static_cast<uint16_t>(w + 1));
  r.of_b.assign(n, std::vector<Share>(n));
  r.of_s.assign(n, std::vector<Share>(n));
  for (size_t u = 0; u < n; ++u) {
    if (!joined[u]) continue;
    std::vector<Share> b(xs.size()), s(xs.size());
    ShamirSplit(std::span<const uint8_t, kShareSize>(r.patients[u]->b.data(), kShareSize),
                params.threshold, xs, b);
    ShamirSplit(std::span<const uint8_t, kShareSize>(r.patients[u]->s.secret.data(), kShareSize),
                params.threshold, xs, s);
    for (size_t k = 0; k < xs.size(); ++k) {
      r.of_b[u][xs[k] - 1u] = b[k];
      r.of_s[u][xs[k] - 1u] = s[k];
    }
  }
  const size_t length = PayloadLength(params);
  r.sum.assign(length, 0);
  r.expected.assign(length, 0);
  for (size_t u = 0; u < n; ++u) {
    if (!shared[u]) continue;
    std::vector<uint64_t> values(length);
    for (uint64_t& v : values) v = rng() % (params.range + 1);
    Result<RoundMasks> masks = PatientMasks(r.round, params, u, shared, r.keys,
                                            r.patients[u]->s.secret, r.patients[u]->b.data());
    EXPECT_TRUE(masks.ok()) << masks.message();
    if (!masked[u]) continue;  // it vanished before its masked input went out
    for (size_t e = 0; e < length; ++e) r.expected[e] += values[e];
    ApplyMasks(*masks, values);
    for (size_t e = 0; e < length; ++e) r.sum[e] += values[e];
  }
  return r;
}

// Patient w's unmask for `sets`: its share of b_v for each survivor v, of s_v for each v in
// U2 \ U3, in participant order.
UnmaskShares UnmaskOf(const PlayedRound& r, size_t w) {
  UnmaskShares out;
  out.masked = r.sets.masked;
  for (size_t v = 0; v < r.params.participants.size(); ++v) {
    if (r.sets.masked[v]) out.self_seeds.push_back(r.of_b[v][w]);
    if (r.sets.shared[v] && !r.sets.masked[v]) out.mask_secrets.push_back(r.of_s[v][w]);
  }
  return out;
}

// UnmaskingMasks over the unmasks of `senders`.
Result<RoundMasks> Unmasking(const PlayedRound& r, const std::vector<uint32_t>& senders) {
  std::vector<UnmaskShares> unmasks;
  for (uint32_t w : senders) unmasks.push_back(UnmaskOf(r, w));
  std::vector<const UnmaskShares*> pointers;
  for (const UnmaskShares& u : unmasks) pointers.push_back(&u);
  return UnmaskingMasks(r.round, r.params, r.sets, r.keys, senders, pointers);
}

// A random subset of `set` with `count` members, in random order.
std::vector<uint32_t> Pick(const Members& set, size_t count, std::mt19937_64& rng) {
  std::vector<uint32_t> in;
  for (size_t i = 0; i < set.size(); ++i)
    if (set[i]) in.push_back(static_cast<uint32_t>(i));
  std::shuffle(in.begin(), in.end(), rng);
  in.resize(count);
  return in;
}

// `set` without `count` random members.
Members Without(const Members& set, size_t count, std::mt19937_64& rng) {
  Members out = set;
  for (uint32_t i : Pick(set, count, rng)) out[i] = false;
  return out;
}

// For random rounds of up to 12 patients at a safe threshold, where some never join, some join
// but never share, and some members of U2 are dropped before their masked input: the sum of the
// survivors' masked inputs with UnmaskingMasks applied (from any T or more of the survivors'
// unmasks, in any order) is exactly the sum of their inputs.
TEST_F(MasksTest, UnmaskingMasksLeaveTheExactSumOfTheSurvivorsInputs) {
  std::mt19937_64 rng(0x7a11);
  size_t with_dropouts = 0;
  for (int trial = 0; trial < 80; ++trial) {
    const size_t n = 2 + rng() % 11;
    const uint32_t safe = SafeThreshold(n);
    // Mostly the safe minimum, which leaves room for dropouts.
    const uint32_t t = rng() % 4 != 0 ? safe : safe + static_cast<uint32_t>(rng() % (n - safe + 1));
    const uint32_t length = trial % 10 == 0 ? 2049 : 1 + static_cast<uint32_t>(rng() % 4);
    RoundParams params = Params(Names(n), length, t);
    params.range = trial % 2 == 0 ? 1000 : kMax / 16;
    // Each set loses up to what keeps it at T; U2 loses at least one member where it can.
    const Members joined = Without(Members(n, true), rng() % (n - t + 2) / 2, rng);
    const Members shared = Without(joined, rng() % (CountOf(joined) - t + 2) / 2, rng);
    const size_t spare = CountOf(shared) - t;
    const Members masked = Without(shared, spare == 0 ? 0 : 1 + rng() % spare, rng);
    SCOPED_TRACE("trial " + std::to_string(trial) + ": n=" + std::to_string(n) +
                 " T=" + std::to_string(t) + " U1=" + std::to_string(CountOf(joined)) + " U2=" +
                 std::to_string(CountOf(shared)) + " U3=" + std::to_string(CountOf(masked)));
    with_dropouts += masked != shared;
    PlayedRound r = Play(params, joined, shared, masked, rng);
    const std::vector<uint32_t> senders = Pick(masked, t + rng() % (CountOf(masked) - t + 1), rng);
    for (uint32_t w : senders)
      ASSERT_TRUE(CheckUnmask(r.sets, r.params.participants[w], UnmaskOf(r, w)).ok());
    Result<RoundMasks> masks = Unmasking(r, senders);
    ASSERT_TRUE(masks.ok()) << masks.message();
    // A self mask per survivor, and a pair mask per survivor and dropped member.
    const size_t survivors = CountOf(masked), dropped = CountOf(shared) - survivors;
    EXPECT_EQ(masks->add.size(), survivors + survivors * dropped);
    std::vector<uint64_t> sum = r.sum;
    ApplyMasks(*masks, sum);
    ASSERT_EQ(sum, r.expected);
  }
  EXPECT_GE(with_dropouts, 20u);  // the trials did drop members of U2
}

// The hospital's way: Sum adds the survivors' masked inputs as payloads, and Sum::Apply removes
// the unmasking masks in place, leaving the exact sum; applying a mask and its opposite changes
// nothing.
TEST_F(MasksTest, SumApplyRemovesTheUnmaskingMasksFromTheSum) {
  std::mt19937_64 rng(7);
  const Members all(10, true);
  Members survivors = all;
  survivors[7] = survivors[8] = survivors[9] = false;
  PlayedRound r = Play(Params(Names(10), 5, 7), all, all, survivors, rng);
  Sum sum(5);
  ASSERT_TRUE(
      sum.AddPayload(EncodePayload(EnvelopeKind::kPartial, r.sum), EnvelopeKind::kPartial).ok());
  EXPECT_EQ(sum.values(), r.sum);
  Result<RoundMasks> masks = Unmasking(r, {6, 0, 5, 1, 4, 2, 3});
  ASSERT_TRUE(masks.ok()) << masks.message();
  EXPECT_EQ(masks->add.size(), 7u + 7 * 3);
  sum.Apply(*masks);
  EXPECT_EQ(sum.values(), r.expected);

  sum.Apply(OneMask(3, true));
  EXPECT_NE(sum.values(), r.expected);
  sum.Apply(OneMask(3, false));
  EXPECT_EQ(sum.values(), r.expected);
  Sum empty(5);
  empty.Apply(RoundMasks{SecretBytes(0), {}});
  EXPECT_EQ(empty.values(), std::vector<uint64_t>(5, 0));
}

// The example of a dropout, spelled out: four patients at T = 3, p04 shared and vanished before
// its masked input; p01, p02 and p03 unmask. Without p04's rebuilt pair masks removed the sum is
// off; with them it is exact.
TEST_F(MasksTest, ADroppedMembersPairMasksAreRemovedWithItsRebuiltSecret) {
  std::mt19937_64 rng(4);
  const Members all(4, true), survivors = {true, true, true, false};
  PlayedRound r = Play(Params(Names(4), 3, 3), all, all, survivors, rng);
  Result<RoundMasks> masks = Unmasking(r, {2, 0, 1});
  ASSERT_TRUE(masks.ok()) << masks.message();
  std::vector<uint64_t> sum = r.sum;
  ApplyMasks(*masks, sum);
  EXPECT_EQ(sum, r.expected);
  // Only the survivors' self masks removed: p04's pair masks are still in.
  std::vector<uint64_t> self_only = r.sum;
  for (size_t u = 0; u < 3; ++u) SubtractSelfMask(*r.patients[u], self_only);
  for (size_t e = 0; e < self_only.size(); ++e) EXPECT_NE(self_only[e], r.expected[e]) << e;
}

// A dropped member's rebuilt mask secret must be the secret behind its spk: a wrong share or a
// key the broker swapped give another secret, and UnmaskingMasks names the member instead of
// removing masks that are not in the sum; fewer than T shares are not combined at all.
TEST_F(MasksTest, UnmaskingMasksNameADroppedMemberWhoseSecretDoesNotMatch) {
  std::mt19937_64 rng(5);
  const Members all(5, true), survivors = {true, true, false, true, true};
  PlayedRound r = Play(Params(Names(5), 2, 4), all, all, survivors, rng);
  const std::vector<uint32_t> senders = {0, 1, 3, 4};
  ASSERT_TRUE(Unmasking(r, senders).ok());

  PlayedRound wrong_share = std::move(r);
  wrong_share.of_s[2][3][7] ^= 1;  // p04's share of p03's s
  Result<RoundMasks> masks = Unmasking(wrong_share, senders);
  ASSERT_FALSE(masks.ok());
  EXPECT_EQ(masks.message(), "the mask secret of p03 does not match its key");
  wrong_share.of_s[2][3][7] ^= 1;

  wrong_share.keys[2].spk = RoundKeyPair::Generate().pub;
  EXPECT_EQ(Unmasking(wrong_share, senders).message(),
            "the mask secret of p03 does not match its key");
  EXPECT_EQ(Unmasking(wrong_share, {0, 1, 3}).message(),
            "only 3 shares of the self mask of p01 came, the threshold is 4");
}

// UnmaskingMasks rebuilds from the senders' points x = index + 1: fewer than the threshold, or
// one twice, cannot be combined.
TEST_F(MasksTest, UnmaskingMasksRefusesSendersItCannotCombine) {
  std::mt19937_64 rng(6);
  const Members all(3, true);
  PlayedRound r = Play(Params(Names(3), 1, 3), all, all, all, rng);
  EXPECT_EQ(Unmasking(r, {}).message(),
            "only 0 shares of the self mask of p01 came, the threshold is 3");
  EXPECT_EQ(Unmasking(r, {0, 1, 1}).message(), "point 2 is given twice");
}

// An unmask fits the hospital's sets only if it is for the hospital's own survivors and holds a
// share per survivor and per dropped member of U2, no more and no fewer.
TEST_F(MasksTest, CheckUnmaskWantsTheHospitalsSurvivorsAndAShareForEach) {
  const RoundSets sets = {{true, true, true, true, false},
                          {true, true, true, true, false},
                          {true, false, true, true, false},
                          {}};
  auto unmask = [](Members masked, size_t seeds, size_t secrets) {
    UnmaskShares u;
    u.masked = std::move(masked);
    u.self_seeds.resize(seeds);
    u.mask_secrets.resize(secrets);
    return u;
  };
  EXPECT_TRUE(CheckUnmask(sets, "bob", unmask(sets.masked, 3, 1)).ok());
  EXPECT_EQ(CheckUnmask(sets, "bob", unmask(sets.shared, 3, 1)).message(),
            "the unmask of bob is for other survivors");
  EXPECT_EQ(CheckUnmask(sets, "bob", unmask({true, false, true, true}, 3, 1)).message(),
            "the unmask of bob is for other survivors");
  EXPECT_EQ(CheckUnmask(sets, "bob", unmask(sets.masked, 2, 1)).message(),
            "the unmask of bob holds 2 self-mask and 1 mask-secret shares for 3 survivors and 1 "
            "dropped");
  EXPECT_EQ(CheckUnmask(sets, "bob", unmask(sets.masked, 3, 0)).message(),
            "the unmask of bob holds 3 self-mask and 0 mask-secret shares for 3 survivors and 1 "
            "dropped");
  EXPECT_EQ(CheckUnmask(sets, "bob", unmask(sets.masked, 4, 2)).message(),
            "the unmask of bob holds 4 self-mask and 2 mask-secret shares for 3 survivors and 1 "
            "dropped");
  // Without a dropout: a self-mask share per survivor and no mask secret at all.
  const RoundSets none = {{true, true, true}, {true, true, true}, {true, true, true}, {}};
  EXPECT_TRUE(CheckUnmask(none, "carol", unmask(none.masked, 3, 0)).ok());
  EXPECT_EQ(CheckUnmask(none, "carol", unmask(none.masked, 3, 1)).message(),
            "the unmask of carol holds 3 self-mask and 1 mask-secret shares for 3 survivors and 0 "
            "dropped");
}

// Regression, named after what it caught: CheckUnmask counted the dropped as |U2| - |U3|, which
// for sets that do not nest (U3 not within U2, as a capture's last phase record can hold: the
// capture reader does not check nesting) is not |U2 \ U3|. With U2 = {1..5} and U3 = {0..3}
// (n = 6) it let through an unmask with 4 self-mask shares and 1 mask-secret share, and
// UnmaskingMasks then read a second mask-secret share past the end. Now it is refused, and the
// unmask with a share for each of U2 \ U3 = {4, 5} fits.
TEST_F(MasksTest, CheckUnmaskCountsTheDroppedAsU2MinusU3ForSetsThatDoNotNest) {
  const RoundSets sets = {Members(6, true),
                          {false, true, true, true, true, true},
                          {true, true, true, true, false, false},
                          {}};
  UnmaskShares unmask;
  unmask.masked = sets.masked;
  unmask.self_seeds.resize(4);
  unmask.mask_secrets.resize(1);  // |U2| - |U3| = 1
  EXPECT_EQ(CheckUnmask(sets, "p2", unmask).message(),
            "the unmask of p2 holds 4 self-mask and 1 mask-secret shares for 4 survivors and 2 "
            "dropped");
  unmask.mask_secrets.resize(2);
  EXPECT_TRUE(CheckUnmask(sets, "p2", unmask).ok());
}

}  // namespace
}  // namespace tally
