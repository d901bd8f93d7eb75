// SecAgg+ neighbourhoods (schema/neighbourhood.h): the graph a seed fixes, re-derived here from
// its words as an outsider would, and the choice of degree and threshold against fcp's published
// table and at Tally's own margin.
#include "schema/neighbourhood.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <numeric>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "schema/round_graph.h"
#include "schema/schema.h"
#include "tests/contains.h"

namespace tally {
namespace {

using Seed = std::array<uint8_t, 32>;

Seed SeedOf(uint8_t first) {
  Seed d;
  std::iota(d.begin(), d.end(), first);
  return d;
}

// The spec's shuffle over the stream's words, written out again: π and how many words it drew.
struct Shuffle {
  std::vector<uint32_t> ring;
  size_t words_drawn = 0;
  size_t rejected = 0;
};
Shuffle OutsiderShuffle(std::span<const uint32_t> words, uint32_t n) {
  Shuffle s;
  s.ring.resize(n);
  std::iota(s.ring.begin(), s.ring.end(), 0u);
  for (uint32_t i = n - 1; i >= 1; --i) {
    const uint64_t bound = i + 1;
    const uint64_t limit = (uint64_t{1} << 32) - (uint64_t{1} << 32) % bound;
    uint32_t r = words[s.words_drawn++];
    while (r >= limit) {
      ++s.rejected;
      r = words[s.words_drawn++];
    }
    std::swap(s.ring[i], s.ring[r % bound]);
  }
  return s;
}

NeighbourhoodGraph BuildOk(const Seed& seed, uint32_t n, uint32_t degree) {
  Result<NeighbourhoodGraph> g = NeighbourhoodGraph::Build(seed, n, degree);
  EXPECT_TRUE(g.ok()) << g.message();
  return std::move(g).value();
}

// Every row ascending, k of them, no self loop, symmetric, and Adjacent agrees with the rows.
void ExpectWellFormed(const NeighbourhoodGraph& g) {
  const uint32_t n = g.size(), k = g.degree();
  std::vector<std::set<uint32_t>> rows(n);
  for (uint32_t i = 0; i < n; ++i) {
    const std::vector<uint32_t> row = g.Neighbours(i);
    ASSERT_EQ(row.size(), k);
    for (size_t m = 1; m < row.size(); ++m) ASSERT_LT(row[m - 1], row[m]) << "row " << i;
    rows[i] = std::set<uint32_t>(row.begin(), row.end());
    ASSERT_EQ(rows[i].count(i), 0u) << i << " is its own neighbour";
  }
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t j : rows[i]) ASSERT_EQ(rows[j].count(i), 1u) << i << " -> " << j << " only";
  }
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t j = 0; j < n; ++j) ASSERT_EQ(g.Adjacent(i, j), rows[i].count(j) == 1) << i << j;
  }
}

TEST(NeighbourhoodGraphTest, IsKRegularSymmetricAndLoopFree) {
  for (auto [n, k] : {std::pair{4u, 2u},
                      {5u, 2u},
                      {10u, 4u},
                      {10u, 8u},
                      {97u, 10u},
                      {1000u, 20u},
                      {1001u, 998u}}) {
    SCOPED_TRACE(testing::Message() << "n " << n << " k " << k);
    ExpectWellFormed(BuildOk(SeedOf(static_cast<uint8_t>(n)), n, k));
  }
}

TEST(NeighbourhoodGraphTest, TheRingIsAPermutation) {
  NeighbourhoodGraph g = BuildOk(SeedOf(7), 5000, 6);
  std::vector<uint32_t> sorted(g.Ring().begin(), g.Ring().end());
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t p = 0; p < sorted.size(); ++p) ASSERT_EQ(sorted[p], p);
}

TEST(NeighbourhoodGraphTest, IsFixedByItsSeedAlone) {
  NeighbourhoodGraph a = BuildOk(SeedOf(1), 500, 12);
  NeighbourhoodGraph b = BuildOk(SeedOf(1), 500, 12);
  NeighbourhoodGraph c = BuildOk(SeedOf(2), 500, 12);
  Seed one_bit = SeedOf(1);
  one_bit[31] ^= 1;
  NeighbourhoodGraph d = BuildOk(one_bit, 500, 12);
  auto rows = [](const NeighbourhoodGraph& g) {
    std::vector<uint32_t> all;
    for (uint32_t i = 0; i < g.size(); ++i) {
      const std::vector<uint32_t> row = g.Neighbours(i);
      all.insert(all.end(), row.begin(), row.end());
    }
    return all;
  };
  EXPECT_EQ(rows(a), rows(b));
  EXPECT_NE(rows(a), rows(c));
  EXPECT_NE(rows(a), rows(d));
}

