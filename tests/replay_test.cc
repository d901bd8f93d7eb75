// tally-replay against captures of real protocol-2 rounds: real tally-broker and tally-node
// processes on loopback, the real tally-replay binary, real files. Damaged captures are made by
// cutting and flipping bytes of a real one, forged ones by re-framing its records (altered,
// moved, repeated or dropped); injection goes into a live broker during a new round, in which
// the test plays the patient dave (a fresh join nonce, one masked input sealed to the hospital).
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>

#include "nodes/seal.h"
#include "schema/capture.h"
#include "tests/support.h"
#include "tools/cluster.h"
#include "tools/process.h"
#include "tools/replay_lib.h"

namespace tally::test {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = TALLY_BIN_DIR;

std::string Str(uint64_t v) { return std::to_string(v); }

// How tally-replay names an envelope: "envelope #2 alice -> hospital (partial, offset 427)".
std::string Named(size_t index, const Envelope& env, uint64_t offset) {
  return "envelope #" + Str(index) + " " + env.from + " -> " + env.to + " (" +
         std::string(KindName(env.kind)) + ", offset " + Str(offset) + ")";
}

std::string Hex(std::span<const uint8_t> bytes) {
  std::string out;
  for (uint8_t b : bytes) {
    char buf[3];
    std::snprintf(buf, sizeof buf, "%02x", b);
    out += buf;
  }
  return out;
}

void WriteFile(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
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
    Status started = cluster_.StartBroker({"--deadline-ms", Str(deadline_ms)});
    ASSERT_TRUE(started.ok()) << started.message();
  }

  Child Patient(const std::string& name, uint64_t value, bool once) {
    std::vector<std::string> args = {"--value", Str(value)};
    if (once) args.push_back("--once");
    auto c = cluster_.SpawnNode(name, args);
    EXPECT_TRUE(c.ok()) << c.message();
    return std::move(c.value());
  }

