// tally-launch (run by tools/launch): one real secure round with separate processes.
// Makes keys if needed, starts the broker on free loopback ports, the patients with the
// inputs it hands out, and the hospital; waits on readiness lines and process exits; checks
// the aggregate against the sum of the inputs; stops everything it started.
#include <sodium.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "schema/log.h"
#include "schema/results.h"
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
    "\n"
    "Runs one secure round: a broker, a hospital and the patients as separate processes on\n"
    "loopback. Defaults: patients alice, bob and charlie, R = 1000, random inputs in\n"
    "[0, R/n] so that, as the scenario assumes, the aggregate lies in [0, R] too.\n"
    "  --patients N      N patients (2..1000) named p01, p02, ... (p001, ... from 100)\n"
    "  --names a,b,c     the patients' names\n"
    "  --values V1,...   the patients' inputs (scalars), instead of random ones\n"
    "  --range R         inputs lie in [0, R] (default 1000)\n"
    "  --length L        vectors of L elements (default 1)\n"
    "  --deadline-ms MS  the broker's phase deadline (default 10000)\n"
    "  --json            print one JSON object (numbers above 2^53 as strings)\n"
    "  --workdir DIR     keys, captures, logs and results go here (default run)\n"
    "The hospital asks for its round once every patient has reached the broker.\n"
    "Exit: 0 the aggregate equals the sum of the inputs, 1 it does not or the round failed,\n"
    "2 bad usage.\n";

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

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> names = {"alice", "bob", "charlie"};
  std::vector<uint64_t> given;
  uint64_t range = 1000;
  uint64_t length = 1;
  uint64_t deadline_ms = 10000;
  bool json = false;
  fs::path workdir = "run";
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
      if (!ParseU64(v, n) || n < 2 || n > tally::kMaxParticipants)
        return Usage("--patients wants 2.." + std::to_string(tally::kMaxParticipants));
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
      if (names.size() > tally::kMaxParticipants)
        return Usage("at most " + std::to_string(tally::kMaxParticipants) + " patients");
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
    } else if (f == "--workdir") {
      workdir = v;
    } else if (f == "--bin-dir") {
      bin = v;
    } else {
      return Usage("unknown option " + f);
    }
  }
  if (!given.empty() && (given.size() != names.size() || length != 1))
    return Usage("--values needs one scalar per patient (" + std::to_string(names.size()) + ")");
  if (range > UINT64_MAX / names.size()) return Usage("--range too large for that many patients");
  if (sodium_init() < 0) return 1;

  const tally::LogSink log = tally::StderrLog();
  const auto started = std::chrono::steady_clock::now();
  auto fail = [&](const std::string& why) {
    if (json) std::cout << "{\"error\": " << tally::JsonString(why) << "}" << std::endl;
    log("launch: " + why);
    return 1;
  };

  tally::Cluster cluster(bin, workdir);
  if (auto s = cluster.Prepare("hospital", names); !s.ok()) return fail(s.message());
  std::error_code ec;
  fs::create_directories(workdir / "inputs", ec);
  if (ec) return fail("cannot create " + (workdir / "inputs").string() + ": " + ec.message());

  // Inputs.
  std::vector<std::vector<uint64_t>> inputs(names.size());
  std::vector<uint64_t> expected(length, 0);
  for (size_t p = 0; p < names.size(); ++p) {
    inputs[p].resize(length);
    for (uint64_t e = 0; e < length; ++e) {
      // As in the scenario, the aggregate too lies in [0, R]: each input in [0, R/n].
      inputs[p][e] = given.empty() ? Uniform(range / names.size()) : given[p];
      expected[e] += inputs[p][e];
    }
  }

  if (auto s = cluster.StartBroker({"--deadline-ms", std::to_string(deadline_ms)}); !s.ok())
    return fail(s.message());
  auto next_progress = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (size_t p = 0; p < names.size(); ++p) {
    std::vector<std::string> args = {"--once"};
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
    if (auto s = cluster.StartPatient(names[p], args); !s.ok()) return fail(s.message());
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
  if (!ready.ok()) return fail(ready.message());

  auto hospital = cluster.StartHospital(
      "hospital",
      {"--range", std::to_string(range), "--length", std::to_string(length), "--participants",
       Joined(names, ",", false), "--json", "--results", (workdir / "results.jsonl").string()});
  if (!hospital.ok()) return fail(hospital.message());
  const auto round_budget = milliseconds(3 * deadline_ms + 15000);
  auto line = (*hospital)->ReadLine(round_budget);
  auto code = (*hospital)->Wait(round_budget);
  const auto elapsed_ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started).count();
  cluster.StopAll();

  if (!line || code.value_or(-1) != 0)
    return fail("the round failed: hospital: " + cluster.WhyStopped("hospital"));
  auto result = tally::ParseResultsLine(*line);
  if (!result.ok() || !result->result) return fail("unreadable result from the hospital: " + *line);
  const std::vector<uint64_t>& aggregate = result->result->aggregate;
  const std::string round = tally::RoundHex(result->round);
  const bool match = aggregate == expected;

  if (json) {
    std::cout << "{\"aggregate\": " << JsonNumbers(aggregate)
              << ", \"expected\": " << JsonNumbers(expected) << ", \"participants\": ["
              << Joined(names, ", ", true) << "], \"round\": \"" << round
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
    std::cout << "round " << round << "\n"
              << "aggregate " << Short(aggregate) << " (expected " << Short(expected) << ": "
              << (match ? "match" : "MISMATCH") << ")"
              << (result->result->in_range ? "" : "; it lies above R, as a sum may") << "\n"
              << "time " << elapsed_ms << " ms\n"
              << "logs, captures, results: " << workdir.string() << "/" << std::endl;
  }
  return match ? 0 : 1;
}
