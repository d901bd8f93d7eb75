// tally-replay against captures of real rounds: real tally-broker and tally-node processes on
// loopback, the real tally-replay binary, real files. Damaged captures are made by cutting and
// flipping bytes of a real one; injection goes into a live broker during a new round.
#include <gtest/gtest.h>
#include <sodium.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "nodes/seal.h"
#include "schema/capture.h"
#include "tests/support.h"
#include "tools/process.h"
#include "tools/replay_lib.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;

std::string Str(uint64_t v) { return std::to_string(v); }

size_t CountOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::vector<uint8_t> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void WriteFile(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

uint32_t Crc32(std::span<const uint8_t> bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (uint8_t b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
  }
  return ~crc;
}

// The number after `prefix` in `text` (e.g. "stops at offset "), or nullopt.
std::optional<uint64_t> NumberAfter(const std::string& text, const std::string& prefix) {
  auto at = text.find(prefix);
  if (at == std::string::npos) return std::nullopt;
  at += prefix.size();
  auto end = text.find_first_not_of("0123456789", at);
  if (end == at) return std::nullopt;
  return std::stoull(text.substr(at, end - at));
}

struct Output {
  int code = -1;
  std::string out;
  std::string err;
};

class ReplayTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }

  void Keys(const std::vector<std::string>& patients) { keys_ = MakeKeys(dir_.path(), patients); }

  void StartBroker(uint32_t deadline_ms = 10000) {
    auto b = Child::Spawn({(kBin / "broker/tally-broker").string(), "--keys", keys_.string(),
                           "--router", "tcp://127.0.0.1:*", "--phases", "tcp://127.0.0.1:*",
                           "--captures", (dir_.path() / "captures").string(), "--deadline-ms",
                           Str(deadline_ms)},
                          broker_log_);
    ASSERT_TRUE(b.ok()) << b.message();
    broker_.emplace(std::move(b.value()));
    auto endpoints = ReadBrokerEndpoints(*broker_);
    ASSERT_TRUE(endpoints) << "broker did not come up";
    router_ = endpoints->router;
    phases_ = endpoints->phases;
  }

  Child Patient(const std::string& name, uint64_t value, bool once) {
    std::vector<std::string> args = {(kBin / "nodes/tally-node").string(), "--keys", keys_.string(),
                                     "--name", name, "--router", router_, "--phases", phases_,
                                     "--value", Str(value)};
    if (once) args.push_back("--once");
    auto c = Child::Spawn(args, dir_.path() / (name + ".log"));
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  Child Hospital(const std::string& participants) {
    auto c = Child::Spawn({(kBin / "nodes/tally-node").string(), "--keys", keys_.string(), "--name",
                           "hospital", "--router", router_, "--phases", phases_, "--json",
                           "--results", results_.string(), "--range", "3000", "--participants",
                           participants},
                          dir_.path() / "hospital.log");
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  // Runs one round of alice, bob and charlie (random inputs); returns its capture's path.
  fs::path CapturedRound(bool serving = false) {
    Keys({"alice", "bob", "charlie", "dave"});
    StartBroker();
    for (const std::string name : {"alice", "bob", "charlie"}) {
      inputs_[name] = randombytes_uniform(1001);
      patients_.push_back(Patient(name, inputs_[name], !serving));
    }
    expected_ = inputs_["alice"] + inputs_["bob"] + inputs_["charlie"];
    auto hospital = Hospital("alice,bob,charlie");
    auto line = hospital.ReadLine(std::chrono::milliseconds(60000));
    EXPECT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
    if (!line) return {};
    EXPECT_EQ(hospital.Wait(kWait), 0);
    EXPECT_NE(line->find("\"aggregate\": " + Str(expected_) + ","), std::string::npos) << *line;
    const std::string round = line->substr(line->find("\"round\": \"") + 10, 32);
    return dir_.path() / "captures" / (round + ".tcap");
  }

  Output Replay(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {(kBin / "tools/tally-replay").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const fs::path err = dir_.path() / ("replay-" + Str(++replays_) + ".err");
    auto c = Child::Spawn(argv, err);
    EXPECT_TRUE(c.ok()) << c.message();
    Output o;
    o.out = c->ReadAll(kWait);
    o.code = c->Wait(kWait).value_or(-1);
    auto bytes = ReadFile(err);
    o.err.assign(bytes.begin(), bytes.end());
    return o;
  }

  std::vector<std::pair<uint64_t, Envelope>> EnvelopeRecords(const fs::path& capture) {
    auto contents = ReadCaptureFile(capture);
    EXPECT_TRUE(contents.ok() && contents->ok());
    std::vector<std::pair<uint64_t, Envelope>> out;
    for (size_t i = 0; i < contents->records.size(); ++i) {
      if (auto* e = std::get_if<CaptureEnvelope>(&contents->records[i]))
        out.emplace_back(contents->offsets[i], std::get<Envelope>(Decode(e->frame).value()));
    }
    return out;
  }

  std::string BrokerLog() {
    auto bytes = ReadFile(broker_log_);
    return {bytes.begin(), bytes.end()};
  }

  TempDir dir_;
  fs::path keys_;
  fs::path results_ = dir_.path() / "results.jsonl";
  fs::path broker_log_ = dir_.path() / "broker.log";
  std::optional<Child> broker_;
  std::string router_, phases_;
  std::vector<Child> patients_;
  std::map<std::string, uint64_t> inputs_;
  uint64_t expected_ = 0;
  int replays_ = 0;
};

TEST_F(ReplayTest, TimelineListsEveryShareAndPartialAndCheckPasses) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  Output t = Replay({capture.string()});
  EXPECT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("round " + capture.stem().string()), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("hospital hospital  patients alice, bob, charlie"), std::string::npos);
  const std::vector<std::string> names = {"alice", "bob", "charlie"};
  for (const auto& from : names) {
    for (const auto& to : names) {
      if (from == to) continue;
      EXPECT_EQ(CountOf(t.out, "share   " + std::string(from) + std::string(8 - from.size(), ' ') +
                                   " -> " + to + " "),
                1u)
          << from << " -> " << to << "\n" << t.out;
    }
    EXPECT_EQ(CountOf(t.out, "partial " + from + std::string(8 - from.size(), ' ') + " -> hospital"), 1u)
        << t.out;
  }
  for (const std::string phase : {"open", "share", "sum", "done"})
    EXPECT_EQ(CountOf(t.out, "phase " + phase + "\n"), 1u) << t.out;
  EXPECT_NE(t.out.find("outcome: done (9 envelopes, 0 rejected"), std::string::npos) << t.out;

  Output json = Replay({capture.string(), "--json"});
  EXPECT_EQ(json.code, 0);
  EXPECT_EQ(CountOf(json.out, "{\"type\": \"envelope\""), 9u);
  EXPECT_EQ(CountOf(json.out, "{\"type\": \"phase\""), 4u);
  EXPECT_EQ(CountOf(json.out, "{\"type\": \"header\""), 1u);
  EXPECT_EQ(CountOf(json.out, "\"outcome\": \"done\""), 1u);

  Output check = Replay({capture.string(), "--check"});
  EXPECT_EQ(check.code, 0) << check.out;
  EXPECT_EQ(check.out, "check: ok (15 records)\n");  // header, 4 phases, 9 envelopes, trailer
}

