#include "schema/decimal.h"

#include <algorithm>

namespace tally {
namespace {

std::string Digits(UInt128 v) {
  if (v == 0) return "0";
  std::string out;
  for (; v > 0; v /= 10) out.push_back(static_cast<char>('0' + static_cast<int>(v % 10)));
  std::reverse(out.begin(), out.end());
  return out;
}

UInt128 Magnitude(Int128 v) {
  return v < 0 ? UInt128(0) - static_cast<UInt128>(v) : static_cast<UInt128>(v);
}

}  // namespace

bool IsDecimalText(std::string_view text, size_t max_length) {
  if (text.empty() || text.size() > max_length) return false;
  std::string_view rest = text.front() == '-' ? text.substr(1) : text;
  const size_t point = rest.find('.');
  auto digits = [](std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return digits(rest.substr(0, point)) &&
         (point == std::string_view::npos || digits(rest.substr(point + 1)));
}

UInt128 Pow10(uint32_t n) {
  UInt128 p = 1;
  for (uint32_t i = 0; i < n; ++i) p *= 10;
  return p;
}

Result<Decimal> ParseDecimal(std::string_view text) {
  auto bad = [&] {
    const std::string shown(text.substr(0, 40));
    return Status::Error("\"" + shown + (text.size() > 40 ? "..." : "") + "\" is not a decimal");
  };
  std::string_view rest = text;
  const bool negative = !rest.empty() && rest.front() == '-';
  if (negative) rest.remove_prefix(1);
  const size_t point = rest.find('.');
  const std::string_view whole = rest.substr(0, point);
  const std::string_view fraction =
      point == std::string_view::npos ? std::string_view() : rest.substr(point + 1);
  auto all_digits = [](std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!all_digits(whole) || (point != std::string_view::npos && !all_digits(fraction)))
    return bad();
  if (whole.size() + fraction.size() > kMaxDecimalDigits)
    return Status::Error("\"" + std::string(text.substr(0, 40)) + "\" has more than " +
                         std::to_string(kMaxDecimalDigits) + " digits");
  if (fraction.size() > kMaxDecimals)
    return Status::Error("\"" + std::string(text.substr(0, 40)) + "\" has more than " +
                         std::to_string(kMaxDecimals) + " decimals");
  Decimal d;
  d.decimals = static_cast<uint32_t>(fraction.size());
  for (std::string_view part : {whole, fraction})
    for (char c : part) d.units = d.units * 10 + (c - '0');
  if (negative) d.units = -d.units;
  return d;
}

uint32_t SignificantDecimals(const Decimal& d) {
  uint32_t n = d.decimals;
  for (Int128 u = d.units; n > 0 && u % 10 == 0; u /= 10) --n;
  return n;
}

Result<Int128> ToUnits(const Decimal& d, uint32_t decimals) {
  if (d.decimals <= decimals) {
    // At most 36 digits times 10^18 could pass 2^127: refused, never wrapped.
    const UInt128 scale = Pow10(decimals - d.decimals);
    constexpr UInt128 kMax = (UInt128(1) << 127) - 1;
    if (Magnitude(d.units) > kMax / scale)
      return Status::Error(Format(d) + " is too large at " + std::to_string(decimals) +
                           " decimals");
    return d.units * static_cast<Int128>(scale);
  }
  const uint32_t significant = SignificantDecimals(d);
  if (significant > decimals)
    return Status::Error(Format(d) + " has " + std::to_string(significant) +
                         " decimals, the round allows " + std::to_string(decimals));
  return d.units / static_cast<Int128>(Pow10(d.decimals - decimals));
}

std::string FormatUnits(Int128 units, uint32_t decimals) {
  std::string digits = Digits(Magnitude(units));
  if (digits.size() <= decimals) digits.insert(0, decimals + 1 - digits.size(), '0');
  if (decimals > 0) digits.insert(digits.size() - decimals, ".");
  return (units < 0 ? "-" : "") + digits;
}

std::string FormatRatio(Int128 numerator, UInt128 denominator, uint32_t decimals) {
  const UInt128 n = Magnitude(numerator);
  UInt128 quotient = n / denominator, remainder = n % denominator;
  std::string fraction;
  for (uint32_t i = 0; i < decimals; ++i) {
    // remainder < denominator: remainder * 10 cannot overflow while denominator < 2^124.
    remainder *= 10;
    fraction.push_back(static_cast<char>('0' + static_cast<int>(remainder / denominator)));
    remainder %= denominator;
  }
  // Round half away from zero: add one unit in the last place and carry.
  if (remainder * 2 >= denominator) {
    int i = static_cast<int>(fraction.size()) - 1;
    for (; i >= 0 && fraction[static_cast<size_t>(i)] == '9'; --i)
      fraction[static_cast<size_t>(i)] = '0';
    if (i >= 0) {
      ++fraction[static_cast<size_t>(i)];
    } else {
      ++quotient;
    }
  }
  const bool zero = quotient == 0 && fraction.find_first_not_of('0') == std::string::npos;
  std::string out = (numerator < 0 && !zero ? "-" : "") + Digits(quotient);
  if (decimals > 0) out += "." + fraction;
  return out;
}

}  // namespace tally
