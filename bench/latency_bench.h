// tokengate-bench latency (latency_bench.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tokengate::bench {

struct LatencyOptions {
  uint32_t jobs = 10'000;  // measured round trips
  uint32_t warmup = 500;
  uint32_t nodes = 2;
  std::string bin_dir;  // coordinator and node binaries (default: next to tokengate-bench)
  std::string log_level = "warn";
  std::vector<std::string> coordinator_args;
  std::vector<std::string> node_args;
};

int runLatency(const LatencyOptions& options);

}  // namespace tokengate::bench
