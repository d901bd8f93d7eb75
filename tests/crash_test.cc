// Crash tests: kill -9 a patient, the hospital or the broker in each phase of a protocol-3
// round (open: patients join with signed round keys; share: they send Shamir shares of their
// mask secrets; mask: their masked inputs, sealed to the hospital; confirm, after a dropout:
// they sign the survivors; unmask: their shares for removing what is left of the masks), with
// real tally-broker / tally-node processes on loopback. A patient killed while at most N - T
// are gone costs the round nothing but its input: the hospital's result is the exact sum over
// the survivors and names the dropped. More killed than that, and the broker ends the round at
// once with its exact reason ("charlie and dave dropped out (at most 2 of 4 can send shares,
// the threshold is 3)"); a killed hospital ends it as "hospital disconnected". Survivors end or
// recover, the next round gives the exact aggregate, finished and aborted captures pass
// `tally-replay --check`, the interrupted round's capture is recognisably unfinished when the
// broker dies, and the hospital's results file holds every result it reported.
//
// Phases are observed, never slept on: a patient to be killed at a phase runs with
// --vanish-at PHASE and prints "vanish PHASE" on stdout when its round reaches that phase,
// then stops acting, and the test kills it there (as tools/launch --drop does); a process to be
// killed elsewhere runs with stderr merged into its stdout pipe and the test reads until its
// log line ("event=round-open", "event=join", "event=partial-sent"); "dave", played by the test
// (TestPatient), holds a round in a phase by not doing his step yet; a watcher with a patient's
// keys that no round names reads the broker's phase updates. Where a patient must be caught
// before it joins, the test stops it (SIGSTOP, then waits until the kernel reports it stopped)
// and kills it later.
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <zmq.hpp>

#include "keys/keys.h"
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
const std::string kAnyPort = "tcp://127.0.0.1:*";
constexpr uint32_t kDeadlineMs = 1500;  // each phase's deadline at the broker
constexpr uint32_t kIdleMs = 5000;      // the hospital gives up after this long without news

std::string Str(uint64_t v) { return std::to_string(v); }

std::string Csv(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

std::string RoundOf(const std::string& json) {
  auto at = json.find("\"round\": \"");
  return at == std::string::npos ? "" : json.substr(at + 10, 32);
}

// The patients a hospital's result line names as dropped.
std::vector<std::string> DroppedOf(const std::string& line) {
  auto parsed = ParseResultsLine(line);
  EXPECT_TRUE(parsed.ok() && parsed->result) << parsed.message() << ": " << line;
  return parsed.ok() && parsed->result ? parsed->result->dropped : std::vector<std::string>{};
}

// Reads `child`'s output until a line containing `needle`; false on EOF or timeout.
bool ReadUntil(Child& child, const std::string& needle) {
  for (;;) {
    auto line = child.ReadLine(kWait);
    if (!line) return false;
    if (Contains(*line, needle)) return true;
  }
}

// SIGSTOPs `child` and returns once the kernel reports it stopped: from then on it reads and
// sends nothing (its ZeroMQ threads included), so what it has not done yet stays undone until
// it is killed. SIGSTOP can be neither caught nor ignored, so the wait ends as soon as the
// child stops (or is found gone). WNOWAIT leaves the child's state for Child::Wait.
bool Freeze(Child& child) {
  child.Signal(SIGSTOP);
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(child.pid()), &info, WSTOPPED | WEXITED | WNOWAIT) != 0)
    return false;
  return info.si_code == CLD_STOPPED;
}

// Waits for a patient run with --vanish-at `phase` to say its round reached it, then kills it
// with SIGKILL there, as a crash would.
void KillAtVanish(Child& patient, const std::string& phase) {
  ASSERT_TRUE(ReadUntil(patient, "vanish " + phase)) << "no \"vanish " << phase << "\" line";
  patient.Signal(SIGKILL);
  EXPECT_EQ(patient.Wait(kWait), 128 + SIGKILL);
}

