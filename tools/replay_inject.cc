// tally-replay --inject: a party's captured envelopes re-sent byte for byte to a live broker,
// which must refuse them (the round is over, or the partial is a duplicate), then proof that no
// captured partial opens under another round.
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <set>
#include <zmq.hpp>

#include "keys/curve.h"
#include "schema/text.h"
#include "tools/replay_internal.h"

namespace tally::replay {

using Clock = std::chrono::steady_clock;

int Inject(const Options& o, std::span<const uint8_t> bytes, std::ostream& out, std::ostream& err) {
  Printer p(out, o.json);
  const CaptureContents c = ReadCapture(bytes);
  const CaptureHeader* h = HeaderOf(c);
  if (h == nullptr) {
    err << "tally-replay: " << o.file.string() << ": " << c.error << "\n";
    return 1;
  }
  if (!c.ok()) {
    p.Line("note", "capture stops at offset " + std::to_string(c.error_offset) + ": " + c.error +
                       "; injecting the readable prefix");
  }
  Result<Identity> id = LoadIdentity(o.keys_dir, o.as);
  if (!id.ok()) {
    err << "tally-replay: " << id.message() << "\n";
    return 1;
  }
  const Roster* roster = &id->roster;
  const SecretCertificate* me = &id->me;
  const Sealer* sealer = &id->sealer;
  const std::vector<std::string> brokers = roster->Names(Role::kBroker);
  if (brokers.size() != 1) {
    err << "tally-replay: the roster must hold exactly one broker\n";
    return 1;
  }
  const Certificate* broker = roster->Find(brokers[0]);
  const std::string old_round = RoundHex(h->round);
  const std::vector<FrameEntry> all = Frames(c);
  std::vector<std::span<const uint8_t>> frames;  // parallel to `all`
  for (const CaptureRecord& r : c.records) {
    if (const auto* e = std::get_if<CaptureFrame>(&r)) frames.emplace_back(e->frame);
  }
  std::vector<const FrameEntry*> mine, to_me;
  for (const auto& e : all) {
    if (e.envelope && e.envelope->from == o.as) mine.push_back(&e);
    if (e.envelope && e.envelope->to == o.as) to_me.push_back(&e);
  }
  p.Line("inject",
         "inject as " + o.as + " into " + o.inject + ": " + Count(mine.size(), "envelope") +
             " from " + o.as + " captured in round " + old_round,
         "\"round\": " + JsonString(old_round) + ", \"as\": " + JsonString(o.as) +
             ", \"envelopes\": " + std::to_string(mine.size()));
  size_t failures = 0;

  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  zmq::socket_t monitor(ctx, zmq::socket_type::pair);
  const auto timeout = std::chrono::milliseconds(o.timeout_ms);
  uint64_t ticket = 0;
  randombytes_buf(&ticket, sizeof ticket);
  std::string barrier_reason;
  size_t stray = 0;
  std::set<std::string> stray_rounds;
  try {
    CurveClient(dealer, *me, broker->curve_public,
                {1000, static_cast<int64_t>(MaxMessageSize(kMaxVectorLength)), o.inject});
    // A refused reconnection drops the pipe: a send must not wait for ever.
    dealer.set(zmq::sockopt::sndtimeo, static_cast<int>(std::min<uint32_t>(o.timeout_ms, INT_MAX)));
    Monitor(dealer, monitor,
            ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
    dealer.connect(o.inject);

    // Wait for the CURVE handshake, so a refused key is reported as such.
    const auto deadline = Clock::now() + timeout;
    std::optional<bool> accepted;
    while (!accepted) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t item{monitor.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, left) <= 0) continue;
      if (auto event = NextEvent(monitor)) accepted = event->id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
    }
    if (!accepted) {
      err << "tally-replay: no CURVE handshake with " << o.inject << " within " << o.timeout_ms
          << " ms\n";
      return 1;
    }
    if (!*accepted) {
      err << "tally-replay: the broker at " << o.inject << " refused " << o.as
          << "'s CURVE handshake (is this the roster it runs with?)\n";
      return 1;
    }
    p.Line("connected", "connected: the broker accepted " + o.as + "'s CURVE key");

    const bool over = TrailerOf(c) != nullptr;
    for (const FrameEntry* e : mine) {
      if (!dealer.send(zmq::const_buffer(frames[e->index - 1].data(), frames[e->index - 1].size()),
                       zmq::send_flags::none)) {
        ++failures;
        p.Line("sent", Describe(*e) + ": could not be sent", FrameFields(*e) + ", \"sent\": false");
        continue;
      }
      p.Line(
          "sent",
          Describe(*e) + ", " + std::to_string(e->size) +
              " B: sent byte for byte; the broker can only route it into round " +
              RoundHex(e->envelope->round) +
              (over ? ", which is over; the broker refuses envelopes for a round that is not active"
                    : " (no trailer: if it is still running the broker refuses the copy as a "
                      "duplicate partial)"),
          FrameFields(*e) + ", \"sent\": true");
    }
    // The barrier: a round request the broker must refuse (a patient may not request rounds;
    // a hospital may not name a non-patient). It answers a refused request with a notice, and
    // handles one connection's messages in order: the notice proves every envelope above has
    // been processed.
    Request probe{ticket, {"", 0, 1, {}}, 0};
    if (me->pub.role == Role::kHospital) probe.params.participants = {o.as};
    const std::vector<uint8_t> probe_bytes = Encode(probe);
    (void)dealer.send(zmq::buffer(probe_bytes), zmq::send_flags::none);
    const auto barrier_deadline = Clock::now() + timeout;
    while (barrier_reason.empty()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(barrier_deadline - Clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, left) <= 0) continue;
      zmq::message_t m;
      if (!dealer.recv(m)) continue;
      auto d = Decode({static_cast<const uint8_t*>(m.data()), m.size()});
      if (!d.ok()) continue;
      if (auto* n = std::get_if<Notice>(&d.value()); n && n->ticket == ticket) {
        barrier_reason = n->reason.empty() ? "(no reason)" : n->reason;
      } else if (auto* env = std::get_if<Envelope>(&d.value())) {
        // Someone else's live envelope to us: never opened or kept, only counted.
        ++stray;
        stray_rounds.insert(RoundHex(env->round));
      }
    }
  } catch (const zmq::error_t& e) {
    err << "tally-replay: " << e.what() << "\n";
    return 1;
  }
  if (barrier_reason.empty()) {
    ++failures;
    p.Line("barrier",
           "no notice from the broker within " + std::to_string(o.timeout_ms) +
               " ms: cannot confirm it processed the envelopes",
           "\"confirmed\": false");
  } else if (mine.empty()) {
    p.Line("barrier",
           "the broker answered our probe request (\"" + barrier_reason + "\"); " + o.as +
               " sent no envelope in the captured round",
           "\"confirmed\": true, \"notice\": " + JsonString(barrier_reason));
  } else {
    p.Line("barrier",
           "the broker processed " + std::string(mine.size() == 1 ? "the " : "all ") +
               Count(mine.size(), "envelope") + " (it then refused our probe request: \"" +
               barrier_reason +
               "\"); it refuses an envelope without replying, and its log gives each reason",
           "\"confirmed\": true, \"notice\": " + JsonString(barrier_reason));
  }
  if (stray > 0) {
    ++failures;
    std::string rounds;
    for (const auto& r : stray_rounds) rounds += (rounds.empty() ? "" : ", ") + r;
    p.Line("warning",
           "WARNING: the broker delivered " + std::to_string(stray) +
               " live envelope(s) for round " + rounds + " to this connection instead of " + o.as +
               "'s node: the broker took the injected connection as " + o.as + "'s route",
           "\"stray\": " + std::to_string(stray));
  }

  // Locally: what arrived for us (the hospital: the captured partials) opens under its own
  // binding and under no other round. The view is the capture's (HospitalView).
  RoundId fresh{};
  randombytes_buf(fresh.data(), fresh.size());
  const Result<CapturedView> view = HospitalView(c, *sealer);
  for (const FrameEntry* e : to_me) {
    const Envelope& env = *e->envelope;
    if (!view.ok()) {
      ++failures;
      p.Line("rebind",
             Describe(*e) + ": not checked: the hospital's view of the round is unknown (" +
                 view.message() + ")",
             FrameFields(*e) + ", \"opens\": null");
      continue;
    }
    auto original =
        sealer->Open(Binding{env.round, env.kind, env.from, o.as, view->view}, env.sealed);
    auto rebound = sealer->Open(Binding{fresh, env.kind, env.from, o.as, view->view}, env.sealed);
    if (original.ok()) sodium_memzero(original->data(), original->size());
    if (rebound.ok()) sodium_memzero(rebound->data(), rebound->size());
    const bool good = original.ok() && !rebound.ok();
    if (!good) ++failures;
    p.Line(
        "rebind",
        Describe(*e) + ": " +
            (original.ok() ? "opens under its round " : "does NOT open under its round ") +
            RoundHex(env.round) + "; under fresh round " + RoundHex(fresh) +
            (rebound.ok() ? " it OPENS"
                          : " it fails: " + (rebound.status().code() == Status::Code::kUnauthentic
                                                 ? std::string("authentication failed")
                                                 : rebound.message())),
        FrameFields(*e) + ", \"opens\": " + (original.ok() ? "true" : "false") +
            ", \"opens_rebound\": " + (rebound.ok() ? "true" : "false"));
  }
  if (failures == 0) {
    p.Line("result", "inject: no captured envelope can be replayed into another round",
           "\"ok\": true");
    return 0;
  }
  p.Line("result", "inject: FAILED (" + Problems(failures) + ")", "\"ok\": false");
  return 1;
}

}  // namespace tally::replay
