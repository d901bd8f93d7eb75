// Tests for keys/: certificate text, files and modes, roster, secrets, and tally-keygen.
#include "keys/keys.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "keys/curve.h"
#include "schema/text.h"
#include "tests/contains.h"
#include "tools/cluster.h"

namespace tally {
namespace {

namespace fs = std::filesystem;
void WriteFile(const fs::path& path, std::string_view text, mode_t mode = 0644) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
  }
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

std::string Replace(std::string text, std::string_view from, std::string_view to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// A fresh folder per test, removed afterwards.
class KeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/tally-keys-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path PublicPath(const std::string& name) const { return dir_ / "public" / (name + ".key"); }
  fs::path SecretPath(const std::string& name) const {
    return dir_ / "private" / (name + ".key_secret");
  }
  void Generate(const std::string& name, Role role = Role::kPatient) {
    Status status = GenerateParty(dir_, name, role, false);
    ASSERT_TRUE(status.ok()) << status.message();
  }
  fs::path dir_;
};

// --- Z85 ------------------------------------------------------------------------------------

// A broker heartbeats less often the more connections it serves: libzmq's timer cancels scan
// all of an I/O thread's timers, and at 5 s on 19,600 connections that scan stalled admission
// of 9,800 patients near 4,000 (BENCHMARKS.md, "Scale").
TEST(CurveTest, AServerHeartbeatsEvery5SecondsUpTo1000ConnectionsAnd5MsMorePerConnection) {
  EXPECT_EQ(ServerHeartbeatMs(0), 5000);
  EXPECT_EQ(ServerHeartbeatMs(10), 5000);
  EXPECT_EQ(ServerHeartbeatMs(1000), 5000);
  EXPECT_EQ(ServerHeartbeatMs(1001), 5005);
  EXPECT_EQ(ServerHeartbeatMs(19604), 98020);
  EXPECT_EQ(ServerHeartbeatMs(720000), 3600000);  // at most an hour
  EXPECT_EQ(ServerHeartbeatMs(size_t{1} << 40), 3600000);
}

TEST(CurveTest, TheSocketGetsTheHeartbeatItIsGiven) {
  zmq::context_t ctx;
  zmq::socket_t server(ctx, zmq::socket_type::router), client(ctx, zmq::socket_type::dealer);
  auto me = NewParty("alice", Role::kPatient);
  ASSERT_TRUE(me.ok()) << me.message();
  CurveServer(server, me->curve_secret, "", {0, -1, "", 12345});
  CurveClient(client, *me, me->pub.curve_public, {0, -1, ""});
  EXPECT_EQ(server.get(zmq::sockopt::heartbeat_ivl), 12345);
  EXPECT_EQ(client.get(zmq::sockopt::heartbeat_ivl), kHeartbeatMs);
  EXPECT_EQ(server.get(zmq::sockopt::heartbeat_timeout), kHeartbeatTimeoutMs);
}

TEST(Z85Test, MatchesTheSpecVector) {
  // rfc.zeromq.org/spec/32: these 8 bytes encode as "HelloWorld".
  const uint8_t bytes[] = {0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B};
  EXPECT_EQ(Z85Encode(bytes, sizeof bytes), "HelloWorld");
}

TEST(Z85Test, KeyRoundTrips) {
  PublicKey key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 37 + 11);
  std::string text = Z85Encode(key.data(), key.size());
  ASSERT_EQ(text.size(), 40u);
  Result<PublicKey> decoded = Z85DecodeKey(text);
  ASSERT_TRUE(decoded.ok()) << decoded.message();
  EXPECT_EQ(*decoded, key);
}

TEST(Z85Test, RejectsWrongLengthBadCharactersAndOverflow) {
  const std::string good = "Q1RXIg7u(wTE@fW-z^=bRdG@)8VpQ&9p4/rA)@PM";
  ASSERT_TRUE(Z85DecodeKey(good).ok());
  EXPECT_FALSE(Z85DecodeKey(good.substr(0, 39)).ok());
  EXPECT_FALSE(Z85DecodeKey(good + "0").ok());
  EXPECT_FALSE(Z85DecodeKey("~" + good.substr(1)).ok());
  EXPECT_FALSE(Z85DecodeKey("\"" + good.substr(1)).ok());
  // "#####" is 85^5 - 1, more than 32 bits: not the spelling of any 4 bytes.
  EXPECT_FALSE(Z85DecodeKey("#####" + good.substr(5)).ok());
}

// --- SecretKey ------------------------------------------------------------------------------

TEST(SecretKeyTest, StartsZeroed) {
  SecretKey key;
  ASSERT_NE(key.data(), nullptr);
  for (size_t i = 0; i < SecretKey::size(); ++i) EXPECT_EQ(key.data()[i], 0) << i;
}

TEST(SecretKeyTest, MoveTransfersTheBytesAndEmptiesTheSource) {
  SecretKey a;
  std::memset(a.data(), 0x5a, SecretKey::size());
  const uint8_t* bytes = a.data();

  SecretKey b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): the contract under test
  EXPECT_EQ(b.data(), bytes);
  EXPECT_EQ(b.data()[31], 0x5a);

  SecretKey c;
  c = std::move(b);
  EXPECT_EQ(b.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(c.data(), bytes);

  SecretKey& alias = c;
  c = std::move(alias);  // self-move keeps the key
  EXPECT_EQ(c.data(), bytes);
  EXPECT_EQ(c.data()[0], 0x5a);

  a = std::move(c);  // a moved-from key can be assigned again
  EXPECT_EQ(a.data(), bytes);
}

// --- Files and modes ------------------------------------------------------------------------

TEST_F(KeysTest, GenerateWritesBothFilesWithTheirModes) {
  Generate("alice");
  EXPECT_EQ(FileMode(dir_ / "private"), 0700u);
  EXPECT_EQ(FileMode(dir_ / "public"), 0755u);
  EXPECT_EQ(FileMode(PublicPath("alice")), 0644u);
  EXPECT_EQ(FileMode(SecretPath("alice")), 0600u);
  // No temporaries left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "public"), fs::directory_iterator()), 1);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "private"), fs::directory_iterator()), 1);

  Result<SecretCertificate> secret = LoadSecret(dir_, "alice");
  ASSERT_TRUE(secret.ok()) << secret.message();
  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_TRUE(roster.ok()) << roster.message();
  const Certificate* pub = roster->Find("alice");
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(pub->role, Role::kPatient);
  EXPECT_EQ(pub->curve_public, secret->pub.curve_public);
  EXPECT_EQ(pub->seal_public, secret->pub.seal_public);
  EXPECT_EQ(pub->sign_public, secret->pub.sign_public);
  EXPECT_NE(pub->curve_public, pub->seal_public);  // three separate keypairs
  EXPECT_NE(pub->sign_public, pub->curve_public);
  EXPECT_NE(pub->sign_public, pub->seal_public);
  EXPECT_NE(pub->sign_public, PublicKey{});
  // The secret certificate's sign seed is the Ed25519 seed of the published sign key.
  PublicKey derived{};
  unsigned char expanded[crypto_sign_SECRETKEYBYTES];
  ASSERT_EQ(crypto_sign_seed_keypair(derived.data(), expanded, secret->sign_seed.data()), 0);
  sodium_memzero(expanded, sizeof expanded);
  EXPECT_EQ(derived, pub->sign_public);
}

