// Internal to tally_replay: what its parts (timeline, check, audit, inject) share. Not for
// other targets; the public interface is tools/replay_lib.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keys/keys.h"
#include "nodes/seal.h"
#include "schema/capture.h"
#include "tools/replay_lib.h"

namespace tally::replay {

// The capture's header (its first record) or trailer (its last), or nullptr.
const CaptureHeader* HeaderOf(const CaptureContents& c);
const CaptureTrailer* TrailerOf(const CaptureContents& c);

// "1 envelope", "3 envelopes".
std::string Count(size_t n, std::string_view noun);
// Shown in text: long vectors are elided (the JSON output carries them whole).
std::string ShortNumbers(const std::vector<uint64_t>& v);
// "index", "offset", and when it decodes "kind", "from", "to", as JSON fields.
std::string FrameFields(const FrameEntry& e);
// "check: FAILED (2 problems)" style counts.
std::string Problems(size_t n);

// Lines of output: text, or one JSON object per line with its type and message.
class Printer {
 public:
  Printer(std::ostream& out, bool json) : out_(out), json_(json) {}
  // A text line, or in JSON {"type": type, "message": text, fields...}.
  void Line(std::string_view type, const std::string& text, const std::string& fields = "");
  bool json() const { return json_; }

 private:
  std::ostream& out_;
  bool json_;
};

// A party as the audit and the injection need it: the roster, its secrets, its sealer.
struct Identity {
  Roster roster;
  SecretCertificate me;
  Sealer sealer;
};
Result<Identity> LoadIdentity(const std::filesystem::path& keys_dir, const std::string& name);

// The modes that need keys; each returns the exit code. `bytes` is the capture file.
int Audit(const Options& o, std::span<const uint8_t> bytes, std::ostream& out, std::ostream& err);
int Inject(const Options& o, std::span<const uint8_t> bytes, std::ostream& out, std::ostream& err);

}  // namespace tally::replay
