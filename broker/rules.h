// The rules of a round that the broker enforces and that tally-replay --check holds a capture
// to, as pure functions over values: which phase may follow which, what becomes of an envelope,
// and when a round is complete (schema/PROTOCOL.md, "Order of a round", "What the broker checks
// and logs"). The coordinator (coordinator.h) decides with them; the check judges each record of
// a capture with the same ones, so a capture another broker wrote is held to the same protocol.
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "schema/schema.h"

namespace tally {

// Whether `next` may follow `current` (nullopt: nothing published yet for the round): open
// first, then sum, then done; abort from open or sum; nothing after done or abort.
bool PhaseMayFollow(std::optional<Phase> current, Phase next);

// What becomes of an envelope.
enum class EnvelopeRule {
  kRoute,       // a partial from a patient of the round to its hospital, in the sum phase, first
  kSpoofed,     // its `from` is not its sender
  kNotActive,   // for another round than the active one
  kNotInRound,  // from a party not in the round
  kOutsideSum,  // not in the sum phase
  kNotALink,    // not from a patient of the round to its hospital
  kDuplicate,   // that patient's partial was routed already
};

// The envelope `env` from `sender` (its authenticated name), for the round whose last published
// update is `round` (nullptr: no round is active), whose partials from `routed` went out already.
EnvelopeRule JudgeEnvelope(const PhaseUpdate* round, const std::set<std::string>& routed,
                           std::string_view sender, const Envelope& env);
// The reason the broker gives when it refuses an envelope under `rule` (not kRoute).
std::string EnvelopeRefusal(EnvelopeRule rule, const Envelope& env);

// A round may be acknowledged, and so end done, once every participant's partial went out.
bool AllRouted(const RoundParams& params, const std::set<std::string>& routed);

}  // namespace tally
