// Tests for nodes/seal: sealing binds version, kind (partial or unmask), round, the round's view,
// sender and recipient (keys from real files); the round digest, the view, the keys and confirm
// statements and their Ed25519 signatures, the sealed shares and the mask keys, each against its
// documented construction written out here with libsodium (keys from fixed seeds) and pinned by
// known answers; and what each refuses. Then whole rounds in one process, with no transport:
// ten PatientRounds and a HospitalRound given the batches the coordinator would send, with and
// without dropouts, and what they refuse when the broker lies.
#include "nodes/seal.h"

#include <gtest/gtest.h>
#include <sodium.h>
#include <stdlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "keys/keys.h"
#include "nodes/hospital_round.h"
#include "nodes/patient_round.h"
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

// A round of `names` without columns, at the safe threshold.
RoundParams Params(const std::vector<std::string>& names, uint32_t length = 2) {
  RoundParams p;
  p.hospital = "hospital";
  p.range = 1000;
  p.length = length;
  p.participants = names;
  p.threshold = SafeThreshold(names.size());
  return p;
}

// A round keypair from 32 bytes of `seed_byte` (crypto_box_seed_keypair), for known answers.
RoundKeyPair SeededRoundKeys(uint8_t seed_byte) {
  RoundKeyPair pair;
  std::array<uint8_t, crypto_box_SEEDBYTES> seed;
  seed.fill(seed_byte);
  crypto_box_seed_keypair(pair.pub.data(), pair.secret.data(), seed.data());
  return pair;
}

// Round keys for n participants, cpk from seed 0x40 + i and spk from 0x60 + i.
std::vector<RoundPublicKeys> SeededKeys(size_t n) {
  std::vector<RoundPublicKeys> keys;
  for (size_t i = 0; i < n; ++i)
    keys.push_back({SeededRoundKeys(static_cast<uint8_t>(0x40 + i)).pub,
                    SeededRoundKeys(static_cast<uint8_t>(0x60 + i)).pub});
  return keys;
}

Members Set(std::initializer_list<int> bits) {
  Members m;
  for (int b : bits) m.push_back(b != 0);
  return m;
}

// X25519 points of small order (libsodium's blocklist): 0, 1, two points of order 8, and p - 1,
// p, p + 1. Multiplied by a clamped scalar each gives all zeros: no shared secret.
std::vector<RoundKey> SmallOrderKeys() {
  std::vector<RoundKey> keys;
  RoundKey zero{};
  keys.push_back(zero);
  RoundKey one{};
  one[0] = 1;
  keys.push_back(one);
  keys.push_back({0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
                  0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
                  0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00});
  keys.push_back({0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1,
                  0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c,
                  0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57});
  for (uint8_t low : {0xec, 0xed, 0xee}) {
    RoundKey p;
    p.fill(0xff);
    p[0] = low;
    p[31] = 0x7f;
    keys.push_back(p);
  }
  return keys;
}

// Whether `bytes` is not in `seen` yet; adds it. (A vector and std::find rather than a
// std::set of vectors, whose comparison GCC 12 at -O3 misreports under -Wstringop-overread.)
bool Unseen(std::vector<std::vector<uint8_t>>& seen, const std::vector<uint8_t>& bytes) {
  if (std::find(seen.begin(), seen.end(), bytes) != seen.end()) return false;
  seen.push_back(bytes);
  return true;
}

