// tally-replay's library: reading a round's capture back — its timeline, a structural check,
// an audit with the hospital's keys, and a replay (injection) demonstration against a live
// broker.
//
// Everything here works on a capture's bytes (schema/capture.h) and never trusts them: a
// damaged file is reported with the offset where it stops making sense, never by crashing.
// Every envelope is sealed to the hospital under the round's view (nodes/seal.h RoundView): a
// patient's masked input ("partial") or its shares for unmasking ("unmask"). So only the
// hospital can audit: it rebuilds its view from the capture's header, the keys batch the broker
// gave it and the mask phase's set, opens each envelope, rebuilds the secrets from the unmasks
// and prints the aggregate (which the hospital learns anyway), never an individual input.
// Nothing is sealed to a patient, so a patient's keys open nothing.
//
// Unlike tally_tools, this library links the sealing code (tally_seal): it holds a party's
// secret keys when auditing or injecting.
// Thread-compatible: free functions over values; Run talks to the network only for --inject.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nodes/seal.h"
#include "schema/capture.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally::replay {

struct Options {
  std::filesystem::path file;
  bool json = false;
  bool check = false;
  std::filesystem::path keys_dir;  // audit / inject
  std::string as;                  // the party whose keys are used
  std::filesystem::path results;   // audit as the hospital: its results file
  std::string inject;              // broker router endpoint
  uint32_t timeout_ms = 10000;     // inject: handshake, each send and barrier waits
};

inline constexpr const char* kUsage =
    "usage: tally-replay FILE [--json]\n"
    "       tally-replay FILE --check [--json]\n"
    "       tally-replay FILE --keys DIR --as HOSPITAL [--results FILE] [--json]\n"
    "       tally-replay FILE --inject ENDPOINT --keys DIR --as NAME [--timeout-ms MS] [--json]\n"
    "\n"
    "Reads a round's capture (.tcap) written by tally-broker.\n"
    "  (no option)         the timeline: parameters, then every phase change, envelope and\n"
    "                      rejected message in time order, then the outcome\n"
    "  --check             structural check: header and trailer, phases open -> share ->\n"
    "                      mask -> [confirm ->] unmask -> done or abort, each phase's sets\n"
    "                      (nested, at least the threshold, unchanged once fixed), the keys\n"
    "                      batch (one, to the hospital, for those who joined), partials from\n"
    "                      those who shared in the mask phase and unmasks from the survivors in\n"
    "                      the unmask phase, only to the hospital and one each (a completed\n"
    "                      round has every survivor's and at least T unmasks), round ids,\n"
    "                      timestamps, no damaged record\n"
    "  --keys DIR --as H   audit as the round's hospital H: rebuild its view of the round from\n"
    "                      the header, the keys batch and the mask phase's set, open every\n"
    "                      envelope with H's secret keys under its binding (round, kind,\n"
    "                      sender, recipient, view), add the survivors' masked inputs, rebuild\n"
    "                      the secrets from the first T unmasks and remove the masks: the\n"
    "                      aggregate. Only the hospital can audit: nothing is sealed to patients\n"
    "  --results FILE      audit: compare the aggregate with the hospital's results file\n"
    "  --inject ENDPOINT   re-send N's captured envelopes, byte for byte, to a live broker's\n"
    "                      router, then send one invalid round request the broker refuses with a\n"
    "                      notice (proof it processed everything before). N is a patient (its\n"
    "                      partial and unmask) or the hospital (it sends none; the captured\n"
    "                      envelopes are also shown to fail to open under a fresh round id)\n"
    "  --timeout-ms MS     inject: how long to wait for the handshake, each send and the notice\n"
    "                      (10000)\n"
    "  --json              JSON lines instead of text\n"
    "Exit: 0 ok, 1 the capture is damaged or a check, audit or injection failed, 2 bad usage\n"
    "(including an audit as anyone but the hospital).\n";

// What tally-replay prints when asked to audit as a party that is not a hospital.
inline constexpr const char* kOnlyHospitalAudits =
    "only the hospital can audit a round: nothing is sealed to patients";

// Parses arguments (without argv[0]). An error is a usage error (exit 2). REQUIRES: no --help.
Result<Options> ParseArgs(const std::vector<std::string>& args);

// Runs one invocation; returns the exit code. Results go to `out`, errors to `err`.
int Run(const Options& options, std::ostream& out, std::ostream& err);

// One capture frame record with its frame decoded (when it decodes): an envelope the broker
// routed, or the keys batch it gave the hospital.
struct FrameEntry {
  size_t index = 0;     // 1-based, in file order among frame records
  uint64_t offset = 0;  // of the record in the file
  uint64_t t_us = 0;
  size_t size = 0;  // bytes of the frame
  std::optional<Envelope> envelope;
  std::optional<Batch> keys;
  std::string decode_error;  // when the frame decodes as neither
  bool damaged = false;      // its record's CRC did not match (CaptureContents::damaged)
};
std::vector<FrameEntry> Frames(const CaptureContents& contents);

// "frame #3 bob -> hospital (partial, offset 1234)", "frame #1 keys of 3 patients -> hospital
// (offset 310)".
std::string Describe(const FrameEntry& entry);

// The timeline as text or JSON lines (what `tally-replay FILE` prints).
void PrintTimeline(const CaptureContents& contents, bool json, std::ostream& out);

struct Problem {
  uint64_t offset = 0;
  std::string what;
};
// The structural check; empty when the capture passes.
std::vector<Problem> Check(const CaptureContents& contents);

// The hospital's view of the round as the capture records it: from the header, the keys batch
// (at `keys_offset`) and U2 as the first mask-phase record publishes it (at `offset`), viewed
// with `sealer`'s roster keys (Sealer::View), and the round keys it holds. An error when there is
// no keys batch or mask phase, the batch does not match those who joined, or the roster lacks a
// party of the round.
struct CapturedView {
  ViewDigest view{};
  Batch keys;      // the keys batch
  RoundSets sets;  // as the mask phase published them
  uint64_t keys_offset = 0;
  uint64_t offset = 0;
};
Result<CapturedView> HospitalView(const CaptureContents& contents, const Sealer& sealer);

}  // namespace tally::replay
