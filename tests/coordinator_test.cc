// The broker's round coordinator as the state machine it is (broker/coordinator.h): messages and
// made-up times in, actions out. Deadlines are tested here to the millisecond without waiting;
// broker_test covers the same coordinator behind real sockets.
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

JoinNonce Nonce(uint8_t b) {
  JoinNonce n;
  n.fill(b);
  return n;
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
                     uint32_t deadline_ms = 0) {
    return Request{ticket, {"", 10, 2, std::move(participants)}, deadline_ms};
  }

  Clock::time_point At(int ms) const { return t0_ + milliseconds(ms); }
  Actions Send(const std::string& sender, const Message& m, int at_ms = 0) {
    return coordinator_.OnMessage(sender, m, At(at_ms));
  }
  // Opens a round for `participants` at time 0; returns its open phase.
  PhaseUpdate Open(std::vector<std::string> participants) {
    return One<act::Publish>(Send("hospital", Ask(1, std::move(participants)))).update;
  }
  // Every participant joins at `at_ms`, in order, nonce i+1 for the i-th; returns the sum phase.
  PhaseUpdate JoinAll(const PhaseUpdate& open, int at_ms = 0) {
    Actions last;
    for (size_t i = 0; i < open.params.participants.size(); ++i)
      last = Send(open.params.participants[i], Join{open.round, Nonce(static_cast<uint8_t>(i + 1))},
                  at_ms);
    return One<act::Publish>(last).update;
  }
  // The patient's partial is routed (as the broker reports once the frame is out).
  void Route(const PhaseUpdate& sum, const std::string& from) {
    Actions a = Send(from, Envelope{EnvelopeKind::kPartial, sum.round, from, "hospital", {1}});
    ASSERT_EQ(One<act::Route>(a).to, "hospital");
    coordinator_.Routed(from);
  }
  // The reason of the one abort the actions publish ("" if there is none).
  static std::string AbortReason(const Actions& a) {
    for (const auto& p : All<act::Publish>(a))
      if (p.update.phase == Phase::kAbort) return p.update.reason;
    return "";
  }

  Roster roster_;
  uint8_t rounds_made_ = 0;
  Coordinator coordinator_;
  Clock::time_point t0_ = Clock::now();
};

// A granted request: logged, its open phase published, then its capture opened with the same
// parameters, the roster's fingerprint and the wall clock.
TEST_F(CoordinatorTest, ARequestOpensARoundPublishesItThenOpensItsCapture) {
  Actions a = Send("hospital", Ask(7, {"alice", "bob"}, 400));
  ASSERT_EQ(a.size(), 3u);
  ASSERT_TRUE(std::holds_alternative<act::Log>(a[0]));
  EXPECT_EQ(
      std::get<act::Log>(a[0]).fields,
      "event=round-open round=" + RoundHex(RoundId{1}) +
          " hospital=hospital ticket=7 patients=2 length=2 range=10 columns=0 deadline_ms=400");
  const auto& open = std::get<act::Publish>(a[1]).update;
  EXPECT_EQ(open.phase, Phase::kOpen);
  EXPECT_EQ(open.round, RoundId{1});
  EXPECT_EQ(open.params, (RoundParams{"hospital", 10, 2, {"alice", "bob"}}));
  EXPECT_EQ(open.deadline_ms, 400u);
  const auto& capture = std::get<act::OpenCapture>(a[2]);
  EXPECT_EQ(capture.header.params, open.params);
  EXPECT_EQ(capture.header.ticket, 7u);
  EXPECT_EQ(capture.header.roster_fingerprint, roster_.Fingerprint());
  EXPECT_EQ(capture.header.opened_unix_ms, 1'700'000'000'000);
  EXPECT_EQ(capture.opened, At(0));
}

// No participants named: every patient of the roster, in name order.
TEST_F(CoordinatorTest, AnEmptyParticipantListIsTheWholeRoster) {
  EXPECT_EQ(Open({}).params.participants,
            (std::vector<std::string>{"alice", "bob", "carol", "dave", "erin"}));
}

// A deadline asked for above the broker's is capped at it.
TEST_F(CoordinatorTest, ARequestedDeadlineIsCappedAtTheBrokers) {
  EXPECT_EQ(One<act::Publish>(Send("hospital", Ask(1, {"alice", "bob"}, 5000))).update.deadline_ms,
            kDeadlineMs);
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
       "a round needs at least 2 patients (the sum of one is that "
       "input)"},
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

