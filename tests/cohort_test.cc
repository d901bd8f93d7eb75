// Regression (found trying a clinical cohort's size): `tools/launch --patients 442`, one process
// per patient, failed: 103 patients never joined (a handshake slowed down by the burst was
// taken for a refused key) and the hospital waited out its idle timeout. A cohort of 442, and
// one of 1000 (the protocol's most), completes with the exact sum, with default deadlines.
// Label "soak": tools/test runs these only with TALLY_SOAK=ON (CI does), since each takes tens of
// seconds on two cores.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/contains.h"
#include "tests/support.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;

void LaunchCohort(size_t patients) {
  TempDir dir;
  auto launch = Child::Spawn(
      {(kBin / "tools/tally-launch").string(), "--bin-dir", kBin.string(), "--workdir",
       (dir.path() / "run").string(), "--patients", std::to_string(patients), "--json"},
      dir.path() / "launch.log");
  ASSERT_TRUE(launch.ok()) << launch.message();
  auto line = launch->ReadLine(std::chrono::minutes(5));
  ASSERT_TRUE(line) << LastLine(dir.path() / "launch.log");
  EXPECT_TRUE(Contains(*line, "\"match\": true")) << *line;
  // Every patient took part, the last named p442 (or p1000).
  EXPECT_TRUE(Contains(*line, "\"p" + std::to_string(patients) + "\"]")) << *line;
  EXPECT_EQ(launch->Wait(std::chrono::minutes(1)), 0) << LastLine(dir.path() / "launch.log");
}

TEST(CohortTest, LaunchOf442PatientsGivesTheExactSum) { LaunchCohort(442); }

TEST(CohortTest, LaunchOf1000PatientsGivesTheExactSum) { LaunchCohort(1000); }

}  // namespace
}  // namespace tally::test
