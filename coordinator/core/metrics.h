// Prometheus families the coordinator exports (names are a public contract:
// grafana/ dashboards and docs/operations.md use them). Owned by the
// coordinator; all updates happen on the coordinator loop thread, scrapes
// read concurrently (prometheus-cpp metrics are internally synchronised).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

namespace tokengate::coordinator {

struct Metrics {
  explicit Metrics(std::shared_ptr<prometheus::Registry> registry);

  std::shared_ptr<prometheus::Registry> registry;
  prometheus::Family<prometheus::Counter>& admitted;
  prometheus::Family<prometheus::Counter>& completed;
  prometheus::Family<prometheus::Counter>& failed;
  prometheus::Family<prometheus::Counter>& retried;
  prometheus::Family<prometheus::Histogram>& run_seconds;
  prometheus::Family<prometheus::Histogram>& queue_wait_seconds;
  prometheus::Family<prometheus::Gauge>& queue_depth;
  prometheus::Family<prometheus::Gauge>& in_flight;
  prometheus::Family<prometheus::Gauge>& nodes;
  prometheus::Histogram& batch_size;
  prometheus::Counter& admission_rejects;
  prometheus::Family<prometheus::Counter>& jobs;
  prometheus::Family<prometheus::Gauge>& lane_utilization;
  prometheus::Family<prometheus::Gauge>& core_tokens;
  prometheus::Family<prometheus::Gauge>& node_rss;
  prometheus::Family<prometheus::Gauge>& node_cpu;
  prometheus::Counter& malformed_frames;
  prometheus::Counter& late_results;
  prometheus::Counter& run_timeouts;
  // Verified execution, by outcome: rerun (verification runs), matched, mismatched,
  // unverifiable, failed; and finished tokens run again because a lying node fed them.
  prometheus::Family<prometheus::Counter>& verifications;
  prometheus::Counter& tokens_reopened;
  prometheus::Gauge& live_tokens;
  // Admission to final state, by final state.
  prometheus::Family<prometheus::Histogram>& job_seconds;
  // This process: CPU (user + system) and resident memory, sampled by sampleProcess().
  prometheus::Counter& process_cpu_seconds;
  prometheus::Gauge& process_rss_bytes;

  // Refreshes the process_* metrics from getrusage() and /proc/self/statm; at most once per
  // `every_ns` of `now_ns` (the loop calls it every tick).
  void sampleProcess(int64_t now_ns, int64_t every_ns);
  static const prometheus::Histogram::BucketBoundaries& jobBuckets();

  static const prometheus::Histogram::BucketBoundaries& timeBuckets();

 private:
  int64_t last_process_sample_ns_ = -1;
  double last_cpu_seconds_ = 0;
};

}  // namespace tokengate::coordinator
