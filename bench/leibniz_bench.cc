// tokengate-bench: benchmarks that start a real local cluster and print
// figures; the last line of each run is one JSON object.
//   tokengate-bench leibniz --terms N --nodes K --precision double|dec50 [--scheduler P]... [--runs
//   R] tokengate-bench balance [--policy P]... [--credit-per-worker N] (bench/balance_bench.cc)
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <boost/math/constants/constants.hpp>
#include <boost/multiprecision/cpp_bin_float.hpp>
#include <chrono>
#include <iostream>

#include "bench/balance_bench.h"
#include "bench/jobs_bench.h"
#include "bench/latency_bench.h"
#include "bench/zmq_floor_bench.h"
#include "client/client.h"
#include "client/local_cluster.h"
#include "common/log.h"

using namespace tokengate;
namespace mp = boost::multiprecision;
using Ref = mp::cpp_bin_float_100;

namespace {

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Independent reference: the same series in 100-digit arithmetic, summed
// straight through (not the job's grouping).
Ref referenceSum(uint64_t terms) {
  Ref s = 0;
  for (uint64_t k = 0; k < terms; ++k) {
    Ref t = Ref(1) / Ref(2 * k + 1);
    if (k & 1)
      s -= t;
    else
      s += t;
  }
  return s * 4;
}

Ref toRef(const Value& v) {
  if (v.isDec()) return Ref(toBigFloat(v.asDec()));
  return Ref(v.toDouble());
}

struct RunResult {
  double wall_s = 0;
  uint64_t tokens = 0;
  Value pi;
  uint64_t peak_bytes = 0, coord_peak_bytes = 0;
  double coord_cpu_s = 0;  // coordinator CPU (all threads, trainer included) during the job
  double total_cpu_s = 0;  // user+sys of the coordinator, every node and this client, same span
  client::JobState state = client::JobState::kFailed;
};

// One run on a fresh local cluster (so peak RSS is per run).
absl::StatusOr<RunResult> runOnce(const JobSpec& job, uint32_t nodes, bool pin,
                                  std::vector<std::string> coordinator_args,
                                  const std::string& scheduler, const std::string& log_level,
                                  bool insecure, const std::string& bin_dir) {
  client::LocalClusterOptions opts;
  opts.bin_dir = bin_dir;
  opts.insecure = insecure;  // else throw-away CURVE keys, as in any real deployment
  opts.nodes = nodes;
  opts.pin = pin;
  opts.log_level = log_level;
  if (!scheduler.empty()) coordinator_args.push_back("--scheduler=" + scheduler);
  opts.coordinator_args = std::move(coordinator_args);
  auto cluster = client::LocalCluster::start(opts);
  if (!cluster.ok()) return cluster.status();
  client::Client c((*cluster)->endpoint(), (*cluster)->clientCurve());
  if (auto st = c.waitForNodes(nodes, 30 * kSeconds); !st.ok()) return st;

  const pid_t coordinator = (*cluster)->coordinatorPid();
  // Every process's CPU (user+sys): the coordinator, each node, this client.
  auto selfCpu = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  auto nodesCpu = [&] {
    double sum = 0;
    for (uint32_t i = 0; i < nodes; ++i) sum += client::cpuSecondsOf((*cluster)->nodePid(i));
    return sum;
  };
  const double cpu0 = client::cpuSecondsOf(coordinator);
  const double others0 = nodesCpu() + selfCpu();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c.run(job, {}, 3600 * kSeconds);
  RunResult out;
  out.wall_s = seconds(std::chrono::steady_clock::now() - t0);
  out.coord_cpu_s = client::cpuSecondsOf(coordinator) - cpu0;
  out.total_cpu_s = out.coord_cpu_s + nodesCpu() + selfCpu() - others0;
  if (!r.ok()) return r.status();
  auto pi = r->output("pi");
  if (!pi.ok()) return pi.status();
  out.pi = *pi;
  out.tokens = r->progress.total;
  out.state = r->state;
  out.coord_peak_bytes = client::peakRssOf(coordinator);
  out.peak_bytes = (*cluster)->peakRssBytes();
  (*cluster)->stop();
  return out;
}

struct Summary {
  double median = 0, min = 0, max = 0;
};
Summary summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return {n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v.front(), v.back()};
}

