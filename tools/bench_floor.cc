// tally-bench's crypto floor: one round run in this process with Tally's own protocol code — the
// coordinator (broker/coordinator.h), each patient's steps (nodes/patient_round.h) and the
// hospital's (nodes/hospital_round.h) — with no sockets, each role's CPU timed on its own, plus
// what libzmq's CURVE costs for every frame of that round (libsodium's crypto_box_*_afternm, as
// libzmq calls it). What a round with processes costs above it is the transport, the event loops
// and the processes.
#include <sodium.h>
#include <time.h>

#include <cstdlib>
#include <map>
#include <vector>

#include "broker/coordinator.h"
#include "keys/keys.h"
#include "nodes/hospital_round.h"
#include "nodes/patient_round.h"
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

// Adds the CPU `op` takes to `total`.
template <typename F>
auto Timed(double& total, F&& op) {
  const double start = ThreadCpuNow();
  struct Add {
    double& total;
    double start;
    ~Add() { total += ThreadCpuNow() - start; }
  } add{total, start};
  return op();
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

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "tally-bench: the in-process round failed: %s\n", why.c_str());
  std::abort();
}

// What CURVE costs per frame of `bytes`: crypto_box_easy_afternm at one end, _open_ at the
// other, as a fixed cost plus a cost per byte, measured at two sizes.
struct Curve {
  double fixed = 0, per_byte = 0;
  Curve() {
    unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
    unsigned char k[crypto_box_BEFORENMBYTES], nonce[crypto_box_NONCEBYTES] = {};
    crypto_box_keypair(pk, sk);
    if (crypto_box_beforenm(k, pk, sk) != 0) std::abort();
    auto both = [&](size_t bytes) {
      std::vector<uint8_t> m(bytes, 1), c(bytes + crypto_box_MACBYTES), back(bytes);
      return PerCall([&] {
        crypto_box_easy_afternm(c.data(), m.data(), m.size(), nonce, k);
        if (crypto_box_open_easy_afternm(back.data(), c.data(), c.size(), nonce, k) != 0)
          std::abort();
      });
    };
    const double small = both(64), large = both(1 << 20);
    per_byte = (large - small) / static_cast<double>((1 << 20) - 64);
    fixed = small - 64 * per_byte;
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(k, sizeof k);
  }
  double Of(size_t bytes) const { return fixed + per_byte * static_cast<double>(bytes); }
};

}  // namespace

