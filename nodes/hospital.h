// Internal to tally_nodes: the hospital role (schema/PROTOCOL.md, "Order of a round").
// It requests rounds one after another, checks each opened round against its request and its
// roster, computes its view of the round from the patients' round keys (the keys batch) and
// the patients that shared, opens the masked inputs under it and adds those of the survivors,
// rebuilds from T unmasks the secrets that remove what is left of the masks, writes the result
// durably, acknowledges, and reports the result once the broker publishes done. A round has one
// outcome: if it aborts after the result was written, the results file says so too
// (schema/PROTOCOL.md, "Results file"). Thread-compatible.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "nodes/hospital_round.h"
#include "nodes/node.h"
#include "nodes/role.h"
#include "schema/durable.h"

namespace tally {

// The hospital's results file (schema/results.h): one JSON line per event, appended and fsync'd
// before the call returns, its folder too when the file is created (schema/durable.h).
class ResultsFile {
 public:
  // Opens (creating with mode 0600) for appending: a file that cannot be written is found
  // before any round runs.
  static Result<ResultsFile> Open(const std::filesystem::path& path);
  Status Append(const std::string& line) { return file_.Append(line + "\n"); }

 private:
  explicit ResultsFile(AppendFile file) : file_(std::move(file)) {}
  AppendFile file_;
};

class Hospital : public NodeRole {
 public:
  Hospital(const NodeOptions& options, const Roster& roster, const Sealer& sealer, Link& link,
           LogSink log, ResultsFile results, ResultSink on_result);
  ~Hospital() override;

  // Sends the first request.
  void Start();
  void OnPhase(const PhaseUpdate& update) override;
  void OnEnvelope(const Envelope& envelope) override;
  void OnBatch(const Batch& batch) override;
  void OnNotice(const Notice& notice) override;
  void OnLost(std::string_view socket) override;
  void Tick(Clock::time_point now) override;

 private:
  struct ActiveRound {
    PhaseUpdate opened;
    PhaseUpdate latest;                                // the latest update of the round
    std::optional<Batch> keys_batch;                   // the patients' round keys, once here
    std::optional<HospitalRound> sums;                 // once the round is adopted as ours
    Members unmasked;                                  // everyone whose unmask came
    std::map<std::string, size_t, std::less<>> index;  // participant -> its position
    std::optional<RoundResult> result;                 // written and acknowledged, not yet done
    bool confirmed = false;                            // a neighbourhood round's survivors signed
  };
  void SendRequest();
  // In a neighbourhood round's confirm phase, once every survivor's masked input is in: checks
  // that every secret can be rebuilt and signs the survivors.
  void MaybeConfirm();
  void Adopt(const PhaseUpdate& u);
  // Does what the latest update, the keys batch and the envelopes in hand allow: the view, the
  // masked inputs and unmasks kept so far, the result.
  void Step();
  void MaybeAcknowledge();
  void OnDone(const PhaseUpdate& u);
  void OnAbort(const PhaseUpdate& u);
  // Gives the round up with `why`: the broker aborts it at once, naming us.
  void Refuse(const std::string& why);

  const NodeOptions options_;
  // What every round is asked for, over this hospital; a neighbourhood round's graph gets a new
  // seed and signature with each request.
  RoundParams request_;
  ResultsFile results_;
  ResultSink on_result_;
  std::optional<ActiveRound> round_;
  // Envelopes that came before they could be opened (before the round's view, or its unmask
  // phase, was known).
  std::vector<Envelope> early_;
  size_t early_cap_ = 0;             // at most two per patient of the request
  std::optional<Batch> early_keys_;  // a keys batch that came before the round's id was known
  uint64_t ticket_ = 0;
  bool waiting_ = false;  // a request is out, its round not yet seen
  uint32_t rounds_done_ = 0;
  Clock::time_point last_progress_;
  Clock::time_point requested_at_;
};

}  // namespace tally
