// fuzz_make_corpus: writes the decode seeds of tests/fuzz/corpus/decode/ — one valid frame of
// every wire message, payload seeds (4-byte little-endian length, then the payload), a few
// malformed frames, and the envelope frames found in real captures.
//   fuzz_make_corpus OUTDIR [CAPTURE.tcap...]
// Deterministic: the same captures give the same files. Not part of any test run.
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
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
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
  Write(dir / "request.bin", tally::Encode(tally::Request{7, 1000, 1, names}));
  Write(dir / "request-all.bin", tally::Encode(tally::Request{8, 1000, 4, {}}));
  Write(dir / "join.bin", tally::Encode(tally::Join{Round(1)}));
  Write(dir / "refuse.bin",
        tally::Encode(tally::Refuse{Round(1), "input outside [0, 1000]"}));
  Write(dir / "envelope-share.bin",
        tally::Encode(tally::Envelope{tally::EnvelopeKind::kShare, Round(1), "alice", "bob",
                                      Bytes(tally::kSealOverhead + 19, 0xa5)}));
  Write(dir / "envelope-partial.bin",
        tally::Encode(tally::Envelope{tally::EnvelopeKind::kPartial, Round(1), "bob", "hospital",
                                      Bytes(tally::kSealOverhead + 43, 0x5a)}));
  Write(dir / "ack.bin", tally::Encode(tally::Ack{Round(1)}));
  Write(dir / "phase-share.bin",
        tally::Encode(tally::PhaseUpdate{Round(1), tally::Phase::kShare, 3, 7, "hospital", 1000,
                                         1, names, 10000, ""}));
  Write(dir / "phase-abort.bin",
        tally::Encode(tally::PhaseUpdate{Round(2), tally::Phase::kAbort, 9, 8, "hospital", 1000,
                                         4, names, 10000, "charlie did not join"}));
  Write(dir / "notice.bin", tally::Encode(tally::Notice{7, "round queue full"}));

  const std::vector<uint64_t> one = {42};
  const std::vector<uint64_t> four = {1, 2, 0xffffffffffffffffu, 0};
  Write(dir / "payload-share-1.bin",
        Prefixed(1, tally::EncodePayload(tally::EnvelopeKind::kShare, one)));
  Write(dir / "payload-partial-4.bin",
        Prefixed(4, tally::EncodePayload(tally::EnvelopeKind::kPartial, four)));

  // Malformed: one byte too many, one too few, a wrong version, an unknown type, a map.
  Bytes join = tally::Encode(tally::Join{Round(1)});
  Bytes trailing = join;
  trailing.push_back(0xc0);
  Write(dir / "bad-trailing-byte.bin", trailing);
  Write(dir / "bad-truncated.bin", Bytes(join.begin(), join.end() - 1));
  Bytes version = join;
  version[1] = 2;  // [fixarray, version, ...]
  Write(dir / "bad-version.bin", version);
  Write(dir / "bad-unknown-type.bin", {0x93, 0x01, 0xa4, 'j', 'o', 'i', 'x', 0xc4, 0x00});
  Write(dir / "bad-map.bin", {0x81, 0x01, 0x02});
  Write(dir / "bad-huge-array.bin", {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01});

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