// NewParty makes the keypairs in memory, as GenerateParty writes them: each secret matches its
// public key, the text round-trips, and the broker gets a CURVE keypair only.
TEST(NewPartyTest, MakesMatchingKeypairsAndNoneButCurveForTheBroker) {
  Result<SecretCertificate> made = NewParty("alice", Role::kPatient);
  ASSERT_TRUE(made.ok()) << made.message();
  EXPECT_EQ(made->pub.name, "alice");
  PublicKey sign{};
  unsigned char expanded[crypto_sign_SECRETKEYBYTES];
  ASSERT_EQ(crypto_sign_seed_keypair(sign.data(), expanded, made->sign_seed.data()), 0);
  sodium_memzero(expanded, sizeof expanded);
  EXPECT_EQ(sign, made->pub.sign_public);
  PublicKey seal{};
  ASSERT_EQ(crypto_scalarmult_base(seal.data(), made->seal_secret.data()), 0);
  EXPECT_EQ(seal, made->pub.seal_public);
  Result<SecretCertificate> parsed = ParseSecretCertificate(FormatSecretCertificate(*made));
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_EQ(parsed->pub.sign_public, made->pub.sign_public);
  EXPECT_EQ(std::memcmp(parsed->sign_seed.data(), made->sign_seed.data(), 32), 0);
  EXPECT_NE(NewParty("alice", Role::kPatient)->pub.sign_public, made->pub.sign_public);

  Result<SecretCertificate> broker = NewParty("broker", Role::kBroker);
  ASSERT_TRUE(broker.ok()) << broker.message();
  EXPECT_NE(broker->pub.curve_public, PublicKey{});
  EXPECT_EQ(broker->pub.seal_public, PublicKey{});
  EXPECT_EQ(broker->pub.sign_public, PublicKey{});
  EXPECT_TRUE(ParseSecretCertificate(FormatSecretCertificate(*broker)).ok());
}

// Every party made gets a signing keypair of its own.
TEST_F(KeysTest, GenerateGivesEachPartyItsOwnSignKey) {
  Generate("alice");
  Generate("bob");
  Generate("hospital", Role::kHospital);
  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_TRUE(roster.ok()) << roster.message();
  const PublicKey alice = roster->Find("alice")->sign_public;
  const PublicKey bob = roster->Find("bob")->sign_public;
  const PublicKey hospital = roster->Find("hospital")->sign_public;
  EXPECT_NE(alice, bob);
  EXPECT_NE(alice, hospital);
  EXPECT_NE(bob, hospital);
  EXPECT_NE(hospital, PublicKey{});
}

TEST_F(KeysTest, ModesDoNotDependOnTheUmask) {
  const mode_t old = ::umask(077);
  Status tight = GenerateParty(dir_ / "tight", "alice", Role::kPatient, false);
  ::umask(0);
  Status loose = GenerateParty(dir_ / "loose", "alice", Role::kPatient, false);
  ::umask(old);
  ASSERT_TRUE(tight.ok()) << tight.message();
  ASSERT_TRUE(loose.ok()) << loose.message();
  for (const fs::path& root : {dir_ / "tight", dir_ / "loose"}) {
    EXPECT_EQ(FileMode(root / "public"), 0755u) << root;
    EXPECT_EQ(FileMode(root / "private"), 0700u) << root;
    EXPECT_EQ(FileMode(root / "public" / "alice.key"), 0644u) << root;
    EXPECT_EQ(FileMode(root / "private" / "alice.key_secret"), 0600u) << root;
  }
}

TEST_F(KeysTest, RefusesAnExistingPrivateFolderOthersCanEnter) {
  ASSERT_EQ(::mkdir((dir_ / "private").c_str(), 0755), 0);
  ASSERT_EQ(::chmod((dir_ / "private").c_str(), 0755), 0);
  Status status = GenerateParty(dir_, "alice", Role::kPatient, false);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), "private: permissions 0755 are too open"));
  EXPECT_FALSE(fs::exists(SecretPath("alice")));
}

TEST_F(KeysTest, RefusesToOverwriteWithoutForceAndReplacesWithForce) {
  Generate("alice");
  const std::string secret_before = ReadText(SecretPath("alice"));
  const std::string public_before = ReadText(PublicPath("alice"));

  Status refused = GenerateParty(dir_, "alice", Role::kPatient, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Contains(refused.message(),
                       "private/alice.key_secret exists; use --force to "
                       "replace it"));
  EXPECT_EQ(ReadText(SecretPath("alice")), secret_before);
  EXPECT_EQ(ReadText(PublicPath("alice")), public_before);

  Result<SecretCertificate> before = LoadSecret(dir_, "alice");
  ASSERT_TRUE(before.ok()) << before.message();
  Status forced = GenerateParty(dir_, "alice", Role::kPatient, true);
  ASSERT_TRUE(forced.ok()) << forced.message();
  Result<SecretCertificate> after = LoadSecret(dir_, "alice");
  ASSERT_TRUE(after.ok()) << after.message();
  EXPECT_NE(after->pub.curve_public, before->pub.curve_public);
  EXPECT_NE(after->pub.seal_public, before->pub.seal_public);
  EXPECT_NE(after->pub.sign_public, before->pub.sign_public);
  EXPECT_EQ(FileMode(SecretPath("alice")), 0600u);
  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_TRUE(roster.ok()) << roster.message();
  EXPECT_EQ(roster->Find("alice")->curve_public, after->pub.curve_public);
  EXPECT_EQ(roster->Find("alice")->sign_public, after->pub.sign_public);
}

TEST_F(KeysTest, GenerateRejectsAnInvalidName) {
  EXPECT_FALSE(GenerateParty(dir_, "Alice", Role::kPatient, false).ok());
  EXPECT_FALSE(GenerateParty(dir_, "../alice", Role::kPatient, false).ok());
  EXPECT_FALSE(GenerateParty(dir_, "", Role::kPatient, false).ok());
  EXPECT_FALSE(GenerateParty(dir_, std::string(33, 'a'), Role::kPatient, false).ok());
}

