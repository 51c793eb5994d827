#include "coordinator/costmodel/prediction_error.h"

#include <algorithm>
#include <cmath>

namespace tokengate::costmodel {

void PredictionErrorHistogram::record(double predicted_ns, double actual_ns) {
  const double e = std::log2(std::max(actual_ns, 1.0) / std::max(predicted_ns, 1.0));
  if (!std::isfinite(e)) return;
  size_t b = 0;
  while (b + 1 < kUpperBounds.size() && e > kUpperBounds[b]) ++b;
  counts_[b].fetch_add(1, std::memory_order_relaxed);
  total_.fetch_add(1, std::memory_order_relaxed);
  sum_abs_milli_log2_.fetch_add(static_cast<uint64_t>(std::llround(std::abs(e) * 1000)),
                                std::memory_order_relaxed);
}

PredictionErrorHistogram::Snapshot PredictionErrorHistogram::snapshot() const {
  Snapshot s;
  for (size_t i = 0; i < counts_.size(); ++i)
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
  s.total = total_.load(std::memory_order_relaxed);
  s.sum_abs_log2 = static_cast<double>(sum_abs_milli_log2_.load(std::memory_order_relaxed)) / 1000;
  return s;
}

double PredictionErrorHistogram::Snapshot::withinFactor2() const {
  if (total == 0) return 0;
  // Buckets (-1,-0.5], (-0.5,0.5], (0.5,1] are within a factor 2.
  return static_cast<double>(counts[3] + counts[4] + counts[5]) / static_cast<double>(total);
}

}  // namespace tokengate::costmodel
