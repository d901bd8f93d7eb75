// Wire encoding and strict decoding of Tally messages (schema/PROTOCOL.md, "Wire messages").

#include "schema/schema.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <msgpack.hpp>
#include <set>
#include <type_traits>

#include "schema/decimal.h"
#include "schema/msgpack_strict.h"
#include "schema/text.h"

namespace tally {
namespace {

using strict::PackBin;
using strict::Packer;
using strict::PackMembers;
using strict::PackStr;

// Wire type names, second element of every message.
constexpr std::string_view kRequest = "request";
constexpr std::string_view kJoin = "join";
constexpr std::string_view kRefuse = "refuse";
constexpr std::string_view kEnvelope = "envelope";
constexpr std::string_view kAck = "ack";
constexpr std::string_view kPhase = "phase";
constexpr std::string_view kNotice = "notice";
constexpr std::string_view kBatch = "batch";

// Strings in messages are type names, kinds, phases, party names and reasons: all short.
constexpr size_t kMaxWireString = std::max(kMaxReasonLength, kMaxNameLength) + 56;
// Every field of the longest message (PhaseUpdate) fits in this many elements.
constexpr size_t kMaxFields = 20;

void PackHead(Packer& p, uint32_t fields, std::string_view type) {
  p.pack_array(fields);
  p.pack_uint32(kProtocolVersion);
  PackStr(p, type);
}

void PackFields(Packer& p, const Request& m) {
  PackHead(p, 11, kRequest);
  p.pack_uint64(m.ticket);
  strict::PackParams(p, m.params, /*hospital=*/false);
  p.pack_uint32(m.deadline_ms);
}
void PackFields(Packer& p, const Join& m) {
  PackHead(p, 6, kJoin);
  PackBin(p, m.round);
  PackBin(p, m.cpk);
  PackBin(p, m.spk);
  PackBin(p, m.signature);
}
void PackFields(Packer& p, const Refuse& m) {
  PackHead(p, 4, kRefuse);
  PackBin(p, m.round);
  PackStr(p, m.reason);
}
void PackFields(Packer& p, const Envelope& m) {
  PackHead(p, 7, kEnvelope);
  PackStr(p, KindName(m.kind));
  PackBin(p, m.round);
  PackStr(p, m.from);
  PackStr(p, m.to);
  PackBin(p, m.sealed);
}
void PackFields(Packer& p, const Ack& m) {
  PackHead(p, 3, kAck);
  PackBin(p, m.round);
}
void PackFields(Packer& p, const PhaseUpdate& m) {
  PackHead(p, 20, kPhase);
  PackBin(p, m.round);
  PackStr(p, PhaseName(m.phase));
  p.pack_uint64(m.seq);
  p.pack_uint64(m.ticket);
  strict::PackParams(p, m.params, /*hospital=*/true);
  strict::PackSets(p, m.sets);
  p.pack_uint32(m.deadline_ms);
  PackStr(p, m.reason);
}
void PackFields(Packer& p, const Batch& m) {
  PackHead(p, 5, kBatch);
  PackBin(p, m.round);
  PackStr(p, BatchKindName(m.kind));
  p.pack_array(static_cast<uint32_t>(m.items.size()));
  for (const BatchItem& item : m.items) {
    p.pack_array(2);
    p.pack_uint32(item.index);
    PackBin(p, item.data);
  }
}
void PackFields(Packer& p, const Notice& m) {
  PackHead(p, 4, kNotice);
  p.pack_uint64(m.ticket);
  PackStr(p, m.reason);
}

// Checks [version, type, ...] and the exact field count. Returns the type name.
Result<std::string_view> CheckHead(std::span<const msgpack::object> f) {
  if (f.size() < 2)
    return Status::Error("message has " + std::to_string(f.size()) +
                         " fields, needs at least version and type");
  if (f[0].type != msgpack::type::POSITIVE_INTEGER) {
    return Status::Error("protocol version must be uint, got " +
                         std::string(strict::TypeName(f[0].type)));
  }
  if (f[0].via.u64 != kProtocolVersion) {
    return Status::Error("unsupported protocol version " + std::to_string(f[0].via.u64));
  }
  if (f[1].type != msgpack::type::STR) {
    return Status::Error("message type must be str, got " +
                         std::string(strict::TypeName(f[1].type)));
  }
  return std::string_view(f[1].via.str.ptr, f[1].via.str.size);
}

Status CheckFieldCount(std::string_view type, size_t want, size_t got) {
  if (want == got) return Status::Ok();
  return Status::Error(std::string(type) + ": expected " + std::to_string(want) + " fields, got " +
                       std::to_string(got));
}

// Echo a type name only if it is short printable text; otherwise just say it is unknown.
std::string UnknownType(std::string_view type) {
  const bool printable = type.size() <= kMaxNameLength &&
                         std::all_of(type.begin(), type.end(),
                                     [](char c) { return c >= 0x20 && c <= 0x7e && c != '"'; });
  if (!printable)
    return "unknown message type (unprintable, " + std::to_string(type.size()) + " bytes)";
  return "unknown message type \"" + std::string(type) + "\"";
}

Result<Message> DecodeRequest(strict::FieldReader& r, const Limits& limits) {
  Request m;
  TALLY_RETURN_IF_ERROR(r.Uint("ticket", &m.ticket));
  TALLY_RETURN_IF_ERROR(
      strict::ReadParams(r, limits.max_length, limits.max_participants, false, &m.params));
  TALLY_RETURN_IF_ERROR(r.U32("deadline_ms", &m.deadline_ms));
  return Message(std::move(m));
}

Result<Message> DecodeEnvelope(strict::FieldReader& r, const Limits& limits) {
  Envelope m;
  std::string_view kind;
  TALLY_RETURN_IF_ERROR(r.StrView("kind", &kind));
  const std::optional<EnvelopeKind> k = strict::KindFromName(kind);
  if (!k) return r.Error("kind must be \"partial\" or \"unmask\"");
  m.kind = *k;
  TALLY_RETURN_IF_ERROR(r.Round("round", &m.round));
  TALLY_RETURN_IF_ERROR(r.Name("from", &m.from));
  TALLY_RETURN_IF_ERROR(r.Name("to", &m.to));
  TALLY_RETURN_IF_ERROR(r.Bin("sealed", kSealOverhead, limits.max_sealed_bytes, &m.sealed));
  return Message(std::move(m));
}

Result<Message> DecodePhase(strict::FieldReader& r, const Limits& limits) {
  PhaseUpdate m;
  TALLY_RETURN_IF_ERROR(r.Round("round", &m.round));
  std::string_view phase;
  TALLY_RETURN_IF_ERROR(r.StrView("phase", &phase));
  const std::optional<Phase> p = PhaseNamed(phase);
  if (!p) return r.Error("unknown phase");
  m.phase = *p;
  TALLY_RETURN_IF_ERROR(r.Uint("seq", &m.seq));
  TALLY_RETURN_IF_ERROR(r.Uint("ticket", &m.ticket));
  TALLY_RETURN_IF_ERROR(
      strict::ReadParams(r, limits.max_length, limits.max_participants, true, &m.params));
  TALLY_RETURN_IF_ERROR(strict::ReadSets(r, m.params.participants.size(), &m.sets));
  TALLY_RETURN_IF_ERROR(r.U32("deadline_ms", &m.deadline_ms));
  TALLY_RETURN_IF_ERROR(r.Reason("reason", &m.reason));
  return Message(std::move(m));
}

// The size an item of a batch kind has.
size_t ItemSize(BatchKind kind) {
  switch (kind) {
    case BatchKind::kKeys:
      return kKeysItemSize;
    case BatchKind::kShares:
      return kSealedShareSize;
    case BatchKind::kConfirm:
    case BatchKind::kSurvivors:
      return kSignatureSize;
  }
  return 0;
}

Result<Message> DecodeBatch(strict::FieldReader& r, const Limits& limits) {
  Batch m;
  TALLY_RETURN_IF_ERROR(r.Round("round", &m.round));
  std::string_view kind;
  TALLY_RETURN_IF_ERROR(r.StrView("kind", &kind));
  const std::optional<BatchKind> k = strict::BatchKindFromName(kind);
  if (!k) return r.Error("kind must be \"keys\", \"shares\", \"confirm\" or \"survivors\"");
  m.kind = *k;
  std::span<const msgpack::object> items;
  TALLY_RETURN_IF_ERROR(r.Array("items", limits.max_participants, &items));
  std::set<uint32_t> seen;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].type != msgpack::type::ARRAY || items[i].via.array.size != 2)
      return r.Error("item " + std::to_string(i) + " must be an array of 2");
    strict::FieldReader item(r.context() + ": item " + std::to_string(i),
                             {items[i].via.array.ptr, items[i].via.array.size}, 0);
    BatchItem& out = m.items.emplace_back();
    TALLY_RETURN_IF_ERROR(item.U32("index", &out.index));
    if (out.index >= limits.max_participants)
      return item.Error("index " + std::to_string(out.index) + " beyond the participants");
    if (!seen.insert(out.index).second)
      return r.Error("index " + std::to_string(out.index) + " twice");
    std::span<const uint8_t> data;
    TALLY_RETURN_IF_ERROR(item.BinView("data", &data));
    if (data.size() != ItemSize(m.kind))
      return item.Error("data of " + std::to_string(data.size()) + " bytes, a " +
                        std::string(kind) + " item has " + std::to_string(ItemSize(m.kind)));
    out.data.assign(data.begin(), data.end());
  }
  return Message(std::move(m));
}

