// Learned cost model: an XGBoost gradient-boosted tree ensemble (C API) regressing log(run_ns)
// on the TokenFeatures. Trained from telemetry (online) or a trace (offline), saved and loaded as
// XGBoost JSON with TokenGate metadata in the booster attributes.
//
// Ownership: the object owns its BoosterHandle and frees it on destruction.
// Threads: train()/load() return a fresh object; after that it is treated as immutable and
// predict() may run on any thread (XGBoost in-place prediction is thread-safe; the booster is
// configured before the object is returned so no lazy configuration happens under predict).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/costmodel/compiled_forest.h"
#include "coordinator/costmodel/cost_model.h"

namespace tokengate::costmodel {

struct XgbParams {
  // 24 rounds of depth 6 reach the same held-out R^2 as 40 on the synthetic workload at 60% of
  // the prediction cost (cost is linear in trees x depth).
  int num_rounds = 24;
  int max_depth = 6;
  double eta = 0.3;
  // Hessian sum per leaf; for squared error that is a sample count. > 1 so a single odd sample
  // (a hung token that survived clipping) cannot get a leaf of its own.
  double min_child_weight = 8.0;
  double subsample = 1.0;
  double lambda = 1.0;
  // "reg:squarederror" or "reg:pseudohubererror" (robust; huber_slope in log units).
  std::string objective = "reg:squarederror";
  double huber_slope = 1.0;
  // Threads used for training. 1 by default: on a busy 2-core box OpenMP spin barriers made
  // nthread=2 training 20-30x slower (6-8 s instead of 0.25 s for 4000 rows).
  int nthread = 1;
  // Threads for XGBoost's own predict (predictWithXgboost, and predict() if the compiled
  // forest is unavailable); 1 keeps dispatch latency predictable.
  int predict_nthread = 1;
  // Treat the op id as categorical (XGBoost partition splits) instead of as a number.
  bool categorical_op = true;
  double test_fraction = 0.2;
  uint64_t seed = 42;
  size_t min_samples = 20;
  // Robust label clipping, per (operation, first argument) in log space (groups of >= 5
  // training rows): labels are clamped to
  // median +- max(clip_mads * 1.4826 * MAD, clip_min_log). One hung token (1000x) is then just a
  // slightly slow sample instead of a leaf of its own.
  double clip_mads = 4.0;
  double clip_min_log = 1.5;  // e^1.5 ~ 4.5x either side of the median at least
  // Second pass (doubles training time): clip labels to the first model's prediction
  // +- max(residual_clip_mads * 1.4826 * MAD(residuals), residual_clip_min_log), then retrain.
  bool residual_clip = true;
  double residual_clip_mads = 4.0;
  double residual_clip_min_log = 0.5;  // e^0.5 ~ 1.65x
  // Optional cooperative cancellation, checked between boosting rounds.
  const std::atomic<bool>* cancel = nullptr;
};

struct FeatureImportance {
  std::string feature;
  double score = 0;  // importance of the requested type
  double share = 0;  // score / sum of scores
};

class XgbCostModel final : public CostModel {
 public:
  ~XgbCostModel() override;
  XgbCostModel(const XgbCostModel&) = delete;
  XgbCostModel& operator=(const XgbCostModel&) = delete;

  // Trains on `samples` with a held-out split; quality() reports the held-out numbers.
  // InvalidArgument if there are too few samples; Cancelled if params.cancel fired.
  static StatusOr<std::shared_ptr<XgbCostModel>> train(std::span<const TelemetrySample> samples,
                                                       const XgbParams& params = {});
  // NotFound for a missing file, DataLoss for a corrupt/truncated one, InvalidArgument for a
  // valid XGBoost model with the wrong feature layout.
  static StatusOr<std::shared_ptr<XgbCostModel>> load(const std::string& path,
                                                      int predict_nthread = 1);
  // Writes XGBoost JSON atomically (temp file + rename).
  Status save(const std::string& path) const;

  void predict(std::span<const TokenFeatures> in, std::span<double> out_ns) const override;
  std::string_view name() const override { return "xgboost"; }

  // Reference path: XGBoost's own in-place prediction (predict() uses the compiled forest when
  // it verified equal to this at build time).
  void predictWithXgboost(std::span<const TokenFeatures> in, std::span<double> out_ns) const;
  bool usesCompiledForest() const { return forest_.has_value(); }
  const CompiledForest* compiledForest() const { return forest_ ? &*forest_ : nullptr; }

  const ModelQuality& quality() const { return quality_; }
  int numTrees() const;
  // importance_type: weight, gain, cover, total_gain, total_cover. Sorted by score, descending;
  // features never used in a split are listed with score 0.
  StatusOr<std::vector<FeatureImportance>> featureImportance(
      std::string_view importance_type = "total_gain") const;

 private:
  explicit XgbCostModel(void* booster);
  // XGBoost in-place prediction of n encoded rows; false (and 1 ms guesses) on failure.
  bool predictChunk(const float* rows, size_t n, double* out) const;

  // Builds forest_ from the booster's JSON and keeps it only if it reproduces XGBoost's margins
  // on `rows` (plus generated probe rows).
  void compileForest(std::span<const float> rows);

  void* booster_;  // BoosterHandle
  ModelQuality quality_;
  std::optional<CompiledForest> forest_;
};

}  // namespace tokengate::costmodel
