// CoordinatorServer: the coordinator process's event loop. One thread owns
// the ZeroMQ ROUTER socket (nodes and clients connect to it) and the
// CoordinatorCore; other threads (gateway, signal handler) reach the core
// only through post(), which wakes the loop through an eventfd.
//
// Disconnects: a socket monitor on the ROUTER reports ZMQ_EVENT_DISCONNECTED
// with the connection's fd; each received message tells which fd its peer
// uses (ZMQ_SRCFD), so the loop maps the fd back to the routing id and calls
// CoordinatorCore::onDisconnected. A peer that stops answering with its
// connection open (frozen process, cut cable) is found by missed application
// heartbeats instead: ZMTP heartbeats would drop it too, but libzmq 4.3.4 can
// abort on them (see server.cc). (ZMQ_ROUTER_NOTIFY would report disconnects
// directly but is draft API in libzmq 4.3.)
#pragma once

#include <sys/eventfd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "coordinator/control/control.h"
#include "coordinator/core/coordinator.h"
#include "coordinator/core/peer_auth.h"

namespace tokengate::coordinator {

struct ServerConfig {
  std::string listen = "tcp://0.0.0.0:5555";
  // More endpoints on the same ROUTER (e.g. ipc:///run/tokengate/wire.sock next to the TCP one,
  // for nodes and clients on the coordinator's host): same socket, same CURVE and role checks.
  std::vector<std::string> also_listen;
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  // CurveZMQ and role checks (docs/security.md); disabled = plain TCP, every peer trusted.
  security::ServerCurve curve;
  CoordinatorConfig core;
};

class CoordinatorServer final : public control::ClusterControl {
 public:
  explicit CoordinatorServer(ServerConfig config, Clock& clock = SystemClock::instance());
  ~CoordinatorServer() override;

  // Binds the ROUTER socket to `listen` and every `also_listen`; `endpoint()` then gives the
  // real address of `listen` (port 0 resolved), `endpoints()` all of them in that order.
  Status bind();
  std::string endpoint() const { return endpoint_; }
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  // Runs the loop on the calling thread until stop().
  void run();
  // Thread-safe.
  void stop();
  void post(std::function<void(CoordinatorCore&)> fn);

  // ClusterControl (thread-safe; callbacks run on the loop thread).
  void submitJob(JobSpec job, control::Callback<uint64_t> done) override;
  void jobStatus(uint64_t job_id, control::Callback<control::JobStatus> done) override;
  void listJobs(control::Callback<std::vector<control::JobStatus>> done) override;
  void cancelJob(uint64_t job_id, control::Callback<uint64_t> done) override;
  void cancelToken(uint64_t token_id, control::Callback<bool> done) override;
  void pauseOp(std::string op, control::Callback<control::OpStatus> done) override;
  void resumeOp(std::string op, control::Callback<control::OpStatus> done) override;
  void drainOp(std::string op, control::Callback<uint64_t> done) override;
  void cancelRunningOp(std::string op, control::Callback<uint64_t> done) override;
  void setOpLimits(std::string op, control::OpLimits limits,
                   control::Callback<control::OpStatus> done) override;
  void listOps(control::Callback<std::vector<control::OpStatus>> done) override;
  void listNodes(control::Callback<std::vector<control::NodeStatus>> done) override;
  void drainNode(std::string node_id, control::Callback<control::NodeStatus> done) override;
  void undrainNode(std::string node_id, control::Callback<control::NodeStatus> done) override;
  void evictNode(std::string node_id, control::Callback<uint64_t> done) override;
  void stats(control::Callback<control::ClusterStats> done) override;
  void setAdmissionLimit(uint64_t max_live_tokens,
                         control::Callback<control::ClusterStats> done) override;
  uint64_t subscribe(std::function<void(const control::Event&)> sink) override;
  void unsubscribe(uint64_t subscription) override;
  std::shared_ptr<prometheus::Registry> metricsRegistry() override { return registry_; }

 private:
  class RouterOutbox;
  // Receives and handles one ROUTER message; false when none is queued.
  bool handleMessage();
  void runPosted();
  // Whether the monitor has events we have not read (its fd, without a mailbox check).
  bool monitorHasEvents();
  // Reads queued monitor events until none is left; closed connections of known peers go
  // to closed_.
  void collectMonitorEvents();
  // Handles the messages already queued, then tells the core about closed_ peers.
  void applyDisconnects();
  // Applies closed_ entries of `peer` on a connection other than `current_fd`.
  void applyDisconnectsOf(const std::string& peer, int current_fd);
  // Records that `peer` sends on connection `fd` (-1: unknown, ignored).
  void notePeerFd(const std::string& peer, int fd);

  ServerConfig config_;
  Clock& clock_;
  std::shared_ptr<prometheus::Registry> registry_;
  zmq::context_t context_;
  // Declared before router_: its ZAP handler must outlive the CURVE socket it vouches for.
  std::unique_ptr<PeerAuth> auth_;
  zmq::socket_t router_;
  zmq::socket_t monitor_;  // PAIR end of the ROUTER's socket monitor
  // Connection fd <-> routing id, learned from received messages.
  std::unordered_map<int, std::string> fd_peer_;
  std::unordered_map<std::string, int> peer_fd_;
  std::vector<std::pair<std::string, int>> closed_;  // (peer, fd) seen closing, not yet applied
  int monitor_fd_ = -1;                              // the monitor's ZMQ_FD (run() sets it)
  bool monitor_signaled_ = false;  // its fd was readable at this turn's poll, not read since
  std::unique_ptr<RouterOutbox> outbox_;
  std::unique_ptr<CoordinatorCore> core_;
  std::string endpoint_;
  std::vector<std::string> endpoints_;
  int wake_fd_ = -1;
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<uint64_t> next_subscription_{1};
  std::mutex posted_mu_;
  std::vector<std::function<void(CoordinatorCore&)>> posted_;  // guarded by posted_mu_
};

}  // namespace tokengate::coordinator
