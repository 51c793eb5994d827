#include "coordinator/costmodel/xgb_cost_model.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "coordinator/costmodel/mean_cost_model.h"
#include "coordinator/costmodel/quality.h"
#include "coordinator/costmodel/synthetic.h"
#include "coordinator/costmodel/trace.h"

namespace tokengate::costmodel {
namespace {

// Small enough for a shared 2-core CI box: a few thousand rows, tens of trees, 2 threads.
XgbParams smallParams() {
  XgbParams p;
  p.num_rounds = 24;
  p.max_depth = 6;
  p.nthread = 1;
  return p;
}

std::string tempPath(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() /
             (std::string("tg_costmodel_") + info->test_suite_name() + "_" + info->name());
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

double r2OnFresh(const CostModel& model, SyntheticWorkload& w, size_t n) {
  return evaluateModel(model, w.samples(n)).r2;
}

TEST(XgbCostModel, LearnsSyntheticCostFunction) {
  SyntheticWorkload w;
  const auto train = w.samples(4000);
  auto model = XgbCostModel::train(train, smallParams());
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelQuality& q = (*model)->quality();
  EXPECT_GE(q.r2, 0.9) << "held-out R^2";
  EXPECT_EQ(q.n_train + q.n_test, 4000u);
  EXPECT_GT(q.n_test, 500u);
  // And on data it has never seen at all, against raw (noisy) labels.
  EXPECT_GE(r2OnFresh(**model, w, 2000), 0.9);
  // Typical error well under 2x.
  EXPECT_LT(q.mae_log, std::log(1.5));

  // The learned model clearly beats the per-op mean heuristic on the same data.
  auto mean = MeanCostModel::fromSamples(train);
  EXPECT_GT(r2OnFresh(**model, w, 2000), r2OnFresh(*mean, w, 2000) + 0.05);
  std::printf("synthetic: held-out R2=%.4f mae_log=%.4f (mean heuristic R2=%.4f)\n", q.r2,
              q.mae_log, r2OnFresh(*mean, w, 2000));
}

TEST(XgbCostModel, PredictionsArePositiveAndFiniteEvenForUnseenInputs) {
  SyntheticWorkload w;
  auto model = XgbCostModel::train(w.samples(1000), smallParams());
  ASSERT_TRUE(model.ok()) << model.status();
  TokenFeatures weird;
  weird.op_id = 999999;  // unseen op
  weird.first_numeric_arg = 1e300;
  weird.arg_total_bytes = ~0ull;
  weird.node_speed = std::numeric_limits<double>::quiet_NaN();
  const double p = (*model)->predictOne(weird);
  EXPECT_TRUE(std::isfinite(p));
  EXPECT_GE(p, 1.0);
}

TEST(XgbCostModel, TooFewSamplesIsInvalidArgument) {
  SyntheticWorkload w;
  auto model = XgbCostModel::train(w.samples(5), smallParams());
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(XgbCostModel, OneHungTokenDoesNotWreckPredictions) {
  SyntheticWorkload w;
  auto train = w.samples(3000);
  const XgbParams params = smallParams();
  // One token that hung: 1000x its normal run time. Pick one that lands in the training split
  // (the split is deterministic) and whose op cost does not depend on its arguments.
  const Split split = trainTestSplit(train.size(), params.test_fraction, params.seed);
  size_t victim = 0;
  for (size_t i : split.train) {
    if (train[i].features.op_id % 3 == 0) {
      victim = i;
      break;
    }
  }
  const TokenFeatures victim_features = train[victim].features;
  const double truth = w.trueCostNs(victim_features);
  auto clean = XgbCostModel::train(train, params);
  ASSERT_TRUE(clean.ok()) << clean.status();
  const double clean_pred = (*clean)->predictOne(victim_features);
  train[victim].run_ns *= 1000;

  auto robust = XgbCostModel::train(train, params);
  ASSERT_TRUE(robust.ok()) << robust.status();
  XgbParams unclipped = params;
  unclipped.clip_mads = 1e9;
  unclipped.clip_min_log = 1e9;
  unclipped.residual_clip = false;
  auto naive = XgbCostModel::train(train, unclipped);
  ASSERT_TRUE(naive.ok()) << naive.status();

  const double with_clip = (*robust)->predictOne(victim_features);
  const double without_clip = (*naive)->predictOne(victim_features);
  std::printf("hung token: truth=%.0f clean=%.0f robust=%.0f unclipped=%.0f (node %u load %u)\n",
              truth, clean_pred, with_clip, without_clip, victim_features.node_index,
              victim_features.node_load);
  // The robust model predicts the token's real cost...
  EXPECT_LT(with_clip / truth, 1.5);
  EXPECT_GT(with_clip / truth, 0.67);
  EXPECT_GE((*robust)->quality().r2, 0.9);
  EXPECT_GE(r2OnFresh(**robust, w, 2000), 0.9);
  // ...whereas without clipping the outlier visibly drags its neighbourhood up.
  EXPECT_GT(without_clip / with_clip, 1.5);
}

// One op whose cost is in its argument, the dear tokens a minority (the balance bench's
// bimodal: spin 100 us x1500, spin 5 ms x150). The per-op label clip cut the 5 ms tokens down to
// 4.5x the op's 100 us median (its MAD is ~0), so the model predicted ~450 us for them; the
// heavy tail's big tokens were cut the same way. Clipped per (op, argument), they keep their
// cost; a hung token among equal ones is still clipped (OneHungTokenDoesNotWreckPredictions).
TEST(XgbCostModel, AnOpsDearMinorityIsNotClippedAsOutliers) {
  std::vector<TelemetrySample> train;
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> noise(0, 0.05);
  for (int i = 0; i < 3300; ++i) {
    TelemetrySample t;
    t.features.op_id = 0;
    t.features.arg_count = 1;
    t.features.arg_total_bytes = 8;
    const bool dear = i % 11 == 0;
    t.features.first_numeric_arg = dear ? 5000 : 100;
    t.features.node_index = static_cast<uint32_t>(i % 3);
    t.run_ns = static_cast<int64_t>((dear ? 5e6 : 1e5) * noise(rng));
    train.push_back(t);
  }
  auto m = XgbCostModel::train(train, smallParams());
  ASSERT_TRUE(m.ok()) << m.status();
  TokenFeatures f = train[0].features;
  f.first_numeric_arg = 5000;
  f.node_index = 0;
  const double dear = (*m)->predictOne(f);
  f.first_numeric_arg = 100;
  const double cheap = (*m)->predictOne(f);
  EXPECT_NEAR(dear, 5e6, 1e6) << "the 5 ms tokens";
  EXPECT_NEAR(cheap, 1e5, 2e4);
}

TEST(XgbCostModel, PseudoHuberObjectiveAlsoLearns) {
  SyntheticWorkload w;
  XgbParams p = smallParams();
  p.objective = "reg:pseudohubererror";
  // Pseudo-Huber gradients are bounded by the slope, so it needs more rounds than squared error.
  p.huber_slope = 2.0;
  p.num_rounds = 80;
  auto model = XgbCostModel::train(w.samples(3000), p);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_GE((*model)->quality().r2, 0.9);
}

TEST(XgbCostModel, SaveLoadRoundTripPredictsTheSame) {
  SyntheticWorkload w;
  auto model = XgbCostModel::train(w.samples(2000), smallParams());
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string path = tempPath("model.json");
  ASSERT_TRUE((*model)->save(path).ok());

  auto loaded = XgbCostModel::load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->numTrees(), (*model)->numTrees());
  EXPECT_NEAR((*loaded)->quality().r2, (*model)->quality().r2, 1e-6);
  EXPECT_EQ((*loaded)->quality().n_train, (*model)->quality().n_train);

  std::vector<TokenFeatures> batch;
  for (int i = 0; i < 256; ++i) batch.push_back(w.nextFeatures());
  std::vector<double> a(batch.size()), b(batch.size());
  (*model)->predict(batch, a);
  (*loaded)->predict(batch, b);
  for (size_t i = 0; i < batch.size(); ++i) EXPECT_NEAR(a[i] / b[i], 1.0, 1e-5) << i;

  // The file is XGBoost JSON.
  std::ifstream in(path);
  char first = 0;
  in >> first;
  EXPECT_EQ(first, '{');
}

TEST(XgbCostModel, MissingFileIsNotFound) {
  auto loaded = XgbCostModel::load(tempPath("does_not_exist.json"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(loaded.status().message().find("does not exist"), std::string_view::npos);
}

TEST(XgbCostModel, CorruptFilesGiveClearErrors) {
  SyntheticWorkload w;
  auto model = XgbCostModel::train(w.samples(500), smallParams());
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string good = tempPath("good.json");
  ASSERT_TRUE((*model)->save(good).ok());
  std::string text;
  {
    std::ifstream in(good);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    std::string p = tempPath(name);
    std::ofstream(p, std::ios::trunc) << content;
    return p;
  };

  struct Case {
    std::string name, content, expect;
  };
  const Case cases[] = {
      {"empty.json", "", "is empty"},
      {"truncated.json", text.substr(0, text.size() / 2), "not valid JSON"},
      {"garbage.json", "\x01\x02not a model at all", "not valid JSON"},
      {"other.json", R"({"hello":"world"})", "not an XGBoost model"},
      {"broken_learner.json", R"({"learner":{"nonsense":1},"version":[1,7,4]})",
       "not a loadable XGBoost model"},
  };
  for (const auto& c : cases) {
    auto loaded = XgbCostModel::load(write(c.name, c.content));
    ASSERT_FALSE(loaded.ok()) << c.name;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_NE(loaded.status().message().find(c.expect), std::string_view::npos)
        << c.name << ": " << loaded.status();
  }
}

TEST(XgbCostModel, FeatureImportanceRanksTheRealDrivers) {
  SyntheticWorkload w;
  auto model = XgbCostModel::train(w.samples(3000), smallParams());
  ASSERT_TRUE(model.ok()) << model.status();
  auto imp = (*model)->featureImportance("total_gain");
  ASSERT_TRUE(imp.ok()) << imp.status();
  ASSERT_EQ(imp->size(), kNumFeatures);
  double total_share = 0;
  for (const auto& fi : *imp) total_share += fi.share;
  EXPECT_NEAR(total_share, 1.0, 1e-6);
  // The op is the biggest driver of cost in the synthetic workload.
  EXPECT_EQ(imp->front().feature, "op");
  // declared_weight / lane carry little beyond op; node_speed matters.
  double node_speed_share = 0;
  for (const auto& fi : *imp) {
    if (fi.feature == "node_speed" || fi.feature == "node") node_speed_share += fi.share;
  }
  EXPECT_GT(node_speed_share, 0.005);
}

TEST(XgbCostModel, ConcurrentPredictIsSafe) {
  SyntheticWorkload w;
  auto trained = XgbCostModel::train(w.samples(1000), smallParams());
  ASSERT_TRUE(trained.ok());
  std::shared_ptr<const XgbCostModel> model = *trained;
  std::vector<TokenFeatures> batch;
  for (int i = 0; i < 512; ++i) batch.push_back(w.nextFeatures());
  std::vector<double> expected(batch.size());
  model->predict(batch, expected);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<double> out(batch.size());
      for (int i = 0; i < 50; ++i) {
        model->predict(batch, out);
        if (out != expected) mismatches++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(XgbCostModel, PredictThroughputIsReported) {
  SyntheticWorkload w;
  auto model = XgbCostModel::train(w.samples(2000), smallParams());
  ASSERT_TRUE(model.ok());
  std::vector<TokenFeatures> batch;
  for (int i = 0; i < 1024; ++i) batch.push_back(w.nextFeatures());
  std::vector<double> out(batch.size());
  const int iters = 50;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) (*model)->predict(batch, out);
  const auto t1 = std::chrono::steady_clock::now();
  const double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / (iters * 1024.0);
  // Informational only: no timing asserts in unit tests.
  std::printf("xgb predict: %.1f ns/token (batch 1024, %d trees)\n", ns, (*model)->numTrees());
  RecordProperty("ns_per_token", std::to_string(ns));
}

}  // namespace
}  // namespace tokengate::costmodel

namespace tokengate::costmodel {
namespace {

// predict() walks a compiled copy of the trees; it must agree with XGBoost's own prediction.
TEST(CompiledForest, MatchesXgboostPredictions) {
  for (bool categorical : {true, false}) {
    SyntheticWorkload w;
    XgbParams p = smallParams();
    p.categorical_op = categorical;
    auto model = XgbCostModel::train(w.samples(3000), p);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_TRUE((*model)->usesCompiledForest());
    std::vector<TokenFeatures> batch;
    for (int i = 0; i < 2000; ++i) {
      TokenFeatures f = w.nextFeatures();
      if (i % 10 == 0) f.op_id += 1000;  // unseen categories
      if (i % 13 == 0) f.first_numeric_arg = std::numeric_limits<double>::quiet_NaN();
      batch.push_back(f);
    }
    std::vector<double> fast(batch.size()), reference(batch.size());
    (*model)->predict(batch, fast);
    (*model)->predictWithXgboost(batch, reference);
    for (size_t i = 0; i < batch.size(); ++i) {
      ASSERT_NEAR(fast[i] / reference[i], 1.0, 1e-4)
          << "row " << i << " categorical=" << categorical;
    }
  }
}

TEST(CompiledForest, LoadedModelAlsoCompiles) {
  SyntheticWorkload w;
  auto model = XgbCostModel::train(w.samples(1000), smallParams());
  ASSERT_TRUE(model.ok());
  const std::string path = tempPath("m.json");
  ASSERT_TRUE((*model)->save(path).ok());
  auto loaded = XgbCostModel::load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE((*loaded)->usesCompiledForest());
}

TEST(CompiledForest, RejectsNonModels) {
  EXPECT_FALSE(CompiledForest::fromXgboostJson("{}").ok());
  EXPECT_FALSE(CompiledForest::fromXgboostJson("not json").ok());
  EXPECT_FALSE(
      CompiledForest::fromXgboostJson(R"({"learner":{"objective":{"name":"binary:logistic"}}})")
          .ok());
}

}  // namespace
}  // namespace tokengate::costmodel
