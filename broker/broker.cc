// The broker's I/O around its coordinator (broker/coordinator.h): the ZAP handler, the router,
// the phase channel, socket monitors, one connection per party, captures and republication, in
// one poll loop. Every rule about rounds is the coordinator's; this file carries them out.
#include "broker/broker.h"

#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "broker/coordinator.h"
#include "broker/gone.h"
#include "broker/republish.h"
#include "broker/zap.h"
#include "keys/curve.h"
#include "keys/keys.h"
#include "schema/capture.h"
#include "schema/schema.h"
#include "schema/system.h"
#include "schema/text.h"

namespace tally {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kZapDomain = "tally";
constexpr int kMaxBatch = 256;                                 // messages per socket per turn
constexpr auto kStopCheck = std::chrono::milliseconds(100);    // longest poll wait
constexpr auto kRepublishGap = std::chrono::milliseconds(10);  // between republications
// The longest a party found gone waits for the router's queue to empty (GoneParties) while
// messages keep coming: long enough for the fair-queued router to reach a closed connection's
// last messages, short against a phase deadline.
constexpr auto kGoneGrace = std::chrono::milliseconds(500);

std::span<const uint8_t> Bytes(const zmq::message_t& m) {
  return {static_cast<const uint8_t*>(m.data()), m.size()};
}

}  // namespace

class Broker::Impl {
 public:
  Impl(const BrokerOptions& options, LogSink log)
      : options_(options),
        log_(std::move(log)),
        limits_(MakeLimits(options)),
        zap_(ctx_, roster_, log_, counters_.auth_denied) {}

  Status Init() {
    if (sodium_init() < 0) return Status::Error("libsodium failed to initialise");
    auto roster = LoadRoster(options_.keys_dir);
    if (!roster.ok()) return roster.status();
    roster_ = std::move(roster.value());
    auto secret = LoadSecret(options_.keys_dir, "broker");
    if (!secret.ok()) return secret.status();
    if (secret->pub.role != Role::kBroker)
      return Status::Error("private/broker.key_secret: role is not broker");
    if (roster_.Names(Role::kHospital).empty()) return Status::Error("the roster has no hospital");
    // Two connections per party (router and phase channel), captures, and libzmq's own.
    TALLY_RETURN_IF_ERROR(EnsureOpenFileLimit(
        2 * roster_.all().size() + 256,
        "the broker, with a roster of " + std::to_string(roster_.all().size()) + " parties,"));
    std::error_code ec;
    std::filesystem::create_directories(options_.captures_dir, ec);
    if (ec)
      return Status::Error("cannot create captures folder " + options_.captures_dir.string() +
                           ": " + ec.message());
    coordinator_.emplace(options_.rounds, roster_, CoordinatorEnv::Real());

    try {
      zap_.Bind();  // fail closed: the ZAP handler exists before any CURVE socket binds
      const int64_t max_message = static_cast<int64_t>(MaxMessageSize(options_.rounds.max_length));
      heartbeat_ms_ = ServerHeartbeatMs(2 * roster_.all().size());
      CurveServer(router_, secret->curve_secret, kZapDomain,
                  {200, max_message, options_.router_endpoint, heartbeat_ms_});
      CurveServer(
          phases_, secret->curve_secret, kZapDomain,
          {200, int64_t{1024}, options_.phases_endpoint, heartbeat_ms_});  // inbound: subscriptions
      // Connections that arrive together wait in the kernel's queue (capped by somaxconn)
      // instead of being dropped and retried a second later.
      for (zmq::socket_t* s : {&router_, &phases_}) s->set(zmq::sockopt::backlog, 4096);
      // Handshakes that fail before the allowlist is asked (a client with the wrong broker key,
      // a keypair that does not match, no CURVE at all) are logged and counted too. The router's
      // connections are followed from accept to close: a closed one is a patient gone.
      const int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
      Monitor(router_, router_monitor_, events | ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED);
      Monitor(phases_, phases_monitor_, events);
      router_.set(zmq::sockopt::router_mandatory, true);
      router_.set(zmq::sockopt::sndhwm, 100000);
      phases_.set(zmq::sockopt::xpub_verbose, true);
      router_.bind(options_.router_endpoint);
      phases_.bind(options_.phases_endpoint);
      router_bound_ = router_.get(zmq::sockopt::last_endpoint);
      phases_bound_ = phases_.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return Status::Error(std::string("cannot bind: ") + e.what());
    }
    Log("event=start router=" + router_bound_ + " phases=" + phases_bound_ + " parties=" +
        std::to_string(roster_.all().size()) + " roster=" + roster_.Fingerprint().substr(0, 16) +
        " heartbeat_ms=" + std::to_string(heartbeat_ms_));
    return Status::Ok();
  }

