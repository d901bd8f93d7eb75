// libFuzzer target: the certificate parser (keys/keys.h ParsePublicCertificate,
// ParseSecretCertificate, Z85DecodeKey) on arbitrary text.
//
// Invariants checked, each a finding if it fails (FUZZ_CHECK aborts, so libFuzzer keeps the
// input): a parsed certificate, formatted and parsed again, is the same certificate (its signing
// key included, the Ed25519 seed of a secret one too); text that parses as a secret certificate
// is refused as a public one (it holds secret keys); a broker's certificate has neither a
// sealing nor a signing key; a decoded Z85 key encodes back to exactly its text (each key has
// one spelling).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "keys/keys.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

bool SamePublic(const tally::Certificate& a, const tally::Certificate& b) {
  return a.name == b.name && a.role == b.role && a.curve_public == b.curve_public &&
         a.seal_public == b.seal_public && a.sign_public == b.sign_public;
}

// The broker's certificate holds no sealing or signing key: both stay all zero.
void CheckKeysOfRole(const tally::Certificate& c) {
  if (c.role != tally::Role::kBroker) return;
  const tally::PublicKey zero{};
  FUZZ_CHECK(c.seal_public == zero);
  FUZZ_CHECK(c.sign_public == zero);
}

bool SameSecret(const tally::SecretKey& a, const tally::SecretKey& b) {
  return std::memcmp(a.data(), b.data(), tally::SecretKey::size()) == 0;
}

void FuzzZ85(std::string_view text) {
  tally::Result<tally::PublicKey> key = tally::Z85DecodeKey(text);
  if (!key.ok()) return;
  FUZZ_CHECK(text.size() == 40);
  FUZZ_CHECK(tally::Z85Encode(key->data(), key->size()) == text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  tally::Result<tally::Certificate> pub = tally::ParsePublicCertificate(text);
  if (pub.ok()) {
    CheckKeysOfRole(*pub);
    tally::Result<tally::Certificate> again =
        tally::ParsePublicCertificate(tally::FormatPublicCertificate(*pub));
    FUZZ_CHECK(again.ok() && SamePublic(*again, *pub));
  }

  tally::Result<tally::SecretCertificate> secret = tally::ParseSecretCertificate(text);
  if (secret.ok()) {
    FUZZ_CHECK(!pub.ok());
    std::string formatted = tally::FormatSecretCertificate(*secret);
    tally::Result<tally::SecretCertificate> again = tally::ParseSecretCertificate(formatted);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(SamePublic(again->pub, secret->pub));
    FUZZ_CHECK(SameSecret(again->curve_secret, secret->curve_secret));
    FUZZ_CHECK(SameSecret(again->seal_secret, secret->seal_secret));
    FUZZ_CHECK(SameSecret(again->sign_seed, secret->sign_seed));
    CheckKeysOfRole(secret->pub);
    // A secret certificate's public half is a valid public certificate.
    tally::Result<tally::Certificate> half =
        tally::ParsePublicCertificate(tally::FormatPublicCertificate(secret->pub));
    FUZZ_CHECK(half.ok() && SamePublic(*half, secret->pub));
  }

  FuzzZ85(text);
  if (size > 40) FuzzZ85(text.substr(0, 40));
  return 0;
}
