// Exact decimals (schema/decimal.h), CSV (schema/csv.h), a round's columns on the wire and
// their ring check (CheckRoundParams), and results lines with columns and the patients who
// dropped out (schema/results.h).
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "schema/csv.h"
#include "schema/decimal.h"
#include "schema/results.h"
#include "schema/schema.h"
#include "tests/contains.h"

namespace tally {
namespace {

std::vector<std::string> Names(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back("p" + std::to_string(i));
  return out;
}

// ---- Decimals ------------------------------------------------------------------------------

// Parsed as text, never through a binary float: 32.1 at one decimal is exactly 321, and 0.1 +
// 0.2 adds up to 0.3 exactly.
TEST(DecimalTest, ParsesExactlyAndPrintsBack) {
  EXPECT_EQ(ParseDecimal("32.1").value(), (Decimal{321, 1}));
  EXPECT_EQ(ParseDecimal("-4.8598").value(), (Decimal{-48598, 4}));
  EXPECT_EQ(ParseDecimal("0").value(), (Decimal{0, 0}));
  EXPECT_EQ(ParseDecimal("120").value(), (Decimal{120, 0}));
  EXPECT_EQ(ParseDecimal("007.50").value(), (Decimal{750, 2}));
  EXPECT_EQ(ToUnits(ParseDecimal("32.1").value(), 1).value(), 321);
  EXPECT_EQ(ToUnits(ParseDecimal("32.1").value(), 3).value(), 32100);
  EXPECT_EQ(ToUnits(ParseDecimal("0.1").value(), 1).value() +
                ToUnits(ParseDecimal("0.2").value(), 1).value(),
            ToUnits(ParseDecimal("0.3").value(), 1).value());
  EXPECT_EQ(FormatUnits(321, 1), "32.1");
  EXPECT_EQ(FormatUnits(-5, 2), "-0.05");
  EXPECT_EQ(FormatUnits(0, 3), "0.000");
  EXPECT_EQ(FormatUnits(-120, 0), "-120");
  const Int128 big = static_cast<Int128>(std::numeric_limits<uint64_t>::max()) * 1000 + 7;
  EXPECT_EQ(FormatUnits(big, 3), "18446744073709551615.007");
  EXPECT_EQ(FormatUnits(-big, 3), "-18446744073709551615.007");
}

// More digits than the round allows are refused with how many; trailing zeros are not digits.
TEST(DecimalTest, ExcessDigitsAreRefusedAndTrailingZerosAreNot) {
  Result<Int128> r = ToUnits(ParseDecimal("4.12345").value(), 2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.message(), "4.12345 has 5 decimals, the round allows 2");
  EXPECT_EQ(ToUnits(ParseDecimal("4.10").value(), 1).value(), 41);
  EXPECT_EQ(SignificantDecimals(ParseDecimal("4.100").value()), 1u);
  EXPECT_EQ(SignificantDecimals(ParseDecimal("-0.000").value()), 0u);
}

TEST(DecimalTest, NonDecimalsAreRefusedNamingTheText) {
  for (const char* bad :
       {"3x.1", "", "-", ".5", "5.", "+5", "1e3", " 5", "5 ", "1,5", "--1", "0x10", "inf", "nan"}) {
    Result<Decimal> d = ParseDecimal(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.message(), "\"" + std::string(bad) + "\" is not a decimal") << bad;
  }
  EXPECT_EQ(ParseDecimal(std::string(37, '9')).message(),
            "\"" + std::string(37, '9') + "\" has more than 36 digits");
  EXPECT_EQ(ParseDecimal("0." + std::string(19, '1')).message(),
            "\"0." + std::string(19, '1') + "\" has more than 18 decimals");
}

// Means: long division, rounded half away from zero, for either sign.
TEST(DecimalTest, RatiosAreRoundedHalfAwayFromZero) {
  EXPECT_EQ(FormatRatio(1, 3, 4), "0.3333");
  EXPECT_EQ(FormatRatio(2, 3, 4), "0.6667");
  EXPECT_EQ(FormatRatio(-2, 3, 4), "-0.6667");
  EXPECT_EQ(FormatRatio(5, 2, 0), "3");
  EXPECT_EQ(FormatRatio(-5, 2, 0), "-3");
  EXPECT_EQ(FormatRatio(19995, 10000, 3), "2.000");  // 1.9995 rounds up, carrying
  EXPECT_EQ(FormatRatio(-1, 1000, 2), "0.00");       // no "-0.00"
  EXPECT_EQ(FormatRatio(963, 30, 4), "32.1000");
}

// ---- CSV -----------------------------------------------------------------------------------

TEST(CsvTest, ReadsQuotedFieldsEmptyCellsAndBothLineBreaks) {
  auto rows = ParseCsv("name,bmi,\"note, quoted\"\r\nalice,32.1,\"say \"\"hi\"\"\"\n\nbob,,x");
  ASSERT_TRUE(rows.ok()) << rows.message();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0], (CsvRow{"name", "bmi", "note, quoted"}));
  EXPECT_EQ((*rows)[1], (CsvRow{"alice", "32.1", "say \"hi\""}));
  EXPECT_EQ((*rows)[2], (CsvRow{"bob", "", "x"}));
}

