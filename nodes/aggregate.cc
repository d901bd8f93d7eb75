#include "nodes/aggregate.h"

#include <sodium.h>

#include <algorithm>
#include <bit>

namespace tally {
namespace {

// Mask streams are generated and applied this many elements at a time, for every peer in turn:
// the chunk of values stays in cache while each peer's stream is added.
constexpr size_t kMaskChunk = 2048;  // 16 KiB of u64, a multiple of the 64-byte block

}  // namespace

void ApplyMasks(const RoundMasks& masks, std::span<uint64_t> values) {
  static_assert(kRoundMaskKeyBytes == crypto_stream_chacha20_ietf_KEYBYTES);
  static_assert(std::endian::native == std::endian::little,
                "mask elements are little-endian u64 from the stream");
  static_assert(kMaskChunk * 8 % 64 == 0, "chunks must start on a ChaCha20 block");
  const uint8_t zero_nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  std::vector<uint64_t> stream(std::min(kMaskChunk, values.size()));
  for (size_t start = 0; start < values.size(); start += kMaskChunk) {
    const size_t count = std::min(kMaskChunk, values.size() - start);
    const auto block = static_cast<uint32_t>(start * 8 / 64);
    for (size_t p = 0; p < masks.add.size(); ++p) {
      std::fill_n(stream.begin(), count, 0);
      crypto_stream_chacha20_ietf_xor_ic(reinterpret_cast<uint8_t*>(stream.data()),
                                         reinterpret_cast<const uint8_t*>(stream.data()), count * 8,
                                         zero_nonce, block,
                                         masks.keys.data() + p * kRoundMaskKeyBytes);
      uint64_t* v = values.data() + start;
      if (masks.add[p]) {
        for (size_t e = 0; e < count; ++e) v[e] += stream[e];
      } else {
        for (size_t e = 0; e < count; ++e) v[e] -= stream[e];
      }
    }
  }
  sodium_memzero(stream.data(), stream.size() * sizeof(uint64_t));
}

Sum::~Sum() { sodium_memzero(values_.data(), values_.size() * sizeof(uint64_t)); }

Status Sum::AddPayload(std::span<const uint8_t> payload, EnvelopeKind kind) {
  Result<std::span<const uint8_t>> blob =
      PayloadValues(payload, kind, static_cast<uint32_t>(values_.size()));
  if (!blob.ok()) return blob.status();
  const uint8_t* p = blob->data();
  for (uint64_t& s : values_) {
    s += LoadU64(p);
    p += 8;
  }
  return Status::Ok();
}

bool Sum::AtMost(uint64_t range) const {
  return std::all_of(values_.begin(), values_.end(), [&](uint64_t v) { return v <= range; });
}

}  // namespace tally
