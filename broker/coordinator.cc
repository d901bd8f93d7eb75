#include "broker/coordinator.h"

#include <sodium.h>

#include <algorithm>

#include "broker/rules.h"
#include "schema/text.h"

namespace tally {
namespace {

// "a, b and c" with at most `max` names, then "and N more".
std::string JoinList(const std::vector<std::string>& items, size_t max = 3) {
  std::string out;
  // "a, b, c and 1 more" would be longer than naming the fourth.
  const size_t shown = items.size() <= max + 1 ? items.size() : max;
  for (size_t i = 0; i < shown; ++i) {
    if (i > 0) out += (i + 1 == shown && shown == items.size()) ? " and " : ", ";
    out += items[i];
  }
  if (items.size() > shown) out += " and " + std::to_string(items.size() - shown) + " more";
  return out;
}

}  // namespace

CoordinatorEnv CoordinatorEnv::Real() {
  return CoordinatorEnv{
      [] {
        RoundId id;
        randombytes_buf(id.data(), id.size());
        return id;
      },
      [] {
        return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
      }};
}

Coordinator::Coordinator(CoordinatorOptions options, const Roster& roster, CoordinatorEnv env)
    : options_(options), roster_(roster), env_(std::move(env)) {}

std::optional<size_t> Coordinator::Round::Index(const std::string& name) const {
  auto it = index.find(name);
  if (it == index.end()) return std::nullopt;
  return it->second;
}

Actions Coordinator::OnMessage(const std::string& sender, const Message& message,
                               Clock::time_point now) {
  Actions out;
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Request>) {
          OnRequest(sender, m, now, out);
        } else if constexpr (std::is_same_v<T, Join>) {
          OnJoin(sender, m, now, out);
        } else if constexpr (std::is_same_v<T, Refuse>) {
          OnRefuse(sender, m, now, out);
        } else if constexpr (std::is_same_v<T, Envelope>) {
          OnEnvelope(sender, m, out);
        } else if constexpr (std::is_same_v<T, Ack>) {
          OnAck(sender, m, now, out);
        } else if constexpr (std::is_same_v<T, Batch>) {
          OnBatch(sender, m, now, out);
        } else {
          out.push_back(act::Reject{std::string("a node may not send ") +
                                    (std::is_same_v<T, PhaseUpdate> ? "phase" : "notice") +
                                    " messages"});
        }
      },
      message);
  return out;
}

bool Coordinator::InRound(const std::string& sender, const RoundId& round, std::string_view what,
                          Actions& out) const {
  if (!round_ || round_->update.round != round) {
    out.push_back(act::Reject{std::string(what) + " for a round that is not active"});
    return false;
  }
  const std::optional<size_t> i = round_->Index(sender);
  if (!i && sender != round_->update.params.hospital) {
    out.push_back(act::Reject{std::string(what) + " from a party not in the round"});
    return false;
  }
  // A patient whose connection closed is out of the round for good: its secrets for the round
  // went with its process, and the others no longer wait for it.
  if (i && round_->gone[*i]) {
    out.push_back(act::Reject{std::string(what) + " from a patient that dropped out of the round"});
    return false;
  }
  return true;
}

void Coordinator::OnRequest(const std::string& sender, Request request, Clock::time_point now,
                            Actions& out) {
  auto refuse = [&](const std::string& why) {
    out.push_back(act::Reject{"round request refused: " + why});
    out.push_back(act::Notify{request.ticket, "round request refused: " + why});
  };
  const Certificate* cert = roster_.Find(sender);
  if (cert == nullptr || cert->role != Role::kHospital)
    return refuse("only a hospital may request rounds");
  if (request.ticket == 0) return refuse("ticket 0 is reserved (it marks connection notices)");
  RoundParams& p = request.params;
  // Its limit is on the payload (it sizes the largest message the broker accepts).
  if (PayloadLength(p) > options_.max_length)
    return refuse((p.columns.empty()
                       ? "length " + std::to_string(p.length)
                       : "a payload of " + std::to_string(PayloadLength(p)) + " elements (" +
                             std::to_string(p.columns.size()) + " columns)") +
                  " exceeds the broker's limit " + std::to_string(options_.max_length));
  // The hospital signs a neighbourhood round's participants and threshold with its graph.
  if (p.graph && (p.participants.empty() || p.threshold == 0))
    return refuse("a neighbourhood round names its participants and its threshold");
  if (p.participants.empty()) p.participants = roster_.Names(Role::kPatient);
  for (const auto& name : p.participants) {
    const Certificate* c = roster_.Find(name);
    if (c == nullptr || c->role != Role::kPatient)
      return refuse(name + " is not a patient in the roster");
  }
  if (p.threshold == 0) p.threshold = SafeThreshold(p.participants.size());
  // At least 2 patients, every sum computable without wrapping modulo 2^64, a safe threshold.
  if (Status s = CheckRoundParams(p); !s.ok()) return refuse(s.message());
  Result<RoundGraph> graph = RoundGraph::Of(p);
  if (!graph.ok()) return refuse(graph.status().message());
  Pending pending{sender, std::move(request), std::move(graph.value())};
  if (round_) {
    if (queue_.size() >= options_.max_queue) return refuse("round queue full");
    queue_.push_back(std::move(pending));
    out.push_back(act::Log{"event=queued from=" + sender +
                           " ticket=" + std::to_string(queue_.back().request.ticket) +
                           " position=" + std::to_string(queue_.size())});
    return;
  }
  Open(std::move(pending), now, out);
}

