// A real patient (tally::Node, in-process, on its own thread) against a scripted broker written
// here: a ROUTER and an XPUB bound on loopback as CURVE servers with the broker's key, no ZAP
// handler. The scripted broker publishes the phase updates, sends the batches the coordinator
// would send, and reads the patient's joins, batches and envelopes from its ROUTER; the other
// patients of the round are played by the test with PatientRound (nodes/patient_round.h) and
// the hospital's side with HospitalRound, so a round played this way ends in an exact
// aggregate. Because the broker is scripted it can also do what a malicious broker would:
// announce a phase that differs from the round the patient joined, or hand it keys that their
// owner did not sign.
//
// No sleeps: every wait is a bounded socket poll or a bounded wait on a log line. "Nothing was
// sent" is proven with a barrier: the patient is single-threaded and its DEALER -> ROUTER
// stream is ordered, so once the Join for a later round arrives, anything it sent for the
// earlier round has arrived before it.
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "keys/keys.h"
#include "nodes/hospital_round.h"
#include "nodes/node.h"
#include "nodes/patient_round.h"
#include "nodes/seal.h"
#include "schema/schema.h"
#include "schema/text.h"
#include "tests/support.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kRange = 1000;
constexpr uint64_t kAliceInput = 742;
// The other patients' inputs, by position in the round (alice is 0).
const std::vector<uint64_t> kInputs = {kAliceInput, 101, 202, 303};

RoundId FreshRound() {
  RoundId r;
  randombytes_buf(r.data(), r.size());
  return r;
}

std::string Describe(const Message& m) {
  if (auto* e = std::get_if<Envelope>(&m))
    return "an envelope " + std::string(KindName(e->kind)) + " " + e->from + "->" + e->to +
           " for round " + RoundHex(e->round);
  if (auto* j = std::get_if<Join>(&m)) return "a join for round " + RoundHex(j->round);
  if (auto* r = std::get_if<Refuse>(&m)) return "a refusal: " + r->reason;
  if (auto* b = std::get_if<Batch>(&m))
    return "a " + std::string(BatchKindName(b->kind)) + " batch for round " + RoundHex(b->round);
  return "message type index " + std::to_string(m.index());
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += "  " + l + "\n";
  return out;
}

Members All(size_t n) { return Members(n, true); }

// cpk || spk || signature: a keys batch item for `join`.
BatchItem KeysItem(size_t index, const Join& join) {
  BatchItem item{static_cast<uint32_t>(index), {}};
  item.data.insert(item.data.end(), join.cpk.begin(), join.cpk.end());
  item.data.insert(item.data.end(), join.spk.begin(), join.spk.end());
  item.data.insert(item.data.end(), join.signature.begin(), join.signature.end());
  return item;
}

// One round as the scripted broker plays it: the joins, the other patients' PatientRounds and
// what each participant sent, by position in the round (alice, the real patient, is 0).
struct Script {
  PhaseUpdate open;
  std::vector<uint8_t> alice;  // alice's routing id
  std::vector<Join> joins;
  std::vector<std::optional<PatientRound>> peers;  // [0] stays empty
  std::vector<Batch> shares;
  std::vector<std::optional<Envelope>> partials, unmasks;
  std::vector<Batch> confirmations;
  PhaseUpdate last;  // the latest update published
};

class PatientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    keys_ = MakeKeys(dir_.path(), {"alice", "bob", "carol", "dave"});
    // A second hospital in the roster: the broker may not redirect alice's input to it.
    auto second = GenerateParty(keys_, "hospital2", Role::kHospital, false);
    ASSERT_TRUE(second.ok()) << second.message();
    broker_ = std::make_unique<FakeBroker>(keys_);
    ASSERT_FALSE(broker_->router_endpoint().empty());
    hospital_ = std::make_unique<Sealer>(MakeSealer(keys_, "hospital"));
    for (const std::string name : {"alice", "bob", "carol", "dave"})
      sealers_[name] = std::make_unique<Sealer>(MakeSealer(keys_, name));
  }

  void TearDown() override {
    if (!node_) return;
    node_->Stop();
    thread_.join();
  }

  // Starts alice, a patient with `input` (NodeOptions as `tweak` leaves them), and waits until
  // her subscription has reached the phase channel.
  void StartAlice(const std::function<void(NodeOptions&)>& tweak = nullptr,
                  std::vector<uint64_t> input = {kAliceInput}) {
    NodeOptions o;
    o.keys_dir = keys_;
    o.name = "alice";
    o.router_endpoint = broker_->router_endpoint();
    o.phases_endpoint = broker_->phases_endpoint();
    for (uint64_t v : input) o.input.cells.push_back(std::to_string(v));
    if (tweak) tweak(o);
    auto node = Node::Create(o, log_.Sink(), nullptr);
    ASSERT_TRUE(node.ok()) << node.message();
    node_ = std::move(node.value());
    ASSERT_FALSE(node_->is_hospital());
    run_ = std::make_shared<std::promise<Status>>();
    run_status_ = run_->get_future();
    thread_ = std::thread([this, run = run_] { run->set_value(node_->Run()); });
    ASSERT_TRUE(broker_->WaitSubscriber()) << "alice's subscription never reached the XPUB";
  }

  // What alice's Run() returned, once it returns by itself (a --once patient); nullopt if it
  // does not within kWait.
  std::optional<Status> RunResult() {
    if (run_status_.wait_for(kWait) != std::future_status::ready) return std::nullopt;
    return run_status_.get();
  }

  // Stops a serving alice; her Run() must have ended well.
  void StopAlice() {
    node_->Stop();
    thread_.join();
    auto status = RunResult();
    ASSERT_TRUE(status);
    EXPECT_TRUE(status->ok()) << "alice's Run() failed: " << status->message();
    node_.reset();
  }

  PhaseUpdate Open(const RoundId& round,
                   std::vector<std::string> participants = {"alice", "bob", "carol", "dave"},
                   uint32_t threshold = 3) {
    PhaseUpdate u;
    u.round = round;
    u.phase = Phase::kOpen;
    u.seq = ++seq_;
    u.ticket = 77;
    u.params.hospital = "hospital";
    u.params.range = kRange;
    u.params.length = 1;
    u.params.participants = std::move(participants);
    u.params.threshold = threshold;
    u.deadline_ms = 10000;
    return u;
  }

  PhaseUpdate Next(const PhaseUpdate& before, Phase phase) {
    PhaseUpdate u = before;
    u.phase = phase;
    u.seq = ++seq_;
    return u;
  }

  // The next message on the router, which must be a `T` from alice.
  template <typename T>
  std::optional<T> ExpectFromAlice(const std::string& what) {
    auto r = broker_->Receive();
    EXPECT_TRUE(r.has_value()) << "no " << what << " from alice\nalice logged:\n"
                               << Joined(log_.Lines());
    if (!r) return std::nullopt;
    auto* m = std::get_if<T>(&r->message);
    EXPECT_NE(m, nullptr) << "expected " << what << ", got " << Describe(r->message);
    if (!m) return std::nullopt;
    last_identity_ = r->identity;
    return *m;
  }

  // Publishes `open` and returns alice's Join for it: for its round, with round keys signed
  // with alice's certificate over exactly this round's parameters.
  std::optional<Join> ExpectJoin(const PhaseUpdate& open) {
    broker_->Publish(open);
    auto join = ExpectFromAlice<Join>("a join for round " + RoundHex(open.round));
    if (!join) return std::nullopt;
    EXPECT_EQ(RoundHex(join->round), RoundHex(open.round));
    EXPECT_NE(join->cpk, join->spk);
    const RoundDigest digest = DigestOf(open.round, open.params);
    EXPECT_TRUE(hospital_->Verify("alice", KeysStatement(digest, "alice", {join->cpk, join->spk}),
                                  join->signature))
        << "alice's join is not signed by alice over this round";
    // Signed for this round only: another round's digest does not verify.
    EXPECT_FALSE(hospital_->Verify(
        "alice",
        KeysStatement(DigestOf(FreshRound(), open.params), "alice", {join->cpk, join->spk}),
        join->signature));
    return join;
  }

  // Alice joins `open` (published here) and the test's patients join it too.
  Script JoinAll(const PhaseUpdate& open) {
    Script s;
    s.open = open;
    s.last = open;
    const size_t n = open.params.participants.size();
    s.joins.resize(n);
    s.peers.resize(n);
    s.shares.resize(n);
    s.partials.resize(n);
    s.unmasks.resize(n);
    s.confirmations.resize(n);
    auto join = ExpectJoin(open);
    EXPECT_TRUE(join);
    if (join) s.joins[0] = *join;
    s.alice = last_identity_;
    for (size_t v = 1; v < n; ++v) {
      auto r = PatientRound::Join(*sealers_[open.params.participants[v]], open, {kInputs[v]});
      EXPECT_TRUE(r.ok()) << r.message();
      s.peers[v].emplace(std::move(r.value()));
      s.joins[v] = s.peers[v]->join();
    }
    return s;
  }

  // The keys batch for participant `w` (every other member of U1), or for the hospital
  // (nullopt: every member).
  static Batch KeysFor(const Script& s, const Members& joined, std::optional<size_t> w) {
    Batch b{s.open.round, BatchKind::kKeys, {}};
    for (size_t v = 0; v < joined.size(); ++v)
      if (joined[v] && v != w) b.items.push_back(KeysItem(v, s.joins[v]));
    return b;
  }

  // The share phase with everyone joined: alice gets `keys` (her keys batch unless given) and
  // must answer with one sealed share for each other patient; the test's patients share too.
  PhaseUpdate Share(Script& s, std::optional<Batch> keys = std::nullopt) {
    const size_t n = s.open.params.participants.size();
    PhaseUpdate u = Next(s.open, Phase::kShare);
    u.sets.joined = All(n);
    s.last = u;
    broker_->SendTo(s.alice, keys ? *keys : KeysFor(s, u.sets.joined, 0));
    broker_->Publish(u);
    if (keys) return u;  // the caller expects what alice does with it
    auto shares = ExpectFromAlice<Batch>("shares");
    EXPECT_TRUE(shares);
    if (shares) {
      EXPECT_EQ(shares->kind, BatchKind::kShares);
      EXPECT_EQ(RoundHex(shares->round), RoundHex(s.open.round));
      EXPECT_EQ(shares->items.size(), n - 1);
      for (size_t k = 0; k < shares->items.size(); ++k) {
        EXPECT_EQ(shares->items[k].index, k + 1);
        EXPECT_EQ(shares->items[k].data.size(), kSealedShareSize);
      }
      s.shares[0] = *shares;
    }
    EXPECT_EQ(log_.Count("node alice event=shares-sent round=" + RoundHex(s.open.round) +
                         " to=" + std::to_string(n - 1)),
              1u);
    for (size_t v = 1; v < n; ++v) {
      auto b = s.peers[v]->Shares(u, KeysFor(s, u.sets.joined, v));
      EXPECT_TRUE(b.ok()) << b.message();
      if (b.ok()) s.shares[v] = *b;
    }
    return u;
  }

  // The shares batch for `w`: what each other member of U2 sealed to it.
  static Batch SharesFor(const Script& s, const Members& shared, size_t w) {
    Batch b{s.open.round, BatchKind::kShares, {}};
    for (size_t v = 0; v < shared.size(); ++v) {
      if (!shared[v] || v == w) continue;
      for (const BatchItem& item : s.shares[v].items)
        if (item.index == w) b.items.push_back({static_cast<uint32_t>(v), item.data});
    }
    return b;
  }

  // The mask phase with everyone shared: alice sends her masked input to the hospital; of the
  // test's patients, those in `masking` do too.
  PhaseUpdate Mask(Script& s, const Members& masking) {
    const size_t n = s.open.params.participants.size();
    PhaseUpdate u = Next(s.last, Phase::kMask);
    u.sets.shared = All(n);
    s.last = u;
    broker_->Publish(u);
    broker_->SendTo(s.alice, SharesFor(s, u.sets.shared, 0));
    auto env = ExpectFromAlice<Envelope>("a masked input");
    EXPECT_TRUE(env);
    if (env) {
      EXPECT_EQ(env->kind, EnvelopeKind::kPartial);
      EXPECT_EQ(RoundHex(env->round), RoundHex(s.open.round));
      EXPECT_EQ(env->from, "alice");
      EXPECT_EQ(env->to, "hospital");
      s.partials[0] = *env;
    }
    for (size_t v = 1; v < n; ++v) {
      if (!masking[v]) continue;
      auto e = s.peers[v]->Masked(u, SharesFor(s, u.sets.shared, v));
      EXPECT_TRUE(e.ok()) << e.message();
      if (e.ok()) s.partials[v] = *e;
    }
    return u;
  }

  // The confirm phase (survivors `masked`): alice confirms them with her signature alone, and
  // so do the test's survivors.
  PhaseUpdate Confirm(Script& s, const Members& masked) {
    PhaseUpdate u = Next(s.last, Phase::kConfirm);
    u.sets.masked = masked;
    s.last = u;
    broker_->Publish(u);
    auto confirmation = ExpectFromAlice<Batch>("a confirmation");
    EXPECT_TRUE(confirmation);
    if (confirmation) {
      EXPECT_EQ(confirmation->kind, BatchKind::kConfirm);
      EXPECT_EQ(confirmation->items.size(), 1u);
      if (confirmation->items.size() == 1) {
        EXPECT_EQ(confirmation->items[0].index, 0u);
        // The view (U2 and every member's round keys) is the same for every member of U2:
        // bob's is alice's.
        EXPECT_TRUE(hospital_->Verify("alice",
                                      ConfirmStatement(s.peers[1]->view(), "alice", u.sets.masked),
                                      confirmation->items[0].data))
            << "alice's confirmation is not her signature on her view and U3";
      }
      s.confirmations[0] = *confirmation;
    }
    for (size_t v = 1; v < masked.size(); ++v)
      if (masked[v]) s.confirmations[v] = s.peers[v]->Confirmation(u);
    return u;
  }

  // The confirmations for `w`: every other member of U4's.
  static Batch ConfirmationsFor(const Script& s, const Members& confirmed, size_t w) {
    Batch b{s.open.round, BatchKind::kConfirm, {}};
    for (size_t v = 0; v < confirmed.size(); ++v)
      if (confirmed[v] && v != w) b.items.push_back(s.confirmations[v].items.at(0));
    return b;
  }

  // The unmask phase: alice sends her unmask (after a confirm phase, once she has the
  // confirmations), and so do the test's unmaskers.
  PhaseUpdate Unmask(Script& s) {
    PhaseUpdate u = Next(s.last, Phase::kUnmask);
    const bool dropout = !u.sets.masked.empty() && u.sets.masked != u.sets.shared;
    if (u.sets.masked.empty()) u.sets.masked = u.sets.shared;
    if (dropout) u.sets.confirmed = u.sets.masked;
    s.last = u;
    broker_->Publish(u);
    if (dropout) broker_->SendTo(s.alice, ConfirmationsFor(s, u.sets.confirmed, 0));
    auto env = ExpectFromAlice<Envelope>("an unmask");
    EXPECT_TRUE(env);
    if (env) {
      EXPECT_EQ(env->kind, EnvelopeKind::kUnmask);
      EXPECT_EQ(env->from, "alice");
      EXPECT_EQ(env->to, "hospital");
      s.unmasks[0] = *env;
    }
    const Members& unmaskers = Unmaskers(u.sets);
    for (size_t v = 1; v < unmaskers.size(); ++v) {
      if (!unmaskers[v]) continue;
      Batch confirmations = ConfirmationsFor(s, u.sets.confirmed, v);
      auto e = s.peers[v]->Unmask(u, dropout ? &confirmations : nullptr);
      EXPECT_TRUE(e.ok()) << e.message();
      if (e.ok()) s.unmasks[v] = *e;
    }
    return u;
  }

  // What the hospital computes from everything the patients sent it: the aggregate of the
  // survivors (HospitalRound, as tally-node's hospital does).
  std::vector<uint64_t> HospitalAggregate(const Script& s, const PhaseUpdate& unmask) {
    HospitalRound h(*hospital_, s.open.round, s.open.params);
    Status learned = h.Learn(KeysFor(s, unmask.sets.joined, std::nullopt), unmask.sets);
    EXPECT_TRUE(learned.ok()) << learned.message();
    if (!learned.ok()) return {};
    for (size_t v = 0; v < s.partials.size(); ++v) {
      if (!unmask.sets.masked[v]) continue;
      EXPECT_TRUE(s.partials[v]) << v;
      if (!s.partials[v]) return {};
      Status added = h.AddPartial(*s.partials[v], v);
      EXPECT_TRUE(added.ok()) << v << ": " << added.message();
    }
    const Members& unmaskers = Unmaskers(unmask.sets);
    for (size_t v = 0; v < s.unmasks.size(); ++v) {
      if (!unmaskers[v] || !s.unmasks[v]) continue;
      auto kept = h.AddUnmask(*s.unmasks[v], v, unmask.sets);
      EXPECT_TRUE(kept.ok()) << v << ": " << kept.message();
    }
    EXPECT_TRUE(h.Ready(unmask.sets));
    if (!h.Ready(unmask.sets)) return {};
    auto sum = h.Aggregate(unmask.sets);
    EXPECT_TRUE(sum.ok()) << sum.message();
    return sum.ok() ? *sum : std::vector<uint64_t>{};
  }

  size_t CountExact(const std::string& line) {
    auto lines = log_.Lines();
    return static_cast<size_t>(std::count(lines.begin(), lines.end(), line));
  }
  static std::string LeftLine(const RoundId& round, const std::string& reason) {
    return "node alice event=round-left round=" + RoundHex(round) + " reason=" + Quote(reason);
  }

  TempDir dir_;
  fs::path keys_;
  LogWatcher log_;
  std::unique_ptr<FakeBroker> broker_;
  std::unique_ptr<Sealer> hospital_;
  std::map<std::string, std::unique_ptr<Sealer>> sealers_;
  std::unique_ptr<Node> node_;
  std::thread thread_;
  std::shared_ptr<std::promise<Status>> run_;
  std::future<Status> run_status_;
  std::vector<uint8_t> last_identity_;
  uint64_t seq_ = 0;
};

