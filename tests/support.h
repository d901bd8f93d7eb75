// Test support: temp folders, key sets, a log sink tests can wait on, and a test party that
// speaks the wire protocol over real CURVE sockets.
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "keys/keys.h"
#include "schema/schema.h"
#include "tools/process.h"

namespace tally::test {

using std::chrono::milliseconds;
inline constexpr milliseconds kWait{15000};  // upper bound on any single wait in a test

// A fresh folder under the test temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Keys for a hospital named "hospital", the broker, and the given patients, under dir/keys.
std::filesystem::path MakeKeys(const std::filesystem::path& dir,
                               const std::vector<std::string>& patients);

// Collects log lines; tests wait for a line containing a substring instead of sleeping.
class LogWatcher {
 public:
  std::function<void(const std::string&)> Sink();
  // True once a line containing `needle` has been logged (waits up to `timeout`).
  bool WaitFor(const std::string& needle, milliseconds timeout = kWait);
  // True once `count` lines containing `needle` have been logged.
  bool WaitForCount(const std::string& needle, size_t count, milliseconds timeout = kWait);
  size_t Count(const std::string& needle);
  std::vector<std::string> Lines();

 private:
  size_t CountLocked(const std::string& needle) const;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

// A starting tally-broker's endpoints, from its readiness lines ("router EP", "phases EP").
struct BrokerEndpoints {
  std::string router;
  std::string phases;
};
// nullopt when the broker exits or prints something else first.
std::optional<BrokerEndpoints> ReadBrokerEndpoints(Child& broker, milliseconds timeout = kWait);

// The scalar after "aggregate": in a hospital's JSON result line, or nullopt.
std::optional<uint64_t> ScalarAggregate(const std::string& json);

// A party with a DEALER to the router and a SUB to the phase channel.
class TestParty {
 public:
  TestParty(const std::filesystem::path& keys, const std::string& name, const std::string& router,
            const std::string& phases, bool subscribe = true);
  // A party with the given CURVE keys (e.g. not in the roster).
  TestParty(const PublicKey& broker_key, const std::string& router, const uint8_t* public_key,
            const uint8_t* secret_key);

  void Send(const Message& message);
  void SendRaw(const std::vector<uint8_t>& bytes);
  std::optional<Message> Receive(milliseconds timeout = kWait);
  // The next phase update for `round` (any round if nullopt) in `phase`.
  std::optional<PhaseUpdate> WaitPhase(Phase phase, std::optional<RoundId> round = std::nullopt,
                                       milliseconds timeout = kWait);
  // Waits for a transport event on the DEALER (e.g. ZMQ_EVENT_HANDSHAKE_FAILED_AUTH).
  bool WaitEvent(uint16_t event, milliseconds timeout = kWait);
  zmq::socket_t& dealer() { return dealer_; }

 private:
  void Monitor();
  zmq::context_t ctx_;
  zmq::socket_t dealer_{ctx_, zmq::socket_type::dealer};
  zmq::socket_t sub_{ctx_, zmq::socket_type::sub};
  zmq::socket_t monitor_{ctx_, zmq::socket_type::pair};
};

}  // namespace tally::test
