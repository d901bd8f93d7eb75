// tally-node's library: a patient or the hospital taking part in rounds.
//
// A node holds a link to the broker (nodes/link.h: a DEALER to its router and a SUB to its
// phase channel, both CURVE clients) and runs one poll loop (Node::Run). Its role comes from
// its certificate.
//   patient:  on each round it is part of, checks the round against its own roster and its
//             input, and joins with fresh round keys; shares its mask secrets with the other
//             patients, masks its input and seals it to the hospital, and sends the hospital
//             the shares it needs to unmask the survivors (patient.h).
//   hospital: requests rounds, adds the masked inputs sealed to it, removes what is left of
//             the masks with the secrets rebuilt from the unmasks, writes the result to its
//             results file (fsync'd), then acknowledges the round to the broker without the
//             value; the round is its once the broker publishes done, and only then is the
//             result reported (hospital.h).
// Threading: Create and Run on one thread; Stop() from any thread or a signal handler.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "keys/keys.h"
#include "nodes/aggregate.h"
#include "schema/log.h"
#include "schema/protocol.h"
#include "schema/results.h"
#include "schema/round_graph.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

struct NodeOptions {
  std::filesystem::path keys_dir;
  std::string name;
  std::string router_endpoint = "tcp://127.0.0.1:7700";
  std::string phases_endpoint = "tcp://127.0.0.1:7701";
  bool once = false;  // patient: stop after one round (ok when done, an error when aborted)
  // Patient: the private input (cells of decimal text; one for a scalar), encoded for each
  // round it takes part in (EncodeInput, nodes/aggregate.h).
  PatientInput input;
  // Patient: refuse rounds with fewer patients. The hospital learns the sum, so with k
  // accomplices in a round of k+1 it learns the one honest input; a larger minimum bounds that.
  uint32_t min_patients = 2;
  // Patient: the most other patients that may collude with the hospital and the broker; refuse
  // rounds whose patients and threshold hide an input from fewer (CollusionTolerance).
  uint32_t max_corrupt = 0;
  // Patient: when a round reaches this phase, before its step in it, call `on_vanish` and stop
  // acting, to be killed there (tools/launch --drop kills it with SIGKILL): a dropout at a known
  // point, for trying dropouts and for tests.
  std::optional<Phase> vanish_at;
  std::function<void(Phase)> on_vanish;
  // Hospital: the threshold T to ask for; 0: the safe minimum for the round's patients.
  uint32_t threshold = 0;
  // Neighbourhood rounds (schema/PROTOCOL.md, "Neighbourhoods"). Hospital: true asks for one
  // when the round has more than kNeighbourhoodsAbove patients and a degree below N - 1 meets the
  // bounds for the declared rates; false never. Patient: true takes them, false refuses them (a
  // neighbourhood round trusts its hospital to draw the graph at random and sign one survivor
  // set). Off by default for both.
  bool graph = false;
  // Hospital: the fractions of corrupt and dropped patients a neighbourhood round assumes, in
  // parts per million.
  uint32_t corrupt_ppm = kDefaultCorruptPpm;
  uint32_t dropout_ppm = kDefaultDropoutPpm;
  // Hospital: what to ask for: integers in [0, range], or named columns (then range 0).
  uint64_t range = 0;
  uint32_t length = 1;
  std::vector<Column> columns;
  Weight weight;
  std::vector<std::string> participants;  // empty: every patient in this node's roster
  uint32_t rounds = 1;
  uint32_t deadline_ms = 0;  // each phase's deadline to ask for; 0: the broker's
  std::filesystem::path results_file = "results.jsonl";
  // Give up when the broker stays unreachable this long, or nothing about our round has
  // happened for this long (broker gone, queue stuck).
  uint32_t idle_timeout_ms = 60000;
};

// What many nodes of one process share (tally-bench --load hosts thousands of patients, each
// with its own keys and connections): the roster, loaded once, and one ZeroMQ context with a
// few I/O threads. REQUIRES: both outlive the nodes.
struct NodeHost {
  zmq::context_t* context = nullptr;
  std::shared_ptr<const Roster> roster;
};

using ResultSink = std::function<void(const RoundResult& result)>;
// Called once, when both connections to the broker first complete their CURVE handshake.
using ReadySink = std::function<void()>;

class Node {
 public:
  // Loads keys (the role comes from the certificate), checks the options against them (a
  // hospital's participants must be patients in its roster; its results file must be
  // writable) and connects.
  // With a `host`, the roster is the host's (not loaded from options.keys_dir/public) and the
  // sockets are in its context.
  static Result<std::unique_ptr<Node>> Create(const NodeOptions& options, LogSink log,
                                              ResultSink on_result, ReadySink on_ready = nullptr,
                                              const NodeHost* host = nullptr);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  bool is_hospital() const;
  // Serves until done. Ok: every round the hospital asked for is done, a --once patient's round
  // is done, or Stop() was called. An error says why the node gives up: a round aborted (the
  // hospital, a --once patient), the broker refused our key or this connection, the broker
  // stayed unreachable, or nothing happened for the idle timeout.
  Status Run();
  // Run returns once the message it is serving, if any, is done. Async-signal-safe.
  void Stop();

  // For a process driving many nodes from its own event loop instead of Run (a patient only):
  // one step without waiting: serves what has arrived, then the role's deadlines. nullopt: the
  // node goes on; else it is done, with the outcome Run would return.
  std::optional<Status> Serve();
  // The descriptors to watch, edge-triggered (Link::Fds), and whether a message is waiting
  // after Serve (then Serve again: a descriptor signals once for many messages).
  std::array<int, 4> Fds() const;
  bool Pending() const;

  class Impl;

 private:
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally
