// Neighbourhood rounds (SecAgg+, schema/PROTOCOL.md "Neighbourhoods") end to end:
//   - in one process, Tally's own protocol code played as tools/bench_floor.cc plays a round: the
//     coordinator (broker/coordinator.h, made-up times), a PatientRound per patient and the
//     hospital's HospitalRound, with dropouts before sharing, after sharing and during unmask,
//     each ending in the exact sum over the survivors;
//   - what the coordinator routes and refuses in a neighbourhood round (keys batches of
//     neighbours only, shares batches, the hospital's survivors signature, its deadline);
//   - what a patient refuses: an unmask without the hospital's signature on its own survivors,
//     and, as a real patient role (tally::Node against a fake broker, as patient_test.cc
//     drives one), a graph it must not take at open;
//   - the hospital's check that every secret of the survivors can be rebuilt;
//   - tools/launch with 120 real patient processes and dropouts at share, mask and unmask.
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "broker/coordinator.h"
#include "keys/keys.h"
#include "nodes/hospital_round.h"
#include "nodes/node.h"
#include "nodes/patient_round.h"
#include "nodes/seal.h"
#include "schema/neighbourhood.h"
#include "schema/protocol.h"
#include "schema/round_graph.h"
#include "schema/schema.h"
#include "schema/text.h"
#include "tests/contains.h"
#include "tests/support.h"
#include "tools/process.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
using Clock = Coordinator::Clock;

// ---- In-process rounds ------------------------------------------------------------------------

constexpr size_t kN = 40;
constexpr uint32_t kT = 27;  // SafeThreshold(40)
constexpr uint32_t kDegree = 8;
constexpr uint32_t kShareThreshold = 4;
constexpr uint32_t kDeadlineMs = 1000;
constexpr uint64_t kTicket = 41;
constexpr uint64_t kRange = 1000;

// p01..p40.
std::string Name(size_t i) { return (i + 1 < 10 ? "p0" : "p") + std::to_string(i + 1); }

std::array<uint8_t, 32> Seed() {
  std::array<uint8_t, 32> s{};
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(0xa0 + i);
  return s;
}

// Patient i's input: two elements in [0, 1000].
std::vector<uint64_t> Input(size_t i) { return {i * 25 + 3, kRange - i * 7}; }

std::vector<uint64_t> SumOf(const Members& members) {
  std::vector<uint64_t> sum(2, 0);
  for (size_t i = 0; i < members.size(); ++i)
    if (members[i])
      for (size_t e = 0; e < 2; ++e) sum[e] += Input(i)[e];
  return sum;
}

Members AllBut(std::initializer_list<size_t> out) {
  Members m(kN, true);
  for (size_t i : out) m[i] = false;
  return m;
}

// The hospital, a second hospital, the broker and p01..p40: fresh keys in memory, made once.
struct Parties {
  Roster roster;
  std::map<std::string, std::unique_ptr<Sealer>> sealers;
};

const Parties& TheParties() {
  static const Parties* parties = [] {
    if (sodium_init() < 0) std::abort();
    std::vector<SecretCertificate> secrets;
    auto fresh = [&secrets](const std::string& name, Role role) {
      Result<SecretCertificate> party = NewParty(name, role);
      if (!party.ok()) std::abort();
      secrets.push_back(std::move(party.value()));
    };
    fresh("hospital", Role::kHospital);
    fresh("hospital2", Role::kHospital);
    fresh("broker", Role::kBroker);
    for (size_t i = 0; i < kN; ++i) fresh(Name(i), Role::kPatient);
    std::vector<Certificate> certs;
    for (const auto& s : secrets) certs.push_back(s.pub);
    auto* p = new Parties{Roster(std::move(certs)), {}};
    for (const auto& s : secrets) {
      if (s.pub.role == Role::kBroker) continue;
      Result<Sealer> sealer = Sealer::Create(s, p->roster);
      if (!sealer.ok()) std::abort();
      p->sealers[s.pub.name] = std::make_unique<Sealer>(std::move(sealer.value()));
    }
    return p;
  }();
  return *parties;
}

const Sealer& S(const std::string& name) { return *TheParties().sealers.at(name); }

Batch SurvivorsBatch(const RoundId& round, const Signature& s) {
  return Batch{round, BatchKind::kSurvivors, {{0, std::vector<uint8_t>(s.begin(), s.end())}}};
}

// A round of p01..p40 played by a Coordinator, forty PatientRounds and a HospitalRound, with
// no sockets: the coordinator's actions are carried out here (its batches put in inboxes, its
// routed envelopes handed to the hospital). Each phase is a method, so a test can stop, vanish
// or lie between them. Every update the coordinator publishes must pass CheckSets.
class NeighbourhoodRoundTest : public ::testing::Test {
 protected:
  NeighbourhoodRoundTest()
      : coordinator_(Options(), TheParties().roster, Env()),
        graph_(NeighbourhoodGraph::Build(Seed(), kN, kDegree).value()) {}

  static CoordinatorOptions Options() {
    CoordinatorOptions o;
    o.deadline_ms = kDeadlineMs;
    return o;
  }
  CoordinatorEnv Env() {
    return CoordinatorEnv{[this] {
                            RoundId id{};
                            id[0] = 0x4e;
                            id[1] = ++rounds_made_;
                            return id;
                          },
                          [] { return int64_t{1'700'000'000'000}; }};
  }

  // The round's parameters: p01..p40, T = 27, and (with `graph`) degree 8, threshold 4 over
  // Seed(), signed by the hospital for kTicket.
  static RoundParams Params(bool graph = true) {
    RoundParams p;
    p.hospital = "hospital";
    p.range = kRange;
    p.length = 2;
    for (size_t i = 0; i < kN; ++i) p.participants.push_back(Name(i));
    p.threshold = kT;
    if (graph) {
      p.graph = Neighbourhood{50'000, 100'000, kDegree, kShareThreshold, Seed(), {}};
      p.graph->signature = S("hospital").Sign(GraphStatement(kTicket, p));
    }
    return p;
  }

  Clock::time_point Now() const { return t0_ + std::chrono::milliseconds(now_ms_); }

