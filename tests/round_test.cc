// Whole rounds with real processes: tally-broker, tally-node patients and hospital, and
// tally-launch, on loopback with ephemeral ports. Values are random; aggregates are checked
// exactly. Where a test plays a patient itself (TestPatient), it joins with a fresh nonce and
// sends its input plus its pairwise masks, sealed to the hospital, as tally-node does.
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>

#include "nodes/seal.h"
#include "schema/capture.h"
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

std::string Str(uint64_t v) { return std::to_string(v); }

std::string RoundOf(const std::string& json) {
  auto at = json.find("\"round\": \"");
  return at == std::string::npos ? "" : json.substr(at + 10, 32);
}

// The numbers of `"key": N` or `"key": [a, b, ...]` in tally-launch's JSON line; a number
// above 2^53 is a quoted string there.
std::vector<uint64_t> Numbers(const std::string& json, const std::string& key) {
  std::vector<uint64_t> out;
  auto at = json.find("\"" + key + "\": ");
  if (at == std::string::npos) return out;
  size_t i = at + key.size() + 4;
  bool array = json[i] == '[';
  if (array) ++i;
  for (;;) {
    const bool quoted = i < json.size() && json[i] == '"';
    if (quoted) ++i;
    if (i >= json.size() || !std::isdigit(static_cast<unsigned char>(json[i]))) break;
    size_t end = json.find_first_not_of("0123456789", i);
    out.push_back(std::stoull(json.substr(i, end - i)));
    if (quoted) ++end;
    if (!array || json[end] != ',') break;
    i = end + 2;
  }
  return out;
}

// The aggregate of a hospital's result line, read with the results file's own parser.
std::vector<uint64_t> AggregateOf(const std::string& line) {
  auto parsed = ParseResultsLine(line);
  EXPECT_TRUE(parsed.ok() && parsed->result) << parsed.message() << ": " << line;
  return parsed.ok() && parsed->result ? parsed->result->aggregate : std::vector<uint64_t>{};
}

class RoundTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }

  void Keys(const std::vector<std::string>& patients) { keys_ = MakeKeys(dir_.path(), patients); }

  void StartBroker(uint32_t deadline_ms = 10000) {
    Status started = cluster_.StartBroker({"--deadline-ms", Str(deadline_ms)});
    ASSERT_TRUE(started.ok()) << started.message();
  }

  Child Patient(const std::string& name, const std::vector<uint64_t>& input, bool once = false,
                bool merge = false, std::vector<std::string> args = {}) {
    if (input.size() == 1) {
      args.insert(args.end(), {"--value", Str(input[0])});
    } else {
      fs::path file = dir_.path() / (name + ".input");
      std::ofstream out(file);
      for (uint64_t v : input) out << v << "\n";
      args.insert(args.end(), {"--input", file.string()});
    }
    if (once) args.push_back("--once");
    auto c = cluster_.SpawnNode(name, args, "", merge);
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  Child Hospital(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--json", "--results", results_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto c = cluster_.SpawnNode("hospital", args);
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
    auto hospital = Hospital(
        {"--range", Str(1000 * patients), "--length", Str(length), "--rounds", Str(rounds)});
    std::set<std::string> ids;
    for (int k = 0; k < rounds; ++k) {
      auto line = hospital.ReadLine(std::chrono::milliseconds(60000));
      ASSERT_TRUE(line) << "round " << k << ": " << LastLine(dir_.path() / "hospital.log");
      EXPECT_EQ(AggregateOf(*line), expected) << "round " << k;
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
      EXPECT_EQ(AggregateOf(line), expected);
      ++lines;
    }
    EXPECT_EQ(lines, rounds);
    for (auto& n : nodes) EXPECT_EQ(n.Stop(), 0);  // serving patients exit 0 on SIGTERM
    EXPECT_EQ(cluster_.StopBroker(), 0);
  }

  TempDir dir_;
  Cluster cluster_{kBin, dir_.path(), dir_.path()};  // logs in dir_ itself
  fs::path keys_;
  fs::path results_ = dir_.path() / "results.jsonl";
  // The running broker's endpoints (updated by each StartBroker).
  const std::string& router_ = cluster_.endpoints().router;
  const std::string& phases_ = cluster_.endpoints().phases;
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
  EXPECT_NE(LastLine(dir_.path() / "hospital.log")
                .find("aborted: bob refused the round: input outside [0, 1000]"),
            std::string::npos)
      << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(bob.Wait(kWait), 1);
  alice.Stop();  // alice may have subscribed only after the round ended: nothing to do
  EXPECT_EQ(ReadText(results_), "");  // created at start, no result in it
  // The refusal names the problem, never the value.
  auto bob_log = ReadBytes(dir_.path() / "bob.log");
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
  EXPECT_EQ(ReadText(results_), "");  // created at start, no result in it
}

