// tally-bench --load: a few generator processes hosting N patients between them, for measuring
// a broker and a hospital serving thousands of parties on one machine. Each hosted patient is
// Tally's real patient (nodes/node.h: the node library's Link and patient role) with its own
// keys and its own two CURVE connections to a real tally-broker process; a real tally-node
// hospital process asks for the rounds. What a generator shares between its patients is what a
// process can share without changing what goes over the wire: the roster, loaded once, and one
// ZeroMQ context with a few I/O threads. Its patients are driven by a few threads, each owning a
// slice of them with its own epoll set over their sockets' ZMQ_FDs (edge-triggered: a node is
// served until nothing is pending), so that a round's work is not an O(N) poll per message.
// There is more than one generator process when one would meet a per-process limit (open files,
// memory maps: kPatientsPerGenerator). Real processes remain the test of correctness
// (tools/launch); this is for measuring.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "keys/keys.h"
#include "nodes/node.h"
#include "schema/log.h"
#include "schema/results.h"
#include "schema/system.h"
#include "tools/bench.h"
#include "tools/cluster.h"

namespace tally::bench {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr auto kSweepEvery = std::chrono::seconds(1);  // each node's deadlines (Tick)
constexpr int kServeBurst = 64;  // Serve calls in a row for one node before others get a turn
// Patients a driving thread has connecting (handshakes not yet done) at once. Thousands
// connecting at once from processes that share the broker's cores time out the handshakes
// (ZMQ_HANDSHAKE_IVL), whose retries load it further: admission collapses instead of queueing.
constexpr size_t kMaxConnecting = 32;
constexpr auto kProgressEvery = std::chrono::seconds(2);

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The generator's patient p's element e (p from 0), as tally-bench's other runs use.
uint64_t Value(size_t p, uint32_t e) { return (static_cast<uint64_t>(p) * 7919 + e) % 1001; }

size_t Count(const fs::path& dir) {
  std::error_code ec;
  size_t n = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) ++n;
  return n;
}

// A log sink for every hosted node: one file, timestamped lines, from any thread.
class SharedLog {
 public:
  explicit SharedLog(const fs::path& path) : file_(std::fopen(path.c_str(), "w")) {}
  ~SharedLog() {
    if (file_) std::fclose(file_);
  }
  LogSink Sink() {
    return [this](const std::string& line) {
      if (!file_) return;
      const std::string stamped = Rfc3339(std::chrono::system_clock::now()) + " " + line + "\n";
      std::lock_guard<std::mutex> lock(mu_);
      std::fwrite(stamped.data(), 1, stamped.size(), file_);
    };
  }

 private:
  std::FILE* file_;
  std::mutex mu_;
};

// The hosted patients, in `threads` slices; each slice's thread creates its nodes, then serves
// them until Stop.
class Generator {
 public:
  // Hosts patients first .. first + count - 1 (from 0) of o.patients.
  Generator(const LoadOptions& o, size_t first, size_t count, const fs::path& keys,
            const BrokerEndpoints& endpoints, NodeHost host, LogSink log)
      : o_(o),
        first_(first),
        end_(first + count),
        keys_(keys),
        endpoints_(endpoints),
        host_(std::move(host)),
        log_(std::move(log)) {}
  ~Generator() { Stop(); }

