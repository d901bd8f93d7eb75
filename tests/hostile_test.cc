// Hostile peers against a running broker over real CURVE sockets on loopback: random bytes,
// truncated frames, valid msgpack of the wrong shape, a flood, misaddressed and out-of-turn
// protocol messages, and clients that must not get past the handshake. The broker must reject
// each message on its own with its exact reason — logged, counted, and recorded in the capture
// of the round it arrived in — stay up, and complete the next honest round. Honest rounds here
// are computed for real: each patient joins with a fresh nonce and sends its input plus its
// pairwise masks, sealed to the hospital under the round's view; the hospital opens every
// partial, compares it with what was sealed, and checks that the masks cancel in the sum.
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "broker/broker.h"
#include "nodes/seal.h"
#include "schema/capture.h"
#include "tests/hostile_support.h"
#include "tests/support.h"

namespace tally::test {
namespace {

constexpr uint32_t kMaxLength = 1000;  // the broker's --max-length in these tests
constexpr char kOnlyHospital[] = "round request refused: only a hospital may request rounds";

// The limits the broker decodes with (BrokerOptions::max_length = kMaxLength), so a test can
// predict the exact reason for a frame.
// The limits the broker decodes with: envelopes bounded by its largest round, a request's length
// only by the protocol's (a request over the broker's limit is refused with a notice).
Limits BrokerLimits() {
  Limits l;
  l.max_length = kMaxVectorLength;
  l.max_sealed_bytes = MaxSealedSize(kMaxLength);
  l.max_message_bytes = MaxMessageSize(kMaxLength);
  return l;
}

std::vector<RejectLine> Sorted(std::vector<RejectLine> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// An honest round as the test drives it: what each party put in, joined with and sealed.
struct HonestRound {
  PhaseUpdate open;
  PhaseUpdate sum;  // the sum phase as the hospital saw it (with every nonce)
  std::vector<std::string> names;
  std::map<std::string, uint64_t> input;
  std::map<std::string, JoinNonce> nonces;  // name -> the nonce it joined with
  std::map<std::string, uint64_t> masked;   // from -> input + masks, sealed to the hospital
  std::map<std::string, std::vector<uint8_t>> partial_frames;
  uint64_t Expected() const {
    uint64_t sum = 0;
    for (const auto& [name, x] : input) sum += x;
    return sum;
  }
};

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    // dave is in the roster but never in a round.
    keys_ = MakeKeys(dir_.path(), {"alice", "bob", "charlie", "dave"});
    auto roster = LoadRoster(keys_);
    ASSERT_TRUE(roster.ok()) << roster.message();
    roster_ = std::move(roster.value());
    BrokerOptions o;
    o.keys_dir = keys_;
    o.router_endpoint = "tcp://127.0.0.1:*";
    o.phases_endpoint = "tcp://127.0.0.1:*";
    o.captures_dir = dir_.path() / "captures";
    o.rounds.deadline_ms = 20000;  // no round here may reach a deadline: every wait is on an event
    o.rounds.max_length = kMaxLength;
    o.rounds.max_queue = 2;
    auto b = Broker::Create(o, rejects_.Sink(log_.Sink()));
    ASSERT_TRUE(b.ok()) << b.message();
    broker_ = std::move(b.value());
    thread_ = std::thread([this] { EXPECT_TRUE(broker_->Run().ok()); });
  }
  void TearDown() override {
    if (!broker_) return;
    broker_->Stop();
    thread_.join();
  }

  // The party's connection (DEALER + SUB), made on first use.
  TestParty& P(const std::string& name) {
    auto& p = parties_[name];
    if (!p)
      p = std::make_unique<TestParty>(keys_, name, broker_->router_endpoint(),
                                      broker_->phases_endpoint());
    return *p;
  }
  const Sealer& S(const std::string& name) {
    auto& s = sealers_[name];
    if (!s) {
      auto secret = LoadSecret(keys_, name);
      EXPECT_TRUE(secret.ok()) << secret.message();
      s = std::make_unique<Sealer>(Sealer::Create(secret.value(), roster_).value());
    }
    return *s;
  }

  // A request from a patient is refused with a notice on the connection it came from, after
  // everything that connection sent before it: receiving the notice proves the broker has
  // processed all of it. Returns the reject line the probe itself causes.
  RejectLine Probe(const std::string& name, uint64_t ticket) {
    tally::Request request{ticket, {"", 1000, 1, {}}, 0};
    P(name).Send(request);
    auto m = P(name).Receive();
    EXPECT_TRUE(m && std::holds_alternative<Notice>(*m)) << name << " got no notice";
    if (m && std::holds_alternative<Notice>(*m)) {
      EXPECT_EQ(std::get<Notice>(*m).ticket, ticket);
      EXPECT_EQ(std::get<Notice>(*m).reason, kOnlyHospital);
    }
    return {name, kOnlyHospital, Encode(request).size()};
  }

  // --- An honest round, step by step, so hostile messages can be slotted in between. ---------

