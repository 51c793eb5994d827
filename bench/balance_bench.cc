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
//   drift-long (not in "all") open-loop arrivals, a job of 5 x spin2(label, us) every 2.5 ms:
//             7 of 8 jobs 300 us, 1 of 8 3 ms, the label telling which; after 6 s the labels swap
//             costs for 8 s. Reports xgboost's advantage over least-outstanding per 0.5 s window
//             of submission time and the time until it is back within 10% of its advantage
//             before the change; each pass's wall-clock start and change time are printed so
//             the coordinator's timeline (`--log-level info`: drift, trainings, gate) lines up.
// Every workload also gets a lower bound on any placement's makespan (lowerBound below).
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
#include <ctime>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>

#include "client/client.h"
#include "client/local_cluster.h"

namespace tokengate::bench {

namespace {

struct Job {
  JobSpec spec;
  uint32_t tokens = 0;
  double work_us = 0;   // sum of its tokens' nominal costs (speed 1)
  double chain_us = 0;  // its longest chain of dependent tokens (one token unless a DAG)
};

struct Workload {
  std::vector<Job> warm, measured;
  std::vector<double> speeds;  // --speed-factor per node slot (1 = full speed)
  double nominal_s = 0;        // measured pass, at speed 1
  // Open-loop arrivals: job i of a pass is submitted at i x gap_s (0: all at once, with
  // backpressure). change_s: when the measured pass's costs change (drift-long), -1 = never.
  double gap_s = 0, warm_gap_s = 0;
  double change_s = -1;
};

// A lower bound on any placement's makespan for a list of jobs on nodes of the given
// slowness (--speed-factor), each running `slots` tokens at a time:
//   work_s     total nominal work / total capacity (sum over nodes of slots / slowness);
//   longest_s  the longest job chain (a single token, or a DAG job's chain) on the fastest node;
//   cpu_s      with --work spin only: the busy loops' CPU time over the machine's cores (all
//              nodes share them; the slow nodes' extra time is a sleep and costs no CPU).
// bound_s is their maximum. Overheads (submission, round trips, timer slack) come on top, so a
// policy's makespan / bound_s says how much any placement could still gain, at most.
struct Bound {
  double work_s = 0, longest_s = 0, cpu_s = 0, bound_s = 0;
};
Bound lowerBound(const std::vector<Job>& jobs, const std::vector<double>& speeds, uint32_t slots,
                 bool spin, uint32_t cores) {
  Bound b;
  double capacity = 0;
  double fastest = std::numeric_limits<double>::infinity();
  for (double f : speeds) {
    capacity += slots / std::max(f, 1.0);
    fastest = std::min(fastest, std::max(f, 1.0));
  }
  double work_us = 0, longest_us = 0;
  for (const auto& j : jobs) {
    work_us += j.work_us;
    longest_us = std::max(longest_us, j.chain_us);
  }
  b.work_s = capacity > 0 ? work_us / 1e6 / capacity : 0;
  b.longest_s = longest_us / 1e6 * (std::isfinite(fastest) ? fastest : 1.0);
  if (spin) b.cpu_s = work_us / 1e6 / std::max<uint32_t>(cores, 1);
  b.bound_s = std::max({b.work_s, b.longest_s, b.cpu_s});
  return b;
}

// The same bound once the submission times of a pass are known: no token runs before its job
// is submitted, so for every job k, offset_k + (the work of jobs k.. n) / capacity (and its
// chain, and with spin its CPU share) is also a lower bound on the makespan.
double lowerBoundWithSubmits(const std::vector<Job>& jobs, const std::vector<double>& offset_s,
                             const std::vector<double>& speeds, uint32_t slots, bool spin,
                             uint32_t cores) {
  if (offset_s.size() != jobs.size() || jobs.empty()) return 0;
  double capacity = 0;
  for (double f : speeds) capacity += slots / std::max(f, 1.0);
  double best = 0, rest_us = 0;
  for (size_t k = jobs.size(); k-- > 0;) {
    rest_us += jobs[k].work_us;
    double t = offset_s[k] + jobs[k].chain_us / 1e6;
    if (capacity > 0) t = std::max(t, offset_s[k] + rest_us / 1e6 / capacity);
    if (spin) t = std::max(t, offset_s[k] + rest_us / 1e6 / std::max<uint32_t>(cores, 1));
    best = std::max(best, t);
  }
  return best;
}

// A job of n x op(args..., us): a spin2 job's first argument is a label the model sees (0 unless
// given); its cost is the last argument.
Job costJob(const std::string& op, int64_t us, uint32_t n, std::optional<int64_t> label,
            std::string name) {
  Job j;
  j.spec.name = std::move(name);
  TokenSpec t;
  t.op = op;
  if (op == "spin2") t.args.push_back(Arg::val(Value(label.value_or(0))));
  t.args.push_back(Arg::val(Value(us)));
  t.repeat = n;
  t.output = false;
  j.spec.add(std::move(t));
  j.tokens = n;
  j.work_us = static_cast<double>(us) * n;
  j.chain_us = static_cast<double>(us);
  return j;
}

Job spinJob(const std::string& op, int64_t us, uint32_t n) {
  return costJob(op, us, n, std::nullopt, fmt::format("{}-{}", op, us));
}

// drift-long: a job of n x spin2(label, us) (the model sees the label, not us).
Job labelledJob(int64_t label, int64_t us, uint32_t n) {
  return costJob("spin2", us, n, label, fmt::format("spin2-{}-{}", label, us));
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
      jobs.back().work_us = classUs(c) * n;
      jobs.back().chain_us = classUs(c);
      left -= n;
    }
  }
  std::shuffle(jobs.begin(), jobs.end(), rng);
  return jobs;
}

