// Capture files (format 2): write/read round trip, phase records with the participants' join
// nonces, and a reader that survives every truncation and flip.

#include "schema/capture.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "tests/contains.h"

namespace tally {
namespace {

namespace fs = std::filesystem;

// Bitwise CRC-32 (IEEE, reflected): an independent check of the reader's table version.
uint32_t SlowCrc32(std::span<const uint8_t> bytes) {
  uint32_t crc = 0xffffffffu;
  for (uint8_t b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// A framed record with an arbitrary type byte and body and a correct CRC.
std::vector<uint8_t> Frame(uint8_t type, const std::vector<uint8_t>& body) {
  std::vector<uint8_t> out;
  PutU32(&out, static_cast<uint32_t>(body.size()));
  out.push_back(type);
  out.insert(out.end(), body.begin(), body.end());
  PutU32(&out, SlowCrc32(std::span<const uint8_t>(out).subspan(4)));
  return out;
}

std::vector<uint8_t> FileStart(uint32_t version = kCaptureFormatVersion) {
  std::vector<uint8_t> out = {'T', 'A', 'L', 'L', 'Y', 'C', 'A', 'P'};
  PutU32(&out, version);
  return out;
}

void Append(std::vector<uint8_t>* out, const std::vector<uint8_t>& more) {
  out->insert(out->end(), more.begin(), more.end());
}

std::vector<uint8_t> Body(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  fill(p);
  return std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(buf.data()),
                              reinterpret_cast<const uint8_t*>(buf.data()) + buf.size());
}

std::vector<uint8_t> ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

class CaptureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "tally-capture-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static CaptureHeader Header() {
    CaptureHeader h;
    for (size_t i = 0; i < h.round.size(); ++i) h.round[i] = static_cast<uint8_t>(0xf0 - i);
    h.ticket = 123456789012345ull;
    h.params.hospital = "hospital";
    h.params.range = (uint64_t{1} << 63) + 5;
    h.params.length = 3;
    h.params.participants = {"alice", "bob", "charlie"};
    h.roster_fingerprint = std::string(64, 'a');
    h.opened_unix_ms = 1'764'000'000'123;
    return h;
  }

  static JoinNonce Nonce(uint8_t seed) {
    JoinNonce n{};
    for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(seed * 41 + i);
    return n;
  }
  // The header's three participants' nonces, as the broker publishes them from the sum phase.
  static std::vector<JoinNonce> Nonces() { return {Nonce(1), Nonce(2), Nonce(3)}; }

  // A partial, as a patient sends it to the hospital.
  static std::vector<uint8_t> EnvelopeFrame(uint8_t seed) {
    Envelope e;
    e.kind = EnvelopeKind::kPartial;
    e.round = Header().round;
    e.from = "alice";
    e.to = "hospital";
    e.sealed.resize(kSealOverhead + 24);
    for (size_t i = 0; i < e.sealed.size(); ++i) e.sealed[i] = static_cast<uint8_t>(seed + i);
    return Encode(e);
  }

  // Every record type, in the order a round writes them.
  static std::vector<CaptureRecord> Rest() {
    return {
        CapturePhase{0, Phase::kOpen, 10, "", {}},
        CapturePhase{1500, Phase::kSum, 11, "", Nonces()},
        CaptureEnvelope{2000, EnvelopeFrame(1)},
        CaptureRejected{2100, "mallory", "envelope from names another sender", 812},
        CaptureEnvelope{2500, EnvelopeFrame(2)},
        CaptureEnvelope{2600, {}},
        CapturePhase{3000, Phase::kAbort, 12, "partial from charlie not sent", Nonces()},
    };
  }
  static CaptureTrailer Trailer() {
    return CaptureTrailer{3001, false, "partial from charlie not sent", 3, 1};
  }

  // Writes a full capture and returns its path.
  fs::path WriteFull() {
    const fs::path path = dir_ / "round.tcap";
    Result<CaptureWriter> w = CaptureWriter::Create(path, Header());
    EXPECT_TRUE(w.ok()) << w.message();
    for (const CaptureRecord& r : Rest()) EXPECT_TRUE(w->Append(r).ok());
    EXPECT_TRUE(w->Finish(Trailer()).ok());
    return path;
  }

  static std::vector<CaptureRecord> AllRecords() {
    std::vector<CaptureRecord> all = {Header()};
    for (const CaptureRecord& r : Rest()) all.push_back(r);
    all.push_back(Trailer());
    return all;
  }

