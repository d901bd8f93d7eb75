// Internal to tally_broker: the ZAP handler (rfc.zeromq.org/spec/27). It admits a CURVE client
// only if its public key is a patient's or the hospital's in the roster, and names it: the ZAP
// User-Id the router reads as every message's sender. It is bound before any CURVE socket, so
// the broker fails closed; it answers 400 to anything else and never asserts on what a client
// sent. Thread-compatible: Serve() from the thread that owns the socket.
#pragma once

#include <atomic>
#include <cstdint>
#include <zmq.hpp>

#include "keys/keys.h"
#include "schema/log.h"

namespace tally {

class ZapHandler {
 public:
  // `roster` must outlive the handler; refusals are logged and counted in `denied`.
  ZapHandler(zmq::context_t& ctx, const Roster& roster, LogSink log, std::atomic<uint64_t>& denied);
  // Binds inproc://zeromq.zap.01. Throws zmq::error_t.
  void Bind();
  zmq::socket_t& socket() { return socket_; }
  // Answers the requests waiting, without blocking.
  void Serve();

 private:
  zmq::socket_t socket_;
  const Roster& roster_;
  LogSink log_;
  std::atomic<uint64_t>& denied_;
};

}  // namespace tally
