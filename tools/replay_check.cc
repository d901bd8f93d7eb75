// tally-replay --check: a capture held to the rules the broker enforces (broker/rules.h), record
// by record, each problem at the offset of the record that breaks the rule.
#include <algorithm>
#include <set>

#include "broker/rules.h"
#include "tools/replay_internal.h"

namespace tally::replay {
namespace {

// "p07, p09" for the participants flagged in `members`.
std::string NamesOf(const Members& members, const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < members.size() && i < names.size(); ++i)
    if (members[i]) out += (out.empty() ? "" : ", ") + names[i];
  return out.empty() ? "nobody" : out;
}

// Who is flagged in `a` and not in `b`.
Members Minus(const Members& a, const Members& b) {
  Members out(a.size(), false);
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] && !(i < b.size() && b[i]);
  return out;
}

}  // namespace

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
  const std::vector<std::string>& names = h->params.participants;
  const size_t n = names.size();
  const std::vector<FrameEntry> frames = Frames(c);
  size_t next_frame = 0;
  std::optional<Phase> phase;  // the last phase seen
  std::set<Phase> seen;
  uint64_t last_seq = 0, last_t = 0, frame_count = 0, rejected_count = 0;
  std::string abort_reason;
  Members partials(n, false), unmasks(n, false);  // whose envelope of each kind the capture holds
  size_t keys_batches = 0;
  PhaseUpdate round;  // the round as the rules see it: its last phase and sets
  round.round = h->round;
  round.params = h->params;
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
      if (!PhaseMayFollow(phase, p->phase)) {
        add(at,
            "phase " + name +
                (phase ? " after " + std::string(PhaseName(*phase)) : std::string(" before open")));
      }
      if (phase && p->seq <= last_seq) {
        add(at, "phase seq " + std::to_string(p->seq) + " does not grow (after " +
                    std::to_string(last_seq) + ")");
      }
      // The sets: what the phase has, nested, unchanged once fixed; the survivors are exactly
      // those whose masked input the capture holds.
      PhaseUpdate next = round;
      next.phase = p->phase;
      next.sets = p->sets;
      if (Status sets = CheckSets(next); !sets.ok())
        add(at, "phase " + name + ": " + sets.message());
      const std::pair<const Members*, const Members*> fixed[] = {
          {&round.sets.joined, &p->sets.joined},
          {&round.sets.shared, &p->sets.shared},
          {&round.sets.masked, &p->sets.masked},
          {&round.sets.confirmed, &p->sets.confirmed}};
      for (const auto& [before, now] : fixed)
        if (!before->empty() && *before != *now) add(at, "phase " + name + " changes a fixed set");
      if (round.sets.masked.empty() && !p->sets.masked.empty() && p->sets.masked != partials)
        add(at, "phase " + name + "'s survivors (" + NamesOf(p->sets.masked, names) +
                    ") are not those whose masked input was routed (" + NamesOf(partials, names) +
                    ")");
      round.phase = p->phase;
      round.sets = p->sets;
      last_seq = p->seq;
      phase = p->phase;
      seen.insert(p->phase);
      if (p->phase == Phase::kAbort) abort_reason = p->reason;
    } else if (std::get_if<CaptureFrame>(&record)) {
      ++frame_count;
      const FrameEntry& e = frames[next_frame++];
      if (e.keys) {
        // The keys batch the broker gave the hospital: once, in the share phase, one cpk || spk
        // per member of U1.
        if (++keys_batches > 1) add(at, Describe(e) + ": a second keys batch");
        if (phase != Phase::kShare) add(at, Describe(e) + " outside the share phase");
        if (e.keys->round != h->round)
          add(at, Describe(e) + " is bound to round " + RoundHex(e.keys->round));
        if (phase == Phase::kShare && !KeysOf(*e.keys, round.sets.joined).ok())
          add(at, Describe(e) + " is not one cpk, spk and signature for each patient that joined");
        continue;
      }
      if (!e.envelope) {
        add(at, Describe(e) + " does not decode: " + e.decode_error);
        continue;
      }
      // The broker's own rule for this envelope, at this point of the round: a capture holds
      // only what the broker routed, so every verdict but kRoute is a problem.
      const Envelope& env = *e.envelope;
      const bool partial = env.kind == EnvelopeKind::kPartial;
      Members& routed = partial ? partials : unmasks;
      switch (JudgeEnvelope(&round, routed, env.from, env)) {
        case EnvelopeRule::kRoute:
          break;
        case EnvelopeRule::kSpoofed:  // a capture's envelope is judged as from its own sender
        case EnvelopeRule::kNotActive:
          add(at, Describe(e) + " is bound to round " + RoundHex(env.round) + ", not this round");
          break;
        case EnvelopeRule::kNotInRound:
        case EnvelopeRule::kNotALink:
          add(at, Describe(e) + " is not a link of this round");
          break;
        case EnvelopeRule::kOutsidePhase:
          add(at, Describe(e) + " routed outside the " + std::string(PhaseName(PhaseOf(env.kind))) +
                      " phase");
          break;
        case EnvelopeRule::kNotMember:
          add(at, Describe(e) + (partial ? " from a patient that did not share"
                                         : " from a patient that is not among the unmaskers"));
          break;
        case EnvelopeRule::kDuplicate:
          add(at, Describe(e) + " repeats the " + std::string(KindName(env.kind)) + " from " +
                      env.from);
          break;
      }
      // Whatever the verdict, an envelope from a patient of the round to its hospital went out.
      const auto from = std::find(names.begin(), names.end(), env.from);
      if (env.round == h->round && env.to == h->params.hospital && from != names.end())
        routed[static_cast<size_t>(from - names.begin())] = true;
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
  if (trailer->frames != frame_count) {
    add(trailer_offset, "trailer counts " + std::to_string(trailer->frames) +
                            " frames, the capture holds " + std::to_string(frame_count));
  }
  if (trailer->rejected != rejected_count) {
    add(trailer_offset, "trailer counts " + std::to_string(trailer->rejected) +
                            " rejected messages, the capture holds " +
                            std::to_string(rejected_count));
  }
  if (trailer->done) {
    if (phase != Phase::kDone)
      add(trailer_offset, "trailer says done but the last phase is not done");
    if (!seen.count(Phase::kUnmask)) add(trailer_offset, "done without the unmask phase");
    if (keys_batches == 0) add(trailer_offset, "completed round without the hospital's keys batch");
    const Members missing = Minus(round.sets.masked, partials);
    if (std::count(missing.begin(), missing.end(), true) > 0)
      add(trailer_offset, "completed round lacks the masked input of " + NamesOf(missing, names));
    if (CountOf(unmasks) < h->params.threshold)
      add(trailer_offset, "completed round holds " + std::to_string(CountOf(unmasks)) +
                              " unmasks, fewer than the threshold " +
                              std::to_string(h->params.threshold));
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
  std::optional<FrameEntry> keys;
  for (FrameEntry& e : Frames(c)) {
    if (e.keys) {
      keys = std::move(e);
      break;
    }
  }
  if (!keys) return Status::Error("the capture has no keys batch for the hospital");
  for (size_t i = 0; i < c.records.size(); ++i) {
    const auto* p = std::get_if<CapturePhase>(&c.records[i]);
    if (p == nullptr || p->sets.shared.empty()) continue;
    if (p->sets.shared.size() != h->params.participants.size())
      return Status::Error("the " + std::string(PhaseName(p->phase)) + " phase at offset " +
                           std::to_string(c.offsets[i]) + " has a set of the wrong size");
    Result<SignedKeys> round_keys = KeysOf(*keys->keys, p->sets.joined);
    if (!round_keys.ok()) return round_keys.status();
    Result<ViewDigest> view = sealer.View(h->round, h->params, p->sets.shared, round_keys->keys);
    if (!view.ok()) return view.status();
    return CapturedView{*view, *keys->keys, p->sets, keys->offset, c.offsets[i]};
  }
  return Status::Error("the capture has no mask phase");
}

}  // namespace tally::replay
