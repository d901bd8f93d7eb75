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
      request_{options.name,    options.range,  options.length,   options.participants,
               options.columns, options.weight, options.threshold},
      results_(std::move(results)),
      on_result_(std::move(on_result)) {
  // A neighbourhood round signs its participants: name them (the broker would take every
  // patient of its roster, which agrees with ours), in the roster's order.
  const size_t n = request_.participants.empty() ? roster.Names(Role::kPatient).size()
                                                 : request_.participants.size();
  early_cap_ = 2 * n;
  if (!options.graph) return;
  request_.graph = ChooseGraph(n, options.corrupt_ppm, options.dropout_ppm);
  if (!request_.graph) return;  // small, or no degree below N - 1 meets the bounds: a full round
  if (request_.participants.empty()) request_.participants = roster.Names(Role::kPatient);
  if (request_.threshold == 0) request_.threshold = SafeThreshold(n);
}

Hospital::~Hospital() = default;

namespace {

// Why an envelope was refused: one that does not open was sealed under another view of the round
// (other round keys, another set, another roster's keys) or altered.
std::string Why(const Status& status, const std::string& me) {
  if (status.code() != Status::Code::kUnauthentic) return status.message();
  return status.message() + " under " + me + "'s view of the round";
}

}  // namespace

void Hospital::Start() { SendRequest(); }

void Hospital::SendRequest() {
  // Random tickets: a request is never mistaken for an earlier hospital process's round. 0 is
  // reserved for connection notices.
  do randombytes_buf(&ticket_, sizeof ticket_);
  while (ticket_ == 0);
  waiting_ = true;
  last_progress_ = requested_at_ = Clock::now();
  if (request_.graph) {
    // A fresh graph for every request, signed: the broker can neither pick nor change it.
    randombytes_buf(request_.graph->seed.data(), request_.graph->seed.size());
    request_.graph->signature = sealer_.Sign(GraphStatement(ticket_, request_));
  }
  Log("event=request ticket=" + std::to_string(ticket_) +
      " range=" + std::to_string(options_.range) + " length=" + std::to_string(options_.length) +
      " columns=" + std::to_string(options_.columns.size()) +
      " patients=" + std::to_string(request_.participants.size()) +
      (request_.graph ? " degree=" + std::to_string(request_.graph->degree) +
                            " share_threshold=" + std::to_string(request_.graph->threshold)
                      : std::string(" degree=full")));
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
    case Phase::kDone:
      return OnDone(u);
    case Phase::kAbort:
      return OnAbort(u);
    default:
      if (auto problem = LaterUpdateProblem(round_->opened, round_->latest.sets, u))
        return Refuse(*problem);
      round_->latest = u;
      return Step();
  }
}

void Hospital::Adopt(const PhaseUpdate& u) {
  waiting_ = false;
  round_.emplace();
  round_->opened = round_->latest = u;
  Log("event=round-open round=" + RoundHex(u.round) +
      " patients=" + std::to_string(u.params.participants.size()) + " threshold=" +
      std::to_string(u.params.threshold) + " length=" + std::to_string(u.params.length) +
      " columns=" + std::to_string(u.params.columns.size()) +
      " deadline_ms=" + std::to_string(u.deadline_ms));
  if (u.phase == Phase::kDone || u.phase == Phase::kAbort) return;  // ended before we heard of it
  // The round must be the one asked for: the broker may not change what the sum is over. Checked
  // before the sum is allocated for it.
  if (u.params != request_) {
    const RoundParams& p = u.params;
    const char* what = p.participants != request_.participants ? "participants"
                       : p.range != request_.range             ? "range"
                       : p.length != request_.length           ? "length"
                       : p.columns != request_.columns         ? "columns"
                       : p.weight != request_.weight           ? "weight"
                       : p.threshold != request_.threshold     ? "threshold"
                                                               : "graph";
    return Refuse("the round does not match " + name_ + "'s request (" + what + " differ)");
  }
  if (auto problem = RosterProblem(u)) return Refuse(*problem);
  Result<HospitalRound> sums = HospitalRound::Create(sealer_, u.round, u.params);
  if (!sums.ok()) return Refuse(sums.message());
  round_->sums.emplace(std::move(sums.value()));
  round_->unmasked.assign(u.params.participants.size(), false);
  for (size_t i = 0; i < u.params.participants.size(); ++i)
    round_->index.emplace(u.params.participants[i], i);
  if (early_keys_ && early_keys_->round == u.round) round_->keys_batch = std::move(early_keys_);
  early_keys_.reset();
}

