// A patient or hospital node: keys, a link to the broker, a role, one poll loop.
#include "nodes/node.h"

#include <sodium.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "keys/keys.h"
#include "nodes/hospital.h"
#include "nodes/link.h"
#include "nodes/patient.h"
#include "nodes/seal.h"
#include "schema/text.h"

namespace tally {
namespace {

// The longest a node waits without traffic: the role's idle timeouts are seen up to this late.
// Each wake-up of an idle node costs about 0.13 ms of CPU on a virtual machine of two cores; at
// 10 a second, 1000 patients launched on it spent 65% of its CPU waking, and a round of 1000
// missed its phase deadlines. Stop() ends the wait at once (the wake descriptor).
constexpr auto kLongestWait = std::chrono::milliseconds(1000);

}  // namespace

class Node::Impl {
 public:
  Impl(NodeOptions options, LogSink log, ResultSink on_result, ReadySink on_ready,
       const NodeHost* host)
      : options_(std::move(options)),
        log_(std::move(log)),
        on_result_(std::move(on_result)),
        on_ready_(std::move(on_ready)),
        host_(host ? *host : NodeHost{}),
        hosted_(host != nullptr) {}

  ~Impl() {  // options_.input wipes itself
    if (wake_ >= 0) ::close(wake_);
  }

