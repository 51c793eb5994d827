// Deterministic tests of the coordinator state machine: FakeClock, in-memory
// outbox, FakeNode speaking the wire protocol.
#include "coordinator/core/coordinator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "tests/fakes/core_fixture.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::coordinator {
namespace {

using testing::FakeClock;
using testing::FakeNode;
using testing::MemoryOutbox;
using testing::TaskCopy;

class CoordinatorTest : public testing::CoreTestBase {
 protected:
  void SetUp() override { make(); }
  std::unique_ptr<FakeNode> node(const std::string& id, uint32_t workers = 1) {
    return addNode(id,
                   {{"echo", Weight::kLight},
                    {"work", Weight::kMedium},
                    {"big", Weight::kHeavy},
                    {"sum", Weight::kLight}},
                   workers);
  }
  // Submits `job` as peer "client", watched, through the wire path; true once the
  // SubmitReply accepted it.
  bool submitWatched(const JobSpec& job, uint64_t request_id) {
    const std::string submit = submitJobFrame(job, request_id, /*watch=*/true);
    core_->onBytes("client", submit.data(), submit.size());
    auto reply = outbox_.next("client");
    return reply != nullptr && reply->root().isSubmitReply() &&
           reply->root().getSubmitReply().isJobId();
  }
  static JobSpec echoJob(int n, const std::string& key = {}) {
    JobSpec job;
    TokenSpec t;
    t.op = "echo";
    t.repeat = static_cast<uint32_t>(n);
    t.idempotency_key = key;
    t.args.push_back(Arg::val(int64_t{0}, 1));
    job.add(t);
    return job;
  }
  // Three echo tokens (10, 11, 12) feeding one "sum" token, named "total" if it is an output.
  static JobSpec echoesIntoSum(bool output) {
    JobSpec job;
    TokenSpec a;
    a.op = "echo";
    a.repeat = 3;
    a.args.push_back(Arg::val(int64_t{10}, 1));
    uint32_t first = job.add(a);
    TokenSpec s;
    s.op = "sum";
    s.output = output;
    if (output) s.name = "total";
    s.args.push_back(Arg::refs(first, 3));
    job.add(s);
    return job;
  }
  // Runs every task the node has, echoing args[0].
  int runAll(FakeNode& n) {
    int count = 0;
    for (int round = 0; round < 100; ++round) {
      core_->tick();
      auto tasks = n.takeTasks();
      if (tasks.empty()) break;
      for (auto& t : tasks) n.ok(t, t.args.empty() ? Value() : t.args[0]);
      count += static_cast<int>(tasks.size());
    }
    return count;
  }
};

TEST_F(CoordinatorTest, AdmissionLimitRejectsWithResourceExhaustedAndRecovers) {
  config_.max_live_tokens = 10;
  make();
  auto n = node("n1");
  auto big = core_->submitJob(echoJob(11));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(core_->submitJob(echoJob(6)).ok());
  auto over = core_->submitJob(echoJob(5));
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(core_->counters().rejects, 2u);
  EXPECT_EQ(runAll(*n), 6);
  // Capacity is back once the first job finished: nothing was lost.
  auto again = core_->submitJob(echoJob(5));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(runAll(*n), 5);
  EXPECT_EQ(core_->stats().tokens_live, 0u);
}

TEST_F(CoordinatorTest, InvalidJobsAreRefusedWithClearErrors) {
  JobSpec job;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::ref(5));  // forward reference
  job.add(t);
  auto r = core_->submitJob(job);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("earlier tokens"), std::string::npos);
}

TEST_F(CoordinatorTest, DependentBecomesReadyWithItsInputsValues) {
  auto n = node("n1");
  auto id = core_->submitJob(echoesIntoSum(true));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 3u);  // the sum is not ready yet
  for (auto& t : tasks) EXPECT_EQ(t.op, "echo");
  n->ok(tasks[0], Value(int64_t{10}));
  n->ok(tasks[1], Value(int64_t{11}));
  core_->flushAll();
  EXPECT_TRUE(n->takeTasks().empty());
  n->ok(tasks[2], Value(int64_t{12}));
  core_->flushAll();
  auto sum = n->takeTasks();
  ASSERT_EQ(sum.size(), 1u);
  EXPECT_EQ(sum[0].op, "sum");
  ASSERT_EQ(sum[0].args.size(), 3u);
  EXPECT_EQ(sum[0].args[0], Value(int64_t{10}));
  EXPECT_EQ(sum[0].args[2], Value(int64_t{12}));
  n->ok(sum[0], Value(int64_t{33}));
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  ASSERT_EQ(st->outputs.size(), 1u);
  EXPECT_EQ(st->outputs[0].name, "total");
  EXPECT_EQ(st->outputs[0].value, Value(int64_t{33}));
}

TEST_F(CoordinatorTest, PackedResultColumnsCompleteTokensLikePlainResults) {
  auto n = node("n1");
  EXPECT_TRUE(n->packed_results);  // the welcome says the core reads ResultBatch.packed
  auto id = core_->submitJob(echoesIntoSum(true));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 3u);
  n->replyPacked({tasks[0], tasks[1]}, {Value(int64_t{10}), Value(int64_t{11})});
  core_->flushAll();
  EXPECT_TRUE(n->takeTasks().empty());
  n->replyPacked({tasks[2]}, {Value(int64_t{12})});
  core_->flushAll();
  auto sum = n->takeTasks();
  ASSERT_EQ(sum.size(), 1u);
  ASSERT_EQ(sum[0].args.size(), 3u);
  EXPECT_EQ(sum[0].args[0], Value(int64_t{10}));
  EXPECT_EQ(sum[0].args[1], Value(int64_t{11}));
  EXPECT_EQ(sum[0].args[2], Value(int64_t{12}));
  n->replyPacked({sum[0]}, {Value(33.5)});  // a float block
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  ASSERT_EQ(st->outputs.size(), 1u);
  EXPECT_EQ(st->outputs[0].value, Value(33.5));
  // A packed result for a token no longer running is late, as a plain one is.
  const uint64_t late = core_->counters().late_results;
  n->replyPacked({sum[0]}, {Value(1.0)});
  EXPECT_EQ(core_->counters().late_results, late + 1);
}

TEST_F(CoordinatorTest, PackedTokenColumnsGoOnlyToNodesThatReadThem) {
  for (bool packed : {false, true}) {
    make();
    FakeNode n(*core_, outbox_, packed ? "np" : "nq",
               {{"echo", Weight::kLight}, {"sum", Weight::kLight}});
    n.packed_tokens = packed;
    ASSERT_TRUE(n.hello());
    // Three one-int echoes (packable), then a sum of three refs (not: three arguments); then a
    // float echo (packable), a text echo and an echo with a deadline (not).
    auto id = core_->submitJob(echoesIntoSum(true));
    ASSERT_TRUE(id.ok());
    core_->flushAll();
    auto tasks = n.takeTasks();
    ASSERT_EQ(tasks.size(), 3u);
    EXPECT_EQ(n.packed_tasks, packed ? 3 : 0);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(tasks[i].op, "echo");
      ASSERT_EQ(tasks[i].args.size(), 1u);
      EXPECT_EQ(tasks[i].args[0], Value(static_cast<int64_t>(10 + i)));  // step 1 per repeat
      EXPECT_EQ(tasks[i].attempt, 1u);
      EXPECT_EQ(tasks[i].lane, Weight::kLight);
      n.ok(tasks[i], Value(static_cast<int64_t>(10 + i)));
    }
    core_->flushAll();
    auto sum = n.takeTasks();
    ASSERT_EQ(sum.size(), 1u);
    EXPECT_EQ(n.packed_tasks, packed ? 3 : 0);  // the sum went in the plain list
    ASSERT_EQ(sum[0].args.size(), 3u);
    n.ok(sum[0], Value(int64_t{33}));
    auto st = core_->jobStatus(*id);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->state, control::JobState::kSucceeded);

    JobSpec mixed;
    TokenSpec f;
    f.op = "echo";
    f.args.push_back(Arg::val(2.5));
    mixed.add(f);
    TokenSpec t;
    t.op = "echo";
    t.args.push_back(Arg::val(Value(std::string("text"))));
    mixed.add(t);
    TokenSpec d;  // a deadline keeps a token in the plain list (deadlineMs)
    d.op = "echo";
    d.deadline_ms = 60'000;
    d.args.push_back(Arg::val(int64_t{4}));
    mixed.add(d);
    ASSERT_TRUE(core_->submitJob(mixed).ok());
    core_->flushAll();
    auto more = n.takeTasks();
    ASSERT_EQ(more.size(), 3u);
    EXPECT_EQ(n.packed_tasks, packed ? 4 : 0);
    bool saw_float = false;
    for (const auto& m : more) saw_float |= m.args.size() == 1 && m.args[0] == Value(2.5);
    EXPECT_TRUE(saw_float);
  }
}

