#include "node/executor/executor.h"

#include <fmt/format.h>
#include <pthread.h>
#include <sched.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <unordered_set>

namespace tokengate::node {

namespace {
constexpr size_t kMaxPop[kLaneCount] = {64, 4, 1};  // light, medium, heavy
constexpr size_t kPublishEvery = 256;               // results buffered per worker
constexpr Nanos kPublishAfterNs = 200'000;          // or this long after the first
constexpr Nanos kPayDebtAtNs = 200'000;             // speed-factor penalty granularity
constexpr Nanos kSleepAboveNs = 50'000;             // below this, spin instead of sleeping
constexpr size_t kGroupMax = 32;                    // tokens per timed group

int laneIndex(Weight w) { return static_cast<int>(w); }
}  // namespace

std::vector<int> allowedCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cores;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) {
    cores.push_back(0);
    return cores;
  }
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cores.push_back(c);
  return cores;
}

// FIFO of tasks kept as the batches they were submitted in: submit() moves
// a whole batch vector in (no per-task copy), workers pop from the front
// batch by index.
class TaskQueue {
 public:
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  void pushBatch(std::vector<Task>&& batch) {
    if (batch.empty()) return;
    size_ += batch.size();
    chunks_.push_back(std::move(batch));
  }
  // Moves up to n tasks from the front into `out`.
  void popInto(std::vector<Task>& out, size_t n) {
    while (n > 0 && !chunks_.empty()) {
      auto& front = chunks_.front();
      const size_t take = std::min(n, front.size() - head_);
      for (size_t i = 0; i < take; ++i) out.push_back(std::move(front[head_ + i]));
      head_ += take;
      size_ -= take;
      n -= take;
      if (head_ == front.size()) {
        chunks_.pop_front();
        head_ = 0;
      }
    }
  }
  template <typename F>
  void forEach(F&& f) const {
    for (size_t c = 0; c < chunks_.size(); ++c)
      for (size_t i = c == 0 ? head_ : 0; i < chunks_[c].size(); ++i) f(chunks_[c][i]);
  }
  template <typename Pred>
  size_t eraseIf(Pred&& pred) {
    size_t erased = 0;
    for (size_t c = 0; c < chunks_.size(); ++c) {
      auto& v = chunks_[c];
      const auto from = v.begin() + static_cast<long>(c == 0 ? head_ : 0);
      const size_t before = v.size();
      v.erase(std::remove_if(from, v.end(), pred), v.end());
      erased += before - v.size();
    }
    size_ -= erased;
    // Drop chunks emptied by the erase (the front one counts from head_).
    while (!chunks_.empty() && chunks_.front().size() == head_) {
      chunks_.pop_front();
      head_ = 0;
    }
    std::erase_if(chunks_, [](const std::vector<Task>& v) { return v.empty(); });
    return erased;
  }
  void clear() {
    chunks_.clear();
    head_ = 0;
    size_ = 0;
  }

 private:
  std::deque<std::vector<Task>> chunks_;
  size_t head_ = 0;  // consumed prefix of chunks_.front()
  size_t size_ = 0;
};

// Workers of one group of cores and the lanes they serve. `lanes` and
// `workers` are fixed after start-up; the rest is guarded by `mu`.
struct Executor::Pool {
  std::mutex mu;
  std::condition_variable cv;
  TaskQueue q[kLaneCount] ABSL_GUARDED_BY(mu);  // only the lanes in `lanes` are used
  std::vector<Weight> lanes;
  uint32_t workers = 0;
  size_t rr ABSL_GUARDED_BY(mu) = 0;
  bool stop ABSL_GUARDED_BY(mu) = false;

  bool anyQueued() const {
    for (Weight l : lanes)
      if (!q[laneIndex(l)].empty()) return true;
    return false;
  }
};

