// C++ client library: submit jobs to a coordinator over ZeroMQ, stream
// progress, wait for results, cancel. One Client owns one DEALER socket and
// is used from one thread at a time.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/job.h"
#include "common/job_state.h"
#include "common/security/curve.h"
#include "common/status.h"
#include "common/value.h"
#include "common/wire.h"

namespace tokengate::client {

struct Progress {
  uint64_t job = 0, total = 0, done = 0, failed = 0, running = 0;
};

struct Output {
  uint32_t index = 0;
  std::string name;
  Status status;
  Value value;
};

using tokengate::JobState;  // common/job_state.h
using tokengate::jobStateName;

struct JobResult {
  uint64_t id = 0;
  JobState state = JobState::kUnknown;
  Progress progress;
  Nanos wall_ns = 0;
  std::vector<Output> outputs;
  // The output named `name` (or the only one) as a value, or its error.
  StatusOr<Value> output(const std::string& name = {}) const;
};

struct NodeSummary {
  std::string id;
  std::string state;
  uint64_t completed = 0, in_flight = 0, session = 0;
};

struct ClusterInfo {
  uint32_t nodes_ready = 0, nodes_draining = 0, jobs_running = 0;
  uint64_t tokens_live = 0, tokens_completed = 0, tokens_failed = 0, queued = 0, in_flight = 0;
  uint64_t nodes_lost = 0, nodes_disconnected = 0;  // node registrations ended / by disconnect
  uint64_t tokens_requeued = 0;                     // in-flight tokens re-queued from lost nodes
  uint64_t tokens_returned = 0;                     // queued tokens handed back by draining nodes
  uint32_t nodes_quarantined = 0;  // given no work: they withheld results (run timeouts)
  uint64_t run_timeouts = 0;       // token attempts ended by their run timeout
  // Verified execution (docs/security.md): verification runs, sampled tokens two nodes agreed
  // on, that differed, accepted unverified; finished tokens run again because a liar fed them.
  uint64_t verify_reruns = 0, verify_matched = 0, verify_mismatched = 0, verify_unverifiable = 0;
  uint64_t tokens_reopened = 0;
  std::vector<NodeSummary> nodes;
};

// "127.0.0.1:5555" -> "tcp://127.0.0.1:5555", "host" -> "tcp://host:5555"; endpoints with a
// scheme (tcp://, ipc://, inproc://) are kept. InvalidArgument for an empty or malformed one.
StatusOr<std::string> normalizeEndpoint(const std::string& endpoint);

// Operator calls (the gateway's op.* / node.* / job.list over the wire port).
struct AdminCall {
  enum class Kind {
    kListJobs,
    kListOps,
    kPauseOp,
    kResumeOp,
    kDrainOp,
    kSetOpLimits,
    kDrainNode,
    kUndrainNode,
    kEvictNode,
    kListNodes
  };
  AdminCall() = default;
  explicit AdminCall(Kind k, std::string t = {}) : kind(k), target(std::move(t)) {}