// The sum phase carries every participant's nonce in participant order, whatever order the
// joins came in.
TEST_F(CoordinatorTest, TheSumPhaseCarriesTheNoncesInParticipantOrder) {
  const PhaseUpdate open = Open({"alice", "bob", "carol"});
  EXPECT_TRUE(All<act::Publish>(Send("carol", Join{open.round, Nonce(3)})).empty());
  EXPECT_TRUE(All<act::Publish>(Send("alice", Join{open.round, Nonce(1)})).empty());
  const PhaseUpdate sum = One<act::Publish>(Send("bob", Join{open.round, Nonce(2)})).update;
  EXPECT_EQ(sum.phase, Phase::kSum);
  EXPECT_EQ(sum.nonces, (std::vector<JoinNonce>{Nonce(1), Nonce(2), Nonce(3)}));
  EXPECT_GT(sum.seq, open.seq);
}

// The open phase's deadline names who did not join, to the millisecond, and publishes no nonce.
TEST_F(CoordinatorTest, TheOpenDeadlineNamesWhoDidNotJoin) {
  const PhaseUpdate open = Open({"alice", "bob", "carol", "dave", "erin"});
  Send("bob", Join{open.round, Nonce(2)}, 300);
  EXPECT_EQ(coordinator_.NextDeadline(), At(kDeadlineMs));
  EXPECT_TRUE(coordinator_.Tick(At(kDeadlineMs - 1)).empty());
  Actions a = coordinator_.Tick(At(kDeadlineMs));
  EXPECT_EQ(AbortReason(a), "alice, carol, dave and 1 more did not join");
  EXPECT_TRUE(One<act::Publish>(a).update.nonces.empty());
  EXPECT_EQ(coordinator_.current(), nullptr);
  EXPECT_EQ(coordinator_.NextDeadline(), std::nullopt);
  EXPECT_EQ(coordinator_.rounds_aborted(), 1u);
}

// Each phase gets the whole deadline from when it was published.
TEST_F(CoordinatorTest, EachPhaseGetsTheWholeDeadline) {
  const PhaseUpdate sum = JoinAll(Open({"alice", "bob"}), 900);
  EXPECT_EQ(coordinator_.NextDeadline(), At(900 + kDeadlineMs));
  EXPECT_TRUE(coordinator_.Tick(At(900 + kDeadlineMs - 1)).empty());
  Route(sum, "alice");
  EXPECT_EQ(AbortReason(coordinator_.Tick(At(900 + kDeadlineMs))), "partial from bob not sent");
}

// The sum phase's deadline names the patients whose partial was not routed, or, with every
// partial out, the hospital that did not acknowledge.
TEST_F(CoordinatorTest, TheSumDeadlineNamesMissingPartialsOrTheHospital) {
  PhaseUpdate sum = JoinAll(Open({"alice", "bob", "carol"}));
  Route(sum, "bob");
  EXPECT_EQ(AbortReason(coordinator_.Tick(At(kDeadlineMs))),
            "partials from alice and carol not sent");

  sum = JoinAll(One<act::Publish>(Send("hospital", Ask(2, {"alice", "bob"}), kDeadlineMs)).update,
                kDeadlineMs);
  Route(sum, "alice");
  Route(sum, "bob");
  EXPECT_EQ(AbortReason(coordinator_.Tick(At(2 * kDeadlineMs))),
            "hospital did not acknowledge the result");
}

// The hospital's acknowledgement ends the round done, and only once every partial went out.
TEST_F(CoordinatorTest, AnAcknowledgementEndsTheRoundOnceEveryPartialWentOut) {
  const PhaseUpdate sum = JoinAll(Open({"alice", "bob"}));
  Route(sum, "alice");
  EXPECT_EQ(One<act::Reject>(Send("hospital", Ack{sum.round})).reason,
            "acknowledgement before every partial was routed");
  Route(sum, "bob");
  EXPECT_EQ(One<act::Reject>(Send("alice", Ack{sum.round})).reason,
            "acknowledgement from a patient");
  const PhaseUpdate done = One<act::Publish>(Send("hospital", Ack{sum.round})).update;
  EXPECT_EQ(done.phase, Phase::kDone);
  EXPECT_EQ(done.nonces, sum.nonces);
  EXPECT_EQ(coordinator_.rounds_done(), 1u);
  EXPECT_EQ(coordinator_.current(), nullptr);
}

// A partial the broker could not deliver aborts the round naming both ends.
TEST_F(CoordinatorTest, AnUndeliverablePartialAbortsNamingTheLink) {
  JoinAll(Open({"alice", "bob"}));
  EXPECT_EQ(AbortReason(coordinator_.Undeliverable(act::Route{"alice", "hospital"}, At(5))),
            "partial alice->hospital undeliverable: hospital is not connected");
}

