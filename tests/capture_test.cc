// Capture files (format 3, rounds that survive dropouts): write/read round trip, a header with
// the round's threshold, phase records with the round's sets (checked against the header's
// participants), frame records (the envelopes routed and the keys batch given the hospital), a
// trailer that counts the frames, and a reader that survives every truncation and flip.

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

#include "schema/results.h"
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
    h.params.participants = {"alice", "bob", "charlie", "dave"};
    h.params.threshold = 3;
    h.roster_fingerprint = std::string(64, 'a');
    h.opened_unix_ms = 1'764'000'000'123;
    return h;
  }

  // "1101" -> {true, true, false, true}: a set of the header's participants.
  static Members Bits(std::string_view flags) {
    Members m;
    for (char c : flags) m.push_back(c == '1');
    return m;
  }
  static Members All() { return Bits("1111"); }
  // The survivors of Rest()'s round: dave vanished after sharing.
  static Members Survivors() { return Bits("1110"); }

  // An envelope as a patient sends it to the hospital: a partial or an unmask.
  static std::vector<uint8_t> EnvelopeFrame(uint8_t seed,
                                            EnvelopeKind kind = EnvelopeKind::kPartial,
                                            std::string from = "alice") {
    Envelope e;
    e.kind = kind;
    e.round = Header().round;
    e.from = std::move(from);
    e.to = "hospital";
    e.sealed.resize(kSealOverhead + 24);
    for (size_t i = 0; i < e.sealed.size(); ++i) e.sealed[i] = static_cast<uint8_t>(seed + i);
    return Encode(e);
  }
  // The keys batch the broker gives the hospital: cpk || spk || signature of every member of U1
  // (what the hospital's view is computed from, and what a replay checks the signatures of).
  static std::vector<uint8_t> KeysFrame() {
    Batch b{Header().round, BatchKind::kKeys, {}};
    for (uint32_t i = 0; i < 4; ++i)
      b.items.push_back({i, std::vector<uint8_t>(kKeysItemSize, static_cast<uint8_t>(i + 1))});
    return Encode(b);
  }

  // Every record type, in the order a round writes them: a round of four with threshold 3 in
  // which dave vanished after sharing (so a confirm phase) and the hospital did not acknowledge.
  static std::vector<CaptureRecord> Rest() {
    const Members all = All(), survivors = Survivors();
    return {
        CapturePhase{0, Phase::kOpen, 10, "", {}},
        CapturePhase{1500, Phase::kShare, 11, "", {all, {}, {}, {}}},
        CaptureFrame{1510, KeysFrame()},
        CapturePhase{2000, Phase::kMask, 12, "", {all, all, {}, {}}},
        CaptureFrame{2100, EnvelopeFrame(1, EnvelopeKind::kPartial, "alice")},
        CaptureRejected{2150, "mallory", "envelope from names another sender", 812},
        CaptureFrame{2200, EnvelopeFrame(2, EnvelopeKind::kPartial, "bob")},
        CaptureFrame{2300, EnvelopeFrame(3, EnvelopeKind::kPartial, "charlie")},
        CapturePhase{3000, Phase::kConfirm, 13, "", {all, all, survivors, {}}},
        CapturePhase{3500, Phase::kUnmask, 14, "", {all, all, survivors, survivors}},
        CaptureFrame{3600, EnvelopeFrame(4, EnvelopeKind::kUnmask, "alice")},
        CaptureFrame{3650, {}},
        CapturePhase{4000,
                     Phase::kAbort,
                     15,
                     "hospital did not acknowledge the result",
                     {all, all, survivors, survivors}},
    };
  }
  static CaptureTrailer Trailer() {
    return CaptureTrailer{4001, false, "hospital did not acknowledge the result", 6, 1};
  }

  // Writes a full capture and returns its path.
  fs::path WriteFull() {
    const fs::path path = dir_ / "round.tcap";
    Result<CaptureWriter> w = CaptureWriter::Create(path, Header());
    EXPECT_TRUE(w.ok()) << w.message();
    for (const CaptureRecord& r : Rest()) EXPECT_TRUE(w->Append(r).ok());
    // The trailer counts what the writer counted.
    EXPECT_EQ(w->frames(), Trailer().frames);
    EXPECT_EQ(w->rejected(), Trailer().rejected);
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
  // The phase records kept their sets: none while open, then each as its phase fixed it.
  ASSERT_EQ(c->records.size(), 15u);
  EXPECT_EQ(std::get<CapturePhase>(c->records[1]).sets, RoundSets{});
  EXPECT_EQ(std::get<CapturePhase>(c->records[2]).sets.joined, All());
  EXPECT_TRUE(std::get<CapturePhase>(c->records[2]).sets.shared.empty());
  EXPECT_EQ(std::get<CapturePhase>(c->records[9]).sets.masked, Survivors());
  EXPECT_TRUE(std::get<CapturePhase>(c->records[9]).sets.confirmed.empty());
  EXPECT_EQ(std::get<CapturePhase>(c->records[13]).sets.confirmed, Survivors());
  EXPECT_EQ(std::get<CaptureHeader>(c->records[0]).params.threshold, 3u);
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

// The broker's zero-copy path writes byte for byte what Append(CaptureFrame) writes, for
// frames small and large (the large one crosses many 8-byte CRC steps and an odd tail).
TEST_F(CaptureTest, AppendFrameWritesTheSameBytesAsAppend) {
  std::vector<uint8_t> big(1'000'003);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 131 + 7);
  for (const std::vector<uint8_t>& frame : {EnvelopeFrame(9), big, std::vector<uint8_t>{}}) {
    const fs::path a = dir_ / "a.tcap", b = dir_ / "b.tcap";
    fs::remove(a);
    fs::remove(b);
    auto wa = CaptureWriter::Create(a, Header());
    auto wb = CaptureWriter::Create(b, Header());
    ASSERT_TRUE(wa.ok() && wb.ok());
    ASSERT_TRUE(wa->Append(CaptureFrame{77, frame}).ok());
    ASSERT_TRUE(wb->AppendFrame(77, frame).ok());
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
  EXPECT_EQ(bytes[17], 0x9d);  // fixarray(13)
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

// A phase record's body: [t_us, phase, seq, reason, joined, shared, masked, confirmed], each set
// a bin of ceil(n/8) bytes (participant i in bit i % 8 of byte i / 8) or empty before its phase.
TEST_F(CaptureTest, PhaseRecordLayoutIsPinned) {
  const std::vector<uint8_t> body = {0x98, 0xcd, 0x05, 0xdc, 0xa4, 'm',  'a',
                                     's',  'k',  0x0b, 0xa0, 0xc4, 0x01, 0x0f,
                                     0xc4, 0x01, 0x0b, 0xc4, 0x00, 0xc4, 0x00};
  EXPECT_EQ(EncodeRecord(CapturePhase{1500, Phase::kMask, 11, "", {All(), Bits("1101"), {}, {}}}),
            Frame(4, body));
  // Nine participants: two bytes per set, the ninth in bit 0 of the second.
  const std::vector<uint8_t> nine = {0x98, 0x07, 0xa4, 'd',  'o',  'n',  'e',  0x0c, 0xa0,
                                     0xc4, 0x02, 0xff, 0x01, 0xc4, 0x02, 0xff, 0x01, 0xc4,
                                     0x02, 0xfe, 0x01, 0xc4, 0x02, 0xfe, 0x01};
  const Members everyone(9, true);
  Members survivors = everyone;
  survivors[0] = false;
  EXPECT_EQ(EncodeRecord(
                CapturePhase{7, Phase::kDone, 12, "", {everyone, everyone, survivors, survivors}}),
            Frame(4, nine));
  // The open phase's record [1500, "open", 1, "", four empty sets], byte for byte, with its CRC
  // (the example schema/PROTOCOL.md gives).
  const std::vector<uint8_t> documented = {
      0x13, 0x00, 0x00, 0x00, 0x04, 0x98, 0xcd, 0x05, 0xdc, 0xa4, 0x6f, 0x70, 0x65, 0x6e,
      0x01, 0xa0, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00, 0x48, 0x10, 0x35, 0x56};
  EXPECT_EQ(EncodeRecord(CapturePhase{1500, Phase::kOpen, 1, "", {}}), documented);
}

TEST_F(CaptureTest, PhaseRecordsRoundTripEveryPhaseWithItsSets) {
  std::vector<CaptureRecord> records = {Header()};
  const Members all = All(), survivors = Survivors();
  for (Phase phase : {Phase::kOpen, Phase::kShare, Phase::kMask, Phase::kConfirm, Phase::kUnmask,
                      Phase::kDone, Phase::kAbort}) {
    records.push_back(CapturePhase{7, phase, 1, phase == Phase::kAbort ? "why" : "", {}});
    records.push_back(CapturePhase{8, phase, 2, "", {all, {}, {}, {}}});
    records.push_back(CapturePhase{9, phase, 3, "", {all, all, survivors, survivors}});
    records.push_back(CapturePhase{9, phase, 4, "", {all, Bits("0111"), Bits("0110"), {}}});
    records.push_back(CapturePhase{9, phase, 5, "", {Bits("0000"), {}, {}, Bits("1001")}});
  }
  std::vector<uint8_t> bytes = FileStart();
  for (const CaptureRecord& r : records) Append(&bytes, EncodeRecord(r));
  const CaptureContents c = ReadCapture(bytes);
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(c.records, records);

  // The reader takes sets of up to kMaxParticipants, as many as the header names.
  CaptureHeader most = Header();
  most.params.participants.clear();
  for (size_t i = 0; i < kMaxParticipants; ++i)
    most.params.participants.push_back("p" + std::to_string(i));
  most.params.threshold = SafeThreshold(kMaxParticipants);
  Members thousand(kMaxParticipants, true);
  Members dropped = thousand;
  dropped[kMaxParticipants - 1] = false;
  records = {most, CapturePhase{9, Phase::kUnmask, 3, "", {thousand, thousand, dropped, dropped}}};
  bytes = FileStart();
  for (const CaptureRecord& r : records) Append(&bytes, EncodeRecord(r));
  const CaptureContents big = ReadCapture(bytes);
  ASSERT_TRUE(big.ok()) << big.error;
  EXPECT_EQ(big.records, records);
}

// A header carries the round's threshold after its weight, then its graph ([] for a full round):
// 13 fields. A header without the graph (a capture from before neighbourhoods) or without both
// (from before dropouts), same format number, is refused by its field count.
TEST_F(CaptureTest, TheHeaderHasThirteenFieldsWithTheThresholdAndGraph) {
  CaptureHeader h;
  h.ticket = 1;
  h.params = {"h", 100, 1, {"a", "b"}, {}, {}, 2};
  h.roster_fingerprint = "ab";
  h.opened_unix_ms = 5;
  std::vector<uint8_t> body = {0x9d, 0x03, 0xc4, 0x10};
  body.insert(body.end(), 16, 0x00);
  body.insert(body.end(), {0x01, 0xa1, 'h',  0x64, 0x01, 0x92, 0xa1, 'a', 0xa1, 'b',
                           0x90, 0x92, 0x00, 0x00, 0x02, 0x90, 0xa2, 'a', 'b',  0x05});
  EXPECT_EQ(EncodeRecord(h), Frame(1, body));
  auto read_back = [&] {
    std::vector<uint8_t> bytes = FileStart();
    Append(&bytes, EncodeRecord(h));
    const CaptureContents c = ReadCapture(bytes);
    ASSERT_TRUE(c.ok()) << c.error;
    EXPECT_EQ(std::get<CaptureHeader>(c.records[0]), h);
  };
  for (uint32_t t : {0u, 2u, UINT32_MAX}) {
    h.params.threshold = t;
    read_back();
  }
  // A neighbourhood round's header: the graph [corrupt, dropout, k, t, seed, signature] in
  // place of [], read back whole.
  Neighbourhood g{50'000, 100'000, 2, 2, {}, {}};
  g.seed.fill(0x5d);
  g.signature.fill(0x51);
  h.params.graph = g;
  h.params.threshold = 2;
  // The body up to the threshold, then fixarray(6), 50,000 (uint16), 100,000 (uint32), 2, 2,
  // bin8(32) seed, bin8(64) signature, then the fingerprint and opened_unix_ms as before.
  std::vector<uint8_t> with_graph(body.begin(), body.begin() + 4 + 16 + 15);
  with_graph.insert(with_graph.end(),
                    {0x96, 0xcd, 0xc3, 0x50, 0xce, 0x00, 0x01, 0x86, 0xa0, 0x02, 0x02, 0xc4, 0x20});
  with_graph.insert(with_graph.end(), 32, 0x5d);
  with_graph.insert(with_graph.end(), {0xc4, 0x40});
  with_graph.insert(with_graph.end(), 64, 0x51);
  with_graph.insert(with_graph.end(), {0xa2, 'a', 'b', 0x05});
  EXPECT_EQ(EncodeRecord(h), Frame(1, with_graph));
  read_back();
  // The same header without its graph: 12 fields; without its threshold too: 11.
  ASSERT_EQ(body[4 + 16 + 14], 0x02);  // the threshold, after weight [0, 0]
  ASSERT_EQ(body[4 + 16 + 15], 0x90);  // the graph
  std::vector<uint8_t> no_graph = body;
  no_graph[0] = 0x9c;
  no_graph.erase(no_graph.begin() + 4 + 16 + 15);
  std::vector<uint8_t> bytes = FileStart();
  Append(&bytes, Frame(1, no_graph));
  EXPECT_EQ(ReadCapture(bytes).error,
            "malformed header record: expected 13 fields, got 12 (offset 12)");
  std::vector<uint8_t> no_threshold = no_graph;
  no_threshold[0] = 0x9b;
  no_threshold.erase(no_threshold.begin() + 4 + 16 + 14);
  bytes = FileStart();
  Append(&bytes, Frame(1, no_threshold));
  EXPECT_EQ(ReadCapture(bytes).error,
            "malformed header record: expected 13 fields, got 11 (offset 12)");
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
  // Every record, every byte: the header (index 0), the keys frame, a phase record with its sets,
  // a rejected record, a partial's frame, the trailer.
  ASSERT_TRUE(std::holds_alternative<CaptureFrame>(full.records[3]));
  ASSERT_TRUE(std::holds_alternative<CapturePhase>(full.records[4]));
  ASSERT_TRUE(std::holds_alternative<CaptureRejected>(full.records[6]));
  ASSERT_TRUE(std::holds_alternative<CaptureFrame>(full.records[7]));
  for (size_t index :
       {size_t{0}, size_t{3}, size_t{4}, size_t{6}, size_t{7}, full.offsets.size() - 1}) {
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
  // The header's fields in order, as many as `fields` (nil past the thirteenth); without
  // `threshold` and `graph`, the shape of a header from before dropouts; without `graph`, from
  // before neighbourhoods. `graph_value` packs the graph in place of [].
  auto header = [&](int fields, std::string_view hospital, uint64_t length,
                    uint32_t version = kCaptureFormatVersion, bool threshold = true,
                    bool str_threshold = false, bool graph = true,
                    const std::function<void(P&)>& graph_value = nullptr) {
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
      int packed = 9;
      auto more = [&] { return packed < fields ? (++packed, true) : false; };
      if (threshold && more()) {
        if (str_threshold) {
          str(p, "3");
        } else {
          p.pack_uint32(0);
        }
      }
      if (graph && more()) {
        if (graph_value) {
          graph_value(p);
        } else {
          p.pack_array(0);
        }
      }
      if (more()) str(p, "abcd");
      if (more()) p.pack_int64(-5);
      while (more()) p.pack_nil();
    });
  };
  const std::vector<Case> cases = {
      {1, header(10, "hospital", 1), "malformed header record: expected 13 fields, got 10"},
      {1, header(11, "hospital", 1), "malformed header record: expected 13 fields, got 11"},
      {1, header(12, "hospital", 1), "malformed header record: expected 13 fields, got 12"},
      {1, header(14, "hospital", 1), "malformed header record: expected 13 fields, got 14"},
      // A header from before dropouts: no threshold, no graph.
      {1, header(11, "hospital", 1, kCaptureFormatVersion, false, false, false),
       "malformed header record: expected 13 fields, got 11"},
      // A header from before neighbourhoods: a threshold, no graph.
      {1, header(12, "hospital", 1, kCaptureFormatVersion, true, false, false),
       "malformed header record: expected 13 fields, got 12"},
      {1, header(13, "hospital", 1, kCaptureFormatVersion, true, true),
       "malformed header record: threshold must be uint, got str"},
      // The graph: [] or an array of 6, never another type.
      {1,
       header(13, "hospital", 1, kCaptureFormatVersion, true, false, true,
              [&](P& p) { str(p, "[]"); }),
       "malformed header record: graph must be array, got str"},
      {1,
       header(13, "hospital", 1, kCaptureFormatVersion, true, false, true,
              [](P& p) {
                p.pack_array(4);
                for (int i = 0; i < 4; ++i) p.pack_uint32(2);
              }),
       "malformed header record: graph must be empty or an array of 6"},
      {1, header(13, "Hospital!", 1), "malformed header record: invalid name in hospital"},
      {1, header(13, "hospital", 0),
       "malformed header record: length must be between 1 and 1048576, got 0"},
      // A protocol-2 header record inside a format-3 file.
      {1, header(13, "hospital", 1, 2),
       "malformed header record: format_version 2 does not match the file's version 3"},
      {1, Body([](P& p) { p.pack_map(0); }),
       "malformed header record: record body must be a msgpack array, got map"},
      {1, {0x99, 0x01}, "malformed header record: truncated record body"},
  };
  for (const Case& k : cases) {
    std::vector<uint8_t> bytes = FileStart();
    Append(&bytes, Frame(k.type, k.body));
    const CaptureContents c = ReadCapture(bytes);
    EXPECT_EQ(c.error, k.error + " (offset 12)");
    EXPECT_EQ(c.error_offset, 12u);
    EXPECT_TRUE(c.records.empty());
  }
  // A valid header whose opened_unix_ms is negative (before 1970) is still valid.
  std::vector<uint8_t> ok = FileStart();
  Append(&ok, Frame(1, header(13, "hospital", 1)));
  const CaptureContents c = ReadCapture(ok);
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(std::get<CaptureHeader>(c.records[0]).opened_unix_ms, -5);

  const std::vector<Case> later = {
      {2, Body([](P& p) {
         p.pack_array(2);
         p.pack_int32(-1);
         p.pack_bin(0);
       }),
       "malformed frame record: t_us must be uint, got negative int"},
      {2, Body([&](P& p) {
         p.pack_array(2);
         p.pack_uint32(1);
         str(p, "frame");
       }),
       "malformed frame record: frame must be bin, got str"},
      {2, Body([&](P& p) {
         p.pack_array(3);
         p.pack_uint32(1);
         p.pack_bin(0);
         p.pack_nil();
       }),
       "malformed frame record: expected 2 fields, got 3"},
      {2, Body([&](P& p) {
         p.pack_array(1);
         p.pack_uint32(1);
       }),
       "malformed frame record: expected 2 fields, got 1"},
      {3, Body([&](P& p) {
         p.pack_array(4);
         p.pack_uint32(1);
         str(p, "bob");
         str(p, "x\n");
         p.pack_uint32(9);
       }),
       "malformed rejected record: reason must be printable ASCII, at most 200 characters"},
      {3, Body([&](P& p) {
         p.pack_array(4);
         p.pack_uint32(1);
         str(p, "Bob");
         str(p, "why");
         p.pack_uint32(9);
       }),
       "malformed rejected record: invalid name in sender"},
      {3, Body([&](P& p) {
         p.pack_array(3);
         p.pack_uint32(1);
         str(p, "bob");
         str(p, "why");
       }),
       "malformed rejected record: expected 4 fields, got 3"},
      {4, Body([&](P& p) {
         p.pack_array(8);
         p.pack_uint32(1);
         str(p, "paused");
         p.pack_uint32(1);
         str(p, "");
         for (int i = 0; i < 4; ++i) p.pack_bin(0);
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
         str(p, "6");
         p.pack_uint32(0);
       }),
       "malformed trailer record: frames must be uint, got str"},
      {5, Body([&](P& p) {
         p.pack_array(5);
         p.pack_uint32(1);
         p.pack_true();
         str(p, "");
         p.pack_uint32(0);
         p.pack_uint32(0);
         p.pack_nil();
       }),
       "malformed trailer record: 1 trailing bytes after record body"},
      {5, Body([&](P& p) {
         p.pack_array(4);
         p.pack_uint32(1);
         p.pack_true();
         str(p, "");
         p.pack_uint32(0);
       }),
       "malformed trailer record: expected 5 fields, got 4"},
  };
  for (const Case& k : later) {
    std::vector<uint8_t> bytes = FileStart();
    Append(&bytes, EncodeRecord(Header()));
    const size_t at = bytes.size();
    Append(&bytes, Frame(k.type, k.body));
    const CaptureContents c = ReadCapture(bytes);
    EXPECT_EQ(c.error, k.error + " (offset " + std::to_string(at) + ")");
    EXPECT_EQ(c.error_offset, at);
    EXPECT_EQ(c.records.size(), 1u);
  }
}

// Phase records, strictly: protocol 1's four-field record, the five-field record with nonces
// (protocol 2's, and protocol 3's before dropouts), the "sum" and "paused" phases, and sets that
// are not sets of the header's participants. Each error is the reader's exact text.
TEST_F(CaptureTest, MalformedPhaseRecords) {
  using P = msgpack::packer<msgpack::sbuffer>;
  using Fill = std::function<void(P&)>;
  auto phase = [](std::string_view name, const std::vector<Fill>& rest) {
    return Body([&](P& p) {
      p.pack_array(static_cast<uint32_t>(4 + rest.size()));
      p.pack_uint64(1500);
      p.pack_str(static_cast<uint32_t>(name.size()));
      p.pack_str_body(name.data(), static_cast<uint32_t>(name.size()));
      p.pack_uint64(11);
      p.pack_str(0);
      for (const Fill& f : rest) f(p);
    });
  };
  auto bin = [](std::vector<uint8_t> bytes) -> Fill {
    return [bytes](P& p) {
      p.pack_bin(static_cast<uint32_t>(bytes.size()));
      p.pack_bin_body(reinterpret_cast<const char*>(bytes.data()),
                      static_cast<uint32_t>(bytes.size()));
    };
  };
  const Fill none = bin({});
  const Fill four = bin({0x0f});
  struct Case {
    std::vector<uint8_t> body;
    std::string error;
  };
  const std::vector<Case> cases = {
      {phase("share", {}), "malformed phase record: expected 8 fields, got 4"},
      {phase("sum", {bin(std::vector<uint8_t>(96, 0x5a))}),
       "malformed phase record: expected 8 fields, got 5"},
      {phase("mask", {four, four, none}), "malformed phase record: expected 8 fields, got 7"},
      {phase("mask", {four, four, none, none, none}),
       "malformed phase record: expected 8 fields, got 9"},
      {phase("sum", {four, four, none, none}), "malformed phase record: unknown phase"},
      {phase("paused", {none, none, none, none}), "malformed phase record: unknown phase"},
      // The header names four participants: a set is one byte, bits 0 to 3.
      {phase("share", {bin({0x0f, 0x00}), none, none, none}),
       "malformed phase record: joined must be empty or 1 bytes for 4 participants, got 2"},
      {phase("mask", {four, bin(std::vector<uint8_t>(125, 0xff)), none, none}),
       "malformed phase record: shared must be empty or 1 bytes for 4 participants, got 125"},
      {phase("share", {bin({0x10}), none, none, none}),
       "malformed phase record: joined names a participant beyond the 4"},
      {phase("confirm", {four, four, bin({0x87}), none}),
       "malformed phase record: masked names a participant beyond the 4"},
      {phase("unmask", {four, four, bin({0x07}), bin({0xff})}),
       "malformed phase record: confirmed names a participant beyond the 4"},
      {phase("mask", {four, [](P& p) { p.pack_nil(); }, none, none}),
       "malformed phase record: shared must be bin, got nil"},
      {phase("mask", {four, four, [](P& p) { p.pack_array(0); }, none}),
       "malformed phase record: masked must be bin, got array"},
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
  // Whole sets of the header's participants read.
  const std::vector<uint8_t> good = phase("unmask", {four, four, bin({0x07}), bin({0x06})});
  std::vector<uint8_t> bytes = FileStart();
  Append(&bytes, EncodeRecord(Header()));
  Append(&bytes, Frame(4, good));
  CaptureContents c = ReadCapture(bytes);
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(std::get<CapturePhase>(c.records[1]).sets,
            (RoundSets{All(), All(), Survivors(), Bits("0110")}));
  // The same record under a header of nine participants: their sets take two bytes each.
  CaptureHeader nine = Header();
  nine.params.participants = {"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"};
  bytes = FileStart();
  Append(&bytes, EncodeRecord(nine));
  const size_t at = bytes.size();
  Append(&bytes, Frame(4, good));
  c = ReadCapture(bytes);
  EXPECT_EQ(c.error,
            "malformed phase record: joined must be empty or 2 bytes for 9 participants, got 1 "
            "(offset " +
                std::to_string(at) + ")");
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
  // Sets are checked against the header's four participants.
  Status wide = w->Append(CapturePhase{1, Phase::kShare, 2, "", {Members(9, true), {}, {}, {}}});
  EXPECT_EQ(wide.message(),
            "refusing to write invalid phase record: joined must be empty or 1 bytes for 4 "
            "participants, got 2");
  Status beyond = w->Append(CapturePhase{1, Phase::kMask, 2, "", {All(), Bits("11111"), {}, {}}});
  EXPECT_EQ(beyond.message(),
            "refusing to write invalid phase record: shared names a participant beyond the 4");
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
  // Only the records that went in were counted.
  EXPECT_EQ(std::get<CaptureTrailer>(c->records[2]).frames, 0u);
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

// Frame records hold whatever the broker sent on, byte for byte: envelopes of both kinds and the
// keys batch given the hospital, by Append or by the zero-copy AppendFrame; the writer counts
// them (and the rejected records) for the trailer.
TEST_F(CaptureTest, FramesHoldEnvelopesAndTheKeysBatchAndTheTrailerCountsThem) {
  const fs::path path = dir_ / "frames.tcap";
  Result<CaptureWriter> w = CaptureWriter::Create(path, Header());
  ASSERT_TRUE(w.ok()) << w.message();
  ASSERT_TRUE(w->Append(CapturePhase{1, Phase::kShare, 1, "", {All(), {}, {}, {}}}).ok());
  ASSERT_TRUE(w->AppendFrame(2, KeysFrame()).ok());
  ASSERT_TRUE(w->Append(CaptureFrame{3, EnvelopeFrame(1, EnvelopeKind::kPartial, "bob")}).ok());
  ASSERT_TRUE(w->Append(CaptureRejected{4, "dave", "partial outside the mask phase", 90}).ok());
  ASSERT_TRUE(w->AppendFrame(5, EnvelopeFrame(2, EnvelopeKind::kUnmask, "bob")).ok());
  EXPECT_EQ(w->frames(), 3u);
  EXPECT_EQ(w->rejected(), 1u);
  ASSERT_TRUE(w->Finish(CaptureTrailer{6, true, "", w->frames(), w->rejected()}).ok());

  Result<CaptureContents> c = ReadCaptureFile(path);
  ASSERT_TRUE(c.ok()) << c.message();
  ASSERT_TRUE(c->ok()) << c->error;
  ASSERT_EQ(c->records.size(), 7u);
  Result<Message> keys = Decode(std::get<CaptureFrame>(c->records[2]).frame);
  ASSERT_TRUE(keys.ok()) << keys.message();
  const Batch& batch = std::get<Batch>(*keys);
  EXPECT_EQ(batch.kind, BatchKind::kKeys);
  EXPECT_EQ(batch.round, Header().round);
  ASSERT_EQ(batch.items.size(), 4u);
  EXPECT_EQ(batch.items[3].index, 3u);
  EXPECT_EQ(batch.items[3].data, std::vector<uint8_t>(kKeysItemSize, 4));
  Result<Message> partial = Decode(std::get<CaptureFrame>(c->records[3]).frame);
  ASSERT_TRUE(partial.ok()) << partial.message();
  EXPECT_EQ(std::get<Envelope>(*partial).kind, EnvelopeKind::kPartial);
  Result<Message> unmask = Decode(std::get<CaptureFrame>(c->records[5]).frame);
  ASSERT_TRUE(unmask.ok()) << unmask.message();
  EXPECT_EQ(std::get<Envelope>(*unmask).kind, EnvelopeKind::kUnmask);
  EXPECT_EQ(std::get<Envelope>(*unmask).from, "bob");
  EXPECT_EQ(std::get<CaptureTrailer>(c->records[6]), (CaptureTrailer{6, true, "", 3, 1}));
  // The trailer's body: [t_us, done, reason, frames, rejected].
  const std::vector<uint8_t> body = {0x95, 0x06, 0xc3, 0xa0, 0x03, 0x01};
  EXPECT_EQ(EncodeRecord(CaptureTrailer{6, true, "", 3, 1}), Frame(5, body));
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
  ASSERT_TRUE(w->Append(CaptureFrame{7, frame}).ok());
  ASSERT_TRUE(w->Finish(CaptureTrailer{8, true, "", 1, 0}).ok());
  Result<CaptureContents> c = ReadCaptureFile(path);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->ok()) << c->error;
  EXPECT_EQ(std::get<CaptureFrame>(c->records[1]).frame, frame);
}

// The hospital's results line for a round names who dropped: the participants outside the
// survivors U3 that the capture's phase records show. Written into a results file with the abort
// the capture's trailer records, it reads back as a result that does not stand; a results line
// without "dropped" (from before dropouts) stops the reader at its line.
TEST_F(CaptureTest, TheResultsLineNamesWhoDroppedAsTheCaptureShowsThem) {
  Result<CaptureContents> c = ReadCaptureFile(WriteFull());
  ASSERT_TRUE(c.ok()) << c.message();
  ASSERT_TRUE(c->ok()) << c->error;
  const CaptureHeader& header = std::get<CaptureHeader>(c->records.front());
  const CapturePhase* last = nullptr;
  for (const CaptureRecord& r : c->records)
    if (const auto* ph = std::get_if<CapturePhase>(&r)) last = ph;
  ASSERT_NE(last, nullptr);
  std::vector<std::string> dropped;
  for (size_t i = 0; i < header.params.participants.size(); ++i)
    if (!last->sets.masked[i]) dropped.push_back(header.params.participants[i]);
  ASSERT_EQ(dropped, std::vector<std::string>{"dave"});

  RoundResult r;
  r.round = header.round;
  r.aggregate = {374, 0, UINT64_MAX};
  r.params.participants = header.params.participants;
  r.params.range = 100;
  r.params.length = 3;
  r.dropped = dropped;
  r.in_range = false;
  r.elapsed_ms = 2;
  EXPECT_EQ(ResultJson(r), "{\"round\": \"" + RoundHex(header.round) +
                               "\", \"aggregate\": [374, 0, \"18446744073709551615\"], "
                               "\"participants\": [\"alice\", \"bob\", \"charlie\", \"dave\"], "
                               "\"dropped\": [\"dave\"], \"range\": 100, \"in_range\": false, "
                               "\"elapsed_ms\": 2.000}");
  // A round with columns names its dropped patients the same way.
  RoundResult columns;
  columns.round = header.round;
  columns.columns = {ColumnResult{"bmi", 3, "", {"96.3"}, {"32.100"}}};
  columns.params.participants = header.params.participants;
  columns.params.columns = {Column{"bmi"}};
  columns.params.length = 1;
  columns.dropped = {"alice", "dave"};
  columns.elapsed_ms = 1.5;
  Result<ResultsLine> back = ParseResultsLine(ResultJson(columns));
  ASSERT_TRUE(back.ok()) << back.message();
  ASSERT_TRUE(back->result);
  EXPECT_EQ(*back->result, columns);
  EXPECT_EQ(back->result->dropped, (std::vector<std::string>{"alice", "dave"}));

  const std::string trailer_reason = std::get<CaptureTrailer>(c->records.back()).reason;
  RoundId other = header.round;
  other[0] ^= 0xff;
  const fs::path results = dir_ / "results.jsonl";
  {
    std::ofstream out(results);
    out << AbortJson(other, "charlie did not join (2 of 3 did, the threshold is 3)") << "\n"
        << ResultJson(r) << "\n"
        << AbortJson(header.round, trailer_reason) << "\n";
  }
  Result<RoundRecord> record = ReadRoundRecord(results, header.round);
  ASSERT_TRUE(record.ok()) << record.message();
  ASSERT_TRUE(record->result);
  EXPECT_EQ(*record->result, r);
  EXPECT_EQ(record->result->dropped, std::vector<std::string>{"dave"});
  EXPECT_EQ(record->aborted, "hospital did not acknowledge the result");
  EXPECT_FALSE(record->done());
  Result<RoundRecord> other_record = ReadRoundRecord(results, other);
  ASSERT_TRUE(other_record.ok()) << other_record.message();
  EXPECT_FALSE(other_record->result);
  EXPECT_EQ(other_record->aborted, "charlie did not join (2 of 3 did, the threshold is 3)");

  // The same result line without "dropped".
  std::string old = ResultJson(r);
  const std::string field = "\"dropped\": [\"dave\"], ";
  const size_t at = old.find(field);
  ASSERT_NE(at, std::string::npos);
  old.erase(at, field.size());
  {
    std::ofstream out(results, std::ios::app);
    out << old << "\n";
  }
  Result<RoundRecord> stale = ReadRoundRecord(results, header.round);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.message(), results.string() + ":4: no \"dropped\"");
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
