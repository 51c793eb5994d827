#include "coordinator/core/op_table.h"

#include <algorithm>

namespace tokengate::coordinator {

namespace {

void addToBuckets(std::vector<double>& inc, double x) {
  const auto& b = Metrics::timeBuckets();
  auto it = std::lower_bound(b.begin(), b.end(), x);
  inc[static_cast<size_t>(it - b.begin())] += 1;
}

}  // namespace

control::OpStatus OpState::status() const {
  control::OpStatus s;
  s.name = name;
  s.weight = weight;
  s.effective = effective;
  s.paused = paused;
  s.deterministic = deterministic;
  s.limits = limits;
  s.queued = queued();
  s.running = running;
  s.completed = completed;
  s.failed = failed;
  s.retried = retried;
  s.cancelled = cancelled;
  s.rate_per_s = rate_per_s;
  s.mean_run_us = run_count ? run_ns_sum / static_cast<double>(run_count) / 1e3 : 0;
  return s;
}

uint32_t OpTable::intern(const std::string& name) {
  auto it = index_.find(name);
  if (it != index_.end()) return it->second;
  auto idx = static_cast<uint32_t>(ops_.size());
  index_.emplace(name, idx);
  OpState& op = ops_.emplace_back();
  op.name = name;
  for (int w = 0; w < kLaneCount; ++w) {
    prometheus::Labels labels{{"op", name}, {"weight", weightName(static_cast<Weight>(w))}};
    op.m_completed[w] = &metrics_.completed.Add(labels);
    op.m_admitted[w] = &metrics_.admitted.Add(labels);
    op.m_retried[w] = &metrics_.retried.Add(labels);
  }
  op.m_run = &metrics_.run_seconds.Add({{"op", name}}, Metrics::timeBuckets());
  op.m_wait = &metrics_.queue_wait_seconds.Add({{"op", name}}, Metrics::timeBuckets());
  op.m_depth = &metrics_.queue_depth.Add({{"op", name}});
  op.run_buckets.assign(Metrics::timeBuckets().size() + 1, 0.0);
  op.wait_buckets.assign(Metrics::timeBuckets().size() + 1, 0.0);
  return idx;
}

std::vector<control::OpStatus> OpTable::list() const {
  std::vector<control::OpStatus> out;
  out.reserve(ops_.size());
  for (const auto& op : ops_) out.push_back(op.status());
  return out;
}

std::vector<std::string> OpTable::offered() const {
  std::vector<std::string> out;
  for (const OpState& op : ops_)
    if (op.weight_known) out.push_back(op.name);
  std::sort(out.begin(), out.end());
  return out;
}

void OpTable::setLimits(OpState& op, control::OpLimits limits) {
  op.limits = limits;
  op.rate_tokens = std::max(1.0, limits.max_rate_per_s / 10);
}

void OpTable::refill(double dt_s) {
  for (auto& op : ops_) {
    if (op.limits.max_rate_per_s > 0)
      op.rate_tokens = std::min(op.rate_tokens + op.limits.max_rate_per_s * dt_s,
                                std::max(1.0, op.limits.max_rate_per_s / 10));
  }
}

void OpTable::updateGauges() {
  for (auto& op : ops_) op.m_depth->Set(static_cast<double>(op.queued()));
}

prometheus::Counter& OpTable::failedCounter(OpState& op, Weight weight, StatusCode code) {
  const uint32_t key = static_cast<uint32_t>(weight) * 64 + static_cast<uint32_t>(code);
  auto it = op.m_failed.find(key);
  if (it != op.m_failed.end()) return *it->second;
  auto& c = metrics_.failed.Add(
      {{"op", op.name}, {"weight", weightName(weight)}, {"code", absl::StatusCodeToString(code)}});
  op.m_failed.emplace(key, &c);
  return c;
}

void OpTable::observe(OpState& op, uint64_t run_ns, uint64_t queue_ns) {
  const double run_s = static_cast<double>(run_ns) / 1e9;
  const double wait_s = static_cast<double>(queue_ns) / 1e9;
  addToBuckets(op.run_buckets, run_s);
  addToBuckets(op.wait_buckets, wait_s);
  op.run_sum += run_s;
  op.wait_sum += wait_s;
  op.run_ns_sum += static_cast<double>(run_ns);
  ++op.run_count;
}

void OpTable::flushMetrics(OpState& op) {
  op.m_run->ObserveMultiple(op.run_buckets, op.run_sum);
  op.m_wait->ObserveMultiple(op.wait_buckets, op.wait_sum);
  std::fill(op.run_buckets.begin(), op.run_buckets.end(), 0.0);
  std::fill(op.wait_buckets.begin(), op.wait_buckets.end(), 0.0);
  op.run_sum = op.wait_sum = 0;
}

}  // namespace tokengate::coordinator
