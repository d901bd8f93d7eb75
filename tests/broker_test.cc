// The broker over real CURVE sockets on loopback, driven by test parties: patients that join
// with fresh nonces and send real masked, sealed inputs, and a hospital that opens them. Each
// rejection is checked by its exact reason and the counters; each abort by its exact reason.
#include "broker/broker.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>

#include "broker/republish.h"
#include "nodes/seal.h"
#include "schema/capture.h"
#include "schema/text.h"
#include "tests/hostile_support.h"
#include "tests/support.h"

namespace tally::test {
namespace {

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    keys_ = MakeKeys(dir_.path(), {"alice", "bob", "charlie"});
    hospital_sealer_.emplace(MakeSealer(keys_, "hospital"));
    StartBroker();
  }
  void TearDown() override { StopBroker(); }

  void StartBroker(uint32_t deadline_ms = 1500) {
    BrokerOptions o;
    o.keys_dir = keys_;
    o.router_endpoint = "tcp://127.0.0.1:*";
    o.phases_endpoint = "tcp://127.0.0.1:*";
    o.captures_dir = dir_.path() / "captures";
    o.rounds.deadline_ms = deadline_ms;
    o.rounds.max_length = 1000;
    auto b = Broker::Create(o, log_.Sink());
    ASSERT_TRUE(b.ok()) << b.message();
    broker_ = std::move(b.value());
    thread_ = std::thread([this] { EXPECT_TRUE(broker_->Run().ok()); });
  }
  void StopBroker() {
    if (!broker_) return;
    broker_->Stop();
    thread_.join();
    broker_.reset();
  }

  std::unique_ptr<TestParty> Party(const std::string& name, bool subscribe = true) {
    return std::make_unique<TestParty>(keys_, name, broker_->router_endpoint(),
                                       broker_->phases_endpoint(), subscribe);
  }

  // Parties in a round; each subscribes and is known to the broker before the round opens.
  struct Parties {
    std::unique_ptr<TestParty> hospital;
    std::map<std::string, std::unique_ptr<TestPatient>> patients;
    TestParty& P(const std::string& name) { return patients.at(name)->party(); }
  };
  Parties Connect(const std::vector<std::string>& patients) {
    Parties p;
    p.hospital = Party("hospital");
    for (const auto& n : patients)
      p.patients[n] = std::make_unique<TestPatient>(keys_, n, broker_->router_endpoint(),
                                                    broker_->phases_endpoint());
    return p;
  }

  // Opens a round and has every patient in `joining` join with a fresh nonce; returns the
  // Open update.
  PhaseUpdate OpenRound(Parties& p, const std::vector<std::string>& participants,
                        const std::vector<std::string>& joining, uint64_t ticket = 1) {
    p.hospital->Send(Request{ticket, {"", 1000, 1, participants}, 0});
    auto open = p.hospital->WaitPhase(Phase::kOpen);
    EXPECT_TRUE(open.has_value());
    if (!open) return {};
    EXPECT_EQ(open->ticket, ticket);
    EXPECT_EQ(open->params.participants, participants);
    EXPECT_TRUE(open->nonces.empty());
    for (const auto& n : joining) {
      EXPECT_TRUE(p.P(n).WaitPhase(Phase::kOpen, open->round).has_value());
      p.patients[n]->Join(open->round);
    }
    return *open;
  }

  // Waits until the hospital and every participant see the sum phase; checks that it publishes
  // the nonce each participant joined with, in participant order. Returns the update.
  PhaseUpdate AwaitSum(Parties& p, const PhaseUpdate& open) {
    auto sum = p.hospital->WaitPhase(Phase::kSum, open.round);
    EXPECT_TRUE(sum.has_value());
    if (!sum) return {};
    EXPECT_EQ(sum->params.participants, open.params.participants);
    EXPECT_EQ(sum->nonces, Joined(p, open));
    for (const auto& n : open.params.participants) {
      auto seen = p.P(n).WaitPhase(Phase::kSum, open.round);
      EXPECT_TRUE(seen.has_value()) << n;
      if (seen) {
        EXPECT_EQ(*seen, *sum) << n;
      }
    }
    return *sum;
  }

