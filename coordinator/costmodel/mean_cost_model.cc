#include "coordinator/costmodel/mean_cost_model.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

#include "coordinator/costmodel/quality.h"

namespace tokengate::costmodel {

namespace {
double speedOf(double s) { return (std::isfinite(s) && s > 0) ? s : 1.0; }
}  // namespace

MeanCostModel::MeanCostModel(MeanCostOptions options) : options_(options) {}

std::shared_ptr<MeanCostModel> MeanCostModel::fromSamples(std::span<const TelemetrySample> samples,
                                                          MeanCostOptions options) {
  auto m = std::make_shared<MeanCostModel>(options);
  for (const auto& s : samples) m->observe(s);
  return m;
}

void MeanCostModel::update(Running& r, double x, double alpha, double outlier_factor) {
  if (r.n >= kMinSamplesForClip && outlier_factor > 0) x = std::min(x, r.mean * outlier_factor);
  ++r.n;
  const double w = std::max(alpha, 1.0 / static_cast<double>(r.n));
  r.mean += w * (x - r.mean);
}

void MeanCostModel::observe(const TelemetrySample& sample) {
  const double work = static_cast<double>(std::max<int64_t>(sample.run_ns, 1)) /
                      speedOf(sample.features.node_speed);
  update(per_op_[sample.features.op_id], work, options_.alpha, options_.outlier_factor);
  const uint8_t w = std::min<uint8_t>(sample.features.declared_weight, 2);
  update(per_weight_[w], work, options_.alpha, options_.outlier_factor);
}

double MeanCostModel::fallbackFor(uint8_t declared_weight) const {
  const uint8_t w = std::min<uint8_t>(declared_weight, 2);
  if (per_weight_[w].n > 0) return per_weight_[w].mean;
  switch (w) {
    case 0:
      return options_.default_light_ns;
    case 1:
      return options_.default_medium_ns;
    default:
      return options_.default_heavy_ns;
  }
}

double MeanCostModel::meanWorkNs(uint32_t op_id) const {
  auto it = per_op_.find(op_id);
  return it == per_op_.end() ? -1.0 : it->second.mean;
}

void MeanCostModel::predict(std::span<const TokenFeatures> in, std::span<double> out_ns) const {
  assert(in.size() == out_ns.size());
  const size_t n = std::min(in.size(), out_ns.size());
  for (size_t i = 0; i < n; ++i) {
    const auto& f = in[i];
    auto it = per_op_.find(f.op_id);
    const double work = it != per_op_.end() ? it->second.mean : fallbackFor(f.declared_weight);
    out_ns[i] = std::max(1.0, work * speedOf(f.node_speed));
  }
}

ModelQuality evaluateRunningMean(std::span<const TelemetrySample> history,
                                 std::span<const TelemetrySample> recent, MeanCostOptions options) {
  MeanCostModel m(options);
  for (const auto& s : history) m.observe(s);
  std::vector<double> actual, pred;
  actual.reserve(recent.size());
  pred.reserve(recent.size());
  for (const auto& s : recent) {
    pred.push_back(std::log(std::max(m.predictOne(s.features), 1.0)));
    actual.push_back(logLabel(s.run_ns));
    m.observe(s);
  }
  ModelQuality q;
  q.r2 = rSquared(actual, pred);
  q.mae_log = meanAbsError(actual, pred);
  q.n_train = history.size();
  q.n_test = recent.size();
  return q;
}

}  // namespace tokengate::costmodel
