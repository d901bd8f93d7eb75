// Secrets never leave their files or their rounds: a whole round with real processes
// (tally-broker, four tally-node patients, one of them killed as it was to send its masked input,
// and the hospital), then every secret is looked for in everything the round wrote: each
// process's stderr log and stdout, the hospital's results file, every capture, and the public
// roster. The secrets: each party's CURVE, sealing and signing secrets (the Ed25519 seed and the
// expanded key), the X25519 secret of every pair of nodes from which their seals derive, and
// what the round itself made secret, as the hospital rebuilds it from the capture with its own
// keys: the plaintext of every envelope, every Shamir share in the unmasks, each survivor's
// self-mask seed and its mask key, the dropped patient's round mask secret and its pairwise mask
// keys, and each patient's input. (A patient's round secrets that nobody ever rebuilds, its
// share key and a survivor's mask secret, stay inside its process and cannot be looked for from
// outside.) Looked for as raw bytes, Z85 (the certificate encoding) and hex in both cases.
// Refusals to load a secret (permissions too open, a secret that does not match its public key)
// must not print key material either. Finally, what is observable of SecretKey's memory handling
// from outside.
#include <gtest/gtest.h>
#include <signal.h>
#include <sodium.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <map>

#include "keys/keys.h"
#include "nodes/seal.h"
#include "nodes/shamir.h"
#include "schema/capture.h"
#include "tests/support.h"
#include "tools/cluster.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;
const std::vector<std::string> kParties = {"broker", "hospital", "alice", "bob", "charlie", "dave"};

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

std::vector<Needle> Needles(const std::string& name, const char* which, const uint8_t* k,
                            size_t size) {
  const std::string what = name + " " + which + " secret as ";
  std::vector<Needle> out = {
      {what + "raw bytes", std::string(reinterpret_cast<const char*>(k), size)},
      {what + "lowercase hex", Hex(k, size, false)},
      {what + "uppercase hex", Hex(k, size, true)},
  };
  if (size % 4 == 0) out.push_back({what + "Z85", Z85Encode(k, size)});
  return out;
}
std::vector<Needle> Needles(const std::string& name, const char* which, const SecretKey& key) {
  return Needles(name, which, key.data(), SecretKey::size());
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
    for (auto& n : Needles(name, "sign", secret->sign_seed)) out.push_back(std::move(n));
    // The Ed25519 secret key the seed expands to (seed || public key), as libsodium holds it.
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    EXPECT_EQ(crypto_sign_seed_keypair(pk, sk, secret->sign_seed.data()), 0);
    EXPECT_EQ(std::memcmp(pk, secret->pub.sign_public.data(), sizeof pk), 0) << name;
    for (auto& n : Needles(name, "expanded sign", sk, sizeof sk)) out.push_back(std::move(n));
    sodium_memzero(sk, sizeof sk);
  }
  return out;
}

// The X25519 secret each pair of nodes shares (crypto_box_beforenm of one's seal secret and the
// other's seal public key): a patient's seal key to the hospital derives from it (pair masks
// come from the round keys).
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

