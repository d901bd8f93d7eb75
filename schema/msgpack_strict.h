// Internal to tally_schema (schema.cc, capture.cc): the one strict msgpack decoding path.
//
// msgpack-c is permissive by default (4 GiB limits, trailing bytes ignored, any object type
// convertible with a throw). Every Tally decode goes through UnpackArray(), which bounds the
// input and the decoder, turns every msgpack exception into a Status, rejects trailing bytes
// and requires a top-level array; FieldReader then reads positional fields with exact types.
// Error messages are short and never quote payload bytes.
//
// Not a public header: nothing outside schema/ includes it. Thread-safety: plain functions
// and a reader over a caller-owned object; safe from any thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <msgpack.hpp>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schema/protocol.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally::strict {

// Decoder bounds for one call. Every container/str/bin size is checked by msgpack-c before
// it allocates, so a 5-byte array header cannot make it reserve gigabytes.
struct Bounds {
  size_t max_bytes = 0;  // whole input
  size_t max_array = 0;  // elements in any array
  size_t max_str = 0;    // bytes in any str
  size_t max_bin = 0;    // bytes in any bin
  size_t max_depth = 2;  // nested containers: top-level array + one array field
};

// Short names for error messages.
inline std::string_view TypeName(msgpack::type::object_type type) {
  switch (type) {
    case msgpack::type::NIL:
      return "nil";
    case msgpack::type::BOOLEAN:
      return "bool";
    case msgpack::type::POSITIVE_INTEGER:
      return "uint";
    case msgpack::type::NEGATIVE_INTEGER:
      return "negative int";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      return "float";
    case msgpack::type::STR:
      return "str";
    case msgpack::type::BIN:
      return "bin";
    case msgpack::type::ARRAY:
      return "array";
    case msgpack::type::MAP:
      return "map";
    case msgpack::type::EXT:
      return "ext";
  }
  return "unknown";
}

// Bins are referenced in the caller's buffer instead of copied into the zone: the values blob
// of a payload is copied exactly once, into its final std::vector.
inline bool ReferenceBins(msgpack::type::object_type type, std::size_t /*size*/, void*) {
  return type == msgpack::type::BIN;
}

// A decoded top-level array. `handle` may reference `bytes` passed to UnpackArray: use it only
// while those bytes live.
struct Unpacked {
  msgpack::object_handle handle;
  std::span<const msgpack::object> fields() const {
    const msgpack::object_array& a = handle.get().via.array;
    return {a.ptr, a.size};
  }
};

// The one strict entry point: exactly one msgpack array spanning all of `bytes`.
inline Result<Unpacked> UnpackArray(std::span<const uint8_t> bytes, const Bounds& bounds,
                                    std::string_view what = "message") {
  const std::string w(what);
  if (bytes.empty()) return Status::Error("empty " + w);
  if (bytes.size() > bounds.max_bytes) {
    return Status::Error(w + " is " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                         std::to_string(bounds.max_bytes));
  }
  const msgpack::unpack_limit limit(bounds.max_array, /*map=*/0, bounds.max_str, bounds.max_bin,
                                    /*ext=*/0, bounds.max_depth);
  Unpacked out;
  std::size_t offset = 0;
  try {
    out.handle = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(), offset,
                                 &ReferenceBins, nullptr, limit);
  } catch (const msgpack::insufficient_bytes&) {
    return Status::Error("truncated " + w);
  } catch (const msgpack::array_size_overflow&) {
    return Status::Error("msgpack array longer than the limit of " +
                         std::to_string(bounds.max_array) + " elements");
  } catch (const msgpack::map_size_overflow&) {
    return Status::Error("msgpack map not allowed");
  } catch (const msgpack::str_size_overflow&) {
    return Status::Error("msgpack str longer than the limit of " + std::to_string(bounds.max_str) +
                         " bytes");
  } catch (const msgpack::bin_size_overflow&) {
    return Status::Error("msgpack bin longer than the limit of " + std::to_string(bounds.max_bin) +
                         " bytes");
  } catch (const msgpack::ext_size_overflow&) {
    return Status::Error("msgpack ext not allowed");
  } catch (const msgpack::depth_size_overflow&) {
    return Status::Error("msgpack nesting too deep");
  } catch (const std::bad_alloc&) {
    return Status::Error("out of memory decoding " + w);
  } catch (...) {  // msgpack::parse_error and anything else msgpack-c may throw
    return Status::Error("malformed msgpack in " + w);
  }
  if (offset != bytes.size()) {
    return Status::Error(std::to_string(bytes.size() - offset) + " trailing bytes after " + w);
  }
  const msgpack::object& top = out.handle.get();
  if (top.type != msgpack::type::ARRAY) {
    return Status::Error(w + " must be a msgpack array, got " + std::string(TypeName(top.type)));
  }
  return out;
}

