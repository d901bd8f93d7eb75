// tally-broker's library: the CURVE router, ZAP allowlist, phase channel and round coordinator.
//
// One thread runs everything through one poll loop (Broker::Run): the ZAP handler, the router,
// the phase channel and the coordinator's deadlines. The broker holds its own CURVE secret and
// the roster's public keys only; it links no sealing code and cannot open a payload.
//
// Threading: Create and Run on the same thread. Stop() and counters() may be called from any
// thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "broker/coordinator.h"
#include "schema/log.h"
#include "schema/protocol.h"
#include "schema/status.h"

namespace tally {

struct BrokerOptions {
  std::filesystem::path keys_dir;  // holds private/broker.key_secret and public/*.key
  std::string router_endpoint = "tcp://127.0.0.1:7700";
  std::string phases_endpoint = "tcp://127.0.0.1:7701";
  std::filesystem::path captures_dir = "captures";
  CoordinatorOptions rounds;  // deadlines, the largest vector, the request queue
};

// Totals since start. Every rejected message counts once in `rejected`.
struct BrokerCounters {
  uint64_t routed = 0;
  uint64_t rejected = 0;
  uint64_t rounds_done = 0;
  uint64_t rounds_aborted = 0;
  uint64_t auth_denied = 0;       // CURVE handshakes refused by the ZAP handler
  uint64_t subscriptions = 0;     // subscription messages on the phase channel
  uint64_t handshake_failed = 0;  // handshakes that failed before the allowlist was asked
  // Messages refused because they came over a second connection of a party whose first
  // connection is still live (one connection per party).
  uint64_t second_connections = 0;
  // Capture writes that failed (logged each): the round went on, its capture is short.
  uint64_t capture_errors = 0;
};

class Broker {
 public:
  // Loads keys, binds the ZAP handler, then the router and phase sockets.
  static Result<std::unique_ptr<Broker>> Create(const BrokerOptions& options, LogSink log);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // The endpoints actually bound (a "*" port resolved to the real one).
  const std::string& router_endpoint() const;
  const std::string& phases_endpoint() const;

  // Serves until Stop(); then aborts the active round ("broker shutting down"), finishes its
  // capture and returns.
  Status Run();
  void Stop();
  BrokerCounters counters() const;

  class Impl;

 private:
  explicit Broker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally
