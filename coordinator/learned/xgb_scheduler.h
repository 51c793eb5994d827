// XgbScheduler: the cost-model placement policy (`--scheduler xgboost`).
//
// Safe by construction: it holds a least-outstanding scheduler (makeLeastOutstandingScheduler,
// fed every observation) and places with it -- its costs, its node speeds, its place() -- until
// a learned model (not the trainer's own running-mean MeanCostModel) is trusted. For every
// finished token of measurable size (>= min_speed_token_ns predicted) both estimates made at
// dispatch are scored against the run time (|ln(predicted x node slowness / run)|, running
// means); a model version is trusted once it has min_compared_tokens scores and its error is no
// worse than the least-outstanding running mean's, and placement falls back as soon as its
// recent error is worse again (with hysteresis: windows_to_model / windows_to_fallback).
// Prediction error alone is not enough: the model must also *place* no worse. For every
// measurable token the other estimator's node choice is noted at placement, and when the token
// finishes its real run time is put on both nodes (realised completion = work queued ahead + run
// time scaled by node speed); the model places only while its choices' realised completions are
// no later than the fallback's would have been (placementRegret() <= 0, see
// XgbSchedulerOptions::placement_gate). The model's rule also spreads a job's equal tokens over
// nodes (group_spread, as least-outstanding does): the objective is makespan and p99 job latency.
// usingModel()/modelError()/fallbackError() expose the state (metrics, cluster stats).
//
// costs() predicts every token's nominal run time (ns on the fastest node) with the active
// CostModel in one batched call; place() puts the largest tokens first on the node with the
// earliest predicted completion, (outstanding predicted work + token) x node slowness / workers;
// each node's slowness is learned from telemetry (observe(): run_ns against the prediction made
// at dispatch). Ops whose predicted cost contradicts their lane are reclassified (with the
// hysteresis of costmodel::reclassify) through a callback, which the wiring points at
// CoordinatorCore::setEffectiveLane.
//
// The model comes from a ModelSource (OnlineTrainer::active() in the coordinator): training and
// hot swaps happen elsewhere, this class only copies the current shared_ptr once per call.
//
// Ownership: owned by CoordinatorCore (setScheduler). Threads: every method runs on the
// coordinator loop thread, except the read-only accessors noted below.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <span>
#include <unordered_map>
#include <vector>

#include "coordinator/core/scheduler.h"
#include "coordinator/costmodel/cost_model.h"
#include "coordinator/costmodel/placement.h"