TEST_F(KeysTest, LoadSecretRefusesGroupOrOtherAccess) {
  Generate("alice");
  for (mode_t mode : {0640, 0604, 0660, 0602}) {
    ASSERT_EQ(::chmod(SecretPath("alice").c_str(), mode), 0);
    Result<SecretCertificate> secret = LoadSecret(dir_, "alice");
    ASSERT_FALSE(secret.ok()) << std::oct << mode;
    char expected[128];
    std::snprintf(expected, sizeof expected,
                  "private/alice.key_secret: permissions %04o are too open; it must be readable "
                  "by its owner only (chmod 600)",
                  static_cast<unsigned>(mode));
    EXPECT_TRUE(Contains(secret.message(), expected));
  }
  ASSERT_EQ(::chmod(SecretPath("alice").c_str(), 0400), 0);
  EXPECT_TRUE(LoadSecret(dir_, "alice").ok());
}

// Regression (found trying Tally on separate hosts): a world-writable public/ folder or broker
// certificate, or a private/ folder anyone can enter, was accepted, though public/ is the
// broker's allowlist and holds every node's pinned copy of the broker's key.
TEST_F(KeysTest, LoadRosterRefusesARosterOthersCanChange) {
  Generate("broker", Role::kBroker);
  Generate("alice");
  ASSERT_TRUE(LoadRoster(dir_).ok());
  const std::string public_dir = (dir_ / "public").string();
  ASSERT_EQ(::chmod(public_dir.c_str(), 0777), 0);
  EXPECT_EQ(LoadRoster(dir_).message(),
            public_dir +
                ": permissions 0777 let other users change the roster; fix with: chmod "
                "go-w " +
                public_dir);
  ASSERT_EQ(::chmod(public_dir.c_str(), 0775), 0);
  EXPECT_TRUE(Contains(LoadRoster(dir_).message(), "permissions 0775"));
  ASSERT_EQ(::chmod(public_dir.c_str(), 0755), 0);

  const std::string broker = PublicPath("broker").string();
  for (mode_t mode : {0666, 0646, 0664}) {
    ASSERT_EQ(::chmod(broker.c_str(), mode), 0);
    char expected[64];
    std::snprintf(expected, sizeof expected, ": permissions %04o", static_cast<unsigned>(mode));
    EXPECT_EQ(LoadRoster(dir_).message(), broker + expected +
                                              " let other users change a roster certificate; fix "
                                              "with: chmod go-w " +
                                              broker);
  }
  ASSERT_EQ(::chmod(broker.c_str(), 0644), 0);

  ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
  EXPECT_TRUE(Contains(LoadRoster(dir_).message(),
                       ": permissions 0777 let other users change the "
                       "key folder; fix with: chmod go-w "));
  ASSERT_EQ(::chmod(dir_.c_str(), 0700), 0);
  EXPECT_TRUE(LoadRoster(dir_).ok());
}

TEST_F(KeysTest, LoadSecretRefusesAPrivateFolderOthersCanEnter) {
  Generate("alice");
  const std::string private_dir = (dir_ / "private").string();
  for (mode_t mode : {0777, 0755, 0710, 0701}) {
    ASSERT_EQ(::chmod(private_dir.c_str(), mode), 0);
    char expected[64];
    std::snprintf(expected, sizeof expected, ": permissions %04o", static_cast<unsigned>(mode));
    EXPECT_EQ(LoadSecret(dir_, "alice").message(),
              private_dir + expected +
                  " let other users reach the secret keys; fix with: chmod "
                  "700 " +
                  private_dir);
  }
  ASSERT_EQ(::chmod(private_dir.c_str(), 0700), 0);
  EXPECT_TRUE(LoadSecret(dir_, "alice").ok());
}

// The broker routes sealed payloads and must never hold a key that opens one, nor one that
// signs for a party: its certificates have no seal or sign key, and one that carries either is
// refused.
TEST_F(KeysTest, BrokerCertificatesHoldNoSealingOrSigningKey) {
  Generate("broker", Role::kBroker);
  for (const fs::path& file : {PublicPath("broker"), SecretPath("broker")}) {
    EXPECT_FALSE(Contains(ReadText(file), "seal")) << file;
    EXPECT_FALSE(Contains(ReadText(file), "sign")) << file;
  }
  Result<SecretCertificate> broker = LoadSecret(dir_, "broker");
  ASSERT_TRUE(broker.ok()) << broker.message();
  EXPECT_EQ(broker->pub.seal_public, PublicKey{});
  EXPECT_EQ(broker->pub.sign_public, PublicKey{});
  const PublicKey zero{};
  EXPECT_TRUE(std::equal(zero.begin(), zero.end(), broker->sign_seed.data()));

  const std::string refused =
      "a broker certificate must hold no sealing or signing key (the broker never opens a "
      "payload nor speaks for a party); make the broker's keys with tally-keygen --broker";
  // A patient's certificate renamed to the broker: it carries both keys.
  Generate("alice");
  std::string as_broker = ReadText(PublicPath("alice"));
  as_broker = Replace(as_broker, "name = \"alice\"", "name = \"broker\"");
  as_broker = Replace(as_broker, "role = \"patient\"", "role = \"broker\"");
  EXPECT_EQ(ParsePublicCertificate(as_broker).message(), refused);
  // Either key alone is refused too: the seal key as keygen wrote them before protocol 3, or a
  // sign key only.
  const std::string broker_text = ReadText(PublicPath("broker"));
  const Certificate alice = *ParsePublicCertificate(ReadText(PublicPath("alice")));
  const std::string seal_line =
      "    seal-public-key = \"" + Z85Encode(alice.seal_public.data(), 32) + "\"\n";
  const std::string sign_line =
      "    sign-public-key = \"" + Z85Encode(alice.sign_public.data(), 32) + "\"\n";
  const std::string role_line = "    role = \"broker\"\n";
  EXPECT_EQ(
      ParsePublicCertificate(Replace(broker_text, role_line, role_line + seal_line)).message(),
      refused);
  EXPECT_EQ(
      ParsePublicCertificate(Replace(broker_text, role_line, role_line + sign_line)).message(),
      refused);
  std::string secret_with_sign = ReadText(SecretPath("broker"));
  secret_with_sign +=
      "sign\n    sign-secret-key = \"" + Z85Encode(alice.curve_public.data(), 32) + "\"\n";
  EXPECT_EQ(ParseSecretCertificate(secret_with_sign).message(), refused);
}

