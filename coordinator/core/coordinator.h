// CoordinatorCore: the coordinator's state machine. It owns jobs, tokens,
// ready queues, nodes and the dispatcher, and is driven by decoded frames,
// control calls and clock ticks. It never touches a socket: outgoing frames
// go through an Outbox, so unit tests run it with an in-memory outbox and a
// FakeClock. Owned by CoordinatorServer (or a test); every method runs on
// the single coordinator loop thread.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/clock.h"
#include "common/job.h"
#include "common/status.h"
#include "common/wire.h"
#include "coordinator/control/control.h"
#include "coordinator/core/journal.h"
#include "coordinator/core/metrics.h"
#include "coordinator/core/scheduler.h"

namespace tokengate::coordinator {

struct CoordinatorConfig {
  uint64_t max_live_tokens = 8'000'000;   // admission limit (tokens admitted, unfinished)
  uint64_t max_job_tokens = 4'000'000;    // per job
  uint32_t max_batch = 1024;              // tokens per batch
  Nanos batch_latency_ns = 200'000;       // flush a partial batch after this long
  uint32_t credit_per_worker = 2048;      // in-flight tokens per lane worker
  uint32_t heartbeat_ms = 500;            // told to nodes in Welcome
  Nanos node_timeout_ns = 3 * kSeconds;   // missed heartbeats => node lost
  uint8_t default_max_attempts = 3;       // error retries per token
  uint8_t poison_threshold = 3;           // node deaths while running => quarantined
  Nanos retry_backoff_ns = 20 * kMillis;  // doubled per attempt, capped at 1 s
  Nanos progress_interval_ns = 100 * kMillis;
  Nanos event_interval_ns = 250 * kMillis;
  size_t max_idempotency_keys = 1'000'000;
  size_t finished_jobs_kept = 1000;
  // Job ids start here. Without a journal the coordinator picks a random start, so a client
  // re-watching its job after a restart cannot be handed someone else's job with a reused id.
  uint64_t first_job_id = 1;
  std::string scheduler = "least-outstanding";
  // Refuse a job naming an operation no node has ever offered (once any node has registered):
  // a typo gets NOT_FOUND at submission instead of tokens that wait forever. Off
  // (--allow-unknown-ops): such tokens wait for a node that offers the op.
  bool reject_unknown_ops = true;
  size_t max_frame_bytes = kDefaultMaxFrameBytes;  // told to nodes in Welcome
};

// Where the core sends frames. `peer` is the ZeroMQ routing id.
class Outbox {
 public:
  virtual ~Outbox() = default;
  virtual void send(const std::string& peer, std::string frame) = 0;
};

class CoordinatorCore {
 public:
  CoordinatorCore(CoordinatorConfig config, Clock& clock, Outbox& outbox,
                  std::shared_ptr<prometheus::Registry> registry);
  ~CoordinatorCore();

  // A frame arrived from `peer` (already size-checked and decoded).
  void onFrame(const std::string& peer, wire::Frame::Reader frame);
  // A frame from `peer` failed to decode: reply with a Reject, keep serving.
  void onMalformed(const std::string& peer, const Status& error);
  // Raw bytes of one frame from the transport: size-checked against max_frame_bytes and
  // decoded (decodeFrame), then handed to onFrame, or to onMalformed when they do not decode.
  void onBytes(const std::string& peer, const void* data, size_t size);
  // The transport saw `peer`'s connection close (crash, kill, closed socket).
  // A node registered on it is lost at once, its in-flight tokens re-queued, without
  // waiting for node_timeout. Unknown peers (clients, strangers) are ignored.
  void onDisconnected(const std::string& peer);
  // Timers: heartbeats, deadlines, retries, batch latency, events. Returns
  // the time of the next deadline the loop should wake for.
  Nanos tick();
  // Sends every partial batch now (used on shutdown and by tests).
  void flushAll();

  // Replaces the placement policy (cost model, benchmarks). Loop thread only.
  void setScheduler(std::unique_ptr<Scheduler> scheduler);
  Scheduler& scheduler() { return *scheduler_; }

