// Internal to tally-bench: what its parts share. The measurements (bench_runs.cc: warm rounds,
// admission, cold launches with real processes; bench_brokers.cc: several brokers at once;
// bench_floor.cc: the crypto floor with Tally's own sealing and mask code) and the figures they
// return; bench.cc reads the arguments and prints. Single-threaded, but for bench_brokers.cc's
// wait on its hospitals (a thread each, each on its own child).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace tally::bench {

// "p01", "p02", ..., "p10", ...: the names tally-launch --patients gives.
std::string PatientName(size_t k);
// The p-th percentile by nearest rank; 0 for no values.
double Percentile(std::vector<double> v, double p);
// CPU seconds a process has used so far (all its threads), from /proc.
double CpuSeconds(pid_t pid);
// Peak resident set (VmHWM) in MiB, or 0 when unreadable (e.g. the process has exited).
double PeakRssMiB(pid_t pid);
// Resident set now (VmRSS) in MiB, or 0 when unreadable.
double RssMiB(pid_t pid);

// The CPU a round cannot avoid with this protocol and these primitives (BENCHMARKS.md): one round
// of N patients and vectors of L run in-process with Tally's own protocol code, no sockets, each
// role timed (seconds of CPU), plus CURVE's cost for every frame of it. `dropped` patients vanish
// after sharing, before their masked input.
struct Floor {
  size_t dropped = 0;
  size_t degree = 0;    // each patient's neighbours in a neighbourhood round; 0: a full round
  double patient = 0;   // one patient's steps (the mean over the patients)
  double hospital = 0;  // the hospital's: its view, the masked inputs, the unmasks, the masks off
  double broker = 0;    // the coordinator's (routing and batches, no I/O)
  double curve = 0;     // CURVE boxing and unboxing of every frame, at both ends
  uint64_t bytes = 0;   // every frame through the broker, in and out
  double total = 0;     // N x patient + hospital + broker + curve
};
// `any_size`: a neighbourhood round at any N where a degree below N - 1 fits (for comparing
// sizes), not only above 100 patients.
Floor MeasureFloor(size_t n, uint32_t length, size_t dropped = 0, bool any_size = false);

// One warm-rounds configuration: N patients, vectors of L, K rounds (the first is warm-up).
struct Config {
  size_t patients;
  uint32_t length;
  uint32_t rounds;
  double target_ms;      // p50 target; 0 = none
  uint32_t columns = 0;  // named columns of signed decimals (2 digits) instead of integers
};
// "30x1", or "30x10col" for a round with columns: how a configuration is named in output.
std::string ConfigName(const Config& c);

struct Measured {
  Config config{};
  bool ok = false;
  std::string error;
  std::vector<double> latency_ms;  // warm rounds: request -> aggregate in hand
  std::vector<double> period_ms;   // warm rounds: one hospital result line to the next
  double cpu_per_round = 0;        // s, all processes
  double cpu_broker = 0, cpu_patients = 0, cpu_hospital = 0;     // s per round
  double rss_broker = 0, rss_patient_max = 0, rss_hospital = 0;  // MiB
  double wall_first_ms = 0;  // the warm-up round, from the hospital's start
  std::optional<Floor> floor;
};
// Runs `c` with real processes: keys in work/keys, logs in work/logs/NAME, captures and results
// under captures_root/NAME (removed afterwards).
Measured RunConfig(const Config& c, const std::filesystem::path& bin,
                   const std::filesystem::path& work, const std::filesystem::path& captures_root);

struct Admitted {
  bool ok = false;
  std::string error;
  double wall_ms = 0;        // first connect to the last of 2N handshakes
  double broker_cpu_ms = 0;  // the broker's CPU over that time
  double broker_rss_mib = 0;
};
// N patients (keys in work/keys) connect to a fresh broker at once.
Admitted Admit(const std::filesystem::path& bin, const std::filesystem::path& work, size_t n);

