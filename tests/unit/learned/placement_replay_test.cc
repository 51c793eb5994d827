// The xgboost placement policy against least-outstanding on deterministic replays of the
// balance benchmark's workloads (tests/fakes/dispatch_replay.h): no cluster, no clock, the
// model a ScriptedCostModel that predicts every token exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include "coordinator/core/scheduler.h"
#include "coordinator/costmodel/xgb_cost_model.h"
#include "coordinator/learned/xgb_scheduler.h"
#include "tests/fakes/dispatch_replay.h"
#include "tests/fakes/scripted_cost_model.h"

namespace tokengate::learned {
namespace {

using testing::ReplayJob;
using testing::ReplayResult;

std::shared_ptr<testing::ScriptedCostModel> exactModel() {
  auto m = std::make_shared<testing::ScriptedCostModel>();
  m->set(0, 1000, /*per_arg=*/true);  // op 0 costs its argument in us
  m->setVersion(1);
  return m;
}

// bench/balance_bench.cc "bimodal": spin(100us) x1500 and spin(5ms) x150 of one op, jobs of 5.
std::vector<ReplayJob> bimodal(uint64_t seed) {
  return testing::groupedJobs({{100, 1500}, {5000, 150}}, 5, seed);
}
// "skewed" / "equal" / "hetero" (sleep 0 x300 as 1 us tokens).
std::vector<ReplayJob> skewed(uint64_t seed) {
  return testing::groupedJobs(
      {{50, 1200}, {400, 600}, {2000, 300}, {12000, 150}, {60000, 40}, {1, 300}}, 5, seed);
}
// "heavytail": Pareto(1.3) microseconds from 50 us, capped at 50 ms, jobs of 5 equal tokens.
std::vector<ReplayJob> heavytail(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(1e-9, 1.0);
  std::vector<std::pair<double, uint32_t>> c;
  for (int i = 0; i < 600; ++i)
    c.emplace_back(std::floor(std::min(50.0 / std::pow(u(rng), 1 / 1.3), 50'000.0)), 5);
  return testing::groupedJobs(c, 5, seed);
}
using Workload = std::vector<ReplayJob> (*)(uint64_t);

struct ReplayRun {
  ReplayResult r;
  uint64_t switches = 0;
};

// Warm-up pass (seed + 1000), then the measured pass, one scheduler, as the benchmark runs.
template <typename S>
ReplayRun measured(S& s, Workload w, const std::vector<double>& slow, double gap_ns, uint64_t seed,
                   testing::ReplayNet net = {}) {
  testing::replayDispatch(s, w(seed + 1000), slow, gap_ns, 2048, net);
  ReplayRun run;
  run.r = testing::replayDispatch(s, w(seed), slow, gap_ns, 2048, net);
  if constexpr (std::is_same_v<S, XgbScheduler>) run.switches = s.modeSwitches();
  return run;
}

ReplayRun runXgb(XgbSchedulerOptions o, Workload w, const std::vector<double>& slow, double gap_ns,
                 uint64_t seed, testing::ReplayNet net = {}) {
  std::shared_ptr<const costmodel::CostModel> model = exactModel();
  XgbScheduler s([&] { return model; }, nullptr, o);
  return measured(s, w, slow, gap_ns, seed, net);
}

ReplayRun runXgbWith(std::shared_ptr<const costmodel::CostModel> model, XgbSchedulerOptions o,
                     Workload w, const std::vector<double>& slow, double gap_ns, uint64_t seed) {
  XgbScheduler s([&] { return model; }, nullptr, o);
  return measured(s, w, slow, gap_ns, seed);
}

// The real XgbCostModel, trained as the online trainer would on a replayed pass's telemetry
// (another seed, nominal run times with 5% noise), instead of the exact scripted model.
std::shared_ptr<const costmodel::CostModel> trainedOn(Workload w, uint64_t seed) {
  std::vector<costmodel::TelemetrySample> samples;
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> noise(0, 0.05);
  for (const auto& job : w(seed))
    for (double c : job.cost_ns) {
      costmodel::TelemetrySample t;
      t.features.op_id = 0;
      t.features.arg_count = 1;
      t.features.arg_total_bytes = 8;
      t.features.first_numeric_arg = c / 1000;
      t.run_ns = static_cast<int64_t>(c * noise(rng));
      samples.push_back(t);
    }
  auto m = costmodel::XgbCostModel::train(samples);
  if (!m.ok()) return nullptr;
  (*m)->setVersion(1);
  return *m;
}

ReplayRun runLo(double horizon_ns, Workload w, const std::vector<double>& slow, double gap_ns,
                uint64_t seed, testing::ReplayNet net = {}) {
  coordinator::LeastOutstandingOptions lo;
  lo.horizon_ns = horizon_ns;
  auto s = coordinator::makeLeastOutstandingScheduler(lo);
  return measured(*s, w, slow, gap_ns, seed, net);
}

// Mean start time (ms) of the big (>= 1 ms) tokens: where the model's order differs from
// least-outstanding's.
void describe(const char* name, const ReplayRun& run) {
  double big_start = 0;
  int big = 0;
  for (const auto& t : run.r.tokens)
    if (t.cost_ns >= 1e6) {
      big_start += t.start;
      ++big;
    }
  std::printf(
      "  %-28s makespan %.4f p50 %.4f p99 %.4f | by model %5llu | switches %3llu | "
      "big tokens start at %.1f ms on average\n",
      name, run.r.makespan_s, run.r.p50_s, run.r.p99_s,
      static_cast<unsigned long long>(run.r.placed_by_model),
      static_cast<unsigned long long>(run.switches), big ? big_start / big / 1e6 : 0);
}

struct Case {
  const char* name;
  Workload w;
  std::vector<double> slow;
};
const Case kCases[] = {{"bimodal", bimodal, {1, 1, 2.5}},
                       {"skewed", skewed, {1, 1, 2.5}},
                       {"hetero", skewed, {1, 2, 4}},
                       {"heavytail", heavytail, {1, 1, 2.5}}};

// Best least-outstanding makespan and p99 (horizon off, the cluster's default, and 20 ms, what
// the xgboost policy's fallback uses) of one case.
std::pair<double, double> bestLo(const Case& c, double gap_ns, uint64_t seed) {
  const ReplayRun a = runLo(0, c.w, c.slow, gap_ns, seed),
                  b = runLo(20e6, c.w, c.slow, gap_ns, seed);
  return {std::min(a.r.makespan_s, b.r.makespan_s), std::min(a.r.p99_s, b.r.p99_s)};
}

// The cause of the suite's bimodal loss (p99 +10%, p50 +35% with the model placing): largest-
// first ordering over the whole ready queue. Under deep credit the queue is the whole workload,
// so with the queue horizon every 5 ms token of every job was placed before any 100 us token,
// and the jobs of small tokens admitted first finished last: p99 job latency = the makespan.
// Ordering largest-first within each job only keeps admission order between jobs.
TEST(PlacementReplay, BimodalJobLatencyIsNoWorseThanLeastOutstanding) {
  for (double gap_ns : {0.0, 1e5})
    for (uint64_t seed = 42; seed < 45; ++seed) {
      XgbSchedulerOptions o;
      o.fallback_gate = false;  // the model places throughout: its rule, not the gate
      const ReplayRun x = runXgb(o, bimodal, {1, 1, 2.5}, gap_ns, seed);
      const auto [lo_makespan, lo_p99] = bestLo(kCases[0], gap_ns, seed);
      EXPECT_LE(x.r.p99_s, lo_p99) << "gap " << gap_ns << " seed " << seed;
      EXPECT_LE(x.r.makespan_s, lo_makespan) << "gap " << gap_ns << " seed " << seed;
    }
}

// The gated policy (the fallback switch, hysteresis, the fallback's horizon guard) on the
// replayed suite with an exact model: within 3% of the best least-outstanding on makespan and
// p99 in every case (the rule). Without the guard, hetero (gap 100 us, seed 42) took
// 19.9 s against 2.96 s: least-outstanding's op mean had sunk below its horizon threshold while
// the model placed, so on falling back it committed the whole held backlog at once.
TEST(PlacementReplay, GatedPolicyIsWithinThreePercentOfLeastOutstanding) {
  // Jobs arriving every 100 us, the skewed mix on 1/1/2.5 and 1/2/4 nodes: the cases that lost
  // most before (the whole table: PlacementReplay.DISABLED_Table, ~20 s).
  for (const Case& c : {kCases[1], kCases[2]})
    for (double gap_ns : {1e5})
      for (uint64_t seed = 42; seed < 45; ++seed) {
        const ReplayRun x = runXgb({}, c.w, c.slow, gap_ns, seed);
        const auto [lo_makespan, lo_p99] = bestLo(c, gap_ns, seed);
        EXPECT_LE(x.r.makespan_s, 1.03 * lo_makespan)
            << c.name << " gap " << gap_ns << " seed " << seed;
        EXPECT_LE(x.r.p99_s, 1.03 * lo_p99) << c.name << " gap " << gap_ns << " seed " << seed;
      }
  // With the model path's minimum of 4 queued tokens in the guard, least-outstanding sent two
  // more 28.8 ms tokens to the slow node already running one here (+37% makespan).
  const ReplayRun x = runXgb({}, heavytail, {1, 1, 2.5}, 0, 44);
  const auto [lo_makespan, lo_p99] = bestLo(kCases[3], 0, 44);
  EXPECT_LE(x.r.makespan_s, 1.03 * lo_makespan);
  EXPECT_LE(x.r.p99_s, 1.03 * lo_p99);
}

// The bound the benchmark prints (total work / capacity, the longest token, submission times)
// is a real lower bound: no policy, however it places, finishes a replayed pass sooner; and on
// heavytail least-outstanding is already close to it, which is why the issue's ">= 15% better
// than least-outstanding" cannot be had there (docs/cost-model.md, "Heavytail: the bound").
TEST(PlacementReplay, NoPolicyBeatsTheLowerBound) {
  for (const Case& c : kCases)
    for (double gap_ns : {0.0, 1e5})
      for (uint64_t seed = 42; seed < 45; ++seed) {
        const double bound = testing::replayLowerBound(c.w(seed), c.slow, gap_ns);
        XgbSchedulerOptions model_only;
        model_only.fallback_gate = false;
        const double lo = runLo(0, c.w, c.slow, gap_ns, seed).r.makespan_s;
        const double x = runXgb(model_only, c.w, c.slow, gap_ns, seed).r.makespan_s;
        EXPECT_GE(lo, bound * (1 - 1e-9)) << c.name << " seed " << seed;
        EXPECT_GE(x, bound * (1 - 1e-9)) << c.name << " seed " << seed;
        if (std::string_view(c.name) == "heavytail")
          std::printf(
              "heavytail gap %.0f us seed %llu: bound %.4f, least-outstanding %.4f "
              "(x%.3f), model %.4f (x%.3f)\n",
              gap_ns / 1e3, static_cast<unsigned long long>(seed), bound, lo, lo / bound, x,
              x / bound);
      }
}

// What the model missed on heavytail: trained on telemetry (not scripted), its first label-clip
// pass grouped labels per op and cut every token above ~0.8 ms (the op's median x e^(4 x 1.48 x
// MAD)) down to that, so the 5-50 ms tokens that decide the makespan looked like 0.8 ms ones and
// went wherever. Without the fix (per-op clip): a 10 ms token predicted 0.7-1.0 ms, the model
// placing alone +10% / +3% / +25% makespan against the exact model (seeds 42-44), the gated
// policy +11% against least-outstanding on seed 42. With the clip per (op, argument): 2.1-5.4 ms
// (a tree cannot extrapolate beyond the few largest training tokens, hence not 10), within 4% of
// the exact model, and the gated policy within 4% of least-outstanding (-3.5%, +3.3%, +2.3%: not
// yet the 3% rule on seeds 43 and 44, where the biggest tokens are still predicted too low).
TEST(PlacementReplay, HeavytailWithATrainedModelPlacesLikeTheExactModel) {
  for (uint64_t seed = 42; seed < 45; ++seed) {
    const auto model = trainedOn(heavytail, seed + 2000);
    ASSERT_NE(model, nullptr);
    costmodel::TokenFeatures big;
    big.op_id = 0;
    big.arg_count = 1;
    big.arg_total_bytes = 8;
    big.first_numeric_arg = 10'000;  // a 10 ms token
    double predicted = 0;
    model->predict(std::span<const costmodel::TokenFeatures>(&big, 1),
                   std::span<double>(&predicted, 1));
    XgbSchedulerOptions o;
    o.fallback_gate = false;
    const ReplayRun trained = runXgbWith(model, o, heavytail, {1, 1, 2.5}, 0, seed);
    const ReplayRun exact = runXgb(o, heavytail, {1, 1, 2.5}, 0, seed);
    const ReplayRun gated = runXgbWith(model, {}, heavytail, {1, 1, 2.5}, 0, seed);
    const auto [lo_makespan, lo_p99] = bestLo(kCases[3], 0, seed);
    std::printf(
        "heavytail seed %llu: 10 ms predicted %.2f ms; makespan trained %.4f, exact %.4f, "
        "gated (trained) %.4f (%llu switches, %llu of %zu placed by the model), "
        "least-outstanding %.4f\n",
        static_cast<unsigned long long>(seed), predicted / 1e6, trained.r.makespan_s,
        exact.r.makespan_s, gated.r.makespan_s, static_cast<unsigned long long>(gated.switches),
        static_cast<unsigned long long>(gated.r.placed_by_model), gated.r.tokens.size(),
        lo_makespan);
    EXPECT_GT(predicted, 2e6) << "seed " << seed;
    EXPECT_LE(trained.r.makespan_s, 1.05 * exact.r.makespan_s) << "seed " << seed;
    EXPECT_LE(gated.r.makespan_s, 1.03 * lo_makespan) << "seed " << seed;
  }
}

// ReplayRun with --gtest_also_run_disabled_tests: every variant on the replayed workloads.
TEST(PlacementReplay, DISABLED_Table) {
  struct W {
    const char* name;
    Workload w;
    std::vector<double> slow;
  };
  const W ws[] = {{"bimodal", bimodal, {1, 1, 2.5}},
                  {"skewed", skewed, {1, 1, 2.5}},
                  {"hetero", skewed, {1, 2, 4}},
                  {"heavytail", heavytail, {1, 1, 2.5}}};
  for (const auto& w : ws)
    for (double gap_us : {0.0, 100.0}) {
      for (uint64_t seed = 42; seed < 45; ++seed) {
        const double g = gap_us * 1e3;
        std::printf("%s, gap %.0f us, seed %llu, lower bound %.4f s\n", w.name, gap_us,
                    static_cast<unsigned long long>(seed),
                    testing::replayLowerBound(w.w(seed), w.slow, g));
        describe("least-outstanding", runLo(0, w.w, w.slow, g, seed));
        describe("least-outstanding h20", runLo(20e6, w.w, w.slow, g, seed));
        XgbSchedulerOptions o;
        describe("xgboost (gate)", runXgb(o, w.w, w.slow, g, seed));
        o.own_queue_view = false;
        o.windows_to_model = o.windows_to_fallback = 1;
        describe("xgboost (gate, no hyst., core q)", runXgb(o, w.w, w.slow, g, seed));
        o.own_queue_view = true;
        describe("xgboost (gate, no hysteresis)", runXgb(o, w.w, w.slow, g, seed));
        o = {};
        o.fallback_horizon_guard = false;
        describe("xgboost (gate, no guard)", runXgb(o, w.w, w.slow, g, seed));
        o.own_queue_view = false;
        describe("xgboost (gate, no guard/own q)", runXgb(o, w.w, w.slow, g, seed));
        o = {};
        o.min_tokens_between_switches = 64;
        describe("xgboost (gate, window 64)", runXgb(o, w.w, w.slow, g, seed));
        o = {};
        o.windows_to_fallback = 4;
        o.windows_to_model = 4;
        describe("xgboost (gate, 4/4 windows)", runXgb(o, w.w, w.slow, g, seed));
        o = {};
        o.own_queue_view = false;
        describe("xgboost (gate, core queue)", runXgb(o, w.w, w.slow, g, seed));
        o = {};
        o.fallback_gate = false;
        describe("xgboost (model)", runXgb(o, w.w, w.slow, g, seed));
        o.lpt_scope = XgbSchedulerOptions::LptScope::kSlice;
        describe("xgboost (model, LPT slice)", runXgb(o, w.w, w.slow, g, seed));
        o.lpt_min_token_ns = 1e18;
        describe("xgboost (model, no LPT)", runXgb(o, w.w, w.slow, g, seed));
      }
    }
}

// Heavytail with what the cluster has and the replay leaves out (ReplayNet: round trips, a
// per-token overhead on the node): least-outstanding with and without the horizon and the gated
// policy, makespan ratios to least-outstanding without the horizon (the cluster's default).
TEST(PlacementReplay, DISABLED_HeavytailWithRoundTrips) {
  const testing::ReplayNet nets[] = {{0, 0}, {200e3, 0}, {0, 28e3}, {200e3, 28e3}, {1e6, 28e3}};
  for (const auto& net : nets)
    for (double gap : {0.0, 100e3, 300e3})
      for (uint64_t seed : {42, 43, 44}) {
        const ReplayRun lo0 = runLo(0, heavytail, {1, 1, 2.5}, gap, seed, net);
        const ReplayRun lo20 = runLo(20e6, heavytail, {1, 1, 2.5}, gap, seed, net);
        const ReplayRun x = runXgb({}, heavytail, {1, 1, 2.5}, gap, seed, net);
        XgbSchedulerOptions off;
        off.queue_horizon_ns = 0;
        off.fallback_horizon_ns = 0;
        const ReplayRun x0 = runXgb(off, heavytail, {1, 1, 2.5}, gap, seed, net);
        std::printf(
            "rtt %4.0f us overhead %2.0f us gap %3.0f us seed %llu: lo0 %.4f | lo20 %+.1f%% | "
            "xgb %+.1f%% (%llu by model, %llu switches) | xgb no horizon %+.1f%%\n",
            net.round_trip_ns / 1e3, net.token_overhead_ns / 1e3, gap / 1e3,
            static_cast<unsigned long long>(seed), lo0.r.makespan_s,
            (lo20.r.makespan_s / lo0.r.makespan_s - 1) * 100,
            (x.r.makespan_s / lo0.r.makespan_s - 1) * 100,
            static_cast<unsigned long long>(x.r.placed_by_model),
            static_cast<unsigned long long>(x.switches),
            (x0.r.makespan_s / lo0.r.makespan_s - 1) * 100);
      }
}

}  // namespace
}  // namespace tokengate::learned
