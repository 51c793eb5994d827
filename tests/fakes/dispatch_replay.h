// DispatchReplay: a deterministic replay of credit-limited dispatch (coordinator/core/
// dispatcher.cc runSlice / release) on simulated nodes, to compare placement policies, and see
// what each placed, without a cluster or a clock. Jobs arrive every `submit_gap_ns` (0 = all at
// t=0); each arrival and each completion runs one dispatch round (slices of up to 512 ready
// tokens, costs() then place() on the nodes with free credit, until a slice places nothing; a held
// token, Placement -1, goes back to the front of the ready queue); a node runs its tokens one at a
// time in arrival order at its true speed; every completion is observe()d with the dispatch-time
// cost and releases that cost from the node's outstanding work, as the core does (so a policy that
// changes its cost units while tokens are in flight sees the same mixed sums the core would give
// it).
//
// Tokens are op 0, declared light, one numeric argument = the true cost in us (what a
// testing::ScriptedCostModel set per argument predicts exactly), ids job << 32 | token.
// Per token the replay records who placed it (Scheduler::placementMode() at placement), the
// cost it was placed with, its node and its start / finish, so a test can say *why* a policy
// lost (e.g. the order the big tokens ran in) and not only that it did.
//
// ReplayNet adds what the cluster has and the replay otherwise leaves out: a one-way delay from
// coordinator to node and back (a placed token reaches its node, and a result the coordinator,
// half a round trip later; the coordinator's in-flight and outstanding work drop only when the
// result arrives) and a fixed per-token overhead on the node (timer slack, the worker's
// dispatch), added to every token's run time. Zero (the default) is the overhead-free replay.
//
// Owned by the test; single-threaded.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <queue>
#include <random>
#include <tuple>
#include <vector>

#include "coordinator/core/scheduler.h"