  Child Hospital(const std::string& participants) {
    auto c = cluster_.SpawnNode("hospital", {"--json", "--results", results_.string(), "--range",
                                             "3000", "--participants", participants});
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
    const Cluster::Output o = cluster_.RunTool("tools/tally-replay", args, kWait);
    return Output{o.code, o.out, o.err};
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

  CaptureContents Contents(const fs::path& capture) {
    auto contents = ReadCaptureFile(capture);
    EXPECT_TRUE(contents.ok() && contents->ok());
    return contents.ok() ? std::move(contents.value()) : CaptureContents{};
  }

  // A capture made of `records`, each framed as the broker frames it, after the file header
  // (magic and format version) of `original`.
  static std::vector<uint8_t> Rebuild(std::span<const uint8_t> original,
                                      const std::vector<CaptureRecord>& records) {
    std::vector<uint8_t> out(original.begin(), original.begin() + 12);
    for (const auto& r : records) {
      const std::vector<uint8_t> framed = EncodeRecord(r);
      out.insert(out.end(), framed.begin(), framed.end());
    }
    return out;
  }

  // Writes a forged capture; returns its path and its records' offsets.
  std::pair<fs::path, std::vector<uint64_t>> Forge(const std::string& name,
                                                   std::span<const uint8_t> original,
                                                   const std::vector<CaptureRecord>& records) {
    const fs::path file = dir_.path() / (name + ".tcap");
    const std::vector<uint8_t> bytes = Rebuild(original, records);
    WriteFile(file, bytes);
    const CaptureContents c = ReadCapture(bytes);
    EXPECT_TRUE(c.ok()) << name << ": " << c.error;
    return {file, c.offsets};
  }

  // dave's part in a round, played as tally-node plays a patient: joins with a fresh nonce and
  // returns the sum-phase update (with every participant's nonce, dave's among them).
  std::optional<PhaseUpdate> JoinAndWaitSum(TestParty& party, const RoundId& round) {
    JoinNonce nonce;
    randombytes_buf(nonce.data(), nonce.size());
    party.Send(Join{round, nonce});
    auto sum = party.WaitPhase(Phase::kSum, round);
    if (sum) {
      const auto at =
          std::find(sum->params.participants.begin(), sum->params.participants.end(), "dave");
      EXPECT_NE(at, sum->params.participants.end());
      EXPECT_EQ(sum->nonces.size(), sum->params.participants.size());
      const auto i = static_cast<size_t>(at - sum->params.participants.begin());
      if (at != sum->params.participants.end() && i < sum->nonces.size()) {
        EXPECT_EQ(sum->nonces[i], nonce);
      }
    }
    return sum;
  }

  // Then sends dave's input plus its masks, sealed to the hospital under its view of the round.
  static void SendPartial(TestParty& party, const Sealer& sealer, const PhaseUpdate& sum,
                          uint64_t input) {
    std::vector<uint64_t> masked{input};
    auto masks = sealer.AddMasks(sum, masked);
    ASSERT_TRUE(masks.ok()) << masks.message();
    auto sealed = sealer.Seal(Binding{sum.round, EnvelopeKind::kPartial, sealer.name(),
                                      sum.params.hospital, View(sealer, sum)},
                              EncodePayload(EnvelopeKind::kPartial, masked));
    ASSERT_TRUE(sealed.ok()) << sealed.message();
    party.Send(Envelope{EnvelopeKind::kPartial, sum.round, sealer.name(), sum.params.hospital,
                        sealed.value()});
  }

  Sealer SealerOf(const std::string& name) {
    return Sealer::Create(LoadSecret(keys_, name).value(), LoadRoster(keys_).value()).value();
  }

  std::string BrokerLog() { return ReadText(cluster_.LogOf("broker")); }

  TempDir dir_;
  Cluster cluster_{kBin, dir_.path(), dir_.path()};  // logs in dir_ itself
  fs::path keys_;
  fs::path results_ = dir_.path() / "results.jsonl";
  // The running broker's endpoints (updated by each StartBroker).
  const std::string& router_ = cluster_.endpoints().router;
  const std::string& phases_ = cluster_.endpoints().phases;
  std::vector<Child> patients_;
  std::map<std::string, uint64_t> inputs_;
  uint64_t expected_ = 0;
};

TEST_F(ReplayTest, TimelineListsEveryPartialAndCheckPasses) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  Output t = Replay({capture.string()});
  EXPECT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("round " + capture.stem().string()), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("hospital hospital  patients alice, bob, charlie"), std::string::npos);
  for (const std::string from : {"alice", "bob", "charlie"}) {
    EXPECT_EQ(
        CountOf(t.out, "partial " + from + std::string(8 - from.size(), ' ') + " -> hospital"), 1u)
        << t.out;
  }
  EXPECT_EQ(CountOf(t.out, "partial "), 3u) << t.out;  // N envelopes, all to the hospital
  for (const std::string phase : {"open", "sum", "done"})
    EXPECT_EQ(CountOf(t.out, "phase " + phase + "\n"), 1u) << t.out;
  EXPECT_EQ(CountOf(t.out, " phase "), 3u) << t.out;
  EXPECT_NE(t.out.find("outcome: done (3 envelopes, 0 rejected"), std::string::npos) << t.out;

  // JSON: the phases carry the nonces the broker published (none at open; at sum and done one
  // per patient, in participant order).
  const CaptureContents contents = Contents(capture);
  ASSERT_EQ(contents.records.size(), 8u);
  const auto& sum = std::get<CapturePhase>(contents.records[2]);
  ASSERT_EQ(sum.phase, Phase::kSum);
  ASSERT_EQ(sum.nonces.size(), 3u);
  const std::string nonces = "\"nonces\": [\"" + Hex(sum.nonces[0]) + "\", \"" +
                             Hex(sum.nonces[1]) + "\", \"" + Hex(sum.nonces[2]) + "\"]}\n";
  Output json = Replay({capture.string(), "--json"});
  EXPECT_EQ(json.code, 0);
  EXPECT_EQ(CountOf(json.out, "{\"type\": \"envelope\""), 3u);
  EXPECT_EQ(CountOf(json.out, "\"kind\": \"partial\""), 3u);
  EXPECT_EQ(CountOf(json.out, "\"to\": \"hospital\""), 3u);
  EXPECT_EQ(CountOf(json.out, "{\"type\": \"phase\""), 3u);
  EXPECT_EQ(CountOf(json.out, "\"phase\": \"open\", \"seq\": " +
                                  Str(std::get<CapturePhase>(contents.records[1]).seq) +
                                  ", \"reason\": \"\", \"nonces\": []}\n"),
            1u)
      << json.out;
  EXPECT_EQ(CountOf(json.out, "\"phase\": \"sum\", \"seq\": " + Str(sum.seq) +
                                  ", \"reason\": \"\", " + nonces),
            1u)
      << json.out;
  EXPECT_EQ(CountOf(json.out, "\"phase\": \"done\", \"seq\": " + Str(sum.seq + 1) +
                                  ", \"reason\": \"\", " + nonces),
            1u)
      << json.out;
  EXPECT_EQ(CountOf(json.out, "{\"type\": \"header\""), 1u);
  EXPECT_EQ(CountOf(json.out, "\"outcome\": \"done\""), 1u);

  Output check = Replay({capture.string(), "--check"});
  EXPECT_EQ(check.code, 0) << check.out;
  EXPECT_EQ(check.out, "check: ok (8 records)\n");  // header, 3 phases, 3 envelopes, trailer
}