// Values travel as little-endian u64s: a single memcpy on little-endian hosts.
void StoreLittleEndian(std::span<const uint64_t> values, uint8_t* out) {
  if constexpr (std::endian::native == std::endian::little) {
    if (!values.empty()) std::memcpy(out, values.data(), values.size() * 8);
  } else {
    for (uint64_t v : values) {
      for (int i = 0; i < 8; ++i) *out++ = static_cast<uint8_t>(v >> (8 * i));
    }
  }
}

void LoadLittleEndian(std::span<const uint8_t> bytes, std::vector<uint64_t>* values) {
  if constexpr (std::endian::native == std::endian::little) {
    if (!bytes.empty()) std::memcpy(values->data(), bytes.data(), bytes.size());
  } else {
    for (size_t i = 0; i < values->size(); ++i) (*values)[i] = LoadU64(&bytes[i * 8]);
  }
}

}  // namespace

uint64_t LoadU64(const uint8_t* p) {
  uint64_t v = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, 8);
  } else {
    for (int b = 7; b >= 0; --b) v = (v << 8) | p[b];
  }
  return v;
}

std::string_view KindName(EnvelopeKind kind) {
  switch (kind) {
    case EnvelopeKind::kPartial:
      return "partial";
    case EnvelopeKind::kUnmask:
      return "unmask";
  }
  return "unknown";
}

