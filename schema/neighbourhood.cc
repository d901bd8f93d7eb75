#include "schema/neighbourhood.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>

namespace tally {
namespace {

constexpr std::string_view kGraphLabel = "tally graph v5";
// Keystream is made this many 64-byte ChaCha20 blocks at a time.
constexpr size_t kBlocksPerChunk = 64;
// Neighbour lists above this many entries (1 GiB) are refused rather than allocated.
constexpr uint64_t kMaxNeighbourEntries = uint64_t{1} << 28;
constexpr uint32_t kMillion = 1'000'000;

// The words of the graph's stream, in order, a chunk of keystream at a time.
class WordStream {
 public:
  explicit WordStream(std::span<const uint8_t, 32> seed) {
    crypto_generichash_state state;
    crypto_generichash_init(&state, nullptr, 0, key_.size());
    crypto_generichash_update(&state, reinterpret_cast<const uint8_t*>(kGraphLabel.data()),
                              kGraphLabel.size());
    crypto_generichash_update(&state, seed.data(), seed.size());
    crypto_generichash_final(&state, key_.data(), key_.size());
  }
  ~WordStream() { sodium_memzero(key_.data(), key_.size()); }
  WordStream(const WordStream&) = delete;
  WordStream& operator=(const WordStream&) = delete;

  uint32_t Next() {
    if (next_ == chunk_.size()) Refill();
    const uint8_t* b = chunk_.data() + next_;
    next_ += 4;
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
  }

 private:
  void Refill() {
    static const std::array<uint8_t, crypto_stream_chacha20_ietf_NONCEBYTES> kNonce{};
    chunk_.fill(0);
    crypto_stream_chacha20_ietf_xor_ic(chunk_.data(), chunk_.data(), chunk_.size(), kNonce.data(),
                                       counter_, key_.data());
    counter_ += kBlocksPerChunk;
    next_ = 0;
  }