TEST_F(CoordinatorTest, PackedDec50ResultColumnsCompleteTokensBitExact) {
  auto n = node("n1");
  EXPECT_TRUE(n->packed_dec_results);  // the welcome says the core reads the decs columns
  auto id = core_->submitJob(echoesIntoSum(true));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 3u);
  Dec50 neg = fromBigFloat(BigFloat(-1) / 3);
  Dec50 inf;
  inf.kind = 2;
  inf.negative = true;
  Dec50 odd;  // every limb and the exponent's sign bit in use
  odd.limbs[0] = ~uint64_t{0};
  odd.limbs[1] = 0x8000000000000001ull;
  odd.limbs[2] = 0x0123456789abcdefull;
  odd.exponent = -2147483647 - 1;
  odd.kind = 1;
  n->replyPacked(tasks, {Value(neg), Value(inf), Value(odd)});
  core_->flushAll();
  auto sum = n->takeTasks();
  ASSERT_EQ(sum.size(), 1u);
  ASSERT_EQ(sum[0].args.size(), 3u);
  EXPECT_EQ(sum[0].args[0], Value(neg));
  EXPECT_EQ(sum[0].args[1], Value(inf));
  EXPECT_EQ(sum[0].args[2], Value(odd));
  n->replyPacked({sum[0]}, {Value(neg)});
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  ASSERT_EQ(st->outputs.size(), 1u);
  EXPECT_EQ(st->outputs[0].value, Value(neg));
}

TEST_F(CoordinatorTest, ABigPackedDec50BlockIsReadWithinTheFramesTraversalLimit) {
  // Each column is read once per block: reading them per value would cross decodeFrame's
  // traversal limit (8 x the frame's words) a few dozen values into the block.
  auto n = node("n1");
  auto id = core_->submitJob(echoJob(1000));
  ASSERT_TRUE(id.ok());
  size_t biggest = 0, done = 0;
  for (int round = 0; round < 100 && done < 1000; ++round) {
    core_->flushAll();
    auto tasks = n->takeTasks();
    std::vector<Value> values;
    for (const auto& t : tasks)
      values.emplace_back(fromBigFloat(BigFloat(1) / static_cast<int64_t>(2 * t.id + 1)));
    n->replyPacked(tasks, values);
    biggest = std::max(biggest, tasks.size());
    done += tasks.size();
    ASSERT_EQ(core_->counters().malformed, 0u) << tasks.size() << " results";
  }
  EXPECT_GE(biggest, 100u);  // big enough that per-value column reads would trip the limit
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->done, 1000u);
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
}

TEST_F(CoordinatorTest, APackedDec50BlockWithUnknownFlagBitsIsRefusedAndItsTokensStayRunning) {
  auto n = node("n1");
  auto id = core_->submitJob(echoJob(2));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 2u);
  const Value third(fromBigFloat(BigFloat(1) / 3));
  n->replyPacked(tasks, {third, third}, false, 1000, /*dec_flags_or=*/0x08);
  bool rejected = false;
  while (auto f = outbox_.next(n->peer())) rejected |= f->root().isReject();
  EXPECT_TRUE(rejected);
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kRunning);
  EXPECT_EQ(st->done, 0u);
  n->replyPacked(tasks, {third, third});
  st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
}

TEST_F(CoordinatorTest, APackedBlockWithUnequalColumnsIsRefusedAndItsTokensStayRunning) {
  auto n = node("n1");
  auto id = core_->submitJob(echoJob(2));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 2u);
  n->replyPacked(tasks, {Value(int64_t{1}), Value(int64_t{2})}, /*short_column=*/true);
  bool rejected = false;
  while (auto f = outbox_.next(n->peer())) rejected |= f->root().isReject();
  EXPECT_TRUE(rejected);
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kRunning);
  EXPECT_EQ(st->done, 0u);
  n->replyPacked(tasks, {Value(int64_t{1}), Value(int64_t{2})});
  st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
}

TEST_F(CoordinatorTest, FailedInputFailsDependentsWithTheCause) {
  auto n = node("n1");
  JobSpec job;
  TokenSpec a;
  a.op = "echo";
  a.args.push_back(Arg::val(int64_t{1}));
  uint32_t ai = job.add(a);
  TokenSpec b;
  b.op = "echo";
  b.args.push_back(Arg::ref(ai));
  uint32_t bi = job.add(b);
  TokenSpec c;
  c.op = "echo";
  c.args.push_back(Arg::ref(bi));
  job.add(c);
  TokenSpec other;
  other.op = "echo";
  other.args.push_back(Arg::val(int64_t{7}));
  job.add(other);
  auto id = core_->submitJob(job);
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 2u);
  n->fail(tasks[0], absl::InvalidArgumentError("bad input 42"));
  n->ok(tasks[1], Value(int64_t{7}));
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kFailed);
  EXPECT_EQ(st->failed, 3u);
  EXPECT_EQ(st->done, 1u);
  // Sinks are the outputs: the chain's end carries the root cause.
  bool saw = false;
  for (const auto& o : st->outputs) {
    if (o.index != 2) continue;
    saw = true;
    EXPECT_EQ(o.status.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(o.status.message().find("bad input 42"), std::string::npos);
  }
  EXPECT_TRUE(saw);
}

TEST_F(CoordinatorTest, IdempotencyKeyRunsOnceAndReturnsTheSameResult) {
  auto n = node("n1");
  auto j1 = core_->submitJob(echoJob(1, "key-1"));
  ASSERT_TRUE(j1.ok());
  // Resubmitted while the original is in flight: aliases it.
  auto j2 = core_->submitJob(echoJob(1, "key-1"));
  ASSERT_TRUE(j2.ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  n->ok(tasks[0], Value("once"));
  // Resubmitted after completion: answered from the key without running.
  auto j3 = core_->submitJob(echoJob(1, "key-1"));
  ASSERT_TRUE(j3.ok());
  core_->flushAll();
  EXPECT_TRUE(n->takeTasks().empty());
  for (auto id : {*j1, *j2, *j3}) {
    auto st = core_->jobStatus(id);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->state, control::JobState::kSucceeded) << id;
    ASSERT_EQ(st->outputs.size(), 1u);
    EXPECT_EQ(st->outputs[0].value, Value("once"));
  }
  EXPECT_EQ(core_->counters().dispatched, 1u);
}

TEST_F(CoordinatorTest, WeightClassesGoToMatchingLanes) {
  auto n = node("n1");
  JobSpec job;
  for (const char* op : {"echo", "work", "big"}) {
    TokenSpec t;
    t.op = op;
    t.args.push_back(Arg::val(int64_t{1}));
    job.add(t);
  }
  TokenSpec forced;
  forced.op = "echo";
  forced.weight = Weight::kHeavy;  // explicit weight beats the op default
  job.add(forced);
  ASSERT_TRUE(core_->submitJob(job).ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 4u);
  std::map<std::string, std::vector<Weight>> lanes;
  for (auto& t : tasks) lanes[t.op].push_back(t.lane);
  EXPECT_EQ(lanes["work"], std::vector<Weight>{Weight::kMedium});
  EXPECT_EQ(lanes["big"], std::vector<Weight>{Weight::kHeavy});
  std::sort(lanes["echo"].begin(), lanes["echo"].end());
  EXPECT_EQ(lanes["echo"], (std::vector<Weight>{Weight::kLight, Weight::kHeavy}));
}

