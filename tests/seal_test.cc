// Tests for nodes/seal: sealing binds round, kind, the round's view, sender and recipient (keys
// from real files); the round's view digest; pairwise masks (keys from fixed seeds) cancel in
// the sum, hide each input, are fresh per round and nonce, follow the documented construction,
// and are pinned by a known-answer vector.
#include "nodes/seal.h"

#include <gtest/gtest.h>
#include <sodium.h>
#include <stdlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "keys/keys.h"
#include "schema/text.h"
#include "tests/contains.h"

namespace tally {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> Bytes(std::string_view text) {
  return std::vector<uint8_t>(text.begin(), text.end());
}

RoundId TestRound() {
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(0xa0 + i);
  return round;
}

JoinNonce FilledNonce(uint8_t byte) {
  JoinNonce n;
  n.fill(byte);
  return n;
}

// A sum-phase update over `names` with nonces drawn from `rng`.
PhaseUpdate SumUpdate(const std::vector<std::string>& names, uint32_t length,
                      std::mt19937_64& rng) {
  PhaseUpdate u;
  u.round = TestRound();
  u.phase = Phase::kSum;
  u.seq = 7;
  u.ticket = 3;
  u.params.hospital = "hospital";
  u.params.range = 1000;
  u.params.length = length;
  u.params.participants = names;
  for (size_t i = 0; i < names.size(); ++i) {
    JoinNonce n;
    for (uint8_t& b : n) b = static_cast<uint8_t>(rng());
    u.nonces.push_back(n);
  }
  u.deadline_ms = 10000;
  return u;
}

// One key folder for the sealing tests (generating keys is the slow part and tests only read),
// and in-memory parties with seal keys from fixed seeds for the mask tests.
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

