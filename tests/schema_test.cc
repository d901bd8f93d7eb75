// Wire schema (protocol 3, rounds that survive dropouts, keys and confirmations signed with
// Ed25519): round trips, pinned bytes, the round's sets and threshold, batches and unmask
// plaintexts, and one test per way a peer can send a bad message, including the shapes a stale
// peer could still send (protocol 1's and 2's versions, and protocol 3's earlier shapes under the
// same version: a join with a nonce or with tags, the "sum" phase, phase updates with nonces,
// requests without a threshold, keys items and confirmations sized for tags).

#include "schema/schema.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <msgpack.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "schema/results.h"
#include "schema/system.h"
#include "schema/text.h"
#include "tests/contains.h"

namespace tally {
namespace {

RoundId TestRound() {
  RoundId r{};
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<uint8_t>(0xa0 + i);
  return r;
}

std::vector<uint8_t> SealedBytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 31 + 7);
  return v;
}

// Round keys, signatures and shares whose bytes all differ from another seed's.
RoundKey TestKey(uint8_t seed) {
  RoundKey k{};
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed * 37 + i);
  return k;
}
Signature TestSignature(uint8_t seed) {
  Signature s{};
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(seed * 53 + 3 * i);
  return s;
}
Share TestShare(uint8_t seed) {
  Share s{};
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(seed * 71 + 5 * i);
  return s;
}

// A join: the round keys and the patient's signature on them.
Join TestJoin() { return Join{TestRound(), TestKey(1), TestKey(2), TestSignature(3)}; }

// "1101" -> {true, true, false, true}: a set of participants, first participant first.
Members Bits(std::string_view flags) {
  Members m;
  for (char c : flags) m.push_back(c == '1');
  return m;
}

// An item of `kind` with its one size: keys 128 (cpk || spk || signature), shares 104 (a
// sealed share), confirm and survivors 64 (a signature).
BatchItem Item(BatchKind kind, uint32_t index) {
  const size_t size = kind == BatchKind::kKeys     ? kKeysItemSize
                      : kind == BatchKind::kShares ? kSealedShareSize
                                                   : kSignatureSize;
  std::vector<uint8_t> data(size);
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<uint8_t>(index * 13 + i);
  return BatchItem{index, std::move(data)};
}
Batch TestBatch(BatchKind kind, std::vector<uint32_t> indices = {0, 2}) {
  Batch b{TestRound(), kind, {}};
  for (uint32_t i : indices) b.items.push_back(Item(kind, i));
  return b;
}

Envelope TestEnvelope() {
  return Envelope{EnvelopeKind::kPartial, TestRound(), "patient-7", "hospital_a",
                  SealedBytes(kSealOverhead + 50)};
}

// The sets a round has at `phase` when everyone takes part to the end, except at confirm (the
// last participant vanished before its masked input) and abort (the round aborted in the mask
// phase).
RoundSets SetsAt(Phase phase, size_t n) {
  const Members all(n, true);
  Members but_last = all;
  if (n > 0) but_last[n - 1] = false;
  switch (phase) {
    case Phase::kOpen:
      return {};
    case Phase::kShare:
      return {all, {}, {}, {}};
    case Phase::kMask:
    case Phase::kAbort:
      return {all, all, {}, {}};
    case Phase::kConfirm:
      return {all, all, but_last, {}};
    case Phase::kUnmask:
    case Phase::kDone:
      return {all, all, all, {}};
  }
  return {};
}

// A phase update as the broker publishes it, with the safe threshold and the sets of its phase.
PhaseUpdate TestUpdate(Phase phase, std::vector<std::string> participants = {"alice", "bob"}) {
  const size_t n = participants.size();
  PhaseUpdate u{TestRound(),
                phase,
                9,
                3,
                {"hospital", 100, 4, std::move(participants), {}, {}, SafeThreshold(n)},
                SetsAt(phase, n),
                500,
                ""};
  if (phase == Phase::kAbort)
    u.reason = "bob dropped out (at most 1 of 2 can send a masked input, the threshold is 2)";
  return u;
}

// A neighbourhood round's graph: 5% assumed corrupt, 10% assumed to drop out, degree 4 and
// threshold 3 (a valid graph for 6 to 10,000 patients), a seed and a signature of distinct bytes.
Neighbourhood TestGraph() {
  Neighbourhood g{50'000, 100'000, 4, 3, {}, TestSignature(11)};
  for (size_t i = 0; i < g.seed.size(); ++i) g.seed[i] = static_cast<uint8_t>(0x30 + 7 * i);
  return g;
}

// Builds raw msgpack for malformed inputs the encoder would never produce. Raw messages carry
// kProtocolVersion unless a test is about the version.
using Packer = msgpack::packer<msgpack::sbuffer>;
std::vector<uint8_t> Raw(const std::function<void(Packer&)>& fill) {
  msgpack::sbuffer buf;
  Packer p(buf);
  fill(p);
  return std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(buf.data()),
                              reinterpret_cast<const uint8_t*>(buf.data()) + buf.size());
}
void Str(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}
void Bin(Packer& p, std::span<const uint8_t> b) {
  p.pack_bin(static_cast<uint32_t>(b.size()));
  p.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}
void RoundBin(Packer& p, size_t size) { Bin(p, std::vector<uint8_t>(size, 0x42)); }
// A round's params after its participants, for a round without columns: no columns, no weight
// (the threshold and the graph follow).
void NoColumns(Packer& p) {
  p.pack_array(0);
  p.pack_array(2);
  p.pack_uint64(0);
  p.pack_uint32(0);
}
// The four sets of `s` as bins (empty ones as empty bins).
void PackSets(Packer& p, const RoundSets& s) {
  for (const Members* m : {&s.joined, &s.shared, &s.masked, &s.confirmed}) Bin(p, MembersBits(*m));
}
// The graph element: [] for a full round, else [corrupt, dropout, k, t, seed, signature].
void PackGraph(Packer& p, const std::optional<Neighbourhood>& graph) {
  if (!graph) {
    p.pack_array(0);
    return;
  }
  p.pack_array(6);
  p.pack_uint32(graph->corrupt_ppm);
  p.pack_uint32(graph->dropout_ppm);
  p.pack_uint32(graph->degree);
  p.pack_uint32(graph->threshold);
  Bin(p, graph->seed);
  Bin(p, graph->signature);
}

// Request with its length (and optionally its threshold and its graph) overridable.
std::vector<uint8_t> RawRequest(const std::function<void(Packer&)>& length,
                                const std::vector<std::string>& participants = {"alice"},
                                const std::function<void(Packer&)>& threshold = nullptr,
                                const std::function<void(Packer&)>& graph = nullptr) {
  return Raw([&](Packer& p) {
    p.pack_array(11);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(100);
    length(p);
    p.pack_array(static_cast<uint32_t>(participants.size()));
    for (const auto& n : participants) Str(p, n);
    NoColumns(p);
    if (threshold) {
      threshold(p);
    } else {
      p.pack_uint32(0);
    }
    if (graph) {
      graph(p);
    } else {
      p.pack_array(0);  // a full round
    }
    p.pack_uint32(0);  // deadline_ms
  });
}

// PhaseUpdate `u` packed field by field, with its four sets (and optionally deadline_ms and the
// graph) overridable.
std::vector<uint8_t> RawPhase(const PhaseUpdate& u, const std::function<void(Packer&)>& sets,
                              const std::function<void(Packer&)>& deadline = nullptr,
                              const std::function<void(Packer&)>& graph = nullptr) {
  return Raw([&](Packer& p) {
    p.pack_array(20);
    p.pack_uint32(kProtocolVersion);
    Str(p, "phase");
    Bin(p, u.round);
    Str(p, PhaseName(u.phase));
    p.pack_uint64(u.seq);
    p.pack_uint64(u.ticket);
    Str(p, u.params.hospital);
    p.pack_uint64(u.params.range);
    p.pack_uint32(u.params.length);
    p.pack_array(static_cast<uint32_t>(u.params.participants.size()));
    for (const auto& n : u.params.participants) Str(p, n);
    NoColumns(p);
    p.pack_uint32(u.params.threshold);
    if (graph) {
      graph(p);
    } else {
      PackGraph(p, u.params.graph);
    }
    sets(p);
    if (deadline) {
      deadline(p);
    } else {
      p.pack_uint32(u.deadline_ms);
    }
    Str(p, u.reason);
  });
}

// A batch with raw items: each a function packing one element of the items array.
std::vector<uint8_t> RawBatch(std::string_view kind,
                              const std::vector<std::function<void(Packer&)>>& items) {
  return Raw([&](Packer& p) {
    p.pack_array(5);
    p.pack_uint32(kProtocolVersion);
    Str(p, "batch");
    RoundBin(p, 16);
    Str(p, kind);
    p.pack_array(static_cast<uint32_t>(items.size()));
    for (const auto& item : items) item(p);
  });
}
// [index, bin of `size` bytes]
std::function<void(Packer&)> RawItem(uint64_t index, size_t size) {
  return [index, size](Packer& p) {
    p.pack_array(2);
    p.pack_uint64(index);
    RoundBin(p, size);
  };
}

std::string DecodeError(std::span<const uint8_t> bytes, const Limits& limits = {}) {
  Result<Message> r = Decode(bytes, limits);
  EXPECT_FALSE(r.ok()) << "decoded a malformed message";
  return r.message();
}

void ExpectRoundTrip(const Message& m, const Limits& limits = {}) {
  const std::vector<uint8_t> bytes = Encode(m);
  Result<Message> back = Decode(bytes, limits);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(*back, m);
  EXPECT_EQ(Encode(*back), bytes);
}

// What the broker decodes with in a round of vectors of `length` (broker/broker.cc).
Limits BrokerLimits(uint32_t length) {
  Limits l;
  l.max_message_bytes = MaxMessageSize(length);
  l.max_length = length;
  l.max_sealed_bytes = MaxSealedSize(length);
  return l;
}

// ---- Round trips ---------------------------------------------------------------------------

TEST(SchemaRoundTrip, Request) {
  ExpectRoundTrip(Request{
      std::numeric_limits<uint64_t>::max(),
      {"", 1'000'000'007, kMaxVectorLength, {"alice", "bob", "charlie-2", "d_4"}, {}, {}, 3},
      0});
  ExpectRoundTrip(Request{0, {"", 0, 1, {}}, 0});  // empty participants: the whole roster
  ExpectRoundTrip(Request{9, {"", 10, 1, {"alice", "bob"}}, 2500});  // a deadline asked for
  // Threshold 0 asks the broker for the safe minimum; any u32 travels (the broker checks it).
  ExpectRoundTrip(Request{9, {"", 10, 1, {"alice", "bob"}, {}, {}, UINT32_MAX}, 0});
  EXPECT_NE(Encode(Request{9, {"", 10, 1, {"a", "b"}, {}, {}, 2}, 0}),
            Encode(Request{9, {"", 10, 1, {"a", "b"}, {}, {}, 0}, 0}));
}

// Every refused request gets a notice, even one that does not decode, as long as its ticket
// can be read: [version, "request", ticket uint, ...].
TEST(SchemaDecode, RequestTicketIsReadFromARequestThatDoesNotDecode) {
  EXPECT_EQ(RequestTicket(Encode(Request{42, {"", 10, 1, {"alice", "bob"}}, 0})), 42u);
  std::vector<uint8_t> bad_length = RawRequest([](Packer& p) { p.pack_uint32(0); });
  ASSERT_FALSE(Decode(bad_length).ok());
  EXPECT_EQ(RequestTicket(bad_length), 5u);
  std::vector<uint8_t> short_request = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(77);
  });
  EXPECT_EQ(RequestTicket(short_request), 77u);
  // A hospital from before thresholds (9 fields) is still answered by its ticket.
  std::vector<uint8_t> no_threshold = Raw([](Packer& p) {
    p.pack_array(9);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(78);
    p.pack_uint64(100);
    p.pack_uint32(1);
    p.pack_array(0);
    NoColumns(p);
    p.pack_uint32(0);
  });
  EXPECT_EQ(DecodeError(no_threshold), "request: expected 11 fields, got 9");
  EXPECT_EQ(RequestTicket(no_threshold), 78u);
  // So is one from before neighbourhoods (10 fields: a threshold, no graph).
  std::vector<uint8_t> no_graph = Raw([](Packer& p) {
    p.pack_array(10);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(79);
    p.pack_uint64(100);
    p.pack_uint32(1);
    p.pack_array(0);
    NoColumns(p);
    p.pack_uint32(0);
    p.pack_uint32(0);
  });
  EXPECT_EQ(DecodeError(no_graph), "request: expected 11 fields, got 10");
  EXPECT_EQ(RequestTicket(no_graph), 79u);
  EXPECT_EQ(RequestTicket(Encode(TestJoin())), std::nullopt);
  EXPECT_EQ(RequestTicket(Encode(TestBatch(BatchKind::kShares))), std::nullopt);
  EXPECT_EQ(RequestTicket(std::vector<uint8_t>{0x93, 0x02, 0xa7, 'r', 'e', 'q', 'u', 'e', 's', 't',
                                               0xa1, 'x'}),
            std::nullopt);  // a ticket that is not a uint
  EXPECT_EQ(RequestTicket(std::vector<uint8_t>{0x01}), std::nullopt);
}

TEST(SchemaRoundTrip, JoinWithRoundKeysAndSignature) {
  ExpectRoundTrip(TestJoin());
  ExpectRoundTrip(Join{TestRound(), RoundKey{}, RoundKey{}, Signature{}});
  RoundKey ones;
  ones.fill(0xff);
  Signature all_ones;
  all_ones.fill(0xff);
  ExpectRoundTrip(Join{TestRound(), ones, ones, all_ones});
  // Both keys and the signature are on the wire, in their places: joins that differ in one
  // differ, and a join is the same size whatever the round (no field per other patient).
  const std::vector<uint8_t> bytes = Encode(TestJoin());
  EXPECT_EQ(bytes.size(), 7u + 18 + 2 * 34 + 2 + kSignatureSize);
  Join swapped_keys = TestJoin();
  std::swap(swapped_keys.cpk, swapped_keys.spk);
  EXPECT_NE(Encode(swapped_keys), bytes);
  ExpectRoundTrip(swapped_keys);
  Join other_signature = TestJoin();
  other_signature.signature[kSignatureSize - 1] ^= 1;
  EXPECT_NE(Encode(other_signature), bytes);
  ExpectRoundTrip(other_signature);
}

TEST(SchemaRoundTrip, Refuse) {
  ExpectRoundTrip(Refuse{TestRound(), "input does not fit range 100 (length 3)"});
  ExpectRoundTrip(Refuse{TestRound(), std::string(kMaxReasonLength, '~')});
}

TEST(SchemaRoundTrip, EnvelopeOfEachKind) {
  ExpectRoundTrip(TestEnvelope());
  Envelope big = TestEnvelope();
  big.sealed = SealedBytes(MaxSealedSize(1000));
  ExpectRoundTrip(big);
  Envelope unmask = TestEnvelope();
  unmask.kind = EnvelopeKind::kUnmask;
  ExpectRoundTrip(unmask);
  // The kind is on the wire: the same sealed bytes as a partial and as an unmask differ.
  EXPECT_NE(Encode(unmask), Encode(TestEnvelope()));
}

TEST(SchemaRoundTrip, Ack) { ExpectRoundTrip(Ack{TestRound()}); }

TEST(SchemaRoundTrip, BatchOfEachKind) {
  for (BatchKind kind : {BatchKind::kKeys, BatchKind::kShares, BatchKind::kConfirm}) {
    ExpectRoundTrip(TestBatch(kind));
    ExpectRoundTrip(Batch{TestRound(), kind, {}});  // nobody else: an empty batch
    ExpectRoundTrip(TestBatch(kind, {7}));
  }
  // A keys batch as the broker sends it (to a patient: every other member of U1; to the
  // hospital: every member): cpk || spk || signature, 128 bytes, in that order.
  Batch to_hospital{TestRound(), BatchKind::kKeys, {}};
  for (uint32_t i = 0; i < 3; ++i) {
    const RoundKey cpk = TestKey(static_cast<uint8_t>(i));
    const RoundKey spk = TestKey(static_cast<uint8_t>(i + 10));
    const Signature sig = TestSignature(static_cast<uint8_t>(i + 20));
    std::vector<uint8_t> keys(cpk.begin(), cpk.end());
    keys.insert(keys.end(), spk.begin(), spk.end());
    keys.insert(keys.end(), sig.begin(), sig.end());
    ASSERT_EQ(keys.size(), kKeysItemSize);
    to_hospital.items.push_back({i, keys});
  }
  ExpectRoundTrip(to_hospital);
  // A confirmation as a patient sends it: one item, its own index and signature.
  const Signature own = TestSignature(9);
  ExpectRoundTrip(
      Batch{TestRound(), BatchKind::kConfirm, {{5, std::vector<uint8_t>(own.begin(), own.end())}}});
  // Items are in the order sent, not sorted: another order is another batch.
  const Batch forward = TestBatch(BatchKind::kConfirm, {1, 3});
  const Batch backward = TestBatch(BatchKind::kConfirm, {3, 1});
  ExpectRoundTrip(backward);
  EXPECT_NE(Encode(forward), Encode(backward));
  // The largest index a round can have.
  ExpectRoundTrip(TestBatch(BatchKind::kShares, {0, uint32_t{kMaxParticipants - 1}}));
}

