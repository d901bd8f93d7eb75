// Tally's wire schema: the msgpack messages of the round protocol and their strict decoder.
//
// Every message is one ZeroMQ frame holding one msgpack array whose first element is the
// protocol version and whose second is the message type name; the remaining elements are
// positional fields (schema/PROTOCOL.md lists them). Decoding is strict and bounded: an
// unknown version or type, a wrong field type, a missing or extra field, trailing bytes, or a
// size over the caller's Limits is a Status error with a clear reason. No exception escapes.
//
// Thread-safety: free functions on values; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "schema/protocol.h"
#include "schema/status.h"

namespace tally {

// What a sealed envelope carries, always from a patient to the hospital. Wire names: "partial"
// (a masked input), "unmask" (the patient's shares for unmasking). The kind is on the wire and
// in the seal's binding, so a payload of one kind never opens as another.
enum class EnvelopeKind : uint8_t { kPartial = 2, kUnmask = 3 };
// A round's phase as published by the coordinator (schema/PROTOCOL.md, "Order of a round").
// Wire names: "open" (patients join with their round keys), "share" (they send their shares),
// "mask" (their masked inputs), "confirm" (they confirm the survivors; only after a dropout),
// "unmask" (their unmask shares), "done", "abort".
enum class Phase : uint8_t {
  kOpen = 1,
  kDone = 4,
  kAbort = 5,
  kShare = 6,
  kMask = 7,
  kConfirm = 8,
  kUnmask = 9,
};
// What a batch carries (schema/PROTOCOL.md, "Batch"). Wire names: "keys", "shares", "confirm".
// "survivors": the hospital's signature on the survivors of a neighbourhood round.
enum class BatchKind : uint8_t { kKeys = 1, kShares = 2, kConfirm = 3, kSurvivors = 4 };

std::string_view KindName(EnvelopeKind kind);
std::string_view PhaseName(Phase phase);
std::string_view BatchKindName(BatchKind kind);
// The phase with wire name `name`, or nullopt.
std::optional<Phase> PhaseNamed(std::string_view name);

// A set of participants: one flag per participant, in `participants` order (on the wire a bin of
// ceil(n/8) bytes, participant i in bit i % 8 of byte i / 8). Empty until the set is fixed.
using Members = std::vector<bool>;
size_t CountOf(const Members& members);
// The wire form of a set: ceil(n/8) bytes, participant i in bit i % 8 of byte i / 8 (what the
// confirmations sign, schema/PROTOCOL.md "Order of a round").
std::vector<uint8_t> MembersBits(const Members& members);
// The safe minimum threshold for n participants: floor(2n/3) + 1 (schema/PROTOCOL.md, "Why it
// is private").
uint32_t SafeThreshold(size_t n);

// The sets of a round (schema/PROTOCOL.md, "Order of a round"), each empty until the phase that
// fixes it, then repeated by every later update; each within the one before.
struct RoundSets {
  Members joined;     // U1: whose join the broker accepted; from share on
  Members shared;     // U2: whose shares it accepted; from mask on
  Members masked;     // U3, the survivors: whose masked input it routed; from confirm or unmask on
  Members confirmed;  // U4: whose confirmation it accepted; from unmask on, after a confirm phase
  bool operator==(const RoundSets&) const = default;
};

// What a round is over: the hospital that receives the masked inputs, the inputs' range and
// length, and the patients. Fixed when the round opens; every party holds the broker to it until
// the round ends (operator==), and the view binds it (nodes/seal.h). A field added here is
// compared wherever rounds are compared, and must be added to the wire, the capture header and
// the view.
// A named column of a round with columns (schema/PROTOCOL.md, "Columns and values"): each value
// is a decimal with at most `decimals` digits after the point, in [lower, upper]; the bounds
// are in units of 10^-decimals (bmi in [10, 80] at 1 decimal: lower 100, upper 800).
struct Column {
  std::string name;       // [a-z0-9_-]{1,32}, distinct within the round
  int64_t lower = 0;      // units of 10^-decimals
  int64_t upper = 0;      // units of 10^-decimals; lower <= upper
  uint32_t decimals = 0;  // <= kMaxDecimals
  bool operator==(const Column&) const = default;
};

// A weighted round: each patient gives a weight w in [0, max] (units of 10^-decimals) and the
// round sums w * value and w per column, for weighted means. max == 0: not weighted.
struct Weight {
  uint64_t max = 0;
  uint32_t decimals = 0;
  bool operator==(const Weight&) const = default;
};

// A neighbourhood round's graph (schema/PROTOCOL.md, "Neighbourhoods"; wire name "graph"): the
// declared rates of corrupt and dropped patients, the degree k and the threshold t within a
// neighbourhood that the hospital chose for them (schema/neighbourhood.h), the seed the graph is
// drawn from, and the hospital's signature on all of it (GraphStatement, nodes/seal.h).
struct Neighbourhood {
  uint32_t corrupt_ppm = 0;  // parts per million, < 10^6
  uint32_t dropout_ppm = 0;  // parts per million, < 10^6
  uint32_t degree = 0;       // k: even, 2 <= k <= n - 2
  uint32_t threshold = 0;    // t: 2 <= t <= k
  std::array<uint8_t, 32> seed{};
  Signature signature{};
  bool operator==(const Neighbourhood&) const = default;
};

struct RoundParams {
  std::string hospital;  // in a Request: not on the wire, the broker takes the sender's name
  uint64_t range = 0;    // no columns: each input lies in [0, range]; with columns: 0
  uint32_t length = 1;   // elements per input (per column, with columns); 1 for a scalar
  std::vector<std::string> participants;  // the patients
  std::vector<Column> columns = {};       // empty: one unnamed column, [0, range], no decimals
  Weight weight = {};                     // with columns only
  uint32_t threshold = 0;                 // T: survivors the round needs, in [SafeThreshold(n), n]
  std::optional<Neighbourhood> graph = {};  // a neighbourhood round's; nullopt: a full round
  bool operator==(const RoundParams&) const = default;
};

// Elements of a masked input (the payload) for a round: `length` without columns; with C
// columns, C x length values then C counts, then C weight sums if weighted.
uint64_t PayloadLength(const RoundParams& params);

// Whether `params` can be run (what the broker refuses a request for and a node checks before
// any value moves): at least 2 participants; with columns, range 0, lower <= upper, and the
// payload within kMaxVectorLength; and every sum fits the ring of u64 mod 2^64 in the worst
// case: N x range without columns; per column N x (upper - lower) [x weight max], and N x weight
// max. Errors say which column and by how much, e.g. "column bp: 1000 patients x
// 160.0000000000000000 does not fit the ring: the worst-case sum is 86.7 times 2^64-1".
Status CheckRoundParams(const RoundParams& params);

// The most colluding patients a round of `n` patients with threshold `t` hides an honest input
// from, with the broker and the hospital: min(2t - n - 1, t - 2), or 0 (schema/PROTOCOL.md, "Why
// it is private").
uint32_t CollusionTolerance(size_t n, uint32_t t);

// Hospital -> broker: please run a round. `params.participants` empty means every patient in
// the broker's roster. `ticket` is the hospital's own number for the request (never 0), echoed
// in the phase updates and in a notice refusing the request.
struct Request {
  uint64_t ticket = 0;
  RoundParams params;
  // Each phase's deadline the hospital asks for, in ms; 0 takes the broker's. The broker never
  // grants more than its own.
  uint32_t deadline_ms = 0;
  bool operator==(const Request&) const = default;
};

// Patient -> broker: I take part in this round, with these fresh round keys: `cpk` to seal shares
// to me, `spk` for my pairwise masks, signed with my certificate's signing key
// (schema/PROTOCOL.md, "Keys of a round").
struct Join {
  RoundId round{};
  RoundKey cpk{};
  RoundKey spk{};
  Signature signature{};
  bool operator==(const Join&) const = default;
};

// Patient -> broker, or broker -> node: items of one kind of a round's phase. From the broker,
// each item's `index` is the participant it is from; in a patient's shares, the participant it
// is for; in a patient's confirmation, the patient itself.
//   keys     (broker -> node) cpk || spk || signature, kKeysItemSize bytes
//   shares   a sealed share, kSealedShareSize bytes
//   confirm  a signature on the survivors, kSignatureSize bytes
struct BatchItem {
  uint32_t index = 0;  // a participant's position in `participants`
  std::vector<uint8_t> data;
  bool operator==(const BatchItem&) const = default;
};
struct Batch {
  RoundId round{};
  BatchKind kind = BatchKind::kKeys;
  std::vector<BatchItem> items;
  bool operator==(const Batch&) const = default;
};

// Patient -> broker: I cannot take part (e.g. my input does not fit the round). The reason
// never contains the input.
struct Refuse {
  RoundId round{};
  std::string reason;
  bool operator==(const Refuse&) const = default;
};

// Node -> broker -> node: a sealed payload with its plaintext routing header. The broker
// checks `from` against the sender's authenticated identity and forwards the same bytes.
struct Envelope {
  EnvelopeKind kind = EnvelopeKind::kPartial;
  RoundId round{};
  std::string from;
  std::string to;
  std::vector<uint8_t> sealed;  // nonce || ciphertext || tag (nodes/seal.h)
  bool operator==(const Envelope&) const = default;
};

// Hospital -> broker: the round's result is on disk. Carries no value.
struct Ack {
  RoundId round{};
  bool operator==(const Ack&) const = default;
};

// Broker -> everyone (phase channel, and nowhere else): the whole current state of one round.
// Idempotent: receiving the same update twice changes nothing; `seq` grows with every change
// the broker publishes, across rounds.
struct PhaseUpdate {
  RoundId round{};
  Phase phase = Phase::kOpen;
  uint64_t seq = 0;
  uint64_t ticket = 0;  // the hospital's Request.ticket
  RoundParams params;   // params.hospital requested the round and receives the partials
  RoundSets sets;
  uint32_t deadline_ms = 0;  // each phase's deadline, counted from the phase's start
  std::string reason;        // why the round aborted; empty otherwise
  bool operator==(const PhaseUpdate&) const = default;
};

// Broker -> one node over the router: your message was not accepted. `ticket` names the
// refused request; 0 means the broker refuses this connection altogether (another connection
// holds the party's identity), and the node stops.
struct Notice {
  uint64_t ticket = 0;
  std::string reason;
  bool operator==(const Notice&) const = default;
};

// Whether the sets of `u` are what its phase has (schema/PROTOCOL.md, "Order of a round"): each
// set fixed by the phase or an earlier one holds one flag per participant, is within the one
// before it and has at least T members; the others are empty; a confirm phase only when U3 is
// smaller than U2, and U4 fixed at unmask exactly then. An abort may come after any phase. Errors
// say which set, e.g. "the survivors are not within those who shared".
Status CheckSets(const PhaseUpdate& u);
// Whether a round with survivors `sets.masked` has a confirm phase before its unmask phase
// (schema/PROTOCOL.md, "Order of a round"): a neighbourhood round always (its hospital signs the
// survivors), a full round when a patient dropped out after sharing (U3 smaller than U2).
bool HasConfirmPhase(const RoundParams& params, const RoundSets& sets);
// The members that unmask: U4 after a confirm phase, else U3.
const Members& Unmaskers(const RoundSets& sets);

using Message = std::variant<Request, Join, Refuse, Envelope, Ack, PhaseUpdate, Notice, Batch>;

struct Limits {
  size_t max_message_bytes = MaxMessageSize(kMaxVectorLength);
  uint32_t max_length = kMaxVectorLength;  // Request/PhaseUpdate.length
  size_t max_participants = kMaxParticipants;
  size_t max_sealed_bytes = MaxSealedSize(kMaxVectorLength);
};

std::vector<uint8_t> Encode(const Message& message);
Result<Message> Decode(std::span<const uint8_t> bytes, const Limits& limits = {});
// The ticket of a message that failed to Decode but is a request as far as [version, "request",
// ticket uint, ...] goes, so that its refusal can still be answered with a notice. nullopt
// for anything else.
std::optional<uint64_t> RequestTicket(std::span<const uint8_t> bytes, const Limits& limits = {});

// The plaintext inside a sealed envelope: [version, kind name, values as a bin of
// little-endian u64]. Decoding checks the version, the kind and the exact length.
std::vector<uint8_t> EncodePayload(EnvelopeKind kind, std::span<const uint64_t> values);
Result<std::vector<uint64_t>> DecodePayload(std::span<const uint8_t> bytes, EnvelopeKind kind,
                                            uint32_t length);
// The checked values blob of a payload, exactly 8 * length bytes of little-endian u64s (what
// DecodePayload copies out), as a view into `bytes`: for adding it up without a copy.
Result<std::span<const uint8_t>> PayloadValues(std::span<const uint8_t> bytes, EnvelopeKind kind,
                                               uint32_t length);
// The plaintext of an unmask envelope (schema/PROTOCOL.md, "Plaintext"): the survivors U3 the
// patient unmasks for, its share of each survivor's self-mask seed b_v, and its share of each
// dropped member's mask secret s_v (v in U2 \ U3), both in participant order. Shares are secret
// until the round ends: the destructor wipes them.
struct UnmaskShares {
  Members masked;                   // U3 as the patient saw it
  std::vector<Share> self_seeds;    // one per member of U3
  std::vector<Share> mask_secrets;  // one per member of U2 \ U3
  UnmaskShares() = default;
  UnmaskShares(UnmaskShares&&) = default;
  UnmaskShares& operator=(UnmaskShares&&) = default;
  ~UnmaskShares();
};
// [version, "unmask", masked bin, self_seeds bin (32 bytes each), mask_secrets bin (32 each)].
std::vector<uint8_t> EncodeUnmask(const UnmaskShares& shares);
// Checks the version, the kind, that `masked` is a set of `participants` and that each bin holds
// whole shares, at most one per participant; what the shares are for is the hospital's check.
Result<UnmaskShares> DecodeUnmask(std::span<const uint8_t> bytes, size_t participants);

// The little-endian u64 at `p`.
uint64_t LoadU64(const uint8_t* p);

// Party names: [a-z0-9_-]{1,32}.
bool ValidName(std::string_view name);
// Reasons travel as text: at most kMaxReasonLength printable ASCII characters.
bool ValidReason(std::string_view reason);

std::string RoundHex(const RoundId& round);
Result<RoundId> RoundFromHex(std::string_view hex);

}  // namespace tally