// What a round made secret, rebuilt from its capture as its hospital can (nodes/seal.h,
// nodes/shamir.h): the plaintext of every envelope, every share in the unmasks, each survivor's
// self-mask seed b and its self-mask key, each dropped patient's mask secret s (checked against
// its published key) and its pairwise mask keys. Counts the seeds, the secrets and the shares.
std::vector<Needle> RoundNeedles(const fs::path& capture, const fs::path& keys, size_t* seeds,
                                 size_t* secrets, size_t* shares) {
  std::vector<Needle> out;
  auto contents = ReadCaptureFile(capture);
  EXPECT_TRUE(contents.ok() && contents->ok());
  if (!contents.ok()) return out;
  const CaptureHeader* h = nullptr;
  std::optional<Batch> keys_batch;
  std::vector<Envelope> envelopes;
  RoundSets mask_sets, last_sets;
  for (const CaptureRecord& r : contents->records) {
    if (auto* hd = std::get_if<CaptureHeader>(&r)) h = hd;
    if (auto* p = std::get_if<CapturePhase>(&r)) {
      if (p->phase == Phase::kMask) mask_sets = p->sets;
      last_sets = p->sets;
    }
    if (auto* f = std::get_if<CaptureFrame>(&r)) {
      auto m = Decode(f->frame);
      EXPECT_TRUE(m.ok()) << m.message();
      if (!m.ok()) continue;
      if (auto* b = std::get_if<Batch>(&*m)) keys_batch = *b;
      if (auto* e = std::get_if<Envelope>(&*m)) envelopes.push_back(*e);
    }
  }
  EXPECT_TRUE(h != nullptr && keys_batch && !mask_sets.shared.empty());
  if (h == nullptr || !keys_batch || mask_sets.shared.empty()) return out;
  const auto& names = h->params.participants;
  const size_t n = names.size();
  const Sealer hospital = MakeSealer(keys, h->params.hospital);
  auto round_keys = KeysOf(*keys_batch, mask_sets.joined);
  EXPECT_TRUE(round_keys.ok()) << round_keys.message();
  if (!round_keys.ok()) return out;
  auto view = hospital.View(h->round, h->params, mask_sets.shared, round_keys->keys);
  EXPECT_TRUE(view.ok()) << view.message();
  if (!view.ok()) return out;
  // Per unmasker (participant index), its shares of the survivors' seeds and the dropped
  // patients' secrets, in participant order.
  std::vector<std::pair<size_t, UnmaskShares>> unmasks;
  for (const Envelope& env : envelopes) {
    auto plain = hospital.Open(Binding{env.round, env.kind, env.from, env.to, *view}, env.sealed);
    EXPECT_TRUE(plain.ok()) << env.from << ": " << plain.message();
    if (!plain.ok()) continue;
    const std::string label = env.from + " " + std::string(KindName(env.kind)) + " plaintext";
    for (auto& nd : Needles(label, "envelope", plain->data(), plain->size()))
      out.push_back(std::move(nd));
    if (env.kind != EnvelopeKind::kUnmask) continue;
    auto decoded = DecodeUnmask(*plain, n);
    EXPECT_TRUE(decoded.ok()) << decoded.message();
    if (!decoded.ok()) continue;
    for (const Share& share : decoded->self_seeds) {
      ++*shares;
      for (auto& nd : Needles(env.from + " seed share", "shamir", share.data(), share.size()))
        out.push_back(std::move(nd));
    }
    for (const Share& share : decoded->mask_secrets) {
      ++*shares;
      for (auto& nd :
           Needles(env.from + " mask-secret share", "shamir", share.data(), share.size()))
        out.push_back(std::move(nd));
    }
    const size_t from =
        static_cast<size_t>(std::find(names.begin(), names.end(), env.from) - names.begin());
    unmasks.emplace_back(from, std::move(decoded.value()));
  }
  EXPECT_GE(unmasks.size(), h->params.threshold);
  std::vector<uint16_t> xs;
  for (const auto& [from, u] : unmasks) xs.push_back(static_cast<uint16_t>(from + 1));
  auto combiner = ShamirCombiner::Create(xs);
  EXPECT_TRUE(combiner.ok()) << combiner.message();
  if (!combiner.ok()) return out;
  size_t seed_at = 0, secret_at = 0;  // the position of a member among the shares
  for (size_t v = 0; v < n; ++v) {
    const bool survivor = last_sets.masked[v];
    if (!survivor && !mask_sets.shared[v]) continue;
    std::vector<Share> of_v;
    for (const auto& [from, u] : unmasks)
      of_v.push_back(survivor ? u.self_seeds.at(seed_at) : u.mask_secrets.at(secret_at));
    SecretKey secret;
    combiner->Combine(of_v, std::span<uint8_t, kShareSize>(secret.data(), kShareSize));
    if (survivor) {
      ++seed_at;
      ++*seeds;
      for (auto& nd : Needles(names[v], "self-mask seed", secret)) out.push_back(std::move(nd));
      SecretKey self_key;
      SelfMaskKey(secret.data(), self_key.data());
      for (auto& nd : Needles(names[v], "self-mask key", self_key)) out.push_back(std::move(nd));
    } else {
      ++secret_at;
      ++*secrets;
      // The rebuilt secret is right: it matches the spk the patient signed.
      EXPECT_TRUE(MatchesPublicKey(secret.data(), round_keys->keys[v].spk)) << names[v];
      for (auto& nd : Needles(names[v], "round mask", secret)) out.push_back(std::move(nd));
      for (size_t w = 0; w < n; ++w) {
        if (w == v || !mask_sets.shared[w]) continue;
        SecretKey pair;
        EXPECT_TRUE(PairMaskKey(secret.data(), round_keys->keys[w].spk,
                                DigestOf(h->round, h->params), v, w, pair.data())
                        .ok());
        for (auto& nd : Needles(names[v] + "-" + names[w], "pairwise mask key", pair))
          out.push_back(std::move(nd));
      }
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
    keys_ = MakeKeys(dir_.path(), {"alice", "bob", "charlie", "dave"});
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

TEST_F(SecretsTest, NoSecretAppearsInAnyLogOutputResultOrCaptureOfARoundWithADropout) {
  const fs::path captures = dir_.path() / "captures", results = dir_.path() / "results.jsonl";
  Status started = cluster_.StartBroker();
  ASSERT_TRUE(started.ok()) << started.message();
  // What the broker printed: its readiness lines.
  std::string stdout_text =
      "router " + cluster_.endpoints().router + "\nphases " + cluster_.endpoints().phases + "\n";

  // Inputs of twelve digits, which no log line holds by chance; dave's is never summed.
  const std::map<std::string, uint64_t> values = {{"alice", 731904226581},
                                                  {"bob", 402817539264},
                                                  {"charlie", 195736284019},
                                                  {"dave", 860251937448}};
  std::map<std::string, Child> patients;
  for (const auto& [name, value] : values) {
    std::vector<std::string> args = {"--value", std::to_string(value), "--once"};
    if (name == "dave") args.insert(args.end(), {"--vanish-at", "mask"});
    patients.emplace(name, Node(name, args));
    Status ready = Cluster::AwaitReady(patients.at(name), kWait);
    ASSERT_TRUE(ready.ok()) << name << ": " << ready.message();
    stdout_text += "ready\n";
  }
  auto hospital = Node("hospital", {"--range", "1000000000000", "--json", "--results",
                                    results.string(), "--participants", "alice,bob,charlie,dave"});
  // dave says it vanishes, and is killed there as a crash would end it.
  Child& dave = patients.at("dave");
  std::optional<std::string> said;
  for (int i = 0; i < 8 && !(said && *said == "vanish mask"); ++i) {
    said = dave.ReadLine(kWait);
    if (!said) break;
    stdout_text += *said + "\n";
  }
  ASSERT_TRUE(said && *said == "vanish mask") << (said ? *said : "no line");
  dave.Signal(SIGKILL);
  EXPECT_EQ(dave.Wait(kWait), 128 + SIGKILL);
  auto line = hospital.ReadLine(std::chrono::milliseconds(60000));
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_NE(line->find("\"aggregate\": 1330458049864, "), std::string::npos) << *line;
  EXPECT_NE(line->find("\"dropped\": [\"dave\"], "), std::string::npos) << *line;
  EXPECT_EQ(hospital.Wait(kWait), 0);
  stdout_text += *line + "\n" + hospital.ReadAll(kWait);
  for (auto& [name, child] : patients) {
    if (name == "dave") continue;
    EXPECT_EQ(child.Wait(kWait), 0) << name << ": " << LastLine(dir_.path() / (name + ".log"));
    stdout_text += child.ReadAll(kWait);
  }
  EXPECT_EQ(cluster_.broker().Stop(), 0);
  stdout_text += cluster_.broker().ReadAll(kWait);

  const auto needles = AllNeedles(keys_, kParties);
  // The broker: a CURVE key only; each node: CURVE, seal, sign seed (4 forms) and the expanded
  // sign key (3: 64 bytes have a Z85 form too).
  ASSERT_EQ(needles.size(), 4 + (kParties.size() - 1) * (3 * 4 + 4));
  const std::vector<std::string> nodes = {"hospital", "alice", "bob", "charlie", "dave"};
  const auto pairs = PairNeedles(keys_, nodes);
  ASSERT_EQ(pairs.size(), nodes.size() * (nodes.size() - 1) / 2 * 4);
  // The needles are right: each party's secret file holds its keys in Z85.
  for (const auto& name : kParties) {
    const std::string file = ReadText(keys_ / "private" / (name + ".key_secret"));
    size_t found = 0;
    for (const auto& n : needles)
      found += n.label.rfind(name + " ", 0) == 0 && n.label.ends_with(" as Z85") &&
               file.find(n.bytes) != std::string::npos;
    EXPECT_EQ(found, name == "broker" ? 1u : 3u)
        << name << "'s secret file does not hold its keys in Z85";
  }

  size_t capture_files = 0;
  fs::path capture;
  for (const auto& entry : fs::directory_iterator(captures)) {
    capture = entry.path();
    ++capture_files;
  }
  ASSERT_EQ(capture_files, 1u);
  size_t seeds = 0, secrets = 0, shares = 0;
  const auto round = RoundNeedles(capture, keys_, &seeds, &secrets, &shares);
  EXPECT_EQ(seeds, 3u);        // alice's, bob's and charlie's self-mask seeds
  EXPECT_EQ(secrets, 1u);      // dave's mask secret
  EXPECT_EQ(shares, 3u * 4u);  // three unmasks, each with four shares
  std::vector<Needle> inputs;
  for (const auto& [name, value] : values) {
    uint8_t raw[8];
    for (int i = 0; i < 8; ++i) raw[i] = static_cast<uint8_t>(value >> (8 * i));
    inputs.push_back({name + "'s input in decimal", std::to_string(value)});
    inputs.push_back(
        {name + "'s input as raw bytes", std::string(reinterpret_cast<char*>(raw), sizeof raw)});
  }

  // Everything the round wrote, and the public half of the key folder.
  std::map<std::string, std::string> written;
  written["stdout of all six processes"] = stdout_text;
  for (const auto& name : kParties) {
    const fs::path log = dir_.path() / (name + ".log");
    ASSERT_TRUE(fs::exists(log)) << log;
    written[log.filename().string()] = ReadText(log);
  }
  ASSERT_TRUE(fs::exists(results));
  written["results.jsonl"] = ReadText(results);
  written["capture " + capture.filename().string()] = ReadText(capture);
  for (const auto& entry : fs::directory_iterator(keys_ / "public"))
    written["public " + entry.path().filename().string()] = ReadText(entry.path());
  EXPECT_FALSE(written["broker.log"].empty());
  EXPECT_FALSE(written["hospital.log"].empty());
  EXPECT_NE(written["dave.log"].find("event=vanish"), std::string::npos) << written["dave.log"];
  for (const auto& [where, text] : written) {
    ExpectNoNeedle(needles, text, where);
    ExpectNoNeedle(pairs, text, where);
    ExpectNoNeedle(round, text, where);
    ExpectNoNeedle(inputs, text, where);
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
