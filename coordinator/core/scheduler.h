// Placement policy. The dispatcher hands the scheduler a run of ready tokens
// of one lane and the nodes that could take them; the scheduler says which
// node (and which lane) each token goes to. Policies: round-robin,
// least-outstanding-work (default) and the learned cost model
// (coordinator/costmodel plugs in through `costs`).
// Called on the coordinator loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/job.h"

namespace tokengate::coordinator {

struct TokenInfo {
  uint64_t id = 0;
  uint32_t op = 0;  // coordinator op index
  Weight declared = Weight::kLight;
  uint32_t arg_count = 0;
  uint32_t arg_bytes = 0;
  double first_arg = 0;          // first numeric argument (NaN if none)
  double cost = 1;               // predicted cost (filled from Scheduler::costs)
  Weight lane = Weight::kLight;  // lane being dispatched (costs/place) or run on (observe)
  uint32_t load = 0;             // observe(): tokens in flight on that node lane at dispatch
};

struct Candidate {
  uint32_t node = 0;         // node slot
  uint32_t free_credit = 0;  // tokens the lane may still take
  uint32_t workers = 1;      // lane workers on that node
  double outstanding = 0;    // predicted work in flight (cost units)
  uint64_t in_flight = 0;    // tokens in flight on the lane
  double speed = 1.0;        // Scheduler::nodeSpeed of the node (1 = fastest, <1 slower)
  uint32_t assigned = 0;     // tokens given this round (scheduler updates)
};

struct Placement {
  int32_t candidate = -1;  // index into candidates, -1 = hold back
  Weight lane = Weight::kLight;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual const char* name() const = 0;
  // Places tokens of `lane`. Must respect free_credit, and update
  // free_credit/outstanding/assigned of the chosen candidates.
  virtual void place(Weight lane, std::span<const TokenInfo> tokens,
                     std::span<Candidate> candidates, std::span<Placement> out) = 0;
  // Predicted cost of a token in cost units (ns for learned models); used to
  // account outstanding work. Default 1 per token.
  virtual void costs(std::span<const TokenInfo> tokens, std::span<double> out);
  // Observed completion of every accepted result (feeds adaptive policies), called by the core
  // on the loop thread. Only id, op, declared, cost (the prediction made at dispatch), lane and
  // load are filled. Default: nothing.
  virtual void observe(const TokenInfo& token, uint32_t node, double run_ns) {}
  // Observed relative speed of a node slot (1 = fastest, 0.4 = 2.5x slower); the core copies
  // it into NodeRec::speed / Candidate::speed. Default 1 (speed-blind).
  virtual double nodeSpeed(uint32_t node) const { return 1.0; }
  // Node slot `node` was freed (its node departed long ago) or is about to serve a new node:
  // forget what was learnt about it. Default: nothing.
  virtual void forgetNode(uint32_t node) {}
  // Predicted work (cost units) after which the core sends a node's pending batch: a batch is
  // flushed once the next token of the same cost would push it past this, so heavy tokens go
  // out in small batches and tiny ones in big ones (up to CoordinatorConfig::max_batch).
  // 0 = off: batches flush by token count and latency only (the heuristic policies).
  virtual double batchWorkTarget() const { return 0; }
  // What places tokens right now, for cluster stats: the policy's name, or for a policy with a
  // fallback (xgboost) "model" / "fallback". Loop thread.
  virtual const char* placementMode() const { return name(); }
};

std::unique_ptr<Scheduler> makeRoundRobinScheduler();
// Outstanding work = sum of a per-op running mean of observed run time (Dask's per-prefix
// mean); node speed from the same observations. See LeastOutstandingOptions.
struct LeastOutstandingOptions {
  double alpha = 0.05;         // EWMA weight once 1/alpha runs of an op were seen
  double outlier_factor = 20;  // runs beyond this multiple of the op mean are clipped
  double speed_alpha = 0.01;   // EWMA weight of a node's log(run / op mean)
  uint32_t min_speed_observations = 32;
  double min_speed_token_ns = 100'000;  // shorter ops do not teach speed (timer noise)
  double max_slowness = 20;
  // A node counts as slower than the fastest only when the difference of their mean log ratios
  // exceeds this many standard errors (equal nodes otherwise split work by estimation noise).
  double speed_significance = 3;
  // Tokens of one job with the same op and first argument (a `repeat` run) usually cost the same,
  // and that cost is unknown: the per-op mean does not see arguments. Placing several of them on
  // one node because it looks a little less loaded bets them all on one estimate, and a run of
  // 5 x 60 ms tokens lands 3-4 deep on one node. Each further token of the run on the same node
  // therefore counts (1 + group_spread x already there) times its cost when choosing the node;
  // 0 = off (plain least outstanding work). See docs/cost-model.md.
  double group_spread = 4;
  // Placement cost of an op: a running mean whose weight shrinks with the op's spread, so that its
  // relative standard error stays near this (0 = off: the plain EWMA of weight alpha). With
  // alpha 0.05 the mean of an op whose runs scatter with CV ~3.7 (50 us .. 60 ms) moves by ~60%
  // between finishes; tokens placed at different times then add outstanding work in different
  // units and equal nodes end with unequal token counts. The weight is
  // clamp(2 e^2 / (CV^2 + e^2), min_alpha, alpha), CV from the recent (alpha-weighted) runs, so a
  // steady op (drift included, once its new cost is steady) keeps the fast weight alpha.
  double cost_rel_error = 0.1;
  double min_alpha = 0.002;
  // Queue horizon, in predicted ns of work per worker (0 = off: every token is committed to a
  // node as soon as credit allows, 2048 per worker by default). A token whose cost is at least
  // horizon_min_token_ns is held back at the coordinator (Placement -1; it is placed again when
  // a result frees work) once its best node already holds horizon_ns of predicted work per
  // worker, in at least horizon_min_tokens tokens per worker (default 20 ms, as the xgboost
  // policy's own horizon; coordinator --placement-horizon-ms). Committed work is then bounded in
  // predicted time, not tokens, so a misestimate (the op mean does not see arguments) is paid
  // for at most one horizon, and big tokens late in a run still find the node that frees first.
  // Cheaper tokens (Leibniz terms) are never held: lane credit limits them, and deep credit is
  // what their throughput needs.
  double horizon_ns = 20e6;
  double horizon_min_token_ns = 100'000;
  uint32_t horizon_min_tokens = 4;
};
std::unique_ptr<Scheduler> makeLeastOutstandingScheduler(LeastOutstandingOptions options = {});
// "round-robin", "least-outstanding" (with `lo`); nullptr for another name.
std::unique_ptr<Scheduler> makeScheduler(const std::string& name,
                                         const LeastOutstandingOptions& lo = {});

}  // namespace tokengate::coordinator