// Positive control: a whole round without a dropout. Alice joins with signed round keys,
// shares once the keys batch is valid, masks, and unmasks without a confirm phase; from what
// she and the test's patients sent, the hospital's arithmetic gives exactly the sum of the
// four inputs. Repeated updates change nothing.
TEST_F(PatientTest, PlaysAWholeRoundAndTheHospitalGetsTheExactSum) {
  StartAlice();
  const PhaseUpdate open = Open(FreshRound());
  Script s = JoinAll(open);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(open.round)), 1u);
  Share(s);
  ASSERT_FALSE(HasFailure());
  Mask(s, All(4));
  ASSERT_FALSE(HasFailure());
  // Alice's masked input is not her input: the hospital cannot open it under another view.
  const PhaseUpdate unmask = Unmask(s);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(HospitalAggregate(s, unmask),
            std::vector<uint64_t>{kInputs[0] + kInputs[1] + kInputs[2] + kInputs[3]});

  // Every update repeated (as the broker's last-value cache does): nothing more goes out.
  broker_->Publish(unmask);
  broker_->Publish(s.last);
  PhaseUpdate done = Next(unmask, Phase::kDone);
  broker_->Publish(done);
  ASSERT_TRUE(log_.WaitFor("node alice event=round-done round=" + RoundHex(open.round)));
  // Barrier: the next round's join is the next thing on the router.
  ExpectJoin(Open(FreshRound()));
  EXPECT_EQ(log_.Count("event=partial-sent round=" + RoundHex(open.round) + " to=hospital"), 1u);
  EXPECT_EQ(log_.Count("event=unmask-sent round=" + RoundHex(open.round) + " to=hospital"), 1u);
  EXPECT_EQ(log_.Count("event=round-left"), 0u);
  EXPECT_EQ(log_.Count("event=reject"), 0u);
  StopAlice();
}