  Status Run() {
    // The router's monitor before the router: a connection's accept is known before its first
    // message is read, and its close before what it sent last is served (GoneParties).
    zmq::pollitem_t items[] = {{zap_.socket().handle(), 0, ZMQ_POLLIN, 0},
                               {router_monitor_.handle(), 0, ZMQ_POLLIN, 0},
                               {router_.handle(), 0, ZMQ_POLLIN, 0},
                               {phases_.handle(), 0, ZMQ_POLLIN, 0},
                               {phases_monitor_.handle(), 0, ZMQ_POLLIN, 0}};
    while (!stop_.load()) {
      auto timeout = kStopCheck;
      auto wake = [&](Clock::time_point at) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at - Clock::now());
        timeout = std::clamp(left, std::chrono::milliseconds(0), timeout);
      };
      if (auto at = coordinator_->NextDeadline()) wake(*at);
      if (auto at = republisher_.NextWake()) wake(*at);
      if (!gone_.empty()) wake(Clock::now());  // a party found gone while carrying out a deadline
      try {
        zmq::poll(items, 5, timeout);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;  // a signal: the loop condition decides
        return Status::Error(std::string("poll failed: ") + e.what());
      }
      if (items[0].revents & ZMQ_POLLIN) zap_.Serve();
      if (items[1].revents & ZMQ_POLLIN) ServeMonitor(router_monitor_, "router");
      if ((items[2].revents & ZMQ_POLLIN) || !gone_.empty()) {
        const bool drained = ServeRouter();
        if (!gone_.empty()) ActOnGone(drained);
      }
      if (items[3].revents & ZMQ_POLLIN) ServeSubscriptions();
      if (items[4].revents & ZMQ_POLLIN) ServeMonitor(phases_monitor_, "phases");
      MaybeRepublish();
      Execute(coordinator_->Tick(Clock::now()));
    }
    Execute(coordinator_->Shutdown(Clock::now()));
    return Status::Ok();
  }

  void Stop() { stop_.store(true); }

  BrokerCounters counters() const {
    return {counters_.routed.load(),           counters_.rejected.load(),
            counters_.rounds_done.load(),      counters_.rounds_aborted.load(),
            counters_.auth_denied.load(),      counters_.subscriptions.load(),
            counters_.handshake_failed.load(), counters_.second_connections.load(),
            counters_.capture_errors.load()};
  }

  const std::string& router_bound() const { return router_bound_; }
  const std::string& phases_bound() const { return phases_bound_; }

 private:
  // Envelopes are bounded by this broker's largest round; a request's length only by the
  // protocol's, so that a request over the broker's limit is refused with a notice naming the
  // limit rather than dropped as malformed.
  static Limits MakeLimits(const BrokerOptions& o) {
    Limits l;
    l.max_length = kMaxVectorLength;
    l.max_sealed_bytes = MaxSealedSize(o.rounds.max_length);
    l.max_message_bytes = MaxMessageSize(o.rounds.max_length);
    return l;
  }

  void Log(const std::string& fields) {
    if (log_) log_("broker " + fields);
  }

  // Reads up to `most` of the monitor's events.
  void ServeMonitor(zmq::socket_t& monitor, const char* socket, int most = kMaxBatch) {
    for (int i = 0; i < most; ++i) {
      std::optional<MonitorEvent> e = NextEvent(monitor);
      if (!e) return;
      const int fd = static_cast<int>(e->value);
      if (e->id == ZMQ_EVENT_ACCEPTED) {
        Connection& c = connections_[fd];
        ++c.epoch;
        c.open = true;
        continue;
      }
      if (e->id == ZMQ_EVENT_DISCONNECTED) {
        // Closed now (a party's next connection is its reconnection); its parties are gone
        // once what they sent before it closed has been served (GoneParties).
        Connection& c = connections_[fd];
        c.open = false;
        Gone closed{Gone::Kind::kClosed, fd, c.epoch, {}, ActiveRound(), Clock::now()};
        for (const auto& [party, route] : routes_)
          if (route.fd == fd && route.epoch == c.epoch) closed.parties.push_back(party);
        gone_.Add(std::move(closed));
        continue;
      }
      ++counters_.handshake_failed;
      char code[16];
      std::snprintf(code, sizeof code, "0x%08x", e->value);
      Log(std::string("event=handshake-failed socket=") + socket + " reason=" +
          (e->id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "protocol-error code=" + std::string(code)
                                                        : std::string("no-detail")));
    }
  }

  // --- The message being handled ----------------------------------------------------------

  // A router connection, by file descriptor (the monitor's events and a message's ZMQ_SRCFD name
  // it). Descriptors are reused at once, so each accept starts a new epoch of its number.
  struct Connection {
    uint64_t epoch = 0;
    bool open = false;
  };
  // Where a party's deliveries go: the connection its latest message came over (a second
  // connection's messages are refused before they get this far: FromLiveConnection).
  struct Route {
    std::string id;  // router routing id
    int fd = -1;
    uint64_t epoch = 0;
  };

  std::optional<RoundId> ActiveRound() const {
    const PhaseUpdate* u = coordinator_->current();
    return u ? std::optional<RoundId>(u->round) : std::nullopt;
  }

  void Unreachable(const std::string& party) {
    gone_.Add({Gone::Kind::kUnreachable, -1, 0, {party}, ActiveRound(), Clock::now()});
  }

  // Tells the coordinator of the parties found gone that are due (GoneParties::Due), each only
  // in the round it was found in (Gone::ForRound): a patient dropped out of its round, the
  // hospital left it.
  void ActOnGone(bool drained) {
    for (Gone& g : gone_.Due(drained, Clock::now())) {
      if (g.kind == Gone::Kind::kUnreachable) {
        if (g.ForRound(ActiveRound()))
          Execute(coordinator_->Undeliverable(g.parties.front(), Clock::now()));
        continue;
      }
      // The connection's parties when it closed, and any whose first message over it was served
      // since.
      for (const auto& [party, route] : routes_)
        if (route.fd == g.fd && route.epoch == g.epoch &&
            std::find(g.parties.begin(), g.parties.end(), party) == g.parties.end())
          g.parties.push_back(party);
      for (const std::string& party : g.parties) {
        Log("event=disconnected party=" + party);
        if (g.ForRound(ActiveRound())) Execute(coordinator_->Disconnected(party, Clock::now()));
      }
    }
  }

  // Whether `route`'s connection is still there: not closed as far as the monitor has said, and
  // known to the router (Reachable).
  bool Live(const Route& route) {
    auto c = connections_.find(route.fd);
    if (c != connections_.end() && (!c->second.open || c->second.epoch != route.epoch))
      return false;
    return Reachable(route.id);
  }

  struct Current {
    std::string sender;  // authenticated name, or "?"
    std::string id;      // router routing id of its connection
    int fd = -1;         // its file descriptor (ZMQ_SRCFD)
    zmq::message_t* frame = nullptr;
  };

  // Serves up to kMaxBatch messages; true when the router's queue was found empty.
  bool ServeRouter() {
    for (int i = 0; i < kMaxBatch; ++i) {
      zmq::message_t id, body;
      size_t extra_frames = 0;
      try {
        if (!router_.recv(id, zmq::recv_flags::dontwait)) return true;
        if (!id.more()) continue;  // cannot happen on ROUTER; ignore
        (void)router_.recv(body);
        // A bounded drain of unexpected extra frames: the protocol sends exactly one.
        while (body.more()) {
          zmq::message_t extra;
          (void)router_.recv(extra);
          ++extra_frames;
          if (!extra.more()) break;
        }
      } catch (const zmq::error_t& e) {
        Log(std::string("event=recv-error error=") + Quote(e.what()));
        continue;
      }
      const char* user = body.gets("User-Id");
      current_ =
          Current{user ? user : "", id.to_string(), zmq_msg_get(body.handle(), ZMQ_SRCFD), &body};
      if (current_.sender.empty() || roster_.Find(current_.sender) == nullptr) {
        current_.sender = "?";
        Reject("no authenticated identity");
        continue;
      }
      if (extra_frames > 0) {
        Reject("expected one frame, got " + std::to_string(extra_frames + 1));
        continue;
      }
      auto decoded = Decode(Bytes(body), limits_);
      if (!decoded.ok()) {
        Reject("malformed: " + decoded.message());
        // Every refused request is answered, even one that does not decode.
        if (auto ticket = RequestTicket(Bytes(body), limits_))
          Notify(*ticket, "round request refused: malformed: " + decoded.message());
        continue;
      }
      if (!FromLiveConnection(decoded.value())) continue;
      // This connection is the party's (its first, or the one after the last closed): its
      // deliveries go here from now on, including what this message sets off (its join may
      // complete a phase whose batches go to it). The connection's accept is in the monitor's
      // queue by now (it came before the handshake): read it, so the route has its epoch. A
      // connection keeps the epoch of its first message: one closed since, whose descriptor
      // another connection took, is still the one its close names.
      Route& route = routes_[current_.sender];
      if (route.id != current_.id) {
        // All of it: the close of a descriptor's last owner too.
        ServeMonitor(router_monitor_, "router", std::numeric_limits<int>::max());
        route = Route{current_.id, current_.fd, connections_[current_.fd].epoch};
      }
      Execute(coordinator_->OnMessage(current_.sender, decoded.value(), Clock::now()));
    }
    return false;
  }

  // One connection per party. A message from a party over a connection other than the one the
  // broker delivers to is served only once that one is gone (the party reconnected): while it
  // is live, two processes hold the party's keys, and serving both would let either's input
  // stand for the party from round to round. The newcomer is refused with a notice (ticket 0,
  // or its request's), logged and counted; the live connection is not disturbed.
  bool FromLiveConnection(const Message& message) {
    auto route = routes_.find(current_.sender);
    if (route == routes_.end() || route->second.id == current_.id) return true;
    if (!Live(route->second)) {
      Log("event=reconnected party=" + current_.sender);
      return true;
    }
    ++counters_.second_connections;
    const std::string why = current_.sender +
                            " is already connected: a second connection with its keys is "
                            "refused while the first is live";
    Reject(why);
    const Request* request = std::get_if<Request>(&message);
    Notify(request ? request->ticket : 0,
           (request ? "round request refused: " : "connection refused: ") + why);
    return false;
  }

  // Whether the router still has a connection with routing id `id`. ROUTER_MANDATORY fails the
  // routing frame for an id it no longer knows; a known one gets an empty frame, which nodes
  // ignore (schema/PROTOCOL.md, "One connection per party").
  bool Reachable(const std::string& id) {
    try {
      if (!router_.send(zmq::buffer(id), zmq::send_flags::sndmore | zmq::send_flags::dontwait))
        return true;  // its queue is full: it is there
      (void)router_.send(zmq::const_buffer("", 0), zmq::send_flags::dontwait);
      return true;
    } catch (const zmq::error_t& e) {
      return e.num() != EHOSTUNREACH;
    }
  }

  // --- Carrying out the coordinator's actions ---------------------------------------------

  void Execute(const Actions& actions) {
    for (const Action& a : actions) {
      std::visit([this](const auto& x) { Do(x); }, a);
    }
  }

  void Do(const act::Reject& a) { Reject(a.reason); }
  void Do(const act::Notify& a) { Notify(a.ticket, a.reason); }
  void Do(const act::Log& a) { Log(a.fields); }

  // Sends `frame` to `to`'s connection, recording it in the capture first if `capture`. False if
  // `to` has no connection.
  bool SendTo(const std::string& to, zmq::message_t& frame, bool capture) {
    auto route = routes_.find(to);
    if (route == routes_.end()) return false;
    try {
      // The routing frame first: with ROUTER_MANDATORY that is the send that fails for a
      // recipient that is gone. Then the capture gets the frame exactly as sent (before zmq
      // takes the buffer), and the counts with it, before the recipient can see the frame.
      if (!router_
               .send(zmq::buffer(route->second.id),
                     zmq::send_flags::sndmore | zmq::send_flags::dontwait)
               .has_value())
        return false;
      if (capture && capture_) CaptureStatus(capture_->AppendFrame(Micros(), Bytes(frame)));
      // Once the routing frame is queued, the rest of the message always is.
      (void)router_.send(frame, zmq::send_flags::dontwait);
      return true;
    } catch (const zmq::error_t&) {
      return false;
    }
  }

  // The capture holds only what was routed.
  void Do(const act::Route& a) {
    if (!SendTo(a.to, *current_.frame, /*capture=*/true)) return Unreachable(a.to);
    ++counters_.routed;
    Execute(coordinator_->Routed(a, Clock::now()));
  }

  void Do(const act::Send& a) {
    // An earlier send of the same phase can end the round (its recipient gone, too few left) and
    // open the next: the rest of the old round's batches must not reach the new round's capture.
    const PhaseUpdate* current = coordinator_->current();
    if (current == nullptr || current->round != a.batch.round) return;
    const std::vector<uint8_t> bytes = Encode(a.batch);
    zmq::message_t frame(bytes.data(), bytes.size());
    if (!SendTo(a.to, frame, a.capture)) Unreachable(a.to);
  }

  void Do(const act::OpenCapture& a) {
    opened_ = a.opened;
    auto writer = CaptureWriter::Create(
        options_.captures_dir / (RoundHex(a.header.round) + ".tcap"), a.header);
    if (!writer.ok()) {
      Log("event=capture-error round=" + RoundHex(a.header.round) +
          " error=" + Quote(writer.message()));
      Execute(coordinator_->CaptureFailed(Clock::now()));
      return;
    }
    capture_.emplace(std::move(writer.value()));
    CaptureStatus(capture_->Append(CapturePhase{Micros(), a.open.phase, a.open.seq, "", {}}));
  }

  // Records the phase change (capture first), then publishes it. When the round ends, its
  // capture is finished and fsync'd before anyone hears that it ended.
  void Do(const act::Publish& a) {
    const PhaseUpdate& u = a.update;
    const bool final = u.phase == Phase::kDone || u.phase == Phase::kAbort;
    if (capture_) {
      // Phase changes reach the file as they happen; envelopes in between are batched.
      CaptureStatus(capture_->Append(CapturePhase{Micros(), u.phase, u.seq, u.reason, u.sets}));
      CaptureStatus(capture_->Flush());
      if (final) {
        CaptureStatus(capture_->Finish(CaptureTrailer{Micros(), u.phase == Phase::kDone, u.reason,
                                                      capture_->frames(), capture_->rejected()}));
        capture_.reset();
      }
    }
    if (final) ++(u.phase == Phase::kDone ? counters_.rounds_done : counters_.rounds_aborted);
    Log("event=phase round=" + RoundHex(u.round) + " phase=" + std::string(PhaseName(u.phase)) +
        " seq=" + std::to_string(u.seq) + (u.reason.empty() ? "" : " reason=" + Quote(u.reason)));
    republisher_.Published(Encode(u));
    try {
      phases_.send(zmq::buffer(republisher_.last()), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      Log("event=publish-error error=" + Quote(e.what()));
    }
  }

  // A capture write that fails is logged and counted, never dropped silently; the round goes on
  // (its outcome is still published), and --check will find the capture short.
  void CaptureStatus(const Status& s) {
    if (s.ok()) return;
    ++counters_.capture_errors;
    Log("event=capture-error error=" + Quote(s.message()));
  }

  uint64_t Micros() const {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - opened_).count());
  }

  void Reject(const std::string& reason) {
    ++counters_.rejected;
    const size_t size = current_.frame ? current_.frame->size() : 0;
    Log("event=reject from=" + current_.sender + " reason=" + Quote(reason) +
        " size=" + std::to_string(size));
    if (capture_)
      CaptureStatus(capture_->Append(
          CaptureRejected{Micros(), current_.sender, reason.substr(0, kMaxReasonLength), size}));
  }

  // Answers the message being handled, on the connection it came from.
  void Notify(uint64_t ticket, const std::string& reason) {
    auto bytes = Encode(Notice{ticket, reason.substr(0, kMaxReasonLength)});
    try {
      router_.send(zmq::buffer(current_.id), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      router_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      Log("event=notice-undeliverable to=" + current_.sender + " error=" + Quote(e.what()));
    }
  }

  // A new subscription (XPUB_VERBOSE passes every one up) asks for the last update again, for
  // a subscriber that connected late (broker/republish.h).
  void ServeSubscriptions() {
    size_t subscriptions = 0;
    for (int i = 0; i < kMaxBatch; ++i) {
      zmq::message_t m;
      try {
        if (!phases_.recv(m, zmq::recv_flags::dontwait)) break;
      } catch (const zmq::error_t&) {
        break;
      }
      if (m.size() >= 1 && static_cast<const uint8_t*>(m.data())[0] == 1) ++subscriptions;
    }
    counters_.subscriptions += subscriptions;
    if (subscriptions > kMaxBatch / 2)
      Log("event=subscription-burst count=" + std::to_string(subscriptions));
    if (subscriptions > 0) republisher_.Subscribed();
    MaybeRepublish();
  }

  void MaybeRepublish() {
    const std::vector<uint8_t>* update = republisher_.Due(Clock::now());
    if (update == nullptr) return;
    try {
      phases_.send(zmq::buffer(*update), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
    }
  }

  BrokerOptions options_;
  LogSink log_;
  Limits limits_;
  Roster roster_;
  std::optional<Coordinator> coordinator_;
  struct {
    std::atomic<uint64_t> routed{0}, rejected{0}, rounds_done{0}, rounds_aborted{0}, auth_denied{0},
        subscriptions{0}, handshake_failed{0}, second_connections{0}, capture_errors{0};
  } counters_;
  zmq::context_t ctx_;
  ZapHandler zap_;
  zmq::socket_t router_{ctx_, zmq::socket_type::router};
  zmq::socket_t phases_{ctx_, zmq::socket_type::xpub};
  zmq::socket_t router_monitor_{ctx_, zmq::socket_type::pair};
  zmq::socket_t phases_monitor_{ctx_, zmq::socket_type::pair};
  std::string router_bound_, phases_bound_;
  int heartbeat_ms_ = kHeartbeatMs;      // ZMQ_HEARTBEAT_IVL of both server sockets, by roster size
  std::map<std::string, Route> routes_;  // party name -> its connection
  std::map<int, Connection> connections_;  // router connections by descriptor
  GoneParties gone_{kGoneGrace};           // found gone, not yet acted on
  Current current_;
  std::optional<CaptureWriter> capture_;  // the active round's
  Clock::time_point opened_;              // when the active round opened: capture times
  Republisher republisher_{kRepublishGap};
  std::atomic<bool> stop_{false};
};

Result<std::unique_ptr<Broker>> Broker::Create(const BrokerOptions& options, LogSink log) {
  auto impl = std::make_unique<Impl>(options, std::move(log));
  TALLY_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Broker>(new Broker(std::move(impl)));
}

Broker::Broker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Broker::~Broker() = default;
const std::string& Broker::router_endpoint() const { return impl_->router_bound(); }
const std::string& Broker::phases_endpoint() const { return impl_->phases_bound(); }
Status Broker::Run() { return impl_->Run(); }
void Broker::Stop() { impl_->Stop(); }
BrokerCounters Broker::counters() const { return impl_->counters(); }

}  // namespace tally
