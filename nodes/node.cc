// A patient or hospital node: one DEALER, one SUB, one monitor, one poll loop.
#include "nodes/node.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <zmq.hpp>

#include "keys/keys.h"
#include "nodes/seal.h"
#include "schema/schema.h"
#include "schema/text.h"

namespace tally {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxBatch = 256;
constexpr auto kStopCheck = std::chrono::milliseconds(100);
constexpr size_t kRememberedRounds = 64;
constexpr size_t kZeroCopyBytes = 64 * 1024;  // frames this large are sent without a copy

std::span<const uint8_t> Bytes(const zmq::message_t& m) {
  return {static_cast<const uint8_t*>(m.data()), m.size()};
}

// Writes one line to the results file and makes it durable before returning.
Status AppendDurably(const std::filesystem::path& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Error("cannot open " + path.string() + ": " + std::strerror(errno));
  std::string data = line + "\n";
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      return Status::Error("cannot write " + path.string() + ": " + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return Status::Error("cannot fsync " + path.string() + ": " + std::strerror(err));
  }
  ::close(fd);
  return Status::Ok();
}

// The state of one round this node takes part in.
// Whether `u` is the sum phase of the round as `opened`, with one nonce per participant: the
// broker may not change who receives the inputs, their range or length, or the participants
// once a round is open.
bool IsSumOf(const PhaseUpdate& opened, const PhaseUpdate& u) {
  return u.round == opened.round && u.hospital == opened.hospital && u.range == opened.range &&
         u.length == opened.length && u.participants == opened.participants &&
         u.nonces.size() == u.participants.size();
}

struct ActiveRound {
  PhaseUpdate params;            // as opened
  JoinNonce nonce{};             // patient: the nonce we joined with
  bool partial_sent = false;     // patient: our masked input is out
  std::optional<ViewDigest> view;  // hospital: the round's view, from the sum phase on
  std::vector<uint64_t> sum;     // hospital: masked inputs so far
  std::set<std::string> received;  // hospital
  bool acked = false;            // hospital
  ~ActiveRound() { sodium_memzero(sum.data(), sum.size() * sizeof(uint64_t)); }
};

}  // namespace

std::string ResultJson(const RoundResult& r) {
  std::string out = "{\"round\": \"" + RoundHex(r.round) + "\", \"aggregate\": " +
                    JsonNumbers(r.aggregate) + ", \"participants\": [";
  for (size_t i = 0; i < r.participants.size(); ++i) {
    if (i) out += ", ";
    out += "\"" + r.participants[i] + "\"";  // names are [a-z0-9_-]: no escaping needed
  }
  out += "], \"range\": " + std::to_string(r.range) +
         ", \"in_range\": " + (r.in_range ? "true" : "false") + ", \"elapsed_ms\": " +
         FormatFixed(r.elapsed_ms, 3) + "}";
  return out;
}

class Node::Impl {
 public:
  Impl(const NodeOptions& options, LogSink log, ResultSink on_result)
      : options_(options), log_(std::move(log)), on_result_(std::move(on_result)) {}

  ~Impl() { sodium_memzero(options_.input.data(), options_.input.size() * sizeof(uint64_t)); }