TEST_F(ReplayTest, AuditAsHospitalRecomputesTheLiveAggregateAndPatientsOpenTheirShares) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  Output h = Replay({capture.string(), "--keys", keys_.string(), "--as", "hospital", "--results",
                     results_.string()});
  EXPECT_EQ(h.code, 0) << h.out << h.err;
  EXPECT_NE(h.out.find("aggregate (sum of the 3 partials mod 2^64): " + Str(expected_) + "\n"),
            std::string::npos)
      << h.out;
  EXPECT_NE(h.out.find("matches results file"), std::string::npos) << h.out;
  EXPECT_EQ(CountOf(h.out, "opened under its binding"), 3u);

  for (const std::string name : {"alice", "bob", "charlie"}) {
    Output p = Replay({capture.string(), "--keys", keys_.string(), "--as", name});
    EXPECT_EQ(p.code, 0) << p.out;
    EXPECT_EQ(CountOf(p.out, "-> " + name + " (share, offset "), 2u) << p.out;
    EXPECT_EQ(CountOf(p.out, "opened under its binding"), 2u) << p.out;  // exactly n-1
    EXPECT_NE(p.out.find(name + ": 2 of 2 envelopes addressed to it opened"), std::string::npos);
    EXPECT_EQ(p.out.find("aggregate"), std::string::npos);
  }

  // A results file that records another value for this round, or not this round at all.
  const fs::path wrong = dir_.path() / "wrong.jsonl";
  {
    std::ofstream out(wrong);
    out << "{\"round\": \"" << capture.stem().string() << "\", \"aggregate\": " << expected_ + 1
        << ", \"participants\": [\"alice\", \"bob\", \"charlie\"], \"range\": 3000, "
           "\"in_range\": true}\n";
  }
  Output differs = Replay({capture.string(), "--keys", keys_.string(), "--as", "hospital",
                           "--results", wrong.string()});
  EXPECT_EQ(differs.code, 1);
  EXPECT_NE(differs.out.find("DIFFERS from results file"), std::string::npos) << differs.out;
  const fs::path empty = dir_.path() / "empty.jsonl";
  std::ofstream(empty).flush();
  Output missing = Replay({capture.string(), "--keys", keys_.string(), "--as", "hospital",
                           "--results", empty.string()});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("round not in results file"), std::string::npos) << missing.out;
}

