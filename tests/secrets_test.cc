// Secret keys never leave their files: a whole round with real processes (tally-broker, three
// tally-node patients and the hospital), then every secret key — each party's CURVE and sealing
// secret, and the X25519 secret of every pair of nodes from which their seal and mask keys are
// derived — is looked for in everything the round wrote: each process's stderr log and stdout,
// the hospital's results file, every capture, and the public roster. Looked for as raw bytes,
// Z85 (the certificate encoding) and hex in both cases. Refusals to load a secret (permissions
// too open, a secret that does not match its public key) must not print key material either.
// Finally, what is observable of SecretKey's memory handling from outside.
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <map>

#include "keys/keys.h"
#include "tests/support.h"
#include "tools/cluster.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;
const std::vector<std::string> kParties = {"broker", "hospital", "alice", "bob", "charlie"};

std::string Hex(const uint8_t* bytes, size_t size, bool upper) {
  static constexpr char kLower[] = "0123456789abcdef", kUpper[] = "0123456789ABCDEF";
  const char* digits = upper ? kUpper : kLower;
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 15];
  }
  return out;
}

// One secret in every form it could leak in.
struct Needle {
  std::string label;  // "alice curve secret as Z85" — never the key itself
  std::string bytes;
};

std::vector<Needle> Needles(const std::string& name, const char* which, const SecretKey& key) {
  const uint8_t* k = key.data();
  const std::string what = name + " " + which + " secret as ";
  return {
      {what + "raw bytes", std::string(reinterpret_cast<const char*>(k), SecretKey::size())},
      {what + "Z85", Z85Encode(k, SecretKey::size())},
      {what + "lowercase hex", Hex(k, SecretKey::size(), false)},
      {what + "uppercase hex", Hex(k, SecretKey::size(), true)},
  };
}

std::vector<Needle> AllNeedles(const fs::path& keys, const std::vector<std::string>& names) {
  std::vector<Needle> out;
  for (const auto& name : names) {
    auto secret = LoadSecret(keys, name);
    EXPECT_TRUE(secret.ok()) << secret.message();
    if (!secret.ok()) continue;
    for (auto& n : Needles(name, "curve", secret->curve_secret)) out.push_back(std::move(n));
    if (secret->pub.role == Role::kBroker) continue;  // the broker has no sealing key
    for (auto& n : Needles(name, "seal", secret->seal_secret)) out.push_back(std::move(n));
  }
  return out;
}

// The X25519 secret each pair of nodes shares (crypto_box_beforenm of one's seal secret and the
// other's seal public key): both its seal key and its pairwise mask key derive from it.
std::vector<Needle> PairNeedles(const fs::path& keys, const std::vector<std::string>& names) {
  std::vector<Needle> out;
  auto roster = LoadRoster(keys);
  EXPECT_TRUE(roster.ok()) << roster.message();
  if (!roster.ok()) return out;
  for (size_t i = 0; i < names.size(); ++i) {
    auto secret = LoadSecret(keys, names[i]);
    EXPECT_TRUE(secret.ok()) << secret.message();
    if (!secret.ok()) continue;
    for (size_t j = i + 1; j < names.size(); ++j) {
      const Certificate* peer = roster->Find(names[j]);
      EXPECT_NE(peer, nullptr) << names[j];
      if (peer == nullptr) continue;
      SecretKey shared, other;
      EXPECT_EQ(
          crypto_box_beforenm(shared.data(), peer->seal_public.data(), secret->seal_secret.data()),
          0);
      // The same secret from the other end: it is what both parties of the pair derive from.
      auto peer_secret = LoadSecret(keys, names[j]);
      EXPECT_TRUE(peer_secret.ok()) << peer_secret.message();
      if (!peer_secret.ok()) continue;
      EXPECT_EQ(crypto_box_beforenm(other.data(), roster->Find(names[i])->seal_public.data(),
                                    peer_secret->seal_secret.data()),
                0);
      EXPECT_EQ(sodium_memcmp(shared.data(), other.data(), SecretKey::size()), 0)
          << names[i] << "-" << names[j];
      for (auto& n : Needles(names[i] + "-" + names[j], "pair", shared))
        out.push_back(std::move(n));
    }
  }
  return out;
}

// Reports which needles occur in `haystack` (by label, so a failure never prints a key).
void ExpectNoNeedle(const std::vector<Needle>& needles, const std::string& haystack,
                    const std::string& where) {
  for (const auto& n : needles)
    EXPECT_EQ(haystack.find(n.bytes), std::string::npos) << n.label << " found in " << where;
}

class SecretsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    keys_ = MakeKeys(dir_.path(), {"alice", "bob", "charlie"});
  }

  // tally-node as `name` with `args`; its log in NAME.log, or with `merge` on its stdout.
  Child Node(const std::string& name, const std::vector<std::string>& args, bool merge = false) {
    auto c = cluster_.SpawnNode(name, args, "", merge);
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  TempDir dir_;
  Cluster cluster_{kBin, dir_.path(), dir_.path()};  // logs in dir_ itself
  fs::path keys_;
};

TEST_F(SecretsTest, NoSecretKeyAppearsInAnyLogOutputResultOrCaptureOfARealRound) {
  const fs::path captures = dir_.path() / "captures", results = dir_.path() / "results.jsonl";
  Status started = cluster_.StartBroker();
  ASSERT_TRUE(started.ok()) << started.message();
  // What the broker printed: its readiness lines.
  std::string stdout_text =
      "router " + cluster_.endpoints().router + "\nphases " + cluster_.endpoints().phases + "\n";

  std::map<std::string, Child> patients;
  const std::map<std::string, std::string> values = {
      {"alice", "725"}, {"bob", "100"}, {"charlie", "31"}};
  for (const auto& [name, value] : values)
    patients.emplace(name, Node(name, {"--value", value, "--once"}));
  auto hospital = Node("hospital", {"--range", "1000", "--json", "--results", results.string()});
  auto line = hospital.ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_NE(line->find("\"aggregate\": 856"), std::string::npos) << *line;
  EXPECT_EQ(hospital.Wait(kWait), 0);
  stdout_text += *line + "\n" + hospital.ReadAll(kWait);
  for (auto& [name, child] : patients) {
    EXPECT_EQ(child.Wait(kWait), 0) << name << ": " << LastLine(dir_.path() / (name + ".log"));
    stdout_text += child.ReadAll(kWait);
  }
  EXPECT_EQ(cluster_.broker().Stop(), 0);
  stdout_text += cluster_.broker().ReadAll(kWait);

  const auto needles = AllNeedles(keys_, kParties);
  ASSERT_EQ(needles.size(), (kParties.size() * 2 - 1) * 4);  // the broker: a CURVE key only
  const std::vector<std::string> nodes = {"hospital", "alice", "bob", "charlie"};
  const auto pairs = PairNeedles(keys_, nodes);
  ASSERT_EQ(pairs.size(), nodes.size() * (nodes.size() - 1) / 2 * 4);
  // The needles are right: each party's secret file holds its keys in Z85.
  for (const auto& name : kParties) {
    const std::string file = ReadText(keys_ / "private" / (name + ".key_secret"));
    size_t found = 0;
    for (const auto& n : needles)
      found += n.label.rfind(name + " ", 0) == 0 && n.label.ends_with(" as Z85") &&
               file.find(n.bytes) != std::string::npos;
    EXPECT_EQ(found, name == "broker" ? 1u : 2u)
        << name << "'s secret file does not hold its keys in Z85";
  }

  // Everything the round wrote, and the public half of the key folder.
  std::map<std::string, std::string> written;
  written["stdout of all five processes"] = stdout_text;
  for (const auto& name : kParties) {
    const fs::path log = dir_.path() / (name + ".log");
    ASSERT_TRUE(fs::exists(log)) << log;
    written[log.filename().string()] = ReadText(log);
  }
  ASSERT_TRUE(fs::exists(results));
  written["results.jsonl"] = ReadText(results);
  size_t capture_files = 0;
  for (const auto& entry : fs::directory_iterator(captures)) {
    written["capture " + entry.path().filename().string()] = ReadText(entry.path());
    ++capture_files;
  }
  EXPECT_EQ(capture_files, 1u);
  for (const auto& entry : fs::directory_iterator(keys_ / "public"))
    written["public " + entry.path().filename().string()] = ReadText(entry.path());
  EXPECT_FALSE(written["broker.log"].empty());
  EXPECT_FALSE(written["hospital.log"].empty());
  for (const auto& [where, text] : written) {
    ExpectNoNeedle(needles, text, where);
    ExpectNoNeedle(pairs, text, where);
  }
}