    // Seeded parties: p01..p10 for the sums, alice/bob/carol for the known answer, and a
    // hospital (seed byte k for the k-th name below).
    seeded_ = new std::map<std::string, SecretCertificate>();
    std::vector<std::string> names = {"alice", "bob", "carol", "hospital"};
    for (int k = 1; k <= 10; ++k) names.push_back((k < 10 ? "p0" : "p") + std::to_string(k));
    std::vector<Certificate> certs;
    for (size_t k = 0; k < names.size(); ++k) {
      SecretCertificate s = SeededParty(names[k], static_cast<uint8_t>(k + 1));
      certs.push_back(s.pub);
      seeded_->emplace(names[k], std::move(s));
    }
    seeded_roster_ = new Roster(certs);
    seeded_sealers_ = new std::map<std::string, Sealer>();
    for (const auto& [name, secret] : *seeded_) {
      Result<Sealer> sealer = Sealer::Create(secret, *seeded_roster_);
      ASSERT_TRUE(sealer.ok()) << sealer.message();
      seeded_sealers_->emplace(name, std::move(sealer).value());
    }
  }
  static void TearDownTestSuite() {
    delete seeded_sealers_;
    delete seeded_roster_;
    delete seeded_;
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
    ASSERT_TRUE(seeded_sealers_ != nullptr && seeded_sealers_->size() == 14) << "key setup failed";
  }

  // The seal keypair is crypto_box_seed_keypair over 32 bytes of `seed_byte`; the CURVE key is
  // a placeholder (the Sealer never uses it).
  static SecretCertificate SeededParty(const std::string& name, uint8_t seed_byte) {
    SecretCertificate s;
    s.pub.name = name;
    s.pub.role = name == "hospital" ? Role::kHospital : Role::kPatient;
    std::array<uint8_t, crypto_box_SEEDBYTES> seed;
    seed.fill(seed_byte);
    crypto_box_seed_keypair(s.pub.seal_public.data(), s.seal_secret.data(), seed.data());
    s.pub.curve_public.fill(seed_byte);
    return s;
  }

  static const Sealer& S(const std::string& name) { return sealers_->at(name); }
  static const Sealer& M(const std::string& name) { return seeded_sealers_->at(name); }

  // A party's sealing public key as the seeded roster has it; a name the roster lacks gets a
  // key of its own (BLAKE2b of the name), so that views of rounds naming strangers compare.
  static PublicKey SealKey(const std::string& name) {
    if (auto it = seeded_->find(name); it != seeded_->end()) return it->second.pub.seal_public;
    PublicKey key;
    crypto_generichash(key.data(), key.size(), reinterpret_cast<const uint8_t*>(name.data()),
                       name.size(), nullptr, 0);
    return key;
  }
  static std::vector<PublicKey> SealKeys(const PhaseUpdate& u) {
    std::vector<PublicKey> keys = {SealKey(u.params.hospital)};
    for (const std::string& p : u.params.participants) keys.push_back(SealKey(p));
    return keys;
  }
  // RoundView with the seeded roster's keys.
  static ViewDigest View(const PhaseUpdate& u) { return RoundView(u, SealKeys(u)); }

  static ViewDigest TestView() {
    ViewDigest v;
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(0x30 + i);
    return v;
  }

  static Binding MakeBinding(std::string_view from, std::string_view to,
                             const ViewDigest& view = TestView()) {
    Binding binding;
    binding.round = TestRound();
    binding.kind = EnvelopeKind::kPartial;
    binding.sender = from;
    binding.recipient = to;
    binding.view = view;
    return binding;
  }

  // Sealed by alice to the hospital: 8 bytes.
  static std::vector<uint8_t> AliceToHospital(const Binding& binding) {
    Result<std::vector<uint8_t>> sealed = S("alice").Seal(binding, Bytes("12345678"));
    EXPECT_TRUE(sealed.ok()) << sealed.message();
    return sealed.ok() ? *sealed : std::vector<uint8_t>();
  }

  // The first n seeded patients, p01..pNN.
  static std::vector<std::string> Patients(size_t n) {
    std::vector<std::string> out;
    for (size_t k = 1; k <= n; ++k) out.push_back((k < 10 ? "p0" : "p") + std::to_string(k));
    return out;
  }

  // Each participant's input plus its masks, as a patient computes them.
  static std::vector<std::vector<uint64_t>> Masked(const PhaseUpdate& u,
                                                   const std::vector<std::vector<uint64_t>>& in) {
    std::vector<std::vector<uint64_t>> out = in;
    for (size_t i = 0; i < u.params.participants.size(); ++i) {
      Status s = M(u.params.participants[i]).AddMasks(u, out[i]);
      EXPECT_TRUE(s.ok()) << u.params.participants[i] << ": " << s.message();
    }
    return out;
  }

  // This party's masks alone: AddMasks over zeros.
  static std::vector<uint64_t> MasksOf(const std::string& name, const PhaseUpdate& u) {
    std::vector<uint64_t> v(u.params.length, 0);
    Status s = M(name).AddMasks(u, v);
    EXPECT_TRUE(s.ok()) << name << ": " << s.message();
    return v;
  }

  // The view as schema/PROTOCOL.md documents it, written out independently of nodes/seal.cc:
  //   BLAKE2b-256("tally view v2" || round || u8 len(hospital) || hospital || hospital's key
  //               || range u64 LE || length u64 LE || n u64 LE
  //               || per participant: u8 len(name) || name || its key || its nonce)
  static ViewDigest ReferenceView(const PhaseUpdate& u) {
    std::vector<uint8_t> in;
    auto put = [&in](const void* p, size_t n) {
      in.insert(in.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    };
    auto u64 = [&put](uint64_t v) {
      uint8_t le[8];
      for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(v >> (8 * i));
      put(le, 8);
    };
    auto name = [&](const std::string& n) {
      const uint8_t size = static_cast<uint8_t>(n.size());
      put(&size, 1);
      put(n.data(), n.size());
      put(SealKey(n).data(), 32);
    };
    put("tally view v3", 13);
    put(u.round.data(), u.round.size());
    name(u.params.hospital);
    u64(u.params.range);
    u64(u.params.length);
    u64(u.params.columns.size());
    for (const Column& c : u.params.columns) {
      const uint8_t size = static_cast<uint8_t>(c.name.size());
      put(&size, 1);
      put(c.name.data(), c.name.size());
      u64(static_cast<uint64_t>(c.lower));
      u64(static_cast<uint64_t>(c.upper));
      u64(c.decimals);
    }
    u64(u.params.weight.max);
    u64(u.params.weight.decimals);
    u64(u.params.participants.size());
    for (size_t i = 0; i < u.params.participants.size(); ++i) {
      name(u.params.participants[i]);
      put(u.nonces[i].data(), u.nonces[i].size());
    }
    ViewDigest out;
    crypto_generichash(out.data(), out.size(), in.data(), in.size(), nullptr, 0);
    return out;
  }

  // The documented construction, written out with libsodium independently of nodes/seal.cc:
  //   box     = crypto_box_beforenm(peer seal public, my seal secret)
  //   mask    = BLAKE2b-256(box || "tally mask v2")
  //   key     = BLAKE2b-256 keyed with mask over round || nonce of lower name || nonce of higher
  //   stream  = ChaCha20-IETF(key, nonce 0, counter 0), 8L bytes read as little-endian u64
  // The lower-named of the pair adds the stream, the higher-named subtracts it.
  static std::vector<uint64_t> ReferenceMasks(const std::string& me, const PhaseUpdate& u) {
    const SecretCertificate& mine = seeded_->at(me);
    std::vector<uint64_t> total(u.params.length, 0);
    const size_t my_index = static_cast<size_t>(
        std::find(u.params.participants.begin(), u.params.participants.end(), me) -
        u.params.participants.begin());
    for (size_t j = 0; j < u.params.participants.size(); ++j) {
      if (j == my_index) continue;
      const std::string& peer = u.params.participants[j];
      uint8_t box[crypto_box_BEFORENMBYTES];
      EXPECT_EQ(crypto_box_beforenm(box, seeded_->at(peer).pub.seal_public.data(),
                                    mine.seal_secret.data()),
                0);
      std::vector<uint8_t> label_input(box, box + sizeof box);
      for (char c : std::string_view("tally mask v2"))
        label_input.push_back(static_cast<uint8_t>(c));
      uint8_t mask_key[32];
      crypto_generichash(mask_key, sizeof mask_key, label_input.data(), label_input.size(), nullptr,
                         0);
      const bool lower = me < peer;
      const JoinNonce& lo = lower ? u.nonces[my_index] : u.nonces[j];
      const JoinNonce& hi = lower ? u.nonces[j] : u.nonces[my_index];
      std::vector<uint8_t> input(u.round.begin(), u.round.end());
      input.insert(input.end(), lo.begin(), lo.end());
      input.insert(input.end(), hi.begin(), hi.end());
      uint8_t key[crypto_stream_chacha20_ietf_KEYBYTES];
      crypto_generichash(key, sizeof key, input.data(), input.size(), mask_key, sizeof mask_key);
      const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
      std::vector<uint8_t> stream(size_t{u.params.length} * 8);
      crypto_stream_chacha20_ietf(stream.data(), stream.size(), nonce, key);
      for (size_t e = 0; e < u.params.length; ++e) {
        uint64_t v = 0;
        for (int b = 7; b >= 0; --b) v = (v << 8) | stream[e * 8 + static_cast<size_t>(b)];
        total[e] = lower ? total[e] + v : total[e] - v;
      }
    }
    return total;
  }

  static fs::path* dir_;
  static Roster* roster_;
  static std::map<std::string, Sealer>* sealers_;
  static std::map<std::string, SecretCertificate>* seeded_;
  static Roster* seeded_roster_;
  static std::map<std::string, Sealer>* seeded_sealers_;
};

