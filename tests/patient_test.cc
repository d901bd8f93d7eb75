// A real patient (tally::Node, in-process, on its own thread) against a fake broker written
// here: a ROUTER and an XPUB bound on loopback as CURVE servers with the broker's key, no ZAP
// handler. The fake broker publishes the phase updates itself and reads the patient's joins and
// envelopes from its ROUTER, so it can do what a malicious broker would: announce a sum phase
// that differs from the round the patient joined. The patient must send its masked input only
// for the round exactly as it joined it (same hospital, range, length, participants, and its
// own nonce), once, and draw a fresh nonce for every join.
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
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "keys/keys.h"
#include "nodes/node.h"
#include "nodes/seal.h"
#include "schema/schema.h"
#include "tests/support.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kRange = 1000;
constexpr uint64_t kAliceInput = 742;
constexpr char kDropReason[] = "the sum phase does not match the round we joined";

RoundId FreshRound() {
  RoundId r;
  randombytes_buf(r.data(), r.size());
  return r;
}

std::string Hex(const JoinNonce& n) {
  char out[2 * kJoinNonceSize + 1];
  sodium_bin2hex(out, sizeof out, n.data(), n.size());
  return out;
}

bool AllZero(const JoinNonce& n) {
  return std::all_of(n.begin(), n.end(), [](uint8_t b) { return b == 0; });
}

std::string Describe(const Message& m) {
  if (auto* e = std::get_if<Envelope>(&m))
    return "an envelope " + std::string(KindName(e->kind)) + " " + e->from + "->" + e->to +
           " for round " + RoundHex(e->round);
  if (auto* j = std::get_if<Join>(&m)) return "a join for round " + RoundHex(j->round);
  if (auto* r = std::get_if<Refuse>(&m)) return "a refusal: " + r->reason;
  return "message type index " + std::to_string(m.index());
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += "  " + l + "\n";
  return out;
}

// One message the fake broker's ROUTER received: the frame as sent and its decoding.
struct Received {
  std::vector<uint8_t> frame;
  Message message;
};

// The broker's two sockets, bound as CURVE servers with the broker's secret key from the key
// folder. No ZAP handler: any CURVE client that knows the broker's public key gets in.
class FakeBroker {
 public:
  explicit FakeBroker(const fs::path& keys) {
    auto secret = LoadSecret(keys, "broker");
    EXPECT_TRUE(secret.ok()) << secret.message();
    if (!secret.ok()) return;
    for (zmq::socket_t* s : {&router_, &xpub_}) {
      CurveServer(*s, secret->curve_secret, "", {0, -1, "tcp://127.0.0.1:*"});
      s->bind("tcp://127.0.0.1:*");
    }
    router_endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    phases_endpoint_ = xpub_.get(zmq::sockopt::last_endpoint);
  }

  const std::string& router_endpoint() const { return router_endpoint_; }
  const std::string& phases_endpoint() const { return phases_endpoint_; }