// A process that refuses its secret file says why without printing what is in it.
TEST_F(SecretsTest, RefusalsToLoadASecretPrintNoKeyMaterial) {
  const auto needles = AllNeedles(keys_, kParties);
  // Never reached: the key check comes first.
  const std::vector<std::string> args = {
      "--router", "tcp://127.0.0.1:1", "--phases", "tcp://127.0.0.1:2", "--value", "1", "--once"};

  // Permissions too open, for a node and for the broker.
  const fs::path alice = keys_ / "private" / "alice.key_secret";
  ASSERT_EQ(::chmod(alice.c_str(), 0640), 0);
  auto node = Node("alice", args, /*merge=*/true);
  std::string out = node.ReadAll(kWait);
  EXPECT_EQ(node.Wait(kWait), 2) << out;
  EXPECT_NE(out.find("permissions 0640 are too open"), std::string::npos) << out;
  ExpectNoNeedle(needles, out, "tally-node's refusal of a 0640 secret");
  ASSERT_EQ(::chmod(alice.c_str(), 0600), 0);

  const fs::path broker_secret = keys_ / "private" / "broker.key_secret";
  ASSERT_EQ(::chmod(broker_secret.c_str(), 0604), 0);
  EXPECT_FALSE(cluster_.StartBroker().ok());
  EXPECT_EQ(cluster_.broker().Wait(kWait), 2);
  out = ReadText(cluster_.LogOf("broker"));
  EXPECT_NE(out.find("permissions 0604 are too open"), std::string::npos) << out;
  ExpectNoNeedle(needles, out, "tally-broker's refusal of a 0604 secret");
  ASSERT_EQ(::chmod(broker_secret.c_str(), 0600), 0);

  // A secret file whose curve secret is bob's: it does not match alice's public key.
  std::string text = ReadText(alice);
  auto mine = LoadSecret(keys_, "alice").value();
  auto bobs = LoadSecret(keys_, "bob").value();
  const std::string z_mine = Z85Encode(mine.curve_secret.data(), 32);
  const std::string z_bobs = Z85Encode(bobs.curve_secret.data(), 32);
  const size_t at = text.find(z_mine);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, z_mine.size(), z_bobs);
  {
    std::ofstream f(alice, std::ios::binary | std::ios::trunc);
    f << text;
  }
  ASSERT_EQ(::chmod(alice.c_str(), 0600), 0);
  auto loaded = LoadSecret(keys_, "alice");
  ASSERT_FALSE(loaded.ok());
  ExpectNoNeedle(needles, loaded.message(), "LoadSecret's error for a mismatched secret");
  node = Node("alice", args, /*merge=*/true);
  out = node.ReadAll(kWait);
  EXPECT_EQ(node.Wait(kWait), 2) << out;
  EXPECT_NE(out.find("does not match"), std::string::npos) << out;
  ExpectNoNeedle(needles, out, "tally-node's refusal of a mismatched secret");
}

// What can be observed of SecretKey from outside without undefined behaviour: a fresh key is
// zero, a move hands over the one buffer (no copy of the secret stays behind in the source),
// and loaded keys are distinct buffers. That the memory is locked, guarded and wiped on free
// is libsodium's (sodium_malloc / sodium_free) and not observable portably, so not tested here.
TEST(SecretKeyTest, FreshIsZeroAndAMoveLeavesNoCopyBehind) {
  ASSERT_GE(sodium_init(), 0);
  SecretKey fresh;
  ASSERT_NE(fresh.data(), nullptr);
  EXPECT_TRUE(sodium_is_zero(fresh.data(), SecretKey::size()));

  SecretKey a;
  randombytes_buf(a.data(), SecretKey::size());
  uint8_t copy[32];
  std::memcpy(copy, a.data(), sizeof copy);
  const uint8_t* buffer = a.data();
  SecretKey b(std::move(a));
  EXPECT_EQ(a.data(),
            nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is the point
  EXPECT_EQ(b.data(), buffer);
  EXPECT_EQ(sodium_memcmp(b.data(), copy, sizeof copy), 0);

  SecretKey c;
  c = std::move(b);
  EXPECT_EQ(b.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(c.data(), buffer);
  SecretKey& alias = c;
  c = std::move(alias);         // self-move keeps the key
  EXPECT_EQ(c.data(), buffer);  // NOLINT(bugprone-use-after-move)
  sodium_memzero(copy, sizeof copy);
}

TEST(SecretKeyTest, LoadedKeysAreSeparateBuffers) {
  ASSERT_GE(sodium_init(), 0);
  TempDir dir;
  auto keys = MakeKeys(dir.path(), {"alice"});
  auto one = LoadSecret(keys, "alice").value();
  auto two = LoadSecret(keys, "alice").value();
  EXPECT_NE(one.curve_secret.data(), two.curve_secret.data());
  EXPECT_NE(one.curve_secret.data(), one.seal_secret.data());
  EXPECT_EQ(sodium_memcmp(one.curve_secret.data(), two.curve_secret.data(), 32), 0);
  EXPECT_NE(sodium_memcmp(one.curve_secret.data(), one.seal_secret.data(), 32), 0);
}

}  // namespace
}  // namespace tally::test