TEST_F(RoundTest, PatientRefusesRoundsSmallerThanItsMinimum) {
  Keys({"alice", "bob"});
  StartBroker();
  auto alice = Patient("alice", {10}, true);
  auto bob = Patient("bob", {20}, true, false, {"--min-patients", "3"});
  auto hospital = Hospital({"--range", "1000"});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_NE(LastLine(dir_.path() / "hospital.log")
                .find("bob refused the round: the round has 2 patients, fewer than this "
                      "patient's minimum of 3"),
            std::string::npos)
      << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(ReadText(results_), "");  // created at start, no result in it
  alice.Stop();
}

// dave is played by the test: it joins late, so the test knows charlie has joined (or tried
// to) and can kill it before its partial. charlie logs its join as it hands the message to
// ZeroMQ, so the kill may or may not beat the join out of the process: if the broker got it,
// the sum phase opens and the deadline names charlie's partial; if not, it names charlie's
// join. Either way the abort names charlie alone, exactly.
TEST_F(RoundTest, PatientKilledMidRoundAbortsNamingItThenBrokerServesNextRound) {
  Keys({"alice", "bob", "charlie", "dave"});
  StartBroker(2000);
  auto alice = Patient("alice", {1});
  auto bob = Patient("bob", {2});
  auto charlie = Patient("charlie", {3}, false, /*merge=*/true);
  TestPatient dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital({"--range", "1000", "--participants", "alice,bob,charlie,dave"});
  auto open = dave.party().WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  for (;;) {  // charlie says when it has joined
    auto line = charlie.ReadLine(kWait);
    ASSERT_TRUE(line) << "charlie never joined";
    if (line->find("event=join") != std::string::npos) break;
  }
  charlie.Signal(SIGKILL);
  EXPECT_EQ(charlie.Wait(kWait), 128 + SIGKILL);
  dave.Join(open->round);
  auto next = dave.party().WaitPhaseIn({Phase::kSum, Phase::kAbort}, open->round);
  ASSERT_TRUE(next);
  std::string reason = "charlie did not join";
  if (next->phase == Phase::kSum) {
    dave.SendMasked(*next, {4});
    reason = "partial from charlie not sent";
    next = dave.party().WaitPhase(Phase::kAbort, open->round);
    ASSERT_TRUE(next);
  }
  EXPECT_EQ(next->reason, reason);
  RecordProperty("abort_reason", reason);  // which of the two the run saw
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_NE(LastLine(dir_.path() / "hospital.log").find("aborted: " + reason), std::string::npos)
      << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(ReadText(results_), "");  // created at start, no result in it

  auto again = Hospital({"--range", "1000", "--participants", "alice,bob"});
  auto line = again.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(AggregateOf(*line), std::vector<uint64_t>{3});
  EXPECT_EQ(again.Wait(kWait), 0);
}

