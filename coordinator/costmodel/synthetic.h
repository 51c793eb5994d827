// Deterministic synthetic workload with a hidden cost function, for tests and benchmarks:
// several operations with different base costs, some scaling with their first argument or with
// argument bytes, some declared with the wrong weight, and nodes of unequal speed.
//
// Not thread-safe; each user owns its generator.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "coordinator/costmodel/features.h"

namespace tokengate::costmodel {

struct SyntheticOptions {
  uint32_t num_ops = 12;
  std::vector<double> node_speeds = {1.0, 1.0, 2.5};
  double noise_sigma = 0.1;  // log-normal multiplicative noise on run time
  uint64_t seed = 7;
};

class SyntheticWorkload {
 public:
  explicit SyntheticWorkload(SyntheticOptions options = {});

  // A random token as the coordinator would see it before running (node chosen at random).
  TokenFeatures nextFeatures();
  // Noise-free run time of `f` in ns: the function the model must learn.
  double trueCostNs(const TokenFeatures& f) const;
  // A full sample: nextFeatures() plus a noisy run time.
  TelemetrySample nextSample();
  std::vector<TelemetrySample> samples(size_t n);

  // Declared weight of an op (some ops are deliberately mislabelled light).
  uint8_t declaredWeight(uint32_t op) const { return ops_[op].declared; }

 private:
  struct Op {
    double base_ns;      // at node speed 1.0, unit args
    int arg_kind;        // 0: none, 1: exponential in arg0 (fib-like), 2: linear in arg bytes
    uint8_t declared;    // declared weight
    uint32_t arg_count;  // typical arg count
  };
  SyntheticOptions options_;
  std::mt19937_64 rng_;
  std::vector<Op> ops_;
};

}  // namespace tokengate::costmodel
