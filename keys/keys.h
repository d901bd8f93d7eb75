// Tally's keys: certificates on disk (ZeroMQ ZPL certificate format), the roster, secrets.
//
// A party has three keypairs: a CURVE keypair for the transport (node <-> broker), an X25519
// keypair for end-to-end sealing (node <-> node) and an Ed25519 keypair that signs its round keys
// and confirmations (RFC 8032, libsodium's crypto_sign). A key folder holds
//   public/NAME.key          curve/public-key (Z85), metadata name, role, seal-public-key,
//                            sign-public-key
//   private/NAME.key_secret  the same, plus curve/secret-key, seal/seal-secret-key and
//                            sign/sign-secret-key (the Ed25519 seed)
// (mode 0600, folder 0700). The broker's certificates hold no sealing or signing key: it never
// opens a payload nor speaks for a party. The roster is the set of public certificates: the
// broker's allowlist and every node's address book (with the broker's pinned key), so the key
// folder, public/ and every certificate in it must be writable by their owner only, and private/
// reachable by its owner only; loading refuses anything looser, naming the chmod that fixes it (as
// ssh does).
//
// Secrets live in sodium_malloc'd memory (locked where the OS allows), are compared in
// constant time and wiped when dropped. Nothing here logs.
// Thread-compatible.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"

namespace tally {

using PublicKey = std::array<uint8_t, 32>;

enum class Role : uint8_t { kPatient, kHospital, kBroker };
std::string_view RoleName(Role role);  // "patient", "hospital", "broker"

// 32 secret bytes in guarded memory. Move-only; zeroed and freed on destruction.
class SecretKey {
 public:
  SecretKey();  // allocates; all zero
  SecretKey(SecretKey&& other) noexcept;
  SecretKey& operator=(SecretKey&& other) noexcept;
  SecretKey(const SecretKey&) = delete;
  SecretKey& operator=(const SecretKey&) = delete;
  ~SecretKey();

  uint8_t* data() { return bytes_; }
  const uint8_t* data() const { return bytes_; }
  static constexpr size_t size() { return 32; }

 private:
  uint8_t* bytes_ = nullptr;
};

// `size` secret bytes in one guarded allocation, for many keys at once: a SecretKey each costs a
// guarded allocation (four pages, mprotect and mlock) per key, which for a party deriving keys
// with a thousand peers is thousands of system calls. Move-only; zeroed and freed on destruction.
class SecretBytes {
 public:
  explicit SecretBytes(size_t size);  // allocates; all zero
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();

  uint8_t* data() { return bytes_; }
  const uint8_t* data() const { return bytes_; }
  size_t size() const { return size_; }

 private:
  uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
};

struct Certificate {
  std::string name;
  Role role = Role::kPatient;
  PublicKey curve_public{};
  PublicKey seal_public{};  // all zero for the broker, which has none
  PublicKey sign_public{};  // Ed25519; all zero for the broker
};

struct SecretCertificate {
  Certificate pub;
  SecretKey curve_secret;
  SecretKey seal_secret;
  SecretKey sign_seed;  // the Ed25519 secret key's 32-byte seed (crypto_sign_seed_keypair)
};

class Roster {
 public:
  Roster() : fingerprint_(ComputeFingerprint()) {}
  explicit Roster(std::vector<Certificate> certs);  // sorted by name

  const std::vector<Certificate>& all() const { return certs_; }
  const Certificate* Find(std::string_view name) const;
  const Certificate* FindByCurveKey(const PublicKey& key) const;  // O(log n): asked per handshake
  std::vector<std::string> Names(Role role) const;                // sorted
  // BLAKE2b-256 over every certificate's name, role and public keys, in name order; hex.
  // Computed once, with the roster: every node of a process hosting thousands logs it.
  const std::string& Fingerprint() const { return fingerprint_; }

 private:
  std::string ComputeFingerprint() const;
  std::vector<Certificate> certs_;
  std::string fingerprint_;
  std::map<PublicKey, size_t> by_curve_key_;  // index into certs_
};

// Loads DIR/public/*.key. Fails on an unreadable or malformed certificate (naming the file),
// a file name that does not match its metadata name, duplicate keys, an empty roster, or DIR,
// DIR/public or a certificate that group or others can write.
Result<Roster> LoadRoster(const std::filesystem::path& dir);
// Loads DIR/private/NAME.key_secret. Refuses a file group or others can read or write, and a
// DIR/private that group or others can enter.
Result<SecretCertificate> LoadSecret(const std::filesystem::path& dir, std::string_view name);

// NAME's fresh keypairs, in memory (the broker: its CURVE keypair only): CURVE as
// zmq_curve_keypair, sealing as crypto_box_keypair, signing from a random Ed25519 seed.
Result<SecretCertificate> NewParty(std::string_view name, Role role);

// Creates NAME's keypairs (as NewParty) and writes its two files.
// Without `force`, an existing secret file is never overwritten (error). Creates DIR (0755),
// DIR/public (0755) and DIR/private (0700) where missing.
Status GenerateParty(const std::filesystem::path& dir, std::string_view name, Role role,
                     bool force);

// Parsing and formatting of the certificate text, exposed for tests and tools.
Result<Certificate> ParsePublicCertificate(std::string_view text);
Result<SecretCertificate> ParseSecretCertificate(std::string_view text);
std::string FormatPublicCertificate(const Certificate& cert);
std::string FormatSecretCertificate(const SecretCertificate& cert);

std::string Z85Encode(const uint8_t* bytes, size_t size);  // REQUIRES: size % 4 == 0
Result<PublicKey> Z85DecodeKey(std::string_view text);     // 40 characters -> 32 bytes

}  // namespace tally