TEST(SchemaRoundTrip, PhaseUpdateEveryPhaseWithItsSets) {
  const std::vector<std::string> names = {"alice", "bob", "carol", "dave"};
  // A round of four with threshold 3 where dave vanished after sharing: the sets of each phase.
  const Members all = Bits("1111"), survivors = Bits("1110");
  const std::vector<std::pair<Phase, RoundSets>> phases = {
      {Phase::kOpen, {}},
      {Phase::kShare, {all, {}, {}, {}}},
      {Phase::kMask, {all, all, {}, {}}},
      {Phase::kConfirm, {all, all, survivors, {}}},
      {Phase::kUnmask, {all, all, survivors, survivors}},
      {Phase::kDone, {all, all, survivors, survivors}},
      {Phase::kDone, {all, all, all, {}}},  // nobody vanished: no confirm phase, no U4
      {Phase::kAbort, {}},
      {Phase::kAbort, {survivors, {}, {}, {}}},
      {Phase::kAbort, {all, survivors, Bits("0110"), {}}},
      {Phase::kAbort, {all, all, survivors, survivors}},
  };
  for (const auto& [phase, sets] : phases) {
    PhaseUpdate u{TestRound(),
                  phase,
                  1ull << 40,
                  77,
                  {"hospital", 1ull << 62, 4096, names, {}, {}, 3},
                  sets,
                  15000,
                  phase == Phase::kAbort ? "charlie did not join" : ""};
    ExpectRoundTrip(u);
  }
  // Sets are bitmaps over the participants in order: another member is another update.
  PhaseUpdate u = TestUpdate(Phase::kConfirm, names);
  const std::vector<uint8_t> bytes = Encode(u);
  u.sets.masked = Bits("0111");
  EXPECT_NE(Encode(u), bytes);
  ExpectRoundTrip(u);
  // Nine participants take two bytes per set, the ninth in bit 0 of the second.
  std::vector<std::string> nine;
  for (int i = 0; i < 9; ++i) nine.push_back("p" + std::to_string(i));
  ExpectRoundTrip(TestUpdate(Phase::kConfirm, nine));
  PhaseUpdate ninth = TestUpdate(Phase::kShare, nine);
  ninth.sets.joined = Bits("000000001");
  ExpectRoundTrip(ninth);
  EXPECT_EQ(MembersBits(ninth.sets.joined), (std::vector<uint8_t>{0x00, 0x01}));
}

// A confirm phase comes before the unmask phase after a dropout after sharing in a full round,
// and always in a neighbourhood round; the unmaskers are U4 then, else U3.
TEST(SchemaSets, AConfirmPhaseAfterADropoutInAFullRoundAndAlwaysInANeighbourhoodRound) {
  const Members all = Bits("1111"), survivors = Bits("1110");
  RoundParams full{"hospital", 100, 1, {"alice", "bob", "carol", "dave"}, {}, {}, 3};
  EXPECT_FALSE(HasConfirmPhase(full, {all, all, all, {}}));
  EXPECT_TRUE(HasConfirmPhase(full, {all, all, survivors, {}}));
  RoundParams neighbourhood = full;
  neighbourhood.graph = Neighbourhood{};
  EXPECT_TRUE(HasConfirmPhase(neighbourhood, {all, all, all, {}}));
  EXPECT_EQ(Unmaskers({all, all, all, {}}), all);
  EXPECT_EQ(Unmaskers({all, all, all, survivors}), survivors);
}

// A neighbourhood round's request and phase updates carry its graph whole: every field decodes
// to what was sent and is on the wire (a graph with any field changed is another message).
TEST(SchemaRoundTrip, RequestAndPhaseUpdatesWithAGraphRoundTripExactly) {
  const std::vector<std::string> six = {"p0", "p1", "p2", "p3", "p4", "p5"};
  const Request r{9, {"", 10, 1, six, {}, {}, SafeThreshold(6), TestGraph()}, 2500};
  ExpectRoundTrip(r);
  Result<Message> back = Decode(Encode(r));
  ASSERT_TRUE(back.ok()) << back.message();
  const std::optional<Neighbourhood>& graph = std::get<Request>(*back).params.graph;
  ASSERT_TRUE(graph.has_value());
  EXPECT_EQ(*graph, TestGraph());
  // The same request for a full round is another message, and so is one with any field of the
  // graph changed; each round-trips.
  Request full = r;
  full.params.graph.reset();
  EXPECT_NE(Encode(full), Encode(r));
  ExpectRoundTrip(full);
  const std::vector<std::function<void(Neighbourhood&)>> changes = {
      [](Neighbourhood& g) { g.corrupt_ppm = 999'999; },
      [](Neighbourhood& g) { g.dropout_ppm = 0; },
      [](Neighbourhood& g) { g.degree = 2; },
      [](Neighbourhood& g) { g.threshold = 4; },
      [](Neighbourhood& g) { g.seed[31] ^= 1; },
      [](Neighbourhood& g) { g.signature[0] ^= 0x80; },
      // The decoder takes any u32 (CheckRoundParams judges the values).
      [](Neighbourhood& g) { g.corrupt_ppm = g.dropout_ppm = g.degree = g.threshold = UINT32_MAX; },
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    Request other = r;
    changes[i](*other.params.graph);
    EXPECT_NE(Encode(other), Encode(r)) << i;
    ExpectRoundTrip(other);
  }
  // A neighbourhood round's phase updates, each with the sets of its phase: always a confirm
  // phase (by the hospital), U4 = U3.
  const Members all(6, true);
  Members survivors = all;
  survivors[5] = false;
  const std::vector<std::pair<Phase, RoundSets>> phases = {
      {Phase::kOpen, {}},
      {Phase::kShare, {all, {}, {}, {}}},
      {Phase::kMask, {all, all, {}, {}}},
      {Phase::kConfirm, {all, all, survivors, {}}},
      {Phase::kConfirm, {all, all, all, {}}},  // nobody dropped: still confirmed
      {Phase::kUnmask, {all, all, survivors, survivors}},
      {Phase::kDone, {all, all, all, all}},
      {Phase::kAbort, {all, survivors, {}, {}}},
  };
  for (const auto& [phase, sets] : phases) {
    const PhaseUpdate u{TestRound(),
                        phase,
                        1ull << 40,
                        77,
                        {"hospital", 10, 1, six, {}, {}, SafeThreshold(6), TestGraph()},
                        sets,
                        15000,
                        phase == Phase::kAbort ? "p5 did not send a masked input" : ""};
    EXPECT_TRUE(CheckSets(u).ok()) << PhaseName(phase) << ": " << CheckSets(u).message();
    ExpectRoundTrip(u);
    PhaseUpdate full_round = u;
    full_round.params.graph.reset();
    EXPECT_NE(Encode(full_round), Encode(u));
  }
}

TEST(SchemaRoundTrip, Notice) {
  ExpectRoundTrip(Notice{42, "round queue full"});
  ExpectRoundTrip(Notice{0, ""});
}

TEST(SchemaRoundTrip, ManyParticipants) {
  Request r{1, {"", 10, 1, {}}, 0};
  for (size_t i = 0; i < kMaxParticipants; ++i)
    r.params.participants.push_back("p" + std::to_string(i));
  ExpectRoundTrip(r);
  // The largest phase update: kMaxParticipants names of 32 characters and all four sets, which
  // MaxMessageSize must cover.
  PhaseUpdate u{TestRound(), Phase::kUnmask, 1, 2, {"hospital", 3, 1, {}}, {}, 10, ""};
  for (size_t i = 0; i < kMaxParticipants; ++i) {
    std::string name = "p" + std::to_string(i);
    u.params.participants.push_back(name + std::string(kMaxNameLength - name.size(), 'x'));
  }
  u.params.threshold = SafeThreshold(kMaxParticipants);
  const Members all(kMaxParticipants, true);
  Members survivors = all;
  survivors[kMaxParticipants - 1] = false;
  u.sets = {all, all, survivors, survivors};
  ASSERT_TRUE(CheckSets(u).ok()) << CheckSets(u).message();
  ExpectRoundTrip(u, BrokerLimits(1));
  EXPECT_LE(Encode(u).size(), MaxMessageSize(1));
}

TEST(SchemaPayload, RoundTripTenThousandValuesNearTwoToThe64) {
  std::vector<uint64_t> values(10'000);
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = std::numeric_limits<uint64_t>::max() - (rng() % 1000) - i;
  }
  values[0] = std::numeric_limits<uint64_t>::max();
  values[1] = 0;
  const std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kPartial, values);
  // [3, "partial", bin32 header + 80,000 bytes]: 1 + 1 + 8 + 5 + 80,000.
  EXPECT_EQ(bytes.size(), 80'015u);
  Result<std::vector<uint64_t>> back = DecodePayload(bytes, EnvelopeKind::kPartial, 10'000);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(*back, values);
}

TEST(SchemaPayload, ValuesAreLittleEndianBin) {
  const std::vector<uint64_t> values = {0x0102030405060708ull};
  const std::vector<uint8_t> expected = {0x93, 0x03, 0xa7, 'p',  'a',  'r',  't',
                                         'i',  'a',  'l',  0xc4, 0x08, 0x08, 0x07,
                                         0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
  EXPECT_EQ(EncodePayload(EnvelopeKind::kPartial, values), expected);
}

// Protocol 1's "share" payload, or any other kind name, is not a partial.
TEST(SchemaPayload, KindShareAndUnknownKindsRejected) {
  for (std::string_view kind : {"share", "partia", "PARTIAL", "shares", ""}) {
    const std::vector<uint8_t> bytes = Raw([kind](Packer& p) {
      p.pack_array(3);
      p.pack_uint32(kProtocolVersion);
      Str(p, kind);
      Bin(p, std::vector<uint8_t>(8, 1));
    });
    Result<std::vector<uint64_t>> r = DecodePayload(bytes, EnvelopeKind::kPartial, 1);
    ASSERT_FALSE(r.ok()) << kind;
    EXPECT_EQ(r.message(), "payload: unknown kind") << kind;
  }
}

// A payload of one kind never opens as the other: the kind names differ, and an unmask's
// plaintext has another shape altogether.
TEST(SchemaPayload, APartialIsNotAnUnmaskNorTheOtherWayRound) {
  const std::vector<uint64_t> values = {1, 2, 3, 4};
  const std::vector<uint8_t> partial = EncodePayload(EnvelopeKind::kPartial, values);
  const std::vector<uint8_t> as_unmask = EncodePayload(EnvelopeKind::kUnmask, values);
  EXPECT_EQ(DecodePayload(as_unmask, EnvelopeKind::kPartial, 4).message(),
            "payload: kind is unmask, expected partial");
  EXPECT_EQ(DecodePayload(partial, EnvelopeKind::kUnmask, 4).message(),
            "payload: kind is partial, expected unmask");
  EXPECT_EQ(DecodeUnmask(partial, 3).message(), "unmask: expected 5 fields, got 3");
  UnmaskShares shares;
  shares.masked = Bits("111");
  shares.self_seeds = {TestShare(1), TestShare(2), TestShare(3)};
  const std::vector<uint8_t> unmask = EncodeUnmask(shares);
  EXPECT_EQ(DecodePayload(unmask, EnvelopeKind::kPartial, 12).message(),
            "msgpack array longer than the limit of 3 elements");
  EXPECT_EQ(PayloadValues(unmask, EnvelopeKind::kUnmask, 12).message(),
            "msgpack array longer than the limit of 3 elements");
}

TEST(SchemaPayload, WrongLength) {
  const std::vector<uint64_t> values = {1, 2, 3};
  const std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kPartial, values);
  Result<std::vector<uint64_t>> longer = DecodePayload(bytes, EnvelopeKind::kPartial, 4);
  ASSERT_FALSE(longer.ok());
  EXPECT_TRUE(Contains(longer.message(), "values must be 32 bytes (4 elements), got 24"));
  Result<std::vector<uint64_t>> shorter = DecodePayload(bytes, EnvelopeKind::kPartial, 2);
  ASSERT_FALSE(shorter.ok());
  EXPECT_TRUE(Contains(shorter.message(), "values must be 16 bytes (2 elements), got 24"));
}

TEST(SchemaPayload, ValuesAsArrayOfNumbersRejected) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "partial");
    p.pack_array(1);
    p.pack_uint64(5);
  });
  Result<std::vector<uint64_t>> r = DecodePayload(bytes, EnvelopeKind::kPartial, 1);
  ASSERT_FALSE(r.ok());
  // A payload allows no nested container at all, so the decoder stops before the field check.
  EXPECT_TRUE(Contains(r.message(), "nesting too deep"));
  const std::vector<uint8_t> empty_array = {0x93, 0x03, 0xa7, 'p', 'a', 'r',
                                            't',  'i',  'a',  'l', 0x90};
  EXPECT_TRUE(Contains(DecodePayload(empty_array, EnvelopeKind::kPartial, 1).message(),
                       "nesting too deep"));
  const std::vector<uint8_t> str_values = {0x93, 0x03, 0xa7, 'p', 'a', 'r',
                                           't',  'i',  'a',  'l', 0xa0};
  EXPECT_EQ(DecodePayload(str_values, EnvelopeKind::kPartial, 1).message(),
            "payload: values must be bin, got str");
}

TEST(SchemaPayload, TrailingBytesAndVersion) {
  std::vector<uint8_t> bytes = EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>{9});
  bytes.push_back(0xc0);
  EXPECT_TRUE(
      Contains(DecodePayload(bytes, EnvelopeKind::kPartial, 1).message(), "1 trailing bytes"));
  bytes.pop_back();
  ASSERT_TRUE(DecodePayload(bytes, EnvelopeKind::kPartial, 1).ok());
  for (uint8_t version : {uint8_t{0x01}, uint8_t{0x02}, uint8_t{0x04}}) {  // older ones too
    bytes[1] = version;
    EXPECT_EQ(DecodePayload(bytes, EnvelopeKind::kPartial, 1).message(),
              "payload: unsupported version");
  }
}

// ---- Unmask plaintexts ---------------------------------------------------------------------

// Survivors alice and carol of four, bob dropped after sharing, dave never shared: a share of
// each survivor's self-mask seed and of bob's mask secret.
UnmaskShares TestUnmask() {
  UnmaskShares s;
  s.masked = Bits("1010");
  s.self_seeds = {TestShare(1), TestShare(3)};
  s.mask_secrets = {TestShare(2)};
  return s;
}

void ExpectSameShares(const UnmaskShares& a, const UnmaskShares& b) {
  EXPECT_EQ(a.masked, b.masked);
  EXPECT_EQ(a.self_seeds, b.self_seeds);
  EXPECT_EQ(a.mask_secrets, b.mask_secrets);
}

TEST(SchemaUnmask, RoundTrip) {
  const UnmaskShares shares = TestUnmask();
  const std::vector<uint8_t> bytes = EncodeUnmask(shares);
  Result<UnmaskShares> back = DecodeUnmask(bytes, 4);
  ASSERT_TRUE(back.ok()) << back.message();
  ExpectSameShares(*back, shares);
  EXPECT_EQ(EncodeUnmask(*back), bytes);
  // Nobody dropped: no mask secrets at all.
  UnmaskShares none;
  none.masked = Bits("111");
  none.self_seeds = {TestShare(7), TestShare(8), TestShare(9)};
  back = DecodeUnmask(EncodeUnmask(none), 3);
  ASSERT_TRUE(back.ok()) << back.message();
  ExpectSameShares(*back, none);
  EXPECT_TRUE(back->mask_secrets.empty());
}

// [3, "unmask", masked bin (ceil(n/8) bytes), self_seeds bin (32 per share), mask_secrets bin].
TEST(SchemaUnmask, BytesArePinned) {
  UnmaskShares shares;
  shares.masked = Bits("101");
  shares.self_seeds = {TestShare(1), TestShare(2)};
  std::vector<uint8_t> expected = {0x95, 0x03, 0xa6, 'u',  'n',  'm',  'a',
                                   's',  'k',  0xc4, 0x01, 0x05, 0xc4, 0x40};
  for (const Share& s : shares.self_seeds) expected.insert(expected.end(), s.begin(), s.end());
  expected.insert(expected.end(), {0xc4, 0x00});
  EXPECT_EQ(EncodeUnmask(shares), expected);
}