  // The nonces the round's participants joined with, in participant order.
  std::vector<JoinNonce> Joined(Parties& p, const PhaseUpdate& open) {
    std::vector<JoinNonce> out;
    for (const auto& n : open.params.participants) out.push_back(p.patients.at(n)->nonce());
    return out;
  }

  // The hospital receives `count` partials and opens each under its own view of the round.
  // Returns them by sender.
  std::map<std::string, uint64_t> ReceivePartials(Parties& p, const PhaseUpdate& sum,
                                                  size_t count) {
    std::map<std::string, uint64_t> out;
    for (size_t k = 0; k < count; ++k) {
      auto m = p.hospital->Receive();
      EXPECT_TRUE(m && std::holds_alternative<Envelope>(*m)) << "partial " << k;
      if (!m || !std::holds_alternative<Envelope>(*m)) break;
      const auto& env = std::get<Envelope>(*m);
      EXPECT_EQ(env.kind, EnvelopeKind::kPartial);
      EXPECT_EQ(env.to, "hospital");
      auto values = OpenPartial(*hospital_sealer_, env, View(*hospital_sealer_, sum), 1);
      EXPECT_TRUE(values.ok()) << values.message();
      if (values.ok()) {
        EXPECT_TRUE(out.emplace(env.from, values.value()[0]).second) << env.from;
      }
    }
    return out;
  }

  // Runs a complete round with real masks and sealing: each patient joins with a fresh nonce,
  // sends its masked input, the hospital opens the three partials and their sum is the sum of
  // the inputs. Returns the round id. `plaintexts` receives every input and masked input as a
  // payload would encode it; `frames` every envelope sent.
  RoundId FullRound(Parties& p, uint64_t ticket, std::vector<std::vector<uint8_t>>* plaintexts,
                    std::vector<std::vector<uint8_t>>* frames) {
    std::vector<std::string> names = {"alice", "bob", "charlie"};
    auto open = OpenRound(p, names, names, ticket);
    auto sum = AwaitSum(p, open);
    std::map<std::string, uint64_t> masked;
    uint64_t expected = 0;
    for (const auto& n : names) {
      const uint64_t input = randombytes_uniform(1001);
      expected += input;
      auto sent = p.patients[n]->SendMasked(sum, {input});
      masked[n] = sent.masked[0];
      if (plaintexts) {
        plaintexts->push_back(EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>{input}));
        plaintexts->push_back(EncodePayload(EnvelopeKind::kPartial, sent.masked));
      }
      if (frames) frames->push_back(sent.frame);
    }
    auto opened = ReceivePartials(p, sum, names.size());
    EXPECT_EQ(opened, masked);  // each partial opens to exactly what its patient sealed
    uint64_t total = 0;
    for (const auto& [from, v] : opened) total += v;
    EXPECT_EQ(total, expected) << "the masks did not cancel";
    p.hospital->Send(Ack{open.round});
    EXPECT_TRUE(p.hospital->WaitPhase(Phase::kDone, open.round).has_value());
    for (const auto& n : names)
      EXPECT_TRUE(p.P(n).WaitPhase(Phase::kDone, open.round).has_value()) << n;
    return open.round;
  }

  CaptureContents Capture(const RoundId& round) {
    auto capture = ReadCaptureFile(dir_.path() / "captures" / (RoundHex(round) + ".tcap"));
    EXPECT_TRUE(capture.ok()) << capture.message();
    if (!capture.ok()) return {};
    EXPECT_TRUE(capture->ok()) << capture->error;
    return capture.value();
  }
  static const CaptureTrailer* Trailer(const CaptureContents& c) {
    return c.records.empty() ? nullptr : std::get_if<CaptureTrailer>(&c.records.back());
  }
  static std::vector<CaptureRejected> Rejections(const CaptureContents& c) {
    std::vector<CaptureRejected> out;
    for (const auto& r : c.records)
      if (auto* x = std::get_if<CaptureRejected>(&r)) out.push_back(*x);
    return out;
  }

  // The broker's reject line for a message of `size` bytes.
  static std::string RejectLine(const std::string& from, const std::string& reason, size_t size) {
    return "broker event=reject from=" + from + " reason=" + Quote(reason) +
           " size=" + std::to_string(size);
  }

  TempDir dir_;
  std::filesystem::path keys_;
  std::optional<Sealer> hospital_sealer_;
  LogWatcher log_;
  std::unique_ptr<Broker> broker_;
  std::thread thread_;
};

