// libFuzzer target: the strict wire decoder (schema/schema.h Decode, DecodePayload,
// DecodeUnmask).
//
// The whole input is one wire frame, decoded with the default Limits and with tight ones.
// The same input also feeds the plaintext decoders: its first 4 bytes (little-endian) are the
// expected vector length of a partial's payload, and (modulo kMaxParticipants + 1) the
// participants of an unmask; the rest is the plaintext.
//
// Invariants checked, each a finding if it fails (FUZZ_CHECK aborts, so libFuzzer keeps the
// input): a decoded message re-encodes to bytes that decode to an equal message, and encoding
// is a fixed point after one round trip; whatever tight Limits accept, the defaults accept
// too; a decoded phase update has at most max_participants names and each of its four sets
// empty or one flag per participant; a decoded batch has at most max_participants items,
// distinct indices below max_participants and items of exactly its kind's size (keys 128,
// shares 104, confirm 64); a decoded payload has exactly `length` values, re-encodes and
// re-decodes equal, and is refused for any other length; a decoded unmask holds a set of the
// participants (or none) and at most one share per participant in each list, and re-encodes
// and re-decodes equal.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "schema/protocol.h"
#include "schema/schema.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// Small enough that short inputs reach every limit check.
tally::Limits TightLimits() {
  tally::Limits l;
  l.max_message_bytes = 512;
  l.max_length = 4;
  l.max_participants = 3;
  l.max_sealed_bytes = tally::MaxSealedSize(4);
  return l;
}

// A decoded round's columns: within the limit, distinct names, decimals within the limit.
void CheckColumns(const tally::RoundParams& p) {
  FUZZ_CHECK(p.columns.size() <= tally::kMaxColumns);
  std::set<std::string> names;
  for (const tally::Column& c : p.columns) {
    FUZZ_CHECK(names.insert(c.name).second);
    FUZZ_CHECK(c.decimals <= tally::kMaxDecimalsInRound);
  }
  FUZZ_CHECK(p.weight.decimals <= tally::kMaxDecimalsInRound);
}

// A set as the decoder gives it: not fixed (empty) or one flag per participant.
void CheckSet(const tally::Members& m, size_t n) { FUZZ_CHECK(m.empty() || m.size() == n); }

void CheckBatch(const tally::Batch& b, const tally::Limits& limits) {
  FUZZ_CHECK(b.items.size() <= limits.max_participants);
  std::set<uint32_t> seen;
  for (const tally::BatchItem& item : b.items) {
    FUZZ_CHECK(item.index < limits.max_participants);
    FUZZ_CHECK(seen.insert(item.index).second);
    switch (b.kind) {
      case tally::BatchKind::kKeys:
        FUZZ_CHECK(item.data.size() == tally::kKeysItemSize);
        break;
      case tally::BatchKind::kShares:
        FUZZ_CHECK(item.data.size() == tally::kSealedShareSize);
        break;
      case tally::BatchKind::kConfirm:
        FUZZ_CHECK(item.data.size() == tally::kSignatureSize);
        break;
    }
  }
}

void CheckRoundTrip(const tally::Message& m, const tally::Limits& limits) {
  if (const auto* u = std::get_if<tally::PhaseUpdate>(&m)) {
    const size_t n = u->params.participants.size();
    FUZZ_CHECK(n <= limits.max_participants);
    for (const tally::Members* set :
         {&u->sets.joined, &u->sets.shared, &u->sets.masked, &u->sets.confirmed})
      CheckSet(*set, n);
    CheckColumns(u->params);
  }
  if (const auto* r = std::get_if<tally::Request>(&m)) CheckColumns(r->params);
  if (const auto* b = std::get_if<tally::Batch>(&m)) CheckBatch(*b, limits);
  const std::vector<uint8_t> once = tally::Encode(m);
  tally::Result<tally::Message> again = tally::Decode(once, limits);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == m);
  FUZZ_CHECK(tally::Encode(*again) == once);
}

void FuzzMessage(std::span<const uint8_t> bytes) {
  static const tally::Limits kDefault;
  static const tally::Limits kTight = TightLimits();
  tally::Result<tally::Message> loose = tally::Decode(bytes, kDefault);
  if (loose.ok()) {
    CheckRoundTrip(*loose, kDefault);
  } else {
    FUZZ_CHECK(!loose.message().empty());
  }
  tally::Result<tally::Message> tight = tally::Decode(bytes, kTight);
  if (tight.ok()) {
    CheckRoundTrip(*tight, kTight);
    FUZZ_CHECK(loose.ok() && *loose == *tight);
  } else {
    FUZZ_CHECK(!tight.message().empty());
  }
}

void FuzzUnmask(size_t participants, std::span<const uint8_t> plaintext) {
  tally::Result<tally::UnmaskShares> shares = tally::DecodeUnmask(plaintext, participants);
  if (!shares.ok()) {
    FUZZ_CHECK(!shares.message().empty());
    return;
  }
  CheckSet(shares->masked, participants);
  FUZZ_CHECK(shares->self_seeds.size() <= participants);
  FUZZ_CHECK(shares->mask_secrets.size() <= participants);
  const std::vector<uint8_t> again = tally::EncodeUnmask(*shares);
  tally::Result<tally::UnmaskShares> back = tally::DecodeUnmask(again, participants);
  FUZZ_CHECK(back.ok());
  FUZZ_CHECK(back->masked == shares->masked && back->self_seeds == shares->self_seeds &&
             back->mask_secrets == shares->mask_secrets);
  FUZZ_CHECK(tally::EncodeUnmask(*back) == again);
}

void FuzzPayload(std::span<const uint8_t> bytes) {
  if (bytes.size() < 4) return;
  const uint32_t length = uint32_t{bytes[0]} | uint32_t{bytes[1]} << 8 | uint32_t{bytes[2]} << 16 |
                          uint32_t{bytes[3]} << 24;
  const std::span<const uint8_t> payload = bytes.subspan(4);
  FuzzUnmask(length % (tally::kMaxParticipants + 1), payload);
  constexpr tally::EnvelopeKind kind = tally::EnvelopeKind::kPartial;
  tally::Result<std::vector<uint64_t>> values = tally::DecodePayload(payload, kind, length);
  if (!values.ok()) {
    FUZZ_CHECK(!values.message().empty());
    return;
  }
  FUZZ_CHECK(values->size() == length);
  const std::vector<uint8_t> again = tally::EncodePayload(kind, *values);
  tally::Result<std::vector<uint64_t>> back = tally::DecodePayload(again, kind, length);
  FUZZ_CHECK(back.ok() && *back == *values);
  FUZZ_CHECK(!tally::DecodePayload(payload, kind, length + 1).ok());
  if (length > 0) FUZZ_CHECK(!tally::DecodePayload(payload, kind, length - 1).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  FuzzMessage(bytes);
  FuzzPayload(bytes);
  return 0;
}
