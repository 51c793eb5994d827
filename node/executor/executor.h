// Executor: runs tokens on worker threads pinned one per allowed core.
//
// Lanes: `heavy` owns the last `heavy_cores` cores of the allowed set; light
// and medium share the rest (one pool, one queue per lane, served
// round-robin). With heavy_cores = 0 a single pool serves all three lanes.
//
// Cost model of the data path (what keeps it well under 1 us per token):
//  * submit() takes each pool's lock once per batch, not per token;
//  * a worker pops up to 64 light (4 medium, 1 heavy) tokens per lock;
//  * a worker buffers results and publishes them to the outbox in groups,
//    calling `notify` (e.g. an eventfd write) only when the outbox goes from
//    empty to non-empty;
//  * per-token bookkeeping is one clock read and sched_getcpu() (vDSO/rseq) for
//    ops that take 2 us or more; faster ops are timed in groups of up to 32
//    consecutive tokens of the same op (one clock read per group; each token
//    reports the group's mean run time, and the group's start as its start),
//    because a clock read cost as much as such a token. A token with a
//    deadline always opens a new group, so its deadline is checked against a
//    fresh reading.
//
// Inline fast path: a lone light token of an operation declared non-blocking
// (Operation::non_blocking, OpFlags::kNonBlocking) and last timed under
// config.inline_below_ns may run on the caller's thread while nothing else is
// outstanding (canRunInline/runInline): the node's link thread then answers
// it without a worker wake-up and an eventfd wake-up back. Undeclared
// operations always run on a worker.
//
// Control (cancel, drain, session reset) bumps `control_epoch_`; a worker
// compares the epoch before each token it starts and only then takes the
// control lock to filter its popped-but-unstarted tokens.
//
// Ownership: the node's link owns the Executor. submit/cancel*/drain/
// takeResults/stats may be called from any thread (the link thread in
// practice); workers are internal threads joined by the destructor.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/container/inlined_vector.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/job.h"
#include "common/status.h"
#include "common/value.h"
#include "node/registry/registry.h"

namespace tokengate::node {

using Args = absl::InlinedVector<Value, 1>;

struct Task {
  uint64_t id = 0;
  uint32_t attempt = 0;
  uint64_t session = 0;  // opaque tag copied to the result (the link's session)
  const Operation* op = nullptr;
  Weight lane = Weight::kUnspecified;  // unspecified = the operation's default
  Nanos deadline_ns = 0;               // absolute (Clock::now() scale); 0 = none
  Args args;
  // Set by the executor.
  Nanos enqueued_ns = 0;
  uint64_t seq = 0;
};

struct TaskResult {
  uint64_t id = 0;
  uint32_t attempt = 0;
  uint64_t session = 0;
  StatusOr<Value> outcome;
  uint64_t run_ns = 0;    // includes the --speed-factor penalty
  uint64_t queue_ns = 0;  // submit -> start
  uint32_t core = 0;      // sched_getcpu() of the worker that ran it
  Weight lane = Weight::kLight;
};

// A queued token handed back unrun (drain).
struct ReturnedTask {
  uint64_t id = 0;
  uint32_t attempt = 0;
  uint64_t session = 0;
};

struct ExecutorConfig {
  std::vector<int> cores;   // empty = every core in sched_getaffinity()
  int heavy_cores = -1;     // -1 = 1 when >= 2 cores, else 0 (heavy shares)
  double speed_factor = 1;  // > 1 slows this node: (F-1) x run time extra per token
  bool pin = true;          // pthread_setaffinity_np each worker to its core
  // Consecutive tokens of an op whose last timed group averaged under this are timed as a
  // group (one clock read per group, each token reports the group's mean run time).
  int64_t group_below_ns = 2'000;
  // Inline fast path (runInline): a lone light token of an operation whose last run took under
  // this may run on the caller's thread (the node's link thread) while the executor is idle,
  // saving the hand-off to a worker and the wake-up back. 0 = never (the default here; the node
  // turns it on, NodeConfig::inline_below_ns).
  int64_t inline_below_ns = 0;
};

struct LaneStats {
  Weight weight = Weight::kLight;
  uint32_t queued = 0;
  uint32_t running = 0;  // popped by a worker and not finished
  uint64_t busy_ns = 0;  // cumulative run time of this lane's tokens
  uint64_t completed = 0;
};

struct CoreStats {
  uint32_t core = 0;
  uint64_t tokens = 0;
};

struct LaneLayout {
  Weight weight = Weight::kLight;
  std::vector<int> cores;
  uint32_t workers = 0;
};

// The cores this process may run on (sched_getaffinity), ascending.
std::vector<int> allowedCores();

class Executor {
 public:
  // `notify` runs on a worker thread whenever results or returned tokens
  // become available after the outbox was empty; it must be thread-safe and
  // cheap. InvalidArgument if `cores` names a core outside the affinity mask
  // or heavy_cores leaves no core for light/medium.
  static StatusOr<std::unique_ptr<Executor>> create(ExecutorConfig config,
                                                    std::function<void()> notify,
                                                    const Clock& clock = SystemClock::instance());
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Enqueues a batch. Tasks need a non-null op. While draining, the batch is
  // handed straight back as returned tokens.
  void submit(std::vector<Task>&& tasks);
  // Whether `t` may run on the calling thread now (runInline): inline runs are on, nothing is
  // outstanding, not draining, no speed factor, the token's lane is light, its operation is
  // declared non-blocking (Operation::non_blocking) and its last run (on a worker, or inline)
  // took under config.inline_below_ns. An operation nobody has timed yet is not fast: its first
  // token always goes to a worker.
  bool canRunInline(const Task& t) const;
  // Runs `t` on the calling thread and returns its result (queue_ns 0, run_ns measured, core =
  // the caller's CPU). Counts in the lane's completed/busy figures and coreStats like a worker's
  // token. A run of inline_below_ns or more marks the operation slow (its next tokens go to the
  // workers until a worker times it fast again). Call only when canRunInline(t) said yes.
  TaskResult runInline(Task& t);