// dave shares and then vanishes before his masked input: the survivors are alice, bob and
// carol. Alice confirms them with her signature, unmasks once T - 1 = 2 other survivors'
// confirmations are in, and the hospital gets exactly the sum of the three survivors.
TEST_F(PatientTest, ConfirmsAndUnmasksAfterADropoutAndTheSumIsOverTheSurvivors) {
  StartAlice();
  const PhaseUpdate open = Open(FreshRound());
  Script s = JoinAll(open);
  Share(s);
  Mask(s, {true, true, true, false});
  ASSERT_FALSE(HasFailure());
  Confirm(s, {true, true, true, false});
  ASSERT_FALSE(HasFailure());
  const PhaseUpdate unmask = Unmask(s);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(unmask.sets.confirmed, (Members{true, true, true, false}));
  EXPECT_EQ(HospitalAggregate(s, unmask),
            std::vector<uint64_t>{kInputs[0] + kInputs[1] + kInputs[2]});
  broker_->Publish(Next(unmask, Phase::kDone));
  ASSERT_TRUE(log_.WaitFor("node alice event=round-done round=" + RoundHex(open.round)));
  StopAlice();
}

// After a dropout, alice reveals her share of dave's mask secret only when T - 1 other
// survivors confirmed the same sets: with bob's confirmation alone (and carol's forged by
// flipping a bit) she stops, sending nothing, and says why.
TEST_F(PatientTest, DoesNotUnmaskWithoutEnoughConfirmations) {
  StartAlice();
  const PhaseUpdate open = Open(FreshRound());
  Script s = JoinAll(open);
  Share(s);
  Mask(s, {true, true, true, false});
  Confirm(s, {true, true, true, false});
  ASSERT_FALSE(HasFailure());
  PhaseUpdate u = Next(s.last, Phase::kUnmask);
  u.sets.confirmed = u.sets.masked;
  Batch confirmations = ConfirmationsFor(s, u.sets.confirmed, 0);
  ASSERT_EQ(confirmations.items.size(), 2u);
  confirmations.items[1].data[0] ^= 0x01;  // carol's
  broker_->Publish(u);
  broker_->SendTo(s.alice, confirmations);
  const std::string left =
      LeftLine(open.round, "only 1 of the survivors confirmed them, the threshold is 3");
  ASSERT_TRUE(log_.WaitFor(left)) << Joined(log_.Lines());
  ExpectJoin(Open(FreshRound()));  // barrier: no unmask went out before it
  EXPECT_EQ(log_.Count("event=unmask-sent"), 0u);
  EXPECT_EQ(CountExact(left), 1u);
  StopAlice();
}

