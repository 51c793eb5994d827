#include "coordinator/core/idempotency_index.h"

#include <gtest/gtest.h>

#include <string>

namespace tokengate::coordinator {
namespace {

TEST(IdempotencyIndex, FirstClaimRunsLaterOnesWaitAndShareTheValue) {
  IdempotencyIndex idx(100);
  EXPECT_TRUE(idx.claim("k", 1));
  EXPECT_FALSE(idx.claim("k", 2));
  EXPECT_FALSE(idx.claim("k", 3));
  EXPECT_TRUE(idx.takeSettled().empty()) << "the original has not finished";
  EXPECT_EQ(idx.finished(1, Value(int64_t{7})), (std::vector<uint64_t>{2, 3}));
  // A later duplicate is settled after its admission with the original's value.
  EXPECT_FALSE(idx.claim("k", 4));
  EXPECT_FALSE(idx.claim("k", 5));
  auto settled = idx.takeSettled();
  ASSERT_EQ(settled.size(), 1u);
  EXPECT_EQ(settled[0].aliases, (std::vector<uint64_t>{4, 5}));
  EXPECT_TRUE(settled[0].status.ok());
  EXPECT_EQ(settled[0].value.asInt(), 7);
  EXPECT_TRUE(idx.takeSettled().empty()) << "settled once";
}

TEST(IdempotencyIndex, AFailedOriginalFreesItsKey) {
  IdempotencyIndex idx(100);
  EXPECT_TRUE(idx.claim("k", 1));
  EXPECT_FALSE(idx.claim("k", 2));
  EXPECT_EQ(idx.failed(1), (std::vector<uint64_t>{2}));
  EXPECT_EQ(idx.size(), 0u);
  EXPECT_TRUE(idx.claim("k", 3)) << "the next submission runs it again";
  EXPECT_TRUE(idx.failed(99).empty()) << "not an original";
  EXPECT_TRUE(idx.finished(99, Value()).empty());
}

TEST(IdempotencyIndex, CapEvictsOnlyFinishedKeysWithoutWaiters) {
  IdempotencyIndex idx(2);
  EXPECT_TRUE(idx.claim("a", 1));
  EXPECT_TRUE(idx.claim("b", 2));
  EXPECT_TRUE(idx.claim("c", 3));  // over the cap, but "a" is live: kept
  EXPECT_EQ(idx.size(), 3u);
  idx.finished(1, Value(int64_t{1}));
  EXPECT_TRUE(idx.claim("d", 4));  // now "a" (finished, no waiters) goes
  EXPECT_TRUE(idx.claim("a", 5)) << "evicted key runs again";
}

// Restart recovery (docs/journal.md): a restored key answers later claims with its value, is
// evicted by the cap like any finished key, and never replaces a key already present.
TEST(IdempotencyIndex, RestoredKeysAnswerLaterClaimsAndObeyTheCap) {
  IdempotencyIndex idx(2);
  idx.restore("a", 10, Value(int64_t{1}));
  idx.restore("b", 20, Value(int64_t{2}));
  idx.restore("a", 30, Value(int64_t{99}));  // already there: ignored
  EXPECT_EQ(idx.size(), 2u);
  EXPECT_FALSE(idx.claim("a", 40));
  auto settled = idx.takeSettled();
  ASSERT_EQ(settled.size(), 1u);
  EXPECT_EQ(settled[0].aliases, (std::vector<uint64_t>{40}));
  EXPECT_EQ(settled[0].value.asInt(), 1);
  EXPECT_TRUE(idx.finished(10, Value()).empty()) << "a restored original is not live";
  idx.restore("c", 50, Value(int64_t{3}));  // over the cap: the oldest ("a") goes
  EXPECT_EQ(idx.size(), 2u);
  EXPECT_TRUE(idx.claim("a", 60)) << "evicted: runs again";
}

// Admission cost must not depend on how many keys the index holds: claiming and settling one
// duplicate looks at the same number of entries with 1,000 keys as with 100,000.
TEST(IdempotencyIndex, AdmissionWorkIsIndependentOfKeyCount) {
  auto workForOneDuplicate = [](int keys) {
    IdempotencyIndex idx(1'000'000);
    for (int i = 0; i < keys; ++i) {
      idx.claim("key-" + std::to_string(i), static_cast<uint64_t>(i));
      idx.finished(static_cast<uint64_t>(i), Value(int64_t{i}));
      idx.takeSettled();
    }
    const uint64_t before = idx.work();
    EXPECT_FALSE(idx.claim("key-17", 1u << 31));
    auto settled = idx.takeSettled();
    EXPECT_EQ(settled.size(), 1u);
    return idx.work() - before;
  };
  const uint64_t small = workForOneDuplicate(1'000);
  const uint64_t large = workForOneDuplicate(100'000);
  EXPECT_EQ(small, large);
  EXPECT_LE(large, 2u);
}

}  // namespace
}  // namespace tokengate::coordinator