// One per core. `current_*` publish the token the worker is about to run so
// cancel calls can find it; `cancel_word` is the OpContext cancel flag.
struct Executor::Worker {
  int core = 0;
  Pool* pool = nullptr;
  std::thread thread;
  std::atomic<uint64_t> tokens{0};
  std::atomic<uint64_t> current_seq{0};
  std::atomic<uint64_t> current_id{0};
  std::atomic<const Operation*> current_op{nullptr};
  std::atomic<uint64_t> cancel_word{0};
  // The last class this worker wrote to fast_ops_ (noteSpeed skips unchanged ones).
  const Operation* classified_op = nullptr;
  bool classified_fast = false;
};

StatusOr<std::unique_ptr<Executor>> Executor::create(ExecutorConfig config,
                                                     std::function<void()> notify,
                                                     const Clock& clock) {
  const std::vector<int> allowed = allowedCores();
  std::vector<int> cores;
  if (config.cores.empty()) {
    cores = allowed;
  } else {
    for (int c : config.cores) {
      if (std::find(allowed.begin(), allowed.end(), c) == allowed.end())
        return absl::InvalidArgumentError(
            fmt::format("core {} is not in this process's affinity mask", c));
      if (std::find(cores.begin(), cores.end(), c) == cores.end()) cores.push_back(c);
    }
  }
  if (cores.empty()) return absl::InvalidArgumentError("no cores to run on");
  const int n = static_cast<int>(cores.size());
  if (config.heavy_cores < 0) config.heavy_cores = n >= 2 ? 1 : 0;
  if (config.heavy_cores >= n)
    return absl::InvalidArgumentError(fmt::format(
        "--heavy-cores {} leaves no core for light/medium work ({} cores)", config.heavy_cores, n));
  if (!(config.speed_factor >= 1.0))
    return absl::InvalidArgumentError("--speed-factor must be >= 1");
  config.cores = cores;
  std::unique_ptr<Executor> ex(new Executor(std::move(config), std::move(notify), clock));
  ex->startWorkers();
  return ex;
}

Executor::Executor(ExecutorConfig config, std::function<void()> notify, const Clock& clock)
    : config_(std::move(config)),
      notify_(std::move(notify)),
      clock_(clock),
      cores_(config_.cores) {}

void Executor::startWorkers() {
  const size_t heavy = static_cast<size_t>(config_.heavy_cores);
  const std::vector<int> shared(cores_.begin(), cores_.end() - static_cast<long>(heavy));
  const std::vector<int> reserved(cores_.end() - static_cast<long>(heavy), cores_.end());

  auto shared_pool = std::make_unique<Pool>();
  shared_pool->lanes = {Weight::kLight, Weight::kMedium};
  pool_by_lane_[laneIndex(Weight::kLight)] = shared_pool.get();
  pool_by_lane_[laneIndex(Weight::kMedium)] = shared_pool.get();
  Pool* heavy_pool = shared_pool.get();
  if (heavy > 0) {
    auto hp = std::make_unique<Pool>();
    hp->lanes = {Weight::kHeavy};
    heavy_pool = hp.get();
    pools_.push_back(std::move(shared_pool));
    pools_.push_back(std::move(hp));
  } else {
    shared_pool->lanes.push_back(Weight::kHeavy);
    pools_.push_back(std::move(shared_pool));
  }
  pool_by_lane_[laneIndex(Weight::kHeavy)] = heavy_pool;

  const auto shared_n = static_cast<uint32_t>(shared.size());
  layout_.push_back({Weight::kLight, shared, shared_n});
  layout_.push_back({Weight::kMedium, shared, shared_n});
  if (heavy > 0)
    layout_.push_back({Weight::kHeavy, reserved, static_cast<uint32_t>(reserved.size())});
  else
    layout_.push_back({Weight::kHeavy, shared, shared_n});

  auto add_workers = [&](const std::vector<int>& cores, Pool* pool) {
    for (int c : cores) {
      auto w = std::make_unique<Worker>();
      w->core = c;
      w->pool = pool;
      pool->workers++;
      workers_.push_back(std::move(w));
    }
  };
  add_workers(shared, pools_[0].get());
  if (heavy > 0) add_workers(reserved, heavy_pool);
  for (auto& w : workers_) {
    Worker* wp = w.get();
    w->thread = std::thread([this, wp] { workerLoop(*wp); });
  }
}

