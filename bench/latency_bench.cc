// tokengate-bench latency: one-token job round trips. Starts a local cluster and, from one raw
// DEALER socket, submits a one-token echo job with watch=true and waits for its JobDone before
// the next: the time from sending SubmitJob to reading JobDone is one round trip (admission,
// dispatch, the node's run, the result, JobDone). Prints p50/p90/p99/p99.9 over --jobs round
// trips after a warm-up; the last line is JSON.
//
// --with-floor interleaves zmq-floor's two-hop runs (the same four messages with no TokenGate
// code, same transport and security; --floor-shape two-hop-ack adds the fifth, the SubmitReply)
// so every figure has its floor from the same minutes;
// --bin-dir (repeatable) alternates builds. Each run goes through the configurations in a
// rotated order, and "above floor" is the median over runs of (build p50 - floor p50) of the
// same run.
#include "bench/latency_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <zmq.hpp>

#include "bench/zmq_floor_bench.h"
#include "client/client.h"
#include "client/local_cluster.h"
#include "common/security/curve.h"
#include "common/wire.h"

namespace tokengate::bench {
namespace {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

std::string loadAverage() {
  double l[3] = {0, 0, 0};
  if (getloadavg(l, 3) != 3) return "?";
  return fmt::format("{:.2f} {:.2f} {:.2f}", l[0], l[1], l[2]);
}

struct Figures {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0;
  uint64_t failed = 0;
  // CPU (user + sys, all threads) per measured round trip: the coordinator's, and that of the
  // coordinator and the nodes together. Cluster runs only (the floor's servers are not read).
  double coordinator_cpu_us = 0, cluster_cpu_us = 0;
  // Median time from reading the SubmitReply to reading the JobDone (cluster runs): the node's
  // work when the ack comes at once, ~0 when it is sent with the result (the delayed-ack
  // experiment, docs/benchmarks.md).
  double ack_gap_us = 0;
  // Share of the measured round trips that got a separate SubmitReply (1 without
  // ackWithResult; ~0 with it while jobs finish within the coordinator's ack hold).
  double acked = 0;
};

Figures figuresOf(const std::vector<double>& us, uint64_t failed) {
  return Figures{percentile(us, 0.50), percentile(us, 0.90), percentile(us, 0.99),
                 percentile(us, 0.999), failed};
}

// One run against a fresh cluster of the build in `bin_dir`.
StatusOr<Figures> clusterRun(const LatencyOptions& o, const std::string& bin_dir,
                             bool ack_with_result) {
  client::LocalClusterOptions co;
  co.bin_dir = bin_dir;
  co.nodes = o.nodes;
  co.log_level = o.log_level;
  co.insecure = o.security == "insecure";
  co.transport = o.transport;
  co.pin = o.pin;
  co.coordinator_args = o.coordinator_args;
  co.node_args = o.node_args;
  auto cluster = client::LocalCluster::start(co);
  if (!cluster.ok()) return cluster.status();
  const security::ClientCurve curve = (*cluster)->clientCurve();
  {
    client::Client c((*cluster)->endpoint(), curve);
    if (auto st = c.waitForNodes(o.nodes, 30 * kSeconds); !st.ok()) return st;
  }
  std::vector<double> us;
  uint64_t failed = 0;
  {
    zmq::context_t ctx(1);
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    if (auto st = security::applyClientKeys(sock, curve); !st.ok()) return st;
    sock.connect((*cluster)->endpoint());
    JobSpec job;
    TokenSpec t;
    t.op = "echo";
    t.args.push_back(Arg::val(int64_t{1}));
    job.add(t);
    us.reserve(o.jobs);
    const uint32_t total = o.warmup + o.jobs;
    auto cpu = [&] {
      double coordinator = client::cpuSecondsOf((*cluster)->coordinatorPid()), all = coordinator;
      for (size_t n = 0; n < (*cluster)->nodeCount(); ++n)
        all += client::cpuSecondsOf((*cluster)->nodePid(n));
      return std::pair{coordinator, all};
    };
    std::pair<double, double> cpu0;
    std::vector<double> gaps;
    gaps.reserve(o.jobs);
    uint64_t acked = 0;
    for (uint32_t i = 0; i < total; ++i) {
      if (i == o.warmup) cpu0 = cpu();
      const std::string f = submitJobFrame(job, i + 1, /*watch=*/true, ack_with_result);
      const auto t0 = std::chrono::steady_clock::now();
      sock.send(zmq::buffer(f), zmq::send_flags::none);
      auto t_ack = t0;
      for (;;) {
        zmq::message_t m;
        if (!sock.recv(m, zmq::recv_flags::none)) continue;
        auto frame = decodeFrame(m.data(), m.size());
        if (!frame.ok()) continue;
        auto root = (*frame)->root();
        if (root.isSubmitReply() && root.getSubmitReply().isError()) {
          ++failed;
          break;
        }
        if (root.isSubmitReply()) {
          t_ack = std::chrono::steady_clock::now();
          if (i >= o.warmup) ++acked;
        }
        if (root.isReject()) {
          ++failed;
          break;
        }
        if (root.isJobDone()) {
          // With ackWithResult and no SubmitReply, the JobDone must carry our request id.
          if (ack_with_result && t_ack == t0 && root.getJobDone().getRequestId() != i + 1) ++failed;
          break;
        }
      }
      const double dt =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      if (i >= o.warmup) {
        us.push_back(dt);
        gaps.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t_ack)
                .count());
      }
    }
    const auto cpu1 = cpu();
    Figures f = figuresOf(us, failed);
    f.coordinator_cpu_us = (cpu1.first - cpu0.first) * 1e6 / o.jobs;
    f.cluster_cpu_us = (cpu1.second - cpu0.second) * 1e6 / o.jobs;
    f.ack_gap_us = percentile(gaps, 0.5);
    f.acked = static_cast<double>(acked) / o.jobs;
    (*cluster)->stop();
    return f;
  }
}

