#include "coordinator/core/held_acks.h"

#include <gtest/gtest.h>

#include <vector>

namespace tokengate::coordinator {
namespace {

TEST(HeldAcksTest, AcksExpireInDeadlineOrderAndTakenOnesAreSkipped) {
  HeldAcks acks;
  EXPECT_EQ(acks.nextDue(), std::numeric_limits<Nanos>::max());
  ASSERT_TRUE(acks.hold(100, 1, "a", 11));
  ASSERT_TRUE(acks.hold(200, 2, "b", 12));
  ASSERT_TRUE(acks.hold(300, 3, "a", 13));
  EXPECT_FALSE(acks.hold(300, 3, "a", 14));  // one per job
  EXPECT_EQ(acks.held(), 3u);
  EXPECT_EQ(acks.nextDue(), 100);
  auto taken = acks.take(2);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->peer, "b");
  EXPECT_EQ(taken->request_id, 12u);
  EXPECT_FALSE(acks.take(2).has_value());
  std::vector<uint64_t> sent;
  auto send = [&](const HeldAcks::Ack& a) { sent.push_back(a.job_id); };
  acks.expire(99, send);
  EXPECT_TRUE(sent.empty());
  acks.expire(250, send);  // job 2's entry passes without a send
  EXPECT_EQ(sent, (std::vector<uint64_t>{1}));
  acks.expire(1000, send);
  EXPECT_EQ(sent, (std::vector<uint64_t>{1, 3}));
  EXPECT_TRUE(acks.empty());
  EXPECT_EQ(acks.nextDue(), std::numeric_limits<Nanos>::max());
}

TEST(HeldAcksTest, TheQueueIsCappedTakenEntriesIncludedUntilTheirDeadline) {
  HeldAcks acks(2);
  ASSERT_TRUE(acks.hold(10, 1, "a", 1));
  ASSERT_TRUE(acks.hold(20, 2, "a", 2));
  EXPECT_FALSE(acks.hold(30, 3, "a", 3));
  ASSERT_TRUE(acks.take(1).has_value());
  EXPECT_FALSE(acks.hold(30, 3, "a", 3));  // job 1's entry is still queued
  acks.expire(10, [](const HeldAcks::Ack&) { FAIL() << "a taken ack was sent"; });
  EXPECT_TRUE(acks.hold(30, 3, "a", 3));
}

}  // namespace
}  // namespace tokengate::coordinator
