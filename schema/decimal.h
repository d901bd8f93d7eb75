// Exact decimal numbers, as clinical data writes them ("32.1", "-4.8598", "120"): parsed from
// text into an integer count of 10^-decimals units and printed back, never through a binary
// float, so 32.1 at one decimal is exactly 321. Tally's fixed-point values (schema/PROTOCOL.md,
// "Columns and values") are these integers.
// Thread-safety: pure functions over values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "schema/status.h"

namespace tally {

// GCC's and Clang's 128-bit integers: room for any sum of a round's values and its offsets.
__extension__ typedef __int128 Int128;
__extension__ typedef unsigned __int128 UInt128;

inline constexpr uint32_t kMaxDecimals = 18;     // digits after the point a round may ask for
inline constexpr size_t kMaxDecimalDigits = 36;  // digits in all, well inside an Int128

struct Decimal {
  Int128 units = 0;       // the value times 10^decimals
  uint32_t decimals = 0;  // digits written after the point (trailing zeros included)
  bool operator==(const Decimal&) const = default;
};

// "-?[0-9]+(.[0-9]+)?": an optional minus, digits, optionally a point and digits. No '+', no
// exponent, no spaces, at most kMaxDecimalDigits digits and kMaxDecimals after the point.
// Error: `"3x.1" is not a decimal` (the text quoted, cut at 40 characters).
Result<Decimal> ParseDecimal(std::string_view text);

// `d` in units of 10^-decimals, exactly. Fails when that would drop a nonzero digit, saying
// "has 5 decimals, the round allows 2" (trailing zeros are not significant: "4.10" has 1).
Result<Int128> ToUnits(const Decimal& d, uint32_t decimals);

// Whether `text` is written as a decimal ("-?[0-9]+(.[0-9]+)?") of at most `max_length`
// characters, whatever its size: how results lines are checked, whose sums and means can have
// more digits than ParseDecimal takes (up to 2 x 18 + 3 decimals).
bool IsDecimalText(std::string_view text, size_t max_length = 96);

// The digits after the point that are significant (trailing zeros dropped): "4.10" -> 1.
uint32_t SignificantDecimals(const Decimal& d);

// `units` of 10^-decimals as text: FormatUnits(-5, 2) == "-0.05", FormatUnits(321, 1) == "32.1".
std::string FormatUnits(Int128 units, uint32_t decimals);
inline std::string Format(const Decimal& d) { return FormatUnits(d.units, d.decimals); }

// numerator / denominator with `decimals` digits after the point, rounded half away from
// zero, exactly (long division). REQUIRES: denominator > 0.
std::string FormatRatio(Int128 numerator, UInt128 denominator, uint32_t decimals);

// 10^n. REQUIRES: n <= 38.
UInt128 Pow10(uint32_t n);

}  // namespace tally
