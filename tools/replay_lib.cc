// tally-replay: timeline, structural check, audit and injection over a round's capture.
#include "tools/replay_lib.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <ostream>
#include <zmq.hpp>

#include "keys/keys.h"
#include "nodes/seal.h"
#include "schema/results.h"
#include "schema/text.h"

namespace tally::replay {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// --- Small formatting helpers --------------------------------------------------------------

std::string JsonNames(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + JsonString(names[i]);
  return out + "]";
}

std::string Hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 0xf];
  }
  return out;
}

// Join nonces as a JSON array of hex strings (they are public: the broker publishes them).
std::string JsonNonces(const std::vector<JoinNonce>& nonces) {
  std::string out = "[";
  for (size_t i = 0; i < nonces.size(); ++i) out += (i ? ", " : "") + JsonString(Hex(nonces[i]));
  return out + "]";
}

// "1 envelope", "3 envelopes".
std::string Count(size_t n, std::string_view noun) {
  return std::to_string(n) + " " + std::string(noun) + (n == 1 ? "" : "s");
}

std::string Joined(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

// Shown in text: long vectors are elided (the JSON output carries them whole).
std::string ShortNumbers(const std::vector<uint64_t>& v) {
  if (v.size() <= 8) return JsonNumbers(v);
  return "[" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", ..., " +
         std::to_string(v.back()) + "] (" + std::to_string(v.size()) + " elements)";
}

// Microseconds as milliseconds with three decimals, without floating point.
std::string Millis(uint64_t t_us) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%llu.%03llu", static_cast<unsigned long long>(t_us / 1000),
                static_cast<unsigned long long>(t_us % 1000));
  return buf;
}

