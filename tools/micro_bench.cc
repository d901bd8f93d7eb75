// tally-micro-bench: Google Benchmark micro-benchmarks of the per-byte and per-element costs a
// round is made of: sealing, a patient's masks (PatientMasks and ApplyMasks), Shamir splitting,
// sealed shares, signing round keys, a neighbourhood round's graph and its choice of k and t,
// the payload and envelope codecs, and CURVE transport through a real DEALER -> ROUTER pair.
// BENCHMARKS.md relates them to the rounds.
//
// Run: tools/bench --micro [--benchmark_filter=REGEX ...]
#include <benchmark/benchmark.h>
#include <sodium.h>
#include <stdlib.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "keys/curve.h"
#include "keys/keys.h"
#include "nodes/aggregate.h"
#include "nodes/seal.h"
#include "nodes/shamir.h"
#include "schema/neighbourhood.h"
#include "schema/schema.h"

namespace {

namespace fs = std::filesystem;

constexpr int64_t kKiB = 1024, kMiB = 1024 * 1024;

constexpr size_t kMostPatients = 10;

std::string PatientName(size_t k) { return (k < 10 ? "p0" : "p") + std::to_string(k); }

// A hospital and patients p01..p10 with keys in a temporary folder, loaded once for every
// sealing and signing benchmark: patient p01 seals to the hospital and signs.
struct Parties {
  tally::Roster roster;
  std::optional<tally::Sealer> patient, hospital;