TEST_F(BrokerTest, UnlistedCurveKeyFailsHandshakeAndGetsNothingRouted) {
  auto broker_key = LoadRoster(keys_)->Find("broker")->curve_public;
  TestParty stranger(broker_key, broker_->router_endpoint(), StrangerKeys());
  stranger.Send(Request{1, {"", 10, 1, {}}, 0});
  EXPECT_TRUE(stranger.WaitEvent(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH));
  EXPECT_TRUE(log_.WaitFor("event=auth-denied"));
  EXPECT_GE(broker_->counters().auth_denied, 1u);
  EXPECT_EQ(log_.Count("event=round-open"), 0u);
  EXPECT_FALSE(stranger.Receive(std::chrono::milliseconds(200)).has_value());
}

TEST_F(BrokerTest, WrongBrokerKeyFailsHandshake) {
  auto me = LoadSecret(keys_, "alice").value();
  PublicKey wrong = me.pub.curve_public;  // alice's own key is not the broker's
  TestParty alice(wrong, broker_->router_endpoint(), me);
  alice.Send(Join{});
  EXPECT_TRUE(log_.WaitFor("event=handshake-failed socket=router reason="));
  EXPECT_GE(broker_->counters().handshake_failed, 1u);
  EXPECT_EQ(broker_->counters().rejected, 0u);
}

// alice claims bob's partial: dropped, and what alice sends next is routed before it could be.
TEST_F(BrokerTest, SpoofedSenderIsDroppedAndCounted) {
  auto p = Connect({"alice", "bob", "charlie"});
  auto open = OpenRound(p, {"alice", "bob", "charlie"}, {"alice", "bob", "charlie"});
  auto sum = AwaitSum(p, open);
  Envelope spoof{EnvelopeKind::kPartial, open.round, "bob", "hospital",
                 std::vector<uint8_t>(64, 7)};
  p.P("alice").Send(spoof);
  auto real = p.patients["alice"]->SendMasked(sum, {5});
  EXPECT_TRUE(
      log_.WaitFor(RejectLine("alice", "spoofed sender: header says bob", Encode(spoof).size())));
  // The hospital's first envelope is alice's real one: the spoof, handled before it on the
  // same connection, was never routed.
  auto m = p.hospital->Receive();
  ASSERT_TRUE(m && std::holds_alternative<Envelope>(*m));
  EXPECT_EQ(std::get<Envelope>(*m), real.envelope);
  EXPECT_EQ(broker_->counters().rejected, 1u);
  EXPECT_EQ(broker_->counters().routed, 1u);
}

TEST_F(BrokerTest, FullRoundAdvancesOnEventsAndCaptureHoldsExactBytesWithoutPlaintext) {
  auto p = Connect({"alice", "bob", "charlie"});
  std::vector<std::vector<uint8_t>> plaintexts, frames;
  RoundId round = FullRound(p, 1, &plaintexts, &frames);
  EXPECT_EQ(broker_->counters().routed, 3u);  // one envelope per patient
  EXPECT_EQ(broker_->counters().rejected, 0u);
  EXPECT_EQ(broker_->counters().rounds_done, 1u);

  auto capture = Capture(round);
  std::vector<std::vector<uint8_t>> captured;
  std::vector<Phase> phases;
  std::vector<std::vector<JoinNonce>> nonces;
  for (const auto& r : capture.records) {
    if (auto* e = std::get_if<CaptureEnvelope>(&r)) captured.push_back(e->frame);
    if (auto* ph = std::get_if<CapturePhase>(&r)) {
      phases.push_back(ph->phase);
      nonces.push_back(ph->nonces);
    }
  }
  // Every routed envelope, byte for byte (arrival order across senders may differ).
  std::sort(captured.begin(), captured.end());
  std::sort(frames.begin(), frames.end());
  EXPECT_EQ(captured, frames);
  EXPECT_EQ(phases, (std::vector<Phase>{Phase::kOpen, Phase::kSum, Phase::kDone}));
  // No nonces while the round is open; every participant's from the sum phase on.
  const std::vector<JoinNonce> joined = {p.patients["alice"]->nonce(), p.patients["bob"]->nonce(),
                                         p.patients["charlie"]->nonce()};
  EXPECT_EQ(nonces, (std::vector<std::vector<JoinNonce>>{{}, joined, joined}));
  const auto* trailer = Trailer(capture);
  ASSERT_NE(trailer, nullptr);
  EXPECT_TRUE(trailer->done);
  EXPECT_EQ(trailer->envelopes, 3u);
  EXPECT_EQ(trailer->rejected, 0u);

  auto bytes = ReadBytes(dir_.path() / "captures" / (RoundHex(round) + ".tcap"));
  ASSERT_EQ(plaintexts.size(), 6u);
  for (const auto& plain : plaintexts)
    EXPECT_EQ(std::search(bytes.begin(), bytes.end(), plain.begin(), plain.end()), bytes.end());
}