namespace tokengate::learned {

struct XgbSchedulerOptions {
  costmodel::LaneThresholds thresholds;  // light <= 0.2 ms, medium <= 5 ms, +-25% hysteresis
  // Weight of one observation in a node's running mean of log(run / predicted).
  double speed_alpha = 0.05;
  // Observations a node needs before its slowness is trusted (1.0 until then).
  uint32_t min_speed_observations = 8;
  // Tokens predicted cheaper than this do not teach node speed: a short token's measured run
  // time is dominated by timer overhead and by preemption (a few-ms CFS slice lands on a
  // 5 µs token as a 1000x outlier). With 1M-term Leibniz, 1-20 µs chunk sums taught that the
  // node sharing its core with the coordinator was 15-25% slower; the shifted split cost ~5%.
  double min_speed_token_ns = 100'000;
  // Slowness is clamped to [1/max, max] so one bad model cannot starve a node completely.
  double max_slowness = 20;
  // Hold tokens back (Placement -1) rather than queue more than this much predicted work per
  // worker on a node (the deep-credit default otherwise dispatches a whole job blindly at
  // submission); only once the node has min_queue_tokens in flight. 0 = off.
  double queue_horizon_ns = 20e6;
  uint64_t min_queue_tokens = 4;
  // Tokens predicted cheaper than this are never held back by the horizon (lane credit limits
  // them): re-predicting a million tiny held-back tokens made 1M Leibniz ~40% slower.
  double horizon_min_token_ns = 100'000;
  // Largest-first ordering only when some token in the slice is predicted at least this long.
  double lpt_min_token_ns = 10'000;
  // What largest-first reorders. kJob (default): only the tokens of one job among themselves
  // (consecutive tokens of a job in the ready queue); jobs keep their queue (admission) order.
  // kSlice: the whole slice, which under deep credit is the op's whole ready queue: every big
  // token of every job then goes before every small one, so jobs of small tokens admitted first
  // finish last -- in the bimodal replay (placement_replay_test.cc) that put p99 job latency at
  // the makespan (+5-10% against least-outstanding) and doubled p50, for a makespan gain of ~1%
  // that the queue horizon already gives (a late big token still finds a fast node).
  enum class LptScope : uint8_t { kJob, kSlice };
  LptScope lpt_scope = LptScope::kJob;
  // Weight of one token in an op's running mean of predicted cost (reclassification).
  double op_cost_alpha = 0.005;
  // Tokens of an op predicted before it may be reclassified, and between two changes (with the
  // +-25% threshold band this keeps a mixed-cost op from flapping between lanes).
  uint32_t min_tokens_for_reclassify = 64;
  uint32_t min_tokens_between_changes = 256;
  // A slice with more distinct feature rows (runs of equal tokens) than this predicts a stride
  // sample of kSampledRows rows and gives every other token the prediction of the sampled row with
  // the nearest first argument (keeps 1M-token light jobs cheap; exact for typical workloads).
  size_t max_exact_rows = 128;
  // ... unless the sample is not flat and some sampled row is predicted at least this long: then
  // every distinct row is predicted exactly (a heavy-tailed argument's largest tokens are rarely
  // in the sample). Tiny tokens (1M-token Leibniz terms) keep the cheap sample.
  double exact_rows_min_ns = 100'000;
  // Batch sizing (spec 3c): the core sends a node's pending batch once the next token of the
  // same predicted cost would take it past this much predicted work, so a 60 ms token goes alone,
  // 400 us tokens go 3 at a time and sub-us Leibniz terms fill CoordinatorConfig::max_batch.
  // 0 = off (count and latency only, like the heuristic policies).
  double batch_work_target_ns = 1'500'000;
  // The fallback gate (see the class comment). false: a model, once present, always places
  // (tests of the model path).
  bool fallback_gate = true;
  uint32_t min_compared_tokens = 64;
  // Hysteresis against flapping: the gate is evaluated once per window of this many scored
  // tokens, and the mode changes only when the gate wants the other mode in
  // windows_to_model consecutive windows (to trust the model) or windows_to_fallback (to leave
  // it). Each switch costs something real: tokens queued by one estimator are judged in the other's
  // units for a while, and batch sizing changes. Before (one window, re-evaluated on every
  // comparison), the suite's passes switched 2-25 times and the bimodal / hetero replays up to
  // 47 times (placement_replay_test.cc); with a 32-token window heavytail still switched 7-11.
  uint32_t min_tokens_between_switches = 64;  // the window
  uint32_t windows_to_model = 3;
  uint32_t windows_to_fallback = 2;
  // A new model version starts with fresh scores and, by default, untrusted (the fallback places
  // until windows_to_model windows in a row say otherwise). One whose publisher accepted it by a
  // clear margin on recent samples it never trained on (CostModel::heldOut(): at least
  // held_out_min_samples of them, its mean |log error| there at most held_out_trust_ratio x the
  // running mean's) is not thrown back that far:
  //  * if the version before it placed, the new one goes on placing (the trainer's regular
  //    retrains: each restarted trust before, and the fallback placed ~0.1-0.2 s of every 2 s of
  //    drift-long); it leaves as any model does, windows_to_fallback windows after its own live
  //    error or realised regret says so (from min_compared_tokens scores on);
  //  * otherwise (e.g. the first model after a drift) one window decides: it places as soon as
  //    modelShouldPlace() holds on its first min_compared_tokens live scores, not after
  //    windows_to_model windows in a row (192 scored tokens).
  // 0 = off: every version earns trust from scratch.
  double held_out_trust_ratio = 0.5;
  uint64_t held_out_min_samples = 32;
  // Each estimator places with its own view of the queues: the core's Candidate::outstanding is
  // the sum of the costs tokens were *placed* with, i.e. in the units of whichever estimator
  // placed them; after a switch, a node full of tokens the other estimator costed looks
  // over- or under-loaded (least-outstanding costs every `spin` at the op mean, so 40 queued
  // 100 us tokens look like 20 ms; the model costs 5 ms ones at 5 ms, which least-outstanding
  // then sees as 0.5 ms). With this on, the measurable tokens (those shadowed for scoring) in
  // flight count in the placing estimator's own estimates. false: the core's sum as is.
  bool own_queue_view = true;
  // While the fallback places (and a model exists), the queue horizon above is also applied to its
  // choices with the model's estimates and view of the queues: a token the model predicts >=
  // horizon_min_token_ns is held when its node already has queue_horizon_ns of the model's
  // predicted work. Why: least-outstanding's op mean is a running mean of what *finishes*; while
  // the model placed, its horizon held the big tokens back and the small ones finished first, so
  // the mean sank (replay: 3.5 ms -> 74 us for the skewed mix's `spin`), the fallback then saw
  // every token as under its own 100 us horizon threshold and committed the whole held backlog
  // blindly (hetero replay: 19.9 s against 2.9 s). false: the fallback's choices as they are.
  bool fallback_horizon_guard = true;
  // The fallback least-outstanding's own horizon (LeastOutstandingOptions::horizon_ns).
  double fallback_horizon_ns = 20e6;
  // Weight of one score in the running mean of each estimator's |log error|.
  double error_alpha = 0.05;
  // Dispatch-time estimates kept for scoring (cleared beyond this, e.g. cancelled jobs).
  size_t max_shadow_tokens = 1 << 18;
  // Realised placement quality (the second half of the gate). For every measurable token placed
  // while a model exists, the node the *other* estimator would have chosen is computed at
  // placement (least-outstanding's rule with its costs and speeds while the model places, the
  // model's rule while the fallback places), with the work queued ahead of the token on both
  // nodes. When the token finishes, its real run time is put on both: completion on the node it
  // ran on = queued ahead + run; on the other = queued ahead + run rescaled by the two nodes'
  // speeds (learned against the model's per-token predictions; least-outstanding's are relative
  // to an op mean, so a node that ran an op's big tokens looks slow). `placementRegret()`
  // is the running sum of (model's choice - fallback's choice) over the running sum of run
  // times: > 0 means the model's choices finish later than the fallback's would have. The
  // model places only while this is <= max_placement_regret, after min_regret_tokens comparisons
  // (a prediction that is better on average can still place worse: e.g. it is exact on the many
  // small tokens and 20x low on the rare big ones, which then go to a slow node). false: the
  // gate judges prediction error only (the behaviour before).
  bool placement_gate = true;
  uint32_t min_regret_tokens = 32;
  double max_placement_regret = 0;
  double regret_alpha = 0.05;
  // Tail latency in the model's rule (as least-outstanding's LeastOutstandingOptions::
  // group_spread): while placing a run of tokens of one job with the same op and first argument,
  // each further token of the run on a node counts (1 + group_spread x already there) times its
  // cost there. A job finishes with its last token; stacking its equal tokens on one node delays
  // the whole job by their sum. 0 = off.
  double group_spread = 4;
};

// The gate's inputs and its decision, a pure function (tests drive it without a scheduler).
struct GateScores {
  uint64_t scored = 0;  // finished tokens scored for prediction error (this model version)
  double model_err = 0, fallback_err = 0;  // running mean |ln(predicted / actual)|
  uint64_t compared = 0;                   // finished tokens with a realised placement comparison
  double regret = 0;                       // see XgbSchedulerOptions::placement_gate
};
// Whether the model should place: enough scores, prediction error no worse than the running
// mean's, and (placement_gate) enough comparisons with realised regret <= max_placement_regret.
bool modelShouldPlace(const GateScores& s, const XgbSchedulerOptions& o);
// Debounce of the mode switch (XgbSchedulerOptions::windows_to_model / windows_to_fallback):
// update() is called once per window with the gate's wish and returns the mode to use. A pure
// state machine (tests drive it without a scheduler).
struct SwitchDebounce {
  uint32_t streak = 0;  // consecutive windows in which the wish differed from the mode
  bool update(bool current, bool want, uint32_t windows_to_model, uint32_t windows_to_fallback) {
    if (want == current) {
      streak = 0;
      return current;
    }
    if (++streak < std::max<uint32_t>(want ? windows_to_model : windows_to_fallback, 1))
      return current;
    streak = 0;
    return want;
  }
};
// Realised completion of a token on the node it ran on and on the alternative node, from the
// work queued ahead of it on each at placement (ns of time), its run time there and the two
// nodes' relative speeds (1 = fastest, < 1 slower). Returns ran - alternative (> 0: the
// alternative would have finished it sooner).
double realisedCompletionGap(double queued_ran_ns, double queued_alt_ns, double run_ns,
                             double speed_ran, double speed_alt);

// What the gate did (XgbScheduler::setGateListener): a new model version seen (its trust
// starts over), placement handed to the model or back to the fallback.
struct GateEvent {
  enum class Kind : uint8_t { kNewVersion, kModel, kFallback };
  Kind kind = Kind::kNewVersion;
  uint64_t version = 0;  // model version the gate's scores belong to
  uint64_t scored = 0;   // tokens scored for it so far
  double model_err = 0, fallback_err = 0, regret = 0;
  bool model_places = false;  // after the event
};
const char* gateEventName(GateEvent::Kind kind);

class XgbScheduler final : public coordinator::Scheduler {
 public:
  using ModelSource = std::function<std::shared_ptr<const costmodel::CostModel>()>;
  using GateListener = std::function<void(const GateEvent&)>;
  // (op, from, to): called on the loop thread when an op's lane should change.
  using ReclassifyFn = std::function<void(uint32_t op, Weight from, Weight to)>;