Executor::~Executor() {
  stop_.store(true);
  for (auto& p : pools_) {
    {
      std::lock_guard lk(p->mu);
      p->stop = true;
    }
    p->cv.notify_all();
  }
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
}

Executor::Pool& Executor::poolFor(Weight lane) { return *pool_by_lane_[laneIndex(lane)]; }

void Executor::submit(std::vector<Task>&& tasks) {
  if (tasks.empty()) return;
  const Nanos now = clock_.now();
  const uint64_t first_seq = next_seq_.fetch_add(tasks.size(), std::memory_order_relaxed);
  outstanding_.fetch_add(tasks.size(), std::memory_order_acq_rel);
  size_t per_lane[kLaneCount] = {0, 0, 0};
  for (size_t i = 0; i < tasks.size(); ++i) {
    Task& t = tasks[i];
    if (t.lane != Weight::kLight && t.lane != Weight::kMedium && t.lane != Weight::kHeavy)
      t.lane = t.op->weight;
    t.seq = first_seq + i;
    t.enqueued_ns = now;
    per_lane[laneIndex(t.lane)]++;
  }
  // Split by lane; the common single-lane batch moves as one vector.
  std::vector<Task> by_lane[kLaneCount];
  const int first_lane = laneIndex(tasks.front().lane);
  if (per_lane[first_lane] == tasks.size()) {
    by_lane[first_lane] = std::move(tasks);
  } else {
    for (int l = 0; l < kLaneCount; ++l) by_lane[l].reserve(per_lane[l]);
    for (auto& t : tasks) by_lane[laneIndex(t.lane)].push_back(std::move(t));
  }
  std::vector<ReturnedTask> returned;
  for (auto& pool : pools_) {
    size_t mine = 0;
    for (Weight l : pool->lanes) mine += per_lane[laneIndex(l)];
    if (mine == 0) continue;
    {
      std::lock_guard lk(pool->mu);
      // Checked under the pool lock: drain() sets the flag before purging
      // each pool, so a batch is either purged by it or returned here.
      const bool draining = draining_.load();
      for (Weight l : pool->lanes) {
        auto& batch = by_lane[laneIndex(l)];
        if (batch.empty()) continue;
        if (draining) {
          for (auto& t : batch) returned.push_back({t.id, t.attempt, t.session});
        } else {
          lanes_[laneIndex(l)].queued.fetch_add(static_cast<int64_t>(batch.size()),
                                                std::memory_order_relaxed);
          pool->q[laneIndex(l)].pushBatch(std::move(batch));
        }
      }
    }
    if (mine >= pool->workers)
      pool->cv.notify_all();
    else
      for (size_t i = 0; i < mine; ++i) pool->cv.notify_one();
  }
  if (!returned.empty()) {
    std::vector<TaskResult> none;
    publish(none, &returned);
  }
}

void Executor::takeResults(std::vector<TaskResult>& results, std::vector<ReturnedTask>& returned) {
  {
    std::lock_guard lk(out_mu_);
    if (results.empty()) {
      results.swap(out_results_);
    } else {
      std::move(out_results_.begin(), out_results_.end(), std::back_inserter(results));
      out_results_.clear();
    }
    std::move(out_returned_.begin(), out_returned_.end(), std::back_inserter(returned));
    out_returned_.clear();
  }
  if (idle()) {
    std::lock_guard lk(control_mu_);
    pruneControlLocked();
  }
}

