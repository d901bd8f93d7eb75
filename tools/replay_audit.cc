// tally-replay --keys DIR --as HOSPITAL: the hospital's audit of a captured round. It opens every
// envelope under its binding and the round's view, adds up the survivors' masked inputs, rebuilds
// the secrets from the first T unmasks and removes the masks, as the hospital did, and compares
// the aggregate and who dropped with its results file. Plaintexts are wiped as soon as used.
#include <sodium.h>

#include <algorithm>
#include <set>

#include "nodes/hospital_round.h"
#include "schema/results.h"
#include "schema/text.h"
#include "tools/replay_internal.h"

namespace tally::replay {
namespace {

std::string Joined(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

}  // namespace

int Audit(const Options& o, std::span<const uint8_t> bytes, std::ostream& out, std::ostream& err) {
  Printer p(out, o.json);
  const CaptureContents c = ReadCapture(bytes, {.past_crc_mismatch = true});
  const CaptureHeader* h = HeaderOf(c);
  if (h == nullptr) {
    err << "tally-replay: " << o.file.string() << ": " << c.error << "\n";
    return 1;
  }
  if (o.as != h->params.hospital) {
    // Run already refused a patient or the broker: this is another hospital of the roster.
    err << "tally-replay: only the round's hospital can audit it: its partials are sealed to "
        << h->params.hospital << ", not to " << o.as << "\n";
    return 2;
  }
  Result<Identity> id = LoadIdentity(o.keys_dir, o.as);
  if (!id.ok()) {
    err << "tally-replay: " << id.message() << "\n";
    return 1;
  }
  const Roster* roster = &id->roster;
  const Sealer* sealer = &id->sealer;
  p.Line("audit",
         "audit of round " + RoundHex(h->round) + " as " + o.as + " (" +
             std::string(RoleName(id->me.pub.role)) + ")",
         "\"round\": " + JsonString(RoundHex(h->round)) + ", \"as\": " + JsonString(o.as));
  size_t failures = 0;
  if (roster->Fingerprint() != h->roster_fingerprint) {
    p.Line("note", "note: the roster in " + o.keys_dir.string() +
                       " is not the one the broker ran this round with (fingerprint " +
                       roster->Fingerprint().substr(0, 16) + ", capture " +
                       h->roster_fingerprint.substr(0, 16) + ")");
  }
  for (uint64_t at : c.damaged) {
    ++failures;
    p.Line("damaged",
           "record at offset " + std::to_string(at) + " fails its CRC: damaged in the capture",
           "\"offset\": " + std::to_string(at));
  }
  if (!c.ok()) {
    ++failures;
    p.Line("error",
           "capture stops at offset " + std::to_string(c.error_offset) + ": " + c.error +
               "; what follows was not audited",
           "\"offset\": " + std::to_string(c.error_offset));
  }
  // The view the hospital opens with. Public (the broker publishes the sets and the round keys
  // are public keys): printed.
  const Result<CapturedView> view = HospitalView(c, *sealer);
  if (view.ok()) {
    p.Line("view",
           "view of the round: " + Hex(view->view) + " (the header, the keys batch at offset " +
               std::to_string(view->keys_offset) + " and the set of those who shared at offset " +
               std::to_string(view->offset) + ")",
           "\"view\": " + JsonString(Hex(view->view)) +
               ", \"offset\": " + std::to_string(view->offset));
  } else {
    p.Line("view", "view of the round: unknown: " + view.message(),
           "\"view\": null, \"error\": " + JsonString(view.message()));
  }
  // The round's sets as its last phase record has them: the survivors, who unmasks. Checked as a
  // node checks a phase update (nested, sizes, the threshold), and their U2 must be the view's:
  // unchecked sets would have the unmasking index shares that are not there.
  RoundSets sets;
  PhaseUpdate last;
  last.params = h->params;
  for (const CaptureRecord& r : c.records)
    if (const auto* ph = std::get_if<CapturePhase>(&r)) {
      sets = ph->sets;
      last.phase = ph->phase;
    }
  last.sets = sets;
  if (Status checked = CheckSets(last); !checked.ok()) {
    ++failures;
    p.Line("problem", "the last phase record's sets: " + checked.message());
    sets = RoundSets{};
  } else if (view.ok() && sets.shared != view->sets.shared) {
    ++failures;
    p.Line("problem", "the last phase record's set of those who shared is not the view's");
    sets = RoundSets{};
  }
  const auto& names = h->params.participants;
  const size_t n = names.size();
  const uint32_t threshold = h->params.threshold;

  // The hospital's own arithmetic (nodes/hospital_round.h), fed what the capture holds.
  Result<HospitalRound> made = HospitalRound::Create(*sealer, h->round, h->params);
  if (!made.ok()) {
    err << "tally-replay: " << made.message() << "\n";
    return 1;
  }
  HospitalRound& sums = made.value();
  if (view.ok()) {
    if (Status learnt = sums.Learn(view->keys, view->sets); !learnt.ok()) {
      ++failures;
      p.Line("view", "the keys batch does not give the view: " + learnt.message());
    }
  }
  Members unmasked(n, false);
  size_t addressed = 0, opened = 0;
  for (const FrameEntry& e : Frames(c)) {
    const std::string what = Describe(e);
    auto fail = [&](const std::string& why) {
      ++failures;
      p.Line("envelope", what + ": " + why,
             FrameFields(e) + ", \"ok\": false, \"error\": " + JsonString(why));
    };
    if (e.keys) continue;  // the view's, above
    if (!e.envelope) {
      fail("damaged: the frame does not decode (" + e.decode_error + ")");
      continue;
    }
    const Envelope& env = *e.envelope;
    if (env.to != o.as) {
      if (e.damaged)
        fail("damaged in the capture (addressed to " + env.to + ", not auditable here)");
      continue;
    }
    ++addressed;
    if (!sums.has_view()) {
      fail("not opened: the hospital's view of the round is unknown" +
           (view.ok() ? std::string() : " (" + view.message() + ")"));
      continue;
    }
    // The binding is rebuilt from the envelope's header, the auditor's own name and the view
    // from the capture; a header that disagrees with the capture's round fails even if the seal
    // opens, and an envelope sealed under another view of the round does not open.
    const auto at = std::find(names.begin(), names.end(), env.from);
    const auto from = static_cast<size_t>(at - names.begin());
    if (env.round != h->round) {
      fail("bound to round " + RoundHex(env.round) + ", not this round");
      continue;
    }
    if (at == names.end()) {
      fail(env.from + " is not a patient of this round");
      continue;
    }
    if (e.damaged) {
      fail("its record fails the capture's CRC");
      continue;
    }
    Status added = Status::Ok();
    if (env.kind == EnvelopeKind::kPartial) {
      added = sums.AddPartial(env, from);
      if (added.ok() && sets.masked.size() == n && !sets.masked[from])
        added = Status::Error("opened, but " + env.from +
                              " is not a survivor: its masked input is in no sum");
    } else if (unmasked[from]) {
      added = Status::Error("a second unmask from " + env.from);
    } else {
      unmasked[from] = true;
      added = sums.AddUnmask(env, from, sets).status();
    }
    if (!added.ok()) {
      fail(added.code() == Status::Code::kUnauthentic ? "authentication failed" : added.message());
      continue;
    }
    ++opened;
    p.Line("envelope", what + ": opened under its binding (round, kind, sender, recipient, view)",
           FrameFields(e) + ", \"ok\": true");
  }

  const CaptureTrailer* trailer = TrailerOf(c);
  const bool done = trailer != nullptr && trailer->done;
  const bool aborted = trailer != nullptr && !trailer->done;
  const size_t survivors = CountOf(sets.masked);
  p.Line("summary",
         o.as + ": " + std::to_string(opened) + " of " + std::to_string(addressed) +
             " envelopes addressed to it opened: " + std::to_string(CountOf(sums.partials())) +
             " masked inputs of " + std::to_string(survivors) + " survivors, " +
             std::to_string(CountOf(unmasked)) + " unmasks (the threshold is " +
             std::to_string(threshold) + ")",
         "\"addressed\": " + std::to_string(addressed) + ", \"opened\": " + std::to_string(opened) +
             ", \"survivors\": " + std::to_string(survivors) +
             ", \"unmasks\": " + std::to_string(CountOf(unmasked)));
  // The aggregate, when every survivor's masked input opened and T unmasks did.
  std::optional<std::string> not_computable;
  std::vector<uint64_t> aggregate;
  if (sets.masked.size() != n || survivors == 0) {
    not_computable = "the capture names no survivors";
  } else if (sums.partials() != sets.masked) {
    not_computable = std::to_string(CountOf(sums.partials())) + " of " + std::to_string(survivors) +
                     " survivors' masked inputs opened";
  } else if (sums.unmasks() < threshold) {
    not_computable = std::to_string(sums.unmasks()) + " unmasks opened, the threshold is " +
                     std::to_string(threshold);
  } else if (Result<std::vector<uint64_t>> sum = sums.Aggregate(sets); !sum.ok()) {
    not_computable = sum.message();
  } else {
    aggregate = std::move(sum.value());
  }
  if (done && not_computable) {
    ++failures;
    p.Line("problem",
           "the round completed but its aggregate is not computable: " + *not_computable);
  }
  if (!not_computable) {
    std::vector<std::string> dropped;
    for (size_t i = 0; i < n; ++i)
      if (!sets.masked[i]) dropped.push_back(names[i]);
    p.Line("aggregate",
           "aggregate (the " + std::to_string(survivors) +
               " survivors' masked inputs mod 2^64, the masks removed with the secrets rebuilt "
               "from " +
               std::to_string(threshold) + " unmasks): " + ShortNumbers(aggregate) +
               (dropped.empty() ? "" : "; dropped: " + Joined(dropped)),
           "\"aggregate\": " + JsonNumbers(aggregate));
    // A round with columns: the per-column sums and means the hospital decodes from it.
    std::vector<ColumnResult> columns;
    if (!h->params.columns.empty()) {
      columns = DecodeColumns(h->params, aggregate);
      for (const ColumnResult& c : columns)
        p.Line("column",
               "  column " + c.name + ": count " + std::to_string(c.count) + ", sum " + c.sum[0] +
                   (c.sum.size() > 1 ? " ..." : "") + ", mean " + (c.mean[0] ? *c.mean[0] : "-"),
               "\"name\": " + JsonString(c.name) + ", \"count\": " + std::to_string(c.count) +
                   ", \"sum\": " + JsonString(c.sum[0]));
    }
    if (!o.results.empty() && !aborted) {
      auto recorded = ReadRoundRecord(o.results, h->round);
      if (!recorded.ok()) {
        ++failures;
        p.Line("results", recorded.message());
      } else if (!recorded->result) {
        ++failures;
        p.Line("results", "round not in results file " + o.results.string(), "\"match\": false");
      } else if (recorded->aborted) {
        ++failures;
        p.Line("results",
               "the results file " + o.results.string() + " records the round as aborted (" +
                   *recorded->aborted + "), the capture as done",
               "\"match\": false");
      } else if ((columns.empty() ? recorded->result->aggregate == aggregate
                                  : recorded->result->columns == columns) &&
                 recorded->result->dropped == dropped) {
        p.Line("results", "matches results file " + o.results.string(), "\"match\": true");
      } else {
        ++failures;
        p.Line("results",
               "DIFFERS from results file " + o.results.string() + ": it records " +
                   (recorded->result->dropped != dropped ? "other patients dropped"
                    : columns.empty()                    ? ShortNumbers(recorded->result->aggregate)
                                                         : "other column sums"),
               "\"match\": false");
      }
    }
  } else {
    p.Line("aggregate", "aggregate: not computable (" + *not_computable + ")");
    if (!o.results.empty() && !aborted) {
      ++failures;
      p.Line("results", "cannot compare with the results file without the aggregate");
    }
  }
  // A round has one outcome. An aborted round has no aggregate to audit; its hospital's results
  // file must not hold a result for it that still stands.
  if (aborted) {
    ++failures;
    p.Line("outcome", "the round aborted: " + trailer->reason + "; it has no aggregate",
           "\"outcome\": \"aborted\", \"reason\": " + JsonString(trailer->reason));
    if (!o.results.empty()) {
      auto recorded = ReadRoundRecord(o.results, h->round);
      if (!recorded.ok()) {
        p.Line("results", recorded.message());
      } else if (recorded->done()) {
        p.Line("results",
               "INCONSISTENT: the results file " + o.results.string() +
                   " holds a result for this aborted round and no abort after it",
               "\"match\": false");
      } else {
        p.Line("results",
               "the results file " + o.results.string() +
                   (recorded->result ? " records the result as aborted too"
                                     : " holds no result for this round"),
               "\"match\": true");
      }
    }
  }
  if (failures == 0) {
    p.Line("result", "audit: ok", "\"ok\": true");
    return 0;
  }
  p.Line("result", "audit: FAILED (" + Problems(failures) + ")", "\"ok\": false");
  return 1;
}

}  // namespace tally::replay
