// tally-launch (run by tools/launch): one real secure round with separate processes.
// Makes keys if needed, starts the broker on free loopback ports, the patients with the
// inputs it hands out, and the hospital; waits on readiness lines and process exits; checks
// the aggregate against the sum of the inputs; stops everything it started.
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "schema/csv.h"
#include "schema/decimal.h"
#include "schema/log.h"
#include "schema/results.h"
#include "schema/round_graph.h"
#include "schema/schema.h"
#include "schema/text.h"
#include "tools/cluster.h"

namespace fs = std::filesystem;
using std::chrono::milliseconds;

using tally::JsonNumbers;
using tally::ParseU64;

namespace {

constexpr const char* kUsage =
    "usage: tools/launch [--patients N | --names a,b,c] [--values V1,V2,...] [--range R]\n"
    "                    [--length L] [--deadline-ms MS] [--json] [--workdir DIR]\n"
    "       tools/launch --inputs COHORT.csv [--bounds SPEC] [--decimals SPEC] [--json] ...\n"
    "\n"
    "Runs one secure round: a broker, a hospital and the patients as separate processes on\n"
    "loopback. Defaults: patients alice, bob and charlie, R = 1000, random inputs in\n"
    "[0, R/n] so that, as the scenario assumes, the aggregate lies in [0, R] too.\n"
    "  --patients N      N patients (2..1000) named p01, p02, ... (p001, ... from 100)\n"
    "  --graph auto|off  auto (default): above 100 patients a neighbourhood round, where each\n"
    "                    patient masks with and shares to k neighbours only (tally-node\n"
    "                    --graph); off: every patient with every other\n"
    "  --corrupt-rate F  the fraction of corrupt patients a neighbourhood round assumes\n"
    "                    (default 0.05, at least 0.05)\n"
    "  --dropout-rate F  the fraction of dropouts it assumes (default 0.10)\n"
    "  --names a,b,c     the patients' names\n"
    "  --values V1,...   the patients' inputs (scalars), instead of random ones\n"
    "  --range R         inputs lie in [0, R] (default 1000)\n"
    "  --length L        vectors of L elements (default 1)\n"
    "  --deadline-ms MS  the broker's phase deadline (default 10000, plus (0.4 ms x k + 30 ms)\n"
    "                    x N per core for N patients with k peers each: they all compute on\n"
    "                    this machine, each a key with every peer; 225 s for a full round of\n"
    "                    1000 on 2 cores, 33 s for a neighbourhood round of 1000)\n"
    "  --threshold T     the survivors the round needs (default: the safe minimum,\n"
    "                    floor(2N/3)+1 of N patients)\n"
    "  --drop K|a,b      kill -9 these patients (or the last K) when the round reaches PHASE: the\n"
    "                    round completes over the others if at least T remain\n"
    "  --drop-at PHASE   share, mask (default: after sharing, before the masked inputs),\n"
    "                    confirm or unmask\n"
    "  --inputs FILE     a cohort: CSV with a header of column names and one row per patient\n"
    "                    (a column \"name\" names them, else p001, p002, ...; an empty cell is\n"
    "                    missing); one patient process per row, the hospital asks for every\n"
    "                    other column; prints each column's count, sum and mean next to the\n"
    "                    exact sum computed here from the file\n"
    "  --bounds SPEC     with --inputs: the columns' bounds, as tally-node takes them (default:\n"
    "                    the smallest powers of ten that hold each column's values, e.g.\n"
    "                    0:1000 or -100:10)\n"
    "  --decimals SPEC   with --inputs: digits after the point (default: the most any cell of\n"
    "                    the column is written with)\n"
    "  --json            print one JSON object (numbers above 2^53 as strings)\n"
    "  --workdir DIR     keys, captures, logs and results go here (default run)\n"
    "The hospital asks for its round once every patient has reached the broker.\n"
    "Exit: 0 the aggregate equals the sum of the survivors' inputs (every patient the\n"
    "hospital names dropped was one killed), 1 it does not or the round failed, 2 bad\n"
    "usage.\n";

int Usage(const std::string& e) {
  std::cerr << "launch: " << e << "\n" << kUsage;
  return 2;
}

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

std::string Joined(const std::vector<std::string>& v, const std::string& sep, bool quote) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + (quote ? "\"" + v[i] + "\"" : v[i]);
  return out;
}

