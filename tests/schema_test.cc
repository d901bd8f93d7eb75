// Wire schema: round trips, pinned bytes, and one test per way a peer can send a bad message.

#include "schema/schema.h"
#include "schema/text.h"

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace tally {
namespace {

// gmock is not linked: a substring check that prints both strings on failure.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

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

Envelope TestEnvelope() {
  return Envelope{EnvelopeKind::kPartial, TestRound(), "patient-7", "hospital_a",
                  SealedBytes(kSealOverhead + 50)};
}

// Builds raw msgpack for malformed inputs the encoder would never produce.
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

// Request with each field overridable.
std::vector<uint8_t> RawRequest(const std::function<void(Packer&)>& length,
                                const std::vector<std::string>& participants = {"alice"}) {
  return Raw([&](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(1);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(100);
    length(p);
    p.pack_array(static_cast<uint32_t>(participants.size()));
    for (const auto& n : participants) Str(p, n);
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
  ExpectRoundTrip(Request{std::numeric_limits<uint64_t>::max(), 1'000'000'007, kMaxVectorLength,
                          {"alice", "bob", "charlie-2", "d_4"}});
  ExpectRoundTrip(Request{0, 0, 1, {}});  // empty participants: the whole roster
}

TEST(SchemaRoundTrip, Join) { ExpectRoundTrip(Join{TestRound()}); }

TEST(SchemaRoundTrip, Refuse) {
  ExpectRoundTrip(Refuse{TestRound(), "input does not fit range 100 (length 3)"});
  ExpectRoundTrip(Refuse{TestRound(), std::string(kMaxReasonLength, '~')});
}

TEST(SchemaRoundTrip, Envelope) {
  ExpectRoundTrip(TestEnvelope());
  Envelope share = TestEnvelope();
  share.kind = EnvelopeKind::kShare;
  share.sealed = SealedBytes(MaxSealedSize(1000));
  ExpectRoundTrip(share);
}

TEST(SchemaRoundTrip, Ack) { ExpectRoundTrip(Ack{TestRound()}); }

TEST(SchemaRoundTrip, PhaseUpdateEveryPhase) {
  for (Phase phase : {Phase::kOpen, Phase::kShare, Phase::kSum, Phase::kDone, Phase::kAbort}) {
    PhaseUpdate u{TestRound(), phase, 1ull << 40, 77, "hospital", 1ull << 63, 4096,
                  {"alice", "bob", "carol"}, 15000,
                  phase == Phase::kAbort ? "charlie did not join" : ""};
    ExpectRoundTrip(u);
  }
}

TEST(SchemaRoundTrip, Notice) {
  ExpectRoundTrip(Notice{42, "round queue full"});
  ExpectRoundTrip(Notice{0, ""});
}

TEST(SchemaRoundTrip, ManyParticipants) {
  Request r{1, 10, 1, {}};
  for (size_t i = 0; i < kMaxParticipants; ++i) r.participants.push_back("p" + std::to_string(i));
  ExpectRoundTrip(r);
}

TEST(SchemaPayload, RoundTripTenThousandValuesNearTwoToThe64) {
  std::vector<uint64_t> values(10'000);
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = std::numeric_limits<uint64_t>::max() - (rng() % 1000) - i;
  }
  values[0] = std::numeric_limits<uint64_t>::max();
  values[1] = 0;
  const std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kShare, values);
  // [1, "share", bin32 header + 80,000 bytes]: 1 + 1 + 6 + 5 + 80,000.
  EXPECT_EQ(bytes.size(), 80'013u);
  Result<std::vector<uint64_t>> back = DecodePayload(bytes, EnvelopeKind::kShare, 10'000);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(*back, values);
}

TEST(SchemaPayload, ValuesAreLittleEndianBin) {
  const std::vector<uint64_t> values = {0x0102030405060708ull};
  const std::vector<uint8_t> expected = {0x93, 0x01, 0xa7, 'p',  'a',  'r',  't',  'i',
                                         'a',  'l',  0xc4, 0x08, 0x08, 0x07, 0x06, 0x05,
                                         0x04, 0x03, 0x02, 0x01};
  EXPECT_EQ(EncodePayload(EnvelopeKind::kPartial, values), expected);
}

TEST(SchemaPayload, WrongKind) {
  const std::vector<uint64_t> values = {1, 2, 3};
  Result<std::vector<uint64_t>> r =
      DecodePayload(EncodePayload(EnvelopeKind::kShare, values), EnvelopeKind::kPartial, 3);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.message(), "kind is share, expected partial"));
}

TEST(SchemaPayload, WrongLength) {
  const std::vector<uint64_t> values = {1, 2, 3};
  const std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kShare, values);
  Result<std::vector<uint64_t>> longer = DecodePayload(bytes, EnvelopeKind::kShare, 4);
  ASSERT_FALSE(longer.ok());
  EXPECT_TRUE(Contains(longer.message(), "values must be 32 bytes (4 elements), got 24"));
  Result<std::vector<uint64_t>> shorter = DecodePayload(bytes, EnvelopeKind::kShare, 2);
  ASSERT_FALSE(shorter.ok());
  EXPECT_TRUE(Contains(shorter.message(), "values must be 16 bytes (2 elements), got 24"));
}

TEST(SchemaPayload, ValuesAsArrayOfNumbersRejected) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(1);
    Str(p, "share");
    p.pack_array(1);
    p.pack_uint64(5);
  });
  Result<std::vector<uint64_t>> r = DecodePayload(bytes, EnvelopeKind::kShare, 1);
  ASSERT_FALSE(r.ok());
  // A payload allows no nested container at all, so the decoder stops before the field check.
  EXPECT_TRUE(Contains(r.message(), "nesting too deep"));
  const std::vector<uint8_t> empty_array = {0x93, 0x01, 0xa5, 's', 'h', 'a', 'r', 'e', 0x90};
  EXPECT_TRUE(Contains(DecodePayload(empty_array, EnvelopeKind::kShare, 1).message(),
                       "nesting too deep"));
  const std::vector<uint8_t> str_values = {0x93, 0x01, 0xa5, 's', 'h', 'a', 'r', 'e', 0xa0};
  EXPECT_TRUE(Contains(DecodePayload(str_values, EnvelopeKind::kShare, 1).message(),
                       "values must be bin, got str"));
}

