#include "nodes/input.h"

#include <sodium.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <sstream>

#include "schema/csv.h"
#include "schema/decimal.h"
#include "schema/protocol.h"
#include "schema/schema.h"
#include "schema/text.h"

namespace tally {
namespace {

bool IsNumber(const std::string& s, bool floats) {
  if (!floats) return ParseDecimal(s).ok();
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size();
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t start = 0;
  while (start < s.size() && (s[start] == ' ' || s[start] == '\t')) ++start;
  return s.substr(start);
}

}  // namespace

Result<PatientInput> ReadPatientInput(const std::filesystem::path& path, bool floats) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error("cannot read " + path.string());
  // Everything read from the file is wiped on every way out, error or not.
  std::string text{std::istreambuf_iterator<char>(in), {}};
  std::vector<std::pair<size_t, std::string>> lines;  // content lines with their numbers
  std::string csv;
  Result<std::vector<CsvRow>> rows = std::vector<CsvRow>{};
  struct Wipe {
    std::function<void()> f;
    ~Wipe() { f(); }
  } wipe{[&] {
    auto zero = [](std::string& t) { sodium_memzero(t.data(), t.size()); };
    zero(text);
    zero(csv);
    for (auto& [n, l] : lines) zero(l);
    if (rows.ok())
      for (auto& row : *rows)
        for (auto& cell : row) zero(cell);
  }};
  {
    std::istringstream lines_in(text);
    std::string line;
    for (size_t n = 1; std::getline(lines_in, line); ++n) {
      std::string t = Trimmed(line);
      sodium_memzero(line.data(), line.size());
      if (t.empty() || t[0] == '#') continue;
      lines.emplace_back(n, std::move(t));
    }
  }
  const std::string where = path.string() + ":";
  PatientInput input;
  input.floats = floats;
  if (lines.empty()) return Status::Error(path.string() + ": no values");
  if (lines[0].second.find(',') == std::string::npos && IsNumber(lines[0].second, floats)) {
    // One value per line.
    for (auto& [n, l] : lines) {
      if (!IsNumber(l, floats))
        return Status::Error(where + std::to_string(n) + ": not a " +
                             (floats ? "number" : "decimal"));
      if (input.cells.size() >= kMaxVectorLength)
        return Status::Error(path.string() + ": more than " + std::to_string(kMaxVectorLength) +
                             " values");
      input.cells.push_back(std::move(l));
    }
    return input;
  }
  // CSV: a header and one row.
  for (const auto& [n, l] : lines) csv += l + "\n";
  const size_t header_line = lines[0].first;
  const size_t row_line = lines.size() > 1 ? lines[1].first : header_line;
  rows = ParseCsv(csv);
  if (!rows.ok()) return Status::Error(path.string() + ": " + rows.message());
  // A first line of numbers is values, not a header: a header is required (or one value a line).
  const CsvRow& header = (*rows)[0];
  if (std::all_of(header.begin(), header.end(),
                  [&](const std::string& h) { return IsNumber(Trimmed(h), floats); }))
    return Status::Error(where + std::to_string(header_line) +
                         ": a CSV input starts with a header naming its columns");
  if (rows->size() != 2)
    return Status::Error(path.string() + ": a CSV input is a header and one row of values, not " +
                         std::to_string(rows->size() - 1) + " rows");
  std::set<std::string> seen;
  for (size_t i = 0; i < header.size(); ++i) {
    const std::string name = ColumnName(Trimmed(header[i]));
    if (!ValidName(name))
      return Status::Error(where + std::to_string(header_line) + ": the name of column " +
                           std::to_string(i + 1) + " is not [a-z0-9_-]{1,32}");
    if (!seen.insert(name).second)
      return Status::Error(where + std::to_string(header_line) + ": column " + name + " twice");
    input.names.push_back(name);
  }
  for (std::string& cell : (*rows)[1]) {
    std::string t = Trimmed(cell);
    if (!t.empty() && !IsNumber(t, floats)) {
      sodium_memzero(t.data(), t.size());
      return Status::Error(where + std::to_string(row_line) + ": column " +
                           input.names[input.cells.size()] + ": not a " +
                           (floats ? "number" : "decimal"));
    }
    input.cells.push_back(std::move(t));
  }
  return input;
}

namespace {

// "a=x,b=y" -> {{a, x}, {b, y}}; a spec without '=' applies to every column: {{"", spec}}.
Result<std::vector<std::pair<std::string, std::string>>> Assignments(const std::string& flag,
                                                                     const std::string& spec) {
  std::vector<std::pair<std::string, std::string>> out;
  if (spec.empty()) return out;
  if (spec.find('=') == std::string::npos) return out = {{"", spec}};
  std::istringstream in(spec);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || !ValidName(item.substr(0, eq)))
      return Status::Error(flag + ": \"" + item + "\" is not NAME=VALUE");
    for (const auto& [name, value] : out)
      if (name == item.substr(0, eq)) return Status::Error(flag + ": " + name + " twice");
    out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  return out;
}