std::string_view BatchKindName(BatchKind kind) {
  switch (kind) {
    case BatchKind::kKeys:
      return "keys";
    case BatchKind::kShares:
      return "shares";
    case BatchKind::kConfirm:
      return "confirm";
    case BatchKind::kSurvivors:
      return "survivors";
  }
  return "unknown";
}

size_t CountOf(const Members& members) {
  return static_cast<size_t>(std::count(members.begin(), members.end(), true));
}

std::vector<uint8_t> MembersBits(const Members& m) {
  std::vector<uint8_t> bits((m.size() + 7) / 8, 0);
  for (size_t i = 0; i < m.size(); ++i)
    if (m[i]) bits[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
  return bits;
}

uint32_t SafeThreshold(size_t n) { return static_cast<uint32_t>(2 * n / 3 + 1); }

uint32_t CollusionTolerance(size_t n, uint32_t t) {
  const int64_t by_split = 2 * int64_t{t} - static_cast<int64_t>(n) - 1;
  const int64_t by_survivors = int64_t{t} - 2;
  return static_cast<uint32_t>(std::max<int64_t>(0, std::min(by_split, by_survivors)));
}

bool HasConfirmPhase(const RoundParams& params, const RoundSets& sets) {
  return params.graph.has_value() || sets.masked != sets.shared;
}

const Members& Unmaskers(const RoundSets& sets) {
  return sets.confirmed.empty() ? sets.masked : sets.confirmed;
}

Status CheckSets(const PhaseUpdate& u) {
  const size_t n = u.params.participants.size();
  const uint32_t t = u.params.threshold;
  struct Set {
    const Members* members;
    const char* name;
    const char* within;  // the set before it
  };
  const Set sets[] = {{&u.sets.joined, "those who joined", "the participants"},
                      {&u.sets.shared, "those who shared", "those who joined"},
                      {&u.sets.masked, "the survivors", "those who shared"},
                      {&u.sets.confirmed, "those who confirmed", "the survivors"}};
  // How many sets each phase has fixed (an abort: any number, as far as they go).
  size_t fixed = 0;
  switch (u.phase) {
    case Phase::kOpen:
      fixed = 0;
      break;
    case Phase::kShare:
      fixed = 1;
      break;
    case Phase::kMask:
      fixed = 2;
      break;
    case Phase::kConfirm:
      fixed = 3;
      break;
    case Phase::kUnmask:
    case Phase::kDone:
    case Phase::kAbort:
      fixed = HasConfirmPhase(u.params, u.sets) ? 4 : 3;
      break;
  }
  const Members* before = nullptr;
  for (size_t k = 0; k < 4; ++k) {
    const Set& set = sets[k];
    const bool expected = k < fixed;
    if (set.members->empty()) {
      if (expected && u.phase != Phase::kAbort)
        return Status::Error(std::string(PhaseName(u.phase)) + " has no set of " + set.name);
      if (u.phase == Phase::kAbort) fixed = std::min(fixed, k);
      continue;
    }
    if (!expected)
      return Status::Error(std::string(PhaseName(u.phase)) + " has a set of " + set.name +
                           " too early");
    if (set.members->size() != n)
      return Status::Error(std::string("the set of ") + set.name + " is not one per participant");
    for (size_t i = 0; before != nullptr && i < n; ++i)
      if ((*set.members)[i] && !(*before)[i])
        return Status::Error(std::string(set.name) + " are not within " + set.within);
    if (CountOf(*set.members) < t)
      return Status::Error(std::string(set.name) + " are " + std::to_string(CountOf(*set.members)) +
                           ", fewer than the threshold " + std::to_string(t));
    before = set.members;
  }
  if (u.phase == Phase::kConfirm && !HasConfirmPhase(u.params, u.sets))
    return Status::Error("a confirm phase although nobody dropped after sharing");
  if (u.params.graph && !u.sets.confirmed.empty() && u.sets.confirmed != u.sets.masked)
    return Status::Error("a neighbourhood round's unmaskers are not its survivors");
  return Status::Ok();
}

std::string_view PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kOpen:
      return "open";
    case Phase::kShare:
      return "share";
    case Phase::kMask:
      return "mask";
    case Phase::kConfirm:
      return "confirm";
    case Phase::kUnmask:
      return "unmask";
    case Phase::kDone:
      return "done";
    case Phase::kAbort:
      return "abort";
  }
  return "unknown";
}

