// Soak: 1,000 consecutive rounds on one tally-broker with 10 serving tally-node patients and
// one hospital process (--rounds 1001: one more than sampled). Every aggregate is checked exactly,
// with nobody dropped; the broker's resident memory and open file descriptors are sampled after
// round 10 and after round 1,000 and must not grow; each patient sends two envelopes per round (its
// masked input and its unmask), every one routed but for unmasks that come after the hospital
// acknowledged with T of them. Not in the default quick suite (ctest label "soak"; TALLY_SOAK=ON
// tools/test runs it, and CI does).
#include <gtest/gtest.h>
#include <sodium.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "tests/support.h"
#include "tools/cluster.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;
constexpr int kRounds = 1000;
constexpr int kPatients = 10;
constexpr int kWarmup = 10;  // the first sample, once allocators and caches have settled
// The hospital runs one round more than the samples need, so both samples are taken in the
// same state: the hospital connected and the next round in flight (its capture may be open).
constexpr int kHospitalRounds = kRounds + 1;

std::string Str(uint64_t v) { return std::to_string(v); }

// VmRSS of a live process in KiB (0 if unreadable).
uint64_t RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + Str(static_cast<uint64_t>(pid)) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      uint64_t kib = 0;
      fields >> kib;
      return kib;
    }
  }
  return 0;
}

size_t OpenFds(pid_t pid) {
  std::error_code ec;
  size_t n = 0;
  for (fs::directory_iterator it("/proc/" + Str(static_cast<uint64_t>(pid)) + "/fd", ec), end;
       !ec && it != end; it.increment(ec))
    ++n;
  return n;
}

