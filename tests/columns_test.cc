// Rounds with columns, without sockets: a patient's input file (nodes/input.h), its encoding for
// a round and the hospital's decoding of the sum (nodes/aggregate.h): exact sums and means,
// missing cells, weights, floats, and every refusal by its reason — which never holds a value.
#include <gtest/gtest.h>
#include <sodium.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "nodes/aggregate.h"
#include "nodes/input.h"
#include "schema/decimal.h"
#include "schema/results.h"
#include "tests/contains.h"
#include "tests/support.h"

namespace tally {
namespace {

PatientInput Row(std::vector<std::string> names, std::vector<std::string> cells,
                 std::string weight = "") {
  PatientInput in;
  in.names = std::move(names);
  in.cells = std::move(cells);
  in.weight = std::move(weight);
  return in;
}

RoundParams Clinical() {
  // bmi in [10.0, 80.0] at one decimal, a change in [-50.00, 50.00] at two.
  return RoundParams{"hospital",
                     0,
                     1,
                     {"alice", "bob", "carol"},
                     {{"bmi", 100, 800, 1}, {"delta", -5000, 5000, 2}},
                     {}};
}

// What the hospital holds once every masked input is in: the masks cancel, so the plain sum.
std::vector<uint64_t> SumOf(const RoundParams& p, const std::vector<PatientInput>& inputs) {
  std::vector<uint64_t> sum(PayloadLength(p), 0);
  for (const auto& in : inputs) {
    Result<std::vector<uint64_t>> v = EncodeInput(p, in);
    EXPECT_TRUE(v.ok()) << v.message();
    if (!v.ok()) continue;
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += (*v)[i];
  }
  return sum;
}

class ColumnsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }
};

// Sums are the exact decimal sums, negative ones too; a missing cell counts in neither the sum
// nor the count, so the mean is over the values given.
TEST_F(ColumnsTest, SumsAndMeansAreExactAndMissingCellsAreLeftOut) {
  const RoundParams p = Clinical();
  const std::vector<uint64_t> sum =
      SumOf(p, {Row({"bmi", "delta"}, {"32.1", "-12.34"}), Row({"delta", "bmi"}, {"0.5", "25"}),
                Row({"bmi", "delta"}, {"39.2", ""})});
  EXPECT_TRUE(AggregateInRange(p, sum));
  const std::vector<ColumnResult> cols = DecodeColumns(p, sum);
  ASSERT_EQ(cols.size(), 2u);
  EXPECT_EQ(cols[0], (ColumnResult{"bmi", 3, "", {"96.3"}, {"32.1000"}}));
  EXPECT_EQ(cols[1], (ColumnResult{"delta", 2, "", {"-11.84"}, {"-5.92000"}}));
}

// A column nobody gave has a sum of zero and no mean.
TEST_F(ColumnsTest, AColumnNobodyGaveHasNoMean) {
  const RoundParams p = Clinical();
  const auto cols = DecodeColumns(
      p, SumOf(p, {Row({"bmi", "delta"}, {"20", ""}), Row({"bmi", "delta"}, {"30", ""})}));
  EXPECT_EQ(cols[1], (ColumnResult{"delta", 0, "", {"0.00"}, {std::nullopt}}));
  EXPECT_EQ(cols[0].mean[0], "25.0000");
}

// Weighted: the round sums w * value and w per column; the mean is their ratio.
TEST_F(ColumnsTest, WeightedRoundsGiveWeightedSumsAndMeans) {
  RoundParams p = Clinical();
  p.weight = {100, 1};  // weights in [0, 10.0]
  const auto cols = DecodeColumns(p, SumOf(p, {Row({"bmi", "delta"}, {"30", "1"}, "2"),
                                               Row({"bmi", "delta"}, {"20", ""}, "0.5")}));
  // bmi: (2 * 30 + 0.5 * 20) / 2.5 = 28; delta: only the first, weight 2.
  EXPECT_EQ(cols[0], (ColumnResult{"bmi", 2, "2.5", {"70.00"}, {"28.0000"}}));
  EXPECT_EQ(cols[1], (ColumnResult{"delta", 1, "2.0", {"2.000"}, {"1.00000"}}));
}

// A one-column round takes an input without a header: a vector of `length` values.
TEST_F(ColumnsTest, AVectorColumnTakesOneValuePerLine) {
  RoundParams p{"hospital", 0, 3, {"alice", "bob"}, {{"update", -100, 100, 2}}, {}};
  const auto cols =
      DecodeColumns(p, SumOf(p, {Row({}, {"-1", "0.25", "1"}), Row({}, {"0.5", "0.25", "-1"})}));
  EXPECT_EQ(cols[0].sum, (std::vector<std::string>{"-0.50", "0.50", "0.00"}));
  EXPECT_EQ(cols[0].count, 2u);
  EXPECT_EQ(cols[0].mean[0], "-0.25000");
}