TEST(SchemaUnmask, MalformedPlaintextsAreRefused) {
  auto raw = [](uint32_t version, std::string_view kind, size_t masked, size_t seeds,
                size_t secrets, int fields = 5) {
    return Raw([=](Packer& p) {
      p.pack_array(static_cast<uint32_t>(fields));
      p.pack_uint32(version);
      Str(p, kind);
      RoundBin(p, masked);
      if (fields > 3) RoundBin(p, seeds);
      if (fields > 4) RoundBin(p, secrets);
      if (fields > 5) p.pack_nil();
    });
  };
  // 0x42 sets bits 1 and 6: a set of 3 participants holds no bit 6.
  struct Case {
    std::vector<uint8_t> bytes;
    size_t participants;
    std::string error;
  };
  const std::vector<Case> cases = {
      {raw(3, "unmask", 1, 32, 0), 8, ""},
      {raw(2, "unmask", 1, 32, 0), 8, "unmask: unsupported version"},
      {raw(3, "partial", 1, 32, 0), 8, "unmask: kind must be \"unmask\""},
      {raw(3, "unmask", 1, 32, 0, 4), 8, "unmask: expected 5 fields, got 4"},
      {raw(3, "unmask", 1, 32, 0, 6), 8, "msgpack array longer than the limit of 5 elements"},
      {raw(3, "unmask", 2, 32, 0), 8,
       "unmask: masked must be empty or 1 bytes for 8 participants, got 2"},
      {raw(3, "unmask", 1, 32, 0), 3, "unmask: masked names a participant beyond the 3"},
      {raw(3, "unmask", 1, 33, 0), 8,
       "unmask: self_seeds must hold at most 8 shares of 32 bytes, got 33 bytes"},
      {raw(3, "unmask", 1, 32, 31), 8,
       "unmask: mask_secrets must hold at most 8 shares of 32 bytes, got 31 bytes"},
      // More shares than participants: the bin bound stops it before the field check.
      {raw(3, "unmask", 1, 32 * 9, 0), 8, "msgpack bin longer than the limit of 256 bytes"},
  };
  for (const Case& k : cases) {
    Result<UnmaskShares> r = DecodeUnmask(k.bytes, k.participants);
    if (k.error.empty()) {
      EXPECT_TRUE(r.ok()) << r.message();
      continue;
    }
    ASSERT_FALSE(r.ok()) << k.error;
    EXPECT_EQ(r.message(), k.error);
  }
  const std::vector<uint8_t> str_seeds = Raw([](Packer& p) {
    p.pack_array(5);
    p.pack_uint32(kProtocolVersion);
    Str(p, "unmask");
    RoundBin(p, 1);
    Str(p, "seeds");
    RoundBin(p, 0);
  });
  EXPECT_EQ(DecodeUnmask(str_seeds, 8).message(), "unmask: self_seeds must be bin, got str");
  // Both bins full would be two shares for some participant: over the plaintext's size bound.
  const std::vector<uint8_t> both = raw(3, "unmask", 1, 32 * 8, 32 * 8);
  EXPECT_TRUE(Contains(DecodeUnmask(both, 8).message(), "over the limit of")) << both.size();
  std::vector<uint8_t> trailing = EncodeUnmask(TestUnmask());
  trailing.push_back(0xc0);
  EXPECT_EQ(DecodeUnmask(trailing, 4).message(), "1 trailing bytes after unmask");
  EXPECT_EQ(DecodeUnmask({}, 4).message(), "empty unmask");
  const std::vector<uint8_t> good = EncodeUnmask(TestUnmask());
  for (size_t n = 1; n < good.size(); ++n)
    EXPECT_FALSE(DecodeUnmask(std::span<const uint8_t>(good.data(), n), 4).ok()) << n;
}

// The largest unmask, a share for each of 1000 participants, fits a sealed payload and an
// envelope as the broker's limits for a round of single values size them.
TEST(SchemaUnmask, MaxSealedAndMessageSizeCoverAnUnmaskOfAThousandParticipants) {
  UnmaskShares shares;
  shares.masked.assign(kMaxParticipants, true);
  for (size_t i = 700; i < kMaxParticipants; ++i) shares.masked[i] = false;
  for (size_t i = 0; i < 700; ++i) shares.self_seeds.push_back(TestShare(static_cast<uint8_t>(i)));
  for (size_t i = 700; i < kMaxParticipants; ++i)
    shares.mask_secrets.push_back(TestShare(static_cast<uint8_t>(i)));
  const std::vector<uint8_t> plaintext = EncodeUnmask(shares);
  Result<UnmaskShares> back = DecodeUnmask(plaintext, kMaxParticipants);
  ASSERT_TRUE(back.ok()) << back.message();
  ExpectSameShares(*back, shares);
  const size_t sealed = plaintext.size() + kSealOverhead;
  EXPECT_LE(sealed, MaxSealedSize(1));
  EXPECT_LE(sealed, MaxSealedSize(1, kMaxParticipants));
  EXPECT_GT(sealed, MaxSealedSize(1, 100));  // the participants do count
  // The envelope, with names as long as they come, under the broker's limits for length 1.
  Envelope e{EnvelopeKind::kUnmask, TestRound(), std::string(kMaxNameLength, 'p'),
             std::string(kMaxNameLength, 'h'), SealedBytes(sealed)};
  EXPECT_LE(Encode(e).size(), MaxMessageSize(1));
  ExpectRoundTrip(e, BrokerLimits(1));
  // The bounds are what protocol.h says, for rounds of single values and the longest vectors.
  EXPECT_EQ(MaxSealedSize(1), kMaxParticipants * kShareSize + kMaxParticipants / 8 +
                                  kPayloadOverhead + kSealOverhead);
  EXPECT_EQ(MaxSealedSize(kMaxVectorLength),
            size_t{kMaxVectorLength} * 8 + kPayloadOverhead + kSealOverhead);
  EXPECT_EQ(MaxMessageSize(1), MaxSealedSize(1) + kEnvelopeOverhead +
                                   kMaxParticipants * (kMaxNameLength + 2 + kKeysItemSize + 8));
}

// The largest batches a round of 1000 makes (the hospital's keys batch: an item for every
// participant) fit MaxMessageSize for single values, and a join always does.
TEST(SchemaRoundTrip, TheLargestJoinAndBatchesFitTheBrokerLimits) {
  const Limits limits = BrokerLimits(1);
  ExpectRoundTrip(TestJoin(), limits);
  for (BatchKind kind : {BatchKind::kKeys, BatchKind::kShares, BatchKind::kConfirm}) {
    std::vector<uint32_t> everyone;
    for (uint32_t i = 0; i < kMaxParticipants; ++i) everyone.push_back(i);
    const Batch b = TestBatch(kind, everyone);
    EXPECT_LE(Encode(b).size(), MaxMessageSize(1)) << BatchKindName(kind);
    ExpectRoundTrip(b, limits);
  }
}

// ---- Pinned wire bytes ---------------------------------------------------------------------

TEST(SchemaWire, JoinBytesArePinned) {
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(i);
  RoundKey cpk, spk;
  cpk.fill(0xc1);
  spk.fill(0x51);
  Signature sig;
  sig.fill(0x5e);
  // fixarray(6), fixint 3, fixstr "join", bin8(16) round id, bin8(32) cpk, bin8(32) spk,
  // bin8(64) signature: 9 + 16 + 2 * 34 + 2 + 64 bytes.
  std::vector<uint8_t> expected = {0x96, 0x03, 0xa4, 'j', 'o', 'i', 'n', 0xc4, 0x10};
  for (uint8_t x : round) expected.push_back(x);
  expected.insert(expected.end(), {0xc4, 0x20});
  expected.insert(expected.end(), 32, 0xc1);
  expected.insert(expected.end(), {0xc4, 0x20});
  expected.insert(expected.end(), 32, 0x51);
  expected.insert(expected.end(), {0xc4, 0x40});
  expected.insert(expected.end(), 64, 0x5e);
  ASSERT_EQ(expected.size(), 159u);
  const Join join{round, cpk, spk, sig};
  EXPECT_EQ(Encode(join), expected);
  Result<Message> back = Decode(expected);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<Join>(*back), join);
}

TEST(SchemaWire, PhaseUpdateBytesArePinned) {
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(i);
  PhaseUpdate u{round,
                Phase::kMask,
                1,
                2,
                {"h", 3, 1, {"a", "b"}, {}, {}, 2},
                {Bits("11"), Bits("11"), {}, {}},
                10,
                ""};
  // array16(20), 3, "phase", round, "mask", seq, ticket, hospital, range, length,
  // participants, columns (none: fixarray 0), weight (fixarray [0, 0]), threshold, graph (a
  // full round: fixarray 0), then the four sets, each a bin of ceil(2/8) = 1 byte or empty
  // (c4 00), deadline_ms, reason.
  std::vector<uint8_t> expected = {0xdc, 0x00, 0x14, 0x03, 0xa5, 'p',
                                   'h',  'a',  's',  'e',  0xc4, 0x10};
  for (uint8_t x : round) expected.push_back(x);
  expected.insert(expected.end(),
                  {0xa4, 'm',  'a',  's',  'k',  0x01, 0x02, 0xa1, 'h',  0x03, 0x01, 0x92,
                   0xa1, 'a',  0xa1, 'b',  0x90, 0x92, 0x00, 0x00, 0x02, 0x90, 0xc4, 0x01,
                   0x03, 0xc4, 0x01, 0x03, 0xc4, 0x00, 0xc4, 0x00, 0x0a, 0xa0});
  EXPECT_EQ(Encode(u), expected);
  Result<Message> back = Decode(expected);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<PhaseUpdate>(*back), u);

  // In the open phase every set is an empty bin (c4 00), not absent.
  u.phase = Phase::kOpen;
  u.sets = {};
  std::vector<uint8_t> open = {0xdc, 0x00, 0x14, 0x03, 0xa5, 'p', 'h', 'a', 's', 'e', 0xc4, 0x10};
  for (uint8_t x : round) open.push_back(x);
  open.insert(open.end(), {0xa4, 'o',  'p',  'e',  'n',  0x01, 0x02, 0xa1, 'h',  0x03, 0x01,
                           0x92, 0xa1, 'a',  0xa1, 'b',  0x90, 0x92, 0x00, 0x00, 0x02, 0x90,
                           0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00, 0x0a, 0xa0});
  EXPECT_EQ(Encode(u), open);
}

TEST(SchemaWire, BatchBytesArePinned) {
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(i);
  Signature sig;
  sig.fill(0x7e);
  // fixarray(5), 3, "batch", round, "confirm", items: fixarray(1) of [index 1, bin8(64)
  // signature].
  std::vector<uint8_t> expected = {0x95, 0x03, 0xa5, 'b', 'a', 't', 'c', 'h', 0xc4, 0x10};
  for (uint8_t x : round) expected.push_back(x);
  expected.insert(expected.end(),
                  {0xa7, 'c', 'o', 'n', 'f', 'i', 'r', 'm', 0x91, 0x92, 0x01, 0xc4, 0x40});
  expected.insert(expected.end(), 64, 0x7e);
  const Batch batch{
      round, BatchKind::kConfirm, {{1, std::vector<uint8_t>(sig.begin(), sig.end())}}};
  EXPECT_EQ(Encode(batch), expected);
  Result<Message> back = Decode(expected);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<Batch>(*back), batch);
  // The other kinds by their wire names, here with no items (fixarray 0).
  const std::vector<uint8_t> keys = Encode(Batch{round, BatchKind::kKeys, {}});
  const std::vector<uint8_t> keys_end = {0xa4, 'k', 'e', 'y', 's', 0x90};
  EXPECT_TRUE(std::equal(keys_end.rbegin(), keys_end.rend(), keys.rbegin()));
  const std::vector<uint8_t> shares = Encode(Batch{round, BatchKind::kShares, {}});
  const std::vector<uint8_t> shares_end = {0xa6, 's', 'h', 'a', 'r', 'e', 's', 0x90};
  EXPECT_TRUE(std::equal(shares_end.rbegin(), shares_end.rend(), shares.rbegin()));
  // A keys item: [index, bin8(128) cpk || spk || signature].
  const Batch one_key{round, BatchKind::kKeys, {{0, std::vector<uint8_t>(kKeysItemSize, 0x6b)}}};
  std::vector<uint8_t> keys_item = {0xa4, 'k', 'e', 'y', 's', 0x91, 0x92, 0x00, 0xc4, 0x80};
  keys_item.insert(keys_item.end(), kKeysItemSize, 0x6b);
  const std::vector<uint8_t> one_key_bytes = Encode(one_key);
  ASSERT_EQ(one_key_bytes.size(), 10u + 16 + keys_item.size());
  EXPECT_TRUE(std::equal(keys_item.rbegin(), keys_item.rend(), one_key_bytes.rbegin()));
}

// [3, "request", ticket, range, length, participants, columns, weight, threshold, graph,
// deadline_ms]: the threshold after the weight, a fixint for small values, then the graph (a
// full round: fixarray 0).
TEST(SchemaWire, RequestBytesArePinned) {
  const Request r{5, {"", 100, 1, {"a", "b"}, {}, {}, 2}, 0};
  const std::vector<uint8_t> expected = {0x9b, 0x03, 0xa7, 'r',  'e',  'q',  'u', 'e',  's',
                                         't',  0x05, 0x64, 0x01, 0x92, 0xa1, 'a', 0xa1, 'b',
                                         0x90, 0x92, 0x00, 0x00, 0x02, 0x90, 0x00};
  EXPECT_EQ(Encode(r), expected);
  Result<Message> back = Decode(expected);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<Request>(*back), r);
  EXPECT_EQ(std::get<Request>(*back).params.threshold, 2u);
}

TEST(SchemaWire, NoticeBytesArePinned) {
  const std::vector<uint8_t> expected = {0x94, 0x03, 0xa6, 'n',  'o',  't', 'i',
                                         'c',  'e',  0xcc, 0xc8, 0xa2, 'n', 'o'};
  EXPECT_EQ(Encode(Notice{200, "no"}), expected);
}

// A graph on the wire: [corrupt, dropout, k, t, seed bin8(32), signature bin8(64)], each
// integer in its smallest encoding, between the threshold and deadline_ms.
TEST(SchemaWire, RequestWithAGraphBytesArePinned) {
  const Request r{5, {"", 100, 1, {"a", "b"}, {}, {}, 2, TestGraph()}, 0};
  std::vector<uint8_t> expected = {0x9b, 0x03, 0xa7, 'r',  'e',  'q',  'u',  'e',
                                   's',  't',  0x05, 0x64, 0x01, 0x92, 0xa1, 'a',
                                   0xa1, 'b',  0x90, 0x92, 0x00, 0x00, 0x02};
  // fixarray(6), 50,000 (uint16), 100,000 (uint32), 4, 3.
  expected.insert(expected.end(),
                  {0x96, 0xcd, 0xc3, 0x50, 0xce, 0x00, 0x01, 0x86, 0xa0, 0x04, 0x03, 0xc4, 0x20});
  const Neighbourhood g = TestGraph();
  expected.insert(expected.end(), g.seed.begin(), g.seed.end());
  expected.insert(expected.end(), {0xc4, 0x40});
  expected.insert(expected.end(), g.signature.begin(), g.signature.end());
  expected.push_back(0x00);  // deadline_ms
  EXPECT_EQ(Encode(r), expected);
  Result<Message> back = Decode(expected);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<Request>(*back), r);
}

// The examples of schema/PROTOCOL.md ("Encoding"), byte for byte: the Request (39 bytes), the
// mask phase of its round (85 bytes) and a confirm batch (103 bytes).
TEST(SchemaWire, TheProtocolDocumentsExamplesAreExact) {
  RoundId round{};
  for (size_t i = 0; i < round.size(); ++i) round[i] = static_cast<uint8_t>(i);
  const std::vector<std::string> names = {"alice", "bob", "carol"};
  const std::vector<uint8_t> participants = {0x93, 0xa5, 'a',  'l', 'i', 'c', 'e', 0xa3, 'b',
                                             'o',  'b',  0xa5, 'c', 'a', 'r', 'o', 'l'};
  const Request request{7, {"", 1000, 1, names, {}, {}, 3}, 0};
  std::vector<uint8_t> request_bytes = {0x9b, 0x03, 0xa7, 'r',  'e',  'q',  'u', 'e',
                                        's',  't',  0x07, 0xcd, 0x03, 0xe8, 0x01};
  request_bytes.insert(request_bytes.end(), participants.begin(), participants.end());
  request_bytes.insert(request_bytes.end(), {0x90, 0x92, 0x00, 0x00, 0x03, 0x90, 0x00});
  ASSERT_EQ(request_bytes.size(), 39u);
  EXPECT_EQ(Encode(request), request_bytes);
  Result<Message> back = Decode(request_bytes);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<Request>(*back), request);

  const PhaseUpdate mask{round,
                         Phase::kMask,
                         3,
                         7,
                         {"hospital", 1000, 1, names, {}, {}, 3},
                         {Bits("111"), Bits("111"), {}, {}},
                         10000,
                         ""};
  std::vector<uint8_t> mask_bytes = {0xdc, 0x00, 0x14, 0x03, 0xa5, 'p',
                                     'h',  'a',  's',  'e',  0xc4, 0x10};
  mask_bytes.insert(mask_bytes.end(), round.begin(), round.end());
  mask_bytes.insert(mask_bytes.end(), {0xa4, 'm', 'a', 's', 'k', 0x03, 0x07, 0xa8, 'h',  'o',
                                       's',  'p', 'i', 't', 'a', 'l',  0xcd, 0x03, 0xe8, 0x01});
  mask_bytes.insert(mask_bytes.end(), participants.begin(), participants.end());
  mask_bytes.insert(mask_bytes.end(), {0x90, 0x92, 0x00, 0x00, 0x03, 0x90, 0xc4, 0x01, 0x07, 0xc4,
                                       0x01, 0x07, 0xc4, 0x00, 0xc4, 0x00, 0xcd, 0x27, 0x10, 0xa0});
  ASSERT_EQ(mask_bytes.size(), 85u);
  EXPECT_EQ(Encode(mask), mask_bytes);
  back = Decode(mask_bytes);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(std::get<PhaseUpdate>(*back), mask);

  const Batch confirm{
      round, BatchKind::kConfirm, {{2, std::vector<uint8_t>(kSignatureSize, 0x44)}}};
  std::vector<uint8_t> confirm_bytes = {0x95, 0x03, 0xa5, 'b', 'a', 't', 'c', 'h', 0xc4, 0x10};
  confirm_bytes.insert(confirm_bytes.end(), round.begin(), round.end());
  confirm_bytes.insert(confirm_bytes.end(),
                       {0xa7, 'c', 'o', 'n', 'f', 'i', 'r', 'm', 0x91, 0x92, 0x02, 0xc4, 0x40});
  confirm_bytes.insert(confirm_bytes.end(), kSignatureSize, 0x44);
  ASSERT_EQ(confirm_bytes.size(), 103u);
  EXPECT_EQ(Encode(confirm), confirm_bytes);
}