void Coordinator::Open(Pending pending, Clock::time_point now, Actions& out) {
  const std::string& hospital = pending.hospital;
  round_.emplace();
  Round& r = *round_;
  PhaseUpdate& u = r.update;
  u.round = env_.new_round_id();
  u.ticket = pending.request.ticket;
  u.params = std::move(pending.request.params);
  u.params.hospital = hospital;
  u.deadline_ms = pending.request.deadline_ms == 0
                      ? options_.deadline_ms
                      : std::min(pending.request.deadline_ms, options_.deadline_ms);
  r.n = u.params.participants.size();
  r.graph.emplace(std::move(pending.graph));
  for (size_t i = 0; i < r.n; ++i) r.index.emplace(u.params.participants[i], i);
  r.joins.resize(r.n);
  for (Members* m : {&r.joined, &r.shared, &r.partials, &r.confirmed, &r.unmasks, &r.gone})
    m->assign(r.n, false);
  out.push_back(act::Log{
      "event=round-open round=" + RoundHex(u.round) + " hospital=" + hospital +
      " ticket=" + std::to_string(u.ticket) + " patients=" + std::to_string(r.n) +
      " threshold=" + std::to_string(u.params.threshold) +
      " length=" + std::to_string(u.params.length) + " range=" + std::to_string(u.params.range) +
      " columns=" + std::to_string(u.params.columns.size()) +
      (u.params.graph ? " degree=" + std::to_string(u.params.graph->degree) +
                            " share_threshold=" + std::to_string(u.params.graph->threshold)
                      : std::string(" degree=full")) +
      " deadline_ms=" + std::to_string(u.deadline_ms)});
  // Publish first, then create the capture: creating a file costs a journal transaction (about
  // 0.2 ms on ext4), which this way overlaps the patients' answers instead of delaying the open
  // phase. Nothing else reaches the capture in between, so it reads the same.
  Advance(Phase::kOpen, "", now, out);
  CaptureHeader header;
  header.round = u.round;
  header.ticket = u.ticket;
  header.params = u.params;
  header.roster_fingerprint = roster_.Fingerprint();
  header.opened_unix_ms = env_.unix_ms();
  out.push_back(act::OpenCapture{std::move(header), u, now});
}

void Coordinator::OnJoin(const std::string& sender, const Join& join, Clock::time_point now,
                         Actions& out) {
  if (!InRound(sender, join.round, "join", out)) return;
  Round& r = *round_;
  const std::optional<size_t> i = r.Index(sender);
  if (!i) return out.push_back(act::Reject{"join from the hospital"});
  if (r.update.phase != Phase::kOpen)
    return out.push_back(act::Reject{"join after the join phase"});
  if (r.joined[*i]) return out.push_back(act::Reject{"duplicate join"});
  r.joins[*i] = join;
  r.joined[*i] = true;
  Settle(false, now, out);
}

void Coordinator::OnRefuse(const std::string& sender, const Refuse& refuse, Clock::time_point now,
                           Actions& out) {
  if (!InRound(sender, refuse.round, "refusal", out)) return;
  const Round& r = *round_;
  // The hospital may give up its own round at any phase before it acknowledges (its roster
  // lacks a participant, a masked input does not open): the round cannot complete. A patient's
  // refusal answers the open phase (the round is wrong for it: another roster, a bad input);
  // once it has joined, it never refuses, it stops taking part, and the round goes on without it.
  const std::optional<size_t> i = r.Index(sender);
  if (i && (r.update.phase != Phase::kOpen || r.joined[*i]))
    return out.push_back(act::Reject{"refusal after the join phase"});
  Finish(Phase::kAbort, sender + " refused the round: " + refuse.reason, now, out);
}

