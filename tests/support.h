// Test support: temp folders, key sets, a log sink tests can wait on, a test party that speaks
// the wire protocol over real CURVE sockets, and a test patient that takes part in protocol-2
// rounds as tally-node does (a fresh join nonce, one masked input sealed to the hospital).
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
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "keys/curve.h"
#include "keys/keys.h"
#include "nodes/seal.h"
#include "schema/log.h"
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

  void Send(const Message& message);
  void SendRaw(const std::vector<uint8_t>& bytes);
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
  zmq::context_t ctx_;
  zmq::socket_t dealer_{ctx_, zmq::socket_type::dealer};
  zmq::socket_t sub_{ctx_, zmq::socket_type::sub};
  zmq::socket_t monitor_{ctx_, zmq::socket_type::pair};
  size_t probes_ = 0;
};

// A fresh random join nonce, as a patient draws one for every join.
inline JoinNonce FreshNonce() {
  JoinNonce nonce;
  randombytes_buf(nonce.data(), nonce.size());
  return nonce;
}

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

// `input` plus the pairwise masks of `sealer`'s party for the round in `sum` (a sum-phase
// update, which carries every participant's nonce).
inline std::vector<uint64_t> Masked(const Sealer& sealer, const PhaseUpdate& sum,
                                    std::vector<uint64_t> input) {
  auto status = sealer.AddMasks(sum, input);
  EXPECT_TRUE(status.ok()) << sealer.name() << ": " << status.message();
  return input;
}

// The view of the round in `sum` with `sealer`'s roster keys: what an honest party computes.
inline ViewDigest View(const Sealer& sealer, const PhaseUpdate& sum) {
  auto view = sealer.View(sum);
  EXPECT_TRUE(view.ok()) << view.message();
  return view.ok() ? *view : ViewDigest{};
}

// The one envelope of a patient's sum phase: `masked` sealed by `sealer` to the round's
// hospital under `view` (the honest view is View(sealer, sum)).
inline Envelope SealedPartial(const Sealer& sealer, const PhaseUpdate& sum,
                              std::span<const uint64_t> masked, const ViewDigest& view) {
  auto sealed = sealer.Seal(
      Binding{sum.round, EnvelopeKind::kPartial, sealer.name(), sum.params.hospital, view},
      EncodePayload(EnvelopeKind::kPartial, masked));
  EXPECT_TRUE(sealed.ok()) << sealed.message();
  return Envelope{EnvelopeKind::kPartial, sum.round, sealer.name(), sum.params.hospital,
                  sealed.ok() ? std::move(sealed.value()) : std::vector<uint8_t>{}};
}

// What the hospital gets from one partial: opened with `hospital`'s sealer under `view`, then
// decoded for `length` elements.
inline Result<std::vector<uint64_t>> OpenPartial(const Sealer& hospital, const Envelope& env,
                                                 const ViewDigest& view, uint32_t length) {
  auto plain =
      hospital.Open(Binding{env.round, env.kind, env.from, hospital.name(), view}, env.sealed);
  if (!plain.ok()) return plain.status();
  return DecodePayload(plain.value(), env.kind, length);
}

// A patient played by a test over its own TestParty: joins with a fresh nonce and sends its
// masked input as tally-node does — or, for hostile cases, sealed under another view.
class TestPatient {
 public:
  TestPatient(const std::filesystem::path& keys, const std::string& name, const std::string& router,
              const std::string& phases, bool subscribe = true)
      : party_(keys, name, router, phases, subscribe), sealer_(MakeSealer(keys, name)) {}

  TestParty& party() { return party_; }
  const Sealer& sealer() const { return sealer_; }
  const std::string& name() const { return sealer_.name(); }
  // The nonce of the last Join sent.
  const JoinNonce& nonce() const { return nonce_; }

  // Sends Join{round, a fresh nonce}; returns the nonce.
  JoinNonce Join(const RoundId& round) {
    nonce_ = FreshNonce();
    party_.Send(tally::Join{round, nonce_});
    return nonce_;
  }

  struct Sent {
    std::vector<uint64_t> masked;  // input + masks, what the hospital adds up
    Envelope envelope;
    std::vector<uint8_t> frame;  // the envelope's bytes as sent
  };
  // Masks `input` for the round in `sum` and sends it sealed to the hospital under `view`
  // (by default View(sealer, sum), as an honest patient does).
  Sent SendMasked(const PhaseUpdate& sum, std::vector<uint64_t> input,
                  std::optional<ViewDigest> view = std::nullopt) {
    Sent s;
    s.masked = Masked(sealer_, sum, std::move(input));
    s.envelope = SealedPartial(sealer_, sum, s.masked, view ? *view : View(sealer_, sum));
    s.frame = Encode(s.envelope);
    party_.SendRaw(s.frame);
    return s;
  }

 private:
  TestParty party_;
  Sealer sealer_;
  JoinNonce nonce_{};
};

}  // namespace tally::test