std::string PadLeft(std::string s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}
std::string PadRight(std::string s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

std::string IsoTime(int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  if (unix_ms < 0 || gmtime_r(&seconds, &tm) == nullptr) return std::to_string(unix_ms) + " ms";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

Result<std::vector<uint8_t>> ReadBytes(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return Status::Error("cannot read " + path.string() + ": not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error("cannot open " + path.string() + ": " + std::strerror(errno));
  std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
  if (in.bad()) return Status::Error("cannot read " + path.string());
  return bytes;
}

// The reader's message for a capture it refuses outright, with what to do about the version.
std::string ExplainVersion(std::span<const uint8_t> bytes, const CaptureContents& c) {
  if (c.ok() || c.error_offset != 8 || bytes.size() < 12) return c.error;
  const uint32_t version = GetU32(bytes.data() + 8);
  if (version < kCaptureFormatVersion) {
    return c.error + ": it was written by an older Tally (capture format " +
           std::to_string(version) + "); read it with the tally-replay of that release";
  }
  if (version > kCaptureFormatVersion) {
    return c.error + ": it was written by a newer Tally (capture format " +
           std::to_string(version) + "); read it with a newer tally-replay";
  }
  return c.error;
}

const CaptureHeader* HeaderOf(const CaptureContents& c) {
  if (c.records.empty()) return nullptr;
  return std::get_if<CaptureHeader>(&c.records.front());
}

const CaptureTrailer* TrailerOf(const CaptureContents& c) {
  if (c.records.empty()) return nullptr;
  return std::get_if<CaptureTrailer>(&c.records.back());
}

uint64_t EndOffset(std::span<const uint8_t> bytes, const CaptureContents& c) {
  return c.ok() ? bytes.size() : c.error_offset;
}

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

// --- Reading ------------------------------------------------------------------------------

std::vector<EnvelopeEntry> Envelopes(const CaptureContents& contents,
                                     const std::set<uint64_t>& damaged_offsets) {
  std::vector<EnvelopeEntry> out;
  for (size_t i = 0; i < contents.records.size(); ++i) {
    const auto* e = std::get_if<CaptureEnvelope>(&contents.records[i]);
    if (e == nullptr) continue;
    EnvelopeEntry entry;
    entry.index = out.size() + 1;
    entry.offset = contents.offsets[i];
    entry.t_us = e->t_us;
    entry.size = e->frame.size();
    entry.damaged = damaged_offsets.count(entry.offset) > 0;
    Result<Message> decoded = Decode(e->frame);
    if (!decoded.ok()) {
      entry.decode_error = decoded.message();
    } else if (auto* env = std::get_if<Envelope>(&decoded.value())) {
      entry.envelope = std::move(*env);
    } else {
      entry.decode_error = "the frame is a wire message but not an envelope";
    }
    out.push_back(std::move(entry));
  }
  return out;
}

std::string Describe(const EnvelopeEntry& entry) {
  std::string s = "envelope #" + std::to_string(entry.index);
  if (entry.envelope) {
    s += " " + entry.envelope->from + " -> " + entry.envelope->to + " (" +
         std::string(KindName(entry.envelope->kind)) + ", offset " + std::to_string(entry.offset) +
         ")";
  } else {
    s += " (offset " + std::to_string(entry.offset) + ")";
  }
  return s;
}

CaptureContents ReadSalvaging(std::span<const uint8_t> bytes, std::set<uint64_t>* damaged) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  CaptureContents c = ReadCapture(copy);
  // Each pass gets past one record whose CRC does not match; bounded by the records' count.
  for (size_t pass = 0; pass < 100000 && !c.ok(); ++pass) {
    if (c.error.rfind("CRC mismatch", 0) != 0) break;
    const uint64_t at = c.error_offset;
    if (at + 9 > copy.size()) break;
    const uint32_t body = GetU32(copy.data() + at);
    if (at + 9 + body > copy.size()) break;
    const uint32_t crc = CaptureCrc32(std::span<const uint8_t>(copy).subspan(at + 4, 1 + body));
    for (int i = 0; i < 4; ++i) copy[at + 5 + body + i] = static_cast<uint8_t>(crc >> (8 * i));
    if (damaged) damaged->insert(at);
    c = ReadCapture(copy);
  }
  return c;
}

// --- Timeline -----------------------------------------------------------------------------

void PrintTimeline(const CaptureContents& contents, bool json, std::ostream& out) {
  const CaptureHeader* h = HeaderOf(contents);
  const std::vector<EnvelopeEntry> envelopes = Envelopes(contents);
  size_t name_width = 1;
  if (h) {
    name_width = h->params.hospital.size();
    for (const auto& p : h->params.participants) name_width = std::max(name_width, p.size());
  }
  size_t next_envelope = 0;
  uint64_t envelope_count = 0, rejected_count = 0;
  for (size_t i = 0; i < contents.records.size(); ++i) {
    const uint64_t offset = contents.offsets[i];
    std::visit(
        [&](const auto& r) {
          using T = std::decay_t<decltype(r)>;
          if constexpr (std::is_same_v<T, CaptureHeader>) {
            if (json) {
              out << "{\"type\": \"header\", \"offset\": " << offset
                  << ", \"format_version\": " << r.format_version
                  << ", \"round\": " << JsonString(RoundHex(r.round))
                  << ", \"ticket\": " << r.ticket << ", \"opened_unix_ms\": " << r.opened_unix_ms
                  << ", \"opened\": " << JsonString(IsoTime(r.opened_unix_ms))
                  << ", \"hospital\": " << JsonString(r.params.hospital)
                  << ", \"range\": " << r.params.range << ", \"length\": " << r.params.length
                  << ", \"participants\": " << JsonNames(r.params.participants)
                  << ", \"roster\": " << JsonString(r.roster_fingerprint) << "}\n";
            } else {
              out << "round " << RoundHex(r.round) << "  opened " << IsoTime(r.opened_unix_ms)
                  << "  range " << r.params.range << "  length " << r.params.length << "  hospital "
                  << r.params.hospital << "  patients " << Joined(r.params.participants)
                  << "  roster " << r.roster_fingerprint.substr(0, 16) << "\n";
            }
          } else if constexpr (std::is_same_v<T, CapturePhase>) {
            const std::string name(PhaseName(r.phase));
            if (json) {
              out << "{\"type\": \"phase\", \"offset\": " << offset << ", \"t_us\": " << r.t_us
                  << ", \"phase\": " << JsonString(name) << ", \"seq\": " << r.seq
                  << ", \"reason\": " << JsonString(r.reason)
                  << ", \"nonces\": " << JsonNonces(r.nonces) << "}\n";
            } else {
              out << PadLeft(Millis(r.t_us), 10) << " ms  phase " << name
                  << (r.reason.empty() ? "" : ": " + r.reason) << "\n";
            }
          } else if constexpr (std::is_same_v<T, CaptureEnvelope>) {
            ++envelope_count;
            const EnvelopeEntry& e = envelopes[next_envelope++];
            if (json) {
              out << "{\"type\": \"envelope\", \"index\": " << e.index << ", \"offset\": " << offset
                  << ", \"t_us\": " << r.t_us;
              if (e.envelope) {
                out << ", \"kind\": " << JsonString(KindName(e.envelope->kind))
                    << ", \"from\": " << JsonString(e.envelope->from)
                    << ", \"to\": " << JsonString(e.envelope->to)
                    << ", \"round\": " << JsonString(RoundHex(e.envelope->round));
              } else {
                out << ", \"error\": " << JsonString(e.decode_error);
              }
              out << ", \"size\": " << e.size << "}\n";
            } else if (e.envelope) {
              out << PadLeft(Millis(r.t_us), 10) << " ms  "
                  << PadRight(std::string(KindName(e.envelope->kind)), 8)
                  << PadRight(e.envelope->from, name_width) << " -> "
                  << PadRight(e.envelope->to, name_width) << PadLeft(std::to_string(e.size), 8)
                  << " B";
              if (h && e.envelope->round != h->round) {
                out << "  (bound to round " << RoundHex(e.envelope->round) << ")";
              }
              out << "\n";
            } else {
              out << PadLeft(Millis(r.t_us), 10) << " ms  envelope #" << e.index
                  << " does not decode: " << e.decode_error << "  " << e.size << " B\n";
            }
          } else if constexpr (std::is_same_v<T, CaptureRejected>) {
            ++rejected_count;
            if (json) {
              out << "{\"type\": \"rejected\", \"offset\": " << offset << ", \"t_us\": " << r.t_us
                  << ", \"sender\": " << JsonString(r.sender)
                  << ", \"reason\": " << JsonString(r.reason) << ", \"size\": " << r.size << "}\n";
            } else {
              out << PadLeft(Millis(r.t_us), 10) << " ms  rejected from " << r.sender << ": "
                  << r.reason << "  " << r.size << " B\n";
            }
          } else if constexpr (std::is_same_v<T, CaptureTrailer>) {
            if (json) {
              out << "{\"type\": \"trailer\", \"offset\": " << offset << ", \"t_us\": " << r.t_us
                  << ", \"outcome\": " << (r.done ? "\"done\"" : "\"aborted\"")
                  << ", \"reason\": " << JsonString(r.reason) << ", \"envelopes\": " << r.envelopes
                  << ", \"rejected\": " << r.rejected << "}\n";
            } else {
              out << "outcome: " << (r.done ? "done" : "aborted: " + r.reason) << " ("
                  << r.envelopes << " envelopes, " << r.rejected << " rejected, " << Millis(r.t_us)
                  << " ms)\n";
            }
          }
        },
        contents.records[i]);
  }
  if (!contents.ok()) {
    if (json) {
      out << "{\"type\": \"error\", \"offset\": " << contents.error_offset
          << ", \"reason\": " << JsonString(contents.error) << "}\n";
    } else {
      out << "capture stops at offset " << contents.error_offset << ": " << contents.error << "\n";
    }
  }
  if (TrailerOf(contents) == nullptr && !json) {
    out << "outcome: unknown: no trailer (the round was still running, the broker stopped, or the "
           "file is cut short; "
        << envelope_count << " envelopes, " << rejected_count << " rejected so far)\n";
  }
}

// --- Check --------------------------------------------------------------------------------

std::vector<Problem> Check(const CaptureContents& c) {
  std::vector<Problem> problems;
  auto add = [&problems](uint64_t offset, std::string what) {
    problems.push_back({offset, std::move(what)});
  };
  if (!c.ok())
    add(c.error_offset, "stops at offset " + std::to_string(c.error_offset) + ": " + c.error);
  const CaptureHeader* h = HeaderOf(c);
  if (h == nullptr) {
    if (c.ok()) add(c.error_offset, "no header record");
    return problems;
  }
  const std::vector<EnvelopeEntry> envelopes = Envelopes(c);
  size_t next_envelope = 0;
  std::optional<Phase> phase;  // the last phase seen
  std::set<Phase> seen;
  uint64_t last_seq = 0, last_t = 0, envelope_count = 0, rejected_count = 0;
  std::string abort_reason;
  std::map<std::string, int> partials;
  std::optional<std::vector<JoinNonce>> sum_nonces;  // as published with the sum phase
  const CaptureTrailer* trailer = nullptr;
  uint64_t trailer_offset = 0;

  for (size_t i = 1; i < c.records.size(); ++i) {
    const uint64_t at = c.offsets[i];
    const CaptureRecord& record = c.records[i];
    const uint64_t t = std::visit(
        [](const auto& r) -> uint64_t {
          if constexpr (std::is_same_v<std::decay_t<decltype(r)>, CaptureHeader>) {
            return 0;
          } else {
            return r.t_us;
          }
        },
        record);
    if (t < last_t) {
      add(at,
          "time goes backwards: t_us " + std::to_string(t) + " after " + std::to_string(last_t));
    }
    last_t = std::max(last_t, t);
    if (const auto* p = std::get_if<CapturePhase>(&record)) {
      const std::string name(PhaseName(p->phase));
      bool legal = false;
      if (!phase) {
        legal = p->phase == Phase::kOpen;
      } else {
        switch (*phase) {
          case Phase::kOpen:
            legal = p->phase == Phase::kSum || p->phase == Phase::kAbort;
            break;
          case Phase::kSum:
            legal = p->phase == Phase::kDone || p->phase == Phase::kAbort;
            break;
          default:
            legal = false;  // nothing follows done or abort
        }
      }
      if (!legal) {
        add(at,
            "phase " + name +
                (phase ? " after " + std::string(PhaseName(*phase)) : std::string(" before open")));
      }
      if (phase && p->seq <= last_seq) {
        add(at, "phase seq " + std::to_string(p->seq) + " does not grow (after " +
                    std::to_string(last_seq) + ")");
      }
      // The nonces: none before every patient joined; the sum phase publishes one per patient,
      // and the phases after it repeat the same ones.
      if (p->phase == Phase::kSum && !sum_nonces) {
        if (p->nonces.size() != h->params.participants.size()) {
          add(at, "phase sum carries " + std::to_string(p->nonces.size()) + " nonces for " +
                      std::to_string(h->params.participants.size()) + " patients");
        }
        sum_nonces = p->nonces;
      } else if (sum_nonces) {
        if (p->nonces != *sum_nonces)
          add(at, "phase " + name + "'s nonces differ from the sum phase's");
      } else if (!p->nonces.empty()) {
        add(at, "phase " + name + " carries " + std::to_string(p->nonces.size()) +
                    " nonces before the sum phase");
      }
      last_seq = p->seq;
      phase = p->phase;
      seen.insert(p->phase);
      if (p->phase == Phase::kAbort) abort_reason = p->reason;
    } else if (std::get_if<CaptureEnvelope>(&record)) {
      ++envelope_count;
      const EnvelopeEntry& e = envelopes[next_envelope++];
      if (!e.envelope) {
        add(at, Describe(e) + " does not decode: " + e.decode_error);
        continue;
      }
      const Envelope& env = *e.envelope;
      if (env.round != h->round) {
        add(at, Describe(e) + " is bound to round " + RoundHex(env.round) + ", not this round");
      }
      // Every envelope is a partial (the only kind the wire knows): patient -> hospital, once.
      if (!Contains(h->params.participants, env.from) || env.to != h->params.hospital) {
        add(at, Describe(e) + " is not a partial link of this round");
      } else if (++partials[env.from] == 2) {
        add(at, Describe(e) + " repeats the partial from " + env.from);
      }
      if (phase != Phase::kSum) add(at, Describe(e) + " routed outside the sum phase");
    } else if (std::get_if<CaptureRejected>(&record)) {
      ++rejected_count;
      if (!phase) add(at, "rejected message before the open phase");
    } else if (const auto* tr = std::get_if<CaptureTrailer>(&record)) {
      trailer = tr;
      trailer_offset = at;
    }
  }

  const uint64_t end = c.ok() ? (c.offsets.back()) : c.error_offset;
  if (!seen.count(Phase::kOpen)) add(end, "no open phase");
  if (trailer == nullptr) {
    if (c.ok()) add(end, "no trailer: the round did not end in this capture");
    return problems;
  }
  if (trailer->envelopes != envelope_count) {
    add(trailer_offset, "trailer counts " + std::to_string(trailer->envelopes) +
                            " envelopes, the capture holds " + std::to_string(envelope_count));
  }
  if (trailer->rejected != rejected_count) {
    add(trailer_offset, "trailer counts " + std::to_string(trailer->rejected) +
                            " rejected messages, the capture holds " +
                            std::to_string(rejected_count));
  }
  if (trailer->done) {
    if (phase != Phase::kDone)
      add(trailer_offset, "trailer says done but the last phase is not done");
    if (!seen.count(Phase::kSum)) add(trailer_offset, "done without the sum phase");
    for (const auto& from : h->params.participants) {
      if (!partials.count(from)) {
        add(trailer_offset,
            "completed round lacks the partial " + from + " -> " + h->params.hospital);
      }
    }
  } else {
    if (phase != Phase::kAbort) {
      add(trailer_offset, "trailer says aborted but the last phase is not abort");
    } else if (trailer->reason != abort_reason) {
      add(trailer_offset, "trailer's abort reason differs from the abort phase's");
    }
  }
  return problems;
}

Result<CapturedView> HospitalView(const CaptureContents& c, const Sealer& sealer) {
  const CaptureHeader* h = HeaderOf(c);
  if (h == nullptr) return Status::Error("the capture has no header");
  for (size_t i = 0; i < c.records.size(); ++i) {
    const auto* p = std::get_if<CapturePhase>(&c.records[i]);
    if (p == nullptr || p->phase != Phase::kSum) continue;
    if (p->nonces.size() != h->params.participants.size()) {
      return Status::Error("the sum phase at offset " + std::to_string(c.offsets[i]) + " carries " +
                           std::to_string(p->nonces.size()) + " nonces for " +
                           std::to_string(h->params.participants.size()) + " patients");
    }
    Result<ViewDigest> view = sealer.View(h->round, h->params, p->nonces);
    if (!view.ok()) return view.status();
    return CapturedView{*view, c.offsets[i]};
  }
  return Status::Error("the capture has no sum phase");
}

// --- Audit --------------------------------------------------------------------------------

namespace {

class Printer {
 public:
  Printer(std::ostream& out, bool json) : out_(out), json_(json) {}
  // A text line, or in JSON {"type": type, "message": text, fields...}.
  void Line(std::string_view type, const std::string& text, const std::string& fields = "") {
    if (json_) {
      out_ << "{\"type\": " << JsonString(type) << ", \"message\": " << JsonString(text)
           << (fields.empty() ? "" : ", " + fields) << "}\n";
    } else {
      out_ << text << "\n";
    }
  }
  bool json() const { return json_; }

 private:
  std::ostream& out_;
  bool json_;
};

std::string EnvelopeFields(const EnvelopeEntry& e) {
  std::string f =
      "\"index\": " + std::to_string(e.index) + ", \"offset\": " + std::to_string(e.offset);
  if (e.envelope) {
    f += ", \"kind\": " + JsonString(KindName(e.envelope->kind)) +
         ", \"from\": " + JsonString(e.envelope->from) + ", \"to\": " + JsonString(e.envelope->to);
  }
  return f;
}

// A party as the audit and the injection need it: the roster, its secrets, its sealer.
struct Identity {
  Roster roster;
  SecretCertificate me;
  Sealer sealer;
};

Result<Identity> LoadIdentity(const std::filesystem::path& keys_dir, const std::string& name) {
  Result<Roster> roster = LoadRoster(keys_dir);
  if (!roster.ok()) return roster.status();
  Result<SecretCertificate> me = LoadSecret(keys_dir, name);
  if (!me.ok()) return me.status();
  Result<Sealer> sealer = Sealer::Create(me.value(), roster.value());
  if (!sealer.ok()) return sealer.status();
  return Identity{std::move(roster.value()), std::move(me.value()), std::move(sealer.value())};
}

int Audit(const Options& o, std::span<const uint8_t> bytes, std::ostream& out, std::ostream& err) {
  Printer p(out, o.json);
  std::set<uint64_t> damaged;
  const CaptureContents c = ReadSalvaging(bytes, &damaged);
  const CaptureHeader* h = HeaderOf(c);
  if (h == nullptr) {
    err << "tally-replay: " << o.file.string() << ": " << ExplainVersion(bytes, c) << "\n";
    return 1;
  }
  if (o.as != h->params.hospital) {
    // Run already refused a patient or the broker: this is another hospital of the roster.
    err << "tally-replay: only the round's hospital can audit it: its partials are sealed to "
        << h->params.hospital << ", not to " << o.as << "\n";
    return 2;
  }
  Result<Identity> id = LoadIdentity(o.keys_dir, o.as);
  if (!id.ok()) {
    err << "tally-replay: " << id.message() << "\n";
    return 1;
  }
  const Roster* roster = &id->roster;
  const Sealer* sealer = &id->sealer;
  p.Line("audit",
         "audit of round " + RoundHex(h->round) + " as " + o.as + " (" +
             std::string(RoleName(id->me.pub.role)) + ")",
         "\"round\": " + JsonString(RoundHex(h->round)) + ", \"as\": " + JsonString(o.as));
  size_t failures = 0;
  if (roster->Fingerprint() != h->roster_fingerprint) {
    p.Line("note", "note: the roster in " + o.keys_dir.string() +
                       " is not the one the broker ran this round with (fingerprint " +
                       roster->Fingerprint().substr(0, 16) + ", capture " +
                       h->roster_fingerprint.substr(0, 16) + ")");
  }
  for (uint64_t at : damaged) {
    ++failures;
    p.Line("damaged",
           "record at offset " + std::to_string(at) + " fails its CRC: damaged in the capture",
           "\"offset\": " + std::to_string(at));
  }
  if (!c.ok()) {
    ++failures;
    p.Line("error",
           "capture stops at offset " + std::to_string(c.error_offset) + ": " + c.error +
               "; what follows was not audited",
           "\"offset\": " + std::to_string(c.error_offset));
  }
  // The view the hospital opens with. Public (the broker publishes the nonces): printed.
  const Result<CapturedView> view = HospitalView(c, *sealer);
  if (view.ok()) {
    p.Line("view",
           "view of the round: " + Hex(view->view) +
               " (the header and the nonces of the sum phase at offset " +
               std::to_string(view->offset) + ")",
           "\"view\": " + JsonString(Hex(view->view)) +
               ", \"offset\": " + std::to_string(view->offset));
  } else {
    p.Line("view", "view of the round: unknown: " + view.message(),
           "\"view\": null, \"error\": " + JsonString(view.message()));
  }

  std::vector<uint64_t> aggregate(h->params.length, 0);
  std::set<std::string> opened_from;
  size_t addressed = 0, opened = 0;
  for (const EnvelopeEntry& e : Envelopes(c, damaged)) {
    const std::string what = Describe(e);
    auto fail = [&](const std::string& why) {
      ++failures;
      p.Line("envelope", what + ": " + why,
             EnvelopeFields(e) + ", \"ok\": false, \"error\": " + JsonString(why));
    };
    if (!e.envelope) {
      fail("damaged: the frame does not decode (" + e.decode_error + ")");
      continue;
    }
    const Envelope& env = *e.envelope;
    if (env.to != o.as) {
      if (e.damaged)
        fail("damaged in the capture (addressed to " + env.to + ", not auditable here)");
      continue;
    }
    ++addressed;
    if (!view.ok()) {
      fail("not opened: the hospital's view of the round is unknown (" + view.message() + ")");
      continue;
    }
    // The binding is rebuilt from the envelope's header, the auditor's own name and the view
    // from the capture; a header that disagrees with the capture's round fails even if the seal
    // opens, and a partial sealed under another view of the round does not open.
    Result<std::vector<uint8_t>> plain =
        sealer->Open(Binding{env.round, env.kind, env.from, o.as, view->view}, env.sealed);
    if (!plain.ok()) {
      fail(plain.message().rfind("cannot open ", 0) == 0
               ? plain.message().substr(plain.message().find(": ") + 2)
               : plain.message());
      continue;
    }
    Result<std::vector<uint64_t>> values = DecodePayload(plain.value(), env.kind, h->params.length);
    sodium_memzero(plain->data(), plain->size());
    if (!values.ok()) {
      fail("opened, but the payload is malformed: " + values.message());
      continue;
    }
    if (env.round != h->round) {
      fail("opened, but bound to round " + RoundHex(env.round) + ", not this round");
    } else if (!Contains(h->params.participants, env.from)) {
      fail("opened, but " + env.from + " is not a patient of this round");
    } else if (!opened_from.insert(env.from).second) {
      fail("opened, but repeats an earlier partial from " + env.from);
    } else if (e.damaged) {
      fail("opened, but its record fails the capture's CRC");
    } else {
      ++opened;
      for (size_t k = 0; k < aggregate.size(); ++k) aggregate[k] += values.value()[k];
      p.Line("envelope", what + ": opened under its binding (round, kind, sender, recipient, view)",
             EnvelopeFields(e) + ", \"ok\": true");
    }
    sodium_memzero(values->data(), values->size() * sizeof(uint64_t));
  }

  const CaptureTrailer* trailer = TrailerOf(c);
  const bool done = trailer != nullptr && trailer->done;
  const bool aborted = trailer != nullptr && !trailer->done;
  const size_t n = h->params.participants.size();
  p.Line("summary",
         o.as + ": " + std::to_string(opened) + " of " + std::to_string(addressed) +
             " envelopes addressed to it opened; a completed round sends it " + std::to_string(n) +
             " partials",
         "\"addressed\": " + std::to_string(addressed) + ", \"opened\": " + std::to_string(opened) +
             ", \"expected\": " + std::to_string(n));
  if (done && opened != n) {
    ++failures;
    p.Line("problem", "the round completed but " + std::to_string(opened) + " of " +
                          std::to_string(n) + " partials opened");
  }
  if (opened == n) {
    p.Line("aggregate",
           "aggregate (sum of the " + std::to_string(n) +
               " masked partials mod 2^64, the masks cancel): " + ShortNumbers(aggregate),
           "\"aggregate\": " + JsonNumbers(aggregate));
    if (!o.results.empty() && !aborted) {
      auto recorded = ReadRoundRecord(o.results, h->round);
      if (!recorded.ok()) {
        ++failures;
        p.Line("results", recorded.message());
      } else if (!recorded->result) {
        ++failures;
        p.Line("results", "round not in results file " + o.results.string(), "\"match\": false");
      } else if (recorded->aborted) {
        ++failures;
        p.Line("results",
               "the results file " + o.results.string() + " records the round as aborted (" +
                   *recorded->aborted + "), the capture as done",
               "\"match\": false");
      } else if (recorded->result->aggregate == aggregate) {
        p.Line("results", "matches results file " + o.results.string(), "\"match\": true");
      } else {
        ++failures;
        p.Line("results",
               "DIFFERS from results file " + o.results.string() + ": it records " +
                   ShortNumbers(recorded->result->aggregate),
               "\"match\": false");
      }
    }
  } else {
    p.Line("aggregate", "aggregate: not computable (" + std::to_string(opened) + " of " +
                            std::to_string(n) + " partials opened)");
    if (!o.results.empty() && !aborted) {
      ++failures;
      p.Line("results", "cannot compare with the results file without every partial");
    }
  }
  // A round has one outcome. An aborted round has no aggregate to audit; its hospital's results
  // file must not hold a result for it that still stands.
  if (aborted) {
    ++failures;
    p.Line("outcome", "the round aborted: " + trailer->reason + "; it has no aggregate",
           "\"outcome\": \"aborted\", \"reason\": " + JsonString(trailer->reason));
    if (!o.results.empty()) {
      auto recorded = ReadRoundRecord(o.results, h->round);
      if (!recorded.ok()) {
        p.Line("results", recorded.message());
      } else if (recorded->done()) {
        p.Line("results",
               "INCONSISTENT: the results file " + o.results.string() +
                   " holds a result for this aborted round and no abort after it",
               "\"match\": false");
      } else {
        p.Line("results",
               "the results file " + o.results.string() +
                   (recorded->result ? " records the result as aborted too"
                                     : " holds no result for this round"),
               "\"match\": true");
      }
    }
  }
  if (failures == 0) {
    p.Line("result", "audit: ok", "\"ok\": true");
    return 0;
  }
  p.Line(
      "result",
      "audit: FAILED (" + std::to_string(failures) + (failures == 1 ? " problem)" : " problems)"),
      "\"ok\": false");
  return 1;
}

// --- Inject -------------------------------------------------------------------------------

int Inject(const Options& o, std::span<const uint8_t> bytes, std::ostream& out, std::ostream& err) {
  Printer p(out, o.json);
  const CaptureContents c = ReadCapture(bytes);
  const CaptureHeader* h = HeaderOf(c);
  if (h == nullptr) {
    err << "tally-replay: " << o.file.string() << ": " << ExplainVersion(bytes, c) << "\n";
    return 1;
  }
  if (!c.ok()) {
    p.Line("note", "capture stops at offset " + std::to_string(c.error_offset) + ": " + c.error +
                       "; injecting the readable prefix");
  }
  Result<Identity> id = LoadIdentity(o.keys_dir, o.as);
  if (!id.ok()) {
    err << "tally-replay: " << id.message() << "\n";
    return 1;
  }
  const Roster* roster = &id->roster;
  const SecretCertificate* me = &id->me;
  const Sealer* sealer = &id->sealer;
  const std::vector<std::string> brokers = roster->Names(Role::kBroker);
  if (brokers.size() != 1) {
    err << "tally-replay: the roster must hold exactly one broker\n";
    return 1;
  }
  const Certificate* broker = roster->Find(brokers[0]);
  const std::string old_round = RoundHex(h->round);
  const std::vector<EnvelopeEntry> all = Envelopes(c);
  std::vector<std::span<const uint8_t>> frames;  // parallel to `all`
  for (const CaptureRecord& r : c.records) {
    if (const auto* e = std::get_if<CaptureEnvelope>(&r)) frames.emplace_back(e->frame);
  }
  std::vector<const EnvelopeEntry*> mine, to_me;
  for (const auto& e : all) {
    if (e.envelope && e.envelope->from == o.as) mine.push_back(&e);
    if (e.envelope && e.envelope->to == o.as) to_me.push_back(&e);
  }
  p.Line("inject",
         "inject as " + o.as + " into " + o.inject + ": " + Count(mine.size(), "envelope") +
             " from " + o.as + " captured in round " + old_round,
         "\"round\": " + JsonString(old_round) + ", \"as\": " + JsonString(o.as) +
             ", \"envelopes\": " + std::to_string(mine.size()));
  size_t failures = 0;

  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  zmq::socket_t monitor(ctx, zmq::socket_type::pair);
  const auto timeout = std::chrono::milliseconds(o.timeout_ms);
  uint64_t ticket = 0;
  randombytes_buf(&ticket, sizeof ticket);
  std::string barrier_reason;
  size_t stray = 0;
  std::set<std::string> stray_rounds;
  try {
    dealer.set(zmq::sockopt::linger, 1000);
    dealer.set(zmq::sockopt::handshake_ivl, 5000);
    dealer.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(MaxMessageSize(kMaxVectorLength)));
    dealer.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(broker->curve_public.data(), 32));
    dealer.set(zmq::sockopt::curve_publickey, zmq::const_buffer(me->pub.curve_public.data(), 32));
    dealer.set(zmq::sockopt::curve_secretkey,
               zmq::const_buffer(me->curve_secret.data(), me->curve_secret.size()));
    if (zmq_socket_monitor(dealer.handle(), "inproc://replay-monitor",
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0) {
      err << "tally-replay: cannot monitor the connection\n";
      return 1;
    }
    monitor.connect("inproc://replay-monitor");
    dealer.connect(o.inject);

    // Wait for the CURVE handshake, so a refused key is reported as such.
    const auto deadline = Clock::now() + timeout;
    std::optional<bool> accepted;
    while (!accepted) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t item{monitor.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, left) <= 0) continue;
      zmq::message_t event, address;
      if (!monitor.recv(event)) continue;
      if (event.more()) (void)monitor.recv(address);
      if (event.size() < 6) continue;
      uint16_t id;
      std::memcpy(&id, event.data(), sizeof id);
      accepted = id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
    }
    if (!accepted) {
      err << "tally-replay: no CURVE handshake with " << o.inject << " within " << o.timeout_ms
          << " ms\n";
      return 1;
    }
    if (!*accepted) {
      err << "tally-replay: the broker at " << o.inject << " refused " << o.as
          << "'s CURVE handshake (is this the roster it runs with?)\n";
      return 1;
    }
    p.Line("connected", "connected: the broker accepted " + o.as + "'s CURVE key");

    const bool over = TrailerOf(c) != nullptr;
    for (const EnvelopeEntry* e : mine) {
      if (!dealer.send(zmq::const_buffer(frames[e->index - 1].data(), frames[e->index - 1].size()),
                       zmq::send_flags::none)) {
        ++failures;
        p.Line("sent", Describe(*e) + ": could not be sent",
               EnvelopeFields(*e) + ", \"sent\": false");
        continue;
      }
      p.Line(
          "sent",
          Describe(*e) + ", " + std::to_string(e->size) +
              " B: sent byte for byte; the broker can only route it into round " +
              RoundHex(e->envelope->round) +
              (over ? ", which is over; the broker refuses envelopes for a round that is not active"
                    : " (no trailer: if it is still running the broker refuses the copy as a "
                      "duplicate partial)"),
          EnvelopeFields(*e) + ", \"sent\": true");
    }
    // The barrier: a round request the broker must refuse (a patient may not request rounds;
    // a hospital may not name a non-patient). It answers a refused request with a notice, and
    // handles one connection's messages in order: the notice proves every envelope above has
    // been processed.
    Request probe{ticket, {"", 0, 1, {}}, 0};
    if (me->pub.role == Role::kHospital) probe.params.participants = {o.as};
    const std::vector<uint8_t> probe_bytes = Encode(probe);
    (void)dealer.send(zmq::buffer(probe_bytes), zmq::send_flags::none);
    const auto barrier_deadline = Clock::now() + timeout;
    while (barrier_reason.empty()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(barrier_deadline - Clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, left) <= 0) continue;
      zmq::message_t m;
      if (!dealer.recv(m)) continue;
      auto d = Decode({static_cast<const uint8_t*>(m.data()), m.size()});
      if (!d.ok()) continue;
      if (auto* n = std::get_if<Notice>(&d.value()); n && n->ticket == ticket) {
        barrier_reason = n->reason.empty() ? "(no reason)" : n->reason;
      } else if (auto* env = std::get_if<Envelope>(&d.value())) {
        // Someone else's live envelope to us: never opened or kept, only counted.
        ++stray;
        stray_rounds.insert(RoundHex(env->round));
      }
    }
  } catch (const zmq::error_t& e) {
    err << "tally-replay: " << e.what() << "\n";
    return 1;
  }
  if (barrier_reason.empty()) {
    ++failures;
    p.Line("barrier",
           "no notice from the broker within " + std::to_string(o.timeout_ms) +
               " ms: cannot confirm it processed the envelopes",
           "\"confirmed\": false");
  } else if (mine.empty()) {
    p.Line("barrier",
           "the broker answered our probe request (\"" + barrier_reason + "\"); " + o.as +
               " sent no envelope in the captured round",
           "\"confirmed\": true, \"notice\": " + JsonString(barrier_reason));
  } else {
    p.Line("barrier",
           "the broker processed " + std::string(mine.size() == 1 ? "the " : "all ") +
               Count(mine.size(), "envelope") + " (it then refused our probe request: \"" +
               barrier_reason +
               "\"); it refuses an envelope without replying, and its log gives each reason",
           "\"confirmed\": true, \"notice\": " + JsonString(barrier_reason));
  }
  if (stray > 0) {
    ++failures;
    std::string rounds;
    for (const auto& r : stray_rounds) rounds += (rounds.empty() ? "" : ", ") + r;
    p.Line("warning",
           "WARNING: the broker delivered " + std::to_string(stray) +
               " live envelope(s) for round " + rounds + " to this connection instead of " + o.as +
               "'s node: the broker took the injected connection as " + o.as + "'s route",
           "\"stray\": " + std::to_string(stray));
  }

  // Locally: what arrived for us (the hospital: the captured partials) opens under its own
  // binding and under no other round. The view is the capture's (HospitalView).
  RoundId fresh{};
  randombytes_buf(fresh.data(), fresh.size());
  const Result<CapturedView> view = HospitalView(c, *sealer);
  for (const EnvelopeEntry* e : to_me) {
    const Envelope& env = *e->envelope;
    if (!view.ok()) {
      ++failures;
      p.Line("rebind",
             Describe(*e) + ": not checked: the hospital's view of the round is unknown (" +
                 view.message() + ")",
             EnvelopeFields(*e) + ", \"opens\": null");
      continue;
    }
    auto original =
        sealer->Open(Binding{env.round, env.kind, env.from, o.as, view->view}, env.sealed);
    auto rebound = sealer->Open(Binding{fresh, env.kind, env.from, o.as, view->view}, env.sealed);
    if (original.ok()) sodium_memzero(original->data(), original->size());
    if (rebound.ok()) sodium_memzero(rebound->data(), rebound->size());
    const bool good = original.ok() && !rebound.ok();
    if (!good) ++failures;
    p.Line("rebind",
           Describe(*e) + ": " +
               (original.ok() ? "opens under its round " : "does NOT open under its round ") +
               RoundHex(env.round) + "; under fresh round " + RoundHex(fresh) +
               (rebound.ok()
                    ? " it OPENS"
                    : " it fails: " + rebound.message().substr(rebound.message().find(": ") + 2)),
           EnvelopeFields(*e) + ", \"opens\": " + (original.ok() ? "true" : "false") +
               ", \"opens_rebound\": " + (rebound.ok() ? "true" : "false"));
  }
  if (failures == 0) {
    p.Line("result", "inject: no captured envelope can be replayed into another round",
           "\"ok\": true");
    return 0;
  }
  p.Line(
      "result",
      "inject: FAILED (" + std::to_string(failures) + (failures == 1 ? " problem)" : " problems)"),
      "\"ok\": false");
  return 1;
}

