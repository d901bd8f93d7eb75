#include "nodes/aggregate.h"

#include <sodium.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

#include "nodes/shamir.h"
#include "schema/decimal.h"
#include "schema/text.h"

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

Result<RoundMasks> PatientMasks(const RoundId& round, const RoundParams& params, size_t me,
                                const Members& shared, std::span<const RoundPublicKeys> keys,
                                const SecretKey& s, const uint8_t* b) {
  std::vector<uint32_t> peers;
  std::vector<RoundPublicKeys> peer_keys;
  for (size_t v = 0; v < keys.size(); ++v) {
    if (v == me) continue;
    peers.push_back(static_cast<uint32_t>(v));
    peer_keys.push_back(keys[v]);
  }
  return PatientMasks(round, params, me, peers, shared, peer_keys, s, b);
}

Result<RoundMasks> PatientMasks(const RoundId& round, const RoundParams& params, size_t me,
                                std::span<const uint32_t> peers, const Members& shared,
                                std::span<const RoundPublicKeys> keys, const SecretKey& s,
                                const uint8_t* b) {
  const auto& names = params.participants;
  const RoundDigest digest = DigestOf(round, params);
  size_t partners = 0;
  for (uint32_t v : peers) partners += shared[v];
  RoundMasks masks{SecretBytes((1 + partners) * kRoundMaskKeyBytes), {}};
  SelfMaskKey(b, masks.keys.data());
  masks.add.push_back(true);
  for (size_t slot = 0; slot < peers.size(); ++slot) {
    const size_t v = peers[slot];
    if (!shared[v]) continue;
    if (!PairMaskKey(s.data(), keys[slot].spk, digest, me, v,
                     masks.keys.data() + masks.add.size() * kRoundMaskKeyBytes)
             .ok())
      return Status::Error("the round key of " + names[v] + " is invalid");
    masks.add.push_back(names[me] < names[v]);
  }
  return masks;
}

Status CheckUnmask(const RoundSets& sets, std::string_view sender, const UnmaskShares& unmask,
                   std::span<const uint32_t> closed) {
  if (unmask.masked != sets.masked)
    return Status::Error("the unmask of " + std::string(sender) + " is for other survivors");
  size_t survivors = 0,
         dropped = 0;  // U2 \ U3, which need not be U2 minus U3's size for unchecked sets
  auto count = [&](size_t v) {
    const bool survived = v < sets.masked.size() && sets.masked[v];
    survivors += survived;
    dropped += v < sets.shared.size() && sets.shared[v] && !survived;
  };
  if (closed.empty()) {
    for (size_t v = 0; v < std::max(sets.shared.size(), sets.masked.size()); ++v) count(v);
  } else {
    for (uint32_t v : closed) count(v);
  }
  if (unmask.self_seeds.size() != survivors || unmask.mask_secrets.size() != dropped)
    return Status::Error("the unmask of " + std::string(sender) + " holds " +
                         std::to_string(unmask.self_seeds.size()) + " self-mask and " +
                         std::to_string(unmask.mask_secrets.size()) + " mask-secret shares for " +
                         std::to_string(survivors) + " survivors and " + std::to_string(dropped) +
                         " dropped");
  return Status::Ok();
}

Result<RoundMasks> UnmaskingMasks(const RoundId& round, const RoundParams& params,
                                  const RoundSets& sets, std::span<const RoundPublicKeys> keys,
                                  std::span<const uint32_t> senders,
                                  std::span<const UnmaskShares* const> unmasks) {
  Result<RoundGraph> graph = RoundGraph::Of(params);
  if (!graph.ok()) return graph.status();
  return UnmaskingMasks(round, params, *graph, sets, keys, senders, unmasks);
}

