// Tests for nodes/seal: sealing binds round, kind, sender and recipient; keys from real files.
#include "nodes/seal.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keys/keys.h"

namespace tally {
namespace {

namespace fs = std::filesystem;

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

std::vector<uint8_t> Bytes(std::string_view text) {
  return std::vector<uint8_t>(text.begin(), text.end());
}

// One key folder for the whole suite: generating keys is the slow part and tests only read.
class SealTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/tally-seal-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = new fs::path(pattern);
    const std::vector<std::pair<std::string, Role>> parties = {{"broker", Role::kBroker},
                                                               {"hospital", Role::kHospital},
                                                               {"alice", Role::kPatient},
                                                               {"bob", Role::kPatient},
                                                               {"charlie", Role::kPatient}};
    for (const auto& [name, role] : parties) {
      Status status = GenerateParty(*dir_, name, role, false);
      ASSERT_TRUE(status.ok()) << status.message();
    }
    Result<Roster> roster = LoadRoster(*dir_);
    ASSERT_TRUE(roster.ok()) << roster.message();
    roster_ = new Roster(std::move(roster).value());
    sealers_ = new std::map<std::string, Sealer>();
    for (const auto& [name, role] : parties) {
      if (role == Role::kBroker) continue;
      Result<SecretCertificate> secret = LoadSecret(*dir_, name);
      ASSERT_TRUE(secret.ok()) << secret.message();
      Result<Sealer> sealer = Sealer::Create(*secret, *roster_);
      ASSERT_TRUE(sealer.ok()) << sealer.message();
      sealers_->emplace(name, std::move(sealer).value());
    }
  }
  static void TearDownTestSuite() {
    delete sealers_;
    delete roster_;
    if (dir_ != nullptr) {
      std::error_code ec;
      fs::remove_all(*dir_, ec);
    }
    delete dir_;
  }

  void SetUp() override {
    ASSERT_TRUE(sealers_ != nullptr && sealers_->size() == 4) << "key setup failed";
  }

  static const Sealer& S(const std::string& name) { return sealers_->at(name); }

  static Binding MakeBinding(std::string_view from, std::string_view to,
                             EnvelopeKind kind = EnvelopeKind::kShare) {
    Binding binding;
    for (size_t i = 0; i < binding.round.size(); ++i) {
      binding.round[i] = static_cast<uint8_t>(0xa0 + i);
    }
    binding.kind = kind;
    binding.sender = from;
    binding.recipient = to;
    return binding;
  }

  // Sealed by alice to bob: 8 bytes of share.
  static std::vector<uint8_t> AliceToBob(const Binding& binding) {
    Result<std::vector<uint8_t>> sealed = S("alice").Seal(binding, Bytes("12345678"));
    EXPECT_TRUE(sealed.ok()) << sealed.message();
    return sealed.ok() ? *sealed : std::vector<uint8_t>();
  }

  static fs::path* dir_;
  static Roster* roster_;
  static std::map<std::string, Sealer>* sealers_;
};

fs::path* SealTest::dir_ = nullptr;
Roster* SealTest::roster_ = nullptr;
std::map<std::string, Sealer>* SealTest::sealers_ = nullptr;

TEST_F(SealTest, OpensUnderTheSameBinding) {
  const Binding binding = MakeBinding("alice", "bob");
  const std::vector<uint8_t> sealed = AliceToBob(binding);
  EXPECT_EQ(sealed.size(), 8 + kSealOverhead);
  Result<std::vector<uint8_t>> opened = S("bob").Open(binding, sealed);
  ASSERT_TRUE(opened.ok()) << opened.message();
  EXPECT_EQ(*opened, Bytes("12345678"));
}

TEST_F(SealTest, WorksBetweenEveryPairAndForPartials) {
  for (const std::string from : {"alice", "bob", "charlie"}) {
    for (const std::string to : {"alice", "bob", "charlie", "hospital"}) {
      if (from == to) continue;
      const EnvelopeKind kind = to == "hospital" ? EnvelopeKind::kPartial : EnvelopeKind::kShare;
      const Binding binding = MakeBinding(from, to, kind);
      const std::vector<uint8_t> plaintext = Bytes(from + " to " + to);
      Result<std::vector<uint8_t>> sealed = S(from).Seal(binding, plaintext);
      ASSERT_TRUE(sealed.ok()) << sealed.message();
      Result<std::vector<uint8_t>> opened = S(to).Open(binding, *sealed);
      ASSERT_TRUE(opened.ok()) << from << "->" << to << ": " << opened.message();
      EXPECT_EQ(*opened, plaintext);
    }
  }
}

