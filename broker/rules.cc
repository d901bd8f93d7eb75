#include "broker/rules.h"

#include <algorithm>

namespace tally {

bool PhaseMayFollow(std::optional<Phase> current, Phase next) {
  if (!current) return next == Phase::kOpen;
  switch (*current) {
    case Phase::kOpen:
      return next == Phase::kSum || next == Phase::kAbort;
    case Phase::kSum:
      return next == Phase::kDone || next == Phase::kAbort;
    default:
      return false;  // nothing follows done or abort
  }
}

EnvelopeRule JudgeEnvelope(const PhaseUpdate* round, const std::set<std::string>& routed,
                           std::string_view sender, const Envelope& env) {
  if (env.from != sender) return EnvelopeRule::kSpoofed;
  if (round == nullptr || round->round != env.round) return EnvelopeRule::kNotActive;
  const auto& ps = round->params.participants;
  const bool participant = std::find(ps.begin(), ps.end(), sender) != ps.end();
  if (!participant && sender != round->params.hospital) return EnvelopeRule::kNotInRound;
  if (round->phase != Phase::kSum) return EnvelopeRule::kOutsideSum;
  if (!participant || env.to != round->params.hospital) return EnvelopeRule::kNotALink;
  if (routed.count(env.from)) return EnvelopeRule::kDuplicate;
  return EnvelopeRule::kRoute;
}

std::string EnvelopeRefusal(EnvelopeRule rule, const Envelope& env) {
  const std::string link = env.from + "->" + env.to;
  switch (rule) {
    case EnvelopeRule::kSpoofed:
      return "spoofed sender: header says " + env.from;
    case EnvelopeRule::kNotActive:
      return "envelope for a round that is not active";
    case EnvelopeRule::kNotInRound:
      return "envelope from a party not in the round";
    case EnvelopeRule::kOutsideSum:
      return "partial outside the sum phase";
    case EnvelopeRule::kNotALink:
      return "partial " + link + " is not a link of this round";
    case EnvelopeRule::kDuplicate:
      return "duplicate partial " + link;
    case EnvelopeRule::kRoute:
      break;
  }
  return "";
}

bool AllRouted(const RoundParams& params, const std::set<std::string>& routed) {
  return std::all_of(params.participants.begin(), params.participants.end(),
                     [&](const std::string& p) { return routed.count(p) > 0; });
}

}  // namespace tally
