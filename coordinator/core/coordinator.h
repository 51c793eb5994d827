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
#include "coordinator/core/convictions.h"
#include "coordinator/core/dispatcher.h"
#include "coordinator/core/held_acks.h"
#include "coordinator/core/idempotency_index.h"
#include "coordinator/core/job_table.h"
#include "coordinator/core/journal.h"
#include "coordinator/core/metrics.h"
#include "coordinator/core/node_table.h"
#include "coordinator/core/op_table.h"
#include "coordinator/core/outbox.h"
#include "coordinator/core/run_timeouts.h"
#include "coordinator/core/scheduler.h"
#include "coordinator/core/verifier.h"

namespace tokengate::coordinator {

struct CoordinatorConfig {
  uint64_t max_live_tokens = 8'000'000;   // admission limit (tokens admitted, unfinished)
  uint64_t max_job_tokens = 4'000'000;    // per job
  uint32_t max_batch = 1024;              // tokens per batch
  uint32_t credit_per_worker = 2048;      // in-flight tokens per lane worker
  uint32_t heartbeat_ms = 500;            // told to nodes in Welcome
  Nanos node_timeout_ns = 3 * kSeconds;   // missed heartbeats => node lost
  uint8_t default_max_attempts = 3;       // error retries per token
  uint8_t poison_threshold = 3;           // node deaths while running => quarantined
  Nanos retry_backoff_ns = 20 * kMillis;  // doubled per attempt, capped at 1 s
  Nanos progress_interval_ns = 100 * kMillis;
  // SubmitJob.ackWithResult (held_acks.h): how long an admitted, watched job's SubmitReply may
  // wait for the job's JobDone to carry it instead (0 = never hold: always SubmitReply), and
  // how many acks may be held at once (beyond that they go out at once).
  Nanos ack_hold_ns = 300'000;
  size_t max_held_acks = 65536;
  Nanos event_interval_ns = 250 * kMillis;
  size_t max_idempotency_keys = 1'000'000;
  size_t finished_jobs_kept = 1000;
  // Resume, don't re-run (with a journal): results of tokens that take at least this many
  // inputs (fan-in tokens such as chunk sums) are checkpointed in batches with the group commit;
  // a restarted coordinator marks them done and runs only what is still needed. 0 = off.
  uint32_t checkpoint_min_inputs = 8;
  // With a journal: also checkpoint any other token that ran at least this long (ms) and whose
  // result is still needed (by dependents, or as an output/sink), whatever its fan-in; 0 = off.
  uint32_t checkpoint_min_run_ms = 1000;
  // Job ids start here (journal.h: epoch << 20). The app starts every process at a new epoch
  // (random without a journal), so a client re-watching its job after a restart cannot be
  // handed someone else's job with a reused id.
  uint64_t first_job_id = 1;
  // This process's incarnation, told to submitters and journalled with each job: a watch that
  // names another incarnation for a job id is answered NOT_FOUND. 0 = pick a random one.
  uint64_t incarnation = 0;
  std::string scheduler = "least-outstanding";
  // least-outstanding's queue horizon in ms of predicted work per worker (0 = off, the default;
  // LeastOutstandingOptions::horizon_ns). Negative = the scheduler's own default (20 ms).
  // Off by default: a held expensive token enters its node's lane behind the cheap tokens
  // queued meanwhile, so in a flood of cheap tokens (Leibniz dec50 under ASan: chunk sums held
  // while terms stream) the expensive ones starve (JournalClusterTest's checkpoints at 80%
  // covered ~20% of the chunks instead of ~80%).
  double placement_horizon_ms = 0;
  // Refuse a job naming an operation no node has ever offered (once any node has registered):
  // a typo gets NOT_FOUND at submission instead of tokens that wait forever. Off
  // (--allow-unknown-ops): such tokens wait for a node that offers the op.
  bool reject_unknown_ops = true;
  size_t max_frame_bytes = kDefaultMaxFrameBytes;  // told to nodes in Welcome
  // A departed node (lost, left, evicted) stays listed as dead this long, then its record and
  // metric series are dropped.
  Nanos departed_node_retention_ns = 5 * 60 * kSeconds;
  // Run timeout (start-to-close: dispatch to result, the node's queue included) of a token that
  // names none and whose op sets none (OpLimits::run_timeout_ms); 0 = off. A token still
  // running then is re-queued elsewhere (counted against its attempts) and its node gets a
  // strike; run_timeout_quarantine strikes within run_timeout_strike_window_ns quarantine the
  // node id (0 = never); a strike expires that long after it was given (0 = never expires).
  // run_timeouts.h
  Nanos run_timeout_ns = 10 * 60 * kSeconds;
  uint32_t run_timeout_quarantine = 3;
  // Verified execution (verifier.h): how long a sampled token waits for a node that has not
  // run it yet before its one result is accepted unverified (or, after two results that differ,
  // before it fails with DATA_LOSS).
  Nanos verify_wait_ns = 10 * kSeconds;
  // Secret seed of the verify sample (0 = random per process; set only for reproducible tests:
  // a node that knows it can tell which of its tokens are checked).
  uint64_t verify_seed = 0;
  Nanos run_timeout_strike_window_ns = 60 * 60 * kSeconds;
};

class CoordinatorCore {
 public:
  CoordinatorCore(CoordinatorConfig config, Clock& clock, Outbox& outbox,
                  std::shared_ptr<prometheus::Registry> registry);
  ~CoordinatorCore();

