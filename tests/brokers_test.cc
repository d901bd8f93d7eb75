// Several brokers at once (README, "More than one broker"): `tally-bench --brokers 2 --patients
// 3` runs two cohorts, each a complete round with its own broker, key folder and hospital
// process under the one hospital key, and adds their sums. The combined sum must be the exact
// sum of the inputs it handed out, recomputed here, and each cohort's own results file must hold
// its part of it. Every wait is bounded (Cluster::RunTool).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "schema/results.h"
#include "tests/support.h"
#include "tools/cluster.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;

// Patient g (0-based over every cohort) is handed (g * 7919) mod 1001, as tally-bench's warm
// rounds are.
uint64_t InputOf(uint64_t g) { return g * 7919 % 1001; }

TEST(BrokersTest, TwoBrokersWithACohortEachGiveTheExactGlobalSum) {
  TempDir dir;
  const Cluster tools(kBin, dir.path(), dir.path());  // its stderr in the folder itself
  const Cluster::Output o = tools.RunTool("tools/tally-bench",
                                          {"--workdir", dir.path().string(), "--brokers", "2",
                                           "--patients", "3", "--rounds", "2", "--json"},
                                          std::chrono::seconds(120));
  ASSERT_EQ(o.code, 0) << o.out << o.err;

  uint64_t expected = 0, first = 0, second = 0;
  for (uint64_t g = 0; g < 6; ++g) (g < 3 ? first : second) += InputOf(g);
  expected = first + second;
  const std::vector<std::string> lines = Lines(o.out);
  ASSERT_EQ(lines.size(), 3u) << o.out;  // two rounds and the summary
  const std::regex round(
      "\\{\"brokers\": 2, \"patients_per_broker\": 3, \"round\": [12], .*\"combined\": "
      "([0-9]+), \"expected\": ([0-9]+), \"exact\": true, .*");
  for (size_t i = 0; i < 2; ++i) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(lines[i], m, round)) << lines[i];
    EXPECT_EQ(m[1].str(), std::to_string(expected));
    EXPECT_EQ(m[2].str(), std::to_string(expected));
  }
  EXPECT_NE(lines[2].find("\"exact\": true"), std::string::npos) << lines[2];

  // Each cohort's hospital wrote its own results: two rounds of its own part of the sum.
  const uint64_t parts[] = {first, second};
  for (int c = 0; c < 2; ++c) {
    const fs::path folder = dir.path() / "brokers" / "2x3" / ("cohort-" + std::to_string(c + 1));
    const std::vector<std::string> results = Lines(ReadText(folder / "results.jsonl"));
    ASSERT_EQ(results.size(), 2u) << folder;
    for (const auto& line : results) {
      auto parsed = ParseResultsLine(line);
      ASSERT_TRUE(parsed.ok() && parsed->result) << line;
      EXPECT_EQ(parsed->result->aggregate, std::vector<uint64_t>{parts[c]}) << line;
      EXPECT_EQ(parsed->result->params.participants.size(), 3u) << line;
    }
    // Its broker's roster is its cohort: the hospital, its broker and its three patients.
    size_t certificates = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(folder / "keys" / "public"))
      ++certificates;
    EXPECT_EQ(certificates, 5u) << folder;
  }
}

}  // namespace
}  // namespace tally::test