// ---- Malformed messages --------------------------------------------------------------------

TEST(SchemaDecode, WrongVersion) {
  std::vector<uint8_t> bytes = Encode(TestJoin());
  ASSERT_EQ(bytes[1], 0x03);
  bytes[1] = 0x01;
  EXPECT_EQ(DecodeError(bytes), "unsupported protocol version 1");
  bytes[1] = 0x07;
  EXPECT_EQ(DecodeError(bytes), "unsupported protocol version 7");
  bytes[1] = 0x00;
  EXPECT_EQ(DecodeError(bytes), "unsupported protocol version 0");
  bytes[1] = 0xa0;  // empty str in the version slot
  EXPECT_EQ(DecodeError(bytes), "protocol version must be uint, got str");
}

// Every message a protocol-1 or protocol-2 peer sends is refused by its version before anything
// else, also the ones whose older shape differs (a 3-field join, a 13-field phase update).
TEST(SchemaDecode, ProtocolOneAndTwoMessagesRejected) {
  const std::vector<uint8_t> join_v1 = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(1);
    Str(p, "join");
    RoundBin(p, 16);
  });
  EXPECT_EQ(DecodeError(join_v1), "unsupported protocol version 1");
  const std::vector<uint8_t> share_v1 = Raw([](Packer& p) {
    p.pack_array(7);
    p.pack_uint32(1);
    Str(p, "envelope");
    Str(p, "share");
    RoundBin(p, 16);
    Str(p, "alice");
    Str(p, "bob");
    Bin(p, SealedBytes(kSealOverhead + 8));
  });
  EXPECT_EQ(DecodeError(share_v1), "unsupported protocol version 1");
  for (const Message& m :
       std::vector<Message>{Request{1, {"", 2, 3, {"a"}}, 0}, TestEnvelope(), Ack{TestRound()},
                            TestUpdate(Phase::kMask), Refuse{TestRound(), "no"}, Notice{1, "x"},
                            TestJoin(), TestBatch(BatchKind::kShares)}) {
    std::vector<uint8_t> bytes = Encode(m);
    ASSERT_EQ(bytes[bytes[0] == 0xdc ? 3 : 1], 0x03);
    for (uint8_t older : {uint8_t{1}, uint8_t{2}}) {
      bytes[bytes[0] == 0xdc ? 3 : 1] = older;
      EXPECT_EQ(DecodeError(bytes), "unsupported protocol version " + std::to_string(older));
    }
  }
}

// Protocol 3 before dropouts spoke the same version: its join (a nonce instead of round keys),
// its phase updates (nonces instead of sets, no threshold) and its "sum" phase are refused by
// their shape, each with the reason. So are the joins and batches of protocol 3 with tags
// (before signatures): tags of one or three other patients, keys items of 96 or 64 bytes and
// confirm tags of 32.
TEST(SchemaDecode, ProtocolThreeBeforeDropoutsRefusedByItsShape) {
  const auto tagged_join = [](size_t others) {
    return Raw([others](Packer& p) {
      p.pack_array(6);
      p.pack_uint32(kProtocolVersion);
      Str(p, "join");
      RoundBin(p, 16);
      RoundBin(p, 32);
      RoundBin(p, 32);
      RoundBin(p, 32 * others);  // a tag per other patient
    });
  };
  EXPECT_EQ(DecodeError(tagged_join(1)), "join: signature must be 64 bytes, got 32");
  EXPECT_EQ(DecodeError(tagged_join(3)), "join: signature must be 64 bytes, got 96");
  EXPECT_EQ(DecodeError(RawBatch("keys", {RawItem(1, 2 * kRoundKeySize + 32)})),
            "batch: item 0: data of 96 bytes, a keys item has 128");
  EXPECT_EQ(DecodeError(RawBatch("keys", {RawItem(0, 2 * kRoundKeySize)})),
            "batch: item 0: data of 64 bytes, a keys item has 128");
  EXPECT_EQ(DecodeError(RawBatch("confirm", {RawItem(2, 32)})),
            "batch: item 0: data of 32 bytes, a confirm item has 64");
  const std::vector<uint8_t> join_with_nonce = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
    RoundBin(p, 32);
  });
  EXPECT_EQ(DecodeError(join_with_nonce), "join: expected 6 fields, got 4");
  const PhaseUpdate u = TestUpdate(Phase::kOpen);
  const std::vector<uint8_t> phase_with_nonces = Raw([&](Packer& p) {
    p.pack_array(15);
    p.pack_uint32(kProtocolVersion);
    Str(p, "phase");
    Bin(p, u.round);
    Str(p, "sum");
    p.pack_uint64(3);
    p.pack_uint64(7);
    Str(p, "hospital");
    p.pack_uint64(100);
    p.pack_uint32(1);
    p.pack_array(2);
    Str(p, "alice");
    Str(p, "bob");
    NoColumns(p);
    RoundBin(p, 64);  // two nonces
    p.pack_uint32(500);
    Str(p, "");
  });
  EXPECT_EQ(DecodeError(phase_with_nonces), "phase: expected 20 fields, got 15");
  // The "sum" phase in today's shape.
  std::vector<uint8_t> sum = Encode(TestUpdate(Phase::kMask));
  const std::string s(sum.begin(), sum.end());
  const size_t at = s.find("\xa4mask");
  ASSERT_NE(at, std::string::npos);
  sum.erase(sum.begin() + static_cast<std::ptrdiff_t>(at),
            sum.begin() + static_cast<std::ptrdiff_t>(at + 5));
  const std::vector<uint8_t> name = {0xa3, 's', 'u', 'm'};
  sum.insert(sum.begin() + static_cast<std::ptrdiff_t>(at), name.begin(), name.end());
  EXPECT_EQ(DecodeError(sum), "phase: unknown phase");
}

TEST(SchemaDecode, UnknownType) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "x");
    RoundBin(p, 16);
  });
  EXPECT_EQ(DecodeError(bytes), "unknown message type \"x\"");
  const std::vector<uint8_t> binary = Raw([](Packer& p) {
    p.pack_array(2);
    p.pack_uint32(kProtocolVersion);
    Str(p, std::string("\x01\x02", 2));
  });
  EXPECT_EQ(DecodeError(binary), "unknown message type (unprintable, 2 bytes)");
  const std::vector<uint8_t> bin_type = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    RoundBin(p, 4);
    RoundBin(p, 16);
  });
  EXPECT_EQ(DecodeError(bin_type), "message type must be str, got bin");
  const std::vector<uint8_t> batches = Raw([](Packer& p) {
    p.pack_array(5);
    p.pack_uint32(kProtocolVersion);
    Str(p, "batches");
    RoundBin(p, 16);
    Str(p, "keys");
    p.pack_array(0);
  });
  EXPECT_EQ(DecodeError(batches), "unknown message type \"batches\"");
}

TEST(SchemaDecode, WrongTopLevelType) {
  const std::vector<uint8_t> map = {0x81, 0x01, 0x02};
  EXPECT_EQ(DecodeError(map), "msgpack map not allowed");
  const std::vector<uint8_t> integer = {0x05};
  EXPECT_EQ(DecodeError(integer), "message must be a msgpack array, got uint");
  const std::vector<uint8_t> nil = {0xc0};
  EXPECT_EQ(DecodeError(nil), "message must be a msgpack array, got nil");
  const std::vector<uint8_t> str = {0xa3, 'a', 'c', 'k'};
  EXPECT_EQ(DecodeError(str), "message must be a msgpack array, got str");
  const std::vector<uint8_t> empty_array = {0x90};
  EXPECT_EQ(DecodeError(empty_array), "message has 0 fields, needs at least version and type");
}

TEST(SchemaDecode, MissingField) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(2);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
  });
  EXPECT_EQ(DecodeError(bytes), "join: expected 6 fields, got 2");
  // A join without its signature.
  const std::vector<uint8_t> no_signature = Raw([](Packer& p) {
    p.pack_array(5);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
    RoundBin(p, 32);
    RoundBin(p, 32);
  });
  EXPECT_EQ(DecodeError(no_signature), "join: expected 6 fields, got 5");
  // A phase update without its confirmed set (19 fields).
  const PhaseUpdate u = TestUpdate(Phase::kMask);
  std::vector<uint8_t> no_confirmed = RawPhase(u, [&](Packer& p) {
    Bin(p, MembersBits(u.sets.joined));
    Bin(p, MembersBits(u.sets.shared));
    Bin(p, {});
  });
  ASSERT_EQ(no_confirmed[2], 20);
  no_confirmed[2] = 19;  // array16 length
  EXPECT_EQ(DecodeError(no_confirmed), "phase: expected 20 fields, got 19");
  const std::vector<uint8_t> envelope = Raw([](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(kProtocolVersion);
    Str(p, "envelope");
    Str(p, "partial");
    RoundBin(p, 16);
    Str(p, "alice");
    Str(p, "bob");
  });
  EXPECT_EQ(DecodeError(envelope), "envelope: expected 7 fields, got 6");
  const std::vector<uint8_t> batch = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "batch");
    RoundBin(p, 16);
    Str(p, "keys");
  });
  EXPECT_EQ(DecodeError(batch), "batch: expected 5 fields, got 4");
}

// Every type with one field too few and one too many, refused by its count before any field is
// read (the fields here are all nil).
TEST(SchemaDecode, EveryTypeWithAWrongFieldCount) {
  const std::vector<std::pair<std::string, size_t>> shapes = {
      {"request", 11}, {"join", 6},   {"refuse", 4}, {"envelope", 7},
      {"ack", 3},      {"phase", 20}, {"notice", 4}, {"batch", 5}};
  for (const auto& [type, fields] : shapes) {
    for (size_t count : {fields - 1, fields + 1, size_t{2}}) {
      const std::vector<uint8_t> bytes = Raw([&, count](Packer& p) {
        p.pack_array(static_cast<uint32_t>(count));
        p.pack_uint32(kProtocolVersion);
        Str(p, type);
        for (size_t i = 2; i < count; ++i) p.pack_nil();
      });
      EXPECT_EQ(DecodeError(bytes), type + ": expected " + std::to_string(fields) +
                                        " fields, got " + std::to_string(count));
    }
  }
}

TEST(SchemaDecode, ExtraField) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(7);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
    RoundBin(p, 32);
    RoundBin(p, 32);
    RoundBin(p, 64);
    p.pack_nil();
  });
  EXPECT_EQ(DecodeError(bytes), "join: expected 6 fields, got 7");
  const std::vector<uint8_t> batch = Raw([](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(kProtocolVersion);
    Str(p, "batch");
    RoundBin(p, 16);
    Str(p, "keys");
    p.pack_array(0);
    p.pack_nil();
  });
  EXPECT_EQ(DecodeError(batch), "batch: expected 5 fields, got 6");
}

TEST(SchemaDecode, WrongFieldType) {
  const std::vector<uint8_t> str_round = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_uint32(kProtocolVersion);
    Str(p, "ack");
    Str(p, "0123456789abcdef");
  });
  EXPECT_EQ(DecodeError(str_round), "ack: round must be bin, got str");
  const std::vector<uint8_t> str_ticket = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "notice");
    Str(p, "5");
    Str(p, "why");
  });
  EXPECT_EQ(DecodeError(str_ticket), "notice: ticket must be uint, got str");
  // msgpack-c may pack an integral double as an int, so splice a float64 in by hand.
  std::vector<uint8_t> float_length = RawRequest([](Packer& p) { p.pack_nil(); });
  const auto nil = std::find(float_length.begin() + 8, float_length.end(), 0xc0);
  ASSERT_NE(nil, float_length.end());
  const std::vector<uint8_t> f64 = {0xcb, 0x40, 0x08, 0, 0, 0, 0, 0, 0};  // 3.0
  float_length.insert(float_length.erase(nil), f64.begin(), f64.end());
  EXPECT_EQ(DecodeError(float_length), "request: length must be uint, got float");
  const std::vector<uint8_t> int_participant = Raw([](Packer& p) {
    p.pack_array(11);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(100);
    p.pack_uint32(1);
    p.pack_array(1);
    p.pack_uint32(3);
    NoColumns(p);
    p.pack_uint32(0);
    p.pack_array(0);
    p.pack_uint32(0);
  });
  EXPECT_EQ(DecodeError(int_participant), "request: participants must hold str, got uint");
  const std::vector<uint8_t> str_threshold =
      RawRequest([](Packer& p) { p.pack_uint32(1); }, {"alice"}, [](Packer& p) { Str(p, "7"); });
  EXPECT_EQ(DecodeError(str_threshold), "request: threshold must be uint, got str");
  const std::vector<uint8_t> bad_kind = Raw([](Packer& p) {
    p.pack_array(7);
    p.pack_uint32(kProtocolVersion);
    Str(p, "envelope");
    Str(p, "gift");
    RoundBin(p, 16);
    Str(p, "alice");
    Str(p, "bob");
    Bin(p, SealedBytes(kSealOverhead));
  });
  EXPECT_EQ(DecodeError(bad_kind), "envelope: kind must be \"partial\" or \"unmask\"");
  const std::vector<uint8_t> str_cpk = Raw([](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
    Str(p, std::string(32, 'k'));
    RoundBin(p, 32);
    RoundBin(p, 64);
  });
  EXPECT_EQ(DecodeError(str_cpk), "join: cpk must be bin, got str");
  // The signature is one bin, not an array of tags.
  const std::vector<uint8_t> array_signature = Raw([](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
    RoundBin(p, 32);
    RoundBin(p, 32);
    p.pack_array(0);
  });
  EXPECT_EQ(DecodeError(array_signature), "join: signature must be bin, got array");
  const std::vector<uint8_t> str_signature = Raw([](Packer& p) {
    p.pack_array(6);
    p.pack_uint32(kProtocolVersion);
    Str(p, "join");
    RoundBin(p, 16);
    RoundBin(p, 32);
    RoundBin(p, 32);
    Str(p, std::string(64, 's'));
  });
  EXPECT_EQ(DecodeError(str_signature), "join: signature must be bin, got str");
  // A set is one bin, not an array of flags.
  const std::vector<uint8_t> array_set = RawPhase(TestUpdate(Phase::kShare), [](Packer& p) {
    p.pack_array(2);
    p.pack_true();
    p.pack_true();
    for (int i = 0; i < 3; ++i) Bin(p, {});
  });
  EXPECT_EQ(DecodeError(array_set), "phase: joined must be bin, got array");
}

// Protocol 1's envelope kind "share" under version 3: there are no share envelopes.
TEST(SchemaDecode, KindShareRejected) {
  Envelope e = TestEnvelope();
  std::vector<uint8_t> bytes = Encode(e);
  const std::string s(bytes.begin(), bytes.end());
  const size_t at = s.find("\xa7partial");
  ASSERT_NE(at, std::string::npos);
  // fixstr(5) "share" in place of fixstr(7) "partial".
  const std::vector<uint8_t> share = {0xa5, 's', 'h', 'a', 'r', 'e'};
  bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(at),
              bytes.begin() + static_cast<std::ptrdiff_t>(at + 8));
  bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), share.begin(), share.end());
  EXPECT_EQ(DecodeError(bytes), "envelope: kind must be \"partial\" or \"unmask\"");
}

