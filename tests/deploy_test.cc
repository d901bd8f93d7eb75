// Regression tests for what trying Tally on real hosts found (issue "Deployable on real hosts"),
// each named after what it caught, with real tally-broker and tally-node processes on loopback;
// slow links and forwarders are a TcpProxy in the test (tests/proxy.h). Every wait is on a
// readiness line, a log line or a process exit, bounded.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "keys/keys.h"
#include "schema/capture.h"
#include "schema/results.h"
#include "schema/text.h"
#include "tests/contains.h"
#include "tests/proxy.h"
#include "tests/support.h"
#include "tools/cluster.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
const fs::path kBin = TALLY_BIN_DIR;
const std::string kAnyPort = "tcp://127.0.0.1:*";

// The exit line a node or the broker ends its log with.
std::string ExitLine(const std::string& who, int status, const std::string& reason) {
  return who + " event=exit status=" + std::to_string(status) + " reason=" + Quote(reason);
}

class DeployTest : public ::testing::Test {
 protected:
  // On failure, the logs say what each process saw.
  void TearDown() override {
    if (!HasFailure()) return;
    for (const auto& entry : fs::directory_iterator(dir_.path()))
      if (entry.path().extension() == ".log")
        std::cout << "--- " << entry.path().filename().string() << "\n" << ReadText(entry.path());
  }

  fs::path LogOf(const std::string& name) { return dir_.path() / (name + ".log"); }

  // Starts tally-broker on free loopback ports with `keys` (default: the shared folder).
  void StartBroker(const std::vector<std::string>& extra = {}, fs::path keys = {}) {
    Status started = cluster_.StartBroker(Cluster::BrokerSpec{.extra = extra, .keys = keys});
    ASSERT_TRUE(started.ok()) << started.message();
  }

  // tally-node as `name`, its log in NAME.log (or LOG.log), reaching the broker directly unless
  // `extra` says otherwise (it comes after the defaults, so it can override them).
  Child Node(const std::string& name, const std::vector<std::string>& extra,
             const std::string& log = "") {
    auto c = cluster_.SpawnNode(name, extra, log);
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }
  Child Patient(const std::string& name, uint64_t value, std::vector<std::string> extra = {},
                const std::string& log = "") {
    extra.insert(extra.begin(), {"--value", std::to_string(value)});
    return Node(name, extra, log);
  }
  Child Hospital(std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--range", "1000", "--json", "--results", results_.string()});
    return Node("hospital", extra);
  }
  // Waits for a patient's readiness line: it has reached the broker.
  static void Ready(Child& patient) {
    Status ready = Cluster::AwaitReady(patient, kWait);
    ASSERT_TRUE(ready.ok()) << ready.message();
  }

  // A key folder as one party holds it on its own host: its own secret, and the public
  // certificates of `roster` (names from the shared folder).
  fs::path HostKeys(const std::string& host, const std::string& me,
                    const std::vector<std::string>& roster) {
    const fs::path dir = dir_.path() / ("host-" + host);
    fs::create_directories(dir / "public");
    fs::create_directories(dir / "private");
    fs::permissions(dir / "private", fs::perms::owner_all, fs::perm_options::replace);
    for (const auto& n : roster)
      fs::copy_file(keys_ / "public" / (n + ".key"), dir / "public" / (n + ".key"));
    fs::copy_file(keys_ / "private" / (me + ".key_secret"), dir / "private" / (me + ".key_secret"));
    return dir;
  }

  // The round of the one capture the broker wrote (captures are named after their round).
  std::string OnlyCaptureRound() {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(captures_)) files.push_back(entry.path());
    EXPECT_EQ(files.size(), 1u);
    return files.size() == 1 ? files[0].stem().string() : "";
  }

  TempDir dir_;
  Cluster cluster_{kBin, dir_.path(), dir_.path()};  // logs in dir_ itself
  fs::path keys_ = MakeKeys(dir_.path(), {"alice", "bob", "charlie"});
  fs::path captures_ = dir_.path() / "captures";
  fs::path results_ = dir_.path() / "results.jsonl";
  // The running broker's endpoints (updated by each StartBroker).
  const std::string& router_ = cluster_.endpoints().router;
  const std::string& phases_ = cluster_.endpoints().phases;
};

