// Capture files: writer (append-only, records buffered up to 64 KiB between writes) and strict
// reader (schema/PROTOCOL.md, "Capture format").

#include "schema/capture.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <msgpack.hpp>
#include <utility>

#include "schema/durable.h"
#include "schema/msgpack_strict.h"

namespace tally {
namespace {

constexpr std::array<uint8_t, 8> kMagic = {'T', 'A', 'L', 'L', 'Y', 'C', 'A', 'P'};
constexpr size_t kFileHeaderSize = kMagic.size() + 4;
// Record framing: u32 body length, u8 type, body, u32 CRC.
constexpr size_t kRecordOverhead = 4 + 1 + 4;
// Largest frame a frame record holds: the largest wire message the broker accepts.
constexpr size_t kMaxFrameBytes = MaxMessageSize(kMaxVectorLength);
// Largest record body: a frame record's frame plus its array, t_us and bin headers.
constexpr size_t kMaxBodyBytes = kMaxFrameBytes + 64;
constexpr size_t kMaxFingerprintLength = 128;
// ReadCaptureFile refuses larger files rather than trying to hold them in memory.
constexpr uint64_t kMaxCaptureFileBytes = uint64_t{16} << 30;

// CRC-32 (IEEE 802.3, reflected, as zlib's crc32()), eight bytes per step ("slicing-by-8"):
// captures checksum every routed byte on the broker's one thread, so this is hot for vectors.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;
constexpr CrcTables MakeCrcTables() {
  CrcTables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (size_t k = 1; k < 8; ++k)
    for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  return t;
}
constexpr CrcTables kCrc = MakeCrcTables();

uint32_t Load32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

uint32_t Crc32Update(uint32_t crc, std::span<const uint8_t> bytes) {
  crc = ~crc;
  const uint8_t* p = bytes.data();
  size_t n = bytes.size();
  for (; n >= 8; p += 8, n -= 8) {
    const uint32_t a = Load32(p) ^ crc, b = Load32(p + 4);
    crc = kCrc[7][a & 0xff] ^ kCrc[6][(a >> 8) & 0xff] ^ kCrc[5][(a >> 16) & 0xff] ^
          kCrc[4][a >> 24] ^ kCrc[3][b & 0xff] ^ kCrc[2][(b >> 8) & 0xff] ^
          kCrc[1][(b >> 16) & 0xff] ^ kCrc[0][b >> 24];
  }
  for (; n > 0; ++p, --n) crc = kCrc[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

using strict::PackBin;
using strict::Packer;
using strict::PackStr;

CaptureRecordType TypeOf(const CaptureRecord& record) {
  return std::visit(
      [](const auto& r) {
        using T = std::decay_t<decltype(r)>;
        if constexpr (std::is_same_v<T, CaptureHeader>) return CaptureRecordType::kHeader;
        if constexpr (std::is_same_v<T, CaptureFrame>) return CaptureRecordType::kFrame;
        if constexpr (std::is_same_v<T, CaptureRejected>) return CaptureRecordType::kRejected;
        if constexpr (std::is_same_v<T, CapturePhase>) return CaptureRecordType::kPhase;
        if constexpr (std::is_same_v<T, CaptureTrailer>) return CaptureRecordType::kTrailer;
      },
      record);
}

void PackBody(Packer& p, const CaptureHeader& h) {
  p.pack_array(13);
  p.pack_uint32(h.format_version);
  PackBin(p, h.round);
  p.pack_uint64(h.ticket);
  strict::PackParams(p, h.params, /*hospital=*/true);
  PackStr(p, h.roster_fingerprint);
  p.pack_int64(h.opened_unix_ms);
}
void PackBody(Packer& p, const CaptureFrame& e) {
  p.pack_array(2);
  p.pack_uint64(e.t_us);
  PackBin(p, e.frame);
}
void PackBody(Packer& p, const CaptureRejected& r) {
  p.pack_array(4);
  p.pack_uint64(r.t_us);
  PackStr(p, r.sender);
  PackStr(p, r.reason);
  p.pack_uint64(r.size);
}
void PackBody(Packer& p, const CapturePhase& ph) {
  p.pack_array(8);
  p.pack_uint64(ph.t_us);
  PackStr(p, PhaseName(ph.phase));
  p.pack_uint64(ph.seq);
  PackStr(p, ph.reason);
  strict::PackSets(p, ph.sets);
}
void PackBody(Packer& p, const CaptureTrailer& t) {
  p.pack_array(5);
  p.pack_uint64(t.t_us);
  if (t.done) {
    p.pack_true();
  } else {
    p.pack_false();
  }
  PackStr(p, t.reason);
  p.pack_uint64(t.frames);
  p.pack_uint64(t.rejected);
}

std::string_view RecordName(CaptureRecordType type) {
  switch (type) {
    case CaptureRecordType::kHeader:
      return "header record";
    case CaptureRecordType::kFrame:
      return "frame record";
    case CaptureRecordType::kRejected:
      return "rejected record";
    case CaptureRecordType::kPhase:
      return "phase record";
    case CaptureRecordType::kTrailer:
      return "trailer record";
  }
  return "record";
}

Status CheckCount(const strict::FieldReader& r, size_t want, size_t got) {
  if (want == got) return Status::Ok();
  return r.Error("expected " + std::to_string(want) + " fields, got " + std::to_string(got));
}

bool LowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Decodes one record body strictly; the sets of a phase record are of `participants` (the
// header's). Errors read "<type> record: <what>"; the caller adds "malformed".
Result<CaptureRecord> ParseBody(CaptureRecordType type, std::span<const uint8_t> body,
                                size_t participants) {
  const strict::Bounds bounds{
      .max_bytes = kMaxBodyBytes,
      .max_array = std::max<size_t>({13, kMaxParticipants, kMaxColumns}),
      .max_str = std::max(kMaxReasonLength, kMaxFingerprintLength) + 56,
      .max_bin = kMaxFrameBytes,
      .max_depth = 3,  // record, columns, a column
  };
  Result<strict::Unpacked> unpacked = strict::UnpackArray(body, bounds, "record body");
  if (!unpacked.ok())
    return Status::Error(std::string(RecordName(type)) + ": " + unpacked.message());
  const std::span<const msgpack::object> f = unpacked->fields();
  strict::FieldReader r(RecordName(type), f, 0);
  switch (type) {
    case CaptureRecordType::kHeader: {
      CaptureHeader h;
      TALLY_RETURN_IF_ERROR(CheckCount(r, 13, f.size()));
      TALLY_RETURN_IF_ERROR(r.U32("format_version", &h.format_version));
      if (h.format_version != kCaptureFormatVersion) {
        return r.Error("format_version " + std::to_string(h.format_version) +
                       " does not match the file's version " +
                       std::to_string(kCaptureFormatVersion));
      }
      TALLY_RETURN_IF_ERROR(r.Round("round", &h.round));
      TALLY_RETURN_IF_ERROR(r.Uint("ticket", &h.ticket));
      TALLY_RETURN_IF_ERROR(
          strict::ReadParams(r, kMaxVectorLength, kMaxParticipants, /*hospital=*/true, &h.params));
      std::string_view fp;
      TALLY_RETURN_IF_ERROR(r.StrView("roster_fingerprint", &fp));
      if (fp.size() > kMaxFingerprintLength || !LowerHex(fp)) {
        return r.Error("roster_fingerprint must be lowercase hex, at most " +
                       std::to_string(kMaxFingerprintLength) + " characters");
      }
      h.roster_fingerprint.assign(fp);
      TALLY_RETURN_IF_ERROR(r.Int64("opened_unix_ms", &h.opened_unix_ms));
      return CaptureRecord(std::move(h));
    }
    case CaptureRecordType::kFrame: {
      CaptureFrame e;
      TALLY_RETURN_IF_ERROR(CheckCount(r, 2, f.size()));
      TALLY_RETURN_IF_ERROR(r.Uint("t_us", &e.t_us));
      TALLY_RETURN_IF_ERROR(r.Bin("frame", 0, kMaxFrameBytes, &e.frame));
      return CaptureRecord(std::move(e));
    }
    case CaptureRecordType::kRejected: {
      CaptureRejected j;
      TALLY_RETURN_IF_ERROR(CheckCount(r, 4, f.size()));
      TALLY_RETURN_IF_ERROR(r.Uint("t_us", &j.t_us));
      TALLY_RETURN_IF_ERROR(r.Name("sender", &j.sender));
      TALLY_RETURN_IF_ERROR(r.Reason("reason", &j.reason));
      TALLY_RETURN_IF_ERROR(r.Uint("size", &j.size));
      return CaptureRecord(std::move(j));
    }
    case CaptureRecordType::kPhase: {
      CapturePhase ph;
      TALLY_RETURN_IF_ERROR(CheckCount(r, 8, f.size()));
      TALLY_RETURN_IF_ERROR(r.Uint("t_us", &ph.t_us));
      std::string_view name;
      TALLY_RETURN_IF_ERROR(r.StrView("phase", &name));
      const std::optional<Phase> p = PhaseNamed(name);
      if (!p) return r.Error("unknown phase");
      ph.phase = *p;
      TALLY_RETURN_IF_ERROR(r.Uint("seq", &ph.seq));
      TALLY_RETURN_IF_ERROR(r.Reason("reason", &ph.reason));
      TALLY_RETURN_IF_ERROR(strict::ReadSets(r, participants, &ph.sets));
      return CaptureRecord(std::move(ph));
    }
    case CaptureRecordType::kTrailer: {
      CaptureTrailer t;
      TALLY_RETURN_IF_ERROR(CheckCount(r, 5, f.size()));
      TALLY_RETURN_IF_ERROR(r.Uint("t_us", &t.t_us));
      TALLY_RETURN_IF_ERROR(r.Bool("done", &t.done));
      TALLY_RETURN_IF_ERROR(r.Reason("reason", &t.reason));
      TALLY_RETURN_IF_ERROR(r.Uint("frames", &t.frames));
      TALLY_RETURN_IF_ERROR(r.Uint("rejected", &t.rejected));
      return CaptureRecord(std::move(t));
    }
  }
  return Status::Error("unknown record type");
}

// Checks that the reader will accept what the writer is about to write, so a bad field (say an
// over-long reason) fails the Append instead of truncating every later reading of the file.
Status ValidateRecord(const CaptureRecord& record, std::span<const uint8_t> framed,
                      size_t participants) {
  if (const auto* e = std::get_if<CaptureFrame>(&record)) {
    // Skip re-parsing the (possibly megabytes of) frame; its size is the only constraint.
    if (e->frame.size() > kMaxFrameBytes) {
      return Status::Error("frame record: frame is " + std::to_string(e->frame.size()) +
                           " bytes, over the limit of " + std::to_string(kMaxFrameBytes));
    }
    return Status::Ok();
  }
  const std::span<const uint8_t> body = framed.subspan(5, framed.size() - kRecordOverhead);
  Result<CaptureRecord> parsed = ParseBody(TypeOf(record), body, participants);
  if (!parsed.ok()) return Status::Error("refusing to write invalid " + parsed.message());
  return Status::Ok();
}

}  // namespace

uint32_t CaptureCrc32(std::span<const uint8_t> bytes) { return Crc32Update(0, bytes); }

std::vector<uint8_t> EncodeRecord(const CaptureRecord& record) {
  std::vector<uint8_t> out;
  if (const auto* e = std::get_if<CaptureFrame>(&record)) {
    out.reserve(e->frame.size() + 32);
  } else {
    out.reserve(128);
  }
  out.resize(4);  // body length, filled in below
  out.push_back(static_cast<uint8_t>(TypeOf(record)));
  strict::VectorSink sink{&out};
  Packer packer(sink);
  std::visit([&packer](const auto& r) { PackBody(packer, r); }, record);
  const uint32_t body_size = static_cast<uint32_t>(out.size() - 5);
  for (int i = 0; i < 4; ++i)
    out[static_cast<size_t>(i)] = static_cast<uint8_t>(body_size >> (8 * i));
  PutU32(&out, Crc32Update(0, std::span<const uint8_t>(out).subspan(4)));
  return out;
}

Result<CaptureWriter> CaptureWriter::Create(const std::filesystem::path& path,
                                            const CaptureHeader& header) {
  const CaptureRecord record(header);
  const std::vector<uint8_t> framed = EncodeRecord(record);
  TALLY_RETURN_IF_ERROR(ValidateRecord(record, framed, 0));

  std::vector<uint8_t> start(kMagic.begin(), kMagic.end());
  PutU32(&start, kCaptureFormatVersion);
  start.insert(start.end(), framed.begin(), framed.end());

  // O_EXCL: a capture is never overwritten. Mode 0640 is given to open() (the umask may only
  // narrow it) rather than set afterwards.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) {
    return Status::Error("cannot create capture " + path.string() + ": " + std::strerror(errno));
  }
  CaptureWriter writer(fd, path, header.params.participants.size());
  TALLY_RETURN_IF_ERROR(WriteAll(fd, start, writer.what()));
  // The new folder entry is made durable by Finish(), after the file itself: on ext4 the
  // file's fsync commits the entry in the same journal transaction, so the folder's fsync
  // then costs nothing, where syncing the folder here cost a commit of its own every round.
  return writer;
}

CaptureWriter::CaptureWriter(CaptureWriter&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      path_(std::move(other.path_)),
      participants_(other.participants_),
      pending_(std::move(other.pending_)),
      frames_(other.frames_),
      rejected_(other.rejected_) {}

CaptureWriter& CaptureWriter::operator=(CaptureWriter&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    participants_ = other.participants_;
    pending_ = std::move(other.pending_);
    frames_ = other.frames_;
    rejected_ = other.rejected_;
  }
  return *this;
}

CaptureWriter::~CaptureWriter() { Close(); }

void CaptureWriter::Close() {
  if (fd_ >= 0) (void)Flush();
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

Status CaptureWriter::Write(std::vector<std::span<const uint8_t>> pieces, bool flush) {
  size_t total = 0;
  for (auto p : pieces) total += p.size();
  if (!flush && pending_.size() + total <= kCaptureBufferBytes) {
    for (auto p : pieces) pending_.insert(pending_.end(), p.begin(), p.end());
    return Status::Ok();
  }
  pieces.insert(pieces.begin(), std::span<const uint8_t>(pending_));
  Status s = WriteAll(fd_, std::move(pieces), what());
  pending_.clear();
  if (!s.ok()) {
    // A partly written record would make every later record unreadable: stop writing.
    ::close(fd_);
    fd_ = -1;
  }
  return s;
}

Status CaptureWriter::Flush() {
  if (fd_ < 0) return Status::Error("capture writer is closed");
  return Write({}, /*flush=*/true);
}

Status CaptureWriter::Append(const CaptureRecord& record) {
  if (fd_ < 0) return Status::Error("capture writer is closed");
  if (std::holds_alternative<CaptureHeader>(record)) {
    return Status::Error("capture already has its header record");
  }
  const std::vector<uint8_t> framed = EncodeRecord(record);
  TALLY_RETURN_IF_ERROR(ValidateRecord(record, framed, participants_));
  TALLY_RETURN_IF_ERROR(Write({framed}));
  frames_ += std::holds_alternative<CaptureFrame>(record);
  rejected_ += std::holds_alternative<CaptureRejected>(record);
  return Status::Ok();
}

Status CaptureWriter::AppendFrame(uint64_t t_us, std::span<const uint8_t> frame) {
  if (fd_ < 0) return Status::Error("capture writer is closed");
  if (frame.size() > kMaxFrameBytes)
    return Status::Error("refusing to write invalid frame record: frame too large");
  // The same bytes EncodeRecord(CaptureFrame{t_us, frame}) makes, without copying the
  // frame: a small head (length, type, msgpack [t_us, bin header]), the frame, the CRC.
  std::vector<uint8_t> head(5);
  head[4] = static_cast<uint8_t>(CaptureRecordType::kFrame);
  strict::VectorSink sink{&head};
  Packer packer(sink);
  packer.pack_array(2);
  packer.pack_uint64(t_us);
  packer.pack_bin(static_cast<uint32_t>(frame.size()));
  const uint32_t body_size = static_cast<uint32_t>(head.size() - 5 + frame.size());
  for (int i = 0; i < 4; ++i)
    head[static_cast<size_t>(i)] = static_cast<uint8_t>(body_size >> (8 * i));
  uint32_t crc = Crc32Update(0, std::span<const uint8_t>(head).subspan(4));
  // Continue the CRC over the frame (Crc32Update takes and returns the finalised value).
  crc = Crc32Update(crc, frame);
  std::vector<uint8_t> tail;
  PutU32(&tail, crc);
  TALLY_RETURN_IF_ERROR(Write({head, frame, tail}));
  ++frames_;
  return Status::Ok();
}

Status CaptureWriter::Finish(const CaptureTrailer& trailer) {
  TALLY_RETURN_IF_ERROR(Append(trailer));
  TALLY_RETURN_IF_ERROR(Flush());
  // The file, then its folder entry (see Create).
  const int fd = std::exchange(fd_, -1);
  Status synced = SyncFile(fd, what());
  if (::close(fd) != 0 && synced.ok())
    synced = Status::Error("cannot close " + what() + ": " + std::strerror(errno));
  TALLY_RETURN_IF_ERROR(synced);
  return SyncFolder(path_.parent_path());
}

CaptureContents ReadCapture(std::span<const uint8_t> bytes, CaptureReadOptions options) {
  CaptureContents out;
  auto fail = [&out](uint64_t offset, std::string error) {
    out.error = std::move(error);
    out.error_offset = offset;
    return std::move(out);
  };
  if (bytes.size() < kMagic.size() || !std::equal(kMagic.begin(), kMagic.end(), bytes.begin())) {
    return fail(0, "not a Tally capture (bad magic)");
  }
  if (bytes.size() < kFileHeaderSize) {
    return fail(kMagic.size(), "truncated file header at offset " + std::to_string(kMagic.size()));
  }
  const uint32_t version = GetU32(bytes.data() + kMagic.size());
  if (version != kCaptureFormatVersion) {
    // Say which release can read it: the format changes only with the protocol.
    return fail(kMagic.size(),
                "capture format version " + std::to_string(version) +
                    " is not supported (this reader knows " +
                    std::to_string(kCaptureFormatVersion) + "): it was written by " +
                    (version < kCaptureFormatVersion
                         ? "an older Tally (capture format " + std::to_string(version) +
                               "); read it with the tally-replay of that release"
                         : "a newer Tally (capture format " + std::to_string(version) +
                               "); read it with a newer tally-replay"));
  }

  size_t pos = kFileHeaderSize;
  bool trailer_seen = false;
  while (pos < bytes.size()) {
    const size_t start = pos;
    const std::span<const uint8_t> rest = bytes.subspan(pos);
    if (rest.size() < 5) return fail(start, "truncated record at offset " + std::to_string(start));
    const size_t body_size = GetU32(rest.data());
    if (body_size > kMaxBodyBytes) {
      return fail(start, "record at offset " + std::to_string(start) + " claims " +
                             std::to_string(body_size) + " bytes, over the limit of " +
                             std::to_string(kMaxBodyBytes));
    }
    if (rest.size() < kRecordOverhead + body_size) {
      return fail(start, "truncated record at offset " + std::to_string(start));
    }
    const std::span<const uint8_t> typed = rest.subspan(4, 1 + body_size);
    const uint32_t stored_crc = GetU32(rest.data() + 5 + body_size);
    if (Crc32Update(0, typed) != stored_crc) {
      if (!options.past_crc_mismatch)
        return fail(start, "CRC mismatch in record at offset " + std::to_string(start));
      out.damaged.push_back(start);
    }
    const uint8_t type_byte = typed[0];
    if (type_byte < static_cast<uint8_t>(CaptureRecordType::kHeader) ||
        type_byte > static_cast<uint8_t>(CaptureRecordType::kTrailer)) {
      return fail(start, "unknown record type " + std::to_string(type_byte) + " at offset " +
                             std::to_string(start));
    }
    const auto type = static_cast<CaptureRecordType>(type_byte);
    if (trailer_seen) {
      return fail(start, "record after the trailer at offset " + std::to_string(start));
    }
    if (out.records.empty() != (type == CaptureRecordType::kHeader)) {
      return fail(start, out.records.empty()
                             ? "first record is not a header"
                             : "second header record at offset " + std::to_string(start));
    }
    const size_t participants =
        out.records.empty()
            ? 0
            : std::get<CaptureHeader>(out.records.front()).params.participants.size();
    Result<CaptureRecord> record = ParseBody(type, typed.subspan(1), participants);
    if (!record.ok()) {
      return fail(start,
                  "malformed " + record.message() + " (offset " + std::to_string(start) + ")");
    }
    trailer_seen = type == CaptureRecordType::kTrailer;
    out.records.push_back(std::move(record).value());
    out.offsets.push_back(start);
    pos = start + kRecordOverhead + body_size;
  }
  if (out.records.empty()) {
    return fail(kFileHeaderSize, "capture has no header record");
  }
  return out;
}

Result<CaptureContents> ReadCaptureFile(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Status::Error("cannot open capture " + path.string() + ": " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return Status::Error("cannot stat capture " + path.string() + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return Status::Error(path.string() + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxCaptureFileBytes) {
    return Status::Error("capture " + path.string() + " is larger than 16 GiB");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Error("cannot read capture " + path.string() + ": " + std::strerror(errno));
    }
    if (n == 0) break;  // the file shrank while we read: parse what is there
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return ReadCapture(bytes);
}

}  // namespace tally
