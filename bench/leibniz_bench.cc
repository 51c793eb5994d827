// tokengate-bench: benchmarks that start a real local cluster and print
// figures; the last line of each run is one JSON object.
//   tokengate-bench leibniz --terms N --nodes K --precision double|dec50
//   tokengate-bench balance [--policy P]... [--credit-per-worker N] (bench/balance_bench.cc)
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <boost/math/constants/constants.hpp>
#include <boost/multiprecision/cpp_bin_float.hpp>
#include <chrono>
#include <iostream>

#include "bench/balance_bench.h"
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

int runLeibniz(uint64_t terms, uint32_t nodes, const std::string& precision_name, bool pin,
               const std::vector<std::string>& coordinator_args, const std::string& log_level) {
  auto precision = parsePrecision(precision_name);
  if (!precision.ok()) return fmt::print(stderr, "error: {}\n", precision.status().message()), 2;
  auto job = makeLeibnizJob(terms, *precision);
  if (!job.ok()) return fmt::print(stderr, "error: {}\n", job.status().message()), 2;

  // Floor: one thread, same arithmetic and grouping, no cluster.
  auto t0 = std::chrono::steady_clock::now();
  const Value floor_value = leibnizLocal(terms, *precision);
  const double floor_s = seconds(std::chrono::steady_clock::now() - t0);

  client::LocalClusterOptions opts;
  opts.nodes = nodes;
  opts.pin = pin;
  opts.log_level = log_level;
  opts.coordinator_args = coordinator_args;
  auto cluster = client::LocalCluster::start(opts);
  if (!cluster.ok()) return fmt::print(stderr, "error: {}\n", cluster.status().message()), 1;
  client::Client c((*cluster)->endpoint());
  if (auto st = c.waitForNodes(nodes, 30 * kSeconds); !st.ok())
    return fmt::print(stderr, "error: {}\n", st.message()), 1;

  t0 = std::chrono::steady_clock::now();
  auto r = c.run(*job, {}, 3600 * kSeconds);
  const double wall_s = seconds(std::chrono::steady_clock::now() - t0);
  if (!r.ok()) return fmt::print(stderr, "error: {}\n", r.status().message()), 1;
  auto pi = r->output("pi");
  if (!pi.ok()) return fmt::print(stderr, "error: {}\n", pi.status().message()), 1;
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  const uint64_t coord_peak = client::peakRssOf((*cluster)->coordinatorPid());
  const uint64_t self_peak = static_cast<uint64_t>(self.ru_maxrss) * 1024;
  const uint64_t peak = (*cluster)->peakRssBytes() + self_peak;
  (*cluster)->stop();

  const Ref ref = referenceSum(terms);
  const Ref got = toRef(*pi);
  const Ref abs_error = mp::abs(got - ref);
  const Ref pi_error = mp::abs(got - boost::math::constants::pi<Ref>());
  const uint64_t tokens = r->progress.total;
  fmt::print(stderr,
             "leibniz {} terms ({}), {} nodes: {} tokens in {:.3f} s = {:.0f} tokens/s; "
             "floor {:.3f} s; peak RSS {:.1f} MB; pi = {}\n",
             terms, precision_name, nodes, tokens, wall_s, static_cast<double>(tokens) / wall_s,
             floor_s, static_cast<double>(peak) / 1e6, pi->toString());
  boost::json::object out{
      {"bench", "leibniz"},
      {"terms", terms},
      {"nodes", nodes},
      {"precision", precision_name},
      {"tokens", tokens},
      {"wall_s", wall_s},
      {"tokens_per_s", static_cast<double>(tokens) / wall_s},
      {"pi", pi->toString()},
      {"abs_error", abs_error.convert_to<double>()},
      {"error_vs_pi", pi_error.convert_to<double>()},
      {"matches_floor", *pi == floor_value},
      {"peak_rss_mb", static_cast<double>(peak) / 1e6},
      {"floor_s", floor_s},
      {"coordinator_rss_mb", static_cast<double>(coord_peak) / 1e6},
      {"client_rss_mb", static_cast<double>(self_peak) / 1e6},
      {"state", client::jobStateName(r->state)},
  };
  std::cout << boost::json::serialize(out) << std::endl;
  return r->state == client::JobState::kSucceeded ? 0 : 3;
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
  auto* bal = app.add_subcommand(
      "balance", "skewed workload on 3 nodes (one slowed) under each placement policy");
  bench::BalanceOptions bo;
  std::vector<std::string> policies;
  bool bal_no_pin = false;
  bal->add_option("--policy", policies, "placement policy (repeatable; default all three)");
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
  bal->add_flag("--no-pin", bal_no_pin, "do not give nodes disjoint cores");
  bal->add_option("--coordinator-arg", bo.coordinator_args, "extra coordinator flag (repeatable)");
  CLI11_PARSE(app, argc, argv);
  initLogging("bench", log_level);
  if (*leib) return runLeibniz(terms, nodes, precision, !no_pin, coordinator_args, log_level);
  if (*bal) {
    if (!policies.empty()) bo.policies = policies;
    bo.pin = !bal_no_pin;
    bo.log_level = log_level;
    return bench::runBalance(bo);
  }
  return 0;
}