fs::path* SealTest::dir_ = nullptr;
Roster* SealTest::roster_ = nullptr;
std::map<std::string, Sealer>* SealTest::sealers_ = nullptr;
std::map<std::string, SecretCertificate>* SealTest::seeded_ = nullptr;
Roster* SealTest::seeded_roster_ = nullptr;
std::map<std::string, Sealer>* SealTest::seeded_sealers_ = nullptr;

// ---- Sealing --------------------------------------------------------------------------------

TEST_F(SealTest, OpensUnderTheSameBinding) {
  const Binding binding = MakeBinding("alice", "hospital");
  const std::vector<uint8_t> sealed = AliceToHospital(binding);
  EXPECT_EQ(sealed.size(), 8 + kSealOverhead);
  Result<std::vector<uint8_t>> opened = S("hospital").Open(binding, sealed);
  ASSERT_TRUE(opened.ok()) << opened.message();
  EXPECT_EQ(*opened, Bytes("12345678"));
}

// Rounds only seal patient -> hospital, but the keys are pairwise and symmetric: every pair
// derives the same key from either end.
TEST_F(SealTest, WorksBetweenEveryPair) {
  for (const std::string from : {"alice", "bob", "charlie", "hospital"}) {
    for (const std::string to : {"alice", "bob", "charlie", "hospital"}) {
      if (from == to) continue;
      const Binding binding = MakeBinding(from, to);
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
  const Binding binding = MakeBinding("bob", "hospital");
  Result<std::vector<uint8_t>> sealed = S("bob").Seal(binding, {});
  ASSERT_TRUE(sealed.ok()) << sealed.message();
  EXPECT_EQ(sealed->size(), kSealOverhead);
  Result<std::vector<uint8_t>> opened = S("hospital").Open(binding, *sealed);
  ASSERT_TRUE(opened.ok()) << opened.message();
  EXPECT_TRUE(opened->empty());
}

TEST_F(SealTest, AnyFlippedBitFailsToOpen) {
  const Binding binding = MakeBinding("alice", "hospital");
  const std::vector<uint8_t> sealed = AliceToHospital(binding);
  ASSERT_EQ(sealed.size(), kSealNonceSize + 8 + kSealTagSize);
  // First and last byte of the nonce, the ciphertext and the tag; every bit position.
  for (size_t index : {size_t{0}, kSealNonceSize - 1, kSealNonceSize, kSealNonceSize + 7,
                       kSealNonceSize + 8, sealed.size() - 1}) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> tampered = sealed;
      tampered[index] ^= static_cast<uint8_t>(1u << bit);
      Result<std::vector<uint8_t>> opened = S("hospital").Open(binding, tampered);
      ASSERT_FALSE(opened.ok()) << index << ":" << bit;
      EXPECT_EQ(opened.message(), "cannot open partial from alice: authentication failed");
      EXPECT_EQ(opened.status().code(), Status::Code::kUnauthentic);  // what the audit reports
    }
  }
  std::vector<uint8_t> truncated(sealed.begin(), sealed.end() - 1);
  EXPECT_FALSE(S("hospital").Open(binding, truncated).ok());
  std::vector<uint8_t> extended = sealed;
  extended.push_back(0);
  EXPECT_FALSE(S("hospital").Open(binding, extended).ok());
}

