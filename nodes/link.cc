#include "nodes/link.h"

#include <cstdio>
#include <cstring>
#include <vector>

#include "keys/curve.h"
#include "schema/text.h"

namespace tally {
namespace {

constexpr int kMaxBatch = 256;                // messages drained per socket per Poll
constexpr size_t kZeroCopyBytes = 64 * 1024;  // frames this large are sent without a copy
constexpr uint32_t kZapRefused = 400;         // ZAP status: the broker does not know our key

std::span<const uint8_t> Bytes(const zmq::message_t& m) {
  return {static_cast<const uint8_t*>(m.data()), m.size()};
}

// Reads the rest of a message whose first frame is `first`; true when it was that one frame.
// Every Tally message is one frame: a node drops anything else whole, as the broker does.
bool OneFrame(zmq::socket_t& socket, const zmq::message_t& first) {
  bool more = first.more();
  const bool one = !more;
  while (more) {
    zmq::message_t rest;
    if (!socket.recv(rest, zmq::recv_flags::dontwait)) break;
    more = rest.more();
  }
  return one;
}

std::string Hex32(uint32_t v) {
  char out[16];
  std::snprintf(out, sizeof out, "0x%08x", v);
  return out;
}

}  // namespace

Link::Link(const LinkOptions& options, LogSink log)
    : options_(options),
      log_(std::move(log)),
      own_ctx_(options.context ? nullptr : std::make_unique<zmq::context_t>()),
      ctx_(options.context ? *options.context : *own_ctx_) {
  router_.what = "router";
  router_.endpoint = options.router_endpoint;
  router_.socket = &dealer_;
  router_.monitor = zmq::socket_t(ctx_, zmq::socket_type::pair);
  phases_.what = "phase channel";
  phases_.endpoint = options.phases_endpoint;
  phases_.socket = &sub_;
  phases_.monitor = zmq::socket_t(ctx_, zmq::socket_type::pair);
}

Link::~Link() = default;

Result<std::unique_ptr<Link>> Link::Connect(const LinkOptions& options, const SecretCertificate& me,
                                            const Certificate& broker, LogSink log) {
  std::unique_ptr<Link> link(new Link(options, std::move(log)));
  try {
    for (Watched* w : {&link->router_, &link->phases_}) {
      CurveClient(*w->socket, me, broker.curve_public,
                  {1000, static_cast<int64_t>(MaxMessageSize(kMaxVectorLength)), w->endpoint});
      Monitor(*w->socket, w->monitor,
              ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED |
                  ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                  ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    }
    link->dealer_.set(zmq::sockopt::sndhwm, 100000);
    link->sub_.set(zmq::sockopt::subscribe, "");
    link->dealer_.connect(options.router_endpoint);
    link->sub_.connect(options.phases_endpoint);
  } catch (const zmq::error_t& e) {
    return Status::Error(std::string("cannot connect to the broker: ") + e.what());
  }
  link->down_since_ = Clock::now();
  return link;
}

void Link::Log(const std::string& fields) {
  if (log_) log_("node " + options_.name + " " + fields);
}

bool Link::Send(const Message& message) {
  auto bytes = std::make_unique<std::vector<uint8_t>>(Encode(message));
  try {
    if (bytes->size() < kZeroCopyBytes)
      return dealer_.send(zmq::buffer(*bytes), zmq::send_flags::dontwait).has_value();
    // A large frame (a vector's masked input) is handed to zmq as it is, not copied; zmq's
    // I/O thread frees it once sent.
    zmq::message_t frame(
        bytes->data(), bytes->size(),
        [](void*, void* owner) { delete static_cast<std::vector<uint8_t>*>(owner); }, bytes.get());
    (void)bytes.release();
    return dealer_.send(frame, zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    Log("event=send-error error=" + Quote(e.what()));
    return false;
  }
}

Status Link::Poll(LinkHandler& handler, std::chrono::milliseconds timeout, int wake) {
  zmq::pollitem_t items[] = {{dealer_.handle(), 0, ZMQ_POLLIN, 0},
                             {sub_.handle(), 0, ZMQ_POLLIN, 0},
                             {router_.monitor.handle(), 0, ZMQ_POLLIN, 0},
                             {phases_.monitor.handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, wake, ZMQ_POLLIN, 0}};
  try {
    zmq::poll(items, wake >= 0 ? 5 : 4, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) return Status::Error(std::string("poll failed: ") + e.what());
    return Status::Ok();  // a signal: the caller decides
  }
  if (items[2].revents & ZMQ_POLLIN) TALLY_RETURN_IF_ERROR(ServeMonitor(router_, handler));
  if (items[3].revents & ZMQ_POLLIN) TALLY_RETURN_IF_ERROR(ServeMonitor(phases_, handler));
  if (items[1].revents & ZMQ_POLLIN) ServePhases(handler);
  if (items[0].revents & ZMQ_POLLIN) TALLY_RETURN_IF_ERROR(ServeRouter(handler));
  return CheckReachable();
}

std::array<int, 4> Link::Fds() const {
  return {dealer_.get(zmq::sockopt::fd), sub_.get(zmq::sockopt::fd),
          router_.monitor.get(zmq::sockopt::fd), phases_.monitor.get(zmq::sockopt::fd)};
}

bool Link::Pending() const {
  for (const zmq::socket_t* s : {&dealer_, &sub_, &router_.monitor, &phases_.monitor})
    if (s->get(zmq::sockopt::events) & ZMQ_POLLIN) return true;
  return false;
}

Status Link::ServeMonitor(Watched& w, LinkHandler& handler) {
  for (int i = 0; i < kMaxBatch; ++i) {
    std::optional<MonitorEvent> event = NextEvent(w.monitor);
    if (!event) return Status::Ok();
    const uint16_t id = event->id;
    const uint32_t value = event->value;
    const std::string where = std::string(w.what) + " at " + w.endpoint;
    std::string failure;  // a handshake that failed, to warn about once
    switch (id) {
      case ZMQ_EVENT_CONNECTED:
        if (!w.up) w.last_seen = "TCP connected, no CURVE handshake yet";
        break;
      case ZMQ_EVENT_CONNECT_RETRIED:
        if (!w.up) w.last_seen = "no TCP connection (retrying)";
        break;
      case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        Log(std::string("event=") + (w.ever_up ? "reconnected" : "connected") +
            " socket=" + (w.socket == &dealer_ ? "router" : "phases") + " endpoint=" + w.endpoint);
        w.up = w.ever_up = true;
        w.warned = false;
        w.last_seen = "connected";
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        if (value == kZapRefused)
          return Status::Error("the broker's " + where + " refused " + options_.name +
                               "'s key (ZAP status 400): " + options_.name +
                               "'s certificate is not in the broker's roster");
        failure = "the broker could not check our key (ZAP status " + std::to_string(value) + ")";
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        failure = "protocol error " + Hex32(value) +
                  " (is the endpoint a Tally broker's, and its key the one in our roster?)";
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        failure = "no detail (timed out, or the connection dropped)";
        break;
      case ZMQ_EVENT_DISCONNECTED:
        if (w.up) {
          w.up = false;
          w.last_seen = "connection lost";
          Log(std::string("event=disconnected socket=") +
              (w.socket == &dealer_ ? "router" : "phases") + " endpoint=" + w.endpoint +
              " action=reconnecting");
          handler.OnLost(w.what);
        } else {
          failure = "the connection dropped during the handshake";
        }
        break;
      default:
        break;
    }
    if (!failure.empty()) {
      w.last_seen = "handshake failed: " + failure;
      // Logged once per episode: ZeroMQ retries with its back-off, and a warning per retry
      // would bury everything else under a burst.
      if (!w.warned)
        Log("event=warning socket=" + std::string(w.socket == &dealer_ ? "router" : "phases") +
            " endpoint=" + w.endpoint + " reason=" + Quote("handshake failed: " + failure) +
            " action=retrying");
      w.warned = true;
    }
  }
  return Status::Ok();
}

Status Link::ServeRouter(LinkHandler& handler) {
  for (int i = 0; i < kMaxBatch; ++i) {
    zmq::message_t m;
    try {
      if (!dealer_.recv(m, zmq::recv_flags::dontwait)) return Status::Ok();
    } catch (const zmq::error_t&) {
      return Status::Ok();
    }
    if (!OneFrame(dealer_, m)) {
      Log("event=reject source=router reason=\"a message of more than one frame\"");
      continue;
    }
    // The broker checks a connection is still there with an empty frame: nothing to do.
    if (m.size() == 0) continue;
    auto decoded = Decode(Bytes(m), limits_);
    if (!decoded.ok()) {
      Log("event=reject source=router reason=" + Quote("malformed: " + decoded.message()));
      continue;
    }
    if (auto* notice = std::get_if<Notice>(&decoded.value())) {
      if (notice->ticket == 0)
        return Status::Error("the broker refused this connection: " + notice->reason);
      handler.OnNotice(*notice);
    } else if (auto* env = std::get_if<Envelope>(&decoded.value())) {
      handler.OnEnvelope(*env);
    } else if (auto* batch = std::get_if<Batch>(&decoded.value())) {
      handler.OnBatch(*batch);
    } else {
      Log("event=reject source=router reason=\"unexpected message type from the router\"");
    }
  }
  return Status::Ok();
}

void Link::ServePhases(LinkHandler& handler) {
  for (int i = 0; i < kMaxBatch; ++i) {
    zmq::message_t m;
    try {
      if (!sub_.recv(m, zmq::recv_flags::dontwait)) return;
      if (!OneFrame(sub_, m)) {
        Log("event=reject source=phases reason=\"a message of more than one frame\"");
        continue;
      }
    } catch (const zmq::error_t&) {
      return;
    }
    auto decoded = Decode(Bytes(m), limits_);
    if (!decoded.ok() || !std::holds_alternative<PhaseUpdate>(decoded.value())) {
      Log("event=reject source=phases reason=" +
          Quote(decoded.ok() ? "not a phase update" : decoded.message()));
      continue;
    }
    handler.OnPhase(std::get<PhaseUpdate>(decoded.value()));
  }
}

Status Link::CheckReachable() {
  const auto now = Clock::now();
  if (up()) {
    down_since_.reset();
    unreachable_warned_ = false;
    return Status::Ok();
  }
  if (!down_since_) down_since_ = now;
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - *down_since_);
  // Warn after a few seconds, or halfway to giving up when that comes sooner.
  const auto warn_after =
      std::min<std::chrono::milliseconds>(kUnreachableWarning, options_.idle_timeout / 2);
  if (waited < warn_after) return Status::Ok();
  std::string what;
  for (const Watched* w : {&router_, &phases_}) {
    if (w->up) continue;
    what += std::string(what.empty() ? "" : "; ") + "its " + w->what + " at " + w->endpoint + ": " +
            w->last_seen;
  }
  if (router_.up) what += " (is the phase channel's endpoint right?)";
  if (waited >= options_.idle_timeout)
    return Status::Error("could not reach the broker for " +
                         std::to_string(options_.idle_timeout.count()) + " ms: " + what);
  if (!unreachable_warned_)
    Log("event=unreachable waited_ms=" + std::to_string(waited.count()) + " reason=" + Quote(what) +
        " action=waiting");
  unreachable_warned_ = true;
  return Status::Ok();
}

}  // namespace tally