// A keys batch whose signatures are not their owners' (the broker, or whoever stole bob's
// static key, putting round keys of its own in bob's place): alice shares nothing, leaves the
// round with the exact reason, and a --once alice ends with it.
TEST_F(PatientTest, RefusesAKeysBatchWithABadSignature) {
  StartAlice([](NodeOptions& o) { o.once = true; });
  const PhaseUpdate open = Open(FreshRound());
  Script s = JoinAll(open);
  ASSERT_FALSE(HasFailure());
  Batch keys = KeysFor(s, All(4), 0);
  ASSERT_EQ(keys.items[0].index, 1u);
  keys.items[0].data[2 * kRoundKeySize] ^= 0x01;  // a bit of bob's signature
  Share(s, keys);
  const std::string why = "the keys of bob are not signed by bob";
  ASSERT_TRUE(log_.WaitFor(LeftLine(open.round, why))) << Joined(log_.Lines());
  auto status = RunResult();
  ASSERT_TRUE(status) << "a --once alice did not end";
  EXPECT_EQ(status->message(), "left round " + RoundHex(open.round) + ": " + why);
  EXPECT_FALSE(status->ok());
  EXPECT_EQ(log_.Count("event=shares-sent"), 0u);
  auto sent = broker_->Receive(milliseconds(0));
  EXPECT_FALSE(sent) << "alice sent " << Describe(sent->message);
  node_->Stop();
  thread_.join();
  node_.reset();
}

// Keys with a valid signature, but carol's over bob's keys: bob did not sign them.
TEST_F(PatientTest, RefusesKeysSignedByAnotherPatient) {
  StartAlice();
  const PhaseUpdate open = Open(FreshRound());
  Script s = JoinAll(open);
  ASSERT_FALSE(HasFailure());
  const RoundDigest digest = DigestOf(open.round, open.params);
  Join forged = s.joins[1];
  forged.signature =
      sealers_["carol"]->Sign(KeysStatement(digest, "bob", {forged.cpk, forged.spk}));
  s.joins[1] = forged;
  Share(s, KeysFor(s, All(4), 0));
  ASSERT_TRUE(log_.WaitFor(LeftLine(open.round, "the keys of bob are not signed by bob")))
      << Joined(log_.Lines());
  ExpectJoin(Open(FreshRound()));  // barrier: no shares went out before it
  EXPECT_EQ(log_.Count("event=shares-sent"), 0u);
  StopAlice();
}

