#include "tools/cluster.h"

#include <algorithm>
#include <csignal>

#include "schema/system.h"

namespace tally {
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

}  // namespace

Cluster::Cluster(fs::path bin, fs::path work) : bin_(std::move(bin)), work_(std::move(work)) {}

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
  if (!HasSecret(keys(), "broker")) args.push_back("--broker");
  if (!HasSecret(keys(), hospital)) args.insert(args.end(), {"--hospital", hospital});
  std::vector<std::string> missing;
  for (const auto& p : patients)
    if (!HasSecret(keys(), p)) missing.push_back(p);
  if (!missing.empty()) args.insert(args.end(), {"--patients", Csv(missing)});
  if (args.size() == base) return Status::Ok();
  const fs::path log = LogOf("keygen");
  auto keygen = Child::Spawn(args, log);
  if (!keygen.ok()) return keygen.status();
  keygen->ReadAll(kKeygenBudget);
  if (keygen->Wait(kKeygenBudget).value_or(-1) != 0)
    return Status::Error("key generation failed: " + LastLine(log));
  return Status::Ok();
}

Status Cluster::StartBroker(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {(bin_ / "broker/tally-broker").string(),
                                   "--keys",
                                   keys().string(),
                                   "--router",
                                   "tcp://127.0.0.1:*",
                                   "--phases",
                                   "tcp://127.0.0.1:*",
                                   "--captures",
                                   captures().string()};
  args.insert(args.end(), extra.begin(), extra.end());
  fs::remove(LogOf("broker"));
  auto broker = Child::Spawn(args, LogOf("broker"));
  if (!broker.ok()) return broker.status();
  broker_.emplace(std::move(broker.value()));
  // Its readiness: "router ENDPOINT" then "phases ENDPOINT" on stdout.
  for (int k = 0; k < 2; ++k) {
    auto line = broker_->ReadLine(kBrokerStart);
    if (!line) break;
    if (line->rfind("router ", 0) == 0) endpoints_.router = line->substr(7);
    if (line->rfind("phases ", 0) == 0) endpoints_.phases = line->substr(7);
  }
  if (endpoints_.router.empty() || endpoints_.phases.empty())
    return Status::Error("the broker did not come up: " + WhyStopped("broker"));
  return Status::Ok();
}

std::vector<std::string> Cluster::NodeArgs(const std::string& name) const {
  return {(bin_ / "nodes/tally-node").string(),
          "--keys",
          keys().string(),
          "--name",
          name,
          "--router",
          endpoints_.router,
          "--phases",
          endpoints_.phases};
}

Status Cluster::StartPatient(const std::string& name, const std::vector<std::string>& args) {
  if (patients_.size() - first_unready_ >= kMaxStarting) {
    Patient& oldest = patients_[first_unready_];
    TALLY_RETURN_IF_ERROR(WaitReady(oldest, Clock::now() + kPatientStart, kPatientStart));
    ++first_unready_;
  }
  std::vector<std::string> argv = NodeArgs(name);
  argv.insert(argv.end(), args.begin(), args.end());
  fs::remove(LogOf(name));
  auto child = Child::Spawn(argv, LogOf(name));
  if (!child.ok()) return Status::Error("cannot start " + name + ": " + child.message());
  patients_.push_back(Patient{name, std::move(child.value())});
  return Status::Ok();
}

Status Cluster::WaitReady(Patient& p, Clock::time_point deadline, milliseconds budget) {
  while (!p.ready) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      return Status::Error(p.name + " did not reach the broker in " +
                           std::to_string(budget.count()) + " ms: " + WhyStopped(p.name));
    auto line = p.child.ReadLine(left);
    if (line && *line == "ready") {
      p.ready = true;
    } else if (!line && p.child.Wait(milliseconds(0))) {
      return Status::Error(p.name + " exited before it reached the broker: " + WhyStopped(p.name));
    }
  }
  return Status::Ok();
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
  std::vector<std::string> argv = NodeArgs(name);
  argv.insert(argv.end(), args.begin(), args.end());
  fs::remove(LogOf(name));
  auto child = Child::Spawn(argv, LogOf(name));
  if (!child.ok()) return child.status();
  hospital_.emplace(std::move(child.value()));
  return &*hospital_;
}

void Cluster::StopAll() {
  // SIGTERM to all first, then wait: they stop in parallel.
  for (Patient& p : patients_) p.child.Signal(SIGTERM);
  for (Patient& p : patients_) p.child.Stop();
  patients_.clear();
  if (broker_) broker_->Stop();
  broker_.reset();
}

std::string Cluster::WhyStopped(const std::string& name) const {
  const std::string last = LastLine(LogOf(name));
  if (last.empty()) return "no log line";
  if (auto reason = LogField(last, "reason")) return *reason;
  return last;
}

}  // namespace tally
