// tally-replay's timeline: every record of a capture in file order, as text or JSON lines.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ostream>

#include "schema/decimal.h"
#include "schema/log.h"
#include "schema/text.h"
#include "tools/replay_internal.h"

namespace tally::replay {
namespace {

std::string JsonNames(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + JsonString(names[i]);
  return out + "]";
}

// The names of a set's members; JSON null for a set not fixed yet.
std::string JsonMembers(const Members& members, const std::vector<std::string>& names) {
  if (members.empty() || members.size() != names.size()) return "null";
  std::vector<std::string> in;
  for (size_t i = 0; i < names.size(); ++i)
    if (members[i]) in.push_back(names[i]);
  return JsonNames(in);
}

// What a phase fixed, in words: "shared 9 of 10: not p10".
std::string SetsText(const CapturePhase& p, const std::vector<std::string>& names) {
  const std::pair<const Members*, const char*> sets[] = {{&p.sets.confirmed, "confirmed"},
                                                         {&p.sets.masked, "survivors"},
                                                         {&p.sets.shared, "shared"},
                                                         {&p.sets.joined, "joined"}};
  for (const auto& [members, word] : sets) {
    if (members->empty() || members->size() != names.size()) continue;
    std::vector<std::string> out;
    for (size_t i = 0; i < names.size(); ++i)
      if (!(*members)[i]) out.push_back(names[i]);
    std::string text = "  (" + std::string(word) + " " + std::to_string(CountOf(*members)) +
                       " of " + std::to_string(names.size());
    if (!out.empty()) {
      if (out.size() > 5) out.resize(5), out.back() = "...";
      text += ": not ";
      for (size_t i = 0; i < out.size(); ++i) text += (i ? ", " : "") + out[i];
    }
    return text + ")";
  }
  return "";
}

// A round's columns as JSON: [{"name", "lower", "upper", "decimals"}] with the bounds as exact
// decimal strings, and the weight's bound when weighted.
std::string JsonColumns(const RoundParams& p) {
  std::string out = "[";
  for (size_t i = 0; i < p.columns.size(); ++i) {
    const Column& c = p.columns[i];
    out += std::string(i ? ", " : "") + "{\"name\": " + JsonString(c.name) +
           ", \"lower\": " + JsonString(FormatUnits(c.lower, c.decimals)) +
           ", \"upper\": " + JsonString(FormatUnits(c.upper, c.decimals)) +
           ", \"decimals\": " + std::to_string(c.decimals) + "}";
  }
  out += "]";
  if (p.weight.max > 0)
    out += ", \"weight_max\": " + JsonString(FormatUnits(p.weight.max, p.weight.decimals));
  return out;
}

std::string Joined(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
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

// The header's wall-clock time as RFC 3339; a value no clock gives (the header is untrusted)
// as the number itself.
std::string WallTime(int64_t unix_ms) {
  constexpr int64_t kYear10000Ms = 253402300800000;
  if (unix_ms < 0 || unix_ms >= kYear10000Ms) return std::to_string(unix_ms) + " ms";
  return Rfc3339(std::chrono::system_clock::time_point(std::chrono::milliseconds(unix_ms)));
}

}  // namespace

std::vector<FrameEntry> Frames(const CaptureContents& contents) {
  std::vector<FrameEntry> out;
  for (size_t i = 0; i < contents.records.size(); ++i) {
    const auto* e = std::get_if<CaptureFrame>(&contents.records[i]);
    if (e == nullptr) continue;
    FrameEntry entry;
    entry.index = out.size() + 1;
    entry.offset = contents.offsets[i];
    entry.t_us = e->t_us;
    entry.size = e->frame.size();
    entry.damaged = std::find(contents.damaged.begin(), contents.damaged.end(), entry.offset) !=
                    contents.damaged.end();
    Result<Message> decoded = Decode(e->frame);
    if (!decoded.ok()) {
      entry.decode_error = decoded.message();
    } else if (auto* env = std::get_if<Envelope>(&decoded.value())) {
      entry.envelope = std::move(*env);
    } else if (auto* batch = std::get_if<Batch>(&decoded.value());
               batch && batch->kind == BatchKind::kKeys) {
      entry.keys = std::move(*batch);
    } else {
      entry.decode_error = "the frame is a wire message but neither an envelope nor a keys batch";
    }
    out.push_back(std::move(entry));
  }
  return out;
}

std::string Describe(const FrameEntry& entry) {
  std::string s = "frame #" + std::to_string(entry.index);
  if (entry.envelope) {
    s += " " + entry.envelope->from + " -> " + entry.envelope->to + " (" +
         std::string(KindName(entry.envelope->kind)) + ", offset " + std::to_string(entry.offset) +
         ")";
  } else if (entry.keys) {
    s += " keys of " + Count(entry.keys->items.size(), "patient") + " -> the hospital (offset " +
         std::to_string(entry.offset) + ")";
  } else {
    s += " (offset " + std::to_string(entry.offset) + ")";
  }
  return s;
}

void PrintTimeline(const CaptureContents& contents, bool json, std::ostream& out) {
  const CaptureHeader* h = HeaderOf(contents);
  const std::vector<FrameEntry> frames = Frames(contents);
  const std::vector<std::string> no_names;
  const std::vector<std::string>& names = h ? h->params.participants : no_names;
  size_t name_width = 1;
  if (h) {
    name_width = h->params.hospital.size();
    for (const auto& p : h->params.participants) name_width = std::max(name_width, p.size());
  }
  size_t next_frame = 0;
  uint64_t frame_count = 0, rejected_count = 0;
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
                  << ", \"opened\": " << JsonString(WallTime(r.opened_unix_ms))
                  << ", \"hospital\": " << JsonString(r.params.hospital)
                  << ", \"range\": " << r.params.range << ", \"length\": " << r.params.length
                  << ", \"threshold\": " << r.params.threshold
                  << ", \"participants\": " << JsonNames(r.params.participants)
                  << ", \"columns\": " << JsonColumns(r.params)
                  << ", \"roster\": " << JsonString(r.roster_fingerprint) << "}\n";
            } else {
              out << "round " << RoundHex(r.round) << "  opened " << WallTime(r.opened_unix_ms)
                  << "  range " << r.params.range << "  length " << r.params.length << "  hospital "
                  << r.params.hospital << "  threshold " << r.params.threshold << "  patients "
                  << Joined(r.params.participants) << "  roster "
                  << r.roster_fingerprint.substr(0, 16) << "\n";
              for (const Column& c : r.params.columns)
                out << "  column " << c.name << " [" << FormatUnits(c.lower, c.decimals) << ", "
                    << FormatUnits(c.upper, c.decimals) << "]\n";
              if (r.params.weight.max > 0)
                out << "  weights in [0, "
                    << FormatUnits(r.params.weight.max, r.params.weight.decimals) << "]\n";
            }
          } else if constexpr (std::is_same_v<T, CapturePhase>) {
            const std::string name(PhaseName(r.phase));
            if (json) {
              out << "{\"type\": \"phase\", \"offset\": " << offset << ", \"t_us\": " << r.t_us
                  << ", \"phase\": " << JsonString(name) << ", \"seq\": " << r.seq
                  << ", \"reason\": " << JsonString(r.reason)
                  << ", \"joined\": " << JsonMembers(r.sets.joined, names)
                  << ", \"shared\": " << JsonMembers(r.sets.shared, names)
                  << ", \"masked\": " << JsonMembers(r.sets.masked, names)
                  << ", \"confirmed\": " << JsonMembers(r.sets.confirmed, names) << "}\n";
            } else {
              out << PadLeft(Millis(r.t_us), 10) << " ms  phase " << name
                  << (r.reason.empty() ? SetsText(r, names) : ": " + r.reason) << "\n";
            }
          } else if constexpr (std::is_same_v<T, CaptureFrame>) {
            ++frame_count;
            const FrameEntry& e = frames[next_frame++];
            if (json) {
              out << "{\"type\": " << (e.keys ? "\"keys\"" : "\"envelope\"")
                  << ", \"index\": " << e.index << ", \"offset\": " << offset
                  << ", \"t_us\": " << r.t_us;
              if (e.keys) {
                out << ", \"to\": " << JsonString(h ? h->params.hospital : "")
                    << ", \"patients\": " << e.keys->items.size();
              } else if (e.envelope) {
                out << ", \"kind\": " << JsonString(KindName(e.envelope->kind))
                    << ", \"from\": " << JsonString(e.envelope->from)
                    << ", \"to\": " << JsonString(e.envelope->to)
                    << ", \"round\": " << JsonString(RoundHex(e.envelope->round));
              } else {
                out << ", \"error\": " << JsonString(e.decode_error);
              }
              out << ", \"size\": " << e.size << "}\n";
            } else if (e.keys) {
              out << PadLeft(Millis(r.t_us), 10) << " ms  " << PadRight("keys", 8)
                  << PadRight("broker", name_width) << " -> "
                  << PadRight(h ? h->params.hospital : "", name_width)
                  << PadLeft(std::to_string(e.size), 8) << " B  (the round keys of "
                  << Count(e.keys->items.size(), "patient") << ")\n";
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
              out << PadLeft(Millis(r.t_us), 10) << " ms  frame #" << e.index
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
                  << ", \"reason\": " << JsonString(r.reason) << ", \"frames\": " << r.frames
                  << ", \"rejected\": " << r.rejected << "}\n";
            } else {
              out << "outcome: " << (r.done ? "done" : "aborted: " + r.reason) << " ("
                  << Count(r.frames, "frame") << ", " << r.rejected << " rejected, "
                  << Millis(r.t_us) << " ms)\n";
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
        << Count(frame_count, "frame") << ", " << rejected_count << " rejected so far)\n";
  }
}

}  // namespace tally::replay
