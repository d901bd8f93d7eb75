// The broker's round coordinator as the state machine it is (broker/coordinator.h): messages and
// made-up times in, actions out. Phases, sets, batches, dropouts and deadlines are tested here to
// the millisecond without waiting; broker_test covers the same coordinator behind real sockets.
// The coordinator never looks inside keys, shares or signatures, so they are made-up bytes that
// say whose they are.
#include "broker/coordinator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "broker/rules.h"
#include "schema/text.h"

namespace tally {
namespace {

using Clock = Coordinator::Clock;
using std::chrono::milliseconds;

constexpr uint32_t kDeadlineMs = 1000;

Certificate Cert(const std::string& name, Role role, uint8_t key) {
  Certificate c;
  c.name = name;
  c.role = role;
  c.curve_public.fill(key);
  c.seal_public.fill(static_cast<uint8_t>(key + 100));
  c.sign_public.fill(static_cast<uint8_t>(key + 200));
  return c;
}

// Every action of one type, in order.
template <typename T>
std::vector<T> All(const Actions& actions) {
  std::vector<T> out;
  for (const Action& a : actions)
    if (const T* t = std::get_if<T>(&a)) out.push_back(*t);
  return out;
}

// The one action of type T; fails the test unless there is exactly one.
template <typename T>
T One(const Actions& actions) {
  std::vector<T> all = All<T>(actions);
  EXPECT_EQ(all.size(), 1u);
  return all.empty() ? T{} : all.front();
}

// A set of `n` participants holding those at `in`.
Members Set(size_t n, std::initializer_list<size_t> in) {
  Members m(n, false);
  for (size_t i : in) m[i] = true;
  return m;
}

// Participant i's made-up round keys and signature: cpk all 0x10+i, spk 0x30+i, signature 0x50+i.
Join JoinOf(const RoundId& round, size_t i) {
  Join j{round, {}, {}, {}};
  j.cpk.fill(static_cast<uint8_t>(0x10 + i));
  j.spk.fill(static_cast<uint8_t>(0x30 + i));
  j.signature.fill(static_cast<uint8_t>(0x50 + i));
  return j;
}
std::vector<uint8_t> KeysItem(const RoundId& round, size_t i) {
  const Join j = JoinOf(round, i);
  std::vector<uint8_t> out(j.cpk.begin(), j.cpk.end());
  out.insert(out.end(), j.spk.begin(), j.spk.end());
  out.insert(out.end(), j.signature.begin(), j.signature.end());
  return out;
}
// The share participant `from` sealed for `to`: kSealedShareSize bytes of 16 * from + to.
std::vector<uint8_t> ShareBytes(size_t from, size_t to) {
  return std::vector<uint8_t>(kSealedShareSize, static_cast<uint8_t>(16 * from + to));
}
// Participant i's confirmation signature: 64 bytes of 0xc0 + i.
std::vector<uint8_t> SignatureBytes(size_t i) {
  return std::vector<uint8_t>(kSignatureSize, static_cast<uint8_t>(0xc0 + i));
}

class CoordinatorTest : public ::testing::Test {
 protected:
  CoordinatorTest()
      : roster_({Cert("hospital", Role::kHospital, 1), Cert("alice", Role::kPatient, 2),
                 Cert("bob", Role::kPatient, 3), Cert("carol", Role::kPatient, 4),
                 Cert("dave", Role::kPatient, 5), Cert("erin", Role::kPatient, 6)}),
        coordinator_(Options(), roster_, Env()) {}

  static CoordinatorOptions Options() {
    CoordinatorOptions o;
    o.deadline_ms = kDeadlineMs;
    o.max_length = 100;
    o.max_queue = 1;
    return o;
  }
  // Round ids 1, 2, 3, ... in their first byte; the wall clock at 1.7e12 ms.
  CoordinatorEnv Env() {
    return CoordinatorEnv{[this] {
                            RoundId id{};
                            id[0] = ++rounds_made_;
                            return id;
                          },
                          [] { return int64_t{1'700'000'000'000}; }};
  }

  static Request Ask(uint64_t ticket, std::vector<std::string> participants,
                     uint32_t deadline_ms = 0, uint32_t threshold = 0) {
    Request r{ticket, {"", 10, 2, std::move(participants)}, deadline_ms};
    r.params.threshold = threshold;
    return r;
  }

  Clock::time_point At(int ms) const { return t0_ + milliseconds(ms); }
  // Every update the coordinator publishes is checked against CheckSets and kept.
  Actions Check(Actions a) {
    for (const auto& p : All<act::Publish>(a)) {
      Status s = CheckSets(p.update);
      EXPECT_TRUE(s.ok()) << PhaseName(p.update.phase) << ": " << s.message();
      published_.push_back(p.update);
    }
    return a;
  }
  Actions Send(const std::string& sender, const Message& m, int at_ms = 0) {
    return Check(coordinator_.OnMessage(sender, m, At(at_ms)));
  }
  Actions Tick(int at_ms) { return Check(coordinator_.Tick(At(at_ms))); }
  Actions Gone(const std::string& party, int at_ms = 0) {
    return Check(coordinator_.Disconnected(party, At(at_ms)));
  }
  // Opens a round for `participants` at time 0; returns its open phase.
  PhaseUpdate Open(std::vector<std::string> participants, uint32_t threshold = 0) {
    return One<act::Publish>(Send("hospital", Ask(1, std::move(participants), 0, threshold)))
        .update;
  }
  const std::string& Name(const PhaseUpdate& u, size_t i) { return u.params.participants[i]; }

