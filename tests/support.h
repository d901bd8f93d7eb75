// Test support: temp folders, key sets, a log sink tests can wait on, a test party that speaks
// the wire protocol over real CURVE sockets, a fake broker to drive a real patient against, and
// a test patient that takes part in rounds as tally-node does (nodes/patient_round.h), one
// phase at a time.
//
// The patient helpers are defined here, inline, so that a suite that does not use them need
// not link tally_nodes.
#pragma once

#include <gtest/gtest.h>
#include <sodium.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "keys/curve.h"
#include "keys/keys.h"
#include "nodes/patient_round.h"
#include "nodes/seal.h"
#include "schema/log.h"
#include "schema/schema.h"
#include "tools/process.h"

namespace tally::test {

using std::chrono::milliseconds;
inline constexpr milliseconds kWait{15000};  // upper bound on any single wait in a test

// Built with AddressSanitizer (TALLY_SANITIZE): each process starts several times slower (its
// shadow memory mapped), and launching hundreds took longer than those tests' bounds on two
// cores. Such launches run in the normal build; the sanitized one covers the same code through
// the smaller launches and the in-process rounds.
#ifdef TALLY_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

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
  LogSink Sink();
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

// The aggregate of a hospital's one-element JSON result line (ParseResultsLine), or nullopt.
std::optional<uint64_t> ScalarAggregate(const std::string& json);

// A certificate holding only a CURVE keypair: `public_key` presented with `secret_key` (which
// need not match it, to forge a vouch).
SecretCertificate CurveKeys(const PublicKey& public_key, const uint8_t* secret_key);
// A fresh CURVE keypair no roster holds.
SecretCertificate StrangerKeys();

// A party with a DEALER to the router and a SUB to the phase channel.
class TestParty {
 public:
  TestParty(const std::filesystem::path& keys, const std::string& name, const std::string& router,
            const std::string& phases, bool subscribe = true);
  // A party with the given CURVE keys (e.g. not in the roster: see CurveKeys).
  TestParty(const PublicKey& broker_key, const std::string& router, const SecretCertificate& me);

  // Sends, waiting at most kWait for room: a send that cannot be made is a test failure.
  void Send(const Message& message);
  void SendRaw(const std::vector<uint8_t>& bytes);
  // Sends, waiting at most `wait` for room; false when it could not. For a connection the
  // broker refuses: libzmq drops a client's pipe when its handshake is refused, and a send
  // that waits for room without a bound waits for ever.
  bool TrySend(const Message& message, milliseconds wait = milliseconds(0));
  // The next message from the router; empty frames (the broker's check that a connection is
  // still there) are skipped and counted in probes().
  std::optional<Message> Receive(milliseconds timeout = kWait);
  size_t probes() const { return probes_; }
  // The next phase update for `round` (any round if nullopt) in `phase`.
  std::optional<PhaseUpdate> WaitPhase(Phase phase, std::optional<RoundId> round = std::nullopt,
                                       milliseconds timeout = kWait);
  // The next phase update for `round` in any of `phases` (e.g. whichever of sum or abort
  // comes first).
  std::optional<PhaseUpdate> WaitPhaseIn(const std::vector<Phase>& phases, const RoundId& round,
                                         milliseconds timeout = kWait);
  // Waits for a transport event on the DEALER (e.g. ZMQ_EVENT_HANDSHAKE_FAILED_AUTH).
  bool WaitEvent(uint16_t event, milliseconds timeout = kWait);
  zmq::socket_t& dealer() { return dealer_; }

 private:
  std::optional<PhaseUpdate> WaitUpdate(const std::function<bool(const PhaseUpdate&)>& wanted,
                                        milliseconds timeout);
  bool SendWithin(const std::vector<uint8_t>& bytes, milliseconds wait);
  zmq::context_t ctx_;
  zmq::socket_t dealer_{ctx_, zmq::socket_type::dealer};
  zmq::socket_t sub_{ctx_, zmq::socket_type::sub};
  zmq::socket_t monitor_{ctx_, zmq::socket_type::pair};
  size_t probes_ = 0;
};

// A stand-in broker for tests that drive a real patient (tally::Node) without tally-broker:
// the test scripts what the broker publishes and reads what the patient sends.

// One message the fake broker's ROUTER received: the sender's routing id, the frame as sent
// and its decoding.
struct Received {
  std::vector<uint8_t> identity;
  std::vector<uint8_t> frame;
  Message message;
};

// The broker's two sockets, bound as CURVE servers with the broker's secret key from the key
// folder. No ZAP handler: any CURVE client that knows the broker's public key gets in.
class FakeBroker {
 public:
  explicit FakeBroker(const std::filesystem::path& keys);