  // Carries out `actions` for the message `current`; returns the reasons of its rejections.
  std::vector<std::string> Execute(const Actions& actions, const Envelope* current = nullptr) {
    std::vector<std::string> rejects;
    for (const Action& a : actions) {
      if (const auto* p = std::get_if<act::Publish>(&a)) {
        Status sets = CheckSets(p->update);
        EXPECT_TRUE(sets.ok()) << PhaseName(p->update.phase) << ": " << sets.message();
        published_.push_back(p->update);
      } else if (const auto* s = std::get_if<act::Send>(&a)) {
        inbox_[s->to].push_back(s->batch);
      } else if (const auto* r = std::get_if<act::Route>(&a)) {
        EXPECT_NE(current, nullptr);
        if (current == nullptr) continue;
        EXPECT_EQ(r->to, "hospital");
        (current->kind == EnvelopeKind::kPartial ? partials_ : unmasks_).push_back(*current);
        auto more = Execute(coordinator_.Routed(*r, Now()));
        rejects.insert(rejects.end(), more.begin(), more.end());
      } else if (const auto* j = std::get_if<act::Reject>(&a)) {
        rejects.push_back(j->reason);
      }
    }
    return rejects;
  }
  std::vector<std::string> Deliver(const std::string& from, const Message& m) {
    return Execute(coordinator_.OnMessage(from, m, Now()), std::get_if<Envelope>(&m));
  }
  // The one rejection of `m` from `from`, or "" when it was taken.
  std::string RejectionOf(const std::string& from, const Message& m) {
    std::vector<std::string> rejects = Deliver(from, m);
    EXPECT_LE(rejects.size(), 1u);
    return rejects.empty() ? "" : rejects[0];
  }
  void Gone(size_t i) { Execute(coordinator_.Disconnected(Name(i), Now())); }
  void Tick(int ms) {
    now_ms_ = ms;
    Execute(coordinator_.Tick(Now()));
  }
  const PhaseUpdate& Latest() const { return published_.back(); }

  // The first batch of `kind` sent to `who`, taken out of its inbox.
  std::optional<Batch> Take(const std::string& who, BatchKind kind) {
    auto& box = inbox_[who];
    for (auto it = box.begin(); it != box.end(); ++it) {
      if (it->kind != kind) continue;
      Batch b = std::move(*it);
      box.erase(it);
      return b;
    }
    return std::nullopt;
  }

  // The hospital asks for the round; every patient but `absent` joins (the open phase then ends
  // at its deadline). Leaves the round in its share phase.
  void Open(bool graph = true, std::set<size_t> absent = {}) {
    const RoundParams p = Params(graph);
    ASSERT_TRUE(CheckRoundParams(p).ok()) << CheckRoundParams(p).message();
    ASSERT_EQ(RejectionOf("hospital", Request{kTicket, p, 0}), "");
    ASSERT_EQ(Latest().phase, Phase::kOpen);
    open_ = Latest();
    ASSERT_EQ(open_.params, p);
    Result<HospitalRound> h = HospitalRound::Create(S("hospital"), open_.round, open_.params);
    ASSERT_TRUE(h.ok()) << h.message();
    hospital_.emplace(std::move(h.value()));
    patients_.clear();
    patients_.resize(kN);
    for (size_t i = 0; i < kN; ++i) {
      if (absent.count(i)) continue;
      Result<PatientRound> joined = PatientRound::Join(S(Name(i)), open_, Input(i));
      ASSERT_TRUE(joined.ok()) << Name(i) << ": " << joined.message();
      patients_[i].emplace(std::move(joined.value()));
      ASSERT_EQ(RejectionOf(Name(i), patients_[i]->join()), "") << Name(i);
    }
    if (!absent.empty()) Tick(now_ms_ + static_cast<int>(kDeadlineMs));
    ASSERT_EQ(Latest().phase, Phase::kShare);
  }

  // The share phase: those in `vanish` disconnect, each other member of U1 sends the shares it
  // makes from its keys batch. Leaves the round in its mask phase.
  void Share(std::set<size_t> vanish = {}) {
    const PhaseUpdate u = Latest();
    ASSERT_EQ(u.phase, Phase::kShare);
    for (size_t v : vanish) Gone(v);
    for (size_t i = 0; i < kN; ++i) {
      if (!u.sets.joined[i] || vanish.count(i)) continue;
      std::optional<Batch> keys = Take(Name(i), BatchKind::kKeys);
      ASSERT_TRUE(keys) << Name(i) << " has no keys batch";
      Result<Batch> shares = patients_[i]->Shares(u, *keys);
      ASSERT_TRUE(shares.ok()) << Name(i) << ": " << shares.message();
      ASSERT_EQ(RejectionOf(Name(i), *shares), "") << Name(i);
    }
    ASSERT_EQ(Latest().phase, Phase::kMask);
  }

  // The mask phase: those in `vanish` disconnect; the hospital learns its views from its keys
  // batch; each other member of U2 sends its masked input, which the coordinator routes to the
  // hospital. Leaves the round in its confirm phase (always, in a neighbourhood round).
  void Mask(std::set<size_t> vanish = {}) {
    const PhaseUpdate u = Latest();
    ASSERT_EQ(u.phase, Phase::kMask);
    for (size_t v : vanish) Gone(v);
    std::optional<Batch> keys = Take("hospital", BatchKind::kKeys);
    ASSERT_TRUE(keys) << "the hospital has no keys batch";
    Status learnt = hospital_->Learn(*keys, u.sets);
    ASSERT_TRUE(learnt.ok()) << learnt.message();
    for (size_t i = 0; i < kN; ++i) {
      if (!u.sets.shared[i] || vanish.count(i)) continue;
      std::optional<Batch> shares = Take(Name(i), BatchKind::kShares);
      ASSERT_TRUE(shares) << Name(i) << " has no shares batch";
      Result<Envelope> masked = patients_[i]->Masked(u, *shares);
      ASSERT_TRUE(masked.ok()) << Name(i) << ": " << masked.message();
      ASSERT_EQ(RejectionOf(Name(i), *masked), "") << Name(i);
    }
    ASSERT_EQ(Latest().phase, Phase::kConfirm);
  }