  // Waits until the hospital and every participant see the round with `ticket` open.
  HonestRound AwaitOpen(const std::vector<std::string>& names, uint64_t ticket) {
    HonestRound r;
    r.names = names;
    for (int tries = 0; tries < 8; ++tries) {  // skip a republished open of an earlier round
      auto open = P("hospital").WaitPhase(Phase::kOpen);
      EXPECT_TRUE(open.has_value()) << "no round opened for ticket " << ticket;
      if (!open) return r;
      if (open->ticket != ticket) continue;
      r.open = *open;
      break;
    }
    EXPECT_EQ(r.open.ticket, ticket);
    EXPECT_EQ(r.open.params.participants, names);
    EXPECT_TRUE(r.open.nonces.empty());
    for (const auto& n : names) {
      EXPECT_TRUE(P(n).WaitPhase(Phase::kOpen, r.open.round).has_value()) << n;
      r.input[n] = rng_() % 1001;
    }
    return r;
  }
  HonestRound Ask(const std::vector<std::string>& names, uint64_t ticket) {
    P("hospital").Send(tally::Request{ticket, {"", 1000, 1, names}, 0});
    return AwaitOpen(names, ticket);
  }
  // `name` joins with a fresh nonce.
  void Join(HonestRound& r, const std::string& name) {
    r.nonces[name] = FreshNonce();
    P(name).Send(tally::Join{r.open.round, r.nonces[name]});
  }
  void AwaitPhase(const HonestRound& r, Phase phase) {
    EXPECT_TRUE(P("hospital").WaitPhase(phase, r.open.round).has_value()) << PhaseName(phase);
    for (const auto& n : r.names)
      EXPECT_TRUE(P(n).WaitPhase(phase, r.open.round).has_value()) << n << " " << PhaseName(phase);
  }
  // Waits for the sum phase everywhere; checks that every party sees the same update and that
  // it carries each participant's nonce, in participant order.
  void AwaitSum(HonestRound& r) {
    auto sum = P("hospital").WaitPhase(Phase::kSum, r.open.round);
    ASSERT_TRUE(sum.has_value()) << "no sum phase";
    r.sum = *sum;
    std::vector<JoinNonce> joined;
    for (const auto& n : r.names) joined.push_back(r.nonces[n]);
    EXPECT_EQ(r.sum.nonces, joined);
    for (const auto& n : r.names) {
      auto seen = P(n).WaitPhase(Phase::kSum, r.open.round);
      ASSERT_TRUE(seen.has_value()) << n;
      EXPECT_EQ(*seen, r.sum) << n;
    }
  }
  // `from` sends its input plus its masks, sealed to the hospital under the round's view.
  void SendPartial(HonestRound& r, const std::string& from) {
    r.masked[from] = Masked(S(from), r.sum, {r.input[from]})[0];
    auto env =
        SealedPartial(S(from), r.sum, std::vector<uint64_t>{r.masked[from]}, View(S(from), r.sum));
    auto frame = Encode(env);
    r.partial_frames[from] = frame;
    P(from).SendRaw(frame);
  }
  // The hospital opens the n partials under its view, checks each against what was sealed,
  // and adds them: the masks cancel.
  uint64_t HospitalSum(HonestRound& r) {
    uint64_t sum = 0;
    std::set<std::string> from;
    for (size_t k = 0; k < r.names.size(); ++k) {
      auto m = P("hospital").Receive();
      EXPECT_TRUE(m && std::holds_alternative<Envelope>(*m)) << "partial " << k;
      if (!m || !std::holds_alternative<Envelope>(*m)) return 0;
      const auto& env = std::get<Envelope>(*m);
      EXPECT_EQ(env.kind, EnvelopeKind::kPartial);
      EXPECT_EQ(env.to, "hospital");
      EXPECT_TRUE(from.insert(env.from).second) << "two partials from " << env.from;
      auto values = OpenPartial(S("hospital"), env, View(S("hospital"), r.sum), 1);
      EXPECT_TRUE(values.ok()) << values.message();
      if (!values.ok()) return 0;
      EXPECT_EQ(values.value()[0], r.masked[env.from]) << env.from;
      sum += values.value()[0];
    }
    return sum;
  }
  void AckAndAwaitDone(const HonestRound& r) {
    P("hospital").Send(Ack{r.open.round});
    AwaitPhase(r, Phase::kDone);
  }

  // Everything after the joins: partials, the hospital's sum (checked), ack, done.
  void Complete(HonestRound& r) {
    for (const auto& n : r.names) SendPartial(r, n);
    EXPECT_EQ(HospitalSum(r), r.Expected()) << "the aggregate is wrong";
    AckAndAwaitDone(r);
  }
  // Opens a round, has everyone join, and waits for the sum phase.
  HonestRound Begin(const std::vector<std::string>& names, uint64_t ticket) {
    HonestRound r = Ask(names, ticket);
    for (const auto& n : names) Join(r, n);
    AwaitSum(r);
    return r;
  }
  HonestRound RunHonestRound(const std::vector<std::string>& names, uint64_t ticket) {
    HonestRound r = Begin(names, ticket);
    Complete(r);
    return r;
  }

  // The rejected records of a round's capture; checks the capture reads cleanly and its trailer
  // counts them.
  std::vector<RejectLine> CapturedRejections(const RoundId& round) {
    auto capture = ReadCaptureFile(dir_.path() / "captures" / (RoundHex(round) + ".tcap"));
    EXPECT_TRUE(capture.ok()) << capture.message();
    if (!capture.ok()) return {};
    EXPECT_TRUE(capture->ok()) << capture->error;
    std::vector<RejectLine> out;
    for (const auto& rec : capture->records)
      if (auto* x = std::get_if<CaptureRejected>(&rec))
        out.push_back({x->sender, x->reason, x->size});
    const auto* trailer =
        capture->records.empty() ? nullptr : std::get_if<CaptureTrailer>(&capture->records.back());
    EXPECT_NE(trailer, nullptr) << "capture has no trailer";
    if (trailer) {
      EXPECT_TRUE(trailer->done) << trailer->reason;
      EXPECT_EQ(trailer->rejected, out.size());
    }
    return out;
  }