TEST_F(ReplayTest, AuditAsHospitalRecomputesTheLiveAggregateFromTheMaskedPartials) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  auto view = replay::HospitalView(Contents(capture), MakeSealer(keys_, "hospital"));
  ASSERT_TRUE(view.ok()) << view.message();
  EXPECT_EQ(view->offset, Contents(capture).offsets[2]);  // the sum phase's record
  Output h = Replay({capture.string(), "--keys", keys_.string(), "--as", "hospital", "--results",
                     results_.string()});
  EXPECT_EQ(h.code, 0) << h.out << h.err;
  EXPECT_NE(h.out.find("view of the round: " + Hex(view->view) +
                       " (the header and the nonces of the sum phase at offset " +
                       Str(view->offset) + ")\n"),
            std::string::npos)
      << h.out;
  EXPECT_NE(h.out.find("aggregate (sum of the 3 masked partials mod 2^64, the masks cancel): " +
                       Str(expected_) + "\n"),
            std::string::npos)
      << h.out;
  EXPECT_NE(h.out.find("matches results file " + results_.string() + "\n"), std::string::npos)
      << h.out;
  EXPECT_EQ(CountOf(h.out, "opened under its binding (round, kind, sender, recipient, view)"), 3u);
  EXPECT_NE(h.out.find("hospital: 3 of 3 envelopes addressed to it opened; a completed round "
                       "sends it 3 partials\n"),
            std::string::npos)
      << h.out;
  EXPECT_NE(h.out.find("audit: ok\n"), std::string::npos);
  Output json = Replay({capture.string(), "--keys", keys_.string(), "--as", "hospital", "--json"});
  EXPECT_EQ(json.code, 0);
  EXPECT_EQ(CountOf(json.out, ", \"aggregate\": " + Str(expected_) + "}\n"), 1u) << json.out;

  // A results file that records another value for this round, or not this round at all.
  const fs::path wrong = dir_.path() / "wrong.jsonl";
  {
    std::ofstream out(wrong);
    out << "{\"round\": \"" << capture.stem().string() << "\", \"aggregate\": " << expected_ + 1
        << ", \"participants\": [\"alice\", \"bob\", \"charlie\"], \"range\": 3000, "
           "\"in_range\": true, \"elapsed_ms\": 1.000}\n";
  }
  Output differs = Replay({capture.string(), "--keys", keys_.string(), "--as", "hospital",
                           "--results", wrong.string()});
  EXPECT_EQ(differs.code, 1);
  EXPECT_NE(differs.out.find("DIFFERS from results file " + wrong.string() + ": it records " +
                             Str(expected_ + 1) + "\n"),
            std::string::npos)
      << differs.out;
  EXPECT_NE(differs.out.find("audit: FAILED (1 problem)\n"), std::string::npos) << differs.out;
  const fs::path empty = dir_.path() / "empty.jsonl";
  std::ofstream(empty).flush();
  Output missing = Replay({capture.string(), "--keys", keys_.string(), "--as", "hospital",
                           "--results", empty.string()});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("round not in results file " + empty.string() + "\n"),
            std::string::npos)
      << missing.out;
}

// Protocol 2 seals nothing to patients: a patient's keys open nothing, so its audit is a usage
// error, as is one by the broker or by another hospital of the roster.
TEST_F(ReplayTest, OnlyTheRoundsHospitalCanAudit) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  for (const std::string name : {"alice", "bob", "charlie", "dave"}) {
    Output p = Replay({capture.string(), "--keys", keys_.string(), "--as", name});
    EXPECT_EQ(p.code, 2) << name;
    EXPECT_EQ(p.out, "") << name;
    EXPECT_EQ(p.err,
              "tally-replay: only the hospital can audit a round: nothing is "
              "sealed to patients; " +
                  name + " is a patient\n");
  }
  Output b = Replay({capture.string(), "--keys", keys_.string(), "--as", "broker", "--json"});
  EXPECT_EQ(b.code, 2);
  EXPECT_EQ(b.out, "");
  EXPECT_EQ(b.err,
            "tally-replay: only the hospital can audit a round: nothing is "
            "sealed to patients; broker is a broker\n");
  // Another hospital: its keys open none of this round's partials.
  ASSERT_TRUE(GenerateParty(keys_, "clinic", Role::kHospital, false).ok());
  Output other = Replay({capture.string(), "--keys", keys_.string(), "--as", "clinic"});
  EXPECT_EQ(other.code, 2);
  EXPECT_EQ(other.out, "");
  EXPECT_EQ(other.err,
            "tally-replay: only the round's hospital can audit it: its partials are "
            "sealed to hospital, not to clinic\n");
  Output help = Replay({"--help"});
  EXPECT_NE(help.out.find("Only the hospital can audit: nothing is sealed to patients\n"),
            std::string::npos)
      << help.out;
}