void Coordinator::OnEnvelope(const std::string& sender, const Envelope& env, Actions& out) {
  static const Members kNone;
  const Members& routed = !round_                              ? kNone
                          : env.kind == EnvelopeKind::kPartial ? round_->partials
                                                               : round_->unmasks;
  const EnvelopeRule rule = JudgeEnvelope(current(), routed, sender, env);
  if (rule != EnvelopeRule::kRoute) return out.push_back(act::Reject{EnvelopeRefusal(rule, env)});
  if (!InRound(sender, env.round, "envelope", out)) return;  // a patient that dropped out
  out.push_back(act::Route{env.kind, env.from, env.to});
}

Actions Coordinator::Routed(const act::Route& route, Clock::time_point now) {
  Actions out;
  if (!round_) return out;
  const std::optional<size_t> i = round_->Index(route.from);
  if (!i) return out;
  (route.kind == EnvelopeKind::kPartial ? round_->partials : round_->unmasks)[*i] = true;
  Settle(false, now, out);
  return out;
}

void Coordinator::OnBatch(const std::string& sender, const Batch& batch, Clock::time_point now,
                          Actions& out) {
  if (batch.kind == BatchKind::kSurvivors) return OnSurvivors(sender, batch, now, out);
  const std::string what(batch.kind == BatchKind::kShares ? "shares" : "confirmations");
  if (batch.kind == BatchKind::kKeys)
    return out.push_back(act::Reject{"a node may not send keys batches"});
  if (!InRound(sender, batch.round, what, out)) return;
  Round& r = *round_;
  const std::optional<size_t> i = r.Index(sender);
  if (!i) return out.push_back(act::Reject{what + " from the hospital"});
  if (batch.kind == BatchKind::kConfirm && !r.graph->complete())
    return out.push_back(act::Reject{"a neighbourhood round is confirmed by its hospital"});
  const bool shares = batch.kind == BatchKind::kShares;
  const Phase phase = shares ? Phase::kShare : Phase::kConfirm;
  if (r.update.phase != phase)
    return out.push_back(
        act::Reject{what + " outside the " + std::string(PhaseName(phase)) + " phase"});
  // Shares go to the other members of U1, confirmations to the other survivors.
  const Members& set = shares ? r.update.sets.joined : r.update.sets.masked;
  if (!set[*i])
    return out.push_back(act::Reject{what + " from a patient that " +
                                     (shares ? "did not join" : "is not a survivor")});
  Members& answered = shares ? r.shared : r.confirmed;
  if (answered[*i]) return out.push_back(act::Reject{"duplicate " + what});
  if (shares) {
    // One item for each peer in U1, and nothing else (indices are distinct: the decoder refuses
    // one given twice).
    size_t peers = 0;
    for (uint32_t v : r.graph->Peers(static_cast<uint32_t>(*i))) peers += set[v];
    bool fits = batch.items.size() == peers;
    for (const BatchItem& item : batch.items)
      fits = fits && item.index < r.n && set[item.index] &&
             r.graph->Adjacent(static_cast<uint32_t>(*i), item.index);
    if (!fits)
      return out.push_back(act::Reject{r.graph->complete()
                                           ? "shares not one for each other patient that joined"
                                           : "a shares batch must hold one share for each "
                                             "neighbour in U1"});
    std::vector<BatchItem>& kept = r.shares_from[*i];
    kept = batch.items;
    std::sort(kept.begin(), kept.end(),
              [](const BatchItem& a, const BatchItem& b) { return a.index < b.index; });
  } else {
    // The patient's own signature, once.
    if (batch.items.size() != 1 || batch.items[0].index != *i)
      return out.push_back(act::Reject{"a confirmation is one signature, the sender's own"});
    std::copy(batch.items[0].data.begin(), batch.items[0].data.end(), r.confirmations[*i].begin());
  }
  answered[*i] = true;
  Settle(false, now, out);
}

Actions Coordinator::Undeliverable(const std::string& to, Clock::time_point now) {
  Actions out;
  if (!round_) return out;
  if (to == round_->update.params.hospital) {
    Finish(Phase::kAbort, "undeliverable to " + to + ": " + to + " is not connected", now, out);
    return out;
  }
  return Disconnected(to, now);
}

