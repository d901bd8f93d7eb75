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

// What a sealed envelope carries. Wire name: "partial" (a patient's masked input, sealed to the
// hospital). The kind is on the wire and in the seal's binding so that a later protocol can
// add kinds without a payload of one kind ever opening as another.
enum class EnvelopeKind : uint8_t { kPartial = 2 };
// A round's phase as published by the coordinator. Wire names: "open" (patients join), "sum"
// (patients send their masked inputs), "done", "abort".
enum class Phase : uint8_t { kOpen = 1, kSum = 3, kDone = 4, kAbort = 5 };

std::string_view KindName(EnvelopeKind kind);
std::string_view PhaseName(Phase phase);

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

struct RoundParams {
  std::string hospital;  // in a Request: not on the wire, the broker takes the sender's name
  uint64_t range = 0;    // no columns: each input lies in [0, range]; with columns: 0
  uint32_t length = 1;   // elements per input (per column, with columns); 1 for a scalar
  std::vector<std::string> participants;  // the patients
  std::vector<Column> columns = {};       // empty: one unnamed column, [0, range], no decimals
  Weight weight = {};                     // with columns only
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

// Patient -> broker: I take part in this round. `nonce` is fresh random for every join: it
// enters every pairwise mask the patient uses in the round, so its masks are never reused.
struct Join {
  RoundId round{};
  JoinNonce nonce{};
  bool operator==(const Join&) const = default;
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
  // Each participant's join nonce, in `params.participants` order, once every one has joined
  // (from the sum phase on); empty before.
  std::vector<JoinNonce> nonces;
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

using Message = std::variant<Request, Join, Refuse, Envelope, Ack, PhaseUpdate, Notice>;

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
// The little-endian u64 at `p`.
uint64_t LoadU64(const uint8_t* p);

// Party names: [a-z0-9_-]{1,32}.
bool ValidName(std::string_view name);
// Reasons travel as text: at most kMaxReasonLength printable ASCII characters.
bool ValidReason(std::string_view reason);

std::string RoundHex(const RoundId& round);
Result<RoundId> RoundFromHex(std::string_view hex);

}  // namespace tally