  // True once a subscription to the empty prefix has reached the XPUB (after the subscriber's
  // CURVE handshake): from then on every update published reaches it.
  bool WaitSubscriber(milliseconds timeout = kWait) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      zmq::pollitem_t item{xpub_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, left) <= 0) return false;
      zmq::message_t m;
      if (!xpub_.recv(m, zmq::recv_flags::dontwait)) continue;
      if (m.size() == 1 && static_cast<const uint8_t*>(m.data())[0] == 1) return true;
    }
  }

  void Publish(const PhaseUpdate& update) {
    auto bytes = Encode(update);
    EXPECT_TRUE(xpub_.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
  }
  // `update` as the second frame of a two-frame message, after `first`.
  void PublishTwoFrames(const std::vector<uint8_t>& first, const PhaseUpdate& update) {
    auto bytes = Encode(update);
    EXPECT_TRUE(xpub_.send(zmq::buffer(first), zmq::send_flags::sndmore).has_value());
    EXPECT_TRUE(xpub_.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
  }

  // The next message on the ROUTER within `timeout`: exactly one frame after the routing id,
  // which must decode.
  std::optional<Received> Receive(milliseconds timeout = kWait) {
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
    zmq::message_t identity, frame;
    if (!router_.recv(identity, zmq::recv_flags::dontwait)) return std::nullopt;
    EXPECT_TRUE(identity.more()) << "a ROUTER message without a payload frame";
    if (!identity.more() || !router_.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
    EXPECT_FALSE(frame.more()) << "a message of more than one frame";
    Received r;
    r.frame.assign(static_cast<const uint8_t*>(frame.data()),
                   static_cast<const uint8_t*>(frame.data()) + frame.size());
    auto decoded = Decode(r.frame);
    EXPECT_TRUE(decoded.ok()) << decoded.message();
    if (!decoded.ok()) return std::nullopt;
    r.message = std::move(decoded.value());
    return r;
  }

  // Polls the ROUTER until `done` holds or `timeout` passes; returns whatever arrived
  // meanwhile (nullopt: nothing did). Each poll ends early when a message comes in.
  std::optional<Received> ReceiveUntil(const std::function<bool()>& done,
                                       milliseconds timeout = kWait) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline && !done()) {
      if (auto r = Receive(milliseconds(10))) return r;
    }
    return Receive(milliseconds(0));
  }

 private:
  zmq::context_t ctx_;
  zmq::socket_t router_{ctx_, zmq::socket_type::router};
  zmq::socket_t xpub_{ctx_, zmq::socket_type::xpub};
  std::string router_endpoint_;
  std::string phases_endpoint_;
};

class PatientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    keys_ = MakeKeys(dir_.path(), {"alice", "bob", "carol"});
    // A second hospital in the roster: the broker may not redirect alice's input to it.
    auto second = GenerateParty(keys_, "hospital2", Role::kHospital, false);
    ASSERT_TRUE(second.ok()) << second.message();
    broker_ = std::make_unique<FakeBroker>(keys_);
    ASSERT_FALSE(broker_->router_endpoint().empty());
    hospital_.emplace(MakeSealer(keys_, "hospital"));
    bob_.emplace(MakeSealer(keys_, "bob"));
  }

  void TearDown() override { StopAlice(); }

  // Starts alice, a serving patient with `input`, and waits until her subscription has reached
  // the phase channel.
  void StartAlice(std::vector<uint64_t> input = {kAliceInput}) {
    NodeOptions o;
    o.keys_dir = keys_;
    o.name = "alice";
    o.router_endpoint = broker_->router_endpoint();
    o.phases_endpoint = broker_->phases_endpoint();
    for (uint64_t v : input) o.input.cells.push_back(std::to_string(v));
    auto node = Node::Create(o, log_.Sink(), nullptr);
    ASSERT_TRUE(node.ok()) << node.message();
    node_ = std::move(node.value());
    ASSERT_FALSE(node_->is_hospital());
    thread_ = std::thread([this] { run_status_ = node_->Run(); });
    ASSERT_TRUE(broker_->WaitSubscriber()) << "alice's subscription never reached the XPUB";
  }

  void StopAlice() {
    if (!node_) return;
    node_->Stop();
    thread_.join();
    EXPECT_TRUE(run_status_.ok()) << "alice's Run() failed: " << run_status_.message();
    node_.reset();
  }

  PhaseUpdate Open(const RoundId& round, std::vector<std::string> participants = {"alice", "bob"}) {
    PhaseUpdate u;
    u.round = round;
    u.phase = Phase::kOpen;
    u.seq = ++seq_;
    u.ticket = 77;
    u.params.hospital = "hospital";
    u.params.range = kRange;
    u.params.length = 1;
    u.params.participants = std::move(participants);
    u.deadline_ms = 10000;
    return u;
  }

  PhaseUpdate Sum(const PhaseUpdate& open, std::vector<JoinNonce> nonces) {
    PhaseUpdate u = open;
    u.phase = Phase::kSum;
    u.seq = ++seq_;
    u.nonces = std::move(nonces);
    return u;
  }

  PhaseUpdate Done(const PhaseUpdate& sum) {
    PhaseUpdate u = sum;
    u.phase = Phase::kDone;
    u.seq = ++seq_;
    return u;
  }

  // Publishes `open` and returns alice's Join for it, checking its round and its nonce on the
  // wire: the frame ends in a msgpack bin(32) holding the nonce.
  JoinNonce ExpectJoin(const PhaseUpdate& open) {
    broker_->Publish(open);
    return ExpectJoinOnly(open.round);
  }
  // The next message on the router must be alice's Join for `round`.
  JoinNonce ExpectJoinOnly(const RoundId& round) {
    auto r = broker_->Receive();
    EXPECT_TRUE(r.has_value()) << "no join from alice for round " << RoundHex(round);
    if (!r) return {};
    auto* join = std::get_if<Join>(&r->message);
    EXPECT_NE(join, nullptr) << "expected a join, got " << Describe(r->message);
    if (!join) return {};
    EXPECT_EQ(RoundHex(join->round), RoundHex(round));
    EXPECT_FALSE(AllZero(join->nonce));
    EXPECT_GE(r->frame.size(), 34u);
    if (r->frame.size() >= 34) {
      const size_t at = r->frame.size() - 34;
      EXPECT_EQ(r->frame[at], 0xc4);      // bin 8
      EXPECT_EQ(r->frame[at + 1], 0x20);  // of 32 bytes
      EXPECT_TRUE(std::equal(join->nonce.begin(), join->nonce.end(), r->frame.begin() + at + 2));
    }
    return join->nonce;
  }

  // Publishes `sum` and returns alice's envelope, checking its header.
  std::optional<Envelope> ExpectPartial(const PhaseUpdate& sum) {
    broker_->Publish(sum);
    auto r = broker_->Receive();
    EXPECT_TRUE(r.has_value()) << "no envelope from alice for round " << RoundHex(sum.round);
    if (!r) return std::nullopt;
    auto* env = std::get_if<Envelope>(&r->message);
    EXPECT_NE(env, nullptr) << "expected an envelope, got " << Describe(r->message);
    if (!env) return std::nullopt;
    EXPECT_EQ(env->kind, EnvelopeKind::kPartial);
    EXPECT_EQ(RoundHex(env->round), RoundHex(sum.round));
    EXPECT_EQ(env->from, "alice");
    EXPECT_EQ(env->to, "hospital");
    // nonce || ciphertext || tag around the payload [2, "partial", bin(8 * length)].
    EXPECT_EQ(
        env->sealed.size(),
        kSealOverhead +
            EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>(sum.params.length)).size());
    return *env;
  }

  // What the hospital reads from alice's envelope plus bob's masked input of 0 for `sum`:
  // the masks cancel, so it is alice's input.
  uint64_t Unmask(const Envelope& env, const PhaseUpdate& sum) {
    auto opened = OpenPartial(*hospital_, env, View(*hospital_, sum), sum.params.length);
    EXPECT_TRUE(opened.ok()) << opened.message();
    if (!opened.ok() || opened->size() != 1) return 0;
    auto bob_masked = Masked(*bob_, sum, {0});
    EXPECT_NE(bob_masked[0], 0u) << "bob's side of the mask is zero";
    EXPECT_NE((*opened)[0], kAliceInput) << "alice's input went out unmasked";
    return (*opened)[0] + bob_masked[0];  // mod 2^64
  }

  static std::string DroppedLine(const RoundId& round) {
    return "node alice event=round-dropped round=" + RoundHex(round) + " reason=\"" + kDropReason +
           "\"";
  }
  size_t CountExact(const std::string& line) {
    auto lines = log_.Lines();
    return static_cast<size_t>(std::count(lines.begin(), lines.end(), line));
  }

  TempDir dir_;
  fs::path keys_;
  LogWatcher log_;
  std::unique_ptr<FakeBroker> broker_;
  std::optional<Sealer> hospital_;
  std::optional<Sealer> bob_;
  std::unique_ptr<Node> node_;
  std::thread thread_;
  Status run_status_ = Status::Error("not run");  // written by the node's thread, read after join
  uint64_t seq_ = 0;
};

