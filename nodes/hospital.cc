#include "nodes/hospital.h"

#include <sodium.h>

#include <algorithm>

#include "schema/text.h"

namespace tally {

// --- ResultsFile ---------------------------------------------------------------------------

Result<ResultsFile> ResultsFile::Open(const std::filesystem::path& path) {
  auto file = AppendFile::Open(path, 0600, "the results file");
  if (!file.ok()) return file.status();
  return ResultsFile(std::move(file.value()));
}

// --- Hospital ------------------------------------------------------------------------------

Hospital::Hospital(const NodeOptions& options, const Roster& roster, const Sealer& sealer,
                   Link& link, LogSink log, ResultsFile results, ResultSink on_result)
    : NodeRole(options.name, roster, sealer, link, std::move(log)),
      options_(options),
      request_{options.name,         options.range,   options.length,
               options.participants, options.columns, options.weight},
      results_(std::move(results)),
      on_result_(std::move(on_result)) {}

Hospital::~Hospital() = default;

void Hospital::Start() { SendRequest(); }

void Hospital::SendRequest() {
  // Random tickets: a request is never mistaken for an earlier hospital process's round. 0 is
  // reserved for connection notices.
  do randombytes_buf(&ticket_, sizeof ticket_);
  while (ticket_ == 0);
  waiting_ = true;
  last_progress_ = requested_at_ = Clock::now();
  Log("event=request ticket=" + std::to_string(ticket_) +
      " range=" + std::to_string(options_.range) + " length=" + std::to_string(options_.length) +
      " columns=" + std::to_string(options_.columns.size()) +
      " patients=" + std::to_string(options_.participants.size()));
  if (!link_.Send(Request{ticket_, request_, options_.deadline_ms}))
    Finish(Status::Error("cannot send the round request"));
}

void Hospital::OnPhase(const PhaseUpdate& u) {
  if (outcome()) return;
  // The hospital adopts its round from whichever update it hears first: a late subscriber may
  // first hear of a round that already ended (e.g. a patient refused it at once).
  if (waiting_ && u.params.hospital == name_ && u.ticket == ticket_) Adopt(u);
  if (!round_ || round_->opened.round != u.round) return;
  last_progress_ = Clock::now();
  switch (u.phase) {
    case Phase::kSum:
      return LearnView(u);
    case Phase::kDone:
      return OnDone(u);
    case Phase::kAbort:
      return OnAbort(u);
    default:
      return;
  }
}

void Hospital::Adopt(const PhaseUpdate& u) {
  waiting_ = false;
  round_.emplace();
  round_->opened = u;
  Log("event=round-open round=" + RoundHex(u.round) + " patients=" +
      std::to_string(u.params.participants.size()) + " length=" + std::to_string(u.params.length) +
      " columns=" + std::to_string(u.params.columns.size()) +
      " deadline_ms=" + std::to_string(u.deadline_ms));
  if (u.phase != Phase::kOpen && u.phase != Phase::kSum) return;  // ended before we heard of it
  // The round must be the one asked for: the broker may not change what the sum is over. Checked
  // before the sum is allocated for it.
  if (u.params != request_) {
    const RoundParams& p = u.params;
    const char* what = p.participants != request_.participants ? "participants"
                       : p.range != request_.range             ? "range"
                       : p.length != request_.length           ? "length"
                       : p.columns != request_.columns         ? "columns"
                                                               : "weight";
    return Refuse("the round does not match " + name_ + "'s request (" + what + " differ)");
  }
  if (auto problem = RosterProblem(u)) return Refuse(*problem);
  round_->sum.emplace(static_cast<uint32_t>(PayloadLength(u.params)));
}

// The sum phase names every participant's nonce, which fixes the view each masked input must be
// sealed under. Inputs that came before it are opened now.
void Hospital::LearnView(const PhaseUpdate& u) {
  ActiveRound& r = *round_;
  if (r.view) return;
  if (!IsSumOf(r.opened, u)) return Refuse("the sum phase does not match the round as opened");
  Result<ViewDigest> view = sealer_.View(u);
  if (!view.ok()) return Refuse(view.message());
  r.view = *view;
  auto early = std::move(early_);
  early_.clear();
  for (const auto& env : early) OnEnvelope(env);
}

void Hospital::OnEnvelope(const Envelope& env) {
  if (outcome()) return;
  auto reject = [&](const std::string& why) {
    Log("event=reject source=router reason=" + Quote(why));
  };
  // Partials can overtake the phase updates that tell the hospital its round id and view (they
  // come over the router, the updates over the phase channel): keep them until then, at most
  // one per possible participant.
  const bool view_known = round_ && round_->view;
  if (!view_known && (waiting_ || (round_ && env.round == round_->opened.round)) &&
      env.to == name_ && early_.size() < kMaxParticipants) {
    early_.push_back(env);
    return;
  }
  if (!round_ || env.round != round_->opened.round)
    return reject("envelope for a round we are not in");
  ActiveRound& r = *round_;
  if (!r.sum) return reject("envelope for a round that ended before " + name_ + " joined it");
  const auto& ps = r.opened.params.participants;
  if (env.to != name_ || std::find(ps.begin(), ps.end(), env.from) == ps.end())
    return reject(std::string(KindName(env.kind)) + " " + env.from + "->" + env.to +
                  " is not for us in this round");
  if (r.received.count(env.from))
    return reject("duplicate " + std::string(KindName(env.kind)) + " from " + env.from);
  auto opened = sealer_.Open(Binding{env.round, env.kind, env.from, name_, *r.view}, env.sealed);
  // A masked input that does not open (another view of the round: other nonces, or another
  // roster's keys; or altered) can never be replaced: the broker routes one per patient.
  if (!opened.ok()) return Refuse(opened.message() + " under " + name_ + "'s view of the round");
  auto added = r.sum->AddPayload(opened.value(), env.kind);
  sodium_memzero(opened->data(), opened->size());
  if (!added.ok()) return Refuse("payload from " + env.from + ": " + added.message());
  r.received.insert(env.from);
  last_progress_ = Clock::now();
  MaybeAcknowledge();
}

void Hospital::MaybeAcknowledge() {
  ActiveRound& r = *round_;
  if (r.result || r.received.size() != r.opened.params.participants.size()) return;
  RoundResult result;
  result.round = r.opened.round;
  result.params = r.opened.params;
  result.in_range = AggregateInRange(r.opened.params, r.sum->values());
  if (r.opened.params.columns.empty()) {
    result.aggregate = r.sum->values();
  } else {
    result.columns = DecodeColumns(r.opened.params, r.sum->values());
  }
  result.elapsed_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - requested_at_).count();
  // Durable before acknowledged: the broker only hears of the round once the disk has it.
  if (auto written = results_.Append(ResultJson(result)); !written.ok()) return Finish(written);
  if (!result.in_range)
    Log("event=out-of-range round=" + RoundHex(r.opened.round) +
        (r.opened.params.columns.empty()
             ? " note=\"the aggregate lies above R: each input lies in [0, R], their sum need not\""
             : " note=\"a column's sum, count or weight is beyond what honest inputs give\""));
  r.result = std::move(result);
  Log("event=ack round=" + RoundHex(r.opened.round));
  (void)link_.Send(Ack{r.opened.round});
}

