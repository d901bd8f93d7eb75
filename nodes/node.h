// tally-node's library: a patient or the hospital taking part in rounds.
//
// A node holds one DEALER to the broker's router and one SUB to its phase channel, both CURVE
// clients, and runs one poll loop (Node::Run). Its role comes from its certificate.
//   patient:  on each round it is part of, checks its input fits and joins with a fresh nonce;
//             once the sum phase names every participant's nonce, adds one pairwise mask per
//             other participant to its input (Sealer::AddMasks) and seals the result to the
//             hospital under the round's view.
//   hospital: requests rounds, opens the masked inputs sealed to it, adds them (the masks
//             cancel), writes the result to its results file (fsync'd), reports it, then
//             acknowledges the round to the broker without the value.
// Threading: Create and Run on one thread; Stop() from any thread or a signal handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "schema/protocol.h"
#include "schema/status.h"

namespace tally {

struct NodeOptions {
  std::filesystem::path keys_dir;
  std::string name;
  std::string router_endpoint = "tcp://127.0.0.1:7700";
  std::string phases_endpoint = "tcp://127.0.0.1:7701";
  bool once = false;  // patient: exit after one round (0 done, 1 aborted)
  // Patient: the private input (one element for a scalar).
  std::vector<uint64_t> input;
  // Patient: refuse rounds with fewer patients. The hospital learns the sum, so with k
  // accomplices in a round of k+1 it learns the one honest input; a larger minimum bounds that.
  uint32_t min_patients = 2;
  // Hospital: what to ask for.
  uint64_t range = 0;
  uint32_t length = 1;
  std::vector<std::string> participants;  // empty: every patient in the roster
  uint32_t rounds = 1;
  std::filesystem::path results_file = "results.jsonl";
  // Give up when nothing about our round has happened for this long (broker gone, queue stuck).
  uint32_t idle_timeout_ms = 60000;
};

struct RoundResult {
  RoundId round{};
  std::vector<uint64_t> aggregate;
  std::vector<std::string> participants;
  uint64_t range = 0;
  bool in_range = true;  // every element of the aggregate lies in [0, range]
  double elapsed_ms = 0;  // from sending the request to the aggregate in hand (before writing)
};

// One JSON object, no newline: {"round": "...", "aggregate": N or [..], "participants": [..],
// "range": R, "in_range": true, "elapsed_ms": T}. A length-1 aggregate is written as a number.
std::string ResultJson(const RoundResult& result);

using LogSink = std::function<void(const std::string& line)>;
using ResultSink = std::function<void(const RoundResult& result)>;

class Node {
 public:
  // Loads keys (the role comes from the certificate) and connects.
  static Result<std::unique_ptr<Node>> Create(const NodeOptions& options, LogSink log,
                                              ResultSink on_result);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  bool is_hospital() const;
  // Serves until done: 0 every round succeeded, 1 a round failed or the broker was lost.
  // A serving patient (not once) returns only after Stop().
  int Run();
  void Stop();

  class Impl;

 private:
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally
