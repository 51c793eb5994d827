// tokengate-bench jobs (jobs_bench.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tokengate::bench {

struct JobsOptions {
  uint32_t jobs = 20'000;  // one-token jobs per run
  uint32_t window = 1024;  // Client::setWindow, per client
  uint32_t clients = 1;    // pipelined clients, one thread and socket each
  uint32_t nodes = 2;
  uint32_t runs = 3;  // fresh cluster each; medians reported
  bool journal = false;
  bool insecure = false;
  std::string bin_dir;  // coordinator and node binaries (default: next to tokengate-bench)
  std::string log_level = "warn";
  std::vector<std::string> coordinator_args;
};

int runJobs(const JobsOptions& options);

}  // namespace tokengate::bench
