// CURVE sockets as Tally sets them up, in one place: a broker's server sockets, a party's client
// sockets, and the socket-monitor events both watch. Every socket gets its linger, handshake
// interval, heartbeats and message-size limit here (schema/PROTOCOL.md, "Connections").
// Thread-compatible, like the sockets themselves.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "keys/keys.h"

namespace tally {

inline constexpr int kHandshakeMs = 20000;  // a busy broker is slow, not gone
inline constexpr int kHeartbeatMs = 5000;   // a heartbeat every 5 s
// A server's heartbeat interval for `connections` connections: kHeartbeatMs up to 1,000, 5 ms
// more per connection above, at most an hour. libzmq cancels a timer by a linear scan of its I/O
// thread's timers (poller_base_t::cancel_timer: "Complexity of this operation is O(n)"), and each
// heartbeat a server sends arms one that the peer's next message cancels: at a fixed interval its
// heartbeats cost connections^2 per interval. At 20,000 connections and 5 s that is the I/O
// thread's whole core: handshakes time out, their retries add load, and admission stalls
// (BENCHMARKS.md, "Scale"). Scaled, the cost grows linearly; a peer gone without closing is noticed
// later (interval + kHeartbeatTimeoutMs), which phase deadlines bound anyway.
inline int ServerHeartbeatMs(size_t connections) {
  return static_cast<int>(
      std::max<size_t>(kHeartbeatMs, std::min<size_t>(5 * connections, 3600000)));
}
// A peer silent this long is dropped: long enough for a broker whose I/O thread is starved on a
// busy host (1000 patients on 2 cores) not to be taken for gone; a closed connection is seen at
// once anyway.
inline constexpr int kHeartbeatTimeoutMs = 60000;

struct CurveOptions {
  int linger_ms = 1000;
  int64_t max_message_bytes = -1;   // ZMQ_MAXMSGSIZE; -1: no limit
  std::string endpoint;             // the endpoint it will bind or connect (IPv6 in brackets)
  int heartbeat_ms = kHeartbeatMs;  // ZMQ_HEARTBEAT_IVL; a server's: ServerHeartbeatMs
};

// A CURVE server with the broker's secret key, asking the ZAP handler of domain `zap_domain`
// ("": no domain, for test servers without a handler).
void CurveServer(zmq::socket_t& socket, const SecretKey& secret, const std::string& zap_domain,
                 const CurveOptions& options);
// A CURVE client with `me`'s keypair, pinning the server's public key.
void CurveClient(zmq::socket_t& socket, const SecretCertificate& me, const PublicKey& server,
                 const CurveOptions& options);

// One event from a socket monitor (zmq_socket_monitor).
struct MonitorEvent {
  uint16_t id = 0;     // ZMQ_EVENT_*
  uint32_t value = 0;  // e.g. the ZAP status of HANDSHAKE_FAILED_AUTH, a protocol error code
  std::string address;
};
// Starts monitoring `socket` for `events` on a fresh inproc endpoint, and connects `monitor` (a
// PAIR in the same context) to it.
void Monitor(zmq::socket_t& socket, zmq::socket_t& monitor, int events);
// The next event, without waiting; nullopt when there is none.
std::optional<MonitorEvent> NextEvent(zmq::socket_t& monitor);

}  // namespace tally