  Kind kind = Kind::kListJobs;
  std::string target;  // op name or node id
  uint32_t max_in_flight = 0;
  double max_rate_per_s = 0;
  uint32_t run_timeout_ms = 0;  // 0 = cluster default
  double verify_pct = 0;        // verify this % of the op's tokens (0 = as each job says)
};

// A pipelined submission (Client::submitAsync). Identifies the submission, not the job: the
// job id is only known once the coordinator admitted it (AsyncResult::result carries it).
struct JobHandle {
  uint64_t id = 0;  // 0 = none
  bool operator==(const JobHandle&) const = default;
};

// How a pipelined submission treats the coordinator's ResourceExhausted (admission limit):
// kFail surfaces it on the handle (like submit()); kRetry re-sends the job after a backoff
// (10 ms doubling to 1 s, like submitWithBackpressure()) until the call's timeout, while the
// other jobs of the pipeline go on.
enum class Backpressure { kFail, kRetry };

// The outcome of one pipelined submission: the job's result, or why it has none (refused by
// the coordinator, e.g. ResourceExhausted or InvalidArgument; DeadlineExceeded).
struct AsyncResult {
  JobHandle handle;
  StatusOr<JobResult> result = absl::UnknownError("pending");
};

class Client {
 public:
  // `endpoint` goes through normalizeEndpoint(); a malformed one makes every call fail with
  // InvalidArgument (see endpointStatus()) instead of throwing.
  explicit Client(std::string endpoint);
  // With CurveZMQ (docs/security.md): this client's key pair and the coordinator's public key.
  // A refused key fails calls with PermissionDenied instead of waiting for their timeout.
  Client(std::string endpoint, security::ClientCurve curve);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Admits a job; the coordinator streams progress to this client. Fails
  // with ResourceExhausted when the admission limit is reached.
  StatusOr<uint64_t> submit(const JobSpec& job, Nanos timeout = 30 * kSeconds);
  // Submits, retrying ResourceExhausted with backoff until `timeout` (backpressure).
  StatusOr<uint64_t> submitWithBackpressure(const JobSpec& job, Nanos timeout);
  // Waits for the job to finish; `on_progress` sees progress updates.
  StatusOr<JobResult> wait(uint64_t job, const std::function<void(const Progress&)>& on_progress,
                           Nanos timeout);
  // Same, and streams results: `on_output` sees each output token (value or error) once, as
  // it finishes (batched with progress frames), before wait() returns the full JobResult.
  StatusOr<JobResult> wait(uint64_t job, const std::function<void(const Progress&)>& on_progress,
                           const std::function<void(const Output&)>& on_output, Nanos timeout);
  StatusOr<JobResult> run(const JobSpec& job,
                          const std::function<void(const Progress&)>& on_progress = {},
                          Nanos timeout = 600 * kSeconds);
  Status cancel(uint64_t job, Nanos timeout = 10 * kSeconds);

  // --- Pipelined submission (many jobs in flight over this client's one socket) ---
  // Sends the job and returns at once, without waiting for the acknowledgement. At most
  // window() submissions are in flight (sent, result not yet arrived); when the window is full
  // submitAsync BLOCKS, reading the socket, until one finishes or `timeout` passes
  // (DeadlineExceeded, nothing sent). Each handle's AsyncResult comes out of waitAny(),
  // wait(handle) or waitAll() exactly once. A refusal (ResourceExhausted at the admission
  // limit with Backpressure::kFail, InvalidArgument, PermissionDenied) is that handle's
  // result; the window slot is freed. `timeout` also bounds the job: a handle whose result has
  // not arrived `timeout` after submitAsync completes with DeadlineExceeded.
  StatusOr<JobHandle> submitAsync(const JobSpec& job, Backpressure bp = Backpressure::kFail,
                                  Nanos timeout = 600 * kSeconds);
  // The next finished submission (any handle, in the order results arrived). NotFound when no
  // submission is outstanding; DeadlineExceeded when none finished within `timeout`.
  StatusOr<AsyncResult> waitAny(Nanos timeout);
  // That submission's result (other handles' results that arrive meanwhile are kept for
  // waitAny). NotFound for an unknown handle or one whose result was already taken.
  StatusOr<AsyncResult> wait(JobHandle handle, Nanos timeout);
  // Every outstanding submission's result, in submission order. DeadlineExceeded if not all
  // finished within `timeout` (the finished ones stay available to waitAny()).
  StatusOr<std::vector<AsyncResult>> waitAll(Nanos timeout);
  // Submissions in flight (sent, no result yet) and outstanding (result not yet taken).
  size_t inFlight() const { return async_in_flight_; }
  size_t outstanding() const { return async_.size(); }
  size_t window() const { return window_; }
  // Pipelined submissions ask for SubmitJob.ackWithResult (on by default): a job that finishes
  // within the coordinator's --ack-hold-us is acknowledged by its JobDone alone, one message
  // fewer per job (docs/wire-protocol.md). The pipeline never shows a job id before the result,
  // so nothing is lost; an older coordinator ignores the flag and acks as before.
  void setAckWithResult(bool on) { ack_with_result_ = on; }
  bool ackWithResult() const { return ack_with_result_; }
  void setWindow(size_t window) { window_ = std::max<size_t>(1, window); }
  // Asks the coordinator to stream a job this client did not submit.
  Status watch(uint64_t job);
  StatusOr<ClusterInfo> info(Nanos timeout = 5 * kSeconds);
  // Waits until at least `nodes` nodes are ready.
  Status waitForNodes(uint32_t nodes, Nanos timeout);
  // Round trip (ping/pong): Unavailable "no answer from the coordinator at X" after `timeout`.
  // ZeroMQ connects lazily and queues, so this is how a caller learns the coordinator is down.
  Status ping(Nanos timeout);
  // The reply's JSON body (see coordinator/core/admin.cc), or the coordinator's error.
  StatusOr<std::string> admin(const AdminCall& call, Nanos timeout = 10 * kSeconds);
  const Status& endpointStatus() const { return endpoint_status_; }
  const std::string& endpoint() const { return endpoint_; }