  // Records admissions and outcomes (`--journal`); not owned, outlives the core. Loop thread.
  void setJournal(JobJournal* journal) { journal_ = journal; }
  // Restart recovery (before serving): re-admits a journalled job under its old id (not
  // journalled again, not subject to the admission limit), or remembers a finished one so
  // its status and outputs can still be asked for.
  Status restoreJob(uint64_t job_id, JobSpec spec);
  void restoreFinished(control::JobStatus status);

  // ---- control surface (loop thread); ClusterControl wraps these ----
  StatusOr<uint64_t> submitJob(JobSpec job, const std::string& watcher = {},
                               uint64_t request_id = 0);
  StatusOr<control::JobStatus> jobStatus(uint64_t job_id, bool with_outputs = true) const;
  std::vector<control::JobStatus> listJobs() const;
  StatusOr<uint64_t> cancelJob(uint64_t job_id);
  StatusOr<bool> cancelToken(uint64_t token_id);
  StatusOr<control::OpStatus> pauseOp(const std::string& op, bool paused);
  StatusOr<uint64_t> drainOp(const std::string& op);
  StatusOr<uint64_t> cancelRunningOp(const std::string& op);
  StatusOr<control::OpStatus> setOpLimits(const std::string& op, control::OpLimits limits);
  std::vector<control::OpStatus> listOps() const;
  std::vector<control::NodeStatus> listNodes() const;
  // Whether a node with this id is registered and not dead (PeerAuth binds ids to keys).
  bool nodeLive(const std::string& id);
  StatusOr<control::NodeStatus> drainNode(const std::string& node_id, bool drain);
  StatusOr<uint64_t> evictNode(const std::string& node_id);
  control::ClusterStats stats() const;
  void setAdmissionLimit(uint64_t max_live_tokens) { config_.max_live_tokens = max_live_tokens; }
  void subscribe(uint64_t id, std::function<void(const control::Event&)> sink);
  void unsubscribe(uint64_t id);

  // Observability for tests and benchmarks.
  struct Counters {
    uint64_t admitted = 0, completed = 0, failed = 0, cancelled = 0, retried = 0;
    uint64_t dispatched = 0, batches = 0, late_results = 0, malformed = 0, rejects = 0;
    uint64_t node_deaths = 0, quarantined = 0;
    uint64_t disconnects = 0;  // nodes lost because their connection closed
    uint64_t requeued = 0;     // in-flight tokens re-queued because their node was lost or left
    uint64_t returned = 0;     // queued tokens handed back by draining nodes, re-queued
  };
  const Counters& counters() const { return counters_; }
  size_t readyCount() const;
  const CoordinatorConfig& config() const { return config_; }
  Metrics& metrics() { return metrics_; }

  // Telemetry hook (cost model): called for an evenly strided sample of accepted results, at
  // most `max_per_s` per second (the stride adapts every 100 ms to the result rate), so a
  // million-token job of tiny tokens pays a counter decrement per result, not a sample.
  struct Sample {
    TokenInfo token;
    uint32_t node = 0;
    Weight lane = Weight::kLight;
    double node_load = 0;  // tokens in flight on the node lane when the token was dispatched
    double node_speed = 1;
    uint64_t run_ns = 0, queue_ns = 0;
  };
  void setTelemetrySink(std::function<void(const Sample&)> sink, uint32_t max_per_s = 5'000) {
    telemetry_ = std::move(sink);
    telemetry_.per_window = std::max<uint32_t>(1, max_per_s / 10);
  }
  struct TelemetryStats {
    uint64_t seen = 0, sampled = 0;
  };
  TelemetryStats telemetryStats() const { return {telemetry_.seen, telemetry_.sampled}; }
  // Reclassification (cost model): effective lane for an op, visible in listOps().
  void setEffectiveLane(uint32_t op, Weight lane);
  uint32_t opIndex(const std::string& name);  // interns

 private:
  enum TokenState : uint8_t {
    kWaiting = 0,  // inputs not done
    kReady,        // in a ready queue
    kDelayed,      // retry backoff
    kRunning,      // dispatched to a node
    kDone,
    kFailed,
    kCancelled,
    kAlias,  // idempotency duplicate waiting for its original
  };
  enum ValueTag : uint8_t { kNoValue = 0, kInt, kDouble, kBool, kNull, kBoxed };
  static constexpr uint32_t kNoNode = UINT32_MAX;