// Every cut of a real capture, read in process: never a crash, always a problem with an offset
// inside the cut; a few cuts through the binary, which still shows the readable prefix.
TEST_F(ReplayTest, TruncatedCaptureFailsCheckWithTheOffsetAndShowsTheReadablePrefix) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  const std::vector<uint8_t> bytes = ReadFile(capture);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    const CaptureContents c = ReadCapture(std::span<const uint8_t>(bytes).first(cut));
    const auto problems = replay::Check(c);
    ASSERT_FALSE(problems.empty()) << "cut at " << cut;
    for (const auto& p : problems) EXPECT_LE(p.offset, cut) << p.what;
    if (cut >= 12) {
      EXPECT_GT(problems.front().offset, 0u) << problems.front().what;
    }
    std::ostringstream text, json;
    replay::PrintTimeline(c, false, text);
    replay::PrintTimeline(c, true, json);
  }

  const auto envelopes = EnvelopeRecords(capture);
  const uint64_t third = envelopes[2].first;
  for (size_t cut : {size_t{10}, size_t{100}, static_cast<size_t>(third + 7), bytes.size() - 1}) {
    const fs::path cutfile = dir_.path() / ("cut-" + Str(cut) + ".tcap");
    WriteFile(cutfile, std::span<const uint8_t>(bytes).first(cut));
    Output check = Replay({cutfile.string(), "--check"});
    EXPECT_EQ(check.code, 1) << check.out;
    auto offset = NumberAfter(check.out, "stops at offset ");
    ASSERT_TRUE(offset) << check.out << check.err;
    EXPECT_GT(*offset, 0u);
    EXPECT_LE(*offset, cut);
    EXPECT_NE(check.out.find("check: FAILED"), std::string::npos);
    if (cut == third + 7) {
      EXPECT_EQ(*offset, third);
      EXPECT_NE(check.out.find("readable prefix"), std::string::npos) << check.out;
      EXPECT_NE(check.out.find("phase share"), std::string::npos) << check.out;
      Output timeline = Replay({cutfile.string()});
      EXPECT_EQ(timeline.code, 1);
      EXPECT_NE(timeline.out.find("capture stops at offset " + Str(third)), std::string::npos);
      EXPECT_EQ(CountOf(timeline.out, "share   "), 2u) << timeline.out;
    }
  }
}

