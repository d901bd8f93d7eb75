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

#include "schema/schema.h"
#include "tools/process.h"
#include "schema/text.h"

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
    "  --patients N      N patients named p01, p02, ...\n"
    "  --names a,b,c     the patients' names\n"
    "  --values V1,...   the patients' inputs (scalars), instead of random ones\n"
    "  --range R         inputs lie in [0, R] (default 1000)\n"
    "  --length L        vectors of L elements (default 1)\n"
    "  --deadline-ms MS  the broker's phase deadline (default 10000)\n"
    "  --json            print one JSON object\n"
    "  --workdir DIR     keys, captures, logs and results go here (default run)\n"
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

// Reads the numbers of `"aggregate": N` or `"aggregate": [a, b, ...]` from the hospital's JSON.
std::optional<std::vector<uint64_t>> ParseAggregate(const std::string& json) {
  auto at = json.find("\"aggregate\": ");
  if (at == std::string::npos) return std::nullopt;
  size_t i = at + 13;
  bool array = i < json.size() && json[i] == '[';
  if (array) ++i;
  std::vector<uint64_t> out;
  while (i < json.size()) {
    size_t end = json.find_first_not_of("0123456789", i);
    if (end == std::string::npos || end == i) return std::nullopt;
    out.push_back(std::strtoull(json.substr(i, end - i).c_str(), nullptr, 10));
    if (!array) return out;
    if (json[end] == ']') return out;
    if (json.compare(end, 2, ", ") != 0) return std::nullopt;
    i = end + 2;
  }
  return std::nullopt;
}

