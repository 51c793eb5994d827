#include "coordinator/costmodel/mean_cost_model.h"

#include <gtest/gtest.h>

namespace tokengate::costmodel {
namespace {

TelemetrySample sample(uint32_t op, int64_t run_ns, double speed = 1.0, uint8_t weight = 0) {
  TelemetrySample s;
  s.features.op_id = op;
  s.features.node_speed = speed;
  s.features.declared_weight = weight;
  s.run_ns = run_ns;
  return s;
}

TokenFeatures token(uint32_t op, double speed = 1.0, uint8_t weight = 0) {
  TokenFeatures f;
  f.op_id = op;
  f.node_speed = speed;
  f.declared_weight = weight;
  return f;
}

TEST(MeanCostModel, RunningMeanPerOp) {
  MeanCostModel m;
  m.observe(sample(1, 100));
  m.observe(sample(1, 300));
  m.observe(sample(2, 5000));
  EXPECT_DOUBLE_EQ(m.predictOne(token(1)), 200);
  EXPECT_DOUBLE_EQ(m.predictOne(token(2)), 5000);
  EXPECT_EQ(m.numOps(), 2u);
}

TEST(MeanCostModel, NormalisesByNodeSpeed) {
  MeanCostModel m;
  m.observe(sample(1, 1000, 1.0));
  m.observe(sample(1, 3000, 3.0));  // same work on a 3x slower node
  EXPECT_DOUBLE_EQ(m.meanWorkNs(1), 1000);
  EXPECT_DOUBLE_EQ(m.predictOne(token(1, 2.0)), 2000);
}

TEST(MeanCostModel, UnknownOpFallsBackToDeclaredWeight) {
  MeanCostOptions opts;
  MeanCostModel m(opts);
  EXPECT_DOUBLE_EQ(m.predictOne(token(9, 1.0, 2)), opts.default_heavy_ns);
  EXPECT_DOUBLE_EQ(m.predictOne(token(9, 1.0, 0)), opts.default_light_ns);
  // Once some heavy op has been seen, unseen heavy ops use the observed heavy mean.
  m.observe(sample(1, 7'000'000, 1.0, 2));
  EXPECT_DOUBLE_EQ(m.predictOne(token(9, 1.0, 2)), 7'000'000);
}

TEST(MeanCostModel, HungTokenIsClippedAfterWarmup) {
  MeanCostModel m;
  for (int i = 0; i < 50; ++i) m.observe(sample(1, 1000));
  m.observe(sample(1, 1'000'000));  // 1000x
  EXPECT_LT(m.predictOne(token(1)), 2000);
}

TEST(MeanCostModel, FollowsDrift) {
  MeanCostModel m;
  for (int i = 0; i < 200; ++i) m.observe(sample(1, 1000));
  for (int i = 0; i < 200; ++i) m.observe(sample(1, 4000));
  EXPECT_NEAR(m.predictOne(token(1)), 4000, 100);
}

TEST(MeanCostModel, BatchedPredictAndFromSamples) {
  std::vector<TelemetrySample> samples = {sample(1, 100), sample(2, 200)};
  auto m = MeanCostModel::fromSamples(samples);
  std::vector<TokenFeatures> in = {token(1), token(2), token(1, 2.0)};
  std::vector<double> out(in.size());
  m->predict(in, out);
  EXPECT_DOUBLE_EQ(out[0], 100);
  EXPECT_DOUBLE_EQ(out[1], 200);
  EXPECT_DOUBLE_EQ(out[2], 200);
  EXPECT_EQ(m->name(), "mean");
}

}  // namespace
}  // namespace tokengate::costmodel