  // The hospital adds the masked inputs routed to it, checks that the survivors can be unmasked
  // and returns its signature on them (as the hospital role does in its confirm phase).
  Signature HospitalSigns() {
    const PhaseUpdate& u = Latest();
    EXPECT_EQ(u.phase, Phase::kConfirm);
    for (const Envelope& env : partials_) {
      Status added = hospital_->AddPartial(env, IndexOf(env.from));
      EXPECT_TRUE(added.ok()) << env.from << ": " << added.message();
    }
    partials_.clear();
    EXPECT_EQ(hospital_->partials(), u.sets.masked);
    Status can = hospital_->CheckSurvivors(u.sets);
    EXPECT_TRUE(can.ok()) << can.message();
    return hospital_->SurvivorsSignature(u.sets);
  }

  // The confirm phase: the hospital signs the survivors; the coordinator fixes U4 = U3 and
  // opens the unmask phase.
  void Confirm() {
    const Signature s = HospitalSigns();
    ASSERT_EQ(RejectionOf("hospital", SurvivorsBatch(open_.round, s)), "");
    ASSERT_EQ(Latest().phase, Phase::kUnmask);
  }

  // The unmask phase: those in `vanish` disconnect, each other member of U4 unmasks with the
  // survivors batch sent to it; the hospital keeps what it needs, removes the masks and
  // acknowledges. Returns the aggregate (the round is done).
  std::vector<uint64_t> Unmask(std::set<size_t> vanish = {}) {
    const PhaseUpdate u = Latest();
    EXPECT_EQ(u.phase, Phase::kUnmask);
    for (size_t v : vanish) Gone(v);
    for (size_t i = 0; i < kN; ++i) {
      if (!Unmaskers(u.sets)[i] || vanish.count(i)) continue;
      std::optional<Batch> survivors = Take(Name(i), BatchKind::kSurvivors);
      EXPECT_TRUE(survivors) << Name(i) << " has no survivors batch";
      if (!survivors) return {};
      Result<Envelope> unmask = patients_[i]->Unmask(u, &*survivors);
      EXPECT_TRUE(unmask.ok()) << Name(i) << ": " << unmask.message();
      if (!unmask.ok()) return {};
      EXPECT_EQ(RejectionOf(Name(i), *unmask), "") << Name(i);
    }
    for (const Envelope& env : unmasks_) {
      Result<bool> kept = hospital_->AddUnmask(env, IndexOf(env.from), u.sets);
      EXPECT_TRUE(kept.ok()) << env.from << ": " << kept.message();
    }
    EXPECT_TRUE(hospital_->Ready(u.sets));
    if (!hospital_->Ready(u.sets)) return {};
    Result<std::vector<uint64_t>> sum = hospital_->Aggregate(u.sets);
    EXPECT_TRUE(sum.ok()) << sum.message();
    EXPECT_EQ(RejectionOf("hospital", Ack{u.round}), "");
    EXPECT_EQ(Latest().phase, Phase::kDone) << Latest().reason;
    return sum.ok() ? *sum : std::vector<uint64_t>{};
  }

  static size_t IndexOf(const std::string& name) { return std::stoul(name.substr(1)) - 1; }

  // N(i) ∩ `set`, ascending.
  std::vector<uint32_t> NeighboursIn(size_t i, const Members& set) const {
    std::vector<uint32_t> out;
    for (uint32_t v : graph_.Neighbours(static_cast<uint32_t>(i)))
      if (set[v]) out.push_back(v);
    return out;
  }

  Coordinator coordinator_;
  const NeighbourhoodGraph graph_;
  Clock::time_point t0_ = Clock::now();
  int now_ms_ = 0;
  uint8_t rounds_made_ = 0;
  std::vector<PhaseUpdate> published_;
  std::map<std::string, std::vector<Batch>> inbox_;
  std::vector<Envelope> partials_, unmasks_;  // routed to the hospital, not yet added
  PhaseUpdate open_;
  std::vector<std::optional<PatientRound>> patients_;
  std::optional<HospitalRound> hospital_;
};

// ---- 1. Whole rounds: the exact sum over the survivors ----

TEST_F(NeighbourhoodRoundTest, FortyPatientsWithoutADropoutGiveTheExactSum) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask());
  ASSERT_NO_FATAL_FAILURE(Confirm());
  const std::vector<uint64_t> sum = Unmask();
  // Σ (25i + 3) and Σ (1000 − 7i) over i = 0..39.
  EXPECT_EQ(sum, (std::vector<uint64_t>{19620, 34540}));
  EXPECT_EQ(sum, SumOf(Members(kN, true)));
  EXPECT_EQ(coordinator_.rounds_done(), 1u);
}

TEST_F(NeighbourhoodRoundTest, FourDroppedBeforeSharingLeaveTheExactSumOfTheOthers) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Share({3, 11, 22, 35}));
  EXPECT_EQ(Latest().sets.shared, AllBut({3, 11, 22, 35}));
  ASSERT_NO_FATAL_FAILURE(Mask());
  ASSERT_NO_FATAL_FAILURE(Confirm());
  EXPECT_EQ(Latest().sets.masked, AllBut({3, 11, 22, 35}));
  const std::vector<uint64_t> sum = Unmask();
  EXPECT_EQ(sum, (std::vector<uint64_t>{17833, 31037}));
  EXPECT_EQ(sum, SumOf(AllBut({3, 11, 22, 35})));
}

// They shared, so their pair masks are in their neighbours' masked inputs: the hospital rebuilds
// each one's s from t of its surviving neighbours' shares and removes those masks.
TEST_F(NeighbourhoodRoundTest, FourDroppedAfterSharingHaveTheirMaskSecretsRebuiltAndTheSumIsExact) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask({3, 11, 22, 35}));
  EXPECT_EQ(Latest().sets.shared, Members(kN, true));
  EXPECT_EQ(Latest().sets.masked, AllBut({3, 11, 22, 35}));
  ASSERT_NO_FATAL_FAILURE(Confirm());
  const std::vector<uint64_t> sum = Unmask();
  EXPECT_EQ(sum, (std::vector<uint64_t>{17833, 31037}));
  EXPECT_EQ(sum, SumOf(AllBut({3, 11, 22, 35})));
}