TEST_F(BrokerTest, MissingJoinAbortsAtDeadlineNamingThePartyThenNextRoundCompletes) {
  auto p = Connect({"alice", "bob", "charlie"});
  auto open = OpenRound(p, {"alice", "bob", "charlie"}, {"alice", "bob"});
  auto abort = p.hospital->WaitPhase(Phase::kAbort, open.round);
  ASSERT_TRUE(abort.has_value());
  EXPECT_EQ(abort->reason, "charlie did not join");
  EXPECT_TRUE(abort->nonces.empty());  // not everyone joined: no nonce is published
  auto capture = Capture(open.round);
  const auto* trailer = Trailer(capture);
  ASSERT_NE(trailer, nullptr);
  EXPECT_FALSE(trailer->done);
  EXPECT_EQ(trailer->reason, "charlie did not join");

  FullRound(p, 2, nullptr, nullptr);
  EXPECT_EQ(broker_->counters().rounds_aborted, 1u);
  EXPECT_EQ(broker_->counters().rounds_done, 1u);
}

// The sum phase's deadline names exactly the patients whose partial the broker never routed.
TEST_F(BrokerTest, MissingPartialAbortsNamingThePatient) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice", "bob"});
  auto sum = AwaitSum(p, open);
  p.patients["alice"]->SendMasked(sum, {1});
  auto abort = p.hospital->WaitPhase(Phase::kAbort, open.round);
  ASSERT_TRUE(abort.has_value());
  EXPECT_EQ(abort->reason, "partial from bob not sent");
  EXPECT_EQ(abort->nonces, Joined(p, open));  // everyone had joined
  EXPECT_EQ(ReceivePartials(p, sum, 1).count("alice"), 1u);
  EXPECT_EQ(broker_->counters().routed, 1u);
  EXPECT_EQ(broker_->counters().rounds_aborted, 1u);
  const auto capture = Capture(open.round);
  const auto* trailer = Trailer(capture);
  ASSERT_NE(trailer, nullptr);
  EXPECT_FALSE(trailer->done);
  EXPECT_EQ(trailer->reason, "partial from bob not sent");
  EXPECT_EQ(trailer->envelopes, 1u);
}

// A partial while the round is still open (not everyone has joined, so there are no nonces
// yet) is rejected, counted and captured; the round then completes.
TEST_F(BrokerTest, PartialOutsideTheSumPhaseIsRejected) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice"});
  Envelope early{EnvelopeKind::kPartial, open.round, "alice", "hospital",
                 std::vector<uint8_t>(64, 1)};
  p.P("alice").Send(early);
  const std::string reason = "partial outside the sum phase";
  ASSERT_TRUE(log_.WaitFor(RejectLine("alice", reason, Encode(early).size())));
  EXPECT_EQ(broker_->counters().rejected, 1u);
  EXPECT_EQ(broker_->counters().routed, 0u);

  p.patients["bob"]->Join(open.round);
  auto sum = AwaitSum(p, open);
  auto a = p.patients["alice"]->SendMasked(sum, {10});
  auto b = p.patients["bob"]->SendMasked(sum, {20});
  auto opened = ReceivePartials(p, sum, 2);  // the early one is not among them
  EXPECT_EQ(opened,
            (std::map<std::string, uint64_t>{{"alice", a.masked[0]}, {"bob", b.masked[0]}}));
  EXPECT_EQ(opened["alice"] + opened["bob"], 30u);
  p.hospital->Send(Ack{open.round});
  ASSERT_TRUE(p.hospital->WaitPhase(Phase::kDone, open.round));
  EXPECT_EQ(broker_->counters().routed, 2u);
  EXPECT_EQ(broker_->counters().rejected, 1u);
  const auto capture = Capture(open.round);
  const auto rejected = Rejections(capture);
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(rejected[0].sender, "alice");
  EXPECT_EQ(rejected[0].reason, reason);
  EXPECT_EQ(rejected[0].size, Encode(early).size());
  ASSERT_NE(Trailer(capture), nullptr);
  EXPECT_EQ(Trailer(capture)->rejected, 1u);
  EXPECT_EQ(Trailer(capture)->envelopes, 2u);
}

