#include "coordinator/costmodel/synthetic.h"

#include <algorithm>
#include <cmath>

namespace tokengate::costmodel {

SyntheticWorkload::SyntheticWorkload(SyntheticOptions options)
    : options_(std::move(options)), rng_(options_.seed) {
  if (options_.node_speeds.empty()) options_.node_speeds = {1.0};
  std::uniform_real_distribution<double> log_base(std::log(20e3), std::log(20e6));
  for (uint32_t i = 0; i < std::max<uint32_t>(options_.num_ops, 1); ++i) {
    Op op;
    op.base_ns = std::exp(log_base(rng_));
    op.arg_kind = static_cast<int>(i % 3);
    op.arg_count = 1 + i % 4;
    // Honest label from the typical cost, except every fourth op claims to be light.
    const double typical = op.base_ns * (op.arg_kind == 1 ? 8 : op.arg_kind == 2 ? 4 : 1);
    op.declared = typical < 200e3 ? 0 : typical < 5e6 ? 1 : 2;
    if (i % 4 == 3) op.declared = 0;
    ops_.push_back(op);
  }
}

TokenFeatures SyntheticWorkload::nextFeatures() {
  std::uniform_int_distribution<uint32_t> op_dist(0, static_cast<uint32_t>(ops_.size() - 1));
  std::uniform_int_distribution<uint32_t> node_dist(
      0, static_cast<uint32_t>(options_.node_speeds.size() - 1));
  std::uniform_int_distribution<uint32_t> load_dist(0, 16);
  TokenFeatures f;
  f.op_id = op_dist(rng_);
  const Op& op = ops_[f.op_id];
  f.declared_weight = op.declared;
  f.lane = op.declared;
  f.arg_count = op.arg_count;
  if (op.arg_kind == 1) {
    f.first_numeric_arg = static_cast<double>(std::uniform_int_distribution<int>(1, 8)(rng_));
    f.arg_total_bytes = uint64_t{8} * f.arg_count;
  } else if (op.arg_kind == 2) {
    f.first_numeric_arg = std::numeric_limits<double>::quiet_NaN();
    f.arg_total_bytes = std::uniform_int_distribution<uint64_t>(64, uint64_t{64} * 1024)(rng_);
  } else {
    f.first_numeric_arg = std::uniform_real_distribution<double>(0, 100)(rng_);  // irrelevant
    f.arg_total_bytes = uint64_t{8} * f.arg_count;
  }
  f.node_index = node_dist(rng_);
  f.node_speed = options_.node_speeds[f.node_index];
  f.node_load = load_dist(rng_);
  return f;
}

double SyntheticWorkload::trueCostNs(const TokenFeatures& f) const {
  const Op& op = ops_[std::min<size_t>(f.op_id, ops_.size() - 1)];
  double c = op.base_ns;
  if (op.arg_kind == 1 && std::isfinite(f.first_numeric_arg)) {
    c *= std::pow(1.6, f.first_numeric_arg);  // fib-like growth in n
  } else if (op.arg_kind == 2) {
    c *= 1.0 + static_cast<double>(f.arg_total_bytes) / 8192.0;
  }
  c *= f.node_speed;
  // Mild contention on a busy node, saturating: queued tokens do not slow a running one.
  c *= 1.0 + 0.02 * std::min<uint32_t>(f.node_load, 4);
  return c;
}

TelemetrySample SyntheticWorkload::nextSample() {
  TelemetrySample s;
  s.features = nextFeatures();
  std::normal_distribution<double> noise(0, options_.noise_sigma);
  s.run_ns = static_cast<int64_t>(std::llround(trueCostNs(s.features) * std::exp(noise(rng_))));
  s.queue_wait_ns = static_cast<int64_t>(s.features.node_load) * 100'000;
  return s;
}

std::vector<TelemetrySample> SyntheticWorkload::samples(size_t n) {
  std::vector<TelemetrySample> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(nextSample());
  return out;
}

}  // namespace tokengate::costmodel