// Their masked inputs are in: the sum is over all forty, each self mask rebuilt from the other
// unmaskers of its closed neighbourhood.
TEST_F(NeighbourhoodRoundTest, ThreeDroppedDuringUnmaskStillGiveTheExactSumOfAllForty) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask());
  ASSERT_NO_FATAL_FAILURE(Confirm());
  const std::vector<uint64_t> sum = Unmask({5, 17, 29});
  EXPECT_EQ(sum, (std::vector<uint64_t>{19620, 34540}));
}

TEST_F(NeighbourhoodRoundTest, DropoutsAtEveryPhaseTogetherGiveTheExactSumOfTheSurvivors) {
  ASSERT_NO_FATAL_FAILURE(Open(true, {0}));
  ASSERT_NO_FATAL_FAILURE(Share({9, 10}));
  ASSERT_NO_FATAL_FAILURE(Mask({20, 21}));
  ASSERT_NO_FATAL_FAILURE(Confirm());
  EXPECT_EQ(Latest().sets.masked, AllBut({0, 9, 10, 20, 21}));
  const std::vector<uint64_t> sum = Unmask({30, 31, 32});
  EXPECT_EQ(sum, SumOf(AllBut({0, 9, 10, 20, 21})));
}

// ---- 2. The coordinator in a neighbourhood round ----

// p05 and p21 never join: U1 is the other 38, and each member's keys batch holds its neighbours
// in U1 and nobody else, each with the keys and signature of its join; the hospital's holds all
// 38 (its views are computed from it).
TEST_F(NeighbourhoodRoundTest, EachKeysBatchHoldsExactlyThePatientsNeighboursInU1) {
  ASSERT_NO_FATAL_FAILURE(Open(true, {4, 20}));
  const PhaseUpdate& u = Latest();
  ASSERT_EQ(u.sets.joined, AllBut({4, 20}));
  size_t short_of_one = 0;
  for (size_t w = 0; w < kN; ++w) {
    std::vector<const Batch*> batches;
    for (const Batch& b : inbox_[Name(w)])
      if (b.kind == BatchKind::kKeys) batches.push_back(&b);
    if (!u.sets.joined[w]) {
      EXPECT_TRUE(batches.empty()) << Name(w) << " did not join but got a keys batch";
      continue;
    }
    ASSERT_EQ(batches.size(), 1u) << Name(w);
    const Batch* keys = batches[0];
    std::vector<uint32_t> indices;
    for (const BatchItem& item : keys->items) {
      indices.push_back(item.index);
      const Join& j = patients_[item.index]->join();
      std::vector<uint8_t> data(j.cpk.begin(), j.cpk.end());
      data.insert(data.end(), j.spk.begin(), j.spk.end());
      data.insert(data.end(), j.signature.begin(), j.signature.end());
      EXPECT_EQ(item.data, data) << Name(w) << " got other keys for " << Name(item.index);
    }
    EXPECT_EQ(indices, NeighboursIn(w, u.sets.joined)) << Name(w);
    EXPECT_EQ(indices.size() + (graph_.Adjacent(static_cast<uint32_t>(w), 4) ? 1 : 0) +
                  (graph_.Adjacent(static_cast<uint32_t>(w), 20) ? 1 : 0),
              kDegree)
        << Name(w);
    short_of_one += indices.size() < kDegree;
  }
  EXPECT_GE(short_of_one, kDegree);  // at least p05's neighbours lack it
  ASSERT_EQ(inbox_["hospital"].size(), 1u);
  EXPECT_EQ(inbox_["hospital"][0].items.size(), kN - 2);
  // And the round goes on from there to the exact sum of the 38.
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask());
  ASSERT_NO_FATAL_FAILURE(Confirm());
  EXPECT_EQ(Unmask(), SumOf(AllBut({4, 20})));
}

TEST_F(NeighbourhoodRoundTest, ASharesBatchMustHoldOneShareForEachNeighbourInU1) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const PhaseUpdate u = Latest();
  std::optional<Batch> keys = Take(Name(0), BatchKind::kKeys);
  ASSERT_TRUE(keys);
  Result<Batch> shares = patients_[0]->Shares(u, *keys);
  ASSERT_TRUE(shares.ok()) << shares.message();
  ASSERT_EQ(shares->items.size(), kDegree);
  std::vector<uint32_t> indices;
  for (const BatchItem& item : shares->items) indices.push_back(item.index);
  EXPECT_EQ(indices, NeighboursIn(0, u.sets.joined));
  uint32_t stranger = 1;
  while (graph_.Adjacent(0, stranger)) ++stranger;

  const std::string why = "a shares batch must hold one share for each neighbour in U1";
  Batch missing = *shares;
  missing.items.pop_back();
  EXPECT_EQ(RejectionOf(Name(0), missing), why);
  Batch swapped = *shares;
  swapped.items.back().index = stranger;
  std::sort(swapped.items.begin(), swapped.items.end(),
            [](const BatchItem& a, const BatchItem& b) { return a.index < b.index; });
  EXPECT_EQ(RejectionOf(Name(0), swapped), why);
  Batch extra = *shares;
  extra.items.push_back({stranger, shares->items[0].data});
  EXPECT_EQ(RejectionOf(Name(0), extra), why);
  Batch to_itself = *shares;
  to_itself.items.back().index = 0;
  EXPECT_EQ(RejectionOf(Name(0), to_itself), why);
  // None of them counted: the real batch is taken.
  EXPECT_EQ(RejectionOf(Name(0), *shares), "");
  EXPECT_EQ(Latest().phase, Phase::kShare);
}

