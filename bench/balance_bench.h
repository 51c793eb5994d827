// `tokengate-bench balance`: a workload suite (skewed mix, equal nodes, uniform tiny, bimodal,
// heavy-tailed, drift, heterogeneous nodes, DAG) under several placement policies and seeds, one
// fresh local cluster per run. See bench/balance_bench.cc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tokengate::bench {

struct BalanceOptions {
  std::vector<std::string> policies = {"round-robin", "least-outstanding", "xgboost"};
  // skewed, equal, uniform, bimodal, heavytail, drift, hetero, dag, or "all" (the suite), and
  // drift-long (not in "all").
  std::vector<std::string> workloads = {"skewed"};
  uint32_t seeds = 1;  // runs per workload and policy: seeds seed, seed+1, ...
  uint32_t nodes = 3;
  double slow_factor = 2.5;  // --speed-factor of the last node (hetero: 1x/2x/4x by slot)
  double scale = 1.0;        // multiplies token counts
  uint32_t group = 5;        // tokens per job (latency is measured per job)
  uint64_t seed = 42;
  uint32_t credit_per_worker = 0;  // 0 = coordinator default
  uint32_t settle_ms = 3000;       // pause between warm-up and measured run
  // "sleep": the cost ops sleep (nap/nap2: wall-clock cost, no CPU), so more nodes than cores
  // measure placement, not the OS scheduler; "spin": busy loops (spin/spin2, CPU-bound).
  std::string work = "sleep";
  bool pin = true;
  std::vector<std::string> coordinator_args;
  std::string log_level = "warn";
  // A/A: least-outstanding runs a second time per seed (after the other policies), so the
  // summary can print the same policy's run-to-run ratio beside xgboost's ratio to it.
  bool aa = false;
};

// The suite: what --workload all runs.
std::vector<std::string> balanceWorkloads();
// Further workloads --workload takes by name only (drift-long: 14 s of open-loop arrivals).
std::vector<std::string> balanceExtraWorkloads();
int runBalance(const BalanceOptions& options);

}  // namespace tokengate::bench
