// The hospital's results: the JSON line it prints with --json and appends to its results file
// (schema/PROTOCOL.md, "Results file"), written and read here only.
//
// A results file is a journal, one JSON object per line, appended and fsync'd by the hospital:
//   {"round": "…", "aggregate": 856, "participants": ["alice", …], "range": 1000,
//    "in_range": true, "elapsed_ms": 1.204}            the round's result, written before the
//                                                      hospital acknowledges the round
//   {"round": "…", "aborted": "hospital did not acknowledge the result"}
//                                                      the round aborted after its result was
//                                                      written: that result does not stand
// Numbers above 2^53 are written as decimal strings (JsonNumbers, schema/text.h).
// Thread-safety: functions on values.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/protocol.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

struct RoundResult {
  RoundId round{};
  // The round's parameters. A results line holds the participants and the range; read back,
  // `length` is the aggregate's and `hospital` is empty (the file is the hospital's own).
  RoundParams params;
  std::vector<uint64_t> aggregate;
  bool in_range = true;   // every element of the aggregate lies in [0, range]
  double elapsed_ms = 0;  // from sending the request to the aggregate in hand (before writing)
  bool operator==(const RoundResult&) const = default;
};

// One JSON object, no newline. A length-1 aggregate is written as a number, longer ones as an
// array.
std::string ResultJson(const RoundResult& result);
// {"round": "…", "aborted": "<reason>"}
std::string AbortJson(const RoundId& round, std::string_view reason);

// One line of a results file, or of a hospital's --json output: a result or an abort.
struct ResultsLine {
  RoundId round{};
  std::optional<RoundResult> result;   // set for a result line
  std::optional<std::string> aborted;  // set for an abort line
};
// Strict: the fields above with their types, nothing else, no trailing text.
Result<ResultsLine> ParseResultsLine(std::string_view line);

// What a results file says of one round: the result written for it (if any) and, if a later
// line says so, that the round aborted after all.
struct RoundRecord {
  std::optional<RoundResult> result;
  std::optional<std::string> aborted;
  // The result stands: written, and not aborted afterwards.
  bool done() const { return result && !aborted; }
};
// Fails on an unreadable file or a line that does not parse (naming the line).
Result<RoundRecord> ReadRoundRecord(const std::filesystem::path& path, const RoundId& round);

}  // namespace tally