// 1. Behind a forwarder whose upstream is not there yet (a load balancer, a broker restarting),
// a connection is accepted and closed at once. Each such drop was taken for a refused key:
// "the broker refused our CURVE handshake", exit for good. Now it is retried with ZeroMQ's
// back-off and warned about once per socket, and the round completes.
TEST_F(DeployTest, ADroppedHandshakeIsRetriedNotTakenForARefusedKey) {
  StartBroker();
  TcpProxy router(router_, milliseconds(0), /*drop_first=*/3);
  TcpProxy phases(phases_, milliseconds(0), /*drop_first=*/3);
  auto alice = Patient("alice", 600,
                       {"--once", "--router", router.endpoint(), "--phases", phases.endpoint()});
  Ready(alice);
  EXPECT_EQ(router.dropped(), 3u);
  EXPECT_EQ(phases.dropped(), 3u);
  auto bob = Patient("bob", 7, {"--once"});
  Ready(bob);
  auto hospital = Hospital({"--participants", "alice,bob"});
  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(LogOf("hospital"));
  EXPECT_EQ(ScalarAggregate(*line), 607u) << *line;
  EXPECT_EQ(alice.Wait(kWait), 0);
  const std::string log = ReadText(LogOf("alice"));
  EXPECT_EQ(CountOf(log, "event=warning socket=router endpoint=" + router.endpoint()), 1u) << log;
  EXPECT_EQ(CountOf(log, "event=warning socket=phases endpoint=" + phases.endpoint()), 1u) << log;
  EXPECT_EQ(CountOf(log, "action=retrying"), 2u) << log;
  EXPECT_EQ(CountOf(log, "refused"), 0u) << log;
  EXPECT_TRUE(Contains(LastLine(LogOf("alice")), ExitLine("node alice", 0, "round done")));
}

// ...while a key the broker does not know is refused (ZAP 400), and that is final, at once,
// with the reason.
TEST_F(DeployTest, AKeyTheBrokerRefusesIsFinalWithItsReason) {
  ASSERT_TRUE(GenerateParty(keys_, "eve", Role::kPatient, false).ok());
  // The broker's own folder lacks eve; eve's holds the broker's certificate.
  const fs::path broker_keys =
      HostKeys("broker", "broker", {"broker", "hospital", "alice", "bob", "charlie"});
  StartBroker({}, broker_keys);
  auto eve = Patient("eve", 1, {"--once"});
  EXPECT_EQ(eve.Wait(kWait), 1);
  // Both connections are refused; whichever refusal eve hears of first is the reason it gives
  // (on a busy machine it is sometimes the phase channel's).
  auto refused = [&](const std::string& where) {
    return Contains(LastLine(LogOf("eve")),
                    ExitLine("node eve", 1,
                             "the broker's " + where +
                                 " refused eve's key (ZAP status 400): eve's certificate is not "
                                 "in the broker's roster"));
  };
  EXPECT_TRUE(refused("router at " + router_) || refused("phase channel at " + phases_))
      << LastLine(LogOf("eve"));
  EXPECT_TRUE(Contains(ReadText(LogOf("broker")),
                       "event=auth-denied address=127.0.0.1 reason=\"key not in roster\""));
}

