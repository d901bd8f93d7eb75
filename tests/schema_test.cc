// Wire schema (protocol 2): round trips, pinned bytes, and one test per way a peer can send a
// bad message, including every protocol-1 shape a stale peer could still send (version 1, the
// "share" kind and phase, a join without a nonce).

#include "schema/schema.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <msgpack.hpp>
#include <random>
#include <string>
#include <vector>

#include "schema/results.h"
#include "schema/text.h"
#include "tests/contains.h"

namespace tally {
namespace {

RoundId TestRound() {
  RoundId r{};
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<uint8_t>(0xa0 + i);
  return r;
}

std::vector<uint8_t> SealedBytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 31 + 7);
  return v;
}

// A join nonce whose bytes all differ from another seed's.
JoinNonce TestNonce(uint8_t seed) {
  JoinNonce n{};
  for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(seed * 37 + i);
  return n;
}

std::vector<JoinNonce> TestNonces(size_t count) {
  std::vector<JoinNonce> out;
  for (size_t i = 0; i < count; ++i) out.push_back(TestNonce(static_cast<uint8_t>(i + 1)));
  return out;
}

Envelope TestEnvelope() {
  return Envelope{EnvelopeKind::kPartial, TestRound(), "patient-7", "hospital_a",
                  SealedBytes(kSealOverhead + 50)};
}

// A phase update as the broker publishes it: nonces from the sum phase on, none while open.
PhaseUpdate TestUpdate(Phase phase, std::vector<std::string> participants = {"alice", "bob"}) {
  PhaseUpdate u{TestRound(), phase, 9, 3, {"hospital", 100, 4, std::move(participants)},
                {},          500,   ""};
  if (phase != Phase::kOpen) u.nonces = TestNonces(u.params.participants.size());
  if (phase == Phase::kAbort) u.reason = "partial from bob not sent";
  return u;
}

// Builds raw msgpack for malformed inputs the encoder would never produce. Raw messages carry
// kProtocolVersion unless a test is about the version.
using Packer = msgpack::packer<msgpack::sbuffer>;
std::vector<uint8_t> Raw(const std::function<void(Packer&)>& fill) {
  msgpack::sbuffer buf;
  Packer p(buf);
  fill(p);
  return std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(buf.data()),
                              reinterpret_cast<const uint8_t*>(buf.data()) + buf.size());
}
void Str(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}
void Bin(Packer& p, std::span<const uint8_t> b) {
  p.pack_bin(static_cast<uint32_t>(b.size()));
  p.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}
void RoundBin(Packer& p, size_t size) { Bin(p, std::vector<uint8_t>(size, 0x42)); }
// A round's params after its participants, for a round without columns: no columns, no weight.
void NoColumns(Packer& p) {
  p.pack_array(0);
  p.pack_array(2);
  p.pack_uint64(0);
  p.pack_uint32(0);
}

// Request with each field overridable.
std::vector<uint8_t> RawRequest(const std::function<void(Packer&)>& length,
                                const std::vector<std::string>& participants = {"alice"}) {
  return Raw([&](Packer& p) {
    p.pack_array(9);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(100);
    length(p);
    p.pack_array(static_cast<uint32_t>(participants.size()));
    for (const auto& n : participants) Str(p, n);
    NoColumns(p);
    p.pack_uint32(0);  // deadline_ms
  });
}

// PhaseUpdate `u` packed field by field, with the nonces field (and optionally deadline_ms)
// overridable.
std::vector<uint8_t> RawPhase(const PhaseUpdate& u, const std::function<void(Packer&)>& nonces,
                              const std::function<void(Packer&)>& deadline = nullptr) {
  return Raw([&](Packer& p) {
    p.pack_array(15);
    p.pack_uint32(kProtocolVersion);
    Str(p, "phase");
    Bin(p, u.round);
    Str(p, PhaseName(u.phase));
    p.pack_uint64(u.seq);
    p.pack_uint64(u.ticket);
    Str(p, u.params.hospital);
    p.pack_uint64(u.params.range);
    p.pack_uint32(u.params.length);
    p.pack_array(static_cast<uint32_t>(u.params.participants.size()));
    for (const auto& n : u.params.participants) Str(p, n);
    NoColumns(p);
    nonces(p);
    if (deadline) {
      deadline(p);
    } else {
      p.pack_uint32(u.deadline_ms);
    }
    Str(p, u.reason);
  });
}

std::string DecodeError(std::span<const uint8_t> bytes, const Limits& limits = {}) {
  Result<Message> r = Decode(bytes, limits);
  EXPECT_FALSE(r.ok()) << "decoded a malformed message";
  return r.message();
}

void ExpectRoundTrip(const Message& m) {
  const std::vector<uint8_t> bytes = Encode(m);
  Result<Message> back = Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(*back, m);
  EXPECT_EQ(Encode(*back), bytes);
}

// ---- Round trips ---------------------------------------------------------------------------

TEST(SchemaRoundTrip, Request) {
  ExpectRoundTrip(
      Request{std::numeric_limits<uint64_t>::max(),
              {"", 1'000'000'007, kMaxVectorLength, {"alice", "bob", "charlie-2", "d_4"}},
              0});
  ExpectRoundTrip(Request{0, {"", 0, 1, {}}, 0});  // empty participants: the whole roster
  ExpectRoundTrip(Request{9, {"", 10, 1, {"alice", "bob"}}, 2500});  // a deadline asked for
}

// Every refused request gets a notice, even one that does not decode, as long as its ticket
// can be read: [version, "request", ticket uint, ...].
TEST(SchemaDecode, RequestTicketIsReadFromARequestThatDoesNotDecode) {
  EXPECT_EQ(RequestTicket(Encode(Request{42, {"", 10, 1, {"alice", "bob"}}, 0})), 42u);
  std::vector<uint8_t> bad_length = RawRequest([](Packer& p) { p.pack_uint32(0); });
  ASSERT_FALSE(Decode(bad_length).ok());
  EXPECT_EQ(RequestTicket(bad_length), 5u);
  std::vector<uint8_t> short_request = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(77);
  });
  EXPECT_EQ(RequestTicket(short_request), 77u);
  EXPECT_EQ(RequestTicket(Encode(Join{TestRound(), TestNonce(1)})), std::nullopt);
  EXPECT_EQ(RequestTicket(std::vector<uint8_t>{0x93, 0x02, 0xa7, 'r', 'e', 'q', 'u', 'e', 's', 't',
                                               0xa1, 'x'}),
            std::nullopt);  // a ticket that is not a uint
  EXPECT_EQ(RequestTicket(std::vector<uint8_t>{0x01}), std::nullopt);
}

