#include "tools/cluster.h"

#include <algorithm>
#include <csignal>
#include <fstream>
#include <thread>

#include "schema/log.h"
#include "schema/system.h"

namespace tally {

uint64_t LocalPhaseDeadlineMs(uint64_t n, uint64_t peers, uint64_t cores) {
  if (cores == 0) cores = std::max(1u, std::thread::hardware_concurrency());
  return 10000 + n * (4 * peers + 300) / 10 / cores;
}
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kKeygenBudget{120000};
constexpr milliseconds kBrokerStart{15000};
constexpr milliseconds kPatientStart{60000};  // one patient's start, up to its readiness
constexpr auto kProgressEvery = std::chrono::seconds(2);

std::string Csv(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

bool HasSecret(const fs::path& keys, const std::string& name) {
  return fs::exists(keys / "private" / (name + ".key_secret"));
}

// A party's secret certificate from before protocol 3 has no signing key (keys/keys.h), and
// every node would refuse the roster.
bool BeforeProtocol3(const fs::path& keys, const std::string& name) {
  std::ifstream in(keys / "private" / (name + ".key_secret"));
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return in && text.find("sign-secret-key") == std::string::npos;
}

}  // namespace

Cluster::Cluster(fs::path bin, fs::path work, fs::path logs)
    : bin_(std::move(bin)), work_(std::move(work)), logs_(logs.empty() ? work_ / "logs" : logs) {}

Cluster::~Cluster() {
  if (hospital_) hospital_->Stop();
  StopAll();
}

Status Cluster::Prepare(const std::string& hospital, const std::vector<std::string>& patients) {
  std::error_code ec;
  for (const fs::path& dir : {logs(), captures()}) {
    fs::create_directories(dir, ec);
    if (ec) return Status::Error("cannot create " + dir.string() + ": " + ec.message());
  }
  // Per child: its stdout pipe and its pidfd; and the broker, the hospital, keygen.
  TALLY_RETURN_IF_ERROR(EnsureOpenFileLimit(
      2 * patients.size() + 64, "starting " + std::to_string(patients.size()) + " patients"));
  std::vector<std::string> args = {(bin_ / "tools/tally-keygen").string(), "--dir",
                                   keys().string()};
  const size_t base = args.size();
  // Keys made by an older Tally in this folder are remade: they are this cluster's own.
  auto remake = [&](const std::string& name) { return BeforeProtocol3(keys(), name); };
  if (remake(hospital) || std::any_of(patients.begin(), patients.end(), remake)) {
    StderrLog()("the keys in " + keys().string() +
                " are from before protocol 3 (no signing keys): making new ones");
    args.push_back("--force");
  }
  const bool force = args.size() > base;
  if (!HasSecret(keys(), "broker")) args.push_back("--broker");
  if (force || !HasSecret(keys(), hospital)) args.insert(args.end(), {"--hospital", hospital});
  std::vector<std::string> missing;
  for (const auto& p : patients)
    if (force || !HasSecret(keys(), p)) missing.push_back(p);
  if (!missing.empty()) args.insert(args.end(), {"--patients", Csv(missing)});
  if (args.size() == base + (force ? 1 : 0)) return Status::Ok();
  const fs::path log = LogOf("keygen");
  auto keygen = Child::Spawn(args, log);
  if (!keygen.ok()) return keygen.status();
  keygen->ReadAll(kKeygenBudget);
  if (keygen->Wait(kKeygenBudget).value_or(-1) != 0)
    return Status::Error("key generation failed: " + LastLine(log));
  return Status::Ok();
}

Status Cluster::StartBroker(const std::vector<std::string>& extra) {
  return StartBroker(BrokerSpec{.extra = extra});
}

Status Cluster::StartBroker(const BrokerSpec& spec) {
  std::vector<std::string> args = {(bin_ / "broker/tally-broker").string(),
                                   "--keys",
                                   (spec.keys.empty() ? keys() : spec.keys).string(),
                                   "--router",
                                   spec.router,
                                   "--phases",
                                   spec.phases,
                                   "--captures",
                                   (spec.captures.empty() ? captures() : spec.captures).string()};
  args.insert(args.end(), spec.extra.begin(), spec.extra.end());
  if (!spec.append_log) fs::remove(LogOf("broker"));
  auto broker = Child::Spawn(args, LogOf("broker"));
  if (!broker.ok()) return broker.status();
  broker_.emplace(std::move(broker.value()));
  auto endpoints = ReadEndpoints(*broker_, kBrokerStart);
  if (!endpoints.ok())
    return Status::Error("the broker did not come up: " + endpoints.message() + ": " +
                         WhyStopped("broker"));
  endpoints_ = *endpoints;
  return Status::Ok();
}

int Cluster::StopBroker() {
  if (!broker_) return -1;
  const int code = broker_->Stop();
  broker_.reset();
  return code;
}

Result<BrokerEndpoints> Cluster::ReadEndpoints(Child& broker, milliseconds timeout) {
  BrokerEndpoints e;
  for (auto [prefix, field] : {std::pair{"router ", &e.router}, std::pair{"phases ", &e.phases}}) {
    auto line = broker.ReadLine(timeout);
    if (!line) return Status::Error("no readiness line");
    if (line->rfind(prefix, 0) != 0)
      return Status::Error("expected \"" + std::string(prefix) + "ENDPOINT\", got " + Quote(*line));
    *field = line->substr(std::string_view(prefix).size());
  }
  return e;
}

Status Cluster::AwaitReady(Child& node, milliseconds timeout) {
  auto line = node.ReadLine(timeout);
  if (line && *line == "ready") return Status::Ok();
  if (line) return Status::Error("printed " + Quote(*line) + " instead of its readiness line");
  return Status::Error(node.running() ? "not ready in time" : "exited before it was ready");
}

std::vector<std::string> Cluster::NodeArgv(const std::string& name,
                                           const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {(bin_ / "nodes/tally-node").string(),
                                   "--keys",
                                   keys().string(),
                                   "--name",
                                   name,
                                   "--router",
                                   endpoints_.router,
                                   "--phases",
                                   endpoints_.phases};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

Result<Child> Cluster::SpawnNode(const std::string& name, const std::vector<std::string>& args,
                                 const std::string& log, bool merge_stderr, int nice) const {
  if (merge_stderr) return Child::Spawn(NodeArgv(name, args), {}, true, nice);
  return Child::Spawn(NodeArgv(name, args), LogOf(log.empty() ? name : log), false, nice);
}

Cluster::Output Cluster::RunTool(const std::string& tool, const std::vector<std::string>& args,
                                 milliseconds timeout) const {
  std::vector<std::string> argv = {(bin_ / tool).string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const fs::path err =
      logs() / (fs::path(tool).filename().string() + "-" + std::to_string(++tool_runs_) + ".err");
  Output o;
  auto child = Child::Spawn(argv, err);
  if (!child.ok()) {
    o.err = child.message();
    return o;
  }
  const auto deadline = Clock::now() + timeout;
  o.out = child->ReadAll(timeout);
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  o.code = child->Wait(std::max(left, milliseconds(0))).value_or(-1);
  o.err = ReadText(err);
  return o;
}

Status Cluster::StartPatient(const std::string& name, const std::vector<std::string>& args) {
  if (patients_.size() - first_unready_ >= kMaxStarting) {
    Patient& oldest = patients_[first_unready_];
    TALLY_RETURN_IF_ERROR(WaitReady(oldest, Clock::now() + kPatientStart, kPatientStart));
    ++first_unready_;
  }
  fs::remove(LogOf(name));
  auto child = SpawnNode(name, args, "", false, patient_nice_);
  if (!child.ok()) return Status::Error("cannot start " + name + ": " + child.message());
  patients_.push_back(Patient{name, std::move(child.value())});
  return Status::Ok();
}

Child* Cluster::patient(const std::string& name) {
  for (Patient& p : patients_)
    if (p.name == name) return &p.child;
  return nullptr;
}

Status Cluster::WaitReady(Patient& p, Clock::time_point deadline, milliseconds budget) {
  if (p.ready) return Status::Ok();
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  Status s = AwaitReady(p.child, std::max(left, milliseconds(0)));
  if (s.ok()) {
    p.ready = true;
    return s;
  }
  if (!p.child.running())
    return Status::Error(p.name + " exited before it reached the broker: " + WhyStopped(p.name));
  return Status::Error(p.name + " did not reach the broker in " + std::to_string(budget.count()) +
                       " ms: " + WhyStopped(p.name));
}

Status Cluster::WaitPatientsReady(milliseconds timeout,
                                  const std::function<void(size_t, size_t)>& progress) {
  auto next_progress = Clock::now() + kProgressEvery;
  for (; first_unready_ < patients_.size(); ++first_unready_) {
    Patient& p = patients_[first_unready_];
    const auto deadline = Clock::now() + timeout;
    // Wake for the progress report, or the deadline, whichever comes first.
    while (!p.ready) {
      const auto until = std::min(deadline, next_progress);
      Status s = WaitReady(p, until, timeout);
      if (!s.ok() && (!p.child.running() || Clock::now() >= deadline)) return s;
      if (progress && Clock::now() >= next_progress) {
        progress(first_unready_ + (p.ready ? 1 : 0), patients_.size());
        next_progress = Clock::now() + kProgressEvery;
      }
    }
  }
  return Status::Ok();
}

Result<Child*> Cluster::StartHospital(const std::string& name,
                                      const std::vector<std::string>& args) {
  fs::remove(LogOf(name));
  auto child = SpawnNode(name, args);
  if (!child.ok()) return child.status();
  hospital_.emplace(std::move(child.value()));
  return &*hospital_;
}

void Cluster::StopAll() {
  // SIGTERM to all first, then wait: they stop in parallel.
  for (Patient& p : patients_) p.child.Signal(SIGTERM);
  for (Patient& p : patients_) p.child.Stop();
  patients_.clear();
  StopBroker();
}

std::string Cluster::WhyStopped(const std::string& name) const {
  const std::string last = LastLine(LogOf(name));
  if (last.empty()) return "no log line";
  if (auto reason = LogField(last, "reason")) return *reason;
  return last;
}

}  // namespace tally