  fs::path dir_;
};

TEST_F(CaptureTest, WriteThenReadBack) {
  const fs::path path = WriteFull();
  Result<CaptureContents> c = ReadCaptureFile(path);
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_TRUE(c->ok()) << c->error;
  EXPECT_EQ(c->records, AllRecords());
  // The phase records kept their nonces: none while open, all three, in order, from the sum.
  ASSERT_EQ(c->records.size(), 9u);
  EXPECT_TRUE(std::get<CapturePhase>(c->records[1]).nonces.empty());
  EXPECT_EQ(std::get<CapturePhase>(c->records[2]).nonces, Nonces());
  EXPECT_EQ(std::get<CapturePhase>(c->records[7]).nonces, Nonces());
  ASSERT_EQ(c->offsets.size(), c->records.size());
  EXPECT_EQ(c->offsets[0], 12u);
  // Offsets are where each framed record starts: consecutive EncodeRecord sizes.
  uint64_t at = 12;
  for (size_t i = 0; i < c->records.size(); ++i) {
    EXPECT_EQ(c->offsets[i], at);
    at += EncodeRecord(c->records[i]).size();
  }
  EXPECT_EQ(at, fs::file_size(path));
}

// The broker's zero-copy path writes byte for byte what Append(CaptureEnvelope) writes, for
// frames small and large (the large one crosses many 8-byte CRC steps and an odd tail).
TEST_F(CaptureTest, AppendEnvelopeWritesTheSameBytesAsAppend) {
  std::vector<uint8_t> big(1'000'003);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 131 + 7);
  for (const std::vector<uint8_t>& frame : {EnvelopeFrame(9), big, std::vector<uint8_t>{}}) {
    const fs::path a = dir_ / "a.tcap", b = dir_ / "b.tcap";
    fs::remove(a);
    fs::remove(b);
    auto wa = CaptureWriter::Create(a, Header());
    auto wb = CaptureWriter::Create(b, Header());
    ASSERT_TRUE(wa.ok() && wb.ok());
    ASSERT_TRUE(wa->Append(CaptureEnvelope{77, frame}).ok());
    ASSERT_TRUE(wb->AppendEnvelope(77, frame).ok());
    ASSERT_TRUE(wa->Finish(Trailer()).ok());
    ASSERT_TRUE(wb->Finish(Trailer()).ok());
    std::ifstream ia(a, std::ios::binary), ib(b, std::ios::binary);
    std::string sa((std::istreambuf_iterator<char>(ia)), {}),
        sb((std::istreambuf_iterator<char>(ib)), {});
    EXPECT_EQ(sa, sb) << "frame of " << frame.size() << " bytes";
    auto read = ReadCaptureFile(b);
    ASSERT_TRUE(read.ok());
    EXPECT_TRUE(read->ok()) << read->error;
  }
}

TEST_F(CaptureTest, LayoutMagicVersionAndCrcArePinned) {
  const std::vector<uint8_t> bytes = ReadAll(WriteFull());
  const std::vector<uint8_t> start = {'T', 'A', 'L', 'L', 'Y', 'C', 'A', 'P', 3, 0, 0, 0};
  ASSERT_GE(bytes.size(), 12u);
  EXPECT_TRUE(std::equal(start.begin(), start.end(), bytes.begin()));
  // The header record: u32 body length, type 1, body, CRC-32 over type + body.
  const uint32_t body = bytes[12] | bytes[13] << 8 | bytes[14] << 16 | uint32_t{bytes[15]} << 24;
  EXPECT_EQ(bytes[16], 1);
  EXPECT_EQ(bytes[17], 0x9b);  // fixarray(11)
  const size_t crc_at = 17 + body;
  const uint32_t crc = bytes[crc_at] | bytes[crc_at + 1] << 8 | bytes[crc_at + 2] << 16 |
                       uint32_t{bytes[crc_at + 3]} << 24;
  EXPECT_EQ(crc, SlowCrc32(std::span<const uint8_t>(bytes).subspan(16, 1 + body)));
  const std::string check = "123456789";
  const std::span<const uint8_t> check_bytes(reinterpret_cast<const uint8_t*>(check.data()),
                                             check.size());
  EXPECT_EQ(SlowCrc32(check_bytes), 0xcbf43926u);  // the standard CRC-32 check value
  EXPECT_EQ(CaptureCrc32(check_bytes), 0xcbf43926u);
  EXPECT_EQ(CaptureCrc32(std::span<const uint8_t>(bytes).subspan(16, 1 + body)), crc);
}