void Executor::publish(std::vector<TaskResult>& results, std::vector<ReturnedTask>* returned) {
  const size_t n = results.size() + (returned != nullptr ? returned->size() : 0);
  if (n == 0) return;
  bool was_empty;
  {
    std::lock_guard lk(out_mu_);
    was_empty = out_results_.empty() && out_returned_.empty();
    if (out_results_.empty()) {
      out_results_.swap(results);
    } else {
      std::move(results.begin(), results.end(), std::back_inserter(out_results_));
    }
    if (returned != nullptr)
      std::move(returned->begin(), returned->end(), std::back_inserter(out_returned_));
  }
  results.clear();
  if (returned != nullptr) returned->clear();
  // After the outbox holds them, so whoever sees idle() also sees the results.
  finished(n);
  if (was_empty && notify_) notify_();
}

void Executor::pruneControlLocked() {
  // With nothing outstanding no entry can match a token any more (limits
  // only reach tokens enqueued before them).
  if (idle()) {
    cancelled_ids_.clear();
    cancelled_ops_.clear();
  }
}

Executor::Cancel Executor::cancelOfLocked(const Task& t) const {
  if (t.seq < drop_below_seq_) return Cancel::kDrop;
  if (!cancelled_ids_.empty()) {
    auto it = cancelled_ids_.find(t.id);
    if (it != cancelled_ids_.end() && t.seq < it->second) return Cancel::kDrop;
  }
  if (!cancelled_ops_.empty()) {
    auto it = cancelled_ops_.find(t.op);
    if (it != cancelled_ops_.end() && t.seq < it->second) return Cancel::kReport;
  }
  return Cancel::kNone;
}

TaskResult Executor::cancelledUnstarted(const Task& t, Nanos now) {
  TaskResult r;
  r.id = t.id;
  r.attempt = t.attempt;
  r.session = t.session;
  r.lane = t.lane;
  r.queue_ns = static_cast<uint64_t>(std::max<Nanos>(0, now - t.enqueued_ns));
  r.outcome = absl::CancelledError(
      fmt::format("operation '{}' cancelled before the token started", t.op->name));
  return r;
}

void Executor::bumpEpochAndFlagRunning(
    const std::function<bool(uint64_t id, const Operation* op)>& hit) {
  // Dekker with the worker: it publishes current_seq then reads the epoch;
  // we bump the epoch then read current_seq (all seq_cst). Either we see its
  // token here, or it sees the new epoch and filters against the records.
  control_epoch_.fetch_add(1);
  for (auto& w : workers_) {
    const uint64_t seq = w->current_seq.load();
    if (seq == 0) continue;
    const uint64_t id = w->current_id.load(std::memory_order_acquire);
    const Operation* op = w->current_op.load(std::memory_order_acquire);
    if (w->current_seq.load() != seq) continue;  // moved on; the epoch covers it
    if (hit(id, op)) w->cancel_word.store(seq);
  }
}

void Executor::cancelTokens(std::span<const uint64_t> ids) {
  if (ids.empty()) return;
  const std::unordered_set<uint64_t> set(ids.begin(), ids.end());
  {
    std::lock_guard lk(control_mu_);
    const uint64_t limit = next_seq_.load();
    for (uint64_t id : ids) cancelled_ids_[id] = limit;
  }
  size_t dropped = 0;
  for (auto& pool : pools_) {
    std::lock_guard lk(pool->mu);
    for (Weight l : pool->lanes) {
      auto& q = pool->q[laneIndex(l)];
      const size_t n = q.eraseIf([&](const Task& t) { return set.contains(t.id); });
      lanes_[laneIndex(l)].queued.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
      dropped += n;
    }
  }
  if (dropped > 0) finished(dropped);
  bumpEpochAndFlagRunning([&](uint64_t id, const Operation*) { return set.contains(id); });
}