TEST_F(CoordinatorTest, BatchesFlushBySizeAndAtTheEndOfTheBurst) {
  config_.max_batch = 4;
  make();
  auto n = node("n1");
  ASSERT_TRUE(core_->submitJob(echoJob(10)).ok());
  // Two full batches go at once; the node is busy so the 2 left wait for the burst's end.
  EXPECT_EQ(n->takeTasks().size(), 8u);
  EXPECT_EQ(n->batches, 2);
  clock_.advance(10 * kMillis);
  core_->tick();
  EXPECT_TRUE(n->takeTasks().empty()) << "no flush timer";
  core_->flushAll();
  EXPECT_EQ(n->takeTasks().size(), 2u);
  EXPECT_EQ(n->batches, 3);
}

TEST_F(CoordinatorTest, AnIdleNodeGetsALoneTokenAtOnce) {
  make();
  auto n = node("n1");
  ASSERT_TRUE(core_->submitJob(echoJob(1)).ok());
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 1u) << "sent without any flush or tick";
  n->ok(tasks[0], Value(int64_t{1}));
  ASSERT_TRUE(core_->submitJob(echoJob(1)).ok());
  EXPECT_EQ(n->takeTasks().size(), 1u);
}

TEST_F(CoordinatorTest, TelemetryIsAnEvenBoundedSampleOfResults) {
  std::vector<uint64_t> sampled;
  core_->setTelemetrySink([&](const CoordinatorCore::Sample& s) { sampled.push_back(s.token.id); },
                          /*max_per_s=*/1000);  // 100 per 100 ms window
  auto n = node("n1");
  ASSERT_TRUE(core_->submitJob(echoJob(2000)).ok());
  EXPECT_EQ(runAll(*n), 2000);
  // First window: no rate known yet, so the first 100 results are taken, then nothing.
  EXPECT_EQ(sampled.size(), 100u);
  EXPECT_EQ(core_->telemetryStats().seen, 2000u);

  // Next window: the stride follows the last window's rate (2000 / 100 = every 20th result).
  sampled.clear();
  clock_.advance(100 * kMillis);
  auto job = core_->submitJob(echoJob(2000));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(runAll(*n), 2000);
  ASSERT_GE(sampled.size(), 95u);
  EXPECT_LE(sampled.size(), 100u);
  const auto local = [](uint64_t id) { return static_cast<uint32_t>(id); };
  EXPECT_LT(local(sampled.front()), 40u);
  EXPECT_GT(local(sampled.back()), 1900u);  // spread over the whole window, not its start
  EXPECT_EQ(core_->telemetryStats().sampled, 200u);
}

TEST_F(CoordinatorTest, UnknownOperationIsRefusedOnceNodesHaveRegistered) {
  JobSpec typo;
  TokenSpec t;
  t.op = "ecoh";
  t.args.push_back(Arg::val(int64_t{1}));
  typo.add(t);
  // No node yet: nothing is known, the job waits for nodes.
  auto early = core_->submitJob(typo);
  ASSERT_TRUE(early.ok()) << early.status();
  auto n = node("n1");
  auto refused = core_->submitJob(typo);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound);
  EXPECT_NE(refused.status().message().find("unknown operation 'ecoh'"), std::string::npos);
  EXPECT_NE(refused.status().message().find("offered: big, echo, sum, work"), std::string::npos)
      << refused.status().message();
  EXPECT_EQ(core_->stats().jobs_running, 1u);  // only the early one
  // A mixed job is refused whole: no token of it runs.
  JobSpec mixed = echoJob(3);
  mixed.add(t);
  EXPECT_EQ(core_->submitJob(mixed).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(n->takeTasks().empty());

  config_.reject_unknown_ops = false;
  make();
  auto n2 = node("n1");
  EXPECT_TRUE(core_->submitJob(typo).ok());  // waits for a node offering `ecoh`
}