TEST_F(KeysTest, LoadSecretChecksTheNameAndTheFile) {
  Generate("alice");
  EXPECT_TRUE(Contains(LoadSecret(dir_, "bob").message(), "private/bob.key_secret"));
  EXPECT_TRUE(Contains(LoadSecret(dir_, "../alice").message(), "not a valid party name"));
  fs::copy_file(SecretPath("alice"), SecretPath("mallory"));
  ASSERT_EQ(::chmod(SecretPath("mallory").c_str(), 0600), 0);
  EXPECT_TRUE(Contains(LoadSecret(dir_, "mallory").message(), "does not match the file name"));
  WriteFile(SecretPath("big"), std::string(70 * 1024, '#'), 0600);
  EXPECT_TRUE(Contains(LoadSecret(dir_, "big").message(), "larger than"));
}

// --- Certificate text -----------------------------------------------------------------------

Certificate SampleCertificate() {
  Certificate cert;
  cert.name = "hospital";
  cert.role = Role::kHospital;
  for (size_t i = 0; i < 32; ++i) {
    cert.curve_public[i] = static_cast<uint8_t>(i);
    cert.seal_public[i] = static_cast<uint8_t>(255 - i);
    cert.sign_public[i] = static_cast<uint8_t>(i * 7 + 3);
  }
  return cert;
}

TEST(CertificateTest, PublicRoundTrips) {
  const Certificate cert = SampleCertificate();
  Result<Certificate> parsed = ParsePublicCertificate(FormatPublicCertificate(cert));
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_EQ(parsed->name, cert.name);
  EXPECT_EQ(parsed->role, cert.role);
  EXPECT_EQ(parsed->curve_public, cert.curve_public);
  EXPECT_EQ(parsed->seal_public, cert.seal_public);
  EXPECT_EQ(parsed->sign_public, cert.sign_public);
}

TEST_F(KeysTest, SecretRoundTrips) {
  Generate("bob", Role::kHospital);
  Result<SecretCertificate> loaded = LoadSecret(dir_, "bob");
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  const std::string text = FormatSecretCertificate(*loaded);
  EXPECT_EQ(text, ReadText(SecretPath("bob")));
  Result<SecretCertificate> parsed = ParseSecretCertificate(text);
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_EQ(parsed->pub.name, "bob");
  EXPECT_EQ(parsed->pub.role, Role::kHospital);
  EXPECT_EQ(std::memcmp(parsed->curve_secret.data(), loaded->curve_secret.data(), 32), 0);
  EXPECT_EQ(std::memcmp(parsed->seal_secret.data(), loaded->seal_secret.data(), 32), 0);
  EXPECT_EQ(std::memcmp(parsed->sign_seed.data(), loaded->sign_seed.data(), 32), 0);
  EXPECT_EQ(parsed->pub.sign_public, loaded->pub.sign_public);
  EXPECT_TRUE(Contains(text, "\nsign\n    sign-secret-key = \""));
  // The public certificate is the secret one without its secrets.
  EXPECT_EQ(FormatPublicCertificate(parsed->pub), ReadText(PublicPath("bob")));
  EXPECT_TRUE(ParsePublicCertificate(ReadText(PublicPath("bob"))).ok());
}

// The checked-in golden file pins the on-disk layout czmq's zcert and pyzmq's zmq.auth read:
// section names at column 0, `key = "value"` indented by four spaces. It was written before
// protocol 3 and has no sign-public-key: as it is, it is refused with the way out; with the sign
// key line protocol 3 adds after the seal key, it parses and formats back line for line.
TEST(CertificateTest, GoldenFile) {
  const std::string checked_in = ReadText(TALLY_SOURCE_DIR "/tests/data/golden.key");
  ASSERT_FALSE(checked_in.empty());
  EXPECT_EQ(ParsePublicCertificate(checked_in).message(),
            "no metadata/sign-public-key (a certificate from before protocol 3): make new keys "
            "with tally-keygen");
  const std::string sign_line =
      "    sign-public-key = \"-Cp%Z/DqBA>ePPq<AtMfbQm3u8WW5Mf]Uf1U9Gpl\"\n";
  const std::string seal_line =
      "    seal-public-key = \"<uOk<DR2*jOh@FzPoWO!fQqEXndf..kN#L/]vju=\"\n";
  const std::string golden = Replace(checked_in, seal_line, seal_line + sign_line);
  Result<Certificate> cert = ParsePublicCertificate(golden);
  ASSERT_TRUE(cert.ok()) << cert.message();
  EXPECT_EQ(cert->name, "alice");
  EXPECT_EQ(cert->role, Role::kPatient);
  EXPECT_EQ(Hex(cert->curve_public),
            "a1da3e71320d4b40aca04a4dc5541ad6a56607391afd1b6a1ceb774672d3d668");
  EXPECT_EQ(Hex(cert->seal_public),
            "e440804e7b492dcb9c3a34189f95cb433095f9d0480b7a1b400edbc5f3d50f14");
  EXPECT_EQ(Hex(cert->sign_public),
            "c56b9bc5d8202407e6c73c84e4767241242369c21b0a0dfd318ce409ae9606c9");

  auto without_comments = [](const std::string& text) {
    std::vector<std::string> lines = Lines(text);
    std::erase_if(lines, [](const std::string& l) { return l.starts_with("#"); });
    return lines;
  };
  const std::vector<std::string> expected = without_comments(golden);
  EXPECT_EQ(without_comments(FormatPublicCertificate(*cert)), expected);
  EXPECT_EQ(expected, (std::vector<std::string>{
                          "",
                          "metadata",
                          "    name = \"alice\"",
                          "    role = \"patient\"",
                          "    seal-public-key = \"<uOk<DR2*jOh@FzPoWO!fQqEXndf..kN#L/]vju=\"",
                          "    sign-public-key = \"-Cp%Z/DqBA>ePPq<AtMfbQm3u8WW5Mf]Uf1U9Gpl\"",
                          "curve",
                          "    public-key = \"Q1RXIg7u(wTE@fW-z^=bRdG@)8VpQ&9p4/rA)@PM\"",
                      }));
}

