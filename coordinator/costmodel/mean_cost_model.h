// Heuristic cost model (Dask-like): a running mean of run time per operation, normalised by node
// speed. It is the cold-start model and the fallback whenever the learned model is not good
// enough on held-out data.
//
// Threads: observe() mutates and belongs to a single owner (the trainer builds a fresh instance
// per cycle); once published as shared_ptr<const CostModel>, only predict() is called, from any
// thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "coordinator/costmodel/cost_model.h"

namespace tokengate::costmodel {

struct MeanCostOptions {
  // Exact mean for the first 1/alpha samples of an op, then an exponentially weighted mean so the
  // model follows drift.
  double alpha = 0.05;
  // A sample more than this many times the op's current mean is clipped to it (hung tokens),
  // once the op has at least kMinSamplesForClip samples.
  double outlier_factor = 20.0;
  // Used for operations never seen, per declared weight, until any op of that weight is seen.
  double default_light_ns = 50'000;
  double default_medium_ns = 1'000'000;
  double default_heavy_ns = 20'000'000;
};

class MeanCostModel final : public CostModel {
 public:
  explicit MeanCostModel(MeanCostOptions options = {});

  static std::shared_ptr<MeanCostModel> fromSamples(std::span<const TelemetrySample> samples,
                                                    MeanCostOptions options = {});

  void observe(const TelemetrySample& sample);

  void predict(std::span<const TokenFeatures> in, std::span<double> out_ns) const override;
  std::string_view name() const override { return "mean"; }

  // Mean normalised work (ns at node speed 1.0) for an op, or nullopt-like -1 if never seen.
  double meanWorkNs(uint32_t op_id) const;
  size_t numOps() const { return per_op_.size(); }

 private:
  static constexpr uint64_t kMinSamplesForClip = 5;
  struct Running {
    double mean = 0;
    uint64_t n = 0;
  };
  static void update(Running& r, double x, double alpha, double outlier_factor);
  double fallbackFor(uint8_t declared_weight) const;

  MeanCostOptions options_;
  absl::flat_hash_map<uint32_t, Running> per_op_;
  Running per_weight_[3];
};

// Quality (log space, like evaluateModel) of the running-mean estimator on `recent`, scored
// prequentially: it starts from `history`, predicts each recent sample and only then observes it,
// as the online per-op mean would have. This is the bar a learned model must clear on the same
// held-out samples before it is published (OnlineTrainer).
ModelQuality evaluateRunningMean(std::span<const TelemetrySample> history,
                                 std::span<const TelemetrySample> recent,
                                 MeanCostOptions options = {});

}  // namespace tokengate::costmodel