// dave is played by the test. What every patient sent is read back from the broker's capture
// and opened with the hospital's key under the round's view: each masked input looks uniform
// and unrelated to its input; only the sum of all of them is the aggregate. The capture holds
// no input, masked input or aggregate in the clear.
TEST_F(RoundTest, MaskedInputsLookUniformAndNoPlaintextReachesTheBroker) {
  constexpr uint32_t kLength = 10000;
  Keys({"alice", "bob", "dave"});
  StartBroker();
  auto inputs = std::map<std::string, std::vector<uint64_t>>{{"alice", Random(kLength, 1000)},
                                                             {"bob", Random(kLength, 1000)},
                                                             {"dave", Random(kLength, 1000)}};
  auto alice = Patient("alice", inputs["alice"], true);
  auto bob = Patient("bob", inputs["bob"], true);
  TestPatient dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital({"--range", "3000", "--length", Str(kLength)});
  auto open = dave.party().WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  ASSERT_EQ(open->params.participants, (std::vector<std::string>{"alice", "bob", "dave"}));
  dave.Join(open->round);
  auto sum = dave.party().WaitPhase(Phase::kSum, open->round);
  ASSERT_TRUE(sum);
  ASSERT_EQ(sum->nonces.size(), 3u);
  EXPECT_EQ(sum->nonces[2], dave.nonce());
  auto sent = dave.SendMasked(*sum, inputs["dave"]);

  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  std::vector<uint64_t> expected(kLength);
  for (size_t e = 0; e < kLength; ++e)
    expected[e] = inputs["alice"][e] + inputs["bob"][e] + inputs["dave"][e];
  EXPECT_EQ(AggregateOf(*line), expected);
  EXPECT_EQ(hospital.Wait(kWait), 0);
  EXPECT_EQ(alice.Wait(kWait), 0);
  EXPECT_EQ(bob.Wait(kWait), 0);

  auto path = dir_.path() / "captures" / (RoundHex(open->round) + ".tcap");
  auto capture = ReadCaptureFile(path).value();
  ASSERT_TRUE(capture.ok()) << capture.error;
  const Sealer hospital_sealer = MakeSealer(keys_, "hospital");
  std::map<std::string, std::vector<uint64_t>> masked;
  for (const auto& r : capture.records) {
    auto* e = std::get_if<CaptureEnvelope>(&r);
    if (!e) continue;
    auto env = std::get<Envelope>(Decode(e->frame).value());
    EXPECT_EQ(env.kind, EnvelopeKind::kPartial);
    EXPECT_EQ(env.to, "hospital");
    auto values = OpenPartial(hospital_sealer, env, View(hospital_sealer, *sum), kLength);
    ASSERT_TRUE(values.ok()) << env.from << ": " << values.message();
    EXPECT_TRUE(masked.emplace(env.from, values.value()).second)
        << "two partials from " << env.from;
  }
  ASSERT_EQ(masked.size(), 3u);  // one envelope per patient, nothing else
  EXPECT_EQ(masked["dave"], sent.masked);
  std::vector<uint64_t> total(kLength, 0);
  for (const auto& [from, v] : masked) {
    size_t small = 0, equal = 0, ones = 0;
    for (size_t e = 0; e < kLength; ++e) {
      small += v[e] <= 3000;
      equal += v[e] == inputs[from][e];
      ones += __builtin_popcountll(v[e]);
      total[e] += v[e];
    }
    EXPECT_EQ(small, 0u) << from << "'s masked input looks like an input";
    EXPECT_EQ(equal, 0u) << from;
    // Uniform bits: 640,000 of them; half are ones within 1% (over 15 standard deviations).
    EXPECT_NEAR(static_cast<double>(ones) / (kLength * 64.0), 0.5, 0.01) << from;
  }
  EXPECT_EQ(total, expected);  // the masks cancel, mod 2^64

  auto bytes = ReadBytes(path);
  auto contains = [&](const std::vector<uint64_t>& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    std::vector<uint8_t> needle(p, p + 64);  // the first 8 elements, as they would be encoded
    return std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end()) != bytes.end();
  };
  for (const auto& [name, input] : inputs) EXPECT_FALSE(contains(input)) << name;
  for (const auto& [name, v] : masked) EXPECT_FALSE(contains(v)) << name << "'s masked input";
  EXPECT_FALSE(contains(expected));
}

