#include "coordinator/learned/xgb_scheduler.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "coordinator/core/coordinator.h"
#include "coordinator/costmodel/online_trainer.h"
#include "coordinator/costmodel/placement.h"
#include "coordinator/costmodel/synthetic.h"
#include "coordinator/costmodel/trace.h"
#include "coordinator/costmodel/xgb_cost_model.h"
#include "coordinator/learned/learned_balancing.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"
#include "tests/fakes/scripted_cost_model.h"

namespace tokengate::learned {
namespace {

using coordinator::Candidate;
using coordinator::Placement;
using coordinator::TokenInfo;

struct Reclass {
  uint32_t op;
  Weight from, to;
};

class XgbSchedulerTest : public ::testing::Test {
 protected:
  XgbSchedulerTest()
      : model_(std::make_shared<testing::ScriptedCostModel>()),
        sched_([this] { return model_; },
               [this](uint32_t op, Weight from, Weight to) {
                 reclass_.push_back({op, from, to});
               },
               noHorizon()) {}
  static XgbSchedulerOptions noHorizon() {
    XgbSchedulerOptions o;
    o.queue_horizon_ns = 0;   // placement tests look at one round; the horizon has its own test
    o.fallback_gate = false;  // these test the model path; FallbackGateTest tests the gate
    return o;
  }

  std::vector<TokenInfo> tokens(uint32_t op, size_t n, double arg = 1) {
    std::vector<TokenInfo> t(n);
    for (size_t i = 0; i < n; ++i) {
      t[i].id = next_id_++;
      t[i].op = op;
      t[i].declared = Weight::kLight;
      t[i].arg_count = 1;
      t[i].arg_bytes = 8;
      t[i].first_arg = arg;
    }
    return t;
  }
  // costs() then place(), as the dispatcher does.
  std::vector<Placement> dispatch(std::vector<TokenInfo>& t, std::vector<Candidate>& cands,
                                  Weight lane = Weight::kLight) {
    std::vector<double> c(t.size());
    sched_.costs(t, c);
    for (size_t i = 0; i < t.size(); ++i) t[i].cost = c[i];
    std::vector<Placement> out(t.size());
    sched_.place(lane, t, cands, out);
    return out;
  }
  // Teaches the scheduler that node 2 runs 2.5x slower than nodes 0 and 1.
  void observeSlowNode2() {
    for (int k = 0; k < 40; ++k)
      for (uint32_t node = 0; node < 3; ++node) {
        TokenInfo t = tokens(0, 1)[0];
        t.cost = 1e6;
        sched_.observe(t, node, node == 2 ? 2.5e6 : 1e6);
      }
  }
  static std::vector<Candidate> threeNodes(uint32_t credit = 1000) {
    std::vector<Candidate> c(3);
    for (uint32_t i = 0; i < 3; ++i) {
      c[i].node = i;
      c[i].free_credit = credit;
    }
    return c;
  }

