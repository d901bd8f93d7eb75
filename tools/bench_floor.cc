// tally-bench's crypto floor: the CPU a round cannot avoid, timed with Tally's own sealing and
// mask code (nodes/seal.h, nodes/aggregate.h) and libsodium's crypto_box for what libzmq's
// CURVE does per frame.
#include <sodium.h>
#include <time.h>

#include <cstdlib>
#include <vector>

#include "keys/keys.h"
#include "nodes/aggregate.h"
#include "nodes/seal.h"
#include "schema/protocol.h"
#include "schema/schema.h"
#include "tools/bench.h"

namespace tally::bench {
namespace {

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

// A party with fresh keys, as tally-keygen makes them.
SecretCertificate FreshParty(const std::string& name, Role role) {
  SecretCertificate me;
  me.pub.name = name;
  me.pub.role = role;
  crypto_box_keypair(me.pub.curve_public.data(), me.curve_secret.data());
  crypto_box_keypair(me.pub.seal_public.data(), me.seal_secret.data());
  return me;
}

}  // namespace

// The floor (BENCHMARKS.md):
//   N envelopes (one partial per patient, patient -> broker -> hospital), each sealed once,
//   opened once, CURVE-encrypted and decrypted twice (patient -> broker, broker -> hospital);
//   N+2 small router messages (the request, N joins, the ack), each encrypted once and
//   decrypted once; 3 phase updates (open, sum, done) to N+1 subscribers, each encrypted by the
//   broker per subscriber and decrypted by it, the open one without nonces (U0) and the sum and
//   done ones with the N join nonces (U); and each patient's masks: Sealer::Masks (a key per
//   peer) and ApplyMasks (a ChaCha20 stream of 8L bytes per peer).
//   floor = N (seal + open + 2 enc(W) + 2 dec(W)) + (N+2) (enc(C) + dec(C))
//         + (N+1) (enc(U0) + dec(U0) + 2 enc(U) + 2 dec(U)) + N (Masks + ApplyMasks)
Floor MeasureFloor(size_t n, uint32_t length) {
  Floor f;
  // A roster of the hospital and N patients; patient 1 seals to the hospital and masks.
  std::vector<SecretCertificate> parties;
  parties.push_back(FreshParty("hospital", Role::kHospital));
  RoundParams params{"hospital", 1000, length, {}};
  for (size_t k = 1; k <= n; ++k) {
    parties.push_back(FreshParty(PatientName(k), Role::kPatient));
    params.participants.push_back(PatientName(k));
  }
  std::vector<Certificate> certs;
  for (const auto& p : parties) certs.push_back(p.pub);
  const Roster roster(std::move(certs));
  auto hospital = Sealer::Create(parties[0], roster);
  auto patient = Sealer::Create(parties[1], roster);
  if (!hospital.ok() || !patient.ok()) std::abort();  // fresh keys always make a sealer

  RoundId round{};
  randombytes_buf(round.data(), round.size());
  std::vector<JoinNonce> nonces(n);
  for (auto& nonce : nonces) randombytes_buf(nonce.data(), nonce.size());
  auto view = patient->View(round, params, nonces);
  auto masks = patient->Masks(round, params, nonces);
  if (!view.ok() || !masks.ok()) std::abort();

  std::vector<uint64_t> values(length, 0);
  const std::vector<uint8_t> payload = EncodePayload(EnvelopeKind::kPartial, values);
  f.payload_bytes = payload.size();
  const std::string sender = PatientName(1);  // the binding holds views of its names
  const Binding binding{round, EnvelopeKind::kPartial, sender, "hospital", *view};
  std::vector<uint8_t> sealed;
  f.seal = PerCall([&] { sealed = patient->Seal(binding, payload).value(); });
  f.open = PerCall([&] {
    auto plain = hospital->Open(binding, sealed);
    if (!plain.ok()) std::abort();
  });
  f.mask_keys = PerCall([&] {
    if (!patient->Masks(round, params, nonces).ok()) std::abort();
  });
  f.apply = PerCall([&] { ApplyMasks(*masks, values); });

  const Envelope env{EnvelopeKind::kPartial, round, sender, "hospital", sealed};
  f.wire_bytes = Encode(env).size();
  PhaseUpdate u;
  u.phase = Phase::kOpen;
  u.params = params;
  f.open_update_bytes = Encode(u).size();
  u.phase = Phase::kSum;
  u.nonces = nonces;
  f.update_bytes = Encode(u).size();
  const size_t control_bytes = Encode(Join{round, nonces[0]}).size();

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
  sodium_memzero(sk, sizeof sk);
  sodium_memzero(k, sizeof k);

  const double patients = static_cast<double>(n);
  f.masks = patients * (f.mask_keys + f.apply);
  f.total = patients * (f.seal + f.open + 2 * f.box_enc_w + 2 * f.box_dec_w) +
            static_cast<double>(n + 2) * (f.box_enc_c + f.box_dec_c) +
            static_cast<double>(n + 1) *
                (f.box_enc_u0 + f.box_dec_u0 + 2 * f.box_enc_u + 2 * f.box_dec_u) +
            f.masks;
  return f;
}

}  // namespace tally::bench