// A cohort file: patients' names and, per column, each patient's cell ("" missing).
struct Cohort {
  std::vector<std::string> names;
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> cells;  // [patient][column]
};

tally::Result<Cohort> ReadCohort(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return tally::Status::Error("cannot read " + path.string());
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  auto rows = tally::ParseCsv(text);
  if (!rows.ok()) return tally::Status::Error(path.string() + ": " + rows.message());
  if (rows->size() < 3)
    return tally::Status::Error(path.string() + ": want a header and at least 2 patients' rows");
  if (rows->size() - 1 > tally::kMaxParticipants)
    return tally::Status::Error(path.string() + ": more than " +
                                std::to_string(tally::kMaxParticipants) + " patients");
  Cohort c;
  std::optional<size_t> name_at;
  const tally::CsvRow& header = (*rows)[0];
  for (size_t i = 0; i < header.size(); ++i) {
    const std::string column = tally::ColumnName(header[i]);
    if (column == "name") {
      name_at = i;
    } else if (!tally::ValidName(column)) {
      return tally::Status::Error(path.string() + ": column \"" + header[i] +
                                  "\" is not a name ([a-z0-9_-]{1,32})");
    } else {
      c.columns.push_back(column);
    }
  }
  if (c.columns.empty()) return tally::Status::Error(path.string() + ": no value columns");
  for (size_t r = 1; r < rows->size(); ++r) {
    const tally::CsvRow& row = (*rows)[r];
    char fallback[32];
    std::snprintf(fallback, sizeof fallback, "p%03zu", r);
    const std::string name = name_at ? row[*name_at] : fallback;
    if (!tally::ValidName(name) || name == "broker" || name == "hospital")
      return tally::Status::Error(path.string() + ": row " + std::to_string(r) + ": bad name \"" +
                                  name + "\"");
    if (std::find(c.names.begin(), c.names.end(), name) != c.names.end())
      return tally::Status::Error(path.string() + ": patient " + name + " twice");
    c.names.push_back(name);
    auto& cells = c.cells.emplace_back();
    for (size_t i = 0; i < row.size(); ++i)
      if (!name_at || i != *name_at) cells.push_back(row[i]);
  }
  return c;
}

// What the round must give, computed here from the file: per column the count, the exact sum
// (units of 10^-decimals) and the bounds spec derived from the data.
struct Expected {
  uint64_t count = 0;
  tally::Int128 sum = 0;
  uint32_t decimals = 0;
  std::optional<tally::Decimal> min, max;
};

// Decimals and bounds come from every row, the count and sum from the rows not `dropped`.
tally::Result<std::vector<Expected>> Compute(const Cohort& c,
                                             const std::vector<std::string>& dropped = {}) {
  std::vector<Expected> out(c.columns.size());
  for (size_t col = 0; col < c.columns.size(); ++col) {
    Expected& e = out[col];
    std::vector<std::pair<tally::Decimal, bool>> values;  // and whether it is summed
    for (size_t p = 0; p < c.names.size(); ++p) {
      const std::string& cell = c.cells[p][col];
      if (cell.empty()) continue;
      auto d = tally::ParseDecimal(cell);
      if (!d.ok())
        return tally::Status::Error(c.names[p] + ": column " + c.columns[col] + ": " + d.message());
      e.decimals = std::max(e.decimals, d->decimals);
      values.emplace_back(*d,
                          std::find(dropped.begin(), dropped.end(), c.names[p]) == dropped.end());
    }
    for (const auto& [d, summed] : values) {
      const tally::Int128 units = tally::ToUnits(d, e.decimals).value();
      if (summed) {
        e.sum += units;
        ++e.count;
      }
      if (!e.min || units < tally::ToUnits(*e.min, e.decimals).value()) e.min = d;
      if (!e.max || units > tally::ToUnits(*e.max, e.decimals).value()) e.max = d;
    }
  }
  return out;
}