  struct TokenRec {
    uint64_t val = 0;         // inline int/double/bool bits, or boxed index
    uint32_t pending = 0;     // inputs not finished
    uint32_t consumers = 0;   // dependents not finished (result freed at 0)
    uint32_t node = kNoNode;  // node slot while running
    uint32_t spec = 0;        // index into Job::specs
    uint8_t state = kWaiting;
    uint8_t attempt = 0;  // attempts started
    uint8_t deaths = 0;   // node losses while this token was in flight
    uint8_t tag = kNoValue;
    uint8_t lane = 0;    // lane it was dispatched on
    uint8_t errors = 0;  // error results seen (retry budget)
    uint16_t load = 0;   // tokens in flight on that node lane at dispatch (saturated; telemetry)
    float cost = 1;      // predicted cost when dispatched (outstanding-work accounting)
  };

  struct SpecRec {
    TokenSpec spec;
    uint32_t first = 0;  // job-local index of repetition 0
    uint32_t op = 0;     // coordinator op index
    Weight weight = Weight::kLight;
    uint8_t max_attempts = 3;
    bool keep_result = false;      // output (or sink) result retained
    bool explicit_weight = false;  // the spec named a weight class (overrides the op's lane)
  };

  struct Job {
    uint64_t id = 0;
    std::string name;
    Nanos admitted_at = 0, finished_at = 0;
    std::vector<SpecRec> specs;
    std::vector<TokenRec> tokens;
    std::vector<uint32_t> dep_offset;  // CSR: dependents of token i in deps[off[i]..off[i+1])
    std::vector<uint32_t> deps;
    std::vector<Value> boxed;  // non-scalar results
    std::vector<uint32_t> boxed_free;
    std::unordered_map<uint32_t, Status> errors;  // failed/cancelled tokens' causes
    std::vector<uint32_t> outputs;                // local indices reported in JobDone
    uint64_t done = 0, failed = 0, cancelled = 0, running = 0;
    std::vector<std::string> watchers;  // peers streaming progress
    // Outputs finished since the last progress frame, kept only while someone watches.
    std::vector<control::OutputResult> streamed;
    Nanos last_progress = 0;
    control::JobState state = control::JobState::kRunning;
    bool any_failed = false;
    bool any_output = false;  // some spec flagged output (else sinks are the outputs)
    Status first_error;       // cause reported for failed outputs without their own
  };

  struct FinishedJob {
    control::JobStatus status;
  };

  struct OpState {
    std::string name;
    Weight weight = Weight::kLight;     // declared default (from nodes)
    Weight effective = Weight::kLight;  // lane it is routed to
    bool weight_known = false;
    bool paused = false;
    control::OpLimits limits;
    std::deque<uint64_t> ready[kLaneCount];  // token ids per lane (lazy removal: state re-checked)
    size_t queued() const { return ready[0].size() + ready[1].size() + ready[2].size(); }
    uint64_t running = 0, completed = 0, failed = 0, retried = 0, cancelled = 0;
    uint64_t completed_at_last_event = 0;
    double rate_per_s = 0;
    double rate_tokens = 0;  // token bucket for max_rate_per_s
    double run_ns_sum = 0;
    uint64_t run_count = 0;
    prometheus::Counter* m_completed[kLaneCount] = {};
    prometheus::Counter* m_admitted[kLaneCount] = {};
    prometheus::Counter* m_retried[kLaneCount] = {};
    std::unordered_map<uint32_t, prometheus::Counter*> m_failed;  // (weight, code) -> counter
    prometheus::Histogram* m_run = nullptr;
    prometheus::Histogram* m_wait = nullptr;
    prometheus::Gauge* m_depth = nullptr;
    std::vector<double> run_buckets, wait_buckets;  // per-batch aggregation
    double run_sum = 0, wait_sum = 0;
    uint64_t failed_since_event = 0;
    std::string last_error;
  };