TEST(SchemaRoundTrip, JoinWithNonce) {
  ExpectRoundTrip(Join{TestRound(), TestNonce(1)});
  ExpectRoundTrip(Join{TestRound(), JoinNonce{}});
  JoinNonce ones;
  ones.fill(0xff);
  ExpectRoundTrip(Join{TestRound(), ones});
  // The nonce is a field of its own: joins that differ only in it differ on the wire.
  EXPECT_NE(Encode(Join{TestRound(), TestNonce(1)}), Encode(Join{TestRound(), TestNonce(2)}));
}

TEST(SchemaRoundTrip, Refuse) {
  ExpectRoundTrip(Refuse{TestRound(), "input does not fit range 100 (length 3)"});
  ExpectRoundTrip(Refuse{TestRound(), std::string(kMaxReasonLength, '~')});
}

TEST(SchemaRoundTrip, Envelope) {
  ExpectRoundTrip(TestEnvelope());
  Envelope big = TestEnvelope();
  big.sealed = SealedBytes(MaxSealedSize(1000));
  ExpectRoundTrip(big);
}

TEST(SchemaRoundTrip, Ack) { ExpectRoundTrip(Ack{TestRound()}); }

TEST(SchemaRoundTrip, PhaseUpdateEveryPhaseWithAndWithoutNonces) {
  for (Phase phase : {Phase::kOpen, Phase::kSum, Phase::kDone, Phase::kAbort}) {
    PhaseUpdate u{TestRound(),
                  phase,
                  1ull << 40,
                  77,
                  {"hospital", 1ull << 63, 4096, {"alice", "bob", "carol"}},
                  {},
                  15000,
                  phase == Phase::kAbort ? "charlie did not join" : ""};
    ExpectRoundTrip(u);  // open, or an abort before everyone joined: no nonces
    u.nonces = TestNonces(3);
    ExpectRoundTrip(u);  // sum, and done/abort after it: one nonce per participant
  }
  // Nonces are positional: the same nonces in another order are another update.
  PhaseUpdate u = TestUpdate(Phase::kSum);
  const std::vector<uint8_t> bytes = Encode(u);
  std::swap(u.nonces[0], u.nonces[1]);
  EXPECT_NE(Encode(u), bytes);
  ExpectRoundTrip(u);
}

TEST(SchemaRoundTrip, Notice) {
  ExpectRoundTrip(Notice{42, "round queue full"});
  ExpectRoundTrip(Notice{0, ""});
}

TEST(SchemaRoundTrip, ManyParticipants) {
  Request r{1, {"", 10, 1, {}}, 0};
  for (size_t i = 0; i < kMaxParticipants; ++i)
    r.params.participants.push_back("p" + std::to_string(i));
  ExpectRoundTrip(r);
  // The largest phase update: kMaxParticipants names of 32 characters and their nonces, which
  // MaxMessageSize must cover.
  PhaseUpdate u{TestRound(), Phase::kSum, 1, 2, {"hospital", 3, 1, {}}, {}, 10, ""};
  for (size_t i = 0; i < kMaxParticipants; ++i) {
    std::string name = "p" + std::to_string(i);
    u.params.participants.push_back(name + std::string(kMaxNameLength - name.size(), 'x'));
    u.nonces.push_back(TestNonce(static_cast<uint8_t>(i)));
  }
  ExpectRoundTrip(u);
  EXPECT_LE(Encode(u).size(), MaxMessageSize(1));
}

TEST(SchemaPayload, RoundTripTenThousandValuesNearTwoToThe64) {
  std::vector<uint64_t> values(10'000);
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = std::numeric_limits<uint64_t>::max() - (rng() % 1000) - i;
  }
  values[0] = std::numeric_limits<uint64_t>::max();
  values[1] = 0;
  const std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kPartial, values);
  // [2, "partial", bin32 header + 80,000 bytes]: 1 + 1 + 8 + 5 + 80,000.
  EXPECT_EQ(bytes.size(), 80'015u);
  Result<std::vector<uint64_t>> back = DecodePayload(bytes, EnvelopeKind::kPartial, 10'000);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(*back, values);
}

TEST(SchemaPayload, ValuesAreLittleEndianBin) {
  const std::vector<uint64_t> values = {0x0102030405060708ull};
  const std::vector<uint8_t> expected = {0x93, 0x03, 0xa7, 'p',  'a',  'r',  't',
                                         'i',  'a',  'l',  0xc4, 0x08, 0x08, 0x07,
                                         0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
  EXPECT_EQ(EncodePayload(EnvelopeKind::kPartial, values), expected);
}

// Protocol 1's "share" payload, or any other kind name, is not a partial.
TEST(SchemaPayload, KindShareAndUnknownKindsRejected) {
  for (std::string_view kind : {"share", "partia", "PARTIAL", ""}) {
    const std::vector<uint8_t> bytes = Raw([kind](Packer& p) {
      p.pack_array(3);
      p.pack_uint32(kProtocolVersion);
      Str(p, kind);
      Bin(p, std::vector<uint8_t>(8, 1));
    });
    Result<std::vector<uint64_t>> r = DecodePayload(bytes, EnvelopeKind::kPartial, 1);
    ASSERT_FALSE(r.ok()) << kind;
    EXPECT_EQ(r.message(), "payload: unknown kind") << kind;
  }
}

TEST(SchemaPayload, WrongLength) {
  const std::vector<uint64_t> values = {1, 2, 3};
  const std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kPartial, values);
  Result<std::vector<uint64_t>> longer = DecodePayload(bytes, EnvelopeKind::kPartial, 4);
  ASSERT_FALSE(longer.ok());
  EXPECT_TRUE(Contains(longer.message(), "values must be 32 bytes (4 elements), got 24"));
  Result<std::vector<uint64_t>> shorter = DecodePayload(bytes, EnvelopeKind::kPartial, 2);
  ASSERT_FALSE(shorter.ok());
  EXPECT_TRUE(Contains(shorter.message(), "values must be 16 bytes (2 elements), got 24"));
}

TEST(SchemaPayload, ValuesAsArrayOfNumbersRejected) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "partial");
    p.pack_array(1);
    p.pack_uint64(5);
  });
  Result<std::vector<uint64_t>> r = DecodePayload(bytes, EnvelopeKind::kPartial, 1);
  ASSERT_FALSE(r.ok());
  // A payload allows no nested container at all, so the decoder stops before the field check.
  EXPECT_TRUE(Contains(r.message(), "nesting too deep"));
  const std::vector<uint8_t> empty_array = {0x93, 0x03, 0xa7, 'p', 'a', 'r',
                                            't',  'i',  'a',  'l', 0x90};
  EXPECT_TRUE(Contains(DecodePayload(empty_array, EnvelopeKind::kPartial, 1).message(),
                       "nesting too deep"));
  const std::vector<uint8_t> str_values = {0x93, 0x03, 0xa7, 'p', 'a', 'r',
                                           't',  'i',  'a',  'l', 0xa0};
  EXPECT_EQ(DecodePayload(str_values, EnvelopeKind::kPartial, 1).message(),
            "payload: values must be bin, got str");
}

TEST(SchemaPayload, TrailingBytesAndVersion) {
  std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>{9});
  bytes.push_back(0xc0);
  EXPECT_TRUE(
      Contains(DecodePayload(bytes, EnvelopeKind::kPartial, 1).message(), "1 trailing bytes"));
  bytes.pop_back();
  ASSERT_TRUE(DecodePayload(bytes, EnvelopeKind::kPartial, 1).ok());
  for (uint8_t version : {uint8_t{0x01}, uint8_t{0x02}, uint8_t{0x04}}) {  // older ones too
    bytes[1] = version;
    EXPECT_EQ(DecodePayload(bytes, EnvelopeKind::kPartial, 1).message(),
              "payload: unsupported version");
  }
}

// ---- Pinned wire bytes ---------------------------------------------------------------------

TEST(SchemaWire, JoinBytesArePinned) {
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(i);
  JoinNonce nonce{};
  for (size_t i = 0; i < nonce.size(); ++i) nonce[i] = static_cast<uint8_t>(0x80 + i);
  // fixarray(4), fixint 3, fixstr "join", bin8(16) round id, bin8(32) nonce: 59 bytes.
  std::vector<uint8_t> expected = {0x94, 0x03, 0xa4, 'j', 'o', 'i', 'n', 0xc4, 0x10};
  for (uint8_t b : round) expected.push_back(b);
  expected.insert(expected.end(), {0xc4, 0x20});
  for (uint8_t b : nonce) expected.push_back(b);
  ASSERT_EQ(expected.size(), 59u);
  EXPECT_EQ(Encode(Join{round, nonce}), expected);
  Result<Message> back = Decode(expected);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<Join>(*back), (Join{round, nonce}));
}

TEST(SchemaWire, PhaseUpdateBytesArePinned) {
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(i);
  JoinNonce a, b;
  a.fill(0x11);
  b.fill(0x22);
  PhaseUpdate u{round, Phase::kSum, 1, 2, {"h", 3, 1, {"a", "b"}}, {a, b}, 10, ""};
  // fixarray(15), 3, "phase", round, "sum", seq, ticket, hospital, range, length,
  // participants, columns (none: fixarray 0), weight (fixarray [0, 0]), the nonces as ONE bin8
  // of 2 * 32 bytes in participants' order, deadline_ms, reason.
  std::vector<uint8_t> expected = {0x9f, 0x03, 0xa5, 'p', 'h', 'a', 's', 'e', 0xc4, 0x10};
  for (uint8_t x : round) expected.push_back(x);
  expected.insert(expected.end(), {0xa3, 's', 'u',  'm', 0x01, 0x02, 0xa1, 'h',  0x03, 0x01, 0x92,
                                   0xa1, 'a', 0xa1, 'b', 0x90, 0x92, 0x00, 0x00, 0xc4, 0x40});
  expected.insert(expected.end(), 32, 0x11);
  expected.insert(expected.end(), 32, 0x22);
  expected.insert(expected.end(), {0x0a, 0xa0});
  EXPECT_EQ(Encode(u), expected);
  Result<Message> back = Decode(expected);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<PhaseUpdate>(*back), u);

  // In the open phase the nonces field is an empty bin (c4 00), not absent.
  u.phase = Phase::kOpen;
  u.nonces.clear();
  std::vector<uint8_t> open = {0x9f, 0x03, 0xa5, 'p', 'h', 'a', 's', 'e', 0xc4, 0x10};
  for (uint8_t x : round) open.push_back(x);
  open.insert(open.end(), {0xa4, 'o', 'p',  'e', 'n',  0x01, 0x02, 0xa1, 'h',  0x03, 0x01, 0x92,
                           0xa1, 'a', 0xa1, 'b', 0x90, 0x92, 0x00, 0x00, 0xc4, 0x00, 0x0a, 0xa0});
  EXPECT_EQ(Encode(u), open);
}

TEST(SchemaWire, NoticeBytesArePinned) {
  const std::vector<uint8_t> expected = {0x94, 0x03, 0xa6, 'n',  'o',  't', 'i',
                                         'c',  'e',  0xcc, 0xc8, 0xa2, 'n', 'o'};
  EXPECT_EQ(Encode(Notice{200, "no"}), expected);
}

// ---- Malformed messages --------------------------------------------------------------------

TEST(SchemaDecode, WrongVersion) {
  std::vector<uint8_t> bytes = Encode(Join{TestRound(), TestNonce(1)});
  ASSERT_EQ(bytes[1], 0x03);
  bytes[1] = 0x01;
  EXPECT_EQ(DecodeError(bytes), "unsupported protocol version 1");
  bytes[1] = 0x07;
  EXPECT_TRUE(Contains(DecodeError(bytes), "unsupported protocol version 7"));
  bytes[1] = 0x00;
  EXPECT_TRUE(Contains(DecodeError(bytes), "unsupported protocol version 0"));
  bytes[1] = 0xa0;  // empty str in the version slot
  EXPECT_TRUE(Contains(DecodeError(bytes), "protocol version must be uint, got str"));
}

// Every message a protocol-1 or protocol-2 peer sends is refused by its version before anything
// else, also the ones whose older shape differs (a 3-field join, a 13-field phase update).
TEST(SchemaDecode, ProtocolOneAndTwoMessagesRejected) {
  const std::vector<uint8_t> join_v1 = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(1);
    Str(p, "join");
    RoundBin(p, 16);
  });
  EXPECT_EQ(DecodeError(join_v1), "unsupported protocol version 1");
  const std::vector<uint8_t> share_v1 = Raw([](Packer& p) {
    p.pack_array(7);
    p.pack_uint32(1);
    Str(p, "envelope");
    Str(p, "share");
    RoundBin(p, 16);
    Str(p, "alice");
    Str(p, "bob");
    Bin(p, SealedBytes(kSealOverhead + 8));
  });
  EXPECT_EQ(DecodeError(share_v1), "unsupported protocol version 1");
  for (const Message& m :
       std::vector<Message>{Request{1, {"", 2, 3, {"a"}}, 0}, TestEnvelope(), Ack{TestRound()},
                            TestUpdate(Phase::kSum), Refuse{TestRound(), "no"}, Notice{1, "x"}}) {
    std::vector<uint8_t> bytes = Encode(m);
    ASSERT_EQ(bytes[1], 0x03);
    for (uint8_t older : {uint8_t{1}, uint8_t{2}}) {
      bytes[1] = older;
      EXPECT_EQ(DecodeError(bytes), "unsupported protocol version " + std::to_string(older));
    }
  }
}

