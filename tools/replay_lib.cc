// tally-replay's arguments and dispatch, and what its parts share.
#include "tools/replay_lib.h"

#include <sodium.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "schema/text.h"
#include "tools/replay_internal.h"

namespace tally::replay {

namespace fs = std::filesystem;

const CaptureHeader* HeaderOf(const CaptureContents& c) {
  if (c.records.empty()) return nullptr;
  return std::get_if<CaptureHeader>(&c.records.front());
}

const CaptureTrailer* TrailerOf(const CaptureContents& c) {
  if (c.records.empty()) return nullptr;
  return std::get_if<CaptureTrailer>(&c.records.back());
}

std::string Count(size_t n, std::string_view noun) {
  return std::to_string(n) + " " + std::string(noun) + (n == 1 ? "" : "s");
}

std::string Problems(size_t n) { return Count(n, "problem"); }

std::string ShortNumbers(const std::vector<uint64_t>& v) {
  if (v.size() <= 8) return JsonNumbers(v);
  return "[" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", ..., " +
         std::to_string(v.back()) + "] (" + std::to_string(v.size()) + " elements)";
}

std::string FrameFields(const FrameEntry& e) {
  std::string f =
      "\"index\": " + std::to_string(e.index) + ", \"offset\": " + std::to_string(e.offset);
  if (e.envelope) {
    f += ", \"kind\": " + JsonString(KindName(e.envelope->kind)) +
         ", \"from\": " + JsonString(e.envelope->from) + ", \"to\": " + JsonString(e.envelope->to);
  }
  return f;
}

void Printer::Line(std::string_view type, const std::string& text, const std::string& fields) {
  if (json_) {
    out_ << "{\"type\": " << JsonString(type) << ", \"message\": " << JsonString(text)
         << (fields.empty() ? "" : ", " + fields) << "}\n";
  } else {
    out_ << text << "\n";
  }
}

Result<Identity> LoadIdentity(const std::filesystem::path& keys_dir, const std::string& name) {
  Result<Roster> roster = LoadRoster(keys_dir);
  if (!roster.ok()) return roster.status();
  Result<SecretCertificate> me = LoadSecret(keys_dir, name);
  if (!me.ok()) return me.status();
  Result<Sealer> sealer = Sealer::Create(me.value(), roster.value());
  if (!sealer.ok()) return sealer.status();
  return Identity{std::move(roster.value()), std::move(me.value()), std::move(sealer.value())};
}

namespace {

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
        if (!ParseU32(v, 1, o.timeout_ms)) return Status::Error("bad --timeout-ms " + v);
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
    const std::string& why = c.error;
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
  if (!c.ok()) {
    // Name what a damaged record held, read past its CRC (its contents are untrusted).
    const CaptureContents salvaged = ReadCapture(bytes.value(), {.past_crc_mismatch = true});
    for (const FrameEntry& e : Frames(salvaged)) {
      if (e.damaged && e.offset == c.error_offset)
        problems.push_back({e.offset, "the damaged record reads as " + Describe(e)});
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
    out << "readable prefix (" << c.records.size() << " records, " << c.error_offset << " of "
        << bytes->size() << " bytes):\n";
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
    out << "check: FAILED (" << Problems(problems.size()) << ")\n";
  }
  return 1;
}

}  // namespace tally::replay