  void Start() {
    for (size_t t = 0; t < o_.threads; ++t) threads_.emplace_back([this, t] { Slice(t); });
  }
  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  // Waits until `count` patients have been connected (both handshakes) at least once, a
  // patient failed, or `until`; wakes at least every `every` to let the caller report progress.
  size_t WaitConnected(size_t count, Clock::time_point until) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_until(lock, until, [&] { return connected_ >= count || !failure_.empty(); });
    return connected_;
  }
  std::string failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }

 private:
  struct Slot {
    size_t index = 0;
    std::unique_ptr<Node> node;
    std::array<int, 4> fds{};
    bool counted = false;               // its first connection was counted
    size_t* slice_connected = nullptr;  // its slice's count of those, for pacing the connects
    bool vanish = false;                // reached the vanish phase: to be closed
    bool queued = false;                // in the ready queue
    int epoll = -1;                     // its slice's epoll set
  };

  Status Make(Slot& s) {
    NodeOptions n;
    n.keys_dir = keys_;
    n.name = PatientName(s.index + 1);
    n.router_endpoint = endpoints_.router;
    n.phases_endpoint = endpoints_.phases;
    n.idle_timeout_ms = o_.idle_timeout_ms;
    n.graph = o_.graph;
    n.input.cells.reserve(o_.length);
    for (uint32_t e = 0; e < o_.length; ++e)
      n.input.cells.push_back(std::to_string(Value(s.index, e)));
    if (s.index >= o_.patients - o_.drop) {
      n.vanish_at = Phase::kMask;
      n.on_vanish = [&s](Phase) { s.vanish = true; };
    }
    auto node = Node::Create(
        n, log_, nullptr,
        [this, &s] {
          if (s.counted) return;
          s.counted = true;
          ++*s.slice_connected;  // called on the slice's own thread, from Serve
          std::lock_guard<std::mutex> lock(mu_);
          ++connected_;
          cv_.notify_all();
        },
        &host_);
    if (!node.ok()) return node.status();
    s.node = std::move(node.value());
    s.fds = s.node->Fds();
    for (size_t k = 0; k < s.fds.size(); ++k) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLET;
      ev.data.ptr = &s;
      if (::epoll_ctl(s.epoll, EPOLL_CTL_ADD, s.fds[k], &ev) != 0)
        return Status::Error(std::string("epoll_ctl: ") + std::strerror(errno));
    }
    return Status::Ok();
  }

  // A vanished patient closes its connections, as a process that exits would; a fresh node with
  // the same keys takes its place for the next round (and vanishes there again).
  void Close(Slot& s) {
    for (int fd : s.fds) (void)::epoll_ctl(s.epoll, EPOLL_CTL_DEL, fd, nullptr);
    s.node.reset();
    s.queued = false;
  }

  void Fail(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_.empty()) failure_ = why;
    cv_.notify_all();
  }

  // Serves one node until nothing is pending (or its burst is spent: true, serve it again).
  bool Serve(Slot& s) {
    for (int i = 0; i < kServeBurst && s.node; ++i) {
      if (std::optional<Status> done = s.node->Serve()) {
        Fail(PatientName(s.index + 1) + ": " +
             (done->ok() ? std::string("stopped") : done->message()));
        Close(s);
        return false;
      }
      if (s.vanish) {
        Close(s);
        s.vanish = false;
        if (Status made = Make(s); !made.ok())
          Fail(PatientName(s.index + 1) + ": " + made.message());
        return false;
      }
      if (!s.node->Pending()) return false;
    }
    return s.node != nullptr;
  }

  void Slice(size_t t) {
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return Fail(std::string("epoll_create1: ") + std::strerror(errno));
    std::deque<Slot> slots;  // stable addresses: callbacks and epoll hold pointers
    std::deque<Slot*> ready;
    auto drain = [&](int timeout_ms) {
      epoll_event events[256];
      const int n = ::epoll_wait(ep, events, 256, timeout_ms);
      for (int i = 0; i < n; ++i) {
        Slot* s = static_cast<Slot*>(events[i].data.ptr);
        if (!s->queued) {
          s->queued = true;
          ready.push_back(s);
        }
      }
      // Round-robin: a node with more pending goes to the back.
      for (size_t k = ready.size(); k > 0 && !stop_.load(); --k) {
        Slot* s = ready.front();
        ready.pop_front();
        s->queued = false;
        if (s->node && Serve(*s)) {
          s->queued = true;
          ready.push_back(s);
        }
      }
    };
    // Each node's deadlines, and events that came before its descriptors were watched.
    auto next_sweep = Clock::now() + kSweepEvery;
    auto sweep = [&] {
      if (Clock::now() < next_sweep) return;
      for (Slot& s : slots)
        if (s.node) (void)Serve(s);
      next_sweep = Clock::now() + kSweepEvery;
    };
    size_t connected = 0;
    for (size_t i = first_ + t; i < end_ && !stop_.load(); i += o_.threads) {
      Slot& s = slots.emplace_back();
      s.index = i;
      s.epoll = ep;
      s.slice_connected = &connected;
      if (Status made = Make(s); !made.ok()) {
        Fail(PatientName(i + 1) + ": " + made.message());
        break;
      }
      while (slots.size() - connected >= kMaxConnecting && !stop_.load() && failure().empty()) {
        drain(100);
        sweep();
      }
    }
    next_sweep = Clock::now();
    while (!stop_.load()) {
      sweep();
      drain(ready.empty() ? 100 : 0);
    }
    for (Slot& s : slots)
      if (s.node) Close(s);
    ::close(ep);
  }

  const LoadOptions o_;
  const size_t first_, end_;
  const fs::path keys_;
  const BrokerEndpoints endpoints_;
  NodeHost host_;
  LogSink log_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  size_t connected_ = 0;
  std::string failure_;
};