  TempDir dir_;
  std::filesystem::path keys_;
  Roster roster_;
  LogWatcher log_;
  RejectTally rejects_;
  std::unique_ptr<Broker> broker_;
  std::thread thread_;
  std::map<std::string, std::unique_ptr<TestParty>> parties_;
  std::map<std::string, std::unique_ptr<Sealer>> sealers_;
  std::mt19937_64 rng_{20240611};  // inputs; nonces come from libsodium
};

const std::vector<std::string> kThree = {"alice", "bob", "charlie"};

TEST_F(HostileTest, HonestRoundComputesTheSumOfTheInputs) {
  auto r = RunHonestRound(kThree, 1);
  EXPECT_EQ(broker_->counters().routed, 3u);  // one envelope per patient
  EXPECT_EQ(broker_->counters().rejected, 0u);
  EXPECT_EQ(broker_->counters().rounds_done, 1u);
  EXPECT_TRUE(CapturedRejections(r.open.round).empty());
  for (const auto& n : kThree) EXPECT_NE(r.masked[n], r.input[n]) << n << "'s input went unmasked";
}

TEST_F(HostileTest, TwoThousandRandomFramesAreEachRejectedAsMalformedThenAnHonestRoundCompletes) {
  std::mt19937_64 rng(0x7a11e5);
  std::uniform_int_distribution<size_t> length(0, 4096);
  std::vector<RejectLine> expected;
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> frame(length(rng));
    for (auto& b : frame) b = static_cast<uint8_t>(rng());
    auto decoded = Decode(frame, BrokerLimits());
    ASSERT_FALSE(decoded.ok()) << "random frame " << i << " decodes";
    expected.push_back({"alice", "malformed: " + decoded.message(), frame.size()});
    P("alice").SendRaw(frame);
  }
  expected.push_back(Probe("alice", 77));
  EXPECT_EQ(rejects_.From("alice"), expected);  // one connection: the broker keeps its order
  EXPECT_EQ(broker_->counters().rejected, 2001u);
  EXPECT_EQ(log_.Count("event=reject from=alice reason=\"malformed: "), 2000u);

  RunHonestRound(kThree, 1);
  EXPECT_EQ(broker_->counters().rejected, 2001u);
  EXPECT_EQ(broker_->counters().routed, 3u);
  EXPECT_EQ(broker_->counters().rounds_done, 1u);
}

TEST_F(HostileTest, EveryTruncatedPrefixOfAValidEnvelopeIsRejectedAndCaptured) {
  auto r = Begin(kThree, 1);
  // A real partial of alice's, sealed under the round's view; only its prefixes are sent.
  auto frame = Encode(
      SealedPartial(S("alice"), r.sum, Masked(S("alice"), r.sum, {42}), View(S("alice"), r.sum)));
  std::vector<RejectLine> expected;
  for (size_t n = 0; n < frame.size(); ++n) {
    std::vector<uint8_t> prefix(frame.begin(), frame.begin() + static_cast<ptrdiff_t>(n));
    expected.push_back(
        {"alice", n == 0 ? "malformed: empty message" : "malformed: truncated message", n});
    P("alice").SendRaw(prefix);
  }
  ASSERT_TRUE(rejects_.WaitTotal(expected.size(), kWait));
  EXPECT_EQ(rejects_.From("alice"), expected);
  Complete(r);  // the hospital got none of the prefixes: its first envelope is a real partial
  EXPECT_EQ(broker_->counters().rejected, frame.size());
  EXPECT_EQ(broker_->counters().routed, 3u);
  EXPECT_EQ(CapturedRejections(r.open.round), expected);
}