  std::shared_ptr<testing::ScriptedCostModel> model_;
  std::vector<Reclass> reclass_;
  XgbScheduler sched_;
  uint64_t next_id_ = 1;
};

TEST_F(XgbSchedulerTest, CostsArePredictedInOneBatchPerSlice) {
  model_->set(0, 1000, /*per_arg=*/true);
  auto t = tokens(0, 100, 3);
  for (size_t i = 0; i < 50; ++i) t[i].first_arg = 7;  // two runs of identical tokens
  std::vector<double> c(t.size());
  sched_.costs(t, c);
  EXPECT_EQ(model_->calls(), 1u);
  EXPECT_EQ(sched_.modelRows(), 2u);  // one row per run
  EXPECT_DOUBLE_EQ(c[0], 7000);
  EXPECT_DOUBLE_EQ(c[99], 3000);
}

TEST_F(XgbSchedulerTest, ManyDistinctTokensPredictASampleAndTakeTheNearestArgument) {
  model_->set(0, 10, /*per_arg=*/true);
  auto t = tokens(0, 512);
  for (size_t i = 0; i < t.size(); ++i) t[i].first_arg = static_cast<double>(i);
  std::vector<double> c(t.size());
  sched_.costs(t, c);
  EXPECT_EQ(model_->calls(), 1u);
  EXPECT_EQ(sched_.modelRows(), XgbScheduler::kSampledRows);
  for (size_t i = 0; i < t.size(); ++i)
    EXPECT_NEAR(c[i], 10.0 * static_cast<double>(i), 10.0 * 32);  // stride 32
}

// A heavy-tailed argument: 299 tokens of 50-350 us and one of 28.8 ms in a slice of 300 distinct
// rows. The nearest sampled argument gave the 28.8 ms token the largest sampled cost (<= 350 us):
// the heavytail replay then queued such tokens on the slow node. Costs this size are predicted
// row by row.
TEST_F(XgbSchedulerTest, AHeavyTailedArgumentsLargestTokensArePredictedExactly) {
  model_->set(0, 1000, /*per_arg=*/true);
  auto t = tokens(0, 300);
  for (size_t i = 0; i < t.size(); ++i) t[i].first_arg = 50 + static_cast<double>(i);
  t[150].first_arg = 28'800;
  std::vector<double> c(t.size());
  sched_.costs(t, c);
  EXPECT_DOUBLE_EQ(c[150], 28.8e6);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_DOUBLE_EQ(c[i], 1000 * t[i].first_arg);
  EXPECT_EQ(sched_.modelRows(), XgbScheduler::kSampledRows + 300);
}

// Tokens the fallback's horizon guard holds come back every dispatch round; like the model
// path's held tokens they keep the model's prediction instead of being predicted again (with
// heavy-tailed slices predicted row by row, re-predicting them costs the loop thread up to a
// slice of rows per round).
TEST(XgbSchedulerGuard, TokensHeldByTheFallbackGuardKeepTheirPrediction) {
  auto model = std::make_shared<testing::ScriptedCostModel>();
  model->set(0, 1000, /*per_arg=*/true);
  model->setVersion(1);
  XgbScheduler sched([&] { return model; }, nullptr);  // the gate on: the fallback places
  std::vector<TokenInfo> t(6);
  for (size_t i = 0; i < t.size(); ++i) {  // 6 jobs of one 30 ms token
    t[i].id = (uint64_t{i + 1} << 32) | 1;
    t[i].declared = t[i].lane = Weight::kLight;
    t[i].arg_count = 1;
    t[i].arg_bytes = 8;
    t[i].first_arg = 30'000;
  }
  std::vector<Candidate> cands(3);
  for (uint32_t i = 0; i < 3; ++i) {
    cands[i].node = i;
    cands[i].free_credit = 1000;
  }
  std::vector<double> c(t.size());
  sched.costs(t, c);
  for (size_t i = 0; i < t.size(); ++i) t[i].cost = c[i];
  std::vector<Placement> out(t.size());
  sched.place(Weight::kLight, t, cands, out);
  ASSERT_STREQ(sched.placementMode(), "fallback");
  std::vector<TokenInfo> held;
  for (size_t i = 0; i < t.size(); ++i)
    if (out[i].candidate < 0) held.push_back(t[i]);
  ASSERT_FALSE(held.empty()) << "the guard holds some: 20 ms of predicted work per node";
  EXPECT_EQ(sched.heldBackByGuard(), held.size());  // tokengate_placement_held_back_total
  EXPECT_EQ(sched.heldBackByModel(), 0u);
  const uint64_t hits = sched.cacheHits();
  std::vector<double> again(held.size());
  sched.costs(held, again);
  EXPECT_EQ(sched.cacheHits() - hits, held.size());
}

// --xgb-horizon-ms 0 (XgbSchedulerOptions::fallback_horizon_ns, queue_horizon_ns): the fallback
// least-outstanding places without its 20 ms horizon too, so nothing is held at all.
TEST(XgbSchedulerGuard, FallbackHorizonZeroHoldsNothing) {
  for (const double horizon : {20e6, 0.0}) {
    XgbSchedulerOptions o;
    o.queue_horizon_ns = o.fallback_horizon_ns = horizon;
    XgbScheduler sched([] { return std::shared_ptr<const costmodel::CostModel>(); }, nullptr, o);
    std::vector<TokenInfo> t(300);
    for (size_t i = 0; i < t.size(); ++i) {
      t[i].id = (uint64_t{i + 1} << 32) | 1;
      t[i].declared = t[i].lane = Weight::kLight;
    }
    std::vector<Candidate> cands(3);
    for (uint32_t i = 0; i < 3; ++i) {
      cands[i].node = i;
      cands[i].free_credit = 1000;
      cands[i].workers = 1;
      cands[i].speed = 1;
    }
    // Teach the fallback that op 0 costs 1 ms (20 ms of it = 20 tokens per node).
    TokenInfo done;
    done.op = 0;
    done.declared = done.lane = Weight::kLight;
    for (int k = 0; k < 50; ++k) sched.observe(done, 0, 1e6);
    std::vector<double> c(t.size());
    sched.costs(t, c);
    for (size_t i = 0; i < t.size(); ++i) t[i].cost = c[i];
    std::vector<Placement> out(t.size());
    sched.place(Weight::kLight, t, cands, out);
    size_t placed = 0;
    for (const auto& p : out) placed += p.candidate >= 0;
    if (horizon > 0)
      EXPECT_LT(placed, t.size()) << "the fallback's 20 ms horizon holds some";
    else
      EXPECT_EQ(placed, t.size());
  }
}

TEST_F(XgbSchedulerTest, ManyDistinctTokensWithAFlatCostShareOnePrediction) {
  model_->set(0, 250);  // cost does not depend on the argument
  auto t = tokens(0, 512);
  for (size_t i = 0; i < t.size(); ++i) t[i].first_arg = static_cast<double>(i);
  std::vector<double> c(t.size(), -1);
  sched_.costs(t, c);
  EXPECT_EQ(sched_.modelRows(), XgbScheduler::kSampledRows);
  for (const double v : c) EXPECT_DOUBLE_EQ(v, 250);
}

TEST_F(XgbSchedulerTest, LearnsNodeSpeedFromTelemetry) {
  observeSlowNode2();
  EXPECT_NEAR(sched_.nodeSpeed(0), 1.0, 1e-9);
  EXPECT_NEAR(sched_.nodeSpeed(1), 1.0, 1e-9);
  EXPECT_NEAR(sched_.nodeSpeed(2), 0.4, 1e-6);
  EXPECT_DOUBLE_EQ(sched_.nodeSpeed(7), 1.0);  // unknown node: nominal
}

TEST_F(XgbSchedulerTest, ForgetNodeDropsItsSpeed) {
  observeSlowNode2();
  ASSERT_NEAR(sched_.nodeSpeed(2), 0.4, 1e-6);
  sched_.forgetNode(2);  // a new node will take slot 2
  EXPECT_DOUBLE_EQ(sched_.nodeSpeed(2), 1.0);
  EXPECT_NEAR(sched_.nodeSpeed(0), 1.0, 1e-9);
  sched_.forgetNode(0);
  sched_.forgetNode(99);                        // never seen: nothing to forget
  EXPECT_NEAR(sched_.nodeSpeed(1), 1.0, 1e-9);  // now the fastest known
}

TEST_F(XgbSchedulerTest, TinyTokensDoNotTeachNodeSpeed) {
  // 1 µs predicted: measured run time is timer noise and preemption, not node speed.
  for (int k = 0; k < 100; ++k)
    for (uint32_t node = 0; node < 2; ++node) {
      TokenInfo t = tokens(0, 1)[0];
      t.cost = 1e3;
      sched_.observe(t, node, node == 1 ? 5e3 : 1e3);
    }
  EXPECT_DOUBLE_EQ(sched_.nodeSpeed(1), 1.0);
  observeSlowNode2();  // 1 ms tokens do
  EXPECT_NEAR(sched_.nodeSpeed(2), 0.4, 1e-6);
}

TEST_F(XgbSchedulerTest, BalancesPredictedWorkOnUnequalNodes) {
  observeSlowNode2();
  model_->set(0, 1e6);
  auto t = tokens(0, 60);
  auto cands = threeNodes();
  auto out = dispatch(t, cands);
  uint32_t per_node[3] = {};
  for (const auto& p : out) {
    ASSERT_GE(p.candidate, 0);
    ++per_node[p.candidate];
  }
  // Ideal split for speeds 1 : 1 : 0.4 is 25 : 25 : 10.
  EXPECT_NEAR(per_node[0], 25, 1);
  EXPECT_NEAR(per_node[1], 25, 1);
  EXPECT_NEAR(per_node[2], 10, 1);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(cands[i].assigned, per_node[i]);
    EXPECT_EQ(cands[i].free_credit, 1000 - per_node[i]);
    EXPECT_DOUBLE_EQ(cands[i].outstanding, per_node[i] * 1e6);
  }
}

TEST_F(XgbSchedulerTest, LargestTokensGoFirstToFastNodes) {
  observeSlowNode2();
  model_->set(0, 1000, /*per_arg=*/true);
  auto t = tokens(0, 4, 1);
  t[3].first_arg = 100;  // one big token among small ones
  auto cands = threeNodes();
  auto out = dispatch(t, cands);
  EXPECT_NE(out[3].candidate, 2);  // not on the slow node
}

TEST(XgbSchedulerLpt, LargestFirstOrdersWithinAJobNotAcrossJobs) {
  // One slice: job 1 (admitted first) of three 100 us tokens, then job 2 of three 5 ms tokens,
  // one node with a 1 ms horizon. Largest-first over the whole slice placed job 2's first token
  // first and held every token of job 1 behind it; within jobs, job 1 goes out first.
  for (const auto scope :
       {XgbSchedulerOptions::LptScope::kJob, XgbSchedulerOptions::LptScope::kSlice}) {
    auto model = std::make_shared<testing::ScriptedCostModel>();
    model->set(0, 1000, /*per_arg=*/true);
    XgbSchedulerOptions o;
    o.fallback_gate = false;
    o.queue_horizon_ns = 1e6;
    o.min_queue_tokens = 1;
    o.group_spread = 0;
    o.lpt_scope = scope;
    XgbScheduler s([&] { return model; }, nullptr, o);
    std::vector<TokenInfo> t(6);
    for (uint32_t i = 0; i < 6; ++i) {
      t[i].id = (uint64_t{i < 3 ? 1u : 2u} << 32) | i;
      t[i].op = 0;
      t[i].arg_count = 1;
      t[i].arg_bytes = 8;
      t[i].first_arg = i < 3 ? 100 : 5000;
    }
    std::vector<double> c(6);
    s.costs(t, c);
    for (size_t i = 0; i < 6; ++i) t[i].cost = c[i];
    std::vector<Candidate> cands(1);
    cands[0].free_credit = 100;
    std::vector<Placement> out(6);
    s.place(Weight::kLight, t, cands, out);
    int job1_placed = 0;
    for (size_t i = 0; i < 3; ++i) job1_placed += out[i].candidate >= 0 ? 1 : 0;
    if (scope == XgbSchedulerOptions::LptScope::kJob) {
      EXPECT_EQ(job1_placed, 3);
      EXPECT_GE(out[3].candidate, 0);  // 0.3 ms queued: job 2's first token still fits
      EXPECT_LT(out[4].candidate, 0);
    } else {
      EXPECT_EQ(job1_placed, 0);  // the behaviour this replaces
    }
  }
}

TEST(SwitchDebounce, AWishThatFlipsEveryWindowNeverSwitches) {
  SwitchDebounce d;
  bool mode = false;
  for (int w = 0; w < 100; ++w) mode = d.update(mode, w % 2 == 0, 3, 2);
  EXPECT_FALSE(mode);
  for (int w = 0; w < 100; ++w) mode = d.update(mode, w % 3 != 2, 3, 2);  // 2 of 3 windows
  EXPECT_FALSE(mode);
}

TEST(SwitchDebounce, SwitchesAfterKConsecutiveWindowsAsymmetrically) {
  SwitchDebounce d;
  bool mode = false;
  EXPECT_FALSE(mode = d.update(mode, true, 3, 2));
  EXPECT_FALSE(mode = d.update(mode, true, 3, 2));
  EXPECT_TRUE(mode = d.update(mode, true, 3, 2));  // third window in a row: the model
  EXPECT_TRUE(mode = d.update(mode, false, 3, 2));
  EXPECT_TRUE(mode = d.update(mode, true, 3, 2));  // the streak is broken
  EXPECT_TRUE(mode = d.update(mode, false, 3, 2));
  EXPECT_FALSE(mode = d.update(mode, false, 3, 2));  // second in a row: back to the fallback
  SwitchDebounce once;
  EXPECT_TRUE(once.update(false, true, 1, 1));  // K = 1: the old behaviour
}

TEST_F(XgbSchedulerTest, RespectsCreditAndHoldsBackWhenFull) {
  model_->set(0, 1e6);
  auto t = tokens(0, 10);
  auto cands = threeNodes(2);
  cands[1].free_credit = 0;
  auto out = dispatch(t, cands);
  int placed = 0;
  for (const auto& p : out) {
    if (p.candidate < 0) continue;
    ++placed;
    EXPECT_NE(p.candidate, 1);
  }
  EXPECT_EQ(placed, 4);
  EXPECT_EQ(cands[0].free_credit, 0u);
  EXPECT_EQ(cands[2].free_credit, 0u);
}

TEST_F(XgbSchedulerTest, HoldsTokensBackBeyondTheQueueHorizon) {
  XgbSchedulerOptions o;
  o.queue_horizon_ns = 10e6;
  o.min_queue_tokens = 2;
  o.fallback_gate = false;
  XgbScheduler s([this] { return model_; }, {}, o);
  model_->set(0, 4e6);  // 4 ms each: a node accepts tokens until it holds >= 10 ms
  auto t = tokens(0, 30);
  std::vector<double> c(t.size());
  s.costs(t, c);
  for (size_t i = 0; i < t.size(); ++i) t[i].cost = c[i];
  auto cands = threeNodes();
  std::vector<Placement> out(t.size());
  s.place(Weight::kLight, t, cands, out);
  int placed = 0;
  for (const auto& p : out) placed += p.candidate >= 0;
  EXPECT_EQ(placed, 9);  // 3 per node (0, 4, 8 ms queued -> accepted; 12 ms -> wait)
  for (const auto& cand : cands) EXPECT_EQ(cand.assigned, 3u);
  // The counters behind tokengate_placement_held_back_total{by="model"} and
  // tokengate_placement_tokens_offered_total / _rounds_total.
  EXPECT_EQ(s.heldBackByModel(), 21u);
  EXPECT_EQ(s.heldBackByGuard(), 0u);
  EXPECT_EQ(s.tokensOffered(), 30u);
  EXPECT_EQ(s.placeCalls(), 1u);
}

TEST_F(XgbSchedulerTest, HeldBackTokensKeepTheirPredictionUntilTheModelChanges) {
  XgbSchedulerOptions o;
  o.queue_horizon_ns = 10e6;
  o.min_queue_tokens = 2;
  o.fallback_gate = false;
  std::shared_ptr<const costmodel::CostModel> active = model_;
  XgbScheduler s([&] { return active; }, {}, o);
  model_->set(0, 4e6);
  auto t = tokens(0, 30);
  std::vector<double> c(t.size());
  s.costs(t, c);
  for (size_t i = 0; i < t.size(); ++i) t[i].cost = c[i];
  auto cands = threeNodes();
  std::vector<Placement> out(t.size());
  s.place(Weight::kLight, t, cands, out);
  std::vector<TokenInfo> held;
  for (size_t i = 0; i < t.size(); ++i)
    if (out[i].candidate < 0) held.push_back(t[i]);
  ASSERT_EQ(held.size(), 21u);
  // Next round: the held tokens are not predicted again, new ones are.
  const uint64_t calls = model_->calls();
  auto fresh = tokens(0, 2);
  held.insert(held.end(), fresh.begin(), fresh.end());
  std::vector<double> c2(held.size());
  s.costs(held, c2);
  EXPECT_EQ(s.cacheHits(), 21u);
  EXPECT_EQ(model_->calls(), calls + 1);  // the 2 fresh tokens, in one batch
  for (const double v : c2) EXPECT_DOUBLE_EQ(v, 4e6);
  // A hot-swapped model (new version) predicts everything again.
  auto next = std::make_shared<testing::ScriptedCostModel>();
  next->set(0, 1e6);
  next->setVersion(7);
  active = next;
  s.costs(held, c2);
  EXPECT_EQ(s.cacheHits(), 21u);
  for (const double v : c2) EXPECT_DOUBLE_EQ(v, 1e6);
}

TEST_F(XgbSchedulerTest, ReclassifiesALightOpThatBehavesHeavyWithHysteresis) {
  model_->set(1, 8e6);  // declared light, predicted 8 ms: heavy
  auto cands = threeNodes(100000);
  auto t = tokens(1, 32);
  dispatch(t, cands);
  EXPECT_TRUE(reclass_.empty()) << "needs min_tokens_for_reclassify predictions first";
  for (int k = 0; k < 4; ++k) {
    auto more = tokens(1, 32);
    dispatch(more, cands);
  }
  ASSERT_EQ(reclass_.size(), 1u);
  EXPECT_EQ(reclass_[0].op, 1u);
  EXPECT_EQ(reclass_[0].from, Weight::kLight);
  EXPECT_EQ(reclass_[0].to, Weight::kHeavy);
  EXPECT_EQ(sched_.laneOf(1), Weight::kHeavy);

  // 4.5 ms is below the 5 ms heavy threshold but inside the hysteresis band: stays heavy,
  // even for tokens still draining from the old lane.
  model_->set(1, 4.5e6);
  for (int k = 0; k < 30; ++k) {
    auto more = tokens(1, 32);
    dispatch(more, cands, k % 2 ? Weight::kHeavy : Weight::kLight);
  }
  EXPECT_EQ(reclass_.size(), 1u);
  // Clearly medium now: demoted once.
  model_->set(1, 1e6);
  for (int k = 0; k < 30; ++k) {
    auto more = tokens(1, 32);
    dispatch(more, cands, Weight::kHeavy);
  }
  ASSERT_EQ(reclass_.size(), 2u);
  EXPECT_EQ(reclass_[1].from, Weight::kHeavy);
  EXPECT_EQ(reclass_[1].to, Weight::kMedium);
  EXPECT_EQ(sched_.reclassifications(), 2u);
}

TEST_F(XgbSchedulerTest, CorrectlyLabelledOpIsLeftAlone) {
  model_->set(2, 30'000);  // light and predicted light
  auto cands = threeNodes(100000);
  for (int k = 0; k < 10; ++k) {
    auto t = tokens(2, 64);
    dispatch(t, cands);
  }
  EXPECT_TRUE(reclass_.empty());
  EXPECT_EQ(sched_.laneOf(2), Weight::kLight);
}

// --model fallback: a missing or corrupt file is a clear error and the heuristic stays active.
class ModelFallbackTest : public ::testing::Test {
 protected:
  ModelFallbackTest() : window_(1000), trainer_(window_, clock_, {}) {}
  std::string tempPath(const std::string& name) {
    return (std::filesystem::temp_directory_path() /
            ("tg_learned_test_" + std::to_string(::getpid()) + "_" + name))
        .string();
  }
  testing::FakeClock clock_;
  costmodel::TelemetryWindow window_;
  costmodel::OnlineTrainer trainer_;
};

TEST_F(ModelFallbackTest, MissingModelFallsBackToHeuristic) {
  const std::string path = tempPath("missing.json");
  Status st = loadModelInto(trainer_, path);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find(path), std::string_view::npos) << st.message();
  EXPECT_NE(st.message().find("does not exist"), std::string_view::npos) << st.message();
  EXPECT_NE(st.message().find("heuristic"), std::string_view::npos) << st.message();
  EXPECT_EQ(trainer_.active()->name(), "mean");
}

TEST_F(ModelFallbackTest, CorruptModelFallsBackToHeuristic) {
  const std::string path = tempPath("corrupt.json");
  {
    std::ofstream out(path);
    out << "{\"learner\": {\"gradient_booster\": [1, 2";
  }
  Status st = loadModelInto(trainer_, path);
  std::filesystem::remove(path);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.message();
  EXPECT_NE(st.message().find("heuristic"), std::string_view::npos) << st.message();
  EXPECT_EQ(trainer_.active()->name(), "mean");
}

TEST_F(ModelFallbackTest, LearnedBalancingReportsABadModelAndKeepsServing) {
  auto registry = std::make_shared<prometheus::Registry>();
  LearnedConfig cfg;
  cfg.model_path = tempPath("nope.json");
  cfg.train = false;
  LearnedBalancing b(cfg, clock_, registry);
  EXPECT_EQ(b.loadModel().code(), StatusCode::kNotFound);
  EXPECT_EQ(b.trainer().active()->name(), "mean");
  // The scheduler serves with its least-outstanding fallback (the trainer's running mean is not a
  // model to trust): before anything ran, a token costs 1 (tokens are counted).
  XgbScheduler s([&] { return b.trainer().active(); }, {});
  TokenInfo t;
  t.op = 3;
  double cost = 0;
  s.costs(std::span<const TokenInfo>(&t, 1), std::span<double>(&cost, 1));
  EXPECT_EQ(cost, 1.0);
  EXPECT_STREQ(s.placementMode(), "fallback");
}

// Spec 3(c): with a cost model the core sends a node's batch by predicted work, so batch sizes
// follow predicted cost (costmodel::batchSizeFor); the heuristic keeps count/latency batching.
class CostBatchingTest : public ::testing::Test {
 protected:
  CostBatchingTest()
      : core_(coordinator::CoordinatorConfig{}, clock_, outbox_,
              std::make_shared<prometheus::Registry>()),
        node_(core_, outbox_, "n1",
              {{"echo", Weight::kLight}, {"work", Weight::kMedium}, {"big", Weight::kHeavy}}) {
    EXPECT_TRUE(node_.hello());
  }
  void useModel() {
    model_ = std::make_shared<testing::ScriptedCostModel>();
    model_->set(core_.opIndex("big"), 600'000);
    model_->set(core_.opIndex("work"), 100'000);
    model_->set(core_.opIndex("echo"), 1'000);
    XgbSchedulerOptions o;
    o.queue_horizon_ns = 0;   // only batching is under test
    o.fallback_gate = false;  // the model places from the start
    core_.setScheduler(std::make_unique<XgbScheduler>([m = model_] { return m; }, nullptr, o));
  }
  // Submits `n` tokens of `op` and returns the sizes of the batches the node received.
  std::vector<size_t> batchesFor(const std::string& op, uint32_t n) {
    JobSpec job;
    TokenSpec t;
    t.op = op;
    t.repeat = n;
    t.args.push_back(Arg::val(int64_t{0}, 1));
    job.add(t);
    EXPECT_TRUE(core_.submitJob(job).ok());
    core_.flushAll();
    node_.batch_sizes.clear();
    node_.takeTasks();
    return node_.batch_sizes;
  }
  testing::FakeClock clock_;
  testing::MemoryOutbox outbox_;
  coordinator::CoordinatorCore core_;
  testing::FakeNode node_;
  std::shared_ptr<testing::ScriptedCostModel> model_;
};

TEST_F(CostBatchingTest, BatchSizesFollowPredictedCost) {
  useModel();
  costmodel::BatchSizing sizing;
  sizing.target_ns = XgbSchedulerOptions{}.batch_work_target_ns;
  sizing.max_batch = core_.config().max_batch;
  const auto expect = [&](double ns, uint32_t tokens) {
    const uint32_t per = costmodel::batchSizeFor(ns, sizing);
    std::vector<size_t> sizes(tokens / per, per);
    if (tokens % per) sizes.push_back(tokens % per);
    return sizes;
  };
  ASSERT_EQ(expect(600'000, 20), std::vector<size_t>(10, 2));  // 1.5 ms / 0.6 ms
  EXPECT_EQ(batchesFor("big", 20), expect(600'000, 20));
  EXPECT_EQ(batchesFor("work", 45), expect(100'000, 45));    // 15 per batch
  EXPECT_EQ(batchesFor("echo", 2000), expect(1'000, 2000));  // capped by max_batch 1024
}

TEST_F(CostBatchingTest, HeuristicPoliciesBatchByCountOnly) {
  // least-outstanding (the default): costs are run-time means, but no work target.
  EXPECT_EQ(core_.scheduler().batchWorkTarget(), 0);
  EXPECT_EQ(batchesFor("big", 20), std::vector<size_t>{20});
  core_.setScheduler(coordinator::makeRoundRobinScheduler());
  EXPECT_EQ(batchesFor("work", 45), std::vector<size_t>{45});
}

TEST_F(CostBatchingTest, ClusterStatsShowWhatPlaces) {
  EXPECT_EQ(core_.stats().scheduler, "least-outstanding");
  EXPECT_EQ(core_.stats().placement, "least-outstanding");
  auto m = std::make_shared<testing::ScriptedCostModel>();
  core_.setScheduler(std::make_unique<XgbScheduler>([m] { return m; }, nullptr));
  EXPECT_EQ(core_.stats().scheduler, "xgboost");
  EXPECT_EQ(core_.stats().placement, "fallback");  // not trusted yet
  useModel();
  EXPECT_EQ(core_.stats().placement, "model");
}

TEST_F(CostBatchingTest, NoWorkTargetWithoutAModel) {
  XgbScheduler s([] { return std::shared_ptr<const costmodel::CostModel>(); }, nullptr);
  TokenInfo t;
  double c = 0;
  s.costs(std::span<const TokenInfo>(&t, 1), std::span<double>(&c, 1));
  EXPECT_EQ(c, 1.0);
  EXPECT_EQ(s.batchWorkTarget(), 0);  // costs are token counts, not ns
}

// --model-out / --trace-out: what a running coordinator trains online is saved and loads like
// `tgctl model show` reads it; the trace it records trains with the offline path.
TEST_F(ModelFallbackTest, OnlineModelIsSavedAndRecordedTraceTrainsOffline) {
  const std::string model_out = tempPath("online_model.json");
  const std::string trace_out = tempPath("trace.csv");
  const std::string offline = tempPath("offline_model.json");
  std::filesystem::remove(model_out);
  std::filesystem::remove(trace_out);
  LearnedConfig cfg;
  cfg.model_out = model_out;
  cfg.trace_out = trace_out;
  cfg.place = false;
  LearnedBalancing b(cfg, clock_, std::make_shared<prometheus::Registry>());
  ASSERT_TRUE(b.openTrace().ok());
  costmodel::SyntheticWorkload w;
  for (const auto& ts : w.samples(3000)) {
    coordinator::CoordinatorCore::Sample s;  // what the core's telemetry tap hands over
    s.token.op = ts.features.op_id;
    s.token.declared = static_cast<Weight>(ts.features.declared_weight);
    s.token.arg_count = ts.features.arg_count;
    s.token.arg_bytes = static_cast<uint32_t>(ts.features.arg_total_bytes);
    s.token.first_arg = ts.features.first_numeric_arg;
    s.node = ts.features.node_index;
    s.lane = static_cast<Weight>(ts.features.lane);
    s.node_load = ts.features.node_load;
    s.run_ns = static_cast<uint64_t>(ts.run_ns);
    s.queue_ns = static_cast<uint64_t>(ts.queue_wait_ns);
    b.addSample(s);
  }
  EXPECT_FALSE(std::filesystem::exists(model_out));
  ASSERT_TRUE(b.trainer().runOnce().ok()) << b.trainer().stats().last_error;
  ASSERT_EQ(b.trainer().stats().accepted_count, 1u);
  EXPECT_EQ(b.modelsSaved(), 1u);
  auto shown = costmodel::describeModel(model_out);  // tgctl model show
  ASSERT_TRUE(shown.ok()) << shown.status().message();
  EXPECT_NE(shown->find("R^2"), std::string::npos) << *shown;
  auto loaded = costmodel::XgbCostModel::load(model_out);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  EXPECT_GE((*loaded)->quality().r2, 0.9);

  ASSERT_TRUE(b.trace()->flush().ok());
  EXPECT_EQ(b.trace()->written(), 3000u);
  auto trace = costmodel::readTrace(trace_out);
  ASSERT_TRUE(trace.ok()) << trace.status().message();
  ASSERT_EQ(trace->size(), 3000u);
  auto q = costmodel::trainFromTrace(trace_out, offline);  // tgctl model train --trace
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_GE(q->r2, 0.9);
  for (const auto& p : {model_out, trace_out, offline}) std::filesystem::remove(p);
}

}  // namespace
}  // namespace tokengate::learned

namespace tokengate::learned {
namespace {

// The fallback gate: least-outstanding places until a model version has predicted finished tokens
// better than the running mean, and again as soon as it predicts worse.
class FallbackGateTest : public ::testing::Test {
 protected:
  FallbackGateTest() : sched_([this] { return active_; }, nullptr, options()) {
    model_->set(0, 1000, /*per_arg=*/true);  // op 0 costs arg us
    model_->setVersion(1);
    active_ = model_;
  }
  static XgbSchedulerOptions options() {
    XgbSchedulerOptions o;
    o.queue_horizon_ns = 0;
    return o;
  }
  static std::vector<Candidate> nodes() {
    std::vector<Candidate> c(3);
    for (uint32_t i = 0; i < 3; ++i) {
      c[i].node = i;
      c[i].free_credit = 1000;
      c[i].workers = 1;
    }
    return c;
  }
  // Bimodal in the argument: 200 us and 2 ms tokens of one op, alternately.
  std::vector<TokenInfo> tokens(size_t n) {
    std::vector<TokenInfo> t(n);
    for (auto& x : t) {
      x.id = next_id_++;
      x.op = 0;
      x.declared = Weight::kLight;
      x.lane = Weight::kLight;
      x.arg_count = 1;
      x.arg_bytes = 8;
      x.first_arg = (x.id % 2) ? 200 : 2000;
    }
    return t;
  }
  // One dispatch round of n tokens, each then finishing in `scale` x its argument in us.
  // `check` runs after every observation.
  template <typename F>
  void round(size_t n, double scale, F check) {
    auto t = tokens(n);
    std::vector<double> c(n);
    sched_.costs(t, c);
    for (size_t i = 0; i < n; ++i) t[i].cost = c[i];
    auto cands = nodes();
    std::vector<Placement> out(n);
    sched_.place(Weight::kLight, t, cands, out);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_GE(out[i].candidate, 0);
      sched_.observe(t[i], static_cast<uint32_t>(out[i].candidate), t[i].first_arg * 1000 * scale);
      check();
    }
  }
  void round(size_t n, double scale = 1) {
    round(n, scale, [] {});
  }

  std::shared_ptr<testing::ScriptedCostModel> model_ =
      std::make_shared<testing::ScriptedCostModel>();
  std::shared_ptr<const costmodel::CostModel> active_;
  XgbScheduler sched_;
  uint64_t next_id_ = 1;
};

TEST_F(FallbackGateTest, UntrustedModelPlacesExactlyLikeLeastOutstanding) {
  auto lo = coordinator::makeLeastOutstandingScheduler();
  // The same history for both: op 0 and op 1 on three nodes, node 2 2.5x slower.
  for (int k = 0; k < 60; ++k)
    for (uint32_t node = 0; node < 3; ++node) {
      TokenInfo t;
      t.id = 100000 + static_cast<uint64_t>(k * 3 + node);
      t.op = static_cast<uint32_t>(k % 2);
      const double run = (t.op == 0 ? 300e3 : 900e3) * (node == 2 ? 2.5 : 1.0);
      sched_.observe(t, node, run);
      lo->observe(t, node, run);
    }
  EXPECT_STREQ(sched_.placementMode(), "fallback");
  EXPECT_FALSE(sched_.usingModel());
  EXPECT_EQ(sched_.batchWorkTarget(), 0);
  for (uint32_t node = 0; node < 3; ++node)
    EXPECT_DOUBLE_EQ(sched_.nodeSpeed(node), lo->nodeSpeed(node));
  EXPECT_LT(lo->nodeSpeed(2), 0.5);  // the fallback did learn the slow node

  auto t = tokens(40);
  for (size_t i = 0; i < t.size(); i += 3) t[i].op = 1;
  std::vector<double> cx(t.size()), cl(t.size());
  sched_.costs(t, cx);
  lo->costs(t, cl);
  EXPECT_EQ(cx, cl);
  auto tx = t, tl = t;
  for (size_t i = 0; i < t.size(); ++i) tx[i].cost = cx[i], tl[i].cost = cl[i];
  auto ax = nodes(), al = nodes();
  for (auto* v : {&ax, &al})
    for (auto& c : *v) c.speed = 1.0;  // what the core copied earlier: place() must not trust it
  for (auto& c : al) c.speed = lo->nodeSpeed(c.node);
  std::vector<Placement> px(t.size()), pl(t.size());
  sched_.place(Weight::kLight, tx, ax, px);
  lo->place(Weight::kLight, tl, al, pl);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(px[i].candidate, pl[i].candidate) << i;
  EXPECT_LT(ax[2].assigned, ax[0].assigned);
}

TEST_F(FallbackGateTest, ModelIsTrustedOnlyAfterPredictingBetterThanTheRunningMean) {
  // The gate must hold in windows_to_model consecutive windows (hysteresis): 64 + 2 x 64.
  const XgbSchedulerOptions o;
  const uint64_t need =
      o.min_compared_tokens + (o.windows_to_model - 1) * uint64_t{o.min_tokens_between_switches};
  for (int r = 0; r < 20; ++r)
    round(10, 1, [&] {
      if (sched_.scoredTokens() < need) {
        EXPECT_FALSE(sched_.usingModel()) << sched_.scoredTokens();
      }
    });
  EXPECT_EQ(sched_.scoredTokens(), 200u);
  EXPECT_TRUE(sched_.usingModel()) << sched_.placementRegret() << " " << sched_.comparedTokens();
  EXPECT_STREQ(sched_.placementMode(), "model");
  EXPECT_EQ(sched_.modeSwitches(), 1u);
  EXPECT_LT(sched_.modelError(), 0.01);    // the scripted model is exact
  EXPECT_GT(sched_.fallbackError(), 0.5);  // one mean for 200 us and 2 ms tokens
  EXPECT_GT(sched_.batchWorkTarget(), 0);  // model costs are ns: batches by work
  // Now the model's costs are used: a 2 ms token costs 2 ms.
  auto t = tokens(2);
  std::vector<double> c(2);
  sched_.costs(t, c);
  EXPECT_DOUBLE_EQ(c[0], t[0].first_arg * 1000);
  EXPECT_DOUBLE_EQ(c[1], t[1].first_arg * 1000);
}

TEST_F(FallbackGateTest, FallsBackAsSoonAsTheModelPredictsWorseThanTheRunningMean) {
  for (int r = 0; r < 20; ++r) round(10);
  ASSERT_TRUE(sched_.usingModel());
  // Drift: the op now takes 10x longer. The model (same version) does not know; the running mean
  // follows, and placement goes back to least-outstanding.
  size_t after = 0;
  for (int r = 0; r < 40 && sched_.usingModel(); ++r) {
    round(10, 10);
    after += 10;
  }
  EXPECT_FALSE(sched_.usingModel());
  EXPECT_STREQ(sched_.placementMode(), "fallback");
  EXPECT_LE(after, 200u);
  EXPECT_GT(sched_.modelError(), sched_.fallbackError());
  EXPECT_EQ(sched_.modeSwitches(), 2u);
  EXPECT_EQ(sched_.batchWorkTarget(), 0);
}

TEST_F(FallbackGateTest, ANewModelVersionEarnsTrustFromScratch) {
  for (int r = 0; r < 20; ++r) round(10);
  ASSERT_TRUE(sched_.usingModel());
  auto next = std::make_shared<testing::ScriptedCostModel>();
  next->set(0, 1000, true);
  next->setVersion(2);
  active_ = next;
  round(1);
  EXPECT_FALSE(sched_.usingModel());
  EXPECT_EQ(sched_.scoredTokens(), 1u);
  for (int r = 0; r < 17; ++r) round(10);
  EXPECT_FALSE(sched_.usingModel());  // 171 scored: not yet 3 windows in a row
  for (int r = 0; r < 3; ++r) round(10);
  EXPECT_TRUE(sched_.usingModel());
}

// A successor accepted by a clear margin on held-out samples (CostModel::heldOut, set by the
// OnlineTrainer) goes on placing where its predecessor placed: before, every regular retrain
// (every ~2 s in drift-long) handed placement back to least-outstanding for 192 scored tokens.
std::shared_ptr<testing::ScriptedCostModel> successor(uint64_t version, double ns_per_arg,
                                                      costmodel::CostModel::HeldOut held_out) {
  auto m = std::make_shared<testing::ScriptedCostModel>();
  m->set(0, ns_per_arg, true);
  m->setVersion(version);
  m->setHeldOut(held_out);
  return m;
}

TEST_F(FallbackGateTest, AClearlyAcceptedSuccessorOfAPlacingModelPlacesOn) {
  for (int r = 0; r < 20; ++r) round(10);
  ASSERT_TRUE(sched_.usingModel());
  const uint64_t switches = sched_.modeSwitches();
  active_ = successor(2, 1000, {0.05, 0.8, 80});
  round(1);
  EXPECT_TRUE(sched_.usingModel());
  EXPECT_EQ(sched_.scoredTokens(), 1u) << "its own scores start fresh";
  for (int r = 0; r < 20; ++r) round(10);
  EXPECT_TRUE(sched_.usingModel());
  EXPECT_EQ(sched_.modeSwitches(), switches);
}

TEST_F(FallbackGateTest, ASuccessorWithoutAClearHeldOutMarginEarnsTrustFromScratch) {
  for (int r = 0; r < 20; ++r) round(10);
  ASSERT_TRUE(sched_.usingModel());
  active_ = successor(2, 1000, {0.5, 0.6, 80});  // beat the mean, but not by half
  round(1);
  EXPECT_FALSE(sched_.usingModel());
  active_ = successor(3, 1000, {0.05, 0.8, 8});  // too few held-out samples
  round(1);
  EXPECT_FALSE(sched_.usingModel());
}

// The safety rule still holds for a successor that placed on: once its live error is worse than
// the running mean's, least-outstanding places (after the usual windows).
TEST_F(FallbackGateTest, AClearlyAcceptedSuccessorStillFallsBackOnItsLiveError) {
  for (int r = 0; r < 20; ++r) round(10);
  ASSERT_TRUE(sched_.usingModel());
  active_ = successor(2, 10000, {0.05, 0.8, 80});  // its held-out said fine; live it is 10x off
  size_t placed = 0;
  for (int r = 0; r < 40 && sched_.usingModel(); ++r) {
    round(10);
    placed += 10;
  }
  EXPECT_FALSE(sched_.usingModel());
  const XgbSchedulerOptions o;
  EXPECT_LE(placed, o.min_compared_tokens + o.windows_to_fallback * o.min_tokens_between_switches);
  EXPECT_GT(sched_.modelError(), sched_.fallbackError());
}

// After a drift (the model fell back), a new version accepted by a clear held-out margin is
// trusted on its first window of live scores (64 tokens) instead of three in a row (192).
TEST_F(FallbackGateTest, AfterAFallbackAClearlyAcceptedVersionIsJudgedOnItsFirstWindow) {
  for (int r = 0; r < 20; ++r) round(10);
  ASSERT_TRUE(sched_.usingModel());
  // Every token 10x cheaper (10x dearer would make least-outstanding's own 20 ms horizon hold
  // tokens back, which round() does not expect).
  for (int r = 0; r < 40 && sched_.usingModel(); ++r) round(10, 0.1);
  ASSERT_FALSE(sched_.usingModel());
  active_ = successor(2, 100, {0.05, 0.8, 80});  // knows the new costs
  uint64_t rounds = 0;
  for (; rounds < 40 && !sched_.usingModel(); ++rounds) round(10, 0.1);
  EXPECT_TRUE(sched_.usingModel());
  const XgbSchedulerOptions o;
  EXPECT_GE(sched_.scoredTokens(), o.min_compared_tokens);
  EXPECT_LE(sched_.scoredTokens(), o.min_compared_tokens + 10u) << rounds << " rounds";
  // ... and it leaves on the usual windows once it is wrong live (the old costs are back).
  for (int r = 0; r < 40 && sched_.usingModel(); ++r) round(10, 1);
  EXPECT_FALSE(sched_.usingModel());
}

TEST_F(FallbackGateTest, ABorderlineModelDoesNotFlap) {
  // Alternate windows in which the model predicts exactly and windows in which it is 3x off
  // (the running mean, one value for 200 us and 2 ms tokens, sits in between): without
  // hysteresis the gate switched with every other window.
  for (int r = 0; r < 20; ++r) round(10);
  ASSERT_TRUE(sched_.usingModel());
  const uint64_t before = sched_.modeSwitches();
  for (int w = 0; w < 20; ++w)
    for (int r = 0; r < 8; ++r) round(8, w % 2 == 0 ? 1.0 : 10.0);
  EXPECT_LE(sched_.modeSwitches() - before, 2u);
}

TEST_F(FallbackGateTest, ForgetNodeAlsoResetsTheFallbacksSpeed) {
  for (int k = 0; k < 60; ++k)
    for (uint32_t node = 0; node < 3; ++node) {
      TokenInfo t;
      t.id = 500000 + static_cast<uint64_t>(k * 3 + node);
      sched_.observe(t, node, 1e6 * (node == 2 ? 2.5 : 1.0));
    }
  ASSERT_FALSE(sched_.usingModel());
  ASSERT_LT(sched_.nodeSpeed(2), 0.5);
  sched_.forgetNode(2);
  EXPECT_EQ(sched_.nodeSpeed(2), 1.0);
}

TEST_F(FallbackGateTest, TheTrainersRunningMeanIsNeverTrustedAsAModel) {
  auto mean = std::make_shared<costmodel::MeanCostModel>();
  mean->setVersion(3);
  active_ = mean;
  for (int r = 0; r < 20; ++r) round(10);
  EXPECT_FALSE(sched_.usingModel());
  EXPECT_EQ(sched_.scoredTokens(), 0u);
  EXPECT_EQ(sched_.modeSwitches(), 0u);
}

}  // namespace
}  // namespace tokengate::learned

namespace tokengate::learned {
namespace {

// The gate's decision rules, without a scheduler.
TEST(GateRule, EveryRule) {
  XgbSchedulerOptions o;  // min_compared_tokens 64, min_regret_tokens 32, max regret 0
  GateScores g;
  g.scored = 100;
  g.model_err = 0.1;
  g.fallback_err = 0.5;
  g.compared = 50;
  g.regret = -0.2;
  EXPECT_TRUE(modelShouldPlace(g, o));
  auto with = [&](auto change) {
    GateScores x = g;
    change(x);
    return modelShouldPlace(x, o);
  };
  EXPECT_FALSE(with([](GateScores& x) { x.scored = 63; }));      // too few scores
  EXPECT_FALSE(with([](GateScores& x) { x.model_err = 0.6; }));  // predicts worse
  EXPECT_TRUE(with([](GateScores& x) { x.model_err = 0.5; }));   // no worse is enough
  EXPECT_FALSE(with([](GateScores& x) { x.compared = 31; }));    // too few comparisons
  EXPECT_FALSE(with([](GateScores& x) { x.regret = 0.01; }));    // places worse
  EXPECT_TRUE(with([](GateScores& x) { x.regret = 0; }));        // places no worse
  o.placement_gate = false;                                      // prediction error only
  EXPECT_TRUE(with([](GateScores& x) { x.regret = 5; }));
  EXPECT_TRUE(with([](GateScores& x) { x.compared = 0; }));
  EXPECT_FALSE(with([](GateScores& x) { x.model_err = 0.6; }));
}

TEST(GateRule, RealisedCompletionGap) {
  // 40 ms ran on a 4x slower node with nothing queued; the other node had 2 ms queued.
  EXPECT_DOUBLE_EQ(realisedCompletionGap(0, 2e6, 40e6, 0.25, 1.0), 40e6 - 12e6);
  // The same token the other way round: the alternative would have taken 4x as long.
  EXPECT_DOUBLE_EQ(realisedCompletionGap(2e6, 0, 10e6, 1.0, 0.25), 12e6 - 40e6);
  EXPECT_DOUBLE_EQ(realisedCompletionGap(3e6, 3e6, 1e6, 1.0, 1.0), 0);
}

TEST_F(XgbSchedulerTest, AJobsEqualTokensAreSpreadOverNodes) {
  // One job's run of 5 equal tokens; node 0 is idle, the others hold 200 ms. Earliest predicted
  // completion alone stacks 4 of them on node 0 (betting the whole job on one estimate); the
  // group spread puts at most 2 there.
  model_->set(0, 50e6);
  auto place = [&](XgbScheduler& s) {
    std::vector<TokenInfo> t = tokens(0, 5);
    for (size_t i = 0; i < t.size(); ++i) t[i].id = (uint64_t{7} << 32) | (i + 1);
    std::vector<double> c(t.size());
    s.costs(t, c);
    for (size_t i = 0; i < t.size(); ++i) t[i].cost = c[i];
    auto cands = threeNodes();
    cands[1].outstanding = cands[2].outstanding = 200e6;
    std::vector<Placement> out(t.size());
    s.place(Weight::kLight, t, cands, out);
    return cands[0].assigned;
  };
  XgbSchedulerOptions off = noHorizon();
  off.group_spread = 0;
  XgbScheduler stacked([this] { return model_; }, nullptr, off);
  EXPECT_GE(place(stacked), 4u);
  EXPECT_LE(place(sched_), 2u);
}

// Realised placement quality: a model that predicts better on average but places worse.
// Two equal nodes, each running one token when four 150 us / 4 ms tokens of op 1 are placed
// (the model predicts op 1 exactly, the running mean of op 1 is off by ~1.8 in |log|). In a "bad"
// round one node runs an op 0 token, which takes 40 ms but the model predicts 500 us; the other
// runs a 5 ms op 3 token that both predict. The model sends the op 1 tokens behind the 40 ms one
// (it expects 0.5 ms ahead), least-outstanding (op 0 mean 40 ms) behind the 5 ms one. Which node
// runs the op 0 token alternates, so the model's node slowness stays 1. Per bad round the model's
// mean |log error| is ~0.73 (4.4 on op 0) against the running mean's ~1.2, so the prediction
// rule trusts the model, yet its choices finish 35 ms later.
class PlacementGateTest : public ::testing::Test {
 protected:
  PlacementGateTest() {
    model_->set(0, 500e3);
    model_->set(1, 1000, /*per_arg=*/true);
    model_->set(3, 5e6);
    model_->setVersion(1);
  }
  static XgbSchedulerOptions options(bool placement_gate) {
    XgbSchedulerOptions o;
    o.queue_horizon_ns = 0;
    o.placement_gate = placement_gate;
    return o;
  }
  static double truth(const TokenInfo& t) {
    switch (t.op) {
      case 0:
        return 40e6;
      case 3:
        return 5e6;
      default:
        return t.first_arg * 1000;
    }
  }
  TokenInfo token(uint32_t op, double arg) {
    TokenInfo t;
    t.id = (next_job_++) << 32;  // one token per job: no group spread
    t.op = op;
    t.declared = Weight::kLight;
    t.arg_count = 1;
    t.arg_bytes = 8;
    t.first_arg = arg;
    return t;
  }
  std::vector<TokenInfo> costed(XgbScheduler& s, std::vector<TokenInfo> t) {
    std::vector<double> c(t.size());
    s.costs(t, c);
    for (size_t i = 0; i < t.size(); ++i) t[i].cost = c[i];
    return t;
  }
  // One round: a token running on each node, four op 1 tokens placed (one place() each), then
  // the running tokens finish, then the four. Returns how many went behind the op 0 token.
  int round(XgbScheduler& s, bool bad) {
    const uint32_t slow = static_cast<uint32_t>(round_++ % 2);    // node running op 0 (if bad)
    auto busy = costed(s, {token(bad ? 0 : 3, 1), token(3, 1)});  // [0] on `slow`
    std::vector<TokenInfo> placed;
    std::vector<uint32_t> nodes;
    int behind = 0;
    for (int k = 0; k < 4; ++k) {
      auto t = costed(s, {token(1, k % 2 ? 4000 : 150)});
      std::vector<Candidate> cands(2);
      for (uint32_t i = 0; i < 2; ++i) {
        cands[i].node = i;
        cands[i].free_credit = 1000;
        cands[i].in_flight = 1;
        cands[i].outstanding = busy[i == slow ? 0 : 1].cost;
      }
      std::vector<Placement> out(1);
      s.place(Weight::kLight, t, cands, out);
      EXPECT_GE(out[0].candidate, 0);
      const uint32_t node = cands[static_cast<size_t>(std::max(out[0].candidate, 0))].node;
      if (bad && node == slow) ++behind;
      placed.push_back(t[0]);
      nodes.push_back(node);
    }
    s.observe(busy[0], slow, truth(busy[0]));
    s.observe(busy[1], 1 - slow, truth(busy[1]));
    for (size_t k = 0; k < placed.size(); ++k) s.observe(placed[k], nodes[k], truth(placed[k]));
    return behind;
  }

  std::shared_ptr<testing::ScriptedCostModel> model_ =
      std::make_shared<testing::ScriptedCostModel>();
  uint64_t next_job_ = 1;
  uint64_t round_ = 0;
};

TEST_F(PlacementGateTest, AModelThatPredictsBetterButPlacesWorseIsNotTrusted) {
  XgbScheduler gated([this] { return model_; }, nullptr, options(true));
  XgbScheduler old_rule([this] { return model_; }, nullptr, options(false));
  int behind_gated = 0, behind_old = 0;
  for (int r = 0; r < 60; ++r) behind_gated += round(gated, true);
  for (int r = 0; r < 60; ++r) behind_old += round(old_rule, true);
  // Without the placement rule the better prediction wins, and the model queues op 1 tokens
  // behind the 40 ms ones.
  EXPECT_LT(old_rule.modelError(), old_rule.fallbackError());
  EXPECT_TRUE(old_rule.usingModel());
  EXPECT_GT(behind_old, 100);
  // With it, the model never places.
  EXPECT_LT(gated.modelError(), gated.fallbackError());
  EXPECT_GE(gated.comparedTokens(), 200u);
  EXPECT_GT(gated.placementRegret(), 0);
  EXPECT_FALSE(gated.usingModel());
  EXPECT_EQ(gated.modeSwitches(), 0u);
  EXPECT_LT(behind_gated, 10);
  // Lanes still follow the model's predictions (op 1 averages ~2 ms: light -> medium).
  EXPECT_EQ(gated.laneOf(1), Weight::kMedium);
  EXPECT_GE(gated.reclassifications(), 1u);
}

TEST_F(PlacementGateTest, TrustedModelFallsBackWhenItsPlacementsRealiseLater) {
  XgbScheduler gated([this] { return model_; }, nullptr, options(true));
  XgbScheduler old_rule([this] { return model_; }, nullptr, options(false));
  for (auto* s : {&gated, &old_rule})  // 5 ms tokens on both nodes: both choose alike, regret 0
    for (int r = 0; r < 60; ++r) round(*s, false);
  ASSERT_TRUE(gated.usingModel());
  ASSERT_TRUE(old_rule.usingModel());
  EXPECT_LE(gated.placementRegret(), 0);
  int rounds = 0;
  while (gated.usingModel() && rounds < 100) {
    round(gated, true);
    ++rounds;
  }
  EXPECT_FALSE(gated.usingModel());
  EXPECT_LE(rounds, 20);  // 80 op 1 tokens
  EXPECT_GT(gated.placementRegret(), 0);
  EXPECT_LT(gated.modelError(), gated.fallbackError());  // the prediction rule alone would stay
  for (int r = 0; r < 30; ++r) round(old_rule, true);
  EXPECT_TRUE(old_rule.usingModel());
}

}  // namespace
}  // namespace tokengate::learned
