// A TokenGate node: registry + executor + the ZeroMQ link to the coordinator.
//
// Protocol (see schema/tokengate.capnp and docs/protocol.md): a DEALER socket
// (routing id "<node-id>/<incarnation hex>") sends `hello` every second until
// `welcome`; then `heartbeat` every welcome.heartbeatMs. `tokenBatch` frames
// are enqueued on the executor; results go back in `resultBatch` frames,
// flushed at 1024 pending, 1 ms after the first pending one, or when the node
// goes idle. Silence from the coordinator for 5 heartbeat intervals means it
// restarted: queued work of the old session is dropped (the coordinator
// re-queues it), the socket is recreated and the node says hello again.
//
// Threads: run() is the link thread and the only one touching the socket.
// Executor workers wake it through an eventfd. requestStop() may be called
// from any thread or a signal handler.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/security/curve.h"
#include "common/status.h"
#include "common/wire.h"
#include "node/executor/executor.h"
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
  uint64_t incarnation = 0;  // 0 = random per process start
  uint32_t hello_resend_ms = 1000;
  uint32_t default_heartbeat_ms = 1000;  // used only if welcome.heartbeatMs is 0
  uint32_t missed_heartbeats = 5;        // silence => coordinator presumed restarted
  size_t flush_results = 1024;
  // Result frames stay below this; Welcome.maxFrameBytes overrides it.
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  Nanos flush_after_ns = kMillis;
  uint32_t stop_grace_ms = 30'000;  // drain budget on SIGTERM/shutdown
  bool handle_signals = false;      // runNode() sets it: SIGTERM/SIGINT = stop
  // Rewritten about once a second for container probes (node/link/health.h); empty = off.
  std::string health_file;
  // CurveZMQ keys for the link; disabled (plain TCP) unless secret_key is set.
  security::ClientCurve curve;
};

// Registry used when NodeConfig::registry is null.
Registry defaultRegistry();

class Node {
 public:
  // `context` may be shared with the caller (e.g. inproc tests); null = own.
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
  const Executor& executor() const { return *executor_; }

 private:
  enum class State { kHello, kReady };
  struct Impl;

  Node(NodeConfig config, zmq::context_t* context, const Clock& clock);

  const NodeConfig config_;
  const Clock& clock_;
  std::shared_ptr<const Registry> registry_;
  std::unique_ptr<zmq::context_t> own_context_;
  zmq::context_t* context_;
  int wake_fd_ = -1;
  std::atomic<bool> stop_requested_{false};
  std::atomic<uint64_t> session_{0};
  std::string node_id_;
  uint64_t incarnation_ = 0;
  std::string routing_id_;
  std::unique_ptr<Executor> executor_;  // declared last among owners: its workers call wake
  std::unique_ptr<Impl> impl_;
};

// Creates a node from `config`, installs SIGTERM/SIGINT handlers if
// config.handle_signals, and runs it. Returns the process exit code.
int runNode(NodeConfig config);

}  // namespace tokengate::node