// Known answer for N = 10, k = 4 and seed 00 01 02 … 1f, computed outside this code (Python's
// hashlib.blake2b and the cryptography package's ChaCha20) from the spec in
// schema/neighbourhood.h:
//   key   = BLAKE2b-256("tally graph v5" || seed)
//         = 65f995c74426baa65b3972ba9c4a5fb9690b608eae05a5586a1f7c2668ff7d5d
//   words = 2899976105 889219489 3204306567 1090008535 2000706597 2756447908 1263292294
//           2738370256 1487830538 1278214268 …
//   bounds 10, 9, …, 2 each take one word (none is rejected): j = 5, 4, 7, 0, 3, 3, 2, 1, 0
//   π     = 8 6 1 2 9 3 0 7 4 5 (participant at positions 0..9)
TEST(NeighbourhoodGraphTest, KnownAnswer) {
  const Seed seed = SeedOf(0);
  const std::vector<uint32_t> words = NeighbourhoodWords(seed, 10);
  EXPECT_EQ(words,
            (std::vector<uint32_t>{2899976105, 889219489, 3204306567, 1090008535, 2000706597,
                                   2756447908, 1263292294, 2738370256, 1487830538, 1278214268}));
  NeighbourhoodGraph g = BuildOk(seed, 10, 4);
  EXPECT_EQ(std::vector<uint32_t>(g.Ring().begin(), g.Ring().end()),
            (std::vector<uint32_t>{8, 6, 1, 2, 9, 3, 0, 7, 4, 5}));
  auto row = [&](uint32_t i) { return g.Neighbours(i); };
  EXPECT_EQ(row(0), (std::vector<uint32_t>{3, 4, 7, 9}));
  EXPECT_EQ(row(1), (std::vector<uint32_t>{2, 6, 8, 9}));
  EXPECT_EQ(row(5), (std::vector<uint32_t>{4, 6, 7, 8}));
  EXPECT_EQ(row(9), (std::vector<uint32_t>{0, 1, 2, 3}));
  EXPECT_TRUE(g.Adjacent(0, 9));
  EXPECT_FALSE(g.Adjacent(0, 1));
  ExpectWellFormed(g);
}

// The shuffle re-done from the words alone gives the same ring, rejections included: at
// n = 1,000,000 bounds near 10^6 reject up to one word in 4,300, and this seed's shuffle
// rejects 60.
TEST(NeighbourhoodGraphTest, AnOutsidersShuffleOfTheWordsGivesTheRing) {
  for (uint32_t n : {4u, 10u, 1000u, 1'000'000u}) {
    const Seed seed = SeedOf(static_cast<uint8_t>(n));
    const std::vector<uint32_t> words = NeighbourhoodWords(seed, n + 1000);
    const Shuffle s = OutsiderShuffle(words, n);
    NeighbourhoodGraph g = BuildOk(seed, n, 2);
    ASSERT_TRUE(std::equal(s.ring.begin(), s.ring.end(), g.Ring().begin(), g.Ring().end()))
        << "n " << n;
    if (n == 1'000'000) {
      EXPECT_EQ(s.rejected, 60u);
      EXPECT_EQ(s.words_drawn, n - 1 + 60);
    }
  }
}