Actions Coordinator::Disconnected(const std::string& party, Clock::time_point now) {
  Actions out;
  if (!round_) return out;
  Round& r = *round_;
  if (party == r.update.params.hospital) {
    Finish(Phase::kAbort, party + " disconnected", now, out);
    return out;
  }
  const std::optional<size_t> i = r.Index(party);
  if (!i || r.gone[*i]) return out;
  r.gone[*i] = true;
  out.push_back(act::Log{"event=dropout round=" + RoundHex(r.update.round) + " patient=" + party +
                         " phase=" + std::string(PhaseName(r.update.phase))});
  Settle(false, now, out);
  return out;
}

void Coordinator::OnSurvivors(const std::string& sender, const Batch& batch, Clock::time_point now,
                              Actions& out) {
  if (!InRound(sender, batch.round, "survivors", out)) return;
  Round& r = *round_;
  if (sender != r.update.params.hospital)
    return out.push_back(act::Reject{"survivors from a patient"});
  if (r.graph->complete())
    return out.push_back(act::Reject{"a full round is confirmed by its patients"});
  if (r.update.phase != Phase::kConfirm)
    return out.push_back(act::Reject{"survivors outside the confirm phase"});
  if (r.survivors) return out.push_back(act::Reject{"duplicate survivors"});
  if (batch.items.size() != 1 || batch.items[0].index != 0)
    return out.push_back(act::Reject{"survivors are one signature, the hospital's"});
  Signature& s = r.survivors.emplace();
  std::copy(batch.items[0].data.begin(), batch.items[0].data.end(), s.begin());
  Settle(false, now, out);
}

void Coordinator::OnAck(const std::string& sender, const Ack& ack, Clock::time_point now,
                        Actions& out) {
  if (!InRound(sender, ack.round, "acknowledgement", out)) return;
  const Round& r = *round_;
  if (sender != r.update.params.hospital)
    return out.push_back(act::Reject{"acknowledgement from a patient"});
  if (!MayAcknowledge(r.update, r.unmasks))
    return out.push_back(act::Reject{"acknowledgement before " +
                                     std::to_string(r.update.params.threshold) +
                                     " unmasks were routed"});
  Finish(Phase::kDone, "", now, out);
}

namespace {

// What a phase waits for: from whom, and what the broker has of them. Patients whose
// connection closed before they answered are not waited for; those gone after answering still
// count where what they sent is in hand (a masked input routed, confirmations kept), not where
// the next phase needs them (a join or shares of someone who will not mask).
struct Waiting {
  const Members* from;
  const Members* answered;
  const char* verb;  // "<names> did not <verb>"
  bool gone_count;   // whether an answer from a patient gone since counts
};

}  // namespace

void Coordinator::Settle(bool deadline, Clock::time_point now, Actions& out) {
  Round& r = *round_;
  const Members everyone(r.n, true);
  const RoundSets& sets = r.update.sets;
  Waiting w{};
  switch (r.update.phase) {
    case Phase::kOpen:
      w = {&everyone, &r.joined, "join", false};
      break;
    case Phase::kShare:
      w = {&sets.joined, &r.shared, "send shares", false};
      break;
    case Phase::kMask:
      w = {&sets.shared, &r.partials, "send a masked input", true};
      break;
    case Phase::kConfirm:
      if (!r.graph->complete()) return SettleSurvivors(deadline, now, out);
      w = {&sets.masked, &r.confirmed, "confirm", true};
      break;
    case Phase::kUnmask:
      w = {&Unmaskers(sets), &r.unmasks, "unmask", true};
      break;
    default:
      return;
  }
  // Counted after every message: names are gathered only for an abort (a round of 10,000 would
  // otherwise copy thousands of names 10,000 times a phase).
  size_t have = 0, waiting = 0, members = 0;
  for (size_t i = 0; i < r.n; ++i) {
    if (!(*w.from)[i]) continue;
    ++members;
    if ((*w.answered)[i] && (w.gone_count || !r.gone[i])) {
      ++have;
    } else if (!deadline && !r.gone[i]) {
      ++waiting;
    }
  }
  const uint32_t t = r.update.params.threshold;
  std::vector<std::string> missing, gone;
  if (have + waiting < t) {
    for (size_t i = 0; i < r.n; ++i) {
      if (!(*w.from)[i] || ((*w.answered)[i] && (w.gone_count || !r.gone[i]))) continue;
      missing.push_back(r.update.params.participants[i]);
      if (r.gone[i]) gone.push_back(r.update.params.participants[i]);
    }
  }
  const std::string of = " of " + std::to_string(members);
  const std::string threshold = ", the threshold is " + std::to_string(t) + ")";
  // At the deadline, who did not answer; before it, who dropped out so that T cannot be had.
  if (have + waiting < t)
    return Finish(Phase::kAbort,
                  deadline ? JoinList(missing) + " did not " + w.verb + " (" +
                                 std::to_string(have) + of + " did" + threshold
                           : JoinList(gone) + " dropped out (at most " +
                                 std::to_string(have + waiting) + of + " can " + w.verb + threshold,
                  now, out);
  if (r.update.phase == Phase::kUnmask) {
    // Unmasks come until the hospital acknowledges; a deadline with T of them in is its silence.
    if (deadline)
      Finish(Phase::kAbort, r.update.params.hospital + " did not acknowledge the result", now, out);
    return;
  }
  if (waiting == 0) Next(now, out);
}