// A partial sent twice is routed once: the hospital cannot be made to add an input twice.
TEST_F(BrokerTest, DuplicatePartialIsRejectedAndRoutedOnce) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice", "bob"});
  auto sum = AwaitSum(p, open);
  auto a = p.patients["alice"]->SendMasked(sum, {10});
  p.P("alice").SendRaw(a.frame);  // the same bytes again
  ASSERT_TRUE(
      log_.WaitFor(RejectLine("alice", "duplicate partial alice->hospital", a.frame.size())));
  auto b = p.patients["bob"]->SendMasked(sum, {20});
  auto opened = ReceivePartials(p, sum, 2);
  EXPECT_EQ(opened,
            (std::map<std::string, uint64_t>{{"alice", a.masked[0]}, {"bob", b.masked[0]}}));
  EXPECT_EQ(opened["alice"] + opened["bob"], 30u);
  p.hospital->Send(Ack{open.round});
  ASSERT_TRUE(p.hospital->WaitPhase(Phase::kDone, open.round));
  EXPECT_EQ(broker_->counters().routed, 2u);
  EXPECT_EQ(broker_->counters().rejected, 1u);
  EXPECT_EQ(Trailer(Capture(open.round))->envelopes, 2u);
}

// Envelopes go only from a participant to the round's hospital: not to a patient, not from
// the hospital, not from a roster member outside the round.
TEST_F(BrokerTest, PartialsGoOnlyFromParticipantsToTheHospital) {
  auto p = Connect({"alice", "bob", "charlie"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice", "bob"});
  auto sum = AwaitSum(p, open);
  const std::vector<uint8_t> junk(64, 3);
  std::vector<std::string> expected;
  auto send = [&](TestParty& from, const std::string& name, const std::string& to,
                  const std::string& reason) {
    Envelope env{EnvelopeKind::kPartial, open.round, name, to, junk};
    from.Send(env);
    expected.push_back(RejectLine(name, reason, Encode(env).size()));
  };
  send(p.P("alice"), "alice", "bob", "partial alice->bob is not a link of this round");
  send(p.P("alice"), "alice", "alice", "partial alice->alice is not a link of this round");
  send(*p.hospital, "hospital", "alice", "partial hospital->alice is not a link of this round");
  send(*p.hospital, "hospital", "hospital",
       "partial hospital->hospital is not a link of this round");
  send(p.P("charlie"), "charlie", "hospital", "envelope from a party not in the round");
  for (const auto& line : expected) EXPECT_TRUE(log_.WaitFor(line)) << line;
  EXPECT_EQ(broker_->counters().rejected, expected.size());
  EXPECT_EQ(broker_->counters().routed, 0u);

  auto a = p.patients["alice"]->SendMasked(sum, {7});
  auto b = p.patients["bob"]->SendMasked(sum, {8});
  auto opened = ReceivePartials(p, sum, 2);
  EXPECT_EQ(opened,
            (std::map<std::string, uint64_t>{{"alice", a.masked[0]}, {"bob", b.masked[0]}}));
  p.hospital->Send(Ack{open.round});
  ASSERT_TRUE(p.hospital->WaitPhase(Phase::kDone, open.round));
  EXPECT_EQ(broker_->counters().routed, 2u);
  EXPECT_EQ(broker_->counters().rejected, expected.size());
  // Patients never receive an envelope.
  for (const auto& n : {"alice", "bob", "charlie"})
    EXPECT_FALSE(p.P(n).Receive(std::chrono::milliseconds(0)).has_value()) << n;
}

// A join whose nonce is not 32 bytes does not decode, so it is not a join: the round waits for
// alice's real one.
TEST_F(BrokerTest, JoinWithAWrongSizeNonceIsMalformedAndDoesNotCount) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"bob"});
  const std::vector<uint8_t> round(open.round.begin(), open.round.end());
  std::vector<std::string> expected;
  for (size_t n : {0, 16, 31, 33, 64}) {
    auto frame = Pack()
                     .Array(4)
                     .Uint(kProtocolVersion)
                     .Str("join")
                     .Bin(round)
                     .Bin(std::vector<uint8_t>(n, 0x5a))
                     .bytes();
    p.P("alice").SendRaw(frame);
    expected.push_back(
        RejectLine("alice", "malformed: join: nonce must be 32 bytes, got " + std::to_string(n),
                   frame.size()));
  }
  auto no_nonce = Pack().Array(3).Uint(kProtocolVersion).Str("join").Bin(round).bytes();
  p.P("alice").SendRaw(no_nonce);  // a protocol-1 join
  expected.push_back(
      RejectLine("alice", "malformed: join: expected 4 fields, got 3", no_nonce.size()));
  for (const auto& line : expected) EXPECT_TRUE(log_.WaitFor(line)) << line;
  EXPECT_EQ(broker_->counters().rejected, expected.size());

  p.patients["alice"]->Join(open.round);
  auto sum = AwaitSum(p, open);  // checks the published nonce is alice's real one
  auto a = p.patients["alice"]->SendMasked(sum, {1});
  auto b = p.patients["bob"]->SendMasked(sum, {2});
  auto opened = ReceivePartials(p, sum, 2);
  EXPECT_EQ(opened,
            (std::map<std::string, uint64_t>{{"alice", a.masked[0]}, {"bob", b.masked[0]}}));
  EXPECT_EQ(opened["alice"] + opened["bob"], 3u);
  p.hospital->Send(Ack{open.round});
  ASSERT_TRUE(p.hospital->WaitPhase(Phase::kDone, open.round));
  EXPECT_EQ(Rejections(Capture(open.round)).size(), expected.size());
  EXPECT_EQ(broker_->counters().rejected, expected.size());
}