  // A frame arrived from `peer` (already size-checked and decoded).
  // `key`: the peer's CURVE public key (PeerAuth read it; "" with CURVE off). A node's key is
  // kept with its registration and named in a conviction (convictions.h).
  void onFrame(const std::string& peer, wire::Frame::Reader frame, const std::string& key = {});
  // A frame from `peer` failed to decode: reply with a Reject, keep serving.
  void onMalformed(const std::string& peer, const Status& error);
  // Raw bytes of one frame from the transport: size-checked against max_frame_bytes and
  // decoded (decodeFrame), then handed to onFrame, or to onMalformed when they do not decode.
  void onBytes(const std::string& peer, const void* data, size_t size, const std::string& key = {});
  // The transport saw `peer`'s connection close (crash, kill, closed socket).
  // A node registered on it is lost at once, its in-flight tokens re-queued, without
  // waiting for node_timeout. Unknown peers (clients, strangers) are ignored.
  void onDisconnected(const std::string& peer);
  // Timers: heartbeats, deadlines, retries, events. Returns the time of the next deadline the
  // loop should wake for.
  Nanos tick();
  // Held acknowledgements (SubmitJob.ackWithResult) whose hold ended go out as SubmitReply; the
  // server calls this every loop turn (O(1) when none is due) and wakes by nextAckDue(), not
  // by tick()'s result (a tick per hold would cost a node walk per submission).
  void releaseAcks();
  Nanos nextAckDue() const { return held_acks_.nextDue(); }
  size_t heldAcks() const { return held_acks_.held(); }
  // Sends every partial batch now. The server calls it after each burst of frames (and on
  // shutdown): a busy node's batch fills only while the burst lasts (dispatcher.h).
  void flushAll();

  // Replaces the placement policy (cost model, benchmarks). Loop thread only.
  void setScheduler(std::unique_ptr<Scheduler> scheduler);
  Scheduler& scheduler() { return *scheduler_; }

  // Records admissions and outcomes (`--journal`); not owned, outlives the core. Loop thread.
  void setJournal(JobJournal* journal) { journal_ = journal; }
  // Restart recovery (before serving): re-admits a journalled job under its old id (not
  // journalled again, not subject to the admission limit), or remembers a finished one so
  // its status and outputs can still be asked for.
  // `checkpoint`: results of its tokens that had finished (resume.cc): they are not run again,
  // nor are tokens whose results only they needed.
  Status restoreJob(uint64_t job_id, JobSpec spec, uint64_t incarnation = 0,
                    const Checkpoint* checkpoint = nullptr);
  void restoreFinished(control::JobStatus status);
  // The journalled result of an idempotency key's original token: later tokens with `key`
  // (including those of jobs restored after it) complete with `value` instead of running.
  // Call before restoreJob() so that restored jobs find their keys.
  void restoreKey(const std::string& key, uint64_t token_id, Value value);
  // A journalled quarantine in force: the node (by id, and by key when one is named) joins
  // quarantined until an operator undrains it. Before serving.
  void restoreQuarantine(const QuarantineNote& note);
  const Convictions& convictions() const { return convictions_; }
  // The next id to hand out (the journal's new epoch); loop thread, before serving.
  void setNextJobId(uint64_t id) { next_job_ = id; }
  uint64_t incarnation() const { return config_.incarnation; }

  // Group commit (journal.h). With a journal, submitJobAsync() appends the admission record and
  // holds the job; commitJournal() (the server loop calls it after each burst of frames) makes
  // every held record durable with one commit, then admits the held jobs and calls their `done`
  // (which sends the acknowledgement). Without a journal `done` is called at once.
  using SubmitDone = std::function<void(StatusOr<uint64_t>)>;
  void submitJobAsync(JobSpec job, const std::string& watcher, uint64_t request_id,
                      SubmitDone done);
  void commitJournal();
  // commitJournal() if the journal's buffer holds key results (before posted work, which may
  // read results, runs): a key's result reaches the file before any client can see it.
  void writeKeyResults();
  size_t heldAdmissions() const { return held_.size(); }