Figures floorRun(const LatencyOptions& o, const std::string& shape) {
  ZmqFloorOptions fo;
  fo.round_trips = o.jobs;
  fo.warmup = o.warmup;
  fo.transport = o.transport;
  return figuresOf(zmqFloorRoundTrips(fo, shape, o.security == "curve"), 0);
}

}  // namespace

int runLatency(const LatencyOptions& o) {
  if (o.runs == 0 || o.jobs == 0) {
    fmt::print(stderr, "error: --runs and --jobs must be > 0\n");
    return 2;
  }
  // Configurations: the floor (if asked) and each build. "" = the binaries next to this one.
  struct Config {
    std::string name;
    std::string bin_dir;
    bool floor = false;
    std::string shape;  // floors: the zmq-floor shape
    bool ack_with_result = false;
    std::vector<Figures> runs;
  };
  std::vector<Config> configs;
  if (o.with_floor) {
    for (const auto& shape : o.floor_shapes) {
      if (shape != "two-hop" && shape != "two-hop-ack") {
        fmt::print(stderr, "error: --floor-shape two-hop|two-hop-ack\n");
        return 2;
      }
      configs.push_back(Config{fmt::format("zmq floor ({})", shape), "", true, shape, false, {}});
    }
  }
  const size_t floors = configs.size();
  std::vector<std::string> dirs = o.bin_dirs;
  if (dirs.empty()) dirs.emplace_back();
  for (const auto& d : dirs) {
    configs.push_back(Config{d.empty() ? "this build" : d, d, false, "", false, {}});
    if (o.ack_with_result)
      configs.push_back(
          Config{(d.empty() ? "this build" : d) + " +ackWithResult", d, false, "", true, {}});
  }
  const std::string load_before = loadAverage();
  uint64_t failed = 0;
  for (uint32_t r = 0; r < o.runs; ++r) {
    for (size_t k = 0; k < configs.size(); ++k) {
      auto& c = configs[(k + r) % configs.size()];  // rotated: no build always goes first
      Figures f;
      if (c.floor) {
        f = floorRun(o, c.shape);
      } else {
        auto run = clusterRun(o, c.bin_dir, c.ack_with_result);
        if (!run.ok()) {
          fmt::print(stderr, "error: {}\n", run.status().message());
          return 1;
        }
        f = *run;
      }
      failed += f.failed;
      c.runs.push_back(f);
      fmt::print("run {} {}: p50 {:.0f} us, p90 {:.0f} us, p99 {:.0f} us, p99.9 {:.0f} us{}{}\n",
                 r + 1, c.name, f.p50, f.p90, f.p99, f.p999,
                 c.floor ? std::string()
                         : fmt::format(", CPU per round trip: coordinator {:.1f} us, cluster "
                                       "{:.1f} us, ack->result gap p50 {:.1f} us, acked {:.0f}%",
                                       f.coordinator_cpu_us, f.cluster_cpu_us, f.ack_gap_us,
                                       f.acked * 100),
                 f.failed ? fmt::format(", {} failed", f.failed) : std::string());
    }
  }
  const std::string load_after = loadAverage();
  fmt::print(
      "{} one-token round trips per run, {} nodes, {} {}, medians of {} run(s) (load average {} "
      "-> {}):\n",
      o.jobs, o.nodes, o.transport, o.security, o.runs, load_before, load_after);
  auto pick = [](const Config& c, double Figures::*field) {
    std::vector<double> v;
    for (const auto& f : c.runs) v.push_back(f.*field);
    return v;
  };
  boost::json::array results;
  const Config* floor = o.with_floor ? &configs.front() : nullptr;  // distances: to the first
  for (const auto& c : configs) {
    const auto p50s = pick(c, &Figures::p50);
    const auto [lo, hi] = std::minmax_element(p50s.begin(), p50s.end());
    std::string above;
    boost::json::object row{
        {"build", c.floor ? "floor " + c.shape : (c.bin_dir.empty() ? "." : c.bin_dir)},
        {"p50_us", median(p50s)},
        {"p50_min_us", *lo},
        {"p50_max_us", *hi},
        {"p90_us", median(pick(c, &Figures::p90))},
        {"p99_us", median(pick(c, &Figures::p99))},
        {"p999_us", median(pick(c, &Figures::p999))}};
    if (!c.floor) {
      const double coordinator = median(pick(c, &Figures::coordinator_cpu_us));
      const double cluster = median(pick(c, &Figures::cluster_cpu_us));
      const double gap = median(pick(c, &Figures::ack_gap_us));
      const double acked = median(pick(c, &Figures::acked));
      above = fmt::format(
          ", CPU coordinator {:.1f} us cluster {:.1f} us, ack gap {:.1f} us, acked {:.0f}%",
          coordinator, cluster, gap, acked * 100);
      row["ack_gap_us"] = gap;
      row["acked"] = acked;
      row["ack_with_result"] = c.ack_with_result;
      row["coordinator_cpu_us"] = coordinator;
      row["cluster_cpu_us"] = cluster;
    }
    const Config& base = configs[floors];
    if (!c.floor && &c != &base) {  // paired with the first build's run of the same round
      std::vector<double> d50, dcpu;
      for (size_t r = 0; r < c.runs.size(); ++r) {
        d50.push_back(c.runs[r].p50 - base.runs[r].p50);
        dcpu.push_back(c.runs[r].coordinator_cpu_us - base.runs[r].coordinator_cpu_us);
      }
      above += fmt::format(", vs first build p50 {:+.0f} us coordinator CPU {:+.1f} us",
                           median(d50), median(dcpu));
      row["p50_vs_first_us"] = median(d50);
      row["coordinator_cpu_vs_first_us"] = median(dcpu);
    }
    if (floor != nullptr && !c.floor) {
      std::vector<double> d50, d99;
      for (size_t r = 0; r < c.runs.size(); ++r) {
        d50.push_back(c.runs[r].p50 - floor->runs[r].p50);
        d99.push_back(c.runs[r].p99 - floor->runs[r].p99);
      }
      above += fmt::format(", above floor p50 {:+.0f} us p99 {:+.0f} us", median(d50), median(d99));
      row["p50_above_floor_us"] = median(d50);
      row["p99_above_floor_us"] = median(d99);
    }
    fmt::print(
        "  {:<24} p50 {:>4.0f} us ({:.0f}-{:.0f}), p90 {:>4.0f} us, p99 {:>4.0f} us, "
        "p99.9 {:>5.0f} us{}\n",
        c.name, median(p50s), *lo, *hi, median(pick(c, &Figures::p90)),
        median(pick(c, &Figures::p99)), median(pick(c, &Figures::p999)), above);
    results.push_back(std::move(row));
  }
  // Top-level figures: the first build's (what a plain `latency` run always printed).
  const Config& first = configs[floors];
  boost::json::object out{{"bench", "latency"},
                          {"jobs", o.jobs},
                          {"nodes", o.nodes},
                          {"runs", o.runs},
                          {"transport", o.transport},
                          {"security", o.security},
                          {"p50_us", median(pick(first, &Figures::p50))},
                          {"p90_us", median(pick(first, &Figures::p90))},
                          {"p99_us", median(pick(first, &Figures::p99))},
                          {"p999_us", median(pick(first, &Figures::p999))},
                          {"failed", failed},
                          {"load_before", load_before},
                          {"load_after", load_after},
                          {"results", results}};
  std::cout << boost::json::serialize(out) << std::endl;
  return failed ? 3 : 0;
}

}  // namespace tokengate::bench