std::string Joined(const std::vector<std::string>& v, const std::string& sep, bool quote) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i)
    out += (i ? sep : "") + (quote ? "\"" + v[i] + "\"" : v[i]);
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
    if (f == "--json") { json = true; continue; }
    if (i + 1 >= argc) return Usage("missing value for " + f);
    std::string v = argv[++i];
    if (f == "--patients") {
      uint64_t n;
      if (!ParseU64(v, n) || n < 2 || n > 500) return Usage("--patients wants 2..500");
      names.clear();
      for (uint64_t k = 1; k <= n; ++k) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "p%02llu", static_cast<unsigned long long>(k));
        names.push_back(buf);
      }
    } else if (f == "--names") {
      names = Split(v);
      for (const auto& n : names)
        if (!tally::ValidName(n) || n == "broker" || n == "hospital")
          return Usage("bad patient name '" + n + "'");
      if (names.size() < 2) return Usage("a round needs at least 2 patients");
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

  const auto started = std::chrono::steady_clock::now();
  auto fail = [&](const std::string& why) {
    if (json) {
      std::string escaped;
      for (char c : why) {
        if (c == '"' || c == '\\') escaped += '\\';
        escaped += (c >= 0x20 && c < 0x7f) ? c : ' ';
      }
      std::cout << "{\"error\": \"" << escaped << "\"}" << std::endl;
    }
    std::cerr << "launch: " << why << "\n";
    return 1;
  };

  std::error_code ec;
  fs::create_directories(workdir / "logs", ec);
  fs::create_directories(workdir / "inputs", ec);
  if (ec) return fail("cannot create " + workdir.string() + ": " + ec.message());
  const fs::path keys = workdir / "keys";
  const fs::path logs = workdir / "logs";

  // Keys: make whatever is missing.
  std::vector<std::string> missing;
  for (const auto& n : names)
    if (!fs::exists(keys / "private" / (n + ".key_secret"))) missing.push_back(n);
  if (!missing.empty() || !fs::exists(keys / "private" / "hospital.key_secret") ||
      !fs::exists(keys / "private" / "broker.key_secret")) {
    std::vector<std::string> args = {(bin / "tools/tally-keygen").string(), "--dir", keys.string()};
    if (!fs::exists(keys / "private" / "broker.key_secret")) args.push_back("--broker");
    if (!fs::exists(keys / "private" / "hospital.key_secret")) {
      args.push_back("--hospital");
      args.push_back("hospital");
    }
    if (!missing.empty()) {
      args.push_back("--patients");
      args.push_back(Joined(missing, ",", false));
    }
    auto keygen = tally::Child::Spawn(args, logs / "keygen.log");
    if (!keygen.ok()) return fail(keygen.message());
    keygen->ReadAll(milliseconds(60000));
    if (keygen->Wait(milliseconds(60000)).value_or(-1) != 0)
      return fail("key generation failed: " + tally::LastLine(logs / "keygen.log"));
  }

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

  for (const auto& n : std::vector<std::string>{"broker", "hospital"}) fs::remove(logs / (n + ".log"));
  auto broker = tally::Child::Spawn(
      {(bin / "broker/tally-broker").string(), "--keys", keys.string(), "--router",
       "tcp://127.0.0.1:*", "--phases", "tcp://127.0.0.1:*", "--captures",
       (workdir / "captures").string(), "--deadline-ms", std::to_string(deadline_ms)},
      logs / "broker.log");
  if (!broker.ok()) return fail(broker.message());
  std::string router, phases;
  for (int k = 0; k < 2; ++k) {
    auto line = broker->ReadLine(milliseconds(15000));
    if (!line) break;
    if (line->rfind("router ", 0) == 0) router = line->substr(7);
    if (line->rfind("phases ", 0) == 0) phases = line->substr(7);
  }
  if (router.empty() || phases.empty())
    return fail("the broker did not come up: " + tally::LastLine(logs / "broker.log"));

  std::vector<tally::Child> patients;
  for (size_t p = 0; p < names.size(); ++p) {
    fs::remove(logs / (names[p] + ".log"));
    std::vector<std::string> args = {(bin / "nodes/tally-node").string(), "--keys", keys.string(),
                                     "--name", names[p], "--router", router, "--phases", phases,
                                     "--once"};
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
    auto child = tally::Child::Spawn(args, logs / (names[p] + ".log"));
    if (!child.ok()) return fail(child.message());
    patients.push_back(std::move(child.value()));
  }
  auto hospital = tally::Child::Spawn(
      {(bin / "nodes/tally-node").string(), "--keys", keys.string(), "--name", "hospital",
       "--router", router, "--phases", phases, "--range", std::to_string(range), "--length",
       std::to_string(length), "--participants", Joined(names, ",", false), "--json",
       "--results", (workdir / "results.jsonl").string()},
      logs / "hospital.log");
  if (!hospital.ok()) return fail(hospital.message());

  const auto round_budget = milliseconds(3 * deadline_ms + 15000);
  auto line = hospital->ReadLine(round_budget);
  auto code = hospital->Wait(round_budget);
  const auto elapsed_ms = std::chrono::duration_cast<milliseconds>(
                              std::chrono::steady_clock::now() - started).count();
  for (auto& p : patients) p.Wait(milliseconds(5000));
  for (auto& p : patients) p.Stop();
  broker->Stop();

  if (!line || code.value_or(-1) != 0) {
    std::string why = tally::LastLine(logs / "hospital.log");
    return fail("the round failed: " + (why.empty() ? "the hospital exited without a result" : why));
  }
  auto aggregate = ParseAggregate(*line);
  if (!aggregate) return fail("unreadable result from the hospital: " + *line);
  std::string round;
  if (auto at = line->find("\"round\": \""); at != std::string::npos) round = line->substr(at + 10, 32);
  const bool match = *aggregate == expected;

  if (json) {
    std::cout << "{\"aggregate\": " << JsonNumbers(*aggregate) << ", \"expected\": " << JsonNumbers(expected)
              << ", \"participants\": [" << Joined(names, ", ", true) << "], \"round\": \"" << round
              << "\", \"elapsed_ms\": " << elapsed_ms << ", \"match\": " << (match ? "true" : "false")
              << "}" << std::endl;
  } else {
    std::cout << "inputs handed out (R = " << range << "):\n";
    for (size_t p = 0; p < names.size(); ++p)
      std::cout << "  " << names[p] << ": " << Short(inputs[p]) << "\n";
    std::cout << "round " << round << "\n"
              << "aggregate " << Short(*aggregate) << " (expected " << Short(expected) << ": "
              << (match ? "match" : "MISMATCH") << ")"
              << (line->find("\"in_range\": false") != std::string::npos
                      ? "; the hospital notes it lies outside [0, R]"
                      : "")
              << "\n"
              << "time " << elapsed_ms << " ms\n"
              << "logs, captures, results: " << workdir.string() << "/" << std::endl;
  }
  return match ? 0 : 1;
}
