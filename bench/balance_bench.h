// `tokengate-bench balance`: skewed workload on 3 nodes (one slowed) under several placement
// policies, one fresh local cluster per policy. See bench/balance_bench.cc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tokengate::bench {

struct BalanceOptions {
  std::vector<std::string> policies = {"round-robin", "least-outstanding", "xgboost"};
  uint32_t nodes = 3;
  double slow_factor = 2.5;    // --speed-factor of the last node
  double scale = 1.0;          // multiplies token counts
  uint32_t group = 5;          // tokens per job (latency is measured per job)
  uint64_t seed = 42;
  uint32_t credit_per_worker = 0;  // 0 = coordinator default
  uint32_t settle_ms = 3000;       // pause between warm-up and measured run
  bool pin = true;
  std::vector<std::string> coordinator_args;
  std::string log_level = "warn";
};

int runBalance(const BalanceOptions& options);

}  // namespace tokengate::bench