// A phase record's body: [t_us, phase, seq, reason, nonces], the nonces as one bin of 32 bytes
// per participant (empty in the open phase).
TEST_F(CaptureTest, PhaseRecordLayoutIsPinned) {
  JoinNonce a, b;
  a.fill(0xaa);
  b.fill(0xbb);
  std::vector<uint8_t> body = {0x95, 0xcd, 0x05, 0xdc, 0xa3, 's', 'u', 'm', 0x0b, 0xa0, 0xc4, 0x40};
  body.insert(body.end(), 32, 0xaa);
  body.insert(body.end(), 32, 0xbb);
  EXPECT_EQ(EncodeRecord(CapturePhase{1500, Phase::kSum, 11, "", {a, b}}), Frame(4, body));
  const std::vector<uint8_t> open = {0x95, 0x00, 0xa4, 'o', 'p', 'e', 'n', 0x0a, 0xa0, 0xc4, 0x00};
  EXPECT_EQ(EncodeRecord(CapturePhase{0, Phase::kOpen, 10, "", {}}), Frame(4, open));
  // schema/PROTOCOL.md's example, byte for byte, with its CRC.
  const std::vector<uint8_t> documented = {0x0d, 0x00, 0x00, 0x00, 0x04, 0x95, 0xcd, 0x05,
                                           0xdc, 0xa4, 0x6f, 0x70, 0x65, 0x6e, 0x01, 0xa0,
                                           0xc4, 0x00, 0x2f, 0x12, 0xa6, 0xd7};
  EXPECT_EQ(EncodeRecord(CapturePhase{1500, Phase::kOpen, 1, "", {}}), documented);
}

TEST_F(CaptureTest, PhaseRecordsRoundTripEveryPhaseWithAndWithoutNonces) {
  std::vector<CaptureRecord> records = {Header()};
  for (Phase phase : {Phase::kOpen, Phase::kSum, Phase::kDone, Phase::kAbort}) {
    records.push_back(CapturePhase{7, phase, 1, phase == Phase::kAbort ? "why" : "", {}});
    records.push_back(CapturePhase{8, phase, 2, "", Nonces()});
  }
  // The reader takes up to kMaxParticipants nonces in one record.
  std::vector<JoinNonce> most;
  for (size_t i = 0; i < kMaxParticipants; ++i) most.push_back(Nonce(static_cast<uint8_t>(i)));
  records.push_back(CapturePhase{9, Phase::kSum, 3, "", most});
  std::vector<uint8_t> bytes = FileStart();
  for (const CaptureRecord& r : records) Append(&bytes, EncodeRecord(r));
  const CaptureContents c = ReadCapture(bytes);
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(c.records, records);
}

TEST_F(CaptureTest, CaptureWithoutTrailerReadsCleanly) {
  // A broker that crashed mid-round leaves no trailer: the records are still all readable.
  const fs::path path = dir_ / "open.tcap";
  {
    Result<CaptureWriter> w = CaptureWriter::Create(path, Header());
    ASSERT_TRUE(w.ok()) << w.message();
    ASSERT_TRUE(w->Append(CapturePhase{0, Phase::kOpen, 1, "", {}}).ok());
  }
  Result<CaptureContents> c = ReadCaptureFile(path);
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_TRUE(c->ok()) << c->error;
  EXPECT_EQ(c->records.size(), 2u);
}