TEST(SchemaDecode, UnknownPhase) {
  std::vector<uint8_t> bytes = Encode(TestUpdate(Phase::kMask));
  // "mask" follows the round id; turn it into "masx".
  const std::string s(bytes.begin(), bytes.end());
  const size_t at = s.find("mask");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 3] = 'x';
  EXPECT_EQ(DecodeError(bytes), "phase: unknown phase");
}

// "share" was protocol 1's phase and is protocol 3's again; "sum" (protocol 2's, and protocol 3's
// before dropouts) is no phase any more, nor is any other name.
TEST(SchemaDecode, EveryPhaseByNameAndNoOther) {
  for (Phase phase : {Phase::kOpen, Phase::kShare, Phase::kMask, Phase::kConfirm, Phase::kUnmask,
                      Phase::kDone, Phase::kAbort}) {
    EXPECT_EQ(PhaseNamed(PhaseName(phase)), phase);
    ExpectRoundTrip(TestUpdate(phase, {"a", "b", "c", "d"}));
  }
  for (std::string_view name : {"sum", "Share", "confirmed", "keys", "", "unmasked"}) {
    EXPECT_EQ(PhaseNamed(name), std::nullopt) << name;
    std::vector<uint8_t> bytes = Encode(TestUpdate(Phase::kOpen));
    const std::string s(bytes.begin(), bytes.end());
    const size_t at = s.find("\xa4open");
    ASSERT_NE(at, std::string::npos);
    bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                bytes.begin() + static_cast<std::ptrdiff_t>(at + 5));
    std::vector<uint8_t> str = {static_cast<uint8_t>(0xa0 + name.size())};
    str.insert(str.end(), name.begin(), name.end());
    bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), str.begin(), str.end());
    EXPECT_EQ(DecodeError(bytes), "phase: unknown phase") << name;
  }
}

TEST(SchemaDecode, NegativeInteger) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "notice");
    p.pack_int64(-1);
    Str(p, "why");
  });
  EXPECT_EQ(DecodeError(bytes), "notice: ticket must be uint, got negative int");
  const std::vector<uint8_t> version = Raw([](Packer& p) {
    p.pack_array(3);
    p.pack_int32(-1);
    Str(p, "join");
    RoundBin(p, 16);
  });
  EXPECT_EQ(DecodeError(version), "protocol version must be uint, got negative int");
  EXPECT_EQ(DecodeError(RawBatch("keys", {[](Packer& p) {
                                   p.pack_array(2);
                                   p.pack_int32(-1);
                                   RoundBin(p, kKeysItemSize);
                                 }})),
            "batch: item 0: index must be uint, got negative int");
  // A positive value in a signed encoding (int8 0x05) is still a valid uint.
  const std::vector<uint8_t> signed_positive = {0x94, 0xd0, 0x03, 0xa6, 'n',  'o', 't',
                                                'i',  'c',  'e',  0xd0, 0x05, 0xa0};
  Result<Message> ok = Decode(signed_positive);
  ASSERT_TRUE(ok.ok()) << ok.message();
  EXPECT_EQ(std::get<Notice>(*ok).ticket, 5u);
}

TEST(SchemaDecode, U32Overflow) {
  const std::vector<uint8_t> bytes =
      RawRequest([](Packer& p) { p.pack_uint64(uint64_t{1} << 32); });
  EXPECT_EQ(DecodeError(bytes), "request: length 4294967296 does not fit in u32");
  const std::vector<uint8_t> threshold = RawRequest([](Packer& p) { p.pack_uint32(1); }, {"alice"},
                                                    [](Packer& p) { p.pack_uint64(1ull << 32); });
  EXPECT_EQ(DecodeError(threshold), "request: threshold 4294967296 does not fit in u32");
  const PhaseUpdate u = TestUpdate(Phase::kOpen);
  const std::vector<uint8_t> phase = RawPhase(
      u, [&](Packer& p) { PackSets(p, u.sets); },
      [](Packer& p) { p.pack_uint64(uint64_t{1} << 32); });
  EXPECT_EQ(DecodeError(phase), "phase: deadline_ms 4294967296 does not fit in u32");
  EXPECT_EQ(DecodeError(RawBatch("confirm", {RawItem(uint64_t{1} << 32, kSignatureSize)})),
            "batch: item 0: index 4294967296 does not fit in u32");
}

TEST(SchemaDecode, RoundIdOf15And17Bytes) {
  for (size_t size : {size_t{15}, size_t{17}, size_t{0}}) {
    const std::vector<uint8_t> bytes = Raw([size](Packer& p) {
      p.pack_array(6);
      p.pack_uint32(kProtocolVersion);
      Str(p, "join");
      RoundBin(p, size);
      RoundBin(p, 32);
      RoundBin(p, 32);
      RoundBin(p, 64);
    });
    EXPECT_EQ(DecodeError(bytes), "join: round must be 16 bytes, got " + std::to_string(size));
    const std::vector<uint8_t> batch = Raw([size](Packer& p) {
      p.pack_array(5);
      p.pack_uint32(kProtocolVersion);
      Str(p, "batch");
      RoundBin(p, size);
      Str(p, "keys");
      p.pack_array(0);
    });
    EXPECT_EQ(DecodeError(batch), "batch: round must be 16 bytes, got " + std::to_string(size));
  }
}

TEST(SchemaDecode, JoinRoundKeysOfWrongSize) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{16}, size_t{31}, size_t{33}, size_t{64}}) {
    for (bool cpk : {true, false}) {
      const std::vector<uint8_t> bytes = Raw([size, cpk](Packer& p) {
        p.pack_array(6);
        p.pack_uint32(kProtocolVersion);
        Str(p, "join");
        RoundBin(p, 16);
        RoundBin(p, cpk ? size : 32);
        RoundBin(p, cpk ? 32 : size);
        RoundBin(p, 64);
      });
      EXPECT_EQ(DecodeError(bytes), std::string(cpk ? "join: cpk" : "join: spk") +
                                        " must be 32 bytes, got " + std::to_string(size));
    }
  }
}

// A signature: exactly 64 bytes, whatever the round's size; a join from before signatures (its
// tags, 32 bytes per other participant) is refused by its size unless it had exactly two.
TEST(SchemaDecode, JoinSignatureOfWrongSize) {
  auto join = [](size_t signature_bytes) {
    return Raw([signature_bytes](Packer& p) {
      p.pack_array(6);
      p.pack_uint32(kProtocolVersion);
      Str(p, "join");
      RoundBin(p, 16);
      RoundBin(p, 32);
      RoundBin(p, 32);
      RoundBin(p, signature_bytes);
    });
  };
  for (size_t size : {size_t{0}, size_t{1}, size_t{32}, size_t{63}, size_t{65}, size_t{96},
                      size_t{128}, size_t{32 * 999}}) {
    EXPECT_EQ(DecodeError(join(size)),
              "join: signature must be 64 bytes, got " + std::to_string(size));
  }
  Result<Message> ok = Decode(join(64));
  ASSERT_TRUE(ok.ok()) << ok.message();
  Signature filled;
  filled.fill(0x42);  // what RoundBin writes
  EXPECT_EQ(std::get<Join>(*ok).signature, filled);
  // The same under a round's tight limits: a join does not grow with the participants.
  Limits limits;
  limits.max_participants = 2;
  EXPECT_TRUE(Decode(Encode(TestJoin()), limits).ok());
}

// A set is a bin of exactly ceil(n/8) bytes or empty, and names no participant beyond the n.
TEST(SchemaDecode, PhaseSetsOfWrongSizeOrBeyondTheParticipants) {
  auto with = [](const PhaseUpdate& u, size_t which, std::vector<uint8_t> bits) {
    return RawPhase(u, [&](Packer& p) {
      std::vector<std::vector<uint8_t>> all = {
          MembersBits(u.sets.joined), MembersBits(u.sets.shared), MembersBits(u.sets.masked),
          MembersBits(u.sets.confirmed)};
      all[which] = bits;
      for (const auto& b : all) Bin(p, b);
    });
  };
  const char* names[] = {"joined", "shared", "masked", "confirmed"};
  const PhaseUpdate two = TestUpdate(Phase::kUnmask);  // alice and bob
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(
        DecodeError(with(two, k, {0x03, 0x00})),
        "phase: " + std::string(names[k]) + " must be empty or 1 bytes for 2 participants, got 2");
    EXPECT_EQ(DecodeError(with(two, k, {0x04})),
              "phase: " + std::string(names[k]) + " names a participant beyond the 2");
    EXPECT_EQ(DecodeError(with(two, k, {0x83})),
              "phase: " + std::string(names[k]) + " names a participant beyond the 2");
  }
  std::vector<std::string> nine;
  for (int i = 0; i < 9; ++i) nine.push_back("p" + std::to_string(i));
  const PhaseUpdate u9 = TestUpdate(Phase::kShare, nine);
  EXPECT_EQ(DecodeError(with(u9, 0, {0xff})),
            "phase: joined must be empty or 2 bytes for 9 participants, got 1");
  EXPECT_EQ(DecodeError(with(u9, 0, {0xff, 0x03})),
            "phase: joined names a participant beyond the 9");
  EXPECT_TRUE(Decode(with(u9, 0, {0xff, 0x01})).ok());
  // Eight participants fill the byte: every bit is one of them.
  std::vector<std::string> eight(nine.begin(), nine.end() - 1);
  EXPECT_TRUE(Decode(with(TestUpdate(Phase::kShare, eight), 0, {0xff})).ok());
  // No participants: only empty sets.
  EXPECT_EQ(DecodeError(with(TestUpdate(Phase::kOpen, {}), 2, {0x00})),
            "phase: masked must be empty or 0 bytes for 0 participants, got 1");
  // A set of more flags than participants, as an encoder would write it, does not decode.
  PhaseUpdate wide = TestUpdate(Phase::kShare);
  wide.sets.joined = Bits("111");
  EXPECT_EQ(DecodeError(Encode(wide)), "phase: joined names a participant beyond the 2");
}

TEST(SchemaDecode, InvalidName) {
  for (const std::string& name :
       {std::string("Alice"), std::string(""), std::string(33, 'a'), std::string("a b"),
        std::string("al\xc3\xa9"), std::string("a.b")}) {
    Envelope e = TestEnvelope();
    e.from = name;
    EXPECT_EQ(DecodeError(Encode(e)), "envelope: invalid name in from") << name;
    e = TestEnvelope();
    e.to = name;
    EXPECT_EQ(DecodeError(Encode(e)), "envelope: invalid name in to") << name;
    PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, {name, 3, 1, {"a"}}, {}, 10, ""};
    EXPECT_EQ(DecodeError(Encode(u)), "phase: invalid name in hospital") << name;
    EXPECT_EQ(DecodeError(Encode(Request{1, {"", 2, 3, {"ok", name}}, 0})),
              "request: invalid name in participants")
        << name;
  }
  EXPECT_TRUE(ValidName("a"));
  EXPECT_TRUE(ValidName(std::string(32, 'z')));
  EXPECT_TRUE(ValidName("0-9_az"));
}

// The graph element is [] or exactly [corrupt u32, dropout u32, k u32, t u32, seed bin(32),
// signature bin(64)]; each refusal says which field, in a request, a phase update and a header
// alike (they share the decoding).
TEST(SchemaDecode, TheGraphIsEmptyOrSixFieldsOfExactTypesAndSizes) {
  // [corrupt, dropout, k, t, seed, signature] with one of them packed by `field` instead.
  auto graph = [](int which, const std::function<void(Packer&)>& field) {
    return [which, field](Packer& p) {
      p.pack_array(6);
      const Neighbourhood g = TestGraph();
      const std::function<void(Packer&)> fields[] = {
          [&](Packer& q) { q.pack_uint32(g.corrupt_ppm); },
          [&](Packer& q) { q.pack_uint32(g.dropout_ppm); },
          [&](Packer& q) { q.pack_uint32(g.degree); },
          [&](Packer& q) { q.pack_uint32(g.threshold); },
          [&](Packer& q) { Bin(q, g.seed); },
          [&](Packer& q) { Bin(q, g.signature); }};
      for (int i = 0; i < 6; ++i) (i == which ? field : fields[i])(p);
    };
  };
  auto request = [](const std::function<void(Packer&)>& g) {
    return RawRequest([](Packer& p) { p.pack_uint32(1); }, {"alice"}, nullptr, g);
  };
  // Unchanged, it decodes to TestGraph().
  Result<Message> ok = Decode(request(graph(-1, nullptr)));
  ASSERT_TRUE(ok.ok()) << ok.message();
  EXPECT_EQ(std::get<Request>(*ok).params.graph, TestGraph());
  const auto u32 = [](uint64_t v) { return [v](Packer& p) { p.pack_uint64(v); }; };
  const auto bin = [](size_t n) { return [n](Packer& p) { RoundBin(p, n); }; };
  const std::vector<std::pair<std::vector<uint8_t>, std::string>> cases = {
      // Its length: 0 or 6.
      {request([](Packer& p) {
         p.pack_array(5);
         for (int i = 0; i < 4; ++i) p.pack_uint32(4);
         RoundBin(p, 32);
       }),
       "request: graph must be empty or an array of 6"},
      {request([](Packer& p) {
         p.pack_array(1);
         p.pack_uint32(4);
       }),
       "request: graph must be empty or an array of 6"},
      {request([&](Packer& p) {
         p.pack_array(7);
         for (int i = 0; i < 4; ++i) p.pack_uint32(4);
         RoundBin(p, 32);
         RoundBin(p, 64);
         p.pack_nil();
       }),
       "request: graph must be empty or an array of 6"},
      // Its type: an array, never nil, a bin or a str.
      {request([](Packer& p) { p.pack_nil(); }), "request: graph must be array, got nil"},
      {request([](Packer& p) { RoundBin(p, 6); }), "request: graph must be array, got bin"},
      {request([](Packer& p) { Str(p, ""); }), "request: graph must be array, got str"},
      // Its numbers: u32, never negative, never above 2^32 - 1, never a str.
      {request(graph(2, [](Packer& p) { p.pack_int32(-4); })),
       "request: graph: k must be uint, got negative int"},
      {request(graph(2, u32(uint64_t{1} << 32))),
       "request: graph: k 4294967296 does not fit in u32"},
      {request(graph(3, u32(uint64_t{1} << 32))),
       "request: graph: t 4294967296 does not fit in u32"},
      {request(graph(3, [](Packer& p) { p.pack_int32(-1); })),
       "request: graph: t must be uint, got negative int"},
      {request(graph(0, [](Packer& p) { Str(p, "0.05"); })),
       "request: graph: corrupt must be uint, got str"},
      {request(graph(1, u32(UINT64_MAX))),
       "request: graph: dropout 18446744073709551615 does not fit in u32"},
      // The seed: a bin of exactly 32 bytes; the signature: a bin of exactly 64.
      {request(graph(4, bin(31))), "request: graph: seed must be 32 bytes, got 31"},
      {request(graph(4, bin(33))), "request: graph: seed must be 32 bytes, got 33"},
      {request(graph(4, bin(0))), "request: graph: seed must be 32 bytes, got 0"},
      {request(graph(4, [](Packer& p) { Str(p, std::string(32, 's')); })),
       "request: graph: seed must be bin, got str"},
      {request(graph(5, bin(63))), "request: graph: signature must be 64 bytes, got 63"},
      {request(graph(5, bin(65))), "request: graph: signature must be 64 bytes, got 65"},
      {request(graph(5, bin(32))), "request: graph: signature must be 64 bytes, got 32"},
      {request(graph(5, [](Packer& p) { p.pack_nil(); })),
       "request: graph: signature must be bin, got nil"},
      // A seed is one bin, not an array; and nothing nests deeper than a column does.
      {request(graph(4,
                     [](Packer& p) {
                       p.pack_array(1);
                       RoundBin(p, 32);
                     })),
       "request: graph: seed must be bin, got array"},
      {request(graph(4,
                     [](Packer& p) {
                       p.pack_array(1);
                       p.pack_array(1);
                       RoundBin(p, 32);
                     })),
       "msgpack nesting too deep"},
      // A phase update's graph, by the same rules.
      {RawPhase(
           TestUpdate(Phase::kOpen), [](Packer& p) { PackSets(p, {}); }, nullptr,
           graph(4, bin(31))),
       "phase: graph: seed must be 32 bytes, got 31"},
      {RawPhase(
           TestUpdate(Phase::kOpen), [](Packer& p) { PackSets(p, {}); }, nullptr,
           [](Packer& p) {
             p.pack_array(5);
             for (int i = 0; i < 5; ++i) p.pack_uint32(2);
           }),
       "phase: graph must be empty or an array of 6"},
  };
  for (const auto& [bytes, error] : cases) EXPECT_EQ(DecodeError(bytes), error);
  // A phase update from before neighbourhoods (19 fields: no graph) is refused by its count.
  const PhaseUpdate u = TestUpdate(Phase::kMask);
  std::vector<uint8_t> no_graph = RawPhase(
      u, [&](Packer& p) { PackSets(p, u.sets); }, nullptr, [](Packer&) {});
  ASSERT_EQ(no_graph[2], 20);
  no_graph[2] = 19;
  EXPECT_EQ(DecodeError(no_graph), "phase: expected 20 fields, got 19");
}

