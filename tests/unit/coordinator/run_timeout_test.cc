// Run timeouts (start-to-close per token attempt) and the quarantine of nodes that heartbeat but
// withhold results: RunTimeouts on its own, then CoordinatorCore on the FakeClock with FakeNodes.
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <algorithm>

#include "coordinator/core/coordinator.h"
#include "coordinator/core/run_timeouts.h"
#include "tests/fakes/core_fixture.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::coordinator {
namespace {

using testing::FakeClock;
using testing::FakeNode;
using testing::MemoryOutbox;
using testing::TaskCopy;

// ---- RunTimeouts alone

TEST(RunTimeoutsTest, EntriesFallDueInDeadlineOrderAtBucketGranularity) {
  RunTimeouts rt({.granularity = 100 * kMillis});
  const Nanos t0 = 1000 * kSeconds;
  rt.started(1, 1, 0, t0, 5 * kSeconds);
  rt.started(2, 1, 0, t0, 1 * kSeconds);
  rt.started(3, 1, 1, t0, 0);  // no timeout: not kept
  rt.started(4, 2, 1, t0 + 10 * kMillis, 1 * kSeconds);
  EXPECT_EQ(rt.pending(), 3u);
  EXPECT_EQ(rt.nextExpiry(), t0 + 1 * kSeconds);
  std::vector<uint64_t> due;
  auto take = [&](const RunTimeouts::Entry& e) { due.push_back(e.token); };
  rt.expire(t0 + 999 * kMillis, take);
  EXPECT_TRUE(due.empty());
  rt.expire(t0 + 1 * kSeconds, take);
  EXPECT_EQ(due, std::vector<uint64_t>({2}));
  // Token 4 is due at t0 + 1.01 s: it fires at the end of its 100 ms bucket, never early.
  rt.expire(t0 + 1050 * kMillis, take);
  EXPECT_EQ(due.size(), 1u);
  rt.expire(t0 + 1100 * kMillis, take);
  EXPECT_EQ(due, std::vector<uint64_t>({2, 4}));
  rt.expire(t0 + 10 * kSeconds, take);
  EXPECT_EQ(due, std::vector<uint64_t>({2, 4, 1}));
  EXPECT_EQ(rt.pending(), 0u);
  EXPECT_EQ(rt.nextExpiry(), INT64_MAX);
}

TEST(RunTimeoutsTest, CompactionKeepsMemoryToTheTokensStillRunning) {
  RunTimeouts rt({});
  // A million tokens that all closed in time under a ten-minute timeout: the table does not
  // hold a million stale entries, it stays within twice the live ones plus slack.
  size_t most = 0;
  for (uint64_t i = 0; i < 1'000'000; ++i) {
    rt.started(i, 1, 0, static_cast<Nanos>(i) * 1000, 600 * kSeconds);
    // Only the last 100 tokens still run.
    rt.compact([&](const RunTimeouts::Entry& e) { return e.token + 100 > i; });
    most = std::max(most, rt.pending());
  }
  EXPECT_LT(most, 200'000u);
  EXPECT_GT(rt.compactions(), 5u);
  std::vector<uint64_t> due;
  rt.compact([](const RunTimeouts::Entry&) { return true; });
  rt.expire(INT64_MAX - 1, [&](const RunTimeouts::Entry& e) { due.push_back(e.token); });
  // The last live tokens are all still there.
  for (uint64_t i = 1'000'000 - 100; i < 1'000'000; ++i)
    EXPECT_NE(std::find(due.begin(), due.end(), i), due.end()) << i;
}

TEST(RunTimeoutsTest, StrikesQuarantineAnIdUntilLiftedAndTheTableIsBounded) {
  RunTimeouts rt({.quarantine_after = 3, .max_ids = 4});
  const Nanos t = 1000 * kSeconds;
  EXPECT_FALSE(rt.strike("a", t));
  EXPECT_FALSE(rt.strike("a", t));
  EXPECT_FALSE(rt.quarantined("a"));
  EXPECT_TRUE(rt.strike("a", t));   // the third quarantines
  EXPECT_FALSE(rt.strike("a", t));  // once
  EXPECT_TRUE(rt.quarantined("a"));
  rt.lift("a");
  EXPECT_FALSE(rt.quarantined("a"));
  EXPECT_EQ(rt.strikes("a", t), 0u);
  // An id flood forgets the oldest ids first.
  for (int i = 0; i < 10; ++i) rt.strike("flood-" + std::to_string(i), t);
  EXPECT_EQ(rt.strikes("flood-0", t), 0u);
  EXPECT_EQ(rt.strikes("flood-9", t), 1u);
  RunTimeouts never({.quarantine_after = 0});
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(never.strike("a", t));
}

// ---- Convictions alone (convictions.h)

TEST(ConvictionsTest, ByIdAndByKeyLiftedTogetherAndBounded) {
  Convictions c(3);
  EXPECT_TRUE(c.convict(QuarantineNote::convicted("a", "K1", "lied", QuarantineNote::kVerify)));
  EXPECT_FALSE(
      c.convict(QuarantineNote::convicted("a", "K1", "lied twice", QuarantineNote::kVerify)));
  EXPECT_EQ(c.find("a")->reason, "lied twice");
  EXPECT_TRUE(c.convict(QuarantineNote::convicted("b", "K1", "same key", QuarantineNote::kVerify)));
  EXPECT_TRUE(c.convict(
      QuarantineNote::convicted("c", "", "insecure: no key", QuarantineNote::kRunTimeouts)));
  EXPECT_TRUE(c.quarantined("a"));
  EXPECT_TRUE(c.quarantined("new-id", "K1")) << "a convicted key under any id";
  EXPECT_FALSE(c.quarantined("new-id", "K2"));
  EXPECT_FALSE(c.quarantined("new-id", "")) << "no key (CURVE off): the id alone counts";
  // Lifting b under K1 lifts every conviction made under K1 (a and b), not c.
  auto lifted = c.lift("b", "K1");
  std::sort(lifted.begin(), lifted.end());
  EXPECT_EQ(lifted, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(c.quarantined("x", "K1"));
  EXPECT_TRUE(c.quarantined("c"));
  // Bounded: the oldest conviction goes first, and the caller is told.
  std::vector<std::string> forgotten;
  for (const char* id : {"d", "e", "f"})
    c.convict(QuarantineNote::convicted(id, "", "flood", QuarantineNote::kRunTimeouts), &forgotten);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(forgotten, std::vector<std::string>{"c"});
}

TEST(RunTimeoutsTest, AStrikeExpiresAfterTheWindowSoOnlyStrikesCloseTogetherQuarantine) {
  RunTimeouts rt({.quarantine_after = 3, .strike_window = 60 * kSeconds});
  const Nanos t0 = 1000 * kSeconds;
  EXPECT_FALSE(rt.strike("a", t0));
  EXPECT_FALSE(rt.strike("a", t0 + 30 * kSeconds));
  EXPECT_EQ(rt.strikes("a", t0 + 59 * kSeconds), 2u);
  EXPECT_EQ(rt.strikes("a", t0 + 60 * kSeconds), 1u);  // the first expired
  // Strikes spread wider than the window never add up to three.
  EXPECT_FALSE(rt.strike("a", t0 + 61 * kSeconds));
  EXPECT_FALSE(rt.strike("a", t0 + 125 * kSeconds));
  EXPECT_FALSE(rt.strike("a", t0 + 190 * kSeconds));
  EXPECT_FALSE(rt.quarantined("a"));
  EXPECT_EQ(rt.strikes("a", t0 + 190 * kSeconds), 1u);  // the one at 125 s expired at 185 s
  EXPECT_EQ(rt.strikes("a", t0 + 1000 * kSeconds), 0u);
  // Three inside one window do.
  EXPECT_FALSE(rt.strike("b", t0));
  EXPECT_FALSE(rt.strike("b", t0 + 20 * kSeconds));
  EXPECT_TRUE(rt.strike("b", t0 + 59 * kSeconds));
  // A quarantine does not expire with its strikes: only an operator lifts it.
  EXPECT_EQ(rt.strikes("b", t0 + 1000 * kSeconds), 0u);
  EXPECT_TRUE(rt.quarantined("b"));
  // Window 0: strikes never expire.
  RunTimeouts forever({.quarantine_after = 2, .strike_window = 0});
  EXPECT_FALSE(forever.strike("a", t0));
  EXPECT_TRUE(forever.strike("a", t0 + 1'000'000 * kSeconds));
}

// ---- CoordinatorCore

class RunTimeoutTest : public testing::CoreTestBase {
 protected:
  void SetUp() override {
    config_.run_timeout_ns = 5 * kSeconds;
    config_.node_timeout_ns = 3 * kSeconds;
    make();
  }
  std::unique_ptr<FakeNode> node(const std::string& id) {
    return addNode(id, {{"echo", Weight::kLight}});
  }
  static JobSpec echoJob(int n, uint32_t run_timeout_ms = 0) {
    JobSpec job;
    TokenSpec t;
    t.op = "echo";
    t.repeat = static_cast<uint32_t>(n);
    t.run_timeout_ms = run_timeout_ms;
    t.args.push_back(Arg::val(int64_t{0}, 1));
    job.add(t);
    return job;
  }
  // Advances the clock in heartbeat-sized steps, the listed nodes heartbeating (alive but
  // silent about their tokens), ticking the core.
  void advance(Nanos total, std::initializer_list<FakeNode*> alive) {
    for (Nanos done = 0; done < total; done += 250 * kMillis) {
      clock_.advance(250 * kMillis);
      for (auto* n : alive) n->heartbeat();
      core_->tick();
    }
  }
  // The `tokengate_nodes`-style series labelled state=`state` (any series when empty).
  double metric(const std::string& name, const std::string& state = {}) {
    return state.empty() ? CoreTestBase::metric(name) : CoreTestBase::metric(name, "state", state);
  }
};

TEST_F(RunTimeoutTest, ASilentNodeLosesItsTokensToAnotherNodeAndIsQuarantined) {
  auto silent = node("silent");
  auto id = core_->submitJob(echoJob(6));
  ASSERT_TRUE(id.ok());
  core_->flushAll();
  const auto held = silent->takeTasks();
  ASSERT_EQ(held.size(), 6u);
  auto honest = node("honest");
  // Heartbeats keep the silent node registered: only the run timeout can take its tokens.
  advance(4500 * kMillis, {silent.get(), honest.get()});
  EXPECT_EQ(core_->counters().run_timeouts, 0u);
  EXPECT_TRUE(honest->takeTasks().empty());
  advance(1 * kSeconds, {silent.get(), honest.get()});
  // Three timeouts quarantine it; its other three tokens are re-queued at once.
  EXPECT_EQ(core_->counters().run_timeouts, 3u);
  EXPECT_EQ(core_->counters().nodes_quarantined, 1u);
  EXPECT_EQ(stateOf("silent"), control::NodeState::kQuarantined);
  EXPECT_EQ(core_->stats().nodes_quarantined, 1u);
  EXPECT_EQ(core_->stats().run_timeouts, 3u);
  EXPECT_EQ(metric("tokengate_run_timeouts_total"), 3);
  EXPECT_EQ(metric("tokengate_nodes", "quarantined"), 1);
  // It was told to stop them.
  silent->takeTasks();
  EXPECT_NE(
      std::find(silent->controls.begin(), silent->controls.end(), wire::Control::CANCEL_TOKENS),
      silent->controls.end());
  // Everything runs on the honest node; the silent one gets nothing new.
  int done = 0;
  for (int round = 0; round < 20 && done < 6; ++round) {
    advance(250 * kMillis, {silent.get(), honest.get()});
    for (auto& t : honest->takeTasks()) {
      EXPECT_GE(t.attempt, 2u);
      honest->ok(t, t.args[0]);
      ++done;
    }
    EXPECT_TRUE(silent->takeTasks().empty());
  }
  EXPECT_EQ(done, 6);
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  // Its late answers change nothing.
  silent->ok(held[0], Value(int64_t{-1}));
  EXPECT_EQ(core_->counters().completed, 6u);
  EXPECT_EQ(core_->stats().tokens_live, 0u);
}

TEST_F(RunTimeoutTest, ATokenAnsweredInTimeIsNeverTimedOut) {
  auto n = node("n");
  ASSERT_TRUE(core_->submitJob(echoJob(2)).ok());
  core_->flushAll();
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 2u);
  advance(4750 * kMillis, {n.get()});
  n->ok(tasks[0], tasks[0].args[0]);
  n->ok(tasks[1], tasks[1].args[0]);
  advance(10 * kSeconds, {n.get()});
  EXPECT_EQ(core_->counters().run_timeouts, 0u);
  EXPECT_EQ(core_->counters().completed, 2u);
  EXPECT_EQ(stateOf("n"), control::NodeState::kReady);
}

TEST_F(RunTimeoutTest, TheTokensTimeoutOverridesTheOpsWhichOverridesTheDefault) {
  config_.run_timeout_ns = 0;  // off by default here
  config_.run_timeout_quarantine = 0;
  make();
  auto n = node("n");
  ASSERT_TRUE(core_->submitJob(echoJob(1)).ok());
  core_->flushAll();
  ASSERT_EQ(n->takeTasks().size(), 1u);
  advance(60 * kSeconds, {n.get()});
  EXPECT_EQ(core_->counters().run_timeouts, 0u);  // no timeout anywhere: it may run for ever

  control::OpLimits limits;
  limits.run_timeout_ms = 2000;
  ASSERT_TRUE(core_->setOpLimits("echo", limits).ok());
  ASSERT_TRUE(core_->submitJob(echoJob(1)).ok());
  core_->flushAll();
  ASSERT_EQ(n->takeTasks().size(), 1u);
  advance(1750 * kMillis, {n.get()});
  EXPECT_EQ(core_->counters().run_timeouts, 0u);
  advance(500 * kMillis, {n.get()});
  EXPECT_EQ(core_->counters().run_timeouts, 1u);  // the op's 2 s

  ASSERT_TRUE(core_->submitJob(echoJob(1, /*run_timeout_ms=*/500)).ok());
  core_->flushAll();
  n->takeTasks();
  advance(750 * kMillis, {n.get()});
  EXPECT_EQ(core_->counters().run_timeouts, 2u);  // the token's 0.5 s, not the op's 2 s
}

TEST_F(RunTimeoutTest, ATokenThatHangsEverywhereFailsWithDeadlineExceededAfterItsAttempts) {
  config_.run_timeout_quarantine = 0;  // the node is not to blame here
  config_.default_max_attempts = 3;
  make();
  auto n = node("n");
  auto id = core_->submitJob(echoJob(1));
  ASSERT_TRUE(id.ok());
  int attempts = 0;
  for (int round = 0; round < 200; ++round) {
    advance(250 * kMillis, {n.get()});
    attempts += static_cast<int>(n->takeTasks().size());  // never answered
    auto st = core_->jobStatus(*id);
    if (st->state != control::JobState::kRunning) break;
  }
  EXPECT_EQ(attempts, 3);
  auto st = core_->jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kFailed);
  ASSERT_EQ(st->outputs.size(), 1u);
  EXPECT_EQ(st->outputs[0].status.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(st->outputs[0].status.message().find("run timeout of 5000 ms"), std::string::npos)
      << st->outputs[0].status;
  EXPECT_EQ(stateOf("n"), control::NodeState::kReady);
}

TEST_F(RunTimeoutTest, AQuarantineOutlivesAReconnectAndUndrainLiftsIt) {
  config_.run_timeout_quarantine = 1;
  make();
  auto n = node("n");
  ASSERT_TRUE(core_->submitJob(echoJob(1)).ok());
  core_->flushAll();
  ASSERT_EQ(n->takeTasks().size(), 1u);
  advance(5250 * kMillis, {n.get()});
  ASSERT_EQ(stateOf("n"), control::NodeState::kQuarantined);
  // A fresh hello (restart, reconnect) does not clear it: still no work.
  ASSERT_TRUE(n->hello());
  EXPECT_EQ(stateOf("n"), control::NodeState::kQuarantined);
  advance(1 * kSeconds, {n.get()});
  EXPECT_TRUE(n->takeTasks().empty());
  // An operator lifts it.
  ASSERT_TRUE(core_->drainNode("n", false).ok());
  EXPECT_EQ(stateOf("n"), control::NodeState::kReady);
  advance(250 * kMillis, {n.get()});
  auto tasks = n->takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  n->ok(tasks[0], tasks[0].args[0]);
  EXPECT_EQ(core_->counters().completed, 1u);
}

TEST_F(RunTimeoutTest, StrikesDecaySoANodeWithRareTimeoutsIsNeverQuarantined) {
  config_.run_timeout_quarantine = 2;
  config_.run_timeout_strike_window_ns = 30 * kSeconds;
  make();
  auto n = node("n");
  // Three rounds, each with one token the node sits on until its run timeout: three strikes in
  // all, but never two within 30 s, so the node keeps working.
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(core_->submitJob(echoJob(1)).ok());
    core_->flushAll();
    ASSERT_EQ(n->takeTasks().size(), 1u);
    advance(5250 * kMillis, {n.get()});  // timed out: re-queued, back on this node
    EXPECT_EQ(core_->counters().run_timeouts, static_cast<uint64_t>(round + 1));
    ASSERT_EQ(stateOf("n"), control::NodeState::kReady) << "round " << round;
    advance(250 * kMillis, {n.get()});
    auto retry = n->takeTasks();
    ASSERT_EQ(retry.size(), 1u);
    n->ok(retry[0], retry[0].args[0]);
    advance(30 * kSeconds, {n.get()});  // the strike expires
  }
  EXPECT_EQ(core_->counters().nodes_quarantined, 0u);
  // Two within the window quarantine it.
  ASSERT_TRUE(core_->submitJob(echoJob(2)).ok());
  core_->flushAll();
  ASSERT_EQ(n->takeTasks().size(), 2u);
  advance(5250 * kMillis, {n.get()});
  EXPECT_EQ(stateOf("n"), control::NodeState::kQuarantined);
  EXPECT_EQ(core_->counters().nodes_quarantined, 1u);
}

}  // namespace
}  // namespace tokengate::coordinator