  Status Init() {
    if (sodium_init() < 0) return Status::Error("libsodium failed to initialise");
    // Hosted nodes are driven by Serve() from their host's loop, never Run: no descriptor for
    // them (a generator hosts 2,000, each descriptor counts against RLIMIT_NOFILE).
    if (!hosted_ && (wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
      return Status::Error(std::string("cannot make the stop descriptor: ") + std::strerror(errno));
    if (host_.roster) {
      roster_ = host_.roster;
    } else {
      auto roster = LoadRoster(options_.keys_dir);
      if (!roster.ok()) return roster.status();
      roster_ = std::make_shared<const Roster>(std::move(roster.value()));
    }
    auto me = LoadSecret(options_.keys_dir, options_.name);
    if (!me.ok()) return me.status();
    role_ = me->pub.role;
    if (role_ == Role::kBroker) return Status::Error(options_.name + " is the broker, not a node");
    if (roster_->Find(options_.name) == nullptr)
      return Status::Error(options_.name + " is not in the roster " +
                           (options_.keys_dir / "public").string());
    auto brokers = roster_->Names(Role::kBroker);
    if (brokers.size() != 1) return Status::Error("the roster must hold exactly one broker");
    // The patients share one roster (host_.roster) rather than a copy each.
    auto sealer = Sealer::Create(me.value(), roster_, SealPeers::kRoundPeers);
    if (!sealer.ok()) return sealer.status();
    sealer_.emplace(std::move(sealer.value()));

    std::optional<ResultsFile> results;
    if (role_ == Role::kPatient) {
      if (options_.input.cells.empty())
        return Status::Error(options_.name + " is a patient: it needs an input");
    } else {
      TALLY_RETURN_IF_ERROR(CheckHospitalOptions());
      auto file = ResultsFile::Open(options_.results_file);
      if (!file.ok()) return file.status();
      results.emplace(std::move(file.value()));
    }

    LinkOptions link{options_.name, options_.router_endpoint, options_.phases_endpoint,
                     std::chrono::milliseconds(options_.idle_timeout_ms), host_.context};
    auto connected = Link::Connect(link, me.value(), *roster_->Find(brokers[0]), log_);
    if (!connected.ok()) return connected.status();
    link_ = std::move(connected.value());
    if (role_ == Role::kPatient) {
      role_impl_ = std::make_unique<Patient>(options_, *roster_, *sealer_, *link_, log_);
      options_.input = PatientInput();  // the role holds its own copy
    } else {
      hospital_ =
          new Hospital(options_, *roster_, *sealer_, *link_, log_, std::move(*results), on_result_);
      role_impl_.reset(hospital_);
    }
    // The roster's fingerprint, as the broker logs its own: parties compare them to see that
    // they hold the same certificates.
    Log("event=start role=" + std::string(RoleName(role_)) + " router=" + options_.router_endpoint +
        " phases=" + options_.phases_endpoint + " roster=" + roster_->Fingerprint().substr(0, 16));
    return Status::Ok();
  }

  bool is_hospital() const { return role_ == Role::kHospital; }

  Status Run() {
    if (hospital_) hospital_->Start();
    while (!stop_.load())
      if (std::optional<Status> done = Serve(kLongestWait)) return *done;
    return Status::Ok();
  }

  // Waits up to `wait` for traffic, serves it and the role's deadlines; the outcome once done.
  std::optional<Status> Serve(std::chrono::milliseconds wait) {
    if (Status polled = link_->Poll(*role_impl_, wait, wake_); !polled.ok()) return polled;
    if (on_ready_ && link_->up()) std::exchange(on_ready_, nullptr)();
    if (role_impl_->outcome()) return *role_impl_->outcome();
    role_impl_->Tick(Clock::now());
    return role_impl_->outcome();
  }

  std::array<int, 4> Fds() const { return link_->Fds(); }
  bool Pending() const { return link_->Pending(); }

  // Async-signal-safe: an atomic store and a write(2).
  void Stop() {
    stop_.store(true);
    const uint64_t one = 1;
    if (wake_ >= 0) (void)!::write(wake_, &one, sizeof one);
  }

 private:
  void Log(const std::string& fields) {
    if (log_) log_("node " + options_.name + " " + fields);
  }

  // The hospital asks for rounds over the patients of its own roster (all of them by default):
  // a name it does not know is a configuration error, found before any round runs.
  Status CheckHospitalOptions() {
    if (options_.rounds == 0) return Status::Error("rounds must be at least 1");
    if (options_.participants.empty()) options_.participants = roster_->Names(Role::kPatient);
    for (const std::string& p : options_.participants) {
      const Certificate* c = roster_->Find(p);
      if (c == nullptr) return Status::Error(p + " is not in " + options_.name + "'s roster");
      if (c->role != Role::kPatient)
        return Status::Error(p + " is not a patient in " + options_.name + "'s roster");
    }
    if (options_.participants.size() < 2)
      return Status::Error("a round needs at least 2 patients, and " + options_.name +
                           "'s roster names " + std::to_string(options_.participants.size()));
    if (options_.threshold == 0) options_.threshold = SafeThreshold(options_.participants.size());
    // Every sum must fit the ring, the threshold be safe: refused here, before any value moves.
    RoundParams params{options_.name,    options_.range,  options_.length,   options_.participants,
                       options_.columns, options_.weight, options_.threshold};
    if (options_.graph)
      params.graph =
          ChooseGraph(params.participants.size(), options_.corrupt_ppm, options_.dropout_ppm);
    return CheckRoundParams(params);
  }

  NodeOptions options_;
  LogSink log_;
  ResultSink on_result_;
  ReadySink on_ready_;  // cleared once called
  NodeHost host_;
  std::shared_ptr<const Roster> roster_;
  Role role_ = Role::kPatient;
  std::optional<Sealer> sealer_;
  std::unique_ptr<Link> link_;
  std::unique_ptr<NodeRole> role_impl_;
  Hospital* hospital_ = nullptr;  // role_impl_, when this node is the hospital
  std::atomic<bool> stop_{false};
  bool hosted_;
  int wake_ = -1;  // an eventfd, readable once Stop() was called; -1 for a hosted node
};

Result<std::unique_ptr<Node>> Node::Create(const NodeOptions& options, LogSink log,
                                           ResultSink on_result, ReadySink on_ready,
                                           const NodeHost* host) {
  auto impl = std::make_unique<Impl>(options, std::move(log), std::move(on_result),
                                     std::move(on_ready), host);
  TALLY_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Node::~Node() = default;
bool Node::is_hospital() const { return impl_->is_hospital(); }
Status Node::Run() { return impl_->Run(); }
void Node::Stop() { impl_->Stop(); }
std::optional<Status> Node::Serve() { return impl_->Serve(std::chrono::milliseconds(0)); }
std::array<int, 4> Node::Fds() const { return impl_->Fds(); }
bool Node::Pending() const { return impl_->Pending(); }

}  // namespace tally