// Every cut of a real capture, read in process: never a crash, always a problem with an offset
// inside the cut; a few cuts through the binary, which still shows the readable prefix.
TEST_F(ReplayTest, TruncatedCaptureFailsCheckWithTheOffsetAndShowsTheReadablePrefix) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  const std::vector<uint8_t> bytes = ReadBytes(capture);
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
  ASSERT_EQ(envelopes.size(), 3u);
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
      EXPECT_NE(check.out.find("readable prefix (5 records, " + Str(third) + " of " + Str(cut) +
                               " bytes):\n"),
                std::string::npos)
          << check.out;
      EXPECT_NE(check.out.find("phase sum\n"), std::string::npos) << check.out;
      EXPECT_NE(check.out.find("stops at offset " + Str(third) + ": truncated record at offset " +
                               Str(third) + "\ncheck: FAILED (1 problem)\n"),
                std::string::npos)
          << check.out;
      Output timeline = Replay({cutfile.string()});
      EXPECT_EQ(timeline.code, 1);
      EXPECT_NE(timeline.out.find("capture stops at offset " + Str(third)), std::string::npos);
      EXPECT_EQ(CountOf(timeline.out, "partial "), 2u) << timeline.out;
    }
  }
}

// A flipped byte in the sealed part of each partial: --check stops at that record and names
// it; the hospital's audit names it. With the CRC patched up (a deliberate forgery) the
// structure checks out and only the seal catches it.
TEST_F(ReplayTest, FlippedByteInAnyPartialIsNamedByCheckAndAudit) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  const std::vector<uint8_t> bytes = ReadBytes(capture);
  const auto envelopes = EnvelopeRecords(capture);
  ASSERT_EQ(envelopes.size(), 3u);
  for (size_t k = 0; k < envelopes.size(); ++k) {
    const auto& [offset, env] = envelopes[k];
    ASSERT_EQ(env.to, "hospital");
    const uint32_t body = GetU32(bytes.data() + offset);
    const size_t in_seal = offset + 5 + body - 20;  // inside the ciphertext (before the tag)
    std::vector<uint8_t> bad = bytes;
    bad[in_seal] ^= 0x01;
    const fs::path file = dir_.path() / ("flip-" + Str(k) + ".tcap");
    WriteFile(file, bad);
    const std::string name = Named(k + 1, env, offset);

    Output check = Replay({file.string(), "--check"});
    EXPECT_EQ(check.code, 1);
    EXPECT_NE(check.out.find("stops at offset " + Str(offset) + ": CRC mismatch"),
              std::string::npos)
        << check.out;
    EXPECT_NE(check.out.find("the damaged record reads as " + name), std::string::npos)
        << check.out;

    Output audit = Replay({file.string(), "--keys", keys_.string(), "--as", "hospital"});
    EXPECT_EQ(audit.code, 1);
    EXPECT_NE(audit.out.find("record at offset " + Str(offset) +
                             " fails its CRC: damaged in the capture\n"),
              std::string::npos)
        << audit.out;
    EXPECT_NE(audit.out.find(name + ": authentication failed\n"), std::string::npos) << audit.out;
    EXPECT_EQ(CountOf(audit.out, "opened under its binding"), 2u) << audit.out;
    EXPECT_NE(audit.out.find("aggregate: not computable (2 of 3 partials opened)\n"),
              std::string::npos);
    EXPECT_NE(audit.out.find("audit: FAILED (3 problems)\n"), std::string::npos) << audit.out;

    // The same flip with a recomputed CRC.
    const uint32_t crc = CaptureCrc32(std::span<const uint8_t>(bad).subspan(offset + 4, 1 + body));
    for (int i = 0; i < 4; ++i) bad[offset + 5 + body + i] = static_cast<uint8_t>(crc >> (8 * i));
    WriteFile(file, bad);
    EXPECT_EQ(Replay({file.string(), "--check"}).out, "check: ok (8 records)\n");
    Output forged = Replay({file.string(), "--keys", keys_.string(), "--as", "hospital"});
    EXPECT_EQ(forged.code, 1);
    EXPECT_NE(forged.out.find(name + ": authentication failed\n"), std::string::npos) << forged.out;
    EXPECT_EQ(CountOf(forged.out, "opened under its binding"), 2u) << forged.out;
    EXPECT_NE(forged.out.find("the round completed but 2 of 3 partials opened\n"),
              std::string::npos);
    EXPECT_NE(forged.out.find("audit: FAILED (2 problems)\n"), std::string::npos) << forged.out;
  }

  // Any single flipped bit anywhere, in process: reading never crashes and always complains.
  for (size_t at = 0; at < bytes.size(); ++at) {
    std::vector<uint8_t> bad = bytes;
    bad[at] ^= 0x10;
    const CaptureContents c = ReadCapture(bad);
    EXPECT_FALSE(replay::Check(c).empty()) << "flip at " << at;
    const CaptureContents salvaged = ReadCapture(bad, {.past_crc_mismatch = true});
    EXPECT_TRUE(!salvaged.ok() || !salvaged.damaged.empty()) << "flip at " << at;
    std::ostringstream text;
    replay::PrintTimeline(c, false, text);
  }
}

