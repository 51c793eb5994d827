#include "coordinator/costmodel/placement.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace tokengate::costmodel {
namespace {

TEST(ChooseNode, PrefersLeastPredictedCompletionNotLeastQueued) {
  // Node 2 has the least queued work but is 3x slower: a 10 ms token finishes sooner on node 0.
  std::vector<NodeState> nodes = {{.outstanding_ns = 4e6, .speed_factor = 1.0},
                                  {.outstanding_ns = 8e6, .speed_factor = 1.0},
                                  {.outstanding_ns = 1e6, .speed_factor = 3.0}};
  EXPECT_EQ(chooseNode(nodes, 10e6), 0u);
  // A tiny token goes to the idle slow node: waiting dominates.
  EXPECT_EQ(chooseNode(nodes, 100e3), 2u);
}

TEST(ChooseNode, AccountsForWorkersAndEligibility) {
  std::vector<NodeState> nodes = {{.outstanding_ns = 8e6, .speed_factor = 1.0, .workers = 4},
                                  {.outstanding_ns = 3e6, .speed_factor = 1.0, .workers = 1}};
  EXPECT_EQ(chooseNode(nodes, 1e6), 0u);  // 2 ms of queue per worker vs 3 ms
  nodes[0].eligible = false;
  EXPECT_EQ(chooseNode(nodes, 1e6), 1u);
  nodes[1].eligible = false;
  EXPECT_FALSE(chooseNode(nodes, 1e6).has_value());
  EXPECT_FALSE(chooseNode({}, 1e6).has_value());
}

TEST(ChooseNode, TiesGoToLessOutstandingThenLowestIndex) {
  std::vector<NodeState> nodes = {{.outstanding_ns = 0}, {.outstanding_ns = 0}};
  EXPECT_EQ(chooseNode(nodes, 1e6), 0u);
}

TEST(ChooseNode, BadSpeedTreatedAsNominal) {
  std::vector<NodeState> nodes = {
      {.outstanding_ns = 1e6, .speed_factor = std::numeric_limits<double>::quiet_NaN()},
      {.outstanding_ns = 2e6, .speed_factor = 1.0}};
  EXPECT_EQ(chooseNode(nodes, 1e6), 0u);
  EXPECT_DOUBLE_EQ(predictedCompletionNs(nodes[0], 1e6), 2e6);
}

TEST(Reclassify, LightOpThatBehavesHeavyGoesHeavy) {
  LaneThresholds t;  // light <= 0.2 ms, medium <= 5 ms
  EXPECT_EQ(reclassify(50e3, Weight::kLight, t), Weight::kLight);
  EXPECT_EQ(reclassify(1e6, Weight::kLight, t), Weight::kMedium);
  EXPECT_EQ(reclassify(50e6, Weight::kLight, t), Weight::kHeavy);
}

TEST(Reclassify, HysteresisPreventsFlapping) {
  LaneThresholds t;
  t.hysteresis = 0.25;
  // Just above the light threshold but inside the band: stays light.
  EXPECT_EQ(reclassify(220e3, Weight::kLight, t), Weight::kLight);
  // Clearly above: promoted.
  EXPECT_EQ(reclassify(260e3, Weight::kLight, t), Weight::kMedium);
  // Once medium, dipping just below the threshold keeps it medium...
  EXPECT_EQ(reclassify(180e3, Weight::kMedium, t), Weight::kMedium);
  // ...until it is clearly light.
  EXPECT_EQ(reclassify(140e3, Weight::kMedium, t), Weight::kLight);
}

TEST(Reclassify, DemotionCanBeDisabled) {
  LaneThresholds t;
  EXPECT_EQ(reclassify(10e3, Weight::kHeavy, t), Weight::kLight);
  t.allow_demotion = false;
  EXPECT_EQ(reclassify(10e3, Weight::kHeavy, t), Weight::kHeavy);
  EXPECT_EQ(reclassify(std::numeric_limits<double>::quiet_NaN(), Weight::kMedium, t),
            Weight::kMedium);
}

TEST(BatchSizeFor, TargetsAboutOnePointFiveMillisecondsClamped) {
  BatchSizing s;  // 1.5 ms target, [1, 256]
  EXPECT_EQ(batchSizeFor(10e3, s), 150u);
  EXPECT_EQ(batchSizeFor(1e3, s), 256u);  // clamped high
  EXPECT_EQ(batchSizeFor(20e6, s), 1u);   // heavy tokens go alone
  EXPECT_EQ(batchSizeFor(0, s), 256u);
  EXPECT_EQ(batchSizeFor(std::numeric_limits<double>::quiet_NaN(), s), 1u);
  EXPECT_EQ(batchSizeFor(-5, s), 1u);
  s.min_batch = 4;
  EXPECT_EQ(batchSizeFor(20e6, s), 4u);
}

}  // namespace
}  // namespace tokengate::costmodel

#include "coordinator/costmodel/mean_cost_model.h"