// Reads positional fields of one decoded array, in order, with exact types. Each getter names
// the field in its error: "<context>: <field> must be uint, got str".
class FieldReader {
 public:
  // `context` names the message or record in errors ("join", "header record").
  FieldReader(std::string_view context, std::span<const msgpack::object> fields, size_t first)
      : context_(context), fields_(fields), next_(first) {}

  Status Uint(std::string_view field, uint64_t* out) {
    const msgpack::object* o = nullptr;
    TALLY_RETURN_IF_ERROR(Next(field, msgpack::type::POSITIVE_INTEGER, &o));
    *out = o->via.u64;
    return Status::Ok();
  }

  Status U32(std::string_view field, uint32_t* out) {
    uint64_t v = 0;
    TALLY_RETURN_IF_ERROR(Uint(field, &v));
    if (v > std::numeric_limits<uint32_t>::max()) {
      return Error(std::string(field) + " " + std::to_string(v) + " does not fit in u32");
    }
    *out = static_cast<uint32_t>(v);
    return Status::Ok();
  }

  Status Int64(std::string_view field, int64_t* out) {
    const msgpack::object* o = nullptr;
    TALLY_RETURN_IF_ERROR(Any(field, &o));
    if (o->type == msgpack::type::NEGATIVE_INTEGER) {
      *out = o->via.i64;
      return Status::Ok();
    }
    if (o->type != msgpack::type::POSITIVE_INTEGER) return WrongType(field, "int", *o);
    if (o->via.u64 > uint64_t{std::numeric_limits<int64_t>::max()}) {
      return Error(std::string(field) + " does not fit in i64");
    }
    *out = static_cast<int64_t>(o->via.u64);
    return Status::Ok();
  }

  Status Bool(std::string_view field, bool* out) {
    const msgpack::object* o = nullptr;
    TALLY_RETURN_IF_ERROR(Next(field, msgpack::type::BOOLEAN, &o));
    *out = o->via.boolean;
    return Status::Ok();
  }

  // A str field as a view into the decoded object (valid while the Unpacked lives).
  Status StrView(std::string_view field, std::string_view* out) {
    const msgpack::object* o = nullptr;
    TALLY_RETURN_IF_ERROR(Next(field, msgpack::type::STR, &o));
    *out = std::string_view(o->via.str.ptr, o->via.str.size);
    return Status::Ok();
  }

