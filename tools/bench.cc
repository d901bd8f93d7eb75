// tally-bench (run by tools/bench): warm-round latency, CPU and memory of real processes.
//
// For each configuration (patients N, vector length L, rounds K) it starts a broker on free
// loopback ports, N serving patients, then a hospital with `--rounds K --json`, and timestamps
// each JSON line of the hospital on arrival (steady clock). A warm round's latency is the
// hospital's own `elapsed_ms`: from sending its request to the aggregate in hand. The hospital
// requests round k+1 as soon as round k is done, so arrival(k) - arrival(k-1) is the round's
// period: the latency plus writing the result durably, the ack, the broker's capture fsync
// and the done phase. The first round (connections, first handshakes) is warm-up and not
// counted. CPU is read from /proc for every process after the warm-up and
// after the last round; peak RSS is VmHWM. It also times cold `tally-launch` runs, and
// times Tally's sealing and mask code in-process to print each configuration's crypto floor:
// the CPU a round cannot avoid (BENCHMARKS.md gives the formula).
// Single-threaded.
#include "tools/bench.h"

#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "schema/log.h"
#include "schema/protocol.h"
#include "schema/round_graph.h"
#include "schema/schema.h"
#include "schema/system.h"
#include "schema/text.h"
#include "tools/cluster.h"

namespace fs = std::filesystem;

using tally::FormatFixed;
using tally::ParseU64;
using namespace tally::bench;