TEST_F(CaptureTest, TruncatedAtEveryOffset) {
  const std::vector<uint8_t> bytes = ReadAll(WriteFull());
  const CaptureContents full = ReadCapture(bytes);
  ASSERT_TRUE(full.ok()) << full.error;
  const std::vector<CaptureRecord> all = AllRecords();
  for (size_t n = 0; n <= bytes.size(); ++n) {
    const CaptureContents c = ReadCapture(std::span<const uint8_t>(bytes.data(), n));
    if (n < 8) {
      EXPECT_EQ(c.error, "not a Tally capture (bad magic)") << n;
      continue;
    }
    if (n < 12) {
      EXPECT_FALSE(c.ok()) << n;
      EXPECT_EQ(c.error_offset, 8u) << n;
      continue;
    }
    // Records that lie wholly inside the prefix.
    size_t complete = 0;
    while (complete < full.offsets.size()) {
      const uint64_t end =
          complete + 1 < full.offsets.size() ? full.offsets[complete + 1] : bytes.size();
      if (end > n) break;
      ++complete;
    }
    ASSERT_EQ(c.records.size(), complete) << n;
    EXPECT_TRUE(std::equal(c.records.begin(), c.records.end(), all.begin())) << n;
    const bool at_boundary =
        complete > 0 &&
        (complete == full.offsets.size() ? n == bytes.size() : n == full.offsets[complete]);
    if (at_boundary) {
      EXPECT_TRUE(c.ok()) << n << ": " << c.error;
    } else {
      ASSERT_FALSE(c.ok()) << n;
      const uint64_t damaged = complete < full.offsets.size() ? full.offsets[complete] : 12;
      EXPECT_EQ(c.error_offset, damaged) << n;
      if (n == 12) {
        EXPECT_TRUE(Contains(c.error, "no header record"));
      } else {
        EXPECT_EQ(c.error, "truncated record at offset " + std::to_string(damaged)) << n;
      }
    }
  }
}

TEST_F(CaptureTest, FlippedByteInARecordIsACrcMismatchAtThatRecord) {
  const std::vector<uint8_t> bytes = ReadAll(WriteFull());
  const CaptureContents full = ReadCapture(bytes);
  ASSERT_TRUE(full.ok());
  // Every record, every byte: the header (index 0), a rejected record, the trailer.
  for (size_t index : {size_t{0}, size_t{4}, full.offsets.size() - 1}) {
    const size_t start = full.offsets[index];
    const size_t end = index + 1 < full.offsets.size() ? full.offsets[index + 1] : bytes.size();
    for (size_t at = start; at < end; ++at) {
      std::vector<uint8_t> bad = bytes;
      bad[at] ^= 0x5a;
      const CaptureContents c = ReadCapture(bad);
      ASSERT_FALSE(c.ok()) << at;
      EXPECT_EQ(c.error_offset, start) << at;
      EXPECT_EQ(c.records.size(), index) << at;
      if (at >= start + 4) {  // type, body or CRC: the CRC catches it
        EXPECT_EQ(c.error, "CRC mismatch in record at offset " + std::to_string(start)) << at;
      } else {  // the length field: the record ends elsewhere, so truncated or a CRC mismatch
        EXPECT_TRUE(Contains(c.error, "CRC mismatch") || Contains(c.error, "truncated") ||
                    Contains(c.error, "over the limit"))
            << at << ": " << c.error;
      }
    }
  }
}

TEST_F(CaptureTest, FlippedByteInFileHeader) {
  const std::vector<uint8_t> bytes = ReadAll(WriteFull());
  for (size_t at = 0; at < 12; ++at) {
    std::vector<uint8_t> bad = bytes;
    bad[at] ^= 0x01;
    const CaptureContents c = ReadCapture(bad);
    ASSERT_FALSE(c.ok());
    EXPECT_TRUE(c.records.empty());
    if (at < 8) {
      EXPECT_EQ(c.error, "not a Tally capture (bad magic)");
      EXPECT_EQ(c.error_offset, 0u);
    } else {
      EXPECT_TRUE(Contains(c.error, "is not supported (this reader knows 3)"));
      EXPECT_EQ(c.error_offset, 8u);
    }
  }
}

TEST_F(CaptureTest, OtherFormatVersionRefused) {
  std::vector<uint8_t> bytes = ReadAll(WriteFull());
  bytes[8] = 2;  // a protocol-2 capture: its header has no columns
  CaptureContents c = ReadCapture(bytes);
  EXPECT_EQ(c.error,
            "capture format version 2 is not supported (this reader knows 3): it was written by an "
            "older Tally (capture format 2); read it with the tally-replay of that release");
  EXPECT_EQ(c.error_offset, 8u);
  EXPECT_TRUE(c.records.empty());
  bytes[8] = 4;
  c = ReadCapture(bytes);
  EXPECT_EQ(c.error,
            "capture format version 4 is not supported (this reader knows 3): it was written by a "
            "newer Tally (capture format 4); read it with a newer tally-replay");
  EXPECT_TRUE(c.records.empty());
}