  Status BinView(std::string_view field, std::span<const uint8_t>* out) {
    const msgpack::object* o = nullptr;
    TALLY_RETURN_IF_ERROR(Next(field, msgpack::type::BIN, &o));
    *out =
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(o->via.bin.ptr), o->via.bin.size);
    return Status::Ok();
  }

  Status Bin(std::string_view field, size_t min, size_t max, std::vector<uint8_t>* out) {
    std::span<const uint8_t> v;
    TALLY_RETURN_IF_ERROR(BinView(field, &v));
    if (v.size() > max) {
      return Error(std::string(field) + " is " + std::to_string(v.size()) +
                   " bytes, over the limit of " + std::to_string(max));
    }
    if (v.size() < min) {
      return Error(std::string(field) + " is " + std::to_string(v.size()) +
                   " bytes, shorter than the minimum of " + std::to_string(min));
    }
    out->assign(v.begin(), v.end());
    return Status::Ok();
  }

  // A bin of exactly N bytes (round ids, join nonces).
  template <size_t N>
  Status Fixed(std::string_view field, std::array<uint8_t, N>* out) {
    std::span<const uint8_t> v;
    TALLY_RETURN_IF_ERROR(BinView(field, &v));
    if (v.size() != N) {
      return Error(std::string(field) + " must be " + std::to_string(N) + " bytes, got " +
                   std::to_string(v.size()));
    }
    std::copy(v.begin(), v.end(), out->begin());
    return Status::Ok();
  }
  Status Round(std::string_view field, RoundId* out) { return Fixed(field, out); }

  // A set of participants: a bin of exactly ceil(n/8) bytes, or empty (not fixed yet); no bit
  // set beyond the n participants.
  Status MembersOf(std::string_view field, size_t n, Members* out) {
    std::span<const uint8_t> v;
    TALLY_RETURN_IF_ERROR(BinView(field, &v));
    if (v.empty()) {
      out->clear();
      return Status::Ok();
    }
    if (v.size() != (n + 7) / 8)
      return Error(std::string(field) + " must be empty or " + std::to_string((n + 7) / 8) +
                   " bytes for " + std::to_string(n) + " participants, got " +
                   std::to_string(v.size()));
    out->assign(n, false);
    for (size_t i = 0; i < v.size() * 8; ++i) {
      const bool bit = (v[i / 8] >> (i % 8)) & 1;
      if (i >= n && bit)
        return Error(std::string(field) + " names a participant beyond the " + std::to_string(n));
      if (i < n) (*out)[i] = bit;
    }
    return Status::Ok();
  }

  // A party name; invalid names are not echoed.
  Status Name(std::string_view field, std::string* out) {
    std::string_view v;
    TALLY_RETURN_IF_ERROR(StrView(field, &v));
    if (!ValidName(v)) return Error("invalid name in " + std::string(field));
    out->assign(v);
    return Status::Ok();
  }

  Status Reason(std::string_view field, std::string* out) {
    std::string_view v;
    TALLY_RETURN_IF_ERROR(StrView(field, &v));
    if (!ValidReason(v)) {
      return Error(std::string(field) + " must be printable ASCII, at most " +
                   std::to_string(kMaxReasonLength) + " characters");
    }
    out->assign(v);
    return Status::Ok();
  }

  // An array of distinct valid names, at most `max` of them.
  Status Names(std::string_view field, size_t max, std::vector<std::string>* out) {
    const msgpack::object* o = nullptr;
    TALLY_RETURN_IF_ERROR(Next(field, msgpack::type::ARRAY, &o));
    const msgpack::object_array& a = o->via.array;
    if (a.size > max) {
      return Error("too many " + std::string(field) + " (" + std::to_string(a.size) + " > " +
                   std::to_string(max) + ")");
    }
    std::vector<std::string> names;
    names.reserve(a.size);
    // Duplicates are found in a sorted copy, not a std::set: a patient decodes every phase
    // update's participants, and at 10,000 a set's node allocations were the largest part of it.
    std::vector<std::string_view> sorted;
    sorted.reserve(a.size);
    for (uint32_t i = 0; i < a.size; ++i) {
      const msgpack::object& e = a.ptr[i];
      if (e.type != msgpack::type::STR) {
        return Error(std::string(field) + " must hold str, got " + std::string(TypeName(e.type)));
      }
      const std::string_view name(e.via.str.ptr, e.via.str.size);
      if (!ValidName(name)) return Error("invalid name in " + std::string(field));
      sorted.push_back(name);
      names.emplace_back(name);
    }
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      // The error names the first name that repeats an earlier one, in the array's order.
      std::set<std::string_view> seen;
      for (const std::string& name : names) {
        // Safe to echo: a valid name is at most 32 characters of [a-z0-9_-].
        if (!seen.insert(name).second)
          return Error("duplicate name \"" + std::string(name) + "\" in " + std::string(field));
      }
    }
    *out = std::move(names);
    return Status::Ok();
  }

  Status Error(std::string detail) const {
    return Status::Error(context_ + ": " + std::move(detail));
  }
  const std::string& context() const { return context_; }

  // An array field's elements, at most `max` of them.
  Status Array(std::string_view field, size_t max, std::span<const msgpack::object>* out) {
    const msgpack::object* o = nullptr;
    TALLY_RETURN_IF_ERROR(Next(field, msgpack::type::ARRAY, &o));
    if (o->via.array.size > max)
      return Error("too many " + std::string(field) + " (" + std::to_string(o->via.array.size) +
                   " > " + std::to_string(max) + ")");
    *out = std::span<const msgpack::object>(o->via.array.ptr, o->via.array.size);
    return Status::Ok();
  }

 private:
  Status Any(std::string_view field, const msgpack::object** out) {
    if (next_ >= fields_.size()) return Error("missing field " + std::string(field));
    *out = &fields_[next_++];
    return Status::Ok();
  }
  Status Next(std::string_view field, msgpack::type::object_type type,
              const msgpack::object** out) {
    TALLY_RETURN_IF_ERROR(Any(field, out));
    if ((*out)->type != type) return WrongType(field, TypeName(type), **out);
    return Status::Ok();
  }
  Status WrongType(std::string_view field, std::string_view want, const msgpack::object& got) {
    return Error(std::string(field) + " must be " + std::string(want) + ", got " +
                 std::string(TypeName(got.type)));
  }

  std::string context_;
  std::span<const msgpack::object> fields_;
  size_t next_;
};