// 3. A slow link to the hospital (400 ms each way) and a 600 ms phase deadline: the hospital holds
// every masked input and writes its result, but its acknowledgement reaches the broker after
// the deadline. The hospital used to print the aggregate and the results file kept it while the
// broker aborted the round, and the replay audit said ok. A round has one outcome: nothing is
// printed, the results file follows the result with the abort, the hospital exits 1 with the
// broker's reason, and the audit reports the abort and that the file agrees.
TEST_F(DeployTest, AResultWrittenThenAbortedIsRecordedAsAbortedEverywhere) {
  StartBroker({"--deadline-ms", "600"});
  auto alice = Patient("alice", 200, {"--once"});
  auto bob = Patient("bob", 10, {"--once"});
  Ready(alice);
  Ready(bob);
  TcpProxy slow(router_, milliseconds(400));
  auto hospital = Hospital({"--participants", "alice,bob", "--router", slow.endpoint()});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_EQ(hospital.ReadAll(kWait), "");  // no result printed
  const std::string reason = "hospital did not acknowledge the result";
  auto lines = Lines(ReadText(results_));
  ASSERT_EQ(lines.size(), 2u) << ReadText(results_);
  auto result = ParseResultsLine(lines[0]);
  ASSERT_TRUE(result.ok() && result->result) << lines[0];
  EXPECT_EQ(result->result->aggregate, std::vector<uint64_t>{210});
  auto aborted = ParseResultsLine(lines[1]);
  ASSERT_TRUE(aborted.ok() && aborted->aborted) << lines[1];
  EXPECT_EQ(aborted->round, result->round);
  EXPECT_EQ(*aborted->aborted, reason);
  auto record = ReadRoundRecord(results_, result->round);
  ASSERT_TRUE(record.ok());
  EXPECT_FALSE(record->done());
  EXPECT_TRUE(Contains(
      LastLine(LogOf("hospital")),
      ExitLine("node hospital", 1, "round " + RoundHex(result->round) + " aborted: " + reason)));
  EXPECT_EQ(alice.Wait(kWait), 1);

  const fs::path capture = captures_ / (RoundHex(result->round) + ".tcap");
  auto contents = ReadCaptureFile(capture);
  ASSERT_TRUE(contents.ok() && contents->ok());
  auto* trailer = std::get_if<CaptureTrailer>(&contents->records.back());
  ASSERT_NE(trailer, nullptr);
  EXPECT_FALSE(trailer->done);
  EXPECT_EQ(trailer->reason, reason);

  const Cluster::Output audit =
      cluster_.RunTool("tools/tally-replay",
                       {capture.string(), "--keys", keys_.string(), "--as", "hospital", "--results",
                        results_.string()},
                       kWait);
  const std::string out = audit.out + audit.err;
  EXPECT_EQ(audit.code, 1) << out;
  EXPECT_TRUE(Contains(out, "the round aborted: " + reason + "; it has no aggregate\n")) << out;
  EXPECT_TRUE(Contains(out, "records the result as aborted too\n")) << out;
  EXPECT_FALSE(Contains(out, "audit: ok")) << out;
}