TEST_F(SealTest, EmptyPlaintextRoundTrips) {
  const Binding binding = MakeBinding("bob", "alice");
  Result<std::vector<uint8_t>> sealed = S("bob").Seal(binding, {});
  ASSERT_TRUE(sealed.ok()) << sealed.message();
  EXPECT_EQ(sealed->size(), kSealOverhead);
  Result<std::vector<uint8_t>> opened = S("alice").Open(binding, *sealed);
  ASSERT_TRUE(opened.ok()) << opened.message();
  EXPECT_TRUE(opened->empty());
}

TEST_F(SealTest, AnyFlippedBitFailsToOpen) {
  const Binding binding = MakeBinding("alice", "bob");
  const std::vector<uint8_t> sealed = AliceToBob(binding);
  ASSERT_EQ(sealed.size(), kSealNonceSize + 8 + kSealTagSize);
  // First and last byte of the nonce, the ciphertext and the tag; every bit position.
  for (size_t index : {size_t{0}, kSealNonceSize - 1, kSealNonceSize, kSealNonceSize + 7,
                       kSealNonceSize + 8, sealed.size() - 1}) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> tampered = sealed;
      tampered[index] ^= static_cast<uint8_t>(1u << bit);
      Result<std::vector<uint8_t>> opened = S("bob").Open(binding, tampered);
      ASSERT_FALSE(opened.ok()) << index << ":" << bit;
      EXPECT_EQ(opened.message(), "cannot open share from alice: authentication failed");
    }
  }
  std::vector<uint8_t> truncated(sealed.begin(), sealed.end() - 1);
  EXPECT_FALSE(S("bob").Open(binding, truncated).ok());
  std::vector<uint8_t> extended = sealed;
  extended.push_back(0);
  EXPECT_FALSE(S("bob").Open(binding, extended).ok());
}

TEST_F(SealTest, AnotherRoundFailsToOpen) {
  const Binding binding = MakeBinding("alice", "bob");
  const std::vector<uint8_t> sealed = AliceToBob(binding);
  for (size_t i = 0; i < binding.round.size(); ++i) {
    Binding other = binding;
    other.round[i] ^= 1;
    Result<std::vector<uint8_t>> opened = S("bob").Open(other, sealed);
    ASSERT_FALSE(opened.ok()) << i;
    EXPECT_TRUE(Contains(opened.message(), "authentication failed"));
  }
}

TEST_F(SealTest, AnotherKindFailsToOpen) {
  const Binding binding = MakeBinding("alice", "bob");
  const std::vector<uint8_t> sealed = AliceToBob(binding);
  Binding other = binding;
  other.kind = EnvelopeKind::kPartial;
  Result<std::vector<uint8_t>> opened = S("bob").Open(other, sealed);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.message(), "cannot open partial from alice: authentication failed");
}

TEST_F(SealTest, AnotherSenderFailsToOpen) {
  // Bob is told the share came from charlie: it must not open (charlie's key differs, and the
  // sender is bound).
  const std::vector<uint8_t> sealed = AliceToBob(MakeBinding("alice", "bob"));
  Result<std::vector<uint8_t>> opened = S("bob").Open(MakeBinding("charlie", "bob"), sealed);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.message(), "cannot open share from charlie: authentication failed");
}

TEST_F(SealTest, AnotherRecipientCannotOpen) {
  const std::vector<uint8_t> sealed = AliceToBob(MakeBinding("alice", "bob"));
  // Redirected to charlie as if addressed to it.
  Result<std::vector<uint8_t>> redirected =
      S("charlie").Open(MakeBinding("alice", "charlie"), sealed);
  ASSERT_FALSE(redirected.ok());
  EXPECT_EQ(redirected.message(), "cannot open share from alice: authentication failed");
  // Charlie presenting the true binding is refused before any crypto.
  Result<std::vector<uint8_t>> not_mine = S("charlie").Open(MakeBinding("alice", "bob"), sealed);
  ASSERT_FALSE(not_mine.ok());
  EXPECT_TRUE(Contains(not_mine.message(), "addressed to bob"));
  // The hospital cannot open a share between patients either.
  EXPECT_FALSE(S("hospital").Open(MakeBinding("alice", "hospital"), sealed).ok());
}