// The bounds spec a round over `c` declares: for each column [0 or -10^k, 10^k or 0], the
// smallest powers of ten that hold its values, so the bounds tell the other parties the data's
// order of magnitude and no more (its extremes would be more).
std::string DerivedBounds(const Cohort& c, const std::vector<Expected>& e) {
  // The smallest 10^k (k >= 0) at least |units| / 10^decimals, as text.
  auto power_above = [](tally::Int128 units, uint32_t decimals) {
    const tally::Int128 magnitude = units < 0 ? -units : units;
    const tally::Int128 scale = static_cast<tally::Int128>(tally::Pow10(decimals));
    std::string out = "1";
    for (tally::Int128 p = scale; p < magnitude; p *= 10) out += "0";
    return out;
  };
  std::string spec;
  for (size_t i = 0; i < c.columns.size(); ++i) {
    std::string lo = "0", hi = "1";
    if (e[i].min) {
      const tally::Int128 min = tally::ToUnits(*e[i].min, e[i].decimals).value();
      const tally::Int128 max = tally::ToUnits(*e[i].max, e[i].decimals).value();
      if (min < 0) lo = "-" + power_above(min, e[i].decimals);
      hi = max > 0 ? power_above(max, e[i].decimals) : "0";
      if (lo == "0" && hi == "0") hi = "1";
    }
    spec += (spec.empty() ? "" : ",") + c.columns[i] + "=" + lo + ":" + hi;
  }
  return spec;
}

std::string Short(const std::vector<uint64_t>& v) {
  if (v.size() <= 5) return JsonNumbers(v);
  return "[" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", ... " +
         std::to_string(v.back()) + "] (" + std::to_string(v.size()) + " elements)";
}

uint64_t Uniform(uint64_t range) {  // uniform in [0, range]
  if (range == UINT64_MAX) {
    uint64_t v;
    randombytes_buf(&v, sizeof v);
    return v;
  }
  if (range < UINT32_MAX) return randombytes_uniform(static_cast<uint32_t>(range + 1));
  uint64_t v, limit = UINT64_MAX - (UINT64_MAX % (range + 1));
  do randombytes_buf(&v, sizeof v);
  while (v >= limit);
  return v % (range + 1);
}

// The patients `spec` names: a count K (the last K of `names`) or names among them.
tally::Result<std::vector<std::string>> DropList(const std::string& spec,
                                                 const std::vector<std::string>& names) {
  if (spec.empty()) return std::vector<std::string>{};
  uint64_t k = 0;
  if (ParseU64(spec, k)) {
    if (k >= names.size())
      return tally::Status::Error("--drop " + spec + ": the round has " +
                                  std::to_string(names.size()) + " patients");
    return std::vector<std::string>(names.end() - static_cast<std::ptrdiff_t>(k), names.end());
  }
  std::vector<std::string> out = Split(spec);
  for (const auto& n : out)
    if (std::find(names.begin(), names.end(), n) == names.end())
      return tally::Status::Error("--drop: " + n + " is not a patient of the round");
  return out;
}

// Why the hospital's dropped patients are not ones told to vanish, or "".
std::string UnexpectedDropouts(const std::vector<std::string>& dropped,
                               const std::vector<std::string>& told) {
  std::vector<std::string> unexpected;
  for (const auto& n : dropped)
    if (std::find(told.begin(), told.end(), n) == told.end()) unexpected.push_back(n);
  return unexpected.empty() ? "" : Joined(unexpected, ", ", false) + " dropped out unasked";
}

// The participants not in `dropped`.
std::vector<std::string> Survivors(const std::vector<std::string>& names,
                                   const std::vector<std::string>& dropped) {
  std::vector<std::string> out;
  for (const auto& n : names)
    if (!std::count(dropped.begin(), dropped.end(), n)) out.push_back(n);
  return out;
}

// "killed p09, p10 (SIGKILL) at mask; the sum is over the 8 survivors (dropped: p09, p10)".
std::string DropLine(const std::vector<std::string>& killed, const std::string& at,
                     const std::vector<std::string>& names,
                     const std::vector<std::string>& dropped) {
  std::string out;
  if (!killed.empty()) out = "killed " + Joined(killed, ", ", false) + " (SIGKILL) at " + at + "; ";
  out += "the sum is over the " + std::to_string(names.size() - dropped.size()) + " survivors";
  if (!dropped.empty()) out += " (dropped: " + Joined(dropped, ", ", false) + ")";
  if (!killed.empty() && dropped.empty())
    out += ": the killed had sent their masked inputs, or the round never reached " + at;
  return out;
}

