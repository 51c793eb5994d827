// The standard node main: flags -> NodeConfig -> runNode(). The node itself lives in
// tg_node_link (node/link/node.h) so tests and tokengate-local can start nodes too.
#include "node/app/node_main.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/log.h"
#include "common/security/curve_flags.h"
#include "node/link/health.h"
#include "node/link/node.h"

namespace tokengate::node {

int nodeMain(int argc, char** argv, const NodeMainOptions& options) {
  NodeConfig config;
  config.handle_signals = true;
  std::string log_level;
  uint32_t ignored_heartbeat_ms = 0;
  bool no_pin = false;
  std::string check_health;
  int max_age_s = 10;
  bool require_ready = false;
  int64_t inline_below_us = config.inline_below_ns / 1000;

  CLI::App app{options.description};
  app.add_option("--coordinator", config.coordinator, "Coordinator ROUTER endpoint")
      ->envname("TG_COORDINATOR")
      ->capture_default_str();
  app.add_option("--id", config.node_id, "Node id (default <hostname>-<pid>)")
      ->envname("TG_NODE_ID");
  app.add_option("--heavy-cores", config.heavy_cores,
                 "Cores reserved for the heavy lane (default 1 with >= 2 cores, else 0)");
  app.add_option("--cores", config.cores,
                 "Cores to use, e.g. --cores 0,1 (default: the process's affinity mask)")
      ->delimiter(',');
  app.add_option("--heartbeat-ms", ignored_heartbeat_ms,
                 "Ignored: the coordinator's welcome sets the heartbeat interval");
  app.add_option("--speed-factor", config.speed_factor,
                 "Slow this node down by this factor (>= 1; balancing benchmarks)")
      ->capture_default_str();
  app.add_flag("--no-pin", no_pin, "Do not pin worker threads to cores");
  app.add_option("--inline-below-us", inline_below_us,
                 "Run a lone light token of an operation declared non-blocking "
                 "(OpFlags::kNonBlocking) on the link thread when the workers are idle and the "
                 "operation last took under this many microseconds (0 = always use a worker)")
      ->check(CLI::Range(int64_t{0}, int64_t{1'000'000}))
      ->capture_default_str();
  app.add_flag("--enable-test-ops", config.enable_test_ops,
               "Also offer the test operations sleep, spin, fail, crash and wait_cancel "
               "(tests and benchmarks only: any submitter could kill or occupy this node)")
      ->envname("TG_NODE_ENABLE_TEST_OPS");
  app.add_option("--test-wrong-results", config.test_wrong_results,
                 "Test only, needs --enable-test-ops: return a wrong result for this fraction "
                 "(0..1) of tokens (a lying node for the verify tests)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--health-file", config.health_file,
                 "Rewrite this file about once a second for container probes")
      ->envname("TG_NODE_HEALTH_FILE");
  app.add_option("--check-health", check_health,
                 "Probe mode: judge a running node's health file and exit 0 (healthy) or 1");
  app.add_option("--max-age-s", max_age_s, "Probe mode: oldest acceptable health file")
      ->capture_default_str();
  app.add_flag("--ready", require_ready,
               "Probe mode: also require an established coordinator session");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error (default $TG_LOG or info)");
  security::CurveFlags curve_flags;
  security::addCurveFlags(app, curve_flags, security::CurveSide::kNode);
  CLI11_PARSE(app, argc, argv);
  config.pin = !no_pin;
  config.inline_below_ns = inline_below_us * 1000;
  if (!check_health.empty()) {
    const auto verdict = checkHealthFile(check_health, max_age_s, require_ready);
    std::puts(verdict.reason.c_str());
    return verdict.healthy ? 0 : 1;
  }

  initLogging(options.log_name, log_level);
  // CURVE (docs/security.md): without keys and without --insecure the node does not start.
  auto curve = security::resolveClientCurve(curve_flags, "node");
  if (!curve.ok()) {
    std::fprintf(stderr, "%s: %s\n", options.log_name.c_str(),
                 std::string(curve.status().message()).c_str());
    return 2;
  }
  if (!curve->enabled())
    spdlog::warn(
        "--insecure: plain TCP without CURVE; anyone on the network can pose as the "
        "coordinator and read this node's work");
  else
    config.configure_socket = [c = std::move(*curve)](zmq::socket_t& s) {
      return security::applyClientKeys(s, c);
    };
  return runNode(std::move(config));
}

}  // namespace tokengate::node