int runLeibniz(uint64_t terms, uint32_t nodes, const std::string& precision_name, bool pin,
               const std::vector<std::string>& coordinator_args,
               std::vector<std::string> schedulers, uint32_t runs, const std::string& log_level,
               const std::string& security, std::vector<double> verifies,
               std::vector<std::string> bin_dirs) {
  auto precision = parsePrecision(precision_name);
  if (!precision.ok()) return fmt::print(stderr, "error: {}\n", precision.status().message()), 2;
  auto job = makeLeibnizJob(terms, *precision);
  if (!job.ok()) return fmt::print(stderr, "error: {}\n", job.status().message()), 2;
  if (schedulers.empty()) schedulers.push_back("");  // the coordinator's default
  runs = std::max<uint32_t>(runs, 1);
  if (security != "curve" && security != "insecure" && security != "both")
    return fmt::print(stderr, "error: --security is curve, insecure or both\n"), 2;
  // Variants: scheduler x security mode x verify %; runs alternate between them so noise hits
  // each alike.
  struct Variant {
    std::string scheduler;
    bool insecure;
    std::string name;
    double verify = 0;
    std::string bin_dir;
  };
  if (verifies.empty()) verifies.push_back(0);
  if (bin_dirs.empty()) bin_dirs.push_back("");  // the binaries next to this one
  std::vector<Variant> variants;
  for (const auto& dir : bin_dirs) {
    for (const auto& sched : schedulers) {
      std::string base = sched.empty() ? "default" : sched;
      if (bin_dirs.size() > 1) base = (dir.empty() ? "this build" : dir) + "/" + base;
      for (bool insecure : {false, true}) {
        if (security != "both" && insecure != (security == "insecure")) continue;
        for (double v : verifies) {
          std::string name = security == "both" ? base + (insecure ? "/insecure" : "/curve") : base;
          if (verifies.size() > 1 || v > 0) name += fmt::format("/verify{}%", v);
          variants.push_back({sched, insecure, name, v, dir});
        }
      }
    }
  }

  // Floor: one thread, same arithmetic and grouping, no cluster.
  auto t0 = std::chrono::steady_clock::now();
  const Value floor_value = leibnizLocal(terms, *precision);
  const double floor_s = seconds(std::chrono::steady_clock::now() - t0);

  std::vector<std::vector<RunResult>> results(variants.size());
  for (uint32_t k = 0; k < runs; ++k) {
    for (size_t s = 0; s < variants.size(); ++s) {
      JobSpec spec = *job;
      spec.verify_pct = variants[s].verify;
      auto r = runOnce(spec, nodes, pin, coordinator_args, variants[s].scheduler, log_level,
                       variants[s].insecure, variants[s].bin_dir);
      if (!r.ok()) return fmt::print(stderr, "error: {}\n", r.status().message()), 1;
      results[s].push_back(std::move(*r));
    }
  }
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  const uint64_t self_peak = static_cast<uint64_t>(self.ru_maxrss) * 1024;

  const Ref ref = referenceSum(terms);
  bool all_ok = true, all_match = true;
  double max_abs_error = 0;
  boost::json::object by_scheduler;
  for (size_t s = 0; s < variants.size(); ++s) {
    std::vector<double> walls, coord_cpu, total_cpu;
    uint64_t peak = 0, coord_peak = 0;
    for (const RunResult& r : results[s]) {
      walls.push_back(r.wall_s);
      coord_cpu.push_back(r.coord_cpu_s);
      total_cpu.push_back(r.total_cpu_s);
      peak = std::max(peak, r.peak_bytes + self_peak);
      coord_peak = std::max(coord_peak, r.coord_peak_bytes);
      all_ok = all_ok && r.state == client::JobState::kSucceeded;
      all_match = all_match && r.pi == floor_value;
      max_abs_error = std::max(max_abs_error, mp::abs(toRef(r.pi) - ref).convert_to<double>());
    }
    const Summary w = summarize(walls);
    const Summary cpu = summarize(coord_cpu);
    const Summary all_cpu = summarize(total_cpu);
    const uint64_t tokens = results[s].front().tokens;
    const std::string& name = variants[s].name;
    fmt::print(stderr,
               "leibniz {} terms ({}), {} nodes, scheduler {}: {} tokens in {:.3f} s (median of "
               "{}; min {:.3f}, max {:.3f}) = {:.0f} tokens/s; peak RSS {:.1f} MB; coordinator "
               "CPU {:.3f} s, all processes {:.3f} s = {:.2f} us per token (medians)\n",
               terms, precision_name, nodes, name, tokens, w.median, walls.size(), w.min, w.max,
               static_cast<double>(tokens) / w.median, static_cast<double>(peak) / 1e6, cpu.median,
               all_cpu.median, all_cpu.median * 1e6 / static_cast<double>(tokens));
    by_scheduler[name] = boost::json::object{
        {"wall_s", w.median},
        {"wall_s_min", w.min},
        {"wall_s_max", w.max},
        {"tokens_per_s", static_cast<double>(tokens) / w.median},
        {"peak_rss_mb", static_cast<double>(peak) / 1e6},
        {"coordinator_rss_mb", static_cast<double>(coord_peak) / 1e6},
        {"coordinator_cpu_s", cpu.median},
        {"total_cpu_s", all_cpu.median},
        {"cpu_us_per_token", all_cpu.median * 1e6 / static_cast<double>(tokens)},
    };
  }
  // Top-level figures: the first scheduler given (or the default).
  const RunResult& first = results.front().front();
  const auto& head = by_scheduler.begin()->value().as_object();
  const Ref got = toRef(first.pi);
  const Ref pi_error = mp::abs(got - boost::math::constants::pi<Ref>());
  fmt::print(stderr, "floor {:.3f} s; pi = {}\n", floor_s, first.pi.toString());
  boost::json::object out{
      {"bench", "leibniz"},
      {"terms", terms},
      {"nodes", nodes},
      {"precision", precision_name},
      {"tokens", first.tokens},
      {"runs", runs},
      {"wall_s", head.at("wall_s")},
      {"tokens_per_s", head.at("tokens_per_s")},
      {"pi", first.pi.toString()},
      {"abs_error", max_abs_error},
      {"error_vs_pi", pi_error.convert_to<double>()},
      {"matches_floor", all_match},
      {"peak_rss_mb", head.at("peak_rss_mb")},
      {"floor_s", floor_s},
      {"coordinator_rss_mb", head.at("coordinator_rss_mb")},
      {"coordinator_cpu_s", head.at("coordinator_cpu_s")},
      {"total_cpu_s", head.at("total_cpu_s")},
      {"cpu_us_per_token", head.at("cpu_us_per_token")},
      {"client_rss_mb", static_cast<double>(self_peak) / 1e6},
      {"state", all_ok ? "succeeded" : "failed"},
  };
  out["security"] = security;
  if (variants.size() > 1 || runs > 1) out["by_scheduler"] = std::move(by_scheduler);
  std::cout << boost::json::serialize(out) << std::endl;
  return all_ok ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tokengate-bench: cluster benchmarks (last output line is JSON)"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level);
  auto* leib = app.add_subcommand("leibniz", "1M-term Leibniz pyramid on a local cluster");
  uint64_t terms = 1'000'000;
  uint32_t nodes = 2;
  std::string precision = "double";
  bool no_pin = false;
  std::vector<std::string> coordinator_args;
  leib->add_option("--terms", terms)->capture_default_str();
  leib->add_option("--nodes", nodes)->capture_default_str();
  leib->add_option("--precision", precision, "double | dec50")->capture_default_str();
  leib->add_flag("--no-pin", no_pin, "do not give nodes disjoint cores");
  leib->add_option("--coordinator-arg", coordinator_args, "extra coordinator flag (repeatable)");
  std::vector<std::string> leib_schedulers;
  uint32_t runs = 1;
  leib->add_option("--scheduler", leib_schedulers,
                   "coordinator placement policy (repeatable: runs alternate, figures per policy)");
  std::string security = "curve";
  leib->add_option("--security", security,
                   "curve (throw-away CURVE keys) | insecure (plain TCP) | both (alternating runs, "
                   "figures per mode)")
      ->capture_default_str();
  leib->add_option("--runs", runs, "runs per policy, each on a fresh cluster (median reported)")
      ->capture_default_str();
  std::vector<double> verifies;
  leib->add_option("--verify", verifies,
                   "verified execution % of the job (repeatable: runs alternate, figures per "
                   "value; default 0)");
  std::vector<std::string> leib_bin_dirs;
  leib->add_option("--bin-dir", leib_bin_dirs,
                   "coordinator and node binaries (default: next to this; repeatable: runs "
                   "alternate between the builds, figures per build)");
  auto* bal = app.add_subcommand(
      "balance", "placement workload suite (--workload NAME|all) under each policy and seed");
  bench::BalanceOptions bo;
  std::vector<std::string> policies;
  bool bal_no_pin = false;
  bal->add_option("--policy", policies,
                  "placement policy (repeatable; default all three); coordinator flags may "
                  "follow the name: --policy 'least-outstanding --placement-horizon-ms 20'");
  bal->add_option("--workload", bo.workloads,
                  "skewed | equal | uniform | bimodal | heavytail | drift | hetero | dag | all "
                  "(the suite) | drift-long (repeatable)")
      ->capture_default_str();
  bal->add_option("--seeds", bo.seeds, "runs per workload and policy (seeds --seed, +1, ...)")
      ->capture_default_str();
  bal->add_option("--nodes", bo.nodes)->capture_default_str();
  bal->add_option("--slow-factor", bo.slow_factor, "--speed-factor of the last node")
      ->capture_default_str();
  bal->add_option("--scale", bo.scale, "multiplies token counts")->capture_default_str();
  bal->add_option("--group", bo.group, "tokens per job")->capture_default_str();
  bal->add_option("--seed", bo.seed)->capture_default_str();
  bal->add_option("--credit-per-worker", bo.credit_per_worker, "coordinator credit (0 = default)")
      ->capture_default_str();
  bal->add_option("--settle-ms", bo.settle_ms, "pause between warm-up and measured pass")
      ->capture_default_str();
  bal->add_option("--work", bo.work,
                  "sleep: cost ops sleep (wall-clock, placement-bound); spin: busy loops "
                  "(CPU-bound)")
      ->check(CLI::IsMember({"sleep", "spin"}))
      ->capture_default_str();
  bal->add_flag("--no-pin", bal_no_pin, "do not give nodes disjoint cores");
  bal->add_option("--coordinator-arg", bo.coordinator_args, "extra coordinator flag (repeatable)");
  bal->add_flag("--aa", bo.aa,
                "A/A: run least-outstanding twice per seed (in its place and again after the "
                "others) and report the "
                "ratio of its two runs beside xgboost's ratio to it");
  bal->add_option("--log-level", bo.log_level,
                  "log level of the cluster's processes (default warn)");
  auto* lat = app.add_subcommand("latency", "one-token job round trips (p50/p90/p99/p99.9)");
  bench::LatencyOptions lo;
  lat->add_option("--jobs", lo.jobs, "measured round trips")->capture_default_str();
  lat->add_option("--warmup", lo.warmup, "round trips before measuring")->capture_default_str();
  lat->add_option("--nodes", lo.nodes)->capture_default_str();
  lat->add_option("--runs", lo.runs, "runs per build (and of the floor), alternating; medians")
      ->capture_default_str();
  lat->add_option("--bin-dir", lo.bin_dirs,
                  "coordinator and node binaries (default: next to this; repeatable: runs "
                  "alternate between the builds)");
  lat->add_flag("--with-floor", lo.with_floor,
                "also time zmq-floor's two-hop shape (same transport and security) between the "
                "cluster runs and print each build's distance to it");
  lat->add_flag("--ack-with-result", lo.ack_with_result,
                "also run every build with SubmitJob.ackWithResult (the ack rides on the "
                "JobDone when the job finishes within the coordinator's --ack-hold-us), "
                "interleaved with the plain runs");
  bool lat_no_pin = false;
  lat->add_flag("--no-pin", lat_no_pin, "do not give nodes disjoint cores");
  lat->add_option("--floor-shape", lo.floor_shapes,
                  "with --with-floor: two-hop (default) and/or two-hop-ack (plus the "
                  "acknowledgement a watched job gets; repeatable). Distances are to the first");
  lat->add_option("--transport", lo.transport,
                  "tcp: loopback TCP; ipc: nodes and the client reach the coordinator over ipc://")
      ->check(CLI::IsMember({"tcp", "ipc"}))
      ->capture_default_str();
  lat->add_option("--security", lo.security, "insecure (plain) | curve (throw-away CURVE keys)")
      ->check(CLI::IsMember({"insecure", "curve"}))
      ->capture_default_str();
  lat->add_option("--coordinator-arg", lo.coordinator_args, "extra coordinator flag (repeatable)");
  lat->add_option("--node-arg", lo.node_args,
                  "extra node flag (repeatable), e.g. --node-arg=--inline-below-us=0");
  auto* jobs = app.add_subcommand(
      "jobs", "one-token jobs/s from one pipelined client, without and with idempotency keys");
  bench::JobsOptions jo;
  jobs->add_option("--jobs", jo.jobs, "one-token jobs per run")->capture_default_str();
  jobs->add_option("--window", jo.window, "jobs in flight (Client::setWindow)")
      ->capture_default_str();
  jobs->add_option("--nodes", jo.nodes)->capture_default_str();
  jobs->add_option("--clients", jo.clients, "pipelined clients (a thread and socket each)")
      ->capture_default_str();
  jobs->add_option("--runs", jo.runs, "runs per mode (fresh cluster each; medians)")
      ->capture_default_str();
  jobs->add_flag("--journal", jo.journal, "coordinator with --journal on a temporary file");
  jobs->add_flag("--insecure", jo.insecure, "plain TCP instead of CURVE");
  jobs->add_option("--bin-dir", jo.bin_dir,
                   "coordinator and node binaries (default: next to this; compare builds)");
  jobs->add_option("--coordinator-arg", jo.coordinator_args, "extra coordinator flag (repeatable)");
  auto* floor = app.add_subcommand(
      "zmq-floor",
      "raw ZeroMQ round trips between processes (one hop, and a relay like the coordinator's)");
  bench::ZmqFloorOptions fo;
  floor->add_option("--round-trips", fo.round_trips, "measured round trips per run and shape")
      ->capture_default_str();
  floor->add_option("--warmup", fo.warmup, "round trips before measuring")->capture_default_str();
  floor->add_option("--runs", fo.runs, "runs per shape, alternating (medians reported)")
      ->capture_default_str();
  floor->add_option("--bytes", fo.bytes, "payload bytes per message")->capture_default_str();
  floor->add_option("--security", fo.security, "insecure | curve | both")
      ->check(CLI::IsMember({"insecure", "curve", "both"}))
      ->capture_default_str();
  floor->add_option("--shape", fo.shapes,
                    "one-hop | two-hop | two-hop-ack (two-hop plus an acknowledgement to the "
                    "client, a watched job's SubmitReply); repeatable; default one-hop, two-hop");
  floor->add_option("--spin-us", fo.spin_us,
                    "receivers poll this long before blocking (repeatable: figures per value)");
  floor
      ->add_option("--spin-at", fo.spin_at,
                   "all: every receiver spins; server: only the bound ROUTER (the relay)")
      ->check(CLI::IsMember({"all", "server"}))
      ->capture_default_str();
  floor->add_option("--transport", fo.transport, "tcp (loopback) | ipc (Unix domain socket)")
      ->check(CLI::IsMember({"tcp", "ipc"}))
      ->capture_default_str();
  auto* serve = app.add_subcommand("zmq-floor-serve", "");  // zmq-floor's child processes
  serve->group("");                                         // hidden
  bench::ZmqFloorServeOptions so;
  serve->add_option("--role", so.role)->required();
  serve->add_option("--connect", so.connect);
  serve->add_option("--secret-key", so.secret_key);
  serve->add_option("--server-key", so.server_key);
  serve->add_option("--spin-us", so.spin_us);
  serve->add_option("--transport", so.transport);
  CLI11_PARSE(app, argc, argv);
  if (*serve) return bench::serveZmqFloor(so);
  initLogging("bench", log_level);
  if (*floor) return bench::runZmqFloor(fo);
  if (*jobs) {
    jo.log_level = log_level;
    return bench::runJobs(jo);
  }
  if (*lat) {
    lo.log_level = log_level;
    lo.pin = !lat_no_pin;
    return bench::runLatency(lo);
  }
  if (*leib)
    return runLeibniz(terms, nodes, precision, !no_pin, coordinator_args, leib_schedulers, runs,
                      log_level, security, verifies, leib_bin_dirs);
  if (*bal) {
    if (!policies.empty()) bo.policies = policies;
    bo.pin = !bal_no_pin;
    // `balance --log-level X` was overwritten by the top-level default before.
    if (bal->count("--log-level") == 0) bo.log_level = log_level;
    return bench::runBalance(bo);
  }
  return 0;
}