TEST_F(CoordinatorTest, CreditLimitsTokensInFlightPerNode) {
  config_.credit_per_worker = 5;
  make();
  auto n = node("n1");
  ASSERT_TRUE(core_->submitJob(echoJob(20)).ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  EXPECT_EQ(tasks.size(), 5u);  // one light worker x 5 credits
  for (auto& t : tasks) n->ok(t, t.args[0]);
  core_->flushAll();
  EXPECT_EQ(n->takeTasks().size(), 5u);
}

TEST_F(CoordinatorTest, RetryableErrorsRetryAfterBackoffThenFail) {
  config_.default_max_attempts = 3;
  config_.retry_backoff_ns = 10 * kMillis;
  make();
  auto n = node("n1");
  auto id = core_->submitJob(echoJob(1));
  core_->flushAll();
  auto t1 = n->takeTasks();
  ASSERT_EQ(t1.size(), 1u);
  EXPECT_EQ(t1[0].attempt, 1u);
  n->fail(t1[0], absl::UnavailableError("flaky"));
  core_->tick();
  EXPECT_TRUE(n->takeTasks().empty());  // still backing off
  clock_.advanceMs(100);
  core_->tick();
  auto t2 = n->takeTasks();
  ASSERT_EQ(t2.size(), 1u);
  EXPECT_EQ(t2[0].attempt, 2u);
  // A late result of attempt 1 is discarded.
  n->ok(t1[0], Value("stale"));
  EXPECT_EQ(core_->counters().late_results, 1u);
  n->fail(t2[0], absl::UnavailableError("flaky"));
  clock_.advanceMs(1000);
  core_->tick();
  auto t3 = n->takeTasks();
  ASSERT_EQ(t3.size(), 1u);
  n->fail(t3[0], absl::UnavailableError("still flaky"));
  auto st = core_->jobStatus(*id);
  EXPECT_EQ(st->state, control::JobState::kFailed);
  EXPECT_EQ(st->outputs[0].status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(core_->counters().retried, 2u);
}

TEST_F(CoordinatorTest, DeadlineFailsTokenAndCancelsItOnTheNode) {
  auto n = node("n1");
  JobSpec job = echoJob(1);
  job.tokens[0].deadline_ms = 100;
  auto id = core_->submitJob(job);
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  clock_.advanceMs(99);
  n->heartbeat();
  core_->tick();
  EXPECT_EQ(core_->jobStatus(*id)->state, control::JobState::kRunning);
  clock_.advanceMs(2);
  core_->tick();
  auto st = core_->jobStatus(*id);
  EXPECT_EQ(st->state, control::JobState::kFailed);
  EXPECT_EQ(st->outputs[0].status.code(), StatusCode::kDeadlineExceeded);
  n->takeTasks();
  ASSERT_FALSE(n->controls.empty());
  EXPECT_EQ(n->controls.back(), wire::Control::CANCEL_TOKENS);
  n->ok(tasks[0], Value("too late"));
  EXPECT_EQ(core_->counters().late_results, 1u);
}

TEST_F(CoordinatorTest, LostNodeWorkIsRequeuedElsewhereAndLateResultsDiscarded) {
  config_.node_timeout_ns = 1 * kSeconds;
  make();
  auto a = node("a");
  ASSERT_TRUE(core_->submitJob(echoJob(4)).ok());
  core_->flushAll();
  auto on_a = a->takeTasks();
  ASSERT_EQ(on_a.size(), 4u);
  auto b = node("b");
  clock_.advanceMs(1500);
  b->heartbeat();
  core_->tick();  // a missed its heartbeats
  EXPECT_EQ(core_->counters().node_deaths, 1u);
  // Suspects run isolated, one at a time per node.
  int done = 0;
  for (int i = 0; i < 10 && done < 4; ++i) {
    core_->tick();
    for (auto& t : b->takeTasks()) {
      EXPECT_EQ(t.attempt, 2u);
      b->ok(t, t.args[0]);
      ++done;
    }
  }
  EXPECT_EQ(done, 4);
  // The dead node's results arrive late: discarded, nothing counted twice.
  a->ok(on_a[0], Value(int64_t{0}));
  EXPECT_EQ(core_->counters().completed, 4u);
  EXPECT_EQ(core_->stats().tokens_live, 0u);
}

TEST_F(CoordinatorTest, PoisonTokenIsQuarantinedAfterKillingNodes) {
  config_.node_timeout_ns = 1 * kSeconds;
  config_.poison_threshold = 3;
  make();
  JobSpec job;
  TokenSpec poison;
  poison.op = "echo";
  poison.args.push_back(Arg::val(int64_t{666}));
  job.add(poison);
  auto id = core_->submitJob(job);
  std::vector<std::unique_ptr<FakeNode>> nodes;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(node("n" + std::to_string(i)));
    core_->tick();
    auto tasks = nodes.back()->takeTasks();
    ASSERT_EQ(tasks.size(), 1u) << "round " << i;
    clock_.advanceMs(1500);  // the node dies running it
    core_->tick();
  }
  auto st = core_->jobStatus(*id);
  EXPECT_EQ(st->state, control::JobState::kFailed);
  EXPECT_EQ(st->outputs[0].status.code(), StatusCode::kAborted);
  EXPECT_NE(st->outputs[0].status.message().find("quarantined"), std::string::npos);
  EXPECT_EQ(core_->counters().quarantined, 1u);
}

TEST_F(CoordinatorTest, PauseStopsDispatchResumeRestartsDrainDrops) {
  auto n = node("n1");
  ASSERT_TRUE(core_->pauseOp("echo", true).ok());
  auto id = core_->submitJob(echoJob(5));
  core_->flushAll();
  EXPECT_TRUE(n->takeTasks().empty());
  ASSERT_TRUE(core_->pauseOp("echo", false).ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  EXPECT_EQ(tasks.size(), 5u);
  for (auto& t : tasks) n->ok(t, t.args[0]);
  EXPECT_EQ(core_->jobStatus(*id)->state, control::JobState::kSucceeded);

  ASSERT_TRUE(core_->pauseOp("echo", true).ok());
  auto id2 = core_->submitJob(echoJob(7));
  auto dropped = core_->drainOp("echo");
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 7u);
  EXPECT_EQ(core_->jobStatus(*id2)->state, control::JobState::kCancelled);
  EXPECT_EQ(core_->pauseOp("nope", true).status().code(), StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, OpLimitCapsTokensInFlight) {
  auto n = node("n1");
  control::OpLimits limits;
  limits.max_in_flight = 2;
  ASSERT_TRUE(core_->setOpLimits("echo", limits).ok());
  ASSERT_TRUE(core_->submitJob(echoJob(6)).ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  EXPECT_EQ(tasks.size(), 2u);
}

TEST_F(CoordinatorTest, CancelJobCancelsQueuedAndRunningTokens) {
  config_.credit_per_worker = 2;
  make();
  auto n = node("n1");
  auto id = core_->submitJob(echoJob(6));
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 2u);
  auto c = core_->cancelJob(*id);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, 6u);
  EXPECT_EQ(core_->jobStatus(*id)->state, control::JobState::kCancelled);
  n->takeTasks();
  ASSERT_FALSE(n->controls.empty());
  n->ok(tasks[0], Value(int64_t{0}));  // late: discarded
  EXPECT_EQ(core_->counters().completed, 0u);
}

TEST_F(CoordinatorTest, CancelJobCountsDependentsItCancels) {
  auto n = node("n1");
  auto id = core_->submitJob(echoesIntoSum(false));
  ASSERT_TRUE(id.ok());
  // Cancelling the first echo cascades to the sum before the loop reaches it.
  auto c = core_->cancelJob(*id);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, 4u);
  EXPECT_EQ(core_->jobStatus(*id)->cancelled, *c);
}