// pyzmq's zmq.auth.load_certificate does not parse sections: it takes every line whose
// stripped form starts with "public-key" or "secret-key", splits at the first '=' and strips
// spaces, tabs and quotes. It must find the CURVE keys, never the sealing keys.
TEST_F(KeysTest, PyzmqLinePrefixParserFindsTheCurveKeys) {
  Generate("alice");
  Result<SecretCertificate> secret = LoadSecret(dir_, "alice");
  ASSERT_TRUE(secret.ok()) << secret.message();

  auto pyzmq_load = [](const std::string& text, std::string& pub, std::string& sec) {
    auto strip = [](std::string s, std::string_view chars) {
      while (!s.empty() && chars.find(s.front()) != std::string_view::npos) s.erase(0, 1);
      while (!s.empty() && chars.find(s.back()) != std::string_view::npos) s.pop_back();
      return s;
    };
    for (const std::string& raw : Lines(text)) {
      std::string line = strip(raw, " \t\r\n");
      if (line.starts_with("#")) continue;
      if (line.starts_with("public-key")) pub = strip(line.substr(line.find('=') + 1), " \t'\"");
      if (line.starts_with("secret-key")) sec = strip(line.substr(line.find('=') + 1), " \t'\"");
    }
  };
  std::string pub, sec;
  pyzmq_load(ReadText(SecretPath("alice")), pub, sec);
  ASSERT_EQ(pub.size(), 40u);
  ASSERT_EQ(sec.size(), 40u);
  EXPECT_EQ(pub, Z85Encode(secret->pub.curve_public.data(), 32));
  EXPECT_EQ(sec, Z85Encode(secret->curve_secret.data(), 32));
  EXPECT_NE(pub, Z85Encode(secret->pub.seal_public.data(), 32));
  EXPECT_NE(sec, Z85Encode(secret->seal_secret.data(), 32));
  EXPECT_NE(pub, Z85Encode(secret->pub.sign_public.data(), 32));
  EXPECT_NE(sec, Z85Encode(secret->sign_seed.data(), 32));

  std::string pub_only, no_secret;
  pyzmq_load(ReadText(PublicPath("alice")), pub_only, no_secret);
  EXPECT_EQ(pub_only, pub);
  EXPECT_TRUE(no_secret.empty());
}

TEST(CertificateTest, ParserIsTolerantOfLayout) {
  const Certificate cert = SampleCertificate();
  const std::string curve = Z85Encode(cert.curve_public.data(), 32);
  const std::string seal = Z85Encode(cert.seal_public.data(), 32);
  const std::string sign = Z85Encode(cert.sign_public.data(), 32);
  const std::string text =
      "# a comment\r\n\r\n   # indented comment\r\nmetadata  # trailing\r\n"
      "  name = hospital\r\n\trole=\"hospital\"   # why not\r\n"
      "        seal-public-key   =   '" +
      seal + "'\r\n\tsign-public-key=" + sign +
      "\r\n\r\n"
      "curve\r\n  public-key = \"" +
      curve + "\"\r\n    x-extra = \"1\"";
  Result<Certificate> parsed = ParsePublicCertificate(text);
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_EQ(parsed->name, "hospital");
  EXPECT_EQ(parsed->role, Role::kHospital);
  EXPECT_EQ(parsed->curve_public, cert.curve_public);
  EXPECT_EQ(parsed->seal_public, cert.seal_public);
  EXPECT_EQ(parsed->sign_public, cert.sign_public);
}

TEST(CertificateTest, MalformedPublicCertificatesNameTheProblem) {
  const Certificate cert = SampleCertificate();
  const std::string good = FormatPublicCertificate(cert);
  const std::string curve = Z85Encode(cert.curve_public.data(), 32);
  const std::string sign = Z85Encode(cert.sign_public.data(), 32);
  ASSERT_TRUE(ParsePublicCertificate(good).ok());

  struct Case {
    std::string text;
    std::string error;
  };
  const std::vector<Case> cases = {
      {Replace(good, "    role = \"hospital\"\n", ""), "missing metadata/role"},
      {Replace(good, "    name = \"hospital\"\n", ""), "missing metadata/name"},
      {Replace(good, "    public-key = \"" + curve + "\"\n", ""), "missing curve/public-key"},
      {Replace(good, "curve\n", "curves\n"), "missing curve/public-key"},
      {Replace(good, "    seal-public-key", "    seal-key"), "missing metadata/seal-public-key"},
      {Replace(good, curve, curve.substr(1)), "curve/public-key is not a 40-character Z85 key"},
      {Replace(good, curve, "~" + curve.substr(1)), "curve/public-key is not a 40-character Z85"},
      {Replace(good, "\"hospital\"\n", "\"Hospital\"\n"), "metadata/name is not a valid party"},
      {Replace(good, "\"hospital\"\n", "\"a b\"\n"), "metadata/name is not a valid party"},
      {Replace(good, "role = \"hospital\"", "role = \"doctor\""), "metadata/role must be"},
      {Replace(good, "    role", "    name = \"other\"\n    role"), "duplicate metadata/name"},
      {good + "    public-key = \"" + curve + "\"\n", "duplicate curve/public-key"},
      {good + "metadata\n", "duplicate section metadata"},
      {good + "    secret-key = \"" + curve + "\"\n", "holds curve/secret-key"},
      {good + "seal\n    seal-secret-key = \"" + curve + "\"\n", "holds a seal section"},
      {good + "sign\n    sign-secret-key = \"" + curve + "\"\n", "holds a sign section"},
      {Replace(good, sign, sign.substr(1)), "metadata/sign-public-key is not a 40-character Z85"},
      {Replace(good, "    sign-public-key", "    sign-key"),
       "no metadata/sign-public-key (a certificate from before protocol 3)"},
      {Replace(good, "metadata\n", "    name = \"x\"\nmetadata\n"), "outside any section"},
      {Replace(good, "curve\n", "curve = \"x\"\n"), "section name alone"},
      {Replace(good, "    role = \"hospital\"", "    role \"hospital\""), "expected `name ="},
      {Replace(good, "    role = \"hospital\"", "    role = \"hospital"), "unterminated quote"},
      {good + std::string(70 * 1024, '#'), "larger than"},
  };
  for (const Case& c : cases) {
    Result<Certificate> parsed = ParsePublicCertificate(c.text);
    EXPECT_FALSE(parsed.ok()) << c.error;
    EXPECT_TRUE(Contains(parsed.message(), c.error)) << c.text;
  }
}

TEST_F(KeysTest, MalformedSecretCertificatesNameTheProblem) {
  Generate("alice");
  Generate("bob");
  const std::string good = ReadText(SecretPath("alice"));
  ASSERT_TRUE(ParseSecretCertificate(good).ok());
  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_TRUE(roster.ok()) << roster.message();
  const Certificate& alice = *roster->Find("alice");
  const Certificate& bob = *roster->Find("bob");
  const std::string alice_curve = Z85Encode(alice.curve_public.data(), 32);
  const std::string alice_seal = Z85Encode(alice.seal_public.data(), 32);
  const std::string bob_curve = Z85Encode(bob.curve_public.data(), 32);
  const std::string bob_seal = Z85Encode(bob.seal_public.data(), 32);

  auto drop_line = [](const std::string& text, std::string_view prefix) {
    std::string out;
    for (const std::string& line : Lines(text)) {
      if (!line.starts_with(prefix)) out += line + "\n";
    }
    return out;
  };
  struct Case {
    std::string text;
    std::string error;
  };
  const std::vector<Case> cases = {
      {drop_line(good, "    secret-key"), "missing curve/secret-key"},
      {drop_line(good, "    seal-secret-key"), "missing seal/seal-secret-key"},
      {Replace(good, alice_curve, bob_curve), "curve/public-key does not match curve/secret-key"},
      {Replace(good, alice_seal, bob_seal),
       "metadata/seal-public-key does not match seal/seal-secret-key"},
  };
  for (const Case& c : cases) {
    Result<SecretCertificate> parsed = ParseSecretCertificate(c.text);
    EXPECT_FALSE(parsed.ok()) << c.error;
    EXPECT_TRUE(Contains(parsed.message(), c.error));
  }

  // Through LoadSecret the error also names the file.
  WriteFile(SecretPath("alice"), cases[2].text, 0600);
  EXPECT_TRUE(Contains(LoadSecret(dir_, "alice").message(),
                       "private/alice.key_secret: curve/public-key does not match"));
}

