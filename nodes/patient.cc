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
      max_corrupt_(options.max_corrupt),
      graph_(options.graph),
      vanish_at_(options.vanish_at),
      on_vanish_(options.on_vanish),
      idle_timeout_(options.idle_timeout_ms) {}

Patient::~Patient() = default;

void Patient::OnPhase(const PhaseUpdate& u) {
  // Done (a --once patient whose round ended): the rest of what one poll brought, such as the
  // next round's open right behind this one's end, is not acted on.
  if (vanished_ || outcome()) return;
  // Updates are whole snapshots and may repeat (republished to late subscribers): a round is
  // answered once, each step is done once, a round ends once.
  if (u.phase == Phase::kOpen) return OnOpen(u);
  if (!round_ || round_->opened.round != u.round) return;
  round_->last_progress = Clock::now();
  switch (u.phase) {
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
      round_->latest = u;
      return Step();
  }
}

void Patient::OnBatch(const Batch& batch) {
  if (vanished_ || outcome()) return;
  if (!round_ || batch.round != round_->opened.round) {
    Log("event=reject source=router reason=\"a batch for a round we are not in\"");
    return;
  }
  Joined& r = *round_;
  std::optional<Batch>& slot = batch.kind == BatchKind::kKeys     ? r.keys_batch
                               : batch.kind == BatchKind::kShares ? r.shares_batch
                                                                  : r.confirm_batch;
  if (slot) {
    Log("event=reject source=router reason=" +
        Quote("a second " + std::string(BatchKindName(batch.kind)) + " batch"));
    return;
  }
  slot = batch;
  r.last_progress = Clock::now();
  Step();
}

Result<std::vector<uint64_t>> Patient::Encode(const PhaseUpdate& u) const {
  if (auto problem = RosterProblem(u)) return Status::Error(*problem);
  const RoundParams& p = u.params;
  if (p.participants.size() < min_patients_)
    return Status::Error("the round has " + std::to_string(p.participants.size()) +
                         " patients, fewer than this patient's minimum of " +
                         std::to_string(min_patients_));
  // Sums that wrap modulo 2^64 would make the aggregate wrong, a threshold below the safe
  // minimum would let the adversary unmask an input: checked here too, not only by the hospital
  // and the broker that asked for the round.
  TALLY_RETURN_IF_ERROR(CheckRoundParams(p));
  if (p.graph) {
    TALLY_RETURN_IF_ERROR(CheckGraph(u));
    return EncodeInput(p, input_);
  }
  const uint32_t tolerance = CollusionTolerance(p.participants.size(), p.threshold);
  if (tolerance < max_corrupt_)
    return Status::Error("the round hides an input from " + std::to_string(tolerance) +
                         " colluding patients (" + std::to_string(p.participants.size()) +
                         " patients, threshold " + std::to_string(p.threshold) +
                         "), fewer than this patient's " + std::to_string(max_corrupt_));
  return EncodeInput(p, input_);
}

Status Patient::CheckGraph(const PhaseUpdate& u) const {
  const RoundParams& p = u.params;
  const Neighbourhood& g = *p.graph;
  if (!graph_) return Status::Error("this patient takes full rounds only");
  // The hospital drew the graph and signed it with the participants: the broker can neither
  // pick it nor change it (schema/PROTOCOL.md, "Why it is private").
  if (!sealer_.Verify(p.hospital, GraphStatement(u.ticket, p), g.signature))
    return Status::Error("the round's graph is not signed by " + p.hospital);
  const auto n = static_cast<uint32_t>(p.participants.size());
  if (Status bounds = CheckNeighbourhood(n, {g.degree, g.threshold}, g.corrupt_ppm, g.dropout_ppm);
      !bounds.ok())
    return Status::Error("the round's graph does not hide an input: " + bounds.message());
  if (g.corrupt_ppm < kMinCorruptPpm)
    return Status::Error("the round assumes " +
                         FormatFixed(g.corrupt_ppm / 1e4, g.corrupt_ppm % 1000 == 0 ? 1 : 4) +
                         "% of its patients corrupt, below the " +
                         FormatFixed(kMinCorruptPpm / 1e4, 1) + "% a patient takes");
  const uint64_t assumed = uint64_t{n} * g.corrupt_ppm / 1'000'000;
  if (assumed < max_corrupt_)
    return Status::Error("the round assumes " + std::to_string(assumed) + " corrupt patients of " +
                         std::to_string(n) + ", fewer than this patient's " +
                         std::to_string(max_corrupt_));
  return Status::Ok();
}

void Patient::OnOpen(const PhaseUpdate& u) {
  if (seen_.count(u.round) || joined_.count(u.round)) return;
  const auto& ps = u.params.participants;
  const auto me = std::find(ps.begin(), ps.end(), name_);
  if (me == ps.end()) return;
  Remember(u.round);
  if (round_) GiveUp("a new round opened");
  Result<std::vector<uint64_t>> values = Encode(u);
  if (!values.ok()) {
    const std::string refusal = values.message().substr(0, kMaxReasonLength);
    Log("event=refuse round=" + RoundHex(u.round) + " reason=" + Quote(refusal));
    (void)link_.Send(Refuse{u.round, refusal});
    if (once_) Finish(Status::Error("refused round " + RoundHex(u.round) + ": " + refusal));
    return;
  }
  Result<PatientRound> joined = PatientRound::Join(sealer_, u, std::move(values.value()));
  if (!joined.ok()) {
    Log("event=round-left round=" + RoundHex(u.round) + " reason=" + Quote(joined.message()));
    if (once_) Finish(Status::Error("left round " + RoundHex(u.round) + ": " + joined.message()));
    return;
  }
  // Never a second run of the same round id: the privacy argument counts one signed view per
  // patient and round (schema/PROTOCOL.md, "Why it is private"), so this memory has no bound.
  joined_.insert(u.round);
  round_.emplace(
      Joined{u, std::move(joined.value()), {}, Phase::kOpen, {}, {}, {}, {}, Clock::now()});
  Log("event=join round=" + RoundHex(u.round));
  (void)link_.Send(round_->round.join());
}