// The hospital's view comes from the sum phase's nonces: one altered nonce bit gives another
// view, under which no partial opens. --check sees that the done phase repeats other nonces;
// with both records altered only the audit catches it.
TEST_F(ReplayTest, AlteredSumPhaseNoncesMakeTheHospitalAuditFailToOpenEveryPartial) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  const std::vector<uint8_t> bytes = ReadBytes(capture);
  const CaptureContents c = Contents(capture);
  ASSERT_EQ(c.records.size(), 8u);
  ASSERT_EQ(Rebuild(bytes, c.records), bytes);  // re-framing the records is faithful
  std::vector<CaptureRecord> records = c.records;
  auto& sum = std::get<CapturePhase>(records[2]);
  ASSERT_EQ(sum.phase, Phase::kSum);
  ASSERT_EQ(sum.nonces.size(), 3u);
  sum.nonces[1][7] ^= 0x01;
  auto [file, offsets] = Forge("nonce-sum", bytes, records);
  ASSERT_EQ(offsets, c.offsets);

  const auto envelopes = EnvelopeRecords(capture);
  ASSERT_EQ(envelopes.size(), 3u);
  auto expect_no_partial_opens = [&](const fs::path& f) {
    Output audit = Replay({f.string(), "--keys", keys_.string(), "--as", "hospital"});
    EXPECT_EQ(audit.code, 1);
    for (size_t k = 0; k < envelopes.size(); ++k) {
      EXPECT_NE(audit.out.find(Named(k + 1, envelopes[k].second, envelopes[k].first) +
                               ": authentication failed\n"),
                std::string::npos)
          << audit.out;
    }
    EXPECT_EQ(CountOf(audit.out, ": authentication failed\n"), 3u);
    EXPECT_NE(audit.out.find("hospital: 0 of 3 envelopes addressed to it opened; a completed round "
                             "sends it 3 partials\nthe round completed but 0 of 3 partials opened\n"
                             "aggregate: not computable (0 of 3 partials opened)\n"
                             "audit: FAILED (4 problems)\n"),
              std::string::npos)
        << audit.out;
  };
  expect_no_partial_opens(file);
  Output check = Replay({file.string(), "--check"});
  EXPECT_EQ(check.code, 1);
  EXPECT_EQ(check.out, "offset " + Str(offsets[6]) +
                           ": phase done's nonces differ from the sum phase's\n"
                           "check: FAILED (1 problem)\n");

  std::get<CapturePhase>(records[6]).nonces = sum.nonces;
  auto [both, both_offsets] = Forge("nonce-both", bytes, records);
  EXPECT_EQ(Replay({both.string(), "--check"}).out, "check: ok (8 records)\n");
  expect_no_partial_opens(both);
}