TEST(SchemaDecode, UnknownType) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "x");
    RoundBin(p, 16);
  });
  EXPECT_TRUE(Contains(DecodeError(bytes), "unknown message type \"x\""));
  const std::vector<uint8_t> binary = Raw([](Packer& p) {
    p.pack_array(2);
    p.pack_uint32(kProtocolVersion);
    Str(p, std::string("\x01\x02", 2));
  });
  EXPECT_TRUE(Contains(DecodeError(binary), "unknown message type (unprintable"));
  const std::vector<uint8_t> bin_type = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    RoundBin(p, 4);
    RoundBin(p, 16);
  });
  EXPECT_TRUE(Contains(DecodeError(bin_type), "message type must be str, got bin"));
}

TEST(SchemaDecode, WrongTopLevelType) {
  const std::vector<uint8_t> map = {0x81, 0x01, 0x02};
  EXPECT_TRUE(Contains(DecodeError(map), "map"));
  const std::vector<uint8_t> integer = {0x05};
  EXPECT_TRUE(Contains(DecodeError(integer), "must be a msgpack array, got uint"));
  const std::vector<uint8_t> nil = {0xc0};
  EXPECT_TRUE(Contains(DecodeError(nil), "must be a msgpack array, got nil"));
  const std::vector<uint8_t> str = {0xa3, 'a', 'c', 'k'};
  EXPECT_TRUE(Contains(DecodeError(str), "must be a msgpack array, got str"));
  const std::vector<uint8_t> empty_array = {0x90};
  EXPECT_TRUE(Contains(DecodeError(empty_array), "needs at least version and type"));
}

TEST(SchemaDecode, MissingField) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(2);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
  });
  EXPECT_TRUE(Contains(DecodeError(bytes), "join: expected 4 fields, got 2"));
  // A join without its nonce (protocol 1's shape under version 2).
  const std::vector<uint8_t> no_nonce = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
  });
  EXPECT_EQ(DecodeError(no_nonce), "join: expected 4 fields, got 3");
  // A phase update without its nonces field (12 fields).
  const std::vector<uint8_t> no_nonces = Raw([](Packer& p) {
    p.pack_array(12);
    p.pack_uint32(kProtocolVersion);
    Str(p, "phase");
    RoundBin(p, 16);
    Str(p, "open");
    p.pack_uint64(1);
    p.pack_uint64(2);
    Str(p, "hospital");
    p.pack_uint64(3);
    p.pack_uint32(1);
    p.pack_array(1);
    Str(p, "a");
    p.pack_uint32(10);
    Str(p, "");
  });
  EXPECT_EQ(DecodeError(no_nonces), "phase: expected 15 fields, got 12");
  const std::vector<uint8_t> envelope = Raw([](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(kProtocolVersion);
    Str(p, "envelope");
    Str(p, "partial");
    RoundBin(p, 16);
    Str(p, "alice");
    Str(p, "bob");
  });
  EXPECT_TRUE(Contains(DecodeError(envelope), "envelope: expected 7 fields, got 6"));
}

TEST(SchemaDecode, ExtraField) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(5);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
    RoundBin(p, 32);
    p.pack_nil();
  });
  EXPECT_EQ(DecodeError(bytes), "join: expected 4 fields, got 5");
}

TEST(SchemaDecode, WrongFieldType) {
  const std::vector<uint8_t> str_round = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "ack");
    Str(p, "0123456789abcdef");
  });
  EXPECT_TRUE(Contains(DecodeError(str_round), "ack: round must be bin, got str"));
  const std::vector<uint8_t> str_ticket = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "notice");
    Str(p, "5");
    Str(p, "why");
  });
  EXPECT_TRUE(Contains(DecodeError(str_ticket), "notice: ticket must be uint, got str"));
  // msgpack-c may pack an integral double as an int, so splice a float64 in by hand.
  std::vector<uint8_t> float_length = RawRequest([](Packer& p) { p.pack_nil(); });
  const auto nil = std::find(float_length.begin() + 8, float_length.end(), 0xc0);
  ASSERT_NE(nil, float_length.end());
  const std::vector<uint8_t> f64 = {0xcb, 0x40, 0x08, 0, 0, 0, 0, 0, 0};  // 3.0
  float_length.insert(float_length.erase(nil), f64.begin(), f64.end());
  EXPECT_TRUE(Contains(DecodeError(float_length), "request: length must be uint, got float"));
  const std::vector<uint8_t> int_participant = Raw([](Packer& p) {
    p.pack_array(9);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(100);
    p.pack_uint32(1);
    p.pack_array(1);
    p.pack_uint32(3);
    NoColumns(p);
    p.pack_uint32(0);
  });
  EXPECT_TRUE(
      Contains(DecodeError(int_participant), "request: participants must hold str, got uint"));
  const std::vector<uint8_t> bad_kind = Raw([](Packer& p) {
    p.pack_array(7);
    p.pack_uint32(kProtocolVersion);
    Str(p, "envelope");
    Str(p, "gift");
    RoundBin(p, 16);
    Str(p, "alice");
    Str(p, "bob");
    Bin(p, SealedBytes(kSealOverhead));
  });
  EXPECT_EQ(DecodeError(bad_kind), "envelope: kind must be \"partial\"");
  const std::vector<uint8_t> str_nonce = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
    Str(p, std::string(32, 'n'));
  });
  EXPECT_EQ(DecodeError(str_nonce), "join: nonce must be bin, got str");
  // nonces must be one bin, not an array
  const std::vector<uint8_t> array_nonces =
      RawPhase(TestUpdate(Phase::kSum), [](Packer& p) { p.pack_array(0); });
  EXPECT_EQ(DecodeError(array_nonces), "phase: nonces must be bin, got array");
}

