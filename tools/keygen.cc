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
    "usage: tally-keygen --dir DIR [--broker] [--hospital NAME] [--patients NAME,NAME,...]\n"
    "                    [--force]\n"
    "\n"
    "Creates keys: DIR/public/NAME.key (0644, the certificate to hand to the others) and\n"
    "DIR/private/NAME.key_secret (0600, folder 0700, never leaves this host).\n"
    "\n"
    "  --dir DIR          the key folder (created if missing)\n"
    "  --broker           the broker's keys: a CURVE keypair, and no sealing or signing key\n"
    "  --hospital NAME    keys for the hospital NAME: a CURVE, a sealing (X25519) and a\n"
    "                     signing (Ed25519) keypair\n"
    "  --patients LIST    keys for each patient in the comma-separated LIST, as for the hospital\n"
    "  --force            replace existing keys of the named parties\n"
    "  --help             show this help\n"
    "\n"
    "On separate hosts, each party makes its own keys on its own host (e.g. tally-keygen\n"
    "--dir keys --patients alice) and hands out only public/NAME.key.\n"
    "Without --broker, --hospital and --patients: a demo set on one host, the broker (when\n"
    "DIR has none yet; never replaced), hospital \"hospital\" and patients alice,bob,charlie.\n"
    "Names: [a-z0-9_-]{1,32}; \"broker\" is reserved for the broker.\n";

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
  bool broker = false;  // --broker: make (or with --force replace) the broker's keys
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
    } else if (arg == "--broker" && !has_value) {
      if (broker) return UsageError("--broker given twice");
      broker = true;
      named = true;
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

  if (broker) parties.insert(parties.begin(), {std::string(kBrokerName), tally::Role::kBroker});
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
  // The demo set makes the broker's keys when there are none, and never replaces them.
  if (!named && !Exists(secret_path(std::string(kBrokerName))))
    parties.insert(parties.begin(), {std::string(kBrokerName), tally::Role::kBroker});

  for (const Party& party : parties) {
    tally::Status status = tally::GenerateParty(root, party.name, party.role, force);
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