TEST_F(HostileTest, ValidMsgpackOfTheWrongShapeIsRejectedWithItsReasonAndCaptured) {
  auto r = Begin(kThree, 1);
  constexpr uint64_t kV = kProtocolVersion;
  const std::vector<uint8_t> round(r.open.round.begin(), r.open.round.end());
  const std::vector<uint8_t> nonce(kJoinNonceSize, 0x4e);
  const std::vector<uint8_t> sealed(64, 0xee);
  auto bytes = [](size_t n) { return std::vector<uint8_t>(n, 0x6e); };
  auto join = [&] { return Pack().Array(4).Uint(kV).Str("join"); };
  auto envelope = [&] { return Pack().Array(7).Uint(kV).Str("envelope"); };
  auto request = [&] { return Pack().Array(9).Uint(kV).Str("request").Uint(5).Uint(1000); };
  // A round's params after its participants: no columns, no weight.
  const std::vector<uint8_t> no_columns = Pack().Array(0).Array(2).Uint(0).Uint(0).bytes();
  // A sum-phase update for alice and bob, up to its nonces field.
  auto phase = [&](size_t fields) {
    return Pack()
        .Array(fields)
        .Uint(kV)
        .Str("phase")
        .Bin(round)
        .Str("sum")
        .Uint(7)
        .Uint(1)
        .Str("hospital")
        .Uint(1000)
        .Uint(1)
        .Array(2)
        .Str("alice")
        .Str("bob")
        .Raw(no_columns);
  };
  std::vector<std::pair<std::vector<uint8_t>, std::string>> cases = {
      // Not an array, or an array of the wrong make-up.
      {Pack().Map(0).bytes(), "message must be a msgpack array, got map"},
      {Pack().Map(1).Str("version").Uint(kV).bytes(), "msgpack map not allowed"},
      {join().Map(1).Str("round").Bin(round).Bin(nonce).bytes(), "msgpack map not allowed"},
      {Pack().Uint(kV).bytes(), "message must be a msgpack array, got uint"},
      {Pack().Str("join").bytes(), "message must be a msgpack array, got str"},
      {Pack().Array(0).bytes(), "message has 0 fields, needs at least version and type"},
      {Pack().Array(1).Raw(join().Bin(round).Bin(nonce).bytes()).bytes(),
       "message has 1 fields, needs at least version and type"},
      {join().Array(1).Array(1).Array(1).Bin(round).Bin(nonce).bytes(), "msgpack nesting too deep"},
      {join().Array(16).Raw(std::vector<uint8_t>(16, 0x01)).Bin(nonce).bytes(),
       "join: round must be bin, got array"},
      {Pack().Array(1001).Raw(std::vector<uint8_t>(1001, 0xc0)).bytes(),
       "msgpack array longer than the limit of 1000 elements"},
      {join().Ext(1, 2).Bin(nonce).bytes(), "msgpack ext not allowed"},
      {join().Bin(round).Bin(nonce).Uint(0).bytes(), "1 trailing bytes after message"},
      // Version and type: protocols 1 and 2 are not spoken any more.
      {Pack().Array(3).Uint(1).Str("join").Bin(round).bytes(), "unsupported protocol version 1"},
      {Pack().Array(4).Uint(1).Str("join").Bin(round).Bin(nonce).bytes(),
       "unsupported protocol version 1"},
      {Pack().Array(4).Uint(2).Str("join").Bin(round).Bin(nonce).bytes(),
       "unsupported protocol version 2"},
      {Pack().Array(4).Uint(4).Str("join").Bin(round).Bin(nonce).bytes(),
       "unsupported protocol version 4"},
      {Pack().Array(4).Uint(0).Str("join").Bin(round).Bin(nonce).bytes(),
       "unsupported protocol version 0"},
      {Pack().Array(4).Str("2").Str("join").Bin(round).Bin(nonce).bytes(),
       "protocol version must be uint, got str"},
      {Pack().Array(4).NegInt(-1).Str("join").Bin(round).Bin(nonce).bytes(),
       "protocol version must be uint, got negative int"},
      {Pack().Array(4).Float(2.0).Str("join").Bin(round).Bin(nonce).bytes(),
       "protocol version must be uint, got float"},
      {Pack().Array(4).Uint(kV).Uint(3).Bin(round).Bin(nonce).bytes(),
       "message type must be str, got uint"},
      {Pack().Array(4).Uint(kV).Bin({'j', 'o', 'i', 'n'}).Bin(round).Bin(nonce).bytes(),
       "message type must be str, got bin"},
      {Pack().Array(4).Uint(kV).Str("hello").Bin(round).Bin(nonce).bytes(),
       "unknown message type \"hello\""},
      {Pack().Array(4).Uint(kV).Str("JOIN").Bin(round).Bin(nonce).bytes(),
       "unknown message type \"JOIN\""},
      {Pack().Array(4).Uint(kV).Str(std::string("\x01\x02\n", 3)).Bin(round).Bin(nonce).bytes(),
       "unknown message type (unprintable, 3 bytes)"},
      {Pack().Array(4).Uint(kV).Str(std::string(257, 'a')).Bin(round).Bin(nonce).bytes(),
       "msgpack str longer than the limit of 256 bytes"},
      // Field counts.
      {join().Bin(round).Bin(nonce).Nil().bytes(), "1 trailing bytes after message"},
      {Pack().Array(5).Uint(kV).Str("join").Bin(round).Bin(nonce).Nil().bytes(),
       "join: expected 4 fields, got 5"},
      {Pack().Array(3).Uint(kV).Str("join").Bin(round).bytes(), "join: expected 4 fields, got 3"},
      {Pack().Array(2).Uint(kV).Str("join").bytes(), "join: expected 4 fields, got 2"},
      {Pack()
           .Array(6)
           .Uint(kV)
           .Str("envelope")
           .Str("partial")
           .Bin(round)
           .Str("alice")
           .Str("hospital")
           .bytes(),
       "envelope: expected 7 fields, got 6"},
      // A phase update of protocol 2: no columns, no weight.
      {Pack()
           .Array(13)
           .Uint(kV)
           .Str("phase")
           .Bin(round)
           .Str("sum")
           .Uint(7)
           .Uint(1)
           .Str("hospital")
           .Uint(1000)
           .Uint(1)
           .Array(0)
           .Bin(bytes(0))
           .Uint(1500)
           .Str("")
           .bytes(),
       "phase: expected 15 fields, got 13"},
      // Field types and values.
      {join().Str(std::string(16, 'r')).Bin(nonce).bytes(), "join: round must be bin, got str"},
      {join().Nil().Bin(nonce).bytes(), "join: round must be bin, got nil"},
      {join().Bin(std::vector<uint8_t>(round.begin(), round.end() - 1)).Bin(nonce).bytes(),
       "join: round must be 16 bytes, got 15"},
      // The join nonce: exactly 32 bytes of bin.
      {join().Bin(round).Bin(bytes(0)).bytes(), "join: nonce must be 32 bytes, got 0"},
      {join().Bin(round).Bin(bytes(31)).bytes(), "join: nonce must be 32 bytes, got 31"},
      {join().Bin(round).Bin(bytes(33)).bytes(), "join: nonce must be 32 bytes, got 33"},
      {join().Bin(round).Bin(bytes(64)).bytes(), "join: nonce must be 32 bytes, got 64"},
      {join().Bin(round).Str(std::string(32, 'n')).bytes(), "join: nonce must be bin, got str"},
      {join().Bin(round).Nil().bytes(), "join: nonce must be bin, got nil"},
      {Pack().Array(3).Uint(kV).Str("ack").Str(std::string(16, 'r')).bytes(),
       "ack: round must be bin, got str"},
      {envelope().Str("gift").Bin(round).Str("alice").Str("hospital").Bin(sealed).bytes(),
       "envelope: kind must be \"partial\""},
      {envelope().Str("share").Bin(round).Str("alice").Str("bob").Bin(sealed).bytes(),
       "envelope: kind must be \"partial\""},
      {envelope().Uint(2).Bin(round).Str("alice").Str("hospital").Bin(sealed).bytes(),
       "envelope: kind must be str, got uint"},
      {envelope()
           .Str("partial")
           .Bin(round)
           .Bin({'a', 'l', 'i', 'c', 'e'})
           .Str("hospital")
           .Bin(sealed)
           .bytes(),
       "envelope: from must be str, got bin"},
      {envelope().Str("partial").Bin(round).Str("alice").Str("Hospital").Bin(sealed).bytes(),
       "envelope: invalid name in to"},
      {envelope().Str("partial").Bin(round).Str("alice").Str("").Bin(sealed).bytes(),
       "envelope: invalid name in to"},
      {envelope()
           .Str("partial")
           .Bin(round)
           .Str("alice")
           .Str("hospital")
           .Bin(std::vector<uint8_t>(39, 1))
           .bytes(),
       "envelope: sealed is 39 bytes, shorter than the minimum of 40"},
      {envelope()
           .Str("partial")
           .Bin(round)
           .Str("alice")
           .Str("hospital")
           .Str(std::string(64, 's'))
           .bytes(),
       "envelope: sealed must be bin, got str"},
      {request().Uint(0).Array(0).Raw(no_columns).Uint(0).bytes(),
       "request: length must be between 1 and 1048576, got 0"},
      {request().Uint(kMaxVectorLength + 1).Array(0).Raw(no_columns).Uint(0).bytes(),
       "request: length must be between 1 and 1048576, got 1048577"},
      {request().Uint(1ull << 32).Array(0).Raw(no_columns).Uint(0).bytes(),
       "request: length 4294967296 does not fit in u32"},
      {request().NegInt(-1).Array(0).Raw(no_columns).Uint(0).bytes(),
       "request: length must be uint, got negative int"},
      {request().Uint(1).Array(2).Str("bob").Str("bob").Raw(no_columns).Uint(0).bytes(),
       "request: duplicate name \"bob\" in participants"},
      {request()
           .Uint(1)
           .Array(3)
           .Str("alice")
           .Str("bob")
           .Str("alice")
           .Raw(no_columns)
           .Uint(0)
           .bytes(),
       "request: duplicate name \"alice\" in participants"},
      {request().Uint(1).Str("bob").Raw(no_columns).Uint(0).bytes(),
       "request: participants must be array, got str"},
      {request().Uint(1).Array(1).Uint(7).Raw(no_columns).Uint(0).bytes(),
       "request: participants must hold str, got uint"},
      {request().Uint(1).Array(0).Raw(no_columns).Str("soon").bytes(),
       "request: deadline_ms must be uint, got str"},
      // A request of protocol 2: no columns, no weight.
      {Pack().Array(7).Uint(kV).Str("request").Uint(5).Uint(1000).Uint(1).Array(0).Uint(0).bytes(),
       "request: expected 9 fields, got 7"},
      {Pack()
           .Array(9)
           .Uint(kV)
           .Str("request")
           .Bool(true)
           .Uint(1000)
           .Uint(1)
           .Array(0)
           .Raw(no_columns)
           .Uint(0)
           .bytes(),
       "request: ticket must be uint, got bool"},
      {Pack()
           .Array(9)
           .Uint(kV)
           .Str("request")
           .Float(5)
           .Uint(1000)
           .Uint(1)
           .Array(0)
           .Raw(no_columns)
           .Uint(0)
           .bytes(),
       "request: ticket must be uint, got float"},
      {Pack().Array(4).Uint(kV).Str("refuse").Bin(round).Str("bad\nreason").bytes(),
       "refuse: reason must be printable ASCII, at most 200 characters"},
      {Pack().Array(4).Uint(kV).Str("refuse").Bin(round).Str(std::string(201, 'x')).bytes(),
       "refuse: reason must be printable ASCII, at most 200 characters"},
      // A phase update's nonces: one bin, empty or exactly one 32-byte nonce per participant.
      {phase(15).Bin(bytes(33)).Uint(1500).Str("").bytes(),
       "phase: nonces must hold at most 2 nonces of 32 bytes, got 33 bytes"},
      {phase(15).Bin(bytes(63)).Uint(1500).Str("").bytes(),
       "phase: nonces must hold at most 2 nonces of 32 bytes, got 63 bytes"},
      {phase(15).Bin(bytes(96)).Uint(1500).Str("").bytes(),
       "phase: nonces must hold at most 2 nonces of 32 bytes, got 96 bytes"},
      {phase(15).Bin(bytes(32)).Uint(1500).Str("").bytes(),
       "phase: nonces must be empty or one per participant"},
      {phase(15).Str(std::string(64, 'n')).Uint(1500).Str("").bytes(),
       "phase: nonces must be bin, got str"},
      {phase(15).Array(2).Bin(nonce).Bin(nonce).Uint(1500).Str("").bytes(),
       "phase: nonces must be bin, got array"},
      {phase(15).Nil().Uint(1500).Str("").bytes(), "phase: nonces must be bin, got nil"},
  };
  std::vector<RejectLine> expected;
  for (const auto& [bytes, reason] : cases) {
    auto decoded = Decode(bytes, BrokerLimits());
    EXPECT_FALSE(decoded.ok()) << reason;
    if (!decoded.ok()) {
      EXPECT_EQ(decoded.message(), reason);  // the case says what it tests
    }
    expected.push_back({"alice", "malformed: " + reason, bytes.size()});
    P("alice").SendRaw(bytes);
  }
  // The same phase update with well-formed nonces decodes: a node may still not send it.
  // Likewise the round's own sum update, replayed, and a notice; and a message of two frames.
  auto valid_phase = phase(15).Bin(bytes(64)).Uint(1500).Str("").bytes();
  ASSERT_TRUE(Decode(valid_phase, BrokerLimits()).ok());
  P("alice").SendRaw(valid_phase);
  expected.push_back({"alice", "a node may not send phase messages", valid_phase.size()});
  PhaseUpdate forged = r.sum;
  forged.phase = Phase::kDone;
  P("alice").Send(forged);
  expected.push_back({"alice", "a node may not send phase messages", Encode(forged).size()});
  P("alice").Send(Notice{1, "hello"});
  expected.push_back(
      {"alice", "a node may not send notice messages", Encode(Notice{1, "hello"}).size()});
  auto join_bytes = Encode(tally::Join{r.open.round, r.nonces["alice"]});
  ASSERT_TRUE(P("alice").dealer().send(zmq::buffer(join_bytes), zmq::send_flags::sndmore));
  ASSERT_TRUE(P("alice").dealer().send(zmq::buffer(join_bytes), zmq::send_flags::none));
  expected.push_back({"alice", "expected one frame, got 2", join_bytes.size()});

  ASSERT_TRUE(rejects_.WaitTotal(expected.size(), kWait));
  EXPECT_EQ(rejects_.From("alice"), expected);
  EXPECT_EQ(broker_->counters().rejected, expected.size());
  Complete(r);
  EXPECT_EQ(broker_->counters().rejected, expected.size());
  EXPECT_EQ(broker_->counters().routed, 3u);
  EXPECT_EQ(CapturedRejections(r.open.round), expected);
}