TEST(SchemaDecode, DuplicateParticipant) {
  EXPECT_EQ(DecodeError(Encode(Request{1, {"", 2, 3, {"alice", "bob", "alice"}}, 0})),
            "request: duplicate name \"alice\" in participants");
  PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, {"h", 3, 1, {"bob", "bob"}}, {}, 10, ""};
  EXPECT_EQ(DecodeError(Encode(u)), "phase: duplicate name \"bob\" in participants");
  u.phase = Phase::kShare;
  u.sets.joined = Bits("11");
  EXPECT_EQ(DecodeError(Encode(u)), "phase: duplicate name \"bob\" in participants");
}

// ---- Batches -------------------------------------------------------------------------------

TEST(SchemaBatch, EveryRefusalWithItsReason) {
  const auto keys = RawItem(1, kKeysItemSize);
  const std::string kKindError =
      "batch: kind must be \"keys\", \"shares\", \"confirm\" or \"survivors\"";
  struct Case {
    std::vector<uint8_t> bytes;
    std::string error;
  };
  const std::vector<Case> cases = {
      // The kind: only the four names.
      {RawBatch("key", {keys}), kKindError},
      {RawBatch("partial", {keys}), kKindError},
      {RawBatch("", {}), kKindError},
      {RawBatch("survivor", {}), kKindError},
      {RawBatch("Survivors", {}), kKindError},
      // The shape of an item: an array of [index, data].
      {RawBatch("keys", {[](Packer& p) { RoundBin(p, kKeysItemSize); }}),
       "batch: item 0 must be an array of 2"},
      {RawBatch("keys", {keys,
                         [](Packer& p) {
                           p.pack_array(3);
                           p.pack_uint32(2);
                           RoundBin(p, kKeysItemSize);
                           p.pack_nil();
                         }}),
       "batch: item 1 must be an array of 2"},
      {RawBatch("keys", {[](Packer& p) {
                  p.pack_array(1);
                  p.pack_uint32(2);
                }}),
       "batch: item 0 must be an array of 2"},
      {RawBatch("keys", {[](Packer& p) {
                  p.pack_array(2);
                  RoundBin(p, kKeysItemSize);
                  p.pack_uint32(2);
                }}),
       "batch: item 0: index must be uint, got bin"},
      {RawBatch("shares", {[](Packer& p) {
                  p.pack_array(2);
                  p.pack_uint32(2);
                  Str(p, std::string(kSealedShareSize, 's'));
                }}),
       "batch: item 0: data must be bin, got str"},
      // Sizes, per kind: keys 128 (cpk || spk || signature, to a patient and to the hospital
      // alike), shares 104 (a sealed share), confirm 64 (a signature). The sizes of protocol 3
      // before signatures (keys 96 or 64, confirm tags 32) are refused as any other.
      {RawBatch("keys", {RawItem(0, 127)}),
       "batch: item 0: data of 127 bytes, a keys item has 128"},
      {RawBatch("keys", {RawItem(0, 129)}),
       "batch: item 0: data of 129 bytes, a keys item has 128"},
      {RawBatch("keys", {RawItem(0, 96)}), "batch: item 0: data of 96 bytes, a keys item has 128"},
      {RawBatch("keys", {RawItem(0, 64)}), "batch: item 0: data of 64 bytes, a keys item has 128"},
      {RawBatch("keys", {RawItem(0, 0)}), "batch: item 0: data of 0 bytes, a keys item has 128"},
      {RawBatch("keys", {RawItem(0, kSealedShareSize)}),
       "batch: item 0: data of 104 bytes, a keys item has 128"},
      {RawBatch("shares", {RawItem(0, 103)}),
       "batch: item 0: data of 103 bytes, a shares item has 104"},
      {RawBatch("shares", {RawItem(0, 105)}),
       "batch: item 0: data of 105 bytes, a shares item has 104"},
      {RawBatch("shares", {RawItem(0, kKeysItemSize)}),
       "batch: item 0: data of 128 bytes, a shares item has 104"},
      {RawBatch("shares", {RawItem(0, 0)}),
       "batch: item 0: data of 0 bytes, a shares item has 104"},
      {RawBatch("confirm", {RawItem(0, 63)}),
       "batch: item 0: data of 63 bytes, a confirm item has 64"},
      {RawBatch("confirm", {RawItem(0, 65)}),
       "batch: item 0: data of 65 bytes, a confirm item has 64"},
      {RawBatch("confirm", {RawItem(0, 32)}),
       "batch: item 0: data of 32 bytes, a confirm item has 64"},
      {RawBatch("confirm", {RawItem(3, 64), RawItem(4, 104)}),
       "batch: item 1: data of 104 bytes, a confirm item has 64"},
      {RawBatch("keys", {RawItem(0, 128), RawItem(1, 128), RawItem(2, 96)}),
       "batch: item 2: data of 96 bytes, a keys item has 128"},
      // Indices: a participant's position, each once.
      {RawBatch("confirm", {RawItem(kMaxParticipants, 64)}),
       "batch: item 0: index 10000 beyond the participants"},
      {RawBatch("confirm", {RawItem(0, 64), RawItem(UINT32_MAX, 64)}),
       "batch: item 1: index 4294967295 beyond the participants"},
      {RawBatch("confirm", {RawItem(3, 64), RawItem(1, 64), RawItem(3, 64)}),
       "batch: index 3 twice"},
      {RawBatch("keys", {RawItem(0, 128), RawItem(0, 128)}), "batch: index 0 twice"},
      // A duplicate index is found before the second item's size.
      {RawBatch("shares", {RawItem(0, 104), RawItem(0, 1)}), "batch: index 0 twice"},
  };
  for (const Case& k : cases) EXPECT_EQ(DecodeError(k.bytes), k.error);
  // The same shapes with the right sizes decode.
  for (const Case& k : std::vector<Case>{
           {RawBatch("keys", {RawItem(0, kKeysItemSize), RawItem(5, kKeysItemSize)}), ""},
           {RawBatch("shares", {RawItem(kMaxParticipants - 1, kSealedShareSize)}), ""},
           {RawBatch("confirm", {RawItem(2, 64), RawItem(1, 64)}), ""},
           {RawBatch("confirm", {}), ""}}) {
    Result<Message> r = Decode(k.bytes);
    EXPECT_TRUE(r.ok()) << r.message();
  }
  // Against a round's limits: indices below max_participants, at most that many items.
  Limits limits;
  limits.max_participants = 3;
  EXPECT_TRUE(Decode(RawBatch("confirm", {RawItem(2, 64)}), limits).ok());
  EXPECT_EQ(DecodeError(RawBatch("confirm", {RawItem(3, 64)}), limits),
            "batch: item 0: index 3 beyond the participants");
  EXPECT_EQ(DecodeError(RawBatch("confirm",
                                 {RawItem(0, 64), RawItem(1, 64), RawItem(2, 64), RawItem(3, 64)}),
                        limits),
            "batch: too many items (4 > 3)");
  EXPECT_EQ(DecodeError(Raw([](Packer& p) {
              p.pack_array(5);
              p.pack_uint32(kProtocolVersion);
              Str(p, "batch");
              RoundBin(p, 16);
              Str(p, "keys");
              RoundBin(p, kKeysItemSize);
            })),
            "batch: items must be array, got bin");
  // An item nested one level deeper than [index, data] is refused by the decoder's depth bound.
  EXPECT_EQ(DecodeError(RawBatch("keys", {[](Packer& p) {
                                   p.pack_array(2);
                                   p.pack_array(1);
                                   p.pack_uint32(0);
                                   RoundBin(p, kKeysItemSize);
                                 }})),
            "msgpack nesting too deep");
}

// A survivors batch (the hospital's signature on a neighbourhood round's survivors) decodes
// under its wire name, with items of exactly 64 bytes.
TEST(SchemaBatch, ASurvivorsBatchDecodesWithItemsOf64Bytes) {
  EXPECT_EQ(BatchKindName(BatchKind::kSurvivors), "survivors");
  const Signature sig = TestSignature(4);
  const Batch survivors{
      TestRound(), BatchKind::kSurvivors, {{0, std::vector<uint8_t>(sig.begin(), sig.end())}}};
  ExpectRoundTrip(survivors);
  ExpectRoundTrip(Batch{TestRound(), BatchKind::kSurvivors, {}});
  ExpectRoundTrip(TestBatch(BatchKind::kSurvivors, {0, 9999}));
  // "survivors" (fixstr 9), [[0, bin8(64)]].
  std::vector<uint8_t> tail = {0xa9, 's', 'u',  'r',  'v',  'i',  'v', 'o',
                               'r',  's', 0x91, 0x92, 0x00, 0xc4, 0x40};
  tail.insert(tail.end(), sig.begin(), sig.end());
  const std::vector<uint8_t> bytes = Encode(survivors);
  ASSERT_EQ(bytes.size(), 10u + 16 + tail.size());
  EXPECT_TRUE(std::equal(tail.rbegin(), tail.rend(), bytes.rbegin()));
  Result<Message> raw = Decode(RawBatch("survivors", {RawItem(0, kSignatureSize)}));
  ASSERT_TRUE(raw.ok()) << raw.message();
  EXPECT_EQ(std::get<Batch>(*raw).kind, BatchKind::kSurvivors);
  ASSERT_EQ(std::get<Batch>(*raw).items.size(), 1u);
  EXPECT_EQ(std::get<Batch>(*raw).items[0].data.size(), 64u);
  for (size_t size :
       {size_t{0}, size_t{32}, size_t{63}, size_t{65}, kSealedShareSize, kKeysItemSize}) {
    EXPECT_EQ(DecodeError(RawBatch("survivors", {RawItem(0, size)})),
              "batch: item 0: data of " + std::to_string(size) + " bytes, a survivors item has 64");
  }
  EXPECT_EQ(DecodeError(RawBatch("survivors", {RawItem(0, 64), RawItem(0, 64)})),
            "batch: index 0 twice");
}

TEST(SchemaDecode, BadReasonChars) {
  for (const std::string& reason :
       {std::string("tab\there"), std::string("new\nline"), std::string("nul\0x", 5),
        std::string("caf\xc3\xa9"), std::string("\x7f"), std::string(kMaxReasonLength + 1, 'a')}) {
    EXPECT_EQ(DecodeError(Encode(Refuse{TestRound(), reason})),
              "refuse: reason must be printable ASCII, at most 200 characters");
    EXPECT_EQ(DecodeError(Encode(Notice{1, reason})),
              "notice: reason must be printable ASCII, at most 200 characters");
  }
}

TEST(SchemaDecode, ReasonErrorDoesNotEchoTheReason) {
  const std::string secret = "secret-input=12345\n";
  const std::string msg = DecodeError(Encode(Refuse{TestRound(), secret}));
  EXPECT_EQ(msg.find("12345"), std::string::npos) << msg;
}

TEST(SchemaDecode, TrailingBytes) {
  std::vector<uint8_t> bytes = Encode(Ack{TestRound()});
  bytes.push_back(0x00);
  EXPECT_EQ(DecodeError(bytes), "1 trailing bytes after message");
  std::vector<uint8_t> twice = Encode(Ack{TestRound()});
  const std::vector<uint8_t> again = Encode(Ack{TestRound()});
  twice.insert(twice.end(), again.begin(), again.end());
  EXPECT_EQ(DecodeError(twice), "24 trailing bytes after message");
}

TEST(SchemaDecode, MessageOverMaxMessageBytes) {
  Limits limits;
  limits.max_message_bytes = 100;
  Envelope e = TestEnvelope();
  e.sealed = SealedBytes(200);
  const std::vector<uint8_t> bytes = Encode(e);
  EXPECT_EQ(DecodeError(bytes, limits),
            "message is " + std::to_string(bytes.size()) + " bytes, over the limit of 100");
}

TEST(SchemaDecode, SealedOverMaxSealedBytes) {
  Limits limits;
  limits.max_sealed_bytes = 1000;
  Envelope e = TestEnvelope();
  e.sealed = SealedBytes(1000);
  EXPECT_TRUE(Decode(Encode(e), limits).ok());
  e.sealed = SealedBytes(1001);
  // The decoder's bin bound is the sealed limit itself here, and stops it first.
  EXPECT_EQ(DecodeError(Encode(e), limits), "msgpack bin longer than the limit of 1000 bytes");
  // The bin bound also admits a keys item (128 bytes): below that the sealed field's own check
  // refuses what the bound lets through.
  limits.max_sealed_bytes = 100;
  e.sealed = SealedBytes(100);
  EXPECT_TRUE(Decode(Encode(e), limits).ok());
  e.sealed = SealedBytes(101);
  EXPECT_EQ(DecodeError(Encode(e), limits), "envelope: sealed is 101 bytes, over the limit of 100");
  e.sealed = SealedBytes(kKeysItemSize + 1);
  EXPECT_EQ(DecodeError(Encode(e), limits), "msgpack bin longer than the limit of 128 bytes");
}

TEST(SchemaDecode, SealedShorterThanSealOverhead) {
  Envelope e = TestEnvelope();
  e.sealed = SealedBytes(kSealOverhead - 1);
  EXPECT_EQ(DecodeError(Encode(e)), "envelope: sealed is 39 bytes, shorter than the minimum of 40");
  e.kind = EnvelopeKind::kUnmask;
  EXPECT_EQ(DecodeError(Encode(e)), "envelope: sealed is 39 bytes, shorter than the minimum of 40");
}

TEST(SchemaDecode, LengthZeroAndOverMaxLength) {
  EXPECT_EQ(DecodeError(Encode(Request{1, {"", 2, 0, {}}, 0})),
            "request: length must be between 1 and 1048576, got 0");
  EXPECT_EQ(DecodeError(Encode(Request{1, {"", 2, kMaxVectorLength + 1, {}}, 0})),
            "request: length must be between 1 and 1048576, got 1048577");
  Limits limits;
  limits.max_length = 10;
  EXPECT_TRUE(Decode(Encode(Request{1, {"", 2, 10, {}}, 0}), limits).ok());
  PhaseUpdate u{TestRound(), Phase::kOpen, 1, 2, {"h", 3, 11, {"a"}}, {}, 10, ""};
  EXPECT_EQ(DecodeError(Encode(u), limits), "phase: length must be between 1 and 10, got 11");
}

TEST(SchemaDecode, TooManyParticipants) {
  Limits limits;
  limits.max_participants = 3;
  const Request r{1, {"", 2, 3, {"a", "b", "c", "d"}}, 0};
  EXPECT_EQ(DecodeError(Encode(r), limits), "request: too many participants (4 > 3)");
  Request big{1, {"", 2, 3, {}}, 0};
  for (size_t i = 0; i <= kMaxParticipants; ++i)
    big.params.participants.push_back("p" + std::to_string(i));
  EXPECT_EQ(DecodeError(Encode(big)), "msgpack array longer than the limit of 10000 elements");
  std::vector<uint32_t> indices;
  for (uint32_t i = 0; i <= kMaxParticipants; ++i) indices.push_back(i);
  EXPECT_EQ(DecodeError(Encode(TestBatch(BatchKind::kConfirm, indices))),
            "msgpack array longer than the limit of 10000 elements");
}

TEST(SchemaDecode, NestingAndMapsAndExtRejected) {
  // Columns are the deepest a message goes (message, columns, a column): one more is refused.
  const std::vector<uint8_t> nested = Raw([](Packer& p) {
    p.pack_array(11);
    p.pack_uint32(kProtocolVersion);
    Str(p, "request");
    p.pack_uint64(5);
    p.pack_uint64(0);
    p.pack_uint32(1);
    p.pack_array(0);
    p.pack_array(1);
    p.pack_array(4);
    p.pack_array(1);
    Str(p, "a");
  });
  EXPECT_EQ(DecodeError(nested), "msgpack nesting too deep");
  const std::vector<uint8_t> map_field = {0x93, 0x03, 0xa4, 'j', 'o', 'i', 'n', 0x81, 0x01, 0x02};
  EXPECT_EQ(DecodeError(map_field), "msgpack map not allowed");
  const std::vector<uint8_t> ext_field = {0x93, 0x03, 0xa4, 'j', 'o', 'i', 'n', 0xd4, 0x01, 0x02};
  EXPECT_EQ(DecodeError(ext_field), "msgpack ext not allowed");
}

TEST(SchemaDecode, HugeDeclaredSizesDoNotAllocate) {
  // array32 / str32 / bin32 headers claiming ~4 GiB in a few bytes.
  const std::vector<uint8_t> array = {0xdd, 0xff, 0xff, 0xff, 0xff};
  EXPECT_EQ(DecodeError(array), "msgpack array longer than the limit of 10000 elements");
  // msgpack-c waits for a str/bin body before checking its size: without the body this is
  // just truncated, and nothing was allocated.
  const std::vector<uint8_t> str = {0x92, 0x02, 0xdb, 0xff, 0xff, 0xff, 0xff};
  EXPECT_EQ(DecodeError(str), "truncated message");
  const std::vector<uint8_t> bin = {0x92, 0x02, 0xc6, 0xff, 0xff, 0xff, 0xff};
  EXPECT_EQ(DecodeError(bin), "truncated message");
  // A batch whose items array claims 2^32-1 items.
  std::vector<uint8_t> items = Encode(Batch{TestRound(), BatchKind::kKeys, {}});
  items.back() = 0xdd;
  items.insert(items.end(), {0xff, 0xff, 0xff, 0xff});
  EXPECT_EQ(DecodeError(items), "msgpack array longer than the limit of 10000 elements");
}

