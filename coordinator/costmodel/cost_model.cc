#include "coordinator/costmodel/cost_model.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "coordinator/costmodel/quality.h"

namespace tokengate::costmodel {

double logLabel(int64_t run_ns) {
  return std::log(static_cast<double>(std::max<int64_t>(run_ns, 1)));
}

ModelQuality evaluateModel(const CostModel& model, std::span<const TelemetrySample> samples) {
  std::vector<TokenFeatures> feats;
  std::vector<double> actual;
  feats.reserve(samples.size());
  actual.reserve(samples.size());
  for (const auto& s : samples) {
    feats.push_back(s.features);
    actual.push_back(logLabel(s.run_ns));
  }
  std::vector<double> pred(samples.size());
  model.predict(feats, pred);
  for (double& p : pred) p = std::log(std::max(p, 1.0));
  ModelQuality q;
  q.r2 = rSquared(actual, pred);
  q.mae_log = meanAbsError(actual, pred);
  q.n_test = samples.size();
  return q;
}

}  // namespace tokengate::costmodel