  static constexpr size_t kSampledRows = 16;
  // Predictions kept for held-back tokens (cleared on a model swap or beyond this size).
  static constexpr size_t kMaxHeldPredictions = 1 << 20;

  XgbScheduler(ModelSource model, ReclassifyFn on_reclassify, XgbSchedulerOptions options = {});

  // Loop thread: called on every GateEvent (the coordinator logs them at info).
  void setGateListener(GateListener listener) { gate_listener_ = std::move(listener); }

  const char* name() const override { return "xgboost"; }
  void place(Weight lane, std::span<const coordinator::TokenInfo> tokens,
             std::span<coordinator::Candidate> candidates,
             std::span<coordinator::Placement> out) override;
  void costs(std::span<const coordinator::TokenInfo> tokens, std::span<double> out) override;
  // `token.cost` must be the prediction made at dispatch (the telemetry sample carries it).
  void observe(const coordinator::TokenInfo& token, uint32_t node, double run_ns) override;

  // Observed relative speed of a node slot: 1 = the fastest node seen, 0.4 = 2.5x slower (the
  // fallback's estimate while it places).
  double nodeSpeed(uint32_t node) const override {
    return use_model_ ? 1.0 / nodeSlowness(node) : fallback_->nodeSpeed(node);
  }
  // The slot's node departed (or the slot is reused): its speed observations and lane loads go
  // (the fallback's too), so a new node in that slot starts at nominal speed and the others'
  // speeds are relative to the fastest node still known.
  void forgetNode(uint32_t node) override;
  // The work target while costs are model predictions (ns); 0 while the fallback places.
  double batchWorkTarget() const override {
    return have_model_ && use_model_ ? options_.batch_work_target_ns : 0;
  }
  const char* placementMode() const override { return use_model_ ? "model" : "fallback"; }
  // Any thread: whether the model places now, and the running mean |ln error| of the model and
  // of the fallback's estimate over the tokens scored for the current model version.
  bool usingModel() const { return using_model_.load(std::memory_order_relaxed); }
  double modelError() const { return model_err_pub_.load(std::memory_order_relaxed); }
  double fallbackError() const { return fallback_err_pub_.load(std::memory_order_relaxed); }
  uint64_t modeSwitches() const { return mode_switches_.load(std::memory_order_relaxed); }
  uint64_t scoredTokens() const { return scored_pub_.load(std::memory_order_relaxed); }
  // Any thread: realised placement regret of the model vs the fallback (see
  // XgbSchedulerOptions::placement_gate) and how many finished tokens it is based on.
  double placementRegret() const { return regret_pub_.load(std::memory_order_relaxed); }
  uint64_t comparedTokens() const { return compared_pub_.load(std::memory_order_relaxed); }
  // Loop thread: tokens in flight on `lane` of node slot `node` when place() last saw it (the
  // node_load feature of the nominal prediction).
  uint32_t laneLoad(Weight lane, uint32_t node) const;
  // Node slots with speed observations so far.
  uint32_t nodeSlots() const { return static_cast<uint32_t>(slowness_.size()); }
  // Inverse of nodeSpeed (the cost model's node_speed feature).
  double nodeSlowness(uint32_t node) const;
  // Lane the scheduler currently routes `op` to (kUnspecified if never seen).
  Weight laneOf(uint32_t op) const;
  // Any thread (relaxed counters).
  uint64_t reclassifications() const { return reclassifications_.load(std::memory_order_relaxed); }
  uint64_t predictedTokens() const { return predicted_tokens_.load(std::memory_order_relaxed); }
  uint64_t modelRows() const { return model_rows_.load(std::memory_order_relaxed); }
  uint64_t predictNs() const { return predict_ns_.load(std::memory_order_relaxed); }
  // Tokens whose cost came from the held-back cache instead of the model.
  uint64_t cacheHits() const { return cache_hits_.load(std::memory_order_relaxed); }
  // Placements deferred by the queue horizon (the token went back to its ready queue), on both
  // paths; heldBackByGuard() / heldBackByModel() count the fallback's horizon guard's and the
  // model path's.
  uint64_t heldBack() const { return held_back_.load(std::memory_order_relaxed); }
  uint64_t heldBackByGuard() const { return held_back_guard_.load(std::memory_order_relaxed); }
  uint64_t heldBackByModel() const { return held_back_model_.load(std::memory_order_relaxed); }
  // Loop-thread time spent in costs() and place() (ns, wall), the number of place() calls and
  // the tokens offered to them (a held-back token is offered again every dispatch round).
  uint64_t schedulerNs() const { return sched_ns_.load(std::memory_order_relaxed); }
  uint64_t placeCalls() const { return place_calls_.load(std::memory_order_relaxed); }
  uint64_t tokensOffered() const { return offered_.load(std::memory_order_relaxed); }
  // Loop thread: mean predicted nominal cost (ns) of op's placed tokens, 0 if none.
  double opMeanCostNs(uint32_t op) const { return op < ops_.size() ? ops_[op].mean_cost_ns : 0; }

