// Small text helpers shared by Tally's processes: quoting values in key=value log lines,
// strict decimal parsing for command-line flags, and the broker's endpoints from one address.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "schema/status.h"

namespace tally {

// "value" with quotes and backslashes escaped and anything not printable ASCII shown as '?',
// so a log line stays one line whatever a peer sent.
std::string Quote(std::string_view s);
// The value of `key` in a key=value log line: `key=word` or `key="quoted"` (unescaped), or
// nullopt when the line has no such field.
std::optional<std::string> LogField(std::string_view line, std::string_view key);

// An aggregate as Tally prints it in JSON: a number for one element, else an array
// ("[1, 2, 3]"). A value above 2^53 is written as a decimal string ("18446744073709551615"):
// readers that hold JSON numbers as doubles (JavaScript, jq 1.6) would print other digits.
std::string JsonNumbers(std::span<const uint64_t> values);
inline constexpr uint64_t kMaxJsonSafeInteger = uint64_t{1} << 53;

// `s` as a JSON string, quoted, with quotes and backslashes escaped and any byte outside
// printable ASCII as \u00XX.
std::string JsonString(std::string_view s);

// Lowercase hex, two digits per byte (public values only: keys' fingerprints, nonces, views).
std::string Hex(std::span<const uint8_t> bytes);

// `v` with `digits` decimals ("%.*f"), e.g. for millisecond figures in JSON.
std::string FormatFixed(double v, int digits);

// Decimal digits only (no sign, no spaces), without overflow. False otherwise.
bool ParseU64(std::string_view s, uint64_t& out);
// As ParseU64, and within [min, UINT32_MAX].
bool ParseU32(std::string_view s, uint32_t min, uint32_t& out);
// A fraction in [0, 1) written "0", "0.05" or ".05" (at most 6 decimals), in parts per million,
// exactly. False otherwise.
bool ParseRate(std::string_view s, uint32_t& ppm);

// The broker listens on two neighbouring TCP ports: the router on PORT, the phase channel on
// PORT + 1. DefaultBrokerPort is where both the broker and the nodes start.
inline constexpr uint16_t kDefaultBrokerPort = 7700;
struct BrokerEndpoints {
  std::string router;  // tcp://HOST:PORT
  std::string phases;  // tcp://HOST:PORT+1
};
// From "HOST" or "HOST:PORT" (a name, an IPv4 address, or an IPv6 address in brackets:
// "[2001:db8::1]:7700"); PORT defaults to kDefaultBrokerPort and must leave room for PORT + 1.
Result<BrokerEndpoints> EndpointsOf(std::string_view address);

}  // namespace tally