std::optional<Phase> PhaseNamed(std::string_view name) {
  for (Phase p : {Phase::kOpen, Phase::kShare, Phase::kMask, Phase::kConfirm, Phase::kUnmask,
                  Phase::kDone, Phase::kAbort}) {
    if (PhaseName(p) == name) return p;
  }
  return std::nullopt;
}

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool ValidReason(std::string_view reason) {
  if (reason.size() > kMaxReasonLength) return false;
  return std::all_of(reason.begin(), reason.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

std::string RoundHex(const RoundId& round) { return Hex(round); }

uint64_t PayloadLength(const RoundParams& p) {
  if (p.columns.empty()) return p.length;
  const uint64_t c = p.columns.size();
  return c * p.length + c * (p.weight.max > 0 ? 2 : 1);
}

namespace {
// T in [SafeThreshold(n), n] (schema/PROTOCOL.md, "Why it is private"); a full round of at most
// kMaxFullRound patients, or a graph of an even degree k in [2, n - 2] and a threshold t in [2, k]
// ("Neighbourhoods"; whether k and t meet the bounds for the rates is CheckNeighbourhood's).
Status CheckThreshold(const RoundParams& p) {
  const size_t n = p.participants.size();
  if (!p.graph && n > kMaxFullRound)
    return Status::Error("a full round has at most " + std::to_string(kMaxFullRound) +
                         " patients, not " + std::to_string(n) +
                         ": a larger one needs a graph (neighbourhoods)");
  if (p.graph) {
    const Neighbourhood& g = *p.graph;
    if (g.corrupt_ppm >= 1000000 || g.dropout_ppm >= 1000000)
      return Status::Error("the graph's rates must be below 1,000,000 parts per million");
    if (g.degree % 2 != 0 || g.degree < 2 || uint64_t{g.degree} + 2 > n)
      return Status::Error("the graph's degree " + std::to_string(g.degree) +
                           " must be even, at least 2 and at most " +
                           std::to_string(n < 2 ? 0 : n - 2) + " for " + std::to_string(n) +
                           " patients");
    if (g.threshold < 2 || g.threshold > g.degree)
      return Status::Error("the graph's threshold " + std::to_string(g.threshold) +
                           " must be between 2 and its degree " + std::to_string(g.degree));
    // What every party holds and the broker routes grows with n x k: no more than a full round.
    constexpr uint64_t kMaxLinks = uint64_t{kMaxFullRound} * (kMaxFullRound - 1);
    if (uint64_t{n} * g.degree > kMaxLinks)
      return Status::Error("a graph of degree " + std::to_string(g.degree) + " over " +
                           std::to_string(n) + " patients has more links than a full round of " +
                           std::to_string(kMaxFullRound));
  }
  if (p.threshold < SafeThreshold(n))
    return Status::Error("threshold " + std::to_string(p.threshold) +
                         " is below the safe minimum " + std::to_string(SafeThreshold(n)) +
                         " for " + std::to_string(n) + " patients");
  if (p.threshold > n)
    return Status::Error("threshold " + std::to_string(p.threshold) + " is above the " +
                         std::to_string(n) + " patients");
  return Status::Ok();
}
}  // namespace

Status CheckRoundParams(const RoundParams& p) {
  const uint64_t n = p.participants.size();
  if (n < 2)
    return Status::Error("a round needs at least 2 patients (the sum of one is that input)");
  constexpr uint64_t kRing = UINT64_MAX;  // every sum must stay below 2^64
  if (p.weight.max == 0 && p.weight.decimals != 0)
    return Status::Error("weight decimals without a weight (max 0)");
  if (p.columns.empty()) {
    if (p.weight.max != 0) return Status::Error("a weighted round needs columns");
    if (p.range > kRing / n)
      return Status::Error("range too large: the sum of " + std::to_string(n) +
                           " inputs could exceed 2^64-1");
    return CheckThreshold(p);
  }
  if (p.range != 0)
    return Status::Error("a round with columns has no range (each column has its bounds)");
  if (PayloadLength(p) > kMaxVectorLength)
    return Status::Error(
        std::to_string(p.columns.size()) + " columns of " + std::to_string(p.length) +
        " elements make " + std::to_string(PayloadLength(p)) +
        " payload elements, over the limit of " + std::to_string(kMaxVectorLength));
  const uint64_t per_patient = kRing / n;
  const uint64_t weight = p.weight.max > 0 ? p.weight.max : 1;
  // "column bp: 1000 patients x 160.00 does not fit the ring: ..." with how far over it is.
  auto too_big = [&](const std::string& what, const std::string& amount, long double worst) {
    const long double ratio = worst / static_cast<long double>(kRing);
    char times[48] = "exceeds 2^64-1";
    if (ratio >= 1.01L) std::snprintf(times, sizeof times, "is %.3Lg times 2^64-1", ratio);
    return Status::Error(what + ": " + std::to_string(n) + " patients x " + amount +
                         " does not fit the ring: the worst-case sum " + times);
  };
  for (const Column& c : p.columns) {
    const std::string what = "column " + c.name;
    if (c.lower > c.upper)
      return Status::Error(what + ": lower bound " + FormatUnits(c.lower, c.decimals) +
                           " is above upper bound " + FormatUnits(c.upper, c.decimals));
    const UInt128 width = static_cast<UInt128>(static_cast<Int128>(c.upper) - c.lower);
    // n * width * weight <= 2^64-1, in integers: width <= floor(floor((2^64-1) / n) / weight).
    if (width > per_patient / weight) {
      std::string amount = FormatUnits(static_cast<Int128>(width), c.decimals);
      if (p.weight.max > 0) amount += " x weight " + FormatUnits(p.weight.max, p.weight.decimals);
      return too_big(what, amount,
                     static_cast<long double>(n) * static_cast<long double>(width) *
                         static_cast<long double>(weight));
    }
  }
  if (p.weight.max > per_patient)
    return too_big("weights", FormatUnits(p.weight.max, p.weight.decimals),
                   static_cast<long double>(n) * static_cast<long double>(p.weight.max));
  return CheckThreshold(p);
}

Result<RoundId> RoundFromHex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() != 2 * kRoundIdSize) {
    return Status::Error("round id must be " + std::to_string(2 * kRoundIdSize) +
                         " lowercase hex digits, got " + std::to_string(hex.size()) +
                         " characters");
  }
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) {
    const int hi = nibble(hex[2 * i]);
    const int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::Error("round id must be lowercase hex digits only");
    round[i] = static_cast<uint8_t>((hi << 4) | lo);
  }
  return round;
}