  const std::string& router_endpoint() const { return router_endpoint_; }
  const std::string& phases_endpoint() const { return phases_endpoint_; }

  // True once a subscription to the empty prefix has reached the XPUB (after the subscriber's
  // CURVE handshake): from then on every update published reaches it.
  bool WaitSubscriber(milliseconds timeout = kWait);

  void Publish(const PhaseUpdate& update);
  // `update` as the second frame of a two-frame message, after `first`.
  void PublishTwoFrames(const std::vector<uint8_t>& first, const PhaseUpdate& update);

  // Sends `message` over the ROUTER to the peer with routing id `identity`.
  void SendTo(const std::vector<uint8_t>& identity, const Message& message);

  // The next message on the ROUTER within `timeout`: exactly one frame after the routing id,
  // which must decode.
  std::optional<Received> Receive(milliseconds timeout = kWait);

  // Polls the ROUTER until `done` holds or `timeout` passes; returns whatever arrived
  // meanwhile (nullopt: nothing did). Each poll ends early when a message comes in.
  std::optional<Received> ReceiveUntil(const std::function<bool()>& done,
                                       milliseconds timeout = kWait);

 private:
  zmq::context_t ctx_;
  zmq::socket_t router_{ctx_, zmq::socket_type::router};
  zmq::socket_t xpub_{ctx_, zmq::socket_type::xpub};
  std::string router_endpoint_;
  std::string phases_endpoint_;
};

// A party's Sealer (a patient's or the hospital's), from the key folder.
inline Sealer MakeSealer(const std::filesystem::path& keys, const std::string& name) {
  auto roster = LoadRoster(keys);
  EXPECT_TRUE(roster.ok()) << roster.message();
  auto secret = LoadSecret(keys, name);
  EXPECT_TRUE(secret.ok()) << secret.message();
  auto sealer = Sealer::Create(secret.value(), roster.value());
  EXPECT_TRUE(sealer.ok()) << sealer.message();
  return std::move(sealer.value());
}

// A patient played by a test over its own TestParty: each step of a round is the one tally-node
// does (PatientRound, nodes/patient_round.h), one call per phase, so a test can stop, deviate
// or vanish between steps, or send something else instead.
class TestPatient {
 public:
  TestPatient(const std::filesystem::path& keys, const std::string& name, const std::string& router,
              const std::string& phases, bool subscribe = true)
      : party_(keys, name, router, phases, subscribe), sealer_(MakeSealer(keys, name)) {}

  TestParty& party() { return party_; }
  const Sealer& sealer() const { return sealer_; }
  const std::string& name() const { return sealer_.name(); }
  // The round joined last. REQUIRES: Join was called.
  PatientRound& round() { return *round_; }

  // Joins the round `open` announces with `input` (as EncodeInput gives it): fresh round keys,
  // tagged; sends the join and returns it.
  tally::Join Join(const PhaseUpdate& open, std::vector<uint64_t> input = {0}) {
    auto joined = PatientRound::Join(sealer_, open, std::move(input));
    EXPECT_TRUE(joined.ok()) << name() << ": " << joined.message();
    round_.emplace(std::move(joined.value()));
    party_.Send(round_->join());
    return round_->join();
  }

  // The next batch of `kind` from the router (batches of other kinds that come first are kept
  // for later), or nullopt after `timeout`.
  std::optional<Batch> WaitBatch(BatchKind kind, milliseconds timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      for (auto it = kept_.begin(); it != kept_.end(); ++it) {
        if (it->kind != kind) continue;
        Batch b = std::move(*it);
        kept_.erase(it);
        return b;
      }
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      std::optional<Message> m = party_.Receive(left);
      if (!m) return std::nullopt;
      if (auto* b = std::get_if<Batch>(&*m)) kept_.push_back(std::move(*b));
    }
  }

