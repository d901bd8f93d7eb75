#include "schema/csv.h"

#include <cctype>

namespace tally {

Result<std::vector<CsvRow>> ParseCsv(std::string_view text) {
  std::vector<CsvRow> rows;
  size_t at = 0, line = 1;
  while (at < text.size()) {
    const size_t first_line = line;
    // A blank line (or the end of the file) is no record.
    if (text[at] == '\n' || text.substr(at, 2) == "\r\n") {
      at += text[at] == '\n' ? 1 : 2;
      ++line;
      continue;
    }
    CsvRow row;
    for (;;) {
      std::string field;
      if (at < text.size() && text[at] == '"') {
        ++at;
        for (;;) {
          if (at >= text.size())
            return Status::Error("line " + std::to_string(first_line) + ": unterminated quote");
          if (text[at] == '"') {
            if (at + 1 < text.size() && text[at + 1] == '"') {
              field += '"';
              at += 2;
              continue;
            }
            ++at;
            break;
          }
          if (text[at] == '\n') ++line;
          field += text[at++];
        }
        if (at < text.size() && text[at] != ',' && text[at] != '\n' && text.substr(at, 2) != "\r\n")
          return Status::Error("line " + std::to_string(line) + ": text after a closing quote");
      } else {
        while (at < text.size() && text[at] != ',' && text[at] != '\n' &&
               text.substr(at, 2) != "\r\n")
          field += text[at++];
      }
      row.push_back(std::move(field));
      if (at < text.size() && text[at] == ',') {
        ++at;
        continue;
      }
      if (at < text.size()) at += text[at] == '\n' ? 1 : 2;  // the record's line break
      ++line;
      break;
    }
    if (!rows.empty() && row.size() != rows[0].size())
      return Status::Error("line " + std::to_string(first_line) + ": " +
                           std::to_string(row.size()) + " fields, the first line has " +
                           std::to_string(rows[0].size()));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string ColumnName(std::string_view header) {
  std::string out;
  for (char c : header) {
    if (c == ' ' || c == '-') {
      out += '_';
    } else {
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  return out;
}

}  // namespace tally
