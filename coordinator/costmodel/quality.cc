#include "coordinator/costmodel/quality.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace tokengate::costmodel {

double rSquared(std::span<const double> actual, std::span<const double> predicted) {
  const size_t n = std::min(actual.size(), predicted.size());
  if (n < 2) return 0;
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += actual[i];
  mean /= static_cast<double>(n);
  double ss_tot = 0, ss_res = 0;
  for (size_t i = 0; i < n; ++i) {
    ss_tot += (actual[i] - mean) * (actual[i] - mean);
    ss_res += (actual[i] - predicted[i]) * (actual[i] - predicted[i]);
  }
  if (ss_tot <= 0) return ss_res <= 0 ? 1.0 : 0.0;
  return 1.0 - ss_res / ss_tot;
}

double meanAbsError(std::span<const double> actual, std::span<const double> predicted) {
  const size_t n = std::min(actual.size(), predicted.size());
  if (n == 0) return 0;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::abs(actual[i] - predicted[i]);
  return sum / static_cast<double>(n);
}

double quantile(std::span<const double> values, double q) {
  if (values.empty()) return 0;
  std::vector<double> v(values.begin(), values.end());
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return v[lo] + (v[hi] - v[lo]) * frac;
}

Split trainTestSplit(size_t n, double test_fraction, uint64_t seed) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  auto n_test = static_cast<size_t>(std::llround(static_cast<double>(n) * test_fraction));
  if (n >= 2)
    n_test = std::clamp<size_t>(n_test, 1, n - 1);
  else
    n_test = 0;
  Split s;
  s.test.assign(idx.begin(), idx.begin() + static_cast<ptrdiff_t>(n_test));
  s.train.assign(idx.begin() + static_cast<ptrdiff_t>(n_test), idx.end());
  std::sort(s.test.begin(), s.test.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

}  // namespace tokengate::costmodel
