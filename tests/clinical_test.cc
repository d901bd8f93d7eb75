// Real clinical values with real processes: a round over a public clinical data set (300
// patients of the Wisconsin diagnostic breast cancer data, 30 real-valued columns: see
// tests/data/README.md), every column's sum checked against the exact decimal sum this test
// computes from the file; missing cells and means; and refusals that abort a round naming the
// patient, the column and the reason.
#include <gtest/gtest.h>
#include <sodium.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "schema/csv.h"
#include "schema/decimal.h"
#include "schema/results.h"
#include "schema/text.h"
#include "tests/contains.h"
#include "tests/support.h"
#include "tools/cluster.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;
const fs::path kData = fs::path(TALLY_SOURCE_DIR) / "tests" / "data" / "wdbc-300.csv";

// Per column of a CSV file: the exact sum of its cells (at the most decimals any cell has) and
// how many cells are not empty. Independent of the code under test but for decimal.h.
struct ExactColumn {
  Int128 units = 0;
  uint32_t decimals = 0;
  uint64_t count = 0;
};
std::map<std::string, ExactColumn> ExactSums(const std::string& csv) {
  auto rows = ParseCsv(csv);
  EXPECT_TRUE(rows.ok()) << rows.message();
  std::map<std::string, ExactColumn> out;
  if (!rows.ok()) return out;
  const CsvRow& header = (*rows)[0];
  for (size_t c = 0; c < header.size(); ++c) {
    ExactColumn& e = out[header[c]];
    std::vector<Decimal> cells;
    for (size_t r = 1; r < rows->size(); ++r) {
      if ((*rows)[r][c].empty()) continue;
      cells.push_back(ParseDecimal((*rows)[r][c]).value());
      e.decimals = std::max(e.decimals, cells.back().decimals);
    }
    for (const Decimal& d : cells) e.units += ToUnits(d, e.decimals).value();
    e.count = cells.size();
  }
  return out;
}

class ClinicalTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }

  // tally-launch --inputs FILE --json (then `extra`): its one JSON line's columns, as a results
  // line reads them; who dropped out in dropped_.
  std::vector<ColumnResult> Launch(const fs::path& file,
                                   const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--inputs", file.string(), "--json", "--workdir",
                                     (dir_.path() / "run").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const Cluster::Output o =
        cluster_.RunTool("tools/tally-launch", args, std::chrono::seconds(240));
    EXPECT_EQ(o.code, 0) << o.out << o.err;
    // The launch line carries expected_sum and match beside each column; the columns' own
    // fields are those of a results line.
    auto line = ParseResultsLine(ReadText(dir_.path() / "run" / "results.jsonl"));
    EXPECT_TRUE(line.ok() && line->result) << line.message();
    EXPECT_TRUE(Contains(o.out, "\"match\": true}\n")) << o.out;
    dropped_ = line.ok() && line->result ? line->result->dropped : std::vector<std::string>{"?"};
    return line.ok() && line->result ? line->result->columns : std::vector<ColumnResult>{};
  }

  TempDir dir_;
  Cluster cluster_{kBin, dir_.path(), dir_.path()};
  std::vector<std::string> dropped_;
};

// 300 patients, one process each, 31 columns of real measurements with 1 to 6 decimals: every
// sum is the exact decimal sum, every count 300, every mean the sum over the count.
TEST_F(ClinicalTest, ARoundOverRealClinicalDataGivesEveryColumnsExactSum) {
  if (kSanitized) GTEST_SKIP() << "300 processes under AddressSanitizer: the normal build runs it";
  const std::string csv = ReadText(kData);
  ASSERT_FALSE(csv.empty()) << kData;
  const auto exact = ExactSums(csv);
  ASSERT_EQ(exact.size(), 31u);
  const std::vector<ColumnResult> columns = Launch(kData);
  ASSERT_EQ(columns.size(), 31u);
  EXPECT_EQ(dropped_, std::vector<std::string>{});
  for (const ColumnResult& c : columns) {
    ASSERT_TRUE(exact.count(c.name)) << c.name;
    const ExactColumn& e = exact.at(c.name);
    EXPECT_EQ(c.count, 300u) << c.name;
    EXPECT_EQ(c.sum, std::vector<std::string>{FormatUnits(e.units, e.decimals)}) << c.name;
    EXPECT_EQ(c.mean[0], FormatRatio(e.units, UInt128(300) * Pow10(e.decimals), e.decimals + 3))
        << c.name;
  }
  // Spot checks against figures written out by hand from the file.
  EXPECT_EQ(columns[0].name, "mean_radius");
  EXPECT_EQ(columns[0].sum[0], "4332.886");
  EXPECT_EQ(columns[30].name, "benign");
  EXPECT_EQ(columns[30].sum[0], "154");
  EXPECT_EQ(columns[30].mean[0], "0.513");
}