// Starts the broker and one patient per name (with its arguments), waits until every patient
// has reached the broker, then runs the hospital with `hospital_args`: its result line. The
// patients in `drop` are killed (SIGKILL) the moment they say the round reached their phase.
tally::Result<std::string> RunRound(tally::Cluster& cluster, const std::vector<std::string>& names,
                                    const std::vector<std::vector<std::string>>& patient_args,
                                    const std::vector<std::string>& hospital_args,
                                    const std::vector<std::string>& drop, uint64_t deadline_ms,
                                    uint64_t peers, const tally::LogSink& log) {
  if (deadline_ms == 0) deadline_ms = tally::LocalPhaseDeadlineMs(names.size(), peers);
  // A phase may take up to its deadline: nodes must not give up waiting before it passes.
  const std::vector<std::string> idle = {
      "--idle-timeout-ms", std::to_string(std::max<uint64_t>(60000, 2 * deadline_ms))};
  if (auto s = cluster.StartBroker({"--deadline-ms", std::to_string(deadline_ms)}); !s.ok())
    return s;
  auto next_progress = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (size_t p = 0; p < names.size(); ++p) {
    std::vector<std::string> args = patient_args[p];
    args.insert(args.end(), idle.begin(), idle.end());
    if (auto s = cluster.StartPatient(names[p], args); !s.ok()) return s;
    if (std::chrono::steady_clock::now() >= next_progress) {
      log("launch: " + std::to_string(cluster.started()) + " of " + std::to_string(names.size()) +
          " patients started, " + std::to_string(cluster.ready()) + " connected");
      next_progress = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    }
  }
  // Ask for the round once every patient is connected, not before: a cohort starting at once
  // keeps a small machine busy for a while (every patient derives a key with every other).
  auto ready = cluster.WaitPatientsReady(milliseconds(60000), [&](size_t n, size_t total) {
    log("launch: " + std::to_string(n) + " of " + std::to_string(total) + " patients connected");
  });
  if (!ready.ok()) return ready;
  const auto round_budget = milliseconds(6 * deadline_ms + 15000);
  // One watcher per patient to drop: its "vanish PHASE" line, then kill -9, as a crash would.
  std::vector<std::thread> killers;
  for (const std::string& name : drop) {
    tally::Child* child = cluster.patient(name);
    killers.emplace_back([child, name, round_budget, &log] {
      const auto line = child->ReadLine(round_budget);
      if (!line || line->rfind("vanish ", 0) != 0) return;
      child->Signal(SIGKILL);
      log("launch: killed " + name + " (SIGKILL) at " + line->substr(7));
    });
  }
  std::vector<std::string> hospital_all = hospital_args;
  hospital_all.insert(hospital_all.end(), idle.begin(), idle.end());
  auto hospital = cluster.StartHospital("hospital", hospital_all);
  if (!hospital.ok()) {
    cluster.StopAll();
    for (auto& k : killers) k.join();
    return hospital.status();
  }
  auto line = (*hospital)->ReadLine(round_budget);
  auto code = (*hospital)->Wait(round_budget);
  cluster.StopAll();  // the watchers' patients too: their reads end
  for (auto& k : killers) k.join();
  if (!line || code.value_or(-1) != 0)
    return tally::Status::Error("the round failed: hospital: " + cluster.WhyStopped("hospital"));
  return *line;
}

