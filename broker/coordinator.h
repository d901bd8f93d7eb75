// The broker's round coordinator: the state machine of schema/PROTOCOL.md ("Order of a round",
// "Deadlines and aborts", "What the broker checks and logs"). It takes one message at a time
// from an authenticated sender, a party's closed connection, or a tick, each with the time
// `now`, and returns what the broker must do, in order: publish a phase, route a frame, send a
// batch, answer a sender, reject a message, open a capture. A phase ends when every member of
// its set that is still connected has answered, or at its deadline; the round goes on with
// whoever answered if they are at least the threshold, and aborts as soon as they cannot be. It
// holds no socket, no file and no clock (round ids and the wall clock come from an injected
// CoordinatorEnv), so tests drive its deadlines with made-up times and tally-broker (broker.cc) is
// the I/O around it. Its rules for envelopes and phases are in rules.h, which tally-replay --check
// holds a capture to. Thread-compatible.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "keys/keys.h"
#include "schema/capture.h"
#include "schema/round_graph.h"
#include "schema/schema.h"

namespace tally {

struct CoordinatorOptions {
  // Each phase's deadline, and the most a hospital may ask for (Request.deadline_ms).
  uint32_t deadline_ms = 10000;
  uint32_t max_length = kMaxVectorLength;  // the largest vector a round may ask for
  size_t max_queue = 16;                   // round requests waiting behind the active one
};

// What the coordinator reads from outside: fresh round ids and the wall clock (for a capture's
// header). Real() draws from libsodium and the system clock.
struct CoordinatorEnv {
  std::function<RoundId()> new_round_id;
  std::function<int64_t()> unix_ms;
  static CoordinatorEnv Real();
};

// What the broker must do. Actions come in the order they must happen.
namespace act {
// Refuse the message: log the reason, count it, record it in the active round's capture.
struct Reject {
  std::string reason;
};
// Answer the message's sender with a notice.
struct Notify {
  uint64_t ticket = 0;
  std::string reason;
};
// Forward the message's frame, an envelope of `kind`, to party `to` (recording it in the capture
// once it is out), then tell the coordinator: Routed(route), or Undeliverable(to) if `to` is not
// connected.
struct Route {
  EnvelopeKind kind = EnvelopeKind::kPartial;
  std::string from;
  std::string to;
};
// Send `batch` to party `to` (recording it in the capture if `capture`: the hospital's keys, from
// which its view is computed); if `to` is not connected, tell the coordinator Undeliverable(to).
struct Send {
  std::string to;
  Batch batch;
  bool capture = false;
};
// A round opened (its open phase already published): create its capture with `header` and
// record `open` in it. Times in the capture count from `opened`.
struct OpenCapture {
  CaptureHeader header;
  PhaseUpdate open;
  std::chrono::steady_clock::time_point opened;
};
// Record `update` in the active round's capture, finish the capture (trailer, fsync) if the
// round ended, then publish `update`.
struct Publish {
  PhaseUpdate update;
};
// A line for the log (a request queued, a round opened), without the "broker " prefix.
struct Log {
  std::string fields;
};
}  // namespace act

using Action = std::variant<act::Reject, act::Notify, act::Route, act::Send, act::OpenCapture,
                            act::Publish, act::Log>;
using Actions = std::vector<Action>;

class Coordinator {
 public:
  using Clock = std::chrono::steady_clock;

  // `roster`: whose requests are a hospital's, and the patients a round may name; it must
  // outlive the coordinator.
  Coordinator(CoordinatorOptions options, const Roster& roster, CoordinatorEnv env);

  // A decoded message from `sender`, its authenticated name (a party of the roster).
  Actions OnMessage(const std::string& sender, const Message& message, Clock::time_point now);
  // The frame of a Route went out, and is in the capture: the phase may be complete.
  Actions Routed(const act::Route& route, Clock::time_point now);
  // A Route or Send could not be delivered: `to` is not connected. A participant is then gone
  // from the round; the round's hospital gone aborts it.
  Actions Undeliverable(const std::string& to, Clock::time_point now);
  // The connection of `party` closed (the broker's socket monitor saw it): a participant no
  // longer waited for, the hospital gone.
  Actions Disconnected(const std::string& party, Clock::time_point now);
  // The capture of the round just opened could not be created.
  Actions CaptureFailed(Clock::time_point now);
  // Call after every wait: a round whose phase deadline has passed aborts, naming what is
  // missing.
  Actions Tick(Clock::time_point now);
  // When Tick next has something to do; nullopt while no round runs.
  std::optional<Clock::time_point> NextDeadline() const;
  // Ends the active round with `reason` (in a replay: a reason the broker gave); the next
  // queued request opens. Nothing happens when no round runs.
  Actions Abort(const std::string& reason, Clock::time_point now);
  // The broker stops: queued requests are dropped and the active round aborts ("broker
  // shutting down").
  Actions Shutdown(Clock::time_point now);