TEST(SchemaPayload, TrailingBytesAndVersion) {
  std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kShare, std::vector<uint64_t>{9});
  bytes.push_back(0xc0);
  EXPECT_TRUE(Contains(DecodePayload(bytes, EnvelopeKind::kShare, 1).message(),
              "1 trailing bytes"));
  bytes.pop_back();
  bytes[1] = 0x02;
  EXPECT_TRUE(Contains(DecodePayload(bytes, EnvelopeKind::kShare, 1).message(),
              "unsupported version"));
}

// ---- Pinned wire bytes ---------------------------------------------------------------------

TEST(SchemaWire, JoinBytesArePinned) {
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(i);
  // PROTOCOL.md, "Wire messages": fixarray(3), fixint 1, fixstr "join", bin8(16) round id.
  const std::vector<uint8_t> expected = {
      0x93, 0x01, 0xa4, 'j',  'o',  'i',  'n',  0xc4, 0x10, 0x00, 0x01, 0x02, 0x03,
      0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};
  EXPECT_EQ(Encode(Join{round}), expected);
  Result<Message> back = Decode(expected);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<Join>(*back).round, round);
}

TEST(SchemaWire, NoticeBytesArePinned) {
  const std::vector<uint8_t> expected = {0x94, 0x01, 0xa6, 'n', 'o', 't', 'i', 'c',
                                         'e',  0xcc, 0xc8, 0xa2, 'n', 'o'};
  EXPECT_EQ(Encode(Notice{200, "no"}), expected);
}

// ---- Malformed messages --------------------------------------------------------------------

TEST(SchemaDecode, WrongVersion) {
  std::vector<uint8_t> bytes = Encode(Join{TestRound()});
  bytes[1] = 0x07;
  EXPECT_TRUE(Contains(DecodeError(bytes), "unsupported protocol version 7"));
  bytes[1] = 0x00;
  EXPECT_TRUE(Contains(DecodeError(bytes), "unsupported protocol version 0"));
  bytes[1] = 0xa0;  // empty str in the version slot
  EXPECT_TRUE(Contains(DecodeError(bytes), "protocol version must be uint, got str"));
}

