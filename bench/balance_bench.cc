// tokengate-bench balance: a reproducible skewed workload run under each placement policy.
//
// Workload (seeded): hidden-cost classes expressed through the node's built-in test ops, all
// submitted at once as small jobs of `group` identical tokens in a shuffled order:
//   spin(50us) x1200, spin(400us) x600, spin(2ms) x300, spin(12ms) x150, spin(60ms) x40
//   -- `spin` is declared light by the node, so the heavy classes are mislabelled --
//   and sleep(0) x300 (declared medium, really ~free: mislabelled the other way).
// Nominal work ~5.1 s. Nodes: `nodes` (default 3); the last one runs with --speed-factor 2.5.
//
// Per policy: a fresh LocalCluster with `--scheduler P`; a warm-up pass of the same workload
// (different shuffle), `settle_ms` pause (the online trainer retrains in the background; every
// policy gets the same warm-up so the comparison stays fair), then the measured pass.
//   makespan_s: first submit -> last token finished (max over jobs of submit offset + the
//               coordinator's admitted->finished wall time of the job).
//   p99_latency_s: p99 over tokens of the latency of the token's job (admitted -> last token of
//               the job finished; jobs are `group` identical tokens, so this is the latency of
//               the token that finished last in its group, an upper bound per token).
#include "bench/balance_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <iostream>
#include <random>
#include <thread>

#include "client/client.h"
#include "client/local_cluster.h"

namespace tokengate::bench {

namespace {

struct Group {
  std::string op;
  int64_t arg = 0;
  uint32_t tokens = 0;
};

std::vector<Group> makeWorkload(const BalanceOptions& o, uint64_t seed) {
  struct Class {
    const char* op;
    int64_t arg;
    uint32_t count;
  };
  const Class classes[] = {{"spin", 50, 1200},   {"spin", 400, 600},  {"spin", 2000, 300},
                           {"spin", 12000, 150}, {"spin", 60000, 40}, {"sleep", 0, 300}};
  std::vector<Group> groups;
  for (const auto& c : classes) {
    uint32_t left = static_cast<uint32_t>(std::max(1.0, c.count * o.scale));
    while (left > 0) {
      const uint32_t n = std::min(left, o.group);
      groups.push_back({c.op, c.arg, n});
      left -= n;
    }
  }
  std::mt19937_64 rng(seed);
  std::shuffle(groups.begin(), groups.end(), rng);
  return groups;
}

double nominalSeconds(const std::vector<Group>& groups) {
  double us = 0;
  for (const auto& g : groups) us += (g.op == "spin" ? g.arg : g.arg * 1000.0) * g.tokens;
  return us / 1e6;
}

struct PassResult {
  double makespan_s = 0;
  double p50_s = 0, p99_s = 0;
  uint64_t tokens = 0;
  bool ok = true;
  std::string error;
};

PassResult failed(const Status& why) {
  PassResult r;
  r.ok = false;
  r.error = std::string(why.message());
  return r;
}

double percentile(std::vector<std::pair<double, uint32_t>> v, double q) {
  std::sort(v.begin(), v.end());
  uint64_t total = 0;
  for (const auto& [x, w] : v) total += w;
  const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  uint64_t seen = 0;
  for (const auto& [x, w] : v) {
    seen += w;
    if (seen >= rank) return x;
  }
  return v.empty() ? 0 : v.back().first;
}

PassResult runPass(client::Client& c, const std::vector<Group>& groups) {
  PassResult r;
  using clock = std::chrono::steady_clock;
  std::vector<uint64_t> ids;
  std::vector<double> offset_s;
  ids.reserve(groups.size());
  const auto t0 = clock::now();
  for (const auto& g : groups) {
    JobSpec job;
    job.name = fmt::format("{}-{}", g.op, g.arg);
    TokenSpec t;
    t.op = g.op;
    t.args.push_back(Arg::val(Value(g.arg)));
    t.repeat = g.tokens;
    t.output = false;
    job.add(std::move(t));
    auto id = c.submitWithBackpressure(job, 60 * kSeconds);
    if (!id.ok()) return failed(id.status());
    offset_s.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    ids.push_back(*id);
    r.tokens += g.tokens;
  }
  std::vector<std::pair<double, uint32_t>> lat;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto done = c.wait(ids[i], {}, 600 * kSeconds);
    if (!done.ok()) return failed(done.status());
    if (done->state != client::JobState::kSucceeded) {
      r.ok = false;
      r.error = fmt::format("job {} {}", ids[i], client::jobStateName(done->state));
    }
    const double wall = static_cast<double>(done->wall_ns) / 1e9;
    lat.emplace_back(wall, groups[i].tokens);
    r.makespan_s = std::max(r.makespan_s, offset_s[i] + wall);
  }
  r.p50_s = percentile(lat, 0.50);
  r.p99_s = percentile(lat, 0.99);
  return r;
}

}  // namespace