// Missing cells leave a column's count and sum alone: its mean is over the values given.
TEST_F(ClinicalTest, MissingCellsCountNowhereAndMeansAreOverTheValuesGiven) {
  const fs::path file = dir_.path() / "cohort.csv";
  std::ofstream(file) << "name,bmi,delta,glucose\n"
                         "alice,32.1,-12.34,4.8598\n"
                         "bob,25,0.5,\n"
                         "carol,39.2,,5.1\n";
  const auto columns = Launch(file);
  ASSERT_EQ(columns.size(), 3u);
  EXPECT_EQ(dropped_, std::vector<std::string>{});
  EXPECT_EQ(columns[0], (ColumnResult{"bmi", 3, "", {"96.3"}, {"32.1000"}}));
  EXPECT_EQ(columns[1], (ColumnResult{"delta", 2, "", {"-11.84"}, {"-5.92000"}}));
  EXPECT_EQ(columns[2], (ColumnResult{"glucose", 2, "", {"9.9598"}, {"4.9799000"}}));

  // The hospital's audit of the capture decodes the same columns and matches its results file.
  const fs::path run = dir_.path() / "run";
  ASSERT_EQ(std::distance(fs::directory_iterator(run / "captures"), fs::directory_iterator()), 1);
  const fs::path capture = fs::directory_iterator(run / "captures")->path();
  const Cluster::Output audit =
      cluster_.RunTool("tools/tally-replay",
                       {capture.string(), "--keys", (run / "keys").string(), "--as", "hospital",
                        "--results", (run / "results.jsonl").string()},
                       kWait);
  EXPECT_EQ(audit.code, 0) << audit.out << audit.err;
  EXPECT_TRUE(Contains(audit.out, "  column delta: count 2, sum -11.84, mean -5.92000\n"));
  EXPECT_TRUE(Contains(audit.out, "matches results file "));
  const Cluster::Output timeline =
      cluster_.RunTool("tools/tally-replay", {capture.string()}, kWait);
  // Bounds derived from the data, powers of ten: -12.34 .. 0.5 gives [-100, 1].
  EXPECT_TRUE(Contains(timeline.out, "  column delta [-100.00, 1.00]\n")) << timeline.out;
}

// A patient killed after sharing (tools/launch --drop, at the mask phase) leaves every column:
// its count, its sum and its mean are over the survivors' cells only, the results line names it
// as dropped, and the hospital's audit of the capture agrees.
TEST_F(ClinicalTest, ADroppedPatientsCellsAreInNoColumnAndTheResultNamesIt) {
  const fs::path file = dir_.path() / "cohort.csv";
  std::ofstream(file) << "name,bmi,delta\n"
                         "alice,32.1,-12.34\n"
                         "bob,25,0.5\n"
                         "carol,39.2,\n"
                         "dave,71.7,3.25\n";
  // Four patients: the default threshold 3 lets one drop out.
  const auto columns = Launch(file, {"--drop", "dave", "--drop-at", "mask"});
  ASSERT_EQ(columns.size(), 2u);
  EXPECT_EQ(dropped_, std::vector<std::string>{"dave"});
  EXPECT_EQ(columns[0], (ColumnResult{"bmi", 3, "", {"96.3"}, {"32.1000"}}));
  EXPECT_EQ(columns[1], (ColumnResult{"delta", 2, "", {"-11.84"}, {"-5.92000"}}));
  const fs::path run = dir_.path() / "run";
  const fs::path capture = fs::directory_iterator(run / "captures")->path();
  const Cluster::Output audit =
      cluster_.RunTool("tools/tally-replay",
                       {capture.string(), "--keys", (run / "keys").string(), "--as", "hospital",
                        "--results", (run / "results.jsonl").string()},
                       kWait);
  EXPECT_EQ(audit.code, 0) << audit.out << audit.err;
  EXPECT_TRUE(Contains(audit.out, "; dropped: dave\n")) << audit.out;
  EXPECT_TRUE(Contains(audit.out, "  column bmi: count 3, sum 96.3, mean 32.1000\n")) << audit.out;
  EXPECT_TRUE(Contains(audit.out, "matches results file ")) << audit.out;
}