  // Participant i joins; returns the actions.
  Actions JoinAs(const PhaseUpdate& u, size_t i, int at_ms = 0) {
    return Send(Name(u, i), JoinOf(u.round, i), at_ms);
  }
  // Participant i sends its shares for every other member of U1.
  Actions ShareAs(const PhaseUpdate& u, size_t i, int at_ms = 0) {
    Batch b{u.round, BatchKind::kShares, {}};
    for (size_t j = 0; j < u.sets.joined.size(); ++j)
      if (j != i && u.sets.joined[j])
        b.items.push_back({static_cast<uint32_t>(j), ShareBytes(i, j)});
    return Send(Name(u, i), b, at_ms);
  }
  // Participant i's envelope of `kind` is routed (as the broker reports once the frame is out).
  Actions RouteAs(const PhaseUpdate& u, size_t i, EnvelopeKind kind, int at_ms = 0) {
    Actions a = Send(Name(u, i), Envelope{kind, u.round, Name(u, i), "hospital", {1}}, at_ms);
    const act::Route route = One<act::Route>(a);
    EXPECT_EQ(route.to, "hospital");
    EXPECT_EQ(route.from, Name(u, i));
    EXPECT_EQ(route.kind, kind);
    return Check(coordinator_.Routed(route, At(at_ms)));
  }
  Actions MaskAs(const PhaseUpdate& u, size_t i, int at_ms = 0) {
    return RouteAs(u, i, EnvelopeKind::kPartial, at_ms);
  }
  Actions UnmaskAs(const PhaseUpdate& u, size_t i, int at_ms = 0) {
    return RouteAs(u, i, EnvelopeKind::kUnmask, at_ms);
  }
  Actions ConfirmAs(const PhaseUpdate& u, size_t i, int at_ms = 0) {
    return Send(
        Name(u, i),
        Batch{u.round, BatchKind::kConfirm, {{static_cast<uint32_t>(i), SignatureBytes(i)}}},
        at_ms);
  }
  // Those at `who` do their step in `u`'s phase at `at_ms`; returns what the last step caused.
  Actions Step(const PhaseUpdate& u, std::initializer_list<size_t> who, int at_ms = 0) {
    Actions last;
    for (size_t i : who) {
      switch (u.phase) {
        case Phase::kOpen:
          last = JoinAs(u, i, at_ms);
          break;
        case Phase::kShare:
          last = ShareAs(u, i, at_ms);
          break;
        case Phase::kMask:
          last = MaskAs(u, i, at_ms);
          break;
        case Phase::kConfirm:
          last = ConfirmAs(u, i, at_ms);
          break;
        case Phase::kUnmask:
          last = UnmaskAs(u, i, at_ms);
          break;
        default:
          ADD_FAILURE() << "no step in " << PhaseName(u.phase);
      }
    }
    return last;
  }
  // The next phase the actions publish (fails unless there is exactly one).
  static PhaseUpdate Next(const Actions& a) { return One<act::Publish>(a).update; }

  // The reason of the one abort the actions publish ("" if there is none).
  static std::string AbortReason(const Actions& a) {
    for (const auto& p : All<act::Publish>(a))
      if (p.update.phase == Phase::kAbort) return p.update.reason;
    return "";
  }
  std::string Refusal(const std::string& sender, const Message& m, int at_ms = 0) {
    Actions a = Send(sender, m, at_ms);
    EXPECT_EQ(a.size(), 1u);
    return One<act::Reject>(a).reason;
  }