void Executor::cancelOp(const Operation* op) {
  if (op == nullptr) return;
  {
    std::lock_guard lk(control_mu_);
    cancelled_ops_[op] = next_seq_.load();
  }
  // Queued tokens never start; each is reported Cancelled so the coordinator
  // sees exactly one outcome per token it dispatched.
  std::vector<TaskResult> cancelled;
  const Nanos now = clock_.now();
  for (auto& pool : pools_) {
    std::lock_guard lk(pool->mu);
    for (Weight l : pool->lanes) {
      auto& q = pool->q[laneIndex(l)];
      const size_t n = q.eraseIf([&](const Task& t) {
        if (t.op != op) return false;
        cancelled.push_back(cancelledUnstarted(t, now));
        return true;
      });
      lanes_[laneIndex(l)].queued.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
    }
  }
  publish(cancelled, nullptr);
  bumpEpochAndFlagRunning([&](uint64_t, const Operation* o) { return o == op; });
}

void Executor::drain() {
  draining_.store(true);
  std::vector<ReturnedTask> returned;
  for (auto& pool : pools_) {
    std::lock_guard lk(pool->mu);
    for (Weight l : pool->lanes) {
      auto& q = pool->q[laneIndex(l)];
      q.forEach([&](const Task& t) { returned.push_back({t.id, t.attempt, t.session}); });
      lanes_[laneIndex(l)].queued.fetch_sub(static_cast<int64_t>(q.size()),
                                            std::memory_order_relaxed);
      q.clear();
    }
  }
  {
    std::lock_guard lk(control_mu_);
    control_epoch_.fetch_add(1);  // workers hand back their popped, unstarted tokens
  }
  std::vector<TaskResult> none;
  publish(none, &returned);
}

void Executor::undrain() { draining_.store(false); }

size_t Executor::dropQueued() {
  {
    std::lock_guard lk(control_mu_);
    drop_below_seq_ = next_seq_.load();
    control_epoch_.fetch_add(1);
  }
  size_t dropped = 0;
  for (auto& pool : pools_) {
    std::lock_guard lk(pool->mu);
    for (Weight l : pool->lanes) {
      auto& q = pool->q[laneIndex(l)];
      lanes_[laneIndex(l)].queued.fetch_sub(static_cast<int64_t>(q.size()),
                                            std::memory_order_relaxed);
      dropped += q.size();
      q.clear();
    }
  }
  if (dropped > 0) finished(dropped);
  return dropped;
}

std::vector<LaneStats> Executor::laneStats() const {
  std::vector<LaneStats> out;
  for (int l = 0; l < kLaneCount; ++l) {
    LaneStats s;
    s.weight = static_cast<Weight>(l);
    s.queued = static_cast<uint32_t>(std::max<int64_t>(0, lanes_[l].queued.load()));
    s.running = static_cast<uint32_t>(std::max<int64_t>(0, lanes_[l].running.load()));
    s.busy_ns = lanes_[l].busy_ns.load();
    s.completed = lanes_[l].completed.load();
    out.push_back(s);
  }
  return out;
}

std::vector<CoreStats> Executor::coreStats() const {
  std::vector<CoreStats> out;
  for (const auto& w : workers_)
    out.push_back({static_cast<uint32_t>(w->core), w->tokens.load(std::memory_order_relaxed)});
  // Tokens run inline count on the CPU the link thread ran them on (on the first worker's core
  // if that is none of the workers': the set of cores reported stays the workers').
  std::lock_guard lk(inline_mu_);
  for (const auto& entry : inline_by_core_) {
    const auto core = entry.first;  // named: clang-14 cannot capture a structured binding
    auto it =
        std::find_if(out.begin(), out.end(), [&](const CoreStats& c) { return c.core == core; });
    if (it == out.end()) it = out.begin();
    if (it != out.end()) it->tokens += entry.second;
  }
  return out;
}

