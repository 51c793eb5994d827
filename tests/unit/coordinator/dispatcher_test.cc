// Dispatcher on its own: credit bounds, batching, the idle-node rule, drain hand-back, suspects.
#include "coordinator/core/dispatcher.h"

#include <gtest/gtest.h>

#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::coordinator {
namespace {

using testing::FakeClock;
using testing::MemoryOutbox;

class DispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override { scheduler_ = makeLeastOutstandingScheduler(); }

  Dispatcher& make(DispatchConfig config) {
    dispatcher_ =
        std::make_unique<Dispatcher>(config, jobs_, ops_, nodes_, clock_, outbox_, metrics_);
    dispatcher_->setScheduler(*scheduler_);
    op_ = ops_.intern("x");
    return *dispatcher_;
  }

  uint32_t addNode(const std::string& id, uint32_t workers = 1) {
    NodeRec n;
    n.id = id;
    n.peer = id + "/peer";
    n.session = 5;
    n.offers.assign(ops_.size(), true);
    for (auto& l : n.lanes) l.present = true, l.workers = workers;
    return nodes_.add(std::move(n));
  }

  // A job of `count` independent "x" tokens, all made ready.
  JobRec& readyJob(uint64_t id, uint32_t count) {
    JobSpec spec;
    spec.tokens.resize(1);
    spec.tokens[0].op = "x";
    spec.tokens[0].repeat = count;
    spec.tokens[0].args = {Arg::val(Value(int64_t{0}), 1)};
    JobRec& job = jobs_.add(id, 1, "j", clock_.now());
    jobs_.build(job, std::move(spec), [&](SpecRec& s) { s.op = op_; });
    for (uint32_t i = 0; i < count; ++i) dispatcher_->ready(job, i);
    return job;
  }

  // Token counts of the batches sent to `slot`'s peer so far.
  std::vector<size_t> batches(uint32_t slot) {
    std::vector<size_t> out;
    while (auto f = outbox_.next(nodes_[slot].peer)) {
      if (!f->root().isTokenBatch()) continue;
      EXPECT_EQ(f->root().getTokenBatch().getSession(), 5u);
      out.push_back(f->root().getTokenBatch().getTokens().size());
    }
    return out;
  }

  Metrics metrics_{std::make_shared<prometheus::Registry>()};
  JobTable jobs_{10};
  OpTable ops_{metrics_};
  NodeTable nodes_{metrics_, kSeconds};
  FakeClock clock_;
  MemoryOutbox outbox_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Dispatcher> dispatcher_;
  uint32_t op_ = 0;
};

TEST_F(DispatcherTest, AnIdleNodeGetsAPartialBatchAtOnce) {
  Dispatcher& d = make({});
  const uint32_t a = addNode("a");
  JobRec& job = readyJob(1, 3);
  EXPECT_EQ(d.queued(), 3u);
  d.run();
  EXPECT_EQ(batches(a), std::vector<size_t>{3});
  EXPECT_EQ(d.queued(), 0u);
  EXPECT_EQ(d.dispatched(), 3u);
  EXPECT_EQ(nodes_[a].inFlight(), 3u);
  EXPECT_EQ(job.running, 3u);
  for (const auto& t : job.tokens) {
    EXPECT_EQ(t.state, kRunning);
    EXPECT_EQ(t.node, a);
    EXPECT_EQ(t.attempt, 1u);
  }
}

TEST_F(DispatcherTest, CreditBoundsTokensInFlightAndReleaseFreesIt) {
  Dispatcher& d = make({.max_batch = 1024, .credit_per_worker = 4});
  const uint32_t a = addNode("a", /*workers=*/2);
  JobRec& job = readyJob(1, 10);
  d.run();
  EXPECT_EQ(nodes_[a].inFlight(), 8u) << "2 workers x 4 credit";
  EXPECT_EQ(d.queued(), 2u);
  d.release(job, job.tokens[0]);
  job.tokens[0].state = kDone;
  EXPECT_EQ(nodes_[a].inFlight(), 7u);
  EXPECT_EQ(job.running, 7u);
  d.run();
  EXPECT_EQ(nodes_[a].inFlight(), 8u);
  EXPECT_EQ(d.queued(), 1u);
}