// drift-long: one job every 2.5 ms (about 53% of the 1x/1x/2.5x nodes' capacity), 6 s before
// the change and 8 s after it; the warm-up pass is 3 s of the first phase.
constexpr double kDriftLongGapS = 0.0025;
constexpr double kDriftLongBeforeS = 6, kDriftLongAfterS = 8, kDriftLongWarmS = 3;
// drift-long's windows for the advantage over least-outstanding (by submission time).
constexpr double kDriftWindowS = 0.5;

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
  if (name == "drift-long") {
    // Open-loop arrivals (Workload::gap_s): 7 of 8 jobs cheap, 1 of 8 ten times dearer, the
    // label (first argument, which the model sees) telling which. At the change the labels swap
    // costs: label 1 goes 300 us -> 3 ms and label 2 3 ms -> 300 us, and the cheap jobs now carry
    // label 2. The mix of costs, hence the load and least-outstanding's per-op mean, stays the
    // same; a model trained before the change is 10x off on every token.
    std::vector<Job> jobs;
    std::bernoulli_distribution dear(1.0 / 8);
    auto phase = [&](uint32_t n, bool swapped) {
      for (uint32_t i = 0; i < n; ++i) {
        const bool big = dear(rng);
        const int64_t label = (big != swapped) ? 2 : 1;
        const int64_t us = big ? 3000 : 300;
        jobs.push_back(labelledJob(label, us, o.group));
        if (nominal_us) *nominal_us += jobs.back().work_us;
      }
    };
    const auto n = [&](double s) {
      return static_cast<uint32_t>(std::max(1.0, s / kDriftLongGapS * o.scale));
    };
    phase(n(warm ? kDriftLongWarmS : kDriftLongBeforeS), false);
    if (!warm) phase(n(kDriftLongAfterS), true);
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
      j.work_us = 16 * 400 + 4 * 3000;
      j.chain_us = 4 * 3000;
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
  if (name == "drift-long") {
    w.gap_s = w.warm_gap_s = kDriftLongGapS;
    w.change_s = static_cast<double>(static_cast<uint32_t>(
                     std::max(1.0, kDriftLongBeforeS / kDriftLongGapS * o.scale))) *
                 kDriftLongGapS;
  }
  w.speeds.assign(o.nodes, 1.0);
  if (name == "hetero") {
    for (uint32_t i = 0; i < o.nodes; ++i) w.speeds[i] = double(1u << (i % 3));  // 1x 2x 4x
  } else if (name != "equal" && o.nodes > 0) {
    w.speeds.back() = o.slow_factor;
  }
  return w;
}

