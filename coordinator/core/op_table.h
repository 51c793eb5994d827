// OpTable: every operation the coordinator has heard of (from nodes or jobs), by index, with
// its ready queues, limits, pause flag, counters and metric series. Owned by CoordinatorCore;
// loop thread only.
//
// How a token moves through it: a ready token waits in its op's queue for its lane
// (ready[lane]); the dispatcher takes slices from ops that are dispatchable() (not paused,
// under max_in_flight, with rate-bucket tokens) and counts it running; completion, failure,
// retry and cancel land in the op's counters, which listOps()/events report.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/job.h"
#include "common/status.h"
#include "coordinator/control/control.h"
#include "coordinator/core/metrics.h"

namespace tokengate::coordinator {

struct OpState {
  std::string name;
  Weight weight = Weight::kLight;     // declared default (from nodes)
  Weight effective = Weight::kLight;  // lane it is routed to
  bool weight_known = false;          // some node has offered it
  bool paused = false;
  bool deterministic = false;  // some node declared it (verify may sample it)
  uint32_t verify_bp = 0;      // limits.verify_pct in basis points
  control::OpLimits limits;
  std::deque<uint64_t> ready[kLaneCount];  // token ids per lane (lazy removal: state re-checked)
  size_t queued() const { return ready[0].size() + ready[1].size() + ready[2].size(); }
  uint64_t running = 0, completed = 0, failed = 0, retried = 0, cancelled = 0;
  uint64_t completed_at_last_event = 0;
  double rate_per_s = 0;
  double rate_tokens = 0;  // token bucket for max_rate_per_s
  double run_ns_sum = 0;
  uint64_t run_count = 0;
  prometheus::Counter* m_completed[kLaneCount] = {};
  prometheus::Counter* m_admitted[kLaneCount] = {};
  prometheus::Counter* m_retried[kLaneCount] = {};
  std::unordered_map<uint32_t, prometheus::Counter*> m_failed;  // (weight, code) -> counter
  prometheus::Histogram* m_run = nullptr;
  prometheus::Histogram* m_wait = nullptr;
  prometheus::Gauge* m_depth = nullptr;
  std::vector<double> run_buckets, wait_buckets;  // per-batch aggregation
  double run_sum = 0, wait_sum = 0;
  uint64_t failed_since_event = 0;
  std::string last_error;

  // May the dispatcher take tokens of this op from `lane` now?
  bool dispatchable(int lane) const {
    if (paused || ready[lane].empty()) return false;
    if (limits.max_in_flight && running >= limits.max_in_flight) return false;
    if (limits.max_rate_per_s > 0 && rate_tokens < 1) return false;
    return true;
  }
  control::OpStatus status() const;
};

class OpTable {
 public:
  explicit OpTable(Metrics& metrics) : metrics_(metrics) {}

  // The op's index, creating it (and its metric series) on first sight.
  uint32_t intern(const std::string& name);
  // The op's index, or null when no node or job ever named it.
  const uint32_t* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &it->second;
  }
  size_t size() const { return ops_.size(); }
  OpState& operator[](uint32_t i) { return ops_[i]; }
  const OpState& operator[](uint32_t i) const { return ops_[i]; }
  auto begin() { return ops_.begin(); }
  auto end() { return ops_.end(); }
  auto begin() const { return ops_.begin(); }
  auto end() const { return ops_.end(); }

  std::vector<control::OpStatus> list() const;
  // Names of the ops some node has offered, sorted.
  std::vector<std::string> offered() const;
  // Sets limits and refills the rate bucket to its burst.
  void setLimits(OpState& op, control::OpLimits limits);
  // Token-bucket refill for rate limits, `dt_s` seconds after the last one.
  void refill(double dt_s);
  // Queue-depth gauges.
  void updateGauges();
  // The failure counter of (op, weight, code), created on first use.
  prometheus::Counter& failedCounter(OpState& op, Weight weight, StatusCode code);
  // Observes the run/wait times aggregated since the last flush.
  static void flushMetrics(OpState& op);
  // Adds one run/wait observation to the op's per-batch aggregation.
  static void observe(OpState& op, uint64_t run_ns, uint64_t queue_ns);

 private:
  Metrics& metrics_;
  std::vector<OpState> ops_;
  std::unordered_map<std::string, uint32_t> index_;
};

}  // namespace tokengate::coordinator