void Coordinator::SettleSurvivors(bool deadline, Clock::time_point now, Actions& out) {
  Round& r = *round_;
  const Members& masked = r.update.sets.masked;
  size_t can = 0, members = 0;
  std::vector<std::string> gone;
  for (size_t i = 0; i < r.n; ++i) {
    if (!masked[i]) continue;
    ++members;
    if (r.gone[i]) {
      gone.push_back(r.update.params.participants[i]);
    } else {
      ++can;
    }
  }
  const uint32_t t = r.update.params.threshold;
  if (can < t)
    return Finish(Phase::kAbort,
                  JoinList(gone) + " dropped out (at most " + std::to_string(can) + " of " +
                      std::to_string(members) + " can unmask, the threshold is " +
                      std::to_string(t) + ")",
                  now, out);
  if (r.survivors) return Next(now, out);
  if (deadline)
    Finish(Phase::kAbort, r.update.params.hospital + " did not confirm the survivors", now, out);
}

void Coordinator::Next(Clock::time_point now, Actions& out) {
  Round& r = *round_;
  RoundSets& sets = r.update.sets;
  auto present = [&r](const Members& answered) {
    Members m = answered;
    for (size_t i = 0; i < r.n; ++i) m[i] = m[i] && !r.gone[i];
    return m;
  };
  switch (r.update.phase) {
    case Phase::kOpen:
      sets.joined = present(r.joined);
      Advance(Phase::kShare, "", now, out);
      r.shares_from.assign(r.n, {});
      SendKeys(out);
      break;
    case Phase::kShare:
      sets.shared = present(r.shared);
      Advance(Phase::kMask, "", now, out);
      SendShares(out);
      r.shares_from.clear();
      r.shares_from.shrink_to_fit();
      break;
    case Phase::kMask:
      // Survivors that are gone since their masked input stay survivors (their input is in the
      // sum) but cannot confirm or unmask: the check below counts them out at once.
      sets.masked = r.partials;
      if (HasConfirmPhase(r.update.params, sets)) {
        r.confirmations.assign(r.n, Signature{});
        Advance(Phase::kConfirm, "", now, out);
      } else {
        Advance(Phase::kUnmask, "", now, out);
      }
      break;
    case Phase::kConfirm:
      if (r.graph->complete()) {
        sets.confirmed = r.confirmed;
        Advance(Phase::kUnmask, "", now, out);
        SendConfirmations(out);
      } else {
        sets.confirmed = sets.masked;  // U4 = U3: every survivor unmasks
        Advance(Phase::kUnmask, "", now, out);
        SendSurvivors(out);
      }
      break;
    default:
      return;
  }
  // The new phase may already be out of reach (members of its set gone): abort now rather than
  // route another envelope first.
  Settle(false, now, out);
}

// Each member w of U1 gets the cpk || spk || signature of each of its peers in U1, the hospital
// every member's (and the capture keeps its batch: the hospital's views are computed from it).
void Coordinator::SendKeys(Actions& out) const {
  const Round& r = *round_;
  const Members& joined = r.update.sets.joined;
  std::vector<uint32_t> everyone(r.n);
  for (size_t u = 0; u < r.n; ++u) everyone[u] = static_cast<uint32_t>(u);
  auto keys_batch = [&](std::optional<size_t> of) {
    Batch batch{r.update.round, BatchKind::kKeys, {}};
    for (uint32_t u : of ? r.graph->Peers(static_cast<uint32_t>(*of)) : everyone) {
      if (!joined[u]) continue;
      const Join& j = r.joins[u];
      std::vector<uint8_t> data(j.cpk.begin(), j.cpk.end());
      data.insert(data.end(), j.spk.begin(), j.spk.end());
      data.insert(data.end(), j.signature.begin(), j.signature.end());
      batch.items.push_back({static_cast<uint32_t>(u), std::move(data)});
    }
    return batch;
  };
  for (size_t w = 0; w < r.n; ++w)
    if (joined[w]) out.push_back(act::Send{r.update.params.participants[w], keys_batch(w), false});
  out.push_back(act::Send{r.update.params.hospital, keys_batch(std::nullopt), true});
}

