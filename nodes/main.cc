// tally-node: a patient or the hospital. Thin: flags, signals, Node::Run, printing results.
#include <malloc.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "nodes/node.h"
#include "schema/schema.h"
#include "schema/text.h"

using tally::ParseU32;
using tally::ParseU64;

namespace {

tally::Node* g_node = nullptr;
volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int sig) {
  g_signal = sig;
  if (g_node) g_node->Stop();  // only stores an atomic flag: async-signal-safe
}

constexpr const char* kUsage =
    "usage: tally-node --keys DIR --name NAME [--broker ADDRESS] ...\n"
    "\n"
    "The role (patient or hospital) comes from NAME's certificate in DIR.\n"
    "  --keys DIR            key folder (public/*.key roster, private/NAME.key_secret)\n"
    "  --name NAME           this party\n"
    "  --broker ADDRESS      the broker's HOST or HOST:PORT: its router on PORT (default\n"
    "                        7700), its phase channel on PORT+1\n"
    "  --router ENDPOINT     broker router, instead (default tcp://127.0.0.1:7700)\n"
    "  --phases ENDPOINT     broker phase channel, instead (default tcp://127.0.0.1:7701)\n"
    "  --idle-timeout-ms MS  give up when the broker stays unreachable, or a round makes no\n"
    "                        progress, for MS (default 60000)\n"
    "Patient:\n"
    "  --value V             private input, an integer >= 0\n"
    "  --input FILE          private input vector: one integer per line\n"
    "  --once                exit after one round (0 done, 1 aborted); default: serve\n"
    "  --min-patients N      refuse rounds with fewer than N patients (default 2)\n"
    "Hospital:\n"
    "  --range R             inputs lie in [0, R] (required)\n"
    "  --length L            vector length (default 1: scalars)\n"
    "  --participants a,b,c  patients in the round (default: every patient in this\n"
    "                        hospital's roster)\n"
    "  --rounds K            rounds to run, one after another (default 1)\n"
    "  --deadline-ms MS      each phase's deadline to ask for (default: the broker's; it\n"
    "                        grants at most its own)\n"
    "  --results FILE        append each result here, fsync'd before the round is\n"
    "                        acknowledged (default results.jsonl)\n"
    "  --json                print one JSON object per round instead of text\n"
    "Logs go to stderr, one timestamped line per event, the last one saying why the node\n"
    "stops. Exit: 0 success, 1 a round failed or aborted, 2 bad usage or configuration.\n";

int Usage(const std::string& error) {
  std::cerr << "tally-node: " << error << "\n" << kUsage;
  return 2;
}