namespace {

constexpr const char* kUsage =
    "usage: tools/bench [--patients N --length L --rounds K] [--launch-runs R] [--json]\n"
    "                   [--workdir DIR] [--captures-dir DIR] [--no-launch] [--no-floor]\n"
    "\n"
    "Measures warm rounds with real processes on loopback (broker, N serving patients, a\n"
    "hospital running K rounds back to back), cold tally-launch runs, and the crypto floor.\n"
    "Without --patients it runs the default set: 3x1, 30x1, 30x10col (10 columns), 100x1,\n"
    "3x1000, 10x1000000.\n"
    "p50/p90/p99: warm-round latency, from the hospital's request to the aggregate in hand\n"
    "(its elapsed_ms); period50: one result to the next, adding the durable write of the\n"
    "result, the ack, the broker's capture fsync and the done phase.\n"
    "  --patients N        one configuration with N patients (2..500)\n"
    "  --length L          vector length (default 1)\n"
    "  --columns C         instead: C named columns of signed values with 2 decimals\n"
    "  --rounds K          rounds, the first being warm-up (default: by size)\n"
    "  --launch-runs R     cold tally-launch runs to time (default 5; 0 skips)\n"
    "  --no-launch         same as --launch-runs 0\n"
    "  --no-floor          skip the in-process crypto throughput measurements\n"
    "  --captures-dir DIR  where the broker writes captures and the hospital its results\n"
    "                      (default WORKDIR/run; e.g. /dev/shm/tally-bench to leave out disk\n"
    "                      fsyncs). Removed after each configuration.\n"
    "  --drop K            instead of warm rounds (with --patients): cold tally-launch runs\n"
    "                      of N patients of which K are killed (SIGKILL) at the mask phase,\n"
    "                      and the crypto floor of a round with K dropped after sharing\n"
    "  --admission N       instead: how long a broker takes to admit N patients (2..1000)\n"
    "                      connecting at once (2N CURVE handshakes from one process), and\n"
    "                      its CPU and memory for it; 3 runs\n"
    "  --load N            instead: a load generator. A few processes host N patients, each\n"
    "                      Tally's real patient with its own keys and CURVE connections, against\n"
    "                      a real broker and a real hospital process; it connects them all\n"
    "                      (admission time, broker RSS per connected party), then the hospital\n"
    "                      runs --rounds K (default 2; 0: connect only) of --length L, each\n"
    "                      timed from request to aggregate and checked for the exact sum, with\n"
    "                      broker, hospital and per-patient CPU. --drop K: the last K patients\n"
    "                      vanish at each round's mask phase (close their connections), and\n"
    "                      the sum is over the others. A round has at most 10,000 patients\n"
    "  --load-processes P  generator processes hosting the patients between them (default:\n"
    "                      one per 2,000, below a process's open-file and memory-map limits)\n"
    "  --load-threads T    threads driving each generator's patients (default 2)\n"
    "  --load-slice F:C    (internal) be one generator of a --load run: with --keys, --router,\n"
    "                      --phases, --log and --idle-timeout-ms, as the run starts it\n"
    "  --deadline-ms MS    with --load: each phase's deadline (default 10 s + (0.4 ms x k +\n"
    "                      30 ms) x N per core, as tools/launch)\n"
    "  --brokers B         instead (with --patients N): B brokers at once, each with its own\n"
    "                      cohort of N patients and hospital process; K combined rounds\n"
    "                      (--rounds, default 3), the B sums added and checked\n"
    "  --floor N           instead: only the crypto floor of one round of N patients (2..10000;\n"
    "                      a neighbourhood round above 100, as tally-node --graph auto), with\n"
    "                      --length L and --drop K (dropped after sharing); --graph-any-size:\n"
    "                      a neighbourhood round at any N where one fits\n"
    "  --json              one JSON object per line instead of a table\n"
    "  --workdir DIR       keys, inputs and logs (default bench-work)\n"
    "Exit: 0 every configuration ran (with --load: every round exact), 1 one failed, 2 bad\n"
    "usage.\n";

int Usage(const std::string& e) {
  std::cerr << "bench: " << e << "\n" << kUsage;
  return 2;
}

// --- Reporting ----------------------------------------------------------------------------

std::string Verdict(double value, double target) {
  if (target <= 0) return "-";
  return value <= target ? "met" : "NOT met (x" + FormatFixed(value / target, 1) + ")";
}

void Print(const Measured& m, bool json) {
  const Config& c = m.config;
  const std::string name = ConfigName(c);
  if (!m.ok) {
    if (json)
      std::cout << "{\"config\": \"" << name << "\", \"error\": \"" << m.error << "\"}"
                << std::endl;
    else
      std::cout << name << ": FAILED: " << m.error << std::endl;
    return;
  }
  const double p50 = Percentile(m.latency_ms, 50), p90 = Percentile(m.latency_ms, 90),
               p99 = Percentile(m.latency_ms, 99);
  const double period50 = Percentile(m.period_ms, 50), period90 = Percentile(m.period_ms, 90);
  const double floor = m.floor ? m.floor->total : 0;
  if (json) {
    std::cout << "{\"config\": \"" << name << "\", \"patients\": " << c.patients
              << ", \"length\": " << c.length << ", \"warm_rounds\": " << m.latency_ms.size()
              << ", \"p50_ms\": " << FormatFixed(p50, 3) << ", \"p90_ms\": " << FormatFixed(p90, 3)
              << ", \"p99_ms\": " << FormatFixed(p99, 3)
              << ", \"target_ms\": " << FormatFixed(c.target_ms, 1)
              << ", \"period_p50_ms\": " << FormatFixed(period50, 3)
              << ", \"period_p90_ms\": " << FormatFixed(period90, 3)
              << ", \"first_round_ms\": " << FormatFixed(m.wall_first_ms, 1)
              << ", \"cpu_ms_per_round\": " << FormatFixed(m.cpu_per_round * 1e3, 3)
              << ", \"cpu_ms_broker\": " << FormatFixed(m.cpu_broker * 1e3, 3)
              << ", \"cpu_ms_patients\": " << FormatFixed(m.cpu_patients * 1e3, 3)
              << ", \"cpu_ms_hospital\": " << FormatFixed(m.cpu_hospital * 1e3, 3)
              << ", \"floor_ms\": " << FormatFixed(floor * 1e3, 3)
              << ", \"cpu_over_floor\": " << FormatFixed(floor > 0 ? m.cpu_per_round / floor : 0, 2)
              << ", \"rss_mib_broker\": " << FormatFixed(m.rss_broker, 1)
              << ", \"rss_mib_patient_max\": " << FormatFixed(m.rss_patient_max, 1)
              << ", \"rss_mib_hospital\": " << FormatFixed(m.rss_hospital, 1) << "}" << std::endl;
    return;
  }
  std::printf("%-11s %5zu %9s %9s %9s %8s %-18s %9s %9s %9s %7s %7s %7s %7s\n", name.c_str(),
              m.latency_ms.size(), FormatFixed(p50, 2).c_str(), FormatFixed(p90, 2).c_str(),
              FormatFixed(p99, 2).c_str(), FormatFixed(c.target_ms, 1).c_str(),
              Verdict(p50, c.target_ms).c_str(), FormatFixed(period50, 2).c_str(),
              FormatFixed(m.cpu_per_round * 1e3, 2).c_str(), FormatFixed(floor * 1e3, 3).c_str(),
              floor > 0 ? FormatFixed(m.cpu_per_round / floor, 1).c_str() : "-",
              FormatFixed(m.rss_broker, 1).c_str(), FormatFixed(m.rss_patient_max, 1).c_str(),
              FormatFixed(m.rss_hospital, 1).c_str());
  std::fflush(stdout);
}

void PrintFloor(const Measured& m, bool json) {
  if (!m.floor) return;
  const Floor& f = *m.floor;
  const std::string name = ConfigName(m.config);
  auto ms = [](double s) { return FormatFixed(s * 1e3, 3); };
  if (json) {
    std::cout << "{\"floor\": \"" << name << "\", \"dropped\": " << f.dropped
              << ", \"degree\": " << f.degree << ", \"patient_ms\": " << ms(f.patient)
              << ", \"hospital_ms\": " << ms(f.hospital) << ", \"broker_ms\": " << ms(f.broker)
              << ", \"curve_ms\": " << ms(f.curve) << ", \"bytes\": " << f.bytes
              << ", \"floor_ms\": " << ms(f.total) << "}" << std::endl;
    return;
  }
  std::printf(
      "%-11s %s dropped %zu  per patient %s ms  hospital %s ms  broker %s ms  curve %s ms "
      "(%s MB)  floor %s ms/round\n",
      name.c_str(), f.degree ? ("k " + std::to_string(f.degree)).c_str() : "full", f.dropped,
      ms(f.patient).c_str(), ms(f.hospital).c_str(), ms(f.broker).c_str(), ms(f.curve).c_str(),
      FormatFixed(static_cast<double>(f.bytes) / 1e6, 2).c_str(), ms(f.total).c_str());
}

// --- The load generator ---------------------------------------------------------------------

// "2026-12-01T10:00:00.000Z load: TEXT" on stdout (on stderr with --json, whose stdout is
// JSON lines).
void Say(bool json, const std::string& text) {
  std::FILE* out = json ? stderr : stdout;
  std::fprintf(out, "%s load: %s\n", tally::Rfc3339(std::chrono::system_clock::now()).c_str(),
               text.c_str());
  std::fflush(out);
}

int Load(uint64_t n, uint64_t length, uint64_t rounds, uint64_t drop, uint64_t processes,
         uint64_t threads, uint64_t deadline_ms, bool json, fs::path work, fs::path captures,
         const fs::path& bin) {
  if (rounds > 0 && n > tally::kMaxParticipants)
    return Usage("--load " + std::to_string(n) + " with rounds: a round has at most " +
                 std::to_string(tally::kMaxParticipants) + " patients (--rounds 0 connects only)");
  if (drop > n) return Usage("--drop " + std::to_string(drop) + ": more than --load");
  if (drop != 0 && rounds > 0 && drop > n - tally::SafeThreshold(n))
    return Usage("--drop " + std::to_string(drop) + ": a round of " + std::to_string(n) +
                 " patients survives at most " + std::to_string(n - tally::SafeThreshold(n)) +
                 " dropouts");
  if (sodium_init() < 0) return 1;
  std::error_code ec;
  fs::create_directories(work, ec);
  if (ec) return Usage("cannot create " + work.string() + ": " + ec.message());
  work = fs::absolute(work);
  captures = fs::absolute(captures.empty() ? work / "run" : captures);
  LoadOptions o;
  o.patients = n;
  o.length = static_cast<uint32_t>(length);
  o.rounds = static_cast<uint32_t>(rounds);
  o.drop = drop;
  o.processes = processes;
  o.threads = threads;
  // As tools/launch. Each patient's peers: k in a neighbourhood round, as the hospital will choose
  // it.
  const auto chosen = tally::ChooseGraph(n, tally::kDefaultCorruptPpm, tally::kDefaultDropoutPpm);
  const uint64_t peers = chosen ? chosen->degree : n - 1;
  o.deadline_ms = static_cast<uint32_t>(std::min<uint64_t>(
      UINT32_MAX / 8, deadline_ms != 0 ? deadline_ms : tally::LocalPhaseDeadlineMs(n, peers)));
  o.idle_timeout_ms = std::max<uint32_t>(600000, 3 * o.deadline_ms);
  const LoadRun r = RunLoad(o, bin, work, captures, [&](const std::string& s) { Say(json, s); });
  const double nn = static_cast<double>(n);
  if (r.admission_ms > 0) {
    const double per_party_kib = (r.broker_rss_connected - r.broker_rss_idle) * 1024 / nn;
    if (json) {
      std::cout << "{\"load\": " << n << ", \"admission_ms\": " << FormatFixed(r.admission_ms, 1)
                << ", \"keys_ms\": " << FormatFixed(r.keys_ms, 1)
                << ", \"broker_rss_mib_idle\": " << FormatFixed(r.broker_rss_idle, 1)
                << ", \"broker_rss_mib_connected\": " << FormatFixed(r.broker_rss_connected, 1)
                << ", \"broker_rss_kib_per_party\": " << FormatFixed(per_party_kib, 1)
                << ", \"broker_cpu_ms_admission\": " << FormatFixed(r.broker_cpu_admission * 1e3, 1)
                << ", \"generator_cpu_ms_admission\": "
                << FormatFixed(r.generator_cpu_admission * 1e3, 1)
                << ", \"generators\": " << r.generators
                << ", \"generator_rss_mib\": " << FormatFixed(r.generator_rss, 1)
                << ", \"generator_fds\": " << r.generator_fds
                << ", \"broker_fds\": " << r.broker_fds << "}" << std::endl;
    } else {
      Say(json, std::to_string(n) + " patients connected (" + std::to_string(2 * n) +
                    " CURVE handshakes) in " + FormatFixed(r.admission_ms, 0) + " ms; broker RSS " +
                    FormatFixed(r.broker_rss_idle, 1) + " -> " +
                    FormatFixed(r.broker_rss_connected, 1) + " MiB (" +
                    FormatFixed(per_party_kib, 1) + " KiB per connected party), broker CPU " +
                    FormatFixed(r.broker_cpu_admission * 1e3, 0) + " ms, " +
                    std::to_string(r.broker_fds) + " fds; " + std::to_string(r.generators) +
                    " generator(s): CPU " + FormatFixed(r.generator_cpu_admission * 1e3, 0) +
                    " ms, RSS " + FormatFixed(r.generator_rss, 1) + " MiB, " +
                    std::to_string(r.generator_fds) + " fds");
    }
  }
  for (size_t k = 0; k < r.rounds.size(); ++k) {
    const LoadRound& x = r.rounds[k];
    if (json) {
      std::cout << "{\"load\": " << n << ", \"length\": " << length << ", \"round\": " << k + 1
                << ", \"warm\": " << (k > 0 ? "true" : "false")
                << ", \"latency_ms\": " << FormatFixed(x.latency_ms, 1)
                << ", \"period_ms\": " << FormatFixed(x.period_ms, 1)
                << ", \"survivors\": " << x.survivors << ", \"dropped\": " << n - x.survivors
                << ", \"exact\": " << (x.exact ? "true" : "false")
                << ", \"broker_cpu_ms\": " << FormatFixed(x.cpu_broker * 1e3, 1)
                << ", \"broker_rss_mib_peak\": " << FormatFixed(x.rss_broker_peak, 1)
                << ", \"hospital_cpu_ms\": " << FormatFixed(x.cpu_hospital * 1e3, 1)
                << ", \"generator_cpu_ms\": " << FormatFixed(x.cpu_generator * 1e3, 1)
                << ", \"cpu_ms_per_patient\": " << FormatFixed(x.cpu_generator * 1e3 / nn, 3) << "}"
                << std::endl;
    } else {
      Say(json, "round " + std::to_string(k + 1) + (k == 0 ? " (warm-up)" : "") + ": " +
                    FormatFixed(x.latency_ms, 1) + " ms request -> aggregate (period " +
                    FormatFixed(x.period_ms, 1) + " ms), " + std::to_string(x.survivors) + " of " +
                    std::to_string(n) + " survivors, sum " + (x.exact ? "exact" : "WRONG") +
                    "; broker CPU " + FormatFixed(x.cpu_broker * 1e3, 0) + " ms, peak RSS " +
                    FormatFixed(x.rss_broker_peak, 1) + " MiB; hospital CPU " +
                    FormatFixed(x.cpu_hospital * 1e3, 0) + " ms; per patient " +
                    FormatFixed(x.cpu_generator * 1e3 / nn, 2) + " ms CPU");
    }
  }
  if (!r.ok) {
    if (json)
      std::cout << "{\"load\": " << n << ", \"error\": " << tally::JsonString(r.error) << "}"
                << std::endl;
    else
      Say(json, "FAILED: " + r.error);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Config> configs;
  uint64_t patients = 0, length = 1, rounds = 0, launch_runs = 5, columns = 0;
  bool json = false, floor = true;
  uint64_t admission = 0, drop = 0, load = 0, load_threads = 2, load_processes = 0, deadline_ms = 0,
           idle_timeout_ms = 600000;
  bool idle_given = false;
  // --load-slice: this process is one of a --load run's generators (RunLoad starts them).
  std::optional<tally::bench::LoadSlice> slice;
  bool rounds_given = false;
  uint64_t brokers = 0, floor_only = 0;
  bool any_size = false;
  fs::path work = "bench-work";
  fs::path captures;
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
    if (f == "--no-launch") {
      launch_runs = 0;
      continue;
    }
    if (f == "--graph-any-size") {
      any_size = true;
      continue;
    }
    if (f == "--no-floor") {
      floor = false;
      continue;
    }
    if (i + 1 >= argc) return Usage("missing value for " + f);
    std::string v = argv[++i];
    if (f == "--columns") {
      if (!ParseU64(v, columns) || columns < 1 || columns > 64)
        return Usage("--columns wants 1..64");
    } else if (f == "--patients") {
      if (!ParseU64(v, patients) || patients < 2 || patients > 500)
        return Usage("--patients wants 2..500");
    } else if (f == "--length") {
      if (!ParseU64(v, length) || length < 1 || length > tally::kMaxVectorLength)
        return Usage("bad --length " + v);
    } else if (f == "--rounds") {
      if (!ParseU64(v, rounds) || rounds > 100000) return Usage("bad --rounds " + v);
      rounds_given = true;
    } else if (f == "--load") {
      if (!ParseU64(v, load) || load < 2 || load > 100000) return Usage("--load wants 2..100000");
    } else if (f == "--load-threads") {
      if (!ParseU64(v, load_threads) || load_threads < 1 || load_threads > 64)
        return Usage("--load-threads wants 1..64");
    } else if (f == "--load-processes") {
      if (!ParseU64(v, load_processes) || load_processes < 1 || load_processes > 64)
        return Usage("--load-processes wants 1..64");
    } else if (f == "--load-slice") {
      const auto colon = v.find(':');
      slice.emplace();
      uint64_t first = 0, count = 0;
      if (colon == std::string::npos || !ParseU64(v.substr(0, colon), first) ||
          !ParseU64(v.substr(colon + 1), count) || count < 1)
        return Usage("--load-slice wants FIRST:COUNT");
      slice->first = first;
      slice->count = count;
    } else if (f == "--keys" || f == "--router" || f == "--phases" || f == "--log") {
      if (!slice) return Usage(f + " is for --load-slice, after it");
      if (f == "--keys") slice->keys = v;
      if (f == "--router") slice->router = v;
      if (f == "--phases") slice->phases = v;
      if (f == "--log") slice->log = v;
    } else if (f == "--idle-timeout-ms") {
      if (!ParseU64(v, idle_timeout_ms) || idle_timeout_ms < 1 || idle_timeout_ms > UINT32_MAX)
        return Usage("bad --idle-timeout-ms " + v);
      idle_given = true;
    } else if (f == "--deadline-ms") {
      if (!ParseU64(v, deadline_ms) || deadline_ms < 1 || deadline_ms > UINT32_MAX)
        return Usage("bad --deadline-ms " + v);
    } else if (f == "--drop") {
      if (!ParseU64(v, drop) || drop < 1) return Usage("--drop wants a number of patients");
    } else if (f == "--floor") {
      if (!ParseU64(v, floor_only) || floor_only < 2 || floor_only > tally::kMaxParticipants)
        return Usage("--floor wants 2.." + std::to_string(tally::kMaxParticipants));
    } else if (f == "--brokers") {
      if (!ParseU64(v, brokers) || brokers < 1 || brokers > 16)
        return Usage("--brokers wants 1..16");
    } else if (f == "--admission") {
      if (!ParseU64(v, admission) || admission < 2 || admission > tally::kMaxParticipants)
        return Usage("--admission wants 2.." + std::to_string(tally::kMaxParticipants));
    } else if (f == "--launch-runs") {
      if (!ParseU64(v, launch_runs) || launch_runs > 1000) return Usage("bad --launch-runs " + v);
    } else if (f == "--workdir") {
      work = v;
    } else if (f == "--captures-dir") {
      captures = v;
    } else if (f == "--bin-dir") {
      bin = v;
    } else {
      return Usage("unknown option " + f);
    }
  }
  if (floor_only != 0) {
    if (drop > floor_only - tally::SafeThreshold(floor_only))
      return Usage("--drop: a round of " + std::to_string(floor_only) + " survives at most " +
                   std::to_string(floor_only - tally::SafeThreshold(floor_only)) + " dropouts");
    Measured m;
    m.config = {floor_only, static_cast<uint32_t>(length), 0, 0};
    m.floor = MeasureFloor(floor_only, static_cast<uint32_t>(length), drop, any_size);
    PrintFloor(m, json);
    return 0;
  }
  if (slice) {
    if (load == 0 || slice->first > load || slice->count > load - slice->first ||
        slice->keys.empty() || slice->router.empty() || slice->phases.empty() || slice->log.empty())
      return Usage(
          "--load-slice needs --load N, --keys, --router, --phases and --log, and a "
          "slice within p1..pN");
    if (drop > load) return Usage("--drop: more than --load");
    if (sodium_init() < 0) return 1;
    tally::bench::LoadOptions o;
    o.patients = load;
    o.length = static_cast<uint32_t>(length);
    o.drop = drop;
    o.threads = load_threads;
    o.idle_timeout_ms = static_cast<uint32_t>(idle_timeout_ms);
    return HostLoadSlice(o, *slice);
  }
  if (load == 0 && (load_processes != 0 || load_threads != 2))
    return Usage("--load-processes and --load-threads need --load");
  if (idle_given) return Usage("--idle-timeout-ms is for --load-slice");
  if (load != 0)
    return Load(load, length, rounds_given ? rounds : 2, drop, load_processes, load_threads,
                deadline_ms, json, work, captures, bin);
  if (rounds_given && rounds < 2) return Usage("--rounds wants 2..100000 (the first is warm-up)");
  if (brokers != 0 && (patients == 0 || drop != 0 || admission != 0 || length != 1 || columns != 0))
    return Usage(
        "--brokers needs --patients, and takes no --drop, --admission, --length, --columns");
  if (patients == 0 && (length != 1 || rounds != 0 || columns != 0))
    return Usage("--length, --columns and --rounds need --patients");
  if (columns != 0 && length != 1) return Usage("--columns takes scalars: no --length");
  if (drop != 0 && (patients == 0 || columns != 0))
    return Usage("--drop needs --patients (and takes no --columns)");
  if (drop != 0 && drop > patients - tally::SafeThreshold(patients))
    return Usage("--drop " + std::to_string(drop) + ": a round of " + std::to_string(patients) +
                 " patients survives at most " +
                 std::to_string(patients - tally::SafeThreshold(patients)) + " dropouts");
  if (admission != 0) {
    configs.push_back({admission, 1, 0, 0});  // only for the key folder below
  } else if (patients != 0) {
    if (rounds == 0) rounds = length >= 100000 ? 3 : patients >= 50 ? 21 : 101;
    configs.push_back({patients, static_cast<uint32_t>(length), static_cast<uint32_t>(rounds), 0,
                       static_cast<uint32_t>(columns)});
  } else {
    configs = {{3, 1, 201, 0},  {30, 1, 51, 0},    {30, 1, 51, 0, 10},
               {100, 1, 21, 0}, {3, 1000, 201, 0}, {10, 1000000, 3, 0}};
  }
  for (auto& c : configs) {  // targets for the table's configurations, also when asked singly
    if (c.target_ms != 0) continue;
    // Protocol 3's targets (BENCHMARKS.md); 100x1 has the target of a round with 10 killed.
    if (c.length == 1 && c.patients == 3) c.target_ms = 1.5;
    if (c.length == 1 && c.patients == 30) c.target_ms = 20;
    if (c.length == 1 && c.patients == 100) c.target_ms = 300;
    if (c.length == 1000 && c.patients == 3) c.target_ms = 3;
    if (c.length == 1000000 && c.patients == 10) c.target_ms = 1000;
  }
  if (sodium_init() < 0) return 1;
  std::error_code ec;
  fs::create_directories(work, ec);
  if (ec) return Usage("cannot create " + work.string() + ": " + ec.message());
  work = fs::absolute(work);
  if (captures.empty()) captures = work / "run";
  captures = fs::absolute(captures);
  if (brokers != 0)
    return RunBrokers(bin, work, brokers, patients, rounds == 0 ? 3 : static_cast<uint32_t>(rounds),
                      json);

  // One key folder for every configuration: the hospital and as many patients as needed.
  size_t most = 0;
  for (const auto& c : configs) most = std::max(most, c.patients);
  std::vector<std::string> names;
  for (size_t k = 1; k <= most; ++k) names.push_back(PatientName(k));
  if (auto s = tally::Cluster(bin, work, work).Prepare("hospital", names); !s.ok()) {
    std::cerr << "bench: " << s.message() << "\n";
    return 1;
  }

  if (admission != 0) {
    // Two sockets per patient here, each with its monitor, and their connections.
    if (auto s = tally::EnsureOpenFileLimit(8 * admission + 64, "--admission"); !s.ok())
      return Usage(s.message());
    bool failed = false;
    for (int run = 0; run < 3; ++run) {
      const Admitted a = Admit(bin, work, admission);
      failed |= !a.ok;
      if (json) {
        std::cout << "{\"admission\": " << admission << ", \"run\": " << run + 1;
        if (a.ok)
          std::cout << ", \"handshakes\": " << 2 * admission
                    << ", \"wall_ms\": " << FormatFixed(a.wall_ms, 1)
                    << ", \"broker_cpu_ms\": " << FormatFixed(a.broker_cpu_ms, 1)
                    << ", \"broker_rss_mib\": " << FormatFixed(a.broker_rss_mib, 1);
        else
          std::cout << ", \"error\": " << tally::JsonString(a.error);
        std::cout << "}" << std::endl;
      } else if (a.ok) {
        std::printf(
            "admission of %llu patients (%llu handshakes), run %d: %s ms; broker CPU %s ms, "
            "peak RSS %s MiB\n",
            static_cast<unsigned long long>(admission),
            static_cast<unsigned long long>(2 * admission), run + 1,
            FormatFixed(a.wall_ms, 1).c_str(), FormatFixed(a.broker_cpu_ms, 1).c_str(),
            FormatFixed(a.broker_rss_mib, 1).c_str());
      } else {
        std::printf("admission of %llu patients, run %d: FAILED: %s\n",
                    static_cast<unsigned long long>(admission), run + 1, a.error.c_str());
      }
    }
    return failed ? 1 : 0;
  }
  if (!json && drop == 0) {
    std::printf("%-11s %5s %9s %9s %9s %8s %-18s %9s %9s %9s %7s %7s %7s %7s\n", "config", "warm",
                "p50_ms", "p90_ms", "p99_ms", "target", "verdict(p50)", "period50", "cpu_ms/r",
                "floor_ms", "cpu/flr", "rss_brk", "rss_pat", "rss_hsp");
    std::fflush(stdout);
  }
  std::vector<Measured> all;
  bool failed = false;
  for (const auto& c : configs) {
    Measured m;
    m.config = c;
    if (drop == 0) {
      m = RunConfig(c, bin, work, captures);
      failed |= !m.ok;
    }
    // A round with columns carries a count per column too.
    if (floor) m.floor = MeasureFloor(c.patients, c.columns ? 2 * c.columns : c.length, drop);
    if (drop == 0) Print(m, json);  // with its floor, for the CPU / floor column
    all.push_back(std::move(m));
  }
  if (floor) {
    if (!json) std::printf("\ncrypto floor (CPU a round cannot avoid; see BENCHMARKS.md):\n");
    for (const auto& m : all) PrintFloor(m, json);
  }
  if (launch_runs > 0) {
    // With --drop, launches of the configuration with its dropouts; else of the default round.
    const size_t n = drop != 0 ? patients : 3;
    auto l =
        RunLaunch(bin, work, static_cast<int>(launch_runs),
                  drop != 0 ? std::vector<std::string>{"--patients", std::to_string(patients),
                                                       "--length", std::to_string(length), "--drop",
                                                       std::to_string(drop), "--drop-at", "mask"}
                            : std::vector<std::string>{});
    const double target = drop != 0 ? 0 : 150;
    if (!l.error.empty()) {
      failed = true;
      if (json)
        std::cout << "{\"launch\": {\"error\": \"" << l.error << "\"}}" << std::endl;
      else
        std::printf("\nlaunch: FAILED: %s\n", l.error.c_str());
    } else {
      const double e50 = Percentile(l.elapsed_ms, 50), w50 = Percentile(l.wall_ms, 50);
      if (json) {
        std::cout << "{\"launch\": {\"runs\": " << l.elapsed_ms.size()
                  << ", \"elapsed_ms_p50\": " << FormatFixed(e50, 1)
                  << ", \"elapsed_ms_max\": " << FormatFixed(Percentile(l.elapsed_ms, 100), 1)
                  << ", \"wall_ms_p50\": " << FormatFixed(w50, 1) << ", \"patients\": " << n
                  << ", \"killed\": " << drop << ", \"target_ms\": " << target << "}}" << std::endl;
      } else {
        std::printf(
            "\ncold tally-launch (%zu patients, %llu killed at mask, %zu runs): elapsed_ms p50 %s "
            "max %s, process wall p50 %s ms%s\n",
            n, static_cast<unsigned long long>(drop), l.elapsed_ms.size(),
            FormatFixed(e50, 1).c_str(), FormatFixed(Percentile(l.elapsed_ms, 100), 1).c_str(),
            FormatFixed(w50, 1).c_str(),
            target != 0 ? ("; target 150 ms: " + Verdict(e50, target)).c_str() : "");
      }
    }
  }
  return failed ? 1 : 0;
}