std::vector<uint8_t> Encode(const Message& message) {
  std::vector<uint8_t> out;
  if (const auto* e = std::get_if<Envelope>(&message)) {
    out.reserve(e->sealed.size() + 128);
  } else {
    out.reserve(64);
  }
  strict::VectorSink sink{&out};
  Packer packer(sink);
  std::visit([&packer](const auto& m) { PackFields(packer, m); }, message);
  return out;
}

namespace {
strict::Bounds MessageBounds(const Limits& limits) {
  return strict::Bounds{
      .max_bytes = limits.max_message_bytes,
      .max_array = std::max({kMaxFields, limits.max_participants, kMaxColumns}),
      .max_str = kMaxWireString,
      .max_bin = std::max({limits.max_sealed_bytes, kRoundIdSize, kKeysItemSize}),
      .max_depth = 3,  // message, columns, a column
  };
}
}  // namespace

std::optional<uint64_t> RequestTicket(std::span<const uint8_t> bytes, const Limits& limits) {
  Result<strict::Unpacked> unpacked = strict::UnpackArray(bytes, MessageBounds(limits));
  if (!unpacked.ok()) return std::nullopt;
  const std::span<const msgpack::object> f = unpacked->fields();
  Result<std::string_view> type = CheckHead(f);
  if (!type.ok() || *type != kRequest || f.size() < 3 ||
      f[2].type != msgpack::type::POSITIVE_INTEGER)
    return std::nullopt;
  return f[2].via.u64;
}

