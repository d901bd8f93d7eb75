// tally-bench --load: generator processes hosting real patients (the node library's Link and
// patient role, each with its own keys and CURVE connections) against a real broker and a real
// hospital process. 20 patients, 2 rounds, the last 2 vanishing at each mask phase (they close
// their connections and come back for the next round): each round's aggregate is the exact sum
// over the 18 others, and the hospital names the 2 as dropped.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/contains.h"
#include "tests/support.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;

// tally-bench --load 20 --rounds 2 --drop 2 --json with `extra` arguments, in `dir`: its stdout
// lines, once it has exited 0 (a test failure otherwise).
std::vector<std::string> RunLoad20(const TempDir& dir, const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {(kBin / "tools/tally-bench").string(),
                                   "--bin-dir",
                                   kBin.string(),
                                   "--workdir",
                                   (dir.path() / "work").string(),
                                   "--load",
                                   "20",
                                   "--rounds",
                                   "2",
                                   "--drop",
                                   "2",
                                   "--json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto bench = Child::Spawn(argv, dir.path() / "bench.err");
  EXPECT_TRUE(bench.ok()) << bench.message();
  if (!bench.ok()) return {};
  const std::string out = bench->ReadAll(std::chrono::seconds(120));
  EXPECT_EQ(bench->Wait(std::chrono::seconds(30)), 0) << out << ReadText(dir.path() / "bench.err");
  return Lines(out);
}

TEST(LoadTest, TwentyHostedPatientsRunTwoRoundsWithTwoVanishingAndTheSumIsExact) {
  TempDir dir;
  const auto lines = RunLoad20(dir, {});
  ASSERT_EQ(lines.size(), 3u) << ::testing::PrintToString(lines);
  EXPECT_TRUE(Contains(lines[0], "{\"load\": 20, \"admission_ms\": ")) << lines[0];
  for (int k = 1; k <= 2; ++k) {
    EXPECT_TRUE(Contains(lines[k], "\"round\": " + std::to_string(k))) << lines[k];
    EXPECT_TRUE(Contains(lines[k], "\"survivors\": 18, \"dropped\": 2, \"exact\": true"))
        << lines[k];
  }
  // The vanishers really left: the broker saw their connections close, each round.
  const std::string broker = ReadText(dir.path() / "work/load-20/logs/broker.log");
  EXPECT_GE(CountOf(broker, "event=disconnected party=p19"), 2u) << broker;
  EXPECT_GE(CountOf(broker, "event=disconnected party=p20"), 2u) << broker;
}

// Beyond a process's limits the patients are split over generator processes: two here, p1..p10
// and p11..p20, the vanishers in the second. The sums and the dropped sets are as in one.
TEST(LoadTest, TwoGeneratorProcessesHostTwentyPatientsBetweenThemAndTheSumIsExact) {
  TempDir dir;
  const auto lines = RunLoad20(dir, {"--load-processes", "2"});
  ASSERT_EQ(lines.size(), 3u) << ::testing::PrintToString(lines);
  EXPECT_TRUE(Contains(lines[0], "\"generators\": 2,")) << lines[0];
  for (int k = 1; k <= 2; ++k)
    EXPECT_TRUE(Contains(lines[k], "\"survivors\": 18, \"dropped\": 2, \"exact\": true"))
        << lines[k];
  // Each generator hosted its own slice: p01 logs in the first, p11 and p20 in the second.
  const fs::path logs = dir.path() / "work/load-20/logs";
  EXPECT_TRUE(Contains(ReadText(logs / "generator-1.log"), "node p01 ")) << logs;
  EXPECT_FALSE(Contains(ReadText(logs / "generator-1.log"), "node p11 ")) << logs;
  EXPECT_TRUE(Contains(ReadText(logs / "generator-2.log"), "node p11 ")) << logs;
  EXPECT_TRUE(Contains(ReadText(logs / "generator-2.log"), "node p20 ")) << logs;
}

}  // namespace
}  // namespace tally::test