// The largest graph the tests build (its time is tally-micro-bench's BM_NeighbourhoodGraph): a
// hundred distinct others in every row, each edge both ways, and the ring's neighbours exactly.
// ExpectWellFormed's all-pairs check would be 10^8 calls.
TEST(NeighbourhoodGraphTest, TenThousandOfDegreeOneHundredAreEachJoinedToAHundred) {
  NeighbourhoodGraph g = BuildOk(SeedOf(3), 10'000, 100);
  const std::span<const uint32_t> ring = g.Ring();
  for (uint32_t p = 0; p < g.size(); ++p) {
    const uint32_t i = ring[p];
    const std::vector<uint32_t> row = g.Neighbours(i);
    std::vector<uint32_t> expected;  // positions p - 50 .. p + 50 but p, around the ring
    for (uint32_t d = 1; d <= 50; ++d)
      for (uint32_t q : {(p + d) % g.size(), (p + g.size() - d) % g.size()})
        expected.push_back(ring[q]);
    std::sort(expected.begin(), expected.end());
    ASSERT_EQ(row, expected) << "participant " << i << " at position " << p;
    for (uint32_t j : row) ASSERT_TRUE(g.Adjacent(j, i)) << i << " -> " << j << " only";
  }
}

TEST(NeighbourhoodGraphTest, RefusesWhatIsNotANeighbourhood) {
  const Seed seed = SeedOf(0);
  struct Case {
    uint32_t n, k;
    const char* reason;
  };
  for (const Case& c :
       {Case{3, 2, "4 to 1000000 participants, not 3"}, Case{0, 2, "not 0"},
        Case{1'000'001, 2, "not 1000001"}, Case{10, 5, "even and at least 2, not 5"},
        Case{10, 0, "even and at least 2, not 0"}, Case{10, 10, "at most n - 2 = 8"},
        Case{11, 10, "degree 10 among 11"}, Case{1'000'000, 1000, "MiB of neighbour lists"}}) {
    Result<NeighbourhoodGraph> g = NeighbourhoodGraph::Build(seed, c.n, c.k);
    ASSERT_FALSE(g.ok()) << c.n << " " << c.k;
    EXPECT_TRUE(Contains(g.message(), c.reason));
  }
}

struct Row {
  uint32_t n, corrupt_ppm, dropout_ppm, degree, threshold;
};

std::string Describe(const Row& r) {
  return testing::PrintToString(r.n) + " patients, " + testing::PrintToString(r.corrupt_ppm) +
         " ppm corrupt, " + testing::PrintToString(r.dropout_ppm) + " ppm dropped";
}

// fcp's published table for its semi-honest rule, margin 1 (google-parfait/federated-compute,
// fcp/secagg/server/graph_parameter_finder_test.cc). As in fcp's own test, the degree must be
// equal and the threshold at most the one given. Computed independently with exact rationals
// too (Python's math.comb and fractions), which agree with every row here.
TEST(ChooseNeighbourhoodTest, MatchesFcpsTableAtMarginOne) {
  const Row rows[] = {
      {100, 450'000, 450'000, 92, 46},
      {1'000, 450'000, 450'000, 822, 417},
      {10'000, 450'000, 450'000, 3494, 1771},
      {100'000, 450'000, 450'000, 5508, 2788},
      {1'000'000, 450'000, 450'000, 6240, 3156},
      {10, 330'000, 330'000, 8, 4},
      {100, 330'000, 330'000, 68, 34},
      {1'000, 330'000, 330'000, 286, 150},
      {10'000, 330'000, 330'000, 422, 221},
      {100'000, 330'000, 330'000, 480, 251},
      {1'000'000, 330'000, 330'000, 518, 270},
      {100, 50'000, 330'000, 28, 6},
      {1'000, 50'000, 330'000, 72, 24},
      {10'000, 50'000, 330'000, 86, 29},
      {100'000, 50'000, 330'000, 96, 32},
      {1'000'000, 50'000, 330'000, 102, 34},
      {10, 330'000, 50'000, 4, 4},
      {100, 330'000, 50'000, 34, 29},
      {1'000, 330'000, 50'000, 78, 60},
      {10'000, 330'000, 50'000, 92, 70},
      {100'000, 330'000, 50'000, 102, 77},
      {1'000'000, 330'000, 50'000, 110, 83},
  };
  for (const Row& r : rows) {
    Result<NeighbourhoodParams> p = ChooseNeighbourhood(r.n, r.corrupt_ppm, r.dropout_ppm, 1);
    ASSERT_TRUE(p.ok()) << Describe(r) << ": " << p.message();
    EXPECT_EQ(p->degree, r.degree) << Describe(r);
    EXPECT_LE(p->threshold, r.threshold) << Describe(r);
    EXPECT_TRUE(CheckNeighbourhood(r.n, *p, r.corrupt_ppm, r.dropout_ppm, 1).ok()) << Describe(r);
  }
}

// The one row of fcp's table Tally does not reproduce: 10 patients, 5% corrupt, 33% dropped,
// where fcp gives degree 4 and threshold 2. At degree 4, no neighbour is corrupt (t1 = 0) but
// with probability 7/210 (above 2^-20/10) only 1 of a patient's 4 neighbours survives (t2 = 1);
// fcp returns max(t1 + 1, 2) = 2 without checking it against t2, outside its own range
// (t1, t2]. Tally requires t <= t2, so a dropped patient's secrets can always be rebuilt from
// its surviving neighbours, and goes on to degree 6 (t2 = 3).
TEST(ChooseNeighbourhoodTest, KeepsTheThresholdWithinTheSurvivorsWhereFcpDoesNot) {
  Result<NeighbourhoodParams> p = ChooseNeighbourhood(10, 50'000, 330'000, 1);
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ(*p, (NeighbourhoodParams{6, 2}));
  Status fcps = CheckNeighbourhood(10, {4, 2}, 50'000, 330'000, 1);
  EXPECT_TRUE(Contains(fcps.message(),
                       "threshold 2 is 1 above 1: at most 1 of a patient's 4 "
                       "neighbours survive"))
      << fcps.message();
}

// Tally's margin 2 at the rates it declares by default (5% corrupt, 10% dropped) and with no
// corrupt patient: frozen, and checked against exact rationals outside this code (as above).
// The degree grows like log n. With γ = 0 connectivity sets the degree (t2 is well above 2);
// with γ = 5% the survivors do (t = t2).
TEST(ChooseNeighbourhoodTest, TallysMarginAtItsDefaultRates) {
  const Row rows[] = {
      {10, 50'000, 100'000, 4, 2},
      {20, 50'000, 100'000, 6, 3},
      {50, 50'000, 100'000, 10, 4},
      {100, 50'000, 100'000, 16, 7},
      {500, 50'000, 100'000, 34, 18},
      {1'000, 50'000, 100'000, 38, 20},
      {10'000, 50'000, 100'000, 44, 23},
      {100'000, 50'000, 100'000, 46, 24},
      {1'000'000, 50'000, 100'000, 52, 26},
      {10, 0, 100'000, 4, 2},
      {100, 0, 100'000, 12, 2},
      {500, 0, 100'000, 18, 2},
      {1'000, 0, 100'000, 18, 2},
      {10'000, 0, 100'000, 20, 2},
      {1'000'000, 0, 100'000, 26, 2},
  };
  for (const Row& r : rows) {
    Result<NeighbourhoodParams> p = ChooseNeighbourhood(r.n, r.corrupt_ppm, r.dropout_ppm);
    ASSERT_TRUE(p.ok()) << Describe(r) << ": " << p.message();
    EXPECT_EQ(*p, (NeighbourhoodParams{r.degree, r.threshold})) << Describe(r);
    // Margin 2 asks more than margin 1: a larger degree, or a threshold at least as high.
    Result<NeighbourhoodParams> one = ChooseNeighbourhood(r.n, r.corrupt_ppm, r.dropout_ppm, 1);
    ASSERT_TRUE(one.ok());
    EXPECT_TRUE(p->degree > one->degree ||
                (p->degree == one->degree && p->threshold >= one->threshold))
        << Describe(r);
  }
}

TEST(ChooseNeighbourhoodTest, ThePatientsCheckAcceptsTheChoiceAndNothingWeaker) {
  for (uint32_t n : {20u, 100u, 500u, 1000u, 10'000u}) {
    SCOPED_TRACE(testing::Message() << n << " patients");
    Result<NeighbourhoodParams> p = ChooseNeighbourhood(n, 50'000, 100'000);
    ASSERT_TRUE(p.ok()) << p.message();
    EXPECT_TRUE(CheckNeighbourhood(n, *p, 50'000, 100'000).ok());
    // One lower is within reach of a neighbourhood's corrupt patients plus the margin.
    Status lower = CheckNeighbourhood(n, {p->degree, p->threshold - 1}, 50'000, 100'000);
    EXPECT_TRUE(Contains(lower.message(), "threshold " + std::to_string(p->threshold - 1) +
                                              " is 1 below " + std::to_string(p->threshold)));
    EXPECT_TRUE(Contains(lower.message(), "corrupt neighbours")) << lower.message();
    // Two fewer neighbours: either the graph may come apart or no threshold fits.
    Status smaller = CheckNeighbourhood(n, {p->degree - 2, p->threshold}, 50'000, 100'000);
    EXPECT_FALSE(smaller.ok());
    std::printf("%u patients, k %u t %u; k - 2: %s\n", n, p->degree, p->threshold,
                smaller.message().c_str());
  }
  // The reasons, word for word: at 100 patients (k 16, t 7) and 500 (k 34, t 18).
  EXPECT_EQ(CheckNeighbourhood(100, {16, 6}, 50'000, 100'000).message(),
            "threshold 6 is 1 below 7: a patient may have up to 5 corrupt neighbours of its 16 "
            "(more with probability below 2^-41/100), and the margin is 2");
  EXPECT_EQ(CheckNeighbourhood(100, {14, 7}, 50'000, 100'000).message(),
            "degree 14 is too low: the honest survivors' graph may come apart with probability "
            "up to 2^-39.3, above 2^-41");
  EXPECT_EQ(CheckNeighbourhood(500, {32, 18}, 50'000, 100'000).message(),
            "threshold 18 is 1 above 17: at most 17 of a patient's 32 neighbours survive with "
            "probability 2^-20/500 or more");
  EXPECT_TRUE(Contains(CheckNeighbourhood(100, {5, 2}, 0, 100'000).message(),
                       "degree 5 is not an even number from 2 to 98"));
  EXPECT_TRUE(Contains(CheckNeighbourhood(100, {100, 2}, 0, 100'000).message(),
                       "degree 100 is not an even number from 2 to 98"));
}

TEST(ChooseNeighbourhoodTest, RefusesRatesAndSizesItCannotServe) {
  struct Case {
    uint32_t n, corrupt_ppm, dropout_ppm, margin;
    const char* reason;
  };
  for (const Case& c : {
           Case{3, 0, 0, 2, "4 to 1000000 patients, not 3"},
           Case{1'000'001, 0, 0, 2, "not 1000001"},
           Case{100, 1'000'000, 0, 2, "corrupt rate is 1000000 ppm"},
           Case{100, 0, 1'000'000, 2, "dropout rate is 1000000 ppm"},
           Case{100, 450'000, 450'001, 2, "at most 90%, not 45% + 45.0001%"},
           Case{100, 0, 0, 0, "margin must be at least 1"},
           Case{20, 450'000, 450'000, 2,
                "no degree below 19 hides inputs from 45% corrupt and 45% dropped patients "
                "among 20 with margin 2"},
           Case{4, 330'000, 330'000, 1, "no degree below 3"},
       }) {
    Result<NeighbourhoodParams> p =
        ChooseNeighbourhood(c.n, c.corrupt_ppm, c.dropout_ppm, c.margin);
    ASSERT_FALSE(p.ok()) << c.reason;
    EXPECT_TRUE(Contains(p.message(), c.reason));
    if (!Contains(c.reason, "no degree")) {
      Status check = CheckNeighbourhood(c.n, {2, 2}, c.corrupt_ppm, c.dropout_ppm, c.margin);
      EXPECT_TRUE(Contains(check.message(), c.reason));
    }
  }
}

// Called per round by the hospital and again by every patient (its time is tally-micro-bench's
// BM_ChooseNeighbourhood): at 10^6 patients it finds a choice at the default rates and at fcp's
// harder ones, and the patients' check accepts each.
TEST(ChooseNeighbourhoodTest, ChoosesForAMillionPatientsWhatThePatientsCheckAccepts) {
  for (auto [corrupt, dropout] :
       {std::pair{50'000u, 100'000u}, {330'000u, 330'000u}, {450'000u, 450'000u}}) {
    SCOPED_TRACE(testing::Message() << corrupt << " ppm corrupt, " << dropout << " ppm dropped");
    Result<NeighbourhoodParams> p = ChooseNeighbourhood(1'000'000, corrupt, dropout);
    ASSERT_TRUE(p.ok()) << p.message();
    const Status checked = CheckNeighbourhood(1'000'000, p.value(), corrupt, dropout);
    EXPECT_TRUE(checked.ok()) << checked.message();
  }
}

// Regression, named after what it caught: a hospital with --graph auto and more patients than a
// full round holds refused to start, because its start-up check judged the round as a full one.
// What it asks for is ChooseGraph's graph, which CheckRoundParams accepts.
TEST(ChooseGraphTest, AHospitalsRoundAboveAFullRoundIsANeighbourhoodRoundThatChecksOut) {
  EXPECT_FALSE(ChooseGraph(100, kDefaultCorruptPpm, kDefaultDropoutPpm));  // 100: a full round
  const std::optional<Neighbourhood> g = ChooseGraph(2400, kDefaultCorruptPpm, kDefaultDropoutPpm);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->corrupt_ppm, kDefaultCorruptPpm);
  EXPECT_EQ(g->dropout_ppm, kDefaultDropoutPpm);
  EXPECT_TRUE(
      CheckNeighbourhood(2400, {g->degree, g->threshold}, kDefaultCorruptPpm, kDefaultDropoutPpm)
          .ok());
  RoundParams p{"hospital", 1000, 1, {}};
  for (int i = 0; i < 2400; ++i) p.participants.push_back("p" + std::to_string(i));
  p.threshold = SafeThreshold(2400);
  EXPECT_EQ(CheckRoundParams(p).message(),
            "a full round has at most 1000 patients, not 2400: a larger one needs a graph "
            "(neighbourhoods)");
  p.graph = g;
  EXPECT_TRUE(CheckRoundParams(p).ok());
}

}  // namespace
}  // namespace tally