// Regression (twin keys, found by the attack review of protocol 3): carol, corrupt, signs
// bob's round keys as her own, so that two of alice's pairwise masks would cancel. Her
// signature is valid; alice refuses the batch all the same, sharing nothing.
TEST_F(PatientTest, RefusesAKeysBatchWhereTwoPatientsHaveTheSameKeys) {
  StartAlice();
  const PhaseUpdate open = Open(FreshRound());
  Script s = JoinAll(open);
  ASSERT_FALSE(HasFailure());
  const RoundDigest digest = DigestOf(open.round, open.params);
  Join twin = s.joins[1];
  twin.signature = sealers_["carol"]->Sign(KeysStatement(digest, "carol", {twin.cpk, twin.spk}));
  s.joins[2] = twin;
  Share(s, KeysFor(s, All(4), 0));
  ASSERT_TRUE(log_.WaitFor(LeftLine(open.round, "the round keys of bob and carol are the same")))
      << Joined(log_.Lines());
  ExpectJoin(Open(FreshRound()));  // barrier: no shares went out before it
  EXPECT_EQ(log_.Count("event=shares-sent"), 0u);
  StopAlice();
}

// --max-corrupt C: a round of 4 patients with threshold 3 hides an input from only
// min(2*3-4-1, 3-2) = 1 colluding patient; alice, who allows for 2, refuses it with the exact
// reason (and a --once alice ends with it). Threshold 4 hides it from min(3, 2) = 2: she joins.
TEST_F(PatientTest, RefusesARoundWhoseThresholdToleratesFewerCorruptPatientsThanItsMaximum) {
  StartAlice([](NodeOptions& o) {
    o.max_corrupt = 2;
    o.once = true;
  });
  const PhaseUpdate weak = Open(FreshRound(), {"alice", "bob", "carol", "dave"}, 3);
  ASSERT_EQ(CollusionTolerance(4, 3), 1u);
  broker_->Publish(weak);
  auto refusal = ExpectFromAlice<Refuse>("a refusal");
  ASSERT_TRUE(refusal);
  const std::string why =
      "the round hides an input from 1 colluding patients (4 patients, threshold 3), fewer than "
      "this patient's 2";
  EXPECT_EQ(RoundHex(refusal->round), RoundHex(weak.round));
  EXPECT_EQ(refusal->reason, why);
  EXPECT_TRUE(log_.WaitFor("node alice event=refuse round=" + RoundHex(weak.round) +
                           " reason=" + Quote(why)));
  auto status = RunResult();
  ASSERT_TRUE(status);
  EXPECT_EQ(status->message(), "refused round " + RoundHex(weak.round) + ": " + why);
  node_->Stop();
  thread_.join();
  node_.reset();

  StartAlice([](NodeOptions& o) { o.max_corrupt = 2; });
  const PhaseUpdate strong = Open(FreshRound(), {"alice", "bob", "carol", "dave"}, 4);
  ASSERT_EQ(CollusionTolerance(4, 4), 2u);
  ExpectJoin(strong);
  StopAlice();
}

// Regression (found by an implementation written from PROTOCOL.md alone): a node read each
// frame as a message, so a two-frame [empty, open] was acted on although every Tally message
// is one frame. A message of more than one frame is dropped whole, with a log line; the next
// round's open, published whole, is the first alice joins.
TEST_F(PatientTest, AMessageOfMoreThanOneFrameIsDroppedWhole) {
  StartAlice();
  const PhaseUpdate split = Open(FreshRound());
  broker_->PublishTwoFrames({}, split);
  broker_->PublishTwoFrames(Encode(split), split);
  const PhaseUpdate whole = Open(FreshRound());
  ExpectJoin(whole);
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(split.round)), 0u);
  EXPECT_EQ(log_.Count("node alice event=reject source=phases reason=\"a message of more than "
                       "one frame\""),
            2u);
  StopAlice();
}

// A malicious broker changes one thing between the open phase alice joined and the share
// phase.
struct Tamper {
  std::string name;
  std::function<void(PhaseUpdate& share)> apply;
};

void PrintTo(const Tamper& t, std::ostream* os) { *os << t.name; }

class PatientTamperTest : public PatientTest, public ::testing::WithParamInterface<Tamper> {};