TEST(CsvTest, MalformedFilesAreRefusedNamingTheLine) {
  EXPECT_EQ(ParseCsv("a,b\n1,2,3\n").message(), "line 2: 3 fields, the first line has 2");
  EXPECT_EQ(ParseCsv("a,b\n\"1,2\n").message(), "line 2: unterminated quote");
  EXPECT_EQ(ParseCsv("a,b\n\"1\"x,2\n").message(), "line 2: text after a closing quote");
  EXPECT_EQ(ColumnName("Mean Radius"), "mean_radius");
}

// ---- Columns on the wire and the ring ------------------------------------------------------

// A round of n patients with two columns and the safe threshold.
RoundParams WithColumns(size_t n) {
  return RoundParams{
      "hospital",      0, 1, Names(n), {{"bmi", 100, 800, 1}, {"delta", -5000, 5000, 2}}, {},
      SafeThreshold(n)};
}

// Columns and the weight travel in requests and phase updates and come back equal, negative
// bounds included.
TEST(ColumnsTest, RequestsAndPhaseUpdatesCarryColumnsAndWeight) {
  RoundParams p = WithColumns(3);
  p.hospital.clear();  // a request's hospital is its sender
  p.weight = {250, 1};
  const Request request{4, p, 0};
  auto back = Decode(Encode(request));
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<Request>(*back), request);
  PhaseUpdate u;
  u.phase = Phase::kOpen;
  u.params = WithColumns(2);
  auto phase = Decode(Encode(u));
  ASSERT_TRUE(phase.ok()) << phase.message();
  EXPECT_EQ(std::get<PhaseUpdate>(*phase).params, u.params);
  EXPECT_EQ(PayloadLength(u.params), 4u);  // 2 values, 2 counts
  p.weight = {250, 1};
  EXPECT_EQ(PayloadLength(p), 6u);  // 2 values, 2 counts, 2 weight sums
  p.length = 10;
  EXPECT_EQ(PayloadLength(p), 24u);
}

TEST(ColumnsTest, MalformedColumnsAreRefusedWithTheirReason) {
  auto refused = [](RoundParams p) {
    p.hospital.clear();
    return Decode(Encode(Request{1, p, 0})).message();
  };
  RoundParams twice = WithColumns(2);
  twice.columns[1].name = "bmi";
  EXPECT_EQ(refused(twice), "request: duplicate column name \"bmi\"");
  RoundParams bad_name = WithColumns(2);
  bad_name.columns[0].name = "BMI";
  EXPECT_EQ(refused(bad_name), "request: column 0: invalid name in name");
  RoundParams decimals = WithColumns(2);
  decimals.columns[1].decimals = 19;
  EXPECT_EQ(refused(decimals), "request: column 1: decimals must be at most 18");
  RoundParams weight = WithColumns(2);
  weight.weight.decimals = 19;
  EXPECT_EQ(refused(weight), "request: weight: decimals must be at most 18");
}

// Before any value moves: N patients' worst-case sums must fit the ring, per column.
TEST(ColumnsTest, ARoundWhoseSumCannotFitTheRingIsRefusedNamingTheColumn) {
  EXPECT_TRUE(CheckRoundParams(WithColumns(1000)).ok());
  RoundParams bp = WithColumns(1000);
  constexpr int64_t k1e16 = 10000000000000000;
  bp.columns = {{"bmi", 100, 800, 1}, {"bp", 40 * k1e16, 200 * k1e16, 16}};
  const Status s = CheckRoundParams(bp);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(),
            "column bp: 1000 patients x 160.0000000000000000 does not fit the ring: the "
            "worst-case sum is 86.7 times 2^64-1");
  // The largest width that fits for 1000 patients is floor((2^64-1) / 1000) units.
  bp.columns[1].upper = bp.columns[1].lower + static_cast<int64_t>(UINT64_MAX / 1000);
  EXPECT_TRUE(CheckRoundParams(bp).ok());
  bp.columns[1].upper += 1;
  EXPECT_TRUE(Contains(CheckRoundParams(bp).message(), "column bp: 1000 patients x "));
  // Weighted: the width times the largest weight.
  RoundParams weighted = WithColumns(1000);
  weighted.weight = {UINT64_MAX / 1000 / 10000, 0};  // delta is 10000 units wide
  EXPECT_TRUE(CheckRoundParams(weighted).ok());
  weighted.weight.max += 1;
  EXPECT_TRUE(Contains(CheckRoundParams(weighted).message(),
                       "column delta: 1000 patients x 100.00 x weight 1844674407371 does not fit "
                       "the ring: the worst-case sum exceeds 2^64-1"));

  RoundParams inverted = WithColumns(3);
  inverted.columns[0].lower = 900;
  EXPECT_EQ(CheckRoundParams(inverted).message(),
            "column bmi: lower bound 90.0 is above upper bound 80.0");
  RoundParams ranged = WithColumns(3);
  ranged.range = 5;
  EXPECT_EQ(CheckRoundParams(ranged).message(),
            "a round with columns has no range (each column has its bounds)");
  EXPECT_EQ(CheckRoundParams(RoundParams{"h", UINT64_MAX / 3 + 1, 1, Names(3)}).message(),
            "range too large: the sum of 3 inputs could exceed 2^64-1");
}

