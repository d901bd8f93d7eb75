// Internal to tally_nodes: a node's link to the broker.
//
// Two CURVE client sockets with the party's own keys and the broker's pinned key: a DEALER to
// the broker's router and a SUB (subscribed to everything) to its phase channel, each watched
// by a socket monitor. What the link decides on its own:
//   - a handshake the broker refuses (ZAP status 400: our key is not in its roster) is final;
//   - any other handshake failure (no detail, a protocol error, a timeout, a dropped TCP
//     connection: a forwarder, a broker restarting, a busy broker) is retried with ZeroMQ's
//     reconnect back-off and logged once as a warning;
//   - while either socket has no working connection it warns after kUnreachableWarning (or
//     half the idle timeout, if sooner), naming the endpoint not reached and what was seen of
//     it, and gives up after the idle timeout;
//   - a node the broker refuses with a connection notice (ticket 0: another process holds the
//     party's keys) stops.
// Everything else is the role's (patient.h, hospital.h): the link decodes what arrives and
// hands it over.
// Thread-compatible: one thread drives a Link.
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "keys/keys.h"
#include "schema/log.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

using Clock = std::chrono::steady_clock;

// How long a link may be without a working connection before it warns.
inline constexpr auto kUnreachableWarning = std::chrono::seconds(5);

struct LinkOptions {
  std::string name;  // for log lines
  std::string router_endpoint;
  std::string phases_endpoint;
  std::chrono::milliseconds idle_timeout{60000};  // longest wait without a connection
  // A context shared by many links of one process (a load generator hosting thousands of
  // patients: a context each would be two threads each); null: the link's own. REQUIRES: it
  // outlives the link.
  zmq::context_t* context = nullptr;
};

// What the link delivers to a role.
class LinkHandler {
 public:
  virtual ~LinkHandler() = default;
  virtual void OnPhase(const PhaseUpdate& update) = 0;
  virtual void OnEnvelope(const Envelope& envelope) = 0;
  virtual void OnBatch(const Batch& batch) = 0;
  // A notice about a request (ticket != 0). Connection notices are the link's own.
  virtual void OnNotice(const Notice& notice) = 0;
  // A socket that had a working connection lost it (the broker stopped or the network broke).
  virtual void OnLost(std::string_view socket) = 0;
};

class Link {
 public:
  // REQUIRES: `me` is a patient's or hospital's secret certificate; `broker` the broker's
  // certificate from the same roster. Connects (asynchronously); Poll() makes progress.
  static Result<std::unique_ptr<Link>> Connect(const LinkOptions& options,
                                               const SecretCertificate& me,
                                               const Certificate& broker, LogSink log);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Queues one message for the broker. False (and logged) when it cannot be queued.
  bool Send(const Message& message);

  // Waits up to `timeout` for traffic, or until `wake` (a descriptor, -1 for none) is readable,
  // and hands what arrives to `handler`. An error is final: the broker refused our key, or this
  // connection, or the broker stayed unreachable for the idle timeout.
  Status Poll(LinkHandler& handler, std::chrono::milliseconds timeout, int wake = -1);

  // Both sockets have completed a CURVE handshake and not lost it since.
  bool up() const { return router_.up && phases_.up; }

  // For a process driving many links from one event loop (epoll): the descriptors that signal
  // when the link may have work (ZMQ_FD of its two sockets and two monitors; edge-triggered).
  std::array<int, 4> Fds() const;
  // Whether a socket has a message waiting (ZMQ_EVENTS). After Poll(handler, 0) an
  // edge-triggered loop polls again while this holds: ZeroMQ signals a descriptor once for
  // many messages, and Poll drains a bounded batch.
  bool Pending() const;

 private:
  struct Watched {
    const char* what;  // "router", "phase channel"
    std::string endpoint;
    zmq::socket_t* socket = nullptr;
    zmq::socket_t monitor;
    bool up = false;
    bool ever_up = false;
    bool warned = false;  // a failed handshake was reported since the last success
    std::string last_seen = "no connection yet";  // for warnings: what the monitor saw last
  };
  Link(const LinkOptions& options, LogSink log);
  Status ServeMonitor(Watched& w, LinkHandler& handler);
  Status ServeRouter(LinkHandler& handler);
  void ServePhases(LinkHandler& handler);
  Status CheckReachable();
  void Log(const std::string& fields);

  LinkOptions options_;
  LogSink log_;
  Limits limits_;
  std::unique_ptr<zmq::context_t> own_ctx_;  // when no shared context was given
  zmq::context_t& ctx_;
  zmq::socket_t dealer_{ctx_, zmq::socket_type::dealer};
  zmq::socket_t sub_{ctx_, zmq::socket_type::sub};
  Watched router_, phases_;
  std::optional<Clock::time_point> down_since_;  // when the link last stopped being up()
  bool unreachable_warned_ = false;
};

}  // namespace tally