// dave, played by the test, masks his input correctly but seals it under a view of the round
// computed from altered nonces — what a patient that saw another sum phase (or whose roster
// holds another key) would do. The broker cannot tell and routes it; the hospital cannot open
// it, and since the broker routes one partial per patient the round can never complete: the
// hospital refuses it at once with the exact reason, writes no result, and the round aborts
// naming it. No aggregate, right or wrong, is ever reported.
TEST_F(RoundTest, APartialSealedUnderAnotherViewIsNotOpenedAndTheRoundAbortsWithoutAResult) {
  Keys({"alice", "bob", "dave"});
  StartBroker(1500);
  auto alice = Patient("alice", {10}, true);
  auto bob = Patient("bob", {20}, true);
  TestPatient dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital({"--range", "1000"});
  auto open = dave.party().WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  dave.Join(open->round);
  auto sum = dave.party().WaitPhase(Phase::kSum, open->round);
  ASSERT_TRUE(sum);
  PhaseUpdate altered = *sum;
  altered.nonces[0][0] ^= 0x01;  // one bit of alice's nonce
  const Sealer hospital_sealer = MakeSealer(keys_, "hospital");
  ASSERT_NE(View(hospital_sealer, altered), View(hospital_sealer, *sum));
  auto sent = dave.SendMasked(*sum, {30}, View(dave.sealer(), altered));
  // The hospital's own key opens it only under the view it was sealed with, not the round's.
  ASSERT_TRUE(OpenPartial(hospital_sealer, sent.envelope, View(hospital_sealer, altered), 1).ok());
  ASSERT_FALSE(OpenPartial(hospital_sealer, sent.envelope, View(hospital_sealer, *sum), 1).ok());

  const std::string why =
      "cannot open partial from dave: authentication failed under hospital's view of the round";
  auto abort = dave.party().WaitPhase(Phase::kAbort, open->round);
  ASSERT_TRUE(abort);
  EXPECT_EQ(abort->reason, "hospital refused the round: " + why);
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_EQ(alice.Wait(kWait), 1);
  EXPECT_EQ(bob.Wait(kWait), 1);
  EXPECT_EQ(ReadText(results_), "");  // created at start, no result in it
  const std::string log = ReadText(dir_.path() / "hospital.log");
  // Nothing rejected quietly: the hospital refuses the round once, naming dave's partial.
  EXPECT_EQ(CountOf(log, "event=reject "), 0u) << log;
  EXPECT_EQ(CountOf(log, "node hospital event=refuse round=" + RoundHex(open->round) +
                             " reason=" + Quote(why)),
            1u)
      << log;
  EXPECT_EQ(CountOf(log, "\"aggregate\""), 0u);
  EXPECT_EQ(CountOf(LastLine(dir_.path() / "hospital.log"),
                    "node hospital event=exit status=1 reason=" +
                        Quote("refused round " + RoundHex(open->round) + ": " + why)),
            1u)
      << LastLine(dir_.path() / "hospital.log");

  auto capture =
      ReadCaptureFile(dir_.path() / "captures" / (RoundHex(open->round) + ".tcap")).value();
  ASSERT_TRUE(capture.ok()) << capture.error;
  auto* trailer = std::get_if<CaptureTrailer>(&capture.records.back());
  ASSERT_NE(trailer, nullptr);
  EXPECT_FALSE(trailer->done);
  EXPECT_EQ(trailer->reason, "hospital refused the round: " + why);
  // dave's was routed; alice's and bob's may or may not have been before the refusal came.
  EXPECT_GE(trailer->envelopes, 1u);
  EXPECT_LE(trailer->envelopes, 3u);
  EXPECT_EQ(trailer->rejected, 0u);
}

