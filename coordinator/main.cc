// tokengate-coordinator: flags -> AppConfig -> runCoordinator().
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/security/curve_flags.h"
#include "coordinator/app/app.h"

int main(int argc, char** argv) {
  using namespace tokengate;
  coordinator::AppConfig cfg;
  auto& core = cfg.server.core;
  std::string log_level;
  uint32_t node_timeout_ms = 3000, batch_latency_us = 0, backoff_ms = 20;
  uint32_t departed_node_retention_s = 300;
  unsigned max_attempts = core.default_max_attempts, poison = core.poison_threshold;
  CLI::App app{"TokenGate coordinator: admits jobs, schedules tokens onto nodes"};
  std::vector<std::string> listen{cfg.server.listen};
  app.add_option(
         "--listen", listen,
         "ZeroMQ endpoint for nodes and clients: tcp://host:port or ipc:///path (repeatable: "
         "one socket on every endpoint, same CURVE and role checks)")
      ->capture_default_str();
  app.add_option("--gateway", cfg.gateway, "HTTP/WebSocket gateway host:port (empty = off)");
  app.add_option("--gateway-token", cfg.gateway_token,
                 "admin bearer token (default: env TG_GATEWAY_TOKEN)");
  std::string token_file;
  app.add_option("--gateway-token-file", token_file, "read the admin bearer token from a file")
      ->check(CLI::ExistingFile);
  app.add_option("--gateway-viewer-token", cfg.gateway_viewer_token, "read-only bearer token")
      ->envname("TG_GATEWAY_VIEWER_TOKEN");
  app.add_option("--gateway-operator-token", cfg.gateway_operator_token,
                 "bearer token for operators (submit, cancel, pause, drain; not evict/limits)")
      ->envname("TG_GATEWAY_OPERATOR_TOKEN");
  app.add_option("--ready-min-nodes", cfg.gateway_ready_min_nodes,
                 "/readyz needs this many ready nodes (0: ready without nodes, for autoscaling "
                 "from zero)")
      ->capture_default_str();
  app.add_flag("--gateway-anonymous-read", cfg.gateway_anonymous_read,
               "allow unauthenticated read-only access");
  app.add_option(
      "--gateway-allowed-origin,--allowed-origin", cfg.allowed_origins,
      "browser Origin allowed on /ws, e.g. https://ops.example:8080 (repeatable; * = any; "
      "also env TG_GATEWAY_ALLOWED_ORIGINS, comma-separated). None given: same-origin only");
  app.add_option("--tls-cert", cfg.tls_cert, "PEM certificate for the gateway (TLS)");
  app.add_option("--tls-key", cfg.tls_key, "PEM private key for the gateway (TLS)");
  app.add_option("--ready-file", cfg.ready_file, "write bound endpoints here once ready");
  app.add_option("--max-live-tokens", core.max_live_tokens, "admission limit")
      ->capture_default_str();
  app.add_option("--max-job-tokens", core.max_job_tokens, "tokens per job limit")
      ->capture_default_str();
  app.add_option("--max-batch", core.max_batch, "tokens per batch")->capture_default_str();
  // Kept so existing command lines still start: partial batches now go out at the end of each
  // burst of frames, never after a timer.
  app.add_option("--batch-latency-us", batch_latency_us,
                 "ignored (deprecated): partial batches are sent at the end of each burst");
  app.add_option("--credit-per-worker", core.credit_per_worker, "in-flight tokens per lane worker")
      ->capture_default_str();
  app.add_option("--heartbeat-ms", core.heartbeat_ms, "node heartbeat interval")
      ->capture_default_str();
  uint64_t progress_interval_ms = static_cast<uint64_t>(core.progress_interval_ns / kMillis);
  app.add_option("--progress-interval-ms", progress_interval_ms,
                 "jobProgress frames to a running job's watchers at most this often (streamed "
                 "outputs ride on them)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{60'000}));
  uint64_t ack_hold_us = static_cast<uint64_t>(core.ack_hold_ns / 1000);
  app.add_option("--ack-hold-us", ack_hold_us,
                 "a submission that asks for it (SubmitJob.ackWithResult) gets no SubmitReply "
                 "if its job finishes within this many us: its JobDone carries the request id "
                 "(0 = always send SubmitReply at once)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{10'000'000}));
  app.add_option("--node-timeout-ms", node_timeout_ms, "declare a node lost after")
      ->capture_default_str();
  app.add_option("--departed-node-retention-s", departed_node_retention_s,
                 "list a lost or evicted node as dead this long, then drop it and its metrics (a "
                 "node that said bye is dropped at once)")
      ->capture_default_str();
  app.add_option("--max-attempts", max_attempts, "error retries per token")->capture_default_str();
  app.add_option("--retry-backoff-ms", backoff_ms, "first retry backoff")->capture_default_str();
  app.add_option("--poison-threshold", poison, "node losses before a token is quarantined")
      ->capture_default_str();
  uint64_t run_timeout_ms = 10 * 60 * 1000;
  app.add_option("--run-timeout-ms", run_timeout_ms,
                 "default start-to-close limit of a token attempt (dispatch to result); a token "
                 "still running then goes to another node (0 = off; per op: tgctl op limits "
                 "--run-timeout-ms; per token: run_timeout_ms)")
      ->capture_default_str();
  app.add_option("--run-timeout-quarantine", core.run_timeout_quarantine,
                 "run timeouts on one node within --run-timeout-strike-window-ms before it is "
                 "quarantined (no new work; 0 = never)")
      ->capture_default_str();
  uint64_t strike_window_ms = 60 * 60 * 1000;
  app.add_option("--run-timeout-strike-window-ms", strike_window_ms,
                 "a run-timeout strike expires this long after it was given (0 = never)")
      ->capture_default_str();
  uint64_t verify_wait_ms = 10'000;
  app.add_option("--verify-wait-ms", verify_wait_ms,
                 "verified execution: how long a sampled token waits for a node other than the "
                 "one(s) that ran it before it is accepted unverified (docs/security.md)")
      ->capture_default_str();
  app.add_option("--verify-seed", core.verify_seed,
                 "secret seed of the verify sample (default: random per start; set it only to "
                 "reproduce a run: a node that knows it can tell which tokens are checked)");
  app.add_option("--scheduler", core.scheduler, "round-robin | least-outstanding | xgboost")
      ->capture_default_str();
  app.add_option("--placement-horizon-ms", core.placement_horizon_ms,
                 "least-outstanding: hold tokens >= 100 us at the coordinator once their best node "
                 "has this many ms of predicted work per worker (0 = off, the default; 20 "
                 "helped the balance suite but can starve expensive tokens behind cheap ones)");
  bool allow_unknown_ops = false;
  app.add_flag("--allow-unknown-ops", allow_unknown_ops,
               "admit jobs naming operations no node offers yet (they wait for one)");
  app.add_option("--xgb-horizon-ms", cfg.xgb_horizon_ms,
                 "xgboost policy: queue horizon (ms of predicted work per worker) of the model's "
                 "placement, its fallback's guard and the fallback least-outstanding (0 = off; "
                 "default 20; for experiments, docs/cost-model.md)")
      ->check(CLI::Range(0.0, 60'000.0));
  app.add_option("--model", cfg.model_path, "XGBoost cost model JSON to load");
  app.add_flag("--learn", cfg.learn, "train the cost model online from telemetry");
  app.add_option("--model-drift-check", cfg.model_drift_check,
                 "online training: score the active model on every N new telemetry samples; when "
                 "its error jumps (a drift), fall back at once and retrain on samples since "
                 "(0 = off; default 256; docs/cost-model.md)");
  app.add_option("--model-out", cfg.model_out,
                 "save every accepted online-trained cost model here (implies --learn; env "
                 "TG_MODEL_OUT)")
      ->envname("TG_MODEL_OUT");
  app.add_option("--trace-out", cfg.trace_out,
                 "append telemetry samples to this CSV trace, for `tgctl model train --trace` "
                 "(env TG_TRACE_OUT)")
      ->envname("TG_TRACE_OUT");
  app.add_option("--journal", cfg.journal_path,
                 "job journal file: admitted jobs survive a coordinator restart (env TG_JOURNAL)")
      ->envname("TG_JOURNAL");
  app.add_option("--first-epoch", cfg.first_epoch,
                 "job id epoch (1-4095) to take when there is no journal or it names none; "
                 "default random (tests only: a fixed one makes ids repeat)")
      ->check(CLI::Range(1, 4095));
  app.add_flag("--journal-reset", cfg.journal_reset,
               "if the journal file cannot be parsed at all, move it aside (PATH.unparseable-TIME) "
               "and begin a new journal instead of refusing to start");
  app.add_option("--checkpoint-min-inputs", core.checkpoint_min_inputs,
                 "with --journal: checkpoint the results of tokens with at least this many inputs "
                 "(chunk sums, fan-ins), so a restart resumes a job instead of re-running it; 0 = "
                 "off")
      ->capture_default_str();
  app.add_option("--checkpoint-min-run-ms", core.checkpoint_min_run_ms,
                 "with --journal: also checkpoint any token that ran at least this long (ms) "
                 "and whose result is still needed, whatever its fan-in; 0 = off")
      ->capture_default_str();
  app.add_option("--max-frame-bytes", cfg.server.max_frame_bytes, "largest accepted frame")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error (env TG_LOG)");
  security::CurveFlags curve_flags;
  security::addCurveFlags(app, curve_flags, security::CurveSide::kCoordinator);
  CLI11_PARSE(app, argc, argv);
  if (listen.empty()) listen.push_back(cfg.server.listen);
  cfg.server.listen = listen.front();
  cfg.server.also_listen.assign(listen.begin() + 1, listen.end());
  core.node_timeout_ns = Nanos{node_timeout_ms} * kMillis;
  core.progress_interval_ns = static_cast<Nanos>(progress_interval_ms) * kMillis;
  core.ack_hold_ns = static_cast<Nanos>(ack_hold_us) * 1000;
  core.departed_node_retention_ns = Nanos{departed_node_retention_s} * kSeconds;
  core.retry_backoff_ns = Nanos{backoff_ms} * kMillis;
  core.default_max_attempts = static_cast<uint8_t>(max_attempts);
  core.poison_threshold = static_cast<uint8_t>(poison);
  core.run_timeout_ns = static_cast<Nanos>(run_timeout_ms) * kMillis;
  core.verify_wait_ns = static_cast<Nanos>(verify_wait_ms) * kMillis;
  core.run_timeout_strike_window_ns = static_cast<Nanos>(strike_window_ms) * kMillis;
  core.reject_unknown_ops = !allow_unknown_ops;
  initLogging("coordinator", log_level);
  auto curve = security::resolveServerCurve(curve_flags);
  if (!curve.ok()) {
    std::fprintf(stderr, "tokengate-coordinator: %s\n",
                 std::string(curve.status().message()).c_str());
    return 2;
  }
  if (!curve->enabled())
    spdlog::warn(
        "--insecure: the wire endpoint(s) {} accept plain TCP without CURVE; anyone who can "
        "reach them can join as a node, submit, cancel and watch any job",
        fmt::join(listen, ", "));
  cfg.server.curve = std::move(*curve);
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    std::getline(in, cfg.gateway_token);
    while (!cfg.gateway_token.empty() &&
           std::isspace(static_cast<unsigned char>(cfg.gateway_token.back())))
      cfg.gateway_token.pop_back();
  }
  return coordinator::runCoordinator(std::move(cfg));
}