// Protocol 1's envelope kind "share" under version 2: there are no share envelopes any more.
TEST(SchemaDecode, KindShareRejected) {
  Envelope e = TestEnvelope();
  std::vector<uint8_t> bytes = Encode(e);
  const std::string s(bytes.begin(), bytes.end());
  const size_t at = s.find("\xa7partial");
  ASSERT_NE(at, std::string::npos);
  // fixstr(5) "share" in place of fixstr(7) "partial".
  const std::vector<uint8_t> share = {0xa5, 's', 'h', 'a', 'r', 'e'};
  bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(at),
              bytes.begin() + static_cast<std::ptrdiff_t>(at + 8));
  bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), share.begin(), share.end());
  EXPECT_EQ(DecodeError(bytes), "envelope: kind must be \"partial\"");
}

TEST(SchemaDecode, UnknownPhase) {
  PhaseUpdate u{TestRound(), Phase::kSum, 1, 2, {"hospital", 3, 1, {"a"}}, {TestNonce(1)}, 10, ""};
  std::vector<uint8_t> bytes = Encode(u);
  // "sum" follows the round id; turn it into "sux".
  const std::string s(bytes.begin(), bytes.end());
  const size_t at = s.find("sum");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 2] = 'x';
  EXPECT_EQ(DecodeError(bytes), "phase: unknown phase");
}

// Protocol 1's "share" phase under version 2: there is no share phase any more.
TEST(SchemaDecode, PhaseShareRejected) {
  for (bool with_nonces : {false, true}) {
    PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, {"hospital", 3, 1, {"a", "b"}}, {}, 10, ""};
    if (with_nonces) u.nonces = TestNonces(2);
    std::vector<uint8_t> bytes = Encode(u);
    const std::string s(bytes.begin(), bytes.end());
    const size_t at = s.find("\xa4open");
    ASSERT_NE(at, std::string::npos);
    const std::vector<uint8_t> share = {0xa5, 's', 'h', 'a', 'r', 'e'};
    bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                bytes.begin() + static_cast<std::ptrdiff_t>(at + 5));
    bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), share.begin(), share.end());
    EXPECT_EQ(DecodeError(bytes), "phase: unknown phase") << with_nonces;
  }
}

TEST(SchemaDecode, NegativeInteger) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "notice");
    p.pack_int64(-1);
    Str(p, "why");
  });
  EXPECT_TRUE(Contains(DecodeError(bytes), "notice: ticket must be uint, got negative int"));
  const std::vector<uint8_t> version = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_int32(-1);
    Str(p, "join");
    RoundBin(p, 16);
  });
  EXPECT_TRUE(Contains(DecodeError(version), "protocol version must be uint, got negative int"));
  // A positive value in a signed encoding (int8 0x05) is still a valid uint.
  const std::vector<uint8_t> signed_positive = {0x94, 0xd0, 0x03, 0xa6, 'n',  'o', 't',
                                                'i',  'c',  'e',  0xd0, 0x05, 0xa0};
  Result<Message> ok = Decode(signed_positive);
  ASSERT_TRUE(ok.ok()) << ok.message();
  EXPECT_EQ(std::get<Notice>(*ok).ticket, 5u);
}

TEST(SchemaDecode, U32Overflow) {
  const std::vector<uint8_t> bytes =
      RawRequest([](Packer& p) { p.pack_uint64(uint64_t{1} << 32); });
  EXPECT_TRUE(Contains(DecodeError(bytes), "request: length 4294967296 does not fit in u32"));
  const std::vector<uint8_t> phase = RawPhase(
      TestUpdate(Phase::kOpen), [](Packer& p) { RoundBin(p, 0); },
      [](Packer& p) { p.pack_uint64(uint64_t{1} << 32); });
  EXPECT_TRUE(Contains(DecodeError(phase), "phase: deadline_ms 4294967296 does not fit in u32"));
}

TEST(SchemaDecode, RoundIdOf15And17Bytes) {
  for (size_t size : {size_t{15}, size_t{17}, size_t{0}}) {
    const std::vector<uint8_t> bytes = Raw([size](Packer& p) {
      p.pack_array(4);
      p.pack_uint32(kProtocolVersion);
      Str(p, "join");
      RoundBin(p, size);
      RoundBin(p, 32);
    });
    EXPECT_EQ(DecodeError(bytes), "join: round must be 16 bytes, got " + std::to_string(size));
  }
}

TEST(SchemaDecode, JoinNonceOfWrongSize) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{16}, size_t{31}, size_t{33}, size_t{64}}) {
    const std::vector<uint8_t> bytes = Raw([size](Packer& p) {
      p.pack_array(4);
      p.pack_uint32(kProtocolVersion);
      Str(p, "join");
      RoundBin(p, 16);
      RoundBin(p, size);
    });
    EXPECT_EQ(DecodeError(bytes), "join: nonce must be 32 bytes, got " + std::to_string(size));
  }
}

// The nonces bin of a phase update: 32 bytes per nonce, and either none or one per participant.
TEST(SchemaDecode, PhaseNoncesNotAMultipleOf32) {
  for (size_t size : {size_t{1}, size_t{31}, size_t{33}, size_t{63}}) {
    const std::vector<uint8_t> bytes =  // two participants
        RawPhase(TestUpdate(Phase::kSum), [size](Packer& p) { RoundBin(p, size); });
    EXPECT_EQ(DecodeError(bytes), "phase: nonces must hold at most 2 nonces of 32 bytes, got " +
                                      std::to_string(size) + " bytes");
  }
}

TEST(SchemaDecode, PhaseNoncesNotOnePerParticipant) {
  // Fewer nonces than participants.
  PhaseUpdate fewer = TestUpdate(Phase::kSum, {"alice", "bob", "carol"});
  fewer.nonces.pop_back();
  EXPECT_EQ(DecodeError(Encode(fewer)), "phase: nonces must be empty or one per participant");
  fewer.nonces.resize(1);
  EXPECT_EQ(DecodeError(Encode(fewer)), "phase: nonces must be empty or one per participant");
  // More nonces than participants.
  PhaseUpdate more = TestUpdate(Phase::kSum, {"alice", "bob"});
  more.nonces.push_back(TestNonce(9));
  EXPECT_EQ(DecodeError(Encode(more)),
            "phase: nonces must hold at most 2 nonces of 32 bytes, got 96 bytes");
  PhaseUpdate none = TestUpdate(Phase::kOpen, {});
  none.nonces = {TestNonce(1)};
  EXPECT_EQ(DecodeError(Encode(none)),
            "phase: nonces must hold at most 0 nonces of 32 bytes, got 32 bytes");
  // Exactly one per participant and none at all are both fine, in every phase.
  for (Phase phase : {Phase::kOpen, Phase::kSum, Phase::kDone, Phase::kAbort}) {
    PhaseUpdate u = TestUpdate(phase, {"alice", "bob", "carol"});
    EXPECT_TRUE(Decode(Encode(u)).ok());
    u.nonces = phase == Phase::kOpen ? TestNonces(3) : std::vector<JoinNonce>{};
    EXPECT_TRUE(Decode(Encode(u)).ok());
  }
}

