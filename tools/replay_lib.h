// tally-replay's library: reading a round's capture back — its timeline, a structural check,
// an audit with one party's keys, and a replay (injection) demonstration against a live broker.
//
// Everything here works on a capture's bytes (schema/capture.h) and never trusts them: a
// damaged file is reported with the offset where it stops making sense, never by crashing.
// The audit opens only envelopes addressed to the auditing party and never prints a patient's
// share values; for the hospital it prints the aggregate (which the hospital learns anyway),
// never an individual partial.
//
// Unlike tally_tools, this library links the sealing code (tally_nodes): it holds a party's
// secret keys when auditing or injecting.
// Thread-compatible: free functions over values; Run talks to the network only for --inject.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

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
  uint32_t timeout_ms = 10000;     // inject: handshake and barrier waits
};

inline constexpr const char* kUsage =
    "usage: tally-replay FILE [--json]\n"
    "       tally-replay FILE --check [--json]\n"
    "       tally-replay FILE --keys DIR --as NAME [--results FILE] [--json]\n"
    "       tally-replay FILE --inject ENDPOINT --keys DIR --as NAME [--timeout-ms MS] [--json]\n"
    "\n"
    "Reads a round's capture (.tcap) written by tally-broker.\n"
    "  (no option)         the timeline: parameters, then every phase change, envelope and\n"
    "                      rejected message in time order, then the outcome\n"
    "  --check             structural check: header and trailer, phase order, every link of a\n"
    "                      completed round exactly once, round ids, timestamps, no damaged record\n"
    "  --keys DIR --as N   audit: open every envelope addressed to N with N's secret keys,\n"
    "                      each under its binding (round, kind, sender, recipient); as the\n"
    "                      hospital, recompute the aggregate from the captured partials\n"
    "  --results FILE      audit as the hospital: compare with the hospital's results file\n"
    "  --inject ENDPOINT   re-send N's captured envelopes, byte for byte, to a live broker's\n"
    "                      router, then send one invalid round request the broker refuses with a\n"
    "                      notice (proof it processed everything before). Envelopes addressed to\n"
    "                      N are also shown to fail to open under a fresh round id. Inject as a\n"
    "                      party that is not in the broker's active round: the broker routes a\n"
    "                      party's deliveries to its most recent connection.\n"
    "  --timeout-ms MS     inject: how long to wait for the handshake and the notice (10000)\n"
    "  --json              JSON lines instead of text\n"
    "Exit: 0 ok, 1 the capture is damaged or a check, audit or injection failed, 2 bad usage.\n";

// Parses arguments (without argv[0]). An error is a usage error (exit 2). REQUIRES: no --help.
Result<Options> ParseArgs(const std::vector<std::string>& args);

// Runs one invocation; returns the exit code. Results go to `out`, errors to `err`.
int Run(const Options& options, std::ostream& out, std::ostream& err);

// One capture envelope record with its frame decoded (when it decodes).
struct EnvelopeEntry {
  size_t index = 0;     // 1-based, in file order among envelope records
  uint64_t offset = 0;  // of the record in the file
  uint64_t t_us = 0;
  size_t size = 0;      // bytes of the frame
  std::optional<Envelope> envelope;
  std::string decode_error;  // when the frame does not decode as an Envelope
  bool damaged = false;      // salvaged from a record whose CRC did not match
};
std::vector<EnvelopeEntry> Envelopes(const CaptureContents& contents,
                                     const std::set<uint64_t>& damaged_offsets = {});

// "envelope #5 bob -> alice (share, offset 1234)".
std::string Describe(const EnvelopeEntry& entry);

// The timeline as text or JSON lines (what `tally-replay FILE` prints).
void PrintTimeline(const CaptureContents& contents, bool json, std::ostream& out);

struct Problem {
  uint64_t offset = 0;
  std::string what;
};
// The structural check; empty when the capture passes.
std::vector<Problem> Check(const CaptureContents& contents);

// Reads past records whose CRC does not match (recomputing it) so that an audit can name the
// damaged envelope; stops at any other error. `damaged` receives the salvaged records' offsets.
CaptureContents ReadSalvaging(std::span<const uint8_t> bytes, std::set<uint64_t>* damaged);

}  // namespace tally::replay