  Roster roster_;
  uint8_t rounds_made_ = 0;
  Coordinator coordinator_;
  Clock::time_point t0_ = Clock::now();
  std::vector<PhaseUpdate> published_;
};

const std::vector<std::string> kThree = {"alice", "bob", "carol"};
const std::vector<std::string> kFour = {"alice", "bob", "carol", "dave"};
const std::vector<std::string> kFive = {"alice", "bob", "carol", "dave", "erin"};

// A granted request: logged, its open phase published, then its capture opened with the same
// parameters, the roster's fingerprint and the wall clock.
TEST_F(CoordinatorTest, ARequestOpensARoundPublishesItThenOpensItsCapture) {
  Actions a = Send("hospital", Ask(7, {"alice", "bob"}, 400));
  ASSERT_EQ(a.size(), 3u);
  ASSERT_TRUE(std::holds_alternative<act::Log>(a[0]));
  EXPECT_EQ(std::get<act::Log>(a[0]).fields,
            "event=round-open round=" + RoundHex(RoundId{1}) +
                " hospital=hospital ticket=7 patients=2 threshold=2 length=2 range=10 columns=0 "
                "degree=full deadline_ms=400");
  const auto& open = std::get<act::Publish>(a[1]).update;
  EXPECT_EQ(open.phase, Phase::kOpen);
  EXPECT_EQ(open.round, RoundId{1});
  RoundParams params{"hospital", 10, 2, {"alice", "bob"}};
  params.threshold = 2;  // a request's 0 takes the safe minimum
  EXPECT_EQ(open.params, params);
  EXPECT_EQ(open.sets, RoundSets{});
  EXPECT_EQ(open.deadline_ms, 400u);
  const auto& capture = std::get<act::OpenCapture>(a[2]);
  EXPECT_EQ(capture.header.params, open.params);
  EXPECT_EQ(capture.header.ticket, 7u);
  EXPECT_EQ(capture.header.roster_fingerprint, roster_.Fingerprint());
  EXPECT_EQ(capture.header.opened_unix_ms, 1'700'000'000'000);
  EXPECT_EQ(capture.open, open);
  EXPECT_EQ(capture.opened, At(0));
}

// No participants named: every patient of the roster, in name order, with the safe threshold.
TEST_F(CoordinatorTest, AnEmptyParticipantListIsTheWholeRoster) {
  const PhaseUpdate open = Open({});
  EXPECT_EQ(open.params.participants,
            (std::vector<std::string>{"alice", "bob", "carol", "dave", "erin"}));
  EXPECT_EQ(open.params.threshold, 4u);  // floor(2 * 5 / 3) + 1
}

// A threshold asked for within [SafeThreshold(n), n] is kept.
TEST_F(CoordinatorTest, AThresholdInTheSafeRangeIsKept) {
  EXPECT_EQ(Open(kFive, 5).params.threshold, 5u);
}

// A deadline asked for above the broker's is capped at it.
TEST_F(CoordinatorTest, ARequestedDeadlineIsCappedAtTheBrokers) {
  EXPECT_EQ(Next(Send("hospital", Ask(1, {"alice", "bob"}, 5000))).deadline_ms, kDeadlineMs);
}

// Each refusal answers the ticket with a notice naming why, and opens nothing.
TEST_F(CoordinatorTest, RefusedRequestsGetANoticeWithTheReason) {
  struct Case {
    std::string sender;
    Request request;
    std::string reason;
  };
  Request too_long = Ask(3, {"alice", "bob"});
  too_long.params.length = 101;
  Request too_wide = Ask(4, {"alice", "bob"});
  too_wide.params.range = UINT64_MAX / 2 + 1;
  const std::vector<Case> cases = {
      {"alice", Ask(1, {"alice", "bob"}), "only a hospital may request rounds"},
      {"hospital", Ask(0, {"alice", "bob"}), "ticket 0 is reserved (it marks connection notices)"},
      {"hospital", too_long, "length 101 exceeds the broker's limit 100"},
      {"hospital", too_wide, "range too large: the sum of 2 inputs could exceed 2^64-1"},
      {"hospital", Ask(5, {"alice", "mallory"}), "mallory is not a patient in the roster"},
      {"hospital", Ask(6, {"alice", "hospital"}), "hospital is not a patient in the roster"},
      {"hospital", Ask(7, {"alice"}),
       "a round needs at least 2 patients (the sum of one is that input)"},
      {"hospital", Ask(8, kThree, 0, 2), "threshold 2 is below the safe minimum 3 for 3 patients"},
      {"hospital", Ask(9, kThree, 0, 4), "threshold 4 is above the 3 patients"},
      {"hospital", Ask(10, kFive, 0, 3), "threshold 3 is below the safe minimum 4 for 5 patients"},
  };
  for (const Case& c : cases) {
    Actions a = Send(c.sender, c.request);
    EXPECT_EQ(One<act::Reject>(a).reason, "round request refused: " + c.reason);
    const act::Notify notice = One<act::Notify>(a);
    EXPECT_EQ(notice.ticket, c.request.ticket);
    EXPECT_EQ(notice.reason, "round request refused: " + c.reason);
    EXPECT_TRUE(All<act::Publish>(a).empty()) << c.reason;
  }
  EXPECT_EQ(coordinator_.current(), nullptr);
}

// An honest round: open, share, mask, unmask, done, each phase ending as soon as everyone
// answered, each update with the sets fixed so far; the keys go out with the share phase, the
// shares with the mask phase, each to whom it is for; the ack ends the round.
TEST_F(CoordinatorTest, AnHonestRoundGoesThroughEveryPhaseWithItsSets) {
  const PhaseUpdate open = Open(kThree);
  EXPECT_TRUE(Step(open, {2, 0}).empty());  // joins in any order; the phase waits for bob
  Actions a = JoinAs(open, 1, 10);
  const PhaseUpdate share = Next(a);
  const Members all(3, true);
  EXPECT_EQ(share.phase, Phase::kShare);
  EXPECT_GT(share.seq, open.seq);
  EXPECT_EQ(share.sets, (RoundSets{all, {}, {}, {}}));
  // Each patient gets every other member's cpk || spk || signature, the hospital every member's
  // (kept in the capture: the hospital's view is computed from it).
  const auto sends = All<act::Send>(a);
  ASSERT_EQ(sends.size(), 4u);
  for (size_t w = 0; w < 4; ++w) {
    const bool hospital = w == 3;
    EXPECT_EQ(sends[w].to, hospital ? "hospital" : kThree[w]);
    EXPECT_EQ(sends[w].capture, hospital);
    EXPECT_EQ(sends[w].batch.round, open.round);
    EXPECT_EQ(sends[w].batch.kind, BatchKind::kKeys);
    std::vector<BatchItem> want;
    for (uint32_t u = 0; u < 3; ++u)
      if (u != w) want.push_back({u, KeysItem(open.round, u)});
    EXPECT_EQ(sends[w].batch.items, want) << sends[w].to;
    for (const BatchItem& item : sends[w].batch.items) EXPECT_EQ(item.data.size(), 128u);
  }
  EXPECT_EQ(coordinator_.NextDeadline(), At(10 + kDeadlineMs));

  EXPECT_TRUE(Step(share, {0, 1}).empty());
  a = ShareAs(share, 2, 20);
  const PhaseUpdate mask = Next(a);
  EXPECT_EQ(mask.phase, Phase::kMask);
  EXPECT_EQ(mask.sets, (RoundSets{all, all, {}, {}}));
  // Each member of U2 gets what each other member sealed for it, by sender.
  const auto shares = All<act::Send>(a);
  ASSERT_EQ(shares.size(), 3u);
  for (size_t w = 0; w < 3; ++w) {
    EXPECT_EQ(shares[w].to, kThree[w]);
    EXPECT_FALSE(shares[w].capture);
    EXPECT_EQ(shares[w].batch.kind, BatchKind::kShares);
    std::vector<BatchItem> want;
    for (uint32_t u = 0; u < 3; ++u)
      if (u != w) want.push_back({u, ShareBytes(u, w)});
    EXPECT_EQ(shares[w].batch.items, want) << kThree[w];
  }

  EXPECT_TRUE(Step(mask, {1, 2}).empty());
  const PhaseUpdate unmask = Next(MaskAs(mask, 0, 30));
  EXPECT_EQ(unmask.phase, Phase::kUnmask);  // nobody dropped: no confirm phase
  EXPECT_EQ(unmask.sets, (RoundSets{all, all, all, {}}));

  // Unmasks come until the hospital acknowledges; every unmask in, the phase still waits for it.
  EXPECT_TRUE(Step(unmask, {0, 1, 2}, 40).empty());
  EXPECT_EQ(coordinator_.current()->phase, Phase::kUnmask);
  const PhaseUpdate done = Next(Send("hospital", Ack{open.round}, 50));
  EXPECT_EQ(done.phase, Phase::kDone);
  EXPECT_EQ(done.reason, "");
  EXPECT_EQ(done.sets, unmask.sets);
  EXPECT_EQ(coordinator_.rounds_done(), 1u);
  EXPECT_EQ(coordinator_.current(), nullptr);
  std::vector<Phase> phases;
  for (const auto& u : published_) phases.push_back(u.phase);
  EXPECT_EQ(phases, (std::vector<Phase>{Phase::kOpen, Phase::kShare, Phase::kMask, Phase::kUnmask,
                                        Phase::kDone}));
}

// At the open deadline with at least T joins the round goes on with those who joined: the keys
// batches leave out who did not join, and nobody sends it one.
TEST_F(CoordinatorTest, AtTheOpenDeadlineTheRoundGoesOnWithTheJoinedIfTheyAreT) {
  const PhaseUpdate open = Open(kFive);  // T = 4
  EXPECT_TRUE(Step(open, {0, 1, 3, 4}, 100).empty());
  EXPECT_TRUE(Tick(kDeadlineMs - 1).empty());
  Actions a = Tick(kDeadlineMs);
  const PhaseUpdate share = Next(a);
  EXPECT_EQ(share.phase, Phase::kShare);
  const Members u1 = Set(5, {0, 1, 3, 4});
  EXPECT_EQ(share.sets.joined, u1);
  const auto sends = All<act::Send>(a);
  ASSERT_EQ(sends.size(), 5u);
  std::vector<std::string> to;
  for (const auto& s : sends) to.push_back(s.to);
  EXPECT_EQ(to, (std::vector<std::string>{"alice", "bob", "dave", "erin", "hospital"}));
  std::vector<BatchItem> bobs, hospitals;
  for (uint32_t u : {0u, 3u, 4u}) bobs.push_back({u, KeysItem(open.round, u)});
  for (uint32_t u : {0u, 1u, 3u, 4u}) hospitals.push_back({u, KeysItem(open.round, u)});
  EXPECT_EQ(sends[1].batch.items, bobs);
  EXPECT_EQ(sends[4].batch.items, hospitals);
  // carol is not in U1: her shares (and shares for her) are refused.
  EXPECT_EQ(Refusal("carol", Batch{open.round, BatchKind::kShares, {}}),
            "shares from a patient that did not join");
  Batch with_carol{open.round, BatchKind::kShares, {}};
  for (uint32_t j : {1u, 2u, 3u, 4u}) with_carol.items.push_back({j, ShareBytes(0, j)});
  EXPECT_EQ(Refusal("alice", with_carol), "shares not one for each other patient that joined");
  const PhaseUpdate mask = Next(Step(share, {0, 1, 3, 4}));
  EXPECT_EQ(mask.sets.shared, u1);
}

// Regression (found trying --drop 4 of 10): a reason named three and "1 more", longer than naming
// the fourth; up to four names are all given, from five on three and how many more.
TEST_F(CoordinatorTest, AReasonNamesFourMissingRatherThanThreeAndOneMore) {
  Open(kFour);
  EXPECT_EQ(AbortReason(Tick(kDeadlineMs)),
            "alice, bob, carol and dave did not join (0 of 4 did, the threshold is 3)");
}

// Each phase gets the whole deadline from when it was published.
TEST_F(CoordinatorTest, EachPhaseGetsTheWholeDeadline) {
  const PhaseUpdate share = Next(Step(Open(kThree), {0, 1, 2}, 900));
  EXPECT_EQ(coordinator_.NextDeadline(), At(900 + kDeadlineMs));
  EXPECT_TRUE(Tick(900 + kDeadlineMs - 1).empty());
  const PhaseUpdate mask = Next(Step(share, {0, 1, 2}, 1500));
  EXPECT_EQ(coordinator_.NextDeadline(), At(1500 + kDeadlineMs));
  EXPECT_TRUE(Tick(1500 + kDeadlineMs - 1).empty());
  Step(mask, {0, 2}, 1600);
  EXPECT_EQ(AbortReason(Tick(1500 + kDeadlineMs)),
            "bob did not send a masked input (2 of 3 did, the threshold is 3)");
}

// At each phase's deadline, with fewer than T answers, the round aborts naming who did not
// answer, what, and how many did; with T unmasks in, the hospital that did not acknowledge.
TEST_F(CoordinatorTest, EachDeadlineNamesWhoDidNotAnswer) {
  // open: nobody joined; at most three names, then how many more.
  PhaseUpdate open = Open(kFive);
  Actions a = Tick(kDeadlineMs);
  EXPECT_EQ(AbortReason(a),
            "alice, bob, carol and 2 more did not join (0 of 5 did, the threshold is 4)");
  EXPECT_EQ(Next(a).sets, RoundSets{});
  EXPECT_EQ(coordinator_.current(), nullptr);
  EXPECT_EQ(coordinator_.NextDeadline(), std::nullopt);

  int t = kDeadlineMs;
  auto ask = [&](uint64_t ticket, const std::vector<std::string>& names) {
    return Next(Send("hospital", Ask(ticket, names), t));
  };
  // share: carol and dave did not.
  open = ask(2, kFour);
  PhaseUpdate share = Next(Step(open, {0, 1, 2, 3}, t));
  Step(share, {0, 1}, t);
  t += kDeadlineMs;
  EXPECT_EQ(AbortReason(Tick(t)),
            "carol and dave did not send shares (2 of 4 did, the threshold is 3)");

  // mask: only alice.
  open = ask(3, kThree);
  PhaseUpdate mask = Next(Step(Next(Step(open, {0, 1, 2}, t)), {0, 1, 2}, t));
  Step(mask, {0}, t);
  t += kDeadlineMs;
  EXPECT_EQ(AbortReason(Tick(t)),
            "bob and carol did not send a masked input (1 of 3 did, the threshold is 3)");

  // confirm: dave did not mask (the phase goes on at its deadline with three), then bob and
  // carol do not confirm.
  open = ask(4, kFour);
  mask = Next(Step(Next(Step(open, {0, 1, 2, 3}, t)), {0, 1, 2, 3}, t));
  Step(mask, {0, 1, 2}, t);
  t += kDeadlineMs;
  const PhaseUpdate confirm = Next(Tick(t));
  ASSERT_EQ(confirm.phase, Phase::kConfirm);
  EXPECT_EQ(confirm.sets.masked, Set(4, {0, 1, 2}));
  Step(confirm, {0}, t);
  t += kDeadlineMs;
  EXPECT_EQ(AbortReason(Tick(t)), "bob and carol did not confirm (1 of 3 did, the threshold is 3)");

  // unmask: fewer than T, then T and no ack.
  open = ask(5, kThree);
  PhaseUpdate unmask =
      Next(Step(Next(Step(Next(Step(open, {0, 1, 2}, t)), {0, 1, 2}, t)), {0, 1, 2}, t));
  ASSERT_EQ(unmask.phase, Phase::kUnmask);
  Step(unmask, {1, 2}, t);
  t += kDeadlineMs;
  EXPECT_EQ(AbortReason(Tick(t)), "alice did not unmask (2 of 3 did, the threshold is 3)");
  open = ask(6, kThree);
  unmask = Next(Step(Next(Step(Next(Step(open, {0, 1, 2}, t)), {0, 1, 2}, t)), {0, 1, 2}, t));
  Step(unmask, {0, 1, 2}, t);
  t += kDeadlineMs;
  EXPECT_TRUE(Tick(t - 1).empty());
  EXPECT_EQ(AbortReason(Tick(t)), "hospital did not acknowledge the result");
  EXPECT_EQ(coordinator_.rounds_aborted(), 6u);
  EXPECT_EQ(coordinator_.rounds_done(), 0u);
}

// With four patients (T = 3) dave's connection closing in each phase: the phase ends as soon as
// the others answered, and the sets leave him out from the one he did not make.
TEST_F(CoordinatorTest, APatientThatDisconnectsBeforeJoiningIsNotInU1) {
  const PhaseUpdate open = Open(kFour);
  Step(open, {0, 1});
  EXPECT_EQ(One<act::Log>(Gone("dave", 5)).fields,
            "event=dropout round=" + RoundHex(open.round) + " patient=dave phase=open");
  const PhaseUpdate share = Next(JoinAs(open, 2, 6));  // nobody left to wait for
  EXPECT_EQ(share.sets.joined, Set(4, {0, 1, 2}));
  EXPECT_EQ(coordinator_.NextDeadline(), At(6 + kDeadlineMs));
  EXPECT_EQ(Refusal("dave", JoinOf(open.round, 3)),
            "join from a patient that dropped out of the round");
}

// Joined, then gone before the share phase: not in U1 either (his keys would go to nobody who
// could use them, and he cannot share).
TEST_F(CoordinatorTest, APatientThatDisconnectsAfterJoiningInTheOpenPhaseIsNotInU1) {
  const PhaseUpdate open = Open(kFour);
  Step(open, {3, 0, 1});
  EXPECT_TRUE(All<act::Publish>(Gone("dave")).empty());
  Actions a = JoinAs(open, 2);
  EXPECT_EQ(Next(a).sets.joined, Set(4, {0, 1, 2}));
  for (const auto& s : All<act::Send>(a)) {
    EXPECT_NE(s.to, "dave");
    for (const BatchItem& item : s.batch.items) EXPECT_NE(item.index, 3u) << s.to;
  }
}

// Gone in the share phase before sharing: not in U2; the shares phase ends when the others
// shared, and nobody gets a share from him.
TEST_F(CoordinatorTest, APatientThatDisconnectsBeforeSharingIsNotInU2) {
  const PhaseUpdate share = Next(Step(Open(kFour), {0, 1, 2, 3}));
  Step(share, {0, 1, 2});
  Actions a = Gone("dave", 7);
  const PhaseUpdate mask = Next(a);
  EXPECT_EQ(mask.phase, Phase::kMask);
  EXPECT_EQ(mask.sets, (RoundSets{Members(4, true), Set(4, {0, 1, 2}), {}, {}}));
  const auto sends = All<act::Send>(a);
  ASSERT_EQ(sends.size(), 3u);
  EXPECT_EQ(sends[0].batch.items,
            (std::vector<BatchItem>{{1, ShareBytes(1, 0)}, {2, ShareBytes(2, 0)}}));
}

// Shared, then gone in the share phase before it ended: his shares do not count (he will not
// mask), so he is not in U2.
TEST_F(CoordinatorTest, APatientThatDisconnectsAfterSharingInTheSharePhaseIsNotInU2) {
  const PhaseUpdate share = Next(Step(Open(kFour), {0, 1, 2, 3}));
  Step(share, {3, 0, 1});
  Gone("dave");
  const PhaseUpdate mask = Next(ShareAs(share, 2));
  EXPECT_EQ(mask.sets.shared, Set(4, {0, 1, 2}));
}

// Gone after sharing, before masking: dropped from U3, so the survivors confirm before they
// unmask, and the confirmations go to each other member of U4.
TEST_F(CoordinatorTest, APatientThatDisconnectsAfterSharingBringsAConfirmPhase) {
  const PhaseUpdate mask = Next(Step(Next(Step(Open(kFour), {0, 1, 2, 3})), {0, 1, 2, 3}));
  Step(mask, {0, 1});
  Gone("dave");
  const PhaseUpdate confirm = Next(MaskAs(mask, 2));
  ASSERT_EQ(confirm.phase, Phase::kConfirm);
  const Members all(4, true), three = Set(4, {0, 1, 2});
  EXPECT_EQ(confirm.sets, (RoundSets{all, all, three, {}}));
  EXPECT_TRUE(Step(confirm, {2, 0}).empty());
  Actions a = ConfirmAs(confirm, 1);
  const PhaseUpdate unmask = Next(a);
  ASSERT_EQ(unmask.phase, Phase::kUnmask);
  EXPECT_EQ(unmask.sets, (RoundSets{all, all, three, three}));
  const auto sends = All<act::Send>(a);
  ASSERT_EQ(sends.size(), 3u);
  for (size_t w = 0; w < 3; ++w) {
    EXPECT_EQ(sends[w].to, kFour[w]);
    EXPECT_EQ(sends[w].batch.kind, BatchKind::kConfirm);
    std::vector<BatchItem> want;
    for (uint32_t u = 0; u < 3; ++u)
      if (u != w) want.push_back({u, SignatureBytes(u)});
    EXPECT_EQ(sends[w].batch.items, want) << kFour[w];
  }
  // The unmaskers are U4: an unmask from outside it is refused; T of them let the ack in.
  Step(unmask, {0, 1});
  EXPECT_EQ(Refusal("hospital", Ack{unmask.round}), "acknowledgement before 3 unmasks were routed");
  Step(unmask, {2});
  EXPECT_EQ(Next(Send("hospital", Ack{unmask.round})).phase, Phase::kDone);
}

// Gone after its masked input was routed: a survivor (its input is in the sum), so no confirm
// phase is needed; the others' unmasks remove its self mask.
TEST_F(CoordinatorTest, APatientThatDisconnectsAfterMaskingNeedsNoConfirmPhase) {
  const PhaseUpdate mask = Next(Step(Next(Step(Open(kFour), {0, 1, 2, 3})), {0, 1, 2, 3}));
  Step(mask, {3, 0, 1});
  Gone("dave");
  const PhaseUpdate unmask = Next(MaskAs(mask, 2));
  ASSERT_EQ(unmask.phase, Phase::kUnmask);
  const Members all(4, true);
  EXPECT_EQ(unmask.sets, (RoundSets{all, all, all, {}}));
  EXPECT_EQ(Refusal("dave", Envelope{EnvelopeKind::kUnmask, unmask.round, "dave", "hospital", {1}}),
            "envelope from a patient that dropped out of the round");
  Step(unmask, {0, 1, 2});
  EXPECT_EQ(Next(Send("hospital", Ack{unmask.round})).phase, Phase::kDone);
}

// Gone in the confirm phase after confirming: its confirmation was accepted, so it is in U4 and
// the others get it; but it cannot unmask, so with four in U4 and T = 4 the round aborts, naming
// it, before a second unmask can go out.
// Regression (found porting this suite): a phase whose set already held too few members still
// connected was published with its batches, and the round aborted only after one more envelope.
// Now it aborts the moment the phase opens.
TEST_F(CoordinatorTest, APatientThatDisconnectsAfterConfirmingIsInU4ButCannotUnmask) {
  const PhaseUpdate open = Open(kFive);  // T = 4
  const PhaseUpdate mask = Next(Step(Next(Step(open, {0, 1, 2, 3, 4})), {0, 1, 2, 3, 4}));
  Step(mask, {0, 1, 2, 3});
  const PhaseUpdate confirm = Next(Gone("erin"));
  ASSERT_EQ(confirm.phase, Phase::kConfirm);
  Step(confirm, {3, 0, 1});
  EXPECT_TRUE(All<act::Publish>(Gone("dave")).empty());  // his confirmation is in hand
  Actions a = ConfirmAs(confirm, 2);
  const auto published = All<act::Publish>(a);
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published.front().update.phase, Phase::kUnmask);
  EXPECT_EQ(published.front().update.sets.confirmed, Set(5, {0, 1, 2, 3}));
  EXPECT_EQ(AbortReason(a), "dave dropped out (at most 3 of 4 can unmask, the threshold is 4)");
  EXPECT_EQ(coordinator_.current(), nullptr);
}

// As soon as T answers cannot be had, the round aborts naming who dropped out and what can no
// longer be done — in each phase.
TEST_F(CoordinatorTest, ADropoutThatLeavesFewerThanTAbortsAtOnce) {
  struct Case {
    Phase at;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {Phase::kOpen, "carol dropped out (at most 2 of 3 can join, the threshold is 3)"},
      {Phase::kShare, "carol dropped out (at most 2 of 3 can send shares, the threshold is 3)"},
      {Phase::kMask,
       "carol dropped out (at most 2 of 3 can send a masked input, the threshold is 3)"},
      {Phase::kUnmask, "carol dropped out (at most 2 of 3 can unmask, the threshold is 3)"},
  };
  uint64_t ticket = 1;
  int t = 0;
  for (const Case& c : cases) {
    PhaseUpdate u = Next(Send("hospital", Ask(ticket++, kThree), t));
    while (u.phase != c.at) u = Next(Step(u, {0, 1, 2}, t));
    Step(u, {0});
    Actions a = Gone("carol", t);
    EXPECT_EQ(AbortReason(a), c.reason);
    EXPECT_EQ(coordinator_.current(), nullptr) << c.reason;
    t += 1;
  }
  // Two gone in the confirm phase of a round of five (T = 4): the list names both.
  PhaseUpdate mask =
      Next(Step(Next(Step(Next(Send("hospital", Ask(ticket, kFive), t)), {0, 1, 2, 3, 4}, t)),
                {0, 1, 2, 3, 4}, t));
  Step(mask, {0, 1, 2, 3});
  const PhaseUpdate confirm = Next(Gone("erin", t));
  ASSERT_EQ(confirm.phase, Phase::kConfirm);
  Step(confirm, {0});
  EXPECT_EQ(AbortReason(Gone("bob", t)),
            "bob dropped out (at most 3 of 4 can confirm, the threshold is 4)");
  EXPECT_EQ(coordinator_.current(), nullptr);
  EXPECT_EQ(coordinator_.rounds_aborted(), 5u);
}

// The hospital's connection closing aborts its round at once, in any phase; so does a batch
// that cannot be delivered to it. A patient's undeliverable batch is its dropout.
TEST_F(CoordinatorTest, TheHospitalDisconnectingAbortsItsRound) {
  PhaseUpdate open = Open(kThree);
  EXPECT_EQ(AbortReason(Gone("hospital", 5)), "hospital disconnected");
  EXPECT_TRUE(Gone("hospital", 6).empty());  // no round: nothing to do

  open = Next(Send("hospital", Ask(2, kThree), 10));
  EXPECT_EQ(Next(Step(open, {0, 1, 2}, 10)).phase, Phase::kShare);
  EXPECT_EQ(AbortReason(Check(coordinator_.Undeliverable("hospital", At(11)))),
            "undeliverable to hospital: hospital is not connected");

  open = Next(Send("hospital", Ask(3, kFour), 20));
  const PhaseUpdate share4 = Next(Step(open, {0, 1, 2, 3}, 20));
  Actions a = Check(coordinator_.Undeliverable("dave", At(21)));
  EXPECT_EQ(One<act::Log>(a).fields,
            "event=dropout round=" + RoundHex(open.round) + " patient=dave phase=share");
  EXPECT_EQ(Next(Step(share4, {0, 1, 2}, 22)).sets.shared, Set(4, {0, 1, 2}));
}

// A patient or outsider that is not the round's: a disconnect changes nothing.
TEST_F(CoordinatorTest, ADisconnectOfSomeoneNotInTheRoundChangesNothing) {
  Open({"alice", "bob"});
  EXPECT_TRUE(Gone("carol").empty());
  EXPECT_TRUE(Gone("mallory").empty());
  EXPECT_EQ(coordinator_.current()->phase, Phase::kOpen);
}

// The hospital's acknowledgement ends the round done only in the unmask phase with at least T
// unmasks routed (MayAcknowledge), and only from the hospital.
TEST_F(CoordinatorTest, AnAcknowledgementEndsTheRoundOnceTUnmasksWentOut) {
  const PhaseUpdate open = Open(kFour);  // T = 3
  EXPECT_EQ(Refusal("hospital", Ack{open.round}), "acknowledgement before 3 unmasks were routed");
  const PhaseUpdate unmask =
      Next(Step(Next(Step(Next(Step(open, {0, 1, 2, 3})), {0, 1, 2, 3})), {0, 1, 2, 3}));
  Step(unmask, {0, 1});
  EXPECT_EQ(Refusal("hospital", Ack{open.round}), "acknowledgement before 3 unmasks were routed");
  Step(unmask, {3});
  EXPECT_EQ(Refusal("alice", Ack{open.round}), "acknowledgement from a patient");
  EXPECT_EQ(Refusal("erin", Ack{open.round}), "acknowledgement from a party not in the round");
  RoundId other = open.round;
  other[3] ^= 1;
  EXPECT_EQ(Refusal("hospital", Ack{other}), "acknowledgement for a round that is not active");
  const PhaseUpdate done = Next(Send("hospital", Ack{open.round}));  // carol's unmask not needed
  EXPECT_EQ(done.phase, Phase::kDone);
  EXPECT_EQ(coordinator_.rounds_done(), 1u);
}

TEST(RulesTest, MayAcknowledgeOnlyInTheUnmaskPhaseWithTUnmasks) {
  PhaseUpdate u;
  u.params.participants = kFour;
  u.params.threshold = 3;
  u.phase = Phase::kUnmask;
  EXPECT_FALSE(MayAcknowledge(u, Set(4, {0, 1})));
  EXPECT_TRUE(MayAcknowledge(u, Set(4, {0, 1, 3})));
  EXPECT_TRUE(MayAcknowledge(u, Members(4, true)));
  for (Phase p : {Phase::kOpen, Phase::kShare, Phase::kMask, Phase::kConfirm, Phase::kDone}) {
    u.phase = p;
    EXPECT_FALSE(MayAcknowledge(u, Members(4, true))) << PhaseName(p);
  }
}

// A patient may refuse only before it joins; the hospital until it acknowledges.
TEST_F(CoordinatorTest, RefusalsAbortUntilThePartyOwesSomething) {
  PhaseUpdate open = Open({"alice", "bob"});
  JoinAs(open, 0);
  EXPECT_EQ(Refusal("alice", Refuse{open.round, "changed my mind"}),
            "refusal after the join phase");
  EXPECT_EQ(AbortReason(Send("bob", Refuse{open.round, "no consent"})),
            "bob refused the round: no consent");

  open = Next(Send("hospital", Ask(2, {"alice", "bob"})));
  const PhaseUpdate share = Next(Step(open, {0, 1}));
  EXPECT_EQ(Refusal("bob", Refuse{open.round, "no"}), "refusal after the join phase");
  EXPECT_EQ(Refusal("carol", Refuse{open.round, "no"}), "refusal from a party not in the round");
  EXPECT_EQ(AbortReason(Send("hospital", Refuse{share.round, "a masked input did not open"})),
            "hospital refused the round: a masked input did not open");
}

// Joins of other rounds, from outsiders, out of their phase, twice, or from a patient gone are
// refused by name.
TEST_F(CoordinatorTest, MisplacedJoinsAreRejectedWithTheirReason) {
  const PhaseUpdate open = Open({"alice", "bob"});
  RoundId other = open.round;
  other[5] ^= 1;
  EXPECT_EQ(Refusal("alice", JoinOf(other, 0)), "join for a round that is not active");
  EXPECT_EQ(Refusal("carol", JoinOf(open.round, 0)), "join from a party not in the round");
  EXPECT_EQ(Refusal("hospital", JoinOf(open.round, 0)), "join from the hospital");
  EXPECT_TRUE(JoinAs(open, 0).empty());
  EXPECT_EQ(Refusal("alice", JoinOf(open.round, 7)), "duplicate join");
  Actions a = JoinAs(open, 1);
  EXPECT_EQ(coordinator_.current()->phase, Phase::kShare);
  // bob's keys batch holds alice's first join, not the duplicate.
  EXPECT_EQ(All<act::Send>(a)[1].batch.items,
            (std::vector<BatchItem>{{0, KeysItem(open.round, 0)}}));
  EXPECT_EQ(Refusal("alice", JoinOf(open.round, 0)), "join after the join phase");
  EXPECT_EQ(Refusal("alice", PhaseUpdate{}), "a node may not send phase messages");
  EXPECT_EQ(Refusal("alice", Notice{1, "hi"}), "a node may not send notice messages");
}

// Every envelope but a first partial from a member of U2 in the mask phase, or a first unmask
// from an unmasker in the unmask phase, to the round's hospital, is refused with the reason the
// rules give.
TEST_F(CoordinatorTest, EnvelopesAreRoutedOrRefusedByTheRules) {
  auto envelope = [](EnvelopeKind kind, const RoundId& round, const std::string& from,
                     const std::string& to) {
    return Envelope{kind, round, from, to, {1}};
  };
  const auto kP = EnvelopeKind::kPartial, kU = EnvelopeKind::kUnmask;
  const PhaseUpdate open = Open(kFive);  // T = 4
  EXPECT_EQ(Refusal("alice", envelope(kP, open.round, "alice", "hospital")),
            "partial outside the mask phase");
  EXPECT_EQ(Refusal("alice", envelope(kU, open.round, "alice", "hospital")),
            "unmask outside the unmask phase");
  const PhaseUpdate share = Next(Step(open, {0, 1, 2, 3, 4}));
  Step(share, {0, 1, 2, 3});
  const PhaseUpdate mask = Next(Tick(kDeadlineMs));  // erin did not share
  ASSERT_EQ(mask.sets.shared, Set(5, {0, 1, 2, 3}));
  RoundId other = mask.round;
  other[0] ^= 1;
  EXPECT_EQ(Refusal("alice", envelope(kP, mask.round, "bob", "hospital")),
            "spoofed sender: header says bob");
  EXPECT_EQ(Refusal("alice", envelope(kP, other, "alice", "hospital")),
            "envelope for a round that is not active");
  EXPECT_EQ(Refusal("hospital", envelope(kP, other, "hospital", "alice")),
            "envelope for a round that is not active");
  EXPECT_EQ(Refusal("alice", envelope(kP, mask.round, "alice", "bob")),
            "partial alice->bob is not a link of this round");
  EXPECT_EQ(Refusal("alice", envelope(kP, mask.round, "alice", "alice")),
            "partial alice->alice is not a link of this round");
  EXPECT_EQ(Refusal("hospital", envelope(kP, mask.round, "hospital", "alice")),
            "partial hospital->alice is not a link of this round");
  EXPECT_EQ(Refusal("hospital", envelope(kP, mask.round, "hospital", "hospital")),
            "partial hospital->hospital is not a link of this round");
  EXPECT_EQ(Refusal("erin", envelope(kP, mask.round, "erin", "hospital")),
            "partial from erin, who did not share");
  EXPECT_EQ(Refusal("alice", envelope(kU, mask.round, "alice", "hospital")),
            "unmask outside the unmask phase");
  MaskAs(mask, 0);
  EXPECT_EQ(Refusal("alice", envelope(kP, mask.round, "alice", "hospital")),
            "duplicate partial alice->hospital");
  const PhaseUpdate unmask = Next(Step(mask, {1, 2, 3}));
  ASSERT_EQ(unmask.phase, Phase::kUnmask);
  EXPECT_EQ(Refusal("bob", envelope(kP, mask.round, "bob", "hospital")),
            "partial outside the mask phase");
  EXPECT_EQ(Refusal("erin", envelope(kU, mask.round, "erin", "hospital")),
            "unmask from erin, who is not among the unmaskers");
  EXPECT_EQ(Refusal("alice", envelope(kU, mask.round, "alice", "carol")),
            "unmask alice->carol is not a link of this round");
  UnmaskAs(unmask, 2);
  EXPECT_EQ(Refusal("carol", envelope(kU, mask.round, "carol", "hospital")),
            "duplicate unmask carol->hospital");
  EXPECT_EQ(coordinator_.current()->phase, Phase::kUnmask);
}

// Batches from patients: shares in the share phase, one for each other member of U1;
// a confirmation in the confirm phase, one signature, the sender's own; never keys.
TEST_F(CoordinatorTest, BatchesThatDoNotFitTheirPhaseAreRefusedWithTheirReason) {
  const PhaseUpdate open = Open(kFive);  // T = 4
  auto shares = [&](std::initializer_list<uint32_t> to) {
    Batch b{open.round, BatchKind::kShares, {}};
    for (uint32_t j : to) b.items.push_back({j, ShareBytes(0, j)});
    return b;
  };
  auto confirmation = [&](std::initializer_list<uint32_t> of) {
    Batch b{open.round, BatchKind::kConfirm, {}};
    for (uint32_t j : of) b.items.push_back({j, SignatureBytes(j)});
    return b;
  };
  RoundId other = open.round;
  other[1] ^= 1;
  EXPECT_EQ(Refusal("alice", Batch{open.round, BatchKind::kKeys, {}}),
            "a node may not send keys batches");
  EXPECT_EQ(Refusal("hospital", Batch{open.round, BatchKind::kKeys, {}}),
            "a node may not send keys batches");
  EXPECT_EQ(Refusal("alice", shares({1, 2, 3, 4})), "shares outside the share phase");
  EXPECT_EQ(Refusal("alice", confirmation({0})), "confirmations outside the confirm phase");
  const PhaseUpdate share = Next(Step(open, {0, 1, 2, 3, 4}));
  EXPECT_EQ(Refusal("alice", Batch{other, BatchKind::kShares, {}}),
            "shares for a round that is not active");
  EXPECT_EQ(Refusal("alice", Batch{other, BatchKind::kConfirm, {}}),
            "confirmations for a round that is not active");
  EXPECT_EQ(Refusal("hospital", shares({1, 2, 3, 4})), "shares from the hospital");
  EXPECT_EQ(Refusal("hospital", confirmation({0})), "confirmations from the hospital");
  const std::string not_one = "shares not one for each other patient that joined";
  EXPECT_EQ(Refusal("alice", shares({1, 2, 3})), not_one);        // one missing
  EXPECT_EQ(Refusal("alice", shares({0, 1, 2, 3, 4})), not_one);  // one for herself too
  EXPECT_EQ(Refusal("alice", shares({0, 1, 2, 3})), not_one);     // herself instead of erin
  EXPECT_EQ(Refusal("alice", shares({1, 2, 3, 5})), not_one);     // no participant 5
  EXPECT_EQ(Refusal("alice", shares({1, 2, 3, 4, 5})), not_one);  // and one more
  EXPECT_EQ(Refusal("alice", shares({})), not_one);
  EXPECT_TRUE(Send("alice", shares({1, 2, 3, 4})).empty());
  EXPECT_EQ(Refusal("alice", shares({1, 2, 3, 4})), "duplicate shares");
  EXPECT_EQ(Refusal("alice", confirmation({0})), "confirmations outside the confirm phase");
  Step(share, {1, 2, 3, 4});
  ASSERT_EQ(coordinator_.current()->phase, Phase::kMask);
  const PhaseUpdate mask = published_.back();
  EXPECT_EQ(Refusal("bob", shares({0, 2, 3, 4})), "shares outside the share phase");
  Step(mask, {0, 1, 2, 3});
  const PhaseUpdate confirm = Next(Gone("erin"));
  ASSERT_EQ(confirm.phase, Phase::kConfirm);
  EXPECT_EQ(Refusal("erin", confirmation({4})),
            "confirmations from a patient that dropped out of the round");
  EXPECT_EQ(Refusal("erin", shares({1, 2, 3})),
            "shares from a patient that dropped out of the round");
  EXPECT_EQ(Refusal("erin", Refuse{open.round, "gone"}),
            "refusal from a patient that dropped out of the round");
  EXPECT_EQ(Refusal("erin", JoinOf(open.round, 4)),
            "join from a patient that dropped out of the round");
  const std::string one = "a confirmation is one signature, the sender's own";
  EXPECT_EQ(Refusal("alice", confirmation({})), one);
  EXPECT_EQ(Refusal("alice", confirmation({1})), one);     // bob's index
  EXPECT_EQ(Refusal("alice", confirmation({0, 1})), one);  // and bob's
  EXPECT_EQ(Refusal("alice", confirmation({1, 2, 3})), one);
  EXPECT_TRUE(ConfirmAs(confirm, 0).empty());
  EXPECT_EQ(Refusal("alice", confirmation({0})), "duplicate confirmations");
  EXPECT_EQ(Refusal("bob", shares({0, 2, 3, 4})), "shares outside the share phase");
  EXPECT_EQ(Refusal("carol", Refuse{open.round, "no"}), "refusal after the join phase");
  const PhaseUpdate unmask = Next(Step(confirm, {1, 2, 3}));
  EXPECT_EQ(unmask.sets.confirmed, Set(5, {0, 1, 2, 3}));
  EXPECT_EQ(Refusal("bob", confirmation({1})), "confirmations outside the confirm phase");
}

// A confirmation comes only from a survivor: one that did not mask, still connected, is refused.
TEST_F(CoordinatorTest, AConfirmationFromANonSurvivorIsRefused) {
  const PhaseUpdate open = Open(kFive);  // T = 4
  const PhaseUpdate mask = Next(Step(Next(Step(open, {0, 1, 2, 3, 4})), {0, 1, 2, 3, 4}));
  Step(mask, {0, 1, 2, 3});
  const PhaseUpdate confirm = Next(Tick(kDeadlineMs));  // erin is silent, not gone
  ASSERT_EQ(confirm.phase, Phase::kConfirm);
  EXPECT_EQ(confirm.sets.masked, Set(5, {0, 1, 2, 3}));
  EXPECT_EQ(Refusal("erin", Batch{open.round, BatchKind::kConfirm, {{4, SignatureBytes(4)}}}),
            "confirmations from a patient that is not a survivor");
  // The confirm phase waits for the survivors only.
  EXPECT_EQ(Next(Step(confirm, {0, 1, 2, 3}, kDeadlineMs + 1)).phase, Phase::kUnmask);
}

// Open, share, mask, then confirm or unmask, confirm then unmask, unmask then done; abort after
// any phase but an end; nothing after an end.
TEST(RulesTest, PhasesFollowInTheProtocolsOrder) {
  const std::vector<std::pair<std::optional<Phase>, Phase>> allowed = {
      {std::nullopt, Phase::kOpen},     {Phase::kOpen, Phase::kShare},
      {Phase::kShare, Phase::kMask},    {Phase::kMask, Phase::kConfirm},
      {Phase::kMask, Phase::kUnmask},   {Phase::kConfirm, Phase::kUnmask},
      {Phase::kUnmask, Phase::kDone},   {Phase::kOpen, Phase::kAbort},
      {Phase::kShare, Phase::kAbort},   {Phase::kMask, Phase::kAbort},
      {Phase::kConfirm, Phase::kAbort}, {Phase::kUnmask, Phase::kAbort}};
  const std::vector<Phase> phases = {Phase::kOpen,   Phase::kShare, Phase::kMask, Phase::kConfirm,
                                     Phase::kUnmask, Phase::kDone,  Phase::kAbort};
  std::vector<std::optional<Phase>> from = {std::nullopt};
  from.insert(from.end(), phases.begin(), phases.end());
  for (const auto& current : from) {
    for (Phase next : phases) {
      const bool expected =
          std::find(allowed.begin(), allowed.end(), std::make_pair(current, next)) != allowed.end();
      EXPECT_EQ(PhaseMayFollow(current, next), expected)
          << (current ? PhaseName(*current) : "nothing") << " -> " << PhaseName(next);
    }
  }
}

// A request during a round waits its turn (up to max_queue), then opens when the round ends.
TEST_F(CoordinatorTest, ARequestDuringARoundIsQueuedAndOpensWhenItEnds) {
  Open({"alice", "bob"});
  EXPECT_EQ(One<act::Log>(Send("hospital", Ask(2, {"carol", "dave"}))).fields,
            "event=queued from=hospital ticket=2 position=1");
  EXPECT_EQ(One<act::Notify>(Send("hospital", Ask(3, {"carol", "dave"}))).reason,
            "round request refused: round queue full");
  Actions a = Tick(kDeadlineMs);
  const auto published = All<act::Publish>(a);
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published[0].update.phase, Phase::kAbort);
  EXPECT_EQ(published[0].update.reason,
            "alice and bob did not join (0 of 2 did, the threshold is 2)");
  EXPECT_EQ(published[1].update.phase, Phase::kOpen);
  EXPECT_EQ(published[1].update.ticket, 2u);
  EXPECT_EQ(published[1].update.params.participants, (std::vector<std::string>{"carol", "dave"}));
  EXPECT_EQ(One<act::OpenCapture>(a).opened, At(kDeadlineMs));
  EXPECT_EQ(coordinator_.NextDeadline(), At(2 * kDeadlineMs));
}

// Shutting down drops the queue and aborts the active round.
TEST_F(CoordinatorTest, ShutdownDropsTheQueueAndAbortsTheRound) {
  Open({"alice", "bob"});
  Send("hospital", Ask(2, {"carol", "dave"}));
  Actions a = coordinator_.Shutdown(At(1));
  EXPECT_EQ(AbortReason(a), "broker shutting down");
  EXPECT_EQ(All<act::Publish>(a).size(), 1u);  // nothing opens after it
  EXPECT_EQ(coordinator_.current(), nullptr);
  EXPECT_TRUE(coordinator_.Shutdown(At(2)).empty());
}

}  // namespace
}  // namespace tally