// Every refusal names the column and the reason, never the value: it is published to every
// party of the round.
TEST_F(ColumnsTest, BadCellsAreRefusedByColumnAndReasonWithoutTheValue) {
  const RoundParams p = Clinical();
  struct Case {
    PatientInput input;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {Row({"bmi", "delta"}, {"3x.1", "1"}), "column bmi: not a decimal"},
      {Row({"bmi", "delta"}, {"32.15", "1"}), "column bmi: has 2 decimals, the round allows 1"},
      {Row({"bmi", "delta"}, {"80.1", "1"}), "column bmi: outside [10.0, 80.0]"},
      {Row({"bmi", "delta"}, {"32", "-50.01"}), "column delta: outside [-50.00, 50.00]"},
      // The round's column names are public; the patient's other columns are counted, not named.
      {Row({"bmi", "hiv_status"}, {"32", "1"}),
       "the round asks for columns bmi,delta; it lacks delta and has 1 other column"},
      {Row({"bmi"}, {"32"}), "the round asks for columns bmi,delta; it lacks delta"},
      {Row({}, {"32"}), "the round asks for columns bmi,delta; this input has no header"},
      {Row({"bmi", "delta"}, {"32", "1"}, "2"),
       "this input has a weight; the round is not weighted"},
  };
  for (const Case& c : cases) {
    Result<std::vector<uint64_t>> r = EncodeInput(p, c.input);
    ASSERT_FALSE(r.ok()) << c.reason;
    EXPECT_EQ(r.message(), c.reason);
    for (const std::string& cell : c.input.cells) {
      if (cell.size() > 2) {
        EXPECT_FALSE(Contains(r.message(), cell)) << r.message();
      }
    }
  }
  RoundParams weighted = p;
  weighted.weight = {100, 1};
  EXPECT_EQ(EncodeInput(weighted, Row({"bmi", "delta"}, {"32", "1"})).message(),
            "the round is weighted; this input has no weight");
  EXPECT_EQ(EncodeInput(weighted, Row({"bmi", "delta"}, {"32", "1"}, "10.5")).message(),
            "weight: outside [0, 10.0]");
  EXPECT_EQ(EncodeInput(weighted, Row({"bmi", "delta"}, {"32", "1"}, "1.25")).message(),
            "weight: has 2 decimals, the round allows 1");
  RoundParams vector{"hospital", 0, 3, {"alice", "bob"}, {{"update", -100, 100, 2}}, {}};
  EXPECT_EQ(EncodeInput(vector, Row({}, {"1", "", "1"})).message(),
            "column update: 1 of 3 elements missing (a vector column is given whole or not at "
            "all)");
}

// A round without columns takes integers in [0, range], as it always has.
TEST_F(ColumnsTest, ARoundWithoutColumnsTakesIntegersInItsRange) {
  const RoundParams p{"hospital", 1000, 2, {"alice", "bob"}};
  EXPECT_EQ(EncodeInput(p, Row({}, {"7", "1000"})).value(), (std::vector<uint64_t>{7, 1000}));
  EXPECT_EQ(EncodeInput(p, Row({}, {"7", "1001"})).message(), "input outside [0, 1000]");
  EXPECT_EQ(EncodeInput(p, Row({}, {"7", "1.5"})).message(), "input outside [0, 1000]");
  EXPECT_EQ(EncodeInput(p, Row({}, {"7"})).message(), "input has 1 elements, the round asks for 2");
}

// Floats are clipped to the bounds and rounded to the decimals without bias: the mean of many
// roundings is the value, within what chance allows, and each is one of the two neighbours.
TEST_F(ColumnsTest, FloatsAreClippedAndRoundedStochasticallyWithoutBias) {
  constexpr int kDraws = 20000;
  double total = 0;
  for (int i = 0; i < kDraws; ++i) {
    Result<int64_t> u = StochasticUnits(0.123456, 2, -100, 100);
    ASSERT_TRUE(u.ok());
    ASSERT_TRUE(*u == 12 || *u == 13) << *u;
    total += static_cast<double>(*u);
  }
  // E = 12.3456 units; a Bernoulli draw's deviation is at most 0.5: 8 sigma is 0.028.
  EXPECT_NEAR(total / kDraws, 12.3456, 8 * 0.5 / std::sqrt(double{kDraws}));
  EXPECT_EQ(StochasticUnits(0.25, 2, -100, 100).value(), 25);  // exact: no randomness
  EXPECT_EQ(StochasticUnits(1e9, 2, -100, 100).value(), 100);  // clipped
  EXPECT_EQ(StochasticUnits(-3.5, 0, -2, 2).value(), -2);
  EXPECT_EQ(StochasticUnits(std::nan(""), 2, -100, 100).message(), "not a finite number");
  EXPECT_FALSE(StochasticUnits(1e17, 2, 0, INT64_MAX).ok());  // beyond a double's 53 bits

  RoundParams p{"hospital", 0, 2, {"alice", "bob"}, {{"update", -100, 100, 2}}, {}};
  PatientInput floats = Row({}, {"0.5e-1", "7"});
  floats.floats = true;
  const auto v = EncodeInput(p, floats);
  ASSERT_TRUE(v.ok()) << v.message();
  EXPECT_EQ((*v)[0], 105u);  // 5 units above the lower bound of -100
  EXPECT_EQ((*v)[1], 200u);  // 7 clipped to 1.00
  floats.cells = {"x", "1"};
  EXPECT_EQ(EncodeInput(p, floats).message(), "column update: not a number");
}

