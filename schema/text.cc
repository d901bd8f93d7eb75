#include "schema/text.h"

#include <cstdio>

namespace tally {

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return out + "\"";
}

std::optional<std::string> LogField(std::string_view line, std::string_view key) {
  const std::string needle = " " + std::string(key) + "=";
  size_t at = line.find(needle);
  if (at == std::string_view::npos) return std::nullopt;
  at += needle.size();
  std::string out;
  if (at < line.size() && line[at] == '"') {
    for (size_t i = at + 1; i < line.size(); ++i) {
      if (line[i] == '"') return out;
      if (line[i] == '\\' && i + 1 < line.size()) ++i;
      out += line[i];
    }
    return std::nullopt;  // unterminated
  }
  const size_t end = line.find(' ', at);
  return std::string(line.substr(at, end == std::string_view::npos ? end : end - at));
}

std::string FormatFixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

namespace {
std::string JsonNumber(uint64_t v) {
  return v > kMaxJsonSafeInteger ? "\"" + std::to_string(v) + "\"" : std::to_string(v);
}
}  // namespace

std::string JsonNumbers(std::span<const uint64_t> values) {
  if (values.size() == 1) return JsonNumber(values[0]);
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    out += JsonNumber(values[i]);
  }
  return out + "]";
}

std::string Hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0f]);
  }
  return out;
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

bool ParseU64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - digit) / 10) return false;
    v = v * 10 + digit;
  }
  out = v;
  return true;
}

bool ParseU32(std::string_view s, uint32_t min, uint32_t& out) {
  uint64_t v;
  if (!ParseU64(s, v) || v < min || v > UINT32_MAX) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

bool ParseRate(std::string_view s, uint32_t& ppm) {
  if (!s.empty() && s.front() == '0')
    s.remove_prefix(1);
  else if (s.empty() || s.front() != '.')
    return false;
  if (s.empty()) {
    ppm = 0;
    return true;
  }
  if (s.front() != '.' || s.size() < 2 || s.size() > 7) return false;
  uint32_t v = 0;
  for (size_t i = 1; i < 7; ++i) {
    const char c = i < s.size() ? s[i] : '0';
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  ppm = v;
  return true;
}

Result<BrokerEndpoints> EndpointsOf(std::string_view address) {
  const std::string text(address);
  std::string host = text;
  uint64_t port = kDefaultBrokerPort;
  const size_t colon = text.rfind(':');
  const bool bracketed = !text.empty() && text.front() == '[';
  const size_t close = text.find(']');
  if (bracketed && close == std::string::npos)
    return Status::Error("broker address " + Quote(text) + ": no ']' after the IPv6 address");
  if (!bracketed && text.find(':') != colon)
    return Status::Error("broker address " + Quote(text) + ": write an IPv6 address in brackets");
  // A colon after the host (after the ']' of an IPv6 address) starts the port.
  if (colon != std::string::npos && (!bracketed || colon > close)) {
    host = text.substr(0, colon);
    if (!ParseU64(text.substr(colon + 1), port) || port == 0 || port > 65534)
      return Status::Error("broker address " + Quote(text) +
                           ": the port must be 1..65534 (the phase channel takes the next one)");
  }
  if (host.empty() || host == "[]" || host.find_first_of(" /\"'") != std::string::npos)
    return Status::Error("broker address " + Quote(text) + ": want HOST or HOST:PORT");
  return BrokerEndpoints{"tcp://" + host + ":" + std::to_string(port),
                         "tcp://" + host + ":" + std::to_string(port + 1)};
}

}  // namespace tally