  struct PendingBatch {
    std::vector<uint64_t> ids;
    Nanos first_at = 0;
    double work = 0;  // predicted cost of the tokens in it (Scheduler::batchWorkTarget)
  };

  struct NodeRec {
    std::string id;
    std::string peer;  // routing id
    uint64_t session = 0;
    uint64_t incarnation = 0;
    uint32_t pid = 0;
    control::NodeState state = control::NodeState::kReady;
    Nanos last_seen = 0;
    double speed_factor = 1.0;
    double speed = 1.0;        // observed relative speed: Scheduler::nodeSpeed (1 = fastest)
    std::vector<bool> offers;  // by op index
    std::vector<std::string> op_names;
    struct Lane {
      bool present = false;
      std::vector<uint32_t> cores;
      uint32_t workers = 0;
      uint64_t in_flight = 0;
      double outstanding = 0;
      uint32_t reported_queued = 0, reported_running = 0;
      uint64_t busy_ns = 0;
      Nanos busy_at = 0;
      double utilization = 0;
      prometheus::Gauge* m_in_flight = nullptr;
      prometheus::Gauge* m_util = nullptr;
    } lanes[kLaneCount];
    PendingBatch batch;
    uint64_t suspect = 0;  // isolated suspect token in flight (0 = none)
    uint64_t completed = 0;
    uint64_t rss = 0;
  };

  // Admission.
  Status buildJob(Job& job, JobSpec spec);
  void resolveAliases(Job& job);
  // Token helpers.
  Job* findJob(uint64_t job_id);
  const Job* findJob(uint64_t job_id) const;
  static uint64_t tokenId(uint64_t job, uint32_t local) { return (job << 32) | local; }
  TokenInfo tokenInfo(const Job& job, uint32_t local) const;
  void makeReady(Job& job, uint32_t local);
  void setResult(Job& job, TokenRec& t, const Value& v);
  Value getResult(const Job& job, const TokenRec& t) const;
  void freeResult(Job& job, TokenRec& t);
  void completeToken(Job& job, uint32_t local, const Value& v);
  void failToken(Job& job, uint32_t local, const Status& cause, bool cancelled);
  void finishToken(Job& job, uint32_t local);
  void retryToken(Job& job, uint32_t local, bool count_error);
  void maybeFinishJob(Job& job);
  bool isOutput(const Job& job, uint32_t local) const;
  prometheus::Counter& failedCounter(OpState& op, Weight weight, StatusCode code);
  // Tokens in `n`'s batch not yet sent go back to the ready queues (drain).
  void requeueUnsentBatch(NodeRec& n);
  void releaseFromNode(Job& job, TokenRec& t);

  // Nodes.
  void onHello(const std::string& peer, wire::NodeHello::Reader hello);
  void onHeartbeat(const std::string& peer, wire::Heartbeat::Reader hb);
  void onResults(const std::string& peer, wire::ResultBatch::Reader rb);
  void onBye(const std::string& peer, wire::Bye::Reader bye);
  NodeRec* nodeByPeer(const std::string& peer);
  NodeRec* nodeById(const std::string& id);
  void loseNode(uint32_t slot, const std::string& why);
  void sendControlCancel(uint32_t slot, const std::vector<uint64_t>& ids);
  void sendUnknownSession(const std::string& peer);
  control::NodeStatus nodeStatus(const NodeRec& n) const;
  void updateNodeGauges();

  // Dispatch.
  void dispatch();
  void dispatchLane(Weight lane);
  size_t dispatchSlice(uint32_t op, Weight lane, uint64_t max_tokens);
  void flushBatch(uint32_t slot);
  // Appends a placed token to the node's pending batch and sends the batch once it is full by
  // count or by predicted work (`work_target` 0 = count only).
  void addToBatch(NodeRec& n, uint32_t slot, uint64_t id, double cost, double work_target,
                  Nanos now);
  bool opDispatchable(OpState& op, int lane) const;
  Weight laneFor(const SpecRec& s) const;