// A cell with more decimals than the round allows is refused by its patient before anything
// leaves it: the round aborts naming the patient, the column and the reason, never the value,
// and no result is written.
TEST_F(ClinicalTest, ACellWithTooManyDecimalsAbortsTheRoundNamingPatientColumnAndReason) {
  MakeKeys(dir_.path(), {"alice", "bob"});
  ASSERT_TRUE(cluster_.StartBroker().ok());
  std::ofstream(dir_.path() / "alice.csv") << "bmi,glucose\n32.1,4.12345\n";
  std::ofstream(dir_.path() / "bob.csv") << "glucose,bmi\n5.5,25.0\n";
  std::vector<Child> patients;
  for (const std::string name : {"alice", "bob"}) {
    auto c =
        cluster_.SpawnNode(name, {"--once", "--input", (dir_.path() / (name + ".csv")).string()});
    ASSERT_TRUE(c.ok()) << c.message();
    patients.push_back(std::move(c.value()));
  }
  for (auto& p : patients) ASSERT_TRUE(Cluster::AwaitReady(p, kWait).ok());
  const fs::path results = dir_.path() / "results.jsonl";
  auto hospital = cluster_.SpawnNode("hospital", {"--bounds", "bmi=10.0:80.0,glucose=0.00:30.00",
                                                  "--json", "--results", results.string()});
  ASSERT_TRUE(hospital.ok()) << hospital.message();
  EXPECT_EQ(hospital->Wait(kWait), 1);
  const std::string why =
      "alice refused the round: column glucose: has 5 decimals, the round "
      "allows 2";
  EXPECT_TRUE(Contains(LastLine(cluster_.LogOf("hospital")), why))
      << LastLine(cluster_.LogOf("hospital"));
  EXPECT_EQ(ReadText(results), "");
  EXPECT_EQ(patients[0].Wait(kWait), 1);
  EXPECT_FALSE(Contains(ReadText(cluster_.LogOf("alice")), "4.12345"));
  EXPECT_FALSE(Contains(ReadText(cluster_.LogOf("hospital")), "4.12345"));
}

// A round whose worst-case sum cannot fit the ring is refused by the hospital before it asks for
// it, naming the column and by how much.
TEST_F(ClinicalTest, ARoundThatCannotFitTheRingIsRefusedBeforeAnyValueMoves) {
  MakeKeys(dir_.path(), {"alice", "bob"});
  ASSERT_TRUE(cluster_.StartBroker().ok());
  auto hospital =
      cluster_.SpawnNode("hospital", {"--bounds", "bp=-90:90", "--decimals", "17", "--results",
                                      (dir_.path() / "results.jsonl").string()});
  ASSERT_TRUE(hospital.ok());
  EXPECT_EQ(hospital->Wait(kWait), 2);
  EXPECT_TRUE(Contains(LastLine(cluster_.LogOf("hospital")),
                       "column bp: 2 patients x 180.00000000000000000 does not fit the ring: "
                       "the worst-case sum is 1.95 times 2^64-1"))
      << LastLine(cluster_.LogOf("hospital"));
  EXPECT_FALSE(Contains(ReadText(cluster_.LogOf("broker")), "round-open"));
}

}  // namespace
}  // namespace tally::test