// Four real patients with vectors of 1,000 elements at the top of the range: the aggregate is
// exact element by element. Read back from the capture and opened with the hospital's key, the
// masked inputs are uniform 64-bit values whose plain sum overflows 2^64 for most elements;
// only taken mod 2^64 do the masks cancel, to exactly the sum of the inputs.
TEST_F(RoundTest, VectorAggregateIsExactAtTheRangeBoundAndWrappingMasksCancelExactly) {
  constexpr uint32_t kLength = 1000;
  const std::vector<std::string> names = {"p0", "p1", "p2", "p3"};
  const uint64_t range = UINT64_MAX / names.size();  // the largest the broker allows for four
  Keys(names);
  StartBroker();
  std::map<std::string, std::vector<uint64_t>> inputs;
  std::vector<uint64_t> expected(kLength, 0);
  std::vector<Child> patients;
  for (const auto& n : names) {
    auto& input = inputs[n];
    for (uint32_t e = 0; e < kLength; ++e)
      input.push_back(e % 10 == 0 ? range : range - randombytes_uniform(1000));
    for (uint32_t e = 0; e < kLength; ++e) expected[e] += input[e];
    patients.push_back(Patient(n, input, true));
  }
  for (uint32_t e = 0; e < kLength; e += 10) EXPECT_EQ(expected[e], 4 * range);  // no wrap
  auto hospital = Hospital({"--range", Str(range), "--length", Str(kLength)});
  auto line = hospital.ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(AggregateOf(*line), expected);
  // The aggregate of four inputs near the bound lies above it, and the result says so.
  EXPECT_NE(line->find("\"in_range\": false"), std::string::npos);
  EXPECT_EQ(hospital.Wait(kWait), 0);
  for (auto& p : patients) EXPECT_EQ(p.Wait(kWait), 0);

  // Rebuild the round's view from its capture: header, and the sum phase's nonces.
  const RoundId round = RoundFromHex(RoundOf(*line)).value();
  auto capture = ReadCaptureFile(dir_.path() / "captures" / (RoundHex(round) + ".tcap")).value();
  ASSERT_TRUE(capture.ok()) << capture.error;
  PhaseUpdate sum;
  std::vector<Envelope> envelopes;
  for (const auto& r : capture.records) {
    if (auto* h = std::get_if<CaptureHeader>(&r)) {
      sum.round = h->round;
      sum.params.hospital = h->params.hospital;
      sum.params.range = h->params.range;
      sum.params.length = h->params.length;
      sum.params.participants = h->params.participants;
    } else if (auto* ph = std::get_if<CapturePhase>(&r); ph && ph->phase == Phase::kSum) {
      sum.phase = Phase::kSum;
      sum.nonces = ph->nonces;
    } else if (auto* e = std::get_if<CaptureEnvelope>(&r)) {
      envelopes.push_back(std::get<Envelope>(Decode(e->frame).value()));
    }
  }
  ASSERT_EQ(sum.phase, Phase::kSum);
  ASSERT_EQ(sum.nonces.size(), names.size());
  ASSERT_EQ(envelopes.size(), names.size());
  const Sealer hospital_sealer = MakeSealer(keys_, "hospital");
  std::vector<uint64_t> total(kLength, 0);
  std::vector<int> wraps(kLength, 0);
  for (const auto& env : envelopes) {
    auto masked = OpenPartial(hospital_sealer, env, View(hospital_sealer, sum), kLength);
    ASSERT_TRUE(masked.ok()) << env.from << ": " << masked.message();
    size_t unmasked = 0;
    for (uint32_t e = 0; e < kLength; ++e) {
      unmasked += masked.value()[e] == inputs[env.from][e];
      const uint64_t before = total[e];
      total[e] += masked.value()[e];
      wraps[e] += total[e] < before;
    }
    EXPECT_EQ(unmasked, 0u) << env.from;
  }
  EXPECT_EQ(total, expected);
  // Three of the four masked inputs are independent uniform 64-bit values and the fourth is
  // whatever makes the sum come out mod 2^64; their plain sum stays below 2^64 only when the
  // first three add up to at most the (just under 2^64) aggregate: probability 1/6. So about
  // 833 of 1,000 elements overflow; 700 or fewer is over 11 standard deviations away.
  const auto wrapped = std::count_if(wraps.begin(), wraps.end(), [](int w) { return w > 0; });
  EXPECT_GT(wrapped, 700) << "masked inputs do not look uniform";
}