// A flipped byte in the sealed part of each envelope: --check stops at that record and names
// it; an audit by its recipient names it. With the CRC patched up (a deliberate forgery) the
// structure checks out and only the seal catches it.
TEST_F(ReplayTest, FlippedByteInAnyEnvelopeIsNamedByCheckAndAudit) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  const std::vector<uint8_t> bytes = ReadFile(capture);
  const auto envelopes = EnvelopeRecords(capture);
  ASSERT_EQ(envelopes.size(), 9u);
  for (size_t k = 0; k < envelopes.size(); ++k) {
    const auto& [offset, env] = envelopes[k];
    const uint32_t body = GetU32(bytes.data() + offset);
    const size_t in_seal = offset + 5 + body - 20;  // inside the ciphertext (before the tag)
    std::vector<uint8_t> bad = bytes;
    bad[in_seal] ^= 0x01;
    const fs::path file = dir_.path() / ("flip-" + Str(k) + ".tcap");
    WriteFile(file, bad);
    const std::string name = "envelope #" + Str(k + 1) + " " + env.from + " -> " + env.to + " (" +
                             std::string(KindName(env.kind)) + ", offset " + Str(offset) + ")";

    Output check = Replay({file.string(), "--check"});
    EXPECT_EQ(check.code, 1);
    EXPECT_NE(check.out.find("stops at offset " + Str(offset) + ": CRC mismatch"), std::string::npos)
        << check.out;
    EXPECT_NE(check.out.find("the damaged record reads as " + name), std::string::npos) << check.out;

    Output audit = Replay({file.string(), "--keys", keys_.string(), "--as", env.to});
    EXPECT_EQ(audit.code, 1);
    EXPECT_NE(audit.out.find(name + ": authentication failed"), std::string::npos) << audit.out;

    // The same flip with a recomputed CRC.
    const uint32_t crc = Crc32(std::span<const uint8_t>(bad).subspan(offset + 4, 1 + body));
    for (int i = 0; i < 4; ++i) bad[offset + 5 + body + i] = static_cast<uint8_t>(crc >> (8 * i));
    WriteFile(file, bad);
    EXPECT_EQ(Replay({file.string(), "--check"}).code, 0);
    Output forged = Replay({file.string(), "--keys", keys_.string(), "--as", env.to});
    EXPECT_EQ(forged.code, 1);
    EXPECT_NE(forged.out.find(name + ": authentication failed"), std::string::npos) << forged.out;
    // Another party's audit still passes: the envelope is not addressed to it.
    const std::string other = env.to == "alice" ? "bob" : "alice";
    if (env.from != other) {
      EXPECT_EQ(Replay({file.string(), "--keys", keys_.string(), "--as", other}).code, 0);
    }
  }

  // Any single flipped bit anywhere, in process: reading never crashes and always complains.
  for (size_t at = 0; at < bytes.size(); ++at) {
    std::vector<uint8_t> bad = bytes;
    bad[at] ^= 0x10;
    const CaptureContents c = ReadCapture(bad);
    EXPECT_FALSE(replay::Check(c).empty()) << "flip at " << at;
    std::set<uint64_t> damaged;
    (void)replay::ReadSalvaging(bad, &damaged);
    std::ostringstream text;
    replay::PrintTimeline(c, false, text);
  }
}

TEST_F(ReplayTest, OlderOrNewerCaptureFormatIsRefusedWithAClearMessage) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  std::vector<uint8_t> bytes = ReadFile(capture);
  bytes[8] = 0;  // format version 0
  const fs::path old = dir_.path() / "old.tcap";
  WriteFile(old, bytes);
  for (const auto& extra : std::vector<std::vector<std::string>>{
           {}, {"--check"}, {"--keys", keys_.string(), "--as", "alice"}}) {
    std::vector<std::string> args = {old.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    Output o = Replay(args);
    EXPECT_EQ(o.code, 1);
    EXPECT_NE(o.err.find("capture format version 0 is not supported (this reader knows 1): it "
                         "was written by an older Tally"),
              std::string::npos)
        << o.err;
  }
  bytes[8] = 2;
  WriteFile(old, bytes);
  EXPECT_NE(Replay({old.string()}).err.find("written by a newer Tally"), std::string::npos);
}