TEST_F(SealTest, AnotherRoundFailsToOpen) {
  const Binding binding = MakeBinding("alice", "hospital");
  const std::vector<uint8_t> sealed = AliceToHospital(binding);
  for (size_t i = 0; i < binding.round.size(); ++i) {
    Binding other = binding;
    other.round[i] ^= 1;
    Result<std::vector<uint8_t>> opened = S("hospital").Open(other, sealed);
    ASSERT_FALSE(opened.ok()) << i;
    EXPECT_EQ(opened.message(), "cannot open partial from alice: authentication failed");
  }
}

// A payload sealed under one view of the round does not open under another: every byte of the
// view is bound.
TEST_F(SealTest, AnotherViewFailsToOpen) {
  const Binding binding = MakeBinding("alice", "hospital");
  const std::vector<uint8_t> sealed = AliceToHospital(binding);
  for (size_t i = 0; i < binding.view.size(); ++i) {
    Binding other = binding;
    other.view[i] ^= 0x80;
    Result<std::vector<uint8_t>> opened = S("hospital").Open(other, sealed);
    ASSERT_FALSE(opened.ok()) << i;
    EXPECT_EQ(opened.message(), "cannot open partial from alice: authentication failed");
  }
  Binding zero = binding;
  zero.view = ViewDigest{};
  EXPECT_FALSE(S("hospital").Open(zero, sealed).ok());
}

// The same with real views: a masked input sealed under the sum update the patient saw does
// not open for a hospital whose update differs in one nonce (a tampered nonce), in the order
// of the participants, or in the length.
TEST_F(SealTest, MaskedInputSealedUnderAnotherViewFailsToOpen) {
  std::mt19937_64 rng(11);
  const PhaseUpdate u = SumUpdate({"alice", "bob", "charlie"}, 1, rng);
  std::vector<PhaseUpdate> others;
  for (size_t i = 0; i < u.nonces.size(); ++i) {
    others.push_back(u);
    others.back().nonces[i][31] ^= 1;
  }
  others.push_back(u);
  std::swap(others.back().params.participants[1], others.back().params.participants[2]);
  std::swap(others.back().nonces[1], others.back().nonces[2]);
  others.push_back(u);
  others.back().params.length = 2;
  const std::vector<uint8_t> payload =
      EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>{0xfedcba9876543210u});
  Result<std::vector<uint8_t>> sealed =
      S("alice").Seal(MakeBinding("alice", "hospital", View(u)), payload);
  ASSERT_TRUE(sealed.ok()) << sealed.message();
  Result<std::vector<uint8_t>> opened =
      S("hospital").Open(MakeBinding("alice", "hospital", View(u)), *sealed);
  ASSERT_TRUE(opened.ok()) << opened.message();
  EXPECT_EQ(*opened, payload);
  for (size_t k = 0; k < others.size(); ++k) {
    Result<std::vector<uint8_t>> wrong =
        S("hospital").Open(MakeBinding("alice", "hospital", View(others[k])), *sealed);
    ASSERT_FALSE(wrong.ok()) << k;
    EXPECT_EQ(wrong.message(), "cannot open partial from alice: authentication failed") << k;
  }
}

// Protocol 2 has one kind, but the kind byte stays bound so that a later kind can never open as
// a partial. 1 was protocol 1's "share".
TEST_F(SealTest, AnotherKindByteFailsToOpen) {
  const Binding binding = MakeBinding("alice", "hospital");
  const std::vector<uint8_t> sealed = AliceToHospital(binding);
  Binding other = binding;
  other.kind = static_cast<EnvelopeKind>(1);
  Result<std::vector<uint8_t>> opened = S("hospital").Open(other, sealed);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.message(), "cannot open payload from alice: authentication failed");
}

TEST_F(SealTest, AnotherSenderFailsToOpen) {
  // The hospital is told the partial came from charlie: it must not open (charlie's key
  // differs, and the sender is bound).
  const std::vector<uint8_t> sealed = AliceToHospital(MakeBinding("alice", "hospital"));
  Result<std::vector<uint8_t>> opened =
      S("hospital").Open(MakeBinding("charlie", "hospital"), sealed);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.message(), "cannot open partial from charlie: authentication failed");
}

TEST_F(SealTest, AnotherRecipientCannotOpen) {
  const std::vector<uint8_t> sealed = AliceToHospital(MakeBinding("alice", "hospital"));
  // Redirected to bob as if addressed to it: a patient cannot open another's partial.
  Result<std::vector<uint8_t>> redirected = S("bob").Open(MakeBinding("alice", "bob"), sealed);
  ASSERT_FALSE(redirected.ok());
  EXPECT_EQ(redirected.message(), "cannot open partial from alice: authentication failed");
  // Bob presenting the true binding is refused before any crypto.
  Result<std::vector<uint8_t>> not_mine = S("bob").Open(MakeBinding("alice", "hospital"), sealed);
  ASSERT_FALSE(not_mine.ok());
  EXPECT_EQ(not_mine.message(),
            "cannot open partial from alice: addressed to hospital, this is bob");
}

