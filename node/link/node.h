// A TokenGate node: registry + executor + the link to the coordinator.
//
// Node owns the pieces and runs the link thread: run() waits on the socket
// and the executor's eventfd and steps a CoordinatorLink (coordinator_link.h),
// which holds every protocol rule (hello once per connection, heartbeats,
// give-up, adaptive result batching, drain and bye). The socket is a
// ZmqLinkSocket (DEALER, routing id "<node-id>/<incarnation hex>").
//
// Threads: run() is the link thread and the only one touching the socket.
// Executor workers wake it through an eventfd. requestStop() may be called
// from any thread or a signal handler.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/status.h"
#include "common/wire.h"
#include "node/executor/executor.h"
#include "node/link/coordinator_link.h"
#include "node/registry/registry.h"

namespace tokengate::node {

struct NodeConfig {
  std::string coordinator = "tcp://127.0.0.1:5555";
  std::string node_id;      // empty = "<hostname>-<pid>"
  std::vector<int> cores;   // empty = the process's affinity mask
  int heavy_cores = -1;     // -1 = 1 when >= 2 cores, else 0
  double speed_factor = 1;  // > 1 slows this node (balancing benchmarks)
  bool pin = true;
  // Operations offered. Null = the built-ins plus every TG_OPERATION linked in.
  std::shared_ptr<const Registry> registry;
  // With a null registry: also offer the test operations (sleep, spin, fail, crash,
  // wait_cancel). Off in production: any submitter could kill or occupy the node.
  bool enable_test_ops = false;
  // Test only (needs enable_test_ops): this fraction (0..1) of the tokens, chosen by token id,
  // get a wrong result (ints +1, doubles +1.0, dec50 +1): a node with a valid key that lies, for
  // the verify tests (docs/security.md).
  double test_wrong_results = 0;
  uint64_t incarnation = 0;              // 0 = random per process start
  uint32_t hello_resend_ms = 1000;       // no welcome by then: reconnect, hello again
  uint32_t default_heartbeat_ms = 1000;  // used only if welcome.heartbeatMs is 0
  uint32_t missed_heartbeats = 5;        // give-up is at least this many heartbeats...
  // ...and strictly longer than the coordinator's loss timeout (Welcome.lossTimeoutMs,
  // this value when the coordinator does not state it).
  uint32_t coordinator_loss_timeout_ms = 3000;
  size_t flush_results = 1024;  // results per frame
  // Frames from and to the coordinator stay below this; Welcome.maxFrameBytes may lower it.
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Adaptive result batching: results go out at once unless a result frame left less
  // than this ago (then they wait for a full frame, this window, or an idle executor).
  // 0 (send on every wake-up) made 1M Leibniz slower here (median 1.07 s vs 0.72 s, coordinator
  // CPU 0.36 s vs 0.26 s, loaded machine): many small result frames instead of ~1024-result ones.
  Nanos result_busy_window_ns = kMillis;
  // A lone light token of an operation declared non-blocking (OpFlags::kNonBlocking) and last
  // timed under this runs on the link thread when the workers are idle (Executor::runInline):
  // one-token jobs skip two thread wake-ups. 0 = off. Undeclared operations never run inline, so
  // an op that is usually fast but sometimes waits cannot hold the link's frames and heartbeats;
  // a declared op whose inline run takes this long or longer goes back to the workers.
  int64_t inline_below_ns = 20'000;
  // Applied to the DEALER socket before connect (security options, e.g. CURVE).
  std::function<Status(zmq::socket_t&)> configure_socket;
  uint32_t stop_grace_ms = 30'000;  // drain budget on SIGTERM/shutdown
  bool handle_signals = false;      // runNode() sets it: SIGTERM/SIGINT = stop
  // Rewritten about once a second for container probes (node/link/health.h); empty = off.
  std::string health_file;
};

// Registry used when NodeConfig::registry is null: registerBuiltinOps(), the test
// operations if `test_ops`, and every TG_OPERATION linked in.
Registry defaultRegistry(bool test_ops = false);

class Node {
 public:
  // `context` may be shared with the caller (e.g. inproc tests); null = own.
  // InvalidArgument for a node id that validateNodeId() refuses (common/names.h).
  static StatusOr<std::unique_ptr<Node>> create(NodeConfig config,
                                                zmq::context_t* context = nullptr,
                                                const Clock& clock = SystemClock::instance());
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // The link loop; returns after shutdown/requestStop() once running tokens
  // finished, queued ones were handed back and `bye` was sent.
  Status run();
  // Thread- and async-signal-safe.
  void requestStop();

  const std::string& routingId() const { return routing_id_; }
  uint64_t incarnation() const { return incarnation_; }
  uint64_t session() const { return session_.load(); }
  // Connections opened so far (1 + reconnects); for tests and logs.
  uint64_t connects() const { return connects_.load(); }
  const Executor& executor() const { return *executor_; }

 private:
  Node(NodeConfig config, zmq::context_t* context, const Clock& clock);

  const NodeConfig config_;
  const Clock& clock_;
  std::shared_ptr<const Registry> registry_;
  std::unique_ptr<zmq::context_t> own_context_;
  zmq::context_t* context_;
  int wake_fd_ = -1;
  std::atomic<bool> stop_requested_{false};
  std::atomic<uint64_t> session_{0};  // mirrors the link's, for other threads
  std::atomic<uint64_t> connects_{0};
  std::string node_id_;
  uint64_t incarnation_ = 0;
  std::string routing_id_;
  std::unique_ptr<Executor> executor_;  // its workers call wake: destroyed before wake_fd_ closes
  std::unique_ptr<CoordinatorLink> link_;  // uses executor_ and registry_
};

// Creates a node from `config`, installs SIGTERM/SIGINT handlers if
// config.handle_signals, and runs it. Returns the process exit code.
int runNode(NodeConfig config);

}  // namespace tokengate::node