void Hospital::OnBatch(const Batch& batch) {
  if (outcome()) return;
  auto reject = [&](const std::string& why) {
    Log("event=reject source=router reason=" + Quote(why));
  };
  if (batch.kind != BatchKind::kKeys)
    return reject("a " + std::string(BatchKindName(batch.kind)) + " batch for the hospital");
  // The keys come over the router, the phase updates over the phase channel: they may come first.
  if (waiting_ && !round_) {
    early_keys_ = batch;
    return;
  }
  if (!round_ || batch.round != round_->opened.round)
    return reject("a keys batch for a round we are not in");
  if (round_->keys_batch) return reject("a second keys batch");
  round_->keys_batch = batch;
  last_progress_ = Clock::now();
  Step();
}

void Hospital::Step() {
  if (outcome() || !round_ || !round_->sums) return;
  ActiveRound& r = *round_;
  const PhaseUpdate& u = r.latest;
  // The view needs the keys of every member of U1 and who of them shared (U2).
  if (!r.sums->has_view() && r.keys_batch && !u.sets.shared.empty())
    if (Status learnt = r.sums->Learn(*r.keys_batch, u.sets); !learnt.ok())
      return Refuse(learnt.message());
  if (!r.sums->has_view()) return;
  if (!u.sets.masked.empty()) {
    for (size_t i = 0; i < u.sets.masked.size(); ++i)
      if (r.sums->partials()[i] && !u.sets.masked[i])
        return Refuse("the masked input of " + u.params.participants[i] + " arrived, but " +
                      u.params.participants[i] + " is not a survivor");
  }
  auto early = std::move(early_);
  early_.clear();
  for (const auto& env : early) OnEnvelope(env);
  if (outcome()) return;
  MaybeConfirm();
  MaybeAcknowledge();
}

void Hospital::MaybeConfirm() {
  ActiveRound& r = *round_;
  const PhaseUpdate& u = r.latest;
  if (r.confirmed || !u.params.graph || u.phase != Phase::kConfirm ||
      r.sums->partials() != u.sets.masked)
    return;
  if (Status can = r.sums->CheckSurvivors(u.sets); !can.ok()) return Refuse(can.message());
  const Signature s = r.sums->SurvivorsSignature(u.sets);
  r.confirmed = true;
  Log("event=survivors-signed round=" + RoundHex(u.round) +
      " survivors=" + std::to_string(CountOf(u.sets.masked)));
  (void)link_.Send(
      Batch{u.round, BatchKind::kSurvivors, {{0, std::vector<uint8_t>(s.begin(), s.end())}}});
}

