// The broker over real CURVE sockets on loopback, driven by test parties.
#include "broker/broker.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <fstream>
#include <iterator>
#include <thread>

#include "nodes/seal.h"
#include "schema/capture.h"
#include "tests/support.h"

namespace tally::test {
namespace {

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    keys_ = MakeKeys(dir_.path(), {"alice", "bob", "charlie"});
    StartBroker();
  }
  void TearDown() override { StopBroker(); }

  void StartBroker(uint32_t deadline_ms = 1500) {
    BrokerOptions o;
    o.keys_dir = keys_;
    o.router_endpoint = "tcp://127.0.0.1:*";
    o.phases_endpoint = "tcp://127.0.0.1:*";
    o.captures_dir = dir_.path() / "captures";
    o.deadline_ms = deadline_ms;
    o.max_length = 1000;
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
    std::map<std::string, std::unique_ptr<TestParty>> patients;
  };
  Parties Connect(const std::vector<std::string>& patients) {
    Parties p;
    p.hospital = Party("hospital");
    for (const auto& n : patients) p.patients[n] = Party(n);
    return p;
  }

  // Opens a round and has every patient in `joining` join; returns the Open update.
  PhaseUpdate OpenRound(Parties& p, const std::vector<std::string>& participants,
                        const std::vector<std::string>& joining, uint64_t ticket = 1) {
    p.hospital->Send(Request{ticket, 1000, 1, participants});
    auto open = p.hospital->WaitPhase(Phase::kOpen);
    EXPECT_TRUE(open.has_value());
    if (!open) return {};
    EXPECT_EQ(open->ticket, ticket);
    EXPECT_EQ(open->participants, participants);
    for (const auto& n : joining) {
      EXPECT_TRUE(p.patients[n]->WaitPhase(Phase::kOpen, open->round).has_value());
      p.patients[n]->Send(Join{open->round});
    }
    return *open;
  }

  // Runs a complete round with real sealing; returns the round id. `plaintexts` receives every
  // payload plaintext that was sealed.
  RoundId FullRound(Parties& p, uint64_t ticket, std::vector<std::vector<uint8_t>>* plaintexts,
                    std::vector<std::vector<uint8_t>>* frames) {
    std::vector<std::string> names = {"alice", "bob", "charlie"};
    auto roster = LoadRoster(keys_).value();
    std::map<std::string, std::unique_ptr<Sealer>> sealers;
    for (const auto& n : names)
      sealers[n] = std::make_unique<Sealer>(Sealer::Create(LoadSecret(keys_, n).value(), roster).value());
    auto open = OpenRound(p, names, names, ticket);
    for (const auto& n : names)
      EXPECT_TRUE(p.patients[n]->WaitPhase(Phase::kShare, open.round).has_value()) << n;
    uint64_t value = 0x5eed000000000000ull + ticket * 16;
    for (const auto& from : names) {
      for (const auto& to : names) {
        if (from == to) continue;
        auto plain = EncodePayload(EnvelopeKind::kShare, std::vector<uint64_t>{++value});
        Envelope env{EnvelopeKind::kShare, open.round, from, to,
                     sealers[from]->Seal({open.round, EnvelopeKind::kShare, from, to}, plain).value()};
        if (plaintexts) plaintexts->push_back(plain);
        if (frames) frames->push_back(Encode(env));
        p.patients[from]->Send(env);
      }
    }
    for (const auto& to : names) {
      for (int k = 0; k < 2; ++k) {
        auto m = p.patients[to]->Receive();
        EXPECT_TRUE(m && std::holds_alternative<Envelope>(*m)) << to;
        if (!m || !std::holds_alternative<Envelope>(*m)) continue;
        const auto& env = std::get<Envelope>(*m);
        EXPECT_EQ(env.to, to);
        EXPECT_TRUE(sealers[to]->Open({open.round, env.kind, env.from, to}, env.sealed).ok());
      }
    }
    EXPECT_TRUE(p.hospital->WaitPhase(Phase::kSum, open.round).has_value());
    for (const auto& from : names) {
      auto plain = EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>{++value});
      Envelope env{EnvelopeKind::kPartial, open.round, from, "hospital",
                   sealers[from]->Seal({open.round, EnvelopeKind::kPartial, from, "hospital"}, plain).value()};
      if (plaintexts) plaintexts->push_back(plain);
      if (frames) frames->push_back(Encode(env));
      p.patients[from]->Send(env);
    }
    for (int k = 0; k < 3; ++k) {
      auto m = p.hospital->Receive();
      EXPECT_TRUE(m && std::holds_alternative<Envelope>(*m));
    }
    p.hospital->Send(Ack{open.round});
    EXPECT_TRUE(p.hospital->WaitPhase(Phase::kDone, open.round).has_value());
    for (const auto& n : names)
      EXPECT_TRUE(p.patients[n]->WaitPhase(Phase::kDone, open.round).has_value()) << n;
    return open.round;
  }

  std::vector<uint8_t> ReadFile(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }

  TempDir dir_;
  std::filesystem::path keys_;
  LogWatcher log_;
  std::unique_ptr<Broker> broker_;
  std::thread thread_;
};