Result<RoundMasks> UnmaskingMasks(const RoundId& round, const RoundParams& params,
                                  const RoundGraph& graph, const RoundSets& sets,
                                  std::span<const RoundPublicKeys> keys,
                                  std::span<const uint32_t> senders,
                                  std::span<const UnmaskShares* const> unmasks) {
  const auto& names = params.participants;
  const size_t n = names.size();
  const uint32_t t = graph.threshold();
  const RoundDigest digest = DigestOf(round, params);
  // Who holds a share of each secret, in the senders' order, and where in its unmask: for each
  // sender, its closed neighbourhood's survivors and dropped, ascending, as its unmask lists them.
  struct Holder {
    uint32_t sender;  // index into senders
    uint32_t at;      // index into its self_seeds or mask_secrets
  };
  std::vector<std::vector<Holder>> of_b(n), of_s(n);
  for (size_t j = 0; j < senders.size(); ++j) {
    uint32_t survived = 0, dropped = 0;
    for (uint32_t v : graph.Closed(senders[j])) {
      if (sets.masked[v]) {
        if (of_b[v].size() < t) of_b[v].push_back({static_cast<uint32_t>(j), survived});
        ++survived;
      } else if (sets.shared[v]) {
        if (of_s[v].size() < t) of_s[v].push_back({static_cast<uint32_t>(j), dropped});
        ++dropped;
      }
    }
  }
  std::vector<size_t> survivors, dropped;
  size_t pairs = 0;
  for (size_t v = 0; v < n; ++v) {
    if (sets.masked[v]) survivors.push_back(v);
    if (sets.shared[v] && !sets.masked[v]) dropped.push_back(v);
  }
  for (size_t v : dropped)
    for (size_t u : survivors)
      pairs += graph.Adjacent(static_cast<uint32_t>(v), static_cast<uint32_t>(u));
  RoundMasks masks{SecretBytes((survivors.size() + pairs) * kRoundMaskKeyBytes), {}};
  auto next_key = [&masks] { return masks.keys.data() + masks.add.size() * kRoundMaskKeyBytes; };
  SecretBytes secret(kShareSize);
  // A full round's secrets all have the same holders: one set of Lagrange coefficients.
  std::map<std::vector<uint16_t>, ShamirCombiner> combiners;
  std::vector<Share> column;
  auto rebuild = [&](const std::vector<Holder>& holders, std::vector<Share> UnmaskShares::*which,
                     size_t v) -> Status {
    if (holders.size() < t)
      return Status::Error("only " + std::to_string(holders.size()) + " shares of the " +
                           (which == &UnmaskShares::self_seeds ? "self mask" : "mask secret") +
                           " of " + names[v] + " came, the threshold is " + std::to_string(t));
    std::vector<uint16_t> xs;
    column.resize(holders.size());
    for (size_t k = 0; k < holders.size(); ++k) {
      xs.push_back(static_cast<uint16_t>(senders[holders[k].sender] + 1));
      column[k] = (unmasks[holders[k].sender]->*which)[holders[k].at];
    }
    auto at = combiners.find(xs);
    if (at == combiners.end()) {
      Result<ShamirCombiner> made = ShamirCombiner::Create(xs);
      if (!made.ok()) return made.status();
      at = combiners.emplace(std::move(xs), std::move(made.value())).first;
    }
    at->second.Combine(column, std::span<uint8_t, kShareSize>(secret.data(), kShareSize));
    return Status::Ok();
  };
  Status status = Status::Ok();
  // Each survivor's self mask, which it added: subtracted.
  for (size_t v : survivors) {
    status = rebuild(of_b[v], &UnmaskShares::self_seeds, v);
    if (!status.ok()) break;
    SelfMaskKey(secret.data(), next_key());
    masks.add.push_back(false);
  }
  // Each dropped member's pairwise masks with its neighbours among the survivors, which they
  // added (if they sort first) or subtracted: the opposite.
  for (size_t k = 0; k < dropped.size() && status.ok(); ++k) {
    const size_t v = dropped[k];
    status = rebuild(of_s[v], &UnmaskShares::mask_secrets, v);
    if (!status.ok()) break;
    if (!MatchesPublicKey(secret.data(), keys[v].spk)) {
      status = Status::Error("the mask secret of " + names[v] + " does not match its key");
      break;
    }
    for (size_t u : survivors) {
      if (!graph.Adjacent(static_cast<uint32_t>(v), static_cast<uint32_t>(u))) continue;
      if (!PairMaskKey(secret.data(), keys[u].spk, digest, v, u, next_key()).ok()) {
        status = Status::Error("the round key of " + names[u] + " is invalid");
        break;
      }
      masks.add.push_back(!(names[u] < names[v]));
    }
  }
  for (Share& share : column) sodium_memzero(share.data(), share.size());
  if (!status.ok()) return status;
  return masks;
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

PatientInput::~PatientInput() {
  for (std::string* s : {&weight})
    if (!s->empty()) sodium_memzero(s->data(), s->size());
  for (std::string& cell : cells)
    if (!cell.empty()) sodium_memzero(cell.data(), cell.size());
}

Result<int64_t> StochasticUnits(double value, uint32_t decimals, int64_t lower, int64_t upper) {
  if (!std::isfinite(value)) return Status::Error("not a finite number");
  const double scaled = value * static_cast<double>(Pow10(decimals));
  // Clipped in units, where the bounds are exact; beyond 2^53 a double has no fraction left.
  const double clipped = std::clamp(scaled, static_cast<double>(lower), static_cast<double>(upper));
  if (std::fabs(clipped) >= 9007199254740992.0)  // 2^53
    return Status::Error("too large to round at " + std::to_string(decimals) + " decimals");
  const double floor = std::floor(clipped);
  const double fraction = clipped - floor;
  // A uniform u in [0, 1) with 53 random bits: up with probability `fraction`.
  uint64_t bits = 0;
  randombytes_buf(&bits, sizeof bits);
  const double u = static_cast<double>(bits >> 11) * 0x1.0p-53;
  const auto units = static_cast<int64_t>(floor) + (u < fraction ? 1 : 0);
  return std::clamp(units, lower, upper);
}

namespace {

std::string CommaList(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

// How a header differs from the round's columns, as it may be published: the round's columns it
// lacks by name (the round's names are public), its other columns by count only (their names are
// the patient's own), e.g. "it lacks delta and has 1 other column".
std::string Difference(const std::vector<Column>& columns, const std::vector<std::string>& names) {
  const std::set<std::string> have(names.begin(), names.end());
  std::set<std::string> want;
  std::vector<std::string> missing;
  for (const Column& c : columns) {
    want.insert(c.name);
    if (!have.count(c.name)) missing.push_back(c.name);
  }
  size_t extra = 0;
  for (const auto& n : names) extra += want.count(n) ? 0 : 1;
  std::string out;
  if (!missing.empty()) out += "it lacks " + CommaList(missing);
  if (extra > 0)
    out += (out.empty() ? "it has " : " and has ") + std::to_string(extra) + " other column" +
           (extra == 1 ? "" : "s");
  return out;
}

// One cell in units of 10^-decimals within the column's bounds, or why not (never the value).
Result<int64_t> CellUnits(const Column& c, const std::string& cell, bool floats) {
  const std::string what = "column " + c.name + ": ";
  if (floats) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(cell.c_str(), &end);
    // ERANGE with a finite result is an underflow (1e-310): a tiny number, rounded below.
    if (end == cell.c_str() || *end != '\0' || !std::isfinite(v))
      return Status::Error(what + "not a number");
    Result<int64_t> units = StochasticUnits(v, c.decimals, c.lower, c.upper);
    if (!units.ok()) return Status::Error(what + units.message());
    return units;
  }
  Result<Decimal> d = ParseDecimal(cell);
  if (!d.ok()) return Status::Error(what + "not a decimal");
  const uint32_t significant = SignificantDecimals(*d);
  if (significant > c.decimals)
    return Status::Error(what + "has " + std::to_string(significant) +
                         " decimals, the round allows " + std::to_string(c.decimals));
  Result<Int128> units = ToUnits(*d, c.decimals);  // refuses, never wraps, a huge value
  if (!units.ok() || *units < c.lower || *units > c.upper)
    return Status::Error(what + "outside [" + FormatUnits(c.lower, c.decimals) + ", " +
                         FormatUnits(c.upper, c.decimals) + "]");
  return static_cast<int64_t>(*units);
}

}  // namespace

Result<std::vector<uint64_t>> EncodeInput(const RoundParams& p, const PatientInput& input) {
  if (p.columns.empty()) {
    // A round of integers in [0, range], as protocol 2 had it.
    if (!input.names.empty())
      return Status::Error("the round has no columns; this input has a header");
    if (!input.weight.empty())
      return Status::Error("this input has a weight; the round is not weighted");
    if (input.cells.size() != p.length)
      return Status::Error("input has " + std::to_string(input.cells.size()) +
                           " elements, the round asks for " + std::to_string(p.length));
    std::vector<uint64_t> out;
    out.reserve(p.length);
    for (const std::string& cell : input.cells) {
      uint64_t v = 0;
      if (!ParseU64(cell, v) || v > p.range)
        return Status::Error("input outside [0, " + std::to_string(p.range) + "]");
      out.push_back(v);
    }
    return out;
  }
  const size_t c_count = p.columns.size();
  // cells_of[c]: the cells of column c, in order.
  std::vector<std::vector<const std::string*>> cells_of(c_count);
  if (input.names.empty()) {
    if (c_count != 1)
      return Status::Error("the round asks for columns " + CommaList([&] {
                             std::vector<std::string> n;
                             for (const auto& c : p.columns) n.push_back(c.name);
                             return n;
                           }()) +
                           "; this input has no header");
    if (input.cells.size() != p.length)
      return Status::Error("input has " + std::to_string(input.cells.size()) +
                           " elements, the round asks for " + std::to_string(p.length));
    for (const auto& cell : input.cells) cells_of[0].push_back(&cell);
  } else {
    std::vector<std::string> wanted;
    for (const auto& c : p.columns) wanted.push_back(c.name);
    std::vector<std::string> sorted_names = input.names, sorted_wanted = wanted;
    std::sort(sorted_names.begin(), sorted_names.end());
    std::sort(sorted_wanted.begin(), sorted_wanted.end());
    if (sorted_names != sorted_wanted)
      return Status::Error("the round asks for columns " + CommaList(wanted) + "; " +
                           Difference(p.columns, input.names));
    if (p.length != 1)
      return Status::Error("the round asks for " + std::to_string(p.length) +
                           " elements per column; this input is one row");
    for (size_t c = 0; c < c_count; ++c) {
      const auto at = std::find(input.names.begin(), input.names.end(), p.columns[c].name);
      cells_of[c].push_back(&input.cells[static_cast<size_t>(at - input.names.begin())]);
    }
  }
  const bool weighted = p.weight.max > 0;
  uint64_t w = 1;
  if (weighted) {
    if (input.weight.empty())
      return Status::Error("the round is weighted; this input has no weight");
    Result<Decimal> d = ParseDecimal(input.weight);
    if (!d.ok()) return Status::Error("weight: not a decimal");
    if (SignificantDecimals(*d) > p.weight.decimals)
      return Status::Error("weight: has " + std::to_string(SignificantDecimals(*d)) +
                           " decimals, the round allows " + std::to_string(p.weight.decimals));
    Result<Int128> units = ToUnits(*d, p.weight.decimals);
    if (!units.ok() || *units < 0 || *units > static_cast<Int128>(p.weight.max))
      return Status::Error("weight: outside [0, " + FormatUnits(p.weight.max, p.weight.decimals) +
                           "]");
    w = static_cast<uint64_t>(*units);
  } else if (!input.weight.empty()) {
    return Status::Error("this input has a weight; the round is not weighted");
  }
  std::vector<uint64_t> out(PayloadLength(p), 0);
  for (size_t c = 0; c < c_count; ++c) {
    const Column& col = p.columns[c];
    const auto& cells = cells_of[c];
    const size_t present = static_cast<size_t>(std::count_if(
        cells.begin(), cells.end(), [](const std::string* s) { return !s->empty(); }));
    if (present == 0) continue;  // missing: contributes 0 to the sum and 0 to the count
    if (present != cells.size())
      return Status::Error("column " + col.name + ": " + std::to_string(cells.size() - present) +
                           " of " + std::to_string(cells.size()) +
                           " elements missing (a vector column is given whole or not at all)");
    for (size_t e = 0; e < cells.size(); ++e) {
      Result<int64_t> units = CellUnits(col, *cells[e], input.floats);
      if (!units.ok()) return units.status();
      // The offset from the lower bound is in [0, upper - lower]: CheckRoundParams made sure
      // that N of them, times the largest weight, fit the ring.
      const uint64_t offset = static_cast<uint64_t>(static_cast<Int128>(*units) - col.lower);
      out[c * p.length + e] = w * offset;
    }
    out[c_count * p.length + c] = 1;
    if (weighted) out[c_count * p.length + c_count + c] = w;
  }
  return out;
}

std::vector<ColumnResult> DecodeColumns(const RoundParams& p, std::span<const uint64_t> agg) {
  std::vector<ColumnResult> out;
  const size_t c_count = p.columns.size();
  const bool weighted = p.weight.max > 0;
  for (size_t c = 0; c < c_count; ++c) {
    const Column& col = p.columns[c];
    ColumnResult r;
    r.name = col.name;
    r.count = agg[c_count * p.length + c];
    // W: what the offsets were multiplied by, summed: the count, or the weights in 10^-dw.
    const UInt128 w = weighted ? agg[c_count * p.length + c_count + c] : r.count;
    const uint32_t dw = weighted ? p.weight.decimals : 0;
    if (weighted) r.weight = FormatUnits(static_cast<Int128>(w), dw);
    for (size_t e = 0; e < p.length; ++e) {
      // sum of w * units = sum of w * (units - lower) + lower * sum of w, in 10^-(d + dw).
      const Int128 total = static_cast<Int128>(agg[c * p.length + e]) +
                           static_cast<Int128>(col.lower) * static_cast<Int128>(w);
      r.sum.push_back(FormatUnits(total, col.decimals + dw));
      // mean = total / 10^(d + dw) / (w / 10^dw) = total / (w * 10^d), with 3 more decimals.
      r.mean.push_back(
          w == 0 ? std::nullopt
                 : std::optional(FormatRatio(total, w * Pow10(col.decimals), col.decimals + 3)));
    }
    out.push_back(std::move(r));
  }
  return out;
}

bool AggregateInRange(const RoundParams& p, std::span<const uint64_t> agg) {
  if (p.columns.empty())
    return std::all_of(agg.begin(), agg.end(), [&](uint64_t v) { return v <= p.range; });
  const size_t c_count = p.columns.size();
  const bool weighted = p.weight.max > 0;
  const uint64_t n = p.participants.size();
  for (size_t c = 0; c < c_count; ++c) {
    const uint64_t count = agg[c_count * p.length + c];
    const UInt128 w = weighted ? agg[c_count * p.length + c_count + c] : count;
    if (count > n || (weighted && w > UInt128(count) * p.weight.max)) return false;
    const UInt128 width =
        static_cast<UInt128>(static_cast<Int128>(p.columns[c].upper) - p.columns[c].lower);
    for (size_t e = 0; e < p.length; ++e)
      if (agg[c * p.length + e] > w * width) return false;
  }
  return true;
}

}  // namespace tally
