// tally-keygen: creates the key folder a Tally deployment runs from (see keys/keys.h).
//
// Prints one line per file written; never key material. Exit 0 ok, 1 failed, 2 usage.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "keys/keys.h"
#include "schema/schema.h"

namespace {

constexpr std::string_view kBrokerName = "broker";

constexpr char kUsage[] =
    "usage: tally-keygen --dir DIR [--hospital NAME] [--patients NAME,NAME,...] [--force]\n"
    "\n"
    "Creates CURVE and sealing keypairs: DIR/public/NAME.key (0644) and\n"
    "DIR/private/NAME.key_secret (0600, folder 0700).\n"
    "\n"
    "  --dir DIR          the key folder (created if missing)\n"
    "  --hospital NAME    create keys for the hospital NAME\n"
    "  --patients LIST    create keys for each patient in the comma-separated LIST\n"
    "  --force            replace existing keys of the named parties\n"
    "  --help             show this help\n"
    "\n"
    "Without --hospital and --patients: hospital \"hospital\", patients alice,bob,charlie.\n"
    "The broker's keys (name \"broker\") are created when DIR has none yet; --force does not\n"
    "replace them (delete DIR/private/broker.key_secret to rotate them).\n"
    "Names: [a-z0-9_-]{1,32}; \"broker\" is reserved.\n";

int UsageError(const std::string& message) {
  std::fprintf(stderr, "tally-keygen: %s\n(see tally-keygen --help)\n", message.c_str());
  return 2;
}

struct Party {
  std::string name;
  tally::Role role;
};

bool Exists(const std::filesystem::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  bool have_dir = false;
  bool force = false;
  std::vector<Party> parties;
  bool named = false;

  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto take_value = [&]() -> bool {
      if (has_value) return true;
      if (i + 1 >= argc) return false;
      value = argv[++i];
      return true;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--force" && !has_value) {
      force = true;
    } else if (arg == "--dir") {
      if (!take_value() || value.empty()) return UsageError("--dir needs a folder");
      if (have_dir) return UsageError("--dir given twice");
      dir = std::string(value);
      have_dir = true;
    } else if (arg == "--hospital") {
      if (!take_value()) return UsageError("--hospital needs a name");
      parties.push_back({std::string(value), tally::Role::kHospital});
      named = true;
    } else if (arg == "--patients") {
      if (!take_value()) return UsageError("--patients needs a comma-separated list of names");
      while (true) {
        size_t comma = value.find(',');
        parties.push_back({std::string(value.substr(0, comma)), tally::Role::kPatient});
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
      }
      named = true;
    } else {
      return UsageError("unknown argument \"" + std::string(arg) + "\"");
    }
  }
  if (!have_dir) return UsageError("--dir is required");
  if (!named) {
    parties = {{"hospital", tally::Role::kHospital},
               {"alice", tally::Role::kPatient},
               {"bob", tally::Role::kPatient},
               {"charlie", tally::Role::kPatient}};
  }
  for (size_t i = 0; i < parties.size(); ++i) {
    const std::string& name = parties[i].name;
    if (!tally::ValidName(name)) {
      return UsageError("\"" + name + "\" is not a valid name ([a-z0-9_-]{1,32})");
    }
    if (name == kBrokerName) return UsageError("\"broker\" is reserved for the broker");
    for (size_t j = 0; j < i; ++j) {
      if (parties[j].name == name) return UsageError("\"" + name + "\" is named twice");
    }
  }

  const std::filesystem::path root(dir);
  auto secret_path = [&](const std::string& name) {
    return root / "private" / (name + ".key_secret");
  };
  auto public_path = [&](const std::string& name) { return root / "public" / (name + ".key"); };

  // Refuse before writing anything, so a refused run leaves the folder as it was.
  if (!force) {
    for (const Party& party : parties) {
      if (Exists(secret_path(party.name))) {
        std::fprintf(stderr, "tally-keygen: %s exists; use --force to replace it\n",
                     secret_path(party.name).c_str());
        return 1;
      }
    }
  }
  if (!Exists(secret_path(std::string(kBrokerName)))) {
    parties.insert(parties.begin(), {std::string(kBrokerName), tally::Role::kBroker});
  }

  for (const Party& party : parties) {
    // The broker is only ever created fresh here, never replaced.
    const bool replace = force && party.role != tally::Role::kBroker;
    tally::Status status = tally::GenerateParty(root, party.name, party.role, replace);
    if (!status.ok()) {
      std::fprintf(stderr, "tally-keygen: %s\n", status.message().c_str());
      return 1;
    }
    std::printf("wrote %s\nwrote %s\n", public_path(party.name).c_str(),
                secret_path(party.name).c_str());
  }
  if (std::fflush(stdout) != 0) return 1;
  return 0;
}
