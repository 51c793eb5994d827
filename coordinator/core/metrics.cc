#include "coordinator/core/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace tokengate::coordinator {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

const prometheus::Histogram::BucketBoundaries& Metrics::timeBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.02, 0.1, 0.5, 2, 10, 60};
  return kBuckets;
}

Metrics::Metrics(std::shared_ptr<prometheus::Registry> reg)
    : registry(std::move(reg)),
      admitted(BuildCounter()
                   .Name("tokengate_tokens_admitted_total")
                   .Help("Tokens admitted, by operation and weight class")
                   .Register(*registry)),
      completed(BuildCounter()
                    .Name("tokengate_tokens_completed_total")
                    .Help("Tokens completed successfully")
                    .Register(*registry)),
      failed(BuildCounter()
                 .Name("tokengate_tokens_failed_total")
                 .Help("Tokens failed for good (after retries), by status code")
                 .Register(*registry)),
      retried(BuildCounter()
                  .Name("tokengate_tokens_retried_total")
                  .Help("Token attempts re-queued (errors, lost nodes, drains)")
                  .Register(*registry)),
      run_seconds(BuildHistogram()
                      .Name("tokengate_token_run_seconds")
                      .Help("Token run time on the node")
                      .Register(*registry)),
      queue_wait_seconds(BuildHistogram()
                             .Name("tokengate_token_queue_wait_seconds")
                             .Help("Time from ready to start of run")
                             .Register(*registry)),
      queue_depth(BuildGauge()
                      .Name("tokengate_queue_depth")
                      .Help("Ready tokens waiting for dispatch, by operation")
                      .Register(*registry)),
      in_flight(BuildGauge()
                    .Name("tokengate_in_flight")
                    .Help("Tokens dispatched without a result yet, by node and lane")
                    .Register(*registry)),
      nodes(BuildGauge().Name("tokengate_nodes").Help("Nodes by state").Register(*registry)),
      batch_size(
          BuildHistogram()
              .Name("tokengate_batch_size")
              .Help("Tokens per dispatched batch")
              .Register(*registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{1, 4, 16, 64, 256, 1024, 4096})),
      admission_rejects(BuildCounter()
                            .Name("tokengate_admission_rejects_total")
                            .Help("Jobs refused because the admission limit was reached")
                            .Register(*registry)
                            .Add({})),
      jobs(BuildCounter()
               .Name("tokengate_jobs_total")
               .Help("Jobs by final state")
               .Register(*registry)),
      lane_utilization(BuildGauge()
                           .Name("tokengate_node_lane_utilization")
                           .Help("Busy fraction of a node lane's workers (from heartbeats)")
                           .Register(*registry)),
      core_tokens(
          BuildGauge()
              .Name("tokengate_node_core_tokens")
              .Help("Tokens run per node core since the node started (re-exported from heartbeats)")
              .Register(*registry)),
      node_rss(BuildGauge()
                   .Name("tokengate_node_rss_bytes")
                   .Help("Resident memory of each node process")
                   .Register(*registry)),
      node_cpu(BuildGauge()
                   .Name("tokengate_node_cpu_seconds")
                   .Help("CPU time (user + system) each node process has used since it started "
                         "(re-exported from heartbeats; rate() gives cores in use)")
                   .Register(*registry)),
      malformed_frames(BuildCounter()
                           .Name("tokengate_malformed_frames_total")
                           .Help("Frames rejected at the decode boundary")
                           .Register(*registry)
                           .Add({})),
      late_results(BuildCounter()
                       .Name("tokengate_late_results_total")
                       .Help("Results discarded: stale attempt, dead node or finished token")
                       .Register(*registry)
                       .Add({})),
      run_timeouts(BuildCounter()
                       .Name("tokengate_run_timeouts_total")
                       .Help("Token attempts ended by their run timeout (start-to-close)")
                       .Register(*registry)
                       .Add({})),
      verifications(BuildCounter()
                        .Name("tokengate_verifications_total")
                        .Help("Verified execution of sampled tokens, by outcome: rerun "
                              "(verification runs sent), matched, mismatched, unverifiable "
                              "(no other node in time), failed (no majority)")
                        .Register(*registry)),
      tokens_reopened(BuildCounter()
                          .Name("tokengate_tokens_reopened_total")
                          .Help("Finished tokens run again: results of a node verify caught "
                                "lying, and everything they fed")
                          .Register(*registry)
                          .Add({})),
      live_tokens(BuildGauge()
                      .Name("tokengate_live_tokens")
                      .Help("Admitted tokens not yet finished (admission limit applies)")
                      .Register(*registry)
                      .Add({})),
      job_seconds(BuildHistogram()
                      .Name("tokengate_job_duration_seconds")
                      .Help("Job wall time from admission to its final state, by final state")
                      .Register(*registry)),
      process_cpu_seconds(BuildCounter()
                              .Name("tokengate_process_cpu_seconds_total")
                              .Help("CPU time (user + system) of the coordinator process")
                              .Register(*registry)
                              .Add({})),
      process_rss_bytes(BuildGauge()
                            .Name("tokengate_process_resident_memory_bytes")
                            .Help("Resident memory of the coordinator process")
                            .Register(*registry)
                            .Add({})) {}

const prometheus::Histogram::BucketBoundaries& Metrics::jobBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets{
      0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600};
  return kBuckets;
}

void Metrics::sampleProcess(int64_t now_ns, int64_t every_ns) {
  if (last_process_sample_ns_ >= 0 && now_ns - last_process_sample_ns_ < every_ns) return;
  last_process_sample_ns_ = now_ns;
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    if (cpu > last_cpu_seconds_) process_cpu_seconds.Increment(cpu - last_cpu_seconds_);
    last_cpu_seconds_ = std::max(last_cpu_seconds_, cpu);
  }
  // statm: size resident shared ... in pages.
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    unsigned long size = 0, resident = 0;
    if (std::fscanf(f, "%lu %lu", &size, &resident) == 2)
      process_rss_bytes.Set(static_cast<double>(resident) *
                            static_cast<double>(sysconf(_SC_PAGESIZE)));
    std::fclose(f);
  }
}

}  // namespace tokengate::coordinator