 private:
  struct NodeSpeed {
    double mean_log_ratio = 0;  // running mean of log(run_ns / predicted_ns)
    uint64_t n = 0;
  };
  struct OpLane {
    Weight lane = Weight::kUnspecified;
    double mean_cost_ns = 0;
    uint64_t predicted = 0;
    uint64_t predicted_at_change = 0;
  };
  void recomputeSlowness();
  void predictCosts(const costmodel::CostModel& model,
                    std::span<const coordinator::TokenInfo> tokens, std::span<double> out);
  void maybeReclassify(uint32_t op, Weight lane);
  void updateOpLanes(Weight lane, std::span<const coordinator::TokenInfo> tokens,
                     std::span<const coordinator::Placement> out,
                     std::span<const double> model_costs);
  bool predicts_ok_ = false;  // the prediction half of the gate holds (reclassification)
  // The slice the last costs() call predicted with a model (model_out_ holds its predictions).
  size_t costed_n_ = 0;
  uint64_t costed_first_ = 0, costed_last_ = 0;
  void score(uint32_t node, double run_ns, double model_ns, double fallback_ns);
  void setMode(bool model);
  void emitGate(GateEvent::Kind kind);
  GateListener gate_listener_;

  ModelSource model_;
  ReclassifyFn on_reclassify_;
  const XgbSchedulerOptions options_;
  std::vector<NodeSpeed> speed_;        // by node slot
  std::vector<double> slowness_;        // by node slot, derived from speed_
  std::vector<OpLane> ops_;             // by op index
  uint32_t fastest_node_ = 0;           // nominal predictions are for this node slot
  bool have_model_ = false;             // the last costs() call had a model (costs are ns)
  std::vector<uint32_t> lane_load_[3];  // by lane, node slot: in_flight seen by place()
  // Scratch (reused across calls).
  std::vector<costmodel::TokenFeatures> rows_;
  std::vector<uint32_t> run_start_;
  std::vector<double> cand_scale_;
  std::unordered_map<uint64_t, double> held_cost_;  // token id -> nominal cost (held back)
  uint64_t held_version_ = 0;                       // model version held_cost_ came from
  std::vector<coordinator::TokenInfo> miss_tokens_;
  std::vector<uint32_t> miss_index_;
  std::vector<double> miss_out_;
  std::vector<double> row_out_;
  std::vector<uint32_t> row_of_token_;
  std::vector<uint32_t> order_;
  std::atomic<uint64_t> reclassifications_{0};
  std::atomic<uint64_t> predicted_tokens_{0};
  std::atomic<uint64_t> model_rows_{0};
  std::atomic<uint64_t> predict_ns_{0};
  std::atomic<uint64_t> held_back_{0};
  std::atomic<uint64_t> held_back_guard_{0}, held_back_model_{0};
  std::atomic<uint64_t> cache_hits_{0};
  std::atomic<uint64_t> sched_ns_{0}, place_calls_{0}, offered_{0};
  // The fallback gate (loop thread, except the atomics).
  struct Shadow {
    double model_ns = 0;     // the model's nominal prediction at dispatch
    double fallback_ns = 0;  // the fallback's at dispatch
  };
  // Realised queues, per (lane, node slot): results observed and their summed run time. The work
  // that was ahead of a token on a node when it was placed is known once that many more results
  // of the lane-node came in (tokens of a lane run in order): pending comparisons wait for it.
  struct Pending {
    uint64_t target = 0;  // `done` at which the work ahead has finished
    uint64_t id = 0;      // token id
    bool alt = false;     // the alternative node's side
    auto operator<=>(const Pending&) const = default;
  };
  struct LaneNode {
    uint64_t done = 0;
    double work_ns = 0;
    // Each estimator's view of the lane-node's queue: the sum of its estimates of the measurable
    // tokens placed there and not yet finished (whoever placed them), so the alternative choice
    // is made with the alternative's own view, not the placing estimator's units.
    double model_view = 0, fb_view = 0;
    // The same tokens at the cost they were placed with (what the core's outstanding holds for
    // them), so Candidate::outstanding can be restated in one estimator's units.
    double placed_view = 0;
    std::priority_queue<Pending, std::vector<Pending>, std::greater<>> pending;
  };
  // One comparison: the node the token was placed on and the one the other estimator chose.
  struct Eval {
    uint32_t node = 0, alt_node = 0;
    double work0 = 0, alt_work0 = 0;  // LaneNode::work_ns of both at placement
    uint32_t workers = 1, alt_workers = 1;
    double queued_ns = -1, alt_queued_ns = -1;  // realised work ahead per worker (-1: not yet)
    double run_ns = -1;                         // the token's own run time (-1: not finished)
    bool by_model = false;
  };
  LaneNode& laneNode(Weight lane, uint32_t node);
  void noteChoice(uint64_t id, Weight lane, const coordinator::Candidate& ran, uint64_t ran_ahead,
                  const coordinator::Candidate& alt, uint64_t alt_ahead, bool by_model);
  void countResult(Weight lane, uint32_t node, double run_ns);
  void addToViews(Weight lane, uint32_t node, const Shadow& sh, double placed_ns, double sign);
  void clearViews();
  void settle(std::unordered_map<uint64_t, Eval>::iterator it);
  std::vector<LaneNode> lane_nodes_[3];       // by lane, node slot
  std::unordered_map<uint64_t, Eval> evals_;  // token id -> comparison in progress
  std::vector<uint64_t> snap_ahead_;          // fallback path: tokens ahead on each candidate
  std::vector<double> guard_work_;            // fallback path: model-estimated work added per cand
  std::vector<uint32_t> guard_n_;             // fallback path: tokens added per candidate
  void decide();
  // The group-spread state of the model's rule (as in least-outstanding).
  struct GroupKey {
    uint64_t job = ~uint64_t{0};
    uint32_t op = 0;
    uint64_t arg_bits = 0;
    bool operator==(const GroupKey&) const = default;
  };
  static GroupKey groupOf(const coordinator::TokenInfo& t);
  // Enters t's run (resetting the counts when it starts a new one); true if some of the run is
  // already placed (the spread applies).
  bool enterGroup(const coordinator::TokenInfo& t);
  double spreadFactor(uint32_t node) const;  // 1 + group_spread x the run's tokens on node
  void countGroup(uint32_t node);
  GroupKey group_;
  std::vector<uint32_t> group_on_node_;  // by node slot
  std::vector<uint32_t> group_nodes_;    // slots whose group_on_node_ entry is non-zero
  std::vector<double> cand_fspeed_;      // the fallback's speed of each candidate (comparisons)
  std::unique_ptr<coordinator::Scheduler> fallback_;  // least-outstanding, always observing
  bool use_model_ = false;
  uint64_t scored_version_ = 0;  // model version the scores below belong to
  uint64_t scored_ = 0, scored_at_switch_ = 0;
  uint64_t next_window_ = 0;  // scored_ at which the gate is evaluated next
  // The current version's held-out evidence is clear (held_out_trust_ratio) and it has not
  // placed yet: one window is enough to trust it.
  bool one_window_to_model_ = false;
  SwitchDebounce debounce_;
  double model_err_ = 0, fallback_err_ = 0;
  uint64_t compared_ = 0;
  double gap_sum_ = 0, run_sum_ = 0;  // running means of (model - fallback) completion, run time
  std::unordered_map<uint64_t, Shadow> shadow_;  // token id -> estimates at dispatch
  std::vector<double> model_out_;
  std::atomic<bool> using_model_{false};
  std::atomic<double> model_err_pub_{0}, fallback_err_pub_{0};
  std::atomic<uint64_t> mode_switches_{0}, scored_pub_{0}, compared_pub_{0};
  std::atomic<double> regret_pub_{0};
};

}  // namespace tokengate::learned