TEST_F(ReplayTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Replay({}).code, 2);
  EXPECT_EQ(Replay({"a.tcap", "--bogus", "x"}).code, 2);
  EXPECT_EQ(Replay({"a.tcap", "--as", "alice"}).code, 2);
  EXPECT_EQ(Replay({"a.tcap", "--inject", "tcp://127.0.0.1:1"}).code, 2);
  EXPECT_EQ(Replay({"a.tcap", "--check", "--keys", "k", "--as", "alice"}).code, 2);
  Output help = Replay({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("usage: tally-replay FILE"), std::string::npos);
  EXPECT_EQ(Replay({(dir_.path() / "missing.tcap").string()}).code, 1);
}

// dave (played by the test) keeps round 2 open while charlie's envelopes from round 1 are
// re-sent by tally-replay. charlie is in the roster but not in round 2.
TEST_F(ReplayTest, InjectedEnvelopesAreRefusedAndTheLiveRoundStillCompletes) {
  const fs::path capture = CapturedRound(/*serving=*/true);
  ASSERT_FALSE(capture.empty());
  const uint64_t dave_input = randombytes_uniform(1001);
  auto roster = LoadRoster(keys_).value();
  auto sealer = Sealer::Create(LoadSecret(keys_, "dave").value(), roster).value();
  TestParty dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital("alice,bob,dave");
  auto open = dave.WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);

  Output inject = Replay({capture.string(), "--inject", router_, "--keys", keys_.string(), "--as",
                          "charlie"});
  EXPECT_EQ(inject.code, 0) << inject.out << inject.err;
  EXPECT_EQ(CountOf(inject.out, "sent byte for byte"), 3u) << inject.out;  // 2 shares, 1 partial
  EXPECT_NE(inject.out.find("the broker processed all 3"), std::string::npos) << inject.out;
  // The two shares addressed to charlie open under round 1 and fail under a fresh round id.
  EXPECT_EQ(CountOf(inject.out, "it fails: authentication failed"), 2u) << inject.out;

  // Round 2 goes on: dave joins, shares, sums.
  dave.Send(Join{open->round});
  ASSERT_TRUE(dave.WaitPhase(Phase::kShare, open->round));
  uint64_t sum = dave_input;
  for (const std::string to : {"alice", "bob"}) {
    uint64_t share;
    randombytes_buf(&share, sizeof share);
    sum -= share;
    auto sealed = sealer.Seal({open->round, EnvelopeKind::kShare, "dave", to},
                              EncodePayload(EnvelopeKind::kShare, std::vector<uint64_t>{share}));
    dave.Send(Envelope{EnvelopeKind::kShare, open->round, "dave", to, sealed.value()});
  }
  for (int k = 0; k < 2; ++k) {
    auto m = dave.Receive();
    ASSERT_TRUE(m && std::holds_alternative<Envelope>(*m));
    const auto& env = std::get<Envelope>(*m);
    auto plain = sealer.Open({open->round, env.kind, env.from, "dave"}, env.sealed);
    ASSERT_TRUE(plain.ok()) << plain.message();
    sum += DecodePayload(plain.value(), EnvelopeKind::kShare, 1).value()[0];
  }
  auto sealed = sealer.Seal({open->round, EnvelopeKind::kPartial, "dave", "hospital"},
                            EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>{sum}));
  dave.Send(Envelope{EnvelopeKind::kPartial, open->round, "dave", "hospital", sealed.value()});
  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  const uint64_t expected = inputs_["alice"] + inputs_["bob"] + dave_input;
  EXPECT_NE(line->find("\"aggregate\": " + Str(expected) + ","), std::string::npos) << *line;
  EXPECT_EQ(hospital.Wait(kWait), 0);

  for (auto& p : patients_) EXPECT_EQ(p.Stop(), 0);
  EXPECT_EQ(broker_->Stop(), 0);
  const std::string log = BrokerLog();
  EXPECT_EQ(CountOf(log, "event=reject from=charlie reason=\"envelope for a round that is not active\""),
            3u)
      << log;
  EXPECT_EQ(CountOf(log, "event=reject from=charlie reason=\"round request refused: only a hospital"),
            1u);  // the barrier probe

  // Round 2's capture: complete, with charlie's refusals recorded and nothing of charlie routed.
  const fs::path second = dir_.path() / "captures" / (RoundHex(open->round) + ".tcap");
  Output check = Replay({second.string(), "--check"});
  EXPECT_EQ(check.code, 0) << check.out;
  Output timeline = Replay({second.string()});
  EXPECT_EQ(CountOf(timeline.out, "rejected from charlie: envelope for a round that is not active"),
            3u)
      << timeline.out;
  EXPECT_EQ(CountOf(timeline.out, " charlie "), 0u);
  EXPECT_NE(timeline.out.find("outcome: done (9 envelopes, 4 rejected"), std::string::npos)
      << timeline.out;
}