  Status Init() {
    if (sodium_init() < 0) return Status::Error("libsodium failed to initialise");
    auto roster = LoadRoster(options_.keys_dir);
    if (!roster.ok()) return roster.status();
    roster_ = std::move(roster.value());
    auto me = LoadSecret(options_.keys_dir, options_.name);
    if (!me.ok()) return me.status();
    role_ = me->pub.role;
    if (role_ == Role::kBroker) return Status::Error(options_.name + " is the broker, not a node");
    if (roster_.Find(options_.name) == nullptr)
      return Status::Error(options_.name + " is not in the roster " +
                           (options_.keys_dir / "public").string());
    auto brokers = roster_.Names(Role::kBroker);
    if (brokers.size() != 1) return Status::Error("the roster must hold exactly one broker");
    const Certificate* broker = roster_.Find(brokers[0]);
    auto sealer = Sealer::Create(me.value(), roster_);
    if (!sealer.ok()) return sealer.status();
    sealer_.emplace(std::move(sealer.value()));
    if (role_ == Role::kPatient && options_.input.empty())
      return Status::Error(options_.name + " is a patient: give it --value or --input");
    if (role_ == Role::kHospital && options_.rounds == 0)
      return Status::Error("--rounds must be at least 1");

    try {
      for (zmq::socket_t* s : {&dealer_, &sub_}) {
        s->set(zmq::sockopt::linger, 1000);
        s->set(zmq::sockopt::handshake_ivl, 5000);
        s->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(MaxMessageSize(kMaxVectorLength)));
        s->set(zmq::sockopt::curve_serverkey, zmq::const_buffer(broker->curve_public.data(), 32));
        s->set(zmq::sockopt::curve_publickey, zmq::const_buffer(me->pub.curve_public.data(), 32));
        s->set(zmq::sockopt::curve_secretkey,
               zmq::const_buffer(me->curve_secret.data(), me->curve_secret.size()));
      }
      dealer_.set(zmq::sockopt::sndhwm, 100000);
      sub_.set(zmq::sockopt::subscribe, "");
      // Watch the transport: refused handshakes and a lost broker are reported, not waited out.
      if (zmq_socket_monitor(dealer_.handle(), "inproc://node-monitor",
                             ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                 ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0)
        return Status::Error("cannot monitor the router connection");
      monitor_.connect("inproc://node-monitor");
      dealer_.connect(options_.router_endpoint);
      sub_.connect(options_.phases_endpoint);
    } catch (const zmq::error_t& e) {
      return Status::Error(std::string("cannot connect: ") + e.what());
    }
    Log("event=start role=" + std::string(RoleName(role_)) + " router=" +
        options_.router_endpoint + " phases=" + options_.phases_endpoint);
    return Status::Ok();
  }

  bool is_hospital() const { return role_ == Role::kHospital; }

  int Run() {
    if (is_hospital()) SendRequest();
    last_progress_ = Clock::now();
    zmq::pollitem_t items[] = {{dealer_.handle(), 0, ZMQ_POLLIN, 0},
                               {sub_.handle(), 0, ZMQ_POLLIN, 0},
                               {monitor_.handle(), 0, ZMQ_POLLIN, 0}};
    while (!stop_.load() && !exit_code_) {
      try {
        zmq::poll(items, 3, kStopCheck);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        Log("event=error error=" + Quote(e.what()));
        return 1;
      }
      if (items[2].revents & ZMQ_POLLIN) ServeMonitor();
      if (items[1].revents & ZMQ_POLLIN) ServePhases();
      if (items[0].revents & ZMQ_POLLIN) ServeRouter();
      CheckIdle();
    }
    return exit_code_.value_or(0);
  }

  void Stop() { stop_.store(true); }

 private:
  void Log(const std::string& fields) {
    if (log_) log_("node " + options_.name + " " + fields);
  }
  void Fail(const std::string& why) {
    Log("event=failed reason=" + Quote(why));
    exit_code_ = 1;
  }

  bool Send(const Message& message) {
    auto bytes = std::make_unique<std::vector<uint8_t>>(Encode(message));
    try {
      if (bytes->size() < kZeroCopyBytes)
        return dealer_.send(zmq::buffer(*bytes), zmq::send_flags::dontwait).has_value();
      // A large frame (a vector's masked input) is handed to zmq as it is, not copied; zmq's
      // I/O thread frees it once sent.
      zmq::message_t frame(
          bytes->data(), bytes->size(),
          [](void*, void* owner) { delete static_cast<std::vector<uint8_t>*>(owner); },
          bytes.get());
      (void)bytes.release();
      return dealer_.send(frame, zmq::send_flags::dontwait).has_value();
    } catch (const zmq::error_t& e) {
      Log("event=send-error error=" + Quote(e.what()));
      return false;
    }
  }