TEST(SchemaDecode, UnknownType) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(1);
    Str(p, "x");
    RoundBin(p, 16);
  });
  EXPECT_TRUE(Contains(DecodeError(bytes), "unknown message type \"x\""));
  const std::vector<uint8_t> binary = Raw([](Packer& p) {
    p.pack_array(2);
    p.pack_uint32(1);
    Str(p, std::string("\x01\x02", 2));
  });
  EXPECT_TRUE(Contains(DecodeError(binary), "unknown message type (unprintable"));
  const std::vector<uint8_t> bin_type = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(1);
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
    p.pack_uint32(1);
    Str(p, "join");
  });
  EXPECT_TRUE(Contains(DecodeError(bytes), "join: expected 3 fields, got 2"));
  const std::vector<uint8_t> envelope = Raw([](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(1);
    Str(p, "envelope");
    Str(p, "share");
    RoundBin(p, 16);
    Str(p, "alice");
    Str(p, "bob");
  });
  EXPECT_TRUE(Contains(DecodeError(envelope), "envelope: expected 7 fields, got 6"));
}

TEST(SchemaDecode, ExtraField) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(1);
    Str(p, "join");
    RoundBin(p, 16);
    p.pack_nil();
  });
  EXPECT_TRUE(Contains(DecodeError(bytes), "join: expected 3 fields, got 4"));
}

TEST(SchemaDecode, WrongFieldType) {
  const std::vector<uint8_t> str_round = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(1);
    Str(p, "ack");
    Str(p, "0123456789abcdef");
  });
  EXPECT_TRUE(Contains(DecodeError(str_round), "ack: round must be bin, got str"));
  const std::vector<uint8_t> str_ticket = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(1);
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
    p.pack_array(6);
    p.pack_uint32(1);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(100);
    p.pack_uint32(1);
    p.pack_array(1);
    p.pack_uint32(3);
  });
  EXPECT_TRUE(Contains(DecodeError(int_participant),
              "request: participants must hold str, got uint"));
  const std::vector<uint8_t> bad_kind = Raw([](Packer& p) {
    p.pack_array(7);
    p.pack_uint32(1);
    Str(p, "envelope");
    Str(p, "gift");
    RoundBin(p, 16);
    Str(p, "alice");
    Str(p, "bob");
    Bin(p, SealedBytes(kSealOverhead));
  });
  EXPECT_TRUE(Contains(DecodeError(bad_kind), "envelope: kind must be \"share\" or \"partial\""));
}

TEST(SchemaDecode, UnknownPhase) {
  PhaseUpdate u{TestRound(), Phase::kSum, 1, 2, "hospital", 3, 1, {"a"}, 10, ""};
  std::vector<uint8_t> bytes = Encode(u);
  // "sum" follows the round id; turn it into "sux".
  const std::string s(bytes.begin(), bytes.end());
  const size_t at = s.find("sum");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 2] = 'x';
  EXPECT_TRUE(Contains(DecodeError(bytes), "phase: unknown phase"));
}

TEST(SchemaDecode, NegativeInteger) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(1);
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
  const std::vector<uint8_t> signed_positive = {0x94, 0xd0, 0x01, 0xa6, 'n', 'o', 't',
                                                'i',  'c',  'e',  0xd0, 0x05, 0xa0};
  Result<Message> ok = Decode(signed_positive);
  ASSERT_TRUE(ok.ok()) << ok.message();
  EXPECT_EQ(std::get<Notice>(*ok).ticket, 5u);
}

TEST(SchemaDecode, U32Overflow) {
  const std::vector<uint8_t> bytes =
      RawRequest([](Packer& p) { p.pack_uint64(uint64_t{1} << 32); });
  EXPECT_TRUE(Contains(DecodeError(bytes), "request: length 4294967296 does not fit in u32"));
  const std::vector<uint8_t> phase = Raw([](Packer& p) {
    p.pack_array(12);
    p.pack_uint32(1);
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
    p.pack_uint64(uint64_t{1} << 32);  // deadline_ms
    Str(p, "");
  });
  EXPECT_TRUE(Contains(DecodeError(phase), "phase: deadline_ms 4294967296 does not fit in u32"));
}