// 4. Two alice processes with the same keys made the aggregate flip between rounds (11, 501,
// 501, 11). The broker keeps one connection per party: the second alice is refused, told, and
// exits with the reason; every round sums the first alice's input.
TEST_F(DeployTest, TwoLiveProcessesWithOneIdentityAreRefusedNotMixed) {
  StartBroker();
  auto alice = Patient("alice", 10, {});
  auto bob = Patient("bob", 1, {});
  Ready(alice);
  Ready(bob);
  auto first = Hospital({"--participants", "alice,bob"});
  auto line = first.ReadLine(kWait);
  ASSERT_TRUE(line);
  EXPECT_EQ(ScalarAggregate(*line), 11u);
  EXPECT_EQ(first.Wait(kWait), 0);

  auto impostor = Patient("alice", 500, {}, "alice-2");
  Ready(impostor);
  auto rounds = Hospital({"--participants", "alice,bob", "--rounds", "3"});
  for (int k = 0; k < 3; ++k) {
    auto l = rounds.ReadLine(kWait);
    ASSERT_TRUE(l) << LastLine(LogOf("hospital"));
    EXPECT_EQ(ScalarAggregate(*l), 11u) << "round " << k;
  }
  EXPECT_EQ(rounds.Wait(kWait), 0);
  EXPECT_EQ(impostor.Wait(kWait), 1);
  const std::string why =
      "alice is already connected: a second connection with its keys is "
      "refused while the first is live";
  EXPECT_TRUE(Contains(
      LastLine(LogOf("alice-2")),
      ExitLine("node alice", 1, "the broker refused this connection: connection refused: " + why)))
      << LastLine(LogOf("alice-2"));
  EXPECT_TRUE(alice.running());
  EXPECT_EQ(alice.Stop(), 0);
  EXPECT_EQ(bob.Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
  const std::string log = ReadText(LogOf("broker"));
  EXPECT_EQ(CountOf(log, "event=reject from=alice reason=" + Quote(why)), 1u) << log;
  EXPECT_TRUE(Contains(LastLine(LogOf("broker")), " second_connections=1")) << log;
}

// 5. Rosters that disagree, each party with its own key folder. A patient missing from the
// broker's roster was quietly left out; one missing from another patient's roster made the
// round abort at the deadline with the wrong reason. Now the broker refuses the request, and a
// patient refuses the round at once, naming who is missing from whose roster.
TEST_F(DeployTest, RostersThatDisagreeAreRefusedAtOnceWithTheExactReason) {
  const std::vector<std::string> all = {"broker", "hospital", "alice", "bob", "charlie"};
  // The broker's roster lacks charlie: the hospital's request is refused with a notice.
  StartBroker({}, HostKeys("broker", "broker", {"broker", "hospital", "alice", "bob"}));
  {
    auto hospital = Hospital();  // its roster: alice, bob and charlie
    EXPECT_EQ(hospital.Wait(kWait), 1);
    EXPECT_TRUE(Contains(LastLine(LogOf("hospital")),
                         ExitLine("node hospital", 1,
                                  "round request refused: charlie is not a patient in the roster")))
        << LastLine(LogOf("hospital"));
  }
  EXPECT_EQ(cluster_.StopBroker(), 0);

  // charlie's roster lacks bob: charlie refuses, and the round aborts naming him at once.
  StartBroker({"--deadline-ms", "60000"});
  auto alice = Patient("alice", 1, {"--once"});
  auto bob = Patient("bob", 2, {"--once"});
  auto charlie =
      Node("charlie",
           {"--keys",
            HostKeys("charlie", "charlie", {"broker", "hospital", "alice", "charlie"}).string(),
            "--value", "3", "--once"});
  for (Child* p : {&alice, &bob, &charlie}) Ready(*p);
  auto hospital = Hospital();
  EXPECT_EQ(hospital.Wait(kWait), 1);  // long before the 60 s deadline
  const std::string refused = "charlie refused the round: bob is not in charlie's roster";
  EXPECT_TRUE(Contains(LastLine(LogOf("hospital")), refused)) << LastLine(LogOf("hospital"));
  EXPECT_EQ(charlie.Wait(kWait), 1);
  EXPECT_EQ(alice.Wait(kWait), 1);

  // The hospital's roster lacks charlie: its default round is over its own roster's patients,
  // and naming charlie is a usage error before anything is sent.
  const fs::path hospital_keys =
      HostKeys("hospital", "hospital", {"broker", "hospital", "alice", "bob"});
  auto named =
      Node("hospital",
           {"--keys", hospital_keys.string(), "--range", "1000", "--participants", "alice,charlie"},
           "hospital-named");
  EXPECT_EQ(named.Wait(kWait), 2);
  EXPECT_TRUE(Contains(LastLine(LogOf("hospital-named")),
                       ExitLine("node hospital", 2, "charlie is not in hospital's roster")));
  auto a = Patient("alice", 40, {"--once"}), b = Patient("bob", 2, {"--once"});
  Ready(a);
  Ready(b);
  auto own = Node("hospital",
                  {"--keys", hospital_keys.string(), "--range", "1000", "--json", "--results",
                   results_.string()},
                  "hospital-own");
  auto line = own.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(LogOf("hospital-own"));
  auto parsed = ParseResultsLine(*line);
  ASSERT_TRUE(parsed.ok() && parsed->result);
  EXPECT_EQ(parsed->result->params.participants, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(parsed->result->aggregate, std::vector<uint64_t>{42});
}

// Rosters that disagree on a key: alice's roster holds another key for bob, so her masks with
// bob would not cancel. Round keys are signed with each party's signing key from its certificate
// (schema/PROTOCOL.md, "Keys of a round"): alice finds bob's keys not signed by the bob she
// knows and gives the round up before sending a share. The broker sees alice leave and the round
// aborts naming her instead of reporting a wrong sum, whether or not bob, whose roster is right,
// had sent his shares by then (he had not, once, in CI: the test asserted that he had).
TEST_F(DeployTest, ARosterWithAnotherKeyForAPeerAbortsInsteadOfSummingWrong) {
  StartBroker({"--deadline-ms", "60000"});
  const fs::path alice_keys =
      HostKeys("alice", "alice", {"broker", "hospital", "alice", "charlie"});
  const fs::path stale = dir_.path() / "stale";
  ASSERT_TRUE(GenerateParty(stale, "bob", Role::kPatient, false).ok());
  fs::copy_file(stale / "public" / "bob.key", alice_keys / "public" / "bob.key");
  auto alice = Node("alice", {"--keys", alice_keys.string(), "--value", "1", "--once"});
  auto bob = Patient("bob", 2, {"--once"});
  for (Child* p : {&alice, &bob}) Ready(*p);
  auto hospital = Hospital({"--participants", "alice,bob"});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_EQ(hospital.ReadAll(kWait), "");
  EXPECT_EQ(alice.Wait(kWait), 1);
  EXPECT_EQ(bob.Wait(kWait), 1);
  const std::string round = OnlyCaptureRound();
  EXPECT_TRUE(Contains(
      LastLine(LogOf("alice")),
      ExitLine("node alice", 1, "left round " + round + ": the keys of bob are not signed by bob")))
      << LastLine(LogOf("alice"));
  const std::string aborted =
      "round " + round +
      " aborted: alice dropped out (at most 1 of 2 can send shares, the threshold is 2)";
  EXPECT_TRUE(Contains(LastLine(LogOf("bob")), ExitLine("node bob", 1, aborted)))
      << LastLine(LogOf("bob"));
  EXPECT_TRUE(Contains(LastLine(LogOf("hospital")), ExitLine("node hospital", 1, aborted)))
      << LastLine(LogOf("hospital"));
  EXPECT_EQ(ReadText(results_), "");
}

// Rosters that disagree on the hospital's key: alice seals her masked input for a key the
// hospital does not hold. The view binds every party's sealing key too: it does not open under
// the hospital's view, and the hospital refuses the round at once instead of reporting a sum.
TEST_F(DeployTest, ARosterWithAnotherKeyForTheHospitalAbortsInsteadOfSummingWrong) {
  StartBroker({"--deadline-ms", "60000"});
  const fs::path alice_keys = HostKeys("alice", "alice", {"broker", "alice", "bob", "charlie"});
  const fs::path stale = dir_.path() / "stale";
  ASSERT_TRUE(GenerateParty(stale, "hospital", Role::kHospital, false).ok());
  fs::copy_file(stale / "public" / "hospital.key", alice_keys / "public" / "hospital.key");
  auto alice = Node("alice", {"--keys", alice_keys.string(), "--value", "1", "--once"});
  auto bob = Patient("bob", 2, {"--once"});
  for (Child* p : {&alice, &bob}) Ready(*p);
  auto hospital = Hospital({"--participants", "alice,bob"});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_EQ(hospital.ReadAll(kWait), "");
  EXPECT_TRUE(Contains(LastLine(LogOf("hospital")),
                       "cannot open partial from alice: authentication failed under hospital's "
                       "view of the round"))
      << LastLine(LogOf("hospital"));
  EXPECT_EQ(ReadText(results_), "");
  // The patients hear the hospital's refusal, or, when the broker takes an unmask from a patient
  // before the refusal from the hospital that has exited meanwhile (found under the sanitizers'
  // slower timing: a router takes its peers' messages in turn, not in the order they came), that
  // it could not deliver to the hospital. Either way the round is aborted, never summed.
  EXPECT_EQ(alice.Wait(kWait), 1);
  const std::string last = LastLine(LogOf("alice"));
  EXPECT_TRUE(
      Contains(last, "aborted: hospital refused the round: cannot open partial from alice") ||
      Contains(last, "aborted: undeliverable to hospital: hospital is not connected") ||
      Contains(last, "aborted: hospital disconnected"))
      << last;
}

// 6. A request over the broker's --max-length got no notice, and the hospital waited out its
// idle timeout. Every refused request is answered.
TEST_F(DeployTest, ARequestOverTheBrokersMaxLengthGetsANotice) {
  StartBroker({"--max-length", "10"});
  auto hospital = Hospital({"--length", "11"});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_TRUE(Contains(LastLine(LogOf("hospital")),
                       ExitLine("node hospital", 1,
                                "round request refused: length 11 exceeds the broker's limit 10")))
      << LastLine(LogOf("hospital"));
}

// 7. A node that could not reach the broker logged nothing, forever, --once too. Now it warns
// halfway, naming the endpoint and what it saw of it, and gives up at its idle timeout with that
// reason; a hospital whose phase channel endpoint is wrong says that, not "no progress".
TEST_F(DeployTest, ANodeThatCannotReachTheBrokerSaysSoAndGivesUp) {
  const std::string nowhere = "tcp://127.0.0.1:1";  // nothing listens on port 1
  auto alice = Node("alice", {"--router", nowhere, "--phases", nowhere, "--value", "1", "--once",
                              "--idle-timeout-ms", "2000"});
  EXPECT_EQ(alice.Wait(kWait), 1);
  const std::string seen = "its router at " + nowhere +
                           ": no TCP connection (retrying); its "
                           "phase channel at " +
                           nowhere + ": no TCP connection (retrying)";
  auto lines = Lines(ReadText(LogOf("alice")));
  ASSERT_GE(lines.size(), 3u);
  EXPECT_TRUE(Contains(lines[lines.size() - 2], "node alice event=unreachable waited_ms=1"))
      << lines[lines.size() - 2];
  EXPECT_TRUE(Contains(lines[lines.size() - 2], "reason=" + Quote(seen) + " action=waiting"));
  EXPECT_TRUE(Contains(
      lines.back(), ExitLine("node alice", 1, "could not reach the broker for 2000 ms: " + seen)))
      << lines.back();

  StartBroker();
  auto hospital = Hospital({"--phases", nowhere, "--idle-timeout-ms", "2000"});
  EXPECT_EQ(hospital.Wait(kWait), 1);
  EXPECT_TRUE(
      Contains(LastLine(LogOf("hospital")),
               ExitLine("node hospital", 1,
                        "could not reach the broker for 2000 ms: its phase channel at " + nowhere +
                            ": no TCP connection (retrying) (is the phase channel's "
                            "endpoint right?)")))
      << LastLine(LogOf("hospital"));
}

// 8. Inputs 100, 5 and 5 with R = 100 were reported as if an input were out of range; every
// input was in range and their sum exceeded R. The text says what is true.
TEST_F(DeployTest, AnAggregateAboveRIsNotCalledAnInputOutOfRange) {
  StartBroker();
  auto alice = Patient("alice", 100, {"--once"});
  auto bob = Patient("bob", 5, {"--once"});
  auto charlie = Patient("charlie", 5, {"--once"});
  for (Child* p : {&alice, &bob, &charlie}) Ready(*p);
  auto hospital = Node("hospital", {"--range", "100", "--results", results_.string()});
  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line);
  EXPECT_TRUE(Contains(*line,
                       "aggregate 110 over 3 of 3 patients (above R = 100: each input lies in "
                       "[0, R], their sum need not)"))
      << *line;
  EXPECT_FALSE(Contains(*line, "out of range")) << *line;
  EXPECT_EQ(hospital.Wait(kWait), 0);
}

// A patient that crashes (SIGKILL where tally-node --vanish-at says "vanish PHASE") before its
// masked input went out is named as dropped and its input is in no sum; one that crashes after
// it, at the unmask phase, is still summed, since the others' unmasks remove its masks. Both
// rounds complete, with the result line and the results file saying which is which.
TEST_F(DeployTest, APatientKilledBeforeItsMaskedInputIsDroppedAndOneKilledAfterIsSummed) {
  ASSERT_TRUE(GenerateParty(keys_, "dave", Role::kPatient, false).ok());
  StartBroker();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"mask", "aggregate 60 over 3 of 4 patients (dropped: dave)"},
      {"unmask", "aggregate 100 over 4 of 4 patients"}};
  for (const auto& [phase, expected] : cases) {
    std::vector<Child> patients;
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, uint64_t>>{{"alice", 10}, {"bob", 20}, {"charlie", 30}})
      patients.push_back(Patient(name, value, {"--once"}));
    Child dave = Patient("dave", 40, {"--once", "--vanish-at", phase});
    for (Child* p : {&patients[0], &patients[1], &patients[2], &dave}) Ready(*p);
    auto hospital = Node("hospital", {"--range", "1000", "--results", results_.string(),
                                      "--participants", "alice,bob,charlie,dave"});
    auto said = dave.ReadLine(kWait);
    ASSERT_EQ(said, "vanish " + phase);
    dave.Signal(SIGKILL);
    EXPECT_EQ(dave.Wait(kWait), 128 + SIGKILL);
    auto line = hospital.ReadLine(kWait);
    ASSERT_TRUE(line) << LastLine(LogOf("hospital"));
    EXPECT_TRUE(Contains(*line, expected)) << *line;
    EXPECT_EQ(hospital.Wait(kWait), 0);
    for (auto& p : patients) EXPECT_EQ(p.Wait(kWait), 0);
    EXPECT_TRUE(Contains(ReadText(LogOf("dave")), "event=vanish round="))
        << ReadText(LogOf("dave"));
  }
  const std::vector<std::string> lines = Lines(ReadText(results_));
  ASSERT_EQ(lines.size(), 2u);
  auto first = ParseResultsLine(lines[0]), second = ParseResultsLine(lines[1]);
  ASSERT_TRUE(first.ok() && first->result && second.ok() && second->result);
  EXPECT_EQ(first->result->aggregate, std::vector<uint64_t>{60});
  EXPECT_EQ(first->result->dropped, std::vector<std::string>{"dave"});
  EXPECT_EQ(second->result->aggregate, std::vector<uint64_t>{100});
  EXPECT_EQ(second->result->dropped, std::vector<std::string>{});
}

