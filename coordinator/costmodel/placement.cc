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