TEST_F(BrokerTest, UnlistedCurveKeyFailsHandshakeAndGetsNothingRouted) {
  uint8_t pub[32], sec[32];
  char zpub[41], zsec[41];
  ASSERT_EQ(zmq_curve_keypair(zpub, zsec), 0);
  ASSERT_NE(zmq_z85_decode(pub, zpub), nullptr);
  ASSERT_NE(zmq_z85_decode(sec, zsec), nullptr);
  auto broker_key = LoadRoster(keys_)->Find("broker")->curve_public;
  TestParty stranger(broker_key, broker_->router_endpoint(), pub, sec);
  stranger.Send(Request{1, 10, 1, {}});
  EXPECT_TRUE(stranger.WaitEvent(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH));
  EXPECT_TRUE(log_.WaitFor("event=auth-denied"));
  EXPECT_GE(broker_->counters().auth_denied, 1u);
  EXPECT_EQ(log_.Count("event=round-open"), 0u);
  EXPECT_FALSE(stranger.Receive(std::chrono::milliseconds(200)).has_value());
}

TEST_F(BrokerTest, WrongBrokerKeyFailsHandshake) {
  auto me = LoadSecret(keys_, "alice").value();
  PublicKey wrong = me.pub.curve_public;  // alice's own key is not the broker's
  TestParty alice(wrong, broker_->router_endpoint(), me.pub.curve_public.data(),
                  me.curve_secret.data());
  alice.Send(Join{});
  EXPECT_TRUE(log_.WaitFor("event=handshake-failed socket=router reason="));
  EXPECT_GE(broker_->counters().handshake_failed, 1u);
  EXPECT_EQ(broker_->counters().rejected, 0u);
}

TEST_F(BrokerTest, SpoofedSenderIsDroppedAndCounted) {
  auto p = Connect({"alice", "bob", "charlie"});
  auto open = OpenRound(p, {"alice", "bob", "charlie"}, {"alice", "bob", "charlie"});
  ASSERT_TRUE(p.patients["alice"]->WaitPhase(Phase::kShare, open.round));
  std::vector<uint8_t> junk(64, 7);
  p.patients["alice"]->Send(Envelope{EnvelopeKind::kShare, open.round, "bob", "charlie", junk});
  EXPECT_TRUE(log_.WaitFor("event=reject from=alice reason=\"spoofed sender: header says bob\""));
  EXPECT_EQ(broker_->counters().rejected, 1u);
  EXPECT_EQ(broker_->counters().routed, 0u);
  EXPECT_FALSE(p.patients["charlie"]->Receive(std::chrono::milliseconds(200)).has_value());
}

TEST_F(BrokerTest, FullRoundAdvancesOnEventsAndCaptureHoldsExactBytesWithoutPlaintext) {
  auto p = Connect({"alice", "bob", "charlie"});
  std::vector<std::vector<uint8_t>> plaintexts, frames;
  RoundId round = FullRound(p, 1, &plaintexts, &frames);
  EXPECT_EQ(broker_->counters().routed, 9u);
  EXPECT_EQ(broker_->counters().rounds_done, 1u);

  auto path = dir_.path() / "captures" / (RoundHex(round) + ".tcap");
  auto capture = ReadCaptureFile(path);
  ASSERT_TRUE(capture.ok()) << capture.message();
  ASSERT_TRUE(capture->ok()) << capture->error;
  std::vector<std::vector<uint8_t>> captured;
  std::vector<Phase> phases;
  for (const auto& r : capture->records) {
    if (auto* e = std::get_if<CaptureEnvelope>(&r)) captured.push_back(e->frame);
    if (auto* ph = std::get_if<CapturePhase>(&r)) phases.push_back(ph->phase);
  }
  // Every routed envelope, byte for byte (arrival order across senders may differ).
  std::sort(captured.begin(), captured.end());
  std::sort(frames.begin(), frames.end());
  EXPECT_EQ(captured, frames);
  EXPECT_EQ(phases, (std::vector<Phase>{Phase::kOpen, Phase::kShare, Phase::kSum, Phase::kDone}));
  auto* trailer = std::get_if<CaptureTrailer>(&capture->records.back());
  ASSERT_NE(trailer, nullptr);
  EXPECT_TRUE(trailer->done);
  EXPECT_EQ(trailer->envelopes, 9u);

  auto bytes = ReadFile(path);
  for (const auto& plain : plaintexts)
    EXPECT_EQ(std::search(bytes.begin(), bytes.end(), plain.begin(), plain.end()), bytes.end());
}