// Bytes put together as the documentation writes them: strings, names with a length byte,
// u64 little-endian.
class Buf {
 public:
  Buf& Add(std::string_view s) {
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  Buf& Add(std::span<const uint8_t> s) {
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  Buf& Byte(uint8_t b) {
    bytes_.push_back(b);
    return *this;
  }
  Buf& Name(std::string_view name) { return Byte(static_cast<uint8_t>(name.size())).Add(name); }
  Buf& U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  // BLAKE2b-256 of the bytes, keyed with `key` if given.
  std::array<uint8_t, 32> Hash(const uint8_t* key = nullptr, size_t key_size = 0) const {
    std::array<uint8_t, 32> out;
    crypto_generichash(out.data(), out.size(), bytes_.data(), bytes_.size(), key, key_size);
    return out;
  }

 private:
  std::vector<uint8_t> bytes_;
};

// One key folder for the sealing tests (generating keys is the slow part and tests only read),
// and in-memory parties with seal keys from fixed seeds for the documented constructions.
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

    // Seeded parties: alice/bob/carol for the known answers, p01..p10, and a hospital (seed
    // byte k for the k-th name below).
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

  // The seal keypair is crypto_box_seed_keypair over 32 bytes of `seed_byte`, the sign keypair
  // crypto_sign_seed_keypair over 32 bytes of 0x80 + `seed_byte`; the CURVE key is a placeholder
  // (the Sealer never uses it).
  static SecretCertificate SeededParty(const std::string& name, uint8_t seed_byte) {
    SecretCertificate s;
    s.pub.name = name;
    s.pub.role = name == "hospital" ? Role::kHospital : Role::kPatient;
    std::array<uint8_t, crypto_box_SEEDBYTES> seed;
    seed.fill(seed_byte);
    crypto_box_seed_keypair(s.pub.seal_public.data(), s.seal_secret.data(), seed.data());
    std::fill_n(s.sign_seed.data(), SecretKey::size(), static_cast<uint8_t>(0x80 + seed_byte));
    std::array<uint8_t, crypto_sign_SECRETKEYBYTES> expanded;
    crypto_sign_seed_keypair(s.pub.sign_public.data(), expanded.data(), s.sign_seed.data());
    sodium_memzero(expanded.data(), expanded.size());
    s.pub.curve_public.fill(seed_byte);
    return s;
  }
  // The Ed25519 public key `name` signs with, as the seeded roster has it.
  static const PublicKey& SignKey(const std::string& name) {
    return seeded_->at(name).pub.sign_public;
  }
  // Whether `signature` is `signer`'s on `statement`, checked with libsodium alone.
  static bool ReferenceVerify(const std::string& signer, const std::vector<uint8_t>& statement,
                              const Signature& signature) {
    return crypto_sign_verify_detached(signature.data(), statement.data(), statement.size(),
                                       SignKey(signer).data()) == 0;
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
  static std::vector<PublicKey> SealKeys(const RoundParams& p) {
    std::vector<PublicKey> keys = {SealKey(p.hospital)};
    for (const std::string& name : p.participants) keys.push_back(SealKey(name));
    return keys;
  }
  // RoundView with the seeded roster's keys.
  static ViewDigest View(const RoundId& round, const RoundParams& p, const Members& shared,
                         const std::vector<RoundPublicKeys>& keys) {
    return RoundView(DigestOf(round, p), SealKeys(p), shared, keys);
  }

  static ViewDigest TestView() {
    ViewDigest v;
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(0x30 + i);
    return v;
  }

  static Binding MakeBinding(std::string_view from, std::string_view to,
                             const ViewDigest& view = TestView(),
                             EnvelopeKind kind = EnvelopeKind::kPartial) {
    Binding binding;
    binding.round = TestRound();
    binding.kind = kind;
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

  // --- The documented constructions (schema/PROTOCOL.md), written out independently of
  // nodes/seal.cc ---

  // crypto_box_beforenm(pk(peer), sk(me)), then BLAKE2b-256(shared || "tally seal v2"): the
  // pair's sealing key.
  static std::array<uint8_t, 32> PairKey(const std::string& me, const std::string& peer,
                                         std::string_view label) {
    uint8_t shared[crypto_box_BEFORENMBYTES];
    EXPECT_EQ(crypto_box_beforenm(shared, seeded_->at(peer).pub.seal_public.data(),
                                  seeded_->at(me).seal_secret.data()),
              0);
    return Buf().Add(std::span<const uint8_t>(shared, sizeof shared)).Add(label).Hash();
  }

  static RoundDigest ReferenceDigest(const RoundId& round, const RoundParams& p) {
    Buf b;
    b.Add("tally round v3").Add(round).Name(p.hospital).U64(p.range).U64(p.length);
    b.U64(p.columns.size());
    for (const Column& c : p.columns) {
      b.Name(c.name).U64(static_cast<uint64_t>(c.lower)).U64(static_cast<uint64_t>(c.upper));
      b.U64(c.decimals);
    }
    b.U64(p.weight.max).U64(p.weight.decimals).U64(p.threshold).U64(p.participants.size());
    for (const std::string& name : p.participants) b.Name(name);
    return b.Hash();
  }

  // "tally keys v3" || digest || u8 len(owner) || owner || cpk || spk.
  static std::vector<uint8_t> ReferenceKeysStatement(const RoundDigest& digest,
                                                     const std::string& owner,
                                                     const RoundPublicKeys& keys) {
    return Buf().Add("tally keys v3").Add(digest).Name(owner).Add(keys.cpk).Add(keys.spk).bytes();
  }

  // "tally confirm v4" || view || u8 len(signer) || signer || U3 bits, participant i in bit
  // i % 8 of byte i / 8.
  static std::vector<uint8_t> ReferenceConfirmStatement(const ViewDigest& view,
                                                        const std::string& signer,
                                                        const Members& masked) {
    std::vector<uint8_t> bits((masked.size() + 7) / 8, 0);
    for (size_t i = 0; i < masked.size(); ++i)
      if (masked[i]) bits[i / 8] = static_cast<uint8_t>(bits[i / 8] | (1u << (i % 8)));
    return Buf().Add("tally confirm v4").Add(view).Name(signer).Add(bits).bytes();
  }

  static ViewDigest ReferenceView(const RoundId& round, const RoundParams& p, const Members& shared,
                                  const std::vector<RoundPublicKeys>& keys) {
    Buf b;
    b.Add("tally view v4").Add(ReferenceDigest(round, p)).Add(SealKey(p.hospital));
    for (size_t i = 0; i < p.participants.size(); ++i) {
      b.Add(SealKey(p.participants[i]));
      if (shared[i]) {
        b.Byte(1).Add(keys[i].cpk).Add(keys[i].spk);
      } else {
        b.Byte(0);
      }
    }
    return b.Hash();
  }

  // BLAKE2b-256(crypto_scalarmult(secret, peer) || label).
  static std::array<uint8_t, 32> ReferenceScalarKey(const uint8_t* secret, const RoundKey& peer,
                                                    std::string_view label) {
    uint8_t point[crypto_scalarmult_BYTES];
    EXPECT_EQ(crypto_scalarmult(point, secret, peer.data()), 0);
    return Buf().Add(std::span<const uint8_t>(point, sizeof point)).Add(label).Hash();
  }

  // The pair mask key of "Masks": BLAKE2b-256(crypto_scalarmult(secret, peer) || "tally mask v4"
  // || digest || u32 LE min(i, j) || u32 LE max(i, j)).
  static std::array<uint8_t, 32> ReferenceMaskKey(const uint8_t* secret, const RoundKey& peer,
                                                  const RoundDigest& digest, uint32_t i,
                                                  uint32_t j) {
    uint8_t point[crypto_scalarmult_BYTES];
    EXPECT_EQ(crypto_scalarmult(point, secret, peer.data()), 0);
    Buf b;
    b.Add(std::span<const uint8_t>(point, sizeof point)).Add("tally mask v4").Add(digest);
    for (const uint32_t index : {std::min(i, j), std::max(i, j)})
      for (int k = 0; k < 4; ++k) b.Byte(static_cast<uint8_t>(index >> (8 * k)));
    return b.Hash();
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

// An unmask is sealed like a partial, with its own kind in the binding; its plaintext (the
// survivors and the shares) comes back whole.
TEST_F(SealTest, AnUnmaskOpensUnderItsOwnKind) {
  const Binding binding = MakeBinding("alice", "hospital", TestView(), EnvelopeKind::kUnmask);
  UnmaskShares shares;
  shares.masked = Set({1, 1, 0});
  shares.self_seeds.assign(2, Share{});
  shares.self_seeds[1].fill(0x5a);
  shares.mask_secrets.assign(1, Share{});
  shares.mask_secrets[0].fill(0xa5);
  const std::vector<uint8_t> plaintext = EncodeUnmask(shares);
  Result<std::vector<uint8_t>> sealed = S("alice").Seal(binding, plaintext);
  ASSERT_TRUE(sealed.ok()) << sealed.message();
  Result<std::vector<uint8_t>> opened = S("hospital").Open(binding, *sealed);
  ASSERT_TRUE(opened.ok()) << opened.message();
  Result<UnmaskShares> decoded = DecodeUnmask(*opened, 3);
  ASSERT_TRUE(decoded.ok()) << decoded.message();
  EXPECT_EQ(decoded->masked, shares.masked);
  EXPECT_EQ(decoded->self_seeds, shares.self_seeds);
  EXPECT_EQ(decoded->mask_secrets, shares.mask_secrets);
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

// The same with real views: a masked input sealed under the view the patient masked for does
// not open for a hospital whose view differs in U2, in one round key, in the threshold or in
// the order of the participants.
TEST_F(SealTest, MaskedInputSealedUnderAnotherViewFailsToOpen) {
  const RoundParams p = Params({"alice", "bob", "charlie"}, 1);
  const Members shared = Set({1, 1, 1});
  const std::vector<RoundPublicKeys> keys = SeededKeys(3);
  Result<ViewDigest> view = S("alice").View(TestRound(), p, shared, keys);
  ASSERT_TRUE(view.ok()) << view.message();
  struct Other {
    RoundParams p;
    Members shared;
    std::vector<RoundPublicKeys> keys;
  };
  std::vector<Other> others;
  others.push_back({p, Set({1, 0, 1}), keys});
  for (size_t i = 0; i < 3; ++i) {
    others.push_back({p, shared, keys});
    others.back().keys[i].cpk[31] ^= 1;
    others.push_back({p, shared, keys});
    others.back().keys[i].spk[0] ^= 1;
  }
  others.push_back({p, shared, keys});
  others.back().p.threshold = 2;
  others.push_back({p, shared, keys});
  std::swap(others.back().p.participants[1], others.back().p.participants[2]);
  std::swap(others.back().keys[1], others.back().keys[2]);
  others.push_back({p, shared, keys});
  others.back().p.length = 2;

  const std::vector<uint8_t> payload =
      EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>{0xfedcba9876543210u});
  Result<std::vector<uint8_t>> sealed =
      S("alice").Seal(MakeBinding("alice", "hospital", *view), payload);
  ASSERT_TRUE(sealed.ok()) << sealed.message();
  Result<ViewDigest> hospital_view = S("hospital").View(TestRound(), p, shared, keys);
  ASSERT_TRUE(hospital_view.ok()) << hospital_view.message();
  Result<std::vector<uint8_t>> opened =
      S("hospital").Open(MakeBinding("alice", "hospital", *hospital_view), *sealed);
  ASSERT_TRUE(opened.ok()) << opened.message();
  EXPECT_EQ(*opened, payload);
  for (size_t k = 0; k < others.size(); ++k) {
    Result<ViewDigest> other =
        S("hospital").View(TestRound(), others[k].p, others[k].shared, others[k].keys);
    ASSERT_TRUE(other.ok()) << other.message();
    Result<std::vector<uint8_t>> wrong =
        S("hospital").Open(MakeBinding("alice", "hospital", *other), *sealed);
    ASSERT_FALSE(wrong.ok()) << k;
    EXPECT_EQ(wrong.message(), "cannot open partial from alice: authentication failed") << k;
  }
}

// The kind is bound: a partial never opens as an unmask nor an unmask as a partial, and no other
// kind byte opens either (1 was protocol 1's "share").
TEST_F(SealTest, AnotherKindFailsToOpen) {
  const Binding partial = MakeBinding("alice", "hospital");
  const Binding unmask = MakeBinding("alice", "hospital", TestView(), EnvelopeKind::kUnmask);
  const std::vector<uint8_t> sealed_partial = AliceToHospital(partial);
  const std::vector<uint8_t> sealed_unmask = AliceToHospital(unmask);
  ASSERT_TRUE(S("hospital").Open(unmask, sealed_unmask).ok());
  Result<std::vector<uint8_t>> as_unmask = S("hospital").Open(unmask, sealed_partial);
  ASSERT_FALSE(as_unmask.ok());
  EXPECT_EQ(as_unmask.message(), "cannot open unmask from alice: authentication failed");
  Result<std::vector<uint8_t>> as_partial = S("hospital").Open(partial, sealed_unmask);
  ASSERT_FALSE(as_partial.ok());
  EXPECT_EQ(as_partial.message(), "cannot open partial from alice: authentication failed");
  Binding other = partial;
  other.kind = static_cast<EnvelopeKind>(1);
  Result<std::vector<uint8_t>> opened = S("hospital").Open(other, sealed_partial);
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
  EXPECT_EQ(S("alice").Seal(MakeBinding("bob", "hospital"), plaintext).message(),
            "cannot seal as bob: this is alice");
  EXPECT_EQ(S("alice").Seal(MakeBinding("alice", "alice"), plaintext).message(),
            "alice cannot seal to itself");
  EXPECT_EQ(S("alice").Seal(MakeBinding("alice", "broker"), plaintext).message(),
            "no sealing key for recipient broker");
  EXPECT_EQ(S("alice").Seal(MakeBinding("alice", "dave"), plaintext).message(),
            "no sealing key for recipient dave");
}

// tally-node's Sealers derive only the keys a round needs (SealPeers::kRoundPeers): a patient
// with its hospitals, a hospital with its patients, so that a patient of a roster of N does one
// X25519 at start instead of N - 1. What they seal opens under a Sealer with every key; a
// patient's has no key for another patient; views and signatures still cover every node, from
// one roster shared by all the Sealers of a process.
TEST_F(SealTest, RoundPeersSealersHoldTheKeysARoundNeedsFromOneSharedRoster) {
  auto shared = std::make_shared<const Roster>(*roster_);
  auto make = [&](const std::string& name) {
    Result<SecretCertificate> secret = LoadSecret(*dir_, name);
    EXPECT_TRUE(secret.ok()) << secret.message();
    Result<Sealer> sealer = Sealer::Create(*secret, shared, SealPeers::kRoundPeers);
    EXPECT_TRUE(sealer.ok()) << sealer.message();
    return std::move(sealer).value();
  };
  const Sealer alice = make("alice");
  const Sealer hospital = make("hospital");
  const std::vector<uint8_t> plaintext = Bytes("masked input");
  const Binding to_hospital = MakeBinding("alice", "hospital");
  Result<std::vector<uint8_t>> sealed = alice.Seal(to_hospital, plaintext);
  ASSERT_TRUE(sealed.ok()) << sealed.message();
  EXPECT_EQ(hospital.Open(to_hospital, *sealed).value(), plaintext);
  EXPECT_EQ(S("hospital").Open(to_hospital, *sealed).value(), plaintext);
  Result<std::vector<uint8_t>> everyone = S("bob").Seal(MakeBinding("bob", "hospital"), plaintext);
  ASSERT_TRUE(everyone.ok());
  EXPECT_EQ(hospital.Open(MakeBinding("bob", "hospital"), *everyone).value(), plaintext);
  EXPECT_EQ(alice.Seal(MakeBinding("alice", "bob"), plaintext).message(),
            "no sealing key for recipient bob");
  const std::vector<uint8_t> statement = Bytes("statement");
  EXPECT_TRUE(alice.Verify("bob", statement, S("bob").Sign(statement)));
  EXPECT_FALSE(alice.Verify("broker", statement, S("bob").Sign(statement)));
  const RoundParams p = Params({"alice", "bob", "charlie"});
  const Members shared_set(3, true);
  const std::vector<RoundPublicKeys> keys(3);
  EXPECT_EQ(alice.View(RoundId{}, p, shared_set, keys).value(),
            S("alice").View(RoundId{}, p, shared_set, keys).value());
}

TEST_F(SealTest, OpenRefusesUnknownSendersAndShortPayloads) {
  const std::vector<uint8_t> sealed = AliceToHospital(MakeBinding("alice", "hospital"));
  EXPECT_EQ(S("hospital").Open(MakeBinding("broker", "hospital"), sealed).message(),
            "cannot open partial from broker: no sealing key for that sender");
  EXPECT_EQ(S("hospital").Open(MakeBinding("hospital", "hospital"), sealed).message(),
            "cannot open partial from hospital: no sealing key for that sender");
  const std::vector<uint8_t> short_payload(kSealOverhead - 1, 0);
  const auto short_open = S("hospital").Open(MakeBinding("alice", "hospital"), short_payload);
  EXPECT_EQ(short_open.message(),
            "cannot open partial from alice: 39 bytes is shorter than the 40-byte seal overhead");
  EXPECT_EQ(short_open.status().code(), Status::Code::kError);  // not a seal that failed to open
  EXPECT_FALSE(S("hospital").Open(MakeBinding("alice", "hospital"), {}).ok());
}

TEST_F(SealTest, BindingBytesLayout) {
  const Binding binding = MakeBinding("alice", "hospital");
  // "tally/3" || kind || round id (16) || view (32) || len || sender || len || recipient.
  std::vector<uint8_t> expected = Bytes("tally/3");
  expected.push_back(2);  // kPartial
  for (size_t i = 0; i < kRoundIdSize; ++i) expected.push_back(static_cast<uint8_t>(0xa0 + i));
  for (size_t i = 0; i < 32; ++i) expected.push_back(static_cast<uint8_t>(0x30 + i));
  expected.push_back(5);
  for (uint8_t c : Bytes("alice")) expected.push_back(c);
  expected.push_back(8);
  for (uint8_t c : Bytes("hospital")) expected.push_back(c);
  EXPECT_EQ(expected.size(), 7u + 1 + 16 + 32 + 6 + 9);
  EXPECT_EQ(BindingBytes(binding), expected);
  // An unmask differs in the kind byte only: 3.
  std::vector<uint8_t> unmask = expected;
  unmask[7] = 3;
  EXPECT_EQ(BindingBytes(MakeBinding("alice", "hospital", TestView(), EnvelopeKind::kUnmask)),
            unmask);
  // Length prefixes keep ("ab","c") and ("a","bc") apart.
  EXPECT_NE(BindingBytes(MakeBinding("ab", "c")), BindingBytes(MakeBinding("a", "bc")));
  // The view is in the bytes: another view, other bytes.
  Binding other = binding;
  other.view[31] ^= 1;
  EXPECT_NE(BindingBytes(other), BindingBytes(binding));
}

// The seal as "The seal" documents it: the key from crypto_box_beforenm and "tally seal v2", the
// binding as the associated data, the nonce in front. Opened here with libsodium alone.
TEST_F(SealTest, SealFollowsTheDocumentedConstruction) {
  for (EnvelopeKind kind : {EnvelopeKind::kPartial, EnvelopeKind::kUnmask}) {
    const Binding binding = MakeBinding("p01", "hospital", TestView(), kind);
    const std::vector<uint8_t> plaintext = Bytes("documented");
    Result<std::vector<uint8_t>> sealed = M("p01").Seal(binding, plaintext);
    ASSERT_TRUE(sealed.ok()) << sealed.message();
    const auto key = PairKey("hospital", "p01", "tally seal v2");
    EXPECT_EQ(key, PairKey("p01", "hospital", "tally seal v2"));
    const std::vector<uint8_t> ad = Buf()
                                        .Add("tally/3")
                                        .Byte(static_cast<uint8_t>(kind))
                                        .Add(binding.round)
                                        .Add(binding.view)
                                        .Name("p01")
                                        .Name("hospital")
                                        .bytes();
    std::vector<uint8_t> opened(sealed->size() - kSealOverhead);
    ASSERT_EQ(crypto_aead_xchacha20poly1305_ietf_decrypt(opened.data(), nullptr, nullptr,
                                                         sealed->data() + kSealNonceSize,
                                                         sealed->size() - kSealNonceSize, ad.data(),
                                                         ad.size(), sealed->data(), key.data()),
              0);
    EXPECT_EQ(opened, plaintext);
  }
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
  EXPECT_EQ(missing.message(), "alice is not in the roster");
  // A roster whose alice has another sealing key.
  std::vector<Certificate> changed = roster_->all();
  for (Certificate& c : changed) {
    if (c.name == "alice") c.seal_public[0] ^= 1;
  }
  Result<Sealer> mismatched = Sealer::Create(*alice, Roster(changed));
  ASSERT_FALSE(mismatched.ok());
  EXPECT_EQ(mismatched.message(),
            "the roster's seal public key for alice does not match its secret certificate");
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

// ---- The round digest -----------------------------------------------------------------------

// The digest binds the round id and every parameter, so that patients shown different
// parameters refuse each other's keys: any one change gives another digest, and no two of the
// changes below collide.
TEST_F(SealTest, DigestOfChangesWithTheRoundAndEveryParameter) {
  RoundParams p = Params({"alice", "bob", "carol"});
  p.range = 0;
  p.columns = {{"bmi", -15, 800, 1}, {"bp", 40, 200, 0}};
  p.weight = {100, 2};
  const RoundDigest base = DigestOf(TestRound(), p);
  EXPECT_EQ(DigestOf(TestRound(), p), base);

  std::vector<std::pair<std::string, RoundParams>> changed;
  auto change = [&](const std::string& what) -> RoundParams& {
    changed.emplace_back(what, p);
    return changed.back().second;
  };
  change("hospital").hospital = "hospital2";
  change("range").range = 1;
  change("length").length = 3;
  change("column name").columns[0].name = "bmj";
  change("column lower").columns[0].lower = -16;
  change("column upper").columns[1].upper = 201;
  change("column decimals").columns[1].decimals = 1;
  change("column order").columns = {p.columns[1], p.columns[0]};
  change("one column fewer").columns.pop_back();
  change("one column more").columns.push_back({"hr", 0, 300, 0});
  change("weight max").weight.max = 101;
  change("weight decimals").weight.decimals = 1;
  change("threshold").threshold = 2;
  change("participant name").participants[2] = "carl";
  change("participant order").participants = {"bob", "alice", "carol"};
  change("one participant fewer").participants.pop_back();
  change("one participant more").participants.push_back("dave");
  // Length prefixes keep names apart that concatenate alike.
  change("names split otherwise").participants = {"alic", "ebob", "carol"};

  std::set<RoundDigest> seen = {base};
  for (const auto& [what, other] : changed) {
    const RoundDigest d = DigestOf(TestRound(), other);
    EXPECT_NE(d, base) << what;
    EXPECT_TRUE(seen.insert(d).second) << what << " collides with another change";
  }
  for (size_t i = 0; i < kRoundIdSize; ++i) {
    RoundId round = TestRound();
    round[i] ^= 1;
    EXPECT_NE(DigestOf(round, p), base) << "round byte " << i;
  }
}

TEST_F(SealTest, DigestFollowsTheDocumentedConstruction) {
  RoundParams plain = Params({"alice", "bob", "carol"});
  EXPECT_EQ(DigestOf(TestRound(), plain), ReferenceDigest(TestRound(), plain));
  RoundParams columns = plain;
  columns.range = 0;
  columns.columns = {{"bmi", -15, 800, 1}, {"bp", 40, 200, 0}};  // a negative bound
  columns.weight = {100, 2};
  EXPECT_EQ(DigestOf(TestRound(), columns), ReferenceDigest(TestRound(), columns));
}

// ---- Signatures -----------------------------------------------------------------------------

// A party signs with the Ed25519 key of its certificate (RFC 8032: deterministic, so the same
// statement gives the same signature), and every party of the roster verifies it with the
// signer's public sign key; libsodium alone agrees. A signature is the signer's only, on that
// statement only, byte for byte.
TEST_F(SealTest, ASignatureVerifiesAsItsSignersOnItsStatementOnly) {
  const std::vector<uint8_t> statement = Bytes("a statement of p01's");
  const Signature signature = M("p01").Sign(statement);
  EXPECT_EQ(M("p01").Sign(statement), signature);
  EXPECT_TRUE(ReferenceVerify("p01", statement, signature));
  for (const std::string verifier : {"p01", "p02", "p10", "hospital", "alice"})
    EXPECT_TRUE(M(verifier).Verify("p01", statement, signature)) << verifier;
  // Another party's signature, or the signature said to be another party's.
  EXPECT_FALSE(M("p02").Verify("p02", statement, signature));
  EXPECT_FALSE(M("p02").Verify("hospital", statement, signature));
  EXPECT_FALSE(M("p02").Verify("p01", statement, M("p03").Sign(statement)));
  // Another statement: one byte changed, one more or one fewer.
  for (size_t i : {size_t{0}, statement.size() / 2, statement.size() - 1}) {
    std::vector<uint8_t> other = statement;
    other[i] ^= 1;
    EXPECT_FALSE(M("p02").Verify("p01", other, signature)) << i;
  }
  std::vector<uint8_t> longer = statement;
  longer.push_back(0);
  EXPECT_FALSE(M("p02").Verify("p01", longer, signature));
  EXPECT_FALSE(M("p02").Verify("p01", std::vector<uint8_t>(statement.begin(), statement.end() - 1),
                               signature));
  // Any flipped bit of the signature, in either half (R and S).
  for (size_t i : {size_t{0}, size_t{31}, size_t{32}, kSignatureSize - 1}) {
    for (int bit : {0, 7}) {
      Signature flipped = signature;
      flipped[i] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_FALSE(M("p02").Verify("p01", statement, flipped)) << i << ":" << bit;
    }
  }
  // A signature of the wrong size, none, or all zeros.
  EXPECT_FALSE(M("p02").Verify("p01", statement, std::span<const uint8_t>(signature.data(), 63)));
  EXPECT_FALSE(M("p02").Verify("p01", statement, {}));
  EXPECT_FALSE(M("p02").Verify("p01", statement, Signature{}));
}

// Nobody outside the roster signs, and the broker has no sign key: its name verifies nothing.
TEST_F(SealTest, NoSignatureVerifiesForAStrangerOrTheBroker) {
  const std::vector<uint8_t> statement = Bytes("statement");
  const Signature by_alice = S("alice").Sign(statement);
  EXPECT_TRUE(S("bob").Verify("alice", statement, by_alice));
  EXPECT_FALSE(S("bob").Verify("broker", statement, by_alice));
  EXPECT_FALSE(S("bob").Verify("dave", statement, by_alice));
  EXPECT_FALSE(S("bob").Verify("", statement, by_alice));
  // Keys from real files: a party's signature verifies for every other party.
  for (const std::string verifier : {"alice", "bob", "charlie", "hospital"})
    for (const std::string signer : {"alice", "bob", "charlie", "hospital"})
      EXPECT_TRUE(S(verifier).Verify(signer, statement, S(signer).Sign(statement)))
          << signer << " for " << verifier;
}

// Sealer::Create refuses a secret certificate whose sign seed is not that of the roster's sign
// key for it: it would sign what nobody verifies.
TEST_F(SealTest, CreateChecksTheSignSeedAgainstTheRoster) {
  Result<SecretCertificate> alice = LoadSecret(*dir_, "alice");
  ASSERT_TRUE(alice.ok()) << alice.message();
  std::vector<Certificate> changed = roster_->all();
  for (Certificate& c : changed)
    if (c.name == "alice") c.sign_public = roster_->Find("bob")->sign_public;
  EXPECT_EQ(Sealer::Create(*alice, Roster(changed)).message(),
            "the roster's sign public key for alice does not match its secret certificate");
  alice->sign_seed.data()[0] ^= 1;
  EXPECT_EQ(Sealer::Create(*alice, *roster_).message(),
            "the roster's sign public key for alice does not match its secret certificate");
}

// What a patient signs for its round keys is "Keys of a round" byte for byte, and it binds the
// round digest, the owner and both keys: changing any one gives another statement, so a
// signature on one is no signature on the other.
TEST_F(SealTest, AKeysStatementBindsTheDigestTheOwnerAndBothKeys) {
  const RoundParams p = Params({"alice", "bob", "carol"});
  const RoundDigest digest = DigestOf(TestRound(), p);
  const RoundPublicKeys keys = SeededKeys(1)[0];
  const std::vector<uint8_t> statement = KeysStatement(digest, "alice", keys);
  EXPECT_EQ(statement, ReferenceKeysStatement(digest, "alice", keys));
  EXPECT_EQ(statement.size(), 13u + 32 + 1 + 5 + 32 + 32);

  std::vector<std::pair<std::string, std::vector<uint8_t>>> others;
  RoundParams reordered = p;
  reordered.participants = {"bob", "alice", "carol"};
  others.emplace_back("another order of participants",
                      KeysStatement(DigestOf(TestRound(), reordered), "alice", keys));
  RoundParams threshold = p;
  threshold.threshold = 2;
  others.emplace_back("another threshold",
                      KeysStatement(DigestOf(TestRound(), threshold), "alice", keys));
  RoundId round = TestRound();
  round[3] ^= 1;
  others.emplace_back("another round", KeysStatement(DigestOf(round, p), "alice", keys));
  others.emplace_back("another owner", KeysStatement(digest, "bob", keys));
  others.emplace_back("an owner's name extended", KeysStatement(digest, "alicea", keys));
  RoundPublicKeys k = keys;
  k.cpk[0] ^= 1;
  others.emplace_back("cpk", KeysStatement(digest, "alice", k));
  k = keys;
  k.spk[31] ^= 0x80;
  others.emplace_back("spk", KeysStatement(digest, "alice", k));
  k = keys;
  std::swap(k.cpk, k.spk);
  others.emplace_back("cpk and spk swapped", KeysStatement(digest, "alice", k));
  k = keys;
  k.cpk = SeededKeys(2)[1].cpk;
  others.emplace_back("another patient's cpk", KeysStatement(digest, "alice", k));

  const Signature signature = M("alice").Sign(statement);
  EXPECT_TRUE(M("bob").Verify("alice", statement, signature));
  std::vector<std::vector<uint8_t>> seen = {statement};
  for (const auto& [what, other] : others) {
    EXPECT_TRUE(Unseen(seen, other)) << what;
    EXPECT_FALSE(M("bob").Verify("alice", other, signature)) << what;
  }
}

// What a survivor signs to confirm the survivors is "Order of a round" (confirm) byte for byte,
// and it binds the view (every bit of it: U2 and every member's round keys are in the view), the
// signer and U3 bit by bit.
TEST_F(SealTest, AConfirmStatementBindsTheViewTheSignerAndU3) {
  const RoundParams p = Params(Patients(10));
  const Members shared = Set({1, 1, 1, 1, 1, 1, 1, 1, 1, 0});
  const Members masked = Set({1, 1, 1, 1, 1, 1, 1, 0, 1, 0});
  const std::vector<RoundPublicKeys> keys = SeededKeys(10);
  const ViewDigest view = View(TestRound(), p, shared, keys);
  const std::vector<uint8_t> statement = ConfirmStatement(view, "p01", masked);
  EXPECT_EQ(statement, ReferenceConfirmStatement(view, "p01", masked));
  EXPECT_EQ(statement.size(), 16u + 32 + 1 + 3 + 2);
  const Signature signature = M("p01").Sign(statement);
  EXPECT_TRUE(M("p02").Verify("p01", statement, signature));
  EXPECT_TRUE(ReferenceVerify("p01", ReferenceConfirmStatement(view, "p01", masked), signature));
  std::vector<std::vector<uint8_t>> seen = {statement};
  auto other = [&](const std::string& what, const std::vector<uint8_t>& changed) {
    EXPECT_TRUE(Unseen(seen, changed)) << what;
    EXPECT_FALSE(M("p02").Verify("p01", changed, signature)) << what;
  };
  for (size_t i = 0; i < masked.size(); ++i) {
    Members m = masked;
    m[i] = !m[i];
    other("U3 bit " + std::to_string(i), ConfirmStatement(view, "p01", m));
  }
  for (size_t i = 0; i < view.size(); ++i) {
    ViewDigest v = view;
    v[i] ^= static_cast<uint8_t>(1u << (i % 8));
    other("view byte " + std::to_string(i), ConfirmStatement(v, "p01", masked));
  }
  // Real views that differ: another U2, another round key of one member (a fresh run of the same
  // round), another threshold.
  Members s = shared;
  s[9] = true;
  other("another U2", ConfirmStatement(View(TestRound(), p, s, keys), "p01", masked));
  std::vector<RoundPublicKeys> fresh = keys;
  fresh[4].spk = SeededRoundKeys(0x99).pub;
  other("another spk of p05", ConfirmStatement(View(TestRound(), p, shared, fresh), "p01", masked));
  fresh = keys;
  fresh[0].cpk = SeededRoundKeys(0x98).pub;
  other("another cpk of the signer's",
        ConfirmStatement(View(TestRound(), p, shared, fresh), "p01", masked));
  RoundParams threshold = p;
  threshold.threshold += 1;
  other("another threshold",
        ConfirmStatement(View(TestRound(), threshold, shared, keys), "p01", masked));
  other("another signer", ConfirmStatement(view, "p02", masked));
  other("the signer's name extended", ConfirmStatement(view, "p011", masked));
}

// Regression, named after what a review of protocol 3 found, the reflection attack: with tags
// under a pair's key the broker could hand a patient its own confirmation back as a peer's. A
// confirmation is now a signature over a statement naming its signer: u's is no confirmation of
// w's, whether the statement names u or w.
TEST_F(SealTest, ReflectionAttackAConfirmationOfUIsNoConfirmationOfW) {
  const RoundParams p = Params({"alice", "bob", "carol"});
  const ViewDigest view = View(TestRound(), p, Set({1, 1, 1}), SeededKeys(3));
  const Members masked = Set({1, 1, 0});
  const Signature by_alice = M("alice").Sign(ConfirmStatement(view, "alice", masked));
  for (const std::string me : {"alice", "bob"}) {
    EXPECT_TRUE(M(me).Verify("alice", ConfirmStatement(view, "alice", masked), by_alice)) << me;
    EXPECT_FALSE(M(me).Verify("bob", ConfirmStatement(view, "bob", masked), by_alice)) << me;
    EXPECT_FALSE(M(me).Verify("bob", ConfirmStatement(view, "alice", masked), by_alice)) << me;
    EXPECT_FALSE(M(me).Verify("alice", ConfirmStatement(view, "bob", masked), by_alice)) << me;
  }
}

// Regression, named after what the review of protocol 3 found, key compromise impersonation:
// with tags under a pair's key, whoever stole alice's static secrets could tag keys of its own
// as bob's for alice. With signatures, every secret of alice's signs only as alice: alice's own
// Sealer does not take its signature for bob's.
TEST_F(SealTest, KeyCompromiseImpersonationAlicesSecretsDoNotSignAsBob) {
  const RoundDigest digest = DigestOf(TestRound(), Params({"alice", "bob", "carol"}));
  const RoundPublicKeys forged = SeededKeys(3)[2];
  const std::vector<uint8_t> as_bob = KeysStatement(digest, "bob", forged);
  const Signature stolen = M("alice").Sign(as_bob);
  EXPECT_FALSE(M("alice").Verify("bob", as_bob, stolen));
  EXPECT_FALSE(M("carol").Verify("bob", as_bob, stolen));
  EXPECT_FALSE(M("hospital").Verify("bob", as_bob, stolen));
  EXPECT_TRUE(M("alice").Verify("bob", as_bob, M("bob").Sign(as_bob)));
}

// ---- The round's view -----------------------------------------------------------------------

// The view covers what a masked input depends on: the digest, the hospital's and every
// participant's sealing key as the viewer's roster has them, who is in U2 and each member's two
// round keys; not the keys of someone outside U2.
TEST_F(SealTest, RoundViewCoversTheDigestTheSealKeysU2AndEachRoundKey) {
  const RoundParams p = Params(Patients(4));
  const Members shared = Set({1, 1, 0, 1});
  const std::vector<RoundPublicKeys> keys = SeededKeys(4);
  const ViewDigest view = View(TestRound(), p, shared, keys);
  EXPECT_EQ(View(TestRound(), p, shared, keys), view);
  std::set<ViewDigest> seen = {view};
  for (size_t i = 0; i < shared.size(); ++i) {
    Members s = shared;
    s[i] = !s[i];
    EXPECT_TRUE(seen.insert(View(TestRound(), p, s, keys)).second) << "U2 bit " << i;
    if (!shared[i]) continue;
    for (bool cpk : {true, false}) {
      std::vector<RoundPublicKeys> k = keys;
      (cpk ? k[i].cpk : k[i].spk)[5] ^= 1;
      EXPECT_TRUE(seen.insert(View(TestRound(), p, shared, k)).second)
          << (cpk ? "cpk of " : "spk of ") << i;
    }
  }
  // p03 is not in U2: its round keys are not read.
  std::vector<RoundPublicKeys> outsider = keys;
  outsider[2].cpk.fill(7);
  outsider[2].spk.fill(9);
  EXPECT_EQ(View(TestRound(), p, shared, outsider), view);
  RoundParams other = p;
  other.threshold = 4;
  EXPECT_NE(View(TestRound(), other, shared, keys), view);
  // Regression (found trying Tally with rosters that disagree): a patient whose roster holds
  // another key for a peer computes a view that differs, so its masked input fails to open
  // instead of summing to a wrong aggregate.
  for (size_t k = 0; k < 1 + p.participants.size(); ++k) {
    std::vector<PublicKey> seal_keys = SealKeys(p);
    seal_keys[k][0] ^= 1;
    EXPECT_NE(RoundView(DigestOf(TestRound(), p), seal_keys, shared, keys), view) << "key " << k;
  }
}

TEST_F(SealTest, RoundViewFollowsTheDocumentedConstruction) {
  const RoundParams p = Params(Patients(4));
  for (const Members& shared : {Set({1, 1, 1, 1}), Set({1, 0, 1, 1}), Set({0, 1, 1, 0})})
    EXPECT_EQ(View(TestRound(), p, shared, SeededKeys(4)),
              ReferenceView(TestRound(), p, shared, SeededKeys(4)));
}

// Sealer::View is RoundView with the party's own roster, so a patient and the hospital with the
// same roster agree; it names a party of the round its roster lacks, and wants a set and keys
// per participant.
TEST_F(SealTest, SealerViewUsesItsRosterAndAgreesAcrossParties) {
  const RoundParams p = Params(Patients(3));
  const Members shared = Set({1, 1, 1});
  const std::vector<RoundPublicKeys> keys = SeededKeys(3);
  Result<ViewDigest> view = M("p01").View(TestRound(), p, shared, keys);
  ASSERT_TRUE(view.ok()) << view.message();
  EXPECT_EQ(*view, View(TestRound(), p, shared, keys));
  EXPECT_EQ(*M("hospital").View(TestRound(), p, shared, keys), *view);
  EXPECT_EQ(*M("p03").View(TestRound(), p, shared, keys), *view);

  RoundParams stranger = p;
  stranger.participants[1] = "zed";
  EXPECT_EQ(M("p01").View(TestRound(), stranger, shared, keys).message(),
            "zed is not in p01's roster");
  RoundParams other_hospital = p;
  other_hospital.hospital = "hospital2";
  EXPECT_EQ(M("p01").View(TestRound(), other_hospital, shared, keys).message(),
            "hospital2 is not in p01's roster");
  EXPECT_EQ(M("p01").View(TestRound(), p, Set({1, 1}), keys).message(),
            "the view needs the shared set and round keys of every participant");
  EXPECT_EQ(M("p01").View(TestRound(), p, shared, SeededKeys(2)).message(),
            "the view needs the shared set and round keys of every participant");
}

// ---- Keys batches ---------------------------------------------------------------------------

// A keys item as the coordinator builds it: cpk || spk || signature.
BatchItem KeysItem(uint32_t index, const RoundPublicKeys& keys, const Signature& signature) {
  BatchItem item{index, std::vector<uint8_t>(keys.cpk.begin(), keys.cpk.end())};
  item.data.insert(item.data.end(), keys.spk.begin(), keys.spk.end());
  item.data.insert(item.data.end(), signature.begin(), signature.end());
  return item;
}

// A signature that is not one, distinct per participant, for reading batches.
Signature FakeSignature(uint32_t index) {
  Signature s;
  s.fill(static_cast<uint8_t>(0xc0 + index));
  return s;
}

// The hospital's batch holds an item per member of U1, in any order; KeysOf reads each one's
// keys and signature (the caller verifies them) and leaves non-members zero. Anything else is
// refused with one message.
TEST_F(SealTest, KeysOfReadsOneItemPerMemberOfU1ForTheHospital) {
  const std::vector<RoundPublicKeys> keys = SeededKeys(4);
  const Members joined = Set({1, 0, 1, 1});
  auto item = [&keys](uint32_t i) { return KeysItem(i, keys[i], FakeSignature(i)); };
  const Batch batch{TestRound(), BatchKind::kKeys, {item(3), item(0), item(2)}};  // any order
  ASSERT_EQ(batch.items[0].data.size(), kKeysItemSize);
  Result<SignedKeys> read = KeysOf(batch, joined);
  ASSERT_TRUE(read.ok()) << read.message();
  ASSERT_EQ(read->keys.size(), 4u);
  ASSERT_EQ(read->signatures.size(), 4u);
  for (uint32_t i : {0u, 2u, 3u}) {
    EXPECT_EQ(read->keys[i], keys[i]) << i;
    EXPECT_EQ(read->signatures[i], FakeSignature(i)) << i;
  }
  EXPECT_EQ(read->keys[1], RoundPublicKeys{});
  EXPECT_EQ(read->signatures[1], Signature{});

  std::vector<std::pair<std::string, Batch>> refused;
  auto refuse = [&](const std::string& what) -> Batch& {
    refused.emplace_back(what, batch);
    return refused.back().second;
  };
  refuse("a member missing").items.pop_back();
  refuse("a non-member").items.push_back(item(1));
  refuse("a non-member instead of a member").items[2] = item(1);
  refuse("an index beyond the participants").items[2].index = 4;
  refuse("another kind").kind = BatchKind::kShares;
  refuse("a confirmation's kind").kind = BatchKind::kConfirm;
  refuse("an item without its signature").items[1].data.resize(2 * kRoundKeySize);
  refuse("a short item").items[0].data.pop_back();
  refuse("a long item").items[0].data.push_back(0);
  refuse("no items").items.clear();
  for (const auto& [what, b] : refused)
    EXPECT_EQ(KeysOf(b, joined).message(), "the keys batch does not match those who joined")
        << what;
}

// A patient's batch holds an item per other member of U1: not its own, and the refusal says
// so in the patient's words.
TEST_F(SealTest, KeysOfReadsOneItemPerOtherMemberForAPatient) {
  const std::vector<RoundPublicKeys> keys = SeededKeys(4);
  const Members joined = Set({1, 1, 0, 1});
  auto item = [&keys](uint32_t i) { return KeysItem(i, keys[i], FakeSignature(i)); };
  const Batch batch{TestRound(), BatchKind::kKeys, {item(0), item(3)}};  // for participant 1
  Result<SignedKeys> read = KeysOf(batch, joined, 1);
  ASSERT_TRUE(read.ok()) << read.message();
  EXPECT_EQ(read->keys[0], keys[0]);
  EXPECT_EQ(read->keys[3], keys[3]);
  EXPECT_EQ(read->signatures[3], FakeSignature(3));
  EXPECT_EQ(read->keys[1], RoundPublicKeys{});  // its own it knows

  std::vector<std::pair<std::string, Batch>> refused;
  auto refuse = [&](const std::string& what) -> Batch& {
    refused.emplace_back(what, batch);
    return refused.back().second;
  };
  refuse("its own item too").items.push_back(item(1));
  refuse("its own item instead of another's").items[1] = item(1);
  refuse("a member missing").items.pop_back();
  refuse("a non-member instead of a member").items[1] = item(2);
  refuse("an index beyond the participants").items[1].index = 9;
  refuse("another kind").kind = BatchKind::kShares;
  refuse("an item without its signature").items[0].data.resize(2 * kRoundKeySize);
  refuse("a short item").items[1].data.pop_back();
  for (const auto& [what, b] : refused)
    EXPECT_EQ(KeysOf(b, joined, 1).message(),
              "the keys batch is not one for each other patient that joined")
        << what;
  // The hospital's batch (every member) is not a patient's.
  const Batch everyone{TestRound(), BatchKind::kKeys, {item(0), item(1), item(3)}};
  EXPECT_EQ(KeysOf(everyone, joined, 1).message(),
            "the keys batch is not one for each other patient that joined");
  EXPECT_TRUE(KeysOf(everyone, joined).ok());
}

// The batch must hold exactly the members of U1: the same member twice in place of another is
// not that. Off the wire Decode refuses an index given twice; a batch built in-process reaches
// KeysOf as it is, and KeysOf refuses it (before, it counted the items and checked each index
// was a member, so {0, 1, 0} for U1 = {0, 1, 2} left participant 2's keys zero).
TEST_F(SealTest, KeysOfRefusesAMemberGivenTwiceInPlaceOfAnother) {
  const std::vector<RoundPublicKeys> keys = SeededKeys(3);
  auto item = [&keys](uint32_t i) { return KeysItem(i, keys[i], FakeSignature(i)); };
  const Batch twice{TestRound(), BatchKind::kKeys, {item(0), item(1), item(0)}};
  const Batch twice_for_patient{TestRound(), BatchKind::kKeys, {item(0), item(0)}};
  EXPECT_EQ(KeysOf(twice, Set({1, 1, 1})).message(),
            "the keys batch does not match those who joined");
  EXPECT_EQ(KeysOf(twice_for_patient, Set({1, 1, 1}), 1).message(),
            "the keys batch is not one for each other patient that joined");
  // Each given once, the same batches go through.
  EXPECT_TRUE(
      KeysOf(Batch{TestRound(), BatchKind::kKeys, {item(0), item(1), item(2)}}, Set({1, 1, 1}))
          .ok());
  EXPECT_TRUE(
      KeysOf(Batch{TestRound(), BatchKind::kKeys, {item(0), item(2)}}, Set({1, 1, 1}), 1).ok());
}

// No two members of U1 may have the same cpk or spk, and no member cpk = spk: DistinctKeys names
// the two (in participant order) or the one. Keys of participants outside U1 are not read.
TEST_F(SealTest, DistinctKeysNamesTwoMembersWithTheSameRoundKey) {
  const std::vector<std::string> names = {"alice", "bob", "carol", "dave"};
  const std::vector<RoundPublicKeys> keys = SeededKeys(4);
  const Members all = Set({1, 1, 1, 1});
  EXPECT_TRUE(DistinctKeys(keys, all, names).ok());
  auto with = [&keys](const std::function<void(std::vector<RoundPublicKeys>&)>& change) {
    std::vector<RoundPublicKeys> k = keys;
    change(k);
    return k;
  };
  EXPECT_EQ(DistinctKeys(with([](auto& k) { k[3].spk = k[1].spk; }), all, names).message(),
            "the round keys of bob and dave are the same");
  EXPECT_EQ(DistinctKeys(with([](auto& k) { k[1].spk = k[3].spk; }), all, names).message(),
            "the round keys of bob and dave are the same");
  EXPECT_EQ(DistinctKeys(with([](auto& k) { k[2].cpk = k[0].cpk; }), all, names).message(),
            "the round keys of alice and carol are the same");
  // One's cpk is another's spk.
  EXPECT_EQ(DistinctKeys(with([](auto& k) { k[2].cpk = k[1].spk; }), all, names).message(),
            "the round keys of bob and carol are the same");
  EXPECT_EQ(DistinctKeys(with([](auto& k) { k[2].spk = k[2].cpk; }), all, names).message(),
            "the round keys of carol are the same");
  // Outside U1 (dave never joined) a copied key is not looked at.
  EXPECT_TRUE(
      DistinctKeys(with([](auto& k) { k[3].spk = k[1].spk; }), Set({1, 1, 1, 0}), names).ok());
}

// ---- Round keys, shares and mask keys -------------------------------------------------------

TEST_F(SealTest, RoundKeyPairsAreFreshAndMatchTheirPublicKeys) {
  const RoundKeyPair a = RoundKeyPair::Generate(), b = RoundKeyPair::Generate();
  EXPECT_NE(a.pub, b.pub);
  EXPECT_TRUE(MatchesPublicKey(a.secret.data(), a.pub));
  EXPECT_TRUE(MatchesPublicKey(b.secret.data(), b.pub));
  EXPECT_FALSE(MatchesPublicKey(a.secret.data(), b.pub));
  RoundKey flipped = a.pub;
  flipped[17] ^= 4;
  EXPECT_FALSE(MatchesPublicKey(a.secret.data(), flipped));
  RoundKey expected{};
  ASSERT_EQ(crypto_scalarmult_base(expected.data(), a.secret.data()), 0);
  EXPECT_EQ(expected, a.pub);
}

// The share key is the same from both ends of a pair, differs between pairs, and follows
// "Sealed shares"; a peer key of small order is refused.
TEST_F(SealTest, ShareKeyIsTheSameFromBothEndsAndRefusesSmallOrderKeys) {
  const RoundKeyPair a = SeededRoundKeys(0x41), b = SeededRoundKeys(0x42), c = SeededRoundKeys(3);
  std::array<uint8_t, 32> ab{}, ba{}, ac{};
  ASSERT_TRUE(ShareKey(a.secret, b.pub, ab.data()).ok());
  ASSERT_TRUE(ShareKey(b.secret, a.pub, ba.data()).ok());
  ASSERT_TRUE(ShareKey(a.secret, c.pub, ac.data()).ok());
  EXPECT_EQ(ab, ba);
  EXPECT_NE(ab, ac);
  EXPECT_EQ(ab, ReferenceScalarKey(a.secret.data(), b.pub, "tally share v3"));
  for (const RoundKey& bad : SmallOrderKeys()) {
    std::array<uint8_t, 32> out{};
    EXPECT_EQ(ShareKey(a.secret, bad, out.data()).message(), "a round key of small order")
        << Hex(bad);
  }
}

// A sealed share opens only with its pair's key, in its round, from its sender to its
// recipient, unmodified; the associated data is "tally/3 share" || round || from || to.
TEST_F(SealTest, ASealedShareOpensOnlyForItsPairRoundSenderAndRecipient) {
  const RoundKeyPair a = SeededRoundKeys(0x41), b = SeededRoundKeys(0x42), c = SeededRoundKeys(3);
  std::array<uint8_t, 32> key{}, other_key{};
  ASSERT_TRUE(ShareKey(a.secret, b.pub, key.data()).ok());
  ASSERT_TRUE(ShareKey(a.secret, c.pub, other_key.data()).ok());
  std::array<uint8_t, 2 * kShareSize> pair;
  for (size_t i = 0; i < pair.size(); ++i) pair[i] = static_cast<uint8_t>(i * 7);
  const std::vector<uint8_t> sealed = SealShare(key.data(), TestRound(), "alice", "bob", pair);
  ASSERT_EQ(sealed.size(), kSealedShareSize);
  EXPECT_NE(SealShare(key.data(), TestRound(), "alice", "bob", pair), sealed);  // fresh nonce

  std::array<uint8_t, 2 * kShareSize> out{};
  ASSERT_TRUE(OpenShare(key.data(), TestRound(), "alice", "bob", sealed, out).ok());
  EXPECT_EQ(out, pair);

  const std::vector<uint8_t> ad =
      Buf().Add("tally/3 share").Add(TestRound()).Name("alice").Name("bob").bytes();
  std::array<uint8_t, 2 * kShareSize> reference{};
  ASSERT_EQ(crypto_aead_xchacha20poly1305_ietf_decrypt(
                reference.data(), nullptr, nullptr, sealed.data() + kSealNonceSize,
                sealed.size() - kSealNonceSize, ad.data(), ad.size(), sealed.data(), key.data()),
            0);
  EXPECT_EQ(reference, pair);

  RoundId other_round = TestRound();
  other_round[15] ^= 1;
  auto fails = [&](const uint8_t* k, const RoundId& round, std::string_view from,
                   std::string_view to, const std::vector<uint8_t>& s) {
    Status status = OpenShare(k, round, from, to, s, out);
    EXPECT_EQ(status.code(), Status::Code::kUnauthentic);
    return status.message();
  };
  EXPECT_EQ(fails(other_key.data(), TestRound(), "alice", "bob", sealed), "authentication failed");
  EXPECT_EQ(fails(key.data(), other_round, "alice", "bob", sealed), "authentication failed");
  EXPECT_EQ(fails(key.data(), TestRound(), "carol", "bob", sealed), "authentication failed");
  EXPECT_EQ(fails(key.data(), TestRound(), "alice", "carol", sealed), "authentication failed");
  EXPECT_EQ(fails(key.data(), TestRound(), "bob", "alice", sealed), "authentication failed");
  for (size_t i : {size_t{0}, kSealNonceSize, kSealedShareSize - 1}) {
    std::vector<uint8_t> tampered = sealed;
    tampered[i] ^= 1;
    EXPECT_EQ(fails(key.data(), TestRound(), "alice", "bob", tampered), "authentication failed")
        << i;
  }
  std::vector<uint8_t> truncated(sealed.begin(), sealed.end() - 1);
  EXPECT_EQ(OpenShare(key.data(), TestRound(), "alice", "bob", truncated, out).message(),
            "a sealed share of 103 bytes");
}

// The pairwise mask key is the same from both ends and symmetric in the indexes (i, j) of the
// pair, changes with the round digest, the keys and the indexes, follows "Masks", and a peer key
// of small order is refused.
TEST_F(SealTest, PairMaskKeyIsSymmetricPerPairAndDigestAndRefusesSmallOrderKeys) {
  const RoundKeyPair a = SeededRoundKeys(0x61), b = SeededRoundKeys(0x62), c = SeededRoundKeys(3);
  const RoundDigest digest = DigestOf(TestRound(), Params({"alice", "bob", "carol"}));
  std::array<uint8_t, 32> ab{}, ba{}, ba_swapped{}, ac{};
  ASSERT_TRUE(PairMaskKey(a.secret.data(), b.pub, digest, 0, 1, ab.data()).ok());
  ASSERT_TRUE(PairMaskKey(b.secret.data(), a.pub, digest, 1, 0, ba.data()).ok());
  ASSERT_TRUE(PairMaskKey(b.secret.data(), a.pub, digest, 0, 1, ba_swapped.data()).ok());
  ASSERT_TRUE(PairMaskKey(a.secret.data(), c.pub, digest, 0, 1, ac.data()).ok());
  EXPECT_EQ(ab, ba);
  EXPECT_EQ(ab, ba_swapped);
  EXPECT_NE(ab, ac);
  EXPECT_EQ(ab, ReferenceMaskKey(a.secret.data(), b.pub, digest, 0, 1));
  EXPECT_EQ(ab, ReferenceMaskKey(a.secret.data(), b.pub, digest, 1, 0));

  std::set<std::array<uint8_t, 32>> seen = {ab, ac};
  auto differs = [&](const std::string& what, const RoundDigest& d, size_t i, size_t j) {
    std::array<uint8_t, 32> key{};
    ASSERT_TRUE(PairMaskKey(a.secret.data(), b.pub, d, i, j, key.data()).ok()) << what;
    EXPECT_EQ(key, ReferenceMaskKey(a.secret.data(), b.pub, d, static_cast<uint32_t>(i),
                                    static_cast<uint32_t>(j)))
        << what;
    EXPECT_TRUE(seen.insert(key).second) << what;
  };
  differs("another pair of indexes", digest, 0, 2);
  differs("another pair of indexes, sharing none", digest, 2, 3);
  differs("one index beyond a byte", digest, 0, 257);
  differs("one index beyond two bytes", digest, 0, 65537);
  differs("the same index twice", digest, 1, 1);
  for (size_t k : {size_t{0}, size_t{31}}) {
    RoundDigest other = digest;
    other[k] ^= 1;
    differs("digest byte " + std::to_string(k), other, 0, 1);
  }
  differs("another round's digest",
          DigestOf(TestRound(), Params({"alice", "bob", "carol", "dave"})), 0, 1);
  for (const RoundKey& bad : SmallOrderKeys()) {
    std::array<uint8_t, 32> out{};
    EXPECT_EQ(PairMaskKey(a.secret.data(), bad, digest, 0, 1, out.data()).message(),
              "a round key of small order")
        << Hex(bad);
  }
}

// Regression, named after what a review of protocol 3 found, the twin-key attack: with the mask
// key over the DH point and the round only, a corrupt x publishing honest a's spk as its own made
// m_vx = m_va for every v, so the two masks cancelled in v's masked input when v sorts between a
// and x. Now the key binds the indexes of the pair: with the same spk, (v, x) and (v, a) differ.
TEST_F(SealTest, TwinKeyAttackPairMaskKeysWithTheSameSpkDifferByPair) {
  const RoundKeyPair v = SeededRoundKeys(0x71), a = SeededRoundKeys(0x72);
  const RoundKey twin = a.pub;  // x's spk, copied from a
  const RoundDigest digest = DigestOf(TestRound(), Params({"a", "v", "x"}));
  const size_t ia = 0, iv = 1, ix = 2;
  std::array<uint8_t, 32> va{}, vx{};
  ASSERT_TRUE(PairMaskKey(v.secret.data(), a.pub, digest, iv, ia, va.data()).ok());
  ASSERT_TRUE(PairMaskKey(v.secret.data(), twin, digest, iv, ix, vx.data()).ok());
  EXPECT_NE(va, vx);
  // a's side of (v, a) is still v's: the pair's masks still cancel.
  std::array<uint8_t, 32> av{};
  ASSERT_TRUE(PairMaskKey(a.secret.data(), v.pub, digest, ia, iv, av.data()).ok());
  EXPECT_EQ(av, va);
  // The DH points are the same, so a key from the point, a label and the round alone (the old
  // construction, without the indexes) was one for the twins: what the attack used.
  EXPECT_EQ(ReferenceScalarKey(v.secret.data(), a.pub, "tally mask v3"),
            ReferenceScalarKey(v.secret.data(), twin, "tally mask v3"));
}

TEST_F(SealTest, SelfMaskKeyFollowsTheDocumentedConstruction) {
  std::array<uint8_t, 32> b{}, other{}, key{}, other_key{};
  b.fill(0x77);
  other = b;
  other[31] ^= 1;
  SelfMaskKey(b.data(), key.data());
  SelfMaskKey(other.data(), other_key.data());
  EXPECT_EQ(key, Buf().Add(b).Add("tally self v3").Hash());
  EXPECT_NE(key, other_key);
  std::array<uint8_t, 32> again{};
  SelfMaskKey(b.data(), again.data());
  EXPECT_EQ(again, key);
}

// Known answers, so that another implementation can be checked against this one. Seal keypairs
// are crypto_box_seed_keypair over 32 bytes of 0x01 (alice), 0x02 (bob), 0x03 (carol) and 0x04
// (the hospital), sign keypairs crypto_sign_seed_keypair over 32 bytes of 0x81, 0x82, 0x83 and
// 0x84; round keys over 0x40 + i (cpk) and 0x60 + i (spk) for participant i; the round
// id is a0 a1 .. af; the round is alice, bob, carol, range 1000, length 2, threshold 3; U2 is
// everyone and U3 alice and bob; alice confirms over the view with U2 = everyone; the pair mask
// key is alice's (0) with bob (1); b is 32 bytes of 0x77. The values were computed once with this
// implementation (which agrees with the constructions written out above) and are constants here:
// any change to a construction fails here.
TEST_F(SealTest, KnownAnswers) {
  const RoundParams p = Params({"alice", "bob", "carol"});
  const RoundDigest digest = DigestOf(TestRound(), p);
  const std::vector<RoundPublicKeys> keys = SeededKeys(3);
  const Members shared = Set({1, 1, 1}), masked = Set({1, 1, 0});
  EXPECT_EQ(Hex(digest), "6b65549457e21e68f95b1edf7ec00370a9b7f876ced9d9b62bcb55e436ba5e68");
  EXPECT_EQ(Hex(SignKey("alice")),
            "93db9f2ee0f7e39e942fb59441190bf20b9c43cfcc8a051a152499cf392b7a37");
  EXPECT_EQ(Hex(M("alice").Sign(KeysStatement(digest, "alice", keys[0]))),
            "0691e4cfea551b5c8f18aac2003819ce4c0ca7659bff0fcd54a150dc29e0150d"
            "5b3b453c2a4cb1d70420ddf03c072e5a95ac4b0a2e262dd601350934347eec06");
  EXPECT_EQ(Hex(*M("alice").View(TestRound(), p, shared, keys)),
            "3ebce5216600b93bffb73eae621d898e5277653b274e6adb25183cfcb9b93081");
  const ViewDigest view = *M("alice").View(TestRound(), p, shared, keys);
  EXPECT_EQ(Hex(M("alice").Sign(ConfirmStatement(view, "alice", masked))),
            "370a8b5db97fc5338a9a7d89095974142d844cb0bbf4d3274385cea2f7923cb8"
            "4c6e564813cc8f66373f69aa98c454af043735933f4ab91d3a3bb3b46d90f00e");
  EXPECT_EQ(Hex(*M("alice").View(TestRound(), p, masked, keys)),
            "f0120fb8236fc4d01adf55dc1f7f06df8faf2070c8bcb3bd342d88e075188fd9");
  std::array<uint8_t, 32> key{};
  ASSERT_TRUE(ShareKey(SeededRoundKeys(0x40).secret, keys[1].cpk, key.data()).ok());
  EXPECT_EQ(Hex(key), "cd9fa7b59f78d4550557b0e86198c1ba2b12fd9824745ebc6fb28e2f8d939a0f");
  ASSERT_TRUE(
      PairMaskKey(SeededRoundKeys(0x60).secret.data(), keys[1].spk, digest, 0, 1, key.data()).ok());
  EXPECT_EQ(Hex(key), "1ca7c0335ce5b88c812ba4a3e6b27b56d4aca9e736610cba4f4b137e01838b07");
  std::array<uint8_t, 32> b;
  b.fill(0x77);
  SelfMaskKey(b.data(), key.data());
  EXPECT_EQ(Hex(key), "e19c36c413f1509d3d8d31a4791349da6fc97ae4c557f9ab45698e1d0211a4f8");

  RoundParams columns = p;
  columns.range = 0;
  columns.columns = {{"bmi", -15, 800, 1}, {"bp", 40, 200, 0}};
  columns.weight = {100, 0};
  EXPECT_EQ(Hex(DigestOf(TestRound(), columns)),
            "13d05fc71a4d3f4046a5e77a69464a1c80b44e3c3efc31c49889dc9e88b9eadb");

  // The same inputs through the constructions written out above.
  EXPECT_EQ(ReferenceDigest(TestRound(), p), digest);
  EXPECT_EQ(ReferenceDigest(TestRound(), columns), DigestOf(TestRound(), columns));
  EXPECT_EQ(ReferenceKeysStatement(digest, "alice", keys[0]),
            KeysStatement(digest, "alice", keys[0]));
  EXPECT_EQ(ReferenceConfirmStatement(view, "alice", masked),
            ConfirmStatement(view, "alice", masked));
  EXPECT_TRUE(ReferenceVerify("alice", ReferenceKeysStatement(digest, "alice", keys[0]),
                              M("alice").Sign(KeysStatement(digest, "alice", keys[0]))));
  EXPECT_TRUE(ReferenceVerify("alice", ReferenceConfirmStatement(view, "alice", masked),
                              M("alice").Sign(ConfirmStatement(view, "alice", masked))));
  EXPECT_EQ(ReferenceView(TestRound(), p, shared, keys),
            *M("alice").View(TestRound(), p, shared, keys));
  EXPECT_EQ(ReferenceView(TestRound(), p, masked, keys),
            *M("alice").View(TestRound(), p, masked, keys));
  ASSERT_TRUE(ShareKey(SeededRoundKeys(0x40).secret, keys[1].cpk, key.data()).ok());
  EXPECT_EQ(ReferenceScalarKey(SeededRoundKeys(0x40).secret.data(), keys[1].cpk, "tally share v3"),
            key);
  ASSERT_TRUE(
      PairMaskKey(SeededRoundKeys(0x60).secret.data(), keys[1].spk, digest, 0, 1, key.data()).ok());
  EXPECT_EQ(ReferenceMaskKey(SeededRoundKeys(0x60).secret.data(), keys[1].spk, digest, 0, 1), key);
  // The same key from bob's end.
  std::array<uint8_t, 32> from_bob{};
  ASSERT_TRUE(
      PairMaskKey(SeededRoundKeys(0x61).secret.data(), keys[0].spk, digest, 1, 0, from_bob.data())
          .ok());
  EXPECT_EQ(from_bob, key);
}

// ---- Masked inputs, end to end in one process -----------------------------------------------

// Each patient seals its masked input under the view it masked for, and the hospital opens every
// one under its own view of the same round and sums: the exact sum of what was sealed. A hospital
// whose keys batch carries one tampered round key opens none of them.
TEST_F(SealTest, PartialsSealedUnderTheViewOpenAndSumToTheirValues) {
  const size_t n = 10;
  const uint32_t length = 3;
  const RoundParams p = Params(Patients(n), length);
  const Members shared(n, true);
  const std::vector<RoundPublicKeys> keys = SeededKeys(n);
  std::vector<uint64_t> expected(length, 0);
  std::vector<std::vector<uint8_t>> sealed;
  for (size_t i = 0; i < n; ++i) {
    const std::string& me = p.participants[i];
    const std::vector<uint64_t> values = {i * 100, 1000 - i, ~uint64_t{0}};
    for (uint32_t e = 0; e < length; ++e) expected[e] += values[e];
    Result<ViewDigest> view = M(me).View(TestRound(), p, shared, keys);
    ASSERT_TRUE(view.ok()) << view.message();
    Result<std::vector<uint8_t>> s = M(me).Seal(MakeBinding(me, "hospital", *view),
                                                EncodePayload(EnvelopeKind::kPartial, values));
    ASSERT_TRUE(s.ok()) << s.message();
    sealed.push_back(*s);
  }
  const ViewDigest view = *M("hospital").View(TestRound(), p, shared, keys);
  std::vector<uint64_t> sum(length, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& from = p.participants[i];
    Result<std::vector<uint8_t>> opened =
        M("hospital").Open(MakeBinding(from, "hospital", view), sealed[i]);
    ASSERT_TRUE(opened.ok()) << opened.message();
    Result<std::vector<uint64_t>> values = DecodePayload(*opened, EnvelopeKind::kPartial, length);
    ASSERT_TRUE(values.ok()) << values.message();
    for (uint32_t e = 0; e < length; ++e) sum[e] += (*values)[e];
  }
  EXPECT_EQ(sum, expected);

  std::vector<RoundPublicKeys> tampered = keys;
  tampered[4].spk[0] ^= 1;
  const ViewDigest wrong = *M("hospital").View(TestRound(), p, shared, tampered);
  for (size_t i = 0; i < n; ++i) {
    const std::string& from = p.participants[i];
    Result<std::vector<uint8_t>> opened =
        M("hospital").Open(MakeBinding(from, "hospital", wrong), sealed[i]);
    ASSERT_FALSE(opened.ok()) << from;
    EXPECT_EQ(opened.message(), "cannot open partial from " + from + ": authentication failed");
  }
}

// ---- Whole rounds in one process ------------------------------------------------------------

// A round of p01..p10 at T = 7 played by ten PatientRounds and a HospitalRound, with the batches
// the coordinator would send (broker/coordinator.cc SendKeys, SendShares, SendConfirmations) and
// the sets it would publish, checked by CheckSets; no transport, no broker. Each step is a
// method, so that a test can play the broker honestly up to where it lies.
class InProcessRoundTest : public SealTest {
 protected:
  static constexpr size_t kN = 10;
  static constexpr uint32_t kT = 7;
  static constexpr uint32_t kLength = 3;

  void SetUp() override {
    SealTest::SetUp();
    if (HasFatalFailure()) return;
    update_.round = TestRound();
    update_.round[0] = 0x3c;
    update_.phase = Phase::kOpen;
    update_.seq = 1;
    update_.ticket = 1;
    update_.params = Params(Patients(kN), kLength);
    update_.params.threshold = kT;
    update_.deadline_ms = 1000;
    ASSERT_TRUE(CheckRoundParams(update_.params).ok());
    ASSERT_NO_FATAL_FAILURE(JoinAll());
  }

  // The open phase of a run of the round: every patient joins afresh (new round keys) and a new
  // HospitalRound waits; a broker that runs the same round id again starts here.
  void JoinAll() {
    update_.phase = Phase::kOpen;
    ++update_.seq;
    update_.sets = {};
    inputs_.clear();
    patients_.clear();
    share_box_.clear();
    confirmations_.clear();
    partials_.clear();
    unmasks_.clear();
    for (size_t i = 0; i < kN; ++i) {
      inputs_.push_back({i * 100 + 1, 1000 - i, i % 2 == 0 ? 1000u : 0u});
      Result<PatientRound> joined = PatientRound::Join(M(Name(i)), update_, inputs_[i]);
      ASSERT_TRUE(joined.ok()) << joined.message();
      patients_.push_back(std::make_unique<PatientRound>(std::move(joined).value()));
      ASSERT_EQ(patients_.back()->me(), i);
      ASSERT_EQ(patients_.back()->join().round, update_.round);
    }
    hospital_ = std::make_unique<HospitalRound>(M("hospital"), update_.round, update_.params);
  }

  static Members All() { return Members(kN, true); }
  // Everyone but the participants at `out` (0-based).
  static Members AllBut(std::initializer_list<size_t> out) {
    Members m = All();
    for (size_t i : out) m[i] = false;
    return m;
  }
  const std::string& Name(size_t i) const { return update_.params.participants[i]; }

  // Publishes `phase` with the sets as they are now.
  void Advance(Phase phase) {
    update_.phase = phase;
    ++update_.seq;
    Status sets = CheckSets(update_);
    ASSERT_TRUE(sets.ok()) << sets.message();
  }

  // SendKeys: member w gets every other member's cpk || spk || signature, the hospital
  // (nullopt) every member's.
  Batch KeysFor(std::optional<size_t> w) const {
    Batch batch{update_.round, BatchKind::kKeys, {}};
    for (size_t u = 0; u < kN; ++u) {
      if (!update_.sets.joined[u] || u == w) continue;
      const Join& j = patients_[u]->join();
      batch.items.push_back(KeysItem(static_cast<uint32_t>(u), {j.cpk, j.spk}, j.signature));
    }
    return batch;
  }
  // SendShares: member w of U2 gets the share each other member of U2 sealed to it.
  Batch SharesFor(size_t w) const {
    Batch batch{update_.round, BatchKind::kShares, {}};
    for (size_t u = 0; u < kN; ++u)
      if (u != w && update_.sets.shared[u])
        batch.items.push_back({static_cast<uint32_t>(u), share_box_[u][w]});
    return batch;
  }
  // SendConfirmations: member w of U4 gets every other member's confirmation.
  Batch ConfirmationsFor(size_t w) const {
    Batch batch{update_.round, BatchKind::kConfirm, {}};
    for (size_t u = 0; u < kN; ++u)
      if (u != w && update_.sets.confirmed[u])
        batch.items.push_back({static_cast<uint32_t>(u), confirmations_[u]});
    return batch;
  }

  // The share phase over U1 = `joined`; each member of `senders` answers with its shares, one
  // sealed share for each other member of U1.
  void Share(const Members& joined, const Members& senders) {
    update_.sets.joined = joined;
    ASSERT_NO_FATAL_FAILURE(Advance(Phase::kShare));
    share_box_.assign(kN, std::vector<std::vector<uint8_t>>(kN));
    for (size_t u = 0; u < kN; ++u) {
      if (!senders[u]) continue;
      Result<Batch> shares = patients_[u]->Shares(update_, KeysFor(u));
      ASSERT_TRUE(shares.ok()) << Name(u) << ": " << shares.message();
      ASSERT_EQ(shares->kind, BatchKind::kShares);
      ASSERT_EQ(shares->items.size(), CountOf(joined) - 1) << Name(u);
      for (const BatchItem& item : shares->items) {
        ASSERT_TRUE(item.index < kN && joined[item.index] && item.index != u);
        ASSERT_EQ(item.data.size(), kSealedShareSize);
        share_box_[u][item.index] = item.data;
      }
    }
  }
  // The mask phase over U2 = `shared`: the hospital learns its view from its keys batch, and
  // each member of `senders` sends its masked input, which the hospital adds.
  void Mask(const Members& shared, const Members& senders) {
    update_.sets.shared = shared;
    ASSERT_NO_FATAL_FAILURE(Advance(Phase::kMask));
    Status learned = hospital_->Learn(KeysFor(std::nullopt), update_.sets);
    ASSERT_TRUE(learned.ok()) << learned.message();
    for (size_t w = 0; w < kN; ++w) {
      if (!senders[w]) continue;
      Result<Envelope> masked = patients_[w]->Masked(update_, SharesFor(w));
      ASSERT_TRUE(masked.ok()) << Name(w) << ": " << masked.message();
      ASSERT_EQ(masked->kind, EnvelopeKind::kPartial);
      ASSERT_EQ(masked->from, Name(w));
      ASSERT_EQ(masked->to, "hospital");
      EXPECT_EQ(patients_[w]->view(), hospital_->view()) << Name(w);
      partials_.push_back(*masked);
      Status added = hospital_->AddPartial(*masked, w);
      ASSERT_TRUE(added.ok()) << Name(w) << ": " << added.message();
    }
  }
  // After the mask phase with U3 = `masked`: a confirm phase when it differs from U2, where
  // each survivor confirms (one item, its own signature), then the unmask phase.
  void ConfirmAndUnmaskPhase(const Members& masked) {
    update_.sets.masked = masked;
    if (masked != update_.sets.shared) {
      ASSERT_NO_FATAL_FAILURE(Advance(Phase::kConfirm));
      confirmations_.assign(kN, {});
      for (size_t w = 0; w < kN; ++w) {
        if (!masked[w]) continue;
        const Batch confirmation = patients_[w]->Confirmation(update_);
        ASSERT_EQ(confirmation.kind, BatchKind::kConfirm);
        ASSERT_EQ(confirmation.round, update_.round);
        ASSERT_EQ(confirmation.items.size(), 1u);
        ASSERT_EQ(confirmation.items[0].index, w);
        ASSERT_EQ(confirmation.items[0].data.size(), kSignatureSize);
        confirmations_[w] = confirmation.items[0].data;
      }
      update_.sets.confirmed = masked;
    }
    ASSERT_NO_FATAL_FAILURE(Advance(Phase::kUnmask));
  }
  // Each of `senders` (unmaskers) sends its unmask; the hospital keeps the first T.
  void Unmask(const Members& senders) {
    const bool confirmed = !update_.sets.confirmed.empty();
    size_t kept = hospital_->unmasks();
    for (size_t w = 0; w < kN; ++w) {
      if (!senders[w]) continue;
      const Batch confirmations = confirmed ? ConfirmationsFor(w) : Batch{};
      Result<Envelope> unmask =
          sent_.count(w) ? Result<Envelope>(sent_.at(w))
                         : patients_[w]->Unmask(update_, confirmed ? &confirmations : nullptr);
      ASSERT_TRUE(unmask.ok()) << Name(w) << ": " << unmask.message();
      ASSERT_EQ(unmask->kind, EnvelopeKind::kUnmask);
      unmasks_.push_back(*unmask);
      Result<bool> added = hospital_->AddUnmask(*unmask, w, update_.sets);
      ASSERT_TRUE(added.ok()) << Name(w) << ": " << added.message();
      EXPECT_EQ(*added, kept < kT) << Name(w);
      kept += *added ? 1 : 0;
    }
    EXPECT_EQ(hospital_->unmasks(), kept);
  }
  // The sum of the inputs of `members`, mod 2^64.
  std::vector<uint64_t> SumOf(const Members& members) const {
    std::vector<uint64_t> sum(kLength, 0);
    for (size_t i = 0; i < kN; ++i)
      if (members[i])
        for (size_t e = 0; e < kLength; ++e) sum[e] += inputs_[i][e];
    return sum;
  }
  // The hospital's aggregate, which must be ready.
  std::vector<uint64_t> Aggregate() {
    EXPECT_TRUE(hospital_->Ready(update_.sets));
    Result<std::vector<uint64_t>> aggregate = hospital_->Aggregate(update_.sets);
    EXPECT_TRUE(aggregate.ok()) << aggregate.message();
    return aggregate.ok() ? *aggregate : std::vector<uint64_t>{};
  }

  PhaseUpdate update_;
  std::vector<std::vector<uint64_t>> inputs_;
  std::vector<std::unique_ptr<PatientRound>> patients_;
  std::unique_ptr<HospitalRound> hospital_;
  std::map<size_t, Envelope> sent_;  // unmasks a test made itself, sent in their turn by Unmask
  std::vector<std::vector<std::vector<uint8_t>>> share_box_;  // [from][to]
  std::vector<std::vector<uint8_t>> confirmations_;           // per participant
  std::vector<Envelope> partials_, unmasks_;
};

TEST_F(InProcessRoundTest, TenPatientsWithoutADropoutGiveTheExactSum) {
  ASSERT_NO_FATAL_FAILURE(Share(All(), All()));
  ASSERT_NO_FATAL_FAILURE(Mask(All(), All()));
  ASSERT_FALSE(hospital_->Ready(update_.sets));  // U3 is not fixed yet
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(All()));
  EXPECT_EQ(update_.phase, Phase::kUnmask);  // no confirm phase: nobody vanished
  EXPECT_TRUE(update_.sets.confirmed.empty());
  ASSERT_NO_FATAL_FAILURE(Unmask(AllBut({7, 8, 9})));
  EXPECT_TRUE(hospital_->Ready(update_.sets));
  // Unmasks beyond T are checked and not kept.
  ASSERT_NO_FATAL_FAILURE(Unmask(AllBut({0, 1, 2, 3, 4, 5, 6})));
  EXPECT_EQ(hospital_->unmasks(), kT);
  EXPECT_EQ(Aggregate(), SumOf(All()));
  EXPECT_EQ(SumOf(All()), (std::vector<uint64_t>{4510, 9955, 5000}));
}

// p08, p09 and p10 share and then vanish before their masked inputs: the survivors confirm
// U2 and U3, each checks the others' confirmations, and the hospital removes the dropped
// members' pair masks with their rebuilt secrets: the exact sum of the seven survivors.
TEST_F(InProcessRoundTest, ThreeDroppedAfterSharingGiveTheExactSumOfTheSurvivors) {
  const Members survivors = AllBut({7, 8, 9});
  ASSERT_NO_FATAL_FAILURE(Share(All(), All()));
  ASSERT_NO_FATAL_FAILURE(Mask(All(), survivors));
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(survivors));
  EXPECT_EQ(update_.sets.confirmed, survivors);
  ASSERT_NO_FATAL_FAILURE(Unmask(survivors));
  EXPECT_EQ(Aggregate(), SumOf(survivors));
  EXPECT_EQ(SumOf(survivors), (std::vector<uint64_t>{2107, 6979, 4000}));
}

// p08, p09 and p10 join and vanish before sharing: U2 is the other seven, whose masks never
// involved the three, so no confirm phase is needed; the exact sum of the seven.
TEST_F(InProcessRoundTest, ThreeDroppedBeforeSharingGiveTheExactSumOfTheOthers) {
  const Members others = AllBut({7, 8, 9});
  ASSERT_NO_FATAL_FAILURE(Share(All(), others));
  ASSERT_NO_FATAL_FAILURE(Mask(others, others));
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(others));
  EXPECT_TRUE(update_.sets.confirmed.empty());
  ASSERT_NO_FATAL_FAILURE(Unmask(others));
  EXPECT_EQ(Aggregate(), SumOf(others));
}

// Three who never joined are outside U1 from the start: the same exact sum of the seven.
TEST_F(InProcessRoundTest, ThreeWhoNeverJoinedAreLeftOut) {
  const Members joined = AllBut({0, 4, 9});
  ASSERT_NO_FATAL_FAILURE(Share(joined, joined));
  ASSERT_NO_FATAL_FAILURE(Mask(joined, joined));
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(joined));
  ASSERT_NO_FATAL_FAILURE(Unmask(joined));
  EXPECT_EQ(Aggregate(), SumOf(joined));
}

// The broker puts round keys of its own in p05's place in the keys batch: p01 refuses to share
// with it and the hospital refuses to learn its view from it, naming p05; so does a batch where
// p05's item carries another patient's keys and signature, or keys from another round.
TEST_F(InProcessRoundTest, AKeysBatchWhereTheBrokerSubstitutedAPatientsKeysIsRefused) {
  update_.sets.joined = All();
  ASSERT_NO_FATAL_FAILURE(Advance(Phase::kShare));
  const std::string refused = "the keys of p05 are not signed by p05";
  auto find = [](Batch& batch, uint32_t index) -> BatchItem& {
    for (BatchItem& item : batch.items)
      if (item.index == index) return item;
    ADD_FAILURE() << "no item " << index;
    return batch.items.front();
  };
  std::vector<std::pair<std::string, std::function<void(Batch&)>>> lies;
  lies.emplace_back("another cpk", [&](Batch& b) {
    const RoundKey cpk = RoundKeyPair::Generate().pub;
    std::copy(cpk.begin(), cpk.end(), find(b, 4).data.begin());
  });
  lies.emplace_back("another spk", [&](Batch& b) {
    const RoundKey spk = RoundKeyPair::Generate().pub;
    std::copy(spk.begin(), spk.end(), find(b, 4).data.begin() + kRoundKeySize);
  });
  lies.emplace_back("p06's keys and signature",
                    [&](Batch& b) { find(b, 4).data = find(b, 5).data; });
  lies.emplace_back("a flipped signature byte", [&](Batch& b) { find(b, 4).data.back() ^= 1; });
  lies.emplace_back("p05's keys of another round", [&](Batch& b) {
    PhaseUpdate other = update_;
    other.round[15] ^= 1;
    Result<PatientRound> again = PatientRound::Join(M("p05"), other, inputs_[4]);
    ASSERT_TRUE(again.ok());
    const Join& j = again->join();
    find(b, 4).data = KeysItem(4, {j.cpk, j.spk}, j.signature).data;
  });
  for (const auto& [what, lie] : lies) {
    Batch to_p01 = KeysFor(0);
    lie(to_p01);
    Result<Batch> shares = patients_[0]->Shares(update_, to_p01);
    ASSERT_FALSE(shares.ok()) << what;
    EXPECT_EQ(shares.message(), refused) << what;

    Batch to_hospital = KeysFor(std::nullopt);
    lie(to_hospital);
    RoundSets sets = update_.sets;
    sets.shared = All();
    HospitalRound hospital(M("hospital"), update_.round, update_.params);
    EXPECT_EQ(hospital.Learn(to_hospital, sets).message(), refused) << what;
    EXPECT_FALSE(hospital.has_view()) << what;
  }
  // The honest batch still goes through.
  EXPECT_TRUE(patients_[0]->Shares(update_, KeysFor(0)).ok());
}

// The same member twice in place of another (only possible in-process: the decoder refuses an
// index given twice) leaves the other unsigned: refused by the patient and by the hospital.
TEST_F(InProcessRoundTest, AKeysBatchWithAMemberTwiceInPlaceOfAnotherIsRefused) {
  update_.sets.joined = All();
  ASSERT_NO_FATAL_FAILURE(Advance(Phase::kShare));
  auto twice = [](Batch batch) {
    for (BatchItem& item : batch.items)
      if (item.index == 4)
        for (const BatchItem& other : batch.items)
          if (other.index == 5) item = other;
    return batch;
  };
  Result<Batch> shares = patients_[0]->Shares(update_, twice(KeysFor(0)));
  ASSERT_FALSE(shares.ok());
  EXPECT_EQ(shares.message(), "the keys batch is not one for each other patient that joined");
  RoundSets sets = update_.sets;
  sets.shared = All();
  const Status learned = hospital_->Learn(twice(KeysFor(std::nullopt)), sets);
  ASSERT_FALSE(learned.ok());
  EXPECT_EQ(learned.message(), "the keys batch does not match those who joined");
  EXPECT_FALSE(hospital_->has_view());
}

// After a dropout, a survivor reveals the dropped members' mask secrets only with T - 1 other
// survivors' valid confirmations of the same view and U3. Each of these batches leaves p01 with
// five, and it refuses: one confirmation missing; one with a flipped byte; p01's own signature
// under p02's index (reflected); p02's signature over other survivors or another view; p02's given
// twice in place of
// p03's; a confirmation from p08, who dropped, in p02's place. Without a batch it refuses too; with
// the honest one it unmasks.
TEST_F(InProcessRoundTest, AnUnmaskWithFewerThanTMinusOneValidConfirmationsIsRefused) {
  const Members survivors = AllBut({7, 8, 9});
  ASSERT_NO_FATAL_FAILURE(Share(All(), All()));
  ASSERT_NO_FATAL_FAILURE(Mask(All(), survivors));
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(survivors));
  const std::string refused = "only 5 of the survivors confirmed them, the threshold is 7";
  auto item_of = [](Batch& batch, uint32_t index) -> BatchItem& {
    for (BatchItem& item : batch.items)
      if (item.index == index) return item;
    ADD_FAILURE() << "no item " << index;
    return batch.items.front();
  };
  const ViewDigest& view = patients_[1]->view();  // p02's, which is everyone's
  std::vector<std::pair<std::string, Batch>> batches;
  auto lie = [&](const std::string& what) -> Batch& {
    batches.emplace_back(what, ConfirmationsFor(0));
    return batches.back().second;
  };
  {
    Batch& b = lie("one missing");
    b.items.erase(b.items.begin());
  }
  item_of(lie("a flipped byte"), 1).data[10] ^= 0x20;
  item_of(lie("p01's own, reflected as p02's"), 1).data = confirmations_[0];
  {
    const Signature other_sets = M("p02").Sign(ConfirmStatement(view, "p02", AllBut({6, 8, 9})));
    item_of(lie("over other survivors"), 1).data.assign(other_sets.begin(), other_sets.end());
  }
  {
    ViewDigest other_view = view;
    other_view[0] ^= 1;
    const Signature other = M("p02").Sign(ConfirmStatement(other_view, "p02", update_.sets.masked));
    item_of(lie("over another view"), 1).data.assign(other.begin(), other.end());
  }
  {
    // A broker that repeats a survivor's confirmation: it counts once.
    Batch& b = lie("p02's twice, none of p03's");
    item_of(b, 2) = item_of(b, 1);
  }
  {
    const Batch p08 = patients_[7]->Confirmation(update_);  // a valid signature of p08's
    Batch& b = lie("from p08, who dropped");
    std::erase_if(b.items, [](const BatchItem& item) { return item.index == 1; });
    b.items.push_back(p08.items[0]);
  }
  for (const auto& [what, batch] : batches) {
    Result<Envelope> unmask = patients_[0]->Unmask(update_, &batch);
    ASSERT_FALSE(unmask.ok()) << what;
    EXPECT_EQ(unmask.message(), refused) << what;
  }
  EXPECT_EQ(patients_[0]->Unmask(update_, nullptr).message(),
            "the survivors changed and were not confirmed");
  Batch none{update_.round, BatchKind::kConfirm, {}};
  EXPECT_EQ(patients_[0]->Unmask(update_, &none).message(),
            "only 0 of the survivors confirmed them, the threshold is 7");
  // A forged confirmation among six valid ones does not count, and is not needed.
  Batch with_forgery = ConfirmationsFor(0);
  BatchItem forged = patients_[8]->Confirmation(update_).items[0];
  forged.data[0] ^= 1;
  with_forgery.items.push_back(forged);
  Result<Envelope> sent = patients_[0]->Unmask(update_, &with_forgery);
  ASSERT_TRUE(sent.ok()) << sent.message();
  // A patient unmasks once per round: a second call, whatever it is given, is refused.
  EXPECT_EQ(patients_[0]->Unmask(update_, &with_forgery).message(), "the unmask was sent already");
  sent_.emplace(0, *sent);
  // The round still ends with the exact sum.
  ASSERT_NO_FATAL_FAILURE(Unmask(survivors));
  EXPECT_EQ(Aggregate(), SumOf(survivors));
}

// What travels sealed in a round opens only as what it is: a masked input is bound to its kind,
// sender, recipient and the view; an unmask likewise; a hospital whose view of U2 differs opens
// neither.
TEST_F(InProcessRoundTest, ARoundsEnvelopesOpenOnlyAsWhatTheyAre) {
  const Members survivors = AllBut({9});
  ASSERT_NO_FATAL_FAILURE(Share(All(), All()));
  ASSERT_NO_FATAL_FAILURE(Mask(All(), survivors));
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(survivors));
  ASSERT_NO_FATAL_FAILURE(Unmask(AllBut({0, 9})));
  ASSERT_EQ(partials_.size(), 9u);
  ASSERT_EQ(unmasks_.size(), 8u);
  const Envelope partial = partials_[0];  // p01's
  const Envelope unmask = unmasks_[0];    // p02's