void Hospital::OnDone(const PhaseUpdate& u) {
  ActiveRound& r = *round_;
  if (!r.result)
    return Finish(Status::Error("the broker ended round " + RoundHex(u.round) + " as done before " +
                                name_ + " acknowledged it"));
  Log("event=round-done round=" + RoundHex(u.round));
  if (on_result_) on_result_(*r.result);
  round_.reset();
  if (++rounds_done_ >= options_.rounds) return Finish(Status::Ok());
  SendRequest();
}

void Hospital::OnAbort(const PhaseUpdate& u) {
  Log("event=round-aborted round=" + RoundHex(u.round) + " reason=" + Quote(u.reason));
  // A result already written stands in the file until this line says otherwise: the round
  // has one outcome, the broker's.
  if (round_->result) {
    auto written = results_.Append(AbortJson(u.round, u.reason));
    if (!written.ok()) return Finish(written);
  }
  Finish(Status::Error("round " + RoundHex(u.round) + " aborted: " + u.reason));
}

void Hospital::Refuse(const std::string& why) {
  Log("event=refuse round=" + RoundHex(round_->opened.round) + " reason=" + Quote(why));
  (void)link_.Send(tally::Refuse{round_->opened.round, why.substr(0, kMaxReasonLength)});
  Finish(Status::Error("refused round " + RoundHex(round_->opened.round) + ": " + why));
}

void Hospital::OnNotice(const Notice& n) {
  Log("event=notice ticket=" + std::to_string(n.ticket) + " reason=" + Quote(n.reason));
  if (waiting_ && n.ticket == ticket_) Finish(Status::Error(n.reason));
}

void Hospital::OnLost(std::string_view) {
  Finish(Status::Error("lost the connection to the broker"));
}

void Hospital::Tick(Clock::time_point now) {
  if (outcome() || (!waiting_ && !round_)) return;
  if (now - last_progress_ <= std::chrono::milliseconds(options_.idle_timeout_ms)) return;
  // The link reports an unreachable broker itself; here the broker is there and says nothing
  // about our request or round.
  if (!link_.up()) return;
  Finish(Status::Error("no progress from the broker for " +
                       std::to_string(options_.idle_timeout_ms) + " ms on " +
                       (waiting_ ? "request " + std::to_string(ticket_) +
                                       " (connected; the broker may be busy with other rounds)"
                                 : "round " + RoundHex(round_->opened.round))));
}

}  // namespace tally