TEST_F(DispatcherTest, FullBatchesGoOutAtMaxBatch) {
  Dispatcher& d = make({.max_batch = 4, .credit_per_worker = 100});
  const uint32_t a = addNode("a");
  readyJob(1, 10);
  d.run();
  EXPECT_EQ(batches(a), (std::vector<size_t>{4, 4})) << "the rest: the node is busy";
  d.flushAll();
  EXPECT_EQ(batches(a), std::vector<size_t>{2});
  EXPECT_EQ(d.batches(), 3u);
}

TEST_F(DispatcherTest, ABusyNodesPartialBatchWaitsForTheEndOfTheBurstNotATimer) {
  Dispatcher& d = make({.max_batch = 1024, .credit_per_worker = 100});
  const uint32_t a = addNode("a");
  readyJob(1, 5);
  d.run();
  ASSERT_EQ(batches(a).size(), 1u);
  readyJob(2, 2);  // the node still runs 5: more may join before the burst ends
  d.run();
  EXPECT_TRUE(batches(a).empty());
  EXPECT_TRUE(d.pending());
  readyJob(3, 1);
  d.run();
  EXPECT_TRUE(batches(a).empty());
  d.flushAll();  // the server loop's end of burst
  EXPECT_EQ(batches(a), std::vector<size_t>{3}) << "one batch for the whole burst";
  EXPECT_FALSE(d.pending());
}

TEST_F(DispatcherTest, RequeueUnsentHandsTheBatchBackAndUndoesTheAttempt) {
  Dispatcher& d = make({.max_batch = 1024, .credit_per_worker = 100});
  const uint32_t a = addNode("a");
  readyJob(1, 5);
  d.run();
  (void)batches(a);
  JobRec& job = readyJob(2, 2);
  d.run();  // held in the batch (node busy)
  d.requeueUnsent(a);
  EXPECT_EQ(d.queued(), 2u);
  EXPECT_EQ(nodes_[a].inFlight(), 5u);
  for (const auto& t : job.tokens) {
    EXPECT_EQ(t.state, kReady);
    EXPECT_EQ(t.attempt, 0u);
  }
  d.flushAll();
  EXPECT_TRUE(batches(a).empty()) << "nothing left to send";
}

TEST_F(DispatcherTest, SuspectsRunOnePerNodeAlone) {
  Dispatcher& d = make({});
  const uint32_t a = addNode("a");
  const uint32_t b = addNode("b");
  JobSpec spec;
  spec.tokens.resize(1);
  spec.tokens[0].op = "x";
  spec.tokens[0].repeat = 3;
  JobRec& job = jobs_.add(1, 1, "j", clock_.now());
  jobs_.build(job, std::move(spec), [&](SpecRec& s) { s.op = op_; });
  for (uint32_t i = 0; i < 3; ++i) {
    job.tokens[i].deaths = 1;  // was in flight when a node died
    d.ready(job, i);
  }
  d.run();
  EXPECT_EQ(batches(a), std::vector<size_t>{1});
  EXPECT_EQ(batches(b), std::vector<size_t>{1});
  EXPECT_EQ(d.queued(), 1u) << "the third waits for a node's suspect to finish";
  EXPECT_NE(nodes_[a].suspect, 0u);
  d.release(job, job.tokens[0]);
  job.tokens[0].state = kDone;
  EXPECT_EQ(nodes_[a].suspect, 0u);
  d.run();
  EXPECT_EQ(batches(a), std::vector<size_t>{1});
  EXPECT_EQ(d.queued(), 0u);
}

}  // namespace
}  // namespace tokengate::coordinator