// What a patient checks of its own batches: its keys batch holds exactly its neighbours in U1
// (the keys of a non-neighbour would give the broker a pair mask, a share, of its choosing), and
// its shares batch exactly its neighbours in U2.
TEST_F(NeighbourhoodRoundTest, APatientTakesBatchesOfItsNeighboursOnly) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const PhaseUpdate share = Latest();
  uint32_t stranger = 1;
  while (graph_.Adjacent(0, stranger)) ++stranger;
  std::optional<Batch> keys = Take(Name(0), BatchKind::kKeys);
  ASSERT_TRUE(keys);
  const std::string keys_why = "the keys batch is not one for each neighbour that joined";
  Batch with_stranger = *keys;
  with_stranger.items.back().index = stranger;
  std::sort(with_stranger.items.begin(), with_stranger.items.end(),
            [](const BatchItem& a, const BatchItem& b) { return a.index < b.index; });
  Result<Batch> refused = patients_[0]->Shares(share, with_stranger);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.message(), keys_why);
  Batch short_one = *keys;
  short_one.items.pop_back();
  refused = patients_[0]->Shares(share, short_one);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.message(), keys_why);
  inbox_[Name(0)].insert(inbox_[Name(0)].begin(), *keys);  // back for the honest share phase
  ASSERT_NO_FATAL_FAILURE(Share());

  const PhaseUpdate mask = Latest();
  std::optional<Batch> shares = Take(Name(0), BatchKind::kShares);
  ASSERT_TRUE(shares);
  ASSERT_EQ(shares->items.size(), kDegree);
  const std::string shares_why = "the shares batch is not one for each neighbour that shared";
  Batch moved = *shares;
  moved.items.back().index = stranger;
  std::sort(moved.items.begin(), moved.items.end(),
            [](const BatchItem& a, const BatchItem& b) { return a.index < b.index; });
  Result<Envelope> not_masked = patients_[0]->Masked(mask, moved);
  ASSERT_FALSE(not_masked.ok());
  EXPECT_EQ(not_masked.message(), shares_why);
  Batch fewer = *shares;
  fewer.items.pop_back();
  not_masked = patients_[0]->Masked(mask, fewer);
  ASSERT_FALSE(not_masked.ok());
  EXPECT_EQ(not_masked.message(), shares_why);
  inbox_[Name(0)].insert(inbox_[Name(0)].begin(), *shares);
  ASSERT_NO_FATAL_FAILURE(Mask());
  ASSERT_NO_FATAL_FAILURE(Confirm());
  EXPECT_EQ(Unmask(), SumOf(Members(kN, true)));
}

// In a full round a patient confirms after a dropout; in a neighbourhood round only the
// hospital's signature is taken, and never from a patient.
TEST_F(NeighbourhoodRoundTest, TheConfirmPhaseTakesOnlyTheHospitalsSignature) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask());
  const PhaseUpdate u = Latest();
  EXPECT_EQ(RejectionOf(Name(0), patients_[0]->Confirmation(u)),
            "a neighbourhood round is confirmed by its hospital");
  const Signature forged = S(Name(0)).Sign(SurvivorsStatement(DigestOf(u.round, u.params), u.sets));
  EXPECT_EQ(RejectionOf(Name(0), SurvivorsBatch(u.round, forged)), "survivors from a patient");
  EXPECT_EQ(Latest().phase, Phase::kConfirm);
  EXPECT_EQ(RejectionOf("hospital", Batch{u.round, BatchKind::kSurvivors, {}}),
            "survivors are one signature, the hospital's");
  ASSERT_NO_FATAL_FAILURE(Confirm());
  EXPECT_EQ(RejectionOf("hospital", SurvivorsBatch(u.round, Signature{})),
            "survivors outside the confirm phase");
  EXPECT_EQ(Unmask(), SumOf(Members(kN, true)));
}

// p04 vanishes after sharing, which brings a full round's confirm phase: its hospital may not
// confirm for the patients.
TEST_F(NeighbourhoodRoundTest, AFullRoundRefusesTheHospitalsSurvivorsBatch) {
  ASSERT_NO_FATAL_FAILURE(Open(/*graph=*/false));
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask({3}));
  const PhaseUpdate u = Latest();
  const Signature s = S("hospital").Sign(SurvivorsStatement(DigestOf(u.round, u.params), u.sets));
  EXPECT_EQ(RejectionOf("hospital", SurvivorsBatch(u.round, s)),
            "a full round is confirmed by its patients");
  EXPECT_EQ(Latest().phase, Phase::kConfirm);
}

TEST_F(NeighbourhoodRoundTest, TheConfirmPhaseRunsEvenWithoutADropoutAndU4IsU3) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask());
  EXPECT_EQ(Latest().sets.masked, Latest().sets.shared);
  ASSERT_NO_FATAL_FAILURE(Confirm());
  EXPECT_EQ(Latest().sets.confirmed, Latest().sets.masked);
  EXPECT_EQ(Latest().sets.confirmed, Members(kN, true));
  // Every survivor got the hospital's signature; nobody else anything.
  for (size_t i = 0; i < kN; ++i) EXPECT_EQ(inbox_[Name(i)].size(), 1u) << Name(i);
  ASSERT_FALSE(Unmask().empty());
  std::vector<Phase> phases;
  for (const PhaseUpdate& p : published_) phases.push_back(p.phase);
  EXPECT_EQ(phases, (std::vector<Phase>{Phase::kOpen, Phase::kShare, Phase::kMask, Phase::kConfirm,
                                        Phase::kUnmask, Phase::kDone}));
}

TEST_F(NeighbourhoodRoundTest, WithoutTheHospitalsSignatureTheRoundAbortsAtTheConfirmDeadline) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask());
  const size_t before = published_.size();
  Tick(static_cast<int>(kDeadlineMs) - 1);
  EXPECT_EQ(published_.size(), before);
  Tick(static_cast<int>(kDeadlineMs));
  ASSERT_EQ(published_.size(), before + 1);
  EXPECT_EQ(Latest().phase, Phase::kAbort);
  EXPECT_EQ(Latest().reason, open_.params.hospital + " did not confirm the survivors");
  EXPECT_EQ(open_.params.hospital, "hospital");
  EXPECT_EQ(coordinator_.rounds_aborted(), 1u);
}

// ---- 3. A patient unmasks only for the survivors its hospital signed ----

