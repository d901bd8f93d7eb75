#include "nodes/patient.h"

#include <sodium.h>

#include <algorithm>

#include "schema/text.h"

namespace tally {
namespace {

constexpr size_t kRememberedRounds = 64;

}  // namespace

Patient::Patient(const NodeOptions& options, const Roster& roster, const Sealer& sealer, Link& link,
                 LogSink log)
    : NodeRole(options.name, roster, sealer, link, std::move(log)),
      input_(options.input),
      once_(options.once),
      min_patients_(options.min_patients),
      idle_timeout_(options.idle_timeout_ms) {}

Patient::~Patient() = default;

Patient::Joined::~Joined() { sodium_memzero(values.data(), values.size() * sizeof(uint64_t)); }

void Patient::OnPhase(const PhaseUpdate& u) {
  // Updates are whole snapshots and may repeat (republished to late subscribers): every action
  // below is idempotent (a round is answered once, a masked input goes out once, a round ends
  // once).
  if (u.phase == Phase::kOpen) return OnOpen(u);
  if (!round_ || round_->opened.round != u.round) return;
  round_->last_progress = Clock::now();
  switch (u.phase) {
    case Phase::kSum:
      return SendMasked(u);
    case Phase::kDone:
      Log("event=round-done round=" + RoundHex(u.round));
      round_.reset();
      if (once_) Finish(Status::Ok());
      return;
    case Phase::kAbort:
      Log("event=round-aborted round=" + RoundHex(u.round) + " reason=" + Quote(u.reason));
      round_.reset();
      if (once_) Finish(Status::Error("round " + RoundHex(u.round) + " aborted: " + u.reason));
      return;
    default:
      return;
  }
}

Result<std::vector<uint64_t>> Patient::Encode(const PhaseUpdate& u) const {
  if (auto problem = RosterProblem(u)) return Status::Error(*problem);
  const RoundParams& p = u.params;
  if (p.participants.size() < min_patients_)
    return Status::Error("the round has " + std::to_string(p.participants.size()) +
                         " patients, fewer than this patient's minimum of " +
                         std::to_string(min_patients_));
  // Sums that wrap modulo 2^64 would make the aggregate wrong: checked here too, not only by
  // the hospital and the broker that asked for the round.
  TALLY_RETURN_IF_ERROR(CheckRoundParams(p));
  return EncodeInput(p, input_);
}

void Patient::OnOpen(const PhaseUpdate& u) {
  if (seen_.count(u.round)) return;
  const auto& ps = u.params.participants;
  if (std::find(ps.begin(), ps.end(), name_) == ps.end()) return;
  Remember(u.round);
  if (round_) Drop("a new round opened");
  Result<std::vector<uint64_t>> values = Encode(u);
  if (!values.ok()) {
    const std::string refusal = values.message().substr(0, kMaxReasonLength);
    Log("event=refuse round=" + RoundHex(u.round) + " reason=" + Quote(refusal));
    (void)link_.Send(Refuse{u.round, refusal});
    if (once_) Finish(Status::Error("refused round " + RoundHex(u.round) + ": " + refusal));
    return;
  }
  round_.emplace();
  round_->opened = u;
  round_->values = std::move(values.value());
  round_->last_progress = Clock::now();
  // Fresh for every join: it enters every mask of ours in this round, so no mask of ours is
  // ever reused, whatever round id the broker chose.
  randombytes_buf(round_->nonce.data(), round_->nonce.size());
  Log("event=join round=" + RoundHex(u.round));
  (void)link_.Send(Join{u.round, round_->nonce});
}

// Masks the input with one pairwise mask per other participant (they cancel in the sum) and
// seals it to the hospital under the round's view. Only for the round exactly as we joined it:
// the same hospital, range, length and participants (our checks were made against them), and
// our own nonce.
void Patient::SendMasked(const PhaseUpdate& u) {
  Joined& r = *round_;
  if (r.partial_sent) return;
  r.partial_sent = true;
  const auto& ps = u.params.participants;
  const auto me = std::find(ps.begin(), ps.end(), name_);
  if (!IsSumOf(r.opened, u) || u.nonces[static_cast<size_t>(me - ps.begin())] != r.nonce) {
    Drop("the sum phase does not match the round we joined");
    if (once_)
      Finish(Status::Error("the sum phase of round " + RoundHex(u.round) +
                           " does not match the round we joined"));
    return;
  }
  std::vector<uint64_t> masked = std::move(r.values);
  r.values.clear();
  Status status = sealer_.AddMasks(u, masked);
  Result<ViewDigest> view = sealer_.View(u);
  if (status.ok() && !view.ok()) status = view.status();
  if (status.ok()) {
    auto plaintext = EncodePayload(EnvelopeKind::kPartial, masked);
    auto sealed = sealer_.Seal(
        Binding{u.round, EnvelopeKind::kPartial, name_, u.params.hospital, *view}, plaintext);
    sodium_memzero(plaintext.data(), plaintext.size());
    if (sealed.ok()) {
      (void)link_.Send(Envelope{EnvelopeKind::kPartial, u.round, name_, u.params.hospital,
                                std::move(sealed.value())});
      Log("event=partial-sent round=" + RoundHex(u.round) + " to=" + u.params.hospital);
    } else {
      status = sealed.status();
    }
  }
  sodium_memzero(masked.data(), masked.size() * sizeof(uint64_t));
  if (!status.ok())
    Log("event=seal-error round=" + RoundHex(u.round) + " error=" + Quote(status.message()));
}

void Patient::OnEnvelope(const Envelope&) {
  Log("event=reject source=router reason=\"an envelope for a patient (only the hospital "
      "receives them)\"");
}

void Patient::OnNotice(const Notice& n) {
  Log("event=notice ticket=" + std::to_string(n.ticket) + " reason=" + Quote(n.reason));
}

void Patient::OnLost(std::string_view) {
  if (once_) return Finish(Status::Error("lost the connection to the broker"));
  if (round_) Drop("lost the connection to the broker");
}

void Patient::Tick(Clock::time_point now) {
  // A serving patient waits for rounds indefinitely; one in a round gives it up when nothing
  // about it happens for the idle timeout.
  if (!round_ || now - round_->last_progress <= idle_timeout_) return;
  const std::string why =
      "no progress from the broker for " + std::to_string(idle_timeout_.count()) + " ms";
  if (once_) return Finish(Status::Error(why + " on round " + RoundHex(round_->opened.round)));
  Drop(why);
}

// Gives up the current round (the broker will abort it on its deadline, naming us).
void Patient::Drop(const std::string& why) {
  Log("event=round-dropped round=" + RoundHex(round_->opened.round) + " reason=" + Quote(why));
  round_.reset();
}

void Patient::Remember(const RoundId& id) {
  seen_.insert(id);
  seen_order_.push_back(id);
  if (seen_order_.size() > kRememberedRounds) {
    seen_.erase(seen_order_.front());
    seen_order_.pop_front();
  }
}

}  // namespace tally