  Parties() {
    char tmpl[] = "/tmp/tally-micro-XXXXXX";
    const char* dir = ::mkdtemp(tmpl);
    if (dir == nullptr) std::abort();
    if (!tally::GenerateParty(dir, "hospital", tally::Role::kHospital, false).ok()) std::abort();
    for (size_t k = 1; k <= kMostPatients; ++k)
      if (!tally::GenerateParty(dir, PatientName(k), tally::Role::kPatient, false).ok())
        std::abort();
    auto r = tally::LoadRoster(dir);
    auto p = tally::LoadSecret(dir, PatientName(1));
    auto h = tally::LoadSecret(dir, "hospital");
    if (!r.ok() || !p.ok() || !h.ok()) std::abort();
    roster = std::move(r.value());
    auto sp = tally::Sealer::Create(p.value(), roster);
    auto sh = tally::Sealer::Create(h.value(), roster);
    if (!sp.ok() || !sh.ok()) std::abort();
    patient.emplace(std::move(sp.value()));
    hospital.emplace(std::move(sh.value()));
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

Parties& Keys() {
  static Parties parties;
  return parties;
}

// A partial from p01 to the hospital, under some view of the round.
tally::Binding PatientToHospital() {
  tally::Binding b;
  b.kind = tally::EnvelopeKind::kPartial;
  b.sender = "p01";
  b.recipient = "hospital";
  b.view.fill(0x5c);
  return b;
}

// --- Sealing (XChaCha20-Poly1305 with a per-pair key, nodes/seal.h) ------------------------

void BM_SealerSeal(benchmark::State& state) {
  const auto& sealer = *Keys().patient;
  std::vector<uint8_t> plain(static_cast<size_t>(state.range(0)), 42);
  for (auto _ : state) {
    auto sealed = sealer.Seal(PatientToHospital(), plain);
    benchmark::DoNotOptimize(sealed);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SealerSeal)->Arg(8)->Arg(8 * kKiB)->Arg(8 * kMiB);

void BM_SealerOpen(benchmark::State& state) {
  std::vector<uint8_t> plain(static_cast<size_t>(state.range(0)), 42);
  auto sealed = Keys().patient->Seal(PatientToHospital(), plain);
  if (!sealed.ok()) return state.SkipWithError("seal failed");
  const auto& sealer = *Keys().hospital;
  for (auto _ : state) {
    auto opened = sealer.Open(PatientToHospital(), sealed.value());
    if (!opened.ok()) return state.SkipWithError("open failed");
    benchmark::DoNotOptimize(opened);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SealerOpen)->Arg(8)->Arg(8 * kKiB)->Arg(8 * kMiB);

// The bare primitive, for comparison with the Sealer's wrapping (binding, allocations).
void BM_RawXChaChaSeal(benchmark::State& state) {
  std::vector<uint8_t> key(32, 1), nonce(24, 2), ad(40, 3);
  std::vector<uint8_t> plain(static_cast<size_t>(state.range(0)), 42), out(plain.size() + 16);
  for (auto _ : state) {
    unsigned long long len = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out.data(), &len, plain.data(), plain.size(),
                                               ad.data(), ad.size(), nullptr, nonce.data(),
                                               key.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RawXChaChaSeal)->Arg(8)->Arg(8 * kKiB)->Arg(8 * kMiB);

// What CURVE does to every frame: XSalsa20-Poly1305 with a precomputed key.
void BM_RawCurveBox(benchmark::State& state) {
  unsigned char pk[32], sk[32], k[32], nonce[24] = {};
  crypto_box_keypair(pk, sk);
  if (crypto_box_beforenm(k, pk, sk) != 0) std::abort();
  std::vector<uint8_t> plain(static_cast<size_t>(state.range(0)), 42), out(plain.size() + 16);
  for (auto _ : state) {
    crypto_box_easy_afternm(out.data(), plain.data(), plain.size(), nonce, k);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RawCurveBox)->Arg(64)->Arg(8 * kKiB)->Arg(8 * kMiB);

// --- Masks (PatientMasks and ApplyMasks, as a patient does at the mask phase) -------------
// One patient's masks over its input: a self mask and, per other member of U2, an X25519
// product and a BLAKE2b key, then a ChaCha20 stream of 8L bytes per mask added or subtracted
// element by element. Items are input elements.

void BM_PatientMasks(benchmark::State& state) {
  const auto participants = static_cast<size_t>(state.range(0));
  const auto length = static_cast<uint32_t>(state.range(1));
  tally::RoundId round{};
  randombytes_buf(round.data(), round.size());
  tally::RoundParams params;
  params.hospital = "hospital";
  params.range = 1000;
  params.length = length;
  std::vector<tally::RoundPublicKeys> keys;
  for (size_t k = 1; k <= participants; ++k) {
    params.participants.push_back(PatientName(k));
    keys.push_back({tally::RoundKeyPair::Generate().pub, tally::RoundKeyPair::Generate().pub});
  }
  params.threshold = tally::SafeThreshold(participants);
  const tally::Members shared(participants, true);
  const tally::RoundKeyPair s = tally::RoundKeyPair::Generate();
  tally::SecretKey b;
  randombytes_buf(b.data(), tally::SecretKey::size());
  std::vector<uint64_t> values(length, 7);
  for (auto _ : state) {
    auto masks = tally::PatientMasks(round, params, 0, shared, keys, s.secret, b.data());
    if (!masks.ok()) return state.SkipWithError("PatientMasks failed");
    tally::ApplyMasks(*masks, values);
    benchmark::DoNotOptimize(values.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(1));
  state.SetBytesProcessed(state.iterations() * state.range(1) * 8);
}
BENCHMARK(BM_PatientMasks)
    ->ArgsProduct({{2, static_cast<int64_t>(kMostPatients)}, {1, 1000, 1 << 20}})
    ->ArgNames({"participants", "length"});

// The bare primitive behind one mask, for comparison: a ChaCha20-IETF stream of 8L bytes.
void BM_RawChaCha20Stream(benchmark::State& state) {
  unsigned char key[crypto_stream_chacha20_ietf_KEYBYTES];
  const unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  randombytes_buf(key, sizeof key);
  std::vector<uint8_t> stream(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    crypto_stream_chacha20_ietf(stream.data(), stream.size(), nonce, key);
    benchmark::DoNotOptimize(stream.data());
  }
  sodium_memzero(key, sizeof key);
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RawChaCha20Stream)->Arg(8)->Arg(8 * kKiB)->Arg(8 * kMiB);

// --- Shares (nodes/shamir.h, nodes/seal.h), as a patient does at the share phase ----------
// Per round a patient splits two 32-byte secrets (b and s) into a share per member of U1 with
// threshold T, and seals each other member its pair; each member opens its pairs at the mask
// phase. Items are shares.

void BM_ShamirSplit(benchmark::State& state) {
  const auto participants = static_cast<size_t>(state.range(0));
  const uint32_t threshold = tally::SafeThreshold(participants);
  std::vector<uint16_t> xs;
  for (size_t i = 0; i < participants; ++i) xs.push_back(static_cast<uint16_t>(i + 1));
  std::vector<tally::Share> out(participants);
  std::array<uint8_t, tally::kShareSize> secret;
  randombytes_buf(secret.data(), secret.size());
  for (auto _ : state) {
    tally::ShamirSplit(secret, threshold, xs, out);
    benchmark::DoNotOptimize(out.data());
  }
  sodium_memzero(secret.data(), secret.size());
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_ShamirSplit)->Arg(3)->Arg(10)->Arg(100)->Arg(1000);

// Rebuilding one secret from T shares (the combiner built once per round, as the hospital does).
void BM_ShamirCombine(benchmark::State& state) {
  const auto participants = static_cast<size_t>(state.range(0));
  const uint32_t threshold = tally::SafeThreshold(participants);
  std::vector<uint16_t> xs;
  for (size_t i = 0; i < participants; ++i) xs.push_back(static_cast<uint16_t>(i + 1));
  std::vector<tally::Share> shares(participants);
  std::array<uint8_t, tally::kShareSize> secret, rebuilt;
  randombytes_buf(secret.data(), secret.size());
  tally::ShamirSplit(secret, threshold, xs, shares);
  xs.resize(threshold);
  shares.resize(threshold);
  auto combiner = tally::ShamirCombiner::Create(xs);
  if (!combiner.ok()) return state.SkipWithError("ShamirCombiner::Create failed");
  for (auto _ : state) {
    combiner->Combine(shares, rebuilt);
    benchmark::DoNotOptimize(rebuilt.data());
  }
  if (rebuilt != secret) state.SkipWithError("the rebuilt secret differs");
  state.SetItemsProcessed(state.iterations() * threshold);
}
BENCHMARK(BM_ShamirCombine)->Arg(3)->Arg(10)->Arg(100)->Arg(1000);

// The key of one pair's shares (X25519 and BLAKE2b), per other member at share and mask.
void BM_ShareKey(benchmark::State& state) {
  const tally::RoundKeyPair mine = tally::RoundKeyPair::Generate();
  const tally::RoundKeyPair peer = tally::RoundKeyPair::Generate();
  uint8_t key[32];
  for (auto _ : state) {
    if (!tally::ShareKey(mine.secret, peer.pub, key).ok()) return state.SkipWithError("ShareKey");
    benchmark::DoNotOptimize(key);
  }
  sodium_memzero(key, sizeof key);
}
BENCHMARK(BM_ShareKey);

// A round's graph from its seed (PROTOCOL.md "Neighbourhoods"): built once per round by the
// broker, the hospital and every patient. Args: n participants, degree k.
void BM_NeighbourhoodGraph(benchmark::State& state) {
  std::array<uint8_t, 32> seed{};
  randombytes_buf(seed.data(), seed.size());
  for (auto _ : state) {
    auto g = tally::NeighbourhoodGraph::Build(seed, static_cast<uint32_t>(state.range(0)),
                                              static_cast<uint32_t>(state.range(1)));
    if (!g.ok()) return state.SkipWithError(g.message().c_str());
    benchmark::DoNotOptimize(g.value().Ring().data());
  }
}
BENCHMARK(BM_NeighbourhoodGraph)
    ->Args({1000, 38})
    ->Args({10000, 44})
    ->Args({10000, 100})
    ->ArgNames({"n", "k"})
    ->Unit(benchmark::kMicrosecond);

// Choosing k and t from the declared rates: the hospital once per request, every patient again
// when it checks. Args: n, corrupt and dropout rates in parts per million.
void BM_ChooseNeighbourhood(benchmark::State& state) {
  for (auto _ : state) {
    auto p = tally::ChooseNeighbourhood(static_cast<uint32_t>(state.range(0)),
                                        static_cast<uint32_t>(state.range(1)),
                                        static_cast<uint32_t>(state.range(2)));
    if (!p.ok()) return state.SkipWithError(p.message().c_str());
    benchmark::DoNotOptimize(p.value().degree);
  }
}
BENCHMARK(BM_ChooseNeighbourhood)
    ->Args({1000, 50'000, 100'000})
    ->Args({1'000'000, 50'000, 100'000})
    ->Args({1'000'000, 330'000, 330'000})
    ->Args({1'000'000, 450'000, 450'000})
    ->ArgNames({"n", "corrupt_ppm", "dropout_ppm"})
    ->Unit(benchmark::kMicrosecond);

void BM_SealShare(benchmark::State& state) {
  tally::RoundId round{};
  uint8_t key[32];
  randombytes_buf(key, sizeof key);
  std::array<uint8_t, 2 * tally::kShareSize> pair;
  randombytes_buf(pair.data(), pair.size());
  for (auto _ : state) {
    auto sealed = tally::SealShare(key, round, "p01", "p02", pair);
    benchmark::DoNotOptimize(sealed);
  }
  sodium_memzero(key, sizeof key);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SealShare);

void BM_OpenShare(benchmark::State& state) {
  tally::RoundId round{};
  uint8_t key[32];
  randombytes_buf(key, sizeof key);
  std::array<uint8_t, 2 * tally::kShareSize> pair, opened;
  randombytes_buf(pair.data(), pair.size());
  const auto sealed = tally::SealShare(key, round, "p01", "p02", pair);
  for (auto _ : state) {
    if (!tally::OpenShare(key, round, "p01", "p02", sealed, opened).ok())
      return state.SkipWithError("OpenShare failed");
    benchmark::DoNotOptimize(opened.data());
  }
  sodium_memzero(key, sizeof key);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_OpenShare);

// --- Signatures (Ed25519), per round: a patient signs its keys and checks every other's ----

tally::RoundPublicKeys SomeRoundKeys() {
  return {tally::RoundKeyPair::Generate().pub, tally::RoundKeyPair::Generate().pub};
}

void BM_SignKeys(benchmark::State& state) {
  const auto statement = tally::KeysStatement(tally::RoundDigest{}, "p01", SomeRoundKeys());
  const auto& sealer = *Keys().patient;
  for (auto _ : state) {
    auto signature = sealer.Sign(statement);
    benchmark::DoNotOptimize(signature);
  }
}
BENCHMARK(BM_SignKeys);

void BM_VerifyKeys(benchmark::State& state) {
  const auto statement = tally::KeysStatement(tally::RoundDigest{}, "p01", SomeRoundKeys());
  const auto signature = Keys().patient->Sign(statement);
  const auto& sealer = *Keys().hospital;
  for (auto _ : state) {
    if (!sealer.Verify("p01", statement, signature)) return state.SkipWithError("Verify failed");
  }
}
BENCHMARK(BM_VerifyKeys);

// --- Codecs ------------------------------------------------------------------------------

void BM_EncodePayload(benchmark::State& state) {
  std::vector<uint64_t> values(static_cast<size_t>(state.range(0)), 123456789);
  for (auto _ : state) {
    auto bytes = tally::EncodePayload(tally::EnvelopeKind::kPartial, values);
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_EncodePayload)->Arg(1)->Arg(1000)->Arg(1 << 20);

void BM_DecodePayload(benchmark::State& state) {
  const auto length = static_cast<uint32_t>(state.range(0));
  std::vector<uint64_t> values(length, 123456789);
  auto bytes = tally::EncodePayload(tally::EnvelopeKind::kPartial, values);
  for (auto _ : state) {
    auto decoded = tally::DecodePayload(bytes, tally::EnvelopeKind::kPartial, length);
    if (!decoded.ok()) return state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(decoded);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_DecodePayload)->Arg(1)->Arg(1000)->Arg(1 << 20);

tally::Envelope SomeEnvelope(size_t sealed_bytes) {
  tally::Envelope e;
  e.kind = tally::EnvelopeKind::kPartial;
  e.from = "p01";
  e.to = "hospital";
  e.sealed.assign(sealed_bytes, 9);
  return e;
}

void BM_EncodeEnvelope(benchmark::State& state) {
  const tally::Message m = SomeEnvelope(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    auto bytes = tally::Encode(m);
    benchmark::DoNotOptimize(bytes);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_EncodeEnvelope)->Arg(64)->Arg(8 * kKiB)->Arg(8 * kMiB);

// The broker and every node decode each envelope; the decoder copies the sealed bytes out.
void BM_DecodeEnvelope(benchmark::State& state) {
  const auto bytes = tally::Encode(SomeEnvelope(static_cast<size_t>(state.range(0))));
  for (auto _ : state) {
    auto decoded = tally::Decode(bytes);
    if (!decoded.ok()) return state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(decoded);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_DecodeEnvelope)->Arg(64)->Arg(8 * kKiB)->Arg(8 * kMiB);

// --- Transport: DEALER -> ROUTER over loopback TCP, CURVE (arg 1) or plain (arg 0) ---------
// Throughput of one connection: a window of messages in flight, each received and counted.
// The work happens in libzmq's I/O threads, so this is wall-clock time (UseRealTime).

void BM_Transport(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const bool curve = state.range(1) != 0;
  zmq::context_t ctx(2);
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  for (zmq::socket_t* s : {&router, &dealer}) {
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, 0);
    s->set(zmq::sockopt::rcvhwm, 0);
  }
  if (curve) {
    // CURVE keys are X25519 keys; the sockets are set up as the broker's and a party's are.
    tally::SecretCertificate server, client;
    crypto_box_keypair(server.pub.curve_public.data(), server.curve_secret.data());
    crypto_box_keypair(client.pub.curve_public.data(), client.curve_secret.data());
    tally::CurveServer(router, server.curve_secret, "", {0, -1, ""});
    tally::CurveClient(dealer, client, server.pub.curve_public, {0, -1, ""});
  }
  router.bind("tcp://127.0.0.1:*");
  dealer.connect(router.get(zmq::sockopt::last_endpoint));
  // Handshake and a first message before timing.
  dealer.send(zmq::str_buffer("hi"));
  zmq::message_t id, body;
  (void)router.recv(id);
  (void)router.recv(body);

  const size_t window = std::max<size_t>(1, std::min<size_t>(256, (64 * kMiB) / (size + 1)));
  std::vector<uint8_t> payload(size, 5);
  for (auto _ : state) {
    for (size_t i = 0; i < window; ++i) dealer.send(zmq::buffer(payload));
    for (size_t i = 0; i < window; ++i) {
      (void)router.recv(id);
      (void)router.recv(body);
    }
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(window * size));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(window));
}
BENCHMARK(BM_Transport)
    ->ArgsProduct({{64, 8 * kKiB, 8 * kMiB}, {0, 1}})
    ->ArgNames({"bytes", "curve"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
