// libFuzzer target: the capture-file reader (schema/capture.h ReadCapture) on raw bytes.
//
// Invariants checked, each a finding if it fails (FUZZ_CHECK aborts, so libFuzzer keeps the
// input): the reader says where it stopped, inside the input, after every record it returned;
// records and offsets agree and offsets grow; the first record is a header and nothing follows
// a trailer; and the records it read, re-encoded with EncodeRecord behind a fresh file header,
// read back cleanly and equal.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <variant>
#include <vector>

#include "schema/capture.h"

#define FUZZ_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

namespace {

constexpr uint8_t kFileHeader[] = {'T', 'A', 'L', 'L', 'Y', 'C', 'A', 'P', 1, 0, 0, 0};

}  // namespace

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