// Regression guarded: a broker that shows patients different survivor sets (one patient sees
// p08 as a survivor, another as dropped) gets a share of b_p08 from some and of s_p08 from
// others, enough to unmask p08's input. Each patient unmasks only with the hospital's signature
// on its own digest, U2 and U3.
TEST_F(NeighbourhoodRoundTest, APatientUnmasksOnlyWithTheHospitalsSignatureOnItsOwnSurvivors) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Share());
  ASSERT_NO_FATAL_FAILURE(Mask({7}));
  const Signature s = HospitalSigns();
  ASSERT_EQ(RejectionOf("hospital", SurvivorsBatch(open_.round, s)), "");
  const PhaseUpdate u = Latest();
  ASSERT_EQ(u.phase, Phase::kUnmask);
  ASSERT_EQ(u.sets.masked, AllBut({7}));
  const std::string why = "the survivors are not signed by hospital";
  PatientRound& p = *patients_[0];

  Result<Envelope> none = p.Unmask(u, nullptr);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.message(), why);

  const std::vector<uint8_t> statement = SurvivorsStatement(DigestOf(u.round, u.params), u.sets);
  for (const std::string signer : {"hospital2", "p02"}) {
    Batch other = SurvivorsBatch(u.round, S(signer).Sign(statement));
    Result<Envelope> refused = p.Unmask(u, &other);
    ASSERT_FALSE(refused.ok()) << signer;
    EXPECT_EQ(refused.message(), why) << signer;
  }
  // The hospital's signature on another U3: p08 a survivor, or p09 dropped too.
  for (const Members& masked : {Members(kN, true), AllBut({7, 8})}) {
    RoundSets other = u.sets;
    other.masked = masked;
    Batch signed_other = SurvivorsBatch(
        u.round, S("hospital").Sign(SurvivorsStatement(DigestOf(u.round, u.params), other)));
    Result<Envelope> refused = p.Unmask(u, &signed_other);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.message(), why);
  }
  // A broker showing p01 p08 as a survivor, with the hospital's signature on the real sets.
  PhaseUpdate shown = u;
  shown.sets.masked = Members(kN, true);
  shown.sets.confirmed = shown.sets.masked;
  Batch genuine = SurvivorsBatch(u.round, s);
  Result<Envelope> lied_to = p.Unmask(shown, &genuine);
  ASSERT_FALSE(lied_to.ok());
  EXPECT_EQ(lied_to.message(), why);
  // The hospital's signature for the same sets of another round.
  RoundId another = u.round;
  another[15] ^= 1;
  Batch other_round = SurvivorsBatch(
      u.round, S("hospital").Sign(SurvivorsStatement(DigestOf(another, u.params), u.sets)));
  Result<Envelope> refused_round = p.Unmask(u, &other_round);
  ASSERT_FALSE(refused_round.ok());
  EXPECT_EQ(refused_round.message(), why);
  // The right signature in a confirm batch, or at another index.
  Batch wrong_kind = genuine;
  wrong_kind.kind = BatchKind::kConfirm;
  Result<Envelope> refused_kind = p.Unmask(u, &wrong_kind);
  ASSERT_FALSE(refused_kind.ok());
  EXPECT_EQ(refused_kind.message(), why);
  Batch wrong_index = genuine;
  wrong_index.items[0].index = 1;
  Result<Envelope> refused_index = p.Unmask(u, &wrong_index);
  ASSERT_FALSE(refused_index.ok());
  EXPECT_EQ(refused_index.message(), why);

  // None of those cost it its round: with the genuine batch it unmasks, and so do the others.
  EXPECT_EQ(Unmask(), SumOf(AllBut({7})));
}

// ---- 4. The hospital signs only survivors whose secrets can all be rebuilt ----

// Participants at ring positions around `centre` (offsets mod 40).
std::vector<size_t> AtOffsets(const NeighbourhoodGraph& g, int centre, std::vector<int> offsets) {
  std::vector<size_t> out;
  for (int o : offsets) out.push_back(g.Ring()[static_cast<size_t>((centre + o + 40) % 40)]);
  return out;
}

RoundSets SetsWithDropped(const std::vector<size_t>& dropped) {
  RoundSets sets;
  sets.joined = Members(kN, true);
  sets.shared = Members(kN, true);
  sets.masked = Members(kN, true);
  for (size_t v : dropped) sets.masked[v] = false;
  return sets;
}

// v at ring position 10 keeps only its neighbours at ±1: 3 of N[v] survive, below t = 4. Every
// other secret has its 4 holders (the dropped at ±2..±4 keep at least 5 surviving neighbours).
TEST_F(NeighbourhoodRoundTest,
       CheckSurvivorsRefusesASurvivorWithFewerThanTOfItsClosedNeighbourhood) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const size_t v = graph_.Ring()[10];
  const RoundSets sets = SetsWithDropped(AtOffsets(graph_, 10, {-4, -3, -2, 2, 3, 4}));
  Status can = hospital_->CheckSurvivors(sets);
  ASSERT_FALSE(can.ok());
  EXPECT_EQ(can.message(), "the self mask of " + Name(v) +
                               " cannot be rebuilt: 3 of it and its 8 neighbours survive, the "
                               "threshold is 4");
}

// A dropped v at ring position 25 with its neighbours at −4, −3, +2, +3, +4 dropped too: 3 of
// N(v) survive to rebuild its mask secret.
TEST_F(NeighbourhoodRoundTest,
       CheckSurvivorsRefusesADroppedPatientWithFewerThanTSurvivingNeighbours) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const size_t v = graph_.Ring()[25];
  const RoundSets sets = SetsWithDropped(AtOffsets(graph_, 25, {0, -4, -3, 2, 3, 4}));
  Status can = hospital_->CheckSurvivors(sets);
  ASSERT_FALSE(can.ok());
  EXPECT_EQ(can.message(), "the mask secret of " + Name(v) +
                               " cannot be rebuilt: 3 of its 8 neighbours survive, the "
                               "threshold is 4");
}

TEST_F(NeighbourhoodRoundTest, CheckSurvivorsAcceptsWhenEverySecretHasTSurvivingHolders) {
  ASSERT_NO_FATAL_FAILURE(Open());
  // Four in a row on the ring: each of them keeps 5 surviving neighbours, each survivor at least
  // 5 of its closed neighbourhood.
  EXPECT_TRUE(hospital_->CheckSurvivors(SetsWithDropped(AtOffsets(graph_, 5, {0, 1, 2, 3}))).ok());
  EXPECT_TRUE(hospital_->CheckSurvivors(SetsWithDropped({})).ok());
  // A full round never lacks holders.
  RoundParams full = Params(false);
  HospitalRound h(S("hospital"), open_.round, full);
  EXPECT_TRUE(h.CheckSurvivors(SetsWithDropped(AtOffsets(graph_, 10, {-4, -3, -2, 2, 3, 4}))).ok());
}

