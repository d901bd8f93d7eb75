#include "schema/round_graph.h"

#include <algorithm>

namespace tally {

std::optional<Neighbourhood> ChooseGraph(size_t n, uint32_t corrupt_ppm, uint32_t dropout_ppm,
                                         size_t above) {
  if (n <= above || n > kMaxNeighbourhoodPatients) return std::nullopt;
  Result<NeighbourhoodParams> chosen =
      ChooseNeighbourhood(static_cast<uint32_t>(n), corrupt_ppm, dropout_ppm);
  if (!chosen.ok() || chosen->degree + 1 >= n) return std::nullopt;
  return Neighbourhood{corrupt_ppm, dropout_ppm, chosen->degree, chosen->threshold};
}

Result<RoundGraph> RoundGraph::Of(const RoundParams& params) {
  const auto n = static_cast<uint32_t>(params.participants.size());
  if (!params.graph) return RoundGraph(n, params.threshold, std::nullopt);
  Result<NeighbourhoodGraph> graph =
      NeighbourhoodGraph::Build(params.graph->seed, n, params.graph->degree);
  if (!graph.ok()) return graph.status();
  return RoundGraph(n, params.graph->threshold, std::move(graph.value()));
}

std::vector<uint32_t> RoundGraph::Peers(uint32_t i) const {
  if (graph_) {
    return graph_->Neighbours(i);
  }
  std::vector<uint32_t> out;
  out.reserve(n_ - 1);
  for (uint32_t v = 0; v < n_; ++v)
    if (v != i) out.push_back(v);
  return out;
}

std::vector<uint32_t> RoundGraph::Closed(uint32_t i) const {
  std::vector<uint32_t> out = Peers(i);
  out.insert(std::lower_bound(out.begin(), out.end(), i), i);
  return out;
}

}  // namespace tally