TEST(SoakTest, ThousandRoundsTenPatientsOneBrokerStableMemoryAndFds) {
  ASSERT_GE(sodium_init(), 0);
  TempDir dir;
  std::vector<std::string> names;
  for (int i = 0; i < kPatients; ++i) names.push_back("p" + Str(static_cast<uint64_t>(i)));
  MakeKeys(dir.path(), names);
  const fs::path captures = dir.path() / "captures";
  const fs::path results = dir.path() / "results.jsonl";

  Cluster cluster(kBin, dir.path(), dir.path());  // keys, captures, and the logs in dir
  const Status started = cluster.StartBroker();
  ASSERT_TRUE(started.ok()) << started.message();
  Child& broker = cluster.broker();

  uint64_t expected = 0;
  std::vector<Child> patients;
  for (const auto& name : names) {
    const uint64_t value = randombytes_uniform(1001);
    expected += value;
    auto c = cluster.SpawnNode(name, {"--value", Str(value)});
    ASSERT_TRUE(c.ok()) << c.message();
    patients.push_back(std::move(c.value()));
  }

  const auto start = std::chrono::steady_clock::now();
  auto h = cluster.SpawnNode("hospital", {"--json", "--results", results.string(), "--range",
                                          Str(1000 * kPatients), "--rounds", Str(kHospitalRounds)});
  ASSERT_TRUE(h.ok()) << h.message();
  Child hospital = std::move(h.value());

  std::set<std::string> rounds;
  uint64_t rss_start = 0, rss_end = 0;
  size_t fds_start = 0, fds_end = 0;
  std::chrono::milliseconds elapsed{0};
  for (int k = 1; k <= kHospitalRounds; ++k) {
    auto line = hospital.ReadLine(std::chrono::milliseconds(60000));
    ASSERT_TRUE(line) << "round " << k << ": " << LastLine(dir.path() / "hospital.log");
    ASSERT_EQ(ScalarAggregate(*line), expected) << "round " << k << ": " << *line;
    ASSERT_NE(line->find("\"in_range\": true"), std::string::npos) << *line;
    ASSERT_NE(line->find("\"dropped\": [], "), std::string::npos) << *line;
    rounds.insert(line->substr(line->find("\"round\": \"") + 10, 32));
    if (k == kWarmup) {
      rss_start = RssKiB(broker.pid());
      fds_start = OpenFds(broker.pid());
    } else if (k == kRounds) {
      elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      ASSERT_TRUE(broker.running());
      rss_end = RssKiB(broker.pid());
      fds_end = OpenFds(broker.pid());
    }
  }
  EXPECT_EQ(hospital.Wait(kWait), 0);

  std::cout << "soak: " << kRounds << " rounds, " << kPatients << " patients, " << elapsed.count()
            << " ms (" << elapsed.count() / kRounds << " ms/round)\n"
            << "soak: broker RSS after round " << kWarmup << " " << rss_start
            << " KiB, after round " << kRounds << " " << rss_end << " KiB\n"
            << "soak: broker open fds after round " << kWarmup << " " << fds_start
            << ", after round " << kRounds << " " << fds_end << std::endl;
  ::testing::Test::RecordProperty("rounds", kRounds);
  ::testing::Test::RecordProperty("wall_ms", static_cast<int>(elapsed.count()));
  ::testing::Test::RecordProperty("rss_start_kib", static_cast<int>(rss_start));
  ::testing::Test::RecordProperty("rss_end_kib", static_cast<int>(rss_end));
  ::testing::Test::RecordProperty("fds_start", static_cast<int>(fds_start));
  ::testing::Test::RecordProperty("fds_end", static_cast<int>(fds_end));

  EXPECT_EQ(rounds.size(), static_cast<size_t>(kHospitalRounds));  // a fresh id every round
  ASSERT_GT(rss_start, 0u);
  // Bounded growth: under 20% or 4 MiB, whichever is larger.
  const uint64_t allowed = std::max<uint64_t>(rss_start / 5, 4096);
  EXPECT_LE(rss_end, rss_start + allowed)
      << "broker RSS grew from " << rss_start << " to " << rss_end << " KiB";
  EXPECT_LE(fds_end, fds_start + 2) << "fd growth: " << fds_start << " -> " << fds_end;
  EXPECT_GE(fds_end + 2, fds_start);

  // Durable results: one line per round, every aggregate right; one capture per round.
  std::ifstream in(results);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    EXPECT_EQ(ScalarAggregate(line), expected) << line;
    ++lines;
  }
  EXPECT_EQ(lines, kHospitalRounds);
  // Every capture is whole: tally-replay --check passes on each.
  size_t capture_files = 0, checked_ok = 0;
  for (const auto& entry : fs::directory_iterator(captures)) {
    ++capture_files;
    const Cluster::Output check =
        cluster.RunTool("tools/tally-replay", {entry.path().string(), "--check"}, kWait);
    const bool ok = check.code == 0;
    EXPECT_TRUE(ok) << entry.path() << ":\n" << check.out << check.err;
    checked_ok += ok;
  }
  EXPECT_EQ(capture_files, static_cast<size_t>(kHospitalRounds));
  EXPECT_EQ(checked_ok, static_cast<size_t>(kHospitalRounds));
  // The broker routed every patient's masked input and at least T = 7 unmasks per round; an
  // unmask that came after the hospital acknowledged (the round done) is refused as for a round
  // that is not active, and nothing else is refused.
  for (auto& c : patients) EXPECT_EQ(c.Stop(), 0);
  EXPECT_EQ(cluster.StopBroker(), 0);
  const std::string last = LastLine(dir.path() / "broker.log");
  const std::string stop_needle = "event=exit status=0 reason=\"stopped by SIGTERM\" routed=";
  ASSERT_NE(last.find(stop_needle), std::string::npos) << last;
  const std::string counts = last.substr(last.find(stop_needle) + stop_needle.size());
  const uint64_t routed = std::stoull(counts);
  const uint64_t rejected = std::stoull(counts.substr(counts.find(" rejected=") + 10));
  const uint64_t sent = uint64_t{2} * kPatients * kHospitalRounds;
  EXPECT_EQ(routed + rejected, sent) << last;
  EXPECT_GE(routed, uint64_t{kPatients + 7} * kHospitalRounds) << last;
  const std::string log = ReadText(dir.path() / "broker.log");
  EXPECT_EQ(CountOf(log, "event=reject "), rejected);
  EXPECT_EQ(CountOf(log, "reason=\"envelope for a round that is not active\""), rejected);
  std::cout << "soak: the broker routed " << routed << " envelopes and refused " << rejected
            << " late unmasks" << std::endl;
}

}  // namespace
}  // namespace tally::test
