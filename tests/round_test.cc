// Whole rounds with real processes: tally-broker, tally-node patients and hospital, and
// tally-launch, on loopback with ephemeral ports. Values are random; aggregates are checked
// exactly.
#include <gtest/gtest.h>
#include <sodium.h>

#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <random>

#include "nodes/seal.h"
#include "schema/capture.h"
#include "tests/support.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;

std::string Str(uint64_t v) { return std::to_string(v); }

std::vector<uint64_t> Numbers(const std::string& json, const std::string& key) {
  std::vector<uint64_t> out;
  auto at = json.find("\"" + key + "\": ");
  if (at == std::string::npos) return out;
  size_t i = at + key.size() + 4;
  bool array = json[i] == '[';
  if (array) ++i;
  while (i < json.size() && std::isdigit(static_cast<unsigned char>(json[i]))) {
    size_t end = json.find_first_not_of("0123456789", i);
    out.push_back(std::stoull(json.substr(i, end - i)));
    if (!array || json[end] != ',') break;
    i = end + 2;
  }
  return out;
}

class RoundTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }

  void Keys(const std::vector<std::string>& patients) { keys_ = MakeKeys(dir_.path(), patients); }

  void StartBroker(uint32_t deadline_ms = 10000) {
    auto b = Child::Spawn({(kBin / "broker/tally-broker").string(), "--keys", keys_.string(),
                           "--router", "tcp://127.0.0.1:*", "--phases", "tcp://127.0.0.1:*",
                           "--captures", (dir_.path() / "captures").string(), "--deadline-ms",
                           Str(deadline_ms)},
                          dir_.path() / "broker.log");
    ASSERT_TRUE(b.ok()) << b.message();
    broker_.emplace(std::move(b.value()));
    auto endpoints = ReadBrokerEndpoints(*broker_);
    ASSERT_TRUE(endpoints) << "broker did not come up";
    router_ = endpoints->router;
    phases_ = endpoints->phases;
  }

  Child Patient(const std::string& name, const std::vector<uint64_t>& input, bool once = false,
                bool merge = false) {
    std::vector<std::string> args = {(kBin / "nodes/tally-node").string(), "--keys", keys_.string(),
                                     "--name", name, "--router", router_, "--phases", phases_};
    if (input.size() == 1) {
      args.insert(args.end(), {"--value", Str(input[0])});
    } else {
      fs::path file = dir_.path() / (name + ".input");
      std::ofstream out(file);
      for (uint64_t v : input) out << v << "\n";
      args.insert(args.end(), {"--input", file.string()});
    }
    if (once) args.push_back("--once");
    auto c = merge ? Child::Spawn(args, {}, true) : Child::Spawn(args, dir_.path() / (name + ".log"));
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  Child Hospital(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {(kBin / "nodes/tally-node").string(), "--keys", keys_.string(),
                                     "--name", "hospital", "--router", router_, "--phases", phases_,
                                     "--json", "--results", results_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto c = Child::Spawn(args, dir_.path() / "hospital.log");
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  std::vector<uint64_t> Random(size_t n, uint64_t range) {
    std::vector<uint64_t> v(n);
    for (auto& x : v) x = randombytes_uniform(static_cast<uint32_t>(range + 1));
    return v;
  }

  // Runs `rounds` rounds with serving patients holding random inputs; checks each aggregate.
  void RunRounds(size_t patients, size_t length, int rounds) {
    std::vector<std::string> names;
    for (size_t i = 0; i < patients; ++i) names.push_back("p" + Str(i));
    Keys(names);
    StartBroker();
    std::vector<uint64_t> expected(length, 0);
    std::vector<Child> nodes;
    for (const auto& n : names) {
      auto input = Random(length, 1000);
      for (size_t e = 0; e < length; ++e) expected[e] += input[e];
      nodes.push_back(Patient(n, input));
    }
    auto hospital = Hospital({"--range", Str(1000 * patients), "--length", Str(length),
                              "--rounds", Str(rounds)});
    std::set<std::string> ids;
    for (int k = 0; k < rounds; ++k) {
      auto line = hospital.ReadLine(std::chrono::milliseconds(60000));
      ASSERT_TRUE(line) << "round " << k << ": " << LastLine(dir_.path() / "hospital.log");
      EXPECT_EQ(Numbers(*line, "aggregate"), expected) << "round " << k;
      EXPECT_NE(line->find("\"in_range\": true"), std::string::npos);
      ids.insert(line->substr(line->find("\"round\": \"") + 10, 32));
    }
    EXPECT_EQ(hospital.Wait(kWait), 0);
    EXPECT_EQ(ids.size(), static_cast<size_t>(rounds));  // fresh round ids
    // Durable results: one line per round, the same aggregates.
    std::ifstream in(results_);
    std::string line;
    int lines = 0;
    while (std::getline(in, line)) {
      EXPECT_EQ(Numbers(line, "aggregate"), expected);
      ++lines;
    }
    EXPECT_EQ(lines, rounds);
    for (auto& n : nodes) EXPECT_EQ(n.Stop(), 0);  // serving patients exit 0 on SIGTERM
    EXPECT_EQ(broker_->Stop(), 0);
  }

  std::vector<uint8_t> ReadFile(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }

  TempDir dir_;
  fs::path keys_;
  fs::path results_ = dir_.path() / "results.jsonl";
  std::optional<Child> broker_;
  std::string router_, phases_;
};

TEST_F(RoundTest, ThreePatientsScalarSeveralRoundsOnOneBroker) { RunRounds(3, 1, 4); }

TEST_F(RoundTest, TwentyPatientsScalar) { RunRounds(20, 1, 2); }

TEST_F(RoundTest, ThreePatientsVectorsOfTenThousand) { RunRounds(3, 10000, 2); }

TEST_F(RoundTest, InputOutOfRangeAbortsNamingThePatientAndWritesNoResult) {
  Keys({"alice", "bob"});
  StartBroker();
  auto alice = Patient("alice", {10}, true);
  auto bob = Patient("bob", {5000}, true);
  auto hospital = Hospital({"--range", "1000"});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_NE(LastLine(dir_.path() / "hospital.log").find("aborted: bob refused the round: input outside [0, 1000]"),
            std::string::npos)
      << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(bob.Wait(kWait), 1);
  alice.Stop();  // alice may have subscribed only after the round ended: nothing to do
  EXPECT_FALSE(fs::exists(results_));
  // The refusal names the problem, never the value.
  auto bob_log = ReadFile(dir_.path() / "bob.log");
  EXPECT_EQ(std::string(bob_log.begin(), bob_log.end()).find("5000"), std::string::npos);
}

TEST_F(RoundTest, InputOfWrongLengthAbortsNamingThePatient) {
  Keys({"alice", "bob"});
  StartBroker();
  auto alice = Patient("alice", {1, 2, 3, 4}, true);
  auto bob = Patient("bob", {1, 2, 3}, true);
  auto hospital = Hospital({"--range", "1000", "--length", "4"});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_NE(LastLine(dir_.path() / "hospital.log")
                .find("bob refused the round: input has 3 elements, the round asks for 4"),
            std::string::npos)
      << LastLine(dir_.path() / "hospital.log");
  EXPECT_FALSE(fs::exists(results_));
}

TEST_F(RoundTest, PatientRefusesRoundsSmallerThanItsMinimum) {
  Keys({"alice", "bob"});
  StartBroker();
  auto alice = Patient("alice", {10}, true);
  auto bob = Child::Spawn({(kBin / "nodes/tally-node").string(), "--keys", keys_.string(), "--name",
                           "bob", "--router", router_, "--phases", phases_, "--value", "20",
                           "--once", "--min-patients", "3"},
                          dir_.path() / "bob.log");
  ASSERT_TRUE(bob.ok());
  auto hospital = Hospital({"--range", "1000"});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_NE(LastLine(dir_.path() / "hospital.log")
                .find("bob refused the round: the round has 2 patients, fewer than this "
                      "patient's minimum of 3"),
            std::string::npos)
      << LastLine(dir_.path() / "hospital.log");
  EXPECT_FALSE(fs::exists(results_));
  alice.Stop();
}

// dave is played by the test: it joins late, so the test knows charlie has joined and can kill
// it between its join and its shares.
TEST_F(RoundTest, PatientKilledMidRoundAbortsNamingItThenBrokerServesNextRound) {
  Keys({"alice", "bob", "charlie", "dave"});
  StartBroker(2000);
  auto alice = Patient("alice", {1});
  auto bob = Patient("bob", {2});
  auto charlie = Patient("charlie", {3}, false, /*merge=*/true);
  TestParty dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital({"--range", "1000", "--participants", "alice,bob,charlie,dave"});
  auto open = dave.WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  for (;;) {  // charlie says when it has joined
    auto line = charlie.ReadLine(kWait);
    ASSERT_TRUE(line) << "charlie never joined";
    if (line->find("event=join") != std::string::npos) break;
  }
  charlie.Signal(SIGKILL);
  EXPECT_EQ(charlie.Wait(kWait), 128 + SIGKILL);
  dave.Send(Join{open->round});
  auto abort = dave.WaitPhase(Phase::kAbort, open->round);
  ASSERT_TRUE(abort);
  EXPECT_NE(abort->reason.find("charlie"), std::string::npos) << abort->reason;
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_FALSE(fs::exists(results_));

  auto next = Hospital({"--range", "1000", "--participants", "alice,bob"});
  auto line = next.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(Numbers(*line, "aggregate"), std::vector<uint64_t>{3});
  EXPECT_EQ(next.Wait(kWait), 0);
}

// dave is played by the test and opens what real patients send it: shares look uniform and
// differ from the inputs; the hospital receives only sealed partials; the capture holds no
// input or partial sum.
TEST_F(RoundTest, SharesLookUniformAndNoPlaintextReachesTheBroker) {
  constexpr uint32_t kLength = 10000;
  Keys({"alice", "bob", "dave"});
  StartBroker();
  auto inputs = std::map<std::string, std::vector<uint64_t>>{
      {"alice", Random(kLength, 1000)}, {"bob", Random(kLength, 1000)}, {"dave", Random(kLength, 1000)}};
  auto alice = Patient("alice", inputs["alice"], true);
  auto bob = Patient("bob", inputs["bob"], true);
  auto roster = LoadRoster(keys_).value();
  auto sealer = Sealer::Create(LoadSecret(keys_, "dave").value(), roster).value();
  TestParty dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital({"--range", "3000", "--length", Str(kLength)});
  auto open = dave.WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  dave.Send(Join{open->round});
  ASSERT_TRUE(dave.WaitPhase(Phase::kShare, open->round));

  // dave's own shares: the same additive scheme.
  std::vector<uint64_t> sum = inputs["dave"];
  for (const std::string to : {"alice", "bob"}) {
    std::vector<uint64_t> share(kLength);
    randombytes_buf(share.data(), kLength * 8);
    for (size_t e = 0; e < kLength; ++e) sum[e] -= share[e];
    auto sealed = sealer.Seal({open->round, EnvelopeKind::kShare, "dave", to},
                              EncodePayload(EnvelopeKind::kShare, share));
    dave.Send(Envelope{EnvelopeKind::kShare, open->round, "dave", to, sealed.value()});
  }
  for (int k = 0; k < 2; ++k) {
    auto m = dave.Receive();
    ASSERT_TRUE(m && std::holds_alternative<Envelope>(*m));
    const auto& env = std::get<Envelope>(*m);
    auto plain = sealer.Open({open->round, env.kind, env.from, "dave"}, env.sealed);
    ASSERT_TRUE(plain.ok()) << plain.message();
    auto share = DecodePayload(plain.value(), EnvelopeKind::kShare, kLength).value();
    size_t small = 0, ones = 0;
    for (size_t e = 0; e < kLength; ++e) {
      small += share[e] <= 3000;
      ones += __builtin_popcountll(share[e]);
      sum[e] += share[e];
    }
    EXPECT_EQ(small, 0u) << "shares from " << env.from << " look like inputs";
    EXPECT_NE(share, inputs[env.from]);
    // Uniform bits: 640,000 of them; half are ones within 1% (over 15 standard deviations).
    EXPECT_NEAR(static_cast<double>(ones) / (kLength * 64.0), 0.5, 0.01) << env.from;
  }
  auto sealed = sealer.Seal({open->round, EnvelopeKind::kPartial, "dave", "hospital"},
                            EncodePayload(EnvelopeKind::kPartial, sum));
  dave.Send(Envelope{EnvelopeKind::kPartial, open->round, "dave", "hospital", sealed.value()});

  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  std::vector<uint64_t> expected(kLength);
  for (size_t e = 0; e < kLength; ++e)
    expected[e] = inputs["alice"][e] + inputs["bob"][e] + inputs["dave"][e];
  EXPECT_EQ(Numbers(*line, "aggregate"), expected);
  EXPECT_EQ(hospital.Wait(kWait), 0);
  EXPECT_EQ(alice.Wait(kWait), 0);
  EXPECT_EQ(bob.Wait(kWait), 0);

  auto path = dir_.path() / "captures" / (RoundHex(open->round) + ".tcap");
  auto capture = ReadCaptureFile(path).value();
  ASSERT_TRUE(capture.ok()) << capture.error;
  size_t to_hospital = 0;
  for (const auto& r : capture.records) {
    auto* e = std::get_if<CaptureEnvelope>(&r);
    if (!e) continue;
    auto env = std::get<Envelope>(Decode(e->frame).value());
    if (env.to == "hospital") {
      ++to_hospital;
      EXPECT_EQ(env.kind, EnvelopeKind::kPartial);
    } else {
      EXPECT_EQ(env.kind, EnvelopeKind::kShare);
    }
  }
  EXPECT_EQ(to_hospital, 3u);
  auto bytes = ReadFile(path);
  auto contains = [&](const std::vector<uint64_t>& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    std::vector<uint8_t> needle(p, p + 64);  // the first 8 elements, as they would be encoded
    return std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end()) != bytes.end();
  };
  for (const auto& [name, input] : inputs) EXPECT_FALSE(contains(input)) << name;
  EXPECT_FALSE(contains(sum));
  EXPECT_FALSE(contains(expected));
}

TEST_F(RoundTest, LaunchJsonEndToEnd) {
  auto launch = Child::Spawn({(kBin / "tools/tally-launch").string(), "--bin-dir", kBin.string(),
                              "--workdir", (dir_.path() / "run").string(), "--values",
                              "725,100,31", "--json"},
                             dir_.path() / "launch.log");
  ASSERT_TRUE(launch.ok());
  auto line = launch->ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(line) << LastLine(dir_.path() / "launch.log");
  EXPECT_EQ(Numbers(*line, "aggregate"), std::vector<uint64_t>{856});
  EXPECT_EQ(Numbers(*line, "expected"), std::vector<uint64_t>{856});
  EXPECT_NE(line->find("\"participants\": [\"alice\", \"bob\", \"charlie\"]"), std::string::npos);
  EXPECT_NE(line->find("\"match\": true"), std::string::npos);
  EXPECT_EQ(Numbers(*line, "elapsed_ms").size(), 1u);
  EXPECT_EQ(launch->Wait(kWait), 0);

  // Again with random inputs in the same work dir (keys are reused) and vectors.
  auto again = Child::Spawn({(kBin / "tools/tally-launch").string(), "--bin-dir", kBin.string(),
                             "--workdir", (dir_.path() / "run").string(), "--length", "50",
                             "--json"},
                            dir_.path() / "launch.log");
  auto second = again->ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(second);
  EXPECT_EQ(Numbers(*second, "aggregate"), Numbers(*second, "expected"));
  EXPECT_EQ(Numbers(*second, "aggregate").size(), 50u);
  EXPECT_EQ(again->Wait(kWait), 0);
}

TEST_F(RoundTest, LaunchExplainsAFailedRound) {
  // launch hands out what it is told; an input over the range makes bob refuse the round.
  auto failing = Child::Spawn({(kBin / "tools/tally-launch").string(), "--bin-dir", kBin.string(),
                               "--workdir", (dir_.path() / "run").string(), "--values", "1,5000",
                               "--names", "alice,bob", "--range", "1000", "--json"},
                              dir_.path() / "launch.log");
  ASSERT_TRUE(failing.ok());
  auto line = failing->ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(line);
  EXPECT_NE(line->find("\"error\": \"the round failed:"), std::string::npos) << *line;
  EXPECT_NE(line->find("bob refused the round: input outside [0, 1000]"), std::string::npos) << *line;
  EXPECT_EQ(failing->Wait(kWait), 1);
}

}  // namespace
}  // namespace tally::test