// A certificate made before protocol 3 has no sign key: public or secret, from text or from a
// key folder, it is refused with the exact way out, never read as a party without one.
TEST_F(KeysTest, ACertificateWithoutASignKeyIsRefusedWithTheWayOut) {
  const std::string refused =
      "no metadata/sign-public-key (a certificate from before protocol 3): make new keys with "
      "tally-keygen";
  Generate("alice");
  Generate("hospital", Role::kHospital);
  auto drop_sign = [](const std::string& text) {
    std::string out;
    bool in_sign = false;
    for (const std::string& line : Lines(text)) {
      if (!line.starts_with(" ")) in_sign = line == "sign";
      if (in_sign || line.starts_with("    sign-public-key")) continue;
      out += line + "\n";
    }
    return out;
  };
  for (const std::string name : {"alice", "hospital"}) {
    const std::string old_public = drop_sign(ReadText(PublicPath(name)));
    const std::string old_secret = drop_sign(ReadText(SecretPath(name)));
    ASSERT_FALSE(Contains(old_public, "sign")) << old_public;
    ASSERT_FALSE(Contains(old_secret, "sign")) << old_secret;
    EXPECT_EQ(ParsePublicCertificate(old_public).message(), refused) << name;
    EXPECT_EQ(ParseSecretCertificate(old_secret).message(), refused) << name;
    // A secret certificate with its sign section but no public sign key: the same.
    std::string no_public_key;
    for (const std::string& line : Lines(ReadText(SecretPath(name))))
      if (!line.starts_with("    sign-public-key")) no_public_key += line + "\n";
    EXPECT_EQ(ParseSecretCertificate(no_public_key).message(), refused) << name;
  }
  // From a key folder the error names the file.
  WriteFile(PublicPath("alice"), drop_sign(ReadText(PublicPath("alice"))));
  EXPECT_EQ(LoadRoster(dir_).message(), PublicPath("alice").string() + ": " + refused);
  WriteFile(SecretPath("alice"), drop_sign(ReadText(SecretPath("alice"))), 0600);
  EXPECT_EQ(LoadSecret(dir_, "alice").message(), SecretPath("alice").string() + ": " + refused);
}

// A secret certificate whose sign seed is not that of its public sign key is refused: the party
// would sign what nobody can verify. Its own seed with another party's public key, another
// party's seed with its own key, and a missing seed each name the problem.
TEST_F(KeysTest, ASecretCertificateWhoseSignSeedDoesNotMatchIsRefused) {
  Generate("alice");
  Generate("bob");
  const std::string good = ReadText(SecretPath("alice"));
  const std::string bob_text = ReadText(SecretPath("bob"));
  Result<SecretCertificate> alice = ParseSecretCertificate(good);
  Result<SecretCertificate> bob = ParseSecretCertificate(bob_text);
  ASSERT_TRUE(alice.ok()) << alice.message();
  ASSERT_TRUE(bob.ok()) << bob.message();
  const std::string alice_sign = Z85Encode(alice->pub.sign_public.data(), 32);
  const std::string bob_sign = Z85Encode(bob->pub.sign_public.data(), 32);
  const std::string alice_seed = Z85Encode(alice->sign_seed.data(), 32);
  const std::string bob_seed = Z85Encode(bob->sign_seed.data(), 32);
  const std::string mismatch = "metadata/sign-public-key does not match sign/sign-secret-key";
  EXPECT_EQ(ParseSecretCertificate(Replace(good, alice_sign, bob_sign)).message(), mismatch);
  EXPECT_EQ(ParseSecretCertificate(Replace(good, alice_seed, bob_seed)).message(), mismatch);
  std::string flipped_seed = alice_seed;
  flipped_seed[0] = flipped_seed[0] == '0' ? '1' : '0';
  EXPECT_EQ(ParseSecretCertificate(Replace(good, alice_seed, flipped_seed)).message(), mismatch);
  // The seal seed in the sign section: still not the sign key's.
  const std::string alice_seal_secret = Z85Encode(alice->seal_secret.data(), 32);
  EXPECT_EQ(ParseSecretCertificate(Replace(good, "sign-secret-key = \"" + alice_seed,
                                           "sign-secret-key = \"" + alice_seal_secret))
                .message(),
            mismatch);
  std::string no_seed;
  for (const std::string& line : Lines(good))
    if (!line.starts_with("    sign-secret-key")) no_seed += line + "\n";
  EXPECT_EQ(ParseSecretCertificate(no_seed).message(), "missing sign/sign-secret-key");
  // Through LoadSecret the error names the file.
  WriteFile(SecretPath("alice"), Replace(good, alice_seed, bob_seed), 0600);
  EXPECT_EQ(LoadSecret(dir_, "alice").message(), SecretPath("alice").string() + ": " + mismatch);
}

TEST(CertificateTest, ErrorsNeverQuoteUnknownText) {
  // A malformed line may hold key material; the parser must not echo it back.
  const std::string secretish = "J8kQw0rS3cr3tMaterialXyZ";
  const std::string text = Replace(FormatPublicCertificate(SampleCertificate()), "curve\n",
                                   "curve\n    " + secretish + "\n");
  Result<Certificate> parsed = ParsePublicCertificate(text);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.message().find(secretish), std::string::npos) << parsed.message();
}

// --- Roster ---------------------------------------------------------------------------------