// Every rule of "What the broker checks and logs" broken once, by participants, by a party in
// the roster but not in the round (dave), and by the hospital, in each phase of a live round.
// A second request mid-round is queued, not rejected, and is the next honest round.
TEST_F(HostileTest,
       ProtocolViolationsInEveryPhaseAreEachRejectedCapturedAndTheRoundStillCompletes) {
  const RoundId old_round = RunHonestRound(kThree, 1).open.round;
  RoundId unknown_round;
  randombytes_buf(unknown_round.data(), unknown_round.size());
  const std::vector<uint8_t> junk(64, 0xab);
  std::vector<RejectLine> expected;
  auto send = [&](const std::string& from, const Message& m, const std::string& reason) {
    P(from).Send(m);
    expected.push_back({from, reason, Encode(m).size()});
  };
  auto send_frame = [&](const std::string& from, const std::vector<uint8_t>& frame,
                        const std::string& reason) {
    P(from).SendRaw(frame);
    expected.push_back({from, reason, frame.size()});
  };
  // Waits until the broker has logged everything sent so far (across connections).
  auto settle = [&] {
    ASSERT_TRUE(rejects_.WaitTotal(expected.size(), kWait)) << rejects_.Total();
  };
  auto env = [&](const RoundId& round, const std::string& from, const std::string& to) {
    return Envelope{EnvelopeKind::kPartial, round, from, to, junk};
  };
  auto join = [&](const RoundId& round) { return tally::Join{round, FreshNonce()}; };

  HonestRound r = Ask(kThree, 2);
  const RoundId& now = r.open.round;
  // Open phase: alice has joined, bob and charlie not yet.
  Join(r, "alice");
  send("alice", join(now), "duplicate join");
  send("alice", tally::Join{now, r.nonces["alice"]}, "duplicate join");  // the same nonce again
  send("dave", join(now), "join from a party not in the round");
  send("hospital", join(now), "join from the hospital");
  send("alice", join(old_round), "join for a round that is not active");
  send("alice", join(unknown_round), "join for a round that is not active");
  send("alice", env(now, "alice", "hospital"), "partial outside the sum phase");
  send("bob", env(now, "bob", "hospital"), "partial outside the sum phase");
  send("hospital", Ack{now}, "acknowledgement before every partial was routed");
  send("alice", Refuse{now, "no"}, "refusal after the join phase");  // alice has joined
  send("dave", Refuse{now, "no"}, "refusal from a party not in the round");
  send("dave", Refuse{unknown_round, "no"}, "refusal for a round that is not active");
  settle();
  Join(r, "bob");
  Join(r, "charlie");
  AwaitSum(r);  // the published nonces are the first each patient joined with

  // Sum phase: alice's real partial, then a duplicate, before anyone else's (the phase holds).
  send("alice", join(now), "join after the join phase");
  SendPartial(r, "alice");
  send_frame("alice", r.partial_frames["alice"], "duplicate partial alice->hospital");
  send("alice", env(now, "alice", "hospital"), "duplicate partial alice->hospital");
  send("alice", env(now, "alice", "bob"), "partial alice->bob is not a link of this round");
  send("alice", env(now, "alice", "dave"), "partial alice->dave is not a link of this round");
  send("alice", env(now, "alice", "zed"), "partial alice->zed is not a link of this round");
  send("alice", env(now, "alice", "alice"), "partial alice->alice is not a link of this round");
  send("hospital", env(now, "hospital", "alice"),
       "partial hospital->alice is not a link of this round");
  send("hospital", env(now, "hospital", "hospital"),
       "partial hospital->hospital is not a link of this round");
  send("alice", env(now, "bob", "hospital"), "spoofed sender: header says bob");
  send("alice", env(now, "hospital", "alice"), "spoofed sender: header says hospital");
  send("dave", env(now, "dave", "hospital"), "envelope from a party not in the round");
  send("alice", env(old_round, "alice", "hospital"), "envelope for a round that is not active");
  send("alice", env(unknown_round, "alice", "hospital"), "envelope for a round that is not active");
  send("bob", Refuse{now, "no"}, "refusal after the join phase");
  send("alice", Ack{now}, "acknowledgement from a patient");
  send("dave", Ack{now}, "acknowledgement from a party not in the round");
  send("hospital", Ack{old_round}, "acknowledgement for a round that is not active");
  send("hospital", Ack{now}, "acknowledgement before every partial was routed");
  send("dave", tally::Request{9, {"", 1000, 1, {}}, 0}, kOnlyHospital);
  settle();
  {
    auto m = P("dave").Receive();  // the refused request is answered; nothing else reaches dave
    ASSERT_TRUE(m && std::holds_alternative<Notice>(*m));
    EXPECT_FALSE(P("dave").Receive(std::chrono::milliseconds(0)).has_value());
  }
  P("hospital").Send(tally::Request{3, {"", 1000, 1, {"alice", "bob"}}, 0});  // a second request
  ASSERT_TRUE(log_.WaitFor("event=queued from=hospital ticket=3 position=1"));
  SendPartial(r, "bob");
  SendPartial(r, "charlie");
  EXPECT_EQ(HospitalSum(r), r.Expected());
  // Every partial is routed, the round not yet acknowledged: one sent again is still a duplicate.
  send_frame("charlie", r.partial_frames["charlie"], "duplicate partial charlie->hospital");
  send("charlie", join(now), "join after the join phase");
  settle();
  AckAndAwaitDone(r);
  // After the round: everything for it is now for a round that is not active.
  send("hospital", Ack{now}, "acknowledgement for a round that is not active");
  send_frame("alice", r.partial_frames["alice"], "envelope for a round that is not active");
  settle();

  EXPECT_EQ(broker_->counters().rejected, expected.size());
  EXPECT_EQ(Sorted(rejects_.Lines()), Sorted(expected));
  // The capture of round 2 lists what arrived while it ran, with reasons (not the last two).
  std::vector<RejectLine> during(expected.begin(), expected.end() - 2);
  EXPECT_EQ(Sorted(CapturedRejections(now)), Sorted(during));
  EXPECT_EQ(broker_->counters().routed, 6u);
  // The patients received nothing: envelopes go only to the hospital.
  for (const auto& n : kThree)
    EXPECT_FALSE(P(n).Receive(std::chrono::milliseconds(0)).has_value()) << n;

  // The queued request runs next, honestly, with the right sum; the last two rejections
  // arrived while it ran.
  HonestRound next = AwaitOpen({"alice", "bob"}, 3);
  for (const auto& n : next.names) Join(next, n);
  AwaitSum(next);
  Complete(next);
  EXPECT_EQ(Sorted(CapturedRejections(next.open.round)),
            Sorted(std::vector<RejectLine>(expected.end() - 2, expected.end())));
  EXPECT_EQ(broker_->counters().rounds_done, 3u);
  EXPECT_EQ(broker_->counters().rounds_aborted, 0u);
  EXPECT_EQ(broker_->counters().rejected, expected.size());
  EXPECT_EQ(broker_->counters().routed, 8u);
}