TEST_F(CoordinatorTest, CancelRunningOpEndsEveryDispatchedTokenCancelledWithoutRetry) {
  config_.credit_per_worker = 3;
  make();
  auto n = node("n1");
  JobSpec job;
  TokenSpec t;
  t.op = "work";
  t.repeat = 5;
  t.max_attempts = 5;  // a Cancelled result must not be retried even so
  t.args.push_back(Arg::val(int64_t{0}, 1));
  job.add(t);
  auto id = core_->submitJob(job);
  ASSERT_TRUE(id.ok());
  core_->tick();  // dispatch up to the credit; the batch may still be held back
  auto cancelled = core_->cancelRunningOp("work");
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(*cancelled, 3u);  // running = the credit; two tokens still queued here
  // The held-back batch went out before the cancel: the node holds all three.
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 3u);
  ASSERT_FALSE(n->controls.empty());
  EXPECT_EQ(n->controls.back(), wire::Control::CANCEL_OP);
  // The node answers one Cancelled result per token: queued ones it never
  // started, and the running one whose operation saw the flag.
  n->reply({{tasks[0], StatusOr<Value>(absl::CancelledError("work cancelled"))},
            {tasks[1], StatusOr<Value>(absl::CancelledError(
                           "operation 'work' cancelled before the token started"))},
            {tasks[2], StatusOr<Value>(absl::CancelledError(
                           "operation 'work' cancelled before the token started"))}});
  EXPECT_EQ(core_->counters().cancelled, 3u);
  EXPECT_EQ(core_->counters().retried, 0u);
  auto ops = core_->listOps();
  auto op = std::find_if(ops.begin(), ops.end(), [](auto& o) { return o.name == "work"; });
  ASSERT_NE(op, ops.end());
  EXPECT_EQ(op->cancelled, 3u);
  // Credits came back: the two tokens the coordinator still held (not
  // running at the cancel, so unaffected) were dispatched at once...
  EXPECT_EQ(op->running, 2u);
  // ...they run, and the job ends (cancelled, since three of its tokens were).
  EXPECT_EQ(runAll(*n), 2);
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->cancelled, 3u);
  EXPECT_EQ(st->done, 2u);
  EXPECT_EQ(st->running, 0u);
  EXPECT_EQ(st->state, control::JobState::kCancelled);
  EXPECT_EQ(core_->stats().tokens_live, 0u);
  EXPECT_EQ(core_->cancelRunningOp("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, DrainedNodeGetsNoNewWorkAndReturnedTokensRunElsewhere) {
  auto a = node("a");
  auto b = node("b");
  ASSERT_TRUE(core_->drainNode("a", true).ok());
  ASSERT_TRUE(core_->submitJob(echoJob(4)).ok());
  core_->flushAll();
  a->takeTasks();
  EXPECT_EQ(b->takeTasks().size(), 4u);
  EXPECT_EQ(core_->drainNode("zzz", true).status().code(), StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, WrongProtocolVersionIsRefusedAtHello) {
  FakeNode old(*core_, outbox_, "old", {{"echo", Weight::kLight}});
  EXPECT_FALSE(old.hello(99));
  EXPECT_EQ(core_->stats().nodes_ready, 0u);
}

std::string pingFrame(uint16_t version) {
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(version);
  f.setPing(7);
  return encodeFrame(msg);
}

// A hello whose `cores` list pointer claims 2^29-1 elements in a 3-element frame.
std::string oversizeListFrame() {
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  auto h = f.initHello();
  h.setNodeId("liar");
  auto cores = h.initCores(3);
  for (unsigned i = 0; i < 3; ++i) cores.set(i, i);
  std::string bytes = encodeFrame(msg);
  // List pointer: bits 0-1 = 1, bits 32-34 = element size (4 = 32-bit), bits 35-63 = count.
  int patched = 0;
  for (size_t off = 8; off + 8 <= bytes.size(); off += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + off, 8);
    if ((w & 3) == 1 && (w >> 32) == ((3u << 3) | 4u)) {
      w = (w & 0xffffffffu) | (uint64_t{0x1fffffff} << 35) | (uint64_t{4} << 32);
      std::memcpy(bytes.data() + off, &w, 8);
      ++patched;
    }
  }
  EXPECT_EQ(patched, 1);
  return bytes;
}

TEST_F(CoordinatorTest, MalformedRawFramesGetARejectAndTheCoreKeepsServing) {
  config_.max_frame_bytes = 4096;
  make();
  auto n = node("n1");
  const std::string valid = pingFrame(kProtocolVersion);
  // Sanity: the unmodified frame decodes and is answered with a pong.
  core_->onBytes("rogue", valid.data(), valid.size());
  auto pong = outbox_.next("rogue");
  ASSERT_NE(pong, nullptr);
  ASSERT_TRUE(pong->root().isPong());

  struct Bad {
    std::string what, bytes;
    StatusCode code;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {"not whole words", "hello", StatusCode::kInvalidArgument, "whole number of words"},
      {"truncated", valid.substr(0, valid.size() - 8), StatusCode::kInvalidArgument,
       "malformed frame"},
      {"wrong version", pingFrame(99), StatusCode::kInvalidArgument, "protocol version 99"},
      {"oversize list pointer", oversizeListFrame(), StatusCode::kInvalidArgument,
       "malformed frame"},
      {"garbage", std::string(64, '\xff'), StatusCode::kInvalidArgument, "malformed frame"},
      {"over the frame limit", std::string(8192, '\0'), StatusCode::kResourceExhausted,
       "exceeds the 4096 byte limit"},
  };
  uint64_t malformed = 0;
  for (const auto& b : bad) {
    core_->onBytes("rogue", b.bytes.data(), b.bytes.size());
    EXPECT_EQ(core_->counters().malformed, ++malformed) << b.what;
    auto rej = outbox_.next("rogue");
    ASSERT_NE(rej, nullptr) << b.what;
    ASSERT_TRUE(rej->root().isReject()) << b.what;
    const Status st = fromWire(rej->root().getReject().getError());
    EXPECT_EQ(st.code(), b.code) << b.what << ": " << st;
    EXPECT_NE(st.message().find(b.says), std::string::npos) << b.what << ": " << st;
    EXPECT_EQ(outbox_.pending("rogue"), 0u) << b.what;
  }
  EXPECT_EQ(core_->stats().nodes_ready, 1u);  // the liar's hello registered nothing

  // A well-formed job sent as raw bytes through the same path still runs to completion.
  const std::string submit = submitJobFrame(echoJob(3), 41, /*watch=*/true);
  core_->onBytes("client", submit.data(), submit.size());
  auto reply = outbox_.next("client");
  ASSERT_NE(reply, nullptr);
  ASSERT_TRUE(reply->root().isSubmitReply());
  ASSERT_TRUE(reply->root().getSubmitReply().isJobId());
  EXPECT_EQ(reply->root().getSubmitReply().getRequestId(), 41u);
  const uint64_t job = reply->root().getSubmitReply().getJobId();
  EXPECT_EQ(runAll(*n), 3);
  bool done = false;
  while (auto f = outbox_.next("client")) {
    if (!f->root().isJobDone()) continue;
    auto d = f->root().getJobDone();
    EXPECT_EQ(d.getJobId(), job);
    EXPECT_EQ(d.getState(), wire::JobState::SUCCEEDED);
    ASSERT_EQ(d.getOutputs().size(), 3u);
    for (unsigned i = 0; i < 3; ++i)
      EXPECT_EQ(fromWire(d.getOutputs()[i].getValue()), Value(static_cast<int64_t>(i)));
    done = true;
  }
  EXPECT_TRUE(done);
}

TEST_F(CoordinatorTest, ProgressFramesStreamEachOutputOnceAsItFinishes) {
  auto n = node("n1");
  ASSERT_TRUE(submitWatched(echoJob(4), 7));  // 4 sinks: 4 outputs
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 4u);
  // Streamed outputs of the progress frames the client has received so far, by index.
  std::map<uint32_t, Value> streamed;
  auto progressOutputs = [&] {
    size_t frames = 0;
    while (auto f = outbox_.next("client")) {
      if (!f->root().isJobProgress()) continue;
      ++frames;
      for (auto o : f->root().getJobProgress().getOutputs()) {
        EXPECT_TRUE(o.isValue());
        EXPECT_EQ(std::string(o.getName().cStr()), "echo");
        EXPECT_TRUE(streamed.emplace(o.getIndex(), fromWire(o.getValue())).second)
            << "output " << o.getIndex() << " streamed twice";
      }
    }
    return frames;
  };
  n->ok(tasks[2], Value(int64_t{20}));
  n->ok(tasks[0], Value(int64_t{0}));
  clock_.advance(200 * kMillis);
  core_->tick();
  EXPECT_GE(progressOutputs(), 1u);
  EXPECT_EQ(streamed, (std::map<uint32_t, Value>{{0, Value(int64_t{0})}, {2, Value(int64_t{20})}}));
  // Nothing new finished: the next frame streams nothing again.
  clock_.advance(200 * kMillis);
  core_->tick();
  EXPECT_GE(progressOutputs(), 1u);
  EXPECT_EQ(streamed.size(), 2u);
  n->ok(tasks[1], Value(int64_t{10}));
  clock_.advance(200 * kMillis);
  core_->tick();
  progressOutputs();
  EXPECT_EQ(streamed.size(), 3u);
  EXPECT_EQ(streamed.at(1), Value(int64_t{10}));
  // The last one ends the job: JobDone carries all four, as before.
  n->ok(tasks[3], Value(int64_t{30}));
  bool done = false;
  while (auto f = outbox_.next("client")) {
    if (!f->root().isJobDone()) continue;
    EXPECT_EQ(f->root().getJobDone().getOutputs().size(), 4u);
    done = true;
  }
  EXPECT_TRUE(done);
}

// --progress-interval-ms: a watched running job gets a progress frame every interval, and the
// tick asks to be woken that soon (its own cadence is 50 ms), so intervals below it hold.
TEST_F(CoordinatorTest, ProgressIntervalSetsTheTickCadenceWhileAJobIsWatched) {
  config_.progress_interval_ns = 5 * kMillis;
  make();
  auto n = node("n1");
  const Nanos idle_next = core_->tick() - clock_.now();
  EXPECT_GT(idle_next, 5 * kMillis);  // nothing watched: the tick's own cadence
  ASSERT_TRUE(submitWatched(echoJob(2), 9));
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 2u);
  n->ok(tasks[0], Value(int64_t{0}));
  size_t frames = 0;
  for (int i = 0; i < 4; ++i) {
    const Nanos next = core_->tick();
    EXPECT_LE(next - clock_.now(), 5 * kMillis);
    clock_.advance(next - clock_.now());
    while (auto f = outbox_.next("client")) frames += f->root().isJobProgress() ? 1 : 0;
  }
  EXPECT_GE(frames, 3u);  // one per 5 ms, not one per 50 ms tick
  n->ok(tasks[1], Value(int64_t{1}));
  bool done = false;
  while (auto f = outbox_.next("client")) done = done || f->root().isJobDone();
  EXPECT_TRUE(done);
  EXPECT_GT(core_->tick() - clock_.now(), 5 * kMillis);  // no watched job left
}