// The generator processes of a run, as RunLoad sees them: children reporting on stdout.
class Generators {
 public:
  // Starts `processes` generators for p1..pN, near-equal slices in name order.
  Status Start(const LoadOptions& o, const fs::path& bin, const fs::path& keys,
               const BrokerEndpoints& endpoints, const fs::path& logs) {
    const size_t n = o.patients, p = o.processes;
    for (size_t k = 0, first = 0; k < p; ++k) {
      const size_t count = n / p + (k < n % p ? 1 : 0);
      const std::string tag = "generator-" + std::to_string(k + 1);
      std::vector<std::string> argv = {(bin / "tools/tally-bench").string(),
                                       "--load",
                                       std::to_string(n),
                                       "--load-slice",
                                       std::to_string(first) + ":" + std::to_string(count),
                                       "--keys",
                                       keys.string(),
                                       "--router",
                                       endpoints.router,
                                       "--phases",
                                       endpoints.phases,
                                       "--log",
                                       (logs / (tag + ".log")).string(),
                                       "--length",
                                       std::to_string(o.length),
                                       "--load-threads",
                                       std::to_string(o.threads),
                                       "--idle-timeout-ms",
                                       std::to_string(o.idle_timeout_ms)};
      if (o.drop != 0) argv.insert(argv.end(), {"--drop", std::to_string(o.drop)});
      auto child = Child::Spawn(argv, logs / (tag + ".err"));
      if (!child.ok()) return Status::Error("cannot start " + tag + ": " + child.message());
      children_.push_back({tag, logs / (tag + ".err"), std::move(child.value())});
      first += count;
    }
    return Status::Ok();
  }

  // Waits for every generator's "ready" line, at most until `until`, passing on their progress.
  // A generator that exits or fails meanwhile, any of them, is reported at once.
  Status WaitReady(Clock::time_point until, const std::function<void(const std::string&)>& say) {
    for (Gen& g : children_) {
      for (;;) {
        for (Gen& other : children_)
          if (!other.child.running()) return Status::Error(other.tag + " exited: " + Why(other));
        const auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now());
        auto line = g.child.ReadLine(std::clamp(left, milliseconds(0), milliseconds(2500)));
        if (!line && Clock::now() < until) continue;  // no progress line yet: look at all again
        if (!line) return Status::Error(g.tag + " was not ready in time: " + Why(g));
        if (line->starts_with("ready ")) break;
        if (line->starts_with("connected ")) {
          say(g.tag + ": " + *line);
          continue;
        }
        return Status::Error(g.tag + ": " + *line);
      }
    }
    return Status::Ok();
  }

  // What a generator that failed or exited said, if any did: for a round's error.
  std::string Failure() {
    for (Gen& g : children_) {
      if (auto line = g.child.ReadLine(milliseconds(0))) return g.tag + ": " + *line;
      if (!g.child.running()) return g.tag + " exited: " + Why(g);
    }
    return "";
  }

  std::vector<pid_t> pids() const {
    std::vector<pid_t> out;
    for (const Gen& g : children_) out.push_back(g.child.pid());
    return out;
  }
  size_t size() const { return children_.size(); }

  // Stops every generator (SIGTERM: they close their connections and exit 0). All at once, and
  // with time: closing 2,000 patients' sockets on a busy machine takes seconds.
  Status Stop() {
    std::string bad;
    for (Gen& g : children_) g.child.Signal(SIGTERM);
    for (Gen& g : children_)
      if (const int code = g.child.Stop(std::chrono::seconds(120)); code != 0)
        bad += (bad.empty() ? "" : "; ") + g.tag + " exited with " + std::to_string(code) + ": " +
               Why(g);
    children_.clear();
    return bad.empty() ? Status::Ok() : Status::Error(bad);
  }

 private:
  struct Gen {
    std::string tag;
    fs::path err;
    Child child;
  };
  // Why a generator stopped: its "failed:" line, else the last line of its stderr.
  static std::string Why(Gen& g) {
    if (auto said = g.child.ReadLine(std::chrono::milliseconds(0))) return *said;
    const std::string last = LastLine(g.err);
    return last.empty() ? "no message (" + g.err.string() + ")" : last;
  }
  std::vector<Gen> children_;
};