// The wire cannot carry a participant list that repeats a name (masks would not cancel): the
// request does not decode, so no round opens.
TEST_F(BrokerTest, RequestWhoseParticipantListRepeatsANameOpensNoRound) {
  auto p = Connect({"alice", "bob"});
  Request request{4, {"", 1000, 1, {"alice", "bob", "alice"}}, 0};
  p.hospital->Send(request);
  const std::string line =
      RejectLine("hospital", "malformed: request: duplicate name \"alice\" in participants",
                 Encode(request).size());
  ASSERT_TRUE(log_.WaitFor(line)) << line;
  // Every refused request is answered, a malformed one too, with its ticket.
  auto notice = p.hospital->Receive();
  ASSERT_TRUE(notice && std::holds_alternative<Notice>(*notice));
  EXPECT_EQ(std::get<Notice>(*notice),
            (Notice{4,
                    "round request refused: malformed: request: duplicate name \"alice\" in "
                    "participants"}));
  EXPECT_EQ(broker_->counters().rejected, 1u);
  EXPECT_EQ(log_.Count("event=round-open"), 0u);
  // The next, well-formed request is the first round.
  auto open = OpenRound(p, {"alice", "bob"}, {}, 5);
  EXPECT_EQ(open.ticket, 5u);
  EXPECT_EQ(log_.Count("event=round-open"), 1u);
}

// Regression (found trying Tally on real hosts): a request over --max-length did not decode
// under the broker's limits and was dropped as malformed without a notice; the hospital waited
// out its idle timeout.
TEST_F(BrokerTest, ARequestOverMaxLengthIsRefusedWithANoticeNamingTheLimit) {
  auto p = Connect({"alice", "bob"});
  p.hospital->Send(Request{6, {"", 1000, 1001, {"alice", "bob"}}, 0});
  auto notice = p.hospital->Receive();
  ASSERT_TRUE(notice && std::holds_alternative<Notice>(*notice));
  EXPECT_EQ(std::get<Notice>(*notice),
            (Notice{6, "round request refused: length 1001 exceeds the broker's limit 1000"}));
  EXPECT_EQ(log_.Count("event=round-open"), 0u);
}