TEST(SchemaDecode, InvalidName) {
  for (const std::string& name :
       {std::string("Alice"), std::string(""), std::string(33, 'a'), std::string("a b"),
        std::string("al\xc3\xa9"), std::string("a.b")}) {
    Envelope e = TestEnvelope();
    e.from = name;
    EXPECT_TRUE(Contains(DecodeError(Encode(e)), "envelope: invalid name in from")) << name;
    e = TestEnvelope();
    e.to = name;
    EXPECT_TRUE(Contains(DecodeError(Encode(e)), "envelope: invalid name in to")) << name;
    PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, {name, 3, 1, {"a"}}, {}, 10, ""};
    EXPECT_TRUE(Contains(DecodeError(Encode(u)), "phase: invalid name in hospital")) << name;
    EXPECT_TRUE(Contains(DecodeError(Encode(Request{1, {"", 2, 3, {"ok", name}}, 0})),
                         "request: invalid name in participants"))
        << name;
  }
  EXPECT_TRUE(ValidName("a"));
  EXPECT_TRUE(ValidName(std::string(32, 'z')));
  EXPECT_TRUE(ValidName("0-9_az"));
}

TEST(SchemaDecode, DuplicateParticipant) {
  EXPECT_TRUE(Contains(DecodeError(Encode(Request{1, {"", 2, 3, {"alice", "bob", "alice"}}, 0})),
                       "request: duplicate name \"alice\" in participants"));
  PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, {"h", 3, 1, {"bob", "bob"}}, {}, 10, ""};
  EXPECT_TRUE(Contains(DecodeError(Encode(u)), "phase: duplicate name \"bob\""));
  u.phase = Phase::kSum;
  u.nonces = TestNonces(2);
  EXPECT_EQ(DecodeError(Encode(u)), "phase: duplicate name \"bob\" in participants");
}

TEST(SchemaDecode, BadReasonChars) {
  for (const std::string& reason :
       {std::string("tab\there"), std::string("new\nline"), std::string("nul\0x", 5),
        std::string("caf\xc3\xa9"), std::string("\x7f"), std::string(kMaxReasonLength + 1, 'a')}) {
    EXPECT_TRUE(Contains(DecodeError(Encode(Refuse{TestRound(), reason})),
                         "refuse: reason must be printable ASCII, at most 200 characters"));
    EXPECT_TRUE(Contains(DecodeError(Encode(Notice{1, reason})), "notice: reason must be"));
  }
}

TEST(SchemaDecode, ReasonErrorDoesNotEchoTheReason) {
  const std::string secret = "secret-input=12345\n";
  const std::string msg = DecodeError(Encode(Refuse{TestRound(), secret}));
  EXPECT_EQ(msg.find("12345"), std::string::npos) << msg;
}

TEST(SchemaDecode, TrailingBytes) {
  std::vector<uint8_t> bytes = Encode(Ack{TestRound()});
  bytes.push_back(0x00);
  EXPECT_TRUE(Contains(DecodeError(bytes), "1 trailing bytes"));
  std::vector<uint8_t> twice = Encode(Ack{TestRound()});
  const std::vector<uint8_t> again = Encode(Ack{TestRound()});
  twice.insert(twice.end(), again.begin(), again.end());
  EXPECT_TRUE(Contains(DecodeError(twice), "trailing bytes"));
}

TEST(SchemaDecode, MessageOverMaxMessageBytes) {
  Limits limits;
  limits.max_message_bytes = 100;
  Envelope e = TestEnvelope();
  e.sealed = SealedBytes(200);
  const std::vector<uint8_t> bytes = Encode(e);
  EXPECT_TRUE(Contains(DecodeError(bytes, limits), "message is " + std::to_string(bytes.size()) +
                                                       " bytes, over the limit of 100"));
}

TEST(SchemaDecode, SealedOverMaxSealedBytes) {
  Limits limits;
  limits.max_sealed_bytes = 1000;
  Envelope e = TestEnvelope();
  e.sealed = SealedBytes(1000);
  EXPECT_TRUE(Decode(Encode(e), limits).ok());
  e.sealed = SealedBytes(1001);
  // The decoder's bin bound also admits a phase update's nonces (max_participants * 32 bytes),
  // so here the sealed field's own check refuses it.
  EXPECT_EQ(DecodeError(Encode(e), limits),
            "envelope: sealed is 1001 bytes, over the limit of 1000");
  // With few participants the decoder's bound is the sealed limit itself and stops it first.
  limits.max_participants = 3;
  EXPECT_EQ(DecodeError(Encode(e), limits), "msgpack bin longer than the limit of 1000 bytes");
}

TEST(SchemaDecode, SealedShorterThanSealOverhead) {
  Envelope e = TestEnvelope();
  e.sealed = SealedBytes(kSealOverhead - 1);
  EXPECT_TRUE(Contains(DecodeError(Encode(e)),
                       "envelope: sealed is 39 bytes, shorter than the minimum of 40"));
}

TEST(SchemaDecode, LengthZeroAndOverMaxLength) {
  EXPECT_TRUE(Contains(DecodeError(Encode(Request{1, {"", 2, 0, {}}, 0})),
                       "request: length must be between 1 and 1048576, got 0"));
  EXPECT_TRUE(Contains(DecodeError(Encode(Request{1, {"", 2, kMaxVectorLength + 1, {}}, 0})),
                       "got 1048577"));
  Limits limits;
  limits.max_length = 10;
  EXPECT_TRUE(Decode(Encode(Request{1, {"", 2, 10, {}}, 0}), limits).ok());
  PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, {"h", 3, 11, {"a"}}, {}, 10, ""};
  EXPECT_TRUE(
      Contains(DecodeError(Encode(u), limits), "phase: length must be between 1 and 10, got 11"));
}

