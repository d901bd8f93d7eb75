// The arithmetic of a round, in one place: inputs, masks and the hospital's sum are vectors of
// u64 added modulo 2^64 (schema/PROTOCOL.md, "Masks" and "Plaintext"). The keys come from the
// round's crypto (nodes/seal.h) and the shares from Shamir (nodes/shamir.h); which masks a patient
// adds and which the hospital removes is here, and so is the
// fixed-point encoding of a patient's values for a round with columns and its decoding from the
// hospital's sum (schema/PROTOCOL.md, "Columns and values").
// Thread-compatible.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "keys/keys.h"
#include "nodes/seal.h"
#include "schema/results.h"
#include "schema/round_graph.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

inline constexpr size_t kRoundMaskKeyBytes = 32;  // a ChaCha20-IETF key

// Masks for one round: ChaCha20 keys in guarded memory, and whether each key's stream is added
// or subtracted.
struct RoundMasks {
  SecretBytes keys;       // kRoundMaskKeyBytes per mask
  std::vector<bool> add;  // per mask: its stream is added (else subtracted)
};

// values[e] += stream_p[e] or -= it, for every key p (mod 2^64), where stream_p[e] is bytes
// [8e, 8e+8) of ChaCha20-IETF(key_p, nonce 0, counter 0) as a little-endian u64. Every pairwise
// mask is added by one party of its pair and subtracted by the other, so they cancel in the sum.
void ApplyMasks(const RoundMasks& masks, std::span<uint64_t> values);

// Patient `me`'s masks for a round (schema/PROTOCOL.md, "Masks"): its self mask from the seed `b`
// (added), then one pairwise mask with each other member of U2 (`shared`), from its mask secret
// `s` and the member's spk, added if `me`'s name sorts first, else subtracted. Fails naming a
// member whose round key is of small order.
Result<RoundMasks> PatientMasks(const RoundId& round, const RoundParams& params, size_t me,
                                const Members& shared, std::span<const RoundPublicKeys> keys,
                                const SecretKey& s, const uint8_t* b);
// The same with pairwise masks only with the members of U2 among `peers` (participant indices,
// ascending: a patient's neighbours in a neighbourhood round), `keys` one per slot of `peers`.
Result<RoundMasks> PatientMasks(const RoundId& round, const RoundParams& params, size_t me,
                                std::span<const uint32_t> peers, const Members& shared,
                                std::span<const RoundPublicKeys> keys, const SecretKey& s,
                                const uint8_t* b);

// Whether an unmask from `sender` fits the hospital's sets: for its own U3, with a share per
// member of U3 and per member of U2 \ U3 among `closed`, the sender's closed neighbourhood
// (ascending; empty: every participant) (e.g. "the unmask of bob is for other survivors").
Status CheckUnmask(const RoundSets& sets, std::string_view sender, const UnmaskShares& unmask,
                   std::span<const uint32_t> closed = {});

// The masks left in the sum of the survivors' masked inputs (schema/PROTOCOL.md, "Order of a
// round", done): from the unmasks of `senders` (participant indices, at least T, each passed
// CheckUnmask), rebuilds each survivor's self-mask seed and each dropped member's mask secret
// (Shamir at x = index + 1), checks each mask secret against its spk, and returns the masks that,
// applied to the sum, remove them. Fails naming a dropped member whose secret does not match.
Result<RoundMasks> UnmaskingMasks(const RoundId& round, const RoundParams& params,
                                  const RoundSets& sets, std::span<const RoundPublicKeys> keys,
                                  std::span<const uint32_t> senders,
                                  std::span<const UnmaskShares* const> unmasks);
// The same on the round's graph ("Neighbourhoods"): each survivor's b_v from the first t senders
// in N[v], each dropped member's s_v from the first t in N(v), and the pairwise masks between each
// dropped member and its neighbours in U3. Fails also naming a secret with fewer than t shares.
Result<RoundMasks> UnmaskingMasks(const RoundId& round, const RoundParams& params,
                                  const RoundGraph& graph, const RoundSets& sets,
                                  std::span<const RoundPublicKeys> keys,
                                  std::span<const uint32_t> senders,
                                  std::span<const UnmaskShares* const> unmasks);

// A patient's private input as it was given, before any round: cells of decimal text, encoded
// for a round by EncodeInput. Wiped when dropped.
struct PatientInput {
  std::vector<std::string> names;  // a CSV header, one name per cell; empty: no header
  std::vector<std::string> cells;  // the values as written; "" is a missing cell
  std::string weight;              // the weight for a weighted round; "" if none
  bool floats = false;  // cells are floats: clipped to the bounds and rounded stochastically
  PatientInput() = default;
  PatientInput(PatientInput&&) = default;
  PatientInput& operator=(PatientInput&&) = default;
  PatientInput(const PatientInput&) = default;
  PatientInput& operator=(const PatientInput&) = default;
  ~PatientInput();
};

// The plaintext values of a patient's masked input for `params` (PayloadLength(params) of
// them), or why this input cannot take part. A round without columns takes `length` integers in
// [0, range]. A round with columns takes one cell per column, matched by name (an input without
// a header fits a one-column round, `length` cells of it); each value becomes
// w * (units - lower), where units is the value in 10^-decimals and w the weight (1 unweighted);
// then per column a count (1 if given) and, weighted, the weight (if given). Exact cells must
// have at most the column's decimals and lie in its bounds; float cells are clipped to the
// bounds and rounded to the decimals stochastically (StochasticUnits). Errors name the column
// and the reason, never the value: they are sent to every party of the round.
Result<std::vector<uint64_t>> EncodeInput(const RoundParams& params, const PatientInput& input);

// `value` in units of 10^-decimals, clipped to [lower, upper] (units), rounded to an integer
// stochastically without bias: up with probability equal to the fraction (randomness from
// libsodium), so E[result] = value * 10^decimals within [lower, upper], and the error is below
// one unit. Fails for a value that is not finite or too large for a double's 53 bits.
Result<int64_t> StochasticUnits(double value, uint32_t decimals, int64_t lower, int64_t upper);

// The per-column results of a round with columns from its aggregate: sums with the offsets
// removed, exact (sum of w * units + lower * sum of w), counts, means over the present values.
// REQUIRES: aggregate.size() == PayloadLength(params).
std::vector<ColumnResult> DecodeColumns(const RoundParams& params,
                                        std::span<const uint64_t> aggregate);

// Whether every element of the aggregate is what honest inputs can sum to: at most the range
// (no columns), or per column at most (count or weight sum) x (upper - lower) with counts at
// most the participants and weight sums at most participants x max.
bool AggregateInRange(const RoundParams& params, std::span<const uint64_t> aggregate);

// The hospital's running sum of masked inputs, `length` elements mod 2^64; wiped when dropped.
class Sum {
 public:
  explicit Sum(uint32_t length) : values_(length, 0) {}
  ~Sum();
  Sum(const Sum&) = delete;
  Sum(Sum&&) = default;
  Sum& operator=(const Sum&) = delete;

  // Adds the values of a masked input's plaintext (EncodePayload's format, checked for `kind`
  // and this sum's length) without copying them; the sum is unchanged on error.
  Status AddPayload(std::span<const uint8_t> payload, EnvelopeKind kind);
  // Adds or subtracts each mask's stream (ApplyMasks): how the hospital removes what is left.
  void Apply(const RoundMasks& masks) { ApplyMasks(masks, values_); }
  const std::vector<uint64_t>& values() const { return values_; }

 private:
  std::vector<uint64_t> values_;
};

}  // namespace tally