TEST(SchemaDecode, RoundIdOf15And17Bytes) {
  for (size_t size : {size_t{15}, size_t{17}, size_t{0}}) {
    const std::vector<uint8_t> bytes = Raw([size](Packer& p) {
      p.pack_array(3);
      p.pack_uint32(1);
      Str(p, "join");
      RoundBin(p, size);
    });
    EXPECT_TRUE(Contains(DecodeError(bytes), "join: round must be 16 bytes, got " +
                                              std::to_string(size)));
  }
}

TEST(SchemaDecode, InvalidName) {
  for (const std::string& name : {std::string("Alice"), std::string(""), std::string(33, 'a'),
                                  std::string("a b"), std::string("al\xc3\xa9"),
                                  std::string("a.b")}) {
    Envelope e = TestEnvelope();
    e.from = name;
    EXPECT_TRUE(Contains(DecodeError(Encode(e)), "envelope: invalid name in from")) << name;
    e = TestEnvelope();
    e.to = name;
    EXPECT_TRUE(Contains(DecodeError(Encode(e)), "envelope: invalid name in to")) << name;
    PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, name, 3, 1, {"a"}, 10, ""};
    EXPECT_TRUE(Contains(DecodeError(Encode(u)), "phase: invalid name in hospital")) << name;
    EXPECT_TRUE(Contains(DecodeError(Encode(Request{1, 2, 3, {"ok", name}})),
                "request: invalid name in participants"))
        << name;
  }
  EXPECT_TRUE(ValidName("a"));
  EXPECT_TRUE(ValidName(std::string(32, 'z')));
  EXPECT_TRUE(ValidName("0-9_az"));
}

TEST(SchemaDecode, DuplicateParticipant) {
  EXPECT_TRUE(Contains(DecodeError(Encode(Request{1, 2, 3, {"alice", "bob", "alice"}})),
              "request: duplicate name \"alice\" in participants"));
  PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, "h", 3, 1, {"bob", "bob"}, 10, ""};
  EXPECT_TRUE(Contains(DecodeError(Encode(u)), "phase: duplicate name \"bob\""));
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
  EXPECT_TRUE(Contains(DecodeError(bytes, limits),
              "message is " + std::to_string(bytes.size()) +
                        " bytes, over the limit of 100"));
}

TEST(SchemaDecode, SealedOverMaxSealedBytes) {
  Limits limits;
  limits.max_sealed_bytes = 1000;
  Envelope e = TestEnvelope();
  e.sealed = SealedBytes(1000);
  EXPECT_TRUE(Decode(Encode(e), limits).ok());
  e.sealed = SealedBytes(1001);
  EXPECT_TRUE(Contains(DecodeError(Encode(e), limits), "bin longer than the limit of 1000"));
}

TEST(SchemaDecode, SealedShorterThanSealOverhead) {
  Envelope e = TestEnvelope();
  e.sealed = SealedBytes(kSealOverhead - 1);
  EXPECT_TRUE(Contains(DecodeError(Encode(e)),
              "envelope: sealed is 39 bytes, shorter than the minimum of 40"));
}

TEST(SchemaDecode, LengthZeroAndOverMaxLength) {
  EXPECT_TRUE(Contains(DecodeError(Encode(Request{1, 2, 0, {}})),
              "request: length must be between 1 and 1048576, got 0"));
  EXPECT_TRUE(Contains(DecodeError(Encode(Request{1, 2, kMaxVectorLength + 1, {}})),
              "got 1048577"));
  Limits limits;
  limits.max_length = 10;
  EXPECT_TRUE(Decode(Encode(Request{1, 2, 10, {}}), limits).ok());
  PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, "h", 3, 11, {"a"}, 10, ""};
  EXPECT_TRUE(Contains(DecodeError(Encode(u), limits),
              "phase: length must be between 1 and 10, got 11"));
}

TEST(SchemaDecode, TooManyParticipants) {
  Limits limits;
  limits.max_participants = 3;
  const Request r{1, 2, 3, {"a", "b", "c", "d"}};
  EXPECT_TRUE(Contains(DecodeError(Encode(r), limits), "too many participants (4 > 3)"));
  Request big{1, 2, 3, {}};
  for (size_t i = 0; i <= kMaxParticipants; ++i) big.participants.push_back("p" + std::to_string(i));
  EXPECT_TRUE(Contains(DecodeError(Encode(big)), "array longer than the limit of 1000"));
}