Result<Message> Decode(std::span<const uint8_t> bytes, const Limits& limits) {
  Result<strict::Unpacked> unpacked = strict::UnpackArray(bytes, MessageBounds(limits));
  if (!unpacked.ok()) return unpacked.status();
  const std::span<const msgpack::object> f = unpacked->fields();
  Result<std::string_view> type = CheckHead(f);
  if (!type.ok()) return type.status();

  struct Shape {
    std::string_view name;
    size_t fields;
  };
  static constexpr Shape kShapes[] = {
      {kRequest, 11}, {kJoin, 6},   {kRefuse, 4}, {kEnvelope, 7},
      {kAck, 3},      {kPhase, 20}, {kNotice, 4}, {kBatch, 5},
  };
  const Shape* shape = nullptr;
  for (const Shape& s : kShapes) {
    if (s.name == *type) shape = &s;
  }
  if (shape == nullptr) return Status::Error(UnknownType(*type));
  TALLY_RETURN_IF_ERROR(CheckFieldCount(shape->name, shape->fields, f.size()));

  strict::FieldReader r(shape->name, f, 2);
  if (shape->name == kRequest) return DecodeRequest(r, limits);
  if (shape->name == kEnvelope) return DecodeEnvelope(r, limits);
  if (shape->name == kPhase) return DecodePhase(r, limits);
  if (shape->name == kBatch) return DecodeBatch(r, limits);
  if (shape->name == kJoin) {
    Join m;
    TALLY_RETURN_IF_ERROR(r.Round("round", &m.round));
    TALLY_RETURN_IF_ERROR(r.Fixed("cpk", &m.cpk));
    TALLY_RETURN_IF_ERROR(r.Fixed("spk", &m.spk));
    TALLY_RETURN_IF_ERROR(r.Fixed("signature", &m.signature));
    return Message(std::move(m));
  }
  if (shape->name == kAck) {
    Ack m;
    TALLY_RETURN_IF_ERROR(r.Round("round", &m.round));
    return Message(m);
  }
  if (shape->name == kRefuse) {
    Refuse m;
    TALLY_RETURN_IF_ERROR(r.Round("round", &m.round));
    TALLY_RETURN_IF_ERROR(r.Reason("reason", &m.reason));
    return Message(std::move(m));
  }
  Notice m;  // kNotice: the last shape
  TALLY_RETURN_IF_ERROR(r.Uint("ticket", &m.ticket));
  TALLY_RETURN_IF_ERROR(r.Reason("reason", &m.reason));
  return Message(std::move(m));
}