// Each member w of U2 gets the share each of its peers in U2 sealed to it.
void Coordinator::SendShares(Actions& out) const {
  const Round& r = *round_;
  const Members& shared = r.update.sets.shared;
  for (size_t w = 0; w < r.n; ++w) {
    if (!shared[w]) continue;
    Batch batch{r.update.round, BatchKind::kShares, {}};
    for (uint32_t u : r.graph->Peers(static_cast<uint32_t>(w))) {
      if (!shared[u]) continue;
      const std::vector<BatchItem>& from = r.shares_from[u];
      const auto at =
          std::lower_bound(from.begin(), from.end(), w,
                           [](const BatchItem& item, size_t index) { return item.index < index; });
      batch.items.push_back({u, at->data});  // u's batch was one item per peer in U1, w one
    }
    out.push_back(act::Send{r.update.params.participants[w], std::move(batch), false});
  }
}

// Each member w of U4 gets every other member's confirmation.
void Coordinator::SendConfirmations(Actions& out) const {
  const Round& r = *round_;
  const Members& confirmed = r.update.sets.confirmed;
  for (size_t w = 0; w < r.n; ++w) {
    if (!confirmed[w]) continue;
    Batch batch{r.update.round, BatchKind::kConfirm, {}};
    for (size_t u = 0; u < r.n; ++u) {
      if (u == w || !confirmed[u]) continue;
      const Signature& signature = r.confirmations[u];
      batch.items.push_back(
          {static_cast<uint32_t>(u), std::vector<uint8_t>(signature.begin(), signature.end())});
    }
    out.push_back(act::Send{r.update.params.participants[w], std::move(batch), false});
  }
}

// Each member of U3 gets the hospital's signature on the survivors (a neighbourhood round).
void Coordinator::SendSurvivors(Actions& out) const {
  const Round& r = *round_;
  const Signature& s = *r.survivors;
  for (size_t w = 0; w < r.n; ++w)
    if (r.update.sets.masked[w])
      out.push_back(act::Send{r.update.params.participants[w],
                              Batch{r.update.round,
                                    BatchKind::kSurvivors,
                                    {{0, std::vector<uint8_t>(s.begin(), s.end())}}},
                              false});
}

Actions Coordinator::CaptureFailed(Clock::time_point now) {
  return Abort("capture could not be written", now);
}

Actions Coordinator::Shutdown(Clock::time_point now) {
  queue_.clear();
  return Abort("broker shutting down", now);
}

Actions Coordinator::Abort(const std::string& reason, Clock::time_point now) {
  Actions out;
  if (round_) Finish(Phase::kAbort, reason, now, out);
  return out;
}

void Coordinator::Advance(Phase phase, const std::string& reason, Clock::time_point now,
                          Actions& out) {
  Round& r = *round_;
  r.update.phase = phase;
  r.update.seq = ++seq_;
  r.update.reason = reason.substr(0, kMaxReasonLength);
  r.phase_deadline = now + std::chrono::milliseconds(r.update.deadline_ms);
  out.push_back(act::Publish{r.update});
}

void Coordinator::Finish(Phase phase, const std::string& reason, Clock::time_point now,
                         Actions& out) {
  Advance(phase, reason, now, out);
  ++(phase == Phase::kDone ? rounds_done_ : rounds_aborted_);
  round_.reset();
  if (!queue_.empty()) {
    Pending next = std::move(queue_.front());
    queue_.pop_front();
    Open(std::move(next), now, out);
  }
}

std::optional<Coordinator::Clock::time_point> Coordinator::NextDeadline() const {
  if (!round_) return std::nullopt;
  return round_->phase_deadline;
}

Actions Coordinator::Tick(Clock::time_point now) {
  Actions out;
  if (round_ && now >= round_->phase_deadline) Settle(true, now, out);
  return out;
}

}  // namespace tally