// Captures forged from a real one, each with one protocol violation: --check names each at
// the offset of the record that breaks the rule, and nothing else.
TEST_F(ReplayTest, CheckNamesEachProtocolViolationAtItsOffset) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  const std::vector<uint8_t> bytes = ReadBytes(capture);
  const CaptureContents c = Contents(capture);
  ASSERT_EQ(c.records.size(), 8u);  // header, open, sum, 3 partials, done, trailer
  const auto& R = c.records;
  const auto e1 = std::get<CaptureEnvelope>(R[3]);
  const auto e3 = std::get<CaptureEnvelope>(R[5]);
  auto trailer = [&](uint64_t envelopes) {
    auto t = std::get<CaptureTrailer>(R[7]);
    t.envelopes = envelopes;
    return t;
  };
  auto envelope_of = [](const CaptureEnvelope& e) {
    return std::get<Envelope>(Decode(e.frame).value());
  };
  auto check = [&](const std::string& name, const std::vector<CaptureRecord>& records,
                   const std::function<std::string(const std::vector<uint64_t>&)>& expected) {
    auto [file, offsets] = Forge(name, bytes, records);
    Output o = Replay({file.string(), "--check"});
    EXPECT_EQ(o.code, 1) << name;
    EXPECT_EQ(o.out, expected(offsets)) << name;
    return file;
  };

  // A partial routed twice.
  CaptureEnvelope again = e1;
  again.t_us = e3.t_us;
  check("duplicate", {R[0], R[1], R[2], R[3], R[4], R[5], again, R[6], trailer(4)},
        [&](const std::vector<uint64_t>& at) {
          const Envelope env = envelope_of(e1);
          return "offset " + Str(at[6]) + ": " + Named(4, env, at[6]) +
                 " repeats the partial from " + env.from + "\ncheck: FAILED (1 problem)\n";
        });

  // A partial routed in the open phase.
  CaptureEnvelope early = e1;
  early.t_us = std::get<CapturePhase>(R[1]).t_us;
  check("early", {R[0], R[1], early, R[2], R[4], R[5], R[6], R[7]},
        [&](const std::vector<uint64_t>& at) {
          return "offset " + Str(at[2]) + ": " + Named(1, envelope_of(e1), at[2]) +
                 " routed outside the sum phase\ncheck: FAILED (1 problem)\n";
        });

  // A partial addressed to a patient instead of the hospital: not a link, and then missing.
  Envelope redirected = envelope_of(std::get<CaptureEnvelope>(R[4]));
  const std::string from = redirected.from;
  redirected.to = from == "alice" ? "bob" : "alice";
  CaptureEnvelope to_patient = std::get<CaptureEnvelope>(R[4]);
  to_patient.frame = Encode(redirected);
  check("to-patient", {R[0], R[1], R[2], R[3], to_patient, R[5], R[6], R[7]},
        [&](const std::vector<uint64_t>& at) {
          return "offset " + Str(at[4]) + ": " + Named(2, redirected, at[4]) +
                 " is not a partial link of this round\noffset " + Str(at[7]) +
                 ": completed round lacks the partial " + from +
                 " -> hospital\n"
                 "check: FAILED (2 problems)\n";
        });

  // A completed round without one patient's partial.
  check("missing", {R[0], R[1], R[2], R[3], R[5], R[6], trailer(2)},
        [&](const std::vector<uint64_t>& at) {
          return "offset " + Str(at[6]) + ": completed round lacks the partial " + from +
                 " -> hospital\ncheck: FAILED (1 problem)\n";
        });

  // Straight from open to done: the partials fall outside the sum phase, and the nonces come
  // with no sum phase.
  check("no-sum", {R[0], R[1], R[3], R[4], R[5], R[6], R[7]}, [&](const std::vector<uint64_t>& at) {
    std::string out;
    for (size_t k = 0; k < 3; ++k) {
      out += "offset " + Str(at[2 + k]) + ": " +
             Named(k + 1, envelope_of(std::get<CaptureEnvelope>(R[3 + k])), at[2 + k]) +
             " routed outside the sum phase\n";
    }
    return out + "offset " + Str(at[5]) + ": phase done after open\noffset " + Str(at[5]) +
           ": phase done carries 3 nonces before the sum phase\noffset " + Str(at[6]) +
           ": done without the sum phase\ncheck: FAILED (6 problems)\n";
  });

  // A sum phase with a nonce missing (repeated as such by done): no view, so the hospital's
  // audit cannot open a partial and says why.
  std::vector<CaptureRecord> short_nonces = R;
  std::get<CapturePhase>(short_nonces[2]).nonces.pop_back();
  std::get<CapturePhase>(short_nonces[6]).nonces.pop_back();
  const fs::path file = check("short-nonces", short_nonces, [&](const std::vector<uint64_t>& at) {
    return "offset " + Str(at[2]) +
           ": phase sum carries 2 nonces for 3 patients\n"
           "check: FAILED (1 problem)\n";
  });
  const std::string why =
      "the sum phase at offset " + Str(c.offsets[2]) + " carries 2 nonces for 3 patients";
  Output audit = Replay({file.string(), "--keys", keys_.string(), "--as", "hospital"});
  EXPECT_EQ(audit.code, 1);
  EXPECT_NE(audit.out.find("view of the round: unknown: " + why + "\n"), std::string::npos)
      << audit.out;
  EXPECT_EQ(CountOf(audit.out,
                    ": not opened: the hospital's view of the round is unknown (" + why + ")\n"),
            3u)
      << audit.out;
  EXPECT_NE(audit.out.find("audit: FAILED (4 problems)\n"), std::string::npos) << audit.out;
}

