#include "schema/results.h"

#include <cstdlib>
#include <fstream>
#include <map>

#include "schema/decimal.h"
#include "schema/schema.h"
#include "schema/text.h"

namespace tally {
namespace {

// A value of the JSON objects Tally writes: a string, a number (kept as its text), a boolean,
// null, an array, or an object (a column's result). At most kMaxDepth levels deep.
struct Value {
  enum Kind { kString, kNumber, kBool, kNull, kArray, kObject } kind = kString;
  std::string text;  // string contents, or the number's digits
  bool flag = false;
  std::vector<Value> items;
  std::map<std::string, Value> fields;
};
constexpr int kMaxDepth = 4;  // line, "columns", a column, its "sum"

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}

  // The whole line: one object, nothing after it.
  Result<std::map<std::string, Value>> Line() {
    Result<std::map<std::string, Value>> out = Object(1);
    if (!out.ok()) return out;
    Space();
    if (at_ != s_.size()) return Error("text after the object");
    return out;
  }

 private:
  Result<std::map<std::string, Value>> Object(int depth) {
    std::map<std::string, Value> out;
    Space();
    if (!Eat('{')) return Error("expected '{'");
    Space();
    if (Eat('}')) return out;
    for (;;) {
      Space();
      Result<std::string> key = String();
      if (!key.ok()) return key.status();
      Space();
      if (!Eat(':')) return Error("expected ':' after \"" + *key + "\"");
      Result<Value> value = Any(depth + 1);
      if (!value.ok()) return value.status();
      if (!out.emplace(*key, std::move(*value)).second) return Error("\"" + *key + "\" twice");
      Space();
      if (Eat('}')) return out;
      if (!Eat(',')) return Error("expected ',' or '}'");
    }
  }

  Status Error(const std::string& what) const {
    return Status::Error(what + " at column " + std::to_string(at_ + 1));
  }
  void Space() {
    while (at_ < s_.size() &&
           (s_[at_] == ' ' || s_[at_] == '\t' || s_[at_] == '\r' || s_[at_] == '\n'))
      ++at_;
  }
  bool Eat(char c) {
    if (at_ < s_.size() && s_[at_] == c) {
      ++at_;
      return true;
    }
    return false;
  }

  Result<std::string> String() {
    if (!Eat('"')) return Error("expected a string");
    std::string out;
    while (at_ < s_.size() && s_[at_] != '"') {
      char c = s_[at_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= s_.size()) break;
      const char e = s_[at_++];
      if (e == '"' || e == '\\' || e == '/') {
        out += e;
      } else if (e == 'u' && at_ + 4 <= s_.size()) {
        // Tally escapes only single bytes this way (\u00XX).
        const std::string hex(s_.substr(at_, 4));
        char* end = nullptr;
        const long code = std::strtol(hex.c_str(), &end, 16);
        if (end != hex.c_str() + 4 || code > 0xff) return Error("unsupported \\u escape");
        out += static_cast<char>(code);
        at_ += 4;
      } else {
        return Error("unsupported escape");
      }
    }
    if (!Eat('"')) return Error("unterminated string");
    return out;
  }

  Result<Value> Any(int depth) {
    Space();
    Value v;
    if (at_ >= s_.size()) return Error("expected a value");
    const char c = s_[at_];
    if ((c == '[' || c == '{') && depth > kMaxDepth) return Error("nested too deeply");
    if (c == '{') {
      Result<std::map<std::string, Value>> fields = Object(depth);
      if (!fields.ok()) return fields.status();
      v.kind = Value::kObject;
      v.fields = std::move(*fields);
      return v;
    }
    if (s_.substr(at_, 4) == "null") {
      at_ += 4;
      v.kind = Value::kNull;
      return v;
    }
    if (c == '"') {
      Result<std::string> text = String();
      if (!text.ok()) return text.status();
      v.text = std::move(*text);
      return v;
    }
    if (c == '[') {
      ++at_;
      v.kind = Value::kArray;
      Space();
      if (Eat(']')) return v;
      for (;;) {
        Result<Value> item = Any(depth + 1);
        if (!item.ok()) return item.status();
        v.items.push_back(std::move(*item));
        Space();
        if (Eat(']')) return v;
        if (!Eat(',')) return Error("expected ',' or ']'");
      }
    }
    for (std::string_view word : {"true", "false"}) {
      if (s_.substr(at_, word.size()) == word) {
        at_ += word.size();
        v.kind = Value::kBool;
        v.flag = word == "true";
        return v;
      }
    }
    const size_t start = at_;
    while (at_ < s_.size() && ((s_[at_] >= '0' && s_[at_] <= '9') || s_[at_] == '.')) ++at_;
    if (at_ == start) return Error("expected a value");
    v.kind = Value::kNumber;
    v.text = std::string(s_.substr(start, at_ - start));
    return v;
  }