// ---- Input files ---------------------------------------------------------------------------

class InputFileTest : public ColumnsTest {
 protected:
  std::filesystem::path Write(const std::string& text) {
    const auto path = dir_.path() / ("input" + std::to_string(++files_) + ".csv");
    std::ofstream(path) << text;
    return path;
  }
  test::TempDir dir_;
  int files_ = 0;
};

TEST_F(InputFileTest, OneValuePerLineOrAHeaderAndARow) {
  auto lines = ReadPatientInput(Write("# comment\n3\n\n-4.5\n"), false);
  ASSERT_TRUE(lines.ok()) << lines.message();
  EXPECT_TRUE(lines->names.empty());
  EXPECT_EQ(lines->cells, (std::vector<std::string>{"3", "-4.5"}));

  auto csv = ReadPatientInput(Write("Mean Radius,delta , glucose\r\n17.99,,4.8598\r\n"), false);
  ASSERT_TRUE(csv.ok()) << csv.message();
  EXPECT_EQ(csv->names, (std::vector<std::string>{"mean_radius", "delta", "glucose"}));
  EXPECT_EQ(csv->cells, (std::vector<std::string>{"17.99", "", "4.8598"}));
}

TEST_F(InputFileTest, BadFilesAreRefusedByLineWithoutTheirValues) {
  const auto two_rows = Write("bmi\n32.1\n33.2\n");
  EXPECT_EQ(ReadPatientInput(two_rows, false).message(),
            two_rows.string() + ": a CSV input is a header and one row of values, not 2 rows");
  const auto bad_cell = Write("bmi,glucose\n32.1,4x8\n");
  EXPECT_EQ(ReadPatientInput(bad_cell, false).message(),
            bad_cell.string() + ":2: column glucose: not a decimal");
  const auto bad_line = Write("1\n2\nthree\n");
  EXPECT_EQ(ReadPatientInput(bad_line, false).message(), bad_line.string() + ":3: not a decimal");
  const auto bad_name = Write("bmi,b/p\n1,2\n");
  EXPECT_EQ(ReadPatientInput(bad_name, false).message(),
            bad_name.string() + ":1: the name of column 2 is not [a-z0-9_-]{1,32}");
  const auto empty = Write("# nothing\n");
  EXPECT_EQ(ReadPatientInput(empty, false).message(), empty.string() + ": no values");
  auto floats = ReadPatientInput(Write("1e-3\n-2.5E2\n"), true);
  ASSERT_TRUE(floats.ok()) << floats.message();
  EXPECT_TRUE(floats->floats);
}

// ---- Regressions: what the review of protocol 3's columns found -----------------------------

// A value too large for the round's decimals was multiplied past 2^127 and wrapped into the
// bounds (2^128 / 1000, rounded up, became 0.544): it is refused as outside them.
TEST_F(ColumnsTest, AHugeValueIsRefusedInsteadOfWrappingIntoTheBounds) {
  const RoundParams p{"hospital", 0, 1, {"alice", "bob"}, {{"bmi", 0, 100000, 3}}, {}};
  EXPECT_EQ(EncodeInput(p, Row({"bmi"}, {"340282366920938463463374607431768212"})).message(),
            "column bmi: outside [0.000, 100.000]");
  const RoundParams p18{"hospital", 0, 1, {"alice", "bob"}, {{"x", 0, 1000000000000000000, 18}},
                        {}};
  EXPECT_FALSE(EncodeInput(p18, Row({"x"}, {"340282366920938463464"})).ok());
  const RoundParams weighted{"hospital", 0, 1, {"alice", "bob"}, {{"x", 0, 10, 0}}, {10000, 3}};
  EXPECT_EQ(
      EncodeInput(weighted, Row({"x"}, {"1"}, "340282366920938463463374607431768212")).message(),
      "weight: outside [0, 10.000]");
  EXPECT_EQ(ParseColumns("x", "x=0:340282366920938463463374607431768212", "3").message(),
            "--bounds x: 340282366920938463463374607431768212 is too large at 3 decimals");
}