TEST(SchemaDecode, OverlongStrRejectedByTheDecoderLimit) {
  const std::vector<uint8_t> bytes = Raw([](Packer& p) {
    p.pack_array(4);
    p.pack_uint32(kProtocolVersion);
    Str(p, "notice");
    p.pack_uint32(1);
    Str(p, std::string(300, 'a'));
  });
  EXPECT_EQ(DecodeError(bytes), "msgpack str longer than the limit of 256 bytes");
}

TEST(SchemaDecode, EmptyInput) { EXPECT_EQ(DecodeError({}), "empty message"); }

TEST(SchemaDecode, TruncatedMessagesAtEveryPrefix) {
  for (const Message& m :
       std::vector<Message>{TestEnvelope(), TestJoin(), TestBatch(BatchKind::kKeys),
                            TestUpdate(Phase::kConfirm, {"a", "b", "c", "d"})}) {
    const std::vector<uint8_t> bytes = Encode(m);
    for (size_t n = 0; n < bytes.size(); ++n) {
      Result<Message> r = Decode(std::span<const uint8_t>(bytes.data(), n));
      ASSERT_FALSE(r.ok()) << "prefix " << n;
      EXPECT_FALSE(r.message().empty());
    }
    EXPECT_TRUE(Decode(bytes).ok());
  }
}

TEST(SchemaDecode, RandomBytesNeverCrash) {
  std::mt19937 rng(20260125);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<size_t> size(0, 64);
  int decoded = 0;
  for (int i = 0; i < 20'000; ++i) {
    std::vector<uint8_t> buf(size(rng));
    for (uint8_t& b : buf) b = static_cast<uint8_t>(byte(rng));
    // Bias a quarter of the inputs towards plausible message starts.
    if (i % 4 == 0 && buf.size() >= 2) {
      buf[0] = static_cast<uint8_t>(0x92 + i % 11);
      buf[1] = static_cast<uint8_t>(kProtocolVersion);
    }
    Result<Message> r = Decode(buf);
    if (r.ok()) {
      ++decoded;
    } else {
      EXPECT_FALSE(r.message().empty());
    }
  }
  EXPECT_LT(decoded, 20'000);
}

TEST(SchemaDecode, MutatedValidMessagesNeverCrash) {
  const std::vector<Message> seeds = {Request{3, {"", 100, 4, {"alice", "bob"}, {}, {}, 2}, 0},
                                      TestJoin(),
                                      Refuse{TestRound(), "no"},
                                      TestEnvelope(),
                                      Ack{TestRound()},
                                      TestUpdate(Phase::kOpen),
                                      TestUpdate(Phase::kConfirm, {"a", "b", "c", "d"}),
                                      TestUpdate(Phase::kUnmask),
                                      TestBatch(BatchKind::kKeys),
                                      TestBatch(BatchKind::kShares),
                                      TestBatch(BatchKind::kConfirm, {0, 1, 2}),
                                      Notice{1, "full"}};
  std::mt19937 rng(99);
  for (const Message& seed : seeds) {
    const std::vector<uint8_t> good = Encode(seed);
    for (int i = 0; i < 3'000; ++i) {
      std::vector<uint8_t> buf = good;
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) buf[rng() % buf.size()] = static_cast<uint8_t>(rng());
      Result<Message> r = Decode(buf);
      if (!r.ok()) {
        EXPECT_FALSE(r.message().empty());
      } else if (const auto* u = std::get_if<PhaseUpdate>(&*r)) {
        const size_t n = u->params.participants.size();
        for (const Members* m :
             {&u->sets.joined, &u->sets.shared, &u->sets.masked, &u->sets.confirmed})
          EXPECT_TRUE(m->empty() || m->size() == n);
      } else if (const auto* b = std::get_if<Batch>(&*r)) {
        for (const BatchItem& item : b->items) EXPECT_LT(item.index, kMaxParticipants);
      }
    }
  }
}

// ---- Sets, thresholds ----------------------------------------------------------------------

TEST(SchemaSets, CountBitsAndUnmaskers) {
  EXPECT_EQ(CountOf({}), 0u);
  EXPECT_EQ(CountOf(Bits("1011")), 3u);
  EXPECT_EQ(MembersBits({}), std::vector<uint8_t>{});
  EXPECT_EQ(MembersBits(Bits("1011")), std::vector<uint8_t>{0x0d});
  EXPECT_EQ(MembersBits(Bits("00000000"
                             "1")),
            (std::vector<uint8_t>{0x00, 0x01}));
  const RoundSets no_confirm{Bits("1111"), Bits("1111"), Bits("1111"), {}};
  EXPECT_EQ(Unmaskers(no_confirm), Bits("1111"));
  const RoundSets confirm{Bits("1111"), Bits("1111"), Bits("1110"), Bits("0110")};
  EXPECT_EQ(Unmaskers(confirm), Bits("0110"));
}

// A round of a, b, c, d with threshold 3 at `phase` with `sets`.
PhaseUpdate FourAt(Phase phase, RoundSets sets) {
  PhaseUpdate u = TestUpdate(phase, {"a", "b", "c", "d"});
  u.params.threshold = 3;
  u.sets = std::move(sets);
  return u;
}

TEST(SchemaSets, WhatEachPhaseHasIsAccepted) {
  const Members all = Bits("1111"), three = Bits("1110"), other = Bits("0111");
  const std::vector<PhaseUpdate> good = {
      FourAt(Phase::kOpen, {}),
      FourAt(Phase::kShare, {all, {}, {}, {}}),
      FourAt(Phase::kShare, {three, {}, {}, {}}),
      FourAt(Phase::kMask, {all, three, {}, {}}),
      FourAt(Phase::kConfirm, {all, all, three, {}}),
      FourAt(Phase::kUnmask, {all, all, all, {}}),
      FourAt(Phase::kUnmask, {all, all, three, three}),
      FourAt(Phase::kUnmask, {all, all, Bits("1011"), Bits("1011")}),
      FourAt(Phase::kDone, {all, all, all, {}}),
      FourAt(Phase::kDone, {all, all, three, three}),
      FourAt(Phase::kDone, {all, other, other, {}}),  // a left before sharing: U3 = U2
      // An abort keeps the sets fixed so far, whichever phase it ends.
      FourAt(Phase::kAbort, {}),
      FourAt(Phase::kAbort, {all, {}, {}, {}}),
      FourAt(Phase::kAbort, {all, all, {}, {}}),
      FourAt(Phase::kAbort, {all, all, three, {}}),
      FourAt(Phase::kAbort, {all, all, all, {}}),
      FourAt(Phase::kAbort, {all, all, three, three}),
  };
  for (const PhaseUpdate& u : good) {
    const Status s = CheckSets(u);
    EXPECT_TRUE(s.ok()) << PhaseName(u.phase) << ": " << s.message();
  }
}

TEST(SchemaSets, EveryErrorWithItsText) {
  const Members all = Bits("1111"), three = Bits("1110"), two = Bits("1100");
  struct Case {
    PhaseUpdate u;
    std::string error;
  };
  const std::vector<Case> cases = {
      // A set the phase has not fixed yet.
      {FourAt(Phase::kOpen, {all, {}, {}, {}}), "open has a set of those who joined too early"},
      {FourAt(Phase::kShare, {all, all, {}, {}}), "share has a set of those who shared too early"},
      {FourAt(Phase::kShare, {all, {}, all, {}}), "share has a set of the survivors too early"},
      {FourAt(Phase::kMask, {all, all, all, {}}), "mask has a set of the survivors too early"},
      {FourAt(Phase::kConfirm, {all, all, three, three}),
       "confirm has a set of those who confirmed too early"},
      {FourAt(Phase::kUnmask, {all, all, all, all}),
       "unmask has a set of those who confirmed too early"},
      {FourAt(Phase::kDone, {all, all, all, three}),
       "done has a set of those who confirmed too early"},
      {FourAt(Phase::kAbort, {{}, all, {}, {}}), "abort has a set of those who shared too early"},
      {FourAt(Phase::kAbort, {all, all, {}, three}),
       "abort has a set of those who confirmed too early"},
      {FourAt(Phase::kAbort, {all, all, all, three}),
       "abort has a set of those who confirmed too early"},
      // A set the phase has fixed, missing.
      {FourAt(Phase::kShare, {}), "share has no set of those who joined"},
      {FourAt(Phase::kMask, {all, {}, {}, {}}), "mask has no set of those who shared"},
      {FourAt(Phase::kMask, {{}, all, {}, {}}), "mask has no set of those who joined"},
      {FourAt(Phase::kConfirm, {all, all, {}, {}}), "confirm has no set of the survivors"},
      {FourAt(Phase::kUnmask, {all, all, {}, {}}), "unmask has no set of the survivors"},
      {FourAt(Phase::kUnmask, {all, all, three, {}}), "unmask has no set of those who confirmed"},
      {FourAt(Phase::kDone, {all, all, three, {}}), "done has no set of those who confirmed"},
      {FourAt(Phase::kDone, {}), "done has no set of those who joined"},
      // Not one flag per participant.
      {FourAt(Phase::kShare, {Bits("111"), {}, {}, {}}),
       "the set of those who joined is not one per participant"},
      {FourAt(Phase::kMask, {all, Bits("11111"), {}, {}}),
       "the set of those who shared is not one per participant"},
      {FourAt(Phase::kConfirm, {all, all, Bits("111"), {}}),
       "the set of the survivors is not one per participant"},
      {FourAt(Phase::kUnmask, {all, all, three, Bits("111")}),
       "the set of those who confirmed is not one per participant"},
      // Not within the set before.
      {FourAt(Phase::kMask, {three, Bits("1101"), {}, {}}),
       "those who shared are not within those who joined"},
      {FourAt(Phase::kConfirm, {all, three, Bits("1101"), {}}),
       "the survivors are not within those who shared"},
      {FourAt(Phase::kUnmask, {all, all, three, Bits("0111")}),
       "those who confirmed are not within the survivors"},
      // Fewer than the threshold.
      {FourAt(Phase::kShare, {two, {}, {}, {}}),
       "those who joined are 2, fewer than the threshold 3"},
      {FourAt(Phase::kMask, {all, two, {}, {}}),
       "those who shared are 2, fewer than the threshold 3"},
      {FourAt(Phase::kConfirm, {all, all, two, {}}),
       "the survivors are 2, fewer than the threshold 3"},
      {FourAt(Phase::kUnmask, {all, all, three, two}),
       "those who confirmed are 2, fewer than the threshold 3"},
      {FourAt(Phase::kAbort, {all, two, {}, {}}),
       "those who shared are 2, fewer than the threshold 3"},
      // A confirm phase without a dropout after sharing.
      {FourAt(Phase::kConfirm, {all, all, all, {}}),
       "a confirm phase although nobody dropped after sharing"},
      {FourAt(Phase::kConfirm, {all, three, three, {}}),
       "a confirm phase although nobody dropped after sharing"},
  };
  for (const Case& k : cases) {
    const Status s = CheckSets(k.u);
    ASSERT_FALSE(s.ok()) << k.error;
    EXPECT_EQ(s.message(), k.error);
  }
}

TEST(SchemaThreshold, SafeThresholdAndCollusionTolerance) {
  struct Row {
    size_t n;
    uint32_t safe;
    uint32_t tolerance;
  };
  // schema/PROTOCOL.md, "Why it is private": about N/3 colluding patients at the safe minimum.
  for (const Row& row : {Row{2, 2, 0}, Row{3, 3, 1}, Row{4, 3, 1}, Row{5, 4, 2}, Row{10, 7, 3},
                         Row{100, 67, 33}, Row{1000, 667, 333}}) {
    EXPECT_EQ(SafeThreshold(row.n), row.safe) << row.n;
    EXPECT_EQ(CollusionTolerance(row.n, row.safe), row.tolerance) << row.n;
  }
  // min(2T - N - 1, T - 2): the survivors bound it at T = N, the split below.
  EXPECT_EQ(CollusionTolerance(10, 10), 8u);
  EXPECT_EQ(CollusionTolerance(10, 8), 5u);
  EXPECT_EQ(CollusionTolerance(3, 2), 0u);
  // Below the safe minimum nothing is tolerated: never a negative number wrapped around.
  EXPECT_EQ(CollusionTolerance(10, 5), 0u);
  EXPECT_EQ(CollusionTolerance(10, 1), 0u);
  EXPECT_EQ(CollusionTolerance(10, 0), 0u);
  EXPECT_EQ(CollusionTolerance(1000, 0), 0u);
}

TEST(SchemaThreshold, CheckRoundParamsRefusesAThresholdOutsideTheSafeRange) {
  std::vector<std::string> ten;
  for (int i = 0; i < 10; ++i) ten.push_back("p" + std::to_string(i));
  RoundParams p{"hospital", 100, 1, ten};
  for (uint32_t t : {7u, 8u, 10u}) {
    p.threshold = t;
    EXPECT_TRUE(CheckRoundParams(p).ok()) << t << ": " << CheckRoundParams(p).message();
  }
  p.threshold = 5;
  EXPECT_EQ(CheckRoundParams(p).message(),
            "threshold 5 is below the safe minimum 7 for 10 patients");
  p.threshold = 6;
  EXPECT_EQ(CheckRoundParams(p).message(),
            "threshold 6 is below the safe minimum 7 for 10 patients");
  p.threshold = 11;
  EXPECT_EQ(CheckRoundParams(p).message(), "threshold 11 is above the 10 patients");
  p.threshold = UINT32_MAX;
  EXPECT_EQ(CheckRoundParams(p).message(), "threshold 4294967295 is above the 10 patients");
  // 0 is what a request asks for the safe minimum with; the round itself never has it.
  p.threshold = 0;
  EXPECT_EQ(CheckRoundParams(p).message(),
            "threshold 0 is below the safe minimum 7 for 10 patients");
  // Two patients: T = 2 only.
  RoundParams two{"hospital", 100, 1, {"a", "b"}, {}, {}, 2};
  EXPECT_TRUE(CheckRoundParams(two).ok());
  two.threshold = 1;
  EXPECT_EQ(CheckRoundParams(two).message(),
            "threshold 1 is below the safe minimum 2 for 2 patients");
  // The other checks come first: a round of one is refused as such, not for its threshold.
  EXPECT_EQ(CheckRoundParams(RoundParams{"hospital", 100, 1, {"a"}, {}, {}, 1}).message(),
            "a round needs at least 2 patients (the sum of one is that input)");
  EXPECT_EQ(CheckRoundParams(RoundParams{"h", UINT64_MAX / 3 + 1, 1, {"a", "b", "c"}}).message(),
            "range too large: the sum of 3 inputs could exceed 2^64-1");
  // A round with columns is held to the same range of thresholds, after its columns.
  RoundParams columns{"h", 0, 1, {"a", "b", "c", "d"}, {{"bp", 0, 200, 0}}, {}, 3};
  EXPECT_TRUE(CheckRoundParams(columns).ok()) << CheckRoundParams(columns).message();
  columns.threshold = 2;
  EXPECT_EQ(CheckRoundParams(columns).message(),
            "threshold 2 is below the safe minimum 3 for 4 patients");
  columns.threshold = 5;
  EXPECT_EQ(CheckRoundParams(columns).message(), "threshold 5 is above the 4 patients");
  columns.columns[0].lower = 300;
  EXPECT_EQ(CheckRoundParams(columns).message(),
            "column bp: lower bound 300 is above upper bound 200");
}

std::vector<std::string> Patients(size_t n) {
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) names.push_back("p" + std::to_string(i));
  return names;
}