size_t Executor::filterLocal(Worker& w, std::vector<Task>& local, size_t from,
                             uint64_t& seen_epoch) {
  std::vector<ReturnedTask> returned;
  std::vector<TaskResult> cancelled;
  size_t dropped = 0;
  size_t out = from;
  const Nanos now = clock_.now();
  {
    std::lock_guard lk(control_mu_);
    seen_epoch = control_epoch_.load();
    const bool draining = draining_.load();
    for (size_t j = from; j < local.size(); ++j) {
      Task& t = local[j];
      const Cancel c = cancelOfLocked(t);
      if (c == Cancel::kDrop) {
        ++dropped;
      } else if (c == Cancel::kReport) {
        cancelled.push_back(cancelledUnstarted(t, now));
      } else if (draining) {
        returned.push_back({t.id, t.attempt, t.session});
      } else {
        if (out != j) local[out] = std::move(t);
        ++out;
      }
    }
  }
  local.resize(out);
  if (dropped > 0) finished(dropped);
  if (!returned.empty() || !cancelled.empty()) publish(cancelled, &returned);
  return out;
}

namespace {
void payDebt(const Clock& clock, Nanos& debt, Nanos& now) {
  if (debt <= 0) return;
  const Nanos t0 = clock.now();
  if (debt >= kSleepAboveNs) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(debt));
    now = clock.now();
  } else {
    do {
      now = clock.now();
    } while (now - t0 < debt);
  }
  debt -= now - t0;  // an oversleep becomes credit for the next tokens
}
}  // namespace

StatusOr<Value> Executor::execute(const Task& t, const std::atomic<uint64_t>* cancel_word,
                                  Nanos start) {
  if (t.deadline_ns != 0 && start >= t.deadline_ns)
    return absl::DeadlineExceededError("deadline passed before the token started");
  OpContext ctx(t.id, t.attempt, t.deadline_ns, cancel_word, t.seq, &clock_);
  auto outcome = invokeOperation(*t.op, ctx, std::span<const Value>(t.args.data(), t.args.size()));
  if (!outcome.ok() && outcome.status().code() == StatusCode::kCancelled &&
      !ctx.cancelRequested() && ctx.deadlineExceeded())
    return absl::DeadlineExceededError(
        fmt::format("{}: deadline exceeded while running", t.op->name));
  return outcome;
}