TEST(SchemaDecode, TooManyParticipants) {
  Limits limits;
  limits.max_participants = 3;
  const Request r{1, {"", 2, 3, {"a", "b", "c", "d"}}, 0};
  EXPECT_TRUE(Contains(DecodeError(Encode(r), limits), "too many participants (4 > 3)"));
  Request big{1, {"", 2, 3, {}}, 0};
  for (size_t i = 0; i <= kMaxParticipants; ++i)
    big.params.participants.push_back("p" + std::to_string(i));
  EXPECT_TRUE(Contains(DecodeError(Encode(big)), "array longer than the limit of 1000"));
}

TEST(SchemaDecode, NestingAndMapsAndExtRejected) {
  // Columns are the deepest a message goes (message, columns, a column): one more is refused.
  const std::vector<uint8_t> nested = Raw([](Packer& p) {
    p.pack_array(9);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(0);
    p.pack_uint32(1);
    p.pack_array(0);
    p.pack_array(1);
    p.pack_array(4);
    p.pack_array(1);
    Str(p, "a");
  });
  EXPECT_TRUE(Contains(DecodeError(nested), "nesting too deep"));
  const std::vector<uint8_t> map_field = {0x93, 0x03, 0xa4, 'j', 'o', 'i', 'n', 0x81, 0x01, 0x02};
  EXPECT_TRUE(Contains(DecodeError(map_field), "map"));
  const std::vector<uint8_t> ext_field = {0x93, 0x03, 0xa4, 'j', 'o', 'i', 'n', 0xd4, 0x01, 0x02};
  EXPECT_TRUE(Contains(DecodeError(ext_field), "ext"));
}

TEST(SchemaDecode, HugeDeclaredSizesDoNotAllocate) {
  // array32 / str32 / bin32 headers claiming ~4 GiB in a few bytes.
  const std::vector<uint8_t> array = {0xdd, 0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(Contains(DecodeError(array), "array longer than the limit"));
  // msgpack-c waits for a str/bin body before checking its size: without the body this is
  // just truncated, and nothing was allocated.
  const std::vector<uint8_t> str = {0x92, 0x02, 0xdb, 0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(Contains(DecodeError(str), "truncated"));
  const std::vector<uint8_t> bin = {0x92, 0x02, 0xc6, 0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(Contains(DecodeError(bin), "truncated"));
}

TEST(SchemaDecode, OverlongStrRejectedByTheDecoderLimit) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "notice");
    p.pack_uint32(1);
    Str(p, std::string(300, 'a'));
  });
  EXPECT_TRUE(Contains(DecodeError(bytes), "str longer than the limit of 256 bytes"));
}

TEST(SchemaDecode, EmptyInput) { EXPECT_TRUE(Contains(DecodeError({}), "empty message")); }

TEST(SchemaDecode, TruncatedEnvelopeAtEveryPrefix) {
  const std::vector<uint8_t> bytes = Encode(TestEnvelope());
  for (size_t n = 0; n < bytes.size(); ++n) {
    Result<Message> r = Decode(std::span<const uint8_t>(bytes.data(), n));
    ASSERT_FALSE(r.ok()) << "prefix " << n;
    EXPECT_FALSE(r.message().empty());
  }
  EXPECT_TRUE(Decode(bytes).ok());
}

TEST(SchemaDecode, RandomBytesNeverCrash) {
  std::mt19937 rng(20260125);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<size_t> size(0, 64);
  int decoded = 0;
  for (int i = 0; i < 20'000; ++i) {
    std::vector<uint8_t> buf(size(rng));
    for (uint8_t& b : buf) b = static_cast<uint8_t>(byte(rng));
    // Bias a quarter of the inputs towards plausible message starts.
    if (i % 4 == 0 && buf.size() >= 2) {
      buf[0] = static_cast<uint8_t>(0x92 + i % 11);
      buf[1] = static_cast<uint8_t>(kProtocolVersion);
    }
    Result<Message> r = Decode(buf);
    if (r.ok()) {
      ++decoded;
    } else {
      EXPECT_FALSE(r.message().empty());
    }
  }
  EXPECT_LT(decoded, 20'000);
}

TEST(SchemaDecode, MutatedValidMessagesNeverCrash) {
  const std::vector<Message> seeds = {Request{3, {"", 100, 4, {"alice", "bob"}}, 0},
                                      Join{TestRound(), TestNonce(1)},
                                      Refuse{TestRound(), "no"},
                                      TestEnvelope(),
                                      Ack{TestRound()},
                                      TestUpdate(Phase::kOpen),
                                      TestUpdate(Phase::kSum),
                                      Notice{1, "full"}};
  std::mt19937 rng(99);
  for (const Message& seed : seeds) {
    const std::vector<uint8_t> good = Encode(seed);
    for (int i = 0; i < 3'000; ++i) {
      std::vector<uint8_t> buf = good;
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) buf[rng() % buf.size()] = static_cast<uint8_t>(rng());
      Result<Message> r = Decode(buf);
      if (!r.ok()) {
        EXPECT_FALSE(r.message().empty());
      } else if (const auto* u = std::get_if<PhaseUpdate>(&*r)) {
        EXPECT_TRUE(u->nonces.empty() || u->nonces.size() == u->params.participants.size());
      }
    }
  }
}

// ---- Names, reasons, round ids -------------------------------------------------------------

TEST(SchemaNames, KindAndPhaseNames) {
  EXPECT_EQ(KindName(EnvelopeKind::kPartial), "partial");
  EXPECT_EQ(PhaseName(Phase::kOpen), "open");
  EXPECT_EQ(PhaseName(Phase::kSum), "sum");
  EXPECT_EQ(PhaseName(Phase::kDone), "done");
  EXPECT_EQ(PhaseName(Phase::kAbort), "abort");
}

TEST(SchemaNames, ValidReason) {
  EXPECT_TRUE(ValidReason(""));
  EXPECT_TRUE(ValidReason(" !~"));
  EXPECT_TRUE(ValidReason(std::string(kMaxReasonLength, 'x')));
  EXPECT_FALSE(ValidReason(std::string(kMaxReasonLength + 1, 'x')));
  EXPECT_FALSE(
      ValidReason("bob\xe2\x86\x92"
                  "charlie"));
}