TEST_F(SealTest, SealsOfTheSamePlaintextDiffer) {
  const Binding binding = MakeBinding("alice", "hospital");
  const std::vector<uint8_t> first = AliceToHospital(binding);
  const std::vector<uint8_t> second = AliceToHospital(binding);
  ASSERT_EQ(first.size(), second.size());
  EXPECT_NE(first, second);
  EXPECT_NE(std::memcmp(first.data(), second.data(), kSealNonceSize), 0);  // fresh nonces
  EXPECT_TRUE(S("hospital").Open(binding, first).ok());
  EXPECT_TRUE(S("hospital").Open(binding, second).ok());
}

TEST_F(SealTest, SealRefusesWrongSenderSelfBrokerAndStrangers) {
  const std::vector<uint8_t> plaintext = Bytes("x");
  EXPECT_TRUE(Contains(S("alice").Seal(MakeBinding("bob", "hospital"), plaintext).message(),
                       "cannot seal as bob"));
  EXPECT_TRUE(Contains(S("alice").Seal(MakeBinding("alice", "alice"), plaintext).message(),
                       "cannot seal to itself"));
  EXPECT_TRUE(Contains(S("alice").Seal(MakeBinding("alice", "broker"), plaintext).message(),
                       "no sealing key for recipient broker"));
  EXPECT_TRUE(Contains(S("alice").Seal(MakeBinding("alice", "dave"), plaintext).message(),
                       "no sealing key for recipient dave"));
}

TEST_F(SealTest, OpenRefusesUnknownSendersAndShortPayloads) {
  const std::vector<uint8_t> sealed = AliceToHospital(MakeBinding("alice", "hospital"));
  EXPECT_TRUE(Contains(S("hospital").Open(MakeBinding("broker", "hospital"), sealed).message(),
                       "no sealing key for that sender"));
  EXPECT_TRUE(Contains(S("hospital").Open(MakeBinding("hospital", "hospital"), sealed).message(),
                       "no sealing key for that sender"));
  const std::vector<uint8_t> short_payload(kSealOverhead - 1, 0);
  const auto short_open = S("hospital").Open(MakeBinding("alice", "hospital"), short_payload);
  EXPECT_TRUE(Contains(short_open.message(), "shorter than"));
  EXPECT_EQ(short_open.status().code(), Status::Code::kError);  // not a seal that failed to open
  EXPECT_FALSE(S("hospital").Open(MakeBinding("alice", "hospital"), {}).ok());
}

TEST_F(SealTest, BindingBytesLayout) {
  const Binding binding = MakeBinding("alice", "hospital");
  // "tally/2" || kind || round id (16) || view (32) || len || sender || len || recipient.
  std::vector<uint8_t> expected = Bytes("tally/2");
  expected.push_back(2);  // kPartial
  for (size_t i = 0; i < kRoundIdSize; ++i) expected.push_back(static_cast<uint8_t>(0xa0 + i));
  for (size_t i = 0; i < 32; ++i) expected.push_back(static_cast<uint8_t>(0x30 + i));
  expected.push_back(5);
  for (uint8_t c : Bytes("alice")) expected.push_back(c);
  expected.push_back(8);
  for (uint8_t c : Bytes("hospital")) expected.push_back(c);
  EXPECT_EQ(expected.size(), 7u + 1 + 16 + 32 + 6 + 9);
  EXPECT_EQ(BindingBytes(binding), expected);
  // Length prefixes keep ("ab","c") and ("a","bc") apart.
  EXPECT_NE(BindingBytes(MakeBinding("ab", "c")), BindingBytes(MakeBinding("a", "bc")));
  // The view is in the bytes: another view, other bytes.
  Binding other = binding;
  other.view[31] ^= 1;
  EXPECT_NE(BindingBytes(other), BindingBytes(binding));
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
  EXPECT_EQ(sealer.message(), "cannot derive keys with bob: invalid seal public key");
}

// ---- The round's view -----------------------------------------------------------------------

// The view covers what a masked input depends on (round, hospital, range, length, participants,
// their sealing keys and their nonces) and nothing that changes between updates of the same
// round (phase, seq, ticket, deadline, reason), so the patient's and the hospital's views agree.
TEST_F(SealTest, RoundViewCoversTheRoundAndItsNonces) {
  std::mt19937_64 rng(5);
  const PhaseUpdate u = SumUpdate({"alice", "bob", "charlie"}, 4, rng);
  const ViewDigest view = View(u);
  EXPECT_EQ(View(u), view);

  std::vector<PhaseUpdate> changed(9, u);
  changed[0].round[15] ^= 1;
  changed[1].params.hospital = "hospital2";
  changed[2].params.range = 1001;
  changed[3].params.length = 5;
  changed[4].params.participants[2] = "charlie2";
  std::swap(changed[5].params.participants[0],
            changed[5].params.participants[1]);  // same nonces, swapped names
  changed[6].nonces[0][0] ^= 1;
  changed[7].nonces[2][31] ^= 0x80;
  changed[8].params.participants.pop_back();
  changed[8].nonces.pop_back();
  for (size_t k = 0; k < changed.size(); ++k) EXPECT_NE(View(changed[k]), view) << k;
  // Regression (found trying Tally with rosters that disagree): a patient whose roster holds
  // another key for a peer computes masks that do not cancel; its view now differs too, so its
  // masked input fails to open instead of summing to a wrong aggregate.
  for (size_t k = 0; k < 1 + u.params.participants.size(); ++k) {
    std::vector<PublicKey> keys = SealKeys(u);
    keys[k][0] ^= 1;
    EXPECT_NE(RoundView(u, keys), view) << "key " << k;
  }

  PhaseUpdate same = u;
  same.phase = Phase::kDone;
  same.seq = 99;
  same.ticket = 1234;
  same.deadline_ms = 1;
  same.reason = "anything";
  EXPECT_EQ(View(same), view);
}

