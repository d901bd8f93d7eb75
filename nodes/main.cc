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

#include "nodes/input.h"
#include "nodes/node.h"
#include "schema/decimal.h"
#include "schema/schema.h"
#include "schema/text.h"

using tally::ParseRate;
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
    "  --value V             private input: an integer >= 0, or a decimal (\"32.1\", \"-4.5\")\n"
    "                        for a one-column round\n"
    "  --input FILE          private input: one value per line (a vector), or CSV: a header\n"
    "                        naming the columns and one row (an empty cell is missing)\n"
    "  --weight W            the weight of this input in a weighted round\n"
    "  --floats              the values are floats: clipped to each column's bounds and\n"
    "                        rounded to its decimals without bias (instead of refused)\n"
    "  --once                exit after one round (0 done, 1 aborted); default: serve\n"
    "  --min-patients N      refuse rounds with fewer than N patients (default 2)\n"
    "  --max-corrupt C       refuse rounds that cannot hide this patient's input from the\n"
    "                        hospital and the broker with C other patients colluding (a round\n"
    "                        of N patients, threshold T hides it from min(2T-N-1, T-2));\n"
    "                        default 0\n"
    "  --graph on|off        on: also take neighbourhood rounds (SecAgg+, each patient deals\n"
    "                        with k neighbours only), which trust the hospital to draw the\n"
    "                        graph at random and sign one survivor set, and assume at least\n"
    "                        5% and --max-corrupt corrupt patients; default off\n"
    "  --vanish-at PHASE     when a round reaches PHASE (share, mask, confirm or unmask),\n"
    "                        print \"vanish PHASE\" and stop acting, to be killed there (as\n"
    "                        tools/launch --drop does): for trying dropouts\n"
    "Hospital (--range, or --bounds for named columns):\n"
    "  --range R             inputs are integers in [0, R]\n"
    "  --columns a,b,c       named columns (default: the names in --bounds)\n"
    "  --bounds SPEC         each column's bounds, decimals: LO:HI for all, or\n"
    "                        bmi=10:80,bp=40:200\n"
    "  --decimals SPEC       digits after the point: N for all, or bmi=1,bp=0 (default: as\n"
    "                        many as the column's bounds are written with)\n"
    "  --weight-max W        a weighted round: weights in [0, W], as many decimals as W has;\n"
    "                        the result holds weighted sums and means\n"
    "  --length L            elements per input (per column); default 1: scalars\n"
    "  --participants a,b,c  patients in the round (default: every patient in this\n"
    "                        hospital's roster)\n"
    "  --threshold T         the survivors a round needs, at least floor(2N/3)+1 for N\n"
    "                        patients (default: that minimum); up to N-T may drop out\n"
    "  --graph auto|off      auto: above 100 patients, a neighbourhood round (each patient\n"
    "                        masks with and shares to k neighbours, k and their threshold\n"
    "                        chosen from the rates below; patients must run --graph on);\n"
    "                        default off: every patient with every other\n"
    "  --corrupt-rate F      the fraction of patients a neighbourhood round assumes corrupt,\n"
    "                        at least 0.05 (default 0.05)\n"
    "  --dropout-rate F      the fraction it assumes drop out (default 0.10)\n"
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