  std::array<uint8_t, crypto_stream_chacha20_ietf_KEYBYTES> key_{};
  std::array<uint8_t, 64 * kBlocksPerChunk> chunk_{};
  size_t next_ = 64 * kBlocksPerChunk;
  uint32_t counter_ = 0;
};

// A uniform value in [0, bound) from the stream, by rejection (no modulo bias).
uint32_t Draw(WordStream& stream, uint32_t bound) {
  const uint64_t limit = (uint64_t{1} << 32) - ((uint64_t{1} << 32) % bound);
  for (;;) {
    uint32_t r = stream.Next();
    if (r < limit) return r % bound;
  }
}

std::string Format(const char* format, auto... args) {
  char buffer[256];
  std::snprintf(buffer, sizeof buffer, format, args...);
  return buffer;
}

// "45%", "5%", "33.3333%": a rate given in parts per million, as people write it.
std::string Percent(uint32_t ppm) {
  std::string s = Format("%u.%04u", ppm / 10'000, ppm % 10'000);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s + "%";
}

// log C(a, b).
double LogChoose(double a, double b) {
  return std::lgamma(a + 1) - std::lgamma(b + 1) - std::lgamma(a - b + 1);
}

// The counts a round's rates give and the probability bounds (schema/neighbourhood.h). Counts
// are exact (⌊ppm·n / 10^6⌋) where fcp adds 1e-14 to the rate before flooring.
struct Model {
  uint32_t n = 0;
  uint32_t corrupt = 0;        // ⌊γN⌋
  uint32_t dropped = 0;        // ⌊δN⌋
  double log_security = 0;     // ln(2^-41 / N): per patient, for t1
  double log_correctness = 0;  // ln(2^-20 / N): per patient, for t2
};

Result<Model> MakeModel(uint32_t n, uint32_t corrupt_ppm, uint32_t dropout_ppm, uint32_t margin) {
  if (n < 4 || n > kMaxNeighbourhoodPatients) {
    return Status::Error(
        Format("a neighbourhood round has 4 to %u patients, not %u", kMaxNeighbourhoodPatients, n));
  }
  if (corrupt_ppm >= kMillion) {
    return Status::Error(
        Format("the corrupt rate is %u ppm: it must be below 1,000,000 ppm", corrupt_ppm));
  }
  if (dropout_ppm >= kMillion) {
    return Status::Error(
        Format("the dropout rate is %u ppm: it must be below 1,000,000 ppm", dropout_ppm));
  }
  // fcp's semi-honest feasibility bound: beyond it no degree below N − 1 tends to exist.
  if (corrupt_ppm + dropout_ppm > 900'000) {
    return Status::Error("corrupt and dropped patients together may be at most 90%, not " +
                         Percent(corrupt_ppm) + " + " + Percent(dropout_ppm));
  }
  if (margin == 0) {
    return Status::Error(
        "the margin must be at least 1: with 0, a neighbourhood's corrupt "
        "patients alone could reach its threshold");
  }
  Model m;
  m.n = n;
  m.corrupt = static_cast<uint32_t>(uint64_t{corrupt_ppm} * n / kMillion);
  m.dropped = static_cast<uint32_t>(uint64_t{dropout_ppm} * n / kMillion);
  m.log_security = -41 * std::log(2.0) - std::log(static_cast<double>(n));
  m.log_correctness = -20 * std::log(2.0) - std::log(static_cast<double>(n));
  return m;
}

// ln of fcp's union bound on the honest survivors' graph being disconnected: a Harary graph
// comes apart only when k/2 consecutive positions are removed in two disjoint places;
// N(N − k − 1)/2 such pairs, each all bad (corrupt or dropped) with probability
// B!(N − k)! / (N!(B − k)!). −∞ when fewer than k are bad.
double LogDisconnected(const Model& m, uint32_t k) {
  const double n = m.n, bad = static_cast<double>(m.corrupt) + m.dropped;
  if (k > bad) return -std::numeric_limits<double>::infinity();
  return std::log(n) + std::log(n - k - 1) - std::log(2.0) + std::lgamma(bad + 1) +
         std::lgamma(n - k + 1) - std::lgamma(n + 1) - std::lgamma(bad - k + 1);
}

// X ~ Hypergeometric(N, M, k): k drawn without replacement from N of which M are marked.
struct Hypergeometric {
  double n, m, k;
  uint32_t lo, hi, mode;  // the support and its most likely value