// A graph has rates below 10^6 ppm, an even degree k in [2, n - 2] and a threshold t in [2, k];
// it does not lower T. A full round has at most 1000 patients; a larger one needs a graph.
TEST(SchemaThreshold, CheckRoundParamsChecksTheGraphAndTheSizeOfAFullRound) {
  RoundParams p{"hospital", 100, 1, Patients(10), {}, {}, 7, TestGraph()};
  EXPECT_TRUE(CheckRoundParams(p).ok()) << CheckRoundParams(p).message();
  auto with = [&](const std::function<void(Neighbourhood&)>& change) {
    RoundParams q = p;
    change(*q.graph);
    return CheckRoundParams(q);
  };
  // The degree: even, at least 2, at most n - 2.
  for (uint32_t k : {2u, 4u, 6u, 8u}) {
    const Status s = with([k](Neighbourhood& g) {
      g.degree = k;
      g.threshold = 2;
    });
    EXPECT_TRUE(s.ok()) << k << ": " << s.message();
  }
  EXPECT_EQ(with([](Neighbourhood& g) { g.degree = 3; }).message(),
            "the graph's degree 3 must be even, at least 2 and at most 8 for 10 patients");
  EXPECT_EQ(with([](Neighbourhood& g) { g.degree = 5; }).message(),
            "the graph's degree 5 must be even, at least 2 and at most 8 for 10 patients");
  EXPECT_EQ(with([](Neighbourhood& g) { g.degree = 0; }).message(),
            "the graph's degree 0 must be even, at least 2 and at most 8 for 10 patients");
  EXPECT_EQ(with([](Neighbourhood& g) { g.degree = 10; }).message(),
            "the graph's degree 10 must be even, at least 2 and at most 8 for 10 patients");
  // n - 1 (even for 11 patients) is refused, n - 3 = 8 is the largest even degree.
  RoundParams eleven{"hospital", 100, 1, Patients(11), {}, {}, SafeThreshold(11), TestGraph()};
  eleven.graph->degree = 10;
  EXPECT_EQ(CheckRoundParams(eleven).message(),
            "the graph's degree 10 must be even, at least 2 and at most 9 for 11 patients");
  eleven.graph->degree = 8;
  EXPECT_TRUE(CheckRoundParams(eleven).ok()) << CheckRoundParams(eleven).message();
  // Too few patients for any graph: 3 leave no even degree in [2, 1].
  RoundParams three{"hospital", 100, 1, Patients(3), {}, {}, 3, TestGraph()};
  three.graph->degree = 2;
  three.graph->threshold = 2;
  EXPECT_EQ(CheckRoundParams(three).message(),
            "the graph's degree 2 must be even, at least 2 and at most 1 for 3 patients");
  // The threshold within a neighbourhood: in [2, k].
  EXPECT_EQ(with([](Neighbourhood& g) { g.threshold = 1; }).message(),
            "the graph's threshold 1 must be between 2 and its degree 4");
  EXPECT_EQ(with([](Neighbourhood& g) { g.threshold = 0; }).message(),
            "the graph's threshold 0 must be between 2 and its degree 4");
  EXPECT_EQ(with([](Neighbourhood& g) { g.threshold = 5; }).message(),
            "the graph's threshold 5 must be between 2 and its degree 4");
  EXPECT_EQ(with([](Neighbourhood& g) { g.threshold = UINT32_MAX; }).message(),
            "the graph's threshold 4294967295 must be between 2 and its degree 4");
  for (uint32_t t : {2u, 3u, 4u}) {
    const Status s = with([t](Neighbourhood& g) { g.threshold = t; });
    EXPECT_TRUE(s.ok()) << t << ": " << s.message();
  }
  // The rates: below 1,000,000 parts per million.
  const std::string rates = "the graph's rates must be below 1,000,000 parts per million";
  EXPECT_EQ(with([](Neighbourhood& g) { g.corrupt_ppm = 1'000'000; }).message(), rates);
  EXPECT_EQ(with([](Neighbourhood& g) { g.dropout_ppm = 1'000'000; }).message(), rates);
  EXPECT_EQ(with([](Neighbourhood& g) { g.corrupt_ppm = UINT32_MAX; }).message(), rates);
  EXPECT_TRUE(with([](Neighbourhood& g) {
                g.corrupt_ppm = 999'999;
                g.dropout_ppm = 999'999;
              }).ok());
  EXPECT_TRUE(with([](Neighbourhood& g) { g.corrupt_ppm = g.dropout_ppm = 0; }).ok());
  // A graph does not lower T: it stays in [SafeThreshold(n), n].
  p.threshold = 6;
  EXPECT_EQ(CheckRoundParams(p).message(),
            "threshold 6 is below the safe minimum 7 for 10 patients");
  p.threshold = 11;
  EXPECT_EQ(CheckRoundParams(p).message(), "threshold 11 is above the 10 patients");

  // A full round: at most kMaxFullRound = 1000 patients.
  ASSERT_EQ(kMaxFullRound, 1000u);
  RoundParams full{"hospital", 100, 1, Patients(1000), {}, {}, SafeThreshold(1000)};
  EXPECT_TRUE(CheckRoundParams(full).ok()) << CheckRoundParams(full).message();
  RoundParams large{"hospital", 100, 1, Patients(1001), {}, {}, SafeThreshold(1001)};
  EXPECT_EQ(CheckRoundParams(large).message(),
            "a full round has at most 1000 patients, not 1001: a larger one needs a graph "
            "(neighbourhoods)");
  // With a valid graph the same round is accepted, up to kMaxParticipants = 10,000.
  large.graph = TestGraph();
  large.graph->degree = 40;
  large.graph->threshold = 24;
  EXPECT_TRUE(CheckRoundParams(large).ok()) << CheckRoundParams(large).message();
  RoundParams most{
      "hospital", 100, 1, Patients(kMaxParticipants), {}, {}, SafeThreshold(kMaxParticipants),
      large.graph};
  EXPECT_TRUE(CheckRoundParams(most).ok()) << CheckRoundParams(most).message();
  // ... but not with an invalid one.
  large.graph->degree = 41;
  EXPECT_EQ(CheckRoundParams(large).message(),
            "the graph's degree 41 must be even, at least 2 and at most 999 for 1001 patients");
}

// ---- Names, reasons, round ids -------------------------------------------------------------

TEST(SchemaNames, KindPhaseAndBatchNames) {
  EXPECT_EQ(KindName(EnvelopeKind::kPartial), "partial");
  EXPECT_EQ(KindName(EnvelopeKind::kUnmask), "unmask");
  EXPECT_EQ(PhaseName(Phase::kOpen), "open");
  EXPECT_EQ(PhaseName(Phase::kShare), "share");
  EXPECT_EQ(PhaseName(Phase::kMask), "mask");
  EXPECT_EQ(PhaseName(Phase::kConfirm), "confirm");
  EXPECT_EQ(PhaseName(Phase::kUnmask), "unmask");
  EXPECT_EQ(PhaseName(Phase::kDone), "done");
  EXPECT_EQ(PhaseName(Phase::kAbort), "abort");
  EXPECT_EQ(BatchKindName(BatchKind::kKeys), "keys");
  EXPECT_EQ(BatchKindName(BatchKind::kShares), "shares");
  EXPECT_EQ(BatchKindName(BatchKind::kConfirm), "confirm");
}

TEST(SchemaNames, ValidReason) {
  EXPECT_TRUE(ValidReason(""));
  EXPECT_TRUE(ValidReason(" !~"));
  EXPECT_TRUE(ValidReason(std::string(kMaxReasonLength, 'x')));
  EXPECT_FALSE(ValidReason(std::string(kMaxReasonLength + 1, 'x')));
  EXPECT_FALSE(
      ValidReason("bob\xe2\x86\x92"
                  "charlie"));
}

TEST(SchemaRoundHex, RoundTripAndStrictness) {
  const RoundId round = TestRound();
  const std::string hex = RoundHex(round);
  EXPECT_EQ(hex, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
  Result<RoundId> back = RoundFromHex(hex);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(*back, round);
  EXPECT_FALSE(RoundFromHex("").ok());
  EXPECT_FALSE(RoundFromHex(hex.substr(1)).ok());
  EXPECT_FALSE(RoundFromHex(hex + "0").ok());
  EXPECT_FALSE(RoundFromHex("A0A1A2A3A4A5A6A7A8A9AAABACADAEAF").ok());
  EXPECT_FALSE(RoundFromHex("g0a1a2a3a4a5a6a7a8a9aaabacadaeaf").ok());
  EXPECT_FALSE(RoundFromHex(" 0a1a2a3a4a5a6a7a8a9aaabacadaeaf").ok());
  EXPECT_FALSE(RoundFromHex("0xa1a2a3a4a5a6a7a8a9aaabacadaeaf").ok());
}

}  // namespace
}  // namespace tally

namespace tally {
namespace {

TEST(TextTest, ParseU64IsStrictAndCatchesOverflow) {
  uint64_t v = 7;
  EXPECT_TRUE(ParseU64("18446744073709551615", v));
  EXPECT_EQ(v, UINT64_MAX);
  EXPECT_TRUE(ParseU64("0", v));
  EXPECT_EQ(v, 0u);
  for (const char* bad :
       {"18446744073709551616", "99999999999999999999", "", "-1", "+1", "1 ", " 1", "0x10", "1e3"})
    EXPECT_FALSE(ParseU64(bad, v)) << bad;
  uint32_t w = 0;
  EXPECT_TRUE(ParseU32("4294967295", 1, w));
  EXPECT_EQ(w, UINT32_MAX);
  EXPECT_FALSE(ParseU32("4294967296", 1, w));
  EXPECT_FALSE(ParseU32("0", 1, w));
}

// Regression (found reading results with jq 1.6): aggregates above 2^53 were printed as JSON
// numbers, which double-based readers show with other digits; they are strings now.
TEST(TextTest, JsonNumbersAbove2To53AreStrings) {
  EXPECT_EQ(JsonNumbers(std::vector<uint64_t>{9007199254740992u}), "9007199254740992");
  EXPECT_EQ(JsonNumbers(std::vector<uint64_t>{9007199254740993u}), "\"9007199254740993\"");
  EXPECT_EQ(JsonNumbers(std::vector<uint64_t>{1, UINT64_MAX, 3}),
            "[1, \"18446744073709551615\", 3]");
  EXPECT_EQ(JsonString("a\"b\\c\n\x7f"), "\"a\\\"b\\\\c\\u000a\\u007f\"");
}

TEST(TextTest, EndpointsOfOneBrokerAddress) {
  auto e = EndpointsOf("broker.example");
  ASSERT_TRUE(e.ok()) << e.message();
  EXPECT_EQ(e->router, "tcp://broker.example:7700");
  EXPECT_EQ(e->phases, "tcp://broker.example:7701");
  e = EndpointsOf("10.0.0.1:9000");
  ASSERT_TRUE(e.ok()) << e.message();
  EXPECT_EQ(e->router, "tcp://10.0.0.1:9000");
  EXPECT_EQ(e->phases, "tcp://10.0.0.1:9001");
  e = EndpointsOf("[2001:db8::1]:7800");
  ASSERT_TRUE(e.ok()) << e.message();
  EXPECT_EQ(e->router, "tcp://[2001:db8::1]:7800");
  EXPECT_EQ(e->phases, "tcp://[2001:db8::1]:7801");
  EXPECT_EQ(EndpointsOf("[::1]")->router, "tcp://[::1]:7700");
  EXPECT_EQ(EndpointsOf("host:65535").message(),
            "broker address \"host:65535\": the port must be 1..65534 (the phase channel takes "
            "the next one)");
  EXPECT_EQ(EndpointsOf("2001:db8::1").message(),
            "broker address \"2001:db8::1\": write an IPv6 address in brackets");
  for (const char* bad : {"", ":7700", "host:", "host:x", "host:0", "[::1", "tcp://host"})
    EXPECT_FALSE(EndpointsOf(bad).ok()) << bad;
}

// The results file's lines: written by ResultJson/AbortJson, read back exactly by
// ParseResultsLine, and nothing else accepted.
TEST(ResultsTest, ResultAndAbortLinesRoundTripAndOthersAreRefused) {
  RoundResult r;
  r.round = TestRound();
  r.aggregate = {1, 9007199254740993u, UINT64_MAX};
  r.params.participants = {"alice", "bob"};
  r.params.range = UINT64_MAX;
  r.params.length = 3;  // read back as the aggregate's
  r.in_range = false;
  r.elapsed_ms = 1.25;
  auto back = ParseResultsLine(ResultJson(r));
  ASSERT_TRUE(back.ok()) << back.message();
  ASSERT_TRUE(back->result);
  EXPECT_EQ(*back->result, r);
  EXPECT_FALSE(back->aborted);
  r.aggregate = {856};
  EXPECT_EQ(ParseResultsLine(ResultJson(r))->result->aggregate, std::vector<uint64_t>{856});

  auto abort = ParseResultsLine(AbortJson(TestRound(), "bob refused the round: \"x\""));
  ASSERT_TRUE(abort.ok()) << abort.message();
  EXPECT_EQ(abort->round, TestRound());
  EXPECT_EQ(abort->aborted, "bob refused the round: \"x\"");
  EXPECT_FALSE(abort->result);

  const std::string round = "\"round\": \"" + RoundHex(TestRound()) + "\"";
  for (const std::string& bad : std::vector<std::string>{
           "", "{}", "{" + round + "}", "[1]", "{" + round + ", \"aborted\": 3}",
           "{" + round + ", \"aborted\": \"x\", \"aggregate\": 1}",
           "{\"round\": \"xyz\", \"aborted\": \"x\"}", ResultJson(r) + " trailing",
           "{" + round +
               ", \"aggregate\": -1, \"participants\": [], \"dropped\": [], \"range\": 1, "
               "\"in_range\": true, \"elapsed_ms\": 1}",
           "{" + round +
               ", \"aggregate\": 1, \"participants\": [\"Bob\"], \"dropped\": [], \"range\": 1, "
               "\"in_range\": true, \"elapsed_ms\": 1}",
           "{" + round +
               ", \"aggregate\": 1, \"participants\": [], \"dropped\": [], \"range\": 1, "
               "\"in_range\": true}",
           "{" + round + ", " + round + ", \"aborted\": \"x\"}"})
    EXPECT_FALSE(ParseResultsLine(bad).ok()) << bad;
}

// The survivors' sum names who is not in it: "dropped" after "participants", read back exactly;
// a line without it (before dropouts) or with anything but names in it is refused.
TEST(ResultsTest, DroppedParticipantsRoundTripAndALineWithoutThemIsRefused) {
  RoundResult r;
  r.round = TestRound();
  r.aggregate = {374};
  r.params.participants = {"p01", "p02", "p03", "p04"};
  r.params.range = 100;
  r.dropped = {"p03", "p04"};
  r.elapsed_ms = 3.5;
  const std::string line = ResultJson(r);
  EXPECT_EQ(line, "{\"round\": \"" + RoundHex(TestRound()) +
                      "\", \"aggregate\": 374, \"participants\": [\"p01\", \"p02\", \"p03\", "
                      "\"p04\"], \"dropped\": [\"p03\", \"p04\"], \"range\": 100, \"in_range\": "
                      "true, \"elapsed_ms\": 3.500}");
  auto back = ParseResultsLine(line);
  ASSERT_TRUE(back.ok()) << back.message();
  ASSERT_TRUE(back->result);
  EXPECT_EQ(*back->result, r);
  EXPECT_EQ(back->result->dropped, (std::vector<std::string>{"p03", "p04"}));
  // Nobody dropped: an empty list, still written.
  r.dropped.clear();
  EXPECT_TRUE(Contains(ResultJson(r), "\"dropped\": [], \"range\": 100"));
  back = ParseResultsLine(ResultJson(r));
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_TRUE(back->result->dropped.empty());

  const std::string head = "{\"round\": \"" + RoundHex(TestRound()) +
                           "\", \"aggregate\": 374, \"participants\": [\"p01\", \"p02\"], ";
  const std::string tail = "\"range\": 100, \"in_range\": true, \"elapsed_ms\": 1}";
  EXPECT_EQ(ParseResultsLine(head + tail).message(), "no \"dropped\"");
  EXPECT_EQ(ParseResultsLine(head + "\"dropped\": \"p02\", " + tail).message(),
            "\"dropped\" must be a list");
  EXPECT_EQ(ParseResultsLine(head + "\"dropped\": [\"P02\"], " + tail).message(),
            "\"dropped\" must hold party names");
  EXPECT_EQ(ParseResultsLine(head + "\"dropped\": [2], " + tail).message(),
            "\"dropped\" must hold party names");
  EXPECT_TRUE(ParseResultsLine(head + "\"dropped\": [\"p02\"], " + tail).ok());
}

TEST(TextTest, QuoteKeepsALogLineOneLine) {
  EXPECT_EQ(Quote("plain"), "\"plain\"");
  EXPECT_EQ(Quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(Quote(std::string("x\ny\0z", 5)), "\"x?y?z\"");
}

// A load generator hosting thousands of parties needs more descriptors than a default hard limit
// (often 4096 or 20000): a process that may raise the hard limit (root) does so, and one that
// may not is told which limit to raise. In a child process, so this one keeps its limits.
TEST(SystemTest, OpenFileLimitAboveTheHardLimitIsRaisedWherePermittedElseExplained) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    rlimit low{64, 64};  // lowering is always permitted
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) _exit(10);
    const Status s = EnsureOpenFileLimit(256, "a test");
    rlimit now{};
    getrlimit(RLIMIT_NOFILE, &now);
    if (s.ok()) _exit(now.rlim_cur >= 256 && now.rlim_max >= 256 ? 0 : 11);
    // Refused (no CAP_SYS_RESOURCE): the hard limit is named, with what needs how many.
    const bool said = s.message().find("hard limit") != std::string::npos &&
                      s.message().find("a test needs up to 256") != std::string::npos;
    _exit(now.rlim_max == 64 && said ? 0 : 12);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace tally