// The value given for `column` ("" applies to all), or nullptr.
const std::string* For(const std::vector<std::pair<std::string, std::string>>& specs,
                       const std::string& column) {
  for (const auto& [name, value] : specs)
    if (name.empty() || name == column) return &value;
  return nullptr;
}

}  // namespace

Result<std::vector<Column>> ParseColumns(const std::string& names, const std::string& bounds,
                                         const std::string& decimals) {
  auto bound_specs = Assignments("--bounds", bounds);
  if (!bound_specs.ok()) return bound_specs.status();
  auto decimal_specs = Assignments("--decimals", decimals);
  if (!decimal_specs.ok()) return decimal_specs.status();
  std::vector<std::string> list;
  if (!names.empty()) {
    std::istringstream in(names);
    for (std::string n; std::getline(in, n, ',');) {
      if (!ValidName(n)) return Status::Error("--columns: \"" + n + "\" is not [a-z0-9_-]{1,32}");
      if (std::find(list.begin(), list.end(), n) != list.end())
        return Status::Error("--columns: " + n + " twice");
      list.push_back(n);
    }
  } else {
    for (const auto& [name, value] : *bound_specs) list.push_back(name.empty() ? "value" : name);
  }
  if (list.empty()) return Status::Error("--bounds LO:HI is required for a round with columns");
  if (list.size() > kMaxColumns)
    return Status::Error("--columns: more than " + std::to_string(kMaxColumns) + " columns");
  for (const auto* specs : {&*bound_specs, &*decimal_specs})
    for (const auto& [name, value] : *specs)
      if (!name.empty() && std::find(list.begin(), list.end(), name) == list.end())
        return Status::Error((specs == &*bound_specs ? "--bounds" : "--decimals") +
                             std::string(": no column ") + name);
  std::vector<Column> out;
  for (const std::string& name : list) {
    const std::string* range = For(*bound_specs, name);
    if (range == nullptr) return Status::Error("--bounds: none for column " + name);
    const size_t colon = range->find(':');
    if (colon == std::string::npos)
      return Status::Error("--bounds " + name + ": want LO:HI, got \"" + *range + "\"");
    auto lo = ParseDecimal(range->substr(0, colon));
    auto hi = ParseDecimal(range->substr(colon + 1));
    if (!lo.ok() || !hi.ok())
      return Status::Error("--bounds " + name + ": " + (lo.ok() ? hi : lo).message());
    Column c;
    c.name = name;
    c.decimals = std::max(lo->decimals, hi->decimals);  // as written: "10.0" is one
    if (const std::string* d = For(*decimal_specs, name)) {
      uint64_t v = 0;
      if (!ParseU64(*d, v) || v > kMaxDecimalsInRound)
        return Status::Error("--decimals " + name + ": want 0.." +
                             std::to_string(kMaxDecimalsInRound));
      c.decimals = static_cast<uint32_t>(v);
    }
    auto lo_units = ToUnits(*lo, c.decimals);
    auto hi_units = ToUnits(*hi, c.decimals);
    if (!lo_units.ok() || !hi_units.ok())
      return Status::Error("--bounds " + name + ": " +
                           (lo_units.ok() ? hi_units : lo_units).message());
    constexpr Int128 kMax = INT64_MAX;
    if (*lo_units < -kMax || *lo_units > kMax || *hi_units < -kMax || *hi_units > kMax)
      return Status::Error("--bounds " + name + ": too large at " + std::to_string(c.decimals) +
                           " decimals");
    c.lower = static_cast<int64_t>(*lo_units);
    c.upper = static_cast<int64_t>(*hi_units);
    if (c.lower > c.upper)
      return Status::Error("--bounds " + name + ": " + Format(*lo) + " is above " + Format(*hi));
    out.push_back(std::move(c));
  }
  return out;
}

Result<Weight> ParseWeightMax(const std::string& text) {
  auto d = ParseDecimal(text);
  if (!d.ok() || d->units <= 0) return Status::Error("--weight-max: want a decimal above 0");
  Weight w;
  w.decimals = d->decimals;  // as written
  auto units = ToUnits(*d, w.decimals);
  if (!units.ok() || *units > static_cast<Int128>(INT64_MAX))
    return Status::Error("--weight-max: too large");
  w.max = static_cast<uint64_t>(*units);
  return w;
}

}  // namespace tally
