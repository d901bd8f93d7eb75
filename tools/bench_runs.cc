// tally-bench's measurements with real processes, all started through tools/cluster.h: warm
// rounds, a cohort's admission, cold tally-launch runs.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <zmq.hpp>

#include "keys/curve.h"
#include "keys/keys.h"
#include "schema/decimal.h"
#include "schema/results.h"
#include "tools/bench.h"
#include "tools/cluster.h"

namespace tally::bench {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::string PatientName(size_t k) { return (k < 10 ? "p0" : "p") + std::to_string(k); }

std::string ConfigName(const Config& c) {
  return std::to_string(c.patients) + "x" +
         (c.columns ? std::to_string(c.columns) + "col" : std::to_string(c.length));
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.999999);
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

// CPU seconds of a process: the sum of its threads' run time from /proc/PID/task/*/schedstat
// (nanoseconds) when readable, else utime+stime from /proc/PID/stat (clock ticks, 10 ms).
double CpuSeconds(pid_t pid) {
  const fs::path task = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  double ns = 0;
  bool any = false;
  for (const auto& t : fs::directory_iterator(task, ec)) {
    std::ifstream in(t.path() / "schedstat");
    unsigned long long run = 0;
    if (in >> run) {
      ns += static_cast<double>(run);
      any = true;
    }
  }
  if (any) return ns / 1e9;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(s.substr(close + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {  // field 3 is the state
    if (i == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

namespace {
// A "Vm...:" line of /proc/PID/status (in kB there) in MiB, or 0 when unreadable.
double StatusMiB(pid_t pid, std::string_view field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0)
      return std::strtod(line.c_str() + field.size(), nullptr) / 1024.0;
  return 0;
}
}  // namespace

double PeakRssMiB(pid_t pid) { return StatusMiB(pid, "VmHWM:"); }
double RssMiB(pid_t pid) { return StatusMiB(pid, "VmRSS:"); }

namespace {

std::vector<double> Cpus(const std::vector<pid_t>& pids) {
  std::vector<double> out;
  for (pid_t p : pids) out.push_back(CpuSeconds(p));
  return out;
}

std::string Csv(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out;
}

// Writes each patient's vector input once per length; returns the expected aggregate.
std::vector<uint64_t> Inputs(const fs::path& dir, size_t n, uint32_t length,
                             std::vector<std::vector<uint64_t>>& values) {
  std::vector<uint64_t> expected(length, 0);
  values.assign(n, {});
  for (size_t p = 0; p < n; ++p) {
    values[p].resize(length);
    // Deterministic inputs (the file is reused): value = (p * 7919 + e) % 1001.
    for (uint32_t e = 0; e < length; ++e) {
      values[p][e] = (static_cast<uint64_t>(p) * 7919 + e) % 1001;
      expected[e] += values[p][e];
    }
    if (length == 1) continue;
    fs::path file = dir / (PatientName(p + 1) + ".txt");
    if (fs::exists(file)) continue;
    std::string text;
    text.reserve(size_t{length} * 5);
    for (uint64_t v : values[p]) text += std::to_string(v) + "\n";
    std::ofstream(file) << text;
  }
  return expected;
}

// A round with columns: patient p's CSV (header c0..cN-1, one row of signed values with two
// decimals in [-500.00, 500.00]); returns the exact sum of each column in hundredths.
std::vector<Int128> ColumnInputs(const fs::path& dir, size_t n, uint32_t columns) {
  std::vector<Int128> expected(columns, 0);
  std::string header;
  for (uint32_t c = 0; c < columns; ++c) header += (c ? ",c" : "c") + std::to_string(c);
  for (size_t p = 0; p < n; ++p) {
    std::string row;
    for (uint32_t c = 0; c < columns; ++c) {
      const int64_t units = static_cast<int64_t>((p * 7919 + c * 104729) % 100001) - 50000;
      expected[c] += units;
      row += (c ? "," : "") + FormatUnits(units, 2);
    }
    std::ofstream(dir / (PatientName(p + 1) + ".csv")) << header << "\n" << row << "\n";
  }
  return expected;
}

}  // namespace

Measured RunConfig(const Config& c, const fs::path& bin, const fs::path& work,
                   const fs::path& captures_root) {
  Measured m;
  m.config = c;
  const std::string tag = ConfigName(c);
  const fs::path logs = work / "logs" / tag;
  const fs::path inputs = work / "inputs" / (c.columns ? tag : std::to_string(c.length));
  const fs::path run = captures_root / tag;
  std::error_code ec;
  fs::remove_all(logs, ec);
  fs::remove_all(run, ec);
  fs::create_directories(logs, ec);
  fs::create_directories(inputs, ec);
  fs::create_directories(run / "captures", ec);
  if (ec) {
    m.error = "cannot create folders under " + work.string() + ": " + ec.message();
    return m;
  }
  std::vector<std::string> names;
  for (size_t k = 1; k <= c.patients; ++k) names.push_back(PatientName(k));
  std::vector<std::vector<uint64_t>> values;
  const auto expected = Inputs(inputs, c.patients, c.length, values);
  std::vector<Int128> column_sums;
  std::vector<std::string> columns;
  if (c.columns) {
    column_sums = ColumnInputs(inputs, c.patients, c.columns);
    for (uint32_t i = 0; i < c.columns; ++i) columns.push_back("c" + std::to_string(i));
  }

  Cluster cluster(bin, work, logs);
  if (Status s = cluster.StartBroker(Cluster::BrokerSpec{.captures = run / "captures"}); !s.ok()) {
    m.error = s.message();
    return m;
  }
  std::vector<Child> patients;
  for (size_t p = 0; p < c.patients; ++p) {
    auto child = cluster.SpawnNode(
        names[p],
        c.columns ? std::vector<std::string>{"--input", (inputs / (names[p] + ".csv")).string()}
        : c.length == 1
            ? std::vector<std::string>{"--value", std::to_string(values[p][0])}
            : std::vector<std::string>{"--input", (inputs / (names[p] + ".txt")).string()});
    if (!child.ok()) {
      m.error = child.message();
      return m;
    }
    patients.push_back(std::move(child.value()));
  }
  const auto started = Clock::now();
  std::vector<std::string> what = {"--range", "1000", "--length", std::to_string(c.length)};
  if (c.columns) what = {"--columns", Csv(columns), "--bounds", "-500:500", "--decimals", "2"};
  std::vector<std::string> args = {"--participants",
                                   Csv(names),
                                   "--rounds",
                                   std::to_string(c.rounds),
                                   "--json",
                                   "--results",
                                   (run / "results.jsonl").string()};
  args.insert(args.begin(), what.begin(), what.end());
  auto hospital = cluster.SpawnNode("hospital", args);
  if (!hospital.ok()) {
    m.error = hospital.message();
    return m;
  }

  std::vector<pid_t> pids = {cluster.broker().pid(), hospital->pid()};
  for (auto& p : patients) pids.push_back(p.pid());
  std::vector<Clock::time_point> arrivals;
  std::vector<std::string> lines;
  std::vector<double> cpu_before, cpu_after;
  const auto line_budget = milliseconds(c.length > 100000 ? 120000 : 30000);
  for (uint32_t k = 0; k < c.rounds; ++k) {
    auto line = hospital->ReadLine(line_budget);
    const auto now = Clock::now();
    if (!line) break;
    arrivals.push_back(now);
    lines.push_back(std::move(*line));
    if (k == 0) cpu_before = Cpus(pids);
    if (k + 1 == c.rounds) {
      cpu_after = Cpus(pids);
      m.rss_broker = PeakRssMiB(cluster.broker().pid());
      m.rss_hospital = PeakRssMiB(hospital->pid());
      for (auto& p : patients) m.rss_patient_max = std::max(m.rss_patient_max, PeakRssMiB(p.pid()));
    }
  }
  const auto code = hospital->Wait(milliseconds(30000));
  for (auto& p : patients) p.Signal(SIGTERM);
  for (auto& p : patients) p.Stop();
  cluster.StopBroker();
  fs::remove_all(run, ec);  // captures of big rounds are large

  if (arrivals.size() != c.rounds || code.value_or(-1) != 0) {
    std::string why = LastLine(cluster.LogOf("hospital"));
    m.error = "round " + std::to_string(arrivals.size() + 1) +
              " failed: " + (why.empty() ? "the hospital exited without a result" : why);
    return m;
  }
  std::vector<RoundResult> results;
  for (const auto& line : lines) {
    auto parsed = ParseResultsLine(line);
    if (!parsed.ok() || !parsed->result) {
      m.error = "a hospital line is not a result: " + line;
      return m;
    }
    bool right = parsed->result->aggregate == expected;
    if (c.columns) {
      right = parsed->result->columns.size() == c.columns;
      for (size_t i = 0; right && i < c.columns; ++i)
        right = parsed->result->columns[i].sum == std::vector{FormatUnits(column_sums[i], 2)};
    }
    if (!right) {
      m.error = "an aggregate does not match the sum of the inputs";
      return m;
    }
    results.push_back(*parsed->result);
  }
  m.wall_first_ms = std::chrono::duration<double, std::milli>(arrivals[0] - started).count();
  for (size_t k = 1; k < arrivals.size(); ++k) {
    m.period_ms.push_back(
        std::chrono::duration<double, std::milli>(arrivals[k] - arrivals[k - 1]).count());
    m.latency_ms.push_back(results[k].elapsed_ms);
  }
  const double warm = static_cast<double>(c.rounds - 1);
  if (warm > 0 && cpu_before.size() == pids.size() && cpu_after.size() == pids.size()) {
    for (size_t i = 0; i < pids.size(); ++i) {
      const double d = (cpu_after[i] - cpu_before[i]) / warm;
      m.cpu_per_round += d;
      (i == 0 ? m.cpu_broker : i == 1 ? m.cpu_hospital : m.cpu_patients) += d;
    }
  }
  m.ok = true;
  return m;
}

// N patients connect at once, each with its own keys: a DEALER to the router and a SUB to the
// phase channel per patient, all from this process (one ZeroMQ context, 2 I/O threads), as a
// cohort reaching a broker together would. Waits on every socket's handshake event.
Admitted Admit(const fs::path& bin, const fs::path& work, size_t n) {
  Admitted a;
  const fs::path keys = work / "keys";
  const fs::path logs = work / "logs" / ("admission-" + std::to_string(n));
  std::error_code ec;
  fs::remove_all(logs, ec);
  fs::create_directories(logs / "captures", ec);
  Cluster cluster(bin, work, logs);
  if (Status s = cluster.StartBroker(Cluster::BrokerSpec{.captures = logs / "captures"}); !s.ok()) {
    a.error = s.message();
    return a;
  }
  Child& broker = cluster.broker();
  auto roster = LoadRoster(keys);
  if (!roster.ok()) {
    a.error = roster.message();
    return a;
  }
  const Certificate* broker_cert = roster->Find("broker");
  std::vector<tally::SecretCertificate> secrets;
  for (size_t k = 1; k <= n; ++k) {
    auto me = tally::LoadSecret(keys, PatientName(k));
    if (!me.ok()) {
      a.error = me.message();
      return a;
    }
    secrets.push_back(std::move(me.value()));
  }
  zmq::context_t ctx(2);
  // Per patient: two sockets, two monitor sockets, and the two that zmq_socket_monitor makes.
  ctx.set(zmq::ctxopt::max_sockets, static_cast<int>(6 * n + 16));
  std::vector<zmq::socket_t> sockets, monitors;
  sockets.reserve(2 * n);
  monitors.reserve(2 * n);
  const double cpu_before = CpuSeconds(broker.pid());
  const auto start = Clock::now();
  try {
    for (size_t k = 0; k < n; ++k) {
      for (int s = 0; s < 2; ++s) {
        zmq::socket_t& sock =
            sockets.emplace_back(ctx, s == 0 ? zmq::socket_type::dealer : zmq::socket_type::sub);
        const std::string& endpoint =
            s == 0 ? cluster.endpoints().router : cluster.endpoints().phases;
        CurveClient(sock, secrets[k], broker_cert->curve_public, {0, -1, endpoint});
        Monitor(sock, monitors.emplace_back(ctx, zmq::socket_type::pair),
                ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
        if (s == 1) sock.set(zmq::sockopt::subscribe, "");
        sock.connect(endpoint);
      }
    }
    std::vector<zmq::pollitem_t> items;
    for (auto& m : monitors) items.push_back({m.handle(), 0, ZMQ_POLLIN, 0});
    std::vector<bool> done(items.size(), false);
    size_t left = items.size();
    const auto deadline = start + std::chrono::seconds(120);
    while (left > 0 && Clock::now() < deadline) {
      zmq::poll(items.data(), items.size(), milliseconds(1000));
      for (size_t i = 0; i < items.size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        (void)NextEvent(monitors[i]);
        if (!done[i]) {
          done[i] = true;
          --left;
        }
      }
    }
    if (left > 0) {
      a.error = std::to_string(left) + " of " + std::to_string(items.size()) +
                " handshakes did not complete in 120 s";
      return a;
    }
  } catch (const zmq::error_t& e) {
    a.error = std::string("zmq: ") + e.what();
    return a;
  }
  a.wall_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  a.broker_cpu_ms = (CpuSeconds(broker.pid()) - cpu_before) * 1e3;
  a.broker_rss_mib = PeakRssMiB(broker.pid());
  sockets.clear();
  monitors.clear();
  cluster.StopBroker();
  a.ok = true;
  return a;
}

LaunchRuns RunLaunch(const fs::path& bin, const fs::path& work, int runs,
                     const std::vector<std::string>& options) {
  LaunchRuns out;
  const fs::path dir = work / "launch";
  const Cluster tools(bin, work, work);
  for (int i = -1; i < runs; ++i) {  // run -1 makes the keys and is not counted
    std::error_code ec;
    fs::remove_all(dir / "captures", ec);
    fs::remove(dir / "results.jsonl", ec);
    const auto start = Clock::now();
    std::vector<std::string> args = {"--json", "--workdir", dir.string(), "--bin-dir",
                                     bin.string()};
    args.insert(args.end(), options.begin(), options.end());
    const Cluster::Output o = tools.RunTool("tools/tally-launch", args, milliseconds(120000));
    const double wall = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    const auto at = o.out.find("\"elapsed_ms\": ");
    if (o.code != 0 || at == std::string::npos) {
      out.error = "tally-launch failed: " + (o.err.empty() ? o.out : o.err);
      return out;
    }
    if (i < 0) continue;
    out.elapsed_ms.push_back(std::strtod(o.out.c_str() + at + 14, nullptr));
    out.wall_ms.push_back(wall);
  }
  return out;
}

}  // namespace tally::bench