// tally-bench --load (bench_load.cc): N patients hosted in a few generator processes (each a
// slice of p1..pN), each patient Tally's real patient (nodes/node.h) with its own keys and CURVE
// connections, against a real broker and a real hospital process.
struct LoadOptions {
  size_t patients = 0;
  uint32_t length = 1;
  uint32_t rounds = 1;    // 0: connect every patient, measure, stop
  size_t drop = 0;        // the last `drop` patients vanish at each round's mask phase
  size_t processes = 0;   // generator processes; 0: one per kPatientsPerGenerator
  size_t threads = 2;     // per generator: threads driving its patients, each with an epoll set
  size_t io_threads = 2;  // per generator: ZeroMQ I/O threads (CURVE runs there), or 1 per 500
  uint32_t deadline_ms = 10000;  // each phase's (the broker's and the hospital's request)
  uint32_t idle_timeout_ms = 600000;
  // Neighbourhood rounds above 100 patients (the hospital's --graph auto at the default rates;
  // the hosted patients take them), as tools/launch runs them.
  bool graph = true;
};
// Patients one generator process hosts by default: below both per-process limits a hosted
// patient meets (BENCHMARKS.md): 8 open files each under a hard limit of 20,000 (about 2,450),
// and about 28 memory maps each mid-round under vm.max_map_count's default 65,530 (about 2,300).
inline constexpr size_t kPatientsPerGenerator = 2000;
struct LoadRound {
  double latency_ms = 0;  // the hospital's elapsed_ms: request -> aggregate in hand
  double period_ms = 0;   // since the previous result line (round 1: since the hospital started)
  size_t survivors = 0;
  bool exact = false;  // the sum over the survivors, and the vanishers named as dropped
  double cpu_broker = 0, cpu_hospital = 0, cpu_generator = 0;  // s over the period
  double rss_broker_peak = 0;                                  // MiB (VmHWM)
};
struct LoadRun {
  bool ok = false;
  std::string error;
  double keys_ms = 0;  // making the keys that were missing
  // Generators started -> every patient's two handshakes done (the generators' start, key and
  // roster loading included); the generators' CPU is their whole life so far.
  double admission_ms = 0;
  double broker_rss_idle = 0, broker_rss_connected = 0;          // VmRSS, MiB
  double broker_cpu_admission = 0, generator_cpu_admission = 0;  // s
  size_t generators = 0;                                         // generator processes
  double generator_rss = 0;                  // VmRSS once connected, MiB, all generators
  size_t generator_fds = 0, broker_fds = 0;  // open once connected (generators: all of them)
  std::vector<LoadRound> rounds;
};
// Keys in work/load-N (made where missing), logs in work/load-N/logs (the hosted patients' in
// generator-K.log, one per generator process), captures and results under captures_root/load-N
// (removed afterwards). `say` gets progress lines. The generators are `bin`'s tally-bench with
// --load-slice.
LoadRun RunLoad(const LoadOptions& options, const std::filesystem::path& bin,
                const std::filesystem::path& work, const std::filesystem::path& captures_root,
                const std::function<void(const std::string&)>& say);

// One generator process (tally-bench --load-slice): hosts patients p(first+1)..p(first+count)
// of `options.patients` with the keys in `keys`, connected to `endpoints`, their log lines in
// `log`. Talks to RunLoad on stdout: "connected C/COUNT" about every two seconds while they
// connect, "ready COUNT" once all have, "failed: WHY" when one fails (then exits 1); serves
// until SIGTERM or SIGINT (then exits 0). Returns the exit code.
struct LoadSlice {
  size_t first = 0, count = 0;
  std::filesystem::path keys, log;
  std::string router, phases;
};
int HostLoadSlice(const LoadOptions& options, const LoadSlice& slice);

struct LaunchRuns {
  std::vector<double> elapsed_ms;  // tally-launch's own figure
  std::vector<double> wall_ms;     // spawn to exit of the tally-launch process
  std::string error;
};
// `runs` cold tally-launch runs in work/launch with `options` (none: the default round), after
// one uncounted run that makes the keys.
LaunchRuns RunLaunch(const std::filesystem::path& bin, const std::filesystem::path& work, int runs,
                     const std::vector<std::string>& options = {});

// --brokers B (bench_brokers.cc): B brokers at once, each with its own cohort of N patients and
// its own hospital process, the B aggregates added into one sum; `rounds` combined rounds,
// printed. Returns the exit code.
int RunBrokers(const std::filesystem::path& bin, const std::filesystem::path& work, size_t brokers,
               size_t patients, uint32_t rounds, bool json);

}  // namespace tally::bench