// ---- 5. A real patient's refusals at open ----

// p01 is a real patient (tally::Node on its own thread) of 100 patients p01..p100 in its roster,
// with a second hospital; the test publishes neighbourhood rounds and reads its join or refusal.
class NeighbourhoodPatientTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kPatients = 100;

  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    std::vector<std::string> names;
    for (size_t i = 0; i < kPatients; ++i) names.push_back(Name(i));
    keys_ = MakeKeys(dir_.path(), names);
    auto second = GenerateParty(keys_, "hospital2", Role::kHospital, false);
    ASSERT_TRUE(second.ok()) << second.message();
    broker_ = std::make_unique<FakeBroker>(keys_);
    ASSERT_FALSE(broker_->router_endpoint().empty());
    hospital_ = std::make_unique<Sealer>(MakeSealer(keys_, "hospital"));
    hospital2_ = std::make_unique<Sealer>(MakeSealer(keys_, "hospital2"));
    Result<NeighbourhoodParams> chosen = ChooseNeighbourhood(kPatients, 50'000, 100'000);
    ASSERT_TRUE(chosen.ok()) << chosen.message();
    chosen_ = *chosen;
  }

  void TearDown() override { StopNode(); }

  void StartNode(const std::function<void(NodeOptions&)>& tweak) {
    NodeOptions o;
    o.keys_dir = keys_;
    o.name = "p01";
    o.router_endpoint = broker_->router_endpoint();
    o.phases_endpoint = broker_->phases_endpoint();
    o.input.cells.push_back("7");
    tweak(o);
    auto node = Node::Create(o, log_.Sink(), nullptr);
    ASSERT_TRUE(node.ok()) << node.message();
    node_ = std::move(node.value());
    thread_ = std::thread([node = node_.get()] { (void)node->Run(); });
    ASSERT_TRUE(broker_->WaitSubscriber()) << "p01's subscription never reached the XPUB";
  }
  void StopNode() {
    if (!node_) return;
    node_->Stop();
    thread_.join();
    node_.reset();
  }

  // An open phase of a neighbourhood round of the 100 with the given rates, degree and
  // threshold, signed by `signer` for ticket 9.
  PhaseUpdate Open(uint32_t corrupt_ppm, uint32_t dropout_ppm, NeighbourhoodParams g,
                   const Sealer* signer = nullptr) {
    PhaseUpdate u;
    randombytes_buf(u.round.data(), u.round.size());
    u.phase = Phase::kOpen;
    u.seq = ++seq_;
    u.ticket = 9;
    u.params.hospital = "hospital";
    u.params.range = 1000;
    for (size_t i = 0; i < kPatients; ++i) u.params.participants.push_back(Name(i));
    u.params.threshold = SafeThreshold(kPatients);
    std::array<uint8_t, 32> seed{};
    randombytes_buf(seed.data(), seed.size());
    u.params.graph = Neighbourhood{corrupt_ppm, dropout_ppm, g.degree, g.threshold, seed, {}};
    u.params.graph->signature =
        (signer ? *signer : *hospital_).Sign(GraphStatement(u.ticket, u.params));
    u.deadline_ms = 10000;
    EXPECT_TRUE(CheckRoundParams(u.params).ok()) << CheckRoundParams(u.params).message();
    return u;
  }
  PhaseUpdate Valid() { return Open(50'000, 100'000, chosen_); }

  // p01's answer to `open`: its refusal's reason, or "joined".
  std::string Answer(const PhaseUpdate& open) {
    broker_->Publish(open);
    std::optional<Received> m = broker_->Receive();
    EXPECT_TRUE(m) << "no answer from p01";
    if (!m) return "";
    if (const auto* j = std::get_if<tally::Join>(&m->message)) {
      EXPECT_EQ(j->round, open.round);
      return "joined";
    }
    const auto* r = std::get_if<Refuse>(&m->message);
    EXPECT_NE(r, nullptr) << "neither a join nor a refusal";
    if (!r) return "";
    EXPECT_EQ(r->round, open.round);
    return r->reason;
  }

  TempDir dir_;
  fs::path keys_;
  LogWatcher log_;
  std::unique_ptr<FakeBroker> broker_;
  std::unique_ptr<Sealer> hospital_, hospital2_;
  NeighbourhoodParams chosen_;
  std::unique_ptr<Node> node_;
  std::thread thread_;
  uint64_t seq_ = 0;
};

TEST_F(NeighbourhoodPatientTest, APatientWithoutGraphOnTakesFullRoundsOnly) {
  ASSERT_NO_FATAL_FAILURE(StartNode([](NodeOptions& o) { o.graph = false; }));
  const PhaseUpdate open = Valid();
  EXPECT_EQ(Answer(open), "this patient takes full rounds only");
  EXPECT_TRUE(log_.WaitFor("node p01 event=refuse round=" + RoundHex(open.round) +
                           " reason=" + Quote("this patient takes full rounds only")));
}

TEST_F(NeighbourhoodPatientTest, APatientRefusesAGraphNotSignedByTheRoundsHospital) {
  ASSERT_NO_FATAL_FAILURE(StartNode([](NodeOptions& o) { o.graph = true; }));
  const std::string why = "the round's graph is not signed by hospital";
  // Signed by the roster's other hospital.
  EXPECT_EQ(Answer(Open(50'000, 100'000, chosen_, hospital2_.get())), why);
  // The hospital's signature, with the seed changed after it signed (the broker picking the
  // graph), or its k and t, or for another ticket.
  PhaseUpdate seed = Valid();
  seed.params.graph->seed[0] ^= 1;
  EXPECT_EQ(Answer(seed), why);
  PhaseUpdate threshold = Valid();
  threshold.params.graph->threshold += 1;
  EXPECT_EQ(Answer(threshold), why);
  PhaseUpdate ticket = Valid();
  ticket.ticket += 1;
  EXPECT_EQ(Answer(ticket), why);
  // Positive control: the same round as signed.
  EXPECT_EQ(Answer(Valid()), "joined");
}