bool ParseU32(const std::string& s, uint32_t& out) {
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  const unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
  if (v == 0 || v > UINT32_MAX) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

Result<Options> ParseArgs(const std::vector<std::string>& args) {
  Options o;
  bool have_file = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--json") {
      o.json = true;
      continue;
    }
    if (a == "--check") {
      o.check = true;
      continue;
    }
    if (a.rfind("--", 0) == 0) {
      if (i + 1 >= args.size()) return Status::Error("missing value for " + a);
      const std::string& v = args[++i];
      if (a == "--keys") {
        o.keys_dir = v;
      } else if (a == "--as") {
        if (!ValidName(v)) return Status::Error("bad --as " + v + " (names are [a-z0-9_-]{1,32})");
        o.as = v;
      } else if (a == "--results") {
        o.results = v;
      } else if (a == "--inject") {
        o.inject = v;
      } else if (a == "--timeout-ms") {
        if (!ParseU32(v, o.timeout_ms)) return Status::Error("bad --timeout-ms " + v);
      } else {
        return Status::Error("unknown option " + a);
      }
      continue;
    }
    if (have_file) return Status::Error("one capture file at a time (got " + a + ")");
    o.file = a;
    have_file = true;
  }
  if (!have_file) return Status::Error("no capture file given");
  const bool keyed = !o.keys_dir.empty() || !o.as.empty();
  if (keyed && (o.keys_dir.empty() || o.as.empty())) {
    return Status::Error("--keys and --as go together");
  }
  if (!o.inject.empty() && !keyed) return Status::Error("--inject needs --keys and --as");
  if (o.check && (keyed || !o.inject.empty())) {
    return Status::Error("--check does not take --keys, --as or --inject");
  }
  if (!o.results.empty() && (!keyed || !o.inject.empty())) {
    return Status::Error("--results belongs to an audit (--keys and --as, without --inject)");
  }
  return o;
}