  // The active round's last published update, or nullptr between rounds.
  const PhaseUpdate* current() const { return round_ ? &round_->update : nullptr; }
  uint64_t rounds_done() const { return rounds_done_; }
  uint64_t rounds_aborted() const { return rounds_aborted_; }

 private:
  struct Round {
    PhaseUpdate update;  // what was last published: phase, params, sets, deadline
    Clock::time_point phase_deadline;
    size_t n = 0;                         // participants
    std::optional<RoundGraph> graph;      // who masks with and shares to whom
    std::map<std::string, size_t> index;  // participant -> its position
    std::vector<Join> joins;              // per participant, once it joined
    // Per participant, the shares batch it sent: its sealed share for each peer in U1, by index.
    std::vector<std::vector<BatchItem>> shares_from;
    std::vector<Signature> confirmations;  // per participant, its signature on its view and U3
    std::optional<Signature> survivors;    // a neighbourhood round's: the hospital's on U2, U3
    // Per participant, what the broker accepted from it in each phase, and whether its
    // connection closed during the round.
    Members joined, shared, partials, confirmed, unmasks, gone;
    std::optional<size_t> Index(const std::string& name) const;
  };
  struct Pending {
    std::string hospital;
    Request request;
    RoundGraph graph;  // built from its parameters when it was checked
  };

  void OnRequest(const std::string& sender, Request request, Clock::time_point now, Actions& out);
  void OnJoin(const std::string& sender, const Join& join, Clock::time_point now, Actions& out);
  void OnRefuse(const std::string& sender, const Refuse& refuse, Clock::time_point now,
                Actions& out);
  void OnEnvelope(const std::string& sender, const Envelope& env, Actions& out);
  void OnBatch(const std::string& sender, const Batch& batch, Clock::time_point now, Actions& out);
  void OnAck(const std::string& sender, const Ack& ack, Clock::time_point now, Actions& out);
  // The hospital's signature on a neighbourhood round's survivors, in its confirm phase.
  void OnSurvivors(const std::string& sender, const Batch& batch, Clock::time_point now,
                   Actions& out);
  // The message names the active round and comes from a party of it; else rejects it.
  bool InRound(const std::string& sender, const RoundId& round, std::string_view what,
               Actions& out) const;
  void Open(Pending pending, Clock::time_point now, Actions& out);
  // After anything that may end the phase: moves on when nobody it waits for is left (or at
  // the deadline) with at least T answers, aborts as soon as T answers cannot be had.
  void Settle(bool deadline, Clock::time_point now, Actions& out);
  // Settle for a neighbourhood round's confirm phase: it waits for the hospital's signature, and
  // aborts as soon as fewer than T survivors are left to unmask.
  void SettleSurvivors(bool deadline, Clock::time_point now, Actions& out);
  // Fixes the set the current phase collected and publishes the next phase with its batches.
  void Next(Clock::time_point now, Actions& out);
  void SendKeys(Actions& out) const;
  void SendShares(Actions& out) const;
  void SendConfirmations(Actions& out) const;
  void SendSurvivors(Actions& out) const;
  void Advance(Phase phase, const std::string& reason, Clock::time_point now, Actions& out);
  // Ends the round (done or abort) and opens the next queued request.
  void Finish(Phase phase, const std::string& reason, Clock::time_point now, Actions& out);

  CoordinatorOptions options_;
  const Roster& roster_;
  CoordinatorEnv env_;
  std::optional<Round> round_;
  std::deque<Pending> queue_;
  uint64_t seq_ = 0;
  uint64_t rounds_done_ = 0, rounds_aborted_ = 0;
};

}  // namespace tally
