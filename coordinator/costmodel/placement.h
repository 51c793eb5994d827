// Placement helpers the scheduler uses with predicted costs: pure functions (the model-based
// ones only call the given const CostModel). No state, no threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <vector>

#include "coordinator/costmodel/cost_model.h"
#include "coordinator/costmodel/features.h"

namespace tokengate::costmodel {

struct NodeState {
  // Predicted work already queued or running on the node, in ns of that node's wall time.
  double outstanding_ns = 0;
  // Observed slowness: 1.0 nominal, 2.0 = twice as slow.
  double speed_factor = 1.0;
  // Tokens the node runs in parallel (>= 1).
  uint32_t workers = 1;
  bool eligible = true;  // false: dead, draining, or lane full
};

// Predicted completion time of a token whose cost at nominal speed is `token_ns` on `node`.
double predictedCompletionNs(const NodeState& node, double token_ns);

// Index of the eligible node minimising predicted completion (ties: lowest outstanding work,
// then lowest index); nullopt if no node is eligible.
std::optional<size_t> chooseNode(std::span<const NodeState> nodes, double token_ns);

// A candidate node as the scheduler sees it, for model-based placement.
struct NodeView {
  uint32_t node_index = 0;
  double speed_factor = 1.0;  // fed to the model as node_speed
  uint32_t load = 0;          // queued + running tokens, fed to the model as node_load
  double outstanding_ns = 0;  // predicted work already on the node
  uint32_t workers = 1;
  bool eligible = true;
  // Tokens the node may still take in this round (the lane's free credit); placeBatch holds
  // back tokens once every node is full.
  uint32_t capacity = std::numeric_limits<uint32_t>::max();
};

struct Placement {
  static constexpr size_t kHoldBack = std::numeric_limits<size_t>::max();
  size_t node = kHoldBack;   // index into the NodeView span, or kHoldBack
  double predicted_ns = 0;   // predicted run time of the token on that node
  double completion_ns = 0;  // predicted completion (queue drain + run)
};

struct PlaceOptions {
  // Hold a token back (Placement::kHoldBack) rather than put it on a node with free credit
  // when a node that is full right now would still finish it sooner (by more than wait_slack,
  // relative). Credit-based dispatch otherwise hands every token to whichever node frees a slot
  // first, however slow; waiting is what lets the slow node get only the work it can finish in
  // time.
  bool wait_for_better_node = true;
  double wait_slack = 0.1;
};

// Places one token: predicts its run time on every eligible node in one batched call (the
// token's node features are overwritten per node) and picks the earliest predicted completion.
// nullopt: no eligible node, or the token should wait (see PlaceOptions).
std::optional<Placement> placeToken(const CostModel& model, const TokenFeatures& token,
                                    std::span<const NodeView> nodes,
                                    const PlaceOptions& options = {});

// Places a batch of tokens greedily, largest predicted cost first (LPT), updating each node's
// outstanding work as tokens are assigned: the classic makespan heuristic, with per-node
// predictions so slow nodes get proportionally less. One predict() call of
// tokens x eligible-nodes rows. Returns one Placement per token (in input order); empty if no
// node is eligible. Tokens get node == kHoldBack when every node is at capacity or when waiting
// for a full node is predicted to finish them sooner (PlaceOptions); largest-first filling
// means the cheapest tokens are the ones that wait for capacity.
std::vector<Placement> placeBatch(const CostModel& model, std::span<const TokenFeatures> tokens,
                                  std::span<const NodeView> nodes,
                                  const PlaceOptions& options = {});

struct LaneThresholds {
  // Predicted cost above which a token no longer fits the light lane / the medium lane.
  double light_max_ns = 200'000;     // 0.2 ms
  double medium_max_ns = 5'000'000;  // 5 ms
  // Relative band around each threshold: move up only above threshold*(1+h), move back down only
  // below threshold*(1-h), so an op hovering near a threshold does not flap between lanes.
  double hysteresis = 0.25;
  // If false, tokens are only ever promoted (a declared-heavy op stays heavy).
  bool allow_demotion = true;
};

// Lane weight a token should use given its predicted cost. `current` is the weight the op is
// using now (its declared weight the first time); the result differs from it only when the
// prediction is clearly past a threshold.
Weight reclassify(double predicted_ns, Weight current, const LaneThresholds& thresholds = {});

struct BatchSizing {
  double target_ns = 1'500'000;  // ~1.5 ms of work per batch
  uint32_t min_batch = 1;
  uint32_t max_batch = 256;
};

// Tokens per batch so that a batch holds about target_ns of predicted work, clamped.
// Unknown (NaN/negative) cost -> min_batch; zero cost -> max_batch.
uint32_t batchSizeFor(double predicted_ns, const BatchSizing& sizing = {});

}  // namespace tokengate::costmodel