// Injecting as a party that is in the live round. Regression: the broker used to take a party's
// route from the last message it sent, refused or not, so alice's refused injection moved her
// deliveries to the injector's connection and the round aborted ("share dave->alice
// undeliverable"). Routes now follow accepted messages only.
TEST_F(ReplayTest, InjectingAsALiveParticipantDoesNotStealItsDeliveries) {
  const fs::path capture = CapturedRound(/*serving=*/true);
  ASSERT_FALSE(capture.empty());
  auto roster = LoadRoster(keys_).value();
  auto sealer = Sealer::Create(LoadSecret(keys_, "dave").value(), roster).value();
  TestParty dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital("alice,bob,dave");
  auto open = dave.WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  dave.Send(Join{open->round});
  ASSERT_TRUE(dave.WaitPhase(Phase::kShare, open->round));
  // alice's and bob's shares to dave: alice has sent all its shares and now waits for dave's.
  uint64_t sum = 7;
  for (int k = 0; k < 2; ++k) {
    auto m = dave.Receive();
    ASSERT_TRUE(m && std::holds_alternative<Envelope>(*m));
    const auto& env = std::get<Envelope>(*m);
    sum += DecodePayload(sealer.Open({open->round, env.kind, env.from, "dave"}, env.sealed).value(),
                         EnvelopeKind::kShare, 1)
               .value()[0];
  }
  Output inject = Replay({capture.string(), "--inject", router_, "--keys", keys_.string(), "--as",
                          "alice"});
  EXPECT_EQ(inject.code, 0) << inject.out;
  for (const std::string to : {"alice", "bob"}) {
    uint64_t share = 1;
    sum -= share;
    auto sealed = sealer.Seal({open->round, EnvelopeKind::kShare, "dave", to},
                              EncodePayload(EnvelopeKind::kShare, std::vector<uint64_t>{share}));
    dave.Send(Envelope{EnvelopeKind::kShare, open->round, "dave", to, sealed.value()});
  }
  auto sealed = sealer.Seal({open->round, EnvelopeKind::kPartial, "dave", "hospital"},
                            EncodePayload(EnvelopeKind::kPartial, std::vector<uint64_t>{sum}));
  dave.Send(Envelope{EnvelopeKind::kPartial, open->round, "dave", "hospital", sealed.value()});
  auto line = hospital.ReadLine(kWait);
  EXPECT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(hospital.Wait(kWait), 0);
  for (auto& p : patients_) p.Stop();
  broker_->Stop();
  EXPECT_EQ(CountOf(BrokerLog(), "undeliverable"), 0u) << BrokerLog();
}

}  // namespace
}  // namespace tally::test