inline std::optional<BatchKind> BatchKindFromName(std::string_view name) {
  for (BatchKind k :
       {BatchKind::kKeys, BatchKind::kShares, BatchKind::kConfirm, BatchKind::kSurvivors}) {
    if (BatchKindName(k) == name) return k;
  }
  return std::nullopt;
}

inline std::optional<EnvelopeKind> KindFromName(std::string_view name) {
  for (EnvelopeKind k : {EnvelopeKind::kPartial, EnvelopeKind::kUnmask}) {
    if (KindName(k) == name) return k;
  }
  return std::nullopt;
}

// A growable byte sink for msgpack::packer: packs straight into the std::vector we return.
struct VectorSink {
  std::vector<uint8_t>* out;
  void write(const char* data, size_t size) {
    out->insert(out->end(), reinterpret_cast<const uint8_t*>(data),
                reinterpret_cast<const uint8_t*>(data) + size);
  }
};

using Packer = msgpack::packer<VectorSink>;

inline void PackStr(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

inline void PackBin(Packer& p, std::span<const uint8_t> b) {
  p.pack_bin(static_cast<uint32_t>(b.size()));
  p.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}

// A set of participants as a bin of ceil(n/8) bytes (FieldReader::MembersOf reads it); an empty
// set (not fixed yet) as an empty bin.
inline void PackMembers(Packer& p, const Members& m) { PackBin(p, MembersBits(m)); }
inline void PackSets(Packer& p, const RoundSets& s) {
  for (const Members* m : {&s.joined, &s.shared, &s.masked, &s.confirmed}) PackMembers(p, *m);
}
// The four sets of a round of n participants, as PackSets wrote them.
inline Status ReadSets(FieldReader& r, size_t n, RoundSets* out) {
  TALLY_RETURN_IF_ERROR(r.MembersOf("joined", n, &out->joined));
  TALLY_RETURN_IF_ERROR(r.MembersOf("shared", n, &out->shared));
  TALLY_RETURN_IF_ERROR(r.MembersOf("masked", n, &out->masked));
  return r.MembersOf("confirmed", n, &out->confirmed);
}

// A round's parameters as they travel, in a request, a phase update and a capture header:
// [hospital str,] range uint, length u32 (1..max_length), participants (distinct names),
// columns (array of [name str, lower int, upper int, decimals u32]), weight [max uint,
// decimals u32], threshold u32, graph ([] or [corrupt u32, dropout u32, k u32, t u32, seed
// bin(32), signature bin(64)]). A request carries no hospital (it is its sender).
inline void PackParams(Packer& p, const RoundParams& params, bool hospital) {
  if (hospital) PackStr(p, params.hospital);
  p.pack_uint64(params.range);
  p.pack_uint32(params.length);
  p.pack_array(static_cast<uint32_t>(params.participants.size()));
  for (const std::string& n : params.participants) PackStr(p, n);
  p.pack_array(static_cast<uint32_t>(params.columns.size()));
  for (const Column& c : params.columns) {
    p.pack_array(4);
    PackStr(p, c.name);
    p.pack_int64(c.lower);
    p.pack_int64(c.upper);
    p.pack_uint32(c.decimals);
  }
  p.pack_array(2);
  p.pack_uint64(params.weight.max);
  p.pack_uint32(params.weight.decimals);
  p.pack_uint32(params.threshold);
  if (!params.graph) {
    p.pack_array(0);
    return;
  }
  const Neighbourhood& g = *params.graph;
  p.pack_array(6);
  p.pack_uint32(g.corrupt_ppm);
  p.pack_uint32(g.dropout_ppm);
  p.pack_uint32(g.degree);
  p.pack_uint32(g.threshold);
  PackBin(p, g.seed);
  PackBin(p, g.signature);
}

inline Status ReadParams(FieldReader& r, uint32_t max_length, size_t max_participants,
                         bool hospital, RoundParams* out) {
  if (hospital) TALLY_RETURN_IF_ERROR(r.Name("hospital", &out->hospital));
  TALLY_RETURN_IF_ERROR(r.Uint("range", &out->range));
  TALLY_RETURN_IF_ERROR(r.U32("length", &out->length));
  if (out->length < 1 || out->length > max_length)
    return r.Error("length must be between 1 and " + std::to_string(max_length) + ", got " +
                   std::to_string(out->length));
  TALLY_RETURN_IF_ERROR(r.Names("participants", max_participants, &out->participants));
  std::span<const msgpack::object> columns;
  TALLY_RETURN_IF_ERROR(r.Array("columns", kMaxColumns, &columns));
  std::set<std::string> names;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].type != msgpack::type::ARRAY || columns[i].via.array.size != 4)
      return r.Error("column " + std::to_string(i) + " must be an array of 4");
    FieldReader c(r.context() + ": column " + std::to_string(i),
                  {columns[i].via.array.ptr, columns[i].via.array.size}, 0);
    Column& col = out->columns.emplace_back();
    TALLY_RETURN_IF_ERROR(c.Name("name", &col.name));
    TALLY_RETURN_IF_ERROR(c.Int64("lower", &col.lower));
    TALLY_RETURN_IF_ERROR(c.Int64("upper", &col.upper));
    TALLY_RETURN_IF_ERROR(c.U32("decimals", &col.decimals));
    if (col.decimals > kMaxDecimalsInRound)
      return c.Error("decimals must be at most " + std::to_string(kMaxDecimalsInRound));
    if (!names.insert(col.name).second)
      return r.Error("duplicate column name \"" + col.name + "\"");
  }
  std::span<const msgpack::object> weight;
  TALLY_RETURN_IF_ERROR(r.Array("weight", 2, &weight));
  FieldReader w(r.context() + ": weight", weight, 0);
  TALLY_RETURN_IF_ERROR(w.Uint("max", &out->weight.max));
  TALLY_RETURN_IF_ERROR(w.U32("decimals", &out->weight.decimals));
  if (out->weight.decimals > kMaxDecimalsInRound)
    return w.Error("decimals must be at most " + std::to_string(kMaxDecimalsInRound));
  TALLY_RETURN_IF_ERROR(r.U32("threshold", &out->threshold));
  std::span<const msgpack::object> graph;
  // Any length here (the decoder's bounds hold the allocation), so that 7 fields get the reason.
  TALLY_RETURN_IF_ERROR(r.Array("graph", SIZE_MAX, &graph));
  if (!graph.empty()) {
    if (graph.size() != 6) return r.Error("graph must be empty or an array of 6");
    FieldReader g(r.context() + ": graph", graph, 0);
    Neighbourhood& n = out->graph.emplace();
    TALLY_RETURN_IF_ERROR(g.U32("corrupt", &n.corrupt_ppm));
    TALLY_RETURN_IF_ERROR(g.U32("dropout", &n.dropout_ppm));
    TALLY_RETURN_IF_ERROR(g.U32("k", &n.degree));
    TALLY_RETURN_IF_ERROR(g.U32("t", &n.threshold));
    TALLY_RETURN_IF_ERROR(g.Fixed("seed", &n.seed));
    TALLY_RETURN_IF_ERROR(g.Fixed("signature", &n.signature));
  }
  // What a payload for these parameters would hold: never more than the limit, so that no
  // reader allocates for a payload nobody may send.
  if (PayloadLength(*out) > max_length)
    return r.Error("a payload of " + std::to_string(PayloadLength(*out)) +
                   " elements, over the limit of " + std::to_string(max_length));
  return Status::Ok();
}

}  // namespace tally::strict
