// Internal to tally-bench: what its parts share. The measurements (bench_runs.cc: warm rounds,
// admission, cold launches with real processes; bench_floor.cc: the crypto floor with Tally's
// own sealing and mask code) and the figures they return; bench.cc reads the arguments and
// prints. Single-threaded.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
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

// The CPU a round cannot avoid with this protocol and these primitives (BENCHMARKS.md): one round
// of N patients and vectors of L run in-process with Tally's own protocol code, no sockets, each
// role timed (seconds of CPU), plus CURVE's cost for every frame of it. `dropped` patients vanish
// after sharing, before their masked input.
struct Floor {
  size_t dropped = 0;
  double patient = 0;   // one patient's steps (the mean over the patients)
  double hospital = 0;  // the hospital's: its view, the masked inputs, the unmasks, the masks off
  double broker = 0;    // the coordinator's (routing and batches, no I/O)
  double curve = 0;     // CURVE boxing and unboxing of every frame, at both ends
  uint64_t bytes = 0;   // every frame through the broker, in and out
  double total = 0;     // N x patient + hospital + broker + curve
};
Floor MeasureFloor(size_t n, uint32_t length, size_t dropped = 0);

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

struct LaunchRuns {
  std::vector<double> elapsed_ms;  // tally-launch's own figure
  std::vector<double> wall_ms;     // spawn to exit of the tally-launch process
  std::string error;
};
// `runs` cold tally-launch runs in work/launch with `options` (none: the default round), after
// one uncounted run that makes the keys.
LaunchRuns RunLaunch(const std::filesystem::path& bin, const std::filesystem::path& work, int runs,
                     const std::vector<std::string>& options = {});

}  // namespace tally::bench