  std::string_view s_;
  size_t at_ = 0;
};

// An integer written as a number or, above 2^53, as a decimal string.
Result<uint64_t> Integer(const Value& v, std::string_view what) {
  uint64_t out = 0;
  if ((v.kind == Value::kNumber || v.kind == Value::kString) && ParseU64(v.text, out)) return out;
  return Status::Error(std::string(what) + " must be an integer");
}

// A decimal string as Tally writes it (FormatUnits, FormatRatio): any number of digits.
Result<std::string> DecimalText(const Value& v, std::string_view what) {
  if (v.kind != Value::kString || !IsDecimalText(v.text))
    return Status::Error(std::string(what) + " must be a decimal string");
  return v.text;
}

// A column's "sum" or "mean": one value for a scalar column, an array for a vector column.
Status Elements(const Value& v, std::string_view what, bool nullable,
                std::vector<std::optional<std::string>>* out) {
  const std::vector<Value> one = {v};
  for (const Value& item : v.kind == Value::kArray ? v.items : one) {
    if (nullable && item.kind == Value::kNull) {
      out->push_back(std::nullopt);
      continue;
    }
    Result<std::string> text = DecimalText(item, what);
    if (!text.ok()) return text.status();
    out->push_back(std::move(*text));
  }
  if (out->empty()) return Status::Error(std::string(what) + " is empty");
  return Status::Ok();
}

Result<ColumnResult> ColumnOf(const Value& v) {
  if (v.kind != Value::kObject) return Status::Error("\"columns\" must hold objects");
  const auto& f = v.fields;
  ColumnResult c;
  for (const char* key : {"name", "count", "sum", "mean"})
    if (!f.count(key)) return Status::Error(std::string("a column has no \"") + key + "\"");
  if (f.size() != (f.count("weight") ? 5u : 4u))
    return Status::Error("unexpected fields in a column");
  if (f.at("name").kind != Value::kString || !ValidName(f.at("name").text))
    return Status::Error("a column's \"name\" must be a name");
  c.name = f.at("name").text;
  Result<uint64_t> count = Integer(f.at("count"), "a column's \"count\"");
  if (!count.ok()) return count.status();
  c.count = *count;
  if (f.count("weight")) {
    Result<std::string> weight = DecimalText(f.at("weight"), "a column's \"weight\"");
    if (!weight.ok()) return weight.status();
    c.weight = std::move(*weight);
  }
  std::vector<std::optional<std::string>> sum;
  TALLY_RETURN_IF_ERROR(Elements(f.at("sum"), "a column's \"sum\"", false, &sum));
  for (auto& s : sum) c.sum.push_back(std::move(*s));
  TALLY_RETURN_IF_ERROR(Elements(f.at("mean"), "a column's \"mean\"", true, &c.mean));
  if (c.mean.size() != c.sum.size())
    return Status::Error("a column's \"mean\" and \"sum\" differ in length");
  return c;
}

Result<RoundResult> ResultOf(std::map<std::string, Value>& f, const RoundId& round) {
  RoundResult r;
  r.round = round;
  const bool columns = f.count("columns") > 0;
  for (const char* key :
       {columns ? "columns" : "aggregate", "participants", "dropped", "in_range", "elapsed_ms"})
    if (!f.count(key)) return Status::Error(std::string("no \"") + key + "\"");
  if (!columns && !f.count("range")) return Status::Error("no \"range\"");
  if (f.size() != (columns ? 6u : 7u)) return Status::Error("unexpected fields in a result line");
  for (auto [key, names] :
       {std::pair{"participants", &r.params.participants}, std::pair{"dropped", &r.dropped}}) {
    if (f[key].kind != Value::kArray)
      return Status::Error("\"" + std::string(key) + "\" must be a list");
    for (const Value& p : f[key].items) {
      if (p.kind != Value::kString || !ValidName(p.text))
        return Status::Error("\"" + std::string(key) + "\" must hold party names");
      names->push_back(p.text);
    }
  }
  if (f["in_range"].kind != Value::kBool)
    return Status::Error("\"in_range\" must be true or false");
  r.in_range = f["in_range"].flag;
  if (f["elapsed_ms"].kind != Value::kNumber)
    return Status::Error("\"elapsed_ms\" must be a number");
  r.elapsed_ms = std::strtod(f["elapsed_ms"].text.c_str(), nullptr);
  if (columns) {
    if (f["columns"].kind != Value::kArray || f["columns"].items.empty())
      return Status::Error("\"columns\" must be a list of columns");
    for (const Value& item : f["columns"].items) {
      Result<ColumnResult> c = ColumnOf(item);
      if (!c.ok()) return c.status();
      r.columns.push_back(std::move(*c));
      r.params.columns.push_back(Column{r.columns.back().name});
    }
    r.params.length = static_cast<uint32_t>(r.columns[0].sum.size());
    return r;
  }
  const Value& aggregate = f["aggregate"];
  if (aggregate.kind == Value::kArray) {
    for (const Value& item : aggregate.items) {
      Result<uint64_t> n = Integer(item, "each element of \"aggregate\"");
      if (!n.ok()) return n.status();
      r.aggregate.push_back(*n);
    }
  } else {
    Result<uint64_t> n = Integer(aggregate, "\"aggregate\"");
    if (!n.ok()) return n.status();
    r.aggregate.push_back(*n);
  }
  if (r.aggregate.empty()) return Status::Error("\"aggregate\" is empty");
  Result<uint64_t> range = Integer(f["range"], "\"range\"");
  if (!range.ok()) return range.status();
  r.params.range = *range;
  r.params.length = static_cast<uint32_t>(r.aggregate.size());
  return r;
}

