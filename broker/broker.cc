// The broker: ZAP allowlist, router, phase channel and round coordinator in one poll loop.
#include "broker/broker.h"

#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "broker/republish.h"
#include "keys/keys.h"
#include "schema/capture.h"
#include "schema/schema.h"
#include "schema/system.h"
#include "schema/text.h"

namespace tally {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr const char* kZapDomain = "tally";
constexpr int kMaxBatch = 256;  // messages drained per socket per loop turn
constexpr auto kStopCheck = std::chrono::milliseconds(100);    // longest poll wait
constexpr auto kRepublishGap = std::chrono::milliseconds(10);  // between republications
constexpr int kHandshakeMs = 20000;                            // longest CURVE handshake
constexpr int kHeartbeatMs = 5000;  // ZMTP heartbeats; a silent peer is dropped after 3

// "a, b and c" with at most `max` names, then "and N more".
std::string JoinList(const std::vector<std::string>& items, size_t max = 3) {
  std::string out;
  size_t shown = std::min(items.size(), max);
  for (size_t i = 0; i < shown; ++i) {
    if (i > 0) out += (i + 1 == shown && shown == items.size()) ? " and " : ", ";
    out += items[i];
  }
  if (items.size() > shown) out += " and " + std::to_string(items.size() - shown) + " more";
  return out;
}

struct Round {
  RoundId id{};
  uint64_t ticket = 0;
  std::string hospital;
  uint64_t range = 0;
  uint32_t length = 1;
  std::vector<std::string> participants;
  uint32_t deadline_ms = 0;  // each phase's, granted from the request and the broker's limit
  Phase phase = Phase::kOpen;
  Clock::time_point opened;
  Clock::time_point phase_deadline;
  std::map<std::string, JoinNonce> joined;  // patient -> the nonce it joined with
  std::set<std::string> partials;           // senders routed
  std::optional<CaptureWriter> capture;
  uint64_t envelopes = 0;
  uint64_t rejected = 0;

  bool IsParticipant(std::string_view name) const {
    for (const auto& p : participants)
      if (p == name) return true;
    return false;
  }
  uint64_t Micros(Clock::time_point now) const {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - opened).count());
  }
};

struct PendingRequest {
  std::string hospital;
  Request request;
};

void SetCommonOptions(zmq::socket_t& s, int64_t max_message, const std::string& endpoint) {
  s.set(zmq::sockopt::linger, 200);
  s.set(zmq::sockopt::maxmsgsize, max_message);
  // A cohort connecting at once (hundreds of processes starting on a busy host) can take
  // seconds per handshake; a slow handshake is not a refused one.
  s.set(zmq::sockopt::handshake_ivl, kHandshakeMs);
  // Connections that arrive together wait in the kernel's queue (capped by somaxconn) instead
  // of being dropped and retried a second later.
  s.set(zmq::sockopt::backlog, 4096);
  // A peer that vanished without closing its connection (host down, network cut) is noticed
  // and dropped, so its party can connect again.
  s.set(zmq::sockopt::heartbeat_ivl, kHeartbeatMs);
  s.set(zmq::sockopt::heartbeat_timeout, 3 * kHeartbeatMs);
  if (endpoint.find('[') != std::string::npos) s.set(zmq::sockopt::ipv6, true);
  s.set(zmq::sockopt::zap_domain, kZapDomain);
}

}  // namespace

class Broker::Impl {
 public:
  Impl(const BrokerOptions& options, LogSink log)
      : options_(options), log_(std::move(log)), limits_(MakeLimits(options)) {}

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

