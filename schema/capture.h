// Capture files (.tcap): the broker's append-only transcript of one round.
//
// Layout (schema/PROTOCOL.md, "Capture format"): the 8-byte magic "TALLYCAP", a u32
// little-endian format version, then records. Each record is
//   u32 LE body length | u8 record type | body (one msgpack array) | u32 LE CRC-32 of type+body
// The first record is the header, the last (for a round that ended) the trailer. A capture
// holds only what the broker saw: routing headers and sealed bytes, never plaintext.
//
// Thread-compatible: one writer per file; readers work on bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

inline constexpr size_t kCaptureBufferBytes = 64 * 1024;

enum class CaptureRecordType : uint8_t {
  kHeader = 1,
  kFrame = 2,
  kRejected = 3,
  kPhase = 4,
  kTrailer = 5,
};

struct CaptureHeader {
  uint32_t format_version = kCaptureFormatVersion;
  RoundId round{};
  uint64_t ticket = 0;
  RoundParams params;
  std::string roster_fingerprint;  // hex, keys/keys.h Roster::Fingerprint()
  int64_t opened_unix_ms = 0;      // wall clock when the round opened
  bool operator==(const CaptureHeader&) const = default;
};

// A frame the broker sent on: an envelope it routed, exactly as received and forwarded, or the
// keys batch it gave the hospital (what the hospital's view is computed from).
struct CaptureFrame {
  uint64_t t_us = 0;  // microseconds since the round opened (monotonic clock)
  std::vector<uint8_t> frame;
  bool operator==(const CaptureFrame&) const = default;
};

// A message the broker dropped during the round, with why. No payload bytes are kept.
struct CaptureRejected {
  uint64_t t_us = 0;
  std::string sender;  // authenticated name
  std::string reason;
  uint64_t size = 0;  // bytes of the dropped frame
  bool operator==(const CaptureRejected&) const = default;
};

struct CapturePhase {
  uint64_t t_us = 0;
  Phase phase = Phase::kOpen;
  uint64_t seq = 0;
  std::string reason;
  // The round's sets as published with this phase (PhaseUpdate.sets): what a replay needs to
  // check who took part and the hospital's view of the round.
  RoundSets sets;
  bool operator==(const CapturePhase&) const = default;
};

struct CaptureTrailer {
  uint64_t t_us = 0;
  bool done = false;      // true: the round completed; false: aborted
  std::string reason;     // abort reason
  uint64_t frames = 0;    // frame records written
  uint64_t rejected = 0;  // rejected records written
  bool operator==(const CaptureTrailer&) const = default;
};

using CaptureRecord =
    std::variant<CaptureHeader, CaptureFrame, CaptureRejected, CapturePhase, CaptureTrailer>;

// Appends records to one capture file. Move-only; closes (without fsync) on destruction.
class CaptureWriter {
 public:
  // Creates `path` (mode 0640, fails if it exists) and writes the magic and header. Nothing is
  // durable until Finish().
  static Result<CaptureWriter> Create(const std::filesystem::path& path,
                                      const CaptureHeader& header);
  CaptureWriter(CaptureWriter&& other) noexcept;
  CaptureWriter& operator=(CaptureWriter&& other) noexcept;
  CaptureWriter(const CaptureWriter&) = delete;
  CaptureWriter& operator=(const CaptureWriter&) = delete;
  ~CaptureWriter();

  Status Append(const CaptureRecord& record);
  // Append(CaptureFrame{t_us, frame}) without copying the frame: the broker's hot path.
  Status AppendFrame(uint64_t t_us, std::span<const uint8_t> frame);
  // Records are buffered (up to kCaptureBufferBytes) and written in one system call; Flush
  // writes what is buffered (the broker does at every phase change).
  Status Flush();
  // Appends the trailer, flushes, fsyncs the file and then its folder, closes.
  Status Finish(const CaptureTrailer& trailer);
  // Frame and rejected records appended so far: what a trailer counts.
  uint64_t frames() const { return frames_; }
  uint64_t rejected() const { return rejected_; }

 private:
  CaptureWriter(int fd, std::filesystem::path path, size_t participants)
      : fd_(fd), path_(std::move(path)), participants_(participants) {}
  std::string what() const { return "capture " + path_.string(); }
  Status Write(std::vector<std::span<const uint8_t>> pieces, bool flush = false);
  void Close();  // flushes what is buffered, closes both descriptors, no fsync
  int fd_ = -1;
  std::filesystem::path path_;
  size_t participants_ = 0;       // the header's: what phase records' sets are checked against
  std::vector<uint8_t> pending_;  // whole records not yet written
  uint64_t frames_ = 0, rejected_ = 0;
};

// What a reader made of a capture: every record it could read, and where it stopped.
struct CaptureContents {
  std::vector<CaptureRecord> records;
  std::vector<uint64_t> offsets;  // file offset of each record
  // Empty when the whole file was read cleanly. Otherwise why reading stopped, at
  // error_offset (e.g. "truncated record", "CRC mismatch", "unknown record type 9").
  std::string error;
  uint64_t error_offset = 0;
  // With CaptureReadOptions::past_crc_mismatch: the offsets of records read although their CRC
  // did not match (a damaged record that still parses).
  std::vector<uint64_t> damaged;
  bool ok() const { return error.empty(); }
};

struct CaptureReadOptions {
  // Read a record whose CRC does not match when it still parses, noting it in `damaged`, so an
  // audit can name the damaged frame instead of stopping before it.
  bool past_crc_mismatch = false;
};

// Never throws and never stops at the first bad byte without saying where.
CaptureContents ReadCapture(std::span<const uint8_t> bytes, CaptureReadOptions options = {});
Result<CaptureContents> ReadCaptureFile(const std::filesystem::path& path);

std::vector<uint8_t> EncodeRecord(const CaptureRecord& record);  // one framed record
// The CRC-32 a record ends with, over its type byte and body (IEEE, as zlib's crc32()).
uint32_t CaptureCrc32(std::span<const uint8_t> bytes);

}  // namespace tally