  // The share step: waits for the keys batch, sends the shares and returns them.
  Batch Share(const PhaseUpdate& share) {
    auto keys = WaitBatch(BatchKind::kKeys);
    EXPECT_TRUE(keys) << name() << ": no keys batch";
    auto shares = round_->Shares(share, keys ? *keys : Batch{});
    EXPECT_TRUE(shares.ok()) << name() << ": " << shares.message();
    if (shares.ok()) party_.Send(*shares);
    return shares.ok() ? *shares : Batch{};
  }
  // The mask step: waits for the shares batch, sends the masked input and returns it.
  Envelope Mask(const PhaseUpdate& mask) {
    auto shares = WaitBatch(BatchKind::kShares);
    EXPECT_TRUE(shares) << name() << ": no shares batch";
    auto masked = round_->Masked(mask, shares ? *shares : Batch{});
    EXPECT_TRUE(masked.ok()) << name() << ": " << masked.message();
    if (masked.ok()) party_.Send(*masked);
    return masked.ok() ? *masked : Envelope{};
  }
  // The confirm step.
  Batch Confirm(const PhaseUpdate& confirm) {
    Batch confirmation = round_->Confirmation(confirm);
    party_.Send(confirmation);
    return confirmation;
  }
  // The unmask step: after a dropout, waits for the confirmations first.
  Envelope Unmask(const PhaseUpdate& unmask) {
    std::optional<Batch> confirmations;
    if (unmask.sets.masked != unmask.sets.shared) {
      confirmations = WaitBatch(BatchKind::kConfirm);
      EXPECT_TRUE(confirmations) << name() << ": no confirm batch";
    }
    auto sent = round_->Unmask(unmask, confirmations ? &*confirmations : nullptr);
    EXPECT_TRUE(sent.ok()) << name() << ": " << sent.message();
    if (sent.ok()) party_.Send(*sent);
    return sent.ok() ? *sent : Envelope{};
  }

 private:
  TestParty party_;
  Sealer sealer_;
  std::optional<PatientRound> round_;
  std::vector<Batch> kept_;
};

// Plays `patients` through the round `open` opened, as honest tally-nodes would: each joins with
// its input (`inputs[i]`, default {i + 1}) and does its step in every phase it is in, up to its
// unmask; a patient named in `vanish` stops acting from that phase on (its connection stays:
// the broker waits for it until the deadline). Phases are read from the first patient's
// channel. Returns the unmask phase's update once the patients have sent their unmasks (the
// hospital acknowledges, or not), the round's end if it ended first (abort), or nullopt if it
// did not get there in time.
inline std::optional<PhaseUpdate> PlayRound(const std::vector<TestPatient*>& patients,
                                            const PhaseUpdate& open,
                                            const std::vector<std::vector<uint64_t>>& inputs = {},
                                            const std::map<std::string, Phase>& vanish = {},
                                            milliseconds timeout = kWait) {
  for (size_t i = 0; i < patients.size(); ++i)
    patients[i]->Join(open, i < inputs.size() ? inputs[i] : std::vector<uint64_t>{i + 1});
  auto acts = [&](TestPatient* p, Phase phase) {
    auto v = vanish.find(p->name());
    return v == vanish.end() || phase < v->second;  // share < mask < confirm < unmask
  };
  const auto& names = open.params.participants;
  auto index = [&](TestPatient* p) {
    return static_cast<size_t>(std::find(names.begin(), names.end(), p->name()) - names.begin());
  };
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (Phase phase : {Phase::kShare, Phase::kMask, Phase::kConfirm, Phase::kUnmask}) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    std::vector<Phase> wanted = {phase, Phase::kAbort, Phase::kDone};
    if (phase == Phase::kConfirm) wanted.push_back(Phase::kUnmask);
    auto u = patients[0]->party().WaitPhaseIn(wanted, open.round, left);
    if (!u) return std::nullopt;
    if (u->phase == Phase::kAbort || u->phase == Phase::kDone) return u;
    if (u->phase != phase) phase = u->phase;  // no confirm phase: straight to unmask
    for (TestPatient* p : patients) {
      const size_t i = index(p);
      if (!acts(p, phase)) continue;
      if (phase == Phase::kShare && u->sets.joined[i]) p->Share(*u);
      if (phase == Phase::kMask && u->sets.shared[i]) p->Mask(*u);
      if (phase == Phase::kConfirm && u->sets.masked[i]) p->Confirm(*u);
      if (phase == Phase::kUnmask && Unmaskers(u->sets)[i]) p->Unmask(*u);
    }
    if (phase == Phase::kUnmask) return u;
  }
  return std::nullopt;
}

}  // namespace tally::test