// Asked to, the reader reads past a record whose CRC does not match as long as it parses, and
// names it in `damaged`: an audit can then say which envelope was damaged.
TEST_F(CaptureTest, PastCrcMismatchReadsADamagedRecordAndNamesIt) {
  const std::vector<uint8_t> bytes = ReadAll(WriteFull());
  const CaptureContents full = ReadCapture(bytes);
  ASSERT_TRUE(full.ok());
  ASSERT_TRUE(full.damaged.empty());
  const size_t trailer = full.offsets.size() - 1;
  std::vector<uint8_t> bad = bytes;
  bad[bytes.size() - 1] ^= 0x5a;  // the trailer's CRC itself
  const CaptureContents strict = ReadCapture(bad);
  EXPECT_EQ(strict.records.size(), trailer);
  const CaptureContents read = ReadCapture(bad, {.past_crc_mismatch = true});
  EXPECT_TRUE(read.ok()) << read.error;
  EXPECT_EQ(read.records.size(), full.records.size());
  EXPECT_EQ(read.damaged, std::vector<uint64_t>{full.offsets[trailer]});
  // A damaged length still stops the reader: the records after it cannot be found.
  bad = bytes;
  bad[full.offsets[trailer] + 3] ^= 0x40;
  EXPECT_FALSE(ReadCapture(bad, {.past_crc_mismatch = true}).ok());
}

TEST_F(CaptureTest, UnknownRecordType) {
  std::vector<uint8_t> bytes = FileStart();
  Append(&bytes, EncodeRecord(Header()));
  const size_t at = bytes.size();
  Append(&bytes, Frame(9, Body([](auto& p) { p.pack_array(0); })));
  const CaptureContents c = ReadCapture(bytes);
  EXPECT_EQ(c.error, "unknown record type 9 at offset " + std::to_string(at));
  EXPECT_EQ(c.error_offset, at);
  EXPECT_EQ(c.records.size(), 1u);
}

TEST_F(CaptureTest, FirstRecordMustBeHeaderAndOnlyOnce) {
  std::vector<uint8_t> bytes = FileStart();
  Append(&bytes, EncodeRecord(CapturePhase{0, Phase::kOpen, 1, "", {}}));
  EXPECT_TRUE(Contains(ReadCapture(bytes).error, "first record is not a header"));

  bytes = FileStart();
  Append(&bytes, EncodeRecord(Header()));
  const size_t at = bytes.size();
  Append(&bytes, EncodeRecord(Header()));
  const CaptureContents c = ReadCapture(bytes);
  EXPECT_TRUE(Contains(c.error, "second header record"));
  EXPECT_EQ(c.error_offset, at);
}

TEST_F(CaptureTest, RecordAfterTrailer) {
  std::vector<uint8_t> bytes = ReadAll(WriteFull());
  const size_t at = bytes.size();
  Append(&bytes, EncodeRecord(CapturePhase{5000, Phase::kOpen, 99, "", {}}));
  const CaptureContents c = ReadCapture(bytes);
  EXPECT_TRUE(Contains(c.error, "record after the trailer"));
  EXPECT_EQ(c.error_offset, at);
  EXPECT_EQ(c.records, AllRecords());
}

