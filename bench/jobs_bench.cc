// tokengate-bench jobs: one-token jobs/s from pipelined C++ clients (one by default,
// --clients C: C clients, each its own socket and thread, sending every C-th job). Starts a local
// cluster (CURVE unless --insecure; --journal adds a journal on a temporary file) and pushes --jobs
// one-token echo jobs through Client::submitAsync with a window of --window jobs in flight,
// taking results with waitAny as they come; a job counts when its result is back. Each run is
// done twice, without and with an idempotency key on each job's token (a fresh cluster each), and
// the keyed run also reports the rate of its first and last 5,000 results (admission cost vs keys
// seen). Prints medians of --runs; the last line is JSON.
#include "bench/jobs_bench.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include "client/client.h"
#include "client/local_cluster.h"

namespace tokengate::bench {
namespace {

using Clock = std::chrono::steady_clock;

double secondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct RunResult {
  double jobs_per_s = 0, first_per_s = 0, last_per_s = 0;
  // Coordinator CPU (user+sys, all threads) per job: over the run, its first and last segment.
  double coord_us = 0, coord_first_us = 0, coord_last_us = 0;
  uint64_t failed = 0;
  std::string first_error;
};

StatusOr<RunResult> runOnce(const JobsOptions& o, bool keyed, uint32_t run) {
  client::LocalClusterOptions co;
  co.bin_dir = o.bin_dir;
  co.nodes = o.nodes;
  co.log_level = o.log_level;
  co.insecure = o.insecure;
  co.coordinator_args = o.coordinator_args;
  const std::string journal = fmt::format(
      "{}/tg-jobs-bench-{}.journal", std::filesystem::temp_directory_path().string(), getpid());
  if (o.journal) {
    std::filesystem::remove(journal);
    co.coordinator_args.insert(co.coordinator_args.end(), {"--journal", journal});
  }
  auto cluster = client::LocalCluster::start(co);
  if (!cluster.ok()) return cluster.status();
  {
    client::Client probe((*cluster)->endpoint(), (*cluster)->clientCurve());
    if (auto st = probe.waitForNodes(o.nodes, 30 * kSeconds); !st.ok()) return st;
  }
  const uint32_t clients = std::max<uint32_t>(1, o.clients);
  RunResult out;
  std::mutex mu;  // guards out, done, first_end, last_start, error
  uint64_t done = 0;
  Status error;
  const uint64_t segment = std::min<uint64_t>(5'000, o.jobs / 2);
  Clock::time_point first_end, last_start;
  const pid_t coordinator = (*cluster)->coordinatorPid();
  double cpu0 = 0, cpu_first_end = 0, cpu_last_start = 0;
  auto take = [&](const client::AsyncResult& r) {
    std::lock_guard lock(mu);
    if (!r.result.ok() || r.result->state != client::JobState::kSucceeded) {
      if (out.first_error.empty())
        out.first_error = r.result.ok() ? client::jobStateName(r.result->state)
                                        : std::string(r.result.status().message());
      ++out.failed;
    }
    ++done;
    if (done == segment) {
      first_end = Clock::now();
      cpu_first_end = client::cpuSecondsOf(coordinator);
    }
    if (done == o.jobs - segment) {
      last_start = Clock::now();
      cpu_last_start = client::cpuSecondsOf(coordinator);
    }
  };
  // Client k sends jobs k, k + C, k + 2C, ... over its own socket.
  auto drive = [&](uint32_t k, client::Client& c) -> Status {
    c.setWindow(o.window);
    JobSpec job;
    TokenSpec t;
    t.op = "echo";
    t.args.push_back(Arg::val(int64_t{1}));
    job.add(t);
    for (uint32_t i = k; i < o.jobs; i += clients) {
      if (keyed) job.tokens[0].idempotency_key = fmt::format("jobs-bench-{}-{}", run, i);
      auto h = c.submitAsync(job, client::Backpressure::kRetry, 600 * kSeconds);
      if (!h.ok()) return h.status();
      while (c.outstanding() > c.inFlight()) {  // results already in: take them without waiting
        auto r = c.waitAny(0);
        if (!r.ok()) return r.status();
        take(*r);
      }
    }
    auto rest = c.waitAll(600 * kSeconds);
    if (!rest.ok()) return rest.status();
    for (const auto& r : *rest) take(r);
    return absl::OkStatus();
  };
  std::vector<std::unique_ptr<client::Client>> cs;
  for (uint32_t k = 0; k < clients; ++k) {
    cs.push_back(
        std::make_unique<client::Client>((*cluster)->endpoint(), (*cluster)->clientCurve()));
    if (auto st = cs.back()->ping(30 * kSeconds); !st.ok()) return st;  // connected before t0
  }
  cpu0 = client::cpuSecondsOf(coordinator);
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (uint32_t k = 0; k < clients; ++k)
    threads.emplace_back([&, k] {
      Status st = drive(k, *cs[k]);
      std::lock_guard lock(mu);
      if (!st.ok() && error.ok()) error = st;
    });
  for (auto& th : threads) th.join();
  if (!error.ok()) return error;
  const auto t1 = Clock::now();
  const double cpu1 = client::cpuSecondsOf(coordinator);
  (*cluster)->stop();
  out.coord_us = (cpu1 - cpu0) * 1e6 / static_cast<double>(o.jobs);
  if (o.journal) std::filesystem::remove(journal);
  out.jobs_per_s = static_cast<double>(o.jobs) / secondsBetween(t0, t1);
  if (segment > 0) {
    out.first_per_s = static_cast<double>(segment) / secondsBetween(t0, first_end);
    out.last_per_s = static_cast<double>(segment) / secondsBetween(last_start, t1);
    out.coord_first_us = (cpu_first_end - cpu0) * 1e6 / static_cast<double>(segment);
    out.coord_last_us = (cpu1 - cpu_last_start) * 1e6 / static_cast<double>(segment);
  }
  return out;
}

}  // namespace

int runJobs(const JobsOptions& o) {
  boost::json::object json{{"bench", "jobs"},    {"jobs", o.jobs},
                           {"window", o.window}, {"clients", std::max<uint32_t>(1, o.clients)},
                           {"nodes", o.nodes},   {"journal", o.journal},
                           {"runs", o.runs},     {"curve", !o.insecure}};
  uint64_t failed = 0;
  for (bool keyed : {false, true}) {
    std::vector<double> rate, first, last, cpu, cpu_first, cpu_last;
    for (uint32_t run = 0; run < o.runs; ++run) {
      auto r = runOnce(o, keyed, run);
      if (!r.ok()) {
        fmt::print(stderr, "error: {}\n", r.status().message());
        return 1;
      }
      fmt::print(
          "  run {} {}: {:.0f} jobs/s (first {} results {:.0f}/s, last {:.0f}/s); coordinator "
          "CPU {:.1f} us/job (first {:.1f}, last {:.1f}){}\n",
          run + 1, keyed ? "keyed" : "plain", r->jobs_per_s, std::min<uint32_t>(5'000, o.jobs / 2),
          r->first_per_s, r->last_per_s, r->coord_us, r->coord_first_us, r->coord_last_us,
          r->failed ? fmt::format(", {} failed ({})", r->failed, r->first_error) : "");
      failed += r->failed;
      rate.push_back(r->jobs_per_s);
      first.push_back(r->first_per_s);
      last.push_back(r->last_per_s);
      cpu.push_back(r->coord_us);
      cpu_first.push_back(r->coord_first_us);
      cpu_last.push_back(r->coord_last_us);
    }
    const char* name = keyed ? "keyed" : "plain";
    fmt::print(
        "jobs {} ({} one-token jobs, {} pipelined client(s), window {}, {} nodes{}{}): {:.0f} "
        "jobs/s, first 5k {:.0f}/s, last 5k {:.0f}/s; coordinator CPU {:.1f} us/job, first 5k "
        "{:.1f}, last 5k {:.1f} (medians of {})\n",
        name, o.jobs, std::max<uint32_t>(1, o.clients), o.window, o.nodes,
        o.journal ? ", --journal" : "", o.insecure ? ", insecure" : ", CURVE", median(rate),
        median(first), median(last), median(cpu), median(cpu_first), median(cpu_last), rate.size());
    json[fmt::format("{}_jobs_per_s", name)] = median(rate);
    json[fmt::format("{}_first_per_s", name)] = median(first);
    json[fmt::format("{}_last_per_s", name)] = median(last);
    json[fmt::format("{}_coordinator_us_per_job", name)] = median(cpu);
    json[fmt::format("{}_first_coordinator_us_per_job", name)] = median(cpu_first);
    json[fmt::format("{}_last_coordinator_us_per_job", name)] = median(cpu_last);
  }
  json["failed"] = failed;
  std::cout << boost::json::serialize(json) << std::endl;
  return failed ? 3 : 0;
}

}  // namespace tokengate::bench
