// tally-bench (run by tools/bench): warm-round latency, CPU and memory of real processes.
//
// For each configuration (patients N, vector length L, rounds K) it starts a broker on free
// loopback ports, N serving patients, then a hospital with `--rounds K --json`, and timestamps
// each JSON line of the hospital on arrival (steady clock). A warm round's latency is the
// hospital's own `elapsed_ms`: from sending its request to the aggregate in hand. The hospital
// requests round k+1 as soon as round k is done, so arrival(k) - arrival(k-1) is the round's
// period: the latency plus writing the result durably, the ack, the broker's capture fsync
// and the done phase. The first round (connections, first handshakes) is warm-up and not
// counted. CPU is read from /proc for every process after the warm-up and
// after the last round; peak RSS is VmHWM. It also times cold `tally-launch` runs, and
// measures libsodium's throughputs in-process to print each configuration's crypto floor: the
// CPU a round cannot avoid (BENCHMARKS.md gives the formula).
// Single-threaded.
#include <sodium.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "keys/keys.h"
#include "schema/schema.h"
#include "schema/system.h"
#include "schema/text.h"
#include "tools/process.h"

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

using tally::FormatFixed;
using tally::ParseU64;

namespace {

constexpr const char* kUsage =
    "usage: tools/bench [--patients N --length L --rounds K] [--launch-runs R] [--json]\n"
    "                   [--workdir DIR] [--captures-dir DIR] [--no-launch] [--no-floor]\n"
    "\n"
    "Measures warm rounds with real processes on loopback (broker, N serving patients, a\n"
    "hospital running K rounds back to back), cold tally-launch runs, and the crypto floor.\n"
    "Without --patients it runs the default set: 3x1, 30x1, 100x1, 3x1000, 10x1000000.\n"
    "p50/p90/p99: warm-round latency, from the hospital's request to the aggregate in hand\n"
    "(its elapsed_ms); period50: one result to the next, adding the durable write of the\n"
    "result, the ack, the broker's capture fsync and the done phase.\n"
    "  --patients N        one configuration with N patients (2..500)\n"
    "  --length L          vector length (default 1)\n"
    "  --rounds K          rounds, the first being warm-up (default: by size)\n"
    "  --launch-runs R     cold tally-launch runs to time (default 5; 0 skips)\n"
    "  --no-launch         same as --launch-runs 0\n"
    "  --no-floor          skip the in-process crypto throughput measurements\n"
    "  --captures-dir DIR  where the broker writes captures and the hospital its results\n"
    "                      (default WORKDIR/run; e.g. /dev/shm/tally-bench to leave out disk\n"
    "                      fsyncs). Removed after each configuration.\n"
    "  --admission N       instead: how long a broker takes to admit N patients (2..1000)\n"
    "                      connecting at once (2N CURVE handshakes from one process), and\n"
    "                      its CPU and memory for it; 3 runs\n"
    "  --json              one JSON object per line instead of a table\n"
    "  --workdir DIR       keys, inputs and logs (default bench-work)\n"
    "Exit: 0 every configuration ran, 1 one failed, 2 bad usage.\n";

int Usage(const std::string& e) {
  std::cerr << "bench: " << e << "\n" << kUsage;
  return 2;
}

std::string PatientName(size_t k) {  // same names as tally-launch --patients
  return (k < 10 ? "p0" : "p") + std::to_string(k);
}

std::string Joined(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out;
}

double Percentile(std::vector<double> v, double p) {  // nearest rank
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.999999);
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

// --- /proc --------------------------------------------------------------------------------

// CPU seconds of a process: the sum of its threads' run time from /proc/PID/task/*/schedstat
// (nanoseconds) when readable, else utime+stime from /proc/PID/stat (clock ticks, 10 ms).
double CpuSeconds(pid_t pid) {
  const fs::path task = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  double ns = 0;
  bool any = false;
  for (const auto& t : fs::directory_iterator(task, ec)) {
    std::ifstream in(t.path() / "schedstat");
    unsigned long long run = 0;
    if (in >> run) {
      ns += static_cast<double>(run);
      any = true;
    }
  }
  if (any) return ns / 1e9;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(s.substr(close + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {  // field 3 is the state
    if (i == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Peak resident set (VmHWM) in MiB, or 0 when unreadable (e.g. the process has exited).
double PeakRssMiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  return 0;
}

// --- Crypto floor -------------------------------------------------------------------------

double ThreadCpuNow() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// CPU seconds per call of `op`, repeated until at least `budget` seconds of CPU were spent.
template <typename F>
double PerCall(F&& op, double budget = 0.02) {
  op();  // warm the caches and the code
  size_t calls = 0;
  const double start = ThreadCpuNow();
  double spent = 0;
  do {
    op();
    ++calls;
    spent = ThreadCpuNow() - start;
  } while (spent < budget || calls < 3);
  return spent / static_cast<double>(calls);
}

struct Floor {
  size_t payload_bytes = 0;      // P: EncodePayload of L elements (plaintext sealed)
  size_t wire_bytes = 0;         // W: one Envelope frame on the wire
  size_t update_bytes = 0;       // U: one PhaseUpdate frame with the N join nonces (sum, done)
  size_t open_update_bytes = 0;  // U0: the open phase's PhaseUpdate frame, before any nonce
  double seal = 0, open = 0;     // s per call at P
  // s per call: CURVE-like crypto_box_*_afternm at W, U, U0 and C (a join)
  double box_enc_w = 0, box_dec_w = 0, box_enc_u = 0, box_dec_u = 0;
  double box_enc_u0 = 0, box_dec_u0 = 0, box_enc_c = 0, box_dec_c = 0;
  double stream = 0;    // s per call: one mask's ChaCha20-IETF stream of 8L bytes
  double mask_key = 0;  // s per call: one pair's round mask key (keyed BLAKE2b)
  double masks = 0;     // s per round: N(N-1) streams and mask keys
  double total = 0;     // s of CPU per round
};

// The CPU a round cannot avoid with this protocol and these primitives (BENCHMARKS.md):
//   N envelopes (one partial per patient, patient -> broker -> hospital), each sealed once,
//   opened once, CURVE-encrypted and decrypted twice (patient -> broker, broker -> hospital);
//   N+2 small router messages (the request, N joins, the ack), each encrypted once and
//   decrypted once; 3 phase updates (open, sum, done) to N+1 subscribers, each encrypted by the
//   broker per subscriber and decrypted by it, the open one without nonces (U0) and the sum and
//   done ones with the N join nonces (U); and the masks: each patient derives one key per peer
//   (a keyed BLAKE2b over round id and both nonces) and generates that peer's ChaCha20 stream
//   of 8L bytes, N(N-1) of each per round. Seal nonces are drawn inside `seal`.
//   floor = N (seal + open + 2 enc(W) + 2 dec(W)) + (N+2) (enc(C) + dec(C))
//         + (N+1) (enc(U0) + dec(U0) + 2 enc(U) + 2 dec(U)) + N(N-1) (stream(8L) + mask key)
Floor MeasureFloor(size_t n, uint32_t length) {
  Floor f;
  std::vector<uint64_t> values(length, 0);
  std::vector<uint8_t> payload = tally::EncodePayload(tally::EnvelopeKind::kPartial, values);
  f.payload_bytes = payload.size();
  tally::RoundId round{};
  tally::Envelope env{tally::EnvelopeKind::kPartial, round, PatientName(1), "hospital",
                      std::vector<uint8_t>(payload.size() + tally::kSealOverhead)};
  f.wire_bytes = tally::Encode(env).size();
  tally::PhaseUpdate u;
  u.phase = tally::Phase::kOpen;
  for (size_t k = 1; k <= n; ++k) u.params.participants.push_back(PatientName(k));
  u.params.hospital = "hospital";
  u.params.range = 1000;
  u.params.length = length;
  f.open_update_bytes = tally::Encode(u).size();
  u.phase = tally::Phase::kSum;
  u.nonces.assign(n, tally::JoinNonce{});
  f.update_bytes = tally::Encode(u).size();
  const size_t control_bytes = tally::Encode(tally::Join{round, tally::JoinNonce{}}).size();

  std::vector<uint8_t> key(crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
  randombytes_buf(key.data(), key.size());
  const std::vector<uint8_t> ad(40, 7);  // about a binding's size
  std::vector<uint8_t> sealed(tally::kSealNonceSize + payload.size() + tally::kSealTagSize);
  std::vector<uint8_t> opened(payload.size());
  auto seal = [&] {
    unsigned long long len = 0;
    randombytes_buf(sealed.data(), tally::kSealNonceSize);
    crypto_aead_xchacha20poly1305_ietf_encrypt(sealed.data() + tally::kSealNonceSize, &len,
                                               payload.data(), payload.size(), ad.data(), ad.size(),
                                               nullptr, sealed.data(), key.data());
  };
  f.seal = PerCall(seal);
  seal();
  f.open = PerCall([&] {
    unsigned long long len = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(opened.data(), &len, nullptr,
                                                   sealed.data() + tally::kSealNonceSize,
                                                   sealed.size() - tally::kSealNonceSize, ad.data(),
                                                   ad.size(), sealed.data(), key.data()) != 0)
      std::abort();
  });

  // CURVE (libzmq over libsodium) boxes every frame with the precomputed session key.
  unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
  unsigned char k[crypto_box_BEFORENMBYTES], nonce[crypto_box_NONCEBYTES] = {};
  crypto_box_keypair(pk, sk);
  if (crypto_box_beforenm(k, pk, sk) != 0) std::abort();
  auto box = [&](size_t bytes, double& enc, double& dec) {
    std::vector<uint8_t> m(bytes, 1), c(bytes + crypto_box_MACBYTES), back(bytes);
    enc = PerCall([&] { crypto_box_easy_afternm(c.data(), m.data(), m.size(), nonce, k); });
    dec = PerCall([&] {
      if (crypto_box_open_easy_afternm(back.data(), c.data(), c.size(), nonce, k) != 0)
        std::abort();
    });
  };
  box(f.wire_bytes, f.box_enc_w, f.box_dec_w);
  box(f.update_bytes, f.box_enc_u, f.box_dec_u);
  box(f.open_update_bytes, f.box_enc_u0, f.box_dec_u0);
  box(control_bytes, f.box_enc_c, f.box_dec_c);

  // One mask: its key, BLAKE2b-256 keyed with the pair's mask key over round id || nonce ||
  // nonce, then the ChaCha20-IETF stream of 8L bytes (nodes/seal.cc AddMasks).
  unsigned char pair_key[crypto_generichash_KEYBYTES];
  unsigned char stream_key[crypto_stream_chacha20_ietf_KEYBYTES];
  const unsigned char zero_nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  randombytes_buf(pair_key, sizeof pair_key);
  std::vector<uint8_t> key_input(tally::kRoundIdSize + 2 * tally::kJoinNonceSize, 3);
  f.mask_key = PerCall([&] {
    crypto_generichash(stream_key, sizeof stream_key, key_input.data(), key_input.size(), pair_key,
                       sizeof pair_key);
  });
  std::vector<uint8_t> stream(size_t{length} * 8);
  f.stream = PerCall(
      [&] { crypto_stream_chacha20_ietf(stream.data(), stream.size(), zero_nonce, stream_key); });
  sodium_memzero(pair_key, sizeof pair_key);
  sodium_memzero(stream_key, sizeof stream_key);

  const double envelopes = static_cast<double>(n);
  const double pairs = static_cast<double>(n * (n - 1));  // ordered: each patient, each peer
  f.masks = pairs * (f.stream + f.mask_key);
  f.total = envelopes * (f.seal + f.open + 2 * f.box_enc_w + 2 * f.box_dec_w) +
            static_cast<double>(n + 2) * (f.box_enc_c + f.box_dec_c) +
            static_cast<double>(n + 1) *
                (f.box_enc_u0 + f.box_dec_u0 + 2 * f.box_enc_u + 2 * f.box_dec_u) +
            f.masks;
  return f;
}

// --- Warm rounds --------------------------------------------------------------------------

struct Config {
  size_t patients;
  uint32_t length;
  uint32_t rounds;
  double target_ms;  // p50 target; 0 = none
};

struct Measured {
  Config config{};
  bool ok = false;
  std::string error;
  std::vector<double> latency_ms;  // warm rounds: request -> aggregate in hand
  std::vector<double> period_ms;   // warm rounds: one hospital result line to the next
  double cpu_per_round = 0;        // s, all processes
  double cpu_broker = 0, cpu_patients = 0, cpu_hospital = 0;     // s per round
  double rss_broker = 0, rss_patient_max = 0, rss_hospital = 0;  // MiB
  double wall_first_ms = 0;  // the warm-up round, from the hospital's start
  std::optional<Floor> floor;
};

std::vector<double> Cpus(const std::vector<pid_t>& pids) {
  std::vector<double> out;
  for (pid_t p : pids) out.push_back(CpuSeconds(p));
  return out;
}

// Writes each patient's vector input once per length; returns the expected aggregate.
std::vector<uint64_t> Inputs(const fs::path& dir, size_t n, uint32_t length,
                             std::vector<std::vector<uint64_t>>& values) {
  std::vector<uint64_t> expected(length, 0);
  values.assign(n, {});
  for (size_t p = 0; p < n; ++p) {
    values[p].resize(length);
    // Deterministic inputs (the file is reused): value = (p * 7919 + e) % 1001.
    for (uint32_t e = 0; e < length; ++e) {
      values[p][e] = (static_cast<uint64_t>(p) * 7919 + e) % 1001;
      expected[e] += values[p][e];
    }
    if (length == 1) continue;
    fs::path file = dir / (PatientName(p + 1) + ".txt");
    if (fs::exists(file)) continue;
    std::string text;
    text.reserve(size_t{length} * 5);
    for (uint64_t v : values[p]) text += std::to_string(v) + "\n";
    std::ofstream(file) << text;
  }
  return expected;
}

// The hospital's "elapsed_ms" (request -> aggregate in hand), or a negative value.
double ElapsedMs(const std::string& line) {
  auto at = line.find("\"elapsed_ms\": ");
  return at == std::string::npos ? -1 : std::strtod(line.c_str() + at + 14, nullptr);
}

bool AggregateMatches(const std::string& line, const std::vector<uint64_t>& expected) {
  auto at = line.find("\"aggregate\": ");
  if (at == std::string::npos) return false;
  const char* p = line.c_str() + at + 13;
  const bool array = *p == '[';
  if (array) ++p;
  for (size_t i = 0; i < expected.size(); ++i) {
    char* end = nullptr;
    if (std::strtoull(p, &end, 10) != expected[i] || end == p) return false;
    p = end;
    if (array && i + 1 < expected.size()) {
      if (std::strncmp(p, ", ", 2) != 0) return false;
      p += 2;
    }
  }
  return true;
}

Measured RunConfig(const Config& c, const fs::path& bin, const fs::path& work,
                   const fs::path& captures_root) {
  Measured m;
  m.config = c;
  const std::string tag = std::to_string(c.patients) + "x" + std::to_string(c.length);
  const fs::path keys = work / "keys";
  const fs::path logs = work / "logs" / tag;
  const fs::path inputs = work / "inputs" / std::to_string(c.length);
  const fs::path run = captures_root / tag;
  std::error_code ec;
  fs::remove_all(logs, ec);
  fs::remove_all(run, ec);
  fs::create_directories(logs, ec);
  fs::create_directories(inputs, ec);
  fs::create_directories(run / "captures", ec);
  if (ec) {
    m.error = "cannot create folders under " + work.string() + ": " + ec.message();
    return m;
  }
  std::vector<std::string> names;
  for (size_t k = 1; k <= c.patients; ++k) names.push_back(PatientName(k));
  std::vector<std::vector<uint64_t>> values;
  const auto expected = Inputs(inputs, c.patients, c.length, values);

  auto broker =
      tally::Child::Spawn({(bin / "broker/tally-broker").string(), "--keys", keys.string(),
                           "--router", "tcp://127.0.0.1:*", "--phases", "tcp://127.0.0.1:*",
                           "--captures", (run / "captures").string()},
                          logs / "broker.log");
  if (!broker.ok()) {
    m.error = broker.message();
    return m;
  }
  std::string router, phases;
  for (int k = 0; k < 2; ++k) {
    auto line = broker->ReadLine(milliseconds(15000));
    if (!line) break;
    if (line->rfind("router ", 0) == 0) router = line->substr(7);
    if (line->rfind("phases ", 0) == 0) phases = line->substr(7);
  }
  if (router.empty() || phases.empty()) {
    m.error = "the broker did not come up: " + tally::LastLine(logs / "broker.log");
    return m;
  }
  std::vector<tally::Child> patients;
  for (size_t p = 0; p < c.patients; ++p) {
    std::vector<std::string> args = {(bin / "nodes/tally-node").string(),
                                     "--keys",
                                     keys.string(),
                                     "--name",
                                     names[p],
                                     "--router",
                                     router,
                                     "--phases",
                                     phases};
    if (c.length == 1) {
      args.insert(args.end(), {"--value", std::to_string(values[p][0])});
    } else {
      args.insert(args.end(), {"--input", (inputs / (names[p] + ".txt")).string()});
    }
    auto child = tally::Child::Spawn(args, logs / (names[p] + ".log"));
    if (!child.ok()) {
      m.error = child.message();
      return m;
    }
    patients.push_back(std::move(child.value()));
  }
  const auto started = Clock::now();
  auto hospital = tally::Child::Spawn({(bin / "nodes/tally-node").string(),
                                       "--keys",
                                       keys.string(),
                                       "--name",
                                       "hospital",
                                       "--router",
                                       router,
                                       "--phases",
                                       phases,
                                       "--range",
                                       "1000",
                                       "--length",
                                       std::to_string(c.length),
                                       "--participants",
                                       Joined(names),
                                       "--rounds",
                                       std::to_string(c.rounds),
                                       "--json",
                                       "--results",
                                       (run / "results.jsonl").string()},
                                      logs / "hospital.log");
  if (!hospital.ok()) {
    m.error = hospital.message();
    return m;
  }

  std::vector<pid_t> pids = {broker->pid(), hospital->pid()};
  for (auto& p : patients) pids.push_back(p.pid());
  std::vector<Clock::time_point> arrivals;
  std::vector<std::string> lines;
  std::vector<double> cpu_before, cpu_after;
  const auto line_budget = milliseconds(c.length > 100000 ? 120000 : 30000);
  for (uint32_t k = 0; k < c.rounds; ++k) {
    auto line = hospital->ReadLine(line_budget);
    const auto now = Clock::now();
    if (!line) break;
    arrivals.push_back(now);
    lines.push_back(std::move(*line));
    if (k == 0) cpu_before = Cpus(pids);
    if (k + 1 == c.rounds) {
      cpu_after = Cpus(pids);
      m.rss_broker = PeakRssMiB(broker->pid());
      m.rss_hospital = PeakRssMiB(hospital->pid());
      for (auto& p : patients) m.rss_patient_max = std::max(m.rss_patient_max, PeakRssMiB(p.pid()));
    }
  }
  const auto code = hospital->Wait(milliseconds(30000));
  for (auto& p : patients) p.Signal(SIGTERM);
  for (auto& p : patients) p.Stop();
  broker->Stop();
  fs::remove_all(run, ec);  // captures of big rounds are large

  if (arrivals.size() != c.rounds || code.value_or(-1) != 0) {
    std::string why = tally::LastLine(logs / "hospital.log");
    m.error = "round " + std::to_string(arrivals.size() + 1) +
              " failed: " + (why.empty() ? "the hospital exited without a result" : why);
    return m;
  }
  for (const auto& line : lines) {
    if (!AggregateMatches(line, expected)) {
      m.error = "an aggregate does not match the sum of the inputs";
      return m;
    }
  }
  m.wall_first_ms = std::chrono::duration<double, std::milli>(arrivals[0] - started).count();
  for (size_t k = 1; k < arrivals.size(); ++k) {
    m.period_ms.push_back(
        std::chrono::duration<double, std::milli>(arrivals[k] - arrivals[k - 1]).count());
    m.latency_ms.push_back(ElapsedMs(lines[k]));
    if (m.latency_ms.back() < 0) {
      m.error = "a hospital result has no elapsed_ms";
      return m;
    }
  }
  const double warm = static_cast<double>(c.rounds - 1);
  if (warm > 0 && cpu_before.size() == pids.size() && cpu_after.size() == pids.size()) {
    for (size_t i = 0; i < pids.size(); ++i) {
      const double d = (cpu_after[i] - cpu_before[i]) / warm;
      m.cpu_per_round += d;
      (i == 0 ? m.cpu_broker : i == 1 ? m.cpu_hospital : m.cpu_patients) += d;
    }
  }
  m.ok = true;
  return m;
}

// --- Admission ----------------------------------------------------------------------------

struct Admitted {
  bool ok = false;
  std::string error;
  double wall_ms = 0;        // first connect to the last of 2N handshakes
  double broker_cpu_ms = 0;  // the broker's CPU over that time
  double broker_rss_mib = 0;
};

// N patients connect at once, each with its own keys: a DEALER to the router and a SUB to the
// phase channel per patient, all from this process (one ZeroMQ context, 2 I/O threads), as a
// cohort reaching a broker together would. Waits on every socket's handshake event.
Admitted Admit(const fs::path& bin, const fs::path& work, size_t n) {
  Admitted a;
  const fs::path keys = work / "keys";
  const fs::path logs = work / "logs" / ("admission-" + std::to_string(n));
  std::error_code ec;
  fs::remove_all(logs, ec);
  fs::create_directories(logs / "captures", ec);
  auto broker =
      tally::Child::Spawn({(bin / "broker/tally-broker").string(), "--keys", keys.string(),
                           "--router", "tcp://127.0.0.1:*", "--phases", "tcp://127.0.0.1:*",
                           "--captures", (logs / "captures").string()},
                          logs / "broker.log");
  if (!broker.ok()) {
    a.error = broker.message();
    return a;
  }
  std::string router, phases;
  for (int k = 0; k < 2; ++k) {
    auto line = broker->ReadLine(milliseconds(15000));
    if (!line) break;
    if (line->rfind("router ", 0) == 0) router = line->substr(7);
    if (line->rfind("phases ", 0) == 0) phases = line->substr(7);
  }
  if (router.empty() || phases.empty()) {
    a.error = "the broker did not come up: " + tally::LastLine(logs / "broker.log");
    return a;
  }
  auto roster = tally::LoadRoster(keys);
  if (!roster.ok()) {
    a.error = roster.message();
    return a;
  }
  const tally::Certificate* broker_cert = roster->Find("broker");
  std::vector<tally::SecretCertificate> secrets;
  for (size_t k = 1; k <= n; ++k) {
    auto me = tally::LoadSecret(keys, PatientName(k));
    if (!me.ok()) {
      a.error = me.message();
      return a;
    }
    secrets.push_back(std::move(me.value()));
  }
  zmq::context_t ctx(2);
  // Per patient: two sockets, two monitor sockets, and the two that zmq_socket_monitor makes.
  ctx.set(zmq::ctxopt::max_sockets, static_cast<int>(6 * n + 16));
  std::vector<zmq::socket_t> sockets, monitors;
  sockets.reserve(2 * n);
  monitors.reserve(2 * n);
  const double cpu_before = CpuSeconds(broker->pid());
  const auto start = Clock::now();
  try {
    for (size_t k = 0; k < n; ++k) {
      for (int s = 0; s < 2; ++s) {
        zmq::socket_t& sock =
            sockets.emplace_back(ctx, s == 0 ? zmq::socket_type::dealer : zmq::socket_type::sub);
        sock.set(zmq::sockopt::linger, 0);
        sock.set(zmq::sockopt::handshake_ivl, 20000);
        sock.set(zmq::sockopt::curve_serverkey,
                 zmq::const_buffer(broker_cert->curve_public.data(), 32));
        sock.set(zmq::sockopt::curve_publickey,
                 zmq::const_buffer(secrets[k].pub.curve_public.data(), 32));
        sock.set(zmq::sockopt::curve_secretkey,
                 zmq::const_buffer(secrets[k].curve_secret.data(), 32));
        const std::string ep = "inproc://admission-" + std::to_string(2 * k + s);
        if (zmq_socket_monitor(sock.handle(), ep.c_str(), ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0)
          throw zmq::error_t();
        monitors.emplace_back(ctx, zmq::socket_type::pair).connect(ep);
        if (s == 1) sock.set(zmq::sockopt::subscribe, "");
        sock.connect(s == 0 ? router : phases);
      }
    }
    std::vector<zmq::pollitem_t> items;
    for (auto& m : monitors) items.push_back({m.handle(), 0, ZMQ_POLLIN, 0});
    std::vector<bool> done(items.size(), false);
    size_t left = items.size();
    const auto deadline = start + std::chrono::seconds(120);
    while (left > 0 && Clock::now() < deadline) {
      zmq::poll(items.data(), items.size(), milliseconds(1000));
      for (size_t i = 0; i < items.size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        zmq::message_t event, address;
        (void)monitors[i].recv(event);
        if (event.more()) (void)monitors[i].recv(address);
        if (!done[i]) {
          done[i] = true;
          --left;
        }
      }
    }
    if (left > 0) {
      a.error = std::to_string(left) + " of " + std::to_string(items.size()) +
                " handshakes did not complete in 120 s";
      return a;
    }
  } catch (const zmq::error_t& e) {
    a.error = std::string("zmq: ") + e.what();
    return a;
  }
  a.wall_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  a.broker_cpu_ms = (CpuSeconds(broker->pid()) - cpu_before) * 1e3;
  a.broker_rss_mib = PeakRssMiB(broker->pid());
  sockets.clear();
  monitors.clear();
  broker->Stop();
  a.ok = true;
  return a;
}

// --- Cold launch --------------------------------------------------------------------------

struct LaunchRuns {
  std::vector<double> elapsed_ms;  // tally-launch's own figure
  std::vector<double> wall_ms;     // spawn to exit of the tally-launch process
  std::string error;
};

LaunchRuns RunLaunch(const fs::path& bin, const fs::path& work, int runs) {
  LaunchRuns out;
  const fs::path dir = work / "launch";
  for (int i = -1; i < runs; ++i) {  // run -1 makes the keys and is not counted
    std::error_code ec;
    fs::remove_all(dir / "captures", ec);
    fs::remove(dir / "results.jsonl", ec);
    const auto start = Clock::now();
    auto child = tally::Child::Spawn({(bin / "tools/tally-launch").string(), "--json", "--workdir",
                                      dir.string(), "--bin-dir", bin.string()},
                                     work / "launch.log");
    if (!child.ok()) {
      out.error = child.message();
      return out;
    }
    const std::string text = child->ReadAll(milliseconds(60000));
    const auto code = child->Wait(milliseconds(60000));
    const double wall = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    auto at = text.find("\"elapsed_ms\": ");
    if (code.value_or(-1) != 0 || at == std::string::npos) {
      out.error = "tally-launch failed: " + tally::LastLine(work / "launch.log");
      return out;
    }
    if (i < 0) continue;
    out.elapsed_ms.push_back(std::strtod(text.c_str() + at + 14, nullptr));
    out.wall_ms.push_back(wall);
  }
  return out;
}

// --- Reporting ----------------------------------------------------------------------------

std::string Verdict(double value, double target) {
  if (target <= 0) return "-";
  return value <= target ? "met" : "NOT met (x" + FormatFixed(value / target, 1) + ")";
}

void Print(const Measured& m, bool json) {
  const Config& c = m.config;
  const std::string name = std::to_string(c.patients) + "x" + std::to_string(c.length);
  if (!m.ok) {
    if (json)
      std::cout << "{\"config\": \"" << name << "\", \"error\": \"" << m.error << "\"}"
                << std::endl;
    else
      std::cout << name << ": FAILED: " << m.error << std::endl;
    return;
  }
  const double p50 = Percentile(m.latency_ms, 50), p90 = Percentile(m.latency_ms, 90),
               p99 = Percentile(m.latency_ms, 99);
  const double period50 = Percentile(m.period_ms, 50), period90 = Percentile(m.period_ms, 90);
  const double floor = m.floor ? m.floor->total : 0;
  if (json) {
    std::cout << "{\"config\": \"" << name << "\", \"patients\": " << c.patients
              << ", \"length\": " << c.length << ", \"warm_rounds\": " << m.latency_ms.size()
              << ", \"p50_ms\": " << FormatFixed(p50, 3) << ", \"p90_ms\": " << FormatFixed(p90, 3)
              << ", \"p99_ms\": " << FormatFixed(p99, 3)
              << ", \"target_ms\": " << FormatFixed(c.target_ms, 0)
              << ", \"period_p50_ms\": " << FormatFixed(period50, 3)
              << ", \"period_p90_ms\": " << FormatFixed(period90, 3)
              << ", \"first_round_ms\": " << FormatFixed(m.wall_first_ms, 1)
              << ", \"cpu_ms_per_round\": " << FormatFixed(m.cpu_per_round * 1e3, 3)
              << ", \"cpu_ms_broker\": " << FormatFixed(m.cpu_broker * 1e3, 3)
              << ", \"cpu_ms_patients\": " << FormatFixed(m.cpu_patients * 1e3, 3)
              << ", \"cpu_ms_hospital\": " << FormatFixed(m.cpu_hospital * 1e3, 3)
              << ", \"floor_ms\": " << FormatFixed(floor * 1e3, 3)
              << ", \"cpu_over_floor\": " << FormatFixed(floor > 0 ? m.cpu_per_round / floor : 0, 2)
              << ", \"rss_mib_broker\": " << FormatFixed(m.rss_broker, 1)
              << ", \"rss_mib_patient_max\": " << FormatFixed(m.rss_patient_max, 1)
              << ", \"rss_mib_hospital\": " << FormatFixed(m.rss_hospital, 1) << "}" << std::endl;
    return;
  }
  std::printf("%-11s %5zu %9s %9s %9s %8s %-18s %9s %9s %9s %7s %7s %7s %7s\n", name.c_str(),
              m.latency_ms.size(), FormatFixed(p50, 2).c_str(), FormatFixed(p90, 2).c_str(),
              FormatFixed(p99, 2).c_str(), FormatFixed(c.target_ms, 0).c_str(),
              Verdict(p50, c.target_ms).c_str(), FormatFixed(period50, 2).c_str(),
              FormatFixed(m.cpu_per_round * 1e3, 2).c_str(), FormatFixed(floor * 1e3, 3).c_str(),
              floor > 0 ? FormatFixed(m.cpu_per_round / floor, 1).c_str() : "-",
              FormatFixed(m.rss_broker, 1).c_str(), FormatFixed(m.rss_patient_max, 1).c_str(),
              FormatFixed(m.rss_hospital, 1).c_str());
  std::fflush(stdout);
}

void PrintFloor(const Measured& m, bool json) {
  if (!m.floor) return;
  const Floor& f = *m.floor;
  const std::string name =
      std::to_string(m.config.patients) + "x" + std::to_string(m.config.length);
  auto us = [](double s) { return FormatFixed(s * 1e6, 3); };
  if (json) {
    std::cout << "{\"floor\": \"" << name << "\", \"payload_bytes\": " << f.payload_bytes
              << ", \"wire_bytes\": " << f.wire_bytes << ", \"update_bytes\": " << f.update_bytes
              << ", \"seal_us\": " << us(f.seal) << ", \"open_us\": " << us(f.open)
              << ", \"curve_enc_us\": " << us(f.box_enc_w)
              << ", \"curve_dec_us\": " << us(f.box_dec_w)
              << ", \"mask_stream_us\": " << us(f.stream) << ", \"mask_key_us\": " << us(f.mask_key)
              << ", \"masks_ms_per_round\": " << FormatFixed(f.masks * 1e3, 3)
              << ", \"floor_ms\": " << FormatFixed(f.total * 1e3, 3) << "}" << std::endl;
    return;
  }
  std::printf(
      "%-11s P=%zu W=%zu U=%zu  seal %s us  open %s us  curve enc %s / dec %s us  "
      "mask stream %s us + key %s us, masks %s ms/round  floor %s ms/round\n",
      name.c_str(), f.payload_bytes, f.wire_bytes, f.update_bytes, us(f.seal).c_str(),
      us(f.open).c_str(), us(f.box_enc_w).c_str(), us(f.box_dec_w).c_str(), us(f.stream).c_str(),
      us(f.mask_key).c_str(), FormatFixed(f.masks * 1e3, 3).c_str(),
      FormatFixed(f.total * 1e3, 3).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Config> configs;
  uint64_t patients = 0, length = 1, rounds = 0, launch_runs = 5;
  bool json = false, floor = true;
  uint64_t admission = 0;
  fs::path work = "bench-work";
  fs::path captures;
  fs::path bin = fs::canonical("/proc/self/exe").parent_path().parent_path();
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    if (f == "--help" || f == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (f == "--json") {
      json = true;
      continue;
    }
    if (f == "--no-launch") {
      launch_runs = 0;
      continue;
    }
    if (f == "--no-floor") {
      floor = false;
      continue;
    }
    if (i + 1 >= argc) return Usage("missing value for " + f);
    std::string v = argv[++i];
    if (f == "--patients") {
      if (!ParseU64(v, patients) || patients < 2 || patients > 500)
        return Usage("--patients wants 2..500");
    } else if (f == "--length") {
      if (!ParseU64(v, length) || length < 1 || length > tally::kMaxVectorLength)
        return Usage("bad --length " + v);
    } else if (f == "--rounds") {
      if (!ParseU64(v, rounds) || rounds < 2 || rounds > 100000)
        return Usage("--rounds wants 2..100000 (the first is warm-up)");
    } else if (f == "--admission") {
      if (!ParseU64(v, admission) || admission < 2 || admission > tally::kMaxParticipants)
        return Usage("--admission wants 2.." + std::to_string(tally::kMaxParticipants));
    } else if (f == "--launch-runs") {
      if (!ParseU64(v, launch_runs) || launch_runs > 1000) return Usage("bad --launch-runs " + v);
    } else if (f == "--workdir") {
      work = v;
    } else if (f == "--captures-dir") {
      captures = v;
    } else if (f == "--bin-dir") {
      bin = v;
    } else {
      return Usage("unknown option " + f);
    }
  }
  if (patients == 0 && (length != 1 || rounds != 0))
    return Usage("--length and --rounds need --patients");
  if (admission != 0) {
    configs.push_back({admission, 1, 0, 0});  // only for the key folder below
  } else if (patients != 0) {
    if (rounds == 0) rounds = length >= 100000 ? 3 : patients >= 50 ? 21 : 101;
    configs.push_back({patients, static_cast<uint32_t>(length), static_cast<uint32_t>(rounds), 0});
  } else {
    configs = {{3, 1, 201, 1},
               {30, 1, 51, 15},
               {100, 1, 21, 100},
               {3, 1000, 201, 3},
               {10, 1000000, 3, 2000}};
  }
  for (auto& c : configs) {  // targets for the table's configurations, also when asked singly
    if (c.target_ms != 0) continue;
    if (c.length == 1 && c.patients == 3) c.target_ms = 1;
    if (c.length == 1 && c.patients == 30) c.target_ms = 15;
    if (c.length == 1 && c.patients == 100) c.target_ms = 100;
    if (c.length == 1000 && c.patients == 3) c.target_ms = 3;
    if (c.length == 1000000 && c.patients == 10) c.target_ms = 2000;
  }
  if (sodium_init() < 0) return 1;
  std::error_code ec;
  fs::create_directories(work, ec);
  if (ec) return Usage("cannot create " + work.string() + ": " + ec.message());
  work = fs::absolute(work);
  if (captures.empty()) captures = work / "run";
  captures = fs::absolute(captures);

  // One key folder for every configuration: the hospital and as many patients as needed.
  size_t most = 0;
  for (const auto& c : configs) most = std::max(most, c.patients);
  std::vector<std::string> missing;
  for (size_t k = 1; k <= most; ++k)
    if (!fs::exists(work / "keys" / "private" / (PatientName(k) + ".key_secret")))
      missing.push_back(PatientName(k));
  const bool need_hospital = !fs::exists(work / "keys" / "private" / "hospital.key_secret");
  const bool need_broker = !fs::exists(work / "keys" / "private" / "broker.key_secret");
  if (!missing.empty() || need_hospital || need_broker) {
    std::vector<std::string> args = {(bin / "tools/tally-keygen").string(), "--dir",
                                     (work / "keys").string()};
    if (need_broker) args.push_back("--broker");
    if (need_hospital) args.insert(args.end(), {"--hospital", "hospital"});
    if (!missing.empty()) args.insert(args.end(), {"--patients", Joined(missing)});
    auto keygen = tally::Child::Spawn(args, work / "keygen.log");
    if (!keygen.ok()) return Usage(keygen.message());
    keygen->ReadAll(milliseconds(120000));
    if (keygen->Wait(milliseconds(120000)).value_or(-1) != 0) {
      std::cerr << "bench: key generation failed: " << tally::LastLine(work / "keygen.log") << "\n";
      return 1;
    }
  }

  if (admission != 0) {
    // Two sockets per patient here, each with its monitor, and their connections.
    if (auto s = tally::EnsureOpenFileLimit(8 * admission + 64, "--admission"); !s.ok())
      return Usage(s.message());
    bool failed = false;
    for (int run = 0; run < 3; ++run) {
      const Admitted a = Admit(bin, work, admission);
      failed |= !a.ok;
      if (json) {
        std::cout << "{\"admission\": " << admission << ", \"run\": " << run + 1;
        if (a.ok)
          std::cout << ", \"handshakes\": " << 2 * admission
                    << ", \"wall_ms\": " << FormatFixed(a.wall_ms, 1)
                    << ", \"broker_cpu_ms\": " << FormatFixed(a.broker_cpu_ms, 1)
                    << ", \"broker_rss_mib\": " << FormatFixed(a.broker_rss_mib, 1);
        else
          std::cout << ", \"error\": " << tally::JsonString(a.error);
        std::cout << "}" << std::endl;
      } else if (a.ok) {
        std::printf(
            "admission of %llu patients (%llu handshakes), run %d: %s ms; broker CPU %s ms, "
            "peak RSS %s MiB\n",
            static_cast<unsigned long long>(admission),
            static_cast<unsigned long long>(2 * admission), run + 1,
            FormatFixed(a.wall_ms, 1).c_str(), FormatFixed(a.broker_cpu_ms, 1).c_str(),
            FormatFixed(a.broker_rss_mib, 1).c_str());
      } else {
        std::printf("admission of %llu patients, run %d: FAILED: %s\n",
                    static_cast<unsigned long long>(admission), run + 1, a.error.c_str());
      }
    }
    return failed ? 1 : 0;
  }
  if (!json) {
    std::printf("%-11s %5s %9s %9s %9s %8s %-18s %9s %9s %9s %7s %7s %7s %7s\n", "config", "warm",
                "p50_ms", "p90_ms", "p99_ms", "target", "verdict(p50)", "period50", "cpu_ms/r",
                "floor_ms", "cpu/flr", "rss_brk", "rss_pat", "rss_hsp");
    std::fflush(stdout);
  }
  std::vector<Measured> all;
  bool failed = false;
  for (const auto& c : configs) {
    Measured m = RunConfig(c, bin, work, captures);
    if (floor) m.floor = MeasureFloor(c.patients, c.length);
    failed |= !m.ok;
    Print(m, json);
    all.push_back(std::move(m));
  }
  if (floor) {
    if (!json) std::printf("\ncrypto floor (CPU a round cannot avoid; see BENCHMARKS.md):\n");
    for (const auto& m : all) PrintFloor(m, json);
  }
  if (launch_runs > 0) {
    auto l = RunLaunch(bin, work, static_cast<int>(launch_runs));
    if (!l.error.empty()) {
      failed = true;
      if (json)
        std::cout << "{\"launch\": {\"error\": \"" << l.error << "\"}}" << std::endl;
      else
        std::printf("\nlaunch: FAILED: %s\n", l.error.c_str());
    } else {
      const double e50 = Percentile(l.elapsed_ms, 50), w50 = Percentile(l.wall_ms, 50);
      if (json) {
        std::cout << "{\"launch\": {\"runs\": " << l.elapsed_ms.size()
                  << ", \"elapsed_ms_p50\": " << FormatFixed(e50, 1)
                  << ", \"elapsed_ms_max\": " << FormatFixed(Percentile(l.elapsed_ms, 100), 1)
                  << ", \"wall_ms_p50\": " << FormatFixed(w50, 1) << ", \"target_ms\": 150}}"
                  << std::endl;
      } else {
        std::printf(
            "\ncold tally-launch (3 patients, %zu runs): elapsed_ms p50 %s max %s, "
            "process wall p50 %s ms; target 150 ms: %s\n",
            l.elapsed_ms.size(), FormatFixed(e50, 1).c_str(),
            FormatFixed(Percentile(l.elapsed_ms, 100), 1).c_str(), FormatFixed(w50, 1).c_str(),
            Verdict(e50, 150).c_str());
      }
    }
  }
  return failed ? 1 : 0;
}
