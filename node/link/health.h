// A node's liveness/readiness file for container probes (Docker HEALTHCHECK,
// Kubernetes exec probes). Nodes serve no port, so the link thread rewrites a
// small file about once a second: its mtime says the loop is alive, its
// content says whether a coordinator session is established. A separate
// process (`tokengate-node --check-health PATH`) judges it.
#pragma once

#include <string>

namespace tokengate::node {

enum class HealthState { kConnecting, kReady, kDraining };

// Writes `state` to `path` atomically (temporary file + rename). Errors are
// logged once per distinct failure and otherwise ignored: a probe that cannot
// read the file fails, which is the right signal.
void writeHealthFile(const std::string& path, HealthState state);

struct HealthCheck {
  bool healthy = false;
  std::string reason;  // human-readable verdict, printed by the CLI
};

// Liveness: the file exists and was rewritten within `max_age_s` seconds of
// `now_unix_s`. With `require_ready`, it must also report an established
// session (readiness). `now_unix_s` < 0 means the current time.
HealthCheck checkHealthFile(const std::string& path, int max_age_s, bool require_ready,
                            double now_unix_s = -1);

}  // namespace tokengate::node
