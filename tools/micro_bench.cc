// tally-micro-bench: Google Benchmark micro-benchmarks of the per-byte and per-element costs a
// round is made of: sealing, share generation, the payload and envelope codecs, and CURVE
// transport through a real DEALER -> ROUTER pair. BENCHMARKS.md relates them to the rounds.
// Run: tools/bench --micro [--benchmark_filter=REGEX ...]
#include <benchmark/benchmark.h>
#include <sodium.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "keys/keys.h"
#include "nodes/seal.h"
#include "schema/schema.h"

namespace {

namespace fs = std::filesystem;

constexpr int64_t kKiB = 1024, kMiB = 1024 * 1024;

// Two patients' keys in a temporary folder, loaded once for every sealing benchmark.
struct Parties {
  tally::Roster roster;
  std::optional<tally::Sealer> alice, bob;

  Parties() {
    char tmpl[] = "/tmp/tally-micro-XXXXXX";
    const char* dir = ::mkdtemp(tmpl);
    if (dir == nullptr) std::abort();
    for (const char* n : {"alice", "bob"})
      if (!tally::GenerateParty(dir, n, tally::Role::kPatient, false).ok()) std::abort();
    auto r = tally::LoadRoster(dir);
    auto a = tally::LoadSecret(dir, "alice");
    auto b = tally::LoadSecret(dir, "bob");
    if (!r.ok() || !a.ok() || !b.ok()) std::abort();
    roster = std::move(r.value());
    auto sa = tally::Sealer::Create(a.value(), roster);
    auto sb = tally::Sealer::Create(b.value(), roster);
    if (!sa.ok() || !sb.ok()) std::abort();
    alice.emplace(std::move(sa.value()));
    bob.emplace(std::move(sb.value()));
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

Parties& Keys() {
  static Parties parties;
  return parties;
}

tally::Binding AliceToBob() {
  tally::Binding b;
  b.kind = tally::EnvelopeKind::kShare;
  b.sender = "alice";
  b.recipient = "bob";
  return b;
}

// --- Sealing (XChaCha20-Poly1305 with a per-pair key, nodes/seal.h) ------------------------

void BM_SealerSeal(benchmark::State& state) {
  const auto& sealer = *Keys().alice;
  std::vector<uint8_t> plain(static_cast<size_t>(state.range(0)), 42);
  for (auto _ : state) {
    auto sealed = sealer.Seal(AliceToBob(), plain);
    benchmark::DoNotOptimize(sealed);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SealerSeal)->Arg(8)->Arg(8 * kKiB)->Arg(8 * kMiB);

void BM_SealerOpen(benchmark::State& state) {
  std::vector<uint8_t> plain(static_cast<size_t>(state.range(0)), 42);
  auto sealed = Keys().alice->Seal(AliceToBob(), plain);
  if (!sealed.ok()) return state.SkipWithError("seal failed");
  const auto& sealer = *Keys().bob;
  for (auto _ : state) {
    auto opened = sealer.Open(AliceToBob(), sealed.value());
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

// --- Share generation (as nodes/node.cc SendShares: draw a share, subtract it) -------------

void BM_ShareGeneration(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<uint64_t> share(n), sum(n, 7);
  for (auto _ : state) {
    randombytes_buf(share.data(), share.size() * sizeof(uint64_t));
    for (size_t e = 0; e < n; ++e) sum[e] -= share[e];
    benchmark::DoNotOptimize(sum.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * 8);
}
BENCHMARK(BM_ShareGeneration)->Arg(1)->Arg(1000)->Arg(1 << 20);

// The alternative: one 32-byte seed from randombytes_buf, the share from its ChaCha20 stream.
void BM_ShareGenerationStream(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<uint64_t> share(n), sum(n, 7);
  unsigned char seed[randombytes_SEEDBYTES];
  for (auto _ : state) {
    randombytes_buf(seed, sizeof seed);
    randombytes_buf_deterministic(share.data(), share.size() * sizeof(uint64_t), seed);
    for (size_t e = 0; e < n; ++e) sum[e] -= share[e];
    benchmark::DoNotOptimize(sum.data());
  }
  sodium_memzero(seed, sizeof seed);
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * 8);
}
BENCHMARK(BM_ShareGenerationStream)->Arg(1)->Arg(1000)->Arg(1 << 20);

// --- Codecs ------------------------------------------------------------------------------

void BM_EncodePayload(benchmark::State& state) {
  std::vector<uint64_t> values(static_cast<size_t>(state.range(0)), 123456789);
  for (auto _ : state) {
    auto bytes = tally::EncodePayload(tally::EnvelopeKind::kShare, values);
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_EncodePayload)->Arg(1)->Arg(1000)->Arg(1 << 20);

void BM_DecodePayload(benchmark::State& state) {
  const auto length = static_cast<uint32_t>(state.range(0));
  std::vector<uint64_t> values(length, 123456789);
  auto bytes = tally::EncodePayload(tally::EnvelopeKind::kShare, values);
  for (auto _ : state) {
    auto decoded = tally::DecodePayload(bytes, tally::EnvelopeKind::kShare, length);
    if (!decoded.ok()) return state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(decoded);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_DecodePayload)->Arg(1)->Arg(1000)->Arg(1 << 20);

tally::Envelope SomeEnvelope(size_t sealed_bytes) {
  tally::Envelope e;
  e.kind = tally::EnvelopeKind::kShare;
  e.from = "p01";
  e.to = "p02";
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
    char server_pub[41], server_sec[41], client_pub[41], client_sec[41];
    if (zmq_curve_keypair(server_pub, server_sec) != 0 ||
        zmq_curve_keypair(client_pub, client_sec) != 0)
      return state.SkipWithError("libzmq has no CURVE");
    router.set(zmq::sockopt::curve_server, true);
    router.set(zmq::sockopt::curve_secretkey, std::string(server_sec));
    dealer.set(zmq::sockopt::curve_serverkey, std::string(server_pub));
    dealer.set(zmq::sockopt::curve_publickey, std::string(client_pub));
    dealer.set(zmq::sockopt::curve_secretkey, std::string(client_sec));
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
