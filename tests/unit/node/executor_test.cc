#include "node/executor/executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "node/ops/builtin_ops.h"

namespace tokengate::node {
namespace {

using namespace std::chrono_literals;

class ExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registerBuiltinOps(registry_).ok());
    ASSERT_TRUE(registerTestOps(registry_).ok());
  }

  std::unique_ptr<Executor> make(ExecutorConfig config = {}) {
    auto ex = Executor::create(std::move(config), [this] { notified_.fetch_add(1); });
    EXPECT_TRUE(ex.ok()) << ex.status();
    return ex.ok() ? std::move(*ex) : nullptr;
  }

  Task task(uint64_t id, std::string_view op, std::vector<Value> args,
            Weight lane = Weight::kUnspecified) {
    Task t;
    t.id = id;
    t.attempt = 1;
    t.op = registry_.find(op);
    EXPECT_NE(t.op, nullptr) << op;
    t.lane = lane;
    for (auto& a : args) t.args.push_back(std::move(a));
    return t;
  }

  // Collects until `want` results+returned arrived or 30 s passed.
  void collect(Executor& ex, size_t want) {
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (results_.size() + returned_.size() < want && std::chrono::steady_clock::now() < until) {
      ex.takeResults(results_, returned_);
      if (results_.size() + returned_.size() < want) std::this_thread::sleep_for(1ms);
    }
  }

  // Results are published before the outstanding count drops (executor.h: idle() implies the
  // results are visible, not the reverse), so a test that has every result waits for idle.
  bool waitIdle(Executor& ex) {
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (!ex.idle() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
    return ex.idle();
  }

  void waitRunning(Executor& ex, Weight lane, uint32_t n) {
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < until) {
      const auto stats = ex.laneStats();
      if (stats[static_cast<int>(lane)].running >= n && stats[static_cast<int>(lane)].queued == 0)
        return;
      std::this_thread::sleep_for(1ms);
    }
    FAIL() << "workers never picked the tokens up";
  }

  std::map<uint64_t, TaskResult> byId() {
    std::map<uint64_t, TaskResult> m;
    for (auto& r : results_) m[r.id] = r;
    return m;
  }

  Registry registry_;
  std::atomic<int> notified_{0};
  std::vector<TaskResult> results_;
  std::vector<ReturnedTask> returned_;
};

TEST_F(ExecutorTest, RunsABatchAndRecordsCoresAndTimes) {
  auto ex = make();
  ASSERT_TRUE(ex);
  std::vector<Task> batch;
  for (uint64_t i = 0; i < 1000; ++i) batch.push_back(task(i, "leibniz.term", {Value(int64_t(i))}));
  ex->submit(std::move(batch));
  collect(*ex, 1000);
  ASSERT_EQ(results_.size(), 1000u);
  EXPECT_GT(notified_.load(), 0);
  const auto cores = ex->cores();
  for (const auto& r : results_) {
    ASSERT_TRUE(r.outcome.ok());
    EXPECT_EQ(r.outcome->asDouble(), leibnizTermDouble(static_cast<int64_t>(r.id)));
    EXPECT_EQ(r.lane, Weight::kLight);
    EXPECT_NE(std::find(cores.begin(), cores.end(), static_cast<int>(r.core)), cores.end());
  }
  EXPECT_TRUE(waitIdle(*ex));
  uint64_t per_core = 0;
  for (auto c : ex->coreStats()) per_core += c.tokens;
  EXPECT_EQ(per_core, 1000u);
  EXPECT_EQ(ex->laneStats()[0].completed, 1000u);
}

TEST_F(ExecutorTest, HeavyTokensRunOnReservedCores) {
  const auto allowed = allowedCores();
  if (allowed.size() < 2) GTEST_SKIP() << "needs >= 2 allowed cores";
  auto ex = make();
  ASSERT_TRUE(ex);
  const auto& layout = ex->layout();
  ASSERT_EQ(layout.size(), 3u);
  ASSERT_EQ(layout[2].weight, Weight::kHeavy);
  ASSERT_EQ(layout[2].cores.size(), 1u);  // default: one reserved core
  const int heavy_core = layout[2].cores[0];
  EXPECT_EQ(std::count(layout[0].cores.begin(), layout[0].cores.end(), heavy_core), 0);

  std::vector<Task> batch;
  for (uint64_t i = 0; i < 40; ++i)
    batch.push_back(
        task(i, "spin", {Value(int64_t{100})}, i % 2 ? Weight::kHeavy : Weight::kLight));
  batch.push_back(task(100, "sleep", {Value(1)}));  // default weight medium
  ex->submit(std::move(batch));
  collect(*ex, 41);
  ASSERT_EQ(results_.size(), 41u);
  for (const auto& r : results_) {
    ASSERT_TRUE(r.outcome.ok()) << r.outcome.status();
    if (r.id == 100) {
      EXPECT_EQ(r.lane, Weight::kMedium);
      EXPECT_NE(static_cast<int>(r.core), heavy_core);
    } else if (r.id % 2) {
      EXPECT_EQ(r.lane, Weight::kHeavy);
      EXPECT_EQ(static_cast<int>(r.core), heavy_core);
    } else {
      EXPECT_EQ(r.lane, Weight::kLight);
      EXPECT_NE(static_cast<int>(r.core), heavy_core);
    }
  }
}