void Patient::Step() {
  while (round_ && round_->latest) {
    Joined& r = *round_;
    const PhaseUpdate u = *r.latest;
    if (u.phase == r.acted) return;  // done already: wait for the next phase or the end
    if (vanish_at_ == u.phase) {
      Log("event=vanish round=" + RoundHex(u.round) + " phase=" + std::string(PhaseName(u.phase)) +
          " note=\"stops acting, to be killed here\"");
      vanished_ = true;
      if (on_vanish_) on_vanish_(u.phase);
      return;
    }
    // Each phase's step once its batch is here: the batch comes over the router, the update over
    // the phase channel, in either order.
    std::optional<std::string> problem;
    if (r.acted == Phase::kOpen) {
      if (u.phase == Phase::kShare && !r.keys_batch) return;
      problem = Act(u, u.sets.joined, "those who joined");
    } else if (r.acted == Phase::kShare) {
      if (u.phase == Phase::kMask && !r.shares_batch) return;
      problem = Act(u, u.sets.shared, "those who shared");
    } else if (u.phase == Phase::kConfirm) {
      problem = Act(u, u.sets.masked, "the survivors");
    } else {
      // After a confirm phase, the unmask phase needs its batch: the others' confirmations in a
      // full round, the hospital's signature on the survivors in a neighbourhood round.
      if (u.phase == Phase::kUnmask && HasConfirmPhase(u.params, u.sets) && !r.confirm_batch)
        return;
      problem = Act(u, Unmaskers(u.sets), "the unmaskers");
    }
    if (problem) return GiveUp(*problem);
  }
}

std::optional<std::string> Patient::Act(const PhaseUpdate& u, const Members& member_of,
                                        const char* set_name) {
  Joined& r = *round_;
  if (auto problem = LaterUpdateProblem(r.opened, r.seen, u)) return problem;
  // The phase that follows the one we acted on, with us in its set; else it went on without us.
  const bool next =
      (r.acted == Phase::kOpen && u.phase == Phase::kShare) ||
      (r.acted == Phase::kShare && u.phase == Phase::kMask) ||
      (r.acted == Phase::kMask && u.phase == Phase::kConfirm) ||
      ((r.acted == Phase::kMask || r.acted == Phase::kConfirm) && u.phase == Phase::kUnmask);
  if (!next || !member_of[r.round.me()])
    return "the round went on without " + name_ + " (it is not among " + set_name + ")";
  r.seen = u.sets;
  switch (u.phase) {
    case Phase::kShare: {
      Result<Batch> shares = r.round.Shares(u, *r.keys_batch);
      if (!shares.ok()) return shares.message();
      Log("event=shares-sent round=" + RoundHex(u.round) +
          " to=" + std::to_string(shares->items.size()));
      (void)link_.Send(*shares);
      break;
    }
    case Phase::kMask: {
      Result<Envelope> masked = r.round.Masked(u, *r.shares_batch);
      if (!masked.ok()) return masked.message();
      (void)link_.Send(*masked);
      Log("event=partial-sent round=" + RoundHex(u.round) + " to=" + u.params.hospital);
      break;
    }
    case Phase::kConfirm: {
      // A neighbourhood round's survivors are confirmed by its hospital alone.
      if (!u.params.graph) (void)link_.Send(r.round.Confirmation(u));
      break;
    }
    default: {  // unmask; in a full round after a dropout only if we confirmed the sets ourselves
      if (!u.params.graph && HasConfirmPhase(u.params, u.sets) && r.acted != Phase::kConfirm)
        return "the survivors changed and " + name_ + " did not confirm them";
      Result<Envelope> unmask = r.round.Unmask(u, r.confirm_batch ? &*r.confirm_batch : nullptr);
      if (!unmask.ok()) return unmask.message();
      (void)link_.Send(*unmask);
      Log("event=unmask-sent round=" + RoundHex(u.round) + " to=" + u.params.hospital);
      break;
    }
  }
  r.acted = u.phase;
  return std::nullopt;
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
  if (round_) GiveUp("lost the connection to the broker");
}

void Patient::Tick(Clock::time_point now) {
  if (vanished_ || outcome()) return;  // waits to be killed, or is done
  // A serving patient waits for rounds indefinitely; one in a round gives it up when nothing
  // about it happens for the idle timeout.
  if (!round_ || now - round_->last_progress <= idle_timeout_) return;
  GiveUp("no progress from the broker for " + std::to_string(idle_timeout_.count()) + " ms");
}

void Patient::GiveUp(const std::string& why) {
  const RoundId id = round_->opened.round;
  Log("event=round-left round=" + RoundHex(id) + " reason=" + Quote(why));
  round_.reset();
  if (once_) Finish(Status::Error("left round " + RoundHex(id) + ": " + why));
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
