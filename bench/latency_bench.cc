// tokengate-bench latency: one-token job round trips. Starts a local cluster (plain TCP) and,
// from one raw DEALER socket, submits a one-token echo job with watch=true and waits for its
// JobDone before the next: the time from sending SubmitJob to reading JobDone is one round
// trip (admission, dispatch, the node's run, the result, JobDone). Prints p50/p90/p99/p99.9
// over --jobs round trips after a warm-up; the last line is JSON.
#include "bench/latency_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <iostream>
#include <zmq.hpp>

#include "client/client.h"
#include "client/local_cluster.h"
#include "common/wire.h"

namespace tokengate::bench {
namespace {

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

int runLatency(const LatencyOptions& o) {
  client::LocalClusterOptions co;
  co.bin_dir = o.bin_dir;
  co.nodes = o.nodes;
  co.log_level = o.log_level;
  co.insecure = true;
  co.coordinator_args = o.coordinator_args;
  co.node_args = o.node_args;
  auto cluster = client::LocalCluster::start(co);
  if (!cluster.ok()) {
    fmt::print(stderr, "error: {}\n", cluster.status().message());
    return 1;
  }
  client::Client c((*cluster)->endpoint());
  if (auto st = c.waitForNodes(o.nodes, 30 * kSeconds); !st.ok()) {
    fmt::print(stderr, "error: {}\n", st.message());
    return 1;
  }
  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.connect((*cluster)->endpoint());
  JobSpec job;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::val(int64_t{1}));
  job.add(t);
  std::vector<double> us;
  us.reserve(o.jobs);
  uint64_t failed = 0;
  const uint32_t total = o.warmup + o.jobs;
  for (uint32_t i = 0; i < total; ++i) {
    const std::string f = submitJobFrame(job, i + 1, /*watch=*/true);
    const auto t0 = std::chrono::steady_clock::now();
    sock.send(zmq::buffer(f), zmq::send_flags::none);
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
      if (root.isReject()) {
        ++failed;
        break;
      }
      if (root.isJobDone()) break;
    }
    const double dt =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    if (i >= o.warmup) us.push_back(dt);
  }
  (*cluster)->stop();
  const double p50 = percentile(us, 0.50), p90 = percentile(us, 0.90), p99 = percentile(us, 0.99),
               p999 = percentile(us, 0.999);
  fmt::print(
      "{} one-token round trips, {} nodes: p50 {:.0f} us, p90 {:.0f} us, p99 {:.0f} us, "
      "p99.9 {:.0f} us{}\n",
      us.size(), o.nodes, p50, p90, p99, p999,
      failed ? fmt::format(", {} failed", failed) : std::string());
  boost::json::object out{{"bench", "latency"}, {"jobs", us.size()}, {"nodes", o.nodes},
                          {"p50_us", p50},      {"p90_us", p90},     {"p99_us", p99},
                          {"p999_us", p999},    {"failed", failed}};
  std::cout << boost::json::serialize(out) << std::endl;
  return failed ? 3 : 0;
}

}  // namespace tokengate::bench