// The hospital may give up its own round at any phase before it acknowledges (its roster lacks
// a participant, a masked input does not open): the broker aborts it at once, naming it.
TEST_F(BrokerTest, TheHospitalMayRefuseItsOwnRoundUntilItAcknowledges) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice", "bob"});
  AwaitSum(p, open);
  p.hospital->Send(Refuse{open.round, "cannot open partial from bob"});
  auto abort = p.P("alice").WaitPhase(Phase::kAbort, open.round);
  ASSERT_TRUE(abort.has_value());
  EXPECT_EQ(abort->reason, "hospital refused the round: cannot open partial from bob");
  EXPECT_EQ(broker_->counters().rejected, 0u);
}

// One connection per party: a message from a second connection with alice's keys, while her
// first is live, is refused with a connection notice (ticket 0), logged and counted; the first
// connection keeps its route (it receives only the broker's empty check frame). Once the first
// is gone, a new connection is alice's reconnection.
TEST_F(BrokerTest, ASecondLiveConnectionOfAPartyIsRefusedAndTheFirstKeepsItsRoute) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice"});
  TestParty second(keys_, "alice", broker_->router_endpoint(), broker_->phases_endpoint());
  auto join = Join{open.round, FreshNonce()};
  second.Send(join);
  const std::string why =
      "alice is already connected: a second connection with its keys is refused while the first "
      "is live";
  auto notice = second.Receive();
  ASSERT_TRUE(notice && std::holds_alternative<Notice>(*notice));
  EXPECT_EQ(std::get<Notice>(*notice), (Notice{0, "connection refused: " + why}));
  EXPECT_TRUE(log_.WaitFor(RejectLine("alice", why, Encode(join).size())));
  EXPECT_EQ(broker_->counters().second_connections, 1u);
  // The first connection is untouched: bob joins, and the round completes through it.
  p.patients["bob"]->Join(open.round);
  auto sum = AwaitSum(p, open);
  EXPECT_EQ(sum.nonces[0], p.patients["alice"]->nonce());
  EXPECT_FALSE(p.P("alice").Receive(std::chrono::milliseconds(0)).has_value());
  EXPECT_EQ(p.P("alice").probes(), 1u);

  // alice's first connection goes away; her next connection is served.
  p.patients.erase("alice");
  TestParty again(keys_, "alice", broker_->router_endpoint(), broker_->phases_endpoint());
  again.Send(Request{8, {"", 1000, 1, {}}, 0});  // any message: patients may not request rounds
  auto refused = again.Receive();
  ASSERT_TRUE(refused && std::holds_alternative<Notice>(*refused));
  EXPECT_EQ(std::get<Notice>(*refused).reason,
            "round request refused: only a hospital may request rounds");
  EXPECT_TRUE(log_.WaitFor("event=reconnected party=alice"));
  EXPECT_EQ(broker_->counters().second_connections, 1u);
}

// Regression (found by an implementation written from PROTOCOL.md alone): a subscription that
// arrived before the broker had published anything left a republication pending that could
// never happen, and the poll loop woke at once, forever: the broker spun at a full core from
// its first subscriber until its first round. Nothing published, nothing to wait for.
TEST(RepublisherTest, ASubscriptionBeforeAnyUpdateSchedulesNothing) {
  using Clock = Republisher::Clock;
  const auto t0 = Clock::now();
  const auto gap = std::chrono::milliseconds(10);
  Republisher r(gap);
  r.Subscribed();
  EXPECT_EQ(r.NextWake(), std::nullopt);
  EXPECT_EQ(r.Due(t0), nullptr);

  // Once an update is out, a subscription gets it again at once, and a flood of them at most
  // once per gap.
  r.Published({1, 2, 3});
  EXPECT_EQ(r.NextWake(), std::nullopt);
  r.Subscribed();
  EXPECT_EQ(r.NextWake(), Clock::time_point{});  // due at once
  const std::vector<uint8_t>* again = r.Due(t0);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(*again, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(r.NextWake(), std::nullopt);
  r.Subscribed();
  r.Subscribed();
  EXPECT_EQ(r.NextWake(), t0 + gap);
  EXPECT_EQ(r.Due(t0 + gap / 2), nullptr);
  EXPECT_NE(r.Due(t0 + gap), nullptr);
  EXPECT_EQ(r.Due(t0 + gap), nullptr);  // the two subscriptions got one republication
}

TEST_F(BrokerTest, LateSubscriberLearnsTheCurrentPhase) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {});
  auto late = Party("charlie");  // subscribes after the round opened
  auto seen = late->WaitPhase(Phase::kOpen, open.round);
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->params.participants, (std::vector<std::string>{"alice", "bob"}));
}