// Positive control: the round as joined gets exactly one masked input, to the hospital, that
// the hospital opens under the round's view and that bob's masks cancel to alice's input.
TEST_F(PatientTest, SendsOneMaskedInputForTheRoundItJoined) {
  StartAlice();
  const RoundId round = FreshRound();
  const PhaseUpdate open = Open(round);
  const JoinNonce alice_nonce = ExpectJoin(open);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(round)), 1u);

  const JoinNonce bob_nonce = FreshNonce();
  const PhaseUpdate sum = Sum(open, {alice_nonce, bob_nonce});
  auto env = ExpectPartial(sum);
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(Unmask(*env, sum), kAliceInput);

  // Under any other view (bob's nonce as someone else saw it) the hospital cannot open it.
  PhaseUpdate other_view = sum;
  other_view.nonces[1] = FreshNonce();
  auto wrong = OpenPartial(*hospital_, *env, View(*hospital_, other_view), 1);
  EXPECT_FALSE(wrong.ok());

  // The sum phase repeated (as the broker's last-value cache does): nothing more goes out.
  broker_->Publish(sum);
  broker_->Publish(sum);
  // Barrier: the next round's join is the next thing on the router.
  const PhaseUpdate next = Open(FreshRound());
  ExpectJoin(next);
  EXPECT_EQ(log_.Count("node alice event=partial-sent round=" + RoundHex(round) + " to=hospital"),
            1u);
  EXPECT_EQ(log_.Count("event=partial-sent"), 1u);
  // The round was not refused as tampered (it is dropped only when the next one opens).
  EXPECT_EQ(log_.Count("event=round-dropped round=" + RoundHex(round) + " reason=\"" + kDropReason +
                       "\""),
            0u);
  EXPECT_EQ(
      log_.Count("event=round-dropped round=" + RoundHex(round) + " reason=\"a new round opened\""),
      1u);
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
}

// A malicious broker changes one thing between the open phase alice joined and the sum phase.
struct Tamper {
  std::string name;
  std::function<void(PhaseUpdate& sum)> apply;
};

void PrintTo(const Tamper& t, std::ostream* os) { *os << t.name; }

class PatientTamperTest : public PatientTest, public ::testing::WithParamInterface<Tamper> {};

TEST_P(PatientTamperTest, SendsNothingForASumPhaseThatDiffersFromTheRoundItJoined) {
  StartAlice();
  const RoundId round = FreshRound();
  const PhaseUpdate open = Open(round);
  const JoinNonce alice_nonce = ExpectJoin(open);
  ASSERT_FALSE(HasFailure());

  const PhaseUpdate honest = Sum(open, {alice_nonce, FreshNonce()});
  PhaseUpdate sum = honest;
  GetParam().apply(sum);
  ASSERT_NE(sum, honest) << "the tamper changed nothing";
  broker_->Publish(sum);

  // Wait, bounded, for alice's verdict on the update: the drop line — or, were she fooled, her
  // envelope on the router or a partial-sent / seal-error line.
  const std::string dropped = DroppedLine(round);
  auto sent = broker_->ReceiveUntil([&] {
    return CountExact(dropped) >= 1 || log_.Count("event=partial-sent") > 0 ||
           log_.Count("event=seal-error") > 0;
  });
  EXPECT_FALSE(sent.has_value()) << "alice sent " << Describe(sent->message)
                                 << " for a tampered sum phase";
  ASSERT_EQ(CountExact(dropped), 1u) << "expected the line: " << dropped << "\nalice logged:\n"
                                     << Joined(log_.Lines());

  // The tampered update repeated: still nothing, and no second line.
  broker_->Publish(sum);
  broker_->Publish(sum);
  // Barrier: both repeats are processed before the next open (one ordered phase channel) and
  // anything alice sent for `round` arrives before her next join (one ordered DEALER stream).
  const PhaseUpdate next = Open(FreshRound());
  ExpectJoin(next);
  EXPECT_EQ(CountExact(dropped), 1u);
  EXPECT_EQ(log_.Count("event=partial-sent"), 0u);
  EXPECT_EQ(log_.Count("event=seal-error"), 0u);
  EXPECT_EQ(log_.Count("event=reject"), 0u);
}