TEST_F(SealTest, SealsOfTheSamePlaintextDiffer) {
  const Binding binding = MakeBinding("alice", "bob");
  const std::vector<uint8_t> first = AliceToBob(binding);
  const std::vector<uint8_t> second = AliceToBob(binding);
  ASSERT_EQ(first.size(), second.size());
  EXPECT_NE(first, second);
  EXPECT_NE(std::memcmp(first.data(), second.data(), kSealNonceSize), 0);  // fresh nonces
  EXPECT_TRUE(S("bob").Open(binding, first).ok());
  EXPECT_TRUE(S("bob").Open(binding, second).ok());
}

TEST_F(SealTest, SealRefusesWrongSenderSelfBrokerAndStrangers) {
  const std::vector<uint8_t> plaintext = Bytes("x");
  EXPECT_TRUE(Contains(S("alice").Seal(MakeBinding("bob", "charlie"), plaintext).message(),
                       "cannot seal as bob"));
  EXPECT_TRUE(Contains(S("alice").Seal(MakeBinding("alice", "alice"), plaintext).message(),
                       "cannot seal to itself"));
  EXPECT_TRUE(Contains(S("alice").Seal(MakeBinding("alice", "broker"), plaintext).message(),
                       "no sealing key for recipient broker"));
  EXPECT_TRUE(Contains(S("alice").Seal(MakeBinding("alice", "dave"), plaintext).message(),
                       "no sealing key for recipient dave"));
}

TEST_F(SealTest, OpenRefusesUnknownSendersAndShortPayloads) {
  const std::vector<uint8_t> sealed = AliceToBob(MakeBinding("alice", "bob"));
  EXPECT_TRUE(Contains(S("bob").Open(MakeBinding("broker", "bob"), sealed).message(),
                       "no sealing key for that sender"));
  EXPECT_TRUE(Contains(S("bob").Open(MakeBinding("bob", "bob"), sealed).message(),
                       "no sealing key for that sender"));
  const std::vector<uint8_t> short_payload(kSealOverhead - 1, 0);
  EXPECT_TRUE(Contains(S("bob").Open(MakeBinding("alice", "bob"), short_payload).message(),
                       "shorter than"));
  EXPECT_FALSE(S("bob").Open(MakeBinding("alice", "bob"), {}).ok());
}

TEST_F(SealTest, BindingBytesLayout) {
  const Binding binding = MakeBinding("alice", "hospital", EnvelopeKind::kPartial);
  std::vector<uint8_t> expected = Bytes("tally/1");
  expected.push_back(2);  // kPartial
  for (size_t i = 0; i < kRoundIdSize; ++i) expected.push_back(static_cast<uint8_t>(0xa0 + i));
  expected.push_back(5);
  for (uint8_t c : Bytes("alice")) expected.push_back(c);
  expected.push_back(8);
  for (uint8_t c : Bytes("hospital")) expected.push_back(c);
  EXPECT_EQ(BindingBytes(binding), expected);
  // Length prefixes keep ("ab","c") and ("a","bc") apart.
  EXPECT_NE(BindingBytes(MakeBinding("ab", "c")), BindingBytes(MakeBinding("a", "bc")));
}

TEST_F(SealTest, CreateChecksTheSecretAgainstTheRoster) {
  Result<SecretCertificate> alice = LoadSecret(*dir_, "alice");
  ASSERT_TRUE(alice.ok()) << alice.message();
  // A roster without alice.
  std::vector<Certificate> others;
  for (const Certificate& c : roster_->all()) {
    if (c.name != "alice") others.push_back(c);
  }
  Result<Sealer> missing = Sealer::Create(*alice, Roster(others));
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.message(), "alice is not in the roster"));
  // A roster whose alice has another sealing key.
  std::vector<Certificate> changed = roster_->all();
  for (Certificate& c : changed) {
    if (c.name == "alice") c.seal_public[0] ^= 1;
  }
  Result<Sealer> mismatched = Sealer::Create(*alice, Roster(changed));
  ASSERT_FALSE(mismatched.ok());
  EXPECT_TRUE(Contains(mismatched.message(), "does not match"));
}

TEST_F(SealTest, CreateRejectsALowOrderPeerKey) {
  Result<SecretCertificate> alice = LoadSecret(*dir_, "alice");
  ASSERT_TRUE(alice.ok()) << alice.message();
  std::vector<Certificate> certs = roster_->all();
  for (Certificate& c : certs) {
    if (c.name == "bob") c.seal_public.fill(0);  // the identity point: no shared secret
  }
  Result<Sealer> sealer = Sealer::Create(*alice, Roster(certs));
  ASSERT_FALSE(sealer.ok());
  EXPECT_TRUE(Contains(sealer.message(), "cannot derive a sealing key with bob"));
}

}  // namespace
}  // namespace tally
