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