// A round with columns as a small aligned table: per column its count, sum and mean (the
// first few elements of a vector column).
void PrintColumns(const tally::RoundResult& r) {
  std::cout << "round " << tally::RoundHex(r.round) << ": "
            << r.params.participants.size() - r.dropped.size() << " of "
            << r.params.participants.size() << " patients"
            << (r.in_range ? "" : " (a sum lies outside what the bounds allow)") << "\n";
  const bool weighted = !r.columns[0].weight.empty();
  std::vector<std::vector<std::string>> rows = {
      {"column", "count", weighted ? "weight" : "", weighted ? "weighted sum" : "sum", "mean"}};
  for (const auto& c : r.columns) {
    auto shown = [](auto&& items) {
      std::string out;
      for (size_t i = 0; i < items.size() && i < 4; ++i)
        out += (i ? " " : "") + std::string(items[i] ? *items[i] : "-");
      if (items.size() > 4) out += " ... (" + std::to_string(items.size()) + ")";
      return out;
    };
    std::vector<std::optional<std::string>> sums(c.sum.begin(), c.sum.end());
    rows.push_back({c.name, std::to_string(c.count), c.weight, shown(sums), shown(c.mean)});
  }
  std::vector<size_t> width(5, 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  for (const auto& row : rows) {
    std::string line = "  " + row[0] + std::string(width[0] - row[0].size(), ' ');
    for (size_t i = 1; i < row.size(); ++i)
      if (width[i] > 0) line += "  " + std::string(width[i] - row[i].size(), ' ') + row[i];
    std::cout << line << "\n";
  }
  std::cout << std::flush;
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
  bool floats = false;
  std::string input_file, columns, bounds, decimals;
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
    if (flag == "--floats") {
      floats = true;
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
    } else if (flag == "--max-corrupt") {
      if (!ParseU32(v, 0, o.max_corrupt)) return Usage("bad --max-corrupt " + v);
    } else if (flag == "--graph") {
      if (v != "on" && v != "auto" && v != "off")
        return Usage("bad --graph " + v + " (on or auto to take neighbourhood rounds, or off)");
      o.graph = v != "off";
    } else if (flag == "--corrupt-rate" || flag == "--dropout-rate") {
      uint32_t& ppm = flag == "--corrupt-rate" ? o.corrupt_ppm : o.dropout_ppm;
      if (!ParseRate(v, ppm)) return Usage("bad " + flag + " " + v + " (a fraction in [0, 1))");
      if (flag == "--corrupt-rate" && ppm < tally::kMinCorruptPpm)
        return Usage("bad --corrupt-rate " + v + " (patients refuse rounds assuming fewer than " +
                     "0.05)");
    } else if (flag == "--vanish-at") {
      auto phase = tally::PhaseNamed(v);
      if (!phase || *phase == tally::Phase::kOpen || *phase == tally::Phase::kDone ||
          *phase == tally::Phase::kAbort)
        return Usage("bad --vanish-at " + v + " (share, mask, confirm or unmask)");
      o.vanish_at = *phase;
    } else if (flag == "--threshold") {
      if (!ParseU32(v, 2, o.threshold)) return Usage("bad --threshold " + v + " (at least 2)");
    } else if (flag == "--value") {
      o.input.cells = {v};
      have_value = true;
    } else if (flag == "--input") {
      input_file = v;
      have_input = true;
    } else if (flag == "--weight") {
      o.input.weight = v;
    } else if (flag == "--columns") {
      columns = v;
    } else if (flag == "--bounds") {
      bounds = v;
    } else if (flag == "--decimals") {
      decimals = v;
    } else if (flag == "--weight-max") {
      auto w = tally::ParseWeightMax(v);
      if (!w.ok()) return Usage(w.message());
      o.weight = *w;
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
  if (have_input) {
    auto input = tally::ReadPatientInput(input_file, floats);
    if (!input.ok()) return Usage(input.message());
    input->weight = std::move(o.input.weight);
    o.input = std::move(input.value());
  } else if (have_value && !floats && !tally::ParseDecimal(o.input.cells[0]).ok()) {
    return Usage("bad --value: want an integer, or a decimal such as 32.1");
  }
  o.input.floats = floats;
  const bool have_columns = !columns.empty() || !bounds.empty() || !decimals.empty();
  if (have_range && have_columns)
    return Usage("give --range (integers in [0, R]) or --bounds (named columns), not both");
  if (o.weight.max != 0 && !have_columns) return Usage("--weight-max needs --bounds");
  if (have_columns) {
    auto parsed = tally::ParseColumns(columns, bounds, decimals);
    if (!parsed.ok()) return Usage(parsed.message());
    o.columns = std::move(parsed.value());
  }
  if (broker_given && endpoint_given)
    return Usage("give --broker, or --router and --phases, not both");

  const tally::LogSink log = tally::StderrLog();
  // The last line says why the node ends and with which status.
  auto exit_with = [&](int status, const std::string& reason) {
    log("node " + o.name + " event=exit status=" + std::to_string(status) +
        " reason=" + tally::Quote(reason));
    return status;
  };
  // A patient told to vanish says so on stdout, where its launcher waits to kill it.
  o.on_vanish = [](tally::Phase phase) {
    std::cout << "vanish " << tally::PhaseName(phase) << std::endl;
  };
  bool is_patient = false;  // known once the certificate is read; set before Run
  auto node = tally::Node::Create(
      o, log,
      [json](const tally::RoundResult& r) {
        if (json) {
          std::cout << tally::ResultJson(r) << std::endl;
          return;
        }
        if (!r.columns.empty()) return PrintColumns(r);
        std::cout << "round " << tally::RoundHex(r.round) << ": aggregate ";
        for (size_t i = 0; i < r.aggregate.size() && i < 10; ++i)
          std::cout << (i ? " " : "") << r.aggregate[i];
        if (r.aggregate.size() > 10) std::cout << " ... (" << r.aggregate.size() << " elements)";
        std::cout << " over " << r.params.participants.size() - r.dropped.size() << " of "
                  << r.params.participants.size() << " patients";
        for (size_t i = 0; i < r.dropped.size(); ++i)
          std::cout << (i ? ", " : " (dropped: ") << r.dropped[i]
                    << (i + 1 == r.dropped.size() ? ")" : "");
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
  if ((*node)->is_hospital() && !have_range && !have_columns)
    return Usage("the hospital needs --range or --bounds");
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
