// tokengate-local: starts a coordinator (with its gateway) and N node
// processes on loopback, runs the Leibniz job through them and prints pi.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/progress.h"
#include "client/client.h"
#include "client/local_cluster.h"
#include "common/log.h"

using namespace tokengate;

int main(int argc, char** argv) {
  CLI::App app{"tokengate-local: a local TokenGate cluster running the Leibniz job"};
  client::LocalClusterOptions opts;
  uint64_t terms = 1'000'000;
  std::string precision = "double";
  bool hold = false, no_pin = false, quiet = false;
  std::string log_level = "warn";
  opts.gateway = "127.0.0.1:8080";
  opts.gateway_token = "tokengate-local";
  app.add_option("--nodes", opts.nodes, "node processes")->capture_default_str();
  app.add_option("--terms", terms, "Leibniz terms (0 = start the cluster only)")
      ->capture_default_str();
  app.add_option("--precision", precision, "double | dec50")->capture_default_str();
  app.add_option("--gateway", opts.gateway, "gateway host:port ('' = none)")->capture_default_str();
  app.add_option("--gateway-token", opts.gateway_token, "gateway admin token")
      ->envname("TG_GATEWAY_TOKEN")
      ->capture_default_str();
  app.add_flag("--hold", hold, "keep the cluster running after the job (Ctrl-C stops)");
  app.add_flag("--no-pin", no_pin, "do not split cores between nodes");
  app.add_flag("--supervise", opts.supervise, "restart nodes that die");
  app.add_option("--bin-dir", opts.bin_dir, "where tokengate-coordinator/-node are");
  app.add_flag("-q,--quiet", quiet, "no progress bar");
  app.add_flag("--insecure", opts.insecure,
               "plain TCP between the processes (default: throw-away CURVE keys)");
  app.add_option("--log-level", log_level)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  initLogging("local", log_level);
  opts.pin = !no_pin;
  opts.log_level = log_level;
  auto prec = parsePrecision(precision);
  if (!prec.ok()) return fmt::print(stderr, "error: {}\n", prec.status().message()), 2;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto cluster = client::LocalCluster::start(opts);
  if (!cluster.ok()) return fmt::print(stderr, "error: {}\n", cluster.status().message()), 1;
  auto& c = **cluster;
  fmt::print("coordinator {} with {} nodes\n", c.endpoint(), opts.nodes);
  if (c.gatewayPort())
    fmt::print("control page http://127.0.0.1:{}/?token={}  (metrics: /metrics)\n", c.gatewayPort(),
               opts.gateway_token);
  if (!c.keyDir().empty())
    fmt::print("CURVE keys (removed on exit): tgctl --curve-dir {} ...\n", c.keyDir());
  else
    fmt::print("warning: --insecure: plain TCP, anyone reaching {} is trusted\n", c.endpoint());
  std::fflush(stdout);
  client::Client cl(c.endpoint(), c.clientCurve());
  if (auto st = cl.waitForNodes(opts.nodes, 30 * kSeconds); !st.ok())
    return fmt::print(stderr, "error: {}\n", st.message()), 1;
  int rc = 0;
  if (terms > 0) {
    auto job = makeLeibnizJob(terms, *prec);
    if (!job.ok()) return fmt::print(stderr, "error: {}\n", job.status().message()), 2;
    cli::ProgressBar bar(!quiet && isatty(2));
    auto r = cl.run(*job, [&](const client::Progress& p) { bar.update(p); });
    bar.finish();
    if (!r.ok()) return fmt::print(stderr, "error: {}\n", r.status().message()), 1;
    auto pi = r->output("pi");
    if (!pi.ok()) return fmt::print(stderr, "error: {}\n", pi.status().message()), 1;
    const Value expect = leibnizLocal(terms, *prec);
    fmt::print("Leibniz pi with {} term tokens ({}): {}\n", terms, precision, pi->toString());
    fmt::print("{} tokens in {:.3f} s ({:.0f} tokens/s); result {} the single-thread reference\n",
               r->progress.total, static_cast<double>(r->wall_ns) / 1e9,
               static_cast<double>(r->progress.total) / (static_cast<double>(r->wall_ns) / 1e9),
               *pi == expect ? "matches" : "DIFFERS from");
    rc = *pi == expect ? 0 : 3;
  }
  if (hold) {
    fmt::print("cluster running; Ctrl-C to stop\n");
    std::fflush(stdout);
    int sig;
    sigwait(&signals, &sig);
  }
  c.stop();
  return rc;
}