  HospitalRound fresh(M("hospital"), update_.round, update_.params);
  ASSERT_TRUE(fresh.Learn(KeysFor(std::nullopt), update_.sets).ok());
  EXPECT_EQ(fresh.view(), hospital_->view());
  Envelope as_unmask = partial;
  as_unmask.kind = EnvelopeKind::kUnmask;
  EXPECT_EQ(fresh.AddUnmask(as_unmask, 0, update_.sets).message(),
            "cannot open unmask from p01: authentication failed");
  Envelope as_partial = unmask;
  as_partial.kind = EnvelopeKind::kPartial;
  EXPECT_EQ(fresh.AddPartial(as_partial, 1).message(),
            "cannot open partial from p02: authentication failed");
  Envelope other_sender = partial;
  other_sender.from = "p03";
  const Status wrong_sender = fresh.AddPartial(other_sender, 2);
  EXPECT_EQ(wrong_sender.code(), Status::Code::kUnauthentic);
  EXPECT_EQ(wrong_sender.message(), "cannot open partial from p03: authentication failed");
  Envelope other_round = unmask;
  other_round.round[15] ^= 1;
  EXPECT_EQ(fresh.AddUnmask(other_round, 1, update_.sets).message(),
            "cannot open unmask from p02: authentication failed");
  // A patient cannot open another's masked input addressed to the hospital.
  EXPECT_EQ(M("p02")
                .Open(Binding{partial.round, partial.kind, "p01", "p02", patients_[1]->view()},
                      partial.sealed)
                .message(),
            "cannot open partial from p01: authentication failed");
  // Under a view where p10 did not share, nothing opens.
  RoundSets other = update_.sets;
  other.shared = survivors;
  HospitalRound other_view(M("hospital"), update_.round, update_.params);
  ASSERT_TRUE(other_view.Learn(KeysFor(std::nullopt), other).ok());
  EXPECT_NE(other_view.view(), hospital_->view());
  EXPECT_EQ(other_view.AddPartial(partial, 0).message(),
            "cannot open partial from p01: authentication failed");
  EXPECT_EQ(other_view.AddUnmask(unmask, 1, update_.sets).message(),
            "cannot open unmask from p02: authentication failed");
  // The true ones open, once for a masked input.
  EXPECT_TRUE(fresh.AddPartial(partial, 0).ok());
  EXPECT_EQ(fresh.AddPartial(partial, 0).message(), "a second masked input from p01");
  Result<bool> kept = fresh.AddUnmask(unmask, 1, update_.sets);
  ASSERT_TRUE(kept.ok()) << kept.message();
  EXPECT_TRUE(*kept);
  // An unmask checked against other sets is for other survivors.
  RoundSets unconfirmed = update_.sets;
  unconfirmed.masked = All();
  EXPECT_EQ(fresh.AddUnmask(unmask, 1, unconfirmed).message(),
            "the unmask of p02 is for other survivors");
  EXPECT_EQ(Aggregate(), SumOf(survivors));
}