  // --- Transport events -------------------------------------------------------------------

  void ServeMonitor() {
    for (int i = 0; i < kMaxBatch; ++i) {
      zmq::message_t event, address;
      try {
        if (!monitor_.recv(event, zmq::recv_flags::dontwait)) return;
        if (event.more()) (void)monitor_.recv(address);
      } catch (const zmq::error_t&) {
        return;
      }
      if (event.size() < 6) continue;
      uint16_t id;
      std::memcpy(&id, event.data(), sizeof id);
      if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        Log("event=connected router=" + options_.router_endpoint);
      } else if (id == ZMQ_EVENT_DISCONNECTED) {
        OnLost("lost the connection to the broker");
      } else {
        // A refused handshake: our key is not in the broker's roster, or the broker's key is
        // not the one in ours. Retrying cannot help.
        Fail("the broker refused our CURVE handshake (is " + options_.name +
             " in the broker's roster, and the broker's key in ours?)");
      }
    }
  }

  void OnLost(const std::string& why) {
    if (options_.once || is_hospital()) return Fail(why);
    Log("event=lost reason=" + Quote(why) + " action=reconnecting");
    if (round_) Log("event=round-dropped round=" + RoundHex(round_->params.round));
    round_.reset();
  }

  void CheckIdle() {
    // Serving patients wait for rounds indefinitely; whoever waits on a round gives up.
    if (!is_hospital() && !round_) return;
    auto idle = Clock::now() - last_progress_;
    if (idle > std::chrono::milliseconds(options_.idle_timeout_ms)) {
      std::string why = "no progress from the broker for " +
                        std::to_string(options_.idle_timeout_ms) + " ms";
      if (is_hospital() || options_.once) return Fail(why);
      Log("event=round-dropped reason=" + Quote(why));
      round_.reset();
    }
  }

  // --- Phase channel ----------------------------------------------------------------------

  void ServePhases() {
    for (int i = 0; i < kMaxBatch && !exit_code_; ++i) {
      zmq::message_t m;
      try {
        if (!sub_.recv(m, zmq::recv_flags::dontwait)) return;
      } catch (const zmq::error_t&) {
        return;
      }
      auto decoded = Decode(Bytes(m), limits_);
      if (!decoded.ok() || !std::holds_alternative<PhaseUpdate>(decoded.value())) {
        ++rejected_;
        Log("event=reject source=phases reason=" +
            Quote(decoded.ok() ? "not a phase update" : decoded.message()));
        continue;
      }
      OnPhase(std::get<PhaseUpdate>(decoded.value()));
    }
  }

  void OnPhase(const PhaseUpdate& u) {
    // Updates are whole snapshots and may repeat (republished to late subscribers): every
    // action below is idempotent (a round opens once, a masked input goes out once, a round
    // ends once).
    // The hospital adopts its round from whichever update it hears first: a late subscriber
    // may first hear of a round that already ended (e.g. a patient refused it at once).
    if (is_hospital() && waiting_ && u.hospital == options_.name && u.ticket == ticket_) Adopt(u);
    const bool mine = round_ && round_->params.round == u.round;
    if (mine) last_progress_ = Clock::now();
    if (u.phase == Phase::kOpen && !is_hospital()) return OnOpen(u);
    if (!mine) return;
    switch (u.phase) {
      case Phase::kSum:
        return is_hospital() ? LearnView(u) : SendMasked(u);
      case Phase::kDone:
        Log("event=round-done round=" + RoundHex(u.round));
        return EndRound(true);
      case Phase::kAbort:
        Log("event=round-aborted round=" + RoundHex(u.round) + " reason=" + Quote(u.reason));
        if (is_hospital() || options_.once)
          std::fprintf(stderr, "tally-node %s: round %s aborted: %s\n", options_.name.c_str(),
                       RoundHex(u.round).c_str(), u.reason.c_str());
        return EndRound(false);
      default:
        return;
    }
  }

  void Adopt(const PhaseUpdate& u) {
    Remember(u.round);
    waiting_ = false;
    round_.emplace();
    round_->params = u;
    round_->sum.assign(u.length, 0);
    Log("event=round-open round=" + RoundHex(u.round) +
        " patients=" + std::to_string(u.participants.size()) + " length=" + std::to_string(u.length));
  }

  // Hospital: the sum phase names every participant's nonce, which fixes the view each
  // masked input must be sealed under. Inputs that came before it are opened now.
  void LearnView(const PhaseUpdate& u) {
    ActiveRound& r = *round_;
    if (r.view) return;
    if (!IsSumOf(r.params, u))
      return Fail("the sum phase of round " + RoundHex(u.round) +
                  " does not match the round as opened");
    r.params = u;
    r.view = RoundView(u);
    auto early = std::move(early_);
    early_.clear();
    for (const auto& env : early) OnEnvelope(env);
  }

  void OnOpen(const PhaseUpdate& u) {
    if (seen_.count(u.round)) return;
    if (std::find(u.participants.begin(), u.participants.end(), options_.name) ==
        u.participants.end())
      return;
    Remember(u.round);
    if (round_) Log("event=round-dropped round=" + RoundHex(round_->params.round));
    round_.reset();
    // Refuse what our input cannot honestly answer; the reason never holds the input.
    std::string refusal;
    if (u.participants.size() < options_.min_patients) {
      refusal = "the round has " + std::to_string(u.participants.size()) +
                " patients, fewer than this patient's minimum of " +
                std::to_string(options_.min_patients);
    } else if (options_.input.size() != u.length) {
      refusal = "input has " + std::to_string(options_.input.size()) +
                " elements, the round asks for " + std::to_string(u.length);
    } else if (std::any_of(options_.input.begin(), options_.input.end(),
                           [&](uint64_t v) { return v > u.range; })) {
      refusal = "input outside [0, " + std::to_string(u.range) + "]";
    }
    if (!refusal.empty()) {
      std::fprintf(stderr, "tally-node %s: refusing round %s: %s\n", options_.name.c_str(),
                   RoundHex(u.round).c_str(), refusal.c_str());
      Log("event=refuse round=" + RoundHex(u.round) + " reason=" + Quote(refusal));
      (void)Send(Refuse{u.round, refusal});
      if (options_.once) exit_code_ = 1;
      return;
    }
    round_.emplace();
    round_->params = u;
    // Fresh for every join: it enters every mask of ours in this round, so no mask of ours is
    // ever reused, whatever round id the broker chose.
    randombytes_buf(round_->nonce.data(), round_->nonce.size());
    last_progress_ = Clock::now();
    Log("event=join round=" + RoundHex(u.round));
    (void)Send(Join{u.round, round_->nonce});
  }

  void Remember(const RoundId& id) {
    seen_.insert(id);
    seen_order_.push_back(id);
    if (seen_order_.size() > kRememberedRounds) {
      seen_.erase(seen_order_.front());
      seen_order_.pop_front();
    }
  }

  void EndRound(bool done) {
    round_.reset();
    if (is_hospital()) {
      if (!done) {
        exit_code_ = 1;
        return;
      }
      if (++rounds_done_ >= options_.rounds) {
        exit_code_ = 0;
        return;
      }
      SendRequest();
      return;
    }
    if (options_.once) exit_code_ = done ? 0 : 1;
  }

  // --- Patient ----------------------------------------------------------------------------

  // Masks the input with one pairwise mask per other participant (they cancel in the sum) and
  // seals it to the hospital under the round's view. Only for the round exactly as we joined
  // it: the same hospital, range, length and participants (our minimum was checked against
  // them), and our own nonce.
  void SendMasked(const PhaseUpdate& u) {
    ActiveRound& r = *round_;
    if (r.partial_sent) return;
    r.partial_sent = true;
    const auto me = std::find(u.participants.begin(), u.participants.end(), options_.name);
    if (!IsSumOf(r.params, u) ||
        u.nonces[static_cast<size_t>(me - u.participants.begin())] != r.nonce) {
      Log("event=round-dropped round=" + RoundHex(u.round) +
          " reason=\"the sum phase does not match the round we joined\"");
      round_.reset();  // its done, if the broker published one, is not ours to report
      if (options_.once) exit_code_ = 1;
      return;
    }
    std::vector<uint64_t> masked = options_.input;
    auto status = sealer_->AddMasks(u, masked);
    if (status.ok()) {
      auto plaintext = EncodePayload(EnvelopeKind::kPartial, masked);
      auto sealed = sealer_->Seal(
          Binding{u.round, EnvelopeKind::kPartial, options_.name, u.hospital, RoundView(u)},
          plaintext);
      sodium_memzero(plaintext.data(), plaintext.size());
      if (sealed.ok()) {
        (void)Send(Envelope{EnvelopeKind::kPartial, u.round, options_.name, u.hospital,
                            std::move(sealed.value())});
        Log("event=partial-sent round=" + RoundHex(u.round) + " to=" + u.hospital);
      } else {
        status = sealed.status();
      }
    }
    sodium_memzero(masked.data(), masked.size() * sizeof(uint64_t));
    if (!status.ok())
      Log("event=seal-error round=" + RoundHex(u.round) + " error=" + Quote(status.message()));
  }

  // --- Envelopes from the router ----------------------------------------------------------

  void ServeRouter() {
    for (int i = 0; i < kMaxBatch && !exit_code_; ++i) {
      zmq::message_t m;
      try {
        if (!dealer_.recv(m, zmq::recv_flags::dontwait)) return;
      } catch (const zmq::error_t&) {
        return;
      }
      auto decoded = Decode(Bytes(m), limits_);
      if (!decoded.ok()) {
        RejectIncoming("malformed: " + decoded.message());
        continue;
      }
      if (auto* notice = std::get_if<Notice>(&decoded.value())) {
        OnNotice(*notice);
      } else if (auto* env = std::get_if<Envelope>(&decoded.value())) {
        OnEnvelope(*env);
      } else {
        RejectIncoming("unexpected message type from the router");
      }
    }
  }

  void RejectIncoming(const std::string& why) {
    ++rejected_;
    Log("event=reject source=router reason=" + Quote(why));
  }

  void OnNotice(const Notice& n) {
    Log("event=notice ticket=" + std::to_string(n.ticket) + " reason=" + Quote(n.reason));
    if (is_hospital() && waiting_ && n.ticket == ticket_) {
      std::fprintf(stderr, "tally-node %s: %s\n", options_.name.c_str(), n.reason.c_str());
      exit_code_ = 1;
    }
  }

  void OnEnvelope(const Envelope& env) {
    if (!is_hospital())
      return RejectIncoming("an envelope for a patient (only the hospital receives them)");
    // Partials can overtake the phase updates that tell the hospital its round id and view
    // (they come over the router, the updates over the phase channel): keep them until then.
    const bool view_known = round_ && round_->view;
    if (!view_known && (waiting_ || (round_ && env.round == round_->params.round)) &&
        env.to == options_.name && early_.size() < kMaxParticipants) {
      early_.push_back(env);
      return;
    }
    if (!round_ || env.round != round_->params.round)
      return RejectIncoming("envelope for a round we are not in");
    ActiveRound& r = *round_;
    const auto& ps = r.params.participants;
    if (env.to != options_.name || std::find(ps.begin(), ps.end(), env.from) == ps.end())
      return RejectIncoming(std::string(KindName(env.kind)) + " " + env.from + "->" + env.to +
                            " is not for us in this round");
    if (r.received.count(env.from))
      return RejectIncoming("duplicate " + std::string(KindName(env.kind)) + " from " + env.from);
    auto opened =
        sealer_->Open(Binding{env.round, env.kind, env.from, options_.name, *r.view}, env.sealed);
    if (!opened.ok()) return RejectIncoming(opened.message());
    auto added = AddPayload(opened.value(), env.kind, r.sum);
    sodium_memzero(opened->data(), opened->size());
    if (!added.ok()) return RejectIncoming("payload from " + env.from + ": " + added.message());
    r.received.insert(env.from);
    last_progress_ = Clock::now();
    MaybeFinish();
  }

  // --- Hospital ---------------------------------------------------------------------------

  void SendRequest() {
    // Random tickets: a request is never mistaken for an earlier hospital process's round.
    randombytes_buf(&ticket_, sizeof ticket_);
    waiting_ = true;
    last_progress_ = requested_at_ = Clock::now();
    Request req{ticket_, options_.range, options_.length, options_.participants};
    Log("event=request ticket=" + std::to_string(ticket_) + " range=" +
        std::to_string(options_.range) + " length=" + std::to_string(options_.length));
    if (!Send(req)) Fail("cannot send the round request");
  }

  void MaybeFinish() {
    ActiveRound& r = *round_;
    if (r.acked || r.received.size() != r.params.participants.size()) return;
    RoundResult result;
    result.round = r.params.round;
    result.aggregate = r.sum;
    result.participants = r.params.participants;
    result.range = r.params.range;
    result.in_range = std::all_of(r.sum.begin(), r.sum.end(),
                                  [&](uint64_t v) { return v <= r.params.range; });
    result.elapsed_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - requested_at_).count();
    // Durable before acknowledged: the broker only hears of the round once the disk has it.
    auto written = AppendDurably(options_.results_file, ResultJson(result));
    if (!written.ok()) return Fail(written.message());
    if (!result.in_range)
      Log("event=out-of-range round=" + RoundHex(r.params.round) +
          " note=\"the aggregate lies outside [0, range]\"");
    if (on_result_) on_result_(result);
    r.acked = true;
    (void)Send(Ack{r.params.round});
  }

  NodeOptions options_;
  LogSink log_;
  ResultSink on_result_;
  Roster roster_;
  Role role_ = Role::kPatient;
  std::optional<Sealer> sealer_;
  Limits limits_;
  zmq::context_t ctx_;
  zmq::socket_t dealer_{ctx_, zmq::socket_type::dealer};
  zmq::socket_t sub_{ctx_, zmq::socket_type::sub};
  zmq::socket_t monitor_{ctx_, zmq::socket_type::pair};
  std::optional<ActiveRound> round_;
  std::vector<Envelope> early_;  // hospital: partials that arrived before its round was known
  std::set<RoundId> seen_;
  std::deque<RoundId> seen_order_;
  uint64_t ticket_ = 0;
  bool waiting_ = false;  // hospital: a request is out, its round not yet open
  uint32_t rounds_done_ = 0;
  uint64_t rejected_ = 0;
  Clock::time_point last_progress_;
  Clock::time_point requested_at_;  // hospital: when the current request went out
  std::optional<int> exit_code_;
  std::atomic<bool> stop_{false};
};

Result<std::unique_ptr<Node>> Node::Create(const NodeOptions& options, LogSink log,
                                           ResultSink on_result) {
  auto impl = std::make_unique<Impl>(options, std::move(log), std::move(on_result));
  TALLY_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Node::~Node() = default;
bool Node::is_hospital() const { return impl_->is_hospital(); }
int Node::Run() { return impl_->Run(); }
void Node::Stop() { impl_->Stop(); }

}  // namespace tally