namespace tokengate::costmodel {
namespace {

// A scripted model: cost = 1 ms x (op + 1) x node speed.
class ScriptedModel final : public CostModel {
 public:
  void predict(std::span<const TokenFeatures> in, std::span<double> out) const override {
    for (size_t i = 0; i < in.size(); ++i) {
      out[i] = 1e6 * (in[i].op_id + 1) * in[i].node_speed;
    }
  }
  std::string_view name() const override { return "scripted"; }
};

TEST(PlaceToken, UsesPerNodePredictions) {
  ScriptedModel model;
  TokenFeatures t;
  t.op_id = 1;  // 2 ms at nominal speed
  std::vector<NodeView> nodes = {{.node_index = 0, .speed_factor = 1.0, .outstanding_ns = 5e6},
                                 {.node_index = 1, .speed_factor = 2.5, .outstanding_ns = 0},
                                 {.node_index = 2, .speed_factor = 1.0, .outstanding_ns = 1e6}};
  auto p = placeToken(model, t, nodes);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->node, 2u);  // 1 + 2 = 3 ms, vs 7 ms and 5 ms
  EXPECT_DOUBLE_EQ(p->predicted_ns, 2e6);
  EXPECT_DOUBLE_EQ(p->completion_ns, 3e6);
  nodes[2].eligible = false;
  EXPECT_EQ(placeToken(model, t, nodes)->node, 1u);  // 5 ms on the slow idle node beats 7 ms
  for (auto& n : nodes) n.eligible = false;
  EXPECT_FALSE(placeToken(model, t, nodes).has_value());
}

TEST(PlaceBatch, BalancesPredictedWorkAcrossUnequalNodes) {
  ScriptedModel model;
  std::vector<TokenFeatures> tokens;
  for (uint32_t i = 0; i < 60; ++i) {
    TokenFeatures t;
    t.op_id = i % 6;
    tokens.push_back(t);
  }
  std::vector<NodeView> nodes = {{.node_index = 0, .speed_factor = 1.0},
                                 {.node_index = 1, .speed_factor = 1.0},
                                 {.node_index = 2, .speed_factor = 3.0}};
  auto placed = placeBatch(model, tokens, nodes);
  ASSERT_EQ(placed.size(), tokens.size());
  std::vector<double> finish(3, 0);
  for (const auto& p : placed) finish[p.node] += p.predicted_ns;
  const double makespan = *std::max_element(finish.begin(), finish.end());
  // Total work at nominal speed is 210 ms; the ideal split over speeds 1,1,1/3 is 90 ms each.
  EXPECT_LT(makespan, 95e6);
  // Round-robin would give the slow node 20 tokens x 3.5 ms x 3 = 210 ms.
  EXPECT_GT(finish[2], 0);
}

}  // namespace
}  // namespace tokengate::costmodel

namespace tokengate::costmodel {
namespace {

TEST(PlaceBatch, RespectsCapacityAndHoldsBackCheapestTokens) {
  class Scripted final : public CostModel {
   public:
    void predict(std::span<const TokenFeatures> in, std::span<double> out) const override {
      for (size_t i = 0; i < in.size(); ++i) out[i] = 1e6 * (in[i].op_id + 1);
    }
    std::string_view name() const override { return "scripted"; }
  } model;
  std::vector<TokenFeatures> tokens(5);
  for (uint32_t i = 0; i < 5; ++i) tokens[i].op_id = i;  // costs 1..5 ms
  std::vector<NodeView> nodes = {{.node_index = 0, .capacity = 2},
                                 {.node_index = 1, .capacity = 1}};
  auto placed = placeBatch(model, tokens, nodes, PlaceOptions{.wait_for_better_node = false});
  ASSERT_EQ(placed.size(), 5u);
  size_t held = 0;
  std::vector<int> per_node(2, 0);
  for (const auto& p : placed) {
    if (p.node == Placement::kHoldBack) {
      ++held;
    } else {
      ++per_node[p.node];
    }
  }
  EXPECT_EQ(held, 2u);
  EXPECT_EQ(per_node[0], 2);
  EXPECT_EQ(per_node[1], 1);
  // The two cheapest tokens wait.
  EXPECT_EQ(placed[0].node, Placement::kHoldBack);
  EXPECT_EQ(placed[1].node, Placement::kHoldBack);
  for (auto& n : nodes) n.capacity = 0;
  TokenFeatures t;
  EXPECT_FALSE(placeToken(model, t, nodes).has_value());
}

}  // namespace
}  // namespace tokengate::costmodel

namespace tokengate::costmodel {
namespace {

TEST(PlaceBatch, BigTokenWaitsForFullFastNodeSmallOneTakesSlowNode) {
  class Scripted final : public CostModel {
   public:
    void predict(std::span<const TokenFeatures> in, std::span<double> out) const override {
      for (size_t i = 0; i < in.size(); ++i) {
        out[i] = (in[i].op_id == 0 ? 100e6 : 1e6) * in[i].node_speed;
      }
    }
    std::string_view name() const override { return "scripted"; }
  } model;
  std::vector<TokenFeatures> tokens(2);
  tokens[0].op_id = 0;  // 100 ms
  tokens[1].op_id = 1;  // 1 ms
  // Fast node is full with 10 ms of work; the slow node (4x) is idle.
  std::vector<NodeView> nodes = {
      {.node_index = 0, .speed_factor = 1.0, .outstanding_ns = 10e6, .capacity = 0},
      {.node_index = 1, .speed_factor = 4.0, .outstanding_ns = 0, .capacity = 4}};
  auto placed = placeBatch(model, tokens, nodes);
  ASSERT_EQ(placed.size(), 2u);
  EXPECT_EQ(placed[0].node, Placement::kHoldBack);  // 110 ms by waiting vs 400 ms on slow
  EXPECT_EQ(placed[1].node, 1u);                    // 4 ms on slow beats 111 ms behind it
  // Without waiting, the big token would take the slow node.
  auto eager = placeBatch(model, tokens, nodes, PlaceOptions{.wait_for_better_node = false});
  EXPECT_EQ(eager[0].node, 1u);
}

}  // namespace
}  // namespace tokengate::costmodel