TEST_F(CoordinatorTest, JobOverTheMaxJobSizeIsRefusedWithAClearError) {
  config_.max_job_tokens = 100;
  make();
  auto n = node("n1");
  auto over = core_->submitJob(echoJob(101));
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(over.status().message().find("more than 100 tokens"), std::string::npos)
      << over.status();
  // Split over two specs, the limit applies to the expanded total.
  JobSpec split = echoJob(60);
  split.add(echoJob(41).tokens[0]);
  EXPECT_EQ(core_->submitJob(split).status().code(), StatusCode::kInvalidArgument);
  // Over the wire the submitter gets the same error in its SubmitReply.
  const std::string frame = submitJobFrame(echoJob(101), 9, /*watch=*/true);
  core_->onBytes("client", frame.data(), frame.size());
  auto reply = outbox_.next("client");
  ASSERT_NE(reply, nullptr);
  ASSERT_TRUE(reply->root().isSubmitReply());
  ASSERT_TRUE(reply->root().getSubmitReply().isError());
  const Status st = fromWire(reply->root().getSubmitReply().getError());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("more than 100 tokens"), std::string::npos) << st;
  // Nothing was admitted; a job at the limit is fine.
  EXPECT_EQ(core_->stats().tokens_live, 0u);
  EXPECT_EQ(core_->stats().jobs_total, 0u);
  ASSERT_TRUE(core_->submitJob(echoJob(100)).ok());
  EXPECT_EQ(runAll(*n), 100);
}

TEST_F(CoordinatorTest, DisconnectedNodeIsLostAtOnceAndItsTokensRequeued) {
  config_.node_timeout_ns = 3600 * kSeconds;  // the heartbeat timeout cannot be what notices
  make();
  auto a = node("a");
  auto id = core_->submitJob(echoJob(4));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  auto on_a = a->takeTasks();
  ASSERT_EQ(on_a.size(), 4u);
  auto b = node("b");
  core_->onDisconnected("some-client");  // not a node: nothing happens
  EXPECT_EQ(core_->counters().node_deaths, 0u);
  a->disconnect();  // no clock advance: noticed at once
  EXPECT_EQ(core_->counters().node_deaths, 1u);
  EXPECT_EQ(core_->counters().disconnects, 1u);
  auto st = core_->stats();
  EXPECT_EQ(st.nodes_ready, 1u);
  EXPECT_EQ(st.nodes_dead, 1u);
  EXPECT_EQ(st.nodes_disconnected, 1u);
  EXPECT_EQ(st.tokens_requeued, 4u);
  a->disconnect();  // a second report of the same connection changes nothing
  EXPECT_EQ(core_->counters().node_deaths, 1u);
  std::set<uint64_t> rerun;
  for (int i = 0; i < 10 && rerun.size() < 4; ++i) {
    core_->tick();
    for (auto& t : b->takeTasks()) {
      EXPECT_EQ(t.attempt, 2u);
      EXPECT_TRUE(rerun.insert(t.id).second) << "token " << t.id << " dispatched twice";
      b->ok(t, t.args[0]);
    }
  }
  std::set<uint64_t> lost;
  for (auto& t : on_a) lost.insert(t.id);
  EXPECT_EQ(rerun, lost);
  EXPECT_EQ(core_->jobStatus(*id)->state, control::JobState::kSucceeded);
  // Results the dead connection had in the pipe arrive late: discarded.
  a->ok(on_a[0], Value(int64_t{0}));
  EXPECT_EQ(core_->counters().completed, 4u);
  EXPECT_EQ(core_->counters().late_results, 1u);
}

TEST_F(CoordinatorTest, TokensHandedBackByADrainingNodeRunElsewhereExactlyOnce) {
  auto a = node("a");
  auto b = node("b");
  auto id = core_->submitJob(echoJob(8));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  auto on_a = a->takeTasks();
  auto on_b = b->takeTasks();
  ASSERT_EQ(on_a.size(), 4u);
  ASSERT_EQ(on_b.size(), 4u);
  ASSERT_TRUE(core_->drainNode("a", true).ok());
  a->takeTasks();
  ASSERT_FALSE(a->controls.empty());
  EXPECT_EQ(a->controls.back(), wire::Control::DRAIN);
  for (auto& t : on_b) b->ok(t, t.args[0]);
  EXPECT_TRUE(b->takeTasks().empty());
  // a finishes the token it was running and hands the 3 queued ones back.
  a->ok(on_a[0], on_a[0].args[0]);
  const std::vector<TaskCopy> back(on_a.begin() + 1, on_a.end());
  a->giveBack(back);
  EXPECT_EQ(core_->counters().returned, 3u);
  EXPECT_EQ(core_->stats().tokens_returned, 3u);
  core_->flushAll();
  EXPECT_TRUE(a->takeTasks().empty()) << "a draining node got new work";
  auto rerun = b->takeTasks();
  ASSERT_EQ(rerun.size(), 3u);
  std::map<uint64_t, uint32_t> want, got;
  for (const auto& t : back) want[t.id] = t.attempt + 1;
  for (const auto& t : rerun) got[t.id] = t.attempt;
  EXPECT_EQ(got, want);
  // A duplicate hand-back and a stale result for a returned token change nothing.
  a->giveBack(back);
  a->ok(back[0], Value(int64_t{-1}));
  EXPECT_EQ(core_->counters().returned, 3u);
  EXPECT_EQ(core_->counters().late_results, 1u);
  core_->flushAll();
  EXPECT_TRUE(b->takeTasks().empty());
  for (auto& t : rerun) b->ok(t, t.args[0]);
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  ASSERT_EQ(st->outputs.size(), 8u);
  for (const auto& o : st->outputs) EXPECT_EQ(o.value, Value(static_cast<int64_t>(o.index)));
  EXPECT_EQ(core_->counters().completed, 8u);
  EXPECT_EQ(core_->counters().dispatched, 11u);
  EXPECT_EQ(core_->stats().tokens_live, 0u);
}

TEST_F(CoordinatorTest, ANodeThatReportsDrainingGetsNoNewWork) {
  // A node draining on its own (SIGTERM) says so in a heartbeat; the coordinator must stop
  // sending it batches it would only hand back.
  auto a = node("a");
  auto b = node("b");
  a->heartbeat(/*draining=*/true);
  auto nodes = core_->listNodes();
  ASSERT_EQ(nodes.size(), 2u);
  for (const auto& n : nodes)
    EXPECT_EQ(n.state, n.id == "a" ? control::NodeState::kDraining : control::NodeState::kReady)
        << n.id;
  auto id = core_->submitJob(echoJob(8));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  EXPECT_TRUE(a->takeTasks().empty()) << "a self-draining node got new work";
  auto on_b = b->takeTasks();
  ASSERT_EQ(on_b.size(), 8u);
  for (auto& t : on_b) b->ok(t, t.args[0]);
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  // The node's own "not draining" heartbeat does not undo an operator's drain, nor its own.
  a->heartbeat(false);
  for (const auto& n : core_->listNodes()) {
    if (n.id == "a") {
      EXPECT_EQ(n.state, control::NodeState::kDraining);
    }
  }
}

// The race behind GatewayClusterTest.NodesDrainUndrainEvict failing under load: an operator
// drains a node, so its heartbeats say "draining"; one of them is still on its way when the
// operator undrains. That late heartbeat is the node's echo of the old drain, not a drain of its
// own: the node must stay ready and get work (before the fix it went back to draining for good,
// since later "not draining" heartbeats never turn a node ready).
TEST_F(CoordinatorTest, AHeartbeatSentBeforeTheUndrainArrivedDoesNotDrainTheNodeAgain) {
  auto a = node("a");
  ASSERT_TRUE(core_->drainNode("a", true).ok());
  a->heartbeat(/*draining=*/true);  // the node obeys the drain
  ASSERT_EQ(core_->drainNode("a", false)->state, control::NodeState::kReady);
  a->heartbeat(/*draining=*/true);  // sent before the node read the undrain
  EXPECT_EQ(core_->stats().nodes_ready, 1u);
  auto id = core_->submitJob(echoJob(3));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  auto tasks = a->takeTasks();
  ASSERT_EQ(tasks.size(), 3u) << "an undrained node got no work";
  for (auto& t : tasks) a->ok(t, t.args[0]);
  EXPECT_EQ(core_->jobStatus(*id)->state, control::JobState::kSucceeded);
  // Once the node has said "not draining", a later "draining" is its own (SIGTERM) again.
  a->heartbeat(false);
  a->heartbeat(true);
  EXPECT_EQ(core_->stats().nodes_ready, 0u);
  EXPECT_EQ(core_->stats().nodes_draining, 1u);
}

