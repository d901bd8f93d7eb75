// The rules of a round that the broker enforces and that tally-replay --check holds a capture
// to, as pure functions over values: which phase may follow which, what becomes of an envelope,
// and when a round may end done (schema/PROTOCOL.md, "Order of a round", "What the broker checks
// and logs"). The coordinator (coordinator.h) decides with them; the check judges each record of
// a capture with the same ones, so a capture another broker wrote is held to the same protocol.
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "schema/schema.h"

namespace tally {

// Whether `next` may follow `current` (nullopt: nothing published yet for the round): open,
// share, mask, then confirm or unmask (confirm, then unmask), then done; abort after any phase
// but done; nothing after done or abort.
bool PhaseMayFollow(std::optional<Phase> current, Phase next);

// What becomes of an envelope.
enum class EnvelopeRule {
  kRoute,         // from a patient of the round to its hospital, in its phase, first of its kind
  kSpoofed,       // its `from` is not its sender
  kNotActive,     // for another round than the active one
  kNotInRound,    // from a party not in the round
  kOutsidePhase,  // a partial outside the mask phase, an unmask outside the unmask phase
  kNotALink,      // not from a patient of the round to its hospital
  kNotMember,     // a partial from outside U2, an unmask from outside the unmaskers
  kDuplicate,     // that patient's envelope of that kind was routed already
};

// The envelope `env` from `sender` (its authenticated name), for the round whose last published
// update is `round` (nullptr: no round is active), where `routed` flags, per participant, whose
// envelope of env.kind went out already.
EnvelopeRule JudgeEnvelope(const PhaseUpdate* round, const Members& routed, std::string_view sender,
                           const Envelope& env);
// The reason the broker gives when it refuses an envelope under `rule` (not kRoute).
std::string EnvelopeRefusal(EnvelopeRule rule, const Envelope& env);

// A round may be acknowledged, and so end done, in its unmask phase once the unmasks of at least
// T participants (flagged in `unmasked`) went out.
bool MayAcknowledge(const PhaseUpdate& round, const Members& unmasked);

// The phase an envelope of `kind` travels in: mask for partials, unmask for unmasks.
Phase PhaseOf(EnvelopeKind kind);

}  // namespace tally