TEST_F(HostileTest, RoundQueueFullIsRefusedWithANotice) {
  auto r = Ask(kThree, 1);
  P("hospital").Send(tally::Request{2, {"", 1000, 1, {}}, 0});
  P("hospital").Send(tally::Request{3, {"", 1000, 1, {}}, 0});
  tally::Request third{4, {"", 1000, 1, {}}, 0};
  P("hospital").Send(third);
  auto m = P("hospital").Receive();
  ASSERT_TRUE(m && std::holds_alternative<Notice>(*m));
  EXPECT_EQ(std::get<Notice>(*m).ticket, 4u);
  EXPECT_EQ(std::get<Notice>(*m).reason, "round request refused: round queue full");
  EXPECT_EQ(rejects_.Lines(),
            (std::vector<RejectLine>{
                {"hospital", "round request refused: round queue full", Encode(third).size()}}));
  EXPECT_EQ(log_.Count("event=queued from=hospital"), 2u);
  EXPECT_EQ(broker_->counters().rejected, 1u);
}

// Regression: a refusal from a participant that has already joined and sent its partial used
// to abort the round after the hospital held (and had written) the aggregate. The broker now
// rejects refusals after the join phase.
TEST_F(HostileTest, ARefusalAfterJoiningIsRejectedAndTheRoundCompletes) {
  auto r = Begin(kThree, 1);
  for (const auto& n : kThree) SendPartial(r, n);
  EXPECT_EQ(HospitalSum(r), r.Expected());
  Refuse late{r.open.round, "changed my mind"};
  P("alice").Send(late);
  RejectLine probe = Probe("alice", 5);  // the refusal has been handled
  EXPECT_EQ(rejects_.Lines(),
            (std::vector<RejectLine>{{"alice", "refusal after the join phase", Encode(late).size()},
                                     probe}));
  ASSERT_EQ(broker_->counters().rounds_aborted, 0u);
  AckAndAwaitDone(r);
  EXPECT_EQ(broker_->counters().rounds_done, 1u);
}