  Hypergeometric(uint32_t population, uint32_t marked, uint32_t drawn)
      : n(population), m(marked), k(drawn) {
    lo = drawn > population - marked ? drawn - (population - marked) : 0;
    hi = std::min(drawn, marked);
    const uint64_t top = (uint64_t{drawn} + 1) * (uint64_t{marked} + 1) / (population + 2);
    mode = static_cast<uint32_t>(std::clamp<uint64_t>(top, lo, hi));
  }
  // ln P[X = x]. REQUIRES: lo <= x <= hi.
  double LogPmf(double x) const {
    return LogChoose(m, x) + LogChoose(n - m, k - x) - LogChoose(n, k);
  }
  // ln (P[X = x − 1] / P[X = x]) and ln (P[X = x + 1] / P[X = x]): a step of the sums below
  // costs one log instead of six lgammas.
  double LogStepDown(double x) const {
    return std::log(x * (n - m - k + x) / ((m - x + 1) * (k - x + 1)));
  }
  double LogStepUp(double x) const {
    return std::log((m - x) * (k - x) / ((x + 1) * (n - m - k + x + 1)));
  }
};

// Terms of a tail below e^(log_q − kNegligible) are not summed one by one: the sums start at the
// last term above that, from an upper bound on the skipped ones (their count times the cutoff),
// so that a tail is never underestimated and the cost is the few terms that matter, not k.
constexpr double kNegligible = 45;

// t1: the least c with P[X > c] < e^log_q (the upper tail; the pmf falls from mode to hi).
uint32_t UpperQuantile(const Hypergeometric& x, double log_q) {
  const double cutoff = log_q - kNegligible;
  uint32_t c = x.hi;
  if (x.LogPmf(c) < cutoff) {
    // The last value at or after the mode whose term reaches the cutoff; pmf(mode) >= 1/(k+1)
    // always does.
    uint32_t above = x.mode, below = x.hi;
    while (below - above > 1) {
      const uint32_t mid = above + (below - above) / 2;
      (x.LogPmf(mid) >= cutoff ? above : below) = mid;
    }
    c = above;
  }
  const double q = std::exp(log_q);
  double tail = (x.hi - c) * std::exp(cutoff);  // >= P[X > c]
  double log_pmf = x.LogPmf(c);
  while (c > x.lo) {
    const double next = tail + std::exp(log_pmf);  // P[X > c − 1]
    if (!(next < q)) break;
    tail = next;
    log_pmf += x.LogStepDown(c);
    --c;
  }
  return c;
}

// t2: the greatest s with P[Y < s] < e^log_q (the lower tail; the pmf rises from lo to mode).
uint32_t LowerQuantile(const Hypergeometric& y, double log_q) {
  const double cutoff = log_q - kNegligible;
  uint32_t s = y.lo;
  if (y.LogPmf(s) < cutoff) {
    uint32_t below = y.lo, above = y.mode;
    while (above - below > 1) {
      const uint32_t mid = below + (above - below) / 2;
      (y.LogPmf(mid) >= cutoff ? above : below) = mid;
    }
    s = above;
  }
  const double q = std::exp(log_q);
  double head = (s - y.lo) * std::exp(cutoff);  // >= P[Y < s]
  double log_pmf = y.LogPmf(s);
  while (s < y.hi) {
    const double next = head + std::exp(log_pmf);  // P[Y < s + 1]
    if (!(next < q)) break;
    head = next;
    log_pmf += y.LogStepUp(s);
    ++s;
  }
  return s;
}

struct Bounds {
  uint32_t t1 = 0;  // corrupt neighbours exceed it with probability < 2^-41 / N
  uint32_t t2 = 0;  // fewer survive with probability < 2^-20 / N
};

Bounds BoundsFor(const Model& m, uint32_t k) {
  return {UpperQuantile(Hypergeometric(m.n, m.corrupt, k), m.log_security),
          LowerQuantile(Hypergeometric(m.n, m.n - m.dropped, k), m.log_correctness)};
}

// "2^-12.3": a probability given by its natural log.
std::string PowerOfTwo(double log_p) { return Format("2^%.1f", log_p / std::log(2.0)); }

}  // namespace

std::vector<uint32_t> NeighbourhoodWords(std::span<const uint8_t, 32> seed, size_t count) {
  WordStream stream(seed);
  std::vector<uint32_t> words(count);
  for (uint32_t& w : words) w = stream.Next();
  return words;
}

Result<NeighbourhoodGraph> NeighbourhoodGraph::Build(std::span<const uint8_t, 32> seed, uint32_t n,
                                                     uint32_t degree) {
  if (n < 4 || n > kMaxNeighbourhoodPatients) {
    return Status::Error(Format("a neighbourhood graph has 4 to %u participants, not %u",
                                kMaxNeighbourhoodPatients, n));
  }
  if (degree < 2 || degree % 2 != 0) {
    return Status::Error(
        Format("a neighbourhood graph's degree is even and at least 2, not %u", degree));
  }
  if (degree > n - 2) {
    return Status::Error(
        Format("degree %u among %u participants joins (nearly) everyone: a "
               "neighbourhood's degree is at most n - 2 = %u",
               degree, n, n - 2));
  }
  if (uint64_t{n} * degree > kMaxNeighbourEntries) {
    return Status::Error(
        Format("%u participants of degree %u would take %llu MiB of neighbour "
               "lists; at most %llu MiB",
               n, degree, static_cast<unsigned long long>(uint64_t{n} * degree * 4 >> 20),
               static_cast<unsigned long long>(kMaxNeighbourEntries * 4 >> 20)));
  }
  if (sodium_init() < 0) return Status::Error("libsodium failed to initialise");

  NeighbourhoodGraph g;
  g.degree_ = degree;
  g.ring_.resize(n);
  for (uint32_t p = 0; p < n; ++p) g.ring_[p] = p;
  WordStream stream(seed);
  for (uint32_t i = n - 1; i >= 1; --i) std::swap(g.ring_[i], g.ring_[Draw(stream, i + 1)]);
  g.position_.resize(n);
  for (uint32_t p = 0; p < n; ++p) g.position_[g.ring_[p]] = p;
  return g;
}

std::vector<uint32_t> NeighbourhoodGraph::Neighbours(uint32_t i) const {
  const uint32_t n = size(), p = position_[i];
  std::vector<uint32_t> out;
  out.reserve(degree_);
  for (uint32_t d = 1; d <= degree_ / 2; ++d) {
    // p ± d mod n without a division: d < n.
    out.push_back(ring_[p + d >= n ? p + d - n : p + d]);
    out.push_back(ring_[p >= d ? p - d : p + n - d]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool NeighbourhoodGraph::Adjacent(uint32_t i, uint32_t j) const {
  const uint32_t n = size(), a = position_[i], b = position_[j];
  const uint32_t d = a > b ? a - b : b - a;
  const uint32_t ring_distance = std::min(d, n - d);
  return ring_distance >= 1 && ring_distance <= degree_ / 2;
}

Result<NeighbourhoodParams> ChooseNeighbourhood(uint32_t n, uint32_t corrupt_ppm,
                                                uint32_t dropout_ppm, uint32_t margin) {
  Result<Model> model = MakeModel(n, corrupt_ppm, dropout_ppm, margin);
  if (!model.ok()) return model.status();
  const Model& m = *model;
  const double log_connectivity = -41 * std::log(2.0);
  for (uint32_t k = 2; k + 1 < n; k += 2) {
    if (!(LogDisconnected(m, k) < log_connectivity)) continue;
    const Bounds b = BoundsFor(m, k);
    const uint32_t t = std::max(b.t1 + margin, 2u);
    if (t <= b.t2) return NeighbourhoodParams{k, t};
  }
  return Status::Error(Format("no degree below %u hides inputs from ", n - 1) +
                       Percent(corrupt_ppm) + " corrupt and " + Percent(dropout_ppm) +
                       Format(" dropped patients among %u with margin %u", n, margin));
}

Status CheckNeighbourhood(uint32_t n, NeighbourhoodParams p, uint32_t corrupt_ppm,
                          uint32_t dropout_ppm, uint32_t margin) {
  Result<Model> model = MakeModel(n, corrupt_ppm, dropout_ppm, margin);
  if (!model.ok()) return model.status();
  const Model& m = *model;
  const uint32_t k = p.degree, t = p.threshold;
  if (k < 2 || k % 2 != 0 || k > n - 2) {
    return Status::Error(Format("degree %u is not an even number from 2 to %u (n - 2)", k, n - 2));
  }
  const double log_connectivity = -41 * std::log(2.0);
  const double log_disconnected = LogDisconnected(m, k);
  if (!(log_disconnected < log_connectivity)) {
    return Status::Error(Format("degree %u is too low: the honest survivors' graph may come "
                                "apart with probability up to ",
                                k) +
                         PowerOfTwo(log_disconnected) + ", above 2^-41");
  }
  const Bounds b = BoundsFor(m, k);
  const uint32_t low = std::max(b.t1 + margin, 2u);
  if (t < low) {
    return Status::Error(
        Format("threshold %u is %u below %u: a patient may have up to %u "
               "corrupt neighbours of its %u (more with probability below "
               "2^-41/%u), and the margin is %u",
               t, low - t, low, b.t1, k, n, margin));
  }
  if (t > b.t2) {
    return Status::Error(
        Format("threshold %u is %u above %u: at most %u of a patient's %u "
               "neighbours survive with probability 2^-20/%u or more",
               t, t - b.t2, b.t2, b.t2, k, n));
  }
  return Status::Ok();
}

}  // namespace tally