void Hospital::OnEnvelope(const Envelope& env) {
  if (outcome()) return;
  auto reject = [&](const std::string& why) {
    Log("event=reject source=router reason=" + Quote(why));
  };
  if (env.to != name_)
    return reject(std::string(KindName(env.kind)) + " " + env.from + "->" + env.to +
                  " is not for us");
  // Envelopes can overtake the phase updates that tell the hospital its round, its view and its
  // survivors (they come over the router, the updates over the phase channel): keep them until
  // then, at most two per possible participant.
  const bool ours = waiting_ || (round_ && env.round == round_->opened.round);
  if (!ours) return reject("envelope for a round we are not in");
  const bool unmask = env.kind == EnvelopeKind::kUnmask;
  if (!round_ || (round_->sums && (!round_->sums->has_view() ||
                                   (unmask && round_->latest.phase != Phase::kUnmask)))) {
    // Two per participant of the request: a masked input and an unmask.
    if (early_.size() >= early_cap_) return reject("too many envelopes kept");
    early_.push_back(env);
    return;
  }
  ActiveRound& r = *round_;
  if (!r.sums) return reject("envelope for a round that ended before " + name_ + " joined it");
  const auto at = r.index.find(env.from);
  if (at == r.index.end())
    return reject(std::string(KindName(env.kind)) + " from " + env.from +
                  ", not a patient of the round");
  const size_t from = at->second;
  const RoundSets& sets = r.latest.sets;
  if (unmask) {
    if (r.unmasked[from]) return reject("duplicate unmask from " + env.from);
    r.unmasked[from] = true;
    if (!Unmaskers(sets)[from])
      return Refuse("an unmask from " + env.from + ", who is not among the unmaskers");
    if (r.result) return;  // the result is written: later unmasks are not needed
    Result<bool> kept = r.sums->AddUnmask(env, from, sets);
    if (!kept.ok()) return Refuse(Why(kept.status(), name_));
  } else {
    if (r.sums->partials()[from]) return reject("duplicate partial from " + env.from);
    if (!sets.shared[from])
      return Refuse("a masked input from " + env.from + ", who did not share");
    // A masked input that does not open can never be replaced: the broker routes one per patient.
    if (Status added = r.sums->AddPartial(env, from); !added.ok()) return Refuse(Why(added, name_));
    if (!sets.masked.empty() && !sets.masked[from])
      return Refuse("the masked input of " + env.from + " arrived, but " + env.from +
                    " is not a survivor");
  }
  last_progress_ = Clock::now();
  MaybeConfirm();
  if (outcome()) return;
  MaybeAcknowledge();
}

// With every survivor's masked input in the sum and T unmasks, removes what is left of the masks,
// writes the result and acknowledges.
void Hospital::MaybeAcknowledge() {
  ActiveRound& r = *round_;
  const PhaseUpdate& u = r.latest;
  if (r.result || u.phase != Phase::kUnmask || !r.sums->Ready(u.sets)) return;
  // A neighbourhood round's survivors are the ones this hospital checked and signed.
  if (u.params.graph && !r.confirmed)
    return Refuse("the unmask phase came before " + name_ + " signed the survivors");
  Result<std::vector<uint64_t>> aggregate = r.sums->Aggregate(u.sets);
  if (!aggregate.ok()) return Refuse(aggregate.message());
  RoundResult result;
  result.round = u.round;
  result.params = u.params;
  for (size_t i = 0; i < u.params.participants.size(); ++i)
    if (!u.sets.masked[i]) result.dropped.push_back(u.params.participants[i]);
  result.in_range = AggregateInRange(u.params, *aggregate);
  if (u.params.columns.empty()) {
    result.aggregate = *aggregate;
  } else {
    result.columns = DecodeColumns(u.params, *aggregate);
  }
  result.elapsed_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - requested_at_).count();
  // Durable before acknowledged: the broker only hears of the round once the disk has it.
  if (auto written = results_.Append(ResultJson(result)); !written.ok()) return Finish(written);
  if (!result.in_range)
    Log("event=out-of-range round=" + RoundHex(u.round) +
        (u.params.columns.empty()
             ? " note=\"the aggregate lies above R: each input lies in [0, R], their sum need not\""
             : " note=\"a column's sum, count or weight is beyond what honest inputs give\""));
  Log("event=ack round=" + RoundHex(u.round) + " survivors=" +
      std::to_string(CountOf(u.sets.masked)) + " dropped=" + std::to_string(result.dropped.size()));
  r.result = std::move(result);
  (void)link_.Send(Ack{u.round});
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