struct Output {
  int code = -1;
  std::string out;
};

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    // "watcher" is in no round: a TestParty with its keys reads the phase channel.
    keys_ = MakeKeys(dir_.path(), {"alice", "bob", "charlie", "dave", "eve", "watcher"});
    for (const std::string name : {"alice", "bob", "charlie", "dave", "eve"})
      inputs_[name] = randombytes_uniform(201);  // any sum of five lies in [0, 1000]
  }

  // On failure, the logs say what each process saw.
  void TearDown() override {
    if (!HasFailure()) return;
    for (const auto& entry : fs::directory_iterator(dir_.path()))
      if (entry.path().extension() == ".log")
        std::cout << "--- " << entry.path().filename().string() << "\n" << ReadText(entry.path());
  }

  // Starts a broker on `router` and `phases` ("*" ports: any free one) with the short deadline;
  // a restarted broker appends to the first one's log.
  void StartBroker(const std::string& router = kAnyPort, const std::string& phases = kAnyPort) {
    Status started =
        cluster_.StartBroker(Cluster::BrokerSpec{.extra = {"--deadline-ms", Str(kDeadlineMs)},
                                                 .router = router,
                                                 .phases = phases,
                                                 .append_log = true});
    ASSERT_TRUE(started.ok()) << started.message();
  }

  fs::path LogOf(const std::string& name) { return dir_.path() / (name + ".log"); }

  // A patient with its input from inputs_; `merge` puts its log on the stdout pipe; `extra`
  // arguments after (e.g. --vanish-at PHASE).
  Child Patient(const std::string& name, bool once = false, bool merge = false,
                const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--value", Str(inputs_[name])};
    if (once) args.push_back("--once");
    args.insert(args.end(), extra.begin(), extra.end());
    auto c = cluster_.SpawnNode(name, args, "", merge);
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  Child Hospital(const std::string& participants, const std::vector<std::string>& extra = {},
                 bool merge = false) {
    std::vector<std::string> args = {
        "--json",         "--results",  results_.string(),   "--range",   "1000",
        "--participants", participants, "--idle-timeout-ms", Str(kIdleMs)};
    args.insert(args.end(), extra.begin(), extra.end());
    auto c = cluster_.SpawnNode("hospital", args, "", merge);
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  uint64_t Sum(const std::vector<std::string>& names) {
    uint64_t s = 0;
    for (const auto& n : names) s += inputs_[n];
    return s;
  }

  // A party that reads the broker's phase updates (with the keys of "watcher", in no round).
  std::unique_ptr<TestParty> Watcher() {
    return std::make_unique<TestParty>(keys_, "watcher", router_, phases_);
  }

  // Runs one round of `patients` (serving, already started) with a fresh hospital, checks the
  // exact aggregate, that nobody dropped and that the round's capture passes --check.
  void NextRound(const std::vector<std::string>& patients, const std::string& why) {
    SCOPED_TRACE(why);
    auto hospital = Hospital(Csv(patients));
    auto line = hospital.ReadLine(kWait);
    ASSERT_TRUE(line) << LastLine(LogOf("hospital"));
    EXPECT_EQ(ScalarAggregate(*line), Sum(patients)) << *line;
    EXPECT_EQ(DroppedOf(*line), std::vector<std::string>{}) << *line;
    EXPECT_EQ(hospital.Wait(kWait), 0);
    ExpectCheckOk(RoundOf(*line));
  }

  Output Replay(const std::vector<std::string>& args) {
    const Cluster::Output o = cluster_.RunTool("tools/tally-replay", args, kWait);
    return Output{o.code, o.out + o.err};
  }

  fs::path CaptureOf(const RoundId& round) { return captures_ / (RoundHex(round) + ".tcap"); }
  fs::path CaptureOf(const std::string& hex) { return captures_ / (hex + ".tcap"); }

  void ExpectCheckOk(const std::string& round_hex) {
    Output o = Replay({CaptureOf(round_hex).string(), "--check"});
    EXPECT_EQ(o.code, 0) << round_hex << ":\n" << o.out;
    EXPECT_EQ(o.out.rfind("check: ok (", 0), 0u) << o.out;
  }

  // A finished round's capture reads to its end as done and passes --check; returns its
  // timeline.
  std::string ExpectDoneCapture(const std::string& round_hex) {
    Output o = Replay({CaptureOf(round_hex).string()});
    EXPECT_EQ(o.code, 0) << o.out;
    EXPECT_TRUE(Contains(o.out, "outcome: done")) << o.out;
    ExpectCheckOk(round_hex);
    return o.out;
  }

  // An aborted round's capture is whole and says why: its timeline reads to the end and ends
  // with the abort reason, and it passes --check (the broker records only what it routed, so
  // the trailer's counts match the records).
  void ExpectAbortedCapture(const RoundId& round, const std::string& reason) {
    Output o = Replay({CaptureOf(round).string()});
    EXPECT_EQ(o.code, 0) << o.out;
    EXPECT_TRUE(Contains(o.out, "outcome: aborted: " + reason)) << o.out;
    ExpectCheckOk(RoundHex(round));
  }

  // Every capture in the folder is whole: it reads to its trailer, says how the round ended
  // and passes --check. Returns how many captures there are.
  size_t ExpectEveryCaptureWhole() {
    size_t n = 0;
    for (const auto& entry : fs::directory_iterator(captures_)) {
      Output o = Replay({entry.path().string()});
      EXPECT_EQ(o.code, 0) << entry.path() << ":\n" << o.out;
      EXPECT_TRUE(Contains(o.out, "outcome: done") || Contains(o.out, "outcome: aborted: "))
          << o.out;
      ExpectCheckOk(entry.path().stem().string());
      ++n;
    }
    return n;
  }

  // The senders of the masked inputs in `round`'s capture (each to the hospital), and that the
  // trailer counts every frame (the keys batch, masked inputs, unmasks).
  std::multiset<std::string> RoutedPartials(const RoundId& round) {
    std::multiset<std::string> from;
    auto capture = ReadCaptureFile(CaptureOf(round));
    EXPECT_TRUE(capture.ok()) << capture.message();
    if (!capture.ok()) return from;
    EXPECT_TRUE(capture->ok()) << capture->error;
    std::optional<uint64_t> counted;
    uint64_t frames = 0;
    for (const auto& record : capture->records) {
      if (const auto* f = std::get_if<CaptureFrame>(&record)) {
        ++frames;
        auto m = Decode(f->frame);
        EXPECT_TRUE(m.ok()) << m.message();
        if (!m.ok()) continue;
        auto* env = std::get_if<Envelope>(&m.value());
        if (env) {
          EXPECT_EQ(env->to, "hospital");
        }
        if (env && env->kind == EnvelopeKind::kPartial) from.insert(env->from);
      } else if (const auto* t = std::get_if<CaptureTrailer>(&record)) {
        counted = t->frames;
      }
    }
    EXPECT_EQ(counted, frames);
    return from;
  }

  // The abort update of `round`, seen by `watcher`.
  std::string AbortReason(TestParty& watcher, const RoundId& round) {
    auto abort = watcher.WaitPhase(Phase::kAbort, round);
    EXPECT_TRUE(abort) << "round " << RoundHex(round) << " did not abort";
    if (abort) std::cout << "round aborted: " << abort->reason << "\n";  // for the report
    return abort ? abort->reason : "";
  }

  void ExpectResultsFileHolds(size_t lines, uint64_t aggregate) {
    auto results = Lines(ReadText(results_));
    EXPECT_EQ(results.size(), lines);
    for (const auto& l : results) EXPECT_EQ(ScalarAggregate(l), aggregate) << l;
  }

  // After a round that aborted naming a patient: the hospital reported the reason and exited 1,
  // wrote no result, and the capture is whole.
  void ExpectAbortedForAll(Child& hospital, const RoundId& round, const std::string& reason) {
    EXPECT_EQ(hospital.Wait(kWait), 1);
    EXPECT_TRUE(Contains(LastLine(LogOf("hospital")),
                         "node hospital event=exit status=1 reason=" +
                             Quote("round " + RoundHex(round) + " aborted: " + reason)));
    EXPECT_EQ(ReadText(results_), "");  // opened at start, no result written
    ExpectAbortedCapture(round, reason);
  }

  // Shared by the broker cases: kill -9 the broker while dave holds a round in `phase`.
  void KillBrokerIn(Phase phase);

  TempDir dir_;
  Cluster cluster_{kBin, dir_.path(), dir_.path()};  // logs in dir_ itself
  fs::path keys_;
  fs::path captures_ = dir_.path() / "captures";
  fs::path results_ = dir_.path() / "results.jsonl";
  // The running broker's endpoints (updated by each StartBroker).
  const std::string& router_ = cluster_.endpoints().router;
  const std::string& phases_ = cluster_.endpoints().phases;
  std::map<std::string, uint64_t> inputs_;
};

// --- Patients -----------------------------------------------------------------------------

// charlie is connected, stopped before the round opens and killed in its open phase: he
// never joined, the broker sees his connection close and goes on without him (4 patients, the
// default threshold 3): the result is the exact sum of the other three, naming him as dropped,
// and the serving patients take the next round.
TEST_F(CrashTest, PatientKilledBeforeJoiningIsDroppedAndTheOthersAreSummed) {
  StartBroker();
  auto alice = Patient("alice"), bob = Patient("bob"), dave = Patient("dave");
  auto charlie = Patient("charlie");
  ASSERT_TRUE(ReadUntil(charlie, "ready"));
  ASSERT_TRUE(Freeze(charlie));
  auto watcher = Watcher();
  auto hospital = Hospital("alice,bob,charlie,dave");
  auto open = watcher->WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  charlie.Signal(SIGKILL);
  EXPECT_EQ(charlie.Wait(kWait), 128 + SIGKILL);

  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << "no result: " << LastLine(LogOf("hospital"));
  EXPECT_EQ(RoundOf(*line), RoundHex(open->round));
  EXPECT_EQ(ScalarAggregate(*line), Sum({"alice", "bob", "dave"})) << *line;
  EXPECT_EQ(DroppedOf(*line), std::vector<std::string>{"charlie"}) << *line;
  EXPECT_EQ(hospital.Wait(kWait), 0);
  ExpectResultsFileHolds(1, Sum({"alice", "bob", "dave"}));
  ExpectDoneCapture(RoundHex(open->round));
  EXPECT_TRUE(alice.running() && bob.running() && dave.running());

  NextRound({"alice", "bob"}, "the broker serves the next round");
  for (Child* c : {&alice, &bob, &dave}) EXPECT_EQ(c->Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
}

// charlie (--vanish-at PHASE) is killed when the round reaches PHASE. Killed at share he never
// shared, at mask he shared but sent no masked input (a confirm phase follows): either way he
// is dropped and the result is the exact sum of the other three. Killed at unmask his masked
// input is in, the others' shares unmask it: the sum of all four, nobody dropped. The round
// never waits for its deadline: the broker drops a patient the moment its connection closes.
class CrashAtPhaseTest : public CrashTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(CrashAtPhaseTest, PatientKilledAtThePhaseLeavesTheExactSumOverTheSurvivors) {
  const std::string phase = GetParam();
  StartBroker();
  auto alice = Patient("alice"), bob = Patient("bob"), dave = Patient("dave");
  auto charlie = Patient("charlie", false, false, {"--vanish-at", phase});
  auto hospital = Hospital("alice,bob,charlie,dave");
  ASSERT_NO_FATAL_FAILURE(KillAtVanish(charlie, phase));

  const bool survived = phase == "unmask";
  const uint64_t expected =
      survived ? Sum({"alice", "bob", "charlie", "dave"}) : Sum({"alice", "bob", "dave"});
  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << "no result: " << LastLine(LogOf("hospital"));
  EXPECT_EQ(ScalarAggregate(*line), expected) << *line;
  EXPECT_EQ(DroppedOf(*line),
            survived ? std::vector<std::string>{} : std::vector<std::string>{"charlie"})
      << *line;
  EXPECT_EQ(hospital.Wait(kWait), 0);
  ExpectResultsFileHolds(1, expected);
  const std::string timeline = ExpectDoneCapture(RoundOf(*line));
  EXPECT_EQ(Contains(timeline, "phase confirm"), phase == "mask") << timeline;
  EXPECT_TRUE(alice.running() && bob.running() && dave.running());

  NextRound({"alice", "bob", "dave"}, "the broker serves the next round");
  for (Child* c : {&alice, &bob, &dave}) EXPECT_EQ(c->Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
}

INSTANTIATE_TEST_SUITE_P(Phases, CrashAtPhaseTest, ::testing::Values("share", "mask", "unmask"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// charlie and dave (--vanish-at PHASE) are killed at PHASE: with 4 patients and threshold 3 at
// most one may go. The broker aborts as soon as the second is gone, with the exact reason
// naming both; the hospital exits 1 with it and writes no result; the --once patient alice that
// outlives them reports the abort and exits 1; the capture's outcome is the abort; and the
// broker serves the next round.
class CrashTooManyTest : public CrashTest,
                         public ::testing::WithParamInterface<std::pair<std::string, std::string>> {
};

TEST_P(CrashTooManyTest, MoreKilledThanTheThresholdAllowsAbortsWithTheExactReason) {
  const auto& [phase, verb] = GetParam();
  StartBroker();
  auto alice = Patient("alice", /*once=*/true, /*merge=*/true);
  auto bob = Patient("bob");
  auto charlie = Patient("charlie", false, false, {"--vanish-at", phase});
  auto dave = Patient("dave", false, false, {"--vanish-at", phase});
  auto watcher = Watcher();
  auto hospital = Hospital("alice,bob,charlie,dave");
  auto open = watcher->WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  ASSERT_NO_FATAL_FAILURE(KillAtVanish(charlie, phase));
  ASSERT_NO_FATAL_FAILURE(KillAtVanish(dave, phase));

  const std::string reason =
      "charlie and dave dropped out (at most 2 of 4 can " + verb + ", the threshold is 3)";
  EXPECT_EQ(AbortReason(*watcher, open->round), reason);
  ExpectAbortedForAll(hospital, open->round, reason);
  const std::string out = alice.ReadAll(kWait);
  EXPECT_EQ(alice.Wait(kWait), 1);
  EXPECT_TRUE(Contains(out, "node alice event=exit status=1 reason=" +
                                Quote("round " + RoundHex(open->round) + " aborted: " + reason)))
      << out;
  EXPECT_TRUE(bob.running());

  auto eve = Patient("eve");
  NextRound({"bob", "eve"}, "the broker serves the next round");
  EXPECT_EQ(bob.Stop(), 0);
  EXPECT_EQ(eve.Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Phases, CrashTooManyTest,
    ::testing::Values(std::pair<std::string, std::string>{"share", "send shares"},
                      std::pair<std::string, std::string>{"mask", "send a masked input"},
                      std::pair<std::string, std::string>{"unmask", "unmask"}),
    [](const ::testing::TestParamInfo<std::pair<std::string, std::string>>& info) {
      return info.param.first;
    });

// --- Hospital -----------------------------------------------------------------------------

// The hospital dies as soon as its round opens: the broker sees its connection close and ends
// the round at once, "hospital disconnected", whatever phase it had reached. The next hospital
// gets a fresh round.
TEST_F(CrashTest, HospitalKilledAtOpenAbortsNamingItAndTheNextHospitalIsServed) {
  StartBroker();
  auto alice = Patient("alice"), bob = Patient("bob"), charlie = Patient("charlie");
  auto watcher = Watcher();
  auto hospital = Hospital("alice,bob,charlie", {}, /*merge=*/true);
  auto open = watcher->WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  ASSERT_TRUE(ReadUntil(hospital, "event=round-open round=" + RoundHex(open->round)));
  hospital.Signal(SIGKILL);
  EXPECT_EQ(hospital.Wait(kWait), 128 + SIGKILL);

  // Or, if the share phase's keys batch to the hospital comes before the broker sees the closed
  // connection, the batch it could not deliver.
  const std::string reason = AbortReason(*watcher, open->round);
  EXPECT_TRUE(reason == "hospital disconnected" ||
              reason == "undeliverable to hospital: hospital is not connected")
      << reason;
  EXPECT_EQ(ReadText(results_), "");  // opened at start, no result written
  EXPECT_TRUE(alice.running() && bob.running() && charlie.running());
  ExpectAbortedCapture(open->round, reason);
  RoutedPartials(open->round);  // the trailer counts what the capture holds

  NextRound({"alice", "bob"}, "a new hospital after the crash");
  for (Child* c : {&alice, &bob, &charlie}) EXPECT_EQ(c->Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
}

// dave, played by the test, holds the round in its mask phase (he shared, his masked input is
// not sent): the hospital has its keys and the others' masked inputs, and cannot have a result
// without dave's. It is killed there: it printed nothing and wrote nothing, the round ends
// "hospital disconnected" at once, and the capture holds only what was routed (no unmask) and
// passes --check; dave's masked input, sent after, changes nothing.
TEST_F(CrashTest, HospitalKilledHoldingMaskedInputsWritesNothingAndTheRoundAborts) {
  StartBroker();
  auto alice = Patient("alice", false, /*merge=*/true), bob = Patient("bob"),
       charlie = Patient("charlie");
  TestPatient dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital("alice,bob,charlie,dave", {}, /*merge=*/true);
  auto open = dave.party().WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  dave.Join(*open, {inputs_["dave"]});
  auto share = dave.party().WaitPhaseIn({Phase::kShare, Phase::kAbort}, open->round);
  ASSERT_TRUE(share);
  ASSERT_EQ(share->phase, Phase::kShare) << share->reason;
  dave.Share(*share);
  auto mask = dave.party().WaitPhaseIn({Phase::kMask, Phase::kAbort}, open->round);
  ASSERT_TRUE(mask);
  ASSERT_EQ(mask->phase, Phase::kMask) << mask->reason;
  ASSERT_TRUE(ReadUntil(alice, "event=partial-sent round=" + RoundHex(open->round)));
  hospital.Signal(SIGKILL);
  const std::string printed = hospital.ReadAll(kWait);
  EXPECT_EQ(hospital.Wait(kWait), 128 + SIGKILL);
  EXPECT_FALSE(Contains(printed, "\"aggregate\"")) << printed;  // dave's input was missing

  // The broker learns that the hospital is gone from its connection closing, or, when a patient's
  // partial comes first (found under the sanitizers' slower timing), from the partial it could
  // not deliver: one of exactly these two reasons.
  auto abort = dave.party().WaitPhase(Phase::kAbort, open->round);
  ASSERT_TRUE(abort);
  const std::string reason = abort->reason;
  EXPECT_TRUE(reason == "hospital disconnected" ||
              reason == "undeliverable to hospital: hospital is not connected")
      << reason;
  (void)dave.Mask(*mask);                     // too late: the round is over
  EXPECT_EQ(ReadText(results_), "");          // opened at start, no result written
  ExpectAbortedCapture(open->round, reason);  // includes --check
  const auto routed = RoutedPartials(open->round);
  EXPECT_EQ(routed.count("dave"), 0u);
  EXPECT_LE(routed.size(), 3u);
  for (Child* c : {&alice, &bob, &charlie}) EXPECT_TRUE(c->running());

  NextRound({"alice", "bob"}, "a new hospital after the crash");
  for (Child* c : {&alice, &bob, &charlie}) EXPECT_EQ(c->Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
}

// Write, fsync, then print and acknowledge: whenever the hospital is killed, every result it
// printed is in its results file, whole. Killed while running many rounds back to back.
TEST_F(CrashTest, HospitalKilledMidStreamHasEveryPrintedResultOnDisk) {
  StartBroker();
  auto alice = Patient("alice"), bob = Patient("bob"), charlie = Patient("charlie");
  const uint64_t expected = Sum({"alice", "bob", "charlie"});
  auto hospital = Hospital("alice,bob,charlie", {"--rounds", "1000"});
  std::vector<std::string> printed;
  for (int k = 0; k < 5; ++k) {
    auto line = hospital.ReadLine(kWait);
    ASSERT_TRUE(line) << LastLine(LogOf("hospital"));
    printed.push_back(*line);
  }
  hospital.Signal(SIGKILL);
  for (const auto& l : Lines(hospital.ReadAll(kWait))) printed.push_back(l);
  EXPECT_EQ(hospital.Wait(kWait), 128 + SIGKILL);

  auto on_disk = Lines(ReadText(results_));
  std::set<std::string> disk_rounds;
  for (const auto& l : on_disk) {
    EXPECT_EQ(ScalarAggregate(l), expected) << "damaged or wrong result line: " << l;
    disk_rounds.insert(RoundOf(l));
  }
  for (const auto& p : printed) {
    EXPECT_EQ(ScalarAggregate(p), expected) << p;
    EXPECT_TRUE(disk_rounds.count(RoundOf(p))) << "printed but not on disk: " << p;
  }
  // At most the round in flight was written and not yet printed.
  EXPECT_LE(on_disk.size(), printed.size() + 1);
  std::cout << "hospital killed after printing " << printed.size() << " results; " << on_disk.size()
            << " on disk\n";

  // Whatever the broker was doing for the dead hospital ends within its deadlines (a queued
  // request waits for it), then a new hospital is served.
  NextRound({"alice", "bob"}, "a new hospital after the crash");
  EXPECT_GE(ExpectEveryCaptureWhole(), printed.size() + 1);
  for (Child* c : {&alice, &bob, &charlie}) EXPECT_EQ(c->Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
}

// --- Broker -------------------------------------------------------------------------------

// A finished round first (its capture must survive the crash), then a round held by dave in
// `phase` when the broker is killed: in the open phase eve has joined and dave has not; in the
// mask phase eve has sent her masked input and dave, who shared, has not. The hospital and the
// --once patient eve report the lost connection and exit 1; serving patients keep running and,
// once the broker is restarted on the same endpoints, take part in a new round.
void CrashTest::KillBrokerIn(Phase phase) {
  // Ports chosen by the first broker; the restarted one binds the same, since nodes reconnect
  // to the endpoint they were given.
  StartBroker();
  const std::string router = router_, phases = phases_;
  auto alice = Patient("alice"), bob = Patient("bob");

  auto first = Hospital("alice,bob");
  auto line = first.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(LogOf("hospital"));
  EXPECT_EQ(first.Wait(kWait), 0);
  const std::string finished = RoundOf(*line);

  auto eve = Patient("eve", /*once=*/true, /*merge=*/true);
  TestPatient dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital("alice,bob,eve,dave", {}, /*merge=*/true);
  auto open = dave.party().WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  ASSERT_TRUE(ReadUntil(eve, "event=join round=" + RoundHex(open->round)));
  if (phase == Phase::kMask) {
    dave.Join(*open, {inputs_["dave"]});
    auto share = dave.party().WaitPhaseIn({Phase::kShare, Phase::kAbort}, open->round);
    ASSERT_TRUE(share);
    ASSERT_EQ(share->phase, Phase::kShare) << share->reason;
    dave.Share(*share);
    auto mask = dave.party().WaitPhaseIn({Phase::kMask, Phase::kAbort}, open->round);
    ASSERT_TRUE(mask);
    ASSERT_EQ(mask->phase, Phase::kMask) << mask->reason;
    ASSERT_TRUE(ReadUntil(eve, "event=partial-sent round=" + RoundHex(open->round)));
  }
  cluster_.broker().Signal(SIGKILL);
  EXPECT_EQ(cluster_.broker().Wait(kWait), 128 + SIGKILL);

  // Survivors: the hospital and the --once patient fail with the reason; serving ones go on.
  const std::string lost = "lost the connection to the broker";
  const std::string hospital_out = hospital.ReadAll(kWait);
  EXPECT_EQ(hospital.Wait(kWait), 1) << hospital_out;
  EXPECT_TRUE(Contains(hospital_out, "event=exit status=1 reason=\"" + lost + "\""))
      << hospital_out;
  EXPECT_FALSE(Contains(hospital_out, "\"aggregate\"")) << hospital_out;
  const std::string eve_out = eve.ReadAll(kWait);
  EXPECT_EQ(eve.Wait(kWait), 1) << eve_out;
  EXPECT_TRUE(Contains(eve_out, "event=exit status=1 reason=\"" + lost + "\"")) << eve_out;
  EXPECT_TRUE(alice.running() && bob.running());
  ExpectResultsFileHolds(1, Sum({"alice", "bob"}));  // only the finished round's result

  // Captures: the finished round's is intact; the interrupted one is recognisably unfinished.
  ExpectCheckOk(finished);
  Output cut = Replay({CaptureOf(open->round).string(), "--check"});
  EXPECT_EQ(cut.code, 1) << cut.out;
  EXPECT_TRUE(Contains(cut.out, "no trailer")) << cut.out;
  EXPECT_TRUE(Contains(cut.out, "check: FAILED")) << cut.out;

  // Restart on the same endpoints: the serving patients reconnect and take part.
  StartBroker(router, phases);
  EXPECT_EQ(router_, router);
  EXPECT_EQ(phases_, phases);
  NextRound({"alice", "bob"}, "after the broker restarted");
  EXPECT_EQ(alice.Stop(), 0);
  EXPECT_EQ(bob.Stop(), 0);
  EXPECT_TRUE(Contains(ReadText(LogOf("alice")), "event=disconnected socket=router endpoint=" +
                                                     router + " action=reconnecting"));
  EXPECT_EQ(cluster_.StopBroker(), 0);
  ExpectResultsFileHolds(2, Sum({"alice", "bob"}));
}

TEST_F(CrashTest, BrokerKilledInOpenPhaseThenRestartedServesNewRounds) {
  KillBrokerIn(Phase::kOpen);
}

TEST_F(CrashTest, BrokerKilledInMaskPhaseThenRestartedServesNewRounds) {
  KillBrokerIn(Phase::kMask);
}

}  // namespace
}  // namespace tally::test