TEST_F(CaptureTest, MalformedRecordBodies) {
  struct Case {
    uint8_t type;
    std::vector<uint8_t> body;
    std::string error;
  };
  using P = msgpack::packer<msgpack::sbuffer>;
  auto str = [](P& p, std::string_view s) {
    p.pack_str(static_cast<uint32_t>(s.size()));
    p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
  };
  auto header = [&](int fields, std::string_view hospital, uint64_t length,
                    uint32_t version = kCaptureFormatVersion) {
    return Body([&](P& p) {
      p.pack_array(static_cast<uint32_t>(fields));
      p.pack_uint32(version);
      p.pack_bin(16);
      p.pack_bin_body("0123456789abcdef", 16);
      p.pack_uint64(1);
      str(p, hospital);
      p.pack_uint64(100);
      p.pack_uint64(length);
      p.pack_array(0);  // participants
      p.pack_array(0);  // columns
      p.pack_array(2);  // weight
      p.pack_uint64(0);
      p.pack_uint32(0);
      str(p, "abcd");
      if (fields > 10) p.pack_int64(-5);
      if (fields > 11) p.pack_nil();
    });
  };
  const std::vector<Case> cases = {
      {1, header(10, "hospital", 1), "malformed header record: expected 11 fields, got 10"},
      {1, header(12, "hospital", 1), "malformed header record: expected 11 fields, got 12"},
      {1, header(11, "Hospital!", 1), "malformed header record: invalid name in hospital"},
      {1, header(11, "hospital", 0), "malformed header record: length must be between 1"},
      // A protocol-2 header record inside a format-3 file.
      {1, header(11, "hospital", 1, 2),
       "malformed header record: format_version 2 does not match the file's version 3"},
      {1, Body([](P& p) { p.pack_map(0); }), "malformed header record: record body must be a"},
      {1, {0x99, 0x01}, "malformed header record: truncated record body"},
  };
  for (const Case& k : cases) {
    std::vector<uint8_t> bytes = FileStart();
    Append(&bytes, Frame(k.type, k.body));
    const CaptureContents c = ReadCapture(bytes);
    EXPECT_TRUE(Contains(c.error, k.error));
    EXPECT_EQ(c.error_offset, 12u);
    EXPECT_TRUE(c.records.empty());
  }
  // A valid header whose opened_unix_ms is negative (before 1970) is still valid.
  std::vector<uint8_t> ok = FileStart();
  Append(&ok, Frame(1, header(11, "hospital", 1)));
  const CaptureContents c = ReadCapture(ok);
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(std::get<CaptureHeader>(c.records[0]).opened_unix_ms, -5);

  const std::vector<Case> later = {
      {2, Body([](P& p) {
         p.pack_array(2);
         p.pack_int32(-1);
         p.pack_bin(0);
       }),
       "malformed envelope record: t_us must be uint, got negative int"},
      {2, Body([&](P& p) {
         p.pack_array(2);
         p.pack_uint32(1);
         str(p, "frame");
       }),
       "malformed envelope record: frame must be bin, got str"},
      {3, Body([&](P& p) {
         p.pack_array(4);
         p.pack_uint32(1);
         str(p, "bob");
         str(p, "x\n");
         p.pack_uint32(9);
       }),
       "malformed rejected record: reason must be printable ASCII"},
      {4, Body([&](P& p) {
         p.pack_array(5);
         p.pack_uint32(1);
         str(p, "paused");
         p.pack_uint32(1);
         str(p, "");
         p.pack_bin(0);
       }),
       "malformed phase record: unknown phase"},
      {5, Body([&](P& p) {
         p.pack_array(5);
         p.pack_uint32(1);
         p.pack_uint32(1);
         str(p, "");
         p.pack_uint32(0);
         p.pack_uint32(0);
       }),
       "malformed trailer record: done must be bool, got uint"},
      {5, Body([&](P& p) {
         p.pack_array(5);
         p.pack_uint32(1);
         p.pack_true();
         str(p, "");
         p.pack_uint32(0);
         p.pack_uint32(0);
         p.pack_nil();
       }),
       "1 trailing bytes after record body"},
  };
  for (const Case& k : later) {
    std::vector<uint8_t> bytes = FileStart();
    Append(&bytes, EncodeRecord(Header()));
    const size_t at = bytes.size();
    Append(&bytes, Frame(k.type, k.body));
    const CaptureContents c = ReadCapture(bytes);
    EXPECT_TRUE(Contains(c.error, k.error));
    EXPECT_EQ(c.error_offset, at);
    EXPECT_EQ(c.records.size(), 1u);
  }
}