TEST_F(KeysTest, LoadRosterReadsEveryCertificateSorted) {
  Generate("charlie");
  Generate("broker", Role::kBroker);
  Generate("alice");
  Generate("hospital", Role::kHospital);
  Generate("bob");
  WriteFile(dir_ / "public" / "README", "not a certificate");
  WriteFile(dir_ / "public" / ".zed.key.tmp", "partial");
  WriteFile(dir_ / "public" / "notes.txt", "nope");

  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_TRUE(roster.ok()) << roster.message();
  std::vector<std::string> names;
  for (const Certificate& c : roster->all()) names.push_back(c.name);
  EXPECT_EQ(names, (std::vector<std::string>{"alice", "bob", "broker", "charlie", "hospital"}));
  EXPECT_EQ(roster->Names(Role::kPatient), (std::vector<std::string>{"alice", "bob", "charlie"}));
  EXPECT_EQ(roster->Names(Role::kHospital), std::vector<std::string>{"hospital"});
  EXPECT_EQ(roster->Names(Role::kBroker), std::vector<std::string>{"broker"});
  EXPECT_EQ(roster->Find("dave"), nullptr);
  EXPECT_EQ(roster->Find(""), nullptr);
  const Certificate* bob = roster->Find("bob");
  ASSERT_NE(bob, nullptr);
  EXPECT_EQ(roster->FindByCurveKey(bob->curve_public), bob);
  EXPECT_EQ(roster->FindByCurveKey(bob->seal_public), nullptr);
}

TEST_F(KeysTest, LoadRosterRejectsAFileNameThatDoesNotMatch) {
  Generate("alice");
  fs::rename(PublicPath("alice"), PublicPath("zed"));
  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_FALSE(roster.ok());
  EXPECT_TRUE(Contains(roster.message(),
                       "public/zed.key: metadata/name \"alice\" does not "
                       "match the file name"));
}

TEST_F(KeysTest, LoadRosterRejectsDuplicateKeys) {
  Generate("alice");
  const std::string text = ReadText(PublicPath("alice"));
  WriteFile(PublicPath("copy"), Replace(text, "\"alice\"", "\"copy\""));
  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_FALSE(roster.ok());
  EXPECT_TRUE(Contains(roster.message(), "public/copy.key: curve/public-key is also alice's"));

  // The same sealing key under a different CURVE key is a duplicate too.
  Generate("bob");
  const Certificate alice = *ParsePublicCertificate(text);
  Certificate copy = *ParsePublicCertificate(ReadText(PublicPath("bob")));
  copy.name = "copy";
  copy.seal_public = alice.seal_public;
  WriteFile(PublicPath("copy"), FormatPublicCertificate(copy));
  roster = LoadRoster(dir_);
  ASSERT_FALSE(roster.ok());
  EXPECT_TRUE(Contains(roster.message(), "seal-public-key is also"));

  // And the same sign key: two parties that could sign for each other.
  copy = *ParsePublicCertificate(ReadText(PublicPath("bob")));
  copy.name = "copy";
  copy.curve_public[0] ^= 1;
  copy.seal_public[0] ^= 1;
  WriteFile(PublicPath("copy"), FormatPublicCertificate(copy));
  roster = LoadRoster(dir_);
  ASSERT_FALSE(roster.ok());
  EXPECT_EQ(roster.message(),
            PublicPath("copy").string() + ": metadata/sign-public-key is also bob's");
}

TEST_F(KeysTest, LoadRosterRejectsASecondBroker) {
  Generate("broker", Role::kBroker);
  Generate("relay", Role::kBroker);
  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_FALSE(roster.ok());
  EXPECT_TRUE(Contains(roster.message(), "a second broker"));
}

TEST_F(KeysTest, LoadRosterRejectsAnEmptyOrMissingFolder) {
  Result<Roster> missing = LoadRoster(dir_);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.message(), "public"));
  ASSERT_TRUE(fs::create_directory(dir_ / "public"));
  WriteFile(dir_ / "public" / "README", "x");
  Result<Roster> empty = LoadRoster(dir_);
  ASSERT_FALSE(empty.ok());
  EXPECT_TRUE(Contains(empty.message(), "no certificates"));
}

TEST_F(KeysTest, LoadRosterNamesAMalformedFile) {
  Generate("alice");
  WriteFile(PublicPath("bob"), "metadata\n    name = \"bob\"\n");
  Result<Roster> roster = LoadRoster(dir_);
  ASSERT_FALSE(roster.ok());
  EXPECT_TRUE(Contains(roster.message(), "public/bob.key: missing metadata/role"));
}

