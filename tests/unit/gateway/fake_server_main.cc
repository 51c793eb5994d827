// tokengate-gateway-fake: the real Gateway over FakeClusterControl, with a
// simulated cluster that makes progress every --step-ms. Lets the Python and
// browser tests (tests/gateway/) and page development run without a
// coordinator. Prints "PORT <n>" on stdout once listening; stops on
// SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <thread>

#include "common/job.h"
#include "common/log.h"
#include "coordinator/gateway/gateway.h"
#include "tests/fakes/fake_cluster_control.h"

namespace {
volatile std::sig_atomic_t g_stop = 0;
void onSignal(int) { g_stop = 1; }
}  // namespace

int main(int argc, char** argv) {
  using namespace tokengate;
  CLI::App app{"TokenGate gateway over a fake cluster (tests and page development)"};
  gateway::GatewayConfig cfg;
  std::string token, operator_token, viewer_token, log_level = "info";
  int step_ms = 250;
  uint64_t demo_terms = 0;
  app.add_option("--bind", cfg.bind_address, "Bind address");
  app.add_option("--port", cfg.port, "Port (0 = any free port)");
  app.add_option("--token", token, "Admin token (default: env TG_GATEWAY_TOKEN)");
  app.add_option("--operator-token", operator_token, "Operator token");
  app.add_option("--viewer-token", viewer_token, "Viewer token");
  app.add_flag("--anonymous-read", cfg.allow_anonymous_read, "Allow read-only without a token");
  app.add_option("--origin", cfg.allowed_origins, "Allowed Origin (repeatable; * = any)");
  app.add_option("--web-root", cfg.web_root, "Serve the page from this directory");
  app.add_option("--rate", cfg.commands_per_s, "Commands per second per connection (0 = off)");
  app.add_option("--burst", cfg.command_burst, "Command burst per connection");
  app.add_option("--step-ms", step_ms, "Simulation step");
  app.add_option("--demo-job", demo_terms, "Submit a Leibniz job with this many terms at start");
  app.add_option("--tls-cert", cfg.tls_cert_file, "PEM certificate chain");
  app.add_option("--tls-key", cfg.tls_key_file, "PEM private key");
  app.add_option("--threads", cfg.threads, "Gateway threads (1-2)");
  app.add_option("--log-level", log_level, "Log level");
  CLI11_PARSE(app, argc, argv);
  initLogging("gateway-fake", log_level);

  if (!token.empty()) cfg.admin_tokens.push_back(token);
  if (!operator_token.empty()) cfg.operator_tokens.push_back(operator_token);
  if (!viewer_token.empty()) cfg.viewer_tokens.push_back(viewer_token);
  gateway::addTokenFromEnv(cfg);
  gateway::addAllowedOriginsFromEnv(cfg);

  testing::FakeClusterControl cluster;
  if (demo_terms > 0) {
    auto job = makeLeibnizJob(demo_terms, Precision::kDouble);
    if (!job.ok()) {
      std::fprintf(stderr, "demo job: %s\n", std::string(job.status().message()).c_str());
      return 2;
    }
    cluster.submitJob(std::move(*job), [](StatusOr<uint64_t>) {});
  }
  gateway::Gateway gw(cfg, cluster);
  if (Status s = gw.start(); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("PORT %u\n", static_cast<unsigned>(gw.port()));
  std::fflush(stdout);

  std::signal(SIGINT, onSignal);
  std::signal(SIGTERM, onSignal);
  while (g_stop == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
    cluster.step(step_ms / 1000.0);
  }
  gw.stop();
  return 0;
}