// Phase records, strictly: protocol 1's four-field record and "share" phase, and a nonces
// field that is not whole 32-byte nonces. Each error is the reader's exact text.
TEST_F(CaptureTest, MalformedPhaseRecords) {
  using P = msgpack::packer<msgpack::sbuffer>;
  auto phase = [](std::string_view name, int fields, const std::function<void(P&)>& nonces) {
    return Body([&](P& p) {
      p.pack_array(static_cast<uint32_t>(fields));
      p.pack_uint64(1500);
      p.pack_str(static_cast<uint32_t>(name.size()));
      p.pack_str_body(name.data(), static_cast<uint32_t>(name.size()));
      p.pack_uint64(11);
      p.pack_str(0);
      if (fields > 4) nonces(p);
    });
  };
  auto bin = [](size_t size) {
    return [size](P& p) {
      const std::vector<char> bytes(size, 0x5a);
      p.pack_bin(static_cast<uint32_t>(size));
      p.pack_bin_body(bytes.data(), static_cast<uint32_t>(size));
    };
  };
  struct Case {
    std::vector<uint8_t> body;
    std::string error;
  };
  const std::vector<Case> cases = {
      {phase("share", 4, bin(0)), "malformed phase record: expected 5 fields, got 4"},
      {phase("sum", 4, bin(0)), "malformed phase record: expected 5 fields, got 4"},
      {phase("share", 5, bin(0)), "malformed phase record: unknown phase"},
      {phase("share", 5, bin(96)), "malformed phase record: unknown phase"},
      {phase("sum", 5, bin(33)),
       "malformed phase record: nonces must hold at most 1000 nonces of 32 bytes, got 33 bytes"},
      {phase("sum", 5, bin(31)),
       "malformed phase record: nonces must hold at most 1000 nonces of 32 bytes, got 31 bytes"},
      {phase("sum", 5, bin(32 * (kMaxParticipants + 1))),
       "malformed phase record: nonces must hold at most 1000 nonces of 32 bytes, got 32032 "
       "bytes"},
      {phase("sum", 5, [](P& p) { p.pack_nil(); }),
       "malformed phase record: nonces must be bin, got nil"},
      {phase("sum", 5, [](P& p) { p.pack_array(0); }),
       "malformed phase record: nonces must be bin, got array"},
  };
  for (const Case& k : cases) {
    std::vector<uint8_t> bytes = FileStart();
    Append(&bytes, EncodeRecord(Header()));
    const size_t at = bytes.size();
    Append(&bytes, Frame(4, k.body));
    const CaptureContents c = ReadCapture(bytes);
    EXPECT_EQ(c.error, k.error + " (offset " + std::to_string(at) + ")");
    EXPECT_EQ(c.error_offset, at);
    EXPECT_EQ(c.records.size(), 1u);
  }
  // The same body with whole nonces reads.
  std::vector<uint8_t> bytes = FileStart();
  Append(&bytes, EncodeRecord(Header()));
  Append(&bytes, Frame(4, phase("sum", 5, bin(96))));
  const CaptureContents c = ReadCapture(bytes);
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(std::get<CapturePhase>(c.records[1]).nonces.size(), 3u);
}

TEST_F(CaptureTest, HugeLengthFieldDoesNotAllocate) {
  std::vector<uint8_t> bytes = FileStart();
  Append(&bytes, EncodeRecord(Header()));
  const size_t at = bytes.size();
  PutU32(&bytes, 0xffffffffu);
  bytes.push_back(2);
  const CaptureContents c = ReadCapture(bytes);
  EXPECT_TRUE(Contains(c.error, "over the limit"));
  EXPECT_EQ(c.error_offset, at);
}