// 20,000 messages from dave as fast as a DEALER can send them, while alice, bob and charlie run
// a round: every one is rejected and counted, the round completes, and so does the next.
TEST_F(HostileTest, FloodOfTwentyThousandMessagesIsCountedExactlyWhileRoundsComplete) {
  constexpr size_t kFlood = 20000;
  TestParty& dave = P("dave");  // connect before the flood thread takes the socket over
  RoundId stale;
  randombytes_buf(stale.data(), stale.size());
  const JoinNonce nonce = FreshNonce();
  const size_t size = Encode(tally::Join{stale, nonce}).size();
  std::thread flood([&dave, stale, nonce] {
    for (size_t i = 0; i < kFlood; ++i) dave.Send(tally::Join{stale, nonce});
  });
  auto during = RunHonestRound(kThree, 1);
  flood.join();
  RejectLine probe = Probe("dave", 99);
  auto lines = rejects_.Lines();
  ASSERT_EQ(lines.size(), kFlood + 1);
  for (size_t i = 0; i < kFlood; ++i)
    ASSERT_EQ(lines[i], (RejectLine{"dave", "join for a round that is not active", size})) << i;
  EXPECT_EQ(lines.back(), probe);
  EXPECT_EQ(broker_->counters().rejected, kFlood + 1);
  // The round's capture holds the part of the flood that arrived while it ran.
  for (const auto& x : CapturedRejections(during.open.round))
    EXPECT_EQ(x, (RejectLine{"dave", "join for a round that is not active", size}));

  RunHonestRound(kThree, 2);
  EXPECT_EQ(broker_->counters().rejected, kFlood + 1);
  EXPECT_EQ(broker_->counters().routed, 6u);
  EXPECT_EQ(broker_->counters().rounds_done, 2u);
}

// Regression: every subscription used to make the broker republish the last phase update to
// every subscriber, so N one-byte subscriptions from one XSUB (dave) meant N broadcasts. The
// broker now republishes at most once per 10 ms and counts subscriptions.
TEST_F(HostileTest, ASubscriptionFloodOnThePhaseChannelIsNotAmplifiedToEverySubscriber) {
  constexpr size_t kSubscriptions = 2000;
  auto r = Ask(kThree, 1);  // the last update is now this round's open
  auto dave = LoadSecret(keys_, "dave").value();
  auto broker_key = roster_.Find("broker")->curve_public;
  zmq::context_t ctx;
  zmq::socket_t xsub(ctx, zmq::socket_type::xsub);
  CurveClient(xsub, dave, broker_key, {0, -1, broker_->phases_endpoint()});
  xsub.set(zmq::sockopt::rcvhwm, 0);
  xsub.connect(broker_->phases_endpoint());
  const uint8_t subscribe[] = {1};
  auto receive = [&](milliseconds timeout) {
    zmq::pollitem_t item{xsub.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) <= 0) return false;
    zmq::message_t m;
    return xsub.recv(m).has_value();
  };
  ASSERT_TRUE(xsub.send(zmq::buffer(subscribe), zmq::send_flags::none));
  ASSERT_TRUE(receive(kWait)) << "dave's subscription never answered";
  for (size_t i = 0; i < kSubscriptions; ++i)
    ASSERT_TRUE(xsub.send(zmq::buffer(subscribe), zmq::send_flags::none));
  size_t copies = 0;  // dave is a subscriber too: he sees every broadcast
  while (copies < kSubscriptions && receive(milliseconds(2000))) ++copies;
  size_t alice_copies = 0;
  while (P("alice").WaitPhase(Phase::kOpen, r.open.round, milliseconds(200))) ++alice_copies;
  EXPECT_LE(copies, kSubscriptions / 100)
      << kSubscriptions << " one-byte subscriptions from dave were answered with " << copies
      << " broadcasts of the last update; alice received " << alice_copies << " copies";
  EXPECT_EQ(broker_->counters().rejected, 0u);       // subscribing is not a protocol violation
  EXPECT_GT(broker_->counters().subscriptions, 1u);  // counted (some may still be in flight)
}