  // Moves everything finished so far into `results` / `returned` (appends).
  void takeResults(std::vector<TaskResult>& results, std::vector<ReturnedTask>& returned);

  // Queued tokens with these ids are dropped (no result: the coordinator
  // already counts them cancelled); running ones get their cancel flag set
  // and report whatever the operation returns.
  void cancelTokens(std::span<const uint64_t> ids);
  // Every token of `op` enqueued before this call: queued (and popped but
  // unstarted) ones are not run and each reports a Cancelled result; running
  // ones get their cancel flag set and report whatever the operation returns
  // (Cancelled if it observes the flag). So every token yields one result.
  void cancelOp(const Operation* op);
  // Stop starting tokens: queued ones are handed back through takeResults
  // (returned), running ones finish; later submits are returned at once.
  void drain();
  void undrain();
  bool draining() const { return draining_.load(std::memory_order_relaxed); }
  // Drops every queued (not running) token without a result; returns how
  // many. Used when the coordinator's session is lost (it re-queues them).
  size_t dropQueued();

  // Tokens submitted and not yet finished, dropped or returned.
  uint64_t outstanding() const { return outstanding_.load(std::memory_order_acquire); }
  bool idle() const { return outstanding() == 0; }

  std::vector<LaneStats> laneStats() const;
  std::vector<CoreStats> coreStats() const;
  const std::vector<LaneLayout>& layout() const { return layout_; }
  const std::vector<int>& cores() const { return cores_; }
  double speedFactor() const { return config_.speed_factor; }

 private:
  struct Pool;
  struct Worker;
  struct LaneCounters {
    std::atomic<int64_t> queued{0};
    std::atomic<int64_t> running{0};
    std::atomic<uint64_t> busy_ns{0};
    std::atomic<uint64_t> completed{0};
  };