TEST_F(CoordinatorTest, UnknownSessionIsAskedToSayHello) {
  FakeNode stranger(*core_, outbox_, "stranger", {{"echo", Weight::kLight}});
  stranger.heartbeat();
  auto f = outbox_.next(stranger.peer());
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->root().isWelcome());
  EXPECT_FALSE(f->root().getWelcome().getAccepted());
  EXPECT_EQ(f->root().getWelcome().getError().getCode(),
            static_cast<uint8_t>(StatusCode::kFailedPrecondition));
}

TEST_F(CoordinatorTest, LeastOutstandingBalancesAcrossNodes) {
  auto a = node("a");
  auto b = node("b");
  ASSERT_TRUE(core_->submitJob(echoJob(100)).ok());
  core_->flushAll();
  const auto na = a->takeTasks().size();
  const auto nb = b->takeTasks().size();
  EXPECT_EQ(na + nb, 100u);
  EXPECT_EQ(na, nb);
}

TEST_F(CoordinatorTest, TelemetryRecordsTheNodeLoadAtDispatch) {
  std::vector<CoordinatorCore::Sample> samples;
  core_->setTelemetrySink([&](const CoordinatorCore::Sample& s) { samples.push_back(s); });
  auto n = node("n1");
  ASSERT_TRUE(core_->submitJob(echoJob(10)).ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 10u);
  // Answered newest first: in flight at result time would read 9, 8, ... for these.
  for (size_t i = tasks.size(); i-- > 0;) n->ok(tasks[i], Value(int64_t{0}));
  ASSERT_EQ(samples.size(), 10u);
  for (const auto& s : samples)
    EXPECT_EQ(s.node_load, static_cast<double>(static_cast<uint32_t>(s.token.id)))
        << "token " << static_cast<uint32_t>(s.token.id) << " was dispatched behind that many";
}

TEST_F(CoordinatorTest, LeastOutstandingCountsObservedWorkAndLearnsNodeSpeed) {
  config_.placement_horizon_ms = 20;  // the split below is the horizon's (off by default)
  make();
  auto a = node("a");
  auto b = node("b");
  // Before any result it counts tokens: an even split.
  ASSERT_TRUE(core_->submitJob(echoJob(200)).ok());
  core_->flushAll();
  auto ta = a->takeTasks();
  auto tb = b->takeTasks();
  ASSERT_EQ(ta.size(), 100u);
  ASSERT_EQ(tb.size(), 100u);
  // Node b runs the same op 2.5x slower; results interleave.
  for (size_t i = 0; i < 100; ++i) {
    a->reply({{ta[i], StatusOr<Value>(Value(int64_t{0}))}}, 1'000'000);
    b->reply({{tb[i], StatusOr<Value>(Value(int64_t{0}))}}, 2'500'000);
  }
  Scheduler& s = core_->scheduler();
  EXPECT_DOUBLE_EQ(s.nodeSpeed(0), 1.0);
  EXPECT_NEAR(s.nodeSpeed(1), 0.4, 0.02);
  // A token of the op now costs its mean run time (ns on the fastest node), not 1.
  TokenInfo t;
  t.op = core_->opIndex("echo");
  double cost = 0;
  s.costs(std::span<const TokenInfo>(&t, 1), std::span<double>(&cost, 1));
  EXPECT_GT(cost, 0.9e6);
  EXPECT_LT(cost, 1.8e6);
  // Speed-aware: of 140 tokens (~1 ms each) only the queue horizon's worth is committed (20 ms
  // of predicted work per worker: ~21 on a, ~8 on the 2.5x slower b; the rest wait at the
  // coordinator for results), split 100 : 40 like the speeds.
  ASSERT_TRUE(core_->submitJob(echoJob(140)).ok());
  core_->flushAll();
  const auto na = a->takeTasks().size();
  const auto nb = b->takeTasks().size();
  EXPECT_LT(na + nb, 40u);
  EXPECT_GE(nb, 4u);
  EXPECT_NEAR(static_cast<double>(na) / static_cast<double>(na + nb), 100.0 / 140, 0.08);
}

TEST_F(CoordinatorTest, PlacementHorizonHoldsWorkAtTheCoordinatorUntilResultsFreeIt) {
  // --placement-horizon-ms 0 commits every token at once (deep credit); the default 20 ms keeps
  // ~20 ms of predicted work per worker on the node, and every result lets the next token go.
  for (double horizon_ms : {0.0, 20.0}) {
    config_.placement_horizon_ms = horizon_ms;
    make();
    auto a = node("a");
    ASSERT_TRUE(core_->submitJob(echoJob(10)).ok());  // teach the op's cost: 1 ms
    core_->flushAll();
    for (auto& t : a->takeTasks()) a->reply({{t, StatusOr<Value>(Value(int64_t{0}))}}, 1'000'000);
    ASSERT_TRUE(core_->submitJob(echoJob(100)).ok());
    core_->flushAll();
    auto first = a->takeTasks();
    if (horizon_ms == 0) {
      EXPECT_EQ(first.size(), 100u);
      continue;
    }
    EXPECT_GE(first.size(), 20u);
    EXPECT_LE(first.size(), 22u);
    // Each result frees ~1 ms of predicted work: one more token goes out, until all 100 ran.
    size_t ran = 0;
    std::vector<TaskCopy> queue = std::move(first);
    for (int round = 0; round < 200 && !queue.empty(); ++round) {
      a->reply({{queue.front(), StatusOr<Value>(Value(int64_t{0}))}}, 1'000'000);
      queue.erase(queue.begin());
      ++ran;
      core_->flushAll();
      for (auto& t : a->takeTasks()) queue.push_back(std::move(t));
      EXPECT_LE(queue.size(), 22u);
    }
    EXPECT_EQ(ran, 100u);
  }
}

// ---- SubmitJob.ackWithResult: the SubmitReply held until the JobDone can carry it (issue 13)

class AckWithResultTest : public CoordinatorTest {
 protected:
  void SetUp() override {
    config_.ack_hold_ns = 300'000;
    make();
  }
  void submit(const JobSpec& job, uint64_t request_id, const std::string& peer = "client") {
    const std::string f = submitJobFrame(job, request_id, /*watch=*/true, /*ack_with_result=*/true);
    core_->onBytes(peer, f.data(), f.size());
  }
  // Every frame queued for `peer`, decoded.
  std::vector<std::unique_ptr<DecodedFrame>> drain(const std::string& peer = "client") {
    std::vector<std::unique_ptr<DecodedFrame>> out;
    while (auto f = outbox_.next(peer)) out.push_back(std::move(f));
    return out;
  }
};

TEST_F(AckWithResultTest, AJobDoneWithinTheHoldIsTheOnlyFrameAndCarriesTheRequestId) {
  auto n = node("n1");
  submit(echoJob(1), 21);
  EXPECT_EQ(outbox_.pending("client"), 0u);  // no SubmitReply yet
  EXPECT_EQ(core_->heldAcks(), 1u);
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 1u);  // the job runs while its ack is held
  clock_.advance(100'000);
  core_->releaseAcks();
  n->ok(tasks[0], Value(int64_t{5}));
  auto frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_TRUE(frames[0]->root().isJobDone());
  auto d = frames[0]->root().getJobDone();
  EXPECT_EQ(d.getRequestId(), 21u);
  EXPECT_EQ(d.getIncarnation(), core_->incarnation());
  EXPECT_EQ(d.getState(), wire::JobState::SUCCEEDED);
  ASSERT_EQ(d.getOutputs().size(), 1u);
  EXPECT_EQ(fromWire(d.getOutputs()[0].getValue()), Value(int64_t{5}));
  EXPECT_EQ(core_->heldAcks(), 0u);
  // The hold's deadline passing later sends nothing.
  clock_.advance(kSeconds);
  core_->tick();
  EXPECT_EQ(outbox_.pending("client"), 0u);
}

