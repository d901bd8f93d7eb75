// fuzz_make_corpus: writes the decode seeds of tests/fuzz/corpus/decode/ — one valid frame of
// every wire message (protocol 3 with dropouts and Ed25519 signatures: joins with round keys
// and a signature, batches of each kind, phase updates of every phase with their sets, requests
// with a threshold and with columns, envelopes of both kinds), plaintext seeds (4-byte
// little-endian length, then a partial's payload or an unmask's plaintext), a few malformed
// frames (among them protocol 1's, 2's and protocol 3's earlier shapes: before dropouts, and
// with tags before signatures), and the frames found in real captures (envelopes and the keys
// batch given the hospital).
//   fuzz_make_corpus OUTDIR [CAPTURE.tcap...]
// Deterministic: the same captures give the same files. Not part of any test run.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <msgpack.hpp>
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

// Round keys, signatures and shares: bytes that differ with the seed.
template <typename T>
T Filled(uint8_t seed) {
  T out{};
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(seed * 29 + i);
  return out;
}

Bytes Prefixed(uint32_t length, const Bytes& payload) {
  Bytes out = {static_cast<uint8_t>(length), static_cast<uint8_t>(length >> 8),
               static_cast<uint8_t>(length >> 16), static_cast<uint8_t>(length >> 24)};
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

// `bytes` with the first occurrence of `from` replaced by `to` (for names the encoder would
// never write).
Bytes Replaced(Bytes bytes, const Bytes& from, const Bytes& to) {
  const auto at = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  if (at == bytes.end()) {
    std::fprintf(stderr, "fuzz_make_corpus: a seed lost its marker\n");
    std::exit(1);
  }
  bytes.insert(bytes.erase(at, at + static_cast<std::ptrdiff_t>(from.size())), to.begin(),
               to.end());
  return bytes;
}

using Packer = msgpack::packer<msgpack::sbuffer>;
Bytes Raw(const std::function<void(Packer&)>& fill) {
  msgpack::sbuffer buf;
  Packer p(buf);
  fill(p);
  return Bytes(reinterpret_cast<const uint8_t*>(buf.data()),
               reinterpret_cast<const uint8_t*>(buf.data()) + buf.size());
}
void Str(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}
void Bin(Packer& p, const Bytes& b) {
  p.pack_bin(static_cast<uint32_t>(b.size()));
  p.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}

// A batch of `kind` from the participants `from`, each item `size` bytes.
tally::Batch MakeBatch(tally::BatchKind kind, const std::vector<uint32_t>& from, size_t size) {
  tally::Batch b{Round(1), kind, {}};
  for (uint32_t i : from) b.items.push_back({i, Bytes(size, static_cast<uint8_t>(0x30 + i))});
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fuzz_make_corpus OUTDIR [CAPTURE.tcap...]\n");
    return 2;
  }
  using tally::Phase;
  const std::filesystem::path dir = std::filesystem::path(argv[1]) / "decode";
  std::filesystem::create_directories(dir);

  const std::vector<std::string> names = {"alice", "bob", "charlie"};
  const std::vector<std::string> four = {"alice", "bob", "charlie", "dave"};
  Write(dir / "request.bin", tally::Encode(tally::Request{7, {"", 1000, 1, names}, 0}));
  Write(dir / "request-all.bin", tally::Encode(tally::Request{8, {"", 1000, 4, {}}, 2500}));
  Write(dir / "request-threshold.bin",
        tally::Encode(tally::Request{10, {"", 1000, 1, four, {}, {}, 3}, 0}));
  const tally::RoundParams columns{
      "", 0, 1, names, {{"bmi", 100, 800, 1}, {"delta", -5000, 5000, 2}}, {10, 0}, 3};
  Write(dir / "request-columns.bin", tally::Encode(tally::Request{9, columns, 0}));
  const tally::Join join{Round(1), Filled<tally::RoundKey>(1), Filled<tally::RoundKey>(2),
                         Filled<tally::Signature>(3)};
  Write(dir / "join.bin", tally::Encode(join));
  Write(dir / "refuse.bin", tally::Encode(tally::Refuse{Round(1), "input outside [0, 1000]"}));
  Write(dir / "envelope-partial.bin",
        tally::Encode(tally::Envelope{tally::EnvelopeKind::kPartial, Round(1), "bob", "hospital",
                                      Bytes(tally::kSealOverhead + 43, 0x5a)}));
  Write(dir / "envelope-unmask.bin",
        tally::Encode(tally::Envelope{tally::EnvelopeKind::kUnmask, Round(1), "bob", "hospital",
                                      Bytes(tally::kSealOverhead + 120, 0xa5)}));
  Write(dir / "ack.bin", tally::Encode(tally::Ack{Round(1)}));
  Write(dir / "notice.bin", tally::Encode(tally::Notice{7, "round queue full"}));

  // Batches of each kind as bob (index 1) of three gets or sends them, and the hospital's keys:
  // keys items cpk || spk || signature (128 bytes) for everyone; bob's confirmation is one item,
  // his own signature; the confirmations bob gets at unmask are the others'.
  constexpr size_t kKeysItem = tally::kKeysItemSize;
  Write(dir / "batch-keys.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kKeys, {0, 2}, kKeysItem)));
  Write(dir / "batch-keys-hospital.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kKeys, {0, 1, 2}, kKeysItem)));
  Write(dir / "batch-shares.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kShares, {0, 2}, tally::kSealedShareSize)));
  Write(dir / "batch-confirm-own.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kConfirm, {1}, tally::kSignatureSize)));
  Write(dir / "batch-confirm.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kConfirm, {0, 2}, tally::kSignatureSize)));

  // Phase updates of a round of four with threshold 3 where dave vanished after sharing.
  const tally::RoundParams params{"hospital", 1000, 1, four, {}, {}, 3};
  const tally::Members all(4, true);
  const tally::Members survivors = {true, true, true, false};
  auto update = [&](Phase phase, uint64_t seq, tally::RoundSets sets, std::string reason = "") {
    return tally::Encode(
        tally::PhaseUpdate{Round(1), phase, seq, 7, params, std::move(sets), 10000, reason});
  };
  Write(dir / "phase-open.bin", update(Phase::kOpen, 2, {}));
  Write(dir / "phase-share.bin", update(Phase::kShare, 3, {all, {}, {}, {}}));
  Write(dir / "phase-mask.bin", update(Phase::kMask, 4, {all, all, {}, {}}));
  Write(dir / "phase-confirm.bin", update(Phase::kConfirm, 5, {all, all, survivors, {}}));
  Write(dir / "phase-unmask.bin", update(Phase::kUnmask, 6, {all, all, survivors, survivors}));
  Write(dir / "phase-done.bin", update(Phase::kDone, 7, {all, all, survivors, survivors}));
  Write(dir / "phase-abort.bin",
        update(Phase::kAbort, 8, {all, {}, {}, {}},
               "dave dropped out (at most 2 of 4 can send shares, the threshold is 3)"));
  tally::RoundParams hospital_columns = columns;
  hospital_columns.hospital = "hospital";
  const tally::Members three(3, true);
  Write(dir / "phase-mask-columns.bin",
        tally::Encode(tally::PhaseUpdate{
            Round(3), Phase::kMask, 5, 9, hospital_columns, {three, three, {}, {}}, 10000, ""}));

  // Plaintexts: a partial's payload, and an unmask of four participants (its length field is
  // the participants).
  const std::vector<uint64_t> one = {42};
  const std::vector<uint64_t> values = {1, 2, 0xffffffffffffffffu, 0};
  Write(dir / "payload-partial-1.bin",
        Prefixed(1, tally::EncodePayload(tally::EnvelopeKind::kPartial, one)));
  Write(dir / "payload-partial-4.bin",
        Prefixed(4, tally::EncodePayload(tally::EnvelopeKind::kPartial, values)));
  tally::UnmaskShares unmask;
  unmask.masked = survivors;
  unmask.self_seeds = {Filled<tally::Share>(5), Filled<tally::Share>(6), Filled<tally::Share>(7)};
  unmask.mask_secrets = {Filled<tally::Share>(8)};
  Write(dir / "payload-unmask-4.bin", Prefixed(4, tally::EncodeUnmask(unmask)));

  // Malformed: one byte too many, one too few, protocol 1's version, an unknown type, a map.
  const Bytes join_bytes = tally::Encode(join);
  Bytes trailing = join_bytes;
  trailing.push_back(0xc0);
  Write(dir / "bad-trailing-byte.bin", trailing);
  Write(dir / "bad-truncated.bin", Bytes(join_bytes.begin(), join_bytes.end() - 1));
  Bytes version = join_bytes;
  version[1] = 1;  // [fixarray, version, ...]
  Write(dir / "bad-version.bin", version);
  Write(dir / "bad-unknown-type.bin",
        {0x96, 0x03, 0xa4, 'j', 'o', 'i', 'x', 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00});
  Write(dir / "bad-map.bin", {0x81, 0x01, 0x02});
  Write(dir / "bad-huge-array.bin", {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01});
  // Older shapes under version 3: protocol 1's "share" envelope, protocol 2's request (no
  // columns, weight or threshold); protocol 3's before dropouts: a join with a nonce, a request
  // without a threshold, a phase update with nonces instead of sets, the "sum" phase.
  Write(dir / "bad-envelope-share.bin",
        Replaced(tally::Encode(tally::Envelope{tally::EnvelopeKind::kPartial, Round(1), "alice",
                                               "hospital", Bytes(tally::kSealOverhead + 19, 0xa5)}),
                 {0xa7, 'p', 'a', 'r', 't', 'i', 'a', 'l'}, {0xa5, 's', 'h', 'a', 'r', 'e'}));
  auto request = [&](bool columns_and_weight, bool threshold) {
    return Raw([&](Packer& p) {
      p.pack_array(7 + (columns_and_weight ? 2 : 0) + (threshold ? 1 : 0));
      p.pack_uint32(tally::kProtocolVersion);
      Str(p, "request");
      p.pack_uint64(7);
      p.pack_uint64(1000);
      p.pack_uint32(1);
      p.pack_array(static_cast<uint32_t>(names.size()));
      for (const std::string& n : names) Str(p, n);
      if (columns_and_weight) {
        p.pack_array(0);
        p.pack_array(2);
        p.pack_uint64(0);
        p.pack_uint32(0);
      }
      if (threshold) p.pack_uint32(0);
      p.pack_uint32(0);
    });
  };
  Write(dir / "bad-request-no-columns.bin", request(false, false));
  Write(dir / "bad-request-no-threshold.bin", request(true, false));
  const tally::RoundId round = Round(1);
  const Bytes round_bytes(round.begin(), round.end());
  Write(dir / "bad-join-nonce.bin", Raw([&](Packer& p) {
          p.pack_array(4);
          p.pack_uint32(tally::kProtocolVersion);
          Str(p, "join");
          Bin(p, round_bytes);
          Bin(p, Bytes(32, 0x1d));
        }));
  Write(dir / "bad-phase-nonces.bin", Raw([&](Packer& p) {
          p.pack_array(15);
          p.pack_uint32(tally::kProtocolVersion);
          Str(p, "phase");
          Bin(p, round_bytes);
          Str(p, "sum");
          p.pack_uint64(3);
          p.pack_uint64(7);
          Str(p, "hospital");
          p.pack_uint64(1000);
          p.pack_uint32(1);
          p.pack_array(static_cast<uint32_t>(names.size()));
          for (const std::string& n : names) Str(p, n);
          p.pack_array(0);
          p.pack_array(2);
          p.pack_uint64(0);
          p.pack_uint32(0);
          Bin(p, Bytes(32 * names.size(), 0x6e));
          p.pack_uint32(10000);
          Str(p, "");
        }));
  Write(dir / "bad-phase-sum.bin", Replaced(update(Phase::kMask, 4, {all, all, {}, {}}),
                                            {0xa4, 'm', 'a', 's', 'k'}, {0xa3, 's', 'u', 'm'}));
  // Protocol 3 with tags, before signatures: a join with a tag per other patient (three), keys
  // items of cpk || spk || tag and of cpk || spk (the hospital's), confirmations of a 32-byte
  // tag.
  Write(dir / "bad-join-tags.bin", Raw([&](Packer& p) {
          p.pack_array(6);
          p.pack_uint32(tally::kProtocolVersion);
          Str(p, "join");
          Bin(p, round_bytes);
          Bin(p, Bytes(32, 0xc1));
          Bin(p, Bytes(32, 0x51));
          Bin(p, Bytes(3 * 32, 0x7a));
        }));
  Write(dir / "bad-batch-keys-tagged.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kKeys, {0, 2}, 2 * tally::kRoundKeySize + 32)));
  Write(dir / "bad-batch-keys-hospital-unsigned.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kKeys, {0, 1, 2}, 2 * tally::kRoundKeySize)));
  Write(dir / "bad-batch-confirm-tag.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kConfirm, {1}, 32)));
  // Today's shapes, broken: a set of two bytes for four participants, a set naming a fifth, a
  // join with a signature one byte short, a batch of an unknown kind, a shares item of a
  // confirm's size, an index twice.
  Write(dir / "bad-phase-set-size.bin", Replaced(update(Phase::kShare, 3, {all, {}, {}, {}}),
                                                 {0xc4, 0x01, 0x0f}, {0xc4, 0x02, 0x0f, 0x00}));
  Write(dir / "bad-phase-set-beyond.bin", Replaced(update(Phase::kShare, 3, {all, {}, {}, {}}),
                                                   {0xc4, 0x01, 0x0f}, {0xc4, 0x01, 0x1f}));
  Bytes short_signature = join_bytes;
  short_signature.pop_back();
  // The signature bin's length byte (bin8, 64 -> 63).
  short_signature[short_signature.size() - 64] = 63;
  Write(dir / "bad-join-signature-short.bin", short_signature);
  Write(dir / "bad-batch-kind.bin",
        Replaced(tally::Encode(MakeBatch(tally::BatchKind::kKeys, {0, 2}, kKeysItem)),
                 {0xa4, 'k', 'e', 'y', 's'}, {0xa4, 'k', 'e', 'y', 'z'}));
  Write(dir / "bad-batch-item-size.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kShares, {0, 2}, tally::kSignatureSize)));
  Write(dir / "bad-batch-index-twice.bin",
        tally::Encode(MakeBatch(tally::BatchKind::kConfirm, {2, 2}, tally::kSignatureSize)));

  // Real frames: what a broker sent on (envelopes routed, the keys batch given the hospital),
  // as it captured them.
  for (int i = 2; i < argc; ++i) {
    tally::Result<tally::CaptureContents> c = tally::ReadCaptureFile(argv[i]);
    if (!c.ok() || !c->ok()) {
      std::fprintf(stderr, "fuzz_make_corpus: %s: not a clean capture\n", argv[i]);
      return 1;
    }
    const std::string stem = std::filesystem::path(argv[i]).stem().string().substr(0, 8);
    int n = 0;
    for (const tally::CaptureRecord& r : c->records) {
      if (const auto* e = std::get_if<tally::CaptureFrame>(&r)) {
        Write(dir / ("captured-" + stem + "-" + std::to_string(n++) + ".bin"), e->frame);
      }
    }
  }
  return 0;
}