double SumCpu(const std::vector<pid_t>& pids) {
  double s = 0;
  for (pid_t p : pids) s += CpuSeconds(p);
  return s;
}
double SumRss(const std::vector<pid_t>& pids) {
  double s = 0;
  for (pid_t p : pids) s += RssMiB(p);
  return s;
}

}  // namespace

int HostLoadSlice(const LoadOptions& o, const LoadSlice& slice) {
  auto fail = [](const std::string& why) {
    std::printf("failed: %s\n", why.c_str());
    std::fflush(stdout);
    return 1;
  };
  // SIGTERM and SIGINT are taken by sigtimedwait below: blocked before any thread starts, so
  // that every thread inherits the mask and none is killed by them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  // A run that is killed must not leave its generators serving until their idle timeout.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  const timespec at_once{0, 0};
  // Per hosted patient: a DEALER, a SUB, two monitors and the two sockets zmq_socket_monitor
  // makes, each with a descriptor (its mailbox), and two TCP connections: 8 descriptors each.
  if (Status s =
          EnsureOpenFileLimit(8 * slice.count + 256, "hosting " + std::to_string(slice.count) +
                                                         " patients (8 descriptors each)");
      !s.ok())
    return fail(s.message());
  auto roster = LoadRoster(slice.keys);
  if (!roster.ok()) return fail(roster.message());
  // One I/O thread per 500 patients at least: libzmq's timer cancels scan an I/O thread's
  // timers (keys/curve.h, ServerHeartbeatMs), so 2,000 patients' heartbeats on 2 threads cost a
  // generator CPU no real patient pays. Spread over more threads they cost less in all.
  zmq::context_t ctx(static_cast<int>(std::max(o.io_threads, slice.count / 500)));
  try {
    ctx.set(zmq::ctxopt::max_sockets, static_cast<int>(6 * slice.count + 64));
  } catch (const zmq::error_t& e) {
    return fail("cannot let ZeroMQ open " + std::to_string(6 * slice.count + 64) +
                " sockets: " + e.what());
  }
  SharedLog log(slice.log);
  Generator gen(o, slice.first, slice.count, slice.keys, {slice.router, slice.phases},
                NodeHost{&ctx, std::make_shared<const Roster>(std::move(roster.value()))},
                log.Sink());
  gen.Start();
  const auto until = Clock::now() + std::chrono::seconds(120) + milliseconds(20 * slice.count);
  for (;;) {
    const size_t c = gen.WaitConnected(slice.count, std::min(until, Clock::now() + kProgressEvery));
    if (!gen.failure().empty()) return fail(gen.failure());
    if (c >= slice.count) break;
    if (::sigtimedwait(&stop, nullptr, &at_once) > 0) {  // stopped while connecting
      gen.Stop();
      return 0;
    }
    if (Clock::now() >= until)
      return fail("only " + std::to_string(c) + " of " + std::to_string(slice.count) +
                  " patients connected in time");
    std::printf("connected %zu/%zu\n", c, slice.count);
    std::fflush(stdout);
  }
  std::printf("ready %zu\n", slice.count);
  std::fflush(stdout);
  // Serves until told to stop; a patient's failure is reported at once.
  for (;;) {
    const timespec every{1, 0};
    if (::sigtimedwait(&stop, nullptr, &every) > 0) break;
    if (!gen.failure().empty()) return fail(gen.failure());
  }
  gen.Stop();
  return 0;
}