// --- The handshake: cases broker_test.cc does not cover. ---------------------------------------

TEST_F(HostileTest, TheBrokersOwnKeyCannotConnectAsAClient) {
  auto broker = LoadSecret(keys_, "broker").value();
  TestParty impostor(broker.pub.curve_public, broker_->router_endpoint(), broker);
  impostor.Send(tally::Request{1, {"", 10, 1, {}}, 0});
  EXPECT_TRUE(impostor.WaitEvent(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH));
  EXPECT_TRUE(log_.WaitFor("event=auth-denied address=127.0.0.1 reason=\"key not in roster\""));
  EXPECT_EQ(broker_->counters().auth_denied, 1u);
  EXPECT_EQ(broker_->counters().rejected, 0u);
  EXPECT_EQ(log_.Count("event=round-open"), 0u);
}

// A DEALER with a monitor, CURVE client or (without keys) NULL mechanism, that reports every
// transport event up to the first of `until`.
class RawClient {
 public:
  // Without `server`, the NULL mechanism.
  RawClient(const std::string& endpoint, const PublicKey* server = nullptr,
            const SecretCertificate* me = nullptr) {
    if (server != nullptr) CurveClient(dealer_, *me, *server, {0, -1, endpoint});
    dealer_.set(zmq::sockopt::linger, 0);
    dealer_.set(zmq::sockopt::reconnect_ivl, -1);  // one attempt: its events are the whole story
    tally::Monitor(dealer_, monitor_, ZMQ_EVENT_ALL);
    dealer_.connect(endpoint);
    auto bytes = Encode(tally::Request{1, {"", 10, 1, {}}, 0});
    EXPECT_TRUE(dealer_.send(zmq::buffer(bytes), zmq::send_flags::dontwait));
  }
  // Events in order, up to and including the first one in `until` (or until kWait passes).
  std::vector<uint16_t> EventsUntil(std::initializer_list<uint16_t> until) {
    std::vector<uint16_t> events;
    auto deadline = std::chrono::steady_clock::now() + kWait;
    for (;;) {
      auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      zmq::pollitem_t item{monitor_.handle(), 0, ZMQ_POLLIN, 0};
      if (left.count() <= 0 || zmq::poll(&item, 1, left) <= 0) return events;
      const std::optional<MonitorEvent> e = NextEvent(monitor_);
      if (!e) continue;
      events.push_back(e->id);
      if (std::find(until.begin(), until.end(), e->id) != until.end()) return events;
    }
  }
  bool Received() {
    zmq::pollitem_t item{dealer_.handle(), 0, ZMQ_POLLIN, 0};
    return zmq::poll(&item, 1, std::chrono::milliseconds(0)) > 0;
  }

 private:
  zmq::context_t ctx_;
  zmq::socket_t dealer_{ctx_, zmq::socket_type::dealer};
  zmq::socket_t monitor_{ctx_, zmq::socket_type::pair};
};

bool Has(const std::vector<uint16_t>& events, uint16_t event) {
  return std::find(events.begin(), events.end(), event) != events.end();
}

// alice's public key with bob's secret: the CURVE vouch does not open, so the broker drops the
// connection before the ZAP handler is even asked.
TEST_F(HostileTest, APublicKeyPresentedWithAnotherPartysSecretFailsTheHandshake) {
  auto alice = LoadSecret(keys_, "alice").value();
  auto bob = LoadSecret(keys_, "bob").value();
  auto broker_key = roster_.Find("broker")->curve_public;
  const SecretCertificate forged = CurveKeys(alice.pub.curve_public, bob.curve_secret.data());
  RawClient forger(broker_->router_endpoint(), &broker_key, &forged);
  auto events = forger.EventsUntil({ZMQ_EVENT_DISCONNECTED, ZMQ_EVENT_HANDSHAKE_SUCCEEDED});
  EXPECT_TRUE(Has(events, ZMQ_EVENT_DISCONNECTED));
  EXPECT_FALSE(Has(events, ZMQ_EVENT_HANDSHAKE_SUCCEEDED));
  EXPECT_FALSE(forger.Received());
  EXPECT_EQ(broker_->counters().rejected, 0u);
  EXPECT_EQ(log_.Count("event=round-open"), 0u);
}

TEST_F(HostileTest, AClientWithoutCurveFailsTheHandshake) {
  RawClient plain(broker_->router_endpoint());
  auto events = plain.EventsUntil(
      {ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_DISCONNECTED, ZMQ_EVENT_HANDSHAKE_SUCCEEDED});
  EXPECT_TRUE(Has(events, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) ||
              Has(events, ZMQ_EVENT_DISCONNECTED));
  EXPECT_FALSE(Has(events, ZMQ_EVENT_HANDSHAKE_SUCCEEDED));
  EXPECT_FALSE(plain.Received());
  EXPECT_EQ(broker_->counters().rejected, 0u);
  EXPECT_EQ(log_.Count("event=round-open"), 0u);
}

}  // namespace
}  // namespace tally::test