// Regression, named after what a review of protocol 3 found, the twin-key attack: a corrupt
// patient's keys item carries an honest patient's round key, signed by the corrupt patient's own
// Ed25519 key (so the signature verifies). Before, with the mask keys over the DH point alone, a
// twin spk made the masks of a member sorting between the two cancel. Every honest member of U1
// (the one copied included) now refuses to share, naming the two in participant order, and the
// hospital refuses to learn its view from the batch; the same for a copied cpk, a cpk copied
// into the spk's place, and a corrupt patient's cpk equal to its spk.
TEST_F(InProcessRoundTest, TwinKeyAttackACorruptPatientCopyingAnHonestRoundKeyIsRefused) {
  update_.sets.joined = All();
  ASSERT_NO_FATAL_FAILURE(Advance(Phase::kShare));
  const RoundDigest digest = DigestOf(update_.round, update_.params);
  struct Twin {
    std::string what;
    size_t corrupt;
    RoundPublicKeys keys;
    std::string refused;
  };
  const Join& p03 = patients_[2]->join();
  const RoundKey fresh = RoundKeyPair::Generate().pub;
  const std::vector<Twin> twins = {
      {"p08 with p03's spk", 7, {fresh, p03.spk}, "the round keys of p03 and p08 are the same"},
      {"p01 with p03's spk", 0, {fresh, p03.spk}, "the round keys of p01 and p03 are the same"},
      {"p08 with p03's cpk", 7, {p03.cpk, fresh}, "the round keys of p03 and p08 are the same"},
      {"p08 with p03's spk as its cpk",
       7,
       {p03.spk, fresh},
       "the round keys of p03 and p08 are the same"},
      {"p08 with its cpk as its spk", 7, {fresh, fresh}, "the round keys of p08 are the same"},
  };
  for (const Twin& twin : twins) {
    SCOPED_TRACE(twin.what);
    // The corrupt patient signs what it publishes with its own key: the signature verifies.
    const std::string& corrupt = Name(twin.corrupt);
    const Signature signature = M(corrupt).Sign(KeysStatement(digest, corrupt, twin.keys));
    ASSERT_TRUE(M("p02").Verify(corrupt, KeysStatement(digest, corrupt, twin.keys), signature));
    auto lie = [&](Batch batch) {
      for (BatchItem& item : batch.items)
        if (item.index == twin.corrupt)
          item = KeysItem(static_cast<uint32_t>(twin.corrupt), twin.keys, signature);
      return batch;
    };
    // Every honest member of U1 refuses: p03 (index 2) sees its own keys in another's item.
    for (size_t u = 0; u < kN; ++u) {
      if (u == twin.corrupt) continue;
      Result<Batch> shares = patients_[u]->Shares(update_, lie(KeysFor(u)));
      ASSERT_FALSE(shares.ok()) << Name(u);
      EXPECT_EQ(shares.message(), twin.refused) << Name(u);
    }
    HospitalRound hospital(M("hospital"), update_.round, update_.params);
    RoundSets sets = update_.sets;
    sets.shared = All();
    EXPECT_EQ(hospital.Learn(lie(KeysFor(std::nullopt)), sets).message(), twin.refused);
    EXPECT_FALSE(hospital.has_view());
  }
  // The honest batches still go through, and the round gives the exact sum.
  ASSERT_NO_FATAL_FAILURE(Share(All(), All()));
  ASSERT_NO_FATAL_FAILURE(Mask(All(), All()));
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(All()));
  ASSERT_NO_FATAL_FAILURE(Unmask(All()));
  EXPECT_EQ(Aggregate(), SumOf(All()));
}