// ---- Masks ----------------------------------------------------------------------------------

// The heart of the protocol: every participant adds its masks to its input, and the masks
// cancel exactly (mod 2^64) in the sum of all masked inputs, for inputs anywhere in u64 and
// lengths within one chunk of the mask stream and across two.
TEST_F(SealTest, MasksCancelInTheSumOfAllParticipants) {
  std::mt19937_64 rng(20260125);
  for (size_t n : {size_t{2}, size_t{3}, size_t{10}}) {
    for (uint32_t length : {1u, 1000u, 2049u}) {
      SCOPED_TRACE("N=" + std::to_string(n) + " L=" + std::to_string(length));
      const PhaseUpdate u = SumUpdate(Patients(n), length, rng);
      std::vector<std::vector<uint64_t>> inputs(n, std::vector<uint64_t>(length));
      std::vector<uint64_t> sum(length, 0);
      for (size_t i = 0; i < n; ++i) {
        for (uint32_t e = 0; e < length; ++e) {
          inputs[i][e] = e % 3 == 0 ? ~uint64_t{0} - i : rng();  // also near 2^64
          sum[e] += inputs[i][e];
        }
      }
      const std::vector<std::vector<uint64_t>> masked = Masked(u, inputs);
      std::vector<uint64_t> total(length, 0);
      for (size_t i = 0; i < n; ++i)
        for (uint32_t e = 0; e < length; ++e) total[e] += masked[i][e];
      EXPECT_EQ(total, sum);
      // Without one participant the masks do not cancel.
      std::vector<uint64_t> partial(length, 0);
      for (size_t i = 1; i < n; ++i)
        for (uint32_t e = 0; e < length; ++e) partial[e] += masked[i][e];
      std::vector<uint64_t> partial_inputs(length, 0);
      for (size_t i = 1; i < n; ++i)
        for (uint32_t e = 0; e < length; ++e) partial_inputs[e] += inputs[i][e];
      for (uint32_t e = 0; e < length; ++e) ASSERT_NE(partial[e], partial_inputs[e]) << e;
    }
  }
}

// A single masked input reveals nothing of the input by equality: every element differs.
TEST_F(SealTest, AMaskedInputDiffersFromTheInput) {
  std::mt19937_64 rng(3);
  for (size_t n : {size_t{2}, size_t{10}}) {
    const PhaseUpdate u = SumUpdate(Patients(n), 2049, rng);
    for (const std::string& name : u.params.participants) {
      std::vector<uint64_t> input(2049, 42);
      std::vector<uint64_t> masked = input;
      ASSERT_TRUE(M(name).AddMasks(u, masked).ok());
      for (size_t e = 0; e < masked.size(); ++e) ASSERT_NE(masked[e], input[e]) << name << " " << e;
    }
  }
}

// AddMasks computes exactly the documented construction (ReferenceMasks), element for element,
// across the chunk boundary at 2048 elements and for names out of order.
TEST_F(SealTest, MasksFollowTheDocumentedConstruction) {
  std::mt19937_64 rng(17);
  const PhaseUpdate u = SumUpdate({"p03", "p01", "p10", "p02"}, 4100, rng);
  for (const std::string& name : u.params.participants) {
    EXPECT_EQ(MasksOf(name, u), ReferenceMasks(name, u)) << name;
  }
  // Two participants: the lower name's masks are the stream, the higher's its negation.
  const PhaseUpdate two = SumUpdate({"p02", "p01"}, 3, rng);
  const std::vector<uint64_t> low = MasksOf("p01", two), high = MasksOf("p02", two);
  for (size_t e = 0; e < low.size(); ++e) EXPECT_EQ(low[e], uint64_t{0} - high[e]);
}

