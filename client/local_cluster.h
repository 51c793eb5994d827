// LocalCluster: a coordinator and N node processes on loopback, for the demo,
// the benchmarks and the integration tests. The coordinator binds port 0 and
// reports its endpoints through a ready file; nodes can be pinned to disjoint
// cores, killed, restarted, and supervised (restarted when they die).
// Owned by one thread; the supervisor thread only touches state under mu_.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/security/curve.h"
#include "common/status.h"

namespace tokengate::client {

struct LocalClusterOptions {
  std::string bin_dir;  // holds tokengate-coordinator and tokengate-node; default: next to this exe
  uint32_t nodes = 2;
  std::string gateway;        // host:port for the gateway, empty = none
  std::string gateway_token;  // admin token for the gateway
  bool pin = true;            // give each node its own share of the allowed cores
  bool supervise = false;     // restart nodes that exit
  std::vector<std::string> coordinator_args;
  std::vector<std::string> node_args;
  std::vector<std::vector<std::string>> per_node_args;  // extra args for node i
  std::string log_level = "warn";
  // CurveZMQ (docs/security.md): by default start() writes throw-away keys (`tgctl keys init`
  // layout plus operator and viewer pairs) into a temporary directory, removed by stop(), and
  // runs every process with --curve-dir. insecure = plain TCP (--insecure everywhere).
  bool insecure = false;
  // tcp: the coordinator listens on loopback TCP only. ipc: it also listens on an ipc://
  // endpoint in a temporary directory (removed by the destructor) and the nodes connect
  // through it, as co-located nodes would (docs/deployment.md); endpoint() is then the ipc
  // one, endpoints() lists both.
  std::string transport = "tcp";
};

class LocalCluster {
 public:
  static StatusOr<std::unique_ptr<LocalCluster>> start(LocalClusterOptions options);
  ~LocalCluster();

  // The endpoint the nodes use (ipc:// with transport "ipc", else tcp://).
  const std::string& endpoint() const { return endpoint_; }
  // Every endpoint the coordinator listens on, in its --listen order (tcp first).
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  uint16_t gatewayPort() const { return gateway_port_; }
  pid_t coordinatorPid() const { return coordinator_; }
  pid_t nodePid(size_t i) const;
  size_t nodeCount() const { return nodes_.size(); }
  std::string nodeId(size_t i) const { return "node-" + std::to_string(i + 1); }

  Status killNode(size_t i, int sig);  // SIGKILL = crash, SIGTERM = graceful drain
  // Sends `sig` without waiting for the node to exit (SIGSTOP / SIGCONT: freeze and thaw).
  Status signalNode(size_t i, int sig);
  Status startNode(size_t i);  // (re)start node i if it is not running
  // Stops the coordinator with `sig` (SIGKILL = crash) and starts it again on the same
  // endpoints with the same flags (add --journal to coordinator_args to keep its jobs).
  // `while_down` runs after the old process has exited and before the new one starts (tests
  // that lose or damage the journal file meanwhile).
  Status restartCoordinator(int sig, const std::function<void()>& while_down = {});
  // The throw-away key directory (empty when insecure): server, node, admin, operator and
  // viewer key pairs; allow/nodes and allow/clients/<role> hold the public keys.
  const std::string& keyDir() const { return key_dir_; }
  // Keys for a Client of `role` (admin, operator or viewer); disabled when insecure.
  security::ClientCurve clientCurve(security::Role role = security::Role::kAdmin) const;
  // Restarts performed by the supervisor so far.
  uint64_t restarts() const { return restarts_; }
  // Sum of peak resident memory (VmHWM) over the coordinator and live nodes.
  uint64_t peakRssBytes() const;
  // Stops everything: SIGTERM, then SIGKILL after `grace_ms`.
  void stop(int grace_ms = 3000);

 private:
  LocalCluster() = default;
  pid_t spawn(const std::string& exe, const std::vector<std::string>& args, int cpu_begin,
              int cpu_count);
  void superviseLoop();
  Status waitCoordinatorReady();

  LocalClusterOptions options_;
  std::string endpoint_;
  std::vector<std::string> endpoints_;
  std::string ipc_dir_;  // transport "ipc": holds the socket file
  uint16_t gateway_port_ = 0;
  std::string ready_file_;
  std::string key_dir_;
  std::vector<std::string> coordinator_args_;
  pid_t coordinator_ = -1;
  mutable std::mutex mu_;
  std::vector<pid_t> nodes_;              // guarded by mu_; -1 = not running
  std::vector<bool> intentionally_down_;  // guarded by mu_
  std::vector<int> cpus_;                 // allowed cpus
  std::atomic<uint64_t> restarts_{0};
  std::atomic<bool> stopping_{false};
  std::thread supervisor_;
};

// Directory of the running executable.
std::string selfDir();
// Peak RSS (VmHWM) of a process in bytes, 0 if unknown.
uint64_t peakRssOf(pid_t pid);
// CPU time (user + system, all threads) a process has used so far, in seconds; 0 if unknown.
double cpuSecondsOf(pid_t pid);

}  // namespace tokengate::client
