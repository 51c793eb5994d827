// tokengate-costmodel-bench: trains an XGBoost cost model on a synthetic workload and measures
// batched prediction cost (ns per token) for the heuristic and the learned model.
// Prints one JSON object on the last line.
//
// Usage: tokengate-costmodel-bench [batch_size=1024] [iterations=2000] [train_rows=4000]
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "coordinator/costmodel/mean_cost_model.h"
#include "coordinator/costmodel/synthetic.h"
#include "coordinator/costmodel/xgb_cost_model.h"

using namespace tokengate::costmodel;

namespace {

struct Result {
  double ns_per_token = 0;
  double batch_us = 0;
};

Result measure(const CostModel& model, const std::vector<TokenFeatures>& batch, int iterations) {
  std::vector<double> out(batch.size());
  for (int i = 0; i < 20; ++i) model.predict(batch, out);  // warm up
  double sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) {
    model.predict(batch, out);
    sink += out[static_cast<size_t>(i) % out.size()];
  }
  const auto t1 = std::chrono::steady_clock::now();
  if (sink < 0) std::puts("");  // keep the loop observable
  const double total_ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
  Result r;
  r.ns_per_token = total_ns / (static_cast<double>(iterations) * static_cast<double>(batch.size()));
  r.batch_us = total_ns / iterations / 1000.0;
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

  const Result rx = measure(**xgb, batch, iterations);
  const Result rm = measure(*mean, batch, iterations);
  const double train_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  fmt::print(
      "{{\"bench\":\"costmodel_predict\",\"batch\":{},\"iterations\":{},\"train_rows\":{},"
      "\"trees\":{},\"train_ms\":{:.1f},\"heldout_r2\":{:.4f},\"heldout_mae_log\":{:.4f},"
      "\"xgb_ns_per_token\":{:.1f},\"xgb_batch_us\":{:.1f},"
      "\"mean_ns_per_token\":{:.1f},\"mean_batch_us\":{:.1f}}}\n",
      batch_size, iterations, train_rows, (*xgb)->numTrees(), train_ms, (*xgb)->quality().r2,
      (*xgb)->quality().mae_log, rx.ns_per_token, rx.batch_us, rm.ns_per_token, rm.batch_us);
  return 0;
}
