// Whole rounds with real processes: tally-broker, tally-node patients and hospital, and
// tally-launch, on loopback with ephemeral ports. Values are random; aggregates are checked
// exactly. Where a test plays patients itself (TestPatient, PlayRound), each does the steps of
// tally-node (nodes/patient_round.h) one phase at a time, so that it can vanish at a phase: it
// stops acting with its connection still open, and the broker goes on at the phase's deadline
// with the threshold's worth of patients, or aborts naming who did not answer.
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>

#include "nodes/hospital_round.h"
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

std::string Csv(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

// The patients a hospital's result line names as dropped.
std::vector<std::string> DroppedOf(const std::string& line) {
  auto parsed = ParseResultsLine(line);
  EXPECT_TRUE(parsed.ok() && parsed->result) << parsed.message() << ": " << line;
  return parsed.ok() && parsed->result ? parsed->result->dropped : std::vector<std::string>{};
}

// What a round's capture holds: its parameters, its last sets, the keys batch the hospital got,
// the envelopes routed, and its trailer.
struct Captured {
  CaptureHeader header;
  RoundSets sets;
  std::optional<Batch> keys;
  std::vector<Envelope> partials, unmasks;
  std::optional<CaptureTrailer> trailer;
};

Captured ReadCaptured(const fs::path& path) {
  Captured c;
  auto capture = ReadCaptureFile(path);
  EXPECT_TRUE(capture.ok()) << capture.message();
  if (!capture.ok()) return c;
  EXPECT_TRUE(capture->ok()) << capture->error;
  for (const auto& r : capture->records) {
    if (auto* h = std::get_if<CaptureHeader>(&r)) {
      c.header = *h;
    } else if (auto* ph = std::get_if<CapturePhase>(&r)) {
      if (ph->phase != Phase::kAbort && ph->phase != Phase::kDone) c.sets = ph->sets;
    } else if (auto* f = std::get_if<CaptureFrame>(&r)) {
      auto m = Decode(f->frame);
      EXPECT_TRUE(m.ok()) << m.message();
      if (!m.ok()) continue;
      if (auto* b = std::get_if<Batch>(&m.value())) {
        EXPECT_EQ(b->kind, BatchKind::kKeys);
        c.keys = *b;
      } else if (auto* e = std::get_if<Envelope>(&m.value())) {
        EXPECT_EQ(e->to, "hospital");
        (e->kind == EnvelopeKind::kPartial ? c.partials : c.unmasks).push_back(*e);
      } else {
        ADD_FAILURE() << "a frame that is neither a keys batch nor an envelope";
      }
    } else if (auto* t = std::get_if<CaptureTrailer>(&r)) {
      c.trailer = *t;
    }
  }
  return c;
}

size_t IndexOf(const RoundParams& params, const std::string& name) {
  const auto& ps = params.participants;
  return static_cast<size_t>(std::find(ps.begin(), ps.end(), name) - ps.begin());
}

// The hospital's view of the captured round (from the keys batch it got).
ViewDigest ViewOf(const Captured& c, const Sealer& hospital) {
  HospitalRound h(hospital, c.header.round, c.header.params);
  Status learned = c.keys ? h.Learn(*c.keys, c.sets) : Status::Error("no keys batch");
  EXPECT_TRUE(learned.ok()) << learned.message();
  return learned.ok() ? h.view() : ViewDigest{};
}

// The aggregate the hospital's arithmetic gives from the captured round.
std::vector<uint64_t> Recompute(const Captured& c, const Sealer& hospital) {
  HospitalRound h(hospital, c.header.round, c.header.params);
  Status learned = c.keys ? h.Learn(*c.keys, c.sets) : Status::Error("no keys batch");
  EXPECT_TRUE(learned.ok()) << learned.message();
  if (!learned.ok()) return {};
  for (const auto& env : c.partials) {
    Status added = h.AddPartial(env, IndexOf(c.header.params, env.from));
    EXPECT_TRUE(added.ok()) << added.message();
  }
  for (const auto& env : c.unmasks) {
    auto kept = h.AddUnmask(env, IndexOf(c.header.params, env.from), c.sets);
    EXPECT_TRUE(kept.ok()) << kept.message();
  }
  EXPECT_TRUE(h.Ready(c.sets));
  if (!h.Ready(c.sets)) return {};
  auto sum = h.Aggregate(c.sets);
  EXPECT_TRUE(sum.ok()) << sum.message();
  return sum.ok() ? *sum : std::vector<uint64_t>{};
}

// The masked values in a partial, opened with the hospital's key under `view`.
Result<std::vector<uint64_t>> OpenMasked(const Sealer& hospital, const Envelope& env,
                                         const ViewDigest& view, uint32_t length) {
  auto plain =
      hospital.Open(Binding{env.round, EnvelopeKind::kPartial, env.from, env.to, view}, env.sealed);
  if (!plain.ok()) return plain.status();
  return DecodePayload(*plain, EnvelopeKind::kPartial, length);
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
      EXPECT_EQ(DroppedOf(*line), std::vector<std::string>{}) << "round " << k;
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

  // Plays `names` as TestPatients (inputs in order) with a real broker (short deadlines) and
  // hospital (`hospital_args` added); `vanish` as PlayRound has it. Returns the hospital's
  // result line (nullopt: none); `last` gets the round's last update the patients saw (its
  // unmask phase, or its abort), `hospital_exit` the hospital's exit code.
  std::optional<std::string> PlayWithVanishing(const std::vector<std::string>& names,
                                               const std::vector<uint64_t>& inputs,
                                               const std::map<std::string, Phase>& vanish,
                                               const std::vector<std::string>& hospital_args,
                                               PhaseUpdate* last, int* hospital_exit);
  static constexpr uint32_t kShortDeadlineMs = 1500;

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

// A patient of a round with a threshold killed (SIGKILL) once it says it joined: the broker
// sees its connection close and does not wait for it; the round goes on with the other three
// (4 patients, the default threshold 3) and the hospital's result is the exact sum over them,
// naming charlie as dropped. Whether the kill beat the join out of the process or not, charlie
// is not among the survivors. The broker then serves the next round.
TEST_F(RoundTest, PatientKilledMidRoundIsDroppedAndTheSumIsOverTheOthers) {
  Keys({"alice", "bob", "charlie", "dave"});
  StartBroker();
  auto alice = Patient("alice", {1});
  auto bob = Patient("bob", {2});
  auto charlie = Patient("charlie", {3}, false, /*merge=*/true);
  auto dave = Patient("dave", {4});
  auto hospital = Hospital({"--range", "1000", "--participants", "alice,bob,charlie,dave"});
  for (;;) {  // charlie says when it has joined
    auto line = charlie.ReadLine(kWait);
    ASSERT_TRUE(line) << "charlie never joined";
    if (line->find("event=join") != std::string::npos) break;
  }
  charlie.Signal(SIGKILL);
  EXPECT_EQ(charlie.Wait(kWait), 128 + SIGKILL);
  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(AggregateOf(*line), std::vector<uint64_t>{1 + 2 + 4});
  EXPECT_EQ(DroppedOf(*line), std::vector<std::string>{"charlie"});
  EXPECT_EQ(hospital.Wait(kWait), 0);

  auto again = Hospital({"--range", "1000", "--participants", "alice,bob"});
  line = again.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(AggregateOf(*line), std::vector<uint64_t>{3});
  EXPECT_EQ(DroppedOf(*line), std::vector<std::string>{});
  EXPECT_EQ(again.Wait(kWait), 0);
  for (Child* c : {&alice, &bob, &dave}) EXPECT_EQ(c->Stop(), 0);
}

// Patients played by the test with the real broker and a real hospital; `vanish` names who
// stops acting at which phase (its connection stays: the broker waits for it until the
// phase's deadline). Returns the hospital's result line, or nullopt when it printed none.
std::optional<std::string> RoundTest::PlayWithVanishing(
    const std::vector<std::string>& names, const std::vector<uint64_t>& inputs,
    const std::map<std::string, Phase>& vanish, const std::vector<std::string>& hospital_args,
    PhaseUpdate* last, int* hospital_exit) {
  Keys(names);
  StartBroker(kShortDeadlineMs);
  std::vector<std::unique_ptr<TestPatient>> owned;
  std::vector<TestPatient*> patients;
  for (const auto& n : names) {
    owned.push_back(std::make_unique<TestPatient>(keys_, n, router_, phases_));
    patients.push_back(owned.back().get());
  }
  std::vector<std::string> args = {"--range", "1000", "--participants", Csv(names)};
  args.insert(args.end(), hospital_args.begin(), hospital_args.end());
  auto hospital = Hospital(args);
  auto open = patients[0]->party().WaitPhase(Phase::kOpen);
  EXPECT_TRUE(open);
  if (!open) return std::nullopt;
  std::vector<std::vector<uint64_t>> in;
  for (uint64_t v : inputs) in.push_back({v});
  auto u = PlayRound(patients, *open, in, vanish, std::chrono::milliseconds(30000));
  EXPECT_TRUE(u) << "the round did not get to its unmask or its end";
  if (u && last) *last = *u;
  auto line = hospital.ReadLine(kWait);
  const std::optional<int> code = hospital.Wait(kWait);
  if (hospital_exit) *hospital_exit = code.value_or(-1);
  return line;
}

struct Vanishing {
  std::string name;
  std::map<std::string, Phase> vanish;
  uint64_t sum;                      // of the survivors' inputs
  std::vector<std::string> dropped;  // as the result names them
  bool confirm;                      // whether the round had a confirm phase
};

void PrintTo(const Vanishing& v, std::ostream* os) { *os << v.name; }

class RoundVanishTest : public RoundTest, public ::testing::WithParamInterface<Vanishing> {};

// Seven patients, the default threshold 5: up to two may vanish. Whoever vanishes at share
// never shared (no confirm phase, it is dropped); at mask, it shared but sent no masked input
// (a confirm phase; dropped); at confirm or unmask, its masked input is in and the other
// survivors' shares unmask it (not dropped). The hospital's result is the exact sum over U3.
TEST_P(RoundVanishTest, TheSumIsExactlyOverTheSurvivors) {
  const std::vector<std::string> names = {"p1", "p2", "p3", "p4", "p5", "p6", "p7"};
  const std::vector<uint64_t> inputs = {11, 22, 33, 44, 55, 66, 77};
  PhaseUpdate last;
  int code = -1;
  auto line = PlayWithVanishing(names, inputs, GetParam().vanish, {}, &last, &code);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(code, 0);
  EXPECT_EQ(last.phase, Phase::kUnmask);
  EXPECT_EQ(last.params.threshold, 5u);
  EXPECT_EQ(AggregateOf(*line), std::vector<uint64_t>{GetParam().sum});
  EXPECT_EQ(DroppedOf(*line), GetParam().dropped);
  EXPECT_EQ(!last.sets.confirmed.empty(), GetParam().confirm);
  EXPECT_TRUE(Contains(ReadText(results_), "\"aggregate\"")) << ReadText(results_);
}

INSTANTIATE_TEST_SUITE_P(
    Dropouts, RoundVanishTest,
    ::testing::Values(
        Vanishing{"None", {}, 308, {}, false},
        Vanishing{"OneAtShare", {{"p7", Phase::kShare}}, 231, {"p7"}, false},
        Vanishing{
            "TwoAtShare", {{"p1", Phase::kShare}, {"p7", Phase::kShare}}, 220, {"p1", "p7"}, false},
        Vanishing{"OneAtMask", {{"p3", Phase::kMask}}, 275, {"p3"}, true},
        Vanishing{
            "TwoAtMask", {{"p3", Phase::kMask}, {"p4", Phase::kMask}}, 231, {"p3", "p4"}, true},
        Vanishing{"OneAtShareOneAtMask",
                  {{"p2", Phase::kShare}, {"p6", Phase::kMask}},
                  220,
                  {"p2", "p6"},
                  true},
        Vanishing{"OneAtMaskOneAtConfirm",
                  {{"p5", Phase::kMask}, {"p6", Phase::kConfirm}},
                  253,
                  {"p5"},
                  true},
        Vanishing{"TwoAtUnmask", {{"p1", Phase::kUnmask}, {"p2", Phase::kUnmask}}, 308, {}, false}),
    [](const ::testing::TestParamInfo<Vanishing>& info) { return info.param.name; });

// --threshold 4 for 4 patients: no dropout tolerated. One vanishing at mask aborts the round at
// the mask deadline with the exact reason; the hospital exits 1 without a result.
TEST_F(RoundTest, AnExplicitThresholdOfAllPatientsAbortsOnOneDropout) {
  PhaseUpdate last;
  int code = -1;
  auto line = PlayWithVanishing({"alice", "bob", "carol", "dave"}, {1, 2, 3, 4},
                                {{"dave", Phase::kMask}}, {"--threshold", "4"}, &last, &code);
  EXPECT_FALSE(line) << *line;
  EXPECT_EQ(code, 1);
  EXPECT_EQ(last.params.threshold, 4u);
  ASSERT_EQ(last.phase, Phase::kAbort);
  const std::string reason = "dave did not send a masked input (3 of 4 did, the threshold is 4)";
  EXPECT_EQ(last.reason, reason);
  EXPECT_TRUE(Contains(LastLine(dir_.path() / "hospital.log"), "aborted: " + reason))
      << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(ReadText(results_), "");  // created at start, no result in it
}

// --threshold 3 for 4 patients (what the default would give too): one vanishing at share is
// tolerated, the result is over the other three.
TEST_F(RoundTest, AnExplicitThresholdToleratesItsDropouts) {
  PhaseUpdate last;
  auto line = PlayWithVanishing({"alice", "bob", "carol", "dave"}, {1, 2, 3, 4},
                                {{"bob", Phase::kShare}}, {"--threshold", "3"}, &last, nullptr);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(last.params.threshold, 3u);
  EXPECT_EQ(AggregateOf(*line), std::vector<uint64_t>{1 + 3 + 4});
  EXPECT_EQ(DroppedOf(*line), std::vector<std::string>{"bob"});
}

// The default threshold for 3 patients is 3: one vanishing at share aborts at the deadline.
TEST_F(RoundTest, TheDefaultThresholdOfThreePatientsToleratesNoDropout) {
  PhaseUpdate last;
  int code = -1;
  auto line = PlayWithVanishing({"alice", "bob", "carol"}, {1, 2, 3}, {{"carol", Phase::kShare}},
                                {}, &last, &code);
  EXPECT_FALSE(line);
  EXPECT_EQ(code, 1);
  EXPECT_EQ(last.params.threshold, 3u);
  ASSERT_EQ(last.phase, Phase::kAbort);
  EXPECT_EQ(last.reason, "carol did not send shares (2 of 3 did, the threshold is 3)");
  EXPECT_EQ(ReadText(results_), "");
}

// A threshold below the safe minimum is refused before any round opens, with the exact reason.
TEST_F(RoundTest, AThresholdBelowTheSafeMinimumIsRefused) {
  Keys({"alice", "bob", "carol", "dave"});
  StartBroker();
  auto hospital = Hospital({"--range", "1000", "--threshold", "2"});
  EXPECT_NE(hospital.Wait(kWait), 0);
  EXPECT_TRUE(Contains(ReadText(dir_.path() / "hospital.log"),
                       "threshold 2 is below the safe minimum 3 for 4 patients"))
      << ReadText(dir_.path() / "hospital.log");
  EXPECT_EQ(ReadText(results_), "");
}

// dave is played by the test. What every patient sent is read back from the broker's capture
// and opened with the hospital's key under the round's view: each masked input looks uniform
// and unrelated to its input; only with the unmasks does the hospital's arithmetic
// (HospitalRound) give the aggregate. The capture holds no input, masked input or aggregate in
// the clear.
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
  auto unmask = PlayRound({&dave}, *open, {inputs["dave"]}, {}, std::chrono::milliseconds(60000));
  ASSERT_TRUE(unmask);
  ASSERT_EQ(unmask->phase, Phase::kUnmask) << unmask->reason;

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
  const Captured c = ReadCaptured(path);
  ASSERT_TRUE(c.keys);
  EXPECT_EQ(c.partials.size(), 3u);  // one masked input per patient
  EXPECT_EQ(c.unmasks.size(), 3u);
  const Sealer hospital_sealer = MakeSealer(keys_, "hospital");
  EXPECT_EQ(Recompute(c, hospital_sealer), expected);
  const ViewDigest view = ViewOf(c, hospital_sealer);
  EXPECT_EQ(view, dave.round().view());  // the hospital's view is dave's
  std::map<std::string, std::vector<uint64_t>> masked;
  for (const auto& env : c.partials) {
    auto values = OpenMasked(hospital_sealer, env, view, kLength);
    ASSERT_TRUE(values.ok()) << env.from << ": " << values.message();
    EXPECT_TRUE(masked.emplace(env.from, values.value()).second)
        << "two partials from " << env.from;
  }
  ASSERT_EQ(masked.size(), 3u);
  for (const auto& [from, v] : masked) {
    size_t small = 0, equal = 0, ones = 0;
    for (size_t e = 0; e < kLength; ++e) {
      small += v[e] <= 3000;
      equal += v[e] == inputs[from][e];
      ones += __builtin_popcountll(v[e]);
    }
    EXPECT_EQ(small, 0u) << from << "'s masked input looks like an input";
    EXPECT_EQ(equal, 0u) << from;
    // Uniform bits: 640,000 of them; half are ones within 1% (over 15 standard deviations).
    EXPECT_NEAR(static_cast<double>(ones) / (kLength * 64.0), 0.5, 0.01) << from;
  }

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

// dave, played by the test, masks his input correctly but seals it under another view of the
// round — what a patient shown other keys (or whose roster holds another key) would do. The
// broker cannot tell and routes it; the hospital cannot open it, and since the broker routes
// one masked input per patient the round can never complete: the hospital refuses it at once
// with the exact reason, writes no result, and the round aborts naming it. No aggregate, right
// or wrong, is ever reported.
TEST_F(RoundTest, APartialSealedUnderAnotherViewIsNotOpenedAndTheRoundAbortsWithoutAResult) {
  Keys({"alice", "bob", "dave"});
  StartBroker(1500);
  auto alice = Patient("alice", {10}, true);
  auto bob = Patient("bob", {20}, true);
  TestPatient dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital({"--range", "1000"});
  auto open = dave.party().WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  dave.Join(*open, {30});
  auto share = dave.party().WaitPhase(Phase::kShare, open->round);
  ASSERT_TRUE(share);
  dave.Share(*share);
  auto mask = dave.party().WaitPhase(Phase::kMask, open->round);
  ASSERT_TRUE(mask);
  // dave's honest masked input, opened by him... then sealed again under a view one bit off.
  const Envelope honest = dave.round().Masked(*mask, *dave.WaitBatch(BatchKind::kShares)).value();
  const Sealer hospital_sealer = MakeSealer(keys_, "hospital");
  ViewDigest other = dave.round().view();
  other[0] ^= 0x01;
  auto payload = OpenMasked(hospital_sealer, honest, dave.round().view(), 1);  // the masked value
  ASSERT_TRUE(payload.ok()) << payload.message();
  auto sealed =
      dave.sealer().Seal(Binding{open->round, EnvelopeKind::kPartial, "dave", "hospital", other},
                         EncodePayload(EnvelopeKind::kPartial, *payload));
  ASSERT_TRUE(sealed.ok()) << sealed.message();
  const Envelope altered{EnvelopeKind::kPartial, open->round, "dave", "hospital", *sealed};
  ASSERT_FALSE(OpenMasked(hospital_sealer, altered, dave.round().view(), 1).ok());
  dave.party().Send(altered);

  auto abort = dave.party().WaitPhase(Phase::kAbort, open->round);
  ASSERT_TRUE(abort);
  const std::string why =
      "cannot open partial from dave: authentication failed under hospital's view of the round";
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

  const Captured c = ReadCaptured(dir_.path() / "captures" / (RoundHex(open->round) + ".tcap"));
  ASSERT_TRUE(c.trailer);
  EXPECT_FALSE(c.trailer->done);
  EXPECT_EQ(c.trailer->reason, "hospital refused the round: " + why);
  // dave's masked input was routed; alice's and bob's masked inputs, and their unmasks once
  // the three were in, may or may not have been before the refusal came. dave sent no unmask.
  EXPECT_GE(c.partials.size(), 1u);
  EXPECT_LE(c.partials.size(), 3u);
  EXPECT_LE(c.unmasks.size(), 2u);
  for (const auto& env : c.unmasks) EXPECT_NE(env.from, "dave");
  EXPECT_EQ(c.trailer->rejected, 0u);
}

// Four real patients with vectors of 1,000 elements at the top of the range: the aggregate is
// exact element by element. Read back from the capture and opened with the hospital's key, the
// masked inputs are uniform 64-bit values whose plain sum overflows 2^64 for most elements;
// the hospital's arithmetic over the capture, mod 2^64, gives exactly the sum of the inputs.
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

  const RoundId round = RoundFromHex(RoundOf(*line)).value();
  const Captured c = ReadCaptured(dir_.path() / "captures" / (RoundHex(round) + ".tcap"));
  ASSERT_EQ(c.partials.size(), names.size());
  const Sealer hospital_sealer = MakeSealer(keys_, "hospital");
  EXPECT_EQ(Recompute(c, hospital_sealer), expected);
  const ViewDigest view = ViewOf(c, hospital_sealer);
  std::vector<uint64_t> total(kLength, 0);
  std::vector<int> wraps(kLength, 0);
  for (const auto& env : c.partials) {
    auto masked = OpenMasked(hospital_sealer, env, view, kLength);
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
  // The self masks stay in the plain sum of the masked inputs: only the unmasks remove them.
  EXPECT_NE(total, expected);
  // Four independent uniform 64-bit values: their plain sum stays below 2^64 with probability
  // 1/24, so about 958 of 1,000 elements overflow; 850 or fewer is over 17 standard deviations
  // away.
  const auto wrapped = std::count_if(wraps.begin(), wraps.end(), [](int w) { return w > 0; });
  EXPECT_GT(wrapped, 850) << "masked inputs do not look uniform";
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

// Regression: a neighbourhood round of 1000 launched processes aborted in CI, "935 more did not
// send shares", its deadline (10 s + 0.4 ms x N x k per core: 17.6 s) counting only the key
// agreements of a patient's 38 peers. Each phase also costs every patient about 10 ms however
// few its peers (CohortTest.LaunchOf1000PatientsGivesTheExactSum); the deadline now counts it.
TEST(LocalPhaseDeadlineTest, EachPatientCountsForItsPeersAndForItsOwnWakeUps) {
  EXPECT_EQ(LocalPhaseDeadlineMs(1000, 38, 2), 32600u);    // k = 38: was 17,600
  EXPECT_EQ(LocalPhaseDeadlineMs(1000, 999, 2), 224800u);  // a full round: was 209,800
  EXPECT_EQ(LocalPhaseDeadlineMs(442, 34, 2), 19635u);     // k = 34: was 13,005
  EXPECT_EQ(LocalPhaseDeadlineMs(3, 2, 1), 10092u);
}

}  // namespace
}  // namespace tally::test