TEST_P(PatientTamperTest, SendsNothingForASharePhaseThatDiffersFromTheRoundItJoined) {
  StartAlice();
  const PhaseUpdate open = Open(FreshRound());
  Script s = JoinAll(open);
  ASSERT_FALSE(HasFailure());
  PhaseUpdate honest = Next(open, Phase::kShare);
  honest.sets.joined = All(4);
  PhaseUpdate share = honest;
  GetParam().apply(share);
  ASSERT_NE(share, honest) << "the tamper changed nothing";
  broker_->SendTo(s.alice, KeysFor(s, All(4), 0));
  broker_->Publish(share);

  // Wait, bounded, for alice's verdict: the line saying she left — or, were she fooled, her
  // shares on the router.
  const std::string left = LeftLine(open.round, "the share phase is not the round as opened");
  auto sent = broker_->ReceiveUntil(
      [&] { return CountExact(left) >= 1 || log_.Count("event=shares-sent") > 0; });
  EXPECT_FALSE(sent.has_value()) << "alice sent " << Describe(sent->message)
                                 << " for a tampered share phase";
  ASSERT_EQ(CountExact(left), 1u) << "expected the line: " << left << "\nalice logged:\n"
                                  << Joined(log_.Lines());

  // The tampered update repeated, then the honest one: still nothing (she left the round).
  broker_->Publish(share);
  broker_->Publish(honest);
  ExpectJoin(Open(FreshRound()));  // barrier
  EXPECT_EQ(CountExact(left), 1u);
  EXPECT_EQ(log_.Count("event=shares-sent"), 0u);
  EXPECT_EQ(log_.Count("event=reject"), 0u);
  StopAlice();
}

std::vector<Tamper> Tampers() {
  return {
      {"OtherHospital", [](PhaseUpdate& u) { u.params.hospital = "hospital2"; }},
      {"OtherRange", [](PhaseUpdate& u) { u.params.range = kRange + 1; }},
      {"OtherLength", [](PhaseUpdate& u) { u.params.length = 2; }},
      {"OtherThreshold", [](PhaseUpdate& u) { u.params.threshold = 4; }},
      {"DropsDave",
       [](PhaseUpdate& u) {
         u.params.participants.pop_back();
         u.sets.joined.pop_back();
       }},
      {"BobAndDaveSwapped",
       [](PhaseUpdate& u) { std::swap(u.params.participants[1], u.params.participants[3]); }},
      {"Reordered",
       [](PhaseUpdate& u) { std::swap(u.params.participants[0], u.params.participants[1]); }},
      {"HospitalForDave", [](PhaseUpdate& u) { u.params.participants[3] = "hospital2"; }},
  };
}

INSTANTIATE_TEST_SUITE_P(Tampered, PatientTamperTest, ::testing::ValuesIn(Tampers()),
                         [](const ::testing::TestParamInfo<Tamper>& info) {
                           return info.param.name;
                         });

// Every join draws fresh round keys; an old round's open replayed is not joined again; a round
// opened while alice is in another makes her leave that one.
TEST_F(PatientTest, DrawsFreshRoundKeysForEveryJoin) {
  StartAlice();
  const PhaseUpdate open1 = Open(FreshRound());
  Script first = JoinAll(open1);
  Share(first);
  Mask(first, All(4));
  const PhaseUpdate unmask1 = Unmask(first);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(HospitalAggregate(first, unmask1),
            std::vector<uint64_t>{kInputs[0] + kInputs[1] + kInputs[2] + kInputs[3]});
  broker_->Publish(Next(unmask1, Phase::kDone));
  ASSERT_TRUE(log_.WaitFor("node alice event=round-done round=" + RoundHex(open1.round)));

  // The first round's open replayed, then a new round: the next thing alice sends is the new
  // round's join, with keys of its own.
  broker_->Publish(open1);
  const PhaseUpdate open2 = Open(FreshRound());
  Script second = JoinAll(open2);
  ASSERT_FALSE(HasFailure());
  EXPECT_NE(second.joins[0].cpk, first.joins[0].cpk);
  EXPECT_NE(second.joins[0].spk, first.joins[0].spk);
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(open1.round)), 1u);
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(open2.round)), 1u);
  Share(second);
  ASSERT_FALSE(HasFailure());

  // A third round opened before the second is done: alice leaves the second and joins the
  // third with yet other keys.
  const PhaseUpdate open3 = Open(FreshRound());
  auto third = ExpectJoin(open3);
  ASSERT_TRUE(third);
  EXPECT_NE(third->cpk, second.joins[0].cpk);
  EXPECT_NE(third->cpk, first.joins[0].cpk);
  EXPECT_EQ(CountExact(LeftLine(open2.round, "a new round opened")), 1u);
  StopAlice();
}

// Regression, named after what the second review of protocol 3 found (the rejoin attack): a
// serving patient remembered only its last 64 rounds, so a broker that opened 64 others could
// reopen a round alice had joined and have her join a second run of it, signing a second view;
// the privacy argument counts one run per patient and round id.
TEST_F(PatientTest, RejoinAttackNeverJoinsARoundIdTwiceEvenAfterManyOtherRounds) {
  StartAlice();
  const PhaseUpdate open1 = Open(FreshRound());
  ASSERT_TRUE(ExpectJoin(open1));
  for (int k = 0; k < 70; ++k) {
    broker_->Publish(Open(FreshRound(), {"alice", "zed"}, 2));
    auto refused = ExpectFromAlice<Refuse>("a refusal");
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->reason, "zed is not in alice's roster");
  }
  broker_->Publish(Next(open1, Phase::kOpen));
  // The next message from alice is the join of a fresh round, not a second join of open1.
  ASSERT_TRUE(ExpectJoin(Open(FreshRound())));
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(open1.round)), 1u);
  StopAlice();
}