TEST_F(BrokerTest, MalformedAndOversizedFramesAreRejectedAndServingGoesOn) {
  auto p = Connect({"alice", "bob", "charlie"});
  p.P("alice").SendRaw({0xc1});                                  // never-used msgpack byte
  p.P("alice").SendRaw({0x94, 0x02, 0xa4, 'j', 'o', 'i', 'n'});  // array too short
  EXPECT_TRUE(log_.WaitForCount("from=alice reason=\"malformed:", 2));
  p.P("bob").Send(Request{9, {"", 10, 1, {}}, 0});  // patients may not request rounds
  PhaseUpdate forged;
  forged.params.hospital = "hospital";
  forged.params.participants = {"alice", "bob"};
  p.P("bob").Send(forged);  // nor publish phases
  EXPECT_TRUE(log_.WaitFor("reason=\"round request refused: only a hospital may request rounds\""));
  EXPECT_TRUE(log_.WaitFor("reason=\"a node may not send phase messages\""));
  auto notice = p.P("bob").Receive();  // the refused requester is told why
  ASSERT_TRUE(notice && std::holds_alternative<Notice>(*notice));
  EXPECT_EQ(std::get<Notice>(*notice).ticket, 9u);
  EXPECT_EQ(std::get<Notice>(*notice).reason,
            "round request refused: only a hospital may request rounds");
  // Over ZMQ_MAXMSGSIZE: the transport drops alice's connection; she reconnects.
  p.P("alice").SendRaw(std::vector<uint8_t>(MaxMessageSize(1000) + 1, 0));
  EXPECT_TRUE(p.P("alice").WaitEvent(ZMQ_EVENT_DISCONNECTED));
  EXPECT_TRUE(p.P("alice").WaitEvent(ZMQ_EVENT_HANDSHAKE_SUCCEEDED));
  FullRound(p, 1, nullptr, nullptr);
  // Two malformed frames, the request and the phase message; the oversized frame never got
  // past the transport.
  EXPECT_EQ(broker_->counters().rejected, 4u);
  EXPECT_EQ(broker_->counters().routed, 3u);
}

TEST_F(BrokerTest, SecondRequestMidRoundIsQueuedAndRunsNext) {
  auto p = Connect({"alice", "bob", "charlie"});
  auto open = OpenRound(p, {"alice", "bob"}, {});
  p.hospital->Send(Request{2, {"", 1000, 1, {"alice", "bob"}}, 0});
  EXPECT_TRUE(log_.WaitFor("event=queued from=hospital ticket=2"));
  auto abort = p.hospital->WaitPhase(Phase::kAbort, open.round);
  ASSERT_TRUE(abort.has_value());
  EXPECT_EQ(abort->reason, "alice and bob did not join");
  auto next = p.hospital->WaitPhase(Phase::kOpen);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->ticket, 2u);
  EXPECT_NE(next->round, open.round);
}

TEST_F(BrokerTest, RefusalAbortsNamingThePatient) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice"});
  p.P("bob").Send(Refuse{open.round, "input outside [0, 1000]"});
  auto abort = p.hospital->WaitPhase(Phase::kAbort, open.round);
  ASSERT_TRUE(abort.has_value());
  EXPECT_EQ(abort->reason, "bob refused the round: input outside [0, 1000]");
}

TEST_F(BrokerTest, ShutdownAbortsTheActiveRoundAndClosesItsCapture) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice"});
  StopBroker();
  auto abort = p.hospital->WaitPhase(Phase::kAbort, open.round, std::chrono::milliseconds(2000));
  auto capture = ReadCaptureFile(dir_.path() / "captures" / (RoundHex(open.round) + ".tcap"));
  ASSERT_TRUE(capture.ok());
  ASSERT_TRUE(capture->ok()) << capture->error;
  auto* trailer = std::get_if<CaptureTrailer>(&capture->records.back());
  ASSERT_NE(trailer, nullptr);
  EXPECT_EQ(trailer->reason, "broker shutting down");
  (void)abort;  // the publish may or may not reach a subscriber before the socket closes
}

}  // namespace
}  // namespace tally::test