std::vector<uint8_t> EncodePayload(EnvelopeKind kind, std::span<const uint64_t> values) {
  const size_t blob = values.size() * 8;
  std::vector<uint8_t> out;
  out.reserve(blob + 16);
  strict::VectorSink sink{&out};
  Packer packer(sink);
  packer.pack_array(3);
  packer.pack_uint32(kProtocolVersion);
  PackStr(packer, KindName(kind));
  packer.pack_bin(static_cast<uint32_t>(blob));
  const size_t header = out.size();
  out.resize(header + blob);
  StoreLittleEndian(values, out.data() + header);
  return out;
}

Result<std::span<const uint8_t>> PayloadValues(std::span<const uint8_t> bytes, EnvelopeKind kind,
                                               uint32_t length) {
  const size_t blob = size_t{length} * 8;
  const strict::Bounds bounds{
      .max_bytes = blob + kPayloadOverhead,
      .max_array = 3,
      .max_str = 16,
      .max_bin = blob + kPayloadOverhead,
      .max_depth = 1,
  };
  Result<strict::Unpacked> unpacked = strict::UnpackArray(bytes, bounds, "payload");
  if (!unpacked.ok()) return unpacked.status();
  const std::span<const msgpack::object> f = unpacked->fields();
  TALLY_RETURN_IF_ERROR(CheckFieldCount("payload", 3, f.size()));
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != kProtocolVersion) {
    return Status::Error("payload: unsupported version");
  }
  if (f[1].type != msgpack::type::STR) {
    return Status::Error("payload: kind must be str, got " +
                         std::string(strict::TypeName(f[1].type)));
  }
  const std::optional<EnvelopeKind> got =
      strict::KindFromName(std::string_view(f[1].via.str.ptr, f[1].via.str.size));
  if (!got) return Status::Error("payload: unknown kind");
  if (*got != kind) {
    return Status::Error("payload: kind is " + std::string(KindName(*got)) + ", expected " +
                         std::string(KindName(kind)));
  }
  strict::FieldReader r("payload", f, 2);
  std::span<const uint8_t> values;
  TALLY_RETURN_IF_ERROR(r.BinView("values", &values));
  if (values.size() != blob) {
    return Status::Error("payload: values must be " + std::to_string(blob) + " bytes (" +
                         std::to_string(length) + " elements), got " +
                         std::to_string(values.size()));
  }
  return values;
}

