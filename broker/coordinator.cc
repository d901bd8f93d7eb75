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
  size_t shown = std::min(items.size(), max);
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

bool Coordinator::Round::IsParticipant(const std::string& name) const {
  const auto& ps = update.params.participants;
  return std::find(ps.begin(), ps.end(), name) != ps.end();
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
  if (!round_->IsParticipant(sender) && sender != round_->update.params.hospital) {
    out.push_back(act::Reject{std::string(what) + " from a party not in the round"});
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
  if (p.participants.empty()) p.participants = roster_.Names(Role::kPatient);
  for (const auto& name : p.participants) {
    const Certificate* c = roster_.Find(name);
    if (c == nullptr || c->role != Role::kPatient)
      return refuse(name + " is not a patient in the roster");
  }
  // At least 2 patients, and every sum computable without wrapping modulo 2^64.
  if (Status s = CheckRoundParams(p); !s.ok()) return refuse(s.message());
  if (round_) {
    if (queue_.size() >= options_.max_queue) return refuse("round queue full");
    queue_.push_back({sender, std::move(request)});
    out.push_back(act::Log{"event=queued from=" + sender +
                           " ticket=" + std::to_string(queue_.back().request.ticket) +
                           " position=" + std::to_string(queue_.size())});
    return;
  }
  Open(sender, std::move(request), now, out);
}

void Coordinator::Open(const std::string& hospital, Request request, Clock::time_point now,
                       Actions& out) {
  round_.emplace();
  PhaseUpdate& u = round_->update;
  u.round = env_.new_round_id();
  u.ticket = request.ticket;
  u.params = std::move(request.params);
  u.params.hospital = hospital;
  u.deadline_ms = request.deadline_ms == 0 ? options_.deadline_ms
                                           : std::min(request.deadline_ms, options_.deadline_ms);
  out.push_back(act::Log{
      "event=round-open round=" + RoundHex(u.round) + " hospital=" + hospital + " ticket=" +
      std::to_string(u.ticket) + " patients=" + std::to_string(u.params.participants.size()) +
      " length=" + std::to_string(u.params.length) + " range=" + std::to_string(u.params.range) +
      " columns=" + std::to_string(u.params.columns.size()) +
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
  if (!r.IsParticipant(sender)) return out.push_back(act::Reject{"join from the hospital"});
  if (r.update.phase != Phase::kOpen)
    return out.push_back(act::Reject{"join after the join phase"});
  if (!r.joined.emplace(sender, join.nonce).second)
    return out.push_back(act::Reject{"duplicate join"});
  if (r.joined.size() == r.update.params.participants.size()) {
    for (const auto& p : r.update.params.participants) r.update.nonces.push_back(r.joined.at(p));
    Advance(Phase::kSum, "", now, out);
  }
}

void Coordinator::OnRefuse(const std::string& sender, const Refuse& refuse, Clock::time_point now,
                           Actions& out) {
  if (!InRound(sender, refuse.round, "refusal", out)) return;
  const Round& r = *round_;
  // The hospital may give up its own round at any phase before it acknowledges (its roster
  // lacks a participant, a masked input does not open): the round cannot complete. A patient's
  // refusal answers the open phase; once it has joined, its masked input is owed, and a late
  // refusal must not turn a round the hospital may already hold into an abort.
  if (r.IsParticipant(sender) && (r.update.phase != Phase::kOpen || r.joined.count(sender)))
    return out.push_back(act::Reject{"refusal after the join phase"});
  Finish(Phase::kAbort, sender + " refused the round: " + refuse.reason, now, out);
}

void Coordinator::OnEnvelope(const std::string& sender, const Envelope& env, Actions& out) {
  static const std::set<std::string> kNone;
  const EnvelopeRule rule = JudgeEnvelope(current(), round_ ? round_->routed : kNone, sender, env);
  if (rule != EnvelopeRule::kRoute) return out.push_back(act::Reject{EnvelopeRefusal(rule, env)});
  out.push_back(act::Route{env.from, env.to});
}

void Coordinator::Routed(const std::string& from) {
  if (round_) round_->routed.insert(from);
}

Actions Coordinator::Undeliverable(const act::Route& route, Clock::time_point now) {
  Actions out;
  Finish(Phase::kAbort,
         std::string(KindName(EnvelopeKind::kPartial)) + " " + route.from + "->" + route.to +
             " undeliverable: " + route.to + " is not connected",
         now, out);
  return out;
}

void Coordinator::OnAck(const std::string& sender, const Ack& ack, Clock::time_point now,
                        Actions& out) {
  if (!InRound(sender, ack.round, "acknowledgement", out)) return;
  const Round& r = *round_;
  if (sender != r.update.params.hospital)
    return out.push_back(act::Reject{"acknowledgement from a patient"});
  if (!AllRouted(r.update.params, r.routed))
    return out.push_back(act::Reject{"acknowledgement before every partial was routed"});
  Finish(Phase::kDone, "", now, out);
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
    Open(next.hospital, std::move(next.request), now, out);
  }
}

std::optional<Coordinator::Clock::time_point> Coordinator::NextDeadline() const {
  if (!round_) return std::nullopt;
  return round_->phase_deadline;
}

Actions Coordinator::Tick(Clock::time_point now) {
  Actions out;
  if (!round_ || now < round_->phase_deadline) return out;
  const Round& r = *round_;
  std::vector<std::string> missing;
  if (r.update.phase == Phase::kOpen) {
    for (const auto& p : r.update.params.participants)
      if (!r.joined.count(p)) missing.push_back(p);
    Finish(Phase::kAbort, JoinList(missing) + " did not join", now, out);
  } else if (r.update.phase == Phase::kSum) {
    for (const auto& p : r.update.params.participants)
      if (!r.routed.count(p)) missing.push_back(p);
    Finish(Phase::kAbort,
           missing.empty() ? r.update.params.hospital + " did not acknowledge the result"
                           : (missing.size() == 1 ? "partial from " : "partials from ") +
                                 JoinList(missing) + " not sent",
           now, out);
  }
  return out;
}

}  // namespace tally