// 9. Logs had no timestamps, patients said nothing when stopped, and a failed node's last line
// could say "reconnecting". Every line starts with an RFC 3339 UTC time with milliseconds, and
// every process's last line says why it ends and with which status.
TEST_F(DeployTest, EveryLogLineIsTimestampedAndTheLastSaysWhyAndHow) {
  StartBroker();
  auto alice = Patient("alice", 1, {});
  auto bob = Patient("bob", 2, {});
  Ready(alice);
  Ready(bob);
  auto hospital = Hospital({"--participants", "alice,bob"});
  ASSERT_TRUE(hospital.ReadLine(kWait));
  EXPECT_EQ(hospital.Wait(kWait), 0);
  EXPECT_EQ(alice.Stop(), 0);
  EXPECT_EQ(bob.Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
  const std::regex stamp(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S)");
  for (const std::string name : {"broker", "hospital", "alice", "bob"}) {
    const auto lines = Lines(ReadText(LogOf(name)));
    ASSERT_GE(lines.size(), 2u) << name;
    for (const auto& l : lines) EXPECT_TRUE(std::regex_search(l, stamp)) << name << ": " << l;
  }
  EXPECT_TRUE(Contains(LastLine(LogOf("alice")), ExitLine("node alice", 0, "stopped by SIGTERM")));
  EXPECT_TRUE(
      Contains(LastLine(LogOf("hospital")), ExitLine("node hospital", 0, "every round done")));
  // Two masked inputs and two unmasks (the threshold is 2 of 2), nothing refused.
  EXPECT_TRUE(Contains(LastLine(LogOf("broker")),
                       ExitLine("broker", 0, "stopped by SIGTERM") + " routed=4 rejected=0"));
}

// 10. A world-writable public/ folder (the broker's allowlist, every node's pinned broker key)
// was accepted. The broker and the nodes refuse to start, with the fix in the message.
TEST_F(DeployTest, AKeyFolderOthersCanChangeIsRefusedAtStart) {
  fs::permissions(keys_ / "public", fs::perms::all, fs::perm_options::replace);
  EXPECT_FALSE(cluster_.StartBroker().ok());
  EXPECT_EQ(cluster_.broker().Wait(kWait), 2);
  const std::string folder = (keys_ / "public").string();
  EXPECT_TRUE(Contains(LastLine(LogOf("broker")),
                       ExitLine("broker", 2,
                                folder +
                                    ": permissions 0777 let other users change the roster; "
                                    "fix with: chmod go-w " +
                                    folder)))
      << LastLine(LogOf("broker"));
  auto alice = Patient(
      "alice", 1, {"--once", "--router", "tcp://127.0.0.1:1", "--phases", "tcp://127.0.0.1:1"});
  EXPECT_EQ(alice.Wait(kWait), 2);
  EXPECT_TRUE(Contains(LastLine(LogOf("alice")), "let other users change the roster"));
}

// 11. A --results file that could not be written failed only once the round was computed.
// It is opened at start: the hospital stops before asking for anything.
TEST_F(DeployTest, AnUnwritableResultsFileIsFoundBeforeAnyRound) {
  StartBroker();
  const fs::path bad = dir_.path() / "no-such-folder" / "results.jsonl";
  auto hospital = Node("hospital", {"--range", "1000", "--results", bad.string()});
  EXPECT_EQ(hospital.Wait(kWait), 2);
  EXPECT_TRUE(Contains(
      LastLine(LogOf("hospital")),
      ExitLine("node hospital", 2,
               "cannot open the results file " + bad.string() + ": No such file or directory")))
      << LastLine(LogOf("hospital"));
  EXPECT_EQ(cluster_.StopBroker(), 0);
  EXPECT_FALSE(Contains(ReadText(LogOf("broker")), "round-open"));
}

// 12. A broker of 9,800 patients heartbeat every 5 s on each of its 19,600 connections, and
// libzmq cancels a timer by scanning its I/O thread's timers: that thread's core went to the
// scans, handshakes timed out, their retries added load, and admission stalled near 4,000
// (tally-bench --load 9800). A broker now heartbeats every max(5 s, 5 ms per connection).
TEST_F(DeployTest, ABrokerOf1200PartiesHeartbeatsEvery12SecondsNot5) {
  StartBroker();
  EXPECT_TRUE(Contains(ReadText(LogOf("broker")), " parties=5 ")) << ReadText(LogOf("broker"));
  EXPECT_TRUE(Contains(ReadText(LogOf("broker")), " heartbeat_ms=5000\n"));
  EXPECT_EQ(cluster_.StopBroker(), 0);
  std::vector<std::string> many;
  for (int k = 1; k <= 1198; ++k) many.push_back("p" + std::to_string(k));
  Cluster big(kBin, dir_.path() / "big", dir_.path() / "big");
  ASSERT_TRUE(big.Prepare("hospital", many).ok());
  ASSERT_TRUE(big.StartBroker().ok());
  const std::string log = ReadText(dir_.path() / "big/broker.log");
  EXPECT_TRUE(Contains(log, " parties=1200 ")) << log;
  EXPECT_TRUE(Contains(log, " heartbeat_ms=12000\n")) << log;  // 5 ms x 2,400 connections
}

}  // namespace
}  // namespace tally::test