    try {
      // Fail closed: the ZAP handler exists before any CURVE socket binds.
      zap_.bind(kZapEndpoint);
      const int64_t max_message = static_cast<int64_t>(MaxMessageSize(options_.max_length));
      for (auto [s, endpoint] : {std::pair{&router_, options_.router_endpoint},
                                 std::pair{&phases_, options_.phases_endpoint}}) {
        SetCommonOptions(*s, max_message, endpoint);
        s->set(zmq::sockopt::curve_server, true);
        s->set(zmq::sockopt::curve_secretkey,
               zmq::const_buffer(secret->curve_secret.data(), secret->curve_secret.size()));
      }
      // Handshakes that fail before the allowlist is asked (a client with the wrong broker key,
      // a keypair that does not match, no CURVE at all) are logged and counted too.
      const int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
      if (zmq_socket_monitor(router_.handle(), "inproc://broker-router-monitor", events) != 0 ||
          zmq_socket_monitor(phases_.handle(), "inproc://broker-phases-monitor", events) != 0)
        return Status::Error("cannot monitor the broker's sockets");
      router_monitor_.connect("inproc://broker-router-monitor");
      phases_monitor_.connect("inproc://broker-phases-monitor");
      router_.set(zmq::sockopt::router_mandatory, true);
      router_.set(zmq::sockopt::sndhwm, 100000);
      phases_.set(zmq::sockopt::xpub_verbose, true);
      phases_.set(zmq::sockopt::maxmsgsize, int64_t{1024});  // inbound: subscriptions only
      router_.bind(options_.router_endpoint);
      phases_.bind(options_.phases_endpoint);
      router_bound_ = router_.get(zmq::sockopt::last_endpoint);
      phases_bound_ = phases_.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return Status::Error(std::string("cannot bind: ") + e.what());
    }
    Log("event=start router=" + router_bound_ + " phases=" + phases_bound_ + " parties=" +
        std::to_string(roster_.all().size()) + " roster=" + roster_.Fingerprint().substr(0, 16));
    return Status::Ok();
  }

  Status Run() {
    zmq::pollitem_t items[] = {{zap_.handle(), 0, ZMQ_POLLIN, 0},
                               {router_.handle(), 0, ZMQ_POLLIN, 0},
                               {phases_.handle(), 0, ZMQ_POLLIN, 0},
                               {router_monitor_.handle(), 0, ZMQ_POLLIN, 0},
                               {phases_monitor_.handle(), 0, ZMQ_POLLIN, 0}};
    while (!stop_.load()) {
      auto timeout = kStopCheck;
      auto wake = [&](Clock::time_point at) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at - Clock::now());
        timeout = std::clamp(left, std::chrono::milliseconds(0), timeout);
      };
      if (round_) wake(round_->phase_deadline);
      if (auto at = republisher_.NextWake()) wake(*at);
      try {
        zmq::poll(items, 5, timeout);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;  // a signal: the loop condition decides
        return Status::Error(std::string("poll failed: ") + e.what());
      }
      if (items[0].revents & ZMQ_POLLIN) ServeZap();
      if (items[1].revents & ZMQ_POLLIN) ServeRouter();
      if (items[2].revents & ZMQ_POLLIN) ServeSubscriptions();
      if (items[3].revents & ZMQ_POLLIN) ServeMonitor(router_monitor_, "router");
      if (items[4].revents & ZMQ_POLLIN) ServeMonitor(phases_monitor_, "phases");
      MaybeRepublish();
      CheckDeadline();
    }
    if (round_) Abort("broker shutting down");
    return Status::Ok();
  }

  void Stop() { stop_.store(true); }

  BrokerCounters counters() const {
    return {counters_.routed.load(),           counters_.rejected.load(),
            counters_.rounds_done.load(),      counters_.rounds_aborted.load(),
            counters_.auth_denied.load(),      counters_.subscriptions.load(),
            counters_.handshake_failed.load(), counters_.second_connections.load()};
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
    l.max_sealed_bytes = MaxSealedSize(o.max_length);
    l.max_message_bytes = MaxMessageSize(o.max_length);
    return l;
  }

  void Log(const std::string& fields) {
    if (log_) log_("broker " + fields);
  }

  // --- ZAP: admit roster members only, and name them --------------------------------------

  void ServeZap() {
    for (int i = 0; i < kMaxBatch; ++i) {
      std::vector<zmq::message_t> frames;
      try {
        zmq::message_t m;
        if (!zap_.recv(m, zmq::recv_flags::dontwait)) return;
        frames.push_back(std::move(m));
        while (frames.back().more() && frames.size() < 8) {
          zmq::message_t next;
          (void)zap_.recv(next);
          frames.push_back(std::move(next));
        }
      } catch (const zmq::error_t& e) {
        Log(std::string("event=zap-error error=") + Quote(e.what()));
        return;
      }
      std::string status = "400", text = "key not in roster", user;
      std::string request_id = frames.size() > 1 ? frames[1].to_string() : "";
      // Frames: version, request id, domain, address, identity, mechanism, credentials...
      if (frames.size() >= 7 && frames[0].to_string() == "1.0" &&
          frames[5].to_string() == "CURVE" && frames[6].size() == 32) {
        PublicKey key;
        std::memcpy(key.data(), frames[6].data(), 32);
        if (const Certificate* c = roster_.FindByCurveKey(key);
            c != nullptr && c->role != Role::kBroker) {
          status = "200";
          text = "OK";
          user = c->name;
        }
      } else {
        text = "unsupported mechanism";
      }
      if (status != "200") {
        ++counters_.auth_denied;
        Log("event=auth-denied address=" + (frames.size() > 3 ? frames[3].to_string() : "?") +
            " reason=" + Quote(text));
      }
      try {
        zap_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
        zap_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
        zap_.send(zmq::buffer(status), zmq::send_flags::sndmore);
        zap_.send(zmq::buffer(text), zmq::send_flags::sndmore);
        zap_.send(zmq::buffer(user), zmq::send_flags::sndmore);
        zap_.send(zmq::const_buffer("", 0), zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        Log(std::string("event=zap-error error=") + Quote(e.what()));
      }
    }
  }

  void ServeMonitor(zmq::socket_t& monitor, const char* socket) {
    for (int i = 0; i < kMaxBatch; ++i) {
      zmq::message_t event, address;
      try {
        if (!monitor.recv(event, zmq::recv_flags::dontwait)) return;
        if (event.more()) (void)monitor.recv(address);
      } catch (const zmq::error_t&) {
        return;
      }
      if (event.size() < 6) continue;
      uint16_t id;
      uint32_t value;
      std::memcpy(&id, event.data(), sizeof id);
      std::memcpy(&value, static_cast<const uint8_t*>(event.data()) + 2, sizeof value);
      ++counters_.handshake_failed;
      char code[16];
      std::snprintf(code, sizeof code, "0x%08x", value);
      Log(std::string("event=handshake-failed socket=") + socket + " reason=" +
          (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "protocol-error code=" + std::string(code)
                                                     : std::string("no-detail")));
    }
  }

  // --- Router -----------------------------------------------------------------------------

  void ServeRouter() {
    for (int i = 0; i < kMaxBatch; ++i) {
      zmq::message_t id, body;
      std::string sender;
      size_t extra_frames = 0;
      try {
        if (!router_.recv(id, zmq::recv_flags::dontwait)) return;
        if (!id.more()) continue;  // cannot happen on ROUTER; ignore
        (void)router_.recv(body);
        // A bounded drain of unexpected extra frames: the protocol sends exactly one.
        while (body.more()) {
          zmq::message_t extra;
          (void)router_.recv(extra);
          ++extra_frames;
          if (!extra.more()) break;
        }
        const char* user = body.gets("User-Id");
        sender = user ? user : "";
      } catch (const zmq::error_t& e) {
        Log(std::string("event=recv-error error=") + Quote(e.what()));
        continue;
      }
      if (sender.empty() || roster_.Find(sender) == nullptr) {
        Reject("?", "no authenticated identity", body.size());
        continue;
      }
      // The route to a party follows its latest *accepted* message: a refused message (say a
      // replayed envelope from a second connection) must not redirect the party's deliveries.
      current_id_.assign(static_cast<const char*>(id.data()), id.size());
      current_accepted_ = true;
      if (extra_frames > 0) {
        Reject(sender, "expected one frame, got " + std::to_string(extra_frames + 1), body.size());
        continue;
      }
      auto span = std::span<const uint8_t>(static_cast<const uint8_t*>(body.data()), body.size());
      auto decoded = Decode(span, limits_);
      if (!decoded.ok()) {
        Reject(sender, "malformed: " + decoded.message(), body.size());
        // Every refused request is answered, even one that does not decode.
        if (auto ticket = RequestTicket(span, limits_))
          SendNotice(sender, *ticket, "round request refused: malformed: " + decoded.message());
        continue;
      }
      if (!FromLiveConnection(sender, decoded.value(), body.size())) continue;
      Handle(sender, std::move(decoded.value()), body);
      if (current_accepted_) routes_[sender] = current_id_;
    }
  }

  // One connection per party. A message from a party over a connection other than the one the
  // broker delivers to is served only once that one is gone (the party reconnected): while it
  // is live, two processes hold the party's keys, and serving both would let either's input
  // stand for the party from round to round. The newcomer is refused with a notice (ticket 0,
  // or its request's), logged and counted; the live connection is not disturbed.
  bool FromLiveConnection(const std::string& sender, const Message& message, size_t size) {
    auto route = routes_.find(sender);
    if (route == routes_.end() || route->second == current_id_) return true;
    if (!Reachable(route->second)) {
      Log("event=reconnected party=" + sender);
      return true;
    }
    ++counters_.second_connections;
    const std::string why = sender +
                            " is already connected: a second connection with its keys "
                            "is refused while the first is live";
    Reject(sender, why, size);
    const Request* request = std::get_if<Request>(&message);
    SendNotice(sender, request ? request->ticket : 0,
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

  void Handle(const std::string& sender, Message message, zmq::message_t& frame) {
    std::visit(
        [&](auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, Request>) {
            OnRequest(sender, std::move(m), frame.size());
          } else if constexpr (std::is_same_v<T, Join>) {
            OnJoin(sender, m, frame.size());
          } else if constexpr (std::is_same_v<T, Refuse>) {
            OnRefuse(sender, m, frame.size());
          } else if constexpr (std::is_same_v<T, Envelope>) {
            OnEnvelope(sender, m, frame);
          } else if constexpr (std::is_same_v<T, Ack>) {
            OnAck(sender, m, frame.size());
          } else {
            Reject(sender,
                   std::string("a node may not send ") +
                       (std::is_same_v<T, PhaseUpdate> ? "phase" : "notice") + " messages",
                   frame.size());
          }
        },
        message);
  }

  void Reject(const std::string& sender, const std::string& reason, size_t size) {
    current_accepted_ = false;
    ++counters_.rejected;
    Log("event=reject from=" + sender + " reason=" + Quote(reason) +
        " size=" + std::to_string(size));
    if (round_ && round_->capture) {
      ++round_->rejected;
      (void)round_->capture->Append(CaptureRejected{round_->Micros(Clock::now()), sender,
                                                    reason.substr(0, kMaxReasonLength), size});
    }
  }

  bool InRound(const std::string& sender, const RoundId& round, std::string_view what,
               size_t size) {
    if (!round_ || round_->id != round) {
      Reject(sender, std::string(what) + " for a round that is not active", size);
      return false;
    }
    if (!round_->IsParticipant(sender) && sender != round_->hospital) {
      Reject(sender, std::string(what) + " from a party not in the round", size);
      return false;
    }
    return true;
  }

  // Answers the message being handled, on the connection it came from.
  void SendNotice(const std::string& to, uint64_t ticket, const std::string& reason) {
    auto bytes = Encode(Notice{ticket, reason.substr(0, kMaxReasonLength)});
    try {
      router_.send(zmq::buffer(current_id_), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      router_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      Log("event=notice-undeliverable to=" + to + " error=" + Quote(e.what()));
    }
  }

  void OnRequest(const std::string& sender, Request request, size_t size) {
    const Certificate* cert = roster_.Find(sender);
    auto refuse = [&](const std::string& why) {
      Reject(sender, "round request refused: " + why, size);
      SendNotice(sender, request.ticket, "round request refused: " + why);
    };
    if (cert->role != Role::kHospital) return refuse("only a hospital may request rounds");
    if (request.ticket == 0) return refuse("ticket 0 is reserved (it marks connection notices)");
    if (request.length > options_.max_length)
      return refuse("length " + std::to_string(request.length) + " exceeds the broker's limit " +
                    std::to_string(options_.max_length));
    if (request.participants.empty()) request.participants = roster_.Names(Role::kPatient);
    for (const auto& p : request.participants) {
      const Certificate* c = roster_.Find(p);
      if (c == nullptr || c->role != Role::kPatient)
        return refuse(p + " is not a patient in the roster");
    }
    if (request.participants.size() < 2)
      return refuse("a round needs at least 2 patients (the sum of one is that input)");
    // The aggregate must be computable without wrapping modulo 2^64.
    if (request.range > UINT64_MAX / request.participants.size())
      return refuse("range too large: the sum of " + std::to_string(request.participants.size()) +
                    " inputs could exceed 2^64-1");
    if (round_) {
      if (queue_.size() >= options_.max_queue) return refuse("round queue full");
      queue_.push_back({sender, std::move(request)});
      Log("event=queued from=" + sender +
          " ticket=" + std::to_string(queue_.back().request.ticket) +
          " position=" + std::to_string(queue_.size()));
      return;
    }
    Open(sender, std::move(request));
  }

  void Open(const std::string& hospital, Request request) {
    round_.emplace();
    Round& r = *round_;
    randombytes_buf(r.id.data(), r.id.size());
    r.ticket = request.ticket;
    r.hospital = hospital;
    r.range = request.range;
    r.length = request.length;
    r.participants = std::move(request.participants);
    r.deadline_ms = request.deadline_ms == 0 ? options_.deadline_ms
                                             : std::min(request.deadline_ms, options_.deadline_ms);
    r.opened = Clock::now();
    CaptureHeader header;
    header.round = r.id;
    header.ticket = r.ticket;
    header.hospital = r.hospital;
    header.range = r.range;
    header.length = r.length;
    header.participants = r.participants;
    header.roster_fingerprint = roster_.Fingerprint();
    header.opened_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
    Log("event=round-open round=" + RoundHex(r.id) + " hospital=" + hospital + " ticket=" +
        std::to_string(r.ticket) + " patients=" + std::to_string(r.participants.size()) +
        " length=" + std::to_string(r.length) + " range=" + std::to_string(r.range) +
        " deadline_ms=" + std::to_string(r.deadline_ms));
    // Publish first, then create the capture: creating a file costs a journal transaction (about
    // 0.2 ms on ext4), which this way overlaps the patients' answers instead of delaying the
    // open phase. Nothing else reaches the capture in between, so it reads the same.
    Advance(Phase::kOpen);
    const uint64_t open_us = r.Micros(Clock::now());
    auto writer = CaptureWriter::Create(options_.captures_dir / (RoundHex(r.id) + ".tcap"), header);
    if (!writer.ok()) {
      Log("event=capture-error round=" + RoundHex(r.id) + " error=" + Quote(writer.message()));
      Abort("capture could not be written");
      return;
    }
    r.capture.emplace(std::move(writer.value()));
    (void)r.capture->Append(CapturePhase{open_us, Phase::kOpen, seq_, "", {}});
  }

  void OnJoin(const std::string& sender, const Join& join, size_t size) {
    if (!InRound(sender, join.round, "join", size)) return;
    if (!round_->IsParticipant(sender)) return Reject(sender, "join from the hospital", size);
    if (round_->phase != Phase::kOpen) return Reject(sender, "join after the join phase", size);
    if (!round_->joined.emplace(sender, join.nonce).second)
      return Reject(sender, "duplicate join", size);
    if (round_->joined.size() == round_->participants.size()) Advance(Phase::kSum);
  }

  void OnRefuse(const std::string& sender, const Refuse& refuse, size_t size) {
    if (!InRound(sender, refuse.round, "refusal", size)) return;
    // The hospital may give up its own round at any phase before it acknowledges (its roster
    // lacks a participant, a masked input does not open): the round cannot complete.
    // A patient's refusal answers the open phase; once it has joined, its masked input is
    // owed, and a late refusal must not turn a round the hospital may already hold into an
    // abort.
    if (round_->IsParticipant(sender) &&
        (round_->phase != Phase::kOpen || round_->joined.count(sender)))
      return Reject(sender, "refusal after the join phase", size);
    Abort(sender + " refused the round: " + refuse.reason);
  }

  void OnEnvelope(const std::string& sender, const Envelope& env, zmq::message_t& frame) {
    const size_t size = frame.size();
    if (env.from != sender) return Reject(sender, "spoofed sender: header says " + env.from, size);
    if (!InRound(sender, env.round, "envelope", size)) return;
    Round& r = *round_;
    const std::string link = env.from + "->" + env.to;
    if (r.phase != Phase::kSum) return Reject(sender, "partial outside the sum phase", size);
    if (!r.IsParticipant(env.from) || env.to != r.hospital)
      return Reject(sender, "partial " + link + " is not a link of this round", size);
    if (r.partials.count(env.from)) return Reject(sender, "duplicate partial " + link, size);
    auto route = routes_.find(env.to);
    bool sent = false;
    if (route != routes_.end()) {
      try {
        // The routing frame first: with ROUTER_MANDATORY that is the send that fails for a
        // recipient that is gone. Then the capture gets the frame exactly as routed (before
        // zmq takes the buffer), and the counts with it, before the recipient can see the
        // frame. The capture holds only what was routed.
        sent = router_
                   .send(zmq::buffer(route->second),
                         zmq::send_flags::sndmore | zmq::send_flags::dontwait)
                   .has_value();
        if (sent) {
          if (r.capture) {
            auto bytes = std::span<const uint8_t>(static_cast<const uint8_t*>(frame.data()), size);
            if (auto s = r.capture->AppendEnvelope(r.Micros(Clock::now()), bytes); !s.ok())
              Log("event=capture-error round=" + RoundHex(r.id) + " error=" + Quote(s.message()));
          }
          ++counters_.routed;
          ++r.envelopes;
          r.partials.insert(env.from);
          // Once the routing frame is queued, the rest of the message always is.
          (void)router_.send(frame, zmq::send_flags::dontwait);
        }
      } catch (const zmq::error_t&) {
        sent = false;
      }
    }
    if (!sent)
      Abort(std::string(KindName(env.kind)) + " " + link + " undeliverable: " + env.to +
            " is not connected");
  }

  void OnAck(const std::string& sender, const Ack& ack, size_t size) {
    if (!InRound(sender, ack.round, "acknowledgement", size)) return;
    Round& r = *round_;
    if (sender != r.hospital) return Reject(sender, "acknowledgement from a patient", size);
    if (r.partials.size() != r.participants.size())
      return Reject(sender, "acknowledgement before every partial was routed", size);
    Finish(Phase::kDone, "");
  }

  // --- Phases -----------------------------------------------------------------------------

  // Every participant's join nonce in participant order once all have joined; else none.
  static std::vector<JoinNonce> Nonces(const Round& r) {
    std::vector<JoinNonce> out;
    if (r.joined.size() != r.participants.size()) return out;
    for (const auto& p : r.participants) out.push_back(r.joined.at(p));
    return out;
  }

  PhaseUpdate Snapshot(const Round& r, const std::string& reason) const {
    PhaseUpdate u;
    u.round = r.id;
    u.phase = r.phase;
    u.seq = seq_;
    u.ticket = r.ticket;
    u.hospital = r.hospital;
    u.range = r.range;
    u.length = r.length;
    u.participants = r.participants;
    u.nonces = Nonces(r);
    u.deadline_ms = r.deadline_ms;
    u.reason = reason;
    return u;
  }

  void Publish(const PhaseUpdate& update) {
    republisher_.Published(Encode(update));
    try {
      phases_.send(zmq::buffer(republisher_.last()), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      Log("event=publish-error error=" + Quote(e.what()));
    }
  }

  // Records the phase change (capture first), then publishes it. When the round ends, its
  // capture is finished and fsync'd before anyone hears that it ended.
  void Advance(Phase phase, const std::string& reason = "") {
    Round& r = *round_;
    r.phase = phase;
    ++seq_;
    auto now = Clock::now();
    r.phase_deadline = now + std::chrono::milliseconds(r.deadline_ms);
    const PhaseUpdate update = Snapshot(r, reason);
    if (r.capture) {
      // Phase changes reach the file as they happen; envelopes in between are batched.
      (void)r.capture->Append(CapturePhase{r.Micros(now), phase, seq_, reason, update.nonces});
      (void)r.capture->Flush();
    }
    const bool final = phase == Phase::kDone || phase == Phase::kAbort;
    if (final && r.capture) {
      auto s = r.capture->Finish(CaptureTrailer{r.Micros(Clock::now()), phase == Phase::kDone,
                                                reason, r.envelopes, r.rejected});
      if (!s.ok())
        Log("event=capture-error round=" + RoundHex(r.id) + " error=" + Quote(s.message()));
      r.capture.reset();
    }
    if (final) ++(phase == Phase::kDone ? counters_.rounds_done : counters_.rounds_aborted);
    Log("event=phase round=" + RoundHex(r.id) + " phase=" + std::string(PhaseName(phase)) +
        " seq=" + std::to_string(seq_) + (reason.empty() ? "" : " reason=" + Quote(reason)));
    Publish(update);
  }

  void Abort(const std::string& reason) {
    Finish(Phase::kAbort, reason.substr(0, kMaxReasonLength));
  }

  void Finish(Phase phase, const std::string& reason) {
    Advance(phase, reason);
    round_.reset();
    if (!queue_.empty() && !stop_.load()) {
      PendingRequest next = std::move(queue_.front());
      queue_.pop_front();
      Open(next.hospital, std::move(next.request));
    }
  }

  void CheckDeadline() {
    if (!round_ || Clock::now() < round_->phase_deadline) return;
    Round& r = *round_;
    std::vector<std::string> missing;
    switch (r.phase) {
      case Phase::kOpen:
        for (const auto& p : r.participants)
          if (!r.joined.count(p)) missing.push_back(p);
        return Abort(JoinList(missing) + " did not join");
      case Phase::kSum:
        for (const auto& p : r.participants)
          if (!r.partials.count(p)) missing.push_back(p);
        if (!missing.empty())
          return Abort((missing.size() == 1 ? "partial from " : "partials from ") +
                       JoinList(missing) + " not sent");
        return Abort(r.hospital + " did not acknowledge the result");
      default:
        return;
    }
  }

  // A new subscription (XPUB_VERBOSE passes every one up): republish the current state, so a
  // subscriber that connected late learns the phase without waiting for the next change. At
  // most once per kRepublishGap, however many subscriptions arrive: a subscription flood from
  // one party is not amplified to every subscriber.
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
  zmq::context_t ctx_;
  zmq::socket_t zap_{ctx_, zmq::socket_type::rep};
  zmq::socket_t router_{ctx_, zmq::socket_type::router};
  zmq::socket_t phases_{ctx_, zmq::socket_type::xpub};
  zmq::socket_t router_monitor_{ctx_, zmq::socket_type::pair};
  zmq::socket_t phases_monitor_{ctx_, zmq::socket_type::pair};
  std::string router_bound_, phases_bound_;
  std::map<std::string, std::string> routes_;  // party name -> router routing id
  std::string current_id_;                     // routing id of the message being handled
  bool current_accepted_ = true;               // false once Reject() was called for it
  std::optional<Round> round_;
  std::deque<PendingRequest> queue_;
  Republisher republisher_{kRepublishGap};
  uint64_t seq_ = 0;
  std::atomic<bool> stop_{false};
  struct {
    std::atomic<uint64_t> routed{0}, rejected{0}, rounds_done{0}, rounds_aborted{0}, auth_denied{0},
        subscriptions{0}, handshake_failed{0}, second_connections{0};
  } counters_;
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