UnmaskShares::~UnmaskShares() {
  for (auto* v : {&self_seeds, &mask_secrets})
    for (Share& share : *v) explicit_bzero(share.data(), share.size());  // not optimised away
}

std::vector<uint8_t> EncodeUnmask(const UnmaskShares& shares) {
  std::vector<uint8_t> out;
  out.reserve(64 + (shares.self_seeds.size() + shares.mask_secrets.size()) * kShareSize);
  strict::VectorSink sink{&out};
  Packer packer(sink);
  packer.pack_array(5);
  packer.pack_uint32(kProtocolVersion);
  PackStr(packer, KindName(EnvelopeKind::kUnmask));
  PackMembers(packer, shares.masked);
  for (const auto* v : {&shares.self_seeds, &shares.mask_secrets}) {
    packer.pack_bin(static_cast<uint32_t>(v->size() * kShareSize));
    for (const Share& share : *v)
      packer.pack_bin_body(reinterpret_cast<const char*>(share.data()), kShareSize);
  }
  return out;
}

Result<UnmaskShares> DecodeUnmask(std::span<const uint8_t> bytes, size_t participants) {
  const size_t most = participants * kShareSize;
  const strict::Bounds bounds{
      .max_bytes = MaxSealedSize(1, participants),
      .max_array = 5,
      .max_str = 16,
      .max_bin = std::max(most, (participants + 7) / 8),
      .max_depth = 1,
  };
  Result<strict::Unpacked> unpacked = strict::UnpackArray(bytes, bounds, "unmask");
  if (!unpacked.ok()) return unpacked.status();
  const std::span<const msgpack::object> f = unpacked->fields();
  TALLY_RETURN_IF_ERROR(CheckFieldCount("unmask", 5, f.size()));
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != kProtocolVersion)
    return Status::Error("unmask: unsupported version");
  if (f[1].type != msgpack::type::STR ||
      std::string_view(f[1].via.str.ptr, f[1].via.str.size) != KindName(EnvelopeKind::kUnmask))
    return Status::Error("unmask: kind must be \"unmask\"");
  strict::FieldReader r("unmask", f, 2);
  UnmaskShares out;
  TALLY_RETURN_IF_ERROR(r.MembersOf("masked", participants, &out.masked));
  for (auto [field, v] :
       {std::pair{"self_seeds", &out.self_seeds}, std::pair{"mask_secrets", &out.mask_secrets}}) {
    std::span<const uint8_t> blob;
    TALLY_RETURN_IF_ERROR(r.BinView(field, &blob));
    if (blob.size() % kShareSize != 0 || blob.size() > most)
      return r.Error(std::string(field) + " must hold at most " + std::to_string(participants) +
                     " shares of " + std::to_string(kShareSize) + " bytes, got " +
                     std::to_string(blob.size()) + " bytes");
    v->assign(blob.size() / kShareSize, Share{});
    for (size_t i = 0; i < v->size(); ++i)
      std::memcpy((*v)[i].data(), blob.data() + i * kShareSize, kShareSize);
  }
  return out;
}

Result<std::vector<uint64_t>> DecodePayload(std::span<const uint8_t> bytes, EnvelopeKind kind,
                                            uint32_t length) {
  Result<std::span<const uint8_t>> blob = PayloadValues(bytes, kind, length);
  if (!blob.ok()) return blob.status();
  std::vector<uint64_t> out(length);
  LoadLittleEndian(*blob, &out);
  return out;
}

}  // namespace tally
