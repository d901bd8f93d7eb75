// The hospital's results: the JSON line it prints with --json and appends to its results file
// (schema/PROTOCOL.md, "Results file"), written and read here only.
//
// A results file is a journal, one JSON object per line, appended and fsync'd by the hospital:
//   {"round": "…", "aggregate": 856, "participants": ["alice", …], "dropped": [],
//    "range": 1000, "in_range": true, "elapsed_ms": 1.204}
//                                                      the result of a round without columns,
//                                                      over the participants not dropped,
//                                                      written before the hospital
//                                                      acknowledges the round
//   {"round": "…", "columns": [{"name": "bmi", "count": 3, "sum": "96.3", "mean": "32.100"},
//    …], "participants": […], "dropped": […], "in_range": true, "elapsed_ms": 2.5}
//                                                      the result of a round with columns:
//                                                      sums and means as exact decimal strings
//                                                      (arrays of them for vector columns), a
//                                                      mean null where no patient gave a value,
//                                                      and "weight" (the sum of the weights) in
//                                                      a weighted round
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

// One column of a round with columns, decoded from the aggregate (nodes/aggregate.h
// DecodeColumns): exact sums with the offsets removed, and means over the patients who gave a
// value (schema/PROTOCOL.md, "Columns and values").
struct ColumnResult {
  std::string name;
  uint64_t count = 0;       // patients who gave this column (not the missing cells)
  std::string weight = {};  // a weighted round: the sum of those patients' weights; else ""
  std::vector<std::string> sum = {};  // per element: a decimal with the column's decimals (plus
                                      // the weight's, in a weighted round)
  std::vector<std::optional<std::string>> mean = {};  // per element: sum / count (or / weight)
                                                      // with 3 more decimals; nullopt if no value
  bool operator==(const ColumnResult&) const = default;
};

struct RoundResult {
  RoundId round{};
  // The round's parameters. A results line holds the participants and the range; read back,
  // `length` is the aggregate's (or the columns') and `hospital` is empty (the file is the
  // hospital's own).
  RoundParams params;
  std::vector<uint64_t> aggregate;    // a round without columns: the sums
  std::vector<ColumnResult> columns;  // a round with columns: per column
  // Participants whose input is not in the sum: they dropped out before their masked input
  // reached the hospital (or before joining). The sum is over the others, the survivors.
  std::vector<std::string> dropped;
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
