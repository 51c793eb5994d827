// tokengate-bench balance: a workload suite run under each placement policy, several seeds.
//
// Every workload is a seeded list of small jobs submitted at once (tokens of one job are equal
// unless said otherwise), made of the node's built-in test ops. The cost ops are named `spin`
// and `spin2` below; with `--work sleep` (the default) they are run as `nap us` / `nap2 x us`,
// which sleep (wall-clock cost, no CPU), so 3-6 nodes on 2 shared cores measure placement and
// not the OS scheduler; `--work spin` runs the busy loops (CPU-bound). `spin us` costs its first
// argument, which the cost model sees; `spin2 x us` costs its second argument, which the model
// does not see. Node speed is simulated the way the node's --speed-factor does it: a token's run
// time is stretched by sleeping (F-1) x its run, so the slow nodes cost no extra CPU.
//   skewed    spin(50us) x1200, spin(400us) x600, spin(2ms) x300, spin(12ms) x150,
//             spin(60ms) x40 (declared light: mislabelled) and sleep(0) x300 (declared medium,
//             free); 3 nodes, the last --slow-factor (2.5) slower. Nominal work ~5.1 s.
//   equal     the skewed mix on equal-speed nodes.
//   uniform   spin(20us) x6000 in jobs of 20: nothing to learn, policies must tie.
//   bimodal   spin(100us) x1500 and spin(5ms) x150 of one op: the cost is in the argument.
//   heavytail spin(us) with us Pareto(alpha 1.3, min 50us, capped at 50ms), x3000.
//   drift     spin2(0, 300us) x1000 then spin2(0, 3ms) x300: the second half of the measured pass
//             costs 10x with the same features (the warm-up saw only the cheap half).
//   hetero    the skewed mix on nodes of speed 1x/2x/4x by slot (--nodes, 2-6).
//   dag       60 jobs: a chain of 4 spin2(prev, 3ms) tokens beside 16 spin(400us) leaves; job
//             latency is the chain's, a policy that queues chain tokens behind leaves loses.
//
// Per run: a fresh LocalCluster with `--scheduler P`; a warm-up pass (the same workload with
// another seed; drift: the cheap half only), `settle_ms` pause (the online trainer retrains in
// the background; every policy gets the same warm-up), then the measured pass.
//   makespan_s: first submit -> last token finished (max over jobs of submit offset + the
//               coordinator's admitted->finished wall time of the job).
//   p99_latency_s: p99 over tokens of the latency of the token's job (admitted -> last token of
//               the job finished), an upper bound per token.
// The summary gives, per workload and policy, the median over seeds and the [min, max] spread,
// and xgboost's worst ratio (over seeds) to the best heuristic of the same seed. For xgboost
// runs it also records which estimator placed: the coordinator's gateway /metrics
// (`tokengate_placement_model_active`, `tokengate_placement_mode_switches_total`) is scraped
// just before and ~0.6 s after the measured pass (the gauges are refreshed every 500 ms).
#include "bench/balance_bench.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <span>
#include <thread>

#include "client/client.h"
#include "client/local_cluster.h"