 private:
  // Receives one frame (or times out) and files it: progress, done, replies.
  Status pump(Nanos deadline);
  void send(capnp::MallocMessageBuilder& msg);
  // Pipelined submissions: (re)send one, file its result, resend due retries, expire.
  void sendAsync(uint64_t handle, const JobSpec& job);
  void finishAsync(uint64_t handle, StatusOr<JobResult> result);
  Nanos serviceAsync(Nanos now);  // returns the next time something is due (or INT64_MAX)
  Status pumpAsync(Nanos deadline);

  // Reads the socket monitor: a CURVE handshake the coordinator refused sets setup_error_.
  void checkMonitor();

  std::string endpoint_;
  Status endpoint_status_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  zmq::socket_t monitor_;  // PAIR end of socket_'s monitor (handshake failures)
  bool monitoring_ = false;
  bool curve_enabled_ = false;
  int handshake_failures_ = 0;  // without detail, in a row (a wrong server key looks like this)
  // A CURVE handshake with this coordinator has succeeded: its key is right, and handshakes cut
  // without detail later are restarts, not a refusal (checkMonitor).
  bool handshake_seen_ = false;
  Status setup_error_;
  uint64_t next_request_ = 1;
  std::unordered_map<uint64_t, StatusOr<uint64_t>> replies_;  // request id -> job id
  std::unordered_map<uint64_t, ClusterInfo> stats_replies_;
  std::unordered_map<uint64_t, JobResult> done_;
  std::unordered_map<uint64_t, Progress> progress_;
  std::unordered_map<uint64_t, std::vector<Output>> streamed_;  // job id -> outputs not yet seen
  std::unordered_map<uint64_t, uint64_t> heard_;                // job id -> frames about it so far
  std::unordered_map<uint64_t, Status> request_errors_;         // request id -> refusal (watch)
  std::unordered_map<uint64_t, uint64_t> watch_requests_;       // job id -> latest watch request
  // job id -> incarnation of the coordinator that admitted it (SubmitReply), until its result
  // was returned: sent with every watch so a restarted coordinator that hands out the same id
  // to another job answers NOT_FOUND instead of that job's data.
  std::unordered_map<uint64_t, uint64_t> incarnations_;
  std::unordered_map<uint64_t, StatusOr<std::string>> admin_replies_;
  std::unordered_set<uint64_t> pongs_;
  Status last_reject_;

  struct Pending {
    JobSpec job;  // kept for retries
    Backpressure bp = Backpressure::kFail;
    uint64_t request = 0;  // current request id
    uint64_t job_id = 0;   // once admitted
    Nanos deadline = 0;
    Nanos retry_at = 0;  // > 0: waiting to be re-sent
    Nanos backoff = 10 * kMillis;
    bool finished = false;
    StatusOr<JobResult> result = absl::UnknownError("pending");
  };
  size_t window_ = 1024;
  bool ack_with_result_ = true;
  size_t async_in_flight_ = 0;
  uint64_t next_handle_ = 1;
  std::unordered_map<uint64_t, Pending> async_;            // handle -> submission
  std::unordered_map<uint64_t, uint64_t> async_requests_;  // request id -> handle
  std::unordered_map<uint64_t, uint64_t> async_jobs_;      // job id -> handle
  std::deque<uint64_t> async_ready_;                       // finished handles, arrival order
  std::set<std::pair<Nanos, uint64_t>> async_timers_;      // (deadline or retry time, handle)
};

}  // namespace tokengate::client
