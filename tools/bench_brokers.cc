// tally-bench --brokers B --patients N: several brokers at once on this machine, the shape the
// README recommends beyond one broker ("More than one broker"): B cohorts of N patients, each a
// complete Tally round with its own broker, its own key folder and roster (its broker, the
// hospital, its own patients) and its own hospital process. Every cohort's roster holds the one
// hospital certificate, made once and copied into each cohort's folder; the tool adds the B
// aggregates, as a hospital combining cohorts would, and checks the global sum against the
// inputs it handed out. `--brokers 1 --patients B*N` is the single-broker round of the same
// total, the baseline.
//
// Each combined round starts B hospital processes at once (`--rounds 1`) against serving
// patients that have all reached their brokers; its wall time runs from the first hospital's
// start to the last result line. Brokers' and patients' CPU is read from /proc before and after;
// each hospital's, which exits after its round, from getrusage(RUSAGE_CHILDREN) around reaping
// it: its whole life (keys, connection, the round). Brokers pick free loopback ports
// (tcp://127.0.0.1:*, as tools/cluster starts every broker), so B brokers never collide.
// Threads: one per hospital, each waiting on its result line; everything else on the caller's.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "schema/results.h"
#include "schema/text.h"
#include "tools/bench.h"
#include "tools/cluster.h"

namespace tally::bench {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// The input of the patient with global index g (0-based, over every cohort): what tally-bench's
// warm rounds hand out too.
uint64_t InputOf(size_t g) { return (static_cast<uint64_t>(g) * 7919) % 1001; }

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double ChildrenCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_CHILDREN, &u);
  auto s = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return s(u.ru_utime) + s(u.ru_stime);
}

// CPU seconds the whole machine has been busy (every core; idle and I/O wait left out), from
// /proc/stat: beside this round's own CPU, what else ran on the machine meanwhile.
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                     steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  return static_cast<double>(user + nice + system + irq + softirq + steal) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string Csv(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out;
}

std::string List(const std::vector<double>& v, int digits, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + FormatFixed(v[i], digits);
  return out;
}

// The hospital's certificate, public and secret, into a cohort's key folder (which the cohort's
// Prepare completes with its broker and patients), with the modes a node insists on.
Status CopyHospital(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to / "public", ec);
  fs::create_directories(to / "private", ec);
  if (ec) return Status::Error("cannot create " + to.string() + ": " + ec.message());
  using P = fs::perms;
  fs::permissions(to / "public",
                  P::owner_all | P::group_read | P::group_exec | P::others_read | P::others_exec);
  fs::permissions(to / "private", P::owner_all);
  for (const auto& [file, mode] :
       {std::pair{fs::path("public/hospital.key"),
                  P::owner_read | P::owner_write | P::group_read | P::others_read},
        std::pair{fs::path("private/hospital.key_secret"), P::owner_read | P::owner_write}}) {
    fs::copy_file(from / file, to / file, fs::copy_options::overwrite_existing, ec);
    if (ec) return Status::Error("cannot copy " + (from / file).string() + ": " + ec.message());
    fs::permissions(to / file, mode, ec);
  }
  return Status::Ok();
}

struct Cohort {
  std::unique_ptr<Cluster> cluster;
  fs::path dir;
  std::vector<std::string> names;
  uint64_t expected = 0;
};

struct Round {
  double wall_ms = 0;
  std::vector<double> elapsed_ms;  // each hospital's own: request -> aggregate in hand
  std::vector<double> cpu_broker, cpu_hospital;  // s, per cohort
  double cpu_patients = 0;                       // s, every patient
  double machine = 0;                            // s, the machine's busy CPU over the round
  uint64_t combined = 0, expected = 0;
  bool exact = false;
};

}  // namespace