// A patient may refuse only before it joins; the hospital until it acknowledges.
TEST_F(CoordinatorTest, RefusalsAbortUntilThePartyOwesSomething) {
  PhaseUpdate open = Open({"alice", "bob"});
  Send("alice", Join{open.round, Nonce(1)});
  EXPECT_EQ(One<act::Reject>(Send("alice", Refuse{open.round, "changed my mind"})).reason,
            "refusal after the join phase");
  EXPECT_EQ(AbortReason(Send("bob", Refuse{open.round, "no consent"})),
            "bob refused the round: no consent");

  open = One<act::Publish>(Send("hospital", Ask(2, {"alice", "bob"}))).update;
  JoinAll(open);
  EXPECT_EQ(AbortReason(Send("hospital", Refuse{open.round, "a masked input did not open"})),
            "hospital refused the round: a masked input did not open");
}

// Messages of other rounds, from outsiders, out of their phase, or twice are refused by name.
TEST_F(CoordinatorTest, MisplacedJoinsAreRejectedWithTheirReason) {
  const PhaseUpdate open = Open({"alice", "bob"});
  RoundId other = open.round;
  other[5] ^= 1;
  EXPECT_EQ(One<act::Reject>(Send("alice", Join{other, Nonce(1)})).reason,
            "join for a round that is not active");
  EXPECT_EQ(One<act::Reject>(Send("carol", Join{open.round, Nonce(1)})).reason,
            "join from a party not in the round");
  EXPECT_EQ(One<act::Reject>(Send("hospital", Join{open.round, Nonce(1)})).reason,
            "join from the hospital");
  EXPECT_TRUE(Send("alice", Join{open.round, Nonce(1)}).empty());
  EXPECT_EQ(One<act::Reject>(Send("alice", Join{open.round, Nonce(9)})).reason, "duplicate join");
  JoinAll(open);  // bob's join completes the phase (alice's second is still a duplicate)
  EXPECT_EQ(coordinator_.current()->phase, Phase::kSum);
  EXPECT_EQ(coordinator_.current()->nonces[0], Nonce(1));
  EXPECT_EQ(One<act::Reject>(Send("alice", PhaseUpdate{})).reason,
            "a node may not send phase messages");
}

// Every envelope but a first partial from a patient of the round to its hospital in the sum
// phase is refused, with the reason the rules give.
TEST_F(CoordinatorTest, EnvelopesAreRoutedOrRefusedByTheRules) {
  auto envelope = [](const RoundId& round, const std::string& from, const std::string& to) {
    return Envelope{EnvelopeKind::kPartial, round, from, to, {1}};
  };
  auto refusal = [&](const std::string& sender, const Envelope& env) {
    return One<act::Reject>(Send(sender, env)).reason;
  };
  const PhaseUpdate open = Open({"alice", "bob"});
  EXPECT_EQ(refusal("alice", envelope(open.round, "alice", "hospital")),
            "partial outside the sum phase");
  const PhaseUpdate sum = JoinAll(open);
  RoundId other = sum.round;
  other[0] ^= 1;
  EXPECT_EQ(refusal("alice", envelope(sum.round, "bob", "hospital")),
            "spoofed sender: header says bob");
  EXPECT_EQ(refusal("alice", envelope(other, "alice", "hospital")),
            "envelope for a round that is not active");
  EXPECT_EQ(refusal("carol", envelope(sum.round, "carol", "hospital")),
            "envelope from a party not in the round");
  EXPECT_EQ(refusal("alice", envelope(sum.round, "alice", "bob")),
            "partial alice->bob is not a link of this round");
  EXPECT_EQ(refusal("hospital", envelope(sum.round, "hospital", "alice")),
            "partial hospital->alice is not a link of this round");
  Route(sum, "alice");
  EXPECT_EQ(refusal("alice", envelope(sum.round, "alice", "hospital")),
            "duplicate partial alice->hospital");
}

// Open, then sum, then done; abort from open or sum; nothing after an end.
TEST(RulesTest, PhasesFollowInTheProtocolsOrder) {
  const std::vector<std::pair<std::optional<Phase>, Phase>> allowed = {
      {std::nullopt, Phase::kOpen},
      {Phase::kOpen, Phase::kSum},
      {Phase::kOpen, Phase::kAbort},
      {Phase::kSum, Phase::kDone},
      {Phase::kSum, Phase::kAbort}};
  const std::vector<std::optional<Phase>> from = {std::nullopt, Phase::kOpen, Phase::kSum,
                                                  Phase::kDone, Phase::kAbort};
  for (const auto& current : from) {
    for (Phase next : {Phase::kOpen, Phase::kSum, Phase::kDone, Phase::kAbort}) {
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
  Actions a = coordinator_.Tick(At(kDeadlineMs));
  const auto published = All<act::Publish>(a);
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published[0].update.phase, Phase::kAbort);
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
