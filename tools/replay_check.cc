// tally-replay --check: a capture held to the rules the broker enforces (broker/rules.h), record
// by record, each problem at the offset of the record that breaks the rule.
#include <algorithm>
#include <set>

#include "broker/rules.h"
#include "tools/replay_internal.h"

namespace tally::replay {

std::vector<Problem> Check(const CaptureContents& c) {
  std::vector<Problem> problems;
  auto add = [&problems](uint64_t offset, std::string what) {
    problems.push_back({offset, std::move(what)});
  };
  if (!c.ok())
    add(c.error_offset, "stops at offset " + std::to_string(c.error_offset) + ": " + c.error);
  const CaptureHeader* h = HeaderOf(c);
  if (h == nullptr) {
    if (c.ok()) add(c.error_offset, "no header record");
    return problems;
  }
  const std::vector<EnvelopeEntry> envelopes = Envelopes(c);
  size_t next_envelope = 0;
  std::optional<Phase> phase;  // the last phase seen
  std::set<Phase> seen;
  uint64_t last_seq = 0, last_t = 0, envelope_count = 0, rejected_count = 0;
  std::string abort_reason;
  std::set<std::string> routed;  // patients whose partial the capture holds
  PhaseUpdate round;             // the round as the rules see it
  round.round = h->round;
  round.params = h->params;
  std::optional<std::vector<JoinNonce>> sum_nonces;  // as published with the sum phase
  const CaptureTrailer* trailer = nullptr;
  uint64_t trailer_offset = 0;

  for (size_t i = 1; i < c.records.size(); ++i) {
    const uint64_t at = c.offsets[i];
    const CaptureRecord& record = c.records[i];
    const uint64_t t = std::visit(
        [](const auto& r) -> uint64_t {
          if constexpr (std::is_same_v<std::decay_t<decltype(r)>, CaptureHeader>) {
            return 0;
          } else {
            return r.t_us;
          }
        },
        record);
    if (t < last_t) {
      add(at,
          "time goes backwards: t_us " + std::to_string(t) + " after " + std::to_string(last_t));
    }
    last_t = std::max(last_t, t);
    if (const auto* p = std::get_if<CapturePhase>(&record)) {
      const std::string name(PhaseName(p->phase));
      const bool legal = PhaseMayFollow(phase, p->phase);
      if (!legal) {
        add(at,
            "phase " + name +
                (phase ? " after " + std::string(PhaseName(*phase)) : std::string(" before open")));
      }
      if (phase && p->seq <= last_seq) {
        add(at, "phase seq " + std::to_string(p->seq) + " does not grow (after " +
                    std::to_string(last_seq) + ")");
      }
      // The nonces: none before every patient joined; the sum phase publishes one per patient,
      // and the phases after it repeat the same ones.
      if (p->phase == Phase::kSum && !sum_nonces) {
        if (p->nonces.size() != h->params.participants.size()) {
          add(at, "phase sum carries " + std::to_string(p->nonces.size()) + " nonces for " +
                      std::to_string(h->params.participants.size()) + " patients");
        }
        sum_nonces = p->nonces;
      } else if (sum_nonces) {
        if (p->nonces != *sum_nonces)
          add(at, "phase " + name + "'s nonces differ from the sum phase's");
      } else if (!p->nonces.empty()) {
        add(at, "phase " + name + " carries " + std::to_string(p->nonces.size()) +
                    " nonces before the sum phase");
      }
      last_seq = p->seq;
      phase = p->phase;
      seen.insert(p->phase);
      if (p->phase == Phase::kAbort) abort_reason = p->reason;
    } else if (std::get_if<CaptureEnvelope>(&record)) {
      ++envelope_count;
      const EnvelopeEntry& e = envelopes[next_envelope++];
      if (!e.envelope) {
        add(at, Describe(e) + " does not decode: " + e.decode_error);
        continue;
      }
      // The broker's own rule for this envelope, at this point of the round: a capture holds
      // only what the broker routed, so every verdict but kRoute is a problem.
      const Envelope& env = *e.envelope;
      round.phase = phase.value_or(Phase::kOpen);
      switch (JudgeEnvelope(&round, routed, env.from, env)) {
        case EnvelopeRule::kRoute:
          break;
        case EnvelopeRule::kSpoofed:  // a capture's envelope is judged as from its own sender
        case EnvelopeRule::kNotActive:
          add(at, Describe(e) + " is bound to round " + RoundHex(env.round) + ", not this round");
          break;
        case EnvelopeRule::kNotInRound:
        case EnvelopeRule::kNotALink:
          add(at, Describe(e) + " is not a partial link of this round");
          break;
        case EnvelopeRule::kOutsideSum:
          add(at, Describe(e) + " routed outside the sum phase");
          break;
        case EnvelopeRule::kDuplicate:
          add(at, Describe(e) + " repeats the partial from " + env.from);
          break;
      }
      // Whatever the verdict, a partial from a patient of the round to its hospital went out.
      if (env.round == h->round && env.to == h->params.hospital &&
          std::find(h->params.participants.begin(), h->params.participants.end(), env.from) !=
              h->params.participants.end())
        routed.insert(env.from);
    } else if (std::get_if<CaptureRejected>(&record)) {
      ++rejected_count;
      if (!phase) add(at, "rejected message before the open phase");
    } else if (const auto* tr = std::get_if<CaptureTrailer>(&record)) {
      trailer = tr;
      trailer_offset = at;
    }
  }

  const uint64_t end = c.ok() ? (c.offsets.back()) : c.error_offset;
  if (!seen.count(Phase::kOpen)) add(end, "no open phase");
  if (trailer == nullptr) {
    if (c.ok()) add(end, "no trailer: the round did not end in this capture");
    return problems;
  }
  if (trailer->envelopes != envelope_count) {
    add(trailer_offset, "trailer counts " + std::to_string(trailer->envelopes) +
                            " envelopes, the capture holds " + std::to_string(envelope_count));
  }
  if (trailer->rejected != rejected_count) {
    add(trailer_offset, "trailer counts " + std::to_string(trailer->rejected) +
                            " rejected messages, the capture holds " +
                            std::to_string(rejected_count));
  }
  if (trailer->done) {
    if (phase != Phase::kDone)
      add(trailer_offset, "trailer says done but the last phase is not done");
    if (!seen.count(Phase::kSum)) add(trailer_offset, "done without the sum phase");
    for (const auto& from : h->params.participants) {
      if (!routed.count(from)) {
        add(trailer_offset,
            "completed round lacks the partial " + from + " -> " + h->params.hospital);
      }
    }
  } else {
    if (phase != Phase::kAbort) {
      add(trailer_offset, "trailer says aborted but the last phase is not abort");
    } else if (trailer->reason != abort_reason) {
      add(trailer_offset, "trailer's abort reason differs from the abort phase's");
    }
  }
  return problems;
}

Result<CapturedView> HospitalView(const CaptureContents& c, const Sealer& sealer) {
  const CaptureHeader* h = HeaderOf(c);
  if (h == nullptr) return Status::Error("the capture has no header");
  for (size_t i = 0; i < c.records.size(); ++i) {
    const auto* p = std::get_if<CapturePhase>(&c.records[i]);
    if (p == nullptr || p->phase != Phase::kSum) continue;
    if (p->nonces.size() != h->params.participants.size()) {
      return Status::Error("the sum phase at offset " + std::to_string(c.offsets[i]) + " carries " +
                           std::to_string(p->nonces.size()) + " nonces for " +
                           std::to_string(h->params.participants.size()) + " patients");
    }
    Result<ViewDigest> view = sealer.View(h->round, h->params, p->nonces);
    if (!view.ok()) return view.status();
    return CapturedView{*view, c.offsets[i]};
  }
  return Status::Error("the capture has no sum phase");
}

}  // namespace tally::replay
