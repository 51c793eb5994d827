#include "coordinator/core/op_table.h"

#include <gtest/gtest.h>

namespace tokengate::coordinator {
namespace {

TEST(OpTable, InternsOnceAndFindsByName) {
  Metrics metrics(std::make_shared<prometheus::Registry>());
  OpTable ops(metrics);
  EXPECT_EQ(ops.find("a"), nullptr);
  const uint32_t a = ops.intern("a");
  const uint32_t b = ops.intern("b");
  EXPECT_NE(a, b);
  EXPECT_EQ(ops.intern("a"), a);
  ASSERT_NE(ops.find("b"), nullptr);
  EXPECT_EQ(*ops.find("b"), b);
  EXPECT_EQ(ops.size(), 2u);
  ops[b].weight_known = true;
  EXPECT_EQ(ops.offered(), std::vector<std::string>{"b"});
}

TEST(OpTable, DispatchableFollowsPauseLimitsAndRateBucket) {
  Metrics metrics(std::make_shared<prometheus::Registry>());
  OpTable ops(metrics);
  OpState& op = ops[ops.intern("a")];
  EXPECT_FALSE(op.dispatchable(0)) << "nothing ready";
  op.ready[0].push_back(1);
  EXPECT_TRUE(op.dispatchable(0));
  EXPECT_FALSE(op.dispatchable(1)) << "other lane empty";
  op.paused = true;
  EXPECT_FALSE(op.dispatchable(0));
  op.paused = false;
  ops.setLimits(op, {2, 0});
  op.running = 2;
  EXPECT_FALSE(op.dispatchable(0)) << "at max_in_flight";
  op.running = 0;
  ops.setLimits(op, {0, 20});  // 20/s: burst of 2
  EXPECT_DOUBLE_EQ(op.rate_tokens, 2);
  op.rate_tokens = 0;
  EXPECT_FALSE(op.dispatchable(0));
  ops.refill(0.1);  // +2, capped at the burst
  EXPECT_DOUBLE_EQ(op.rate_tokens, 2);
  EXPECT_TRUE(op.dispatchable(0));
}

TEST(OpTable, StatusReportsCountersAndMeanRunTime) {
  Metrics metrics(std::make_shared<prometheus::Registry>());
  OpTable ops(metrics);
  OpState& op = ops[ops.intern("a")];
  op.ready[2].push_back(7);
  op.completed = 3;
  OpTable::observe(op, 2000, 10);
  OpTable::observe(op, 4000, 10);
  OpTable::flushMetrics(op);
  auto s = op.status();
  EXPECT_EQ(s.name, "a");
  EXPECT_EQ(s.queued, 1u);
  EXPECT_EQ(s.completed, 3u);
  EXPECT_DOUBLE_EQ(s.mean_run_us, 3.0);
  EXPECT_EQ(ops.list().size(), 1u);
  ops.failedCounter(op, Weight::kLight, StatusCode::kInternal).Increment();
  EXPECT_EQ(&ops.failedCounter(op, Weight::kLight, StatusCode::kInternal),
            &ops.failedCounter(op, Weight::kLight, StatusCode::kInternal));
}

}  // namespace
}  // namespace tokengate::coordinator
