// Certificates, roster and guarded secrets: see keys.h.
//
// The certificate text is ZPL (ZeroMQ Property Language, rfc.zeromq.org/spec/4) as czmq's
// zcert writes it: section names at column 0, `key = "value"` lines indented by four spaces.
// pyzmq's zmq.auth.load_certificate does not parse ZPL: it takes any line whose stripped form
// starts with `public-key` or `secret-key`. The sealing keys are therefore named
// `seal-public-key` / `seal-secret-key`, which no such prefix match can mistake for the CURVE
// keys.
#include "keys/keys.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <system_error>
#include <utility>

#include "schema/durable.h"
#include "schema/schema.h"

namespace tally {
namespace {

constexpr size_t kMaxCertificateBytes = 64 * 1024;
constexpr size_t kZ85KeyLength = 40;
constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

// libsodium must be initialised before sodium_malloc or randombytes; sodium_init is
// idempotent and thread-safe, and a function-local static runs it once.
bool SodiumReady() {
  static const bool ready = sodium_init() >= 0;
  return ready;
}

std::optional<Role> ParseRole(std::string_view text) {
  if (text == "patient") return Role::kPatient;
  if (text == "hospital") return Role::kHospital;
  if (text == "broker") return Role::kBroker;
  return std::nullopt;
}

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

std::string ModeText(mode_t mode) {
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "%04o", static_cast<unsigned>(mode & 07777));
  return buffer;
}

// Decodes exactly 40 Z85 characters into 32 bytes at `out`. Strict: every character in the
// alphabet and every 5-character group below 2^32, so each key has one spelling.
bool Z85DecodeInto(std::string_view text, uint8_t* out) {
  if (text.size() != kZ85KeyLength) return false;
  for (size_t group = 0; group < kZ85KeyLength / 5; ++group) {
    uint64_t value = 0;
    for (size_t i = 0; i < 5; ++i) {
      size_t digit = kZ85Alphabet.find(text[group * 5 + i]);
      if (digit == std::string_view::npos) return false;
      value = value * 85 + digit;
    }
    if (value > 0xFFFFFFFFu) return false;
    for (size_t i = 0; i < 4; ++i) out[group * 4 + i] = static_cast<uint8_t>(value >> (24 - 8 * i));
  }
  return true;
}

// Encodes 32 bytes to 40 characters at `out` (no terminator).
void Z85EncodeInto(const uint8_t* bytes, size_t size, char* out) {
  for (size_t group = 0; group < size / 4; ++group) {
    uint32_t value = 0;
    for (size_t i = 0; i < 4; ++i) value = (value << 8) | bytes[group * 4 + i];
    for (size_t i = 5; i-- > 0;) {
      out[group * 5 + i] = kZ85Alphabet[value % 85];
      value /= 85;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ZPL reader. Values are views into the caller's text: nothing secret is copied.

struct Property {
  std::string_view key;
  std::string_view value;
};
struct Section {
  std::string_view name;
  std::vector<Property> properties;
  const std::string_view* Get(std::string_view key) const {
    for (const Property& p : properties) {
      if (p.key == key) return &p.value;
    }
    return nullptr;
  }
};

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '$' || c == '@' || c == '&' || c == '+' || c == '/';
}

// Names we echo in errors. Any other text on a malformed line could be key material (a Z85
// key is made of name characters), so it is never quoted back.
std::string Printable(std::string_view name) {
  for (std::string_view known :
       {"metadata", "curve", "seal", "sign", "name", "role", "seal-public-key", "sign-public-key",
        "public-key", "secret-key", "seal-secret-key", "sign-secret-key"}) {
    if (name == known) return std::string(name);
  }
  return "(unknown name)";
}

std::string_view TrimRight(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}
std::string_view TrimLeft(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

Result<std::vector<Section>> ParseZpl(std::string_view text) {
  if (text.size() > kMaxCertificateBytes) {
    return Status::Error("certificate is larger than " + std::to_string(kMaxCertificateBytes) +
                         " bytes");
  }
  std::vector<Section> sections;
  size_t line_number = 0;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view raw = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    ++line_number;
    const std::string where = "line " + std::to_string(line_number);

    std::string_view line = TrimRight(raw);
    std::string_view body = TrimLeft(line);
    if (body.empty() || body.front() == '#') continue;
    if (line.find('\0') != std::string_view::npos) return Status::Error(where + ": NUL byte");
    const bool indented = body.size() != line.size();

    // Name: the run of key characters at the start of the body.
    size_t name_end = 0;
    while (name_end < body.size() && IsKeyChar(body[name_end])) ++name_end;
    if (name_end == 0) return Status::Error(where + ": expected a name");
    std::string_view name = body.substr(0, name_end);
    std::string_view rest = TrimLeft(body.substr(name_end));

    if (!indented) {
      // A section header: a bare name, optionally followed by a comment.
      if (!rest.empty() && rest.front() != '#') {
        return Status::Error(where + ": expected a section name alone on its line");
      }
      for (const Section& s : sections) {
        if (s.name == name) return Status::Error(where + ": duplicate section " + Printable(name));
      }
      sections.push_back(Section{name, {}});
      continue;
    }

    if (sections.empty()) return Status::Error(where + ": property outside any section");
    if (rest.empty() || rest.front() != '=') {
      return Status::Error(where + ": expected `name = \"value\"`");
    }
    rest = TrimLeft(rest.substr(1));
    std::string_view value;
    if (!rest.empty() && (rest.front() == '"' || rest.front() == '\'')) {
      char quote = rest.front();
      size_t close = rest.find(quote, 1);
      if (close == std::string_view::npos) return Status::Error(where + ": unterminated quote");
      value = rest.substr(1, close - 1);
      rest = TrimLeft(rest.substr(close + 1));
    } else {
      size_t stop = 0;
      while (stop < rest.size() && rest[stop] != ' ' && rest[stop] != '\t' && rest[stop] != '#') {
        ++stop;
      }
      value = rest.substr(0, stop);
      rest = TrimLeft(rest.substr(stop));
    }
    if (!rest.empty() && rest.front() != '#') {
      return Status::Error(where + ": unexpected text after the value of " + Printable(name));
    }
    Section& section = sections.back();
    if (section.Get(name) != nullptr) {
      return Status::Error(where + ": duplicate " + Printable(section.name) + "/" +
                           Printable(name));
    }
    section.properties.push_back(Property{name, value});
  }
  return sections;
}

const Section* FindSection(const std::vector<Section>& sections, std::string_view name) {
  for (const Section& s : sections) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

Result<std::string_view> Require(const std::vector<Section>& sections, std::string_view section,
                                 std::string_view key) {
  const std::string field = std::string(section) + "/" + std::string(key);
  const Section* s = FindSection(sections, section);
  const std::string_view* value = s == nullptr ? nullptr : s->Get(key);
  if (value == nullptr) return Status::Error("missing " + field);
  return *value;
}

Status DecodeField(const std::vector<Section>& sections, std::string_view section,
                   std::string_view key, uint8_t* out) {
  Result<std::string_view> text = Require(sections, section, key);
  if (!text.ok()) return text.status();
  if (!Z85DecodeInto(*text, out)) {
    return Status::Error(std::string(section) + "/" + std::string(key) +
                         " is not a 40-character Z85 key");
  }
  return Status::Ok();
}

Result<Certificate> ParsePublicPart(const std::vector<Section>& sections) {
  Certificate cert;
  Result<std::string_view> name = Require(sections, "metadata", "name");
  if (!name.ok()) return name.status();
  if (!ValidName(*name)) {
    return Status::Error("metadata/name is not a valid party name ([a-z0-9_-]{1,32})");
  }
  cert.name = std::string(*name);
  Result<std::string_view> role = Require(sections, "metadata", "role");
  if (!role.ok()) return role.status();
  std::optional<Role> parsed_role = ParseRole(*role);
  if (!parsed_role) return Status::Error("metadata/role must be patient, hospital or broker");
  cert.role = *parsed_role;
  TALLY_RETURN_IF_ERROR(DecodeField(sections, "curve", "public-key", cert.curve_public.data()));
  const Section* metadata = FindSection(sections, "metadata");
  if (cert.role == Role::kBroker) {
    // The broker routes sealed payloads and must never be able to open one.
    if (metadata->Get("seal-public-key") != nullptr || FindSection(sections, "seal") != nullptr ||
        metadata->Get("sign-public-key") != nullptr || FindSection(sections, "sign") != nullptr)
      return Status::Error(
          "a broker certificate must hold no sealing or signing key (the broker never "
          "opens a payload nor speaks for a party); make the broker's keys with tally-keygen "
          "--broker");
    return cert;
  }
  TALLY_RETURN_IF_ERROR(
      DecodeField(sections, "metadata", "seal-public-key", cert.seal_public.data()));
  // Certificates made before protocol 3 have no signing key: say what to do about it.
  if (metadata->Get("sign-public-key") == nullptr)
    return Status::Error(
        "no metadata/sign-public-key (a certificate from before protocol 3): make new keys "
        "with tally-keygen");
  TALLY_RETURN_IF_ERROR(
      DecodeField(sections, "metadata", "sign-public-key", cert.sign_public.data()));
  return cert;
}

// Checks that `secret` is the X25519 secret key of `stated`.
Status CheckPair(const SecretKey& secret, const PublicKey& stated, std::string_view public_field,
                 std::string_view secret_field) {
  PublicKey derived{};
  if (crypto_scalarmult_base(derived.data(), secret.data()) != 0 ||
      sodium_memcmp(derived.data(), stated.data(), derived.size()) != 0) {
    return Status::Error(std::string(public_field) + " does not match " +
                         std::string(secret_field));
  }
  return Status::Ok();
}

// Checks that `seed` is the Ed25519 seed of `stated`.
Status CheckSignPair(const SecretKey& seed, const PublicKey& stated) {
  PublicKey derived{};
  SecretBytes expanded(crypto_sign_SECRETKEYBYTES);
  if (crypto_sign_seed_keypair(derived.data(), expanded.data(), seed.data()) != 0 ||
      sodium_memcmp(derived.data(), stated.data(), derived.size()) != 0)
    return Status::Error("metadata/sign-public-key does not match sign/sign-secret-key");
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Formatting. The secret text is built in one preallocated string so no reallocation leaves a
// copy behind; the caller wipes it.

constexpr std::string_view kPublicHeader =
    "#   ****  Generated by tally-keygen  ****\n"
    "#   ZeroMQ CURVE Public Certificate\n"
    "#   Exchange securely, or use a secure mechanism to verify the contents\n"
    "#   of this file after exchange.\n"
    "\n";
constexpr std::string_view kSecretHeader =
    "#   ****  Generated by tally-keygen  ****\n"
    "#   ZeroMQ CURVE **Secret** Certificate\n"
    "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
    "\n";

void AppendKey(std::string& out, std::string_view key, const uint8_t* bytes) {
  char z85[kZ85KeyLength];
  Z85EncodeInto(bytes, 32, z85);
  out.append("    ").append(key).append(" = \"").append(z85, sizeof z85).append("\"\n");
  sodium_memzero(z85, sizeof z85);
}

void AppendBody(std::string& out, const Certificate& cert) {
  out.append("metadata\n");
  out.append("    name = \"").append(cert.name).append("\"\n");
  out.append("    role = \"").append(RoleName(cert.role)).append("\"\n");
  if (cert.role != Role::kBroker) {
    AppendKey(out, "seal-public-key", cert.seal_public.data());
    AppendKey(out, "sign-public-key", cert.sign_public.data());
  }
  out.append("curve\n");
  AppendKey(out, "public-key", cert.curve_public.data());
}

// ---------------------------------------------------------------------------------------------
// Files.

// A sodium_malloc'd byte buffer, wiped and freed on destruction.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t size)
      : bytes_(SodiumReady() ? static_cast<char*>(sodium_malloc(size)) : nullptr), size_(size) {}
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  ~GuardedBuffer() {
    if (bytes_ != nullptr) sodium_free(bytes_);  // sodium_free wipes first
  }
  char* data() { return bytes_; }
  size_t size() const { return size_; }

 private:
  char* bytes_;
  size_t size_;
};

// Reads at most kMaxCertificateBytes from an open file into `out` (capacity kMax + 1).
Result<size_t> ReadBounded(int fd, char* out, const std::string& label) {
  size_t used = 0;
  while (used <= kMaxCertificateBytes) {
    ssize_t n = ::read(fd, out + used, kMaxCertificateBytes + 1 - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Error(label + ": cannot read: " + ErrnoText(errno));
    }
    if (n == 0) return used;
    used += static_cast<size_t>(n);
  }
  return Status::Error(label + ": larger than " + std::to_string(kMaxCertificateBytes) + " bytes");
}

// The roster is the broker's allowlist and every node's pinned copy of the broker's key: like
// ssh with its authorized_keys, refuse a folder or file that another user could change.
Status CheckOnlyOwnerWrites(const struct stat& st, const std::string& label, const char* what) {
  if ((st.st_mode & 022) == 0) return Status::Ok();
  return Status::Error(label + ": permissions " + ModeText(st.st_mode) +
                       " let other users change " + what + "; fix with: chmod go-w " + label);
}

Status CheckFolder(const std::filesystem::path& path, mode_t forbidden, const char* what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return Status::Error(path.string() + ": cannot stat: " + ErrnoText(errno));
  if (!S_ISDIR(st.st_mode)) return Status::Error(path.string() + ": not a folder");
  if (forbidden == 022) return CheckOnlyOwnerWrites(st, path.string(), what);
  if ((st.st_mode & forbidden) == 0) return Status::Ok();
  return Status::Error(path.string() + ": permissions " + ModeText(st.st_mode) +
                       " let other users reach " + what + "; fix with: chmod 700 " + path.string());
}

Result<std::string> ReadPublicFile(const std::filesystem::path& path) {
  const std::string label = path.string();
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) return Status::Error(label + ": cannot open: " + ErrnoText(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return Status::Error(label + ": cannot stat: " + ErrnoText(errno));
  TALLY_RETURN_IF_ERROR(CheckOnlyOwnerWrites(st, label, "a roster certificate"));
  std::string text(kMaxCertificateBytes + 1, '\0');
  Result<size_t> size = ReadBounded(fd.get(), text.data(), label);
  if (!size.ok()) return size.status();
  text.resize(*size);
  return text;
}

// Makes `path` a directory with exactly `mode` if it does not exist. An existing directory is
// left as it is, except that a private folder (mode 0700) that group or others can enter is
// refused rather than silently tightened: that folder was set up by someone else, and looser
// permissions may mean its secrets have already been exposed.
Status EnsureDirectory(const std::filesystem::path& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0) {
    if (::chmod(path.c_str(), mode) != 0) {  // mkdir's mode is filtered by the umask
      return Status::Error(path.string() + ": cannot chmod: " + ErrnoText(errno));
    }
    return Status::Ok();
  }
  if (errno != EEXIST) return Status::Error(path.string() + ": cannot create: " + ErrnoText(errno));
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::Error(path.string() + ": cannot stat: " + ErrnoText(errno));
  }
  if (!S_ISDIR(st.st_mode)) return Status::Error(path.string() + ": exists and is not a folder");
  if ((mode & 077) == 0 && (st.st_mode & 077) != 0) {
    return Status::Error(path.string() + ": permissions " + ModeText(st.st_mode) +
                         " are too open; it must be accessible by its owner only (chmod 700)");
  }
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kPatient:
      return "patient";
    case Role::kHospital:
      return "hospital";
    case Role::kBroker:
      return "broker";
  }
  return "unknown";
}

SecretKey::SecretKey() {
  if (!SodiumReady()) {
    std::fputs("tally: libsodium failed to initialise\n", stderr);
    std::abort();
  }
  bytes_ = static_cast<uint8_t*>(sodium_malloc(size()));
  if (bytes_ == nullptr) {
    std::fputs("tally: out of guarded memory for a secret key\n", stderr);
    std::abort();
  }
  sodium_memzero(bytes_, size());
}

SecretKey::SecretKey(SecretKey&& other) noexcept : bytes_(std::exchange(other.bytes_, nullptr)) {}

SecretKey& SecretKey::operator=(SecretKey&& other) noexcept {
  if (this != &other) {
    if (bytes_ != nullptr) sodium_free(bytes_);
    bytes_ = std::exchange(other.bytes_, nullptr);
  }
  return *this;
}

SecretKey::~SecretKey() {
  if (bytes_ != nullptr) sodium_free(bytes_);
}

SecretBytes::SecretBytes(size_t size) : size_(size) {
  if (!SodiumReady()) {
    std::fputs("tally: libsodium failed to initialise\n", stderr);
    std::abort();
  }
  bytes_ = static_cast<uint8_t*>(sodium_malloc(size == 0 ? 1 : size));
  if (bytes_ == nullptr) {
    std::fputs("tally: out of guarded memory for secret keys\n", stderr);
    std::abort();
  }
  sodium_memzero(bytes_, size);
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : bytes_(std::exchange(other.bytes_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    if (bytes_ != nullptr) sodium_free(bytes_);
    bytes_ = std::exchange(other.bytes_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

SecretBytes::~SecretBytes() {
  if (bytes_ != nullptr) sodium_free(bytes_);  // sodium_free wipes before freeing
}

// ---------------------------------------------------------------------------------------------

Roster::Roster(std::vector<Certificate> certs) : certs_(std::move(certs)) {
  std::sort(certs_.begin(), certs_.end(),
            [](const Certificate& a, const Certificate& b) { return a.name < b.name; });
  for (size_t i = 0; i < certs_.size(); ++i) by_curve_key_.emplace(certs_[i].curve_public, i);
  fingerprint_ = ComputeFingerprint();
}

const Certificate* Roster::Find(std::string_view name) const {
  auto it = std::lower_bound(certs_.begin(), certs_.end(), name,
                             [](const Certificate& c, std::string_view n) { return c.name < n; });
  return it != certs_.end() && it->name == name ? &*it : nullptr;
}

const Certificate* Roster::FindByCurveKey(const PublicKey& key) const {
  auto it = by_curve_key_.find(key);
  return it == by_curve_key_.end() ? nullptr : &certs_[it->second];
}

std::vector<std::string> Roster::Names(Role role) const {
  std::vector<std::string> names;
  for (const Certificate& c : certs_) {
    if (c.role == role) names.push_back(c.name);
  }
  return names;  // certs_ is sorted by name
}

// Per certificate, in name order: u8 name length, name, u8 role (0 patient, 1 hospital,
// 2 broker), curve public key (32), seal public key (32), sign public key (32). BLAKE2b-256,
// lowercase hex.
std::string Roster::ComputeFingerprint() const {
  if (sodium_init() < 0) return "";
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, 32);
  for (const Certificate& c : certs_) {
    const uint8_t length = static_cast<uint8_t>(c.name.size());
    const uint8_t role = static_cast<uint8_t>(c.role);
    crypto_generichash_update(&state, &length, 1);
    crypto_generichash_update(&state, reinterpret_cast<const uint8_t*>(c.name.data()),
                              c.name.size());
    crypto_generichash_update(&state, &role, 1);
    crypto_generichash_update(&state, c.curve_public.data(), c.curve_public.size());
    crypto_generichash_update(&state, c.seal_public.data(), c.seal_public.size());
    crypto_generichash_update(&state, c.sign_public.data(), c.sign_public.size());
  }
  uint8_t digest[32];
  crypto_generichash_final(&state, digest, sizeof digest);
  char hex[2 * sizeof digest + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

// ---------------------------------------------------------------------------------------------

std::string Z85Encode(const uint8_t* bytes, size_t size) {
  std::string out(size / 4 * 5, '\0');
  Z85EncodeInto(bytes, size - size % 4, out.data());
  return out;
}

Result<PublicKey> Z85DecodeKey(std::string_view text) {
  PublicKey key{};
  if (!Z85DecodeInto(text, key.data())) return Status::Error("not a 40-character Z85 key");
  return key;
}

Result<Certificate> ParsePublicCertificate(std::string_view text) {
  Result<std::vector<Section>> sections = ParseZpl(text);
  if (!sections.ok()) return sections.status();
  // A secret key in a public certificate means secrets are about to be published.
  if (const Section* curve = FindSection(*sections, "curve");
      curve != nullptr && curve->Get("secret-key") != nullptr) {
    return Status::Error("public certificate holds curve/secret-key");
  }
  for (const char* section : {"seal", "sign"})
    if (FindSection(*sections, section) != nullptr)
      return Status::Error(std::string("public certificate holds a ") + section +
                           " section (secret keys)");
  return ParsePublicPart(*sections);
}

Result<SecretCertificate> ParseSecretCertificate(std::string_view text) {
  Result<std::vector<Section>> sections = ParseZpl(text);
  if (!sections.ok()) return sections.status();
  Result<Certificate> pub = ParsePublicPart(*sections);
  if (!pub.ok()) return pub.status();
  SecretCertificate cert{std::move(pub).value(), SecretKey(), SecretKey(), SecretKey()};
  TALLY_RETURN_IF_ERROR(DecodeField(*sections, "curve", "secret-key", cert.curve_secret.data()));
  TALLY_RETURN_IF_ERROR(
      CheckPair(cert.curve_secret, cert.pub.curve_public, "curve/public-key", "curve/secret-key"));
  if (cert.pub.role == Role::kBroker) return cert;  // no sealing key (ParsePublicPart checked)
  TALLY_RETURN_IF_ERROR(DecodeField(*sections, "seal", "seal-secret-key", cert.seal_secret.data()));
  TALLY_RETURN_IF_ERROR(CheckPair(cert.seal_secret, cert.pub.seal_public,
                                  "metadata/seal-public-key", "seal/seal-secret-key"));
  TALLY_RETURN_IF_ERROR(DecodeField(*sections, "sign", "sign-secret-key", cert.sign_seed.data()));
  TALLY_RETURN_IF_ERROR(CheckSignPair(cert.sign_seed, cert.pub.sign_public));
  return cert;
}

std::string FormatPublicCertificate(const Certificate& cert) {
  std::string out(kPublicHeader);
  AppendBody(out, cert);
  return out;
}

std::string FormatSecretCertificate(const SecretCertificate& cert) {
  std::string out;
  out.reserve(1024);  // one allocation: no reallocation leaves secret text behind
  out.append(kSecretHeader);
  AppendBody(out, cert.pub);
  AppendKey(out, "secret-key", cert.curve_secret.data());
  if (cert.pub.role != Role::kBroker) {
    out.append("seal\n");
    AppendKey(out, "seal-secret-key", cert.seal_secret.data());
    out.append("sign\n");
    AppendKey(out, "sign-secret-key", cert.sign_seed.data());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

Result<Roster> LoadRoster(const std::filesystem::path& dir) {
  const std::filesystem::path folder = dir / "public";
  std::error_code ec;
  std::filesystem::directory_iterator it(folder, ec);
  if (ec) return Status::Error(folder.string() + ": cannot list: " + ec.message());
  TALLY_RETURN_IF_ERROR(CheckFolder(dir, 022, "the key folder"));
  TALLY_RETURN_IF_ERROR(CheckFolder(folder, 022, "the roster"));
  std::vector<std::filesystem::path> files;
  for (const std::filesystem::directory_entry& entry : it) {
    const std::string filename = entry.path().filename().string();
    if (filename.empty() || filename.front() == '.' || entry.path().extension() != ".key") {
      continue;  // not a certificate: temporaries, editor backups, READMEs
    }
    if (!entry.is_regular_file(ec)) continue;
    files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) return Status::Error(folder.string() + ": no certificates (*.key)");

  std::vector<Certificate> certs;
  for (const std::filesystem::path& file : files) {
    const std::string label = file.string();
    Result<std::string> text = ReadPublicFile(file);
    if (!text.ok()) return text.status();
    Result<Certificate> cert = ParsePublicCertificate(*text);
    if (!cert.ok()) return Status::Error(label + ": " + cert.message());
    if (file.stem().string() != cert->name) {
      return Status::Error(label + ": metadata/name \"" + cert->name +
                           "\" does not match the file name");
    }
    for (const Certificate& other : certs) {
      if (other.curve_public == cert->curve_public) {
        return Status::Error(label + ": curve/public-key is also " + other.name + "'s");
      }
      if (cert->role != Role::kBroker && other.role != Role::kBroker &&
          other.seal_public == cert->seal_public) {
        return Status::Error(label + ": metadata/seal-public-key is also " + other.name + "'s");
      }
      if (cert->role != Role::kBroker && other.role != Role::kBroker &&
          other.sign_public == cert->sign_public) {
        return Status::Error(label + ": metadata/sign-public-key is also " + other.name + "'s");
      }
      if (other.role == Role::kBroker && cert->role == Role::kBroker) {
        return Status::Error(label + ": a second broker (" + other.name + " is the broker)");
      }
    }
    certs.push_back(std::move(cert).value());
  }
  // Names are unique: each is its file's name, and file names in one folder are unique.
  return Roster(std::move(certs));
}

Result<SecretCertificate> LoadSecret(const std::filesystem::path& dir, std::string_view name) {
  if (!ValidName(name)) {
    return Status::Error("\"" + std::string(name) + "\" is not a valid party name");
  }
  if (!SodiumReady()) return Status::Error("libsodium failed to initialise");
  const std::filesystem::path path = dir / "private" / (std::string(name) + ".key_secret");
  const std::string label = path.string();
  TALLY_RETURN_IF_ERROR(CheckFolder(dir / "private", 077, "the secret keys"));
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) return Status::Error(label + ": cannot open: " + ErrnoText(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Status::Error(label + ": cannot stat: " + ErrnoText(errno));
  }
  if (!S_ISREG(st.st_mode)) return Status::Error(label + ": not a regular file");
  if ((st.st_mode & 077) != 0) {
    return Status::Error(label + ": permissions " + ModeText(st.st_mode) +
                         " are too open; it must be readable by its owner only (chmod 600)");
  }
  GuardedBuffer text(kMaxCertificateBytes + 1);
  if (text.data() == nullptr) return Status::Error("out of guarded memory");
  Result<size_t> size = ReadBounded(fd.get(), text.data(), label);
  if (!size.ok()) return size.status();
  Result<SecretCertificate> cert = ParseSecretCertificate(std::string_view(text.data(), *size));
  if (!cert.ok()) return Status::Error(label + ": " + cert.message());
  if (cert->pub.name != name) {
    return Status::Error(label + ": metadata/name \"" + cert->pub.name +
                         "\" does not match the file name");
  }
  return cert;
}

Result<SecretCertificate> NewParty(std::string_view name, Role role) {
  SecretCertificate cert{Certificate{std::string(name), role, {}, {}, {}}, SecretKey(), SecretKey(),
                         SecretKey()};
  {
    char z85_public[kZ85KeyLength + 1];
    char z85_secret[kZ85KeyLength + 1];
    const bool made = zmq_curve_keypair(z85_public, z85_secret) == 0;
    const bool decoded =
        made &&
        Z85DecodeInto(std::string_view(z85_public, kZ85KeyLength), cert.pub.curve_public.data()) &&
        Z85DecodeInto(std::string_view(z85_secret, kZ85KeyLength), cert.curve_secret.data());
    sodium_memzero(z85_secret, sizeof z85_secret);
    if (!made) return Status::Error("cannot make a CURVE keypair: " + ErrnoText(errno));
    if (!decoded) return Status::Error("libzmq returned a malformed CURVE keypair");
  }
  if (role != Role::kBroker &&
      crypto_box_keypair(cert.pub.seal_public.data(), cert.seal_secret.data()) != 0) {
    return Status::Error("cannot make a sealing keypair");
  }
  if (role != Role::kBroker) {
    randombytes_buf(cert.sign_seed.data(), SecretKey::size());
    SecretBytes expanded(crypto_sign_SECRETKEYBYTES);
    if (crypto_sign_seed_keypair(cert.pub.sign_public.data(), expanded.data(),
                                 cert.sign_seed.data()) != 0)
      return Status::Error("cannot make a signing keypair");
  }

  return cert;
}

Status GenerateParty(const std::filesystem::path& dir, std::string_view name, Role role,
                     bool force) {
  if (!ValidName(name)) {
    return Status::Error("\"" + std::string(name) +
                         "\" is not a valid party name ([a-z0-9_-]{1,32})");
  }
  if (!SodiumReady()) return Status::Error("libsodium failed to initialise");
  const std::filesystem::path public_dir = dir / "public";
  const std::filesystem::path private_dir = dir / "private";
  const std::filesystem::path secret_path = private_dir / (std::string(name) + ".key_secret");
  const std::filesystem::path public_path = public_dir / (std::string(name) + ".key");

  std::error_code ec;
  if (dir.has_parent_path()) std::filesystem::create_directories(dir.parent_path(), ec);
  if (ec) return Status::Error(dir.string() + ": cannot create: " + ec.message());
  TALLY_RETURN_IF_ERROR(EnsureDirectory(dir, 0755));
  TALLY_RETURN_IF_ERROR(EnsureDirectory(public_dir, 0755));
  TALLY_RETURN_IF_ERROR(EnsureDirectory(private_dir, 0700));
  struct stat st {};
  if (!force && ::lstat(secret_path.c_str(), &st) == 0) {
    return Status::Error(secret_path.string() + " exists; use --force to replace it");
  }

  Result<SecretCertificate> made = NewParty(name, role);
  if (!made.ok()) return made.status();
  const SecretCertificate& cert = *made;
  std::string secret_text = FormatSecretCertificate(cert);
  Status status = WriteFileAtomically(secret_path, AsBytes(secret_text), 0600, force);
  sodium_memzero(secret_text.data(), secret_text.size());
  if (!status.ok()) return status;
  return WriteFileAtomically(public_path, AsBytes(FormatPublicCertificate(cert.pub)), 0644, true);
}

}  // namespace tally