// ["a", "b"]: names are [a-z0-9_-], no escaping needed.
std::string NamesJson(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", \"" : "\"") + names[i] + "\"";
  return out + "]";
}

// A column's sums or means: one JSON value for a scalar column, an array for a vector.
std::string ElementsJson(const std::vector<std::optional<std::string>>& v) {
  auto one = [](const std::optional<std::string>& s) { return s ? JsonString(*s) : "null"; };
  if (v.size() == 1) return one(v[0]);
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + one(v[i]);
  return out + "]";
}

std::string ColumnsJson(const std::vector<ColumnResult>& columns) {
  std::string out = "[";
  for (size_t i = 0; i < columns.size(); ++i) {
    const ColumnResult& c = columns[i];
    out += std::string(i ? ", " : "") + "{\"name\": " + JsonString(c.name) +
           ", \"count\": " + JsonNumbers(std::span<const uint64_t>(&c.count, 1));
    if (!c.weight.empty()) out += ", \"weight\": " + JsonString(c.weight);
    out += ", \"sum\": " +
           ElementsJson(std::vector<std::optional<std::string>>(c.sum.begin(), c.sum.end())) +
           ", \"mean\": " + ElementsJson(c.mean) + "}";
  }
  return out + "]";
}

}  // namespace

std::string ResultJson(const RoundResult& r) {
  std::string out = "{\"round\": \"" + RoundHex(r.round) + "\", " +
                    (r.columns.empty() ? "\"aggregate\": " + JsonNumbers(r.aggregate)
                                       : "\"columns\": " + ColumnsJson(r.columns)) +
                    ", \"participants\": " + NamesJson(r.params.participants) +
                    ", \"dropped\": " + NamesJson(r.dropped);
  if (r.columns.empty())
    out += ", \"range\": " + JsonNumbers(std::span<const uint64_t>(&r.params.range, 1));
  out += std::string(", \"in_range\": ") + (r.in_range ? "true" : "false") +
         ", \"elapsed_ms\": " + FormatFixed(r.elapsed_ms, 3) + "}";
  return out;
}

std::string AbortJson(const RoundId& round, std::string_view reason) {
  return "{\"round\": \"" + RoundHex(round) + "\", \"aborted\": " + JsonString(reason) + "}";
}

Result<ResultsLine> ParseResultsLine(std::string_view line) {
  Result<std::map<std::string, Value>> fields = Reader(line).Line();
  if (!fields.ok()) return fields.status();
  auto& f = *fields;
  ResultsLine out;
  auto round = f.find("round");
  if (round == f.end() || round->second.kind != Value::kString)
    return Status::Error("no \"round\" string");
  Result<RoundId> id = RoundFromHex(round->second.text);
  if (!id.ok()) return Status::Error("\"round\": " + id.message());
  out.round = *id;
  if (auto aborted = f.find("aborted"); aborted != f.end()) {
    if (aborted->second.kind != Value::kString || f.size() != 2)
      return Status::Error("an abort line holds \"round\" and the \"aborted\" reason only");
    out.aborted = aborted->second.text;
    return out;
  }
  Result<RoundResult> result = ResultOf(f, out.round);
  if (!result.ok()) return result.status();
  out.result = std::move(*result);
  return out;
}

Result<RoundRecord> ReadRoundRecord(const std::filesystem::path& path, const RoundId& round) {
  std::ifstream in(path);
  if (!in) return Status::Error("cannot open results file " + path.string());
  RoundRecord record;
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    Result<ResultsLine> parsed = ParseResultsLine(line);
    if (!parsed.ok())
      return Status::Error(path.string() + ":" + std::to_string(n) + ": " + parsed.message());
    if (parsed->round != round) continue;
    if (parsed->result) record.result = std::move(parsed->result);
    if (parsed->aborted) record.aborted = std::move(parsed->aborted);
  }
  return record;
}

}  // namespace tally
