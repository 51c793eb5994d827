#include "coordinator/core/idempotency_index.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

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

TEST(IdempotencyIndex, KeysLongerThanAKeyBlockAndManyChunks) {
  IdempotencyIndex idx(10);
  const std::string long_key(300 * 1024, 'x');
  EXPECT_TRUE(idx.claim(long_key, 1));
  for (uint64_t t = 2; t < 5'000; ++t) {
    EXPECT_TRUE(idx.claim("key-" + std::to_string(t), t));
    idx.finished(t, Value(static_cast<int64_t>(t)));
  }
  EXPECT_FALSE(idx.claim(long_key, 9'999)) << "still running: kept over the cap";
  EXPECT_FALSE(idx.claim("key-4999", 10'000));
  EXPECT_EQ(idx.size(), 4'999u) << "the running oldest holds eviction back";
  EXPECT_EQ(idx.finished(1, Value(int64_t{5})), (std::vector<uint64_t>{9'999}));
  EXPECT_TRUE(idx.claim("fresh", 10'001));  // now the finished oldest ones go
  EXPECT_EQ(idx.size(), 10u);
  EXPECT_TRUE(idx.claim("key-2", 10'002)) << "evicted";
  EXPECT_FALSE(idx.claim("key-4999", 10'003));
  EXPECT_EQ(idx.takeSettled().at(0).value.asInt(), 4'999);
}

// The open-addressing table against a plain model: random claims, finishes and failures over a
// small key space (long probe runs, many deletions, growth) with a cap that evicts.
TEST(IdempotencyIndex, MatchesAModelUnderRandomClaimsFinishesAndFailures) {
  struct Model {
    uint64_t token;
    bool finished = false;
    int64_t value = 0;
    std::vector<uint64_t> aliases;
  };
  constexpr size_t kCap = 300;
  IdempotencyIndex idx(kCap);
  std::map<std::string, Model> model;
  std::deque<std::pair<std::string, uint64_t>> order;  // originals in admission order (cap)
  std::map<uint64_t, std::string> running;
  std::mt19937_64 rng(7);
  uint64_t next_token = 1;
  auto evict = [&] {
    while (model.size() > kCap && !order.empty()) {
      auto it = model.find(order.front().first);
      const bool same = it != model.end() && it->second.token == order.front().second;
      if (same && (!it->second.finished || !it->second.aliases.empty())) break;
      if (same) model.erase(it);
      order.pop_front();
    }
  };
  std::map<uint64_t, int64_t> settled_value;  // alias -> value it was settled with
  for (int step = 0; step < 200'000; ++step) {
    const int what = static_cast<int>(rng() % 10);
    if (what < 6 || running.empty()) {
      const std::string key = "k" + std::to_string(rng() % 1'000);
      const uint64_t token = next_token++;
      auto it = model.find(key);
      const bool original = idx.claim(key, token);
      ASSERT_EQ(original, it == model.end()) << key;
      if (original) {
        model.emplace(key, Model{token, false, 0, {}});
        order.emplace_back(key, token);
        running.emplace(token, key);
        evict();
      } else if (it->second.finished) {
        settled_value[token] = it->second.value;
      } else {
        it->second.aliases.push_back(token);
      }
      for (auto& s : idx.takeSettled())
        for (uint64_t a : s.aliases) {
          ASSERT_TRUE(settled_value.count(a)) << a;
          EXPECT_EQ(s.value.asInt(), settled_value[a]);
          settled_value.erase(a);
        }
      ASSERT_TRUE(settled_value.empty());
    } else {
      auto r = running.begin();
      std::advance(r, static_cast<long>(rng() % running.size()));
      const uint64_t token = r->first;
      Model& m = model.at(r->second);
      if (what < 9) {
        const auto value = static_cast<int64_t>(rng() % 1'000);
        EXPECT_EQ(idx.finished(token, Value(value)), m.aliases);
        m.finished = true;
        m.value = value;
        m.aliases.clear();
        running.erase(r);
      } else {
        EXPECT_EQ(idx.failed(token), m.aliases);
        model.erase(r->second);
        running.erase(r);
        evict();
      }
    }
    ASSERT_EQ(idx.size(), model.size()) << "step " << step;
  }
}

}  // namespace
}  // namespace tokengate::coordinator