  // ---- control surface (loop thread); ClusterControl wraps these ----
  // Admits at once (with a journal: its own commit, i.e. one fdatasync per call).
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
    // Token entries looked at when nodes were lost, left or evicted: each event visits only
    // that node's own token index, never every live token.
    uint64_t node_token_visits = 0;
    uint64_t run_timeouts = 0;       // tokens re-queued or failed by their run timeout
    uint64_t nodes_quarantined = 0;  // quarantines for withheld results (run timeouts)
    // Tokens of resumed jobs not run again: checkpointed, or needed only by checkpointed ones.
    uint64_t resumed_done = 0;
    uint64_t verify_quarantines = 0;  // nodes quarantined for results other nodes contradicted
    uint64_t reopened = 0;            // finished tokens run again (a lying node's, or fed by one)
  };
  const Verifier::Counters& verifyCounters() const { return verifier_.counters(); }
  const Counters& counters() const {
    counters_.dispatched = dispatcher_.dispatched();
    counters_.batches = dispatcher_.batches();
    return counters_;
  }
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
  using Job = JobRec;

  // Admission.
  Status buildJob(Job& job, JobSpec spec, const Checkpoint* resume = nullptr);
  // Restart (resume.cc): marks checkpointed tokens done with their results, and tokens needed
  // only by them done without running; recomputes pending inputs and consumers of the rest.
  // Returns the number of tokens marked done.
  uint64_t applyCheckpoint(Job& job, const Checkpoint& checkpoint);
  // Hands the checkpoint results gathered since the last commit to the journal (resume.cc).
  void flushCheckpoints();
  void resolveAliases();
  // Completes (ok `status`) or fails the aliases of a finished idempotency key.
  void settleAliases(const std::vector<uint64_t>& aliases, const Status& status,
                     const Value& value);
  Job* findJob(uint64_t job_id) { return jobs_.find(job_id); }
  static uint64_t tokenId(uint64_t job, uint32_t local) { return JobTable::tokenId(job, local); }
  void makeReady(Job& job, uint32_t local);
  // `run_ns`: how long the node ran it (0: not run, e.g. an alias); a long run of a token whose
  // result is still needed is checkpointed (checkpoint_min_run_ms).
  void completeToken(Job& job, uint32_t local, const Value& v, uint64_t run_ns = 0);
  void failToken(Job& job, uint32_t local, const Status& cause, bool cancelled);
  void finishToken(Job& job, uint32_t local);
  void retryToken(Job& job, uint32_t local, bool count_error);
  void maybeFinishJob(Job& job);
  void releaseFromNode(Job& job, TokenRec& t);

  // Nodes.
  void onHello(const std::string& peer, wire::NodeHello::Reader hello, const std::string& key);
  void onHeartbeat(const std::string& peer, wire::Heartbeat::Reader hb);
  void onResults(const std::string& peer, wire::ResultBatch::Reader rb);
  void onBye(const std::string& peer, wire::Bye::Reader bye);
  NodeRec* nodeByPeer(const std::string& peer);
  NodeRec* nodeById(const std::string& id);
  // Ends `slot`'s registration; its in-flight tokens are re-queued. `blame`: the loss may be
  // the tokens' fault (crash, timeout), so deaths are counted and poison quarantined; a clean
  // exit or an eviction re-queues without blame.
  // `left`: the node said bye; its record goes at once (NodeTable::markDeparted), lost ones
  // stay listed as dead for the retention.
  void loseNode(uint32_t slot, const std::string& why, bool blame = true, bool left = false);
  void sendControlCancel(uint32_t slot, const std::vector<uint64_t>& ids);
  void sendUnknownSession(const std::string& peer);
  // Run timeouts (run_timeouts.cc): the timeout that applies to a token, the expiry of due
  // ones (tick), and the quarantine of a node that withholds results: no new work, its running
  // tokens re-queued elsewhere, listed as quarantined until an operator undrains it.
  Nanos runTimeoutFor(const Job& job, const TokenRec& t) const;
  void expireRunTimeouts(Nanos now);
  void quarantineNode(uint32_t slot, const std::string& why);
  // Records a conviction (convictions.h) and journals it. Returns true when `node_id` was not
  // convicted yet.
  bool convict(const std::string& node_id, const std::string& key, const std::string& why,
               QuarantineNote::Cause cause);
  // Verified execution (verify_core.cc): the verify rate of a token of spec `s`, a sampled
  // token's result (a vote), an outcome applied, the verdict on a node found lying (quarantine,
  // its unverified results re-run with everything they fed), parked tokens that waited too long.
  uint32_t verifyBasisPointsFor(const Job& job, const SpecRec& s) const;
  void onVerifiedResult(Job& job, uint32_t local, uint32_t slot, Value value);
  void applyVerifyOutcome(Job& job, uint32_t local, Verifier::Outcome outcome);
  void convictNode(const std::string& node_id, const std::string& why);
  uint64_t reopenNodeWork(const std::string& node_id);
  void expireVerifications(Nanos now);
  control::NodeStatus nodeStatus(const NodeRec& n) const;
  void updateNodeGauges();

