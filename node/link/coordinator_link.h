// CoordinatorLink: the node's session with the coordinator, as a state
// machine over a LinkSocket, an Executor and a Clock.
//
// How a connection moves through it:
//   connect -> hello (exactly one per connection) -> welcome -> ready
//   ready: tokenBatch -> executor; results -> ResultBatcher -> resultBatch;
//          a lone fast light token while the executor is idle runs right here
//          (Executor::runInline) and its result frame goes out before the
//          next frame is read;
//          heartbeat every welcome.heartbeatMs
//   no welcome within hello_resend_ms -> reconnect (a new socket, so the old
//          connection's queued hello is discarded) -> hello
//   silence while ready for longer than the coordinator's loss timeout plus one
//          heartbeat (so the coordinator always gives up first) -> queued work
//          dropped (the coordinator re-queues it) -> reconnect -> hello
//   "unknown session" welcome -> reconnect -> hello
//   stop (SIGTERM, shutdown control) -> drain -> results -> bye -> finished
//
// The production run loop (Node::run) waits on the socket and the executor's
// eventfd and calls onReadable()/tick(); tests call them directly with an
// in-memory socket and a FakeClock.
//
// Ownership: owned by the Node; every method runs on the link thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "common/wire.h"
#include "node/executor/executor.h"
#include "node/link/frames.h"
#include "node/link/link_socket.h"
#include "node/link/result_batcher.h"
#include "node/registry/registry.h"

namespace tokengate::node {

struct LinkConfig {
  std::string node_id;
  uint64_t incarnation = 0;
  uint32_t hello_resend_ms = 1000;       // no welcome by then: reconnect and say hello again
  uint32_t default_heartbeat_ms = 1000;  // used only if welcome.heartbeatMs is 0
  uint32_t missed_heartbeats = 5;        // lower bound of the give-up, in heartbeats
  // The coordinator's node-loss timeout when its welcome does not state one.
  uint32_t coordinator_loss_timeout_ms = 3000;
  size_t max_frame_bytes = kDefaultMaxFrameBytes;  // ours; Welcome.maxFrameBytes may lower it
  ResultBatcherConfig results;
  uint32_t stop_grace_ms = 30'000;
  std::string health_file;  // empty = off
};

class CoordinatorLink {
 public:
  enum class State { kHello, kReady };

  CoordinatorLink(LinkConfig config, const Registry& registry, Executor& executor,
                  LinkSocketFactory connect, const Clock& clock);

  // Opens the first connection and says hello. An error is a bad endpoint.
  Status start();
  // Reads and handles every frame waiting on the socket.
  void onReadable();
  // One decoded-or-not frame from the coordinator (the fuzzing entry point).
  void handleFrame(const void* data, size_t size);
  // Collects results, sends what is due, runs the timers (hello, heartbeat,
  // give-up, stop). Call after onReadable() and whenever nextWakeAt() passes.
  void tick();
  // The latest time tick() must run again even if nothing arrives.
  Nanos nextWakeAt() const;
  // Drain and stop: running tokens finish, queued ones go back, then bye.
  void beginStop(const char* why);
  // run() may return: bye sent, or stopped before a session existed.
  bool finished() const { return finished_; }
  // Blocks on the current socket (production loop only).
  Status wait(int wake_fd, Nanos timeout_ns, bool& readable);
  // Closes the socket (its linger delivers the last frames).
  void close() { socket_.reset(); }

  State state() const { return state_; }
  uint64_t session() const { return session_; }
  bool stopping() const { return stopping_; }
  uint64_t connects() const { return connects_; }
  uint64_t droppedSends() const { return dropped_sends_; }
  uint32_t heartbeatMs() const { return heartbeat_ms_; }
  bool packedResults() const { return packed_results_; }
  bool packedDecResults() const { return packed_dec_results_; }
  // Silence after which the node gives up on its session.
  Nanos giveUpAfter() const;

 private:
  void send(std::string frame);
  void reconnect(const char* why);
  void sayHello();
  void sendHeartbeat();
  void loseSession(const char* why);
  void onFrame(const wire::Frame::Reader& f);
  void onWelcome(wire::Welcome::Reader w);
  void onTokenBatch(wire::TokenBatch::Reader b);
  void onOversizeFrame(const void* data, size_t size, const Status& why);
  void onControl(wire::Control::Reader c);
  void collect();
  void flushResults();
  void finishStop(const char* reason);

  const LinkConfig config_;
  const Registry& registry_;
  Executor& executor_;
  const LinkSocketFactory connect_;
  const Clock& clock_;
  const HelloInfo hello_;

  std::unique_ptr<LinkSocket> socket_;
  State state_ = State::kHello;
  uint64_t session_ = 0;
  uint32_t heartbeat_ms_ = 1000;
  Nanos loss_timeout_ns_;
  size_t max_frame_bytes_;
  bool packed_results_ = false;      // Welcome.packedResults of the current session
  bool packed_dec_results_ = false;  // Welcome.packedDecResults of the current session
  Nanos next_hello_ = 0;             // reconnect time while saying hello
  Nanos next_heartbeat_ = 0;
  Nanos last_rx_ = 0;
  Nanos next_health_ = 0;
  bool stopping_ = false;
  bool finished_ = false;
  Nanos stop_deadline_ = 0;
  uint64_t connects_ = 0;
  bool in_receive_ = false;                  // inside socket_->receive()
  const char* reconnect_pending_ = nullptr;  // reason of a reconnect deferred by receive
  uint64_t dropped_sends_ = 0;
  ResultBatcher batcher_;
  std::vector<TaskResult> results_;  // scratch for takeResults
  std::vector<ReturnedTask> returned_;
};

}  // namespace tokengate::node
