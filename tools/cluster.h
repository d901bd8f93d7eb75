// A Tally deployment on one machine, as separate processes: keys, a broker on free loopback
// ports, patients and a hospital, each with its log in logs/NAME.log. Waits on readiness lines
// and process exits, never on time. The one way Tally's tools and tests start its processes:
// tally-launch, tally-bench and every process test go through it, so the broker's readiness
// lines and a node's are parsed here only.
//
// Layout under `work`: keys/ (made by tally-keygen where missing), logs/, captures/.
// Thread-compatible.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "schema/status.h"
#include "schema/text.h"
#include "tools/process.h"

namespace tally {

// The phase deadline for a round of `n` patients that all run on this machine, each with `peers`
// peers (n - 1, or k in a neighbourhood round): 10 s plus (0.4 ms x peers + 30 ms) x n per core.
// Each patient's share step costs a signature check and a key agreement per peer (about 0.12 ms
// of CPU here), and each phase about 10 ms more per patient however few its peers (its process
// woken, the phase update's n names decoded and checked, its messages through the broker: a
// neighbourhood round of 1000 took 7.3 s on 2 cores to share, 4.6 ms of it per patient in key
// agreements). Every patient computes at once and all finish near the end of the phase (a full
// round of 1000 took 69 s on 2 cores to share): a margin of three over both, since a busier or
// slower machine must not abort the round.
// `cores`: this machine's by default.
uint64_t LocalPhaseDeadlineMs(uint64_t n, uint64_t peers, uint64_t cores = 0);

class Cluster {
 public:
  // `bin`: the build folder (tools/tally-keygen, broker/tally-broker, nodes/tally-node).
  // `logs`: where the processes' logs go (default work/logs).
  Cluster(std::filesystem::path bin, std::filesystem::path work, std::filesystem::path logs = {});
  ~Cluster();  // stops whatever is still running
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  std::filesystem::path keys() const { return work_ / "keys"; }
  const std::filesystem::path& logs() const { return logs_; }
  std::filesystem::path captures() const { return work_ / "captures"; }
  std::filesystem::path LogOf(const std::string& name) const { return logs() / (name + ".log"); }

  // Patients started from now on run at this scheduling niceness (default 0). tools/launch runs
  // every patient on one machine: niced, they do not starve the broker and the hospital that
  // serve them all (a CPU-bound broker I/O thread missing heartbeats drops connections).
  void set_patient_nice(int nice) { patient_nice_ = nice; }

  // Creates the folders, and with tally-keygen whatever keys are missing: the broker's, the
  // hospital's, the patients'. Also makes sure this process may hold two descriptors per
  // process it will start.
  Status Prepare(const std::string& hospital, const std::vector<std::string>& patients);

  // Starts tally-broker on free loopback ports with `extra` arguments; returns once it has
  // printed its endpoints.
  Status StartBroker(const std::vector<std::string>& extra = {});
  struct BrokerSpec {
    std::vector<std::string> extra = {};  // after the defaults
    std::filesystem::path keys = {};      // default: keys()
    std::filesystem::path captures = {};  // default: captures()
    std::string router = "tcp://127.0.0.1:*";
    std::string phases = "tcp://127.0.0.1:*";
    bool append_log = false;  // keep logs/broker.log of an earlier broker (a restart)
  };
  Status StartBroker(const BrokerSpec& spec);
  const BrokerEndpoints& endpoints() const { return endpoints_; }
  bool broker_running() const { return broker_.has_value(); }
  // Stops the broker (SIGTERM, then SIGKILL after a grace); returns its exit code.
  int StopBroker();

  // The command line of tally-node as `name` with this cluster's keys and the broker's
  // endpoints, then `args` (later flags override earlier ones).
  std::vector<std::string> NodeArgv(const std::string& name,
                                    const std::vector<std::string>& args = {}) const;
  // Starts tally-node as `name`; its stderr goes to logs/LOG.log (LOG: `log`, else `name`), or
  // with `merge_stderr` into its stdout; at scheduling niceness `nice`. The caller owns the
  // process.
  Result<Child> SpawnNode(const std::string& name, const std::vector<std::string>& args,
                          const std::string& log = "", bool merge_stderr = false,
                          int nice = 0) const;
  // Runs a tool of the build (e.g. "tools/tally-replay") to its end, at most `timeout`: its
  // stdout, its stderr (kept in logs/TOOL-N.err), and its exit code (-1 if it did not end in
  // time).
  struct Output {
    std::string out;
    std::string err;
    int code = -1;
  };
  Output RunTool(const std::string& tool, const std::vector<std::string>& args,
                 std::chrono::milliseconds timeout) const;

  // A starting broker's readiness: "router ENDPOINT" then "phases ENDPOINT" on its stdout.
  // Fails when it exits or prints something else first, or after `timeout`.
  static Result<BrokerEndpoints> ReadEndpoints(Child& broker, std::chrono::milliseconds timeout);
  // A node's readiness: its "ready" line, printed once it has reached the broker. Fails when it
  // exits or prints something else first, or after `timeout`.
  static Status AwaitReady(Child& node, std::chrono::milliseconds timeout);

  // Starts tally-node as patient `name` with `args` (its input, --once, ...). At most
  // kMaxStarting patients are started and not yet connected at a time: starting waits for the
  // oldest to connect first. A patient's start-up is CPU work (it derives a key with every
  // other party); hundreds at once on a small machine would starve each other's, and the
  // broker's, CURVE handshakes of CPU, which on real hosts are not shared.
  Status StartPatient(const std::string& name, const std::vector<std::string>& args);
  static constexpr size_t kMaxStarting = 16;
  // Waits until every patient started so far has reached the broker (its "ready" line), at
  // most `timeout` (each); `progress(ready, total)` is called about every two seconds while it
  // waits. An error names a patient that exited, or one that was not ready in time.
  Status WaitPatientsReady(std::chrono::milliseconds timeout,
                           const std::function<void(size_t, size_t)>& progress = nullptr);

  // Starts tally-node as the hospital with `args`; its stdout is its result lines.
  Result<Child*> StartHospital(const std::string& name, const std::vector<std::string>& args);

  // Patients started, and of those known to have reached the broker.
  size_t started() const { return patients_.size(); }
  size_t ready() const { return first_unready_; }

  Child& broker() { return *broker_; }
  // A patient started by StartPatient, or nullptr.
  Child* patient(const std::string& name);
  // Stops the patients and the broker (SIGTERM, then SIGKILL after a grace).
  void StopAll();

  // The reason in a process's last log line (`event=exit status=N reason="..."`), or the line
  // itself when it has none: why it stopped, for a one-line report.
  std::string WhyStopped(const std::string& name) const;

 private:
  struct Patient;
  int patient_nice_ = 0;
  // Waits until `p` has printed its readiness line, at most until `deadline`.
  Status WaitReady(Patient& p, std::chrono::steady_clock::time_point deadline,
                   std::chrono::milliseconds budget);

  std::filesystem::path bin_, work_, logs_;
  std::optional<Child> broker_;
  BrokerEndpoints endpoints_;
  struct Patient {
    std::string name;
    Child child;
    bool ready = false;
  };
  std::vector<Patient> patients_;
  size_t first_unready_ = 0;  // patients_ before it are all ready
  std::optional<Child> hospital_;
  mutable int tool_runs_ = 0;
};

}  // namespace tally