  Executor(ExecutorConfig config, std::function<void()> notify, const Clock& clock);
  void startWorkers();
  void workerLoop(Worker& w);
  // Applies pending control to a worker's unstarted tokens [from, end).
  // Returns the new end (kept tokens compacted to the front of the range).
  size_t filterLocal(Worker& w, std::vector<Task>& local, size_t from, uint64_t& seen_epoch);
  // kDrop: no result (cancelTokens / dropQueued); kReport: a Cancelled result (cancelOp).
  enum class Cancel { kNone, kDrop, kReport };
  Cancel cancelOfLocked(const Task& t) const;
  static TaskResult cancelledUnstarted(const Task& t, Nanos now);
  // Runs `t` as started at `start` and appends its result (run_ns and core are set when its
  // time group closes).
  void runOne(Worker& w, Task& t, std::vector<TaskResult>& out, Nanos start);
  // Consecutive tokens of one fast op timed together (see the header comment).
  struct TimeGroup {
    const Operation* op = nullptr;
    Nanos start = 0;
    size_t tokens = 0;  // the last `tokens` results belong to the open group
    bool fast = false;  // the last closed group averaged under config.group_below_ns per token
  };
  // Reads the clock, gives each of the group's results its share of the elapsed time (and the
  // speed-factor penalty), and opens an empty group at the new `now`.
  void closeGroup(Worker& w, TimeGroup& g, std::vector<TaskResult>& results, Nanos& now,
                  Nanos& debt_ns);
  void publish(std::vector<TaskResult>& results, std::vector<ReturnedTask>* returned);
  // The operation's outcome for `t` started at `start` (deadline check, cancel-vs-deadline).
  StatusOr<Value> execute(const Task& t, const std::atomic<uint64_t>* cancel_word, Nanos start);
  // The inline fast path's table of operations last timed fast (lock-free: workers write it
  // when a timing changes an op's class, the link thread reads it).
  bool knownFast(const Operation* op) const;
  void noteSpeed(Worker& w, const Operation* op, Nanos per_token_ns);
  void setFast(const Operation* op, bool fast);
  void finished(uint64_t n) { outstanding_.fetch_sub(n, std::memory_order_acq_rel); }
  void bumpEpochAndFlagRunning(const std::function<bool(uint64_t id, const Operation* op)>& hit);
  void pruneControlLocked();
  Pool& poolFor(Weight lane);

  const ExecutorConfig config_;
  const std::function<void()> notify_;
  const Clock& clock_;
  std::vector<int> cores_;
  std::vector<LaneLayout> layout_;
  LaneCounters lanes_[kLaneCount];
  std::vector<std::unique_ptr<Pool>> pools_;
  Pool* pool_by_lane_[kLaneCount] = {nullptr, nullptr, nullptr};
  std::vector<std::unique_ptr<Worker>> workers_;

  std::atomic<uint64_t> next_seq_{1};
  std::atomic<uint64_t> outstanding_{0};
  std::atomic<bool> draining_{false};
  std::atomic<bool> stop_{false};

  // Control state: written by control calls, read by workers after an epoch
  // change. Entries carry the first seq they do NOT apply to, so a cancel
  // never reaches tokens enqueued after it.
  std::atomic<uint64_t> control_epoch_{0};
  mutable std::mutex control_mu_;
  std::unordered_map<uint64_t, uint64_t> cancelled_ids_  // id -> seq limit
      ABSL_GUARDED_BY(control_mu_);
  std::unordered_map<const Operation*, uint64_t> cancelled_ops_  // op -> seq limit
      ABSL_GUARDED_BY(control_mu_);
  uint64_t drop_below_seq_ ABSL_GUARDED_BY(control_mu_) = 0;  // dropQueued()

  static constexpr size_t kFastOpSlots = 64;  // more fast ops than this: the rest run on workers
  std::array<std::atomic<const Operation*>, kFastOpSlots> fast_ops_{};
  std::atomic<uint64_t> inline_cancel_{0};  // runInline's cancel word (never set: see runInline)
  mutable std::mutex inline_mu_;
  std::unordered_map<uint32_t, uint64_t> inline_by_core_ ABSL_GUARDED_BY(inline_mu_);

  std::mutex out_mu_;
  std::vector<TaskResult> out_results_ ABSL_GUARDED_BY(out_mu_);
  std::vector<ReturnedTask> out_returned_ ABSL_GUARDED_BY(out_mu_);
};

}  // namespace tokengate::node