// A round with many decimals wrote means and weighted sums with more than the 18 decimals the
// results reader took: the line could not be read back, and with it the whole results file.
TEST_F(ColumnsTest, ResultLinesOfHighPrecisionColumnsReadBack) {
  // Threshold 2: the safe minimum for two patients (CheckRoundParams checks it too).
  for (const RoundParams& p :
       {RoundParams{"hospital", 0, 1, {"alice", "bob"}, {{"x", 0, 100000000000000000, 16}}, {}, 2},
        RoundParams{"hospital", 0, 1, {"alice", "bob"}, {{"x", 0, 10, 18}}, {5, 1}, 2}}) {
    ASSERT_TRUE(CheckRoundParams(p).ok());
    const bool weighted = p.weight.max > 0;
    RoundResult r;
    r.params = p;
    r.columns = DecodeColumns(
        p, SumOf(p, {Row({"x"}, {weighted ? "0.000000000000000001" : "1.5"}, weighted ? "0.5" : ""),
                     Row({"x"}, {weighted ? "0" : "2.25"}, weighted ? "0.5" : "")}));
    const std::string line = ResultJson(r);
    auto back = ParseResultsLine(line);
    ASSERT_TRUE(back.ok()) << back.message() << ": " << line;
    EXPECT_EQ(back->result->columns, r.columns);
  }
  const RoundParams p{"hospital", 0, 1, {"alice", "bob"}, {{"x", 0, 100000000000000000, 16}}, {}};
  EXPECT_EQ(DecodeColumns(p, SumOf(p, {Row({"x"}, {"1.5"}), Row({"x"}, {"2.25"})}))[0].mean[0],
            "1.8750000000000000000");
}

// A weight sum above the count times the largest weight is not what honest inputs give.
TEST_F(ColumnsTest, AWeightSumAboveCountTimesMaxIsOutOfRange) {
  const RoundParams p{"hospital", 0, 1, {"alice", "bob"}, {{"x", 0, 10, 0}}, {5, 0}};
  EXPECT_TRUE(AggregateInRange(p, std::vector<uint64_t>{50, 1, 5}));
  EXPECT_FALSE(AggregateInRange(p, std::vector<uint64_t>{50, 1, 10}));
}

// A subnormal float (1e-310) set ERANGE and was refused as "not a number".
TEST_F(ColumnsTest, ATinyFloatIsANumber) {
  RoundParams p{"hospital", 0, 1, {"alice", "bob"}, {{"update", -100, 100, 2}}, {}};
  PatientInput tiny = Row({}, {"1e-310"});
  tiny.floats = true;
  EXPECT_EQ(EncodeInput(p, tiny).value(), (std::vector<uint64_t>{100, 1}));
}

// A CSV file of values without a header was read as a header of "column names" made of the
// first row's values, and the refusal published them: a header is required.
TEST_F(InputFileTest, ACsvWithoutAHeaderIsRefusedAtStart) {
  const auto headerless = Write("142,95\n138,88\n");
  EXPECT_EQ(ReadPatientInput(headerless, false).message(),
            headerless.string() + ":1: a CSV input starts with a header naming its columns");
}

// ---- The hospital's flags ------------------------------------------------------------------

TEST(ColumnFlagsTest, BoundsAndDecimalsMakeTheColumns) {
  auto c = ParseColumns("bmi,bp", "bmi=10.0:80.0,bp=40:200", "bp=1");
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_EQ(*c, (std::vector<Column>{{"bmi", 100, 800, 1}, {"bp", 400, 2000, 1}}));
  auto one = ParseColumns("", "-1.5:1.5", "");
  ASSERT_TRUE(one.ok()) << one.message();
  EXPECT_EQ(*one, (std::vector<Column>{{"value", -15, 15, 1}}));
  auto from_bounds = ParseColumns("", "a=0:1,b=-2:2", "3");
  ASSERT_TRUE(from_bounds.ok());
  EXPECT_EQ(*from_bounds, (std::vector<Column>{{"a", 0, 1000, 3}, {"b", -2000, 2000, 3}}));
  EXPECT_EQ(ParseColumns("bmi,bp", "bmi=10:80", "").message(), "--bounds: none for column bp");
  EXPECT_EQ(ParseColumns("bmi", "bmi=10.25:80", "bmi=1").message(),
            "--bounds bmi: 10.25 has 2 decimals, the round allows 1");
  EXPECT_EQ(ParseColumns("bmi", "bmi=80:10", "").message(), "--bounds bmi: 80 is above 10");
  EXPECT_EQ(ParseColumns("bmi", "bmi=10:80,bp=1:2", "").message(), "--bounds: no column bp");
  EXPECT_EQ(ParseWeightMax("2.5").value(), (Weight{25, 1}));
  EXPECT_FALSE(ParseWeightMax("0").ok());
}

}  // namespace
}  // namespace tally