int RunBrokers(const fs::path& bin, const fs::path& work, size_t brokers, size_t patients,
               uint32_t rounds, bool json) {
  const size_t total = brokers * patients;
  if (total > 1000) {
    std::cerr << "bench: --brokers " << brokers << " x --patients " << patients << " is " << total
              << " patient processes; at most 1000 on one machine\n";
    return 2;
  }
  const std::string shape = std::to_string(brokers) + "x" + std::to_string(patients);
  const fs::path root = work / "brokers";
  // A phase of a cohort costs about 0.12 ms of CPU per pair of its patients, and all B cohorts
  // share this machine's cores (tools/launch's deadline, with the B cohorts' pairs).
  const uint64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const uint64_t deadline_ms = 10000 + brokers * patients * patients * 40 / 100 / cores;
  const std::string deadline = std::to_string(deadline_ms);
  const std::string idle = std::to_string(std::max<uint64_t>(60000, 2 * deadline_ms));
  const milliseconds round_budget(6 * deadline_ms + 15000);

  // One hospital key, in every cohort's roster.
  const fs::path hospital_dir = root / "hospital";
  if (Status s = Cluster(bin, hospital_dir).Prepare("hospital", {}); !s.ok()) {
    std::cerr << "bench: " << s.message() << "\n";
    return 1;
  }
  std::vector<Cohort> cohorts(brokers);
  for (size_t c = 0; c < brokers; ++c) {
    Cohort& k = cohorts[c];
    // A folder per shape and cohort: a roster holds exactly its cohort.
    k.dir = root / shape / ("cohort-" + std::to_string(c + 1));
    for (size_t i = 0; i < patients; ++i) {
      const size_t g = c * patients + i;
      k.names.push_back(PatientName(g + 1));
      k.expected += InputOf(g);
    }
    std::error_code ec;
    fs::remove_all(k.dir / "captures", ec);
    fs::remove(k.dir / "results.jsonl", ec);
    Status s = CopyHospital(hospital_dir / "keys", k.dir / "keys");
    k.cluster = std::make_unique<Cluster>(bin, k.dir);
    if (s.ok()) s = k.cluster->Prepare("hospital", k.names);
    if (s.ok()) s = k.cluster->StartBroker({"--deadline-ms", deadline});
    if (!s.ok()) {
      std::cerr << "bench: cohort " << c + 1 << ": " << s.message() << "\n";
      return 1;
    }
    // Every patient runs on this machine, niced as tools/launch runs them: the brokers and the
    // hospitals serving them come first.
    k.cluster->set_patient_nice(10);
  }
  for (size_t c = 0; c < brokers; ++c) {
    Cohort& k = cohorts[c];
    for (size_t i = 0; i < patients; ++i) {
      const size_t g = c * patients + i;
      Status s = k.cluster->StartPatient(
          k.names[i], {"--value", std::to_string(InputOf(g)), "--idle-timeout-ms", idle});
      if (!s.ok()) {
        std::cerr << "bench: cohort " << c + 1 << ": " << s.message() << "\n";
        return 1;
      }
    }
  }
  for (size_t c = 0; c < brokers; ++c) {
    if (Status s = cohorts[c].cluster->WaitPatientsReady(milliseconds(60000)); !s.ok()) {
      std::cerr << "bench: cohort " << c + 1 << ": " << s.message() << "\n";
      return 1;
    }
  }

  std::vector<pid_t> broker_pids, patient_pids;
  for (auto& k : cohorts) {
    broker_pids.push_back(k.cluster->broker().pid());
    for (const auto& n : k.names) patient_pids.push_back(k.cluster->patient(n)->pid());
  }
  auto cpus = [](const std::vector<pid_t>& pids) {
    std::vector<double> out;
    for (pid_t p : pids) out.push_back(CpuSeconds(p));
    return out;
  };
  auto sum = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s;
  };

  if (!json)
    std::printf(
        "%zu broker%s x %zu patients (%zu in all), %u combined round%s; phase deadline %s ms\n",
        brokers, brokers == 1 ? "" : "s", patients, total, rounds, rounds == 1 ? "" : "s",
        deadline.c_str());
  std::vector<Round> done;
  bool failed = false;
  for (uint32_t r = 0; r < rounds && !failed; ++r) {
    Round out;
    const auto brokers_before = cpus(broker_pids);
    const auto patients_before = cpus(patient_pids);
    const double machine_before = MachineBusySeconds();
    const auto start = Clock::now();
    std::vector<Child*> hospitals;
    for (size_t c = 0; c < brokers; ++c) {
      Cohort& k = cohorts[c];
      auto h = k.cluster->StartHospital(
          "hospital", {"--range", "1000", "--participants", Csv(k.names), "--rounds", "1", "--json",
                       "--results", (k.dir / "results.jsonl").string(), "--deadline-ms", deadline,
                       "--idle-timeout-ms", idle});
      if (!h.ok()) {
        std::cerr << "bench: cohort " << c + 1 << ": " << h.message() << "\n";
        return 1;
      }
      hospitals.push_back(*h);
    }
    std::vector<std::optional<std::string>> lines(brokers);
    std::vector<Clock::time_point> arrived(brokers);
    {
      std::vector<std::jthread> readers;
      for (size_t c = 0; c < brokers; ++c)
        readers.emplace_back([&, c] {
          lines[c] = hospitals[c]->ReadLine(round_budget);
          arrived[c] = Clock::now();
        });
    }
    out.wall_ms = Ms(*std::max_element(arrived.begin(), arrived.end()) - start);
    out.machine = MachineBusySeconds() - machine_before;
    const auto brokers_after = cpus(broker_pids);
    const auto patients_after = cpus(patient_pids);
    out.cpu_patients = sum(patients_after) - sum(patients_before);
    out.expected = 0;
    out.exact = true;
    for (size_t c = 0; c < brokers; ++c) {
      out.cpu_broker.push_back(brokers_after[c] - brokers_before[c]);
      const double before = ChildrenCpuSeconds();
      const auto code = hospitals[c]->Wait(milliseconds(30000));
      out.cpu_hospital.push_back(ChildrenCpuSeconds() - before);
      auto parsed = lines[c] ? ParseResultsLine(*lines[c]) : Result<ResultsLine>(Status::Error(""));
      if (code.value_or(-1) != 0 || !parsed.ok() || !parsed->result ||
          parsed->result->aggregate.size() != 1 || !parsed->result->dropped.empty()) {
        std::cerr << "bench: cohort " << c + 1 << ", round " << r + 1
                  << " failed: hospital: " << cohorts[c].cluster->WhyStopped("hospital") << "\n";
        failed = true;
        break;
      }
      out.elapsed_ms.push_back(parsed->result->elapsed_ms);
      out.combined += parsed->result->aggregate[0];  // the ring's sum, as a combiner adds
      out.expected += cohorts[c].expected;
      out.exact = out.exact && parsed->result->aggregate[0] == cohorts[c].expected;
    }
    if (failed) break;
    out.exact = out.exact && out.combined == out.expected;
    failed = !out.exact;
    if (json) {
      std::cout << "{\"brokers\": " << brokers << ", \"patients_per_broker\": " << patients
                << ", \"round\": " << r + 1 << ", \"wall_ms\": " << FormatFixed(out.wall_ms, 1)
                << ", \"elapsed_ms\": [" << List(out.elapsed_ms, 1, ", ")
                << "], \"combined\": " << out.combined << ", \"expected\": " << out.expected
                << ", \"exact\": " << (out.exact ? "true" : "false") << ", \"cpu_ms_brokers\": ["
                << List(out.cpu_broker, 1, ", ") << "], \"cpu_ms_hospitals\": ["
                << List(out.cpu_hospital, 1, ", ")
                << "], \"cpu_ms_patients\": " << FormatFixed(out.cpu_patients * 1e3, 1)
                << ", \"cpu_ms_machine\": " << FormatFixed(out.machine * 1e3, 1) << "}"
                << std::endl;
    } else {
      auto ms = [](std::vector<double> v) {
        for (double& x : v) x *= 1e3;
        return v;
      };
      std::printf(
          "round %u: wall %s ms; hospitals' elapsed %s ms; combined %llu, expected %llu: %s\n"
          "  CPU ms: brokers %s; hospitals %s; patients (all %zu) %s; the machine, busy, %s\n",
          r + 1, FormatFixed(out.wall_ms, 1).c_str(), List(out.elapsed_ms, 1, " ").c_str(),
          static_cast<unsigned long long>(out.combined),
          static_cast<unsigned long long>(out.expected), out.exact ? "exact" : "WRONG",
          List(ms(out.cpu_broker), 1, " ").c_str(), List(ms(out.cpu_hospital), 1, " ").c_str(),
          total, FormatFixed(out.cpu_patients * 1e3, 1).c_str(),
          FormatFixed(out.machine * 1e3, 1).c_str());
      std::fflush(stdout);
    }
    done.push_back(std::move(out));
  }

  // Peak memory over every round: each broker's, the largest patient's.
  std::vector<double> rss_brokers;
  for (pid_t p : broker_pids) rss_brokers.push_back(PeakRssMiB(p));
  double rss_patient = 0;
  for (pid_t p : patient_pids) rss_patient = std::max(rss_patient, PeakRssMiB(p));
  for (auto& k : cohorts) k.cluster->StopAll();
  if (done.empty()) return 1;

  std::vector<double> wall, broker_max, hospital_sum, patients_cpu, all_cpu, others;
  for (const Round& r : done) {
    wall.push_back(r.wall_ms);
    broker_max.push_back(*std::max_element(r.cpu_broker.begin(), r.cpu_broker.end()) * 1e3);
    hospital_sum.push_back(sum(r.cpu_hospital) * 1e3);
    patients_cpu.push_back(r.cpu_patients * 1e3);
    all_cpu.push_back((sum(r.cpu_broker) + sum(r.cpu_hospital) + r.cpu_patients) * 1e3);
    others.push_back(std::max(0.0, r.machine * 1e3 - all_cpu.back()));
  }
  const double w50 = Percentile(wall, 50);
  if (json) {
    std::cout << "{\"brokers\": " << brokers << ", \"patients_per_broker\": " << patients
              << ", \"rounds\": " << done.size() << ", \"exact\": " << (failed ? "false" : "true")
              << ", \"wall_ms_p50\": " << FormatFixed(w50, 1)
              << ", \"wall_ms_max\": " << FormatFixed(Percentile(wall, 100), 1)
              << ", \"cpu_ms_broker_max_p50\": " << FormatFixed(Percentile(broker_max, 50), 1)
              << ", \"cpu_ms_hospitals_p50\": " << FormatFixed(Percentile(hospital_sum, 50), 1)
              << ", \"cpu_ms_patients_p50\": " << FormatFixed(Percentile(patients_cpu, 50), 1)
              << ", \"cpu_ms_all_p50\": " << FormatFixed(Percentile(all_cpu, 50), 1)
              << ", \"cpu_ms_others_p50\": " << FormatFixed(Percentile(others, 50), 1)
              << ", \"rss_mib_brokers\": [" << List(rss_brokers, 1, ", ")
              << "], \"rss_mib_patient_max\": " << FormatFixed(rss_patient, 1) << "}" << std::endl;
  } else {
    std::printf(
        "%s: wall p50 %s ms (max %s); CPU per combined round, p50: busiest broker %s ms, "
        "hospitals %s ms, patients %s ms, all %s ms (other processes %s ms); peak RSS MiB: "
        "brokers %s, patient max %s%s\n",
        shape.c_str(), FormatFixed(w50, 1).c_str(), FormatFixed(Percentile(wall, 100), 1).c_str(),
        FormatFixed(Percentile(broker_max, 50), 1).c_str(),
        FormatFixed(Percentile(hospital_sum, 50), 1).c_str(),
        FormatFixed(Percentile(patients_cpu, 50), 1).c_str(),
        FormatFixed(Percentile(all_cpu, 50), 1).c_str(),
        FormatFixed(Percentile(others, 50), 1).c_str(), List(rss_brokers, 1, " ").c_str(),
        FormatFixed(rss_patient, 1).c_str(), failed ? "; FAILED" : "");
  }
  return failed ? 1 : 0;
}

}  // namespace tally::bench
