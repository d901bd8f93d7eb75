// Small text helpers shared by Tally's processes: quoting values in key=value log lines, and
// strict decimal parsing for command-line flags.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tally {

// "value" with quotes and backslashes escaped and anything not printable ASCII shown as '?',
// so a log line stays one line whatever a peer sent.
std::string Quote(std::string_view s);

// An aggregate as Tally prints it in JSON: a number for one element, else an array
// ("[1, 2, 3]").
std::string JsonNumbers(std::span<const uint64_t> values);

// `v` with `digits` decimals ("%.*f"), e.g. for millisecond figures in JSON.
std::string FormatFixed(double v, int digits);

// Decimal digits only (no sign, no spaces), without overflow. False otherwise.
bool ParseU64(std::string_view s, uint64_t& out);
// As ParseU64, and within [min, UINT32_MAX].
bool ParseU32(std::string_view s, uint32_t min, uint32_t& out);

}  // namespace tally