TEST_F(ExecutorTest, SingleCoreSharesTheHeavyLane) {
  const auto allowed = allowedCores();
  ExecutorConfig cfg;
  cfg.cores = {allowed[0]};
  auto ex = make(cfg);
  ASSERT_TRUE(ex);
  EXPECT_EQ(ex->layout()[2].cores, std::vector<int>{allowed[0]});
  std::vector<Task> batch;
  batch.push_back(task(1, "echo", {Value(1)}, Weight::kHeavy));
  batch.push_back(task(2, "echo", {Value(2)}, Weight::kLight));
  ex->submit(std::move(batch));
  collect(*ex, 2);
  ASSERT_EQ(results_.size(), 2u);
  for (const auto& r : results_) EXPECT_EQ(static_cast<int>(r.core), allowed[0]);
}

TEST_F(ExecutorTest, RejectsBadCoreConfigs) {
  ExecutorConfig cfg;
  cfg.cores = {100000};
  EXPECT_EQ(Executor::create(cfg, nullptr).status().code(), StatusCode::kInvalidArgument);
  ExecutorConfig all_heavy;
  all_heavy.heavy_cores = static_cast<int>(allowedCores().size());
  EXPECT_EQ(Executor::create(all_heavy, nullptr).status().code(), StatusCode::kInvalidArgument);
  ExecutorConfig fast;
  fast.speed_factor = 0.5;
  EXPECT_EQ(Executor::create(fast, nullptr).status().code(), StatusCode::kInvalidArgument);
}