struct PassResult {
  std::vector<double> offset_s, latency_s;        // per job: submitted at (from the first), latency
  std::chrono::system_clock::time_point started;  // wall clock of the first submit
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

// gap_s > 0: job i is submitted at i x gap_s (open-loop arrivals); 0: all at once.
PassResult runPass(client::Client& c, const std::vector<Job>& jobs, double gap_s = 0) {
  PassResult r;
  using clock = std::chrono::steady_clock;
  std::vector<uint64_t> ids;
  std::vector<double>& offset_s = r.offset_s;
  ids.reserve(jobs.size());
  const auto t0 = clock::now();
  r.started = std::chrono::system_clock::now();
  for (size_t i = 0; i < jobs.size(); ++i) {
    const auto& j = jobs[i];
    if (gap_s > 0)
      std::this_thread::sleep_until(
          t0 + std::chrono::duration_cast<clock::duration>(
                   std::chrono::duration<double>(gap_s * static_cast<double>(i))));
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
    r.latency_s.push_back(wall);
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
  double drifts = -1;  // tokengate_model_drifts_total during the pass, -1 = unknown
  double models = -1;  // tokengate_model_version steps in the pass (trained or heuristic)
  std::string summary() const {
    if (active_before < 0 || active_after < 0) return "unknown";
    const char* b = active_before > 0.5 ? "model" : "fallback";
    const char* e = active_after > 0.5 ? "model" : "fallback";
    std::string r = std::isnan(regret) ? "" : fmt::format(", regret {:+.3f}", regret);
    if (drifts > 0) r += fmt::format(", {} drift{}", drifts, drifts == 1 ? "" : "s");
    if (models > 0) r += fmt::format(", {} model version{}", models, models == 1 ? "" : "s");
    if (switches <= 0) return b + r;
    return fmt::format("{}->{} ({} switch{}{})", b, e, switches, switches == 1 ? "" : "es", r);
  }
};

// What the coordinator spent on one measured pass, from /metrics before and after it (every
// policy; the scheduler's own counters exist under xgboost only, -1 otherwise).
struct PassCounters {
  double cpu_s = -1;       // tokengate_process_cpu_seconds_total: the coordinator process
  double loop_s = -1;      // tokengate_placement_loop_seconds_total: costs() + place()
  double predict_s = -1;   // tokengate_model_predict_seconds_total
  double offered = -1;     // tokengate_placement_tokens_offered_total
  double rounds = -1;      // tokengate_placement_rounds_total
  double held_model = -1;  // tokengate_placement_held_back_total{by="model"}
  double held_guard = -1;  // ... {by="guard"}
  static PassCounters between(const std::string& before, const std::string& after) {
    const auto delta = [&](std::string_view name) {
      const double a = metricValue(before, name), b = metricValue(after, name);
      return a >= 0 && b >= 0 ? b - a : -1;
    };
    PassCounters p;
    p.cpu_s = delta("tokengate_process_cpu_seconds_total");
    p.loop_s = delta("tokengate_placement_loop_seconds_total");
    p.predict_s = delta("tokengate_model_predict_seconds_total");
    p.offered = delta("tokengate_placement_tokens_offered_total");
    p.rounds = delta("tokengate_placement_rounds_total");
    p.held_model = delta("tokengate_placement_held_back_total{by=\"model\"}");
    p.held_guard = delta("tokengate_placement_held_back_total{by=\"guard\"}");
    return p;
  }
  std::string summary() const {
    std::string r =
        cpu_s < 0 ? "coordinator CPU unknown" : fmt::format("coordinator CPU {:.3f} s", cpu_s);
    if (loop_s >= 0)
      r += fmt::format(
          ", scheduler {:.1f} ms (predict {:.1f} ms), {:.0f} offered in {:.0f} rounds, "
          "held {:.0f} by model / {:.0f} by guard",
          loop_s * 1e3, predict_s * 1e3, offered, rounds, held_model, held_guard);
    return r;
  }
  boost::json::object json() const {
    return {{"coordinator_cpu_s", cpu_s}, {"scheduler_loop_s", loop_s},
            {"predict_s", predict_s},     {"tokens_offered", offered},
            {"rounds", rounds},           {"held_by_model", held_model},
            {"held_by_guard", held_guard}};
  }
};

std::vector<std::string> splitWords(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  if (out.empty()) out.push_back(s);
  return out;
}

// --aa: the second least-outstanding run of each seed is recorded under this key.
constexpr std::string_view kAaKey = "least-outstanding#2";

// Local wall-clock time of day with ms, as the processes' log lines print it (common/log.cc).
std::string timeOfDay(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch());
  const std::time_t secs = static_cast<std::time_t>(ms.count() / 1000);
  std::tm tm{};
  localtime_r(&secs, &tm);
  return fmt::format("{:02}:{:02}:{:02}.{:03}", tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ms.count() % 1000);
}

double median(std::vector<double> v) {
  std::erase_if(v, [](double x) { return std::isnan(x); });
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

std::vector<std::string> balanceWorkloads() {
  return {"skewed", "equal", "uniform", "bimodal", "heavytail", "drift", "hetero", "dag"};
}

std::vector<std::string> balanceExtraWorkloads() { return {"drift-long"}; }

namespace {

// drift-long: xgboost's advantage over least-outstanding per window of submission time,
// 1 - mean job latency (xgboost) / mean job latency (least-outstanding) of the jobs submitted
// in the window (both passes submit the same jobs on the same schedule).
struct DriftReport {
  std::vector<double> window_start_s, advantage;
  double before = 0;       // over every job submitted before the change
  double after = 0;        // over every job submitted after it
  double recovery_s = -1;  // see recoveryTime(); -1 = not within the pass
};

double meanLatency(const PassResult& r, double from_s, double to_s, size_t* n) {
  double sum = 0;
  *n = 0;
  for (size_t i = 0; i < r.offset_s.size() && i < r.latency_s.size(); ++i)
    if (r.offset_s[i] >= from_s && r.offset_s[i] < to_s) {
      sum += r.latency_s[i];
      ++*n;
    }
  return *n ? sum / static_cast<double>(*n) : 0;
}

double advantage(const PassResult& x, const PassResult& lo, double from_s, double to_s) {
  size_t nx = 0, nl = 0;
  const double lx = meanLatency(x, from_s, to_s, &nx), ll = meanLatency(lo, from_s, to_s, &nl);
  return nx && nl && ll > 0 ? 1 - lx / ll : std::numeric_limits<double>::quiet_NaN();
}

// Time from the change until xgboost is back within 10% of its pre-change advantage: the end of
// the first window after the change from which that window and the next both reach
// before - 0.1 x |before|. -1 if the pass ends first (or there was no advantage before).
double recoveryTime(const DriftReport& d, double change_s, double window_s) {
  const double need = d.before - 0.1 * std::abs(d.before);
  for (size_t w = 0; w + 1 < d.advantage.size(); ++w) {
    if (d.window_start_s[w] < change_s) continue;
    if (d.advantage[w] >= need && d.advantage[w + 1] >= need)
      return d.window_start_s[w] + window_s - change_s;
  }
  return -1;
}

DriftReport driftReport(const PassResult& x, const PassResult& lo, double change_s) {
  DriftReport d;
  const double end = lo.offset_s.empty() ? 0 : lo.offset_s.back();
  d.before = advantage(x, lo, 0, change_s);
  d.after = advantage(x, lo, change_s, end + 1);
  for (double t = 0; t <= end; t += kDriftWindowS) {
    d.window_start_s.push_back(t);
    d.advantage.push_back(advantage(x, lo, t, t + kDriftWindowS));
  }
  if (d.before > 0) d.recovery_s = recoveryTime(d, change_s, kDriftWindowS);
  return d;
}

// Per seed ratio - 1 of `num` to `den` (NaN where either is missing or 0).
std::vector<double> ratios(const std::vector<double>& num, const std::vector<double>& den) {
  std::vector<double> r;
  for (size_t s = 0; s < num.size() && s < den.size(); ++s)
    r.push_back(den[s] > 0 && num[s] > 0 ? num[s] / den[s] - 1
                                         : std::numeric_limits<double>::quiet_NaN());
  return r;
}

std::string pctList(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += fmt::format("{}{:+.1f}%", s.empty() ? "" : " ", x * 100);
  return s;
}

// --aa summary of one workload: least-outstanding's second run against its first (A/A) and
// xgboost against the first, per seed, with medians and the largest |A/A| ratio.
boost::json::object aaReport(const std::string& wname, const std::vector<double>& lo_m,
                             const std::vector<double>& lo_p, const std::vector<double>& aa_m,
                             const std::vector<double>& aa_p, const std::vector<double>* x_m,
                             const std::vector<double>* x_p) {
  boost::json::object out;
  const auto one = [&](const char* what, const std::vector<double>& lo,
                       const std::vector<double>& aa, const std::vector<double>* x) {
    const std::vector<double> a = ratios(aa, lo);
    double worst = 0;
    for (double r : a) worst = std::max(worst, std::abs(r));
    std::string line = fmt::format(
        "{:<10} A/A {:<8} least-outstanding#2 / #1 per seed {} (median {:+.1f}%, max |A/A| "
        "{:.1f}%)",
        wname, what, pctList(a), median(a) * 100, worst * 100);
    boost::json::object o{
        {"aa_ratio", boost::json::value_from(a)}, {"aa_median", median(a)}, {"aa_max_abs", worst}};
    if (x) {
      const std::vector<double> xr = ratios(*x, lo), x2 = ratios(*x, aa);
      line += fmt::format("; xgboost / #1 {} (median {:+.1f}%), / #2 {} (median {:+.1f}%)",
                          pctList(xr), median(xr) * 100, pctList(x2), median(x2) * 100);
      o["xgboost_ratio"] = boost::json::value_from(xr);
      o["xgboost_median"] = median(xr);
      o["xgboost_ratio_to_aa"] = boost::json::value_from(x2);
      o["xgboost_median_to_aa"] = median(x2);
    }
    fmt::print(stderr, "{}\n", line);
    out[what] = std::move(o);
  };
  one("makespan", lo_m, aa_m, x_m);
  one("p99", lo_p, aa_p, x_p);
  return out;
}

}  // namespace

int runBalance(const BalanceOptions& o) {
  std::vector<std::string> workloads = o.workloads;
  if (std::find(workloads.begin(), workloads.end(), "all") != workloads.end())
    workloads = balanceWorkloads();
  auto known = balanceWorkloads();
  for (const auto& w : balanceExtraWorkloads()) known.push_back(w);
  for (const auto& w : workloads)
    if (std::find(known.begin(), known.end(), w) == known.end())
      return fmt::print(stderr, "error: unknown workload '{}'\n", w), 2;
  int rc = 0;
  boost::json::object out_workloads;
  struct Runs {
    std::vector<double> makespan, p99, warm;
    std::vector<std::string> placed;  // xgboost: which estimator placed the measured pass
    std::vector<double> model_active_end, switches;
    std::vector<double> bound_submit;  // lower bound given this pass's submission times
    std::vector<PassResult> passes;    // drift-long: per-job latencies for the windows
    std::vector<PassCounters> counters;
  };
  // The runs of each seed, in this order: the policies, then (--aa) least-outstanding again, so
  // its two runs bracket the others and their ratio is the same policy's run-to-run noise.
  std::vector<std::string> run_keys = o.policies;
  if (o.aa) {
    if (std::find(run_keys.begin(), run_keys.end(), "least-outstanding") == run_keys.end())
      run_keys.insert(run_keys.begin(), "least-outstanding");
    run_keys.emplace_back(kAaKey);
  }
  std::map<std::string, std::vector<Bound>> bounds;  // workload -> per seed
  const uint32_t cores = std::max(1u, std::thread::hardware_concurrency());
  const uint32_t slots = o.pin ? 1 : std::min(2u, cores);  // workers per node (executor layout)
  // workload -> policy -> runs (seed order)
  std::map<std::string, std::map<std::string, Runs>> all;
  for (const auto& wname : workloads) {
    for (uint32_t s = 0; s < std::max<uint32_t>(o.seeds, 1); ++s) {
      const uint64_t seed = o.seed + s;
      const Workload wl = makeWorkload(wname, o, seed);
      const Bound b = lowerBound(wl.measured, wl.speeds, slots, o.work == "spin", cores);
      bounds[wname].push_back(b);
      fmt::print(stderr,
                 "balance {} seed {}: {} jobs, nominal work {:.2f} s, node speeds [{}]; lower "
                 "bound {:.3f} s (work / capacity {:.3f}, longest {:.3f}{})\n",
                 wname, seed, wl.measured.size(), wl.nominal_s, fmt::join(wl.speeds, " "),
                 b.bound_s, b.work_s, b.longest_s,
                 o.work == "spin" ? fmt::format(", CPU / {} cores {:.3f}", cores, b.cpu_s) : "");
      for (const auto& policy : run_keys) {
        // A policy may carry coordinator flags after its name ("least-outstanding
        // --placement-horizon-ms 20"): variants of one scheduler run interleaved like policies.
        std::vector<std::string> words =
            splitWords(policy == kAaKey ? "least-outstanding" : policy);
        const std::string scheduler = words.empty() ? policy : words.front();
        client::LocalClusterOptions opts;
        opts.nodes = o.nodes;
        opts.pin = o.pin;
        opts.log_level = o.log_level;
        opts.coordinator_args = o.coordinator_args;
        opts.coordinator_args.push_back("--scheduler");
        opts.coordinator_args.push_back(scheduler);
        for (size_t k = 1; k < words.size(); ++k) opts.coordinator_args.push_back(words[k]);
        if (o.credit_per_worker) {
          opts.coordinator_args.push_back("--credit-per-worker");
          opts.coordinator_args.push_back(std::to_string(o.credit_per_worker));
        }
        const bool learned = scheduler == "xgboost";
        // /metrics (every policy, so all run the same processes): which estimator placed, and
        // what the coordinator spent on the pass.
        opts.gateway = "127.0.0.1:0";
        opts.node_args = {"--enable-test-ops"};  // the workloads are spin and sleep tokens
        opts.per_node_args.resize(o.nodes);
        for (uint32_t i = 0; i < o.nodes; ++i)
          if (wl.speeds[i] > 1.0)
            opts.per_node_args[i] = {"--speed-factor", fmt::format("{}", wl.speeds[i])};
        auto cluster = client::LocalCluster::start(opts);
        if (!cluster.ok()) return fmt::print(stderr, "error: {}\n", cluster.status().message()), 1;
        client::Client c((*cluster)->endpoint(), (*cluster)->clientCurve());
        if (auto st = c.waitForNodes(o.nodes, 30 * kSeconds); !st.ok())
          return fmt::print(stderr, "error: {}\n", st.message()), 1;
        const PassResult w = runPass(c, wl.warm, wl.warm_gap_s);
        std::this_thread::sleep_for(std::chrono::milliseconds(o.settle_ms));
        PlacementRecord placed;
        const uint16_t gw = (*cluster)->gatewayPort();
        const std::string before = scrapeMetrics(gw);
        const PassResult m = runPass(c, wl.measured, wl.gap_s);
        std::this_thread::sleep_for(std::chrono::milliseconds(600));  // one metrics refresh
        const std::string after = scrapeMetrics(gw);
        const PassCounters counters = PassCounters::between(before, after);
        if (learned) {
          placed.active_before = metricValue(before, "tokengate_placement_model_active");
          placed.active_after = metricValue(after, "tokengate_placement_model_active");
          const double s0 = metricValue(before, "tokengate_placement_mode_switches_total");
          const double s1 = metricValue(after, "tokengate_placement_mode_switches_total");
          if (s0 >= 0 && s1 >= 0) placed.switches = s1 - s0;
          const double d0 = metricValue(before, "tokengate_model_drifts_total");
          const double d1 = metricValue(after, "tokengate_model_drifts_total");
          if (d0 >= 0 && d1 >= 0) placed.drifts = d1 - d0;
          const double v0 = metricValue(before, "tokengate_model_version");
          const double v1 = metricValue(after, "tokengate_model_version");
          if (v0 >= 0 && v1 >= 0) placed.models = v1 - v0;
          if (after.find("\ntokengate_placement_regret ") != std::string::npos)
            placed.regret = metricValue(after, "tokengate_placement_regret");
        }
        (*cluster)->stop();
        if (!w.ok || !m.ok) {
          fmt::print(stderr, "{}: failed: {}{}\n", policy, w.error, m.error);
          rc = 3;
        }
        const double bsub = lowerBoundWithSubmits(wl.measured, m.offset_s, wl.speeds, slots,
                                                  o.work == "spin", cores);
        fmt::print(stderr,
                   "  {:<18} warm-up {:.3f} s | measured: makespan {:.3f} s (bound with its "
                   "submissions {:.3f} s), p50 {:.3f} s, p99 {:.3f} s ({} tokens){}\n"
                   "  {:<18} {}\n",
                   policy, w.makespan_s, m.makespan_s, bsub, m.p50_s, m.p99_s, m.tokens,
                   learned ? ", placed by " + placed.summary() : std::string(), "",
                   counters.summary());
        if (wl.change_s >= 0)  // to line up with the coordinator's log (--log-level info)
          fmt::print(stderr, "  {:<18} measured pass from {}, the change at {}\n", policy,
                     timeOfDay(m.started),
                     timeOfDay(m.started + std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::duration<double>(wl.change_s))));
        auto& r = all[wname][policy];
        r.bound_submit.push_back(bsub);
        if (wl.change_s >= 0) r.passes.push_back(m);
        r.makespan.push_back(m.makespan_s);
        r.p99.push_back(m.p99_s);
        r.warm.push_back(w.makespan_s);
        r.counters.push_back(counters);
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
    {
      const auto& bs = bounds[wname];
      std::vector<double> bound_s, work_s, longest_s, cpu_s;
      for (const auto& b : bs) {
        bound_s.push_back(b.bound_s);
        work_s.push_back(b.work_s);
        longest_s.push_back(b.longest_s);
        cpu_s.push_back(b.cpu_s);
      }
      fmt::print(stderr, "{:<10} {:<18} {:>8.3f} (per seed: {:.3f})\n", wname, "lower bound",
                 median(bound_s), fmt::join(bound_s, ", "));
      pol["bound"] = boost::json::object{{"bound_s", boost::json::value_from(bound_s)},
                                         {"work_over_capacity_s", boost::json::value_from(work_s)},
                                         {"longest_s", boost::json::value_from(longest_s)},
                                         {"cpu_over_cores_s", boost::json::value_from(cpu_s)},
                                         {"slots_per_node", slots},
                                         {"cores", cores}};
      for (const auto& [policy, r] : by_policy) {
        std::vector<double> over;
        for (size_t s = 0; s < r.makespan.size() && s < bs.size(); ++s)
          over.push_back(bs[s].bound_s > 0 ? r.makespan[s] / bs[s].bound_s : 0);
        std::vector<double> over_sub;
        for (size_t s = 0; s < r.makespan.size() && s < r.bound_submit.size(); ++s)
          over_sub.push_back(r.bound_submit[s] > 0 ? r.makespan[s] / r.bound_submit[s] : 0);
        fmt::print(stderr,
                   "{:<10} {:<18} makespan / bound: {:.3f} (per seed {:.3f}); / bound with its "
                   "submissions: {:.3f} (per seed {:.3f})\n",
                   wname, policy, median(over), fmt::join(over, ", "), median(over_sub),
                   fmt::join(over_sub, ", "));
      }
    }
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
                             {"p99_median_s", median(r.p99)},
                             {"bound_with_submits_s", boost::json::value_from(r.bound_submit)}};
      boost::json::array cs;
      for (const auto& pc : r.counters) cs.push_back(pc.json());
      po["pass_counters"] = std::move(cs);
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
          if (splitWords(policy).front() == "xgboost" || policy == kAaKey || s >= r.makespan.size())
            continue;
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
    // --aa: the same policy's run-to-run ratio per seed beside xgboost's ratio to it.
    if (const auto a = by_policy.find(std::string(kAaKey)), l = by_policy.find("least-outstanding");
        a != by_policy.end() && l != by_policy.end())
      pol["aa"] = aaReport(wname, l->second.makespan, l->second.p99, a->second.makespan,
                           a->second.p99, x != by_policy.end() ? &x->second.makespan : nullptr,
                           x != by_policy.end() ? &x->second.p99 : nullptr);
    // drift-long: advantage over least-outstanding per window, before and after the change.
    const auto xi = by_policy.find("xgboost"), li = by_policy.find("least-outstanding");
    if (xi != by_policy.end() && li != by_policy.end() && !xi->second.passes.empty()) {
      const Workload wl0 = makeWorkload(wname, o, o.seed);
      boost::json::array per_seed;
      for (size_t s = 0; s < xi->second.passes.size() && s < li->second.passes.size(); ++s) {
        const DriftReport d = driftReport(xi->second.passes[s], li->second.passes[s], wl0.change_s);
        std::string series;
        for (size_t w = 0; w < d.advantage.size(); ++w)
          series += fmt::format("{}{:+.0f}", w ? " " : "", d.advantage[w] * 100);
        fmt::print(stderr,
                   "{:<10} seed {}: xgboost vs least-outstanding, mean job latency, before the "
                   "change (at {:.2f} s) {:+.1f}%, after {:+.1f}%; back within 10% of the "
                   "advantage before: {}\n{:<10}   per {} s window (advantage %, + = xgboost "
                   "faster): {}\n",
                   wname, o.seed + s, wl0.change_s, d.before * 100, d.after * 100,
                   d.recovery_s < 0 ? std::string("not within the pass")
                                    : fmt::format("{:.1f} s after the change", d.recovery_s),
                   "", kDriftWindowS, series);
        std::vector<double> adv;
        for (double a : d.advantage) adv.push_back(std::isnan(a) ? 0 : a);
        per_seed.push_back(
            boost::json::object{{"seed", o.seed + s},
                                {"change_s", wl0.change_s},
                                {"window_s", kDriftWindowS},
                                {"window_start_s", boost::json::value_from(d.window_start_s)},
                                {"advantage", boost::json::value_from(adv)},
                                {"advantage_before", d.before},
                                {"advantage_after", d.after},
                                {"recovery_s", d.recovery_s}});
      }
      pol["drift"] = std::move(per_seed);
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
      {"aa", o.aa},
      {"xgboost_within_3pct", xgb_ran && xgb_within_3pct},
      {"workloads", out_workloads}};
  std::cout << boost::json::serialize(out) << std::endl;
  return rc;
}

}  // namespace tokengate::bench
