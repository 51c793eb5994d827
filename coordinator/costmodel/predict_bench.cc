// tokengate-costmodel-bench: trains an XGBoost cost model on a synthetic workload and measures
// batched prediction cost (ns per token) for the heuristic and the learned model.
// Prints one JSON object on the last line. "xgb" is the production path (compiled forest),
// "xgboost_inplace" is XGBoost's own XGBoosterPredictFromDense for comparison.
//
// Usage: tokengate-costmodel-bench [batch_size=1024] [iterations=2000] [train_rows=4000]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

#include "coordinator/costmodel/balance_sim.h"
#include "coordinator/costmodel/mean_cost_model.h"
#include "coordinator/costmodel/synthetic.h"
#include "coordinator/costmodel/xgb_cost_model.h"

using namespace tokengate::costmodel;

namespace {

struct Result {
  double ns_per_token = 0;      // wall clock
  double cpu_ns_per_token = 0;  // this thread's CPU time: what the coordinator pays, and stable
                                // on a shared machine
};

double threadCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

template <typename PredictFn>
Result measure(PredictFn predict, const std::vector<TokenFeatures>& batch, int iterations) {
  std::vector<double> out(batch.size());
  for (int i = 0; i < 20; ++i) predict(batch, out);  // warm up
  double sink = 0;
  const double c0 = threadCpuNs();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) {
    predict(batch, out);
    sink += out[static_cast<size_t>(i) % out.size()];
  }
  const auto t1 = std::chrono::steady_clock::now();
  const double c1 = threadCpuNs();
  if (sink < 0) std::puts("");  // keep the loop observable
  const double tokens = static_cast<double>(iterations) * static_cast<double>(batch.size());
  Result r;
  r.ns_per_token = std::chrono::duration<double, std::nano>(t1 - t0).count() / tokens;
  r.cpu_ns_per_token = (c1 - c0) / tokens;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t batch_size = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1024;
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 2000;
  const size_t train_rows = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 4000;

  SyntheticWorkload workload;
  const auto samples = workload.samples(train_rows);
  XgbParams params;
  if (const char* c = std::getenv("TG_BENCH_CATEGORICAL"))
    params.categorical_op = std::atoi(c) != 0;
  if (const char* c = std::getenv("TG_BENCH_PREDICT_THREADS"))
    params.predict_nthread = std::atoi(c);
  if (const char* c = std::getenv("TG_BENCH_ROUNDS")) params.num_rounds = std::atoi(c);
  if (const char* c = std::getenv("TG_BENCH_DEPTH")) params.max_depth = std::atoi(c);
  if (const char* c = std::getenv("TG_BENCH_NTHREAD")) params.nthread = std::atoi(c);
  const auto t0 = std::chrono::steady_clock::now();
  auto xgb = XgbCostModel::train(samples, params);
  const auto t1 = std::chrono::steady_clock::now();
  if (!xgb.ok()) {
    std::fprintf(stderr, "training failed: %s\n", xgb.status().ToString().c_str());
    return 1;
  }
  auto mean = MeanCostModel::fromSamples(samples);

  std::vector<TokenFeatures> batch;
  for (size_t i = 0; i < batch_size; ++i) batch.push_back(workload.nextFeatures());

  const XgbCostModel& model = **xgb;
  const Result rx =
      measure([&](const auto& in, auto& out) { model.predict(in, out); }, batch, iterations);
  const Result rr = measure([&](const auto& in, auto& out) { model.predictWithXgboost(in, out); },
                            batch, std::max(iterations / 10, 10));
  const Result rm =
      measure([&](const auto& in, auto& out) { mean->predict(in, out); }, batch, iterations);
  const double train_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();

  // Simulated placement (balance_sim.h): 1500 tokens, nodes of speed 1, 1, 2.5.
  std::string sim_json;
  {
    std::vector<TokenFeatures> tokens;
    tokens.reserve(1500);
    for (int i = 0; i < 1500; ++i) tokens.push_back(workload.nextFeatures());
    auto cost = [&](const TokenFeatures& f) { return workload.trueCostNs(f); };
    for (uint32_t credit : {2u, 32u}) {
      const std::vector<SimNode> nodes = {{1.0, 1, credit}, {1.0, 1, credit}, {2.5, 1, credit}};
      const double ideal = idealMakespanNs(tokens, nodes, cost);
      sim_json += fmt::format("\"sim_credit{}\":{{\"ideal_ms\":{:.1f}", credit, ideal / 1e6);
      for (SimPolicy p :
           {SimPolicy::kRoundRobin, SimPolicy::kLeastOutstanding, SimPolicy::kModel}) {
        const SimResult r = simulateBalance(p, tokens, nodes, cost, xgb->get());
        sim_json += fmt::format(",\"{}\":{{\"makespan_ms\":{:.1f},\"p99_ms\":{:.1f}}}",
                                simPolicyName(p), r.makespan_ns / 1e6, r.p99_latency_ns / 1e6);
      }
      sim_json += "},";
    }
  }
  fmt::print(
      "{{\"bench\":\"costmodel_predict\",{}\"batch\":{},\"iterations\":{},\"train_rows\":{},"
      "\"trees\":{},\"train_ms\":{:.1f},\"heldout_r2\":{:.4f},\"heldout_mae_log\":{:.4f},"
      "\"compiled_forest\":{},"
      "\"xgb_ns_per_token\":{:.1f},\"xgb_cpu_ns_per_token\":{:.1f},"
      "\"xgboost_inplace_ns_per_token\":{:.1f},\"xgboost_inplace_cpu_ns_per_token\":{:.1f},"
      "\"mean_ns_per_token\":{:.1f},\"mean_cpu_ns_per_token\":{:.1f}}}\n",
      sim_json, batch_size, iterations, train_rows, model.numTrees(), train_ms, model.quality().r2,
      model.quality().mae_log, model.usesCompiledForest(), rx.ns_per_token, rx.cpu_ns_per_token,
      rr.ns_per_token, rr.cpu_ns_per_token, rm.ns_per_token, rm.cpu_ns_per_token);
  return 0;
}
