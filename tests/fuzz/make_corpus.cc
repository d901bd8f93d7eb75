// fuzz_make_corpus: writes the decode seeds of tests/fuzz/corpus/decode/ — one valid frame of
// every wire message (protocol 3: joins with their nonce, phase updates with and without the
// participants' nonces, requests and phase updates with columns), payload seeds (4-byte
// little-endian length, then the payload), a few malformed frames (among them protocol 1's and
// 2's shapes), and the envelope frames found in real captures.
//   fuzz_make_corpus OUTDIR [CAPTURE.tcap...]
// Deterministic: the same captures give the same files. Not part of any test run.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <variant>
#include <vector>

#include "schema/capture.h"
#include "schema/schema.h"

namespace {

using Bytes = std::vector<uint8_t>;

void Write(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "fuzz_make_corpus: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

tally::RoundId Round(uint8_t seed) {
  tally::RoundId r{};
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<uint8_t>(seed * 17 + i);
  return r;
}

tally::JoinNonce Nonce(uint8_t seed) {
  tally::JoinNonce n{};
  for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(seed * 29 + i);
  return n;
}

Bytes Prefixed(uint32_t length, const Bytes& payload) {
  Bytes out = {static_cast<uint8_t>(length), static_cast<uint8_t>(length >> 8),
               static_cast<uint8_t>(length >> 16), static_cast<uint8_t>(length >> 24)};
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fuzz_make_corpus OUTDIR [CAPTURE.tcap...]\n");
    return 2;
  }
  const std::filesystem::path dir = std::filesystem::path(argv[1]) / "decode";
  std::filesystem::create_directories(dir);

  const std::vector<std::string> names = {"alice", "bob", "charlie"};
  const std::vector<tally::JoinNonce> nonces = {Nonce(1), Nonce(2), Nonce(3)};
  Write(dir / "request.bin", tally::Encode(tally::Request{7, {"", 1000, 1, names}, 0}));
  Write(dir / "request-all.bin", tally::Encode(tally::Request{8, {"", 1000, 4, {}}, 2500}));
  // Protocol 2's request: no columns and no weight (a fixarray of 0 and [0, 0], 4 bytes).
  Bytes no_columns = tally::Encode(tally::Request{7, {"", 1000, 1, names}, 0});
  no_columns[0] = 0x97;  // fixarray of 7
  no_columns.erase(no_columns.end() - 5, no_columns.end() - 1);
  Write(dir / "bad-request-no-columns.bin", no_columns);
  const tally::RoundParams columns{
      "", 0, 1, names, {{"bmi", 100, 800, 1}, {"delta", -5000, 5000, 2}}, {10, 0}};
  Write(dir / "request-columns.bin", tally::Encode(tally::Request{9, columns, 0}));
  tally::RoundParams hospital_columns = columns;
  hospital_columns.hospital = "hospital";
  Write(dir / "phase-sum-columns.bin",
        tally::Encode(tally::PhaseUpdate{Round(3), tally::Phase::kSum, 5, 9, hospital_columns,
                                         nonces, 10000, ""}));
  Write(dir / "join.bin", tally::Encode(tally::Join{Round(1), Nonce(1)}));
  Write(dir / "refuse.bin", tally::Encode(tally::Refuse{Round(1), "input outside [0, 1000]"}));
  Write(dir / "envelope-partial.bin",
        tally::Encode(tally::Envelope{tally::EnvelopeKind::kPartial, Round(1), "bob", "hospital",
                                      Bytes(tally::kSealOverhead + 43, 0x5a)}));
  Write(dir / "ack.bin", tally::Encode(tally::Ack{Round(1)}));
  Write(dir / "phase-open.bin",
        tally::Encode(tally::PhaseUpdate{
            Round(1), tally::Phase::kOpen, 2, 7, {"hospital", 1000, 1, names}, {}, 10000, ""}));
  Write(dir / "phase-sum.bin",
        tally::Encode(tally::PhaseUpdate{
            Round(1), tally::Phase::kSum, 3, 7, {"hospital", 1000, 1, names}, nonces, 10000, ""}));
  Write(dir / "phase-done.bin",
        tally::Encode(tally::PhaseUpdate{
            Round(1), tally::Phase::kDone, 4, 7, {"hospital", 1000, 1, names}, nonces, 10000, ""}));
  Write(dir / "phase-abort.bin", tally::Encode(tally::PhaseUpdate{Round(2),
                                                                  tally::Phase::kAbort,
                                                                  9,
                                                                  8,
                                                                  {"hospital", 1000, 4, names},
                                                                  {},
                                                                  10000,
                                                                  "charlie did not join"}));
  Write(dir / "notice.bin", tally::Encode(tally::Notice{7, "round queue full"}));

  const std::vector<uint64_t> one = {42};
  const std::vector<uint64_t> four = {1, 2, 0xffffffffffffffffu, 0};
  Write(dir / "payload-partial-1.bin",
        Prefixed(1, tally::EncodePayload(tally::EnvelopeKind::kPartial, one)));
  Write(dir / "payload-partial-4.bin",
        Prefixed(4, tally::EncodePayload(tally::EnvelopeKind::kPartial, four)));

  // Malformed: one byte too many, one too few, protocol 1's version, an unknown type, a map.
  Bytes join = tally::Encode(tally::Join{Round(1), Nonce(1)});
  Bytes trailing = join;
  trailing.push_back(0xc0);
  Write(dir / "bad-trailing-byte.bin", trailing);
  Write(dir / "bad-truncated.bin", Bytes(join.begin(), join.end() - 1));
  Bytes version = join;
  version[1] = 1;  // [fixarray, version, ...]
  Write(dir / "bad-version.bin", version);
  Write(dir / "bad-unknown-type.bin",
        {0x94, 0x03, 0xa4, 'j', 'o', 'i', 'x', 0xc4, 0x00, 0xc4, 0x00});
  Write(dir / "bad-map.bin", {0x81, 0x01, 0x02});
  Write(dir / "bad-huge-array.bin", {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01});
  // Protocol 1's shapes under version 3: a join without its nonce, a "share" envelope, a
  // phase update with the "share" phase and no nonces field; and a nonces bin that is not one
  // nonce per participant.
  Bytes join_v1 = join;
  join_v1[0] = 0x93;
  join_v1.resize(join_v1.size() - 2 - tally::kJoinNonceSize);
  Write(dir / "bad-join-no-nonce.bin", join_v1);
  Bytes share = tally::Encode(tally::Envelope{tally::EnvelopeKind::kPartial, Round(1), "alice",
                                              "bob", Bytes(tally::kSealOverhead + 19, 0xa5)});
  const Bytes partial = {0xa7, 'p', 'a', 'r', 't', 'i', 'a', 'l'};
  const auto at = std::search(share.begin(), share.end(), partial.begin(), partial.end());
  share.insert(share.erase(at, at + 8), {0xa5, 's', 'h', 'a', 'r', 'e'});
  Write(dir / "bad-envelope-share.bin", share);
  Bytes phase_share = tally::Encode(tally::PhaseUpdate{
      Round(1), tally::Phase::kOpen, 3, 7, {"hospital", 1000, 1, names}, {}, 10000, ""});
  const Bytes open = {0xa4, 'o', 'p', 'e', 'n'};
  const auto open_at =
      std::search(phase_share.begin(), phase_share.end(), open.begin(), open.end());
  phase_share.insert(phase_share.erase(open_at, open_at + 5), {0xa5, 's', 'h', 'a', 'r', 'e'});
  Write(dir / "bad-phase-share.bin", phase_share);
  Write(dir / "bad-phase-two-nonces.bin",
        tally::Encode(tally::PhaseUpdate{Round(1),
                                         tally::Phase::kSum,
                                         3,
                                         7,
                                         {"hospital", 1000, 1, names},
                                         {Nonce(1), Nonce(2)},
                                         10000,
                                         ""}));

  // Real frames: the envelopes a broker routed, as it captured them.
  for (int i = 2; i < argc; ++i) {
    tally::Result<tally::CaptureContents> c = tally::ReadCaptureFile(argv[i]);
    if (!c.ok() || !c->ok()) {
      std::fprintf(stderr, "fuzz_make_corpus: %s: not a clean capture\n", argv[i]);
      return 1;
    }
    const std::string stem = std::filesystem::path(argv[i]).stem().string().substr(0, 8);
    int n = 0;
    for (const tally::CaptureRecord& r : c->records) {
      if (const auto* e = std::get_if<tally::CaptureEnvelope>(&r)) {
        Write(dir / ("captured-" + stem + "-" + std::to_string(n++) + ".bin"), e->frame);
      }
    }
  }
  return 0;
}
