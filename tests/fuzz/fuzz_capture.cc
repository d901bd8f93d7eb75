// libFuzzer target: the capture-file reader (schema/capture.h ReadCapture) on raw bytes.
//
// Invariants checked, each a finding if it fails (FUZZ_CHECK aborts, so libFuzzer keeps the
// input): the reader says where it stopped, inside the input, after every record it returned;
// records and offsets agree and offsets grow; the first record is a header and nothing follows
// a trailer; every set of a phase record is empty or one flag per participant of the header; and
// the records it read, re-encoded with EncodeRecord behind a fresh file header, read back cleanly
// and equal.
//
// Every record carries a CRC, so nearly every blind mutation would stop at the first "CRC
// mismatch". A custom mutator therefore repairs the CRCs of three mutants in four (the fourth
// keeps testing the CRC check itself), so record bodies get fuzzed too.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <variant>
#include <vector>

#include "schema/capture.h"
#include "schema/protocol.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

// Magic and format version (little-endian u32), as the writer puts them.
static_assert(tally::kCaptureFormatVersion < 256);
constexpr uint8_t kFileHeader[] = {
    'T', 'A', 'L', 'L', 'Y', 'C', 'A', 'P', static_cast<uint8_t>(tally::kCaptureFormatVersion),
    0,   0,   0};

// CRC-32 as zlib's crc32(), bit by bit: independent of the reader's table-driven one.
uint32_t Crc32(const uint8_t* p, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
  }
  return ~crc;
}

uint32_t Get32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// Rewrites each record's CRC over its type byte and body, as far as the lengths hold.
void RepairCrcs(uint8_t* data, size_t size) {
  size_t pos = sizeof kFileHeader;
  while (pos + 9 <= size) {
    const size_t body = Get32(data + pos);
    if (body > size - pos - 9) return;
    const uint32_t crc = Crc32(data + pos + 4, 1 + body);
    for (int i = 0; i < 4; ++i) data[pos + 5 + body + i] = static_cast<uint8_t>(crc >> (8 * i));
    pos += 9 + body;
  }
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  size = LLVMFuzzerMutate(data, size, max_size);
  if (seed % 4 != 0) RepairCrcs(data, size);
  return size;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const tally::CaptureContents c = tally::ReadCapture(std::span<const uint8_t>(data, size));

  FUZZ_CHECK(c.records.size() == c.offsets.size());
  for (size_t i = 0; i < c.offsets.size(); ++i) {
    FUZZ_CHECK(c.offsets[i] >= sizeof kFileHeader && c.offsets[i] < size);
    if (i > 0) FUZZ_CHECK(c.offsets[i] > c.offsets[i - 1]);
    FUZZ_CHECK(std::holds_alternative<tally::CaptureHeader>(c.records[i]) == (i == 0));
    if (std::holds_alternative<tally::CaptureTrailer>(c.records[i])) {
      FUZZ_CHECK(i + 1 == c.records.size());
    }
    if (const auto* ph = std::get_if<tally::CapturePhase>(&c.records[i])) {
      const size_t n = std::get<tally::CaptureHeader>(c.records[0]).params.participants.size();
      for (const tally::Members* set :
           {&ph->sets.joined, &ph->sets.shared, &ph->sets.masked, &ph->sets.confirmed})
        FUZZ_CHECK(set->empty() || set->size() == n);
    }
  }
  if (!c.ok()) {
    FUZZ_CHECK(c.error_offset <= size);
    if (!c.offsets.empty()) FUZZ_CHECK(c.error_offset > c.offsets.back());
  } else {
    FUZZ_CHECK(!c.records.empty());
  }

  if (c.records.empty()) return 0;
  std::vector<uint8_t> again(std::begin(kFileHeader), std::end(kFileHeader));
  for (const tally::CaptureRecord& r : c.records) {
    const std::vector<uint8_t> framed = tally::EncodeRecord(r);
    again.insert(again.end(), framed.begin(), framed.end());
  }
  const tally::CaptureContents back = tally::ReadCapture(again);
  FUZZ_CHECK(back.ok());
  FUZZ_CHECK(back.records == c.records);
  return 0;
}