int Run(const Options& o, std::ostream& out, std::ostream& err) {
  if (sodium_init() < 0) {
    err << "tally-replay: libsodium failed to initialise\n";
    return 1;
  }
  if (!o.keys_dir.empty() && o.inject.empty()) {
    // Only the hospital audits: its role is in the roster, so a patient's (or the broker's)
    // audit is refused before any capture or secret key is read.
    Result<Roster> roster = LoadRoster(o.keys_dir);
    if (!roster.ok()) {
      err << "tally-replay: " << roster.message() << "\n";
      return 1;
    }
    const Certificate* cert = roster->Find(o.as);
    if (cert != nullptr && cert->role != Role::kHospital) {
      err << "tally-replay: " << kOnlyHospitalAudits << "; " << o.as << " is a "
          << RoleName(cert->role) << "\n";
      return 2;
    }
  }
  Result<std::vector<uint8_t>> bytes = ReadBytes(o.file);
  if (!bytes.ok()) {
    err << "tally-replay: " << bytes.message() << "\n";
    return 1;
  }
  if (!o.inject.empty()) return Inject(o, bytes.value(), out, err);
  if (!o.keys_dir.empty()) return Audit(o, bytes.value(), out, err);

  const CaptureContents c = ReadCapture(bytes.value());
  if (HeaderOf(c) == nullptr) {
    // Nothing readable: say why (e.g. a capture format this reader does not know).
    const std::string why = ExplainVersion(bytes.value(), c);
    if (o.json && !o.check) {
      out << "{\"type\": \"error\", \"offset\": " << c.error_offset
          << ", \"reason\": " << JsonString(why) << "}\n";
    }
    err << "tally-replay: " << o.file.string() << ": " << why << "\n";
    if (!o.check) return 1;
  }
  if (!o.check) {
    PrintTimeline(c, o.json, out);
    if (!c.ok()) {
      err << "tally-replay: " << o.file.string() << " is damaged: it stops at offset "
          << c.error_offset << " of " << bytes->size() << "\n";
      return 1;
    }
    return 0;
  }
  std::vector<Problem> problems = Check(c);
  if (!c.ok() && c.error.rfind("CRC mismatch", 0) == 0) {
    // Name what the damaged record held, read past its CRC (its contents are untrusted).
    std::set<uint64_t> damaged;
    const CaptureContents salvaged = ReadSalvaging(bytes.value(), &damaged);
    for (const EnvelopeEntry& e : Envelopes(salvaged, damaged)) {
      if (e.offset == c.error_offset) {
        problems.push_back({e.offset, "the damaged record reads as " + Describe(e)});
      }
    }
  }
  if (problems.empty()) {
    if (o.json) {
      out << "{\"type\": \"check\", \"ok\": true, \"records\": " << c.records.size() << "}\n";
    } else {
      out << "check: ok (" << c.records.size() << " records)\n";
    }
    return 0;
  }
  if (!c.ok() && !o.json) {
    out << "readable prefix (" << c.records.size() << " records, " << EndOffset(bytes.value(), c)
        << " of " << bytes->size() << " bytes):\n";
    PrintTimeline(c, false, out);
  }
  for (const Problem& pr : problems) {
    if (o.json) {
      out << "{\"type\": \"problem\", \"offset\": " << pr.offset
          << ", \"problem\": " << JsonString(pr.what) << "}\n";
    } else {
      if (pr.what.rfind("stops at offset", 0) == 0) {
        out << pr.what << "\n";
      } else {
        out << "offset " << pr.offset << ": " << pr.what << "\n";
      }
    }
  }
  if (o.json) {
    out << "{\"type\": \"check\", \"ok\": false, \"records\": " << c.records.size()
        << ", \"problems\": " << problems.size() << "}\n";
  } else {
    out << "check: FAILED (" << problems.size()
        << (problems.size() == 1 ? " problem)\n" : " problems)\n");
  }
  return 1;
}

}  // namespace tally::replay