// --vanish-at mask: alice shares, then, when the mask phase comes, says so once (the callback
// tally-node prints "vanish mask" from) and acts on nothing more: no masked input, no step
// of a later round, no exit of her own.
TEST_F(PatientTest, VanishAtStopsActingWhenTheRoundReachesThePhase) {
  // The callback comes right after the log line (the line is written before tally-node's launcher
  // is told to kill it): the test waits for the callback, not for the line.
  std::mutex mu;
  std::vector<Phase> vanished;
  std::promise<void> called;
  StartAlice([&](NodeOptions& o) {
    o.vanish_at = Phase::kMask;
    o.on_vanish = [&](Phase p) {
      std::lock_guard<std::mutex> lock(mu);
      vanished.push_back(p);
      if (vanished.size() == 1) called.set_value();
    };
  });
  const PhaseUpdate open = Open(FreshRound());
  Script s = JoinAll(open);
  Share(s);
  ASSERT_FALSE(HasFailure());
  PhaseUpdate mask = Next(s.last, Phase::kMask);
  mask.sets.shared = All(4);
  broker_->Publish(mask);
  broker_->SendTo(s.alice, SharesFor(s, mask.sets.shared, 0));
  ASSERT_EQ(called.get_future().wait_for(kWait), std::future_status::ready) << Joined(log_.Lines());
  EXPECT_EQ(log_.Count("node alice event=vanish round=" + RoundHex(open.round) +
                       " phase=mask note=\"stops acting, to be killed here\""),
            1u)
      << Joined(log_.Lines());
  // The step is skipped where the line is logged: nothing went out before it.
  EXPECT_FALSE(broker_->Receive(milliseconds(0))) << "alice acted after vanishing";
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(vanished, std::vector<Phase>{Phase::kMask});
  }
  EXPECT_EQ(log_.Count("event=partial-sent"), 0u);
  EXPECT_EQ(run_status_.wait_for(milliseconds(0)), std::future_status::timeout)
      << "alice exited by herself";
  StopAlice();
}

// A --once alice ends with the round: ok when it is done, an error naming the round and the
// reason when it aborts (and the log says which).
// Regression, named after what the third review of protocol 3 found: a --once patient whose
// round ended still acted on the rest of what the same poll brought, so the next round's open,
// published right behind the abort (a queued request), had it join a round it then left.
TEST_F(PatientTest, OncePatientDoesNotJoinTheRoundOpenedRightAfterItsRoundEnded) {
  StartAlice([](NodeOptions& o) { o.once = true; });
  const PhaseUpdate open1 = Open(FreshRound());
  ASSERT_TRUE(ExpectJoin(open1));
  PhaseUpdate abort = Next(open1, Phase::kAbort);
  abort.reason = "carol did not join (3 of 4 did, the threshold is 4)";
  const PhaseUpdate open2 = Open(FreshRound());
  broker_->Publish(abort);
  broker_->Publish(open2);
  auto aborted = RunResult();
  ASSERT_TRUE(aborted);
  EXPECT_EQ(aborted->message(), "round " + RoundHex(open1.round) + " aborted: " + abort.reason);
  thread_.join();
  node_.reset();
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(open2.round)), 0u)
      << Joined(log_.Lines());
  EXPECT_FALSE(broker_->Receive(std::chrono::milliseconds(0)).has_value());
}

TEST_F(PatientTest, OncePatientEndsOkWhenTheRoundIsDoneAndWithTheReasonWhenItAborts) {
  StartAlice([](NodeOptions& o) { o.once = true; });
  const PhaseUpdate open1 = Open(FreshRound());
  Script first = JoinAll(open1);
  Share(first);
  Mask(first, All(4));
  const PhaseUpdate unmask = Unmask(first);
  ASSERT_FALSE(HasFailure());
  broker_->Publish(Next(unmask, Phase::kDone));
  auto done = RunResult();
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->ok()) << done->message();
  EXPECT_EQ(log_.Count("node alice event=round-done round=" + RoundHex(open1.round)), 1u);
  thread_.join();
  node_.reset();

  StartAlice([](NodeOptions& o) { o.once = true; });
  const PhaseUpdate open2 = Open(FreshRound());
  Script second = JoinAll(open2);
  Share(second);
  ASSERT_FALSE(HasFailure());
  const std::string reason =
      "dave dropped out (at most 2 of 4 can send a masked input, the threshold is 3)";
  PhaseUpdate abort = Next(second.last, Phase::kAbort);
  abort.reason = reason;
  broker_->Publish(abort);
  auto aborted = RunResult();
  ASSERT_TRUE(aborted);
  EXPECT_EQ(aborted->message(), "round " + RoundHex(open2.round) + " aborted: " + reason);
  EXPECT_EQ(CountExact("node alice event=round-aborted round=" + RoundHex(open2.round) +
                       " reason=" + Quote(reason)),
            1u)
      << Joined(log_.Lines());
  thread_.join();
  node_.reset();
}

}  // namespace
}  // namespace tally::test