void Executor::runOne(Worker& w, Task& t, std::vector<TaskResult>& out, Nanos start) {
  TaskResult& r = out.emplace_back();
  r.id = t.id;
  r.attempt = t.attempt;
  r.session = t.session;
  r.lane = t.lane;
  r.queue_ns = static_cast<uint64_t>(std::max<Nanos>(0, start - t.enqueued_ns));
  r.outcome = execute(t, &w.cancel_word, start);
  // Single writer: a plain load+store avoids a locked RMW per token.
  w.tokens.store(w.tokens.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

bool Executor::knownFast(const Operation* op) const {
  for (const auto& slot : fast_ops_)
    if (slot.load(std::memory_order_acquire) == op) return true;
  return false;
}

void Executor::setFast(const Operation* op, bool fast) {
  if (!fast) {
    // Every copy: two workers may have added the op at the same time.
    for (auto& slot : fast_ops_) {
      const Operation* expected = op;
      slot.compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel);
    }
    return;
  }
  if (knownFast(op)) return;
  for (auto& slot : fast_ops_) {
    const Operation* expected = nullptr;
    if (slot.compare_exchange_strong(expected, op, std::memory_order_acq_rel)) return;
  }
}

void Executor::noteSpeed(Worker& w, const Operation* op, Nanos per_token_ns) {
  if (config_.inline_below_ns <= 0 || op == nullptr || !op->non_blocking) return;
  const bool fast = per_token_ns < config_.inline_below_ns;
  // Skip an unchanged class, unless an inline run demoted the op since this worker promoted it
  // (runInline writes fast_ops_ behind the workers' backs): then promote it again.
  if (op == w.classified_op && fast == w.classified_fast && (!fast || knownFast(op))) return;
  w.classified_op = op;
  w.classified_fast = fast;
  setFast(op, fast);
}

bool Executor::canRunInline(const Task& t) const {
  // Only an operation declared non-blocking: an inline run holds the link thread (no frames read,
  // no heartbeat sent), and a timing cannot tell "fast" from "fast until it waits".
  if (config_.inline_below_ns <= 0 || config_.speed_factor > 1.0 || t.op == nullptr ||
      !t.op->non_blocking)
    return false;
  const Weight lane =
      t.lane == Weight::kLight || t.lane == Weight::kMedium || t.lane == Weight::kHeavy
          ? t.lane
          : t.op->weight;
  if (lane != Weight::kLight || !idle() || draining()) return false;
  return knownFast(t.op);
}

TaskResult Executor::runInline(Task& t) {
  if (t.lane != Weight::kLight && t.lane != Weight::kMedium && t.lane != Weight::kHeavy)
    t.lane = t.op->weight;
  // A sequence number like a queued token's, so a cancel limit set later never matches it. No
  // cancel can reach it while it runs: control arrives on the thread that runs it.
  t.seq = next_seq_.fetch_add(1, std::memory_order_relaxed);
  const Nanos start = clock_.now();
  t.enqueued_ns = start;
  TaskResult r;
  r.id = t.id;
  r.attempt = t.attempt;
  r.session = t.session;
  r.lane = t.lane;
  r.outcome = execute(t, &inline_cancel_, start);
  const Nanos run = std::max<Nanos>(0, clock_.now() - start);
  r.run_ns = static_cast<uint64_t>(run);
  const int cpu = sched_getcpu();
  r.core = static_cast<uint32_t>(cpu >= 0 ? cpu : 0);
  LaneCounters& lc = lanes_[laneIndex(t.lane)];
  lc.busy_ns.fetch_add(static_cast<uint64_t>(run), std::memory_order_relaxed);
  lc.completed.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lk(inline_mu_);
    ++inline_by_core_[r.core];
  }
  if (run >= config_.inline_below_ns) setFast(t.op, false);
  return r;
}

void Executor::closeGroup(Worker& w, TimeGroup& g, std::vector<TaskResult>& results, Nanos& now,
                          Nanos& debt_ns) {
  if (g.tokens == 0) return;
  now = clock_.now();
  Nanos run = now - g.start;
  if (config_.speed_factor > 1.0) {
    const auto extra = static_cast<Nanos>(static_cast<double>(run) * (config_.speed_factor - 1.0));
    run += extra;
    debt_ns += extra;
    if (debt_ns >= kPayDebtAtNs) payDebt(clock_, debt_ns, now);
  }
  run = std::max<Nanos>(0, run);
  const auto n = static_cast<Nanos>(g.tokens);
  const Nanos per = run / n;
  const int cpu = sched_getcpu();
  const auto core = static_cast<uint32_t>(cpu >= 0 ? cpu : w.core);
  // The group's tokens are the last `n` results; the remainder goes to the first of them so the
  // group's run times add up to what was measured.
  const size_t first = results.size() - g.tokens;
  for (size_t k = first; k < results.size(); ++k) {
    results[k].run_ns = static_cast<uint64_t>(per + (k == first ? run - per * n : 0));
    results[k].core = core;
  }
  g.fast = per < config_.group_below_ns;
  noteSpeed(w, g.op, per);
  g.tokens = 0;
  g.op = nullptr;
  g.start = now;
}