// One integer per line; blank lines and lines starting with '#' are skipped.
tally::Result<std::vector<uint64_t>> ReadInput(const std::string& path) {
  std::ifstream in(path);
  if (!in) return tally::Status::Error("cannot read " + path);
  std::vector<uint64_t> values;
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    uint64_t v;
    if (!ParseU64(line, v))
      return tally::Status::Error(path + ":" + std::to_string(n) + ": not an integer >= 0");
    if (values.size() >= tally::kMaxVectorLength)
      return tally::Status::Error(path + ": more than " + std::to_string(tally::kMaxVectorLength) +
                                  " values");
    values.push_back(v);
  }
  if (values.empty()) return tally::Status::Error(path + ": no values");
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  // Vector rounds allocate and free the same few large buffers (8 MiB per million elements)
  // every round: keep freed memory in the process instead of unmapping it and faulting it back
  // in, page by page, next round (a fifth of a 10x1M round's CPU was page faults).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  tally::NodeOptions o;
  bool json = false, have_value = false, have_input = false, have_range = false;
  bool broker_given = false, endpoint_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (flag == "--once") {
      o.once = true;
      continue;
    }
    if (flag == "--json") {
      json = true;
      continue;
    }
    if (i + 1 >= argc) return Usage("missing value for " + flag);
    std::string v = argv[++i];
    if (flag == "--keys") {
      o.keys_dir = v;
    } else if (flag == "--name") {
      if (!tally::ValidName(v)) return Usage("bad --name " + v + " (want [a-z0-9_-]{1,32})");
      o.name = v;
    } else if (flag == "--broker") {
      auto endpoints = tally::EndpointsOf(v);
      if (!endpoints.ok()) return Usage(endpoints.message());
      o.router_endpoint = endpoints->router;
      o.phases_endpoint = endpoints->phases;
      broker_given = true;
    } else if (flag == "--router") {
      o.router_endpoint = v;
      endpoint_given = true;
    } else if (flag == "--phases") {
      o.phases_endpoint = v;
      endpoint_given = true;
    } else if (flag == "--deadline-ms") {
      if (!ParseU32(v, 1, o.deadline_ms)) return Usage("bad --deadline-ms " + v);
    } else if (flag == "--idle-timeout-ms") {
      if (!ParseU32(v, 1, o.idle_timeout_ms)) return Usage("bad --idle-timeout-ms " + v);
    } else if (flag == "--min-patients") {
      if (!ParseU32(v, 2, o.min_patients))
        return Usage("bad --min-patients " + v + " (at least 2)");
    } else if (flag == "--value") {
      uint64_t x;
      if (!ParseU64(v, x)) return Usage("bad --value: want an integer >= 0");
      o.input = {x};
      have_value = true;
    } else if (flag == "--input") {
      auto values = ReadInput(v);
      if (!values.ok()) return Usage(values.message());
      o.input = std::move(values.value());
      have_input = true;
    } else if (flag == "--range") {
      if (!ParseU64(v, o.range)) return Usage("bad --range " + v);
      have_range = true;
    } else if (flag == "--length") {
      if (!ParseU32(v, 1, o.length) || o.length > tally::kMaxVectorLength)
        return Usage("bad --length " + v);
    } else if (flag == "--participants") {
      std::stringstream ss(v);
      std::string name;
      while (std::getline(ss, name, ',')) {
        if (!tally::ValidName(name)) return Usage("bad participant name '" + name + "'");
        if (std::find(o.participants.begin(), o.participants.end(), name) != o.participants.end())
          return Usage("participant " + name + " is named twice");
        o.participants.push_back(name);
      }
    } else if (flag == "--rounds") {
      if (!ParseU32(v, 1, o.rounds)) return Usage("bad --rounds " + v);
    } else if (flag == "--results") {
      o.results_file = v;
    } else {
      return Usage("unknown option " + flag);
    }
  }
  if (o.keys_dir.empty() || o.name.empty()) return Usage("--keys and --name are required");
  if (have_value && have_input) return Usage("give --value or --input, not both");
  if (broker_given && endpoint_given)
    return Usage("give --broker, or --router and --phases, not both");

  const tally::LogSink log = tally::StderrLog();
  // The last line says why the node ends and with which status.
  auto exit_with = [&](int status, const std::string& reason) {
    log("node " + o.name + " event=exit status=" + std::to_string(status) +
        " reason=" + tally::Quote(reason));
    return status;
  };
  bool is_patient = false;  // known once the certificate is read; set before Run
  auto node = tally::Node::Create(
      o, log,
      [json](const tally::RoundResult& r) {
        if (json) {
          std::cout << tally::ResultJson(r) << std::endl;
          return;
        }
        std::cout << "round " << tally::RoundHex(r.round) << ": aggregate ";
        for (size_t i = 0; i < r.aggregate.size() && i < 10; ++i)
          std::cout << (i ? " " : "") << r.aggregate[i];
        if (r.aggregate.size() > 10) std::cout << " ... (" << r.aggregate.size() << " elements)";
        std::cout << " over " << r.params.participants.size() << " patients";
        if (!r.in_range)
          std::cout << " (above R = " << r.params.range
                    << ": each input lies in [0, R], their sum need not)";
        std::cout << std::endl;
      },
      [&is_patient] {
        // A patient's stdout carries one line: that it reached the broker (launchers wait on it).
        // The hospital's stdout is its results only.
        if (is_patient) std::cout << "ready" << std::endl;
      });
  if (!node.ok()) {
    // Options the library refused are the command line's fault: usage errors.
    return exit_with(2, node.message());
  }
  if ((*node)->is_hospital() && !have_range) return Usage("the hospital needs --range");
  is_patient = !(*node)->is_hospital();
  g_node = node->get();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  const tally::Status status = (*node)->Run();
  g_node = nullptr;
  if (!status.ok()) return exit_with(1, status.message());
  const int sig = g_signal;
  return exit_with(0, sig != 0                 ? std::string("stopped by SIG") + sigabbrev_np(sig)
                      : (*node)->is_hospital() ? "every round done"
                                               : "round done");
}
