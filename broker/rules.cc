#include "broker/rules.h"

#include <algorithm>

namespace tally {

bool PhaseMayFollow(std::optional<Phase> current, Phase next) {
  if (!current) return next == Phase::kOpen;
  if (next == Phase::kAbort) return *current != Phase::kDone && *current != Phase::kAbort;
  switch (*current) {
    case Phase::kOpen:
      return next == Phase::kShare;
    case Phase::kShare:
      return next == Phase::kMask;
    case Phase::kMask:
      return next == Phase::kConfirm || next == Phase::kUnmask;
    case Phase::kConfirm:
      return next == Phase::kUnmask;
    case Phase::kUnmask:
      return next == Phase::kDone;
    default:
      return false;  // nothing follows done or abort
  }
}

Phase PhaseOf(EnvelopeKind kind) {
  return kind == EnvelopeKind::kPartial ? Phase::kMask : Phase::kUnmask;
}

EnvelopeRule JudgeEnvelope(const PhaseUpdate* round, const Members& routed, std::string_view sender,
                           const Envelope& env) {
  if (env.from != sender) return EnvelopeRule::kSpoofed;
  if (round == nullptr || round->round != env.round) return EnvelopeRule::kNotActive;
  const auto& ps = round->params.participants;
  const auto at = std::find(ps.begin(), ps.end(), sender);
  if (at == ps.end() && sender != round->params.hospital) return EnvelopeRule::kNotInRound;
  if (round->phase != PhaseOf(env.kind)) return EnvelopeRule::kOutsidePhase;
  if (at == ps.end() || env.to != round->params.hospital) return EnvelopeRule::kNotALink;
  const auto i = static_cast<size_t>(at - ps.begin());
  const Members& members =
      env.kind == EnvelopeKind::kPartial ? round->sets.shared : Unmaskers(round->sets);
  if (i >= members.size() || !members[i]) return EnvelopeRule::kNotMember;
  if (i < routed.size() && routed[i]) return EnvelopeRule::kDuplicate;
  return EnvelopeRule::kRoute;
}

std::string EnvelopeRefusal(EnvelopeRule rule, const Envelope& env) {
  const std::string kind(KindName(env.kind));
  const std::string link = env.from + "->" + env.to;
  switch (rule) {
    case EnvelopeRule::kSpoofed:
      return "spoofed sender: header says " + env.from;
    case EnvelopeRule::kNotActive:
      return "envelope for a round that is not active";
    case EnvelopeRule::kNotInRound:
      return "envelope from a party not in the round";
    case EnvelopeRule::kOutsidePhase:
      return kind + " outside the " + std::string(PhaseName(PhaseOf(env.kind))) + " phase";
    case EnvelopeRule::kNotALink:
      return kind + " " + link + " is not a link of this round";
    case EnvelopeRule::kNotMember:
      return kind + " from " + env.from +
             (env.kind == EnvelopeKind::kPartial ? ", who did not share"
                                                 : ", who is not among the unmaskers");
    case EnvelopeRule::kDuplicate:
      return "duplicate " + kind + " " + link;
    case EnvelopeRule::kRoute:
      break;
  }
  return "";
}

bool MayAcknowledge(const PhaseUpdate& round, const Members& unmasked) {
  return round.phase == Phase::kUnmask && CountOf(unmasked) >= round.params.threshold;
}

}  // namespace tally
