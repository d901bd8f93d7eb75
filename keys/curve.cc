#include "keys/curve.h"

#include <atomic>
#include <cstring>

namespace tally {
namespace {

void Common(zmq::socket_t& s, const CurveOptions& o) {
  s.set(zmq::sockopt::linger, o.linger_ms);
  s.set(zmq::sockopt::handshake_ivl, kHandshakeMs);
  // A peer that vanished without closing its connection (host down, network cut) is noticed.
  s.set(zmq::sockopt::heartbeat_ivl, o.heartbeat_ms);
  s.set(zmq::sockopt::heartbeat_timeout, kHeartbeatTimeoutMs);
  if (o.max_message_bytes >= 0) s.set(zmq::sockopt::maxmsgsize, o.max_message_bytes);
  if (o.endpoint.find('[') != std::string::npos) s.set(zmq::sockopt::ipv6, true);
}

}  // namespace

void CurveServer(zmq::socket_t& s, const SecretKey& secret, const std::string& zap_domain,
                 const CurveOptions& o) {
  Common(s, o);
  if (!zap_domain.empty()) s.set(zmq::sockopt::zap_domain, zap_domain);
  s.set(zmq::sockopt::curve_server, true);
  s.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(secret.data(), secret.size()));
}

void CurveClient(zmq::socket_t& s, const SecretCertificate& me, const PublicKey& server,
                 const CurveOptions& o) {
  Common(s, o);
  s.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(server.data(), server.size()));
  s.set(zmq::sockopt::curve_publickey, zmq::const_buffer(me.pub.curve_public.data(), 32));
  s.set(zmq::sockopt::curve_secretkey,
        zmq::const_buffer(me.curve_secret.data(), me.curve_secret.size()));
}

void Monitor(zmq::socket_t& socket, zmq::socket_t& monitor, int events) {
  // Monitor endpoints must be unique in the process (tests and load generators run many).
  static std::atomic<uint64_t> next{0};
  const std::string endpoint = "inproc://tally-monitor-" + std::to_string(next++);
  if (zmq_socket_monitor(socket.handle(), endpoint.c_str(), events) != 0) throw zmq::error_t();
  monitor.connect(endpoint);
}

std::optional<MonitorEvent> NextEvent(zmq::socket_t& monitor) {
  for (;;) {
    zmq::message_t head, address;
    try {
      if (!monitor.recv(head, zmq::recv_flags::dontwait)) return std::nullopt;
      if (head.more()) (void)monitor.recv(address);
    } catch (const zmq::error_t&) {
      return std::nullopt;
    }
    if (head.size() < 6) continue;  // not an event frame: skip it
    MonitorEvent e;
    std::memcpy(&e.id, head.data(), sizeof e.id);
    std::memcpy(&e.value, static_cast<const uint8_t*>(head.data()) + 2, sizeof e.value);
    e.address = address.to_string();
    return e;
  }
}

}  // namespace tally
