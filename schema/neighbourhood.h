// SecAgg+ neighbourhoods (Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server
// Aggregation with (Poly)Logarithmic Overhead", CCS 2020): each patient masks with, and
// Shamir-shares its secrets to, only its k neighbours on a random k-regular graph, with a
// threshold t per neighbourhood. Two pure pieces: the graph a round's seed fixes, and the choice
// of (k, t) from the cohort's size and its declared fractions of corrupt and dropped patients.
//
// The graph is a Harary graph H(k, N) (N positions on a ring, each joined to the k/2 on either
// side) over a random permutation of the participants, as Google's fcp/secagg builds it
// (google-parfait/federated-compute, fcp/secagg/server/secret_sharing_harary_graph.h):
//
//   key    = BLAKE2b-256("tally graph v5" || seed)     crypto_generichash, 32-byte out, no key
//   stream = ChaCha20-IETF keystream under key, nonce 12 zero bytes, block counter from 0;
//            word m = bytes [4m, 4m+4) read as a little-endian uint32
//   π = identity of 0..N−1; for i = N−1 down to 1: bound = i + 1,
//       limit = 2^32 − (2^32 mod bound); take the next word r until r < limit; j = r mod bound;
//       swap π[i], π[j]
//   participant π[p] sits at position p; its neighbours are the participants at positions
//   p ± 1, …, p ± k/2 (mod N).
//
// The parameters follow fcp's Harary-graph analysis (fcp/secagg/server/graph_parameter_finder.cc,
// after Bell et al. §4), with security 2^-40 split evenly over two events and correctness 2^-20:
//   (a) connectivity: a union bound on removing k/2 consecutive ring positions in two places,
//       all corrupt or dropped, is below 2^-41;
//   (b) t1: the least c with P[X > c] < 2^-41 / N, X ~ Hypergeometric(N, ⌊γN⌋, k) the corrupt
//       neighbours of one patient;
//   (c) t2: the greatest s with P[Y < s] < 2^-20 / N, Y ~ Hypergeometric(N, N − ⌊δN⌋, k) the
//       surviving neighbours of one patient;
//   and the threshold is t = max(t1 + margin, 2) with t <= t2. fcp's semi-honest rule is margin 1;
//   Tally's is kNeighbourhoodMargin = 2, so that a patient has at most t − 2 corrupt neighbours:
//   rebuilding its self mask then takes its own share and at least one honest neighbour's, and an
//   adversary choosing who drops learns only sums over at least two honest patients.
//   Unlike fcp, t <= t2 holds after raising t to 2 too, so a dropped patient's secrets can always
//   be rebuilt from its surviving neighbours (fcp's N = 10, 5% corrupt, 33% dropped gives degree
//   4, threshold 2 with t2 = 1; Tally gives degree 6).
// Rates are integers in parts per million (γ = corrupt_ppm / 10^6); ⌊γN⌋ and ⌊δN⌋ are exact.
//
// Thread-safety: free functions on values; a NeighbourhoodGraph is immutable.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "schema/status.h"

namespace tally {

// The most participants a neighbourhood round holds (fcp's bound too).
inline constexpr uint32_t kMaxNeighbourhoodPatients = 1'000'000;
// Tally's margin between a neighbourhood's possible corrupt members and its threshold (above).
inline constexpr uint32_t kNeighbourhoodMargin = 2;

class NeighbourhoodGraph {
 public:
  // The graph of `seed` (the 32 bytes the hospital drew and signed, never a value the broker
  // chooses) over n participants of degree `degree`. Fails for n < 4 or n >
  // kMaxNeighbourhoodPatients, an odd degree, degree < 2, degree > n − 2 (degree n − 1 joins
  // everyone: not a neighbourhood round) or n × degree above 2^28 (1 GiB of lists), each with a
  // message naming the value. Memory 8 bytes per participant: the ring and each participant's
  // position on it.
  static Result<NeighbourhoodGraph> Build(std::span<const uint8_t, 32> seed, uint32_t n,
                                          uint32_t degree);

  uint32_t size() const { return static_cast<uint32_t>(ring_.size()); }
  uint32_t degree() const { return degree_; }
  // The neighbours of participant i (never i itself), ascending; degree() of them, computed from
  // the ring when asked: a party needs its own, and only the broker and the hospital all of them.
  // REQUIRES: i < size().
  std::vector<uint32_t> Neighbours(uint32_t i) const;
  // Whether i and j are neighbours; O(1). False for i == j. REQUIRES: i, j < size().
  bool Adjacent(uint32_t i, uint32_t j) const;
  // π: the participant at each ring position. Exposed for tests and audits.
  std::span<const uint32_t> Ring() const { return ring_; }

 private:
  NeighbourhoodGraph() = default;
  uint32_t degree_ = 0;
  std::vector<uint32_t> ring_;      // position -> participant
  std::vector<uint32_t> position_;  // participant -> position
};

// The first `count` words of the graph's stream for `seed` (above). Exposed for known-answer
// tests: an outsider's shuffle over these words must give NeighbourhoodGraph::Ring().
std::vector<uint32_t> NeighbourhoodWords(std::span<const uint8_t, 32> seed, size_t count);

struct NeighbourhoodParams {
  uint32_t degree = 0;     // k: neighbours per patient, even
  uint32_t threshold = 0;  // t: Shamir threshold within a neighbourhood
  bool operator==(const NeighbourhoodParams&) const = default;
};

// The smallest even degree whose failure probabilities meet the bounds above, with its threshold
// max(t1 + margin, 2). Fails for n outside [4, kMaxNeighbourhoodPatients], a rate of 10^6 ppm or
// more, corrupt + dropout above 900,000 ppm (fcp's feasibility bound), margin 0, or when no
// degree below n − 1 meets the bounds ("no degree below 19 hides inputs from 45% corrupt and
// 45% dropped patients among 20 with margin 2"). Tens of microseconds at 5% corrupt and 10%
// dropped even for n = 10^6; tens of milliseconds at fcp's hardest, 45% and 45%
// (tally-micro-bench BM_ChooseNeighbourhood).
Result<NeighbourhoodParams> ChooseNeighbourhood(uint32_t n, uint32_t corrupt_ppm,
                                                uint32_t dropout_ppm,
                                                uint32_t margin = kNeighbourhoodMargin);

// Whether `p` meets the bounds for these rates (what a patient checks of the hospital's choice):
// an even degree in [2, n − 2], connectivity (a), threshold >= max(t1 + margin, 2) and
// threshold <= t2. The same input errors as ChooseNeighbourhood; otherwise the error names the
// bound that fails and by how much ("threshold 6 is 1 below 7: a patient may have up to 5
// corrupt neighbours of its 16 (more with probability below 2^-41/100), and the margin is 2").
Status CheckNeighbourhood(uint32_t n, NeighbourhoodParams p, uint32_t corrupt_ppm,
                          uint32_t dropout_ppm, uint32_t margin = kNeighbourhoodMargin);

}  // namespace tally