TEST_F(ReplayTest, OlderOrNewerCaptureFormatIsRefusedWithAClearMessage) {
  const fs::path capture = CapturedRound();
  ASSERT_FALSE(capture.empty());
  std::vector<uint8_t> bytes = ReadBytes(capture);
  const fs::path old = dir_.path() / "old.tcap";
  for (uint8_t version : {0, 1, 2}) {  // 1 and 2: the formats of protocols 1 and 2
    bytes[8] = version;
    WriteFile(old, bytes);
    for (const auto& extra : std::vector<std::vector<std::string>>{
             {}, {"--check"}, {"--keys", keys_.string(), "--as", "hospital"}}) {
      std::vector<std::string> args = {old.string()};
      args.insert(args.end(), extra.begin(), extra.end());
      Output o = Replay(args);
      EXPECT_EQ(o.code, 1);
      EXPECT_NE(o.err.find("capture format version " + Str(version) +
                           " is not supported (this reader knows 3): it was written by an older "
                           "Tally (capture format " +
                           Str(version) + "); read it with the tally-replay of that release"),
                std::string::npos)
          << o.err;
    }
  }
  bytes[8] = 4;
  WriteFile(old, bytes);
  EXPECT_NE(Replay({old.string()}).err.find("written by a newer Tally (capture format 4)"),
            std::string::npos);
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

// dave (played by the test) keeps round 2 open while charlie's partial from round 1 is re-sent
// by tally-replay. charlie is in the roster but not in round 2, and his own process has
// stopped: the broker keeps one connection per party, so while it ran the injection would be
// refused as a second connection before its round was even looked at (InjectingAsTheLive...).
TEST_F(ReplayTest, InjectedPartialIsRefusedAndTheLiveRoundStillCompletes) {
  const fs::path capture = CapturedRound(/*serving=*/true);
  ASSERT_FALSE(capture.empty());
  ASSERT_EQ(patients_[2].Stop(), 0);  // charlie
  const uint64_t dave_input = randombytes_uniform(1001);
  const Sealer sealer = SealerOf("dave");
  TestParty dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital("alice,bob,dave");
  auto open = dave.WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);

  const auto envelopes = EnvelopeRecords(capture);
  ASSERT_EQ(envelopes.size(), 3u);
  size_t k = 0;
  while (k < envelopes.size() && envelopes[k].second.from != "charlie") ++k;
  ASSERT_LT(k, envelopes.size());
  const std::string size = Str(Encode(envelopes[k].second).size());
  Output inject =
      Replay({capture.string(), "--inject", router_, "--keys", keys_.string(), "--as", "charlie"});
  EXPECT_EQ(inject.code, 0) << inject.out << inject.err;
  EXPECT_NE(inject.out.find(": 1 envelope from charlie captured in round " +
                            capture.stem().string() + "\n"),
            std::string::npos)
      << inject.out;
  EXPECT_EQ(CountOf(inject.out, "sent byte for byte"), 1u) << inject.out;
  EXPECT_NE(inject.out.find(Named(k + 1, envelopes[k].second, envelopes[k].first) + ", " + size +
                            " B: sent byte for byte; the broker can only route it into round " +
                            capture.stem().string() + ", which is over"),
            std::string::npos)
      << inject.out;
  EXPECT_NE(
      inject.out.find("the broker processed the 1 envelope (it then refused our probe "
                      "request: \"round request refused: only a hospital may request rounds\")"),
      std::string::npos)
      << inject.out;
  EXPECT_EQ(inject.out.find("fresh round"), std::string::npos)
      << inject.out;  // nothing is sealed to charlie
  EXPECT_NE(inject.out.find("inject: no captured envelope can be replayed into another round\n"),
            std::string::npos);

  // Round 2 goes on: dave joins and sends its masked input.
  auto sum = JoinAndWaitSum(dave, open->round);
  ASSERT_TRUE(sum);
  SendPartial(dave, sealer, *sum, dave_input);
  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  const uint64_t expected = inputs_["alice"] + inputs_["bob"] + dave_input;
  EXPECT_EQ(ScalarAggregate(*line), expected) << *line;
  EXPECT_EQ(hospital.Wait(kWait), 0);

  for (auto& p : patients_) EXPECT_EQ(p.Stop(), 0);
  EXPECT_EQ(cluster_.StopBroker(), 0);
  const std::string log = BrokerLog();
  EXPECT_EQ(
      CountOf(log, "event=reject from=charlie reason=\"envelope for a round that is not active\""),
      1u)
      << log;
  EXPECT_EQ(
      CountOf(log, "event=reject from=charlie reason=\"round request refused: only a hospital"),
      1u);  // the barrier probe

  // Round 2's capture: complete, with charlie's refusals recorded and nothing of charlie routed;
  // its view is the one dave sealed under, and the hospital's audit finds the live aggregate.
  const fs::path second = dir_.path() / "captures" / (RoundHex(open->round) + ".tcap");
  Output check = Replay({second.string(), "--check"});
  EXPECT_EQ(check.out,
            "check: ok (10 records)\n");  // header, 3 phases, 2 rejected, 3 partials, trailer
  Output timeline = Replay({second.string()});
  EXPECT_EQ(CountOf(timeline.out, "rejected from charlie: envelope for a round that is not active"),
            1u)
      << timeline.out;
  EXPECT_EQ(CountOf(timeline.out, " charlie "), 0u);
  EXPECT_NE(timeline.out.find("outcome: done (3 envelopes, 2 rejected"), std::string::npos)
      << timeline.out;
  const Sealer hospital_sealer = MakeSealer(keys_, "hospital");
  auto view = replay::HospitalView(Contents(second), hospital_sealer);
  ASSERT_TRUE(view.ok()) << view.message();
  EXPECT_EQ(view->view, View(hospital_sealer, *sum));
  Output audit = Replay({second.string(), "--keys", keys_.string(), "--as", "hospital", "--results",
                         results_.string()});
  EXPECT_EQ(audit.code, 0) << audit.out;
  EXPECT_NE(audit.out.find("the masks cancel): " + Str(expected) + "\nmatches results file"),
            std::string::npos)
      << audit.out;
}