TEST(RosterTest, FingerprintCoversEveryField) {
  Certificate a = SampleCertificate();
  Certificate b = SampleCertificate();
  b.name = "alice";
  b.role = Role::kPatient;
  b.curve_public[0] ^= 0x80;
  b.seal_public[0] ^= 0x80;
  b.sign_public[0] ^= 0x80;
  const std::string base = Roster({a, b}).Fingerprint();
  EXPECT_EQ(base.size(), 64u);
  EXPECT_EQ(base.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(Roster({b, a}).Fingerprint(), base);  // order of construction does not matter
  EXPECT_NE(Roster({a}).Fingerprint(), base);
  EXPECT_NE(Roster().Fingerprint(), Roster({a}).Fingerprint());

  auto changed = [&](auto mutate) {
    Certificate c = b;
    mutate(c);
    return Roster({a, c}).Fingerprint();
  };
  EXPECT_NE(changed([](Certificate& c) { c.curve_public[31] ^= 1; }), base);
  EXPECT_NE(changed([](Certificate& c) { c.seal_public[31] ^= 1; }), base);
  // The sign key is what every party checks round keys with: a roster with another one for a
  // party is another roster.
  EXPECT_NE(changed([](Certificate& c) { c.sign_public[31] ^= 1; }), base);
  EXPECT_NE(changed([](Certificate& c) { c.sign_public[0] ^= 1; }), base);
  EXPECT_NE(changed([](Certificate& c) { std::swap(c.seal_public, c.sign_public); }), base);
  EXPECT_NE(changed([](Certificate& c) { c.role = Role::kHospital; }), base);
  EXPECT_NE(changed([](Certificate& c) { c.name = "alicf"; }), base);
  EXPECT_EQ(changed([](Certificate&) {}), base);
}

// --- tally-keygen ---------------------------------------------------------------------------

// tally-keygen run to its end (bounded: Cluster::RunTool), its output and exit code.
struct ToolRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

ToolRun RunKeygen(const fs::path& scratch, const std::vector<std::string>& args) {
  const Cluster::Output o = Cluster(TALLY_BIN_DIR, scratch, scratch)
                                .RunTool("tools/tally-keygen", args, std::chrono::seconds(60));
  return ToolRun{o.code, o.out, o.err};
}

TEST_F(KeysTest, KeygenDefaultScenario) {
  const fs::path keys = dir_ / "keys";
  ToolRun run = RunKeygen(dir_, {"--dir", keys.string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(run.err.empty()) << run.err;
  EXPECT_EQ(Lines(run.out).size(), 10u) << run.out;
  EXPECT_TRUE(Contains(run.out, "wrote " + (keys / "public" / "alice.key").string() + "\n"));
  EXPECT_TRUE(
      Contains(run.out, "wrote " + (keys / "private" / "broker.key_secret").string() + "\n"));

  Result<Roster> roster = LoadRoster(keys);
  ASSERT_TRUE(roster.ok()) << roster.message();
  EXPECT_EQ(roster->Names(Role::kPatient), (std::vector<std::string>{"alice", "bob", "charlie"}));
  EXPECT_EQ(roster->Names(Role::kHospital), std::vector<std::string>{"hospital"});
  EXPECT_EQ(roster->Names(Role::kBroker), std::vector<std::string>{"broker"});
  for (const Certificate& c : roster->all()) {
    Result<SecretCertificate> secret = LoadSecret(keys, c.name);
    ASSERT_TRUE(secret.ok()) << secret.message();
    // Never key material on stdout, public or secret.
    for (const uint8_t* key : std::initializer_list<const uint8_t*>{
             c.curve_public.data(), c.seal_public.data(), c.sign_public.data(),
             secret->curve_secret.data(), secret->seal_secret.data(), secret->sign_seed.data()}) {
      EXPECT_EQ(run.out.find(Z85Encode(key, 32)), std::string::npos) << c.name;
    }
  }
}

TEST_F(KeysTest, KeygenRefusesToOverwriteWithoutForce) {
  const fs::path keys = dir_ / "keys";
  ASSERT_EQ(RunKeygen(dir_, {"--dir", keys.string()}).exit_code, 0);
  const std::string alice = ReadText(keys / "private" / "alice.key_secret");
  const std::string broker = ReadText(keys / "private" / "broker.key_secret");

  ToolRun again = RunKeygen(dir_, {"--dir", keys.string(), "--patients", "dave,alice"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(Contains(again.err, "private/alice.key_secret exists; use --force to replace it"));
  EXPECT_TRUE(again.out.empty());
  EXPECT_FALSE(fs::exists(keys / "private" / "dave.key_secret"));  // nothing half-done

  ToolRun forced = RunKeygen(dir_, {"--dir=" + keys.string(), "--patients=alice", "--force"});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(Lines(forced.out).size(), 2u) << forced.out;
  EXPECT_NE(ReadText(keys / "private" / "alice.key_secret"), alice);
  EXPECT_EQ(ReadText(keys / "private" / "broker.key_secret"), broker);  // never replaced
  EXPECT_TRUE(LoadRoster(keys).ok());
}

TEST_F(KeysTest, KeygenNamedParties) {
  const fs::path keys = dir_ / "keys";
  ToolRun run = RunKeygen(
      dir_, {"--dir", keys.string(), "--broker", "--hospital", "clinic", "--patients", "p1,p2"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  Result<Roster> roster = LoadRoster(keys);
  ASSERT_TRUE(roster.ok()) << roster.message();
  std::vector<std::string> names;
  for (const Certificate& c : roster->all()) names.push_back(c.name);
  EXPECT_EQ(names, (std::vector<std::string>{"broker", "clinic", "p1", "p2"}));
  EXPECT_EQ(roster->Find("clinic")->role, Role::kHospital);
  EXPECT_EQ(roster->Find("broker")->seal_public, PublicKey{});
  EXPECT_EQ(roster->Find("broker")->sign_public, PublicKey{});
  EXPECT_NE(roster->Find("clinic")->sign_public, PublicKey{});
  EXPECT_NE(roster->Find("p1")->sign_public, roster->Find("p2")->sign_public);
}

// Regression (found trying Tally on separate hosts): keygen always wrote a broker keypair too,
// so a patient's host held a broker secret. Each party makes its own keys on its own host.
TEST_F(KeysTest, KeygenMakesOnePartysKeysAndNoBroker) {
  const fs::path keys = dir_ / "alice-host";
  ToolRun run = RunKeygen(dir_, {"--dir", keys.string(), "--patients", "alice"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "wrote " + (keys / "public" / "alice.key").string() + "\nwrote " +
                         (keys / "private" / "alice.key_secret").string() + "\n");
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(keys))
    files.push_back(fs::relative(e.path(), keys).string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"private", "private/alice.key_secret", "public",
                                             "public/alice.key"}));
  EXPECT_EQ(FileMode(keys), 0755u);

  const fs::path broker_host = dir_ / "broker-host";
  ToolRun broker = RunKeygen(dir_, {"--dir", broker_host.string(), "--broker"});
  ASSERT_EQ(broker.exit_code, 0) << broker.err;
  EXPECT_FALSE(Contains(ReadText(broker_host / "private" / "broker.key_secret"), "seal"));
  ToolRun again = RunKeygen(dir_, {"--dir", broker_host.string(), "--broker"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(Contains(again.err, "private/broker.key_secret exists; use --force to replace it"));
}

TEST_F(KeysTest, KeygenUsageErrors) {
  const std::string keys = (dir_ / "keys").string();
  const std::vector<std::vector<std::string>> usage_errors = {
      {},
      {"--patients", "alice"},
      {"--dir"},
      {"--dir", keys, "--bogus"},
      {"--dir", keys, "--patients", "Alice"},
      {"--dir", keys, "--patients", "alice,,bob"},
      {"--dir", keys, "--patients", ""},
      {"--dir", keys, "--patients", "alice,alice"},
      {"--dir", keys, "--hospital", "alice", "--patients", "alice"},
      {"--dir", keys, "--patients", "broker"},
      {"--dir", keys, "--hospital", "broker"},
      {"--dir", keys, "--hospital"},
      {"--dir", keys, "--patients", std::string(33, 'a')},
      {"--dir", keys, "--broker", "--broker"},
      {"--dir", keys, "--broker=yes"},
  };
  for (const std::vector<std::string>& args : usage_errors) {
    ToolRun run = RunKeygen(dir_, args);
    std::string joined;
    for (const std::string& a : args) joined += a + " ";
    EXPECT_EQ(run.exit_code, 2) << joined;
    EXPECT_FALSE(run.err.empty()) << joined;
    EXPECT_TRUE(run.out.empty()) << joined;
  }
  EXPECT_FALSE(fs::exists(dir_ / "keys"));

  ToolRun help = RunKeygen(dir_, {"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(Contains(help.out, "usage: tally-keygen --dir DIR"));
}

TEST_F(KeysTest, KeygenReportsFailures) {
  // DIR is a file: nothing can be created under it.
  WriteFile(dir_ / "file", "x");
  ToolRun run = RunKeygen(dir_, {"--dir", (dir_ / "file").string()});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(Contains(run.err, "tally-keygen: "));
}

}  // namespace
}  // namespace tally