// Regression, named after what a review of protocol 3 found, the replay attack: confirmations
// were signatures over the round digest and the sets, so a broker running the same round id again
// (same parameters, same digest) could replay honest patients' confirmations from an earlier run,
// confirm different honest patients under different sets, and rebuild both b_v and the mask
// secrets of v's partners. A confirmation now binds the signer's view, which holds every member's
// fresh round keys: run 1's confirmations do not count in run 2, alone or mixed with run 2's.
TEST_F(InProcessRoundTest, ConfirmationReplayAcrossRunsDoesNotCount) {
  const Members survivors = AllBut({7, 8, 9});
  // Run 1: p08, p09 and p10 drop after sharing; the survivors confirm, then the broker stops.
  ASSERT_NO_FATAL_FAILURE(Share(All(), All()));
  ASSERT_NO_FATAL_FAILURE(Mask(All(), survivors));
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(survivors));
  const std::vector<std::vector<uint8_t>> run1 = confirmations_;
  const ViewDigest view1 = patients_[0]->view();
  const RoundDigest digest1 = DigestOf(update_.round, update_.params);

  // Run 2 of the same round id: fresh PatientRounds, the same sets.
  ASSERT_NO_FATAL_FAILURE(JoinAll());
  ASSERT_NO_FATAL_FAILURE(Share(All(), All()));
  ASSERT_NO_FATAL_FAILURE(Mask(All(), survivors));
  ASSERT_NO_FATAL_FAILURE(ConfirmAndUnmaskPhase(survivors));
  const ViewDigest view2 = patients_[0]->view();
  EXPECT_EQ(DigestOf(update_.round, update_.params), digest1);  // what the old statement bound
  EXPECT_NE(view2, view1);
  // Run 1's confirmations are genuine, for run 1's view only.
  for (size_t u = 1; u < kT; ++u) {
    EXPECT_TRUE(M("p01").Verify(Name(u), ConfirmStatement(view1, Name(u), survivors), run1[u]))
        << Name(u);
    EXPECT_FALSE(M("p01").Verify(Name(u), ConfirmStatement(view2, Name(u), survivors), run1[u]))
        << Name(u);
  }

  auto replayed = [&](std::initializer_list<size_t> from_run1) {
    Batch batch = ConfirmationsFor(0);
    for (BatchItem& item : batch.items)
      for (size_t u : from_run1)
        if (item.index == u) item.data = run1[u];
    return batch;
  };
  const Batch all_replayed = replayed({1, 2, 3, 4, 5, 6});
  Result<Envelope> unmask = patients_[0]->Unmask(update_, &all_replayed);
  ASSERT_FALSE(unmask.ok());
  EXPECT_EQ(unmask.message(), "only 0 of the survivors confirmed them, the threshold is 7");
  const Batch half_replayed = replayed({4, 5, 6});
  unmask = patients_[0]->Unmask(update_, &half_replayed);
  ASSERT_FALSE(unmask.ok());
  EXPECT_EQ(unmask.message(), "only 3 of the survivors confirmed them, the threshold is 7");
  // Run 1's added to run 2's do not count twice.
  Batch both = ConfirmationsFor(0);
  for (size_t u = 1; u < kT; ++u) both.items.push_back({static_cast<uint32_t>(u), run1[u]});
  Result<Envelope> sent = patients_[0]->Unmask(update_, &both);
  ASSERT_TRUE(sent.ok()) << sent.message();
  sent_.emplace(0, *sent);
  // Run 2 ends with the exact sum.
  ASSERT_NO_FATAL_FAILURE(Unmask(survivors));
  EXPECT_EQ(Aggregate(), SumOf(survivors));
}