TEST(SchemaRoundHex, RoundTripAndStrictness) {
  const RoundId round = TestRound();
  const std::string hex = RoundHex(round);
  EXPECT_EQ(hex, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
  Result<RoundId> back = RoundFromHex(hex);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(*back, round);
  EXPECT_FALSE(RoundFromHex("").ok());
  EXPECT_FALSE(RoundFromHex(hex.substr(1)).ok());
  EXPECT_FALSE(RoundFromHex(hex + "0").ok());
  EXPECT_FALSE(RoundFromHex("A0A1A2A3A4A5A6A7A8A9AAABACADAEAF").ok());
  EXPECT_FALSE(RoundFromHex("g0a1a2a3a4a5a6a7a8a9aaabacadaeaf").ok());
  EXPECT_FALSE(RoundFromHex(" 0a1a2a3a4a5a6a7a8a9aaabacadaeaf").ok());
  EXPECT_FALSE(RoundFromHex("0xa1a2a3a4a5a6a7a8a9aaabacadaeaf").ok());
}

}  // namespace
}  // namespace tally

namespace tally {
namespace {

TEST(TextTest, ParseU64IsStrictAndCatchesOverflow) {
  uint64_t v = 7;
  EXPECT_TRUE(ParseU64("18446744073709551615", v));
  EXPECT_EQ(v, UINT64_MAX);
  EXPECT_TRUE(ParseU64("0", v));
  EXPECT_EQ(v, 0u);
  for (const char* bad :
       {"18446744073709551616", "99999999999999999999", "", "-1", "+1", "1 ", " 1", "0x10", "1e3"})
    EXPECT_FALSE(ParseU64(bad, v)) << bad;
  uint32_t w = 0;
  EXPECT_TRUE(ParseU32("4294967295", 1, w));
  EXPECT_EQ(w, UINT32_MAX);
  EXPECT_FALSE(ParseU32("4294967296", 1, w));
  EXPECT_FALSE(ParseU32("0", 1, w));
}

// Regression (found reading results with jq 1.6): aggregates above 2^53 were printed as JSON
// numbers, which double-based readers show with other digits; they are strings now.
TEST(TextTest, JsonNumbersAbove2To53AreStrings) {
  EXPECT_EQ(JsonNumbers(std::vector<uint64_t>{9007199254740992u}), "9007199254740992");
  EXPECT_EQ(JsonNumbers(std::vector<uint64_t>{9007199254740993u}), "\"9007199254740993\"");
  EXPECT_EQ(JsonNumbers(std::vector<uint64_t>{1, UINT64_MAX, 3}),
            "[1, \"18446744073709551615\", 3]");
  EXPECT_EQ(JsonString("a\"b\\c\n\x7f"), "\"a\\\"b\\\\c\\u000a\\u007f\"");
}

TEST(TextTest, EndpointsOfOneBrokerAddress) {
  auto e = EndpointsOf("broker.example");
  ASSERT_TRUE(e.ok()) << e.message();
  EXPECT_EQ(e->router, "tcp://broker.example:7700");
  EXPECT_EQ(e->phases, "tcp://broker.example:7701");
  e = EndpointsOf("10.0.0.1:9000");
  ASSERT_TRUE(e.ok()) << e.message();
  EXPECT_EQ(e->router, "tcp://10.0.0.1:9000");
  EXPECT_EQ(e->phases, "tcp://10.0.0.1:9001");
  e = EndpointsOf("[2001:db8::1]:7800");
  ASSERT_TRUE(e.ok()) << e.message();
  EXPECT_EQ(e->router, "tcp://[2001:db8::1]:7800");
  EXPECT_EQ(e->phases, "tcp://[2001:db8::1]:7801");
  EXPECT_EQ(EndpointsOf("[::1]")->router, "tcp://[::1]:7700");
  EXPECT_EQ(EndpointsOf("host:65535").message(),
            "broker address \"host:65535\": the port must be 1..65534 (the phase channel takes "
            "the next one)");
  EXPECT_EQ(EndpointsOf("2001:db8::1").message(),
            "broker address \"2001:db8::1\": write an IPv6 address in brackets");
  for (const char* bad : {"", ":7700", "host:", "host:x", "host:0", "[::1", "tcp://host"})
    EXPECT_FALSE(EndpointsOf(bad).ok()) << bad;
}

// The results file's lines: written by ResultJson/AbortJson, read back exactly by
// ParseResultsLine, and nothing else accepted.
TEST(ResultsTest, ResultAndAbortLinesRoundTripAndOthersAreRefused) {
  RoundResult r;
  r.round = TestRound();
  r.aggregate = {1, 9007199254740993u, UINT64_MAX};
  r.params.participants = {"alice", "bob"};
  r.params.range = UINT64_MAX;
  r.params.length = 3;  // read back as the aggregate's
  r.in_range = false;
  r.elapsed_ms = 1.25;
  auto back = ParseResultsLine(ResultJson(r));
  ASSERT_TRUE(back.ok()) << back.message();
  ASSERT_TRUE(back->result);
  EXPECT_EQ(*back->result, r);
  EXPECT_FALSE(back->aborted);
  r.aggregate = {856};
  EXPECT_EQ(ParseResultsLine(ResultJson(r))->result->aggregate, std::vector<uint64_t>{856});

  auto abort = ParseResultsLine(AbortJson(TestRound(), "bob refused the round: \"x\""));
  ASSERT_TRUE(abort.ok()) << abort.message();
  EXPECT_EQ(abort->round, TestRound());
  EXPECT_EQ(abort->aborted, "bob refused the round: \"x\"");
  EXPECT_FALSE(abort->result);

  const std::string round = "\"round\": \"" + RoundHex(TestRound()) + "\"";
  for (const std::string& bad : std::vector<std::string>{
           "", "{}", "{" + round + "}", "[1]", "{" + round + ", \"aborted\": 3}",
           "{" + round + ", \"aborted\": \"x\", \"aggregate\": 1}",
           "{\"round\": \"xyz\", \"aborted\": \"x\"}", ResultJson(r) + " trailing",
           "{" + round +
               ", \"aggregate\": -1, \"participants\": [], \"range\": 1, "
               "\"in_range\": true, \"elapsed_ms\": 1}",
           "{" + round +
               ", \"aggregate\": 1, \"participants\": [\"Bob\"], \"range\": 1, "
               "\"in_range\": true, \"elapsed_ms\": 1}",
           "{" + round +
               ", \"aggregate\": 1, \"participants\": [], \"range\": 1, "
               "\"in_range\": true}",
           "{" + round + ", " + round + ", \"aborted\": \"x\"}"})
    EXPECT_FALSE(ParseResultsLine(bad).ok()) << bad;
}

TEST(TextTest, QuoteKeepsALogLineOneLine) {
  EXPECT_EQ(Quote("plain"), "\"plain\"");
  EXPECT_EQ(Quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(Quote(std::string("x\ny\0z", 5)), "\"x?y?z\"");
}

}  // namespace
}  // namespace tally