// A round with columns is held to the threshold like any other, once its columns fit the ring
// (a column that does not fit is named first: it is the round's first problem).
TEST(ColumnsTest, ARoundWithColumnsIsRefusedForAThresholdOutsideTheSafeRange) {
  RoundParams p = WithColumns(10);
  ASSERT_TRUE(CheckRoundParams(p).ok()) << CheckRoundParams(p).message();
  p.threshold = 6;
  EXPECT_EQ(CheckRoundParams(p).message(),
            "threshold 6 is below the safe minimum 7 for 10 patients");
  p.threshold = 11;
  EXPECT_EQ(CheckRoundParams(p).message(), "threshold 11 is above the 10 patients");
  p.threshold = 0;
  EXPECT_EQ(CheckRoundParams(p).message(),
            "threshold 0 is below the safe minimum 7 for 10 patients");
  p.columns[0].lower = 900;
  EXPECT_EQ(CheckRoundParams(p).message(),
            "column bmi: lower bound 90.0 is above upper bound 80.0");
  // The threshold travels with the columns in requests and phase updates.
  p = WithColumns(10);
  p.threshold = 9;
  PhaseUpdate u;
  u.params = p;
  auto back = Decode(Encode(u));
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<PhaseUpdate>(*back).params.threshold, 9u);
}

// ---- Results lines with columns ------------------------------------------------------------

TEST(ColumnsTest, ResultLinesWithColumnsRoundTripAndNullMeansStay) {
  RoundResult r;
  r.round[0] = 7;
  r.params.participants = {"alice", "bob"};
  r.params.columns = {Column{"bmi"}, Column{"delta"}};
  r.columns = {ColumnResult{"bmi", 2, "", {"64.2"}, {"32.100"}},
               ColumnResult{"delta", 0, "", {"0.00"}, {std::nullopt}}};
  r.elapsed_ms = 2.5;
  const std::string line = ResultJson(r);
  EXPECT_EQ(line,
            "{\"round\": \"07000000000000000000000000000000\", \"columns\": [{\"name\": "
            "\"bmi\", \"count\": 2, \"sum\": \"64.2\", \"mean\": \"32.100\"}, {\"name\": "
            "\"delta\", \"count\": 0, \"sum\": \"0.00\", \"mean\": null}], "
            "\"participants\": [\"alice\", \"bob\"], \"dropped\": [], \"in_range\": true, "
            "\"elapsed_ms\": 2.500}");
  auto back = ParseResultsLine(line);
  ASSERT_TRUE(back.ok()) << back.message();
  ASSERT_TRUE(back->result);
  EXPECT_EQ(back->result->columns, r.columns);
  EXPECT_TRUE(back->result->aggregate.empty());

  // Vector columns and weights.
  r.columns = {ColumnResult{"update", 2, "3.5", {"-1.25", "0.50"}, {"-0.357", std::nullopt}}};
  r.params.columns = {Column{"update"}};
  back = ParseResultsLine(ResultJson(r));
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(back->result->columns, r.columns);
  EXPECT_EQ(back->result->params.length, 2u);

  // The survivors' sums name who dropped out; a line without "dropped" is refused.
  r.params.participants = {"alice", "bob", "carol"};
  r.dropped = {"carol"};
  const std::string dropped = ResultJson(r);
  EXPECT_TRUE(Contains(dropped,
                       "\"participants\": [\"alice\", \"bob\", \"carol\"], \"dropped\": "
                       "[\"carol\"], \"in_range\": true"))
      << dropped;
  back = ParseResultsLine(dropped);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(back->result->dropped, std::vector<std::string>{"carol"});
  EXPECT_EQ(back->result->columns, r.columns);
  std::string without = dropped;
  without.erase(without.find("\"dropped\""), std::string("\"dropped\": [\"carol\"], ").size());
  EXPECT_EQ(ParseResultsLine(without).message(), "no \"dropped\"");

  for (const std::string& bad :
       {std::string("{\"round\": \"07000000000000000000000000000000\", \"columns\": [1], "
                    "\"participants\": [], \"dropped\": [], \"in_range\": true, \"elapsed_ms\": "
                    "1}"),
        std::string("{\"round\": \"07000000000000000000000000000000\", \"columns\": [{\"name\": "
                    "\"a\", \"count\": 1, \"sum\": \"x\", \"mean\": null}], \"participants\": "
                    "[], \"dropped\": [], \"in_range\": true, \"elapsed_ms\": 1}")})
    EXPECT_FALSE(ParseResultsLine(bad).ok()) << bad;
}

}  // namespace
}  // namespace tally
