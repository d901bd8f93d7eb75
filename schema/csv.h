// CSV as RFC 4180 writes it: fields separated by commas, records by LF or CRLF, a field in
// double quotes may hold commas, line breaks and "" for a quote. For patients' input files and
// tools/launch's cohort files. (The design card allows no CSV library; this is the part of RFC
// 4180 those files need.)
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"

namespace tally {

using CsvRow = std::vector<std::string>;

// Every record of `text`, fields unquoted. Blank lines are skipped; a last line without a line
// break is a record. Fails naming the line: an unterminated quote, text after a closing quote,
// or a record with another number of fields than the first.
Result<std::vector<CsvRow>> ParseCsv(std::string_view text);

// A CSV header's name as a column name: lowercased, spaces and dashes as underscores
// ("Mean Radius" -> "mean_radius"). The result may still be invalid (ValidName).
std::string ColumnName(std::string_view header);

}  // namespace tally