TEST(SchemaDecode, NestingAndMapsAndExtRejected) {
  const std::vector<uint8_t> nested = Raw([](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(1);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(100);
    p.pack_uint32(1);
    p.pack_array(1);
    p.pack_array(1);
    Str(p, "a");
  });
  EXPECT_TRUE(Contains(DecodeError(nested), "nesting too deep"));
  const std::vector<uint8_t> map_field = {0x93, 0x01, 0xa4, 'j', 'o', 'i', 'n', 0x81, 0x01, 0x02};
  EXPECT_TRUE(Contains(DecodeError(map_field), "map"));
  const std::vector<uint8_t> ext_field = {0x93, 0x01, 0xa4, 'j', 'o', 'i', 'n', 0xd4, 0x01, 0x02};
  EXPECT_TRUE(Contains(DecodeError(ext_field), "ext"));
}

TEST(SchemaDecode, HugeDeclaredSizesDoNotAllocate) {
  // array32 / str32 / bin32 headers claiming ~4 GiB in a few bytes.
  const std::vector<uint8_t> array = {0xdd, 0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(Contains(DecodeError(array), "array longer than the limit"));
  // msgpack-c waits for a str/bin body before checking its size: without the body this is
  // just truncated, and nothing was allocated.
  const std::vector<uint8_t> str = {0x92, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(Contains(DecodeError(str), "truncated"));
  const std::vector<uint8_t> bin = {0x92, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(Contains(DecodeError(bin), "truncated"));
}

TEST(SchemaDecode, OverlongStrRejectedByTheDecoderLimit) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(1);
    Str(p, "notice");
    p.pack_uint32(1);
    Str(p, std::string(300, 'a'));
  });
  EXPECT_TRUE(Contains(DecodeError(bytes), "str longer than the limit of 256 bytes"));
}

TEST(SchemaDecode, EmptyInput) {
  EXPECT_TRUE(Contains(DecodeError({}), "empty message"));
}

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
      buf[1] = 0x01;
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
  const std::vector<Message> seeds = {
      Request{3, 100, 4, {"alice", "bob"}}, Join{TestRound()}, Refuse{TestRound(), "no"},
      TestEnvelope(), Ack{TestRound()},
      PhaseUpdate{TestRound(), Phase::kShare, 9, 3, "h", 100, 4, {"alice", "bob"}, 500, ""},
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
      }
    }
  }
}

// ---- Names, reasons, round ids -------------------------------------------------------------

TEST(SchemaNames, KindAndPhaseNames) {
  EXPECT_EQ(KindName(EnvelopeKind::kShare), "share");
  EXPECT_EQ(KindName(EnvelopeKind::kPartial), "partial");
  EXPECT_EQ(PhaseName(Phase::kOpen), "open");
  EXPECT_EQ(PhaseName(Phase::kShare), "share");
  EXPECT_EQ(PhaseName(Phase::kSum), "sum");
  EXPECT_EQ(PhaseName(Phase::kDone), "done");
  EXPECT_EQ(PhaseName(Phase::kAbort), "abort");
}

TEST(SchemaNames, ValidReason) {
  EXPECT_TRUE(ValidReason(""));
  EXPECT_TRUE(ValidReason(" !~"));
  EXPECT_TRUE(ValidReason(std::string(kMaxReasonLength, 'x')));
  EXPECT_FALSE(ValidReason(std::string(kMaxReasonLength + 1, 'x')));
  EXPECT_FALSE(ValidReason("bob\xe2\x86\x92" "charlie"));
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
  for (const char* bad : {"18446744073709551616", "99999999999999999999", "", "-1", "+1", "1 ",
                          " 1", "0x10", "1e3"})
    EXPECT_FALSE(ParseU64(bad, v)) << bad;
  uint32_t w = 0;
  EXPECT_TRUE(ParseU32("4294967295", 1, w));
  EXPECT_EQ(w, UINT32_MAX);
  EXPECT_FALSE(ParseU32("4294967296", 1, w));
  EXPECT_FALSE(ParseU32("0", 1, w));
}

TEST(TextTest, QuoteKeepsALogLineOneLine) {
  EXPECT_EQ(Quote("plain"), "\"plain\"");
  EXPECT_EQ(Quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(Quote(std::string("x\ny\0z", 5)), "\"x?y?z\"");
}

}  // namespace
}  // namespace tally
