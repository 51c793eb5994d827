// ClusterControl: the coordinator's control surface, used by the gateway
// (WebSocket/HTTP) and by in-process tools. Implemented by the coordinator's
// event loop (coordinator/core); tests use a fake.
//
// Threading: every method is thread-safe and returns at once; the callback
// runs later on the coordinator loop thread, so it must not block (post the
// result to your own executor/strand). Event sinks run on the loop thread too
// and must only enqueue.
#pragma once

#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/job.h"
#include "common/status.h"
#include "common/value.h"
#include "coordinator/control/events.h"

namespace tokengate::control {

template <typename T>
using Callback = std::function<void(StatusOr<T>)>;

using tokengate::jobStateName;

struct OutputResult {
  uint32_t index = 0;
  std::string name;
  Status status;  // ok => value is set
  Value value;
};

struct JobStatus {
  uint64_t id = 0;
  uint64_t incarnation = 0;  // of the coordinator process that admitted the job (journal.md)
  std::string name;
  JobState state = JobState::kRunning;
  uint64_t total = 0, done = 0, failed = 0, cancelled = 0, running = 0;
  Nanos wall_ns = 0;  // admission to completion (or to now)
  // Verified execution (docs/security.md): the job's verify %, its sampled tokens two nodes
  // agreed on, those accepted unverified (no other node in time), those whose results differed,
  // and finished tokens run again because a lying node produced or fed them.
  double verify_pct = 0;
  uint64_t verified = 0, unverifiable = 0, mismatched = 0, reopened = 0;
  std::vector<OutputResult> outputs;  // filled by jobStatus() once finished
};

struct OpLimits {
  uint32_t max_in_flight = 0;   // 0 = unlimited
  double max_rate_per_s = 0;    // 0 = unlimited
  uint32_t run_timeout_ms = 0;  // start-to-close of each token of the op; 0 = cluster default
  double verify_pct = 0;        // verify at least this % of the op's tokens in every job
};

struct OpStatus {
  std::string name;
  Weight weight = Weight::kLight;     // declared default weight class
  Weight effective = Weight::kLight;  // lane the scheduler routes it to now (reclassification)
  bool paused = false;
  bool deterministic = false;  // a node declared it so: verify may sample it
  OpLimits limits;
  uint64_t queued = 0, running = 0, completed = 0, failed = 0, retried = 0, cancelled = 0;
  double rate_per_s = 0;  // completions per second, recent
  double mean_run_us = 0;
};

struct LaneStatus {
  Weight weight = Weight::kLight;
  std::vector<uint32_t> cores;
  uint32_t workers = 0;
  uint32_t queued = 0, running = 0;  // as last reported by the node
  uint64_t in_flight = 0;            // dispatched by the coordinator, no result yet
  double utilization = 0;            // 0..1 over the last heartbeat interval
};

// kQuarantined: registered and heartbeating, but given no new work because it withheld results
// (run timeouts); an operator lifts it with undrain.
enum class NodeState : uint8_t { kReady = 0, kDraining = 1, kDead = 2, kQuarantined = 3 };
constexpr int kNodeStateCount = 4;
const char* nodeStateName(NodeState s);

struct NodeStatus {
  std::string id;
  uint64_t session = 0;
  uint32_t pid = 0;
  NodeState state = NodeState::kReady;
  std::vector<LaneStatus> lanes;
  uint64_t in_flight = 0, completed = 0;
  Nanos heartbeat_age_ns = 0;
  double speed_factor = 1.0;
  uint64_t rss_bytes = 0;
  std::vector<std::string> ops;
};

struct ClusterStats {
  uint64_t nodes_ready = 0, nodes_draining = 0, nodes_dead = 0;
  uint64_t jobs_running = 0, jobs_total = 0;
  uint64_t tokens_admitted = 0, tokens_completed = 0, tokens_failed = 0, tokens_retried = 0;
  uint64_t tokens_live = 0;  // admitted and not finished (counts against the admission limit)
  uint64_t queued = 0, in_flight = 0;
  uint64_t admission_limit = 0, admission_rejects = 0;
  double throughput_per_s = 0;
  uint64_t nodes_lost = 0;  // registrations ended: missed heartbeats, disconnect, bye, evict
  uint64_t nodes_disconnected = 0;  // of which: the transport saw the connection close
  uint64_t tokens_requeued = 0;     // in-flight tokens re-queued from lost nodes
  uint64_t tokens_returned = 0;     // queued tokens handed back by draining nodes
  uint64_t nodes_quarantined = 0;   // registered nodes given no work (withheld results)
  uint64_t run_timeouts = 0;        // token attempts ended by their run timeout
  // Verified execution: verification runs, sampled tokens matched / mismatched / accepted
  // unverified, and finished tokens run again because a lying node produced or fed them.
  uint64_t verify_reruns = 0, verify_matched = 0, verify_mismatched = 0, verify_unverifiable = 0;
  uint64_t tokens_reopened = 0;
  std::string scheduler;  // placement policy (--scheduler)
  std::string placement;  // what places now: the policy's name, or "model" / "fallback" (xgboost)
};

class ClusterControl {
 public:
  virtual ~ClusterControl() = default;

  virtual void submitJob(JobSpec job, Callback<uint64_t> done) = 0;
  virtual void jobStatus(uint64_t job_id, Callback<JobStatus> done) = 0;
  virtual void listJobs(Callback<std::vector<JobStatus>> done) = 0;      // outputs left empty
  virtual void cancelJob(uint64_t job_id, Callback<uint64_t> done) = 0;  // tokens cancelled
  virtual void cancelToken(uint64_t token_id, Callback<bool> done) = 0;

  virtual void pauseOp(std::string op, Callback<OpStatus> done) = 0;
  virtual void resumeOp(std::string op, Callback<OpStatus> done) = 0;
  // Drops queued (not yet dispatched) tokens of `op`; they fail as Cancelled. Returns the count.
  virtual void drainOp(std::string op, Callback<uint64_t> done) = 0;
  // Sets the cooperative cancel flag on every running token of `op` on every node.
  virtual void cancelRunningOp(std::string op, Callback<uint64_t> done) = 0;
  virtual void setOpLimits(std::string op, OpLimits limits, Callback<OpStatus> done) = 0;
  virtual void listOps(Callback<std::vector<OpStatus>> done) = 0;

  virtual void listNodes(Callback<std::vector<NodeStatus>> done) = 0;
  virtual void drainNode(std::string node_id, Callback<NodeStatus> done) = 0;
  virtual void undrainNode(std::string node_id, Callback<NodeStatus> done) = 0;
  virtual void evictNode(std::string node_id, Callback<uint64_t> done) = 0;  // tokens requeued

  virtual void stats(Callback<ClusterStats> done) = 0;
  virtual void setAdmissionLimit(uint64_t max_live_tokens, Callback<ClusterStats> done) = 0;

  virtual uint64_t subscribe(std::function<void(const Event&)> sink) = 0;
  virtual void unsubscribe(uint64_t subscription) = 0;

  // The registry /metrics serves; the gateway adds its own families to it.
  virtual std::shared_ptr<prometheus::Registry> metricsRegistry() = 0;
};

}  // namespace tokengate::control