// Occupies every light/medium worker with a wait_cancel token, so later
// tokens stay queued until we act.
class BlockedExecutorTest : public ExecutorTest {
 protected:
  void SetUp() override {
    ExecutorTest::SetUp();
    ExecutorConfig cfg;
    cfg.heavy_cores = 0;
    ex_ = make(cfg);
    ASSERT_TRUE(ex_);
    workers_ = ex_->layout()[0].workers;
    std::vector<Task> blockers;
    for (uint64_t i = 0; i < workers_; ++i)
      blockers.push_back(task(1000 + i, "wait_cancel", {Value(60'000)}));
    ex_->submit(std::move(blockers));
    waitRunning(*ex_, Weight::kMedium, workers_);
  }
  void TearDown() override {
    // Release the blockers whatever the test did.
    ex_->cancelOp(registry_.find("wait_cancel"));
    ex_.reset();
  }
  std::unique_ptr<Executor> ex_;
  uint32_t workers_ = 0;
};

TEST_F(BlockedExecutorTest, CancelDropsQueuedAndFlagsRunning) {
  std::vector<Task> queued;
  for (uint64_t i = 0; i < 5; ++i) queued.push_back(task(i, "echo", {Value(int64_t(i))}));
  ex_->submit(std::move(queued));
  EXPECT_EQ(ex_->outstanding(), workers_ + 5);
  const uint64_t cancel[] = {1, 3, 1000};  // two queued, one running blocker
  ex_->cancelTokens(cancel);
  EXPECT_EQ(ex_->outstanding(), workers_ + 3);
  // The cancelled blocker returns Cancelled, which frees a worker for the rest.
  collect(*ex_, 4);
  auto got = byId();
  ASSERT_TRUE(got.contains(1000));
  EXPECT_EQ(got[1000].outcome.status().code(), StatusCode::kCancelled);
  for (uint64_t id : {0, 2, 4}) {
    ASSERT_TRUE(got.contains(id)) << id;
    EXPECT_EQ(*got[id].outcome, Value(int64_t(id)));
  }
  EXPECT_FALSE(got.contains(1));
  EXPECT_FALSE(got.contains(3));
}

TEST_F(BlockedExecutorTest, CancelOpFlagsEveryTokenOfThatOperation) {
  std::vector<Task> queued;
  queued.push_back(task(1, "wait_cancel", {Value(60'000)}));
  queued.push_back(task(2, "echo", {Value(2)}));
  ex_->submit(std::move(queued));
  ex_->cancelOp(registry_.find("wait_cancel"));
  collect(*ex_, workers_ + 2);
  EXPECT_EQ(results_.size(), workers_ + 2u);  // one result per token, none lost
  auto got = byId();
  for (uint64_t i = 0; i < workers_; ++i) {
    ASSERT_TRUE(got.contains(1000 + i));
    // Running: the operation saw the flag and returned its own message.
    EXPECT_EQ(got[1000 + i].outcome.status().code(), StatusCode::kCancelled);
    EXPECT_EQ(got[1000 + i].outcome.status().message(), "wait_cancel cancelled");
  }
  // Was queued: never started, reported Cancelled (not silently dropped).
  ASSERT_TRUE(got.contains(1));
  EXPECT_EQ(got[1].outcome.status().code(), StatusCode::kCancelled);
  EXPECT_NE(got[1].outcome.status().message().find("before the token started"), std::string::npos)
      << got[1].outcome.status();
  EXPECT_EQ(got[1].attempt, 1u);
  ASSERT_TRUE(got.contains(2));
  EXPECT_TRUE(got[2].outcome.ok());
  EXPECT_TRUE(waitIdle(*ex_)) << ex_->outstanding() << " outstanding";
  // A later token of the same operation is not affected by the old cancel.
  std::vector<Task> later;
  later.push_back(task(3, "wait_cancel", {Value(1)}));
  ex_->submit(std::move(later));
  collect(*ex_, workers_ + 3);
  got = byId();
  ASSERT_TRUE(got.contains(3));
  EXPECT_TRUE(got[3].outcome.ok()) << got[3].outcome.status();
}

TEST_F(BlockedExecutorTest, DrainHandsBackQueuedTokens) {
  std::vector<Task> queued;
  for (uint64_t i = 0; i < 10; ++i) queued.push_back(task(i, "echo", {Value(1)}));
  ex_->submit(std::move(queued));
  ex_->drain();
  EXPECT_TRUE(ex_->draining());
  std::vector<Task> late;
  late.push_back(task(50, "echo", {Value(1)}));
  ex_->submit(std::move(late));
  collect(*ex_, 11);
  EXPECT_TRUE(results_.empty());
  ASSERT_EQ(returned_.size(), 11u);
  std::vector<uint64_t> ids;
  for (auto& r : returned_) {
    ids.push_back(r.id);
    EXPECT_EQ(r.attempt, 1u);
  }
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids.back(), 50u);
  EXPECT_EQ(ex_->outstanding(), workers_);  // only the running blockers

  ex_->undrain();
  std::vector<Task> again;
  again.push_back(task(60, "echo", {Value(1)}));
  ex_->submit(std::move(again));
  EXPECT_EQ(ex_->outstanding(), workers_ + 1);
}

TEST_F(BlockedExecutorTest, DropQueuedForgetsQueuedWork) {
  std::vector<Task> queued;
  for (uint64_t i = 0; i < 10; ++i) queued.push_back(task(i, "echo", {Value(1)}));
  ex_->submit(std::move(queued));
  EXPECT_EQ(ex_->dropQueued(), 10u);
  EXPECT_EQ(ex_->outstanding(), workers_);
}

TEST_F(ExecutorTest, ExpiredDeadlineFailsWithoutRunning) {
  auto ex = make();
  std::vector<Task> batch;
  batch.push_back(task(1, "echo", {Value(1)}));
  batch.back().deadline_ns = 1;  // long past
  batch.push_back(task(2, "wait_cancel", {Value(60'000)}));
  batch.back().deadline_ns = SystemClock::instance().now() + 20 * kMillis;
  ex->submit(std::move(batch));
  collect(*ex, 2);
  auto got = byId();
  EXPECT_EQ(got[1].outcome.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(got[2].outcome.status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(ExecutorTest, SpeedFactorStretchesRunTime) {
  ExecutorConfig cfg;
  cfg.speed_factor = 3.0;
  auto ex = make(cfg);
  const auto start = std::chrono::steady_clock::now();
  std::vector<Task> batch;
  for (uint64_t i = 0; i < 4; ++i) batch.push_back(task(i, "spin", {Value(int64_t{2000})}));
  ex->submit(std::move(batch));
  collect(*ex, 4);
  const auto wall = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(results_.size(), 4u);
  // Lower bounds only: a loaded machine can make things slower, never faster.
  for (const auto& r : results_) EXPECT_GE(r.run_ns, 3u * 2'000'000u);
  const auto workers = ex->layout()[0].workers;
  EXPECT_GE(wall, std::chrono::microseconds(3 * 2000 * 4 / workers));
}

// A clock that counts its readings (the system clock underneath).
class CountingClock final : public Clock {
 public:
  Nanos now() const override {
    reads.fetch_add(1, std::memory_order_relaxed);
    return SystemClock::instance().now();
  }
  mutable std::atomic<uint64_t> reads{0};
};

TEST_F(ExecutorTest, FastTokensAreTimedInGroupsNotOnePerToken) {
  CountingClock clock;
  ExecutorConfig cfg;
  cfg.cores = {allowedCores().front()};
  cfg.heavy_cores = 0;
  cfg.pin = false;
  // echo takes well under the default 2 us in a release build, but several us under
  // ASan/UBSan: a threshold far above any build's echo time keeps the test about grouping,
  // not about this build's speed.
  cfg.group_below_ns = 1'000'000;
  auto ex = Executor::create(
      cfg, [] {}, clock);
  ASSERT_TRUE(ex.ok()) << ex.status();
  constexpr uint64_t kTokens = 640;
  std::vector<Task> batch;
  for (uint64_t i = 0; i < kTokens; ++i) batch.push_back(task(i, "echo", {Value(int64_t(i))}));
  const Nanos t0 = SystemClock::instance().now();
  const uint64_t reads0 = clock.reads.load();
  (*ex)->submit(std::move(batch));
  collect(**ex, kTokens);
  ASSERT_TRUE(waitIdle(**ex));
  const Nanos wall = SystemClock::instance().now() - t0;
  ASSERT_EQ(results_.size(), kTokens);
  // echo is under the threshold: one reading per group of up to 32 tokens and one per pop of
  // 64, not one per token. A preempted group reads per token until the next fast one, hence
  // the slack.
  EXPECT_LT(clock.reads.load() - reads0, kTokens / 2);
  uint64_t total_run = 0;
  for (const auto& r : results_) {
    ASSERT_TRUE(r.outcome.ok());
    EXPECT_EQ(*r.outcome, Value(int64_t(r.id)));
    total_run += r.run_ns;
  }
  // Each group's measured time is shared out among its tokens, never invented.
  EXPECT_LE(total_run, static_cast<uint64_t>(wall));
}

TEST_F(ExecutorTest, SlowTokensAreTimedOneByOne) {
  CountingClock clock;
  ExecutorConfig cfg;
  cfg.cores = {allowedCores().front()};
  cfg.heavy_cores = 0;
  cfg.pin = false;
  auto ex = Executor::create(
      cfg, [] {}, clock);
  ASSERT_TRUE(ex.ok()) << ex.status();
  std::vector<Task> batch;
  // spin N us: each token is far above the grouping threshold, so each is timed alone.
  for (uint64_t i = 0; i < 8; ++i) batch.push_back(task(i, "spin", {Value(int64_t{300})}));
  (*ex)->submit(std::move(batch));
  collect(**ex, 8);
  ASSERT_EQ(results_.size(), 8u);
  for (const auto& r : results_) EXPECT_GE(r.run_ns, 300'000u) << r.id;
}

ExecutorConfig inlineConfig() {
  ExecutorConfig cfg;
  cfg.cores = {allowedCores().front()};
  cfg.heavy_cores = 0;
  cfg.pin = false;
  cfg.inline_below_ns = 20'000'000;  // 20 ms: echo and spin 0 stay below it under ASan and load
  return cfg;
}

TEST_F(ExecutorTest, ALoneTokenRunsInlineOnlyOnceAWorkerTimedItsOpFast) {
  auto ex = make(inlineConfig());
  ASSERT_NE(ex, nullptr);
  Task first = task(1, "echo", {Value(int64_t{7})});
  EXPECT_FALSE(ex->canRunInline(first));  // never timed: a worker runs it
  std::vector<Task> batch;
  batch.push_back(std::move(first));
  ex->submit(std::move(batch));
  collect(*ex, 1);
  ASSERT_TRUE(waitIdle(*ex));
  ASSERT_EQ(results_.size(), 1u);
  const int notified = notified_.load();

  Task second = task(2, "echo", {Value(int64_t{8})});
  ASSERT_TRUE(ex->canRunInline(second));
  TaskResult r = ex->runInline(second);
  ASSERT_TRUE(r.outcome.ok()) << r.outcome.status();
  EXPECT_EQ(*r.outcome, Value(int64_t{8}));
  EXPECT_EQ(r.id, 2u);
  EXPECT_EQ(r.attempt, 1u);
  EXPECT_EQ(r.lane, Weight::kLight);
  EXPECT_EQ(r.queue_ns, 0u);
  EXPECT_TRUE(ex->idle());
  EXPECT_EQ(notified_.load(), notified);  // no wake-up: the caller has the result
  ex->takeResults(results_, returned_);
  EXPECT_EQ(results_.size(), 1u);  // nothing went through the outbox
  uint64_t tokens = 0;
  for (const auto& c : ex->coreStats()) tokens += c.tokens;
  EXPECT_EQ(tokens, 2u);
  for (const auto& l : ex->laneStats())
    if (l.weight == Weight::kLight) {
      EXPECT_EQ(l.completed, 2u);
    }

  // Off by default.
  ExecutorConfig off_cfg = inlineConfig();
  off_cfg.inline_below_ns = 0;
  auto off = make(off_cfg);
  ASSERT_NE(off, nullptr);
  batch.clear();
  batch.push_back(task(3, "echo", {Value(int64_t{1})}));
  off->submit(std::move(batch));
  ASSERT_TRUE(waitIdle(*off));
  EXPECT_FALSE(off->canRunInline(task(4, "echo", {Value(int64_t{1})})));
}

// `spin N`, declared non-blocking (the built-in test op `spin` is not: its run time is an
// argument, like an op that sometimes waits).
StatusOr<Value> busySpin(OpContext&, std::span<const Value> args) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(args[0].asInt());
  while (std::chrono::steady_clock::now() < end) {
  }
  return Value(int64_t{0});
}

TEST_F(ExecutorTest, SlowOpsBusyOrDrainingExecutorsAndOtherLanesNeverRunInline) {
  ASSERT_TRUE(registry_.add("spin.nb", Weight::kLight, busySpin, OpFlags::kNonBlocking).ok());
  auto ex = make(inlineConfig());
  ASSERT_NE(ex, nullptr);
  auto runOnWorker = [&](Task t) {
    std::vector<Task> batch;
    batch.push_back(std::move(t));
    ex->submit(std::move(batch));
    ASSERT_TRUE(waitIdle(*ex));
  };
  runOnWorker(task(1, "echo", {Value(int64_t{1})}));
  runOnWorker(task(2, "spin.nb", {Value(int64_t{0})}));
  EXPECT_TRUE(ex->canRunInline(task(3, "spin.nb", {Value(int64_t{0})})));
  // A worker timing spin slow demotes it; while it runs, the busy executor inlines nothing.
  std::vector<Task> batch;
  batch.push_back(task(4, "spin.nb", {Value(int64_t{300'000})}));  // 300 ms
  ex->submit(std::move(batch));
  EXPECT_FALSE(ex->idle());
  EXPECT_FALSE(ex->canRunInline(task(5, "echo", {Value(int64_t{1})})));
  ASSERT_TRUE(waitIdle(*ex));
  EXPECT_FALSE(ex->canRunInline(task(6, "spin.nb", {Value(int64_t{0})})));
  EXPECT_TRUE(ex->canRunInline(task(7, "echo", {Value(int64_t{1})})));
  EXPECT_FALSE(ex->canRunInline(task(8, "echo", {Value(int64_t{1})}, Weight::kMedium)));
  ex->drain();
  EXPECT_FALSE(ex->canRunInline(task(9, "echo", {Value(int64_t{1})})));
  ex->undrain();
  EXPECT_TRUE(ex->canRunInline(task(10, "echo", {Value(int64_t{1})})));

  // An inline run that took too long demotes its op: the next tokens go to the workers.
  runOnWorker(task(11, "spin.nb", {Value(int64_t{0})}));           // fast again
  Task long_one = task(10, "spin.nb", {Value(int64_t{100'000})});  // 100 ms
  ASSERT_TRUE(ex->canRunInline(long_one));
  EXPECT_TRUE(ex->runInline(long_one).outcome.ok());
  EXPECT_FALSE(ex->canRunInline(task(11, "spin.nb", {Value(int64_t{0})})));

  // An operation not declared non-blocking never runs inline, however fast a worker timed it.
  runOnWorker(task(12, "spin", {Value(int64_t{0})}));
  runOnWorker(task(13, "spin", {Value(int64_t{0})}));
  EXPECT_FALSE(ex->canRunInline(task(14, "spin", {Value(int64_t{0})})));
  EXPECT_TRUE(ex->canRunInline(task(15, "echo", {Value(int64_t{1})})));

  // A slowed node (speed factor) keeps its tokens on the workers, where the penalty is paid.
  ExecutorConfig slowed = inlineConfig();
  slowed.speed_factor = 2;
  auto sx = make(slowed);
  ASSERT_NE(sx, nullptr);
  batch.clear();
  batch.push_back(task(12, "echo", {Value(int64_t{1})}));
  sx->submit(std::move(batch));
  ASSERT_TRUE(waitIdle(*sx));
  EXPECT_FALSE(sx->canRunInline(task(13, "echo", {Value(int64_t{1})})));
}

TEST_F(ExecutorTest, ManyBatchesFromAnotherThread) {
  auto ex = make();
  constexpr uint64_t kBatches = 50, kPer = 2000;
  std::thread producer([&] {
    for (uint64_t b = 0; b < kBatches; ++b) {
      std::vector<Task> batch;
      for (uint64_t i = 0; i < kPer; ++i)
        batch.push_back(task(b * kPer + i, "hash", {Value(int64_t(i))},
                             i % 3 == 0 ? Weight::kHeavy : Weight::kUnspecified));
      ex->submit(std::move(batch));
    }
  });
  collect(*ex, kBatches * kPer);
  producer.join();
  ASSERT_EQ(results_.size(), kBatches * kPer);
  std::vector<bool> seen(kBatches * kPer);
  for (const auto& r : results_) {
    ASSERT_FALSE(seen[r.id]);
    seen[r.id] = true;
  }
}

}  // namespace
}  // namespace tokengate::node

namespace tokengate::node {
namespace {

// Not a test: prints the executor's per-token overhead. Run with
//   node_executor_test --gtest_also_run_disabled_tests --gtest_filter='*Overhead*'
// (meaningful only in an optimised build).
TEST_F(ExecutorTest, DISABLED_PerTokenOverhead) {
  constexpr uint64_t kTokens = 2'000'000, kBatch = 10'000;
  const Operation* op = registry_.find("leibniz.term");
  // Cost of the operation alone, called in a loop on this thread.
  double sink = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < kTokens; ++i) {
    OpContext ctx;
    Value arg[] = {Value(static_cast<int64_t>(i))};
    sink += invokeOperation(*op, ctx, arg)->asDouble();
  }
  const double op_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
      kTokens;
  // One worker on one core, so wall time / tokens is the per-token cost.
  ExecutorConfig cfg;
  cfg.cores = {allowedCores()[0]};
  auto ex = make(cfg);
  std::vector<std::vector<Task>> batches;
  for (uint64_t b = 0; b < kTokens / kBatch; ++b) {
    auto& batch = batches.emplace_back();
    batch.reserve(kBatch);
    for (uint64_t i = 0; i < kBatch; ++i) {
      Task t;
      t.id = b * kBatch + i;
      t.op = op;
      t.args.push_back(Value(static_cast<int64_t>(t.id)));
      batch.push_back(std::move(t));
    }
  }
  // Like the link: take results into a scratch vector, look at them, drop them.
  uint64_t got = 0;
  std::vector<TaskResult> scratch;
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
  };
  const double cpu0 = cpu_now();
  t0 = std::chrono::steady_clock::now();
  for (auto& b : batches) ex->submit(std::move(b));
  while (got < kTokens) {
    ex->takeResults(scratch, returned_);
    for (const auto& r : scratch) sink += r.outcome.ok() ? 0.0 : 1.0;
    got += scratch.size();
    scratch.clear();
    if (got < kTokens) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const double wall_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  const double cpu_ns = cpu_now() - cpu0;
  ASSERT_EQ(got, kTokens);
  // Wall: one worker, so wall/token is its cost per token (inflated if the
  // machine is busy). CPU: all threads (worker + submitting/collecting
  // thread), insensitive to other processes.
  std::printf(
      "op alone %.1f ns/token; executor wall %.1f ns/token (overhead %.1f); process CPU "
      "%.1f ns/token (overhead %.1f) (sink %g)\n",
      op_ns, wall_ns / kTokens, wall_ns / kTokens - op_ns, cpu_ns / kTokens,
      cpu_ns / kTokens - op_ns, sink);
}

}  // namespace
}  // namespace tokengate::node
