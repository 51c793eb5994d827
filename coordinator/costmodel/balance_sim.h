// Deterministic discrete-event simulation of dispatching a job's tokens to nodes of unequal
// speed under a credit limit, for comparing placement policies without running a cluster.
// Used by the unit tests (the model policy must beat round-robin and least-outstanding) and by
// tokengate-costmodel-bench; the real end-to-end benchmark is `tokengate-bench balance`.
//
// Pure function of its inputs; no threads, no clocks.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "coordinator/costmodel/cost_model.h"

namespace tokengate::costmodel {

enum class SimPolicy {
  kRoundRobin,        // next node with free credit, in turn
  kLeastOutstanding,  // node with the fewest tokens in flight (cost 1 per token)
  kModel,             // placeBatch with the model's per-node predictions (LPT, speed-aware)
};
std::string_view simPolicyName(SimPolicy p);

struct SimNode {
  double speed_factor = 1.0;  // true slowness: run time multiplier
  uint32_t workers = 1;       // tokens run in parallel
  uint32_t credit = 4;        // max tokens queued + running on the node
};

struct SimResult {
  double makespan_ns = 0;
  double p99_latency_ns = 0;  // token completion time (all tokens are submitted at t = 0)
  std::vector<uint64_t> tokens_per_node;
};

// `true_cost_ns(features)` gives a token's real run time given the node features the dispatcher
// filled in (node index/speed/load). `model` is required for kModel only. Tokens are released
// in submission order as credit frees up.
// `lookahead` (kModel only): how many pending tokens the policy sees per dispatch, at least the
// free credit. Larger lets LPT start the big tokens first.
SimResult simulateBalance(SimPolicy policy, std::span<const TokenFeatures> tokens,
                          std::span<const SimNode> nodes,
                          const std::function<double(const TokenFeatures&)>& true_cost_ns,
                          const CostModel* model, size_t lookahead = 64);

// Lower bound on any policy's makespan: total work spread perfectly over the nodes' speeds
// and workers, or the longest single token on its best node, whichever is larger.
double idealMakespanNs(std::span<const TokenFeatures> tokens, std::span<const SimNode> nodes,
                       const std::function<double(const TokenFeatures&)>& true_cost_ns);

}  // namespace tokengate::costmodel
