// Histogram of prediction error, log2(actual / predicted), for the metrics exporter
// ("tokengate_costmodel_prediction_error" in the metrics layer reads buckets()).
//
// Ownership: owned by the coordinator wiring. Threads: record() from the coordinator thread,
// buckets() from the metrics scrape thread; counters are relaxed atomics.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace tokengate::costmodel {

class PredictionErrorHistogram {
 public:
  // Upper bounds (inclusive) of log2(actual/predicted); the last bucket is +inf.
  // -3 means "predicted 8x too high", +3 "8x too low".
  static constexpr std::array<double, 9> kUpperBounds = {-3, -2, -1, -0.5, 0.5, 1, 2, 3, 1e300};

  void record(double predicted_ns, double actual_ns);

  struct Snapshot {
    std::array<uint64_t, kUpperBounds.size()> counts{};  // per bucket, not cumulative
    uint64_t total = 0;
    double sum_abs_log2 = 0;
    // Fraction of predictions within 2x of actual.
    double withinFactor2() const;
  };
  Snapshot snapshot() const;

 private:
  std::array<std::atomic<uint64_t>, kUpperBounds.size()> counts_{};
  std::atomic<uint64_t> total_{0};
  std::atomic<uint64_t> sum_abs_milli_log2_{0};  // fixed point to keep it a plain atomic add
};

}  // namespace tokengate::costmodel