TEST_F(CaptureTest, EmptyAndTinyInputs) {
  EXPECT_EQ(ReadCapture({}).error, "not a Tally capture (bad magic)");
  const std::vector<uint8_t> zip = {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(ReadCapture(zip).error, "not a Tally capture (bad magic)");
  const CaptureContents c = ReadCapture(FileStart());
  EXPECT_TRUE(Contains(c.error, "no header record"));
  EXPECT_EQ(c.error_offset, 12u);
}

TEST_F(CaptureTest, CreateRefusesAnExistingFile) {
  const fs::path path = WriteFull();
  const std::vector<uint8_t> before = ReadAll(path);
  Result<CaptureWriter> again = CaptureWriter::Create(path, Header());
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(Contains(again.message(), "cannot create capture"));
  EXPECT_EQ(ReadAll(path), before);
}

TEST_F(CaptureTest, FileModeIs0640) {
  const mode_t old = ::umask(022);
  const fs::path path = WriteFull();
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST_F(CaptureTest, CreateRefusesAnInvalidHeader) {
  CaptureHeader h = Header();
  h.params.participants = {"alice", "alice"};
  Result<CaptureWriter> w = CaptureWriter::Create(dir_ / "bad.tcap", h);
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(Contains(w.message(), "duplicate name \"alice\""));
  EXPECT_FALSE(fs::exists(dir_ / "bad.tcap"));
}

TEST_F(CaptureTest, AppendRefusesWhatTheReaderWouldReject) {
  Result<CaptureWriter> w = CaptureWriter::Create(dir_ / "r.tcap", Header());
  ASSERT_TRUE(w.ok()) << w.message();
  EXPECT_FALSE(w->Append(CapturePhase{1,
                                      Phase::kAbort,
                                      2,
                                      "bob\xe2\x86\x92"
                                      "charlie",
                                      {}})
                   .ok());
  EXPECT_FALSE(w->Append(CaptureRejected{1, "", "why", 2}).ok());
  std::vector<JoinNonce> too_many(kMaxParticipants + 1);
  Status nonces = w->Append(CapturePhase{1, Phase::kSum, 2, "", too_many});
  EXPECT_EQ(nonces.message(),
            "refusing to write invalid phase record: nonces must hold at most 1000 nonces of 32 "
            "bytes, got 32032 bytes");
  EXPECT_FALSE(w->Append(Header()).ok());
  // The file is still readable and the writer still usable.
  ASSERT_TRUE(w->Append(CapturePhase{1, Phase::kOpen, 2, "", {}}).ok());
  ASSERT_TRUE(w->Finish(CaptureTrailer{2, true, "", 0, 0}).ok());
  EXPECT_FALSE(w->Append(CapturePhase{3, Phase::kOpen, 3, "", {}}).ok());
  EXPECT_FALSE(w->Finish(CaptureTrailer{}).ok());
  Result<CaptureContents> c = ReadCaptureFile(dir_ / "r.tcap");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->ok()) << c->error;
  EXPECT_EQ(c->records.size(), 3u);
}

TEST_F(CaptureTest, WriterMovesOwnership) {
  Result<CaptureWriter> w = CaptureWriter::Create(dir_ / "m.tcap", Header());
  ASSERT_TRUE(w.ok()) << w.message();
  CaptureWriter moved = std::move(w).value();
  ASSERT_TRUE(moved.Append(CapturePhase{1, Phase::kOpen, 2, "", {}}).ok());
  CaptureWriter assigned = std::move(moved);
  EXPECT_FALSE(moved.Append(CapturePhase{1, Phase::kOpen, 2, "", {}}).ok());  // NOLINT: moved-from
  ASSERT_TRUE(assigned.Finish(CaptureTrailer{2, true, "", 0, 0}).ok());
  Result<CaptureContents> c = ReadCaptureFile(dir_ / "m.tcap");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->records.size(), 3u);
}

TEST_F(CaptureTest, ReadCaptureFileErrors) {
  Result<CaptureContents> missing = ReadCaptureFile(dir_ / "nope.tcap");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.message(), "cannot open capture"));
  Result<CaptureContents> folder = ReadCaptureFile(dir_);
  ASSERT_FALSE(folder.ok());
  EXPECT_TRUE(Contains(folder.message(), "not a regular file"));
}

TEST_F(CaptureTest, LargeEnvelopeFrame) {
  Envelope e;
  e.round = Header().round;
  e.from = "alice";
  e.to = "hospital";
  e.sealed.assign(MaxSealedSize(kMaxVectorLength), 0x77);
  const std::vector<uint8_t> frame = Encode(e);
  const fs::path path = dir_ / "big.tcap";
  Result<CaptureWriter> w = CaptureWriter::Create(path, Header());
  ASSERT_TRUE(w.ok()) << w.message();
  ASSERT_TRUE(w->Append(CaptureEnvelope{7, frame}).ok());
  ASSERT_TRUE(w->Finish(CaptureTrailer{8, true, "", 1, 0}).ok());
  Result<CaptureContents> c = ReadCaptureFile(path);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->ok()) << c->error;
  EXPECT_EQ(std::get<CaptureEnvelope>(c->records[1]).frame, frame);
}

// A header declaring a payload of 256 columns x 2^20 elements read cleanly, and tally-replay's
// audit then allocated 2 GiB for it: parameters whose payload is over the limit do not decode.
TEST_F(CaptureTest, AHeaderDeclaringAPayloadOverTheLimitIsRefused) {
  CaptureHeader h = Header();
  h.params.range = 0;
  h.params.length = 1u << 20;
  for (int i = 0; i < 256; ++i) h.params.columns.push_back({"c" + std::to_string(i), 0, 1, 0});
  std::vector<uint8_t> bytes = FileStart();
  Append(&bytes, EncodeRecord(h));
  const CaptureContents c = ReadCapture(bytes);
  EXPECT_TRUE(c.records.empty());
  EXPECT_TRUE(Contains(c.error, "a payload of 268435712 elements, over the limit of 1048576"))
      << c.error;
}

}  // namespace
}  // namespace tally
