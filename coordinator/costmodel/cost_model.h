// The cost model interface the scheduler calls: predicted run time (ns) for a batch of tokens.
//
// Implementations are immutable once published (the OnlineTrainer hands out
// shared_ptr<const CostModel>), so predict() may be called from any thread concurrently.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "coordinator/costmodel/features.h"

namespace tokengate::costmodel {

// Held-out quality of a model, measured in log(run_ns) space.
struct ModelQuality {
  double r2 = 0;       // coefficient of determination on the held-out set
  double mae_log = 0;  // mean |log(pred) - log(actual)|; exp(mae_log) ~ typical error factor
  uint64_t n_train = 0;
  uint64_t n_test = 0;
};

class CostModel {
 public:
  virtual ~CostModel() = default;

  // Predicted run time in nanoseconds for each token; out_ns.size() must equal in.size().
  // Always > 0 and finite. Thread-safe (const, no shared mutable state).
  virtual void predict(std::span<const TokenFeatures> in, std::span<double> out_ns) const = 0;
  virtual std::string_view name() const = 0;

  double predictOne(const TokenFeatures& f) const {
    double out = 0;
    predict(std::span<const TokenFeatures>(&f, 1), std::span<double>(&out, 1));
    return out;
  }

  // Assigned by whoever publishes the model (the OnlineTrainer numbers them 1, 2, ...).
  uint64_t version() const { return version_; }
  // Only before the model is shared: models are immutable once published.
  void setVersion(uint64_t v) { version_ = v; }

  // Why the publisher accepted it: on `n` recent samples it never trained on, its mean
  // |ln(predicted / actual)| and the running mean's (scored prequentially) on the same samples.
  // n = 0: no such evidence (a loaded model, the heuristic). The placement gate uses it
  // (XgbSchedulerOptions::held_out_trust_ratio).
  struct HeldOut {
    double model_err = 0, mean_err = 0;
    uint64_t n = 0;
  };
  const HeldOut& heldOut() const { return held_out_; }
  // Only before the model is shared, as setVersion.
  void setHeldOut(const HeldOut& h) { held_out_ = h; }

 private:
  uint64_t version_ = 0;
  HeldOut held_out_;
};

// Quality of any model on labelled samples, in log space. Labels are used as given.
ModelQuality evaluateModel(const CostModel& model, std::span<const TelemetrySample> samples);

// Label transform shared by training and evaluation: natural log of run time, floored at 1 ns.
double logLabel(int64_t run_ns);

}  // namespace tokengate::costmodel
