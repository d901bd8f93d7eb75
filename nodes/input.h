// A patient's input file (tally-node --input FILE), read into a PatientInput (nodes/aggregate.h):
//   one value per line: a vector, or one value, for a round with no columns or one column;
//   or CSV: a header naming the columns, then one row of values (a cell may be empty: missing).
// Blank lines and lines starting with '#' are skipped. Errors name the file and the line, never
// a value. Thread-safety: pure functions.
#pragma once

#include <filesystem>

#include "nodes/aggregate.h"
#include "schema/status.h"

namespace tally {

// `floats`: the values are floats to clip and round stochastically (PatientInput::floats); a
// one-value-per-line file then holds numbers as strtod reads them ("1e-3" too).
Result<PatientInput> ReadPatientInput(const std::filesystem::path& path, bool floats);

// A hospital's columns from its command line (tally-node --columns, --bounds, --decimals):
//   names     "bmi,bp" (empty: the names in `bounds`, or one column "value")
//   bounds    "LO:HI" for every column, or "bmi=10:80,bp=40:200" (required for each column)
//   decimals  "N" for every column, or "bmi=1,bp=0" (default: the most decimals written in the
//             column's bounds)
// Bounds are decimals; each must fit its column's decimals. Errors name the flag and column.
Result<std::vector<Column>> ParseColumns(const std::string& names, const std::string& bounds,
                                         const std::string& decimals);
// A weighted round's weights (tally-node --weight-max W): in [0, W], with as many decimals as W
// is written with ("2.5": one).
Result<Weight> ParseWeightMax(const std::string& text);

}  // namespace tally