namespace tokengate::bench {

namespace {

struct Job {
  JobSpec spec;
  uint32_t tokens = 0;
};

struct Workload {
  std::vector<Job> warm, measured;
  std::vector<double> speeds;  // --speed-factor per node slot (1 = full speed)
  double nominal_s = 0;        // measured pass, at speed 1
};

Job spinJob(const std::string& op, int64_t us, uint32_t n) {
  Job j;
  j.spec.name = fmt::format("{}-{}", op, us);
  TokenSpec t;
  t.op = op;
  if (op == "spin2") t.args.push_back(Arg::val(Value(int64_t{0})));
  t.args.push_back(Arg::val(Value(us)));
  t.repeat = n;
  t.output = false;
  j.spec.add(std::move(t));
  j.tokens = n;
  return j;
}

struct Class {
  const char* op;
  int64_t arg;  // spin/spin2: us; sleep: ms
  uint32_t count;
};

double classUs(const Class& c) {
  return std::string_view(c.op) == "sleep" ? c.arg * 1000.0 : c.arg;
}

// Jobs of up to `group` equal tokens per class, shuffled.
std::vector<Job> groupsOf(std::span<const Class> classes, double scale, uint32_t group,
                          std::mt19937_64& rng, double* nominal_us) {
  std::vector<Job> jobs;
  for (const auto& c : classes) {
    uint32_t left = static_cast<uint32_t>(std::max(1.0, c.count * scale));
    if (nominal_us) *nominal_us += classUs(c) * left;
    while (left > 0) {
      const uint32_t n = std::min(left, group);
      jobs.push_back(spinJob(c.op, c.arg, n));
      left -= n;
    }
  }
  std::shuffle(jobs.begin(), jobs.end(), rng);
  return jobs;
}

constexpr Class kSkewed[] = {{"spin", 50, 1200},   {"spin", 400, 600},  {"spin", 2000, 300},
                             {"spin", 12000, 150}, {"spin", 60000, 40}, {"sleep", 0, 300}};

std::vector<Job> makeJobs(const std::string& name, const BalanceOptions& o, uint64_t seed,
                          bool warm, double* nominal_us) {
  std::mt19937_64 rng(seed);
  if (name == "skewed" || name == "equal" || name == "hetero")
    return groupsOf(kSkewed, o.scale, o.group, rng, nominal_us);
  if (name == "uniform") {
    const Class c[] = {{"spin", 20, 6000}};
    return groupsOf(c, o.scale, 20, rng, nominal_us);
  }
  if (name == "bimodal") {
    const Class c[] = {{"spin", 100, 1500}, {"spin", 5000, 150}};
    return groupsOf(c, o.scale, o.group, rng, nominal_us);
  }
  if (name == "heavytail") {
    std::vector<Class> c;
    std::uniform_real_distribution<double> u(1e-9, 1.0);
    const auto n = static_cast<uint32_t>(std::max(1.0, 3000 * o.scale / o.group));
    for (uint32_t i = 0; i < n; ++i) {
      const double us = std::min(50.0 / std::pow(u(rng), 1 / 1.3), 50'000.0);
      c.push_back({"spin", static_cast<int64_t>(us), o.group});
    }
    return groupsOf(c, 1.0, o.group, rng, nominal_us);
  }
  if (name == "drift") {
    const Class before[] = {{"spin2", 300, 1000}};
    const Class after[] = {{"spin2", 3000, 300}};
    auto jobs = groupsOf(before, o.scale, o.group, rng, nominal_us);
    if (warm) return jobs;
    auto late = groupsOf(after, o.scale, o.group, rng, nominal_us);
    jobs.insert(jobs.end(), std::make_move_iterator(late.begin()),
                std::make_move_iterator(late.end()));
    return jobs;
  }
  if (name == "dag") {
    std::vector<Job> jobs;
    const auto n = static_cast<uint32_t>(std::max(1.0, 60 * o.scale));
    for (uint32_t k = 0; k < n; ++k) {
      Job j;
      j.spec.name = "dag";
      TokenSpec leaves;
      leaves.op = "spin";
      leaves.args.push_back(Arg::val(Value(int64_t{400})));
      leaves.repeat = 16;
      j.spec.add(std::move(leaves));
      int64_t prev = -1;
      for (int c = 0; c < 4; ++c) {
        TokenSpec t;
        t.op = "spin2";
        t.args.push_back(prev < 0 ? Arg::val(Value(int64_t{0}))
                                  : Arg::ref(static_cast<uint32_t>(prev)));
        t.args.push_back(Arg::val(Value(int64_t{3000})));
        prev = j.spec.add(std::move(t));
      }
      j.tokens = 20;
      if (nominal_us) *nominal_us += 16 * 400 + 4 * 3000;
      jobs.push_back(std::move(j));
    }
    return jobs;
  }
  return {};
}

// --work sleep: the wall-clock twins of the busy loops (same arguments, same results).
void useNaps(std::vector<Job>& jobs) {
  for (auto& j : jobs)
    for (auto& t : j.spec.tokens) {
      if (t.op == "spin")
        t.op = "nap";
      else if (t.op == "spin2")
        t.op = "nap2";
    }
}

Workload makeWorkload(const std::string& name, const BalanceOptions& o, uint64_t seed) {
  Workload w;
  double nominal_us = 0;
  w.warm = makeJobs(name, o, seed + 1000, true, nullptr);
  w.measured = makeJobs(name, o, seed, false, &nominal_us);
  if (o.work == "sleep") {
    useNaps(w.warm);
    useNaps(w.measured);
  }
  w.nominal_s = nominal_us / 1e6;
  w.speeds.assign(o.nodes, 1.0);
  if (name == "hetero") {
    for (uint32_t i = 0; i < o.nodes; ++i) w.speeds[i] = double(1u << (i % 3));  // 1x 2x 4x
  } else if (name != "equal" && o.nodes > 0) {
    w.speeds.back() = o.slow_factor;
  }
  return w;
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

PassResult runPass(client::Client& c, const std::vector<Job>& jobs) {
  PassResult r;
  using clock = std::chrono::steady_clock;
  std::vector<uint64_t> ids;
  std::vector<double> offset_s;
  ids.reserve(jobs.size());
  const auto t0 = clock::now();
  for (const auto& j : jobs) {
    auto id = c.submitWithBackpressure(j.spec, 60 * kSeconds);
    if (!id.ok()) return failed(id.status());
    offset_s.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    ids.push_back(*id);
    r.tokens += j.tokens;
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
    lat.emplace_back(wall, jobs[i].tokens);
    r.makespan_s = std::max(r.makespan_s, offset_s[i] + wall);
  }
  r.p50_s = percentile(lat, 0.50);
  r.p99_s = percentile(lat, 0.99);
  return r;
}

// GET http://127.0.0.1:port/metrics (the gateway serves it without a token); empty on failure.
std::string scrapeMetrics(uint16_t port) {
  if (port == 0) return {};
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {};
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string body;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[16384];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) body.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  const auto at = body.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : body.substr(at + 4);
}

// The value of an unlabelled sample `name` in a Prometheus text page; -1 when absent.
double metricValue(const std::string& page, std::string_view name) {
  size_t at = 0;
  while ((at = page.find(name, at)) != std::string::npos) {
    const bool line_start = at == 0 || page[at - 1] == '\n';
    const size_t after = at + name.size();
    if (line_start && after < page.size() && page[after] == ' ')
      return std::strtod(page.c_str() + after + 1, nullptr);
    at = after;
  }
  return -1;
}

// Which estimator placed a measured pass (xgboost only; the heuristics are always themselves).
struct PlacementRecord {
  double active_before = -1, active_after = -1;  // tokengate_placement_model_active, -1 = unknown
  double switches = -1;                          // mode switches during the pass, -1 = unknown
  double regret = std::numeric_limits<double>::quiet_NaN();  // tokengate_placement_regret, end
  std::string summary() const {
    if (active_before < 0 || active_after < 0) return "unknown";
    const char* b = active_before > 0.5 ? "model" : "fallback";
    const char* e = active_after > 0.5 ? "model" : "fallback";
    const std::string r = std::isnan(regret) ? "" : fmt::format(", regret {:+.3f}", regret);
    if (switches <= 0) return b + r;
    return fmt::format("{}->{} ({} switch{}{})", b, e, switches, switches == 1 ? "" : "es", r);
  }
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

std::vector<std::string> balanceWorkloads() {
  return {"skewed", "equal", "uniform", "bimodal", "heavytail", "drift", "hetero", "dag"};
}

int runBalance(const BalanceOptions& o) {
  std::vector<std::string> workloads = o.workloads;
  if (std::find(workloads.begin(), workloads.end(), "all") != workloads.end())
    workloads = balanceWorkloads();
  const auto known = balanceWorkloads();
  for (const auto& w : workloads)
    if (std::find(known.begin(), known.end(), w) == known.end())
      return fmt::print(stderr, "error: unknown workload '{}'\n", w), 2;
  int rc = 0;
  boost::json::object out_workloads;
  struct Runs {
    std::vector<double> makespan, p99, warm;
    std::vector<std::string> placed;  // xgboost: which estimator placed the measured pass
    std::vector<double> model_active_end, switches;
  };
  // workload -> policy -> runs (seed order)
  std::map<std::string, std::map<std::string, Runs>> all;
  for (const auto& wname : workloads) {
    for (uint32_t s = 0; s < std::max<uint32_t>(o.seeds, 1); ++s) {
      const uint64_t seed = o.seed + s;
      const Workload wl = makeWorkload(wname, o, seed);
      fmt::print(stderr, "balance {} seed {}: {} jobs, nominal work {:.2f} s, node speeds [{}]\n",
                 wname, seed, wl.measured.size(), wl.nominal_s, fmt::join(wl.speeds, " "));
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
        const bool learned = policy == "xgboost";
        if (learned) opts.gateway = "127.0.0.1:0";  // /metrics: which estimator placed
        opts.node_args = {"--enable-test-ops"};     // the workloads are spin and sleep tokens
        opts.per_node_args.resize(o.nodes);
        for (uint32_t i = 0; i < o.nodes; ++i)
          if (wl.speeds[i] > 1.0)
            opts.per_node_args[i] = {"--speed-factor", fmt::format("{}", wl.speeds[i])};
        auto cluster = client::LocalCluster::start(opts);
        if (!cluster.ok()) return fmt::print(stderr, "error: {}\n", cluster.status().message()), 1;
        client::Client c((*cluster)->endpoint(), (*cluster)->clientCurve());
        if (auto st = c.waitForNodes(o.nodes, 30 * kSeconds); !st.ok())
          return fmt::print(stderr, "error: {}\n", st.message()), 1;
        const PassResult w = runPass(c, wl.warm);
        std::this_thread::sleep_for(std::chrono::milliseconds(o.settle_ms));
        PlacementRecord placed;
        const uint16_t gw = learned ? (*cluster)->gatewayPort() : 0;
        const std::string before = scrapeMetrics(gw);
        const PassResult m = runPass(c, wl.measured);
        if (learned) {
          std::this_thread::sleep_for(std::chrono::milliseconds(600));  // one metrics refresh
          const std::string after = scrapeMetrics(gw);
          placed.active_before = metricValue(before, "tokengate_placement_model_active");
          placed.active_after = metricValue(after, "tokengate_placement_model_active");
          const double s0 = metricValue(before, "tokengate_placement_mode_switches_total");
          const double s1 = metricValue(after, "tokengate_placement_mode_switches_total");
          if (s0 >= 0 && s1 >= 0) placed.switches = s1 - s0;
          if (after.find("\ntokengate_placement_regret ") != std::string::npos)
            placed.regret = metricValue(after, "tokengate_placement_regret");
        }
        (*cluster)->stop();
        if (!w.ok || !m.ok) {
          fmt::print(stderr, "{}: failed: {}{}\n", policy, w.error, m.error);
          rc = 3;
        }
        fmt::print(stderr,
                   "  {:<18} warm-up {:.3f} s | measured: makespan {:.3f} s, p50 {:.3f} s, p99 "
                   "{:.3f} s ({} tokens){}\n",
                   policy, w.makespan_s, m.makespan_s, m.p50_s, m.p99_s, m.tokens,
                   learned ? ", placed by " + placed.summary() : std::string());
        auto& r = all[wname][policy];
        r.makespan.push_back(m.makespan_s);
        r.p99.push_back(m.p99_s);
        r.warm.push_back(w.makespan_s);
        if (learned) {
          r.placed.push_back(placed.summary());
          r.model_active_end.push_back(placed.active_after);
          r.switches.push_back(placed.switches);
        }
      }
    }
  }
  // Summary: medians with [min, max]; xgboost's worst ratio to the best heuristic per seed.
  fmt::print(stderr, "\n{:<10} {:<18} {:>26} {:>26} {:>10}\n", "workload", "policy",
             "makespan s median [min,max]", "p99 s median [min,max]", "warm-up s");
  bool xgb_within_3pct = true, xgb_ran = false;
  for (const auto& [wname, by_policy] : all) {
    boost::json::object pol;
    for (const auto& [policy, r] : by_policy) {
      const auto [mlo, mhi] = std::minmax_element(r.makespan.begin(), r.makespan.end());
      const auto [plo, phi] = std::minmax_element(r.p99.begin(), r.p99.end());
      fmt::print(stderr,
                 "{:<10} {:<18} {:>8.3f} [{:.3f},{:.3f}]    {:>8.3f} [{:.3f},{:.3f}]    {:>8.3f}\n",
                 wname, policy, median(r.makespan), *mlo, *mhi, median(r.p99), *plo, *phi,
                 median(r.warm));
      boost::json::object po{{"makespan_s", boost::json::value_from(r.makespan)},
                             {"p99_latency_s", boost::json::value_from(r.p99)},
                             {"warmup_makespan_s", boost::json::value_from(r.warm)},
                             {"makespan_median_s", median(r.makespan)},
                             {"p99_median_s", median(r.p99)}};
      if (!r.placed.empty()) {
        fmt::print(stderr, "{:<10} {:<18} placed by (per seed): {}\n", wname, policy,
                   fmt::join(r.placed, "; "));
        po["placed_by"] = boost::json::value_from(r.placed);
        po["model_active_at_end"] = boost::json::value_from(r.model_active_end);
        po["mode_switches_in_pass"] = boost::json::value_from(r.switches);
      }
      pol[policy] = std::move(po);
    }
    const auto x = by_policy.find("xgboost");
    if (x != by_policy.end() && by_policy.size() > 1) {
      xgb_ran = true;
      double worst_m = 0, worst_p = 0;
      for (size_t s = 0; s < x->second.makespan.size(); ++s) {
        double best_m = 0, best_p = 0;
        for (const auto& [policy, r] : by_policy) {
          if (policy == "xgboost" || s >= r.makespan.size()) continue;
          best_m = best_m == 0 ? r.makespan[s] : std::min(best_m, r.makespan[s]);
          best_p = best_p == 0 ? r.p99[s] : std::min(best_p, r.p99[s]);
        }
        if (best_m > 0) worst_m = std::max(worst_m, x->second.makespan[s] / best_m);
        if (best_p > 0) worst_p = std::max(worst_p, x->second.p99[s] / best_p);
      }
      if (worst_m > 0) {
        fmt::print(stderr,
                   "{:<10} xgboost / best heuristic, worst seed: makespan {:+.1f}%, p99 {:+.1f}%\n",
                   wname, (worst_m - 1) * 100, (worst_p - 1) * 100);
        if (worst_m > 1.03 || worst_p > 1.03) xgb_within_3pct = false;
        pol["xgboost_vs_best_worst_makespan"] = worst_m;
        pol["xgboost_vs_best_worst_p99"] = worst_p;
      }
    }
    out_workloads[wname] = std::move(pol);
  }
  if (xgb_ran)
    fmt::print(stderr, "xgboost within 3% of the best heuristic on every workload and seed: {}\n",
               xgb_within_3pct ? "yes" : "no");
  boost::json::object out{
      {"bench", "balance"},
      {"nodes", o.nodes},
      {"slow_factor", o.slow_factor},
      {"scale", o.scale},
      {"seeds", o.seeds},
      {"first_seed", o.seed},
      {"credit_per_worker",
       o.credit_per_worker ? std::to_string(o.credit_per_worker) : std::string("default")},
      {"group", o.group},
      {"work", o.work},
      {"xgboost_within_3pct", xgb_ran && xgb_within_3pct},
      {"workloads", out_workloads}};
  std::cout << boost::json::serialize(out) << std::endl;
  return rc;
}

}  // namespace tokengate::bench