std::vector<Tamper> Tampers() {
  return {
      {"OtherHospital", [](PhaseUpdate& u) { u.params.hospital = "hospital2"; }},
      {"OtherRange", [](PhaseUpdate& u) { u.params.range = kRange + 1; }},
      {"OtherLength", [](PhaseUpdate& u) { u.params.length = 2; }},
      {"AddsCarol",
       [](PhaseUpdate& u) {
         u.params.participants.push_back("carol");
         u.nonces.push_back(FreshNonce());
       }},
      {"CarolForBob", [](PhaseUpdate& u) { u.params.participants[1] = "carol"; }},
      {"Reordered",
       [](PhaseUpdate& u) {
         std::swap(u.params.participants[0], u.params.participants[1]);
         std::swap(u.nonces[0], u.nonces[1]);
       }},
      {"OtherAliceNonce", [](PhaseUpdate& u) { u.nonces[0] = FreshNonce(); }},
  };
}

INSTANTIATE_TEST_SUITE_P(Tampered, PatientTamperTest, ::testing::ValuesIn(Tampers()),
                         [](const ::testing::TestParamInfo<Tamper>& info) {
                           return info.param.name;
                         });

// Every join draws a fresh nonce; an old round's open replayed is not joined again.
TEST_F(PatientTest, DrawsAFreshNonceForEveryJoin) {
  StartAlice();
  const RoundId first = FreshRound();
  const PhaseUpdate open1 = Open(first);
  const JoinNonce nonce1 = ExpectJoin(open1);
  ASSERT_FALSE(HasFailure());
  const PhaseUpdate sum1 = Sum(open1, {nonce1, FreshNonce()});
  auto env1 = ExpectPartial(sum1);
  ASSERT_TRUE(env1.has_value());
  EXPECT_EQ(Unmask(*env1, sum1), kAliceInput);
  broker_->Publish(Done(sum1));
  ASSERT_TRUE(log_.WaitFor("node alice event=round-done round=" + RoundHex(first)));

  // The first round's open replayed, then a new round: the next thing alice sends is the new
  // round's join, with a nonce of its own.
  broker_->Publish(open1);
  const RoundId second = FreshRound();
  const PhaseUpdate open2 = Open(second);
  const JoinNonce nonce2 = ExpectJoin(open2);
  ASSERT_FALSE(HasFailure());
  EXPECT_NE(Hex(nonce2), Hex(nonce1));
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(first)), 1u);
  EXPECT_EQ(log_.Count("node alice event=join round=" + RoundHex(second)), 1u);

  // The second round's masked input is built on the second nonce: it opens and unmasks under
  // the second round's view with it.
  const PhaseUpdate sum2 = Sum(open2, {nonce2, FreshNonce()});
  auto env2 = ExpectPartial(sum2);
  ASSERT_TRUE(env2.has_value());
  EXPECT_EQ(Unmask(*env2, sum2), kAliceInput);
  EXPECT_NE(env2->sealed, env1->sealed);

  // A third round opened before the second is done: alice drops the second and joins the third
  // with yet another nonce.
  const PhaseUpdate open3 = Open(FreshRound());
  const JoinNonce nonce3 = ExpectJoin(open3);
  EXPECT_NE(Hex(nonce3), Hex(nonce1));
  EXPECT_NE(Hex(nonce3), Hex(nonce2));
}

}  // namespace
}  // namespace tally::test