TEST_F(RoundTest, LaunchJsonEndToEnd) {
  auto launch =
      Child::Spawn({(kBin / "tools/tally-launch").string(), "--bin-dir", kBin.string(), "--workdir",
                    (dir_.path() / "run").string(), "--values", "725,100,31", "--json"},
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
  auto again =
      Child::Spawn({(kBin / "tools/tally-launch").string(), "--bin-dir", kBin.string(), "--workdir",
                    (dir_.path() / "run").string(), "--length", "50", "--json"},
                   dir_.path() / "launch.log");
  auto second = again->ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(second);
  EXPECT_EQ(Numbers(*second, "aggregate"), Numbers(*second, "expected"));
  EXPECT_EQ(Numbers(*second, "aggregate").size(), 50u);
  EXPECT_EQ(again->Wait(kWait), 0);
}

// Regression (found reading launch's JSON with jq 1.6): an aggregate above 2^53 was printed as
// a JSON number, which double-based readers show with other digits. It is a string, exact.
TEST_F(RoundTest, LaunchJsonWritesAggregatesAbove2To53AsExactStrings) {
  auto launch =
      Child::Spawn({(kBin / "tools/tally-launch").string(), "--bin-dir", kBin.string(), "--workdir",
                    (dir_.path() / "run").string(), "--values", "9007199254740993,2", "--names",
                    "alice,bob", "--range", "9007199254740993", "--json"},
                   dir_.path() / "launch.log");
  ASSERT_TRUE(launch.ok());
  auto line = launch->ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(line) << LastLine(dir_.path() / "launch.log");
  EXPECT_TRUE(Contains(*line,
                       "\"aggregate\": \"9007199254740995\", \"expected\": "
                       "\"9007199254740995\""))
      << *line;
  EXPECT_TRUE(Contains(*line, "\"match\": true")) << *line;
  EXPECT_EQ(launch->Wait(kWait), 0);
  // The hospital's results file holds it the same way, and its parser reads it back exactly.
  auto record = ParseResultsLine(ReadText(dir_.path() / "run" / "results.jsonl"));
  ASSERT_TRUE(record.ok() && record->result) << record.message();
  EXPECT_EQ(record->result->aggregate, std::vector<uint64_t>{9007199254740995u});
}

// Regression (found timing tools/launch): it ran nine dpkg-query calls (~100 ms) before every
// 30 ms round. With a build in place it asks for no package at all: a dpkg-query that records
// its calls is first on the PATH, and none is recorded.
TEST_F(RoundTest, ToolsLaunchQueriesNoPackageWhenTheBuildIsThere) {
  const fs::path shim = dir_.path() / "shim";
  const fs::path calls = dir_.path() / "dpkg-query-calls";
  fs::create_directories(shim);
  {
    std::ofstream script(shim / "dpkg-query");
    script << "#!/bin/sh\necho \"$@\" >> " << calls.string() << "\nexit 1\n";
  }
  fs::permissions(shim / "dpkg-query", fs::perms::owner_all);
  const std::string path = shim.string() + ":" + std::getenv("PATH");
  // Without the CI's build options in the environment, so the build folder is only checked.
  auto launch = Child::Spawn(
      {"/usr/bin/env", "-u", "TALLY_WERROR", "-u", "TALLY_SANITIZE", "TALLY_BUILD=" + kBin.string(),
       "PATH=" + path, "bash", std::string(TALLY_SOURCE_DIR) + "/tools/launch", "--workdir",
       (dir_.path() / "run").string(), "--json"},
      dir_.path() / "launch.log");
  ASSERT_TRUE(launch.ok());
  auto line = launch->ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(line) << ReadText(dir_.path() / "launch.log");
  EXPECT_TRUE(Contains(*line, "\"match\": true")) << *line;
  EXPECT_EQ(launch->Wait(kWait), 0);
  EXPECT_FALSE(fs::exists(calls)) << ReadText(calls);
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
  EXPECT_NE(line->find("bob refused the round: input outside [0, 1000]"), std::string::npos)
      << *line;
  EXPECT_EQ(failing->Wait(kWait), 1);
}

}  // namespace
}  // namespace tally::test