// Masks are fresh per round: another round id or any participant's nonce changes them, so a
// patient's masks are never reused. The same update gives the same masks (both ends agree).
TEST_F(SealTest, MasksChangeWithTheRoundAndEveryNonce) {
  std::mt19937_64 rng(23);
  const PhaseUpdate u = SumUpdate(Patients(3), 8, rng);
  const std::vector<uint64_t> base = MasksOf("p01", u);
  EXPECT_EQ(MasksOf("p01", u), base);

  PhaseUpdate next = u;
  next.round[0] ^= 1;
  const std::vector<uint64_t> other_round = MasksOf("p01", next);
  for (size_t e = 0; e < base.size(); ++e) EXPECT_NE(other_round[e], base[e]) << e;

  for (size_t i = 0; i < u.nonces.size(); ++i) {
    PhaseUpdate fresh = u;
    fresh.nonces[i][7] ^= 1;
    const std::vector<uint64_t> masks = MasksOf("p01", fresh);
    for (size_t e = 0; e < base.size(); ++e) EXPECT_NE(masks[e], base[e]) << i << " " << e;
    // The new masks still cancel across the participants of that update.
    std::vector<uint64_t> total(u.params.length, 0);
    for (const std::string& name : fresh.params.participants) {
      const std::vector<uint64_t> m = MasksOf(name, fresh);
      for (size_t e = 0; e < total.size(); ++e) total[e] += m[e];
    }
    EXPECT_EQ(total, std::vector<uint64_t>(u.params.length, 0)) << i;
  }
  // What is not in the masks' inputs does not change them.
  PhaseUpdate later = u;
  later.phase = Phase::kDone;
  later.seq += 1;
  later.deadline_ms = 1;
  EXPECT_EQ(MasksOf("p01", later), base);
}

TEST_F(SealTest, AddMasksErrorsLeaveTheValuesUnchanged) {
  std::mt19937_64 rng(29);
  const PhaseUpdate u = SumUpdate(Patients(3), 4, rng);
  const std::vector<uint64_t> input = {1, 2, 3, 4};
  auto fails = [&input](const Sealer& sealer, const PhaseUpdate& update, size_t size) {
    std::vector<uint64_t> values = input;
    values.resize(size, 9);
    const std::vector<uint64_t> before = values;
    Status s = sealer.AddMasks(update, values);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(values, before);
    return s.message();
  };
  std::vector<uint64_t> good = input;
  ASSERT_TRUE(M("p01").AddMasks(u, good).ok());  // the same update and input are fine

  PhaseUpdate open = u;  // the open phase's update: no nonces yet
  open.nonces.clear();
  EXPECT_EQ(fails(M("p01"), open, 4), "the round has no join nonce for every participant");
  PhaseUpdate short_nonces = u;
  short_nonces.nonces.pop_back();
  EXPECT_EQ(fails(M("p01"), short_nonces, 4), "the round has no join nonce for every participant");
  PhaseUpdate extra_nonce = u;
  extra_nonce.nonces.push_back(FilledNonce(1));
  EXPECT_EQ(fails(M("p01"), extra_nonce, 4), "the round has no join nonce for every participant");

  EXPECT_EQ(fails(M("p01"), u, 3), "input has 3 elements, the round asks for 4");
  EXPECT_EQ(fails(M("p01"), u, 5), "input has 5 elements, the round asks for 4");
  EXPECT_EQ(fails(M("p01"), u, 0), "input has 0 elements, the round asks for 4");

  EXPECT_EQ(fails(M("p04"), u, 4), "p04 is not a participant of the round");
  EXPECT_EQ(fails(M("hospital"), u, 4), "hospital is not a participant of the round");

  PhaseUpdate repeated = u;
  repeated.params.participants = {"p01", "p02", "p01"};
  EXPECT_EQ(fails(M("p01"), repeated, 4), "the round's participant list repeats a name");
  EXPECT_EQ(fails(M("p02"), repeated, 4), "the round's participant list repeats a name");

  PhaseUpdate stranger = u;  // a participant the roster does not know
  stranger.params.participants[2] = "zed";
  EXPECT_EQ(fails(M("p01"), stranger, 4), "no mask key for zed");
}

