// The graph of one round: a full round's complete graph or a neighbourhood round's
// (schema/neighbourhood.h), behind one interface for the broker, the patients and the hospital.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "schema/neighbourhood.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

// A hospital asks for a neighbourhood round above this many patients (when a degree below N - 1
// meets the bounds): at 100 a full round costs each patient about 15 ms of CPU, and a full
// round's guarantee holds against a malicious hospital too (schema/PROTOCOL.md, "Why it is
// private").
inline constexpr size_t kNeighbourhoodsAbove = 100;
// The least fraction of corrupt patients a patient lets a neighbourhood round assume: a round
// declaring none would get degree 2 and threshold 2, where one corrupt neighbour and a dropped
// one reveal an input. In parts per million.
inline constexpr uint32_t kMinCorruptPpm = 50'000;
// The rates a hospital declares by default (tally-node --corrupt-rate, --dropout-rate): 5 % of
// the patients corrupt, 10 % dropping out, in parts per million.
inline constexpr uint32_t kDefaultCorruptPpm = kMinCorruptPpm;
inline constexpr uint32_t kDefaultDropoutPpm = 100'000;

// The graph a hospital asks for (tally-node --graph auto) for a round of `n` patients at these
// rates: a neighbourhood round's degree and threshold (no seed, no signature yet) when n is above
// `above` and ChooseNeighbourhood finds a degree below n - 1, else nullopt (a full round).
std::optional<Neighbourhood> ChooseGraph(size_t n, uint32_t corrupt_ppm, uint32_t dropout_ppm,
                                         size_t above = kNeighbourhoodsAbove);

// The graph of one round (schema/PROTOCOL.md, "Neighbourhoods"): whom each participant masks
// with and shares its secrets to, and the threshold that rebuilds a secret from its holders. A
// full round is the complete graph (everyone is everyone's neighbour, threshold T); a
// neighbourhood round's is NeighbourhoodGraph over its seed, threshold t. Immutable.
class RoundGraph {
 public:
  // The graph of `params` (checked by CheckRoundParams). Fails when a neighbourhood round's graph
  // cannot be built from its fields.
  static Result<RoundGraph> Of(const RoundParams& params);

  uint32_t size() const { return n_; }
  bool complete() const { return !graph_; }
  // The Shamir threshold of every secret: t, or T in a full round.
  uint32_t threshold() const { return threshold_; }
  // Whether i and j are neighbours (false for i == j). REQUIRES: i, j < size().
  bool Adjacent(uint32_t i, uint32_t j) const { return graph_ ? graph_->Adjacent(i, j) : i != j; }
  // N(i): the participants i masks with and shares to, ascending. REQUIRES: i < size().
  std::vector<uint32_t> Peers(uint32_t i) const;
  // N[i]: the same with i itself, ascending. REQUIRES: i < size().
  std::vector<uint32_t> Closed(uint32_t i) const;

 private:
  RoundGraph(uint32_t n, uint32_t threshold, std::optional<NeighbourhoodGraph> graph)
      : n_(n), threshold_(threshold), graph_(std::move(graph)) {}
  uint32_t n_ = 0;
  uint32_t threshold_ = 0;
  std::optional<NeighbourhoodGraph> graph_;
};

}  // namespace tally
