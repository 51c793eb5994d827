// The coordinator process: wires the ZeroMQ server, the gateway and (when
// enabled) the cost model, handles signals and the ready file. main.cc only
// parses flags into AppConfig.
#pragma once

#include <string>

#include "coordinator/core/server.h"

namespace tokengate::coordinator {

struct AppConfig {
  ServerConfig server;
  std::string gateway;  // "host:port"; empty = no gateway
  std::string gateway_token;
  std::string gateway_viewer_token;
  std::string gateway_operator_token;
  bool gateway_anonymous_read = false;
  uint32_t gateway_ready_min_nodes = 1;  // --ready-min-nodes
  std::string tls_cert, tls_key;
  std::vector<std::string> allowed_origins;
  std::string ready_file;  // written once bound: "wire <ep>\n" per --listen, then
                           // "gateway <port>\nready 1\n"
  std::string model_path;  // XGBoost cost model (JSON) to load at start
  bool learn = false;      // train the cost model online and use it for placement
  // Online training: check the active model for drift every this many new telemetry samples
  // (costmodel::OnlineTrainerOptions::drift_check_samples; 0 = off, -1 = LearnedConfig's
  // default, 256).
  int64_t model_drift_check = -1;
  // xgboost policy: queue horizon in ms of predicted work per worker, on the model's path, its
  // fallback's guard and the fallback least-outstanding (XgbSchedulerOptions::queue_horizon_ns,
  // fallback_horizon_ns; 0 = off everywhere, -1 = their default, 20).
  double xgb_horizon_ms = -1;
  std::string model_out;       // save every accepted online-trained model here (implies learn)
  std::string trace_out;       // append telemetry samples here (CSV trace), under any policy
  std::string journal_path;    // job journal: admitted jobs survive a coordinator restart
  bool journal_reset = false;  // move an unparseable journal aside and begin a new one
  // Job id epoch to take when there is no journal or it names none (new, lost); 0 = random.
  // For tests that need a restarted coordinator to hand out an id it handed out before.
  uint32_t first_epoch = 0;
};

// Runs until SIGTERM/SIGINT. Returns the process exit code.
int runCoordinator(AppConfig config);

}  // namespace tokengate::coordinator