// Injecting as the hospital while it takes part in a live round. Regression: the broker used to
// take a party's route from the last message it sent, refused or not, so a refused injection
// moved the party's deliveries (here: the hospital's partials) to the injector's connection and
// the round aborted as undeliverable. Routes follow accepted messages only, and the broker keeps
// one connection per party: the injector is refused as a second connection of the live
// hospital. The hospital sends no envelope; its captured partials open under their round and
// under no fresh one.
TEST_F(ReplayTest, InjectingAsTheLiveHospitalDoesNotStealItsPartials) {
  const fs::path capture = CapturedRound(/*serving=*/true);
  ASSERT_FALSE(capture.empty());
  const Sealer sealer = SealerOf("dave");
  TestParty dave(keys_, "dave", router_, phases_);
  auto hospital = Hospital("alice,bob,dave");
  auto open = dave.WaitPhase(Phase::kOpen);
  ASSERT_TRUE(open);
  auto sum = JoinAndWaitSum(dave, open->round);
  ASSERT_TRUE(sum);
  // alice's and bob's partials go to the hospital now; dave's after the injection.
  Output inject =
      Replay({capture.string(), "--inject", router_, "--keys", keys_.string(), "--as", "hospital"});
  EXPECT_EQ(inject.code, 0) << inject.out << inject.err;
  EXPECT_EQ(CountOf(inject.out, "sent byte for byte"), 0u) << inject.out;
  const std::string second =
      "round request refused: hospital is already connected: a second connection with its keys "
      "is refused while the first is live";
  EXPECT_NE(inject.out.find("the broker answered our probe request (\"" + second +
                            "\"); hospital sent no envelope in the captured round\n"),
            std::string::npos)
      << inject.out;
  EXPECT_EQ(CountOf(inject.out, "(partial, offset "), 3u) << inject.out;
  EXPECT_EQ(CountOf(inject.out,
                    ": opens under its round " + capture.stem().string() + "; under fresh round "),
            3u)
      << inject.out;
  EXPECT_EQ(CountOf(inject.out, " it fails: authentication failed\n"), 3u) << inject.out;

  SendPartial(dave, sealer, *sum, 7);
  auto line = hospital.ReadLine(kWait);
  ASSERT_TRUE(line) << LastLine(dir_.path() / "hospital.log");
  EXPECT_EQ(ScalarAggregate(*line), inputs_["alice"] + inputs_["bob"] + 7) << *line;
  EXPECT_EQ(hospital.Wait(kWait), 0);
  for (auto& p : patients_) p.Stop();
  cluster_.StopBroker();
  const std::string log = BrokerLog();
  EXPECT_EQ(CountOf(log, "undeliverable"), 0u) << log;
  EXPECT_EQ(CountOf(log, "event=reject from=hospital reason=\"" +
                             second.substr(std::string("round request refused: ").size()) + "\""),
            1u)
      << log;
}

}  // namespace
}  // namespace tally::test