namespace tokengate::testing {

struct ReplayJob {
  std::vector<double> cost_ns;  // true run time of each token at speed 1
};

struct ReplayToken {
  uint32_t job = 0, local = 0;
  double cost_ns = 0;      // true cost at speed 1
  double placed_cost = 0;  // the cost the scheduler placed it with (TokenRec::cost)
  bool by_model = false;   // placementMode() was "model" when it was placed
  uint32_t node = 0;
  double placed_at = 0, start = 0, finish = 0;  // ns
};

// Makespan and the token-weighted p50/p99 of job latency (s), from each job's submit and
// completion times (ns) and token count.
struct JobFigures {
  double makespan_s = 0, p50_s = 0, p99_s = 0;
};
inline JobFigures jobFigures(const std::vector<double>& submit_at,
                             const std::vector<double>& done_at,
                             const std::vector<size_t>& tokens_of) {
  JobFigures r;
  std::vector<std::pair<double, size_t>> lat;
  for (size_t j = 0; j < done_at.size(); ++j) {
    r.makespan_s = std::max(r.makespan_s, done_at[j] / 1e9);
    lat.emplace_back((done_at[j] - submit_at[j]) / 1e9, tokens_of[j]);
  }
  std::sort(lat.begin(), lat.end());
  size_t total = 0;
  for (auto& [x, w] : lat) total += w;
  size_t seen = 0;
  for (auto& [x, w] : lat) {
    if (r.p50_s == 0 && seen + w >= (total + 1) / 2) r.p50_s = x;
    seen += w;
    if (seen >= static_cast<size_t>(0.99 * double(total) + 0.999999)) {
      r.p99_s = x;
      break;
    }
  }
  return r;
}

// The same, each job's token count taken from the jobs themselves.
template <typename JobT>
JobFigures jobFigures(const std::vector<double>& submit_at, const std::vector<double>& done_at,
                      const std::vector<JobT>& jobs) {
  std::vector<size_t> tokens_of(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) tokens_of[j] = jobs[j].cost_ns.size();
  return jobFigures(submit_at, done_at, tokens_of);
}

struct ReplayNet {
  double round_trip_ns = 0;      // coordinator -> node -> coordinator
  double token_overhead_ns = 0;  // added to every token's run time on the node
};

// makespan_s, p50_s, p99_s (over tokens, of their job's latency) come from JobFigures.
struct ReplayResult : JobFigures {
  std::vector<uint32_t> tokens_per_node;
  std::vector<ReplayToken> tokens;
  uint64_t placed_by_model = 0;
};

inline ReplayResult replayDispatch(coordinator::Scheduler& s, const std::vector<ReplayJob>& jobs,
                                   const std::vector<double>& slow, double submit_gap_ns,
                                   uint32_t credit = 2048, ReplayNet net = {}) {
  using coordinator::Candidate;
  using coordinator::Placement;
  using coordinator::TokenInfo;
  struct Node {
    std::deque<size_t> queue;  // placed, not finished; front is running (once it arrived)
    double busy_until = 0;
    uint64_t in_flight = 0;  // the coordinator's view: until the result arrives
    double outstanding = 0;
  };
  const double half_trip = net.round_trip_ns / 2;
  // Results on their way to the coordinator: (arrival, token, node), earliest first.
  using Delivery = std::tuple<double, size_t, uint32_t>;
  std::priority_queue<Delivery, std::vector<Delivery>, std::greater<>> deliveries;
  ReplayResult r;
  auto& toks = r.tokens;
  auto info = [&](size_t i) {
    TokenInfo t;
    t.id = uint64_t{toks[i].job} << 32 | toks[i].local;
    t.op = 0;
    t.declared = Weight::kLight;
    t.lane = Weight::kLight;
    t.arg_count = 1;
    t.arg_bytes = 8;
    t.first_arg = toks[i].cost_ns / 1000;
    return t;
  };
  std::vector<double> submit_at(jobs.size()), done_at(jobs.size());
  std::vector<uint32_t> left(jobs.size());
  std::vector<Node> nodes(slow.size());
  r.tokens_per_node.assign(slow.size(), 0);
  std::deque<size_t> ready;
  double now = 0;
  auto runTime = [&](size_t i, uint32_t n) {
    return toks[i].cost_ns * slow[n] + net.token_overhead_ns;
  };
  auto start = [&](uint32_t n) {
    Node& node = nodes[n];
    ReplayToken& t = toks[node.queue.front()];
    t.start = std::max(now, t.placed_at + half_trip);  // it may still be on its way
    node.busy_until = t.start + runTime(node.queue.front(), n);
  };
  // One dispatch round as Dispatcher::runLane runs it: slices of at most kSlice ready tokens
  // from the front of the queue, candidates rebuilt per slice, held tokens back at the front,
  // until a slice places nothing.
  constexpr size_t kSlice = 512;
  auto slice = [&]() -> size_t {
    if (ready.empty()) return 0;
    std::vector<Candidate> cands;
    for (uint32_t n = 0; n < nodes.size(); ++n) {
      if (nodes[n].in_flight >= credit) continue;
      Candidate c;
      c.node = n;
      c.free_credit = static_cast<uint32_t>(credit - nodes[n].in_flight);
      c.outstanding = nodes[n].outstanding;
      c.in_flight = nodes[n].in_flight;
      c.speed = s.nodeSpeed(n);
      cands.push_back(c);
    }
    if (cands.empty()) return 0;
    const size_t take = std::min(kSlice, ready.size());
    std::vector<size_t> idx(ready.begin(), ready.begin() + static_cast<ptrdiff_t>(take));
    ready.erase(ready.begin(), ready.begin() + static_cast<ptrdiff_t>(take));
    std::vector<TokenInfo> infos;
    for (size_t i : idx) infos.push_back(info(i));
    std::vector<double> costs(infos.size());
    s.costs(infos, costs);
    for (size_t i = 0; i < infos.size(); ++i) infos[i].cost = costs[i];
    std::vector<Placement> out(infos.size());
    s.place(Weight::kLight, infos, cands, out);
    const bool by_model = std::strcmp(s.placementMode(), "model") == 0;
    std::vector<size_t> held;
    size_t placed = 0;
    for (size_t i = 0; i < infos.size(); ++i) {
      if (out[i].candidate < 0) {
        held.push_back(idx[i]);
        continue;
      }
      ++placed;
      const uint32_t n = cands[static_cast<size_t>(out[i].candidate)].node;
      Node& node = nodes[n];
      ReplayToken& tok = toks[idx[i]];
      tok.placed_cost = infos[i].cost;
      tok.by_model = by_model;
      tok.node = n;
      tok.placed_at = now;
      r.placed_by_model += by_model ? 1 : 0;
      ++node.in_flight;
      node.outstanding += infos[i].cost;
      node.queue.push_back(idx[i]);
      if (node.queue.size() == 1) start(n);
      ++r.tokens_per_node[n];
    }
    ready.insert(ready.begin(), held.begin(), held.end());
    return placed;
  };
  auto dispatch = [&] {
    while (slice() > 0) {
    }
  };
  size_t next_job = 0;
  const double inf = std::numeric_limits<double>::infinity();
  while (true) {
    const double t_submit = next_job < jobs.size() ? submit_gap_ns * double(next_job) : inf;
    double t_finish = inf;
    uint32_t fn = 0;
    for (uint32_t n = 0; n < nodes.size(); ++n)
      if (!nodes[n].queue.empty() && nodes[n].busy_until < t_finish) {
        t_finish = nodes[n].busy_until;
        fn = n;
      }
    const double t_deliver = deliveries.empty() ? inf : std::get<0>(deliveries.top());
    if (t_submit == inf && t_finish == inf && t_deliver == inf) break;
    if (t_deliver < t_submit && t_deliver <= t_finish) {
      // A result reaches the coordinator: observe, release its credit and work.
      const auto [at, ti, n] = deliveries.top();
      deliveries.pop();
      now = at;
      Node& node = nodes[n];
      TokenInfo t = info(ti);
      t.cost = toks[ti].placed_cost;
      s.observe(t, n, runTime(ti, n));
      --node.in_flight;
      node.outstanding = node.in_flight ? std::max(0.0, node.outstanding - t.cost) : 0.0;
      if (--left[toks[ti].job] == 0) done_at[toks[ti].job] = now;
    } else if (t_submit <= t_finish) {
      now = t_submit;
      const uint32_t j = static_cast<uint32_t>(next_job++);
      submit_at[j] = now;
      left[j] = static_cast<uint32_t>(jobs[j].cost_ns.size());
      for (size_t k = 0; k < jobs[j].cost_ns.size(); ++k) {
        ready.push_back(toks.size());
        ReplayToken t;
        t.job = j;
        t.local = static_cast<uint32_t>(k);
        t.cost_ns = jobs[j].cost_ns[k];
        toks.push_back(t);
      }
    } else {
      now = t_finish;
      Node& node = nodes[fn];
      const size_t ti = node.queue.front();
      node.queue.pop_front();
      toks[ti].finish = now;
      if (!node.queue.empty()) start(fn);
      deliveries.emplace(now + half_trip, ti, fn);
      continue;  // nothing for the coordinator until the result arrives
    }
    dispatch();
  }
  static_cast<JobFigures&>(r) = jobFigures(submit_at, done_at, jobs);
  return r;
}

// A lower bound on any placement's makespan (s) of `jobs` submitted every `submit_gap_ns` on
// nodes of slowness `slow` running `slots` tokens at a time each: the larger of total work /
// total capacity (sum of slots / slowness), the longest token on the fastest node, and, per
// job k, its submit time + the work of jobs k.. / capacity (bench/balance_bench.cc lowerBound
// computes the same for the cluster).
inline double replayLowerBound(const std::vector<ReplayJob>& jobs, const std::vector<double>& slow,
                               double submit_gap_ns = 0, uint32_t slots = 1) {
  double capacity = 0, fastest = std::numeric_limits<double>::infinity();
  for (double f : slow) {
    capacity += slots / f;
    fastest = std::min(fastest, f);
  }
  double bound = 0, rest = 0;
  for (size_t k = jobs.size(); k-- > 0;) {
    double longest = 0;
    for (double c : jobs[k].cost_ns) {
      rest += c;
      longest = std::max(longest, c);
    }
    const double at = submit_gap_ns * static_cast<double>(k);
    bound = std::max({bound, at + rest / capacity, at + longest * fastest});
  }
  return bound / 1e9;
}

// Jobs of `group` equal tokens per (cost us, count) class, shuffled (bench/balance_bench.cc's
// groupsOf).
inline std::vector<ReplayJob> groupedJobs(const std::vector<std::pair<double, uint32_t>>& classes,
                                          uint32_t group, uint64_t seed) {
  std::vector<ReplayJob> jobs;
  for (const auto& [us, count] : classes)
    for (uint32_t left = count; left > 0;) {
      const uint32_t n = std::min(left, group);
      jobs.push_back({std::vector<double>(n, us * 1000)});
      left -= n;
    }
  std::mt19937_64 rng(seed);
  std::shuffle(jobs.begin(), jobs.end(), rng);
  return jobs;
}

}  // namespace tokengate::testing
