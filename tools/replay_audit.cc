// tally-replay --keys DIR --as HOSPITAL: the hospital's audit of a captured round. It opens
// every partial under its binding and the round's view, adds them up (the masks cancel) and
// compares the aggregate with its results file. Plaintext partials are wiped as soon as added.
#include <sodium.h>

#include <algorithm>
#include <set>

#include "nodes/aggregate.h"
#include "schema/results.h"
#include "schema/text.h"
#include "tools/replay_internal.h"

namespace tally::replay {

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
  // The view the hospital opens with. Public (the broker publishes the nonces): printed.
  const Result<CapturedView> view = HospitalView(c, *sealer);
  if (view.ok()) {
    p.Line("view",
           "view of the round: " + Hex(view->view) +
               " (the header and the nonces of the sum phase at offset " +
               std::to_string(view->offset) + ")",
           "\"view\": " + JsonString(Hex(view->view)) +
               ", \"offset\": " + std::to_string(view->offset));
  } else {
    p.Line("view", "view of the round: unknown: " + view.message(),
           "\"view\": null, \"error\": " + JsonString(view.message()));
  }

  std::vector<uint64_t> aggregate(PayloadLength(h->params), 0);
  std::set<std::string> opened_from;
  size_t addressed = 0, opened = 0;
  for (const EnvelopeEntry& e : Envelopes(c)) {
    const std::string what = Describe(e);
    auto fail = [&](const std::string& why) {
      ++failures;
      p.Line("envelope", what + ": " + why,
             EnvelopeFields(e) + ", \"ok\": false, \"error\": " + JsonString(why));
    };
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
    if (!view.ok()) {
      fail("not opened: the hospital's view of the round is unknown (" + view.message() + ")");
      continue;
    }
    // The binding is rebuilt from the envelope's header, the auditor's own name and the view
    // from the capture; a header that disagrees with the capture's round fails even if the seal
    // opens, and a partial sealed under another view of the round does not open.
    Result<std::vector<uint8_t>> plain =
        sealer->Open(Binding{env.round, env.kind, env.from, o.as, view->view}, env.sealed);
    if (!plain.ok()) {
      fail(plain.status().code() == Status::Code::kUnauthentic ? "authentication failed"
                                                               : plain.message());
      continue;
    }
    Result<std::vector<uint64_t>> values =
        DecodePayload(plain.value(), env.kind, static_cast<uint32_t>(PayloadLength(h->params)));
    sodium_memzero(plain->data(), plain->size());
    if (!values.ok()) {
      fail("opened, but the payload is malformed: " + values.message());
      continue;
    }
    if (env.round != h->round) {
      fail("opened, but bound to round " + RoundHex(env.round) + ", not this round");
    } else if (std::find(h->params.participants.begin(), h->params.participants.end(), env.from) ==
               h->params.participants.end()) {
      fail("opened, but " + env.from + " is not a patient of this round");
    } else if (!opened_from.insert(env.from).second) {
      fail("opened, but repeats an earlier partial from " + env.from);
    } else if (e.damaged) {
      fail("opened, but its record fails the capture's CRC");
    } else {
      ++opened;
      for (size_t k = 0; k < aggregate.size(); ++k) aggregate[k] += values.value()[k];
      p.Line("envelope", what + ": opened under its binding (round, kind, sender, recipient, view)",
             EnvelopeFields(e) + ", \"ok\": true");
    }
    sodium_memzero(values->data(), values->size() * sizeof(uint64_t));
  }

  const CaptureTrailer* trailer = TrailerOf(c);
  const bool done = trailer != nullptr && trailer->done;
  const bool aborted = trailer != nullptr && !trailer->done;
  const size_t n = h->params.participants.size();
  p.Line("summary",
         o.as + ": " + std::to_string(opened) + " of " + std::to_string(addressed) +
             " envelopes addressed to it opened; a completed round sends it " + std::to_string(n) +
             " partials",
         "\"addressed\": " + std::to_string(addressed) + ", \"opened\": " + std::to_string(opened) +
             ", \"expected\": " + std::to_string(n));
  if (done && opened != n) {
    ++failures;
    p.Line("problem", "the round completed but " + std::to_string(opened) + " of " +
                          std::to_string(n) + " partials opened");
  }
  if (opened == n) {
    p.Line("aggregate",
           "aggregate (sum of the " + std::to_string(n) +
               " masked partials mod 2^64, the masks cancel): " + ShortNumbers(aggregate),
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
      } else if (columns.empty() ? recorded->result->aggregate == aggregate
                                 : recorded->result->columns == columns) {
        p.Line("results", "matches results file " + o.results.string(), "\"match\": true");
      } else {
        ++failures;
        p.Line(
            "results",
            "DIFFERS from results file " + o.results.string() + ": it records " +
                (columns.empty() ? ShortNumbers(recorded->result->aggregate) : "other column sums"),
            "\"match\": false");
      }
    }
  } else {
    p.Line("aggregate", "aggregate: not computable (" + std::to_string(opened) + " of " +
                            std::to_string(n) + " partials opened)");
    if (!o.results.empty() && !aborted) {
      ++failures;
      p.Line("results", "cannot compare with the results file without every partial");
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