int runBalance(const BalanceOptions& o) {
  const auto warm = makeWorkload(o, o.seed + 1);
  const auto measured = makeWorkload(o, o.seed);
  fmt::print(stderr, "balance: {} jobs, nominal work {:.2f} s, {} nodes (last x{} slower)\n",
             measured.size(), nominalSeconds(measured), o.nodes, o.slow_factor);
  boost::json::object policies;
  int rc = 0;
  for (const auto& policy : o.policies) {
    client::LocalClusterOptions opts;
    opts.nodes = o.nodes;
    opts.pin = o.pin;
    opts.log_level = o.log_level;
    opts.coordinator_args = o.coordinator_args;
    opts.coordinator_args.push_back("--scheduler");
    opts.coordinator_args.push_back(policy);
    if (o.credit_per_worker) {
      opts.coordinator_args.push_back("--credit-per-worker");
      opts.coordinator_args.push_back(std::to_string(o.credit_per_worker));
    }
    opts.node_args = {"--enable-test-ops"};  // the workload is spin and sleep tokens
    opts.per_node_args.resize(o.nodes);
    opts.per_node_args.back() = {"--speed-factor", fmt::format("{}", o.slow_factor)};
    auto cluster = client::LocalCluster::start(opts);
    if (!cluster.ok()) return fmt::print(stderr, "error: {}\n", cluster.status().message()), 1;
    client::Client c((*cluster)->endpoint(), (*cluster)->clientCurve());
    if (auto st = c.waitForNodes(o.nodes, 30 * kSeconds); !st.ok())
      return fmt::print(stderr, "error: {}\n", st.message()), 1;
    const PassResult w = runPass(c, warm);
    std::this_thread::sleep_for(std::chrono::milliseconds(o.settle_ms));
    const PassResult m = runPass(c, measured);
    (*cluster)->stop();
    if (!w.ok || !m.ok) {
      fmt::print(stderr, "{}: failed: {}{}\n", policy, w.error, m.error);
      rc = 3;
    }
    fmt::print(stderr,
               "{:<18} warm-up {:.3f} s | measured: makespan {:.3f} s, p50 {:.3f} s, p99 {:.3f} s "
               "({} tokens)\n",
               policy, w.makespan_s, m.makespan_s, m.p50_s, m.p99_s, m.tokens);
    policies[policy] = boost::json::object{
        {"makespan_s", m.makespan_s},        {"p50_latency_s", m.p50_s}, {"p99_latency_s", m.p99_s},
        {"warmup_makespan_s", w.makespan_s}, {"tokens", m.tokens},       {"ok", m.ok && w.ok}};
  }
  boost::json::object out{
      {"bench", "balance"},
      {"nodes", o.nodes},
      {"slow_factor", o.slow_factor},
      {"nominal_work_s", nominalSeconds(measured)},
      {"credit_per_worker",
       o.credit_per_worker ? std::to_string(o.credit_per_worker) : std::string("default")},
      {"group", o.group},
      {"seed", o.seed},
      {"policies", policies}};
  std::cout << boost::json::serialize(out) << std::endl;
  return rc;
}

}  // namespace tokengate::bench
