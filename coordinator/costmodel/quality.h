// Small pure statistics helpers used for training and validation.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tokengate::costmodel {

// 1 - SS_res / SS_tot. Returns 0 for fewer than 2 points; if the actual values are constant,
// returns 1 when predictions match exactly and 0 otherwise.
double rSquared(std::span<const double> actual, std::span<const double> predicted);
double meanAbsError(std::span<const double> actual, std::span<const double> predicted);

// q in [0,1]; linear interpolation. Copies and partially sorts. Empty input -> 0.
double quantile(std::span<const double> values, double q);

// Deterministic train/test split of [0, n): a seeded shuffle, test gets round(n * test_fraction)
// indices (at least 1 when n >= 2).
struct Split {
  std::vector<size_t> train;
  std::vector<size_t> test;
};
Split trainTestSplit(size_t n, double test_fraction, uint64_t seed);

}  // namespace tokengate::costmodel