  // Dispatch (dispatcher.h).
  void dispatch();

  // Client messages.
  void onSubmit(const std::string& peer, wire::SubmitJob::Reader submit);
  void onWatch(const std::string& peer, wire::JobRef::Reader ref);
  void onAdmin(const std::string& peer, wire::AdminRequest::Reader req);  // admin.cc
  void sendProgress(Job& job, bool done);
  // request_id != 0: this JobDone also acknowledges that submission (a held ack).
  void sendJobDone(const std::string& peer, const control::JobStatus& s, uint64_t request_id = 0);
  void sendSubmitReply(const std::string& peer, uint64_t request_id, StatusOr<uint64_t> id);
  // Queues output `local` for the next progress frame if the job is watched.
  void streamOutput(Job& job, uint32_t local, Status status, const Value& value);
  void sendReject(const std::string& peer, const Status& s, uint64_t request_id = 0);
  StatusOr<uint64_t> admitJob(uint64_t job_id, JobSpec spec, const std::string& watcher,
                              uint64_t count, uint64_t incarnation,
                              const Checkpoint* resume = nullptr);
  // Validation and the admission limit (held admissions count against it).
  Status checkAdmission(const JobSpec& spec, uint64_t count);
  // Hands out the next job id; records a new epoch in the journal when one begins.
  uint64_t allocateJobId();
  Status checkOpsKnown(const JobSpec& spec) const;

  // Events.
  void emit(const control::Event& event);
  void emitPeriodic(Nanos now);

  CoordinatorConfig config_;
  Clock& clock_;
  Outbox& outbox_;
  Metrics metrics_;
  std::unique_ptr<Scheduler> scheduler_;

  uint64_t next_job_;
  // Admissions appended to the journal, waiting for commitJournal().
  struct HeldAdmission {
    uint64_t id = 0;
    JobSpec spec;
    std::string watcher;
    uint64_t count = 0;
    SubmitDone done;
  };
  std::vector<HeldAdmission> held_;
  // Results of checkpointed tokens finished since the last commitJournal(), by job.
  std::unordered_map<uint64_t, Checkpoint> checkpoints_;
  uint64_t held_tokens_ = 0;
  JobTable jobs_{config_.finished_jobs_kept};

  OpTable ops_{metrics_};
  NodeTable nodes_{metrics_, config_.departed_node_retention_ns};
  RunTimeouts runs_{{.quarantine_after = config_.run_timeout_quarantine,
                     .strike_window = config_.run_timeout_strike_window_ns}};
  Verifier verifier_{{.wait = config_.verify_wait_ns}};
  Convictions convictions_;
  Dispatcher dispatcher_{{config_.max_batch, config_.credit_per_worker},
                         jobs_,
                         ops_,
                         nodes_,
                         clock_,
                         outbox_,
                         metrics_};
  uint64_t next_session_ = 1;

  // Deadlines (absolute) and retry backoff, min-heaps of (time, token id).
  using TimedToken = std::pair<Nanos, uint64_t>;
  std::priority_queue<TimedToken, std::vector<TimedToken>, std::greater<>> deadlines_;
  std::priority_queue<TimedToken, std::vector<TimedToken>, std::greater<>> delayed_;

  IdempotencyIndex keys_{config_.max_idempotency_keys};
  // The journal's buffer holds key results: JobDone frames wait in held_done_ for the commit
  // that writes them (sendJobDone, commitJournal).
  bool keys_unwritten_ = false;
  std::vector<std::pair<std::string, std::string>> held_done_;  // (peer, frame)
  HeldAcks held_acks_;
  FrameScratch scratch_;  // first segment of acknowledgements, progress and JobDone frames

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
  mutable Counters counters_;  // dispatched/batches copied from the dispatcher on read
  prometheus::Gauge* m_nodes_[control::kNodeStateCount] = {};
  prometheus::Counter* m_jobs_[4] = {};
  // tokengate_verifications_total by outcome, brought up to the Verifier's counters.
  void syncVerifyMetrics();
  prometheus::Counter* m_verify_[5] = {};
  Verifier::Counters verify_synced_;
};

}  // namespace tokengate::coordinator