// Regression (found porting the replay tests): a caller that went on after a failed step read
// what the step had not filled (Unmask read the shares of a patient whose Shares had failed).
// Each step needs the one before it to have succeeded.
TEST_F(InProcessRoundTest, AStepAfterAFailedOrMissingStepIsRefused) {
  update_.sets.joined = All();
  ASSERT_NO_FATAL_FAILURE(Advance(Phase::kShare));
  PatientRound& p = *patients_[0];
  update_.sets.shared = All();
  EXPECT_EQ(p.Masked(update_, Batch{update_.round, BatchKind::kShares, {}}).message(),
            "a masked input without shares sent before");
  update_.sets.masked = All();
  EXPECT_EQ(p.Unmask(update_, nullptr).message(), "an unmask without a masked input sent before");
  // A keys batch that fails (here: one member missing) leaves the patient before its shares.
  Batch keys = KeysFor(0);
  keys.items.pop_back();
  EXPECT_FALSE(p.Shares(update_, keys).ok());
  EXPECT_EQ(p.Unmask(update_, nullptr).message(), "an unmask without a masked input sent before");
  ASSERT_TRUE(p.Shares(update_, KeysFor(0)).ok());
  EXPECT_EQ(p.Shares(update_, KeysFor(0)).message(), "the shares were sent already");
}

}  // namespace
}  // namespace tally