// Known-answer vector for the masks, so that another implementation can be checked against
// this one. Seal keypairs are crypto_box_seed_keypair over 32 bytes of 0x01 (alice), 0x02 (bob)
// and 0x03 (carol); the round id is a0 a1 .. af; the join nonces are 32 bytes of 0x11 (alice),
// 0x22 (bob), 0x33 (carol); hospital "hospital", range 1000; length 2049 for alice and bob
// alone, 2 for the three of them. A party's masks are AddMasks over zeros; the views are
// RoundView of the same updates with the seeded keys (the hospital's seed byte is 0x04). The
// expected values were computed once with this implementation (which agrees with
// ReferenceMasks and ReferenceView above) and are written here as constants: they pin the mask
// stream and the view, so any change to either fails here.
TEST_F(SealTest, MaskKnownAnswer) {
  PhaseUpdate two;
  two.round = TestRound();
  two.phase = Phase::kSum;
  two.params.hospital = "hospital";
  two.params.range = 1000;
  two.params.length = 2049;
  two.params.participants = {"alice", "bob"};
  two.nonces = {FilledNonce(0x11), FilledNonce(0x22)};
  const std::vector<uint64_t> alice = MasksOf("alice", two);
  const std::vector<uint64_t> bob = MasksOf("bob", two);
  ASSERT_EQ(alice.size(), 2049u);
  EXPECT_EQ(View(two), ReferenceView(two));
  EXPECT_EQ(Hex(View(two)), "70e7256fbf9a7345927c19a3903269baff23ef739ed8a0405fb4769f21733b5d");
  // alice < bob: alice adds the pair's stream, bob subtracts it.
  EXPECT_EQ(alice[0], 0xcf4f1dce737a6c2eu);
  EXPECT_EQ(alice[1], 0x95ae6503d3d3037bu);
  EXPECT_EQ(alice[2047], 0xed16cf6c5b259a96u);
  EXPECT_EQ(alice[2048], 0x0a7807c50f93d88eu);  // the first element of the second chunk
  for (size_t e = 0; e < alice.size(); ++e) ASSERT_EQ(bob[e], uint64_t{0} - alice[e]) << e;

  PhaseUpdate three = two;
  three.params.length = 2;
  three.params.participants = {"alice", "bob", "carol"};
  three.nonces = {FilledNonce(0x11), FilledNonce(0x22), FilledNonce(0x33)};
  EXPECT_EQ(View(three), ReferenceView(three));
  EXPECT_EQ(Hex(View(three)), "55f595955bf5bd1ab3525cca8b52a5dbfc972cb8e382ffcca881a1fabb54e4c8");
  EXPECT_EQ(MasksOf("alice", three),
            (std::vector<uint64_t>{0x1aad086ba8b0eb89u, 0x6f2e71559fdfa7c1u}));
  EXPECT_EQ(MasksOf("bob", three),
            (std::vector<uint64_t>{0xbfdd579b9a74eb2du, 0xb88e309a5bf06122u}));
  EXPECT_EQ(MasksOf("carol", three),
            (std::vector<uint64_t>{0x25759ff8bcda294au, 0xd8435e10042ff71du}));
  for (const std::string& name : three.params.participants)
    EXPECT_EQ(MasksOf(name, three), ReferenceMasks(name, three)) << name;

  // A round with columns: their names, signed bounds and decimals, and the weight, are in the
  // view; the masks are the same construction.
  PhaseUpdate columns = three;
  columns.params.range = 0;
  columns.params.columns = {{"bmi", -15, 800, 1}, {"bp", 40, 200, 0}};
  columns.params.weight = {100, 0};
  EXPECT_EQ(View(columns), ReferenceView(columns));
  EXPECT_NE(View(columns), View(three));
  EXPECT_EQ(Hex(View(columns)), "ba18e60cc1eb501708146f74309baf5f4436d69a163fb425adec91a686aa1e83");
}

// ---- A round's partials, end to end in one process ------------------------------------------

// Each patient masks its input, seals it under the view of the sum update it saw, and the
// hospital opens every partial under its own view of that update and sums: the exact sum of
// the inputs. A hospital whose update carries one tampered nonce opens none of them.
TEST_F(SealTest, PartialsSealedUnderTheViewOpenAndSumToTheInputs) {
  std::mt19937_64 rng(31);
  const size_t n = 10;
  const uint32_t length = 3;
  const PhaseUpdate u = SumUpdate(Patients(n), length, rng);
  std::vector<uint64_t> expected(length, 0);
  std::vector<std::vector<uint8_t>> sealed;
  for (size_t i = 0; i < n; ++i) {
    const std::string& me = u.params.participants[i];
    std::vector<uint64_t> values = {i * 100, 1000 - i, ~uint64_t{0}};
    for (uint32_t e = 0; e < length; ++e) expected[e] += values[e];
    ASSERT_TRUE(M(me).AddMasks(u, values).ok());
    Result<std::vector<uint8_t>> s = M(me).Seal(MakeBinding(me, "hospital", View(u)),
                                                EncodePayload(EnvelopeKind::kPartial, values));
    ASSERT_TRUE(s.ok()) << s.message();
    sealed.push_back(*s);
  }
  std::vector<uint64_t> sum(length, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& from = u.params.participants[i];
    Result<std::vector<uint8_t>> opened =
        M("hospital").Open(MakeBinding(from, "hospital", View(u)), sealed[i]);
    ASSERT_TRUE(opened.ok()) << opened.message();
    Result<std::vector<uint64_t>> values = DecodePayload(*opened, EnvelopeKind::kPartial, length);
    ASSERT_TRUE(values.ok()) << values.message();
    for (uint32_t e = 0; e < length; ++e) sum[e] += (*values)[e];
  }
  EXPECT_EQ(sum, expected);

  PhaseUpdate tampered = u;
  tampered.nonces[4][0] ^= 1;
  for (size_t i = 0; i < n; ++i) {
    const std::string& from = u.params.participants[i];
    Result<std::vector<uint8_t>> opened =
        M("hospital").Open(MakeBinding(from, "hospital", View(tampered)), sealed[i]);
    ASSERT_FALSE(opened.ok()) << from;
    EXPECT_EQ(opened.message(), "cannot open partial from " + from + ": authentication failed");
  }
}

}  // namespace
}  // namespace tally