TEST_F(NeighbourhoodPatientTest, APatientRefusesAGraphWhoseDegreeOrThresholdFailsTheBounds) {
  ASSERT_NO_FATAL_FAILURE(StartNode([](NodeOptions& o) { o.graph = true; }));
  const std::string prefix = "the round's graph does not hide an input: ";
  struct Case {
    NeighbourhoodParams g;
    std::string bound;  // how the reason names the failing bound
  };
  const uint32_t k = chosen_.degree, t = chosen_.threshold;
  ASSERT_GE(t, 3u);
  const std::vector<Case> cases = {
      {{k, t - 1},
       "threshold " + std::to_string(t - 1) + " is 1 below " + std::to_string(t) + ": "},
      {{2, 2}, "degree 2 is too low: "},
      {{k, k}, "threshold " + std::to_string(k) + " is "},
  };
  for (const Case& c : cases) {
    const Status bounds = CheckNeighbourhood(kPatients, c.g, 50'000, 100'000);
    ASSERT_FALSE(bounds.ok()) << c.bound;
    const std::string why = (prefix + bounds.message()).substr(0, kMaxReasonLength);
    const std::string answer = Answer(Open(50'000, 100'000, c.g));
    EXPECT_EQ(answer, why);
    EXPECT_TRUE(answer.starts_with(prefix + c.bound)) << answer;
  }
  EXPECT_EQ(Answer(Valid()), "joined");
}

TEST_F(NeighbourhoodPatientTest, APatientRefusesARoundAssumingFewerThanFivePercentCorrupt) {
  ASSERT_NO_FATAL_FAILURE(StartNode([](NodeOptions& o) { o.graph = true; }));
  // k and t that meet the bounds at 1%: only the rate itself is refused.
  Result<NeighbourhoodParams> at_one = ChooseNeighbourhood(kPatients, 10'000, 100'000);
  ASSERT_TRUE(at_one.ok()) << at_one.message();
  EXPECT_EQ(Answer(Open(10'000, 100'000, *at_one)),
            "the round assumes 1.0% of its patients corrupt, below the 5.0% a patient takes");
  // One part per million below 5% is refused too (its rate is shown rounded).
  Result<NeighbourhoodParams> below = ChooseNeighbourhood(kPatients, 49'999, 100'000);
  ASSERT_TRUE(below.ok()) << below.message();
  const std::string refused = Answer(Open(49'999, 100'000, *below));
  EXPECT_TRUE(refused.starts_with("the round assumes ")) << refused;
  EXPECT_TRUE(refused.ends_with("% of its patients corrupt, below the 5.0% a patient takes"))
      << refused;
  EXPECT_EQ(Answer(Valid()), "joined");
}

// ⌊5% × 100⌋ = 5 corrupt patients assumed: a patient allowing for 6 refuses, one for 5 joins.
TEST_F(NeighbourhoodPatientTest,
       APatientRefusesARoundAssumingFewerCorruptPatientsThanItsMaxCorrupt) {
  ASSERT_NO_FATAL_FAILURE(StartNode([](NodeOptions& o) {
    o.graph = true;
    o.max_corrupt = 6;
  }));
  EXPECT_EQ(Answer(Valid()),
            "the round assumes 5 corrupt patients of 100, fewer than this patient's 6");
  StopNode();
  ASSERT_NO_FATAL_FAILURE(StartNode([](NodeOptions& o) {
    o.graph = true;
    o.max_corrupt = 5;
  }));
  EXPECT_EQ(Answer(Valid()), "joined");
}

// ---- 6. Real processes: tools/launch with 120 patients ----

const fs::path kBin = TALLY_BIN_DIR;

// p001..p120 from `first` to `last`, as JSON strings.
std::string Names(size_t first, size_t last) {
  std::string out;
  for (size_t i = first; i <= last; ++i) {
    const std::string digits = std::to_string(i);
    out += (i > first ? ", \"p" : "\"p") + std::string(3 - digits.size(), '0') + digits + "\"";
  }
  return out;
}

// tools/launch --patients 120 --drop 12 --drop-at `phase` --json: a neighbourhood round (the
// default above 100 patients), the last 12 killed (SIGKILL) at `phase`; the sum must match
// the survivors' (those at unmask are survivors: their masked inputs are in).
void LaunchWithDrops(const std::string& phase) {
  if (kSanitized) GTEST_SKIP() << "120 processes under AddressSanitizer: the normal build runs it";
  TempDir dir;
  const std::vector<std::string> argv = {(kBin / "tools/tally-launch").string(),
                                         "--bin-dir",
                                         kBin.string(),
                                         "--workdir",
                                         (dir.path() / "run").string(),
                                         "--patients",
                                         "120",
                                         "--drop",
                                         "12",
                                         "--drop-at",
                                         phase,
                                         "--json"};
  auto launch = Child::Spawn(argv, dir.path() / "launch.log");
  ASSERT_TRUE(launch.ok()) << launch.message();
  auto line = launch->ReadLine(std::chrono::minutes(2));
  ASSERT_TRUE(line) << LastLine(dir.path() / "launch.log");
  EXPECT_TRUE(Contains(*line, "\"match\": true")) << *line;
  const bool survivors_all = phase == "unmask";
  EXPECT_TRUE(Contains(*line, "\"survivors\": [" + Names(1, survivors_all ? 120 : 108) +
                                  "], \"dropped\": [" + (survivors_all ? "" : Names(109, 120)) +
                                  "], "))
      << *line;
  EXPECT_EQ(launch->Wait(std::chrono::minutes(1)), 0) << LastLine(dir.path() / "launch.log");
  const std::string log = ReadText(dir.path() / "launch.log");
  EXPECT_TRUE(Contains(log, "launch: a neighbourhood round: each patient with ")) << log;
  EXPECT_EQ(CountOf(log, "(SIGKILL) at " + phase), 12u) << log;
}

TEST(NeighbourhoodLaunchTest, LaunchOf120With12KilledAtShareGivesTheExactSum) {
  LaunchWithDrops("share");
}
TEST(NeighbourhoodLaunchTest, LaunchOf120With12KilledAtMaskGivesTheExactSum) {
  LaunchWithDrops("mask");
}
TEST(NeighbourhoodLaunchTest, LaunchOf120With12KilledAtUnmaskGivesTheExactSum) {
  LaunchWithDrops("unmask");
}

}  // namespace
}  // namespace tally::test