TEST_F(AckWithResultTest, AJobStillRunningAtTheDeadlineGetsItsSubmitReplyThen) {
  auto n = node("n1");
  submit(echoJob(1), 22);
  // The server wakes for the hold's deadline.
  EXPECT_EQ(core_->nextAckDue() - clock_.now(), 300'000);
  core_->tick();
  EXPECT_EQ(outbox_.pending("client"), 0u);  // no progress frame ends the hold early
  clock_.advance(299'999);
  core_->releaseAcks();
  EXPECT_EQ(outbox_.pending("client"), 0u);
  clock_.advance(1);
  core_->releaseAcks();
  auto frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_TRUE(frames[0]->root().isSubmitReply());
  auto rep = frames[0]->root().getSubmitReply();
  EXPECT_EQ(rep.getRequestId(), 22u);
  ASSERT_TRUE(rep.isJobId());
  EXPECT_EQ(rep.getIncarnation(), core_->incarnation());
  const uint64_t job_id = rep.getJobId();  // `rep` reads frames[0], replaced below
  EXPECT_EQ(core_->heldAcks(), 0u);
  // The result then comes as a plain JobDone, to the same watcher.
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  n->ok(tasks[0], Value(int64_t{1}));
  frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_TRUE(frames[0]->root().isJobDone());
  EXPECT_EQ(frames[0]->root().getJobDone().getJobId(), job_id);
  EXPECT_EQ(frames[0]->root().getJobDone().getRequestId(), 0u);
}

TEST_F(AckWithResultTest, RefusalsAreAnsweredAtOnce) {
  config_.ack_hold_ns = 300'000;
  config_.max_live_tokens = 2;
  make();
  auto n = node("n1");
  submit(echoJob(3), 23);  // over the admission limit
  auto frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_TRUE(frames[0]->root().isSubmitReply());
  ASSERT_TRUE(frames[0]->root().getSubmitReply().isError());
  EXPECT_EQ(fromWire(frames[0]->root().getSubmitReply().getError()).code(),
            StatusCode::kResourceExhausted);
  JobSpec bad;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::ref(5));  // forward reference
  bad.add(t);
  submit(bad, 24);
  frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_TRUE(frames[0]->root().getSubmitReply().isError());
  EXPECT_EQ(core_->heldAcks(), 0u);
}

TEST_F(AckWithResultTest, WithoutTheFlagTheReplyComesAtOnce) {
  auto n = node("n1");
  ASSERT_TRUE(submitWatched(echoJob(1), 25));  // the flag not set
  EXPECT_EQ(core_->heldAcks(), 0u);
}

TEST_F(AckWithResultTest, WithHoldZeroTheReplyComesAtOnce) {
  config_.ack_hold_ns = 0;
  make();
  auto n = node("n1");
  submit(echoJob(1), 26);
  auto frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_TRUE(frames[0]->root().isSubmitReply());
  EXPECT_EQ(core_->heldAcks(), 0u);
}

TEST_F(AckWithResultTest, ADuplicateOfAFinishedKeyIsAnsweredByOneJobDone) {
  auto n = node("n1");
  ASSERT_TRUE(submitWatched(echoJob(1, "k"), 30));
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  n->ok(tasks[0], Value(int64_t{42}));
  drain();
  // The duplicate finishes during admission: one frame, the JobDone with the request id.
  submit(echoJob(1, "k"), 31);
  auto frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_TRUE(frames[0]->root().isJobDone());
  auto d = frames[0]->root().getJobDone();
  EXPECT_EQ(d.getRequestId(), 31u);
  ASSERT_EQ(d.getOutputs().size(), 1u);
  EXPECT_EQ(fromWire(d.getOutputs()[0].getValue()), Value(int64_t{42}));
  EXPECT_EQ(core_->heldAcks(), 0u);
  EXPECT_TRUE(n->takeTasks().empty());  // never ran again
}

TEST_F(AckWithResultTest, ADuplicateOfARunningKeyIsAnsweredWhenItsOriginalFinishes) {
  auto n = node("n1");
  submit(echoJob(1, "k"), 32);                  // original, held
  submit(echoJob(1, "k"), 33, "other-client");  // its alias, held
  EXPECT_EQ(core_->heldAcks(), 2u);
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  n->ok(tasks[0], Value(int64_t{7}));
  for (auto [peer, req] : {std::pair<std::string, uint64_t>{"client", 32}, {"other-client", 33}}) {
    auto frames = drain(peer);
    ASSERT_EQ(frames.size(), 1u) << peer;
    ASSERT_TRUE(frames[0]->root().isJobDone());
    EXPECT_EQ(frames[0]->root().getJobDone().getRequestId(), req);
    EXPECT_EQ(fromWire(frames[0]->root().getJobDone().getOutputs()[0].getValue()),
              Value(int64_t{7}));
  }
  EXPECT_EQ(core_->heldAcks(), 0u);
}

TEST_F(AckWithResultTest, ACancelledJobsJobDoneCarriesTheHeldAck) {
  auto n = node("n1");
  submit(echoJob(2), 34);
  const auto jobs = core_->listJobs();
  ASSERT_EQ(jobs.size(), 1u);
  ASSERT_TRUE(core_->cancelJob(jobs[0].id).ok());
  auto frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_TRUE(frames[0]->root().isJobDone());
  EXPECT_EQ(frames[0]->root().getJobDone().getState(), wire::JobState::CANCELLED);
  EXPECT_EQ(frames[0]->root().getJobDone().getRequestId(), 34u);
}

TEST_F(AckWithResultTest, AProgressFrameIsPrecededByTheHeldAck) {
  config_.ack_hold_ns = 50 * kMillis;
  config_.progress_interval_ns = 5 * kMillis;
  make();
  auto n = node("n1");
  submit(echoJob(2), 35);
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 2u);
  n->ok(tasks[0], Value(int64_t{0}));
  clock_.advance(6 * kMillis);
  core_->tick();
  auto frames = drain();
  ASSERT_EQ(frames.size(), 2u);
  ASSERT_TRUE(frames[0]->root().isSubmitReply());
  EXPECT_EQ(frames[0]->root().getSubmitReply().getRequestId(), 35u);
  EXPECT_TRUE(frames[1]->root().isJobProgress());
  EXPECT_EQ(core_->heldAcks(), 0u);
  n->ok(tasks[1], Value(int64_t{1}));
  frames = drain();
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0]->root().getJobDone().getRequestId(), 0u);
}

// Held acks are bounded: past max_held_acks a submission is acknowledged at once; a client
// that went away costs its entry until the deadline, then one dropped frame.
TEST_F(AckWithResultTest, HeldAcksAreBoundedAndAGoneClientsAckExpires) {
  config_.ack_hold_ns = 300'000;
  config_.max_held_acks = 2;
  make();
  auto n = node("n1");
  submit(echoJob(1), 40, "gone");
  submit(echoJob(1), 41, "gone");
  EXPECT_EQ(outbox_.pending("gone"), 0u);
  submit(echoJob(1), 42, "gone");
  auto frames = drain("gone");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0]->root().getSubmitReply().getRequestId(), 42u);
  EXPECT_EQ(core_->heldAcks(), 2u);
  core_->onDisconnected("gone");  // clients' disconnects are not tracked
  clock_.advance(300'000);
  core_->tick();
  EXPECT_EQ(core_->heldAcks(), 0u);
  EXPECT_EQ(drain("gone").size(), 2u);  // the ROUTER drops them: the peer is gone
  submit(echoJob(1), 43, "gone");       // room again
  EXPECT_EQ(core_->heldAcks(), 1u);
}

}  // namespace
}  // namespace tokengate::coordinator