  // Client messages.
  void onSubmit(const std::string& peer, wire::SubmitJob::Reader submit);
  void onWatch(const std::string& peer, wire::JobRef::Reader ref);
  void sendProgress(Job& job, bool done);
  void sendJobDone(const std::string& peer, const control::JobStatus& s);
  control::JobStatus statusOf(const Job& job, bool with_outputs) const;
  std::string outputName(const Job& job, uint32_t local) const;
  // Queues output `local` for the next progress frame if the job is watched.
  void streamOutput(Job& job, uint32_t local, Status status, const Value& value);
  void sendReject(const std::string& peer, const Status& s, uint64_t request_id = 0);
  StatusOr<uint64_t> admitJob(uint64_t job_id, JobSpec spec, const std::string& watcher,
                              uint64_t count);
  Status checkOpsKnown(const JobSpec& spec) const;

  // Events.
  void emit(const control::Event& event);
  void emitPeriodic(Nanos now);
  void flushOpMetrics(OpState& op);

  CoordinatorConfig config_;
  Clock& clock_;
  Outbox& outbox_;
  Metrics metrics_;
  std::unique_ptr<Scheduler> scheduler_;

  uint64_t next_job_;
  uint64_t jobs_admitted_ = 0;  // this process (resumed jobs included)
  std::unordered_map<uint64_t, std::unique_ptr<Job>> jobs_;
  std::deque<FinishedJob> finished_;
  std::unordered_map<uint64_t, size_t>
      finished_index_;  // job id -> position hint (linear fallback)
  uint64_t live_tokens_ = 0;

  std::vector<OpState> ops_;
  std::unordered_map<std::string, uint32_t> op_index_;
  std::deque<uint64_t> suspects_;  // tokens that were in flight when a node died

  std::vector<NodeRec> nodes_;
  std::unordered_map<std::string, uint32_t> node_by_peer_;
  uint64_t next_session_ = 1;

  // Deadlines (absolute) and retry backoff, min-heaps of (time, token id).
  using TimedToken = std::pair<Nanos, uint64_t>;
  std::priority_queue<TimedToken, std::vector<TimedToken>, std::greater<>> deadlines_;
  std::priority_queue<TimedToken, std::vector<TimedToken>, std::greater<>> delayed_;

  struct KeyEntry {
    uint64_t token = 0;  // original token
    bool finished = false;
    Status status;
    Value value;
    std::vector<uint64_t> aliases;  // tokens waiting on the original
  };
  std::unordered_map<std::string, KeyEntry> keys_;
  std::deque<std::string> key_order_;
  std::unordered_map<uint64_t, std::string> key_of_token_;

  std::unordered_map<uint64_t, std::function<void(const control::Event&)>> subscribers_;
  Nanos last_event_ = 0;
  Nanos last_rate_ = 0;
  Nanos last_tick_ = 0;

  struct TelemetryTap {
    std::function<void(const Sample&)> sink;
    uint32_t per_window = 500;  // samples per 100 ms window
    Nanos window_start = 0;
    uint64_t window_results = 0, last_window_results = 0;
    uint32_t window_sampled = 0;
    uint32_t stride = 1, countdown = 1;
    uint64_t seen = 0, sampled = 0;
    TelemetryTap& operator=(std::function<void(const Sample&)> f) {
      sink = std::move(f);
      return *this;
    }
    explicit operator bool() const { return static_cast<bool>(sink); }
    // Per accepted result: true when this one is sampled.
    bool take() {
      ++seen;
      ++window_results;
      if (--countdown > 0) return false;
      countdown = stride;
      if (window_sampled >= per_window) return false;
      ++window_sampled;
      ++sampled;
      return true;
    }
    void tick(Nanos now);  // once per result batch
  };
  TelemetryTap telemetry_;
  JobJournal* journal_ = nullptr;
  Counters counters_;
  prometheus::Gauge* m_nodes_[3] = {};
  prometheus::Counter* m_jobs_[4] = {};

  // Scratch buffers reused across dispatch rounds.
  std::vector<TokenInfo> scratch_tokens_;
  std::vector<Placement> scratch_place_;
  std::vector<Candidate> scratch_cands_;
  std::vector<double> scratch_costs_;
};

}  // namespace tokengate::coordinator