// The cohort's round: per column its count, sum and mean next to the exact sum from the file.
int PrintCohort(const Cohort& c, const std::vector<Expected>& expected,
                const tally::ResultsLine& result, const std::vector<std::string>& killed,
                const std::string& drop_at, int64_t elapsed_ms, bool json,
                const fs::path& workdir) {
  const auto& columns = result.result->columns;
  bool all = columns.size() == c.columns.size();
  std::vector<bool> match(c.columns.size(), false);
  for (size_t i = 0; all && i < columns.size(); ++i) {
    const std::string want = tally::FormatUnits(expected[i].sum, expected[i].decimals);
    match[i] = columns[i].name == c.columns[i] && columns[i].count == expected[i].count &&
               columns[i].sum.size() == 1 && columns[i].sum[0] == want;
    all = all && match[i];
  }
  const std::string round = tally::RoundHex(result.round);
  if (json) {
    std::cout << "{\"columns\": [";
    for (size_t i = 0; i < columns.size() && i < c.columns.size(); ++i) {
      const auto& col = columns[i];
      std::cout << (i ? ", " : "") << "{\"name\": " << tally::JsonString(col.name)
                << ", \"count\": " << col.count << ", \"sum\": " << tally::JsonString(col.sum[0])
                << ", \"mean\": " << (col.mean[0] ? tally::JsonString(*col.mean[0]) : "null")
                << ", \"expected_sum\": "
                << tally::JsonString(tally::FormatUnits(expected[i].sum, expected[i].decimals))
                << ", \"match\": " << (match[i] ? "true" : "false") << "}";
    }
    std::cout << "], \"participants\": [" << Joined(c.names, ", ", true) << "], \"survivors\": ["
              << Joined(Survivors(c.names, result.result->dropped), ", ", true)
              << "], \"dropped\": [" << Joined(result.result->dropped, ", ", true)
              << "], \"round\": \"" << round << "\", \"elapsed_ms\": " << elapsed_ms
              << ", \"match\": " << (all ? "true" : "false") << "}" << std::endl;
    return all ? 0 : 1;
  }
  std::vector<std::vector<std::string>> rows = {
      {"column", "count", "sum", "expected sum", "mean", ""}};
  for (size_t i = 0; i < columns.size() && i < c.columns.size(); ++i) {
    const auto& col = columns[i];
    rows.push_back({col.name, std::to_string(col.count), col.sum[0],
                    tally::FormatUnits(expected[i].sum, expected[i].decimals),
                    col.mean[0] ? *col.mean[0] : "-", match[i] ? "match" : "MISMATCH"});
  }
  std::vector<size_t> width(6, 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  const auto& dropped = result.result->dropped;
  std::cout << c.names.size() << " patients, " << c.columns.size() << " columns; round " << round
            << "\n";
  if (!killed.empty() || !dropped.empty())
    std::cout << DropLine(killed, drop_at, c.names, dropped) << "\n";
  for (const auto& row : rows) {
    std::string line = "  " + row[0] + std::string(width[0] - row[0].size(), ' ');
    for (size_t i = 1; i < 5; ++i)
      line += "  " + std::string(width[i] - row[i].size(), ' ') + row[i];
    std::cout << line << (row[5].empty() ? "" : "  " + row[5]) << "\n";
  }
  std::cout << (all ? "every sum matches the exact sum of the file"
                    : "a sum does NOT match the exact sum of the file")
            << "\ntime " << elapsed_ms << " ms\nlogs, captures, results: " << workdir.string()
            << "/" << std::endl;
  return all ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> names = {"alice", "bob", "charlie"};
  std::vector<uint64_t> given;
  uint64_t range = 1000;
  uint64_t length = 1;
  uint64_t deadline_ms = 0;  // 0: by the number of patients (RunRound)
  bool json = false;
  fs::path workdir = "run";
  fs::path inputs_file;
  std::string bounds, decimals, drop, drop_at = "mask";
  uint64_t threshold = 0;
  bool graph = true;
  uint32_t corrupt_ppm = tally::kDefaultCorruptPpm, dropout_ppm = tally::kDefaultDropoutPpm;
  fs::path bin = fs::canonical("/proc/self/exe").parent_path().parent_path();
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    if (f == "--help" || f == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (f == "--json") {
      json = true;
      continue;
    }
    if (i + 1 >= argc) return Usage("missing value for " + f);
    std::string v = argv[++i];
    if (f == "--patients") {
      uint64_t n;
      if (!ParseU64(v, n) || n < 2 || n > tally::kMaxFullRound)
        return Usage("--patients wants 2.." + std::to_string(tally::kMaxFullRound) +
                     " (one process each)");
      names.clear();
      const int width = n < 100 ? 2 : 3;
      for (uint64_t k = 1; k <= n; ++k) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "p%0*llu", width, static_cast<unsigned long long>(k));
        names.push_back(buf);
      }
    } else if (f == "--names") {
      names = Split(v);
      for (const auto& n : names)
        if (!tally::ValidName(n) || n == "broker" || n == "hospital")
          return Usage("bad patient name '" + n + "'");
      if (names.size() < 2) return Usage("a round needs at least 2 patients");
      if (names.size() > tally::kMaxFullRound)
        return Usage("at most " + std::to_string(tally::kMaxFullRound) + " patients");
    } else if (f == "--values") {
      for (const auto& s : Split(v)) {
        uint64_t x;
        if (!ParseU64(s, x)) return Usage("bad value '" + s + "'");
        given.push_back(x);
      }
    } else if (f == "--range") {
      if (!ParseU64(v, range)) return Usage("bad --range " + v);
    } else if (f == "--length") {
      if (!ParseU64(v, length) || length < 1 || length > tally::kMaxVectorLength)
        return Usage("bad --length " + v);
    } else if (f == "--deadline-ms") {
      if (!ParseU64(v, deadline_ms) || deadline_ms < 1 || deadline_ms > 3600000)
        return Usage("bad --deadline-ms " + v);
    } else if (f == "--threshold") {
      if (!ParseU64(v, threshold) || threshold < 2 || threshold > tally::kMaxParticipants)
        return Usage("bad --threshold " + v);
    } else if (f == "--graph") {
      if (v != "auto" && v != "off") return Usage("bad --graph " + v + " (auto or off)");
      graph = v == "auto";
    } else if (f == "--corrupt-rate" || f == "--dropout-rate") {
      uint32_t& ppm = f == "--corrupt-rate" ? corrupt_ppm : dropout_ppm;
      if (!tally::ParseRate(v, ppm) || (f == "--corrupt-rate" && ppm < tally::kMinCorruptPpm))
        return Usage("bad " + f + " " + v + " (a fraction in [0, 1); corrupt at least 0.05)");
    } else if (f == "--drop") {
      drop = v;
    } else if (f == "--drop-at") {
      const auto phase = tally::PhaseNamed(v);
      if (!phase || *phase == tally::Phase::kOpen || *phase == tally::Phase::kDone ||
          *phase == tally::Phase::kAbort)
        return Usage("bad --drop-at " + v + " (share, mask, confirm or unmask)");
      drop_at = v;
    } else if (f == "--inputs") {
      inputs_file = v;
    } else if (f == "--bounds") {
      bounds = v;
    } else if (f == "--decimals") {
      decimals = v;
    } else if (f == "--workdir") {
      workdir = v;
    } else if (f == "--bin-dir") {
      bin = v;
    } else {
      return Usage("unknown option " + f);
    }
  }
  if (!inputs_file.empty() && (!given.empty() || length != 1))
    return Usage("--inputs takes the patients and their values from the file");
  if (inputs_file.empty() && (!bounds.empty() || !decimals.empty()))
    return Usage("--bounds and --decimals go with --inputs");
  if (!given.empty() && (given.size() != names.size() || length != 1))
    return Usage("--values needs one scalar per patient (" + std::to_string(names.size()) + ")");
  if (range > UINT64_MAX / names.size()) return Usage("--range too large for that many patients");
  if (sodium_init() < 0) return 1;
  // The round's options the hospital takes whatever the inputs, and the patients that vanish.
  std::vector<std::string> round_args;
  if (threshold != 0) round_args = {"--threshold", std::to_string(threshold)};
  std::vector<std::string> vanish_args = {"--vanish-at", drop_at};
  const tally::LogSink log = tally::StderrLog();
  // A neighbourhood round above 100 patients: the hospital chooses k and t (tally-node --graph
  // auto), the patients take it; each patient then has k peers instead of N - 1.
  std::vector<std::string> patient_round_args;
  auto rate = [](uint32_t ppm) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0.%06u", static_cast<unsigned>(ppm));
    return std::string(buf);
  };
  if (graph) {
    round_args.insert(round_args.end(), {"--graph", "auto", "--corrupt-rate", rate(corrupt_ppm),
                                         "--dropout-rate", rate(dropout_ppm)});
    patient_round_args = {"--graph", "on"};
  }
  // Each patient's peers: N - 1, or k in a neighbourhood round (as the hospital will choose it),
  // which launch says before the round starts.
  auto peers_of = [&](size_t n) -> uint64_t {
    const auto chosen = graph ? tally::ChooseGraph(n, corrupt_ppm, dropout_ppm) : std::nullopt;
    if (!chosen) return n - 1;
    log("launch: a neighbourhood round: each patient with " + std::to_string(chosen->degree) +
        " of " + std::to_string(n) + ", threshold " + std::to_string(chosen->threshold) +
        " (assuming " + rate(corrupt_ppm) + " corrupt, " + rate(dropout_ppm) + " dropping out)");
    return chosen->degree;
  };

  const auto started = std::chrono::steady_clock::now();
  auto fail = [&](const std::string& why) {
    if (json) std::cout << "{\"error\": " << tally::JsonString(why) << "}" << std::endl;
    log("launch: " + why);
    return 1;
  };

  tally::Cluster cluster(bin, workdir);
  cluster.set_patient_nice(10);  // every patient runs here: the broker and hospital come first
  std::error_code ec;
  fs::create_directories(workdir / "inputs", ec);
  if (ec) return fail("cannot create " + (workdir / "inputs").string() + ": " + ec.message());

  if (!inputs_file.empty()) {
    auto cohort = ReadCohort(inputs_file);
    if (!cohort.ok()) return Usage(cohort.message());
    auto expected = Compute(*cohort);
    if (!expected.ok()) return Usage(expected.message());
    if (bounds.empty()) bounds = DerivedBounds(*cohort, *expected);
    if (decimals.empty()) {
      for (size_t i = 0; i < cohort->columns.size(); ++i)
        decimals +=
            (i ? "," : "") + cohort->columns[i] + "=" + std::to_string((*expected)[i].decimals);
    }
    if (auto s = cluster.Prepare("hospital", cohort->names); !s.ok()) return fail(s.message());
    auto told = DropList(drop, cohort->names);
    if (!told.ok()) return Usage(told.message());
    std::vector<std::vector<std::string>> patient_args;
    for (size_t p = 0; p < cohort->names.size(); ++p) {
      // Each patient's own file: the header and its row, as a patient would hold it.
      const fs::path file = workdir / "inputs" / (cohort->names[p] + ".csv");
      std::ofstream out(file, std::ios::trunc);
      out << Joined(cohort->columns, ",", false) << "\n"
          << Joined(cohort->cells[p], ",", false) << "\n";
      if (!out) return fail("cannot write " + file.string());
      patient_args.push_back({"--once", "--input", file.string()});
      patient_args.back().insert(patient_args.back().end(), patient_round_args.begin(),
                                 patient_round_args.end());
      if (std::count(told->begin(), told->end(), cohort->names[p]))
        patient_args.back().insert(patient_args.back().end(), vanish_args.begin(),
                                   vanish_args.end());
    }
    std::vector<std::string> hospital_args = {"--columns",
                                              Joined(cohort->columns, ",", false),
                                              "--bounds",
                                              bounds,
                                              "--decimals",
                                              decimals,
                                              "--participants",
                                              Joined(cohort->names, ",", false),
                                              "--json",
                                              "--results",
                                              (workdir / "results.jsonl").string()};
    hospital_args.insert(hospital_args.end(), round_args.begin(), round_args.end());
    auto line = RunRound(cluster, cohort->names, patient_args, hospital_args, *told, deadline_ms,
                         peers_of(cohort->names.size()), log);
    if (!line.ok()) return fail(line.message());
    auto result = tally::ParseResultsLine(*line);
    if (!result.ok() || !result->result || result->result->columns.empty())
      return fail("unreadable result from the hospital: " + *line);
    const auto elapsed_ms =
        std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started)
            .count();
    if (auto unasked = UnexpectedDropouts(result->result->dropped, *told); !unasked.empty())
      return fail(unasked);
    // What the survivors' rows sum to.
    expected = Compute(*cohort, result->result->dropped);
    return PrintCohort(*cohort, *expected, *result, *told, drop_at, elapsed_ms, json, workdir);
  }

  if (auto s = cluster.Prepare("hospital", names); !s.ok()) return fail(s.message());
  auto told = DropList(drop, names);
  if (!told.ok()) return Usage(told.message());
  // Inputs.
  std::vector<std::vector<uint64_t>> inputs(names.size());
  std::vector<std::vector<std::string>> patient_args;
  for (size_t p = 0; p < names.size(); ++p) {
    inputs[p].resize(length);
    for (uint64_t e = 0; e < length; ++e) {
      // As in the scenario, the aggregate too lies in [0, R]: each input in [0, R/n].
      inputs[p][e] = given.empty() ? Uniform(range / names.size()) : given[p];
    }
    std::vector<std::string> args = {"--once"};
    args.insert(args.end(), patient_round_args.begin(), patient_round_args.end());
    if (std::count(told->begin(), told->end(), names[p]))
      args.insert(args.end(), vanish_args.begin(), vanish_args.end());
    if (length == 1) {
      args.insert(args.end(), {"--value", std::to_string(inputs[p][0])});
    } else {
      fs::path file = workdir / "inputs" / (names[p] + ".txt");
      std::FILE* f = std::fopen(file.c_str(), "w");
      if (!f) return fail("cannot write " + file.string());
      for (uint64_t v : inputs[p]) std::fprintf(f, "%llu\n", static_cast<unsigned long long>(v));
      std::fclose(f);
      args.insert(args.end(), {"--input", file.string()});
    }
    patient_args.push_back(std::move(args));
  }
  std::vector<std::string> hospital_args = {"--range",
                                            std::to_string(range),
                                            "--length",
                                            std::to_string(length),
                                            "--participants",
                                            Joined(names, ",", false),
                                            "--json",
                                            "--results",
                                            (workdir / "results.jsonl").string()};
  hospital_args.insert(hospital_args.end(), round_args.begin(), round_args.end());
  auto line = RunRound(cluster, names, patient_args, hospital_args, *told, deadline_ms,
                       peers_of(names.size()), log);
  const auto elapsed_ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started).count();
  if (!line.ok()) return fail(line.message());
  auto result = tally::ParseResultsLine(*line);
  if (!result.ok() || !result->result) return fail("unreadable result from the hospital: " + *line);
  const std::vector<uint64_t>& aggregate = result->result->aggregate;
  const std::vector<std::string>& dropped = result->result->dropped;
  if (auto unasked = UnexpectedDropouts(dropped, *told); !unasked.empty()) return fail(unasked);
  // What the survivors' inputs sum to.
  std::vector<uint64_t> expected(length, 0);
  for (size_t p = 0; p < names.size(); ++p)
    if (!std::count(dropped.begin(), dropped.end(), names[p]))
      for (uint64_t e = 0; e < length; ++e) expected[e] += inputs[p][e];
  const std::string round = tally::RoundHex(result->round);
  const bool match = aggregate == expected;

  if (json) {
    std::cout << "{\"aggregate\": " << JsonNumbers(aggregate)
              << ", \"expected\": " << JsonNumbers(expected) << ", \"participants\": ["
              << Joined(names, ", ", true) << "], \"survivors\": ["
              << Joined(Survivors(names, dropped), ", ", true) << "], \"dropped\": ["
              << Joined(dropped, ", ", true) << "], \"round\": \"" << round
              << "\", \"elapsed_ms\": " << elapsed_ms
              << ", \"match\": " << (match ? "true" : "false") << "}" << std::endl;
  } else {
    std::cout << "inputs handed out (R = " << range << "):\n";
    const size_t shown = names.size() <= 12 ? names.size() : 10;
    for (size_t p = 0; p < shown; ++p)
      std::cout << "  " << names[p] << ": " << Short(inputs[p]) << "\n";
    if (shown < names.size())
      std::cout << "  ... and " << names.size() - shown << " more (all in " << workdir.string()
                << "/logs)\n";
    std::cout << "round " << round << "\n";
    if (!told->empty() || !dropped.empty())
      std::cout << DropLine(*told, drop_at, names, dropped) << "\n";
    std::cout << "aggregate " << Short(aggregate) << " (expected " << Short(expected) << ": "
              << (match ? "match" : "MISMATCH") << ")"
              << (result->result->in_range ? "" : "; it lies above R, as a sum may") << "\n"
              << "time " << elapsed_ms << " ms\n"
              << "logs, captures, results: " << workdir.string() << "/" << std::endl;
  }
  return match ? 0 : 1;
}