TEST_F(BrokerTest, MissingJoinAbortsAtDeadlineNamingThePartyThenNextRoundCompletes) {
  auto p = Connect({"alice", "bob", "charlie"});
  auto open = OpenRound(p, {"alice", "bob", "charlie"}, {"alice", "bob"});
  auto abort = p.hospital->WaitPhase(Phase::kAbort, open.round);
  ASSERT_TRUE(abort.has_value());
  EXPECT_EQ(abort->reason, "charlie did not join");
  auto capture = ReadCaptureFile(dir_.path() / "captures" / (RoundHex(open.round) + ".tcap"));
  ASSERT_TRUE(capture.ok());
  auto* trailer = std::get_if<CaptureTrailer>(&capture->records.back());
  ASSERT_NE(trailer, nullptr);
  EXPECT_FALSE(trailer->done);
  EXPECT_EQ(trailer->reason, "charlie did not join");

  FullRound(p, 2, nullptr, nullptr);
  EXPECT_EQ(broker_->counters().rounds_aborted, 1u);
  EXPECT_EQ(broker_->counters().rounds_done, 1u);
}

TEST_F(BrokerTest, MissingShareAbortsNamingTheLink) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {"alice", "bob"});
  ASSERT_TRUE(p.patients["alice"]->WaitPhase(Phase::kShare, open.round));
  p.patients["alice"]->Send(Envelope{EnvelopeKind::kShare, open.round, "alice", "bob",
                                     std::vector<uint8_t>(64, 1)});
  auto abort = p.hospital->WaitPhase(Phase::kAbort, open.round);
  ASSERT_TRUE(abort.has_value());
  EXPECT_EQ(abort->reason, "share bob->alice not sent");
}

TEST_F(BrokerTest, LateSubscriberLearnsTheCurrentPhase) {
  auto p = Connect({"alice", "bob"});
  auto open = OpenRound(p, {"alice", "bob"}, {});
  auto late = Party("charlie");  // subscribes after the round opened
  auto seen = late->WaitPhase(Phase::kOpen, open.round);
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->participants, (std::vector<std::string>{"alice", "bob"}));
}

TEST_F(BrokerTest, MalformedAndOversizedFramesAreRejectedAndServingGoesOn) {
  auto p = Connect({"alice", "bob", "charlie"});
  p.patients["alice"]->SendRaw({0xc1});                         // never-used msgpack byte
  p.patients["alice"]->SendRaw({0x93, 0x01, 0xa4, 'j', 'o', 'i', 'n'});  // array too short
  EXPECT_TRUE(log_.WaitForCount("from=alice reason=\"malformed:", 2));
  p.patients["bob"]->Send(Request{9, 10, 1, {}});  // patients may not request rounds
  PhaseUpdate forged;
  forged.hospital = "hospital";
  forged.participants = {"alice", "bob"};
  p.patients["bob"]->Send(forged);                 // nor publish phases
  EXPECT_TRUE(log_.WaitFor("reason=\"round request refused: only a hospital may request rounds\""));
  EXPECT_TRUE(log_.WaitFor("reason=\"a node may not send phase messages\""));
  auto notice = p.patients["bob"]->Receive();  // the refused requester is told why
  ASSERT_TRUE(notice && std::holds_alternative<Notice>(*notice));
  EXPECT_EQ(std::get<Notice>(*notice).ticket, 9u);
  EXPECT_EQ(std::get<Notice>(*notice).reason,
            "round request refused: only a hospital may request rounds");
  // Over ZMQ_MAXMSGSIZE: the transport drops alice's connection; she reconnects.
  p.patients["alice"]->SendRaw(std::vector<uint8_t>(MaxMessageSize(1000) + 1, 0));
  EXPECT_TRUE(p.patients["alice"]->WaitEvent(ZMQ_EVENT_DISCONNECTED));
  EXPECT_TRUE(p.patients["alice"]->WaitEvent(ZMQ_EVENT_HANDSHAKE_SUCCEEDED));
  FullRound(p, 1, nullptr, nullptr);
  EXPECT_GE(broker_->counters().rejected, 4u);
}

TEST_F(BrokerTest, SecondRequestMidRoundIsQueuedAndRunsNext) {
  auto p = Connect({"alice", "bob", "charlie"});
  auto open = OpenRound(p, {"alice", "bob"}, {});
  p.hospital->Send(Request{2, 1000, 1, {"alice", "bob"}});
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
  p.patients["bob"]->Send(Refuse{open.round, "input outside [0, 1000]"});
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