void Executor::workerLoop(Worker& w) {
  if (config_.pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w.core, &set);
    if (int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set); rc != 0)
      spdlog::warn("could not pin worker to core {}: error {}", w.core, rc);
  }
  Pool& pool = *w.pool;
  std::vector<Task> local;
  local.reserve(kMaxPop[0]);
  std::vector<TaskResult> results;
  results.reserve(kPublishEvery);
  uint64_t seen_epoch = control_epoch_.load();
  Nanos debt_ns = 0;
  TimeGroup group;
  while (true) {
    Weight lane;
    size_t popped;
    {
      std::unique_lock lk(pool.mu);
      pool.cv.wait(lk, [&] { return pool.stop || pool.anyQueued(); });
      if (pool.stop) break;
      // Round-robin over the pool's non-empty lanes.
      size_t pick = 0;
      for (size_t i = 0; i < pool.lanes.size(); ++i) {
        pick = (pool.rr + i) % pool.lanes.size();
        if (!pool.q[laneIndex(pool.lanes[pick])].empty()) break;
      }
      pool.rr = pick + 1;
      lane = pool.lanes[pick];
      auto& q = pool.q[laneIndex(lane)];
      popped = std::clamp<size_t>(q.size() / pool.workers, 1, kMaxPop[laneIndex(lane)]);
      popped = std::min(popped, q.size());
      q.popInto(local, popped);
      lanes_[laneIndex(lane)].queued.fetch_sub(static_cast<int64_t>(popped),
                                               std::memory_order_relaxed);
    }
    LaneCounters& lc = lanes_[laneIndex(lane)];
    lc.running.fetch_add(static_cast<int64_t>(popped), std::memory_order_relaxed);
    Nanos now = clock_.now();
    const Nanos batch_start = now;
    Nanos first_unpublished = now;
    size_t ran = 0;
    group.tokens = 0;
    group.start = now;
    for (size_t i = 0; i < local.size() && !stop_.load(std::memory_order_relaxed); ++i) {
      // Publish the token, then look for control that arrived meanwhile; if
      // filtering replaced local[i], publish the replacement and look again.
      bool have = true;
      while (true) {
        w.current_id.store(local[i].id, std::memory_order_relaxed);
        w.current_op.store(local[i].op, std::memory_order_relaxed);
        w.current_seq.store(local[i].seq);  // seq_cst: see bumpEpochAndFlagRunning
        if (control_epoch_.load() == seen_epoch) break;
        filterLocal(w, local, i, seen_epoch);
        if (i >= local.size()) {
          have = false;
          break;
        }
      }
      if (!have) break;
      Task& t = local[i];
      // Timing (executor.h): a token joins the open group only if the group's op is fast, it is
      // the same op and it has no deadline (a deadline is checked against a fresh clock read).
      if (group.tokens > 0 &&
          !(group.fast && t.op == group.op && t.deadline_ns == 0 && group.tokens < kGroupMax)) {
        closeGroup(w, group, results, now, debt_ns);
        if (results.size() >= kPublishEvery || now - first_unpublished >= kPublishAfterNs)
          publish(results, nullptr);
      }
      if (group.tokens == 0) {
        group.op = t.op;
        group.start = now;
        if (results.empty()) first_unpublished = now;
      }
      runOne(w, t, results, group.start);
      ++group.tokens;
      ++ran;
      if (!group.fast) {
        closeGroup(w, group, results, now, debt_ns);
        if (results.size() >= kPublishEvery || now - first_unpublished >= kPublishAfterNs)
          publish(results, nullptr);
      }
    }
    closeGroup(w, group, results, now, debt_ns);
    w.current_seq.store(0);
    payDebt(clock_, debt_ns, now);
    lc.busy_ns.fetch_add(static_cast<uint64_t>(std::max<Nanos>(0, now - batch_start)),
                         std::memory_order_relaxed);
    lc.completed.fetch_add(ran, std::memory_order_relaxed);
    lc.running.fetch_sub(static_cast<int64_t>(popped), std::memory_order_relaxed);
    publish(results, nullptr);
    if (stop_.load(std::memory_order_relaxed) && local.size() > ran) finished(local.size() - ran);
    local.clear();
  }
}

}  // namespace tokengate::node
