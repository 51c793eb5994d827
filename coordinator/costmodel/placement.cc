#include "coordinator/costmodel/placement.h"

#include <algorithm>
#include <cmath>

namespace tokengate::costmodel {

double predictedCompletionNs(const NodeState& node, double token_ns) {
  const double speed =
      (std::isfinite(node.speed_factor) && node.speed_factor > 0) ? node.speed_factor : 1.0;
  const double workers = static_cast<double>(std::max<uint32_t>(node.workers, 1));
  const double outstanding = std::max(node.outstanding_ns, 0.0);
  // Queued work drains across the node's workers; the token itself runs on one of them.
  return outstanding / workers + std::max(token_ns, 0.0) * speed;
}

std::optional<size_t> chooseNode(std::span<const NodeState> nodes, double token_ns) {
  std::optional<size_t> best;
  double best_completion = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!nodes[i].eligible) continue;
    const double c = predictedCompletionNs(nodes[i], token_ns);
    if (!best || c < best_completion ||
        (c == best_completion && nodes[i].outstanding_ns < nodes[*best].outstanding_ns)) {
      best = i;
      best_completion = c;
    }
  }
  return best;
}

namespace {
double completionOn(const NodeView& node, double run_ns) {
  const double workers = static_cast<double>(std::max<uint32_t>(node.workers, 1));
  return std::max(node.outstanding_ns, 0.0) / workers + std::max(run_ns, 0.0);
}
}  // namespace

std::optional<Placement> placeToken(const CostModel& model, const TokenFeatures& token,
                                    std::span<const NodeView> nodes, const PlaceOptions& options) {
  auto placed = placeBatch(model, std::span<const TokenFeatures>(&token, 1), nodes, options);
  if (placed.empty() || placed.front().node == Placement::kHoldBack) return std::nullopt;
  return placed.front();
}

std::vector<Placement> placeBatch(const CostModel& model, std::span<const TokenFeatures> tokens,
                                  std::span<const NodeView> nodes, const PlaceOptions& options) {
  std::vector<size_t> eligible;
  for (size_t j = 0; j < nodes.size(); ++j) {
    if (nodes[j].eligible) eligible.push_back(j);
  }
  if (eligible.empty() || tokens.empty()) return {};
  const size_t k = eligible.size();
  // rows[i * k + e]: token i on eligible node e.
  std::vector<TokenFeatures> rows;
  rows.reserve(tokens.size() * k);
  for (const auto& t : tokens) {
    for (size_t j : eligible) {
      TokenFeatures f = t;
      f.node_index = nodes[j].node_index;
      f.node_speed = nodes[j].speed_factor;
      f.node_load = nodes[j].load;
      rows.push_back(f);
    }
  }
  std::vector<double> cost(rows.size());
  model.predict(rows, cost);

  // LPT order by the token's cheapest predicted cost.
  std::vector<size_t> order(tokens.size());
  std::vector<double> key(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    order[i] = i;
    key[i] = *std::min_element(cost.begin() + static_cast<ptrdiff_t>(i * k),
                               cost.begin() + static_cast<ptrdiff_t>((i + 1) * k));
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key[a] > key[b]; });

  std::vector<double> outstanding(k);
  std::vector<uint32_t> capacity(k);
  for (size_t e = 0; e < k; ++e) {
    outstanding[e] = nodes[eligible[e]].outstanding_ns;
    capacity[e] = nodes[eligible[e]].capacity;
  }
  std::vector<Placement> out(tokens.size());
  for (size_t i : order) {
    std::optional<size_t> best_free, best_any;
    double free_completion = 0, any_completion = 0;
    for (size_t e = 0; e < k; ++e) {
      NodeView v = nodes[eligible[e]];
      v.outstanding_ns = outstanding[e];
      const double c = completionOn(v, cost[i * k + e]);
      if (!best_any || c < any_completion) {
        best_any = e;
        any_completion = c;
      }
      if (capacity[e] > 0 && (!best_free || c < free_completion)) {
        best_free = e;
        free_completion = c;
      }
    }
    const bool take_free =
        best_free && (!options.wait_for_better_node || *best_free == *best_any ||
                      free_completion <= any_completion * (1 + options.wait_slack));
    if (take_free) {
      out[i] = Placement{eligible[*best_free], cost[i * k + *best_free], free_completion};
      outstanding[*best_free] += cost[i * k + *best_free];
      --capacity[*best_free];
    } else if (best_any) {
      // Held back: it will finish sooner by waiting for credit on the better (full) node. Count
      // its work there so the rest of the batch sees that node as busier.
      outstanding[*best_any] += cost[i * k + *best_any];
    }
  }
  return out;
}

Weight reclassify(double predicted_ns, Weight current, const LaneThresholds& t) {
  if (!std::isfinite(predicted_ns) || predicted_ns < 0) return current;
  const double upper[2] = {t.light_max_ns, t.medium_max_ns};
  const double h = std::clamp(t.hysteresis, 0.0, 0.9);
  int level = static_cast<int>(current);
  level = std::clamp(level, 0, 2);
  const int start = level;
  while (level < 2 && predicted_ns > upper[level] * (1 + h)) ++level;
  if (t.allow_demotion && level == start) {
    while (level > 0 && predicted_ns < upper[level - 1] * (1 - h)) --level;
  }
  return static_cast<Weight>(level);
}

uint32_t batchSizeFor(double predicted_ns, const BatchSizing& s) {
  const uint32_t lo = std::max<uint32_t>(s.min_batch, 1);
  const uint32_t hi = std::max(s.max_batch, lo);
  if (std::isnan(predicted_ns) || predicted_ns < 0) return lo;
  if (predicted_ns == 0) return hi;
  const double n = std::floor(s.target_ns / predicted_ns);
  if (n >= static_cast<double>(hi)) return hi;
  return std::clamp(static_cast<uint32_t>(std::max(n, 0.0)), lo, hi);
}

}  // namespace tokengate::costmodel