LoadRun RunLoad(const LoadOptions& options, const fs::path& bin, const fs::path& work,
                const fs::path& captures_root, const std::function<void(const std::string&)>& say) {
  LoadRun r;
  LoadOptions o = options;
  const size_t n = o.patients;
  if (o.processes == 0) o.processes = (n + kPatientsPerGenerator - 1) / kPatientsPerGenerator;
  o.processes = std::clamp<size_t>(o.processes, 1, n);
  const fs::path dir = work / ("load-" + std::to_string(n));
  const fs::path run = captures_root / ("load-" + std::to_string(n));
  std::error_code ec;
  fs::remove_all(run, ec);
  fs::create_directories(run / "captures", ec);
  fs::create_directories(dir / "logs", ec);
  if (ec) {
    r.error = "cannot create folders under " + work.string() + ": " + ec.message();
    return r;
  }
  Cluster cluster(bin, dir, dir / "logs");
  std::vector<std::string> names;
  for (size_t k = 1; k <= n; ++k) names.push_back(PatientName(k));
  say("keys: " + std::to_string(n) + " patients, the hospital and the broker in " +
      (dir / "keys").string());
  auto t0 = Clock::now();
  if (Status s = cluster.Prepare("hospital", names); !s.ok()) {
    r.error = s.message();
    return r;
  }
  r.keys_ms = Ms(Clock::now() - t0);
  auto roster = LoadRoster(cluster.keys());
  if (!roster.ok()) {
    r.error = roster.message();
    return r;
  }
  if (roster->Names(Role::kPatient).size() != n) {
    r.error = cluster.keys().string() + " holds other patients than p1..pN";
    return r;
  }
  const uint32_t deadline = o.deadline_ms;
  if (Status s = cluster.StartBroker(Cluster::BrokerSpec{
          .extra = {"--deadline-ms", std::to_string(deadline)}, .captures = run / "captures"});
      !s.ok()) {
    r.error = s.message();
    return r;
  }
  const pid_t broker = cluster.broker().pid();
  say("broker up (pid " + std::to_string(broker) + "); connecting " + std::to_string(n) +
      " patients from " + std::to_string(o.processes) + " generator process" +
      (o.processes > 1 ? "es" : "") + " (" + std::to_string(o.threads) + " threads each)");

  r.broker_rss_idle = RssMiB(broker);
  const double broker_cpu0 = CpuSeconds(broker);
  t0 = Clock::now();
  Generators gens;
  if (Status s = gens.Start(o, bin, cluster.keys(), cluster.endpoints(), dir / "logs"); !s.ok()) {
    r.error = s.message();
    return r;
  }
  if (Status s = gens.WaitReady(t0 + std::chrono::seconds(150) + milliseconds(20 * n), say);
      !s.ok()) {
    r.error = "while connecting: " + s.message();
    return r;
  }
  r.admission_ms = Ms(Clock::now() - t0);
  r.broker_rss_connected = RssMiB(broker);
  r.broker_cpu_admission = CpuSeconds(broker) - broker_cpu0;
  r.generator_cpu_admission = SumCpu(gens.pids());
  r.generators = gens.size();
  r.generator_rss = SumRss(gens.pids());
  for (pid_t p : gens.pids()) r.generator_fds += Count("/proc/" + std::to_string(p) + "/fd");
  r.broker_fds = Count("/proc/" + std::to_string(broker) + "/fd");
  say("connected " + std::to_string(n) + "/" + std::to_string(n) + " in " +
      FormatFixed(r.admission_ms, 0) + " ms");

  if (o.rounds > 0) {
    std::vector<std::string> args = {"--range",
                                     "1000",
                                     "--length",
                                     std::to_string(o.length),
                                     "--rounds",
                                     std::to_string(o.rounds),
                                     "--deadline-ms",
                                     std::to_string(deadline),
                                     "--idle-timeout-ms",
                                     std::to_string(o.idle_timeout_ms),
                                     "--json",
                                     "--results",
                                     (run / "results.jsonl").string()};
    if (o.graph) args.insert(args.end(), {"--graph", "auto"});
    // The sum over the survivors: every patient's input but the vanishers'.
    std::vector<uint64_t> expected(o.length, 0);
    std::vector<std::string> vanishers;
    for (size_t p = 0; p < n; ++p) {
      if (p >= n - o.drop) {
        vanishers.push_back(PatientName(p + 1));
        continue;
      }
      for (uint32_t e = 0; e < o.length; ++e) expected[e] += Value(p, e);
    }
    std::sort(vanishers.begin(), vanishers.end());
    auto hospital = cluster.SpawnNode("hospital", args);
    if (!hospital.ok()) {
      r.error = hospital.message();
      return r;
    }
    // CPU over each round: the broker, the hospital, and the generators together.
    auto cpu = [&] {
      return std::array<double, 3>{CpuSeconds(broker), CpuSeconds(hospital->pid()),
                                   SumCpu(gens.pids())};
    };
    auto last = Clock::now();
    auto before = cpu();
    const auto budget = milliseconds(6 * uint64_t{deadline} + 60000);
    for (uint32_t k = 0; k < o.rounds; ++k) {
      auto line = hospital->ReadLine(budget);
      const auto now = Clock::now();
      if (!line) {
        r.error = "round " + std::to_string(k + 1) + ": " + cluster.WhyStopped("hospital");
        if (const std::string g = gens.Failure(); !g.empty()) r.error += "; " + g;
        return r;
      }
      LoadRound round;
      round.period_ms = Ms(now - last);
      last = now;
      const auto after = cpu();
      round.cpu_broker = after[0] - before[0];
      round.cpu_hospital = after[1] - before[1];
      round.cpu_generator = after[2] - before[2];
      before = after;
      round.rss_broker_peak = PeakRssMiB(broker);
      auto parsed = ParseResultsLine(*line);
      if (!parsed.ok() || !parsed->result) {
        r.error = "round " + std::to_string(k + 1) + " failed: " + *line;
        if (const std::string g = gens.Failure(); !g.empty()) r.error += "; " + g;
        return r;
      }
      round.latency_ms = parsed->result->elapsed_ms;
      round.survivors = n - parsed->result->dropped.size();
      std::vector<std::string> dropped = parsed->result->dropped;
      std::sort(dropped.begin(), dropped.end());
      round.exact = parsed->result->aggregate == expected && dropped == vanishers;
      r.rounds.push_back(round);
      say("round " + std::to_string(k + 1) + "/" + std::to_string(o.rounds) + ": " +
          FormatFixed(round.latency_ms, 1) + " ms, " + std::to_string(round.survivors) +
          " survivors, " + (round.exact ? "exact" : "NOT the expected sum"));
      if (!round.exact) {
        r.error = "round " + std::to_string(k + 1) +
                  ": the aggregate or the dropped set is not the expected one: " + *line;
        if (const std::string g = gens.Failure(); !g.empty()) r.error += "; " + g;
        return r;
      }
    }
    if (hospital->Wait(milliseconds(30000)).value_or(-1) != 0) {
      r.error = "the hospital did not exit cleanly: " + cluster.WhyStopped("hospital");
      return r;
    }
  }
  if (Status s = gens.Stop(); !s.ok()) {
    r.error = "stopping the generators: " + s.message();
    return r;
  }
  cluster.StopBroker();
  fs::remove_all(run, ec);
  r.ok = true;
  return r;
}

}  // namespace tally::bench