Floor MeasureFloor(size_t n, uint32_t length, size_t dropped, bool any_size) {
  Floor f;
  f.dropped = dropped;
  std::vector<SecretCertificate> parties;
  // Fresh keys, as tally-keygen makes them.
  auto fresh = [](const std::string& name, Role role) {
    Result<SecretCertificate> party = NewParty(name, role);
    if (!party.ok()) Fail(party.message());
    return std::move(*party);
  };
  parties.push_back(fresh("hospital", Role::kHospital));
  parties.push_back(fresh("broker", Role::kBroker));
  RoundParams params{"hospital", 1000, length, {}};
  for (size_t k = 1; k <= n; ++k) {
    parties.push_back(fresh(PatientName(k), Role::kPatient));
    params.participants.push_back(PatientName(k));
  }
  params.threshold = SafeThreshold(n);
  if (n - dropped < params.threshold) Fail("more dropped than the threshold allows");
  std::vector<Certificate> certs;
  for (const auto& p : parties) certs.push_back(p.pub);
  // One roster shared by every party's Sealer, as a process hosting many parties does.
  const auto shared_roster = std::make_shared<const Roster>(std::move(certs));
  const Roster& roster = *shared_roster;
  std::vector<Sealer> sealers;  // [0] the hospital, then the patients
  for (size_t k = 0; k < parties.size(); ++k) {
    if (k == 1) continue;  // the broker seals nothing
    auto s = Sealer::Create(parties[k], shared_roster, SealPeers::kRoundPeers);
    if (!s.ok()) Fail(s.message());
    sealers.push_back(std::move(s.value()));
  }
  const Curve curve;
  double curve_s = 0;
  // Every frame through the broker crosses CURVE twice (into the broker, out of it): a box and an
  // unbox each time.
  auto frame = [&](size_t bytes, size_t copies = 1) {
    f.bytes += 2 * bytes * copies;
    curve_s += 2 * curve.Of(bytes) * static_cast<double>(copies);
  };

  Coordinator coordinator({}, roster,
                          CoordinatorEnv{[] {
                                           RoundId id{};
                                           randombytes_buf(id.data(), id.size());
                                           return id;
                                         },
                                         [] { return int64_t{0}; }});
  const auto now = Coordinator::Clock::now();
  std::map<std::string, std::vector<Batch>> inbox;
  std::vector<Envelope> to_hospital;
  std::optional<PhaseUpdate> latest;
  // Carries out the coordinator's actions for the message `current` (routes it if told to).
  std::function<void(const Actions&, const Envelope*)> execute = [&](const Actions& actions,
                                                                     const Envelope* current) {
    for (const Action& a : actions) {
      if (const auto* p = std::get_if<act::Publish>(&a)) {
        latest = p->update;
        frame(Encode(p->update).size(), n + 1);  // to every subscriber
      } else if (const auto* s = std::get_if<act::Send>(&a)) {
        frame(Encode(s->batch).size());
        inbox[s->to].push_back(s->batch);
      } else if (const auto* r = std::get_if<act::Route>(&a)) {
        to_hospital.push_back(*current);
        execute(Timed(f.broker, [&] { return coordinator.Routed(*r, now); }), nullptr);
      } else if (const auto* j = std::get_if<act::Reject>(&a)) {
        Fail("the coordinator refused a message: " + j->reason);
      }
    }
  };
  auto deliver = [&](const std::string& from, const Message& m) {
    frame(Encode(m).size() / 2);  // into the broker only (a route counts the way out)
    const Envelope* env = std::get_if<Envelope>(&m);
    execute(Timed(f.broker, [&] { return coordinator.OnMessage(from, m, now); }), env);
  };
  auto take = [&](const std::string& who, BatchKind kind) {
    auto& box = inbox[who];
    for (auto it = box.begin(); it != box.end(); ++it) {
      if (it->kind != kind) continue;
      Batch b = std::move(*it);
      box.erase(it);
      return b;
    }
    Fail(who + " has no " + std::string(BatchKindName(kind)) + " batch");
  };

  // Above 100 patients (at any size with `any_size`) a neighbourhood round at the default rates,
  // as tally-node --graph auto asks for it.
  params.graph =
      ChooseGraph(n, kDefaultCorruptPpm, kDefaultDropoutPpm, any_size ? 0 : kNeighbourhoodsAbove);
  if (params.graph) {
    randombytes_buf(params.graph->seed.data(), params.graph->seed.size());
    params.graph->signature = sealers[0].Sign(GraphStatement(1, params));
    f.degree = params.graph->degree;
  }
  deliver("hospital", Request{1, params, 0});
  const PhaseUpdate open = *latest;
  std::vector<uint64_t> expected(length, 0);
  double patients_s = 0;
  std::vector<std::optional<PatientRound>> rounds(n);
  for (size_t k = 0; k < n; ++k) {
    std::vector<uint64_t> input(length, k + 1);
    if (k < n - dropped)
      for (auto& e : expected) e += k + 1;
    auto joined =
        Timed(patients_s, [&] { return PatientRound::Join(sealers[k + 1], open, input); });
    if (!joined.ok()) Fail(joined.message());
    rounds[k].emplace(std::move(joined.value()));
    deliver(PatientName(k + 1), rounds[k]->join());
  }
  const PhaseUpdate share = *latest;
  for (size_t k = 0; k < n; ++k) {
    Batch keys = take(PatientName(k + 1), BatchKind::kKeys);
    auto shares = Timed(patients_s, [&] { return rounds[k]->Shares(share, keys); });
    if (!shares.ok()) Fail(shares.message());
    deliver(PatientName(k + 1), *shares);
  }
  const PhaseUpdate mask = *latest;
  // The hospital, as it goes: its views once it has U2 and its keys, then each masked input.
  const Batch keys = take("hospital", BatchKind::kKeys);
  std::optional<HospitalRound> sums;
  Timed(f.hospital, [&] {
    sums.emplace(sealers[0], mask.round, mask.params);
    if (!sums->Learn(keys, mask.sets).ok()) Fail("the hospital's view");
    return 0;
  });
  std::map<std::string, size_t> index;  // as the hospital keeps it
  for (size_t i = 0; i < n; ++i) index.emplace(params.participants[i], i);
  auto hospital_takes = [&](const RoundSets& sets) {
    Timed(f.hospital, [&] {
      for (const Envelope& env : to_hospital) {
        const size_t from = index.at(env.from);
        Status ok = env.kind == EnvelopeKind::kPartial ? sums->AddPartial(env, from)
                                                       : sums->AddUnmask(env, from, sets).status();
        if (!ok.ok()) Fail("the hospital: " + ok.message());
      }
      to_hospital.clear();
      return 0;
    });
  };
  // The last `dropped` patients vanish after sharing, before their masked input: the hard case.
  for (size_t k = n - dropped; k < n; ++k)
    execute(Timed(f.broker, [&] { return coordinator.Disconnected(PatientName(k + 1), now); }),
            nullptr);
  for (size_t k = 0; k < n - dropped; ++k) {
    Batch shares = take(PatientName(k + 1), BatchKind::kShares);
    auto masked = Timed(patients_s, [&] { return rounds[k]->Masked(mask, shares); });
    if (!masked.ok()) Fail(masked.message());
    deliver(PatientName(k + 1), *masked);
  }
  hospital_takes(latest->sets);
  if (latest->phase == Phase::kConfirm && params.graph) {
    // A neighbourhood round: the hospital checks and signs the survivors.
    const PhaseUpdate confirm = *latest;
    const Signature s = Timed(f.hospital, [&] {
      if (Status can = sums->CheckSurvivors(confirm.sets); !can.ok()) Fail(can.message());
      return sums->SurvivorsSignature(confirm.sets);
    });
    deliver("hospital", Batch{confirm.round,
                              BatchKind::kSurvivors,
                              {{0, std::vector<uint8_t>(s.begin(), s.end())}}});
  } else if (latest->phase == Phase::kConfirm) {
    const PhaseUpdate confirm = *latest;
    for (size_t k = 0; k < n - dropped; ++k) {
      const Batch signature = Timed(patients_s, [&] { return rounds[k]->Confirmation(confirm); });
      deliver(PatientName(k + 1), signature);
    }
  }
  const PhaseUpdate unmask = *latest;
  if (unmask.phase != Phase::kUnmask) Fail("no unmask phase");
  for (size_t k = 0; k < n - dropped; ++k) {
    std::optional<Batch> confirmations;
    if (HasConfirmPhase(params, unmask.sets))
      confirmations =
          take(PatientName(k + 1), params.graph ? BatchKind::kSurvivors : BatchKind::kConfirm);
    auto sent = Timed(patients_s, [&] {
      return rounds[k]->Unmask(unmask, confirmations ? &*confirmations : nullptr);
    });
    if (!sent.ok()) Fail(sent.message());
    deliver(PatientName(k + 1), *sent);
  }
  // The hospital: the unmasks, the masks removed.
  hospital_takes(unmask.sets);
  std::vector<uint64_t> aggregate = Timed(f.hospital, [&] {
    if (!sums->Ready(unmask.sets)) Fail("the hospital is not ready");
    auto sum = sums->Aggregate(unmask.sets);
    if (!sum.ok()) Fail(sum.message());
    return std::move(sum.value());
  });
  if (aggregate != expected) Fail("the aggregate is not the survivors' sum");
  deliver("hospital", Ack{unmask.round});
  if (latest->phase != Phase::kDone) Fail("the round did not end done");
  f.patient = patients_s / static_cast<double>(n);
  f.curve = curve_s;
  f.total = patients_s + f.hospital + f.broker + f.curve;
  return f;
}

}  // namespace tally::bench
