#include "coordinator/learned/xgb_scheduler.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "coordinator/costmodel/mean_cost_model.h"

namespace tokengate::learned {

namespace {

costmodel::Weight toModelWeight(Weight w) {
  switch (w) {
    case Weight::kMedium:
      return costmodel::Weight::kMedium;
    case Weight::kHeavy:
      return costmodel::Weight::kHeavy;
    default:
      return costmodel::Weight::kLight;
  }
}

Weight fromModelWeight(costmodel::Weight w) { return static_cast<Weight>(static_cast<uint8_t>(w)); }

uint8_t weightIndex(Weight w) { return w == Weight::kUnspecified ? 0 : static_cast<uint8_t>(w); }

// Nominal features: the fastest node at speed 1, on the lane being dispatched, with that node
// lane's current load (what telemetry records at dispatch). Node speed is applied by the
// scheduler (slowness_), not by the model, so one prediction per token serves every node.
costmodel::TokenFeatures nominalFeatures(const coordinator::TokenInfo& t, uint32_t node,
                                         uint32_t load) {
  costmodel::TokenFeatures f;
  f.node_index = node;
  f.node_load = load;
  f.op_id = t.op;
  f.declared_weight = weightIndex(t.declared);
  f.lane = weightIndex(t.lane);
  f.arg_count = t.arg_count;
  f.arg_total_bytes = t.arg_bytes;
  f.first_numeric_arg = t.first_arg;
  return f;
}

struct RowKey {
  uint64_t a = 0, b = 0;
  bool operator==(const RowKey&) const = default;
};

RowKey keyOf(const coordinator::TokenInfo& t) {
  const double arg0 =
      std::isnan(t.first_arg) ? std::numeric_limits<double>::quiet_NaN() : t.first_arg;
  return {(static_cast<uint64_t>(t.op) << 32) |
              (static_cast<uint64_t>(weightIndex(t.declared)) << 24) | (t.arg_count & 0xffffffu),
          std::bit_cast<uint64_t>(arg0) ^ (static_cast<uint64_t>(t.arg_bytes) << 1)};
}

// Adds the wall time of a scope to a counter (ns): costs() and place(), once per dispatch slice.
struct ScopeTimer {
  std::atomic<uint64_t>& ns;
  const std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  ~ScopeTimer() {
    ns.fetch_add(static_cast<uint64_t>(
                     std::chrono::nanoseconds(std::chrono::steady_clock::now() - t0).count()),
                 std::memory_order_relaxed);
  }
};

}  // namespace

bool modelShouldPlace(const GateScores& s, const XgbSchedulerOptions& o) {
  if (s.scored < o.min_compared_tokens) return false;
  if (!(s.model_err <= s.fallback_err)) return false;
  if (!o.placement_gate) return true;
  return s.compared >= o.min_regret_tokens && s.regret <= o.max_placement_regret;
}

double realisedCompletionGap(double queued_ran_ns, double queued_alt_ns, double run_ns,
                             double speed_ran, double speed_alt) {
  const double alt_run = run_ns * std::max(speed_ran, 1e-3) / std::max(speed_alt, 1e-3);
  return (queued_ran_ns + run_ns) - (queued_alt_ns + alt_run);
}

XgbScheduler::GroupKey XgbScheduler::groupOf(const coordinator::TokenInfo& t) {
  GroupKey k;
  k.job = t.id >> 32;
  k.op = t.op;
  if (!std::isnan(t.first_arg)) k.arg_bits = std::bit_cast<uint64_t>(t.first_arg);
  return k;
}

bool XgbScheduler::enterGroup(const coordinator::TokenInfo& t) {
  const GroupKey key = groupOf(t);
  if (!(key == group_)) {
    group_ = key;
    for (uint32_t node : group_nodes_) group_on_node_[node] = 0;
    group_nodes_.clear();
  }
  return !group_nodes_.empty();
}

double XgbScheduler::spreadFactor(uint32_t node) const {
  return node < group_on_node_.size()
             ? 1 + options_.group_spread * static_cast<double>(group_on_node_[node])
             : 1.0;
}

void XgbScheduler::countGroup(uint32_t node) {
  if (options_.group_spread <= 0) return;
  if (group_on_node_.size() <= node) group_on_node_.resize(node + 1, 0);
  if (group_on_node_[node]++ == 0) group_nodes_.push_back(node);
}

XgbScheduler::XgbScheduler(ModelSource model, ReclassifyFn on_reclassify,
                           XgbSchedulerOptions options)
    : model_(std::move(model)),
      on_reclassify_(std::move(on_reclassify)),
      options_(options),
      fallback_(coordinator::makeLeastOutstandingScheduler([&] {
        coordinator::LeastOutstandingOptions lo;
        lo.horizon_ns = options.fallback_horizon_ns;
        return lo;
      }())),
      use_model_(!options.fallback_gate) {
  using_model_.store(use_model_, std::memory_order_relaxed);
}

const char* gateEventName(GateEvent::Kind kind) {
  switch (kind) {
    case GateEvent::Kind::kNewVersion:
      return "new-version";
    case GateEvent::Kind::kModel:
      return "model-places";
    case GateEvent::Kind::kFallback:
      return "fallback-places";
  }
  return "?";
}

void XgbScheduler::emitGate(GateEvent::Kind kind) {
  if (!gate_listener_) return;
  GateEvent e;
  e.kind = kind;
  e.version = scored_version_;
  e.scored = scored_;
  e.model_err = model_err_;
  e.fallback_err = fallback_err_;
  e.regret = run_sum_ > 0 ? gap_sum_ / run_sum_ : 0;
  e.model_places = use_model_;
  gate_listener_(e);
}

void XgbScheduler::setMode(bool model) {
  if (model == use_model_) return;
  use_model_ = model;
  scored_at_switch_ = scored_;
  using_model_.store(model, std::memory_order_relaxed);
  mode_switches_.fetch_add(1, std::memory_order_relaxed);
  emitGate(model ? GateEvent::Kind::kModel : GateEvent::Kind::kFallback);
}

void XgbScheduler::costs(std::span<const coordinator::TokenInfo> tokens, std::span<double> out) {
  if (tokens.empty()) return;
  const ScopeTimer timer{sched_ns_};
  std::shared_ptr<const costmodel::CostModel> model = model_ ? model_() : nullptr;
  // The trainer's running-mean heuristic is the fallback's own estimator, not a model to trust.
  if (options_.fallback_gate && model &&
      dynamic_cast<const costmodel::MeanCostModel*>(model.get()) != nullptr)
    model = nullptr;
  have_model_ = model != nullptr;
  if (options_.fallback_gate) {
    fallback_->costs(tokens, out);  // cheap (a per-op lookup); scored even while the model places
    if (!model) {
      setMode(false);
      return;
    }
    if (model->version() != scored_version_) {  // a new model: fresh scores
      const bool was_model = use_model_;
      const costmodel::CostModel::HeldOut& h = model->heldOut();
      const bool clear = options_.held_out_trust_ratio > 0 && h.n > 0 &&
                         h.n >= options_.held_out_min_samples &&
                         h.model_err <= h.mean_err * options_.held_out_trust_ratio;
      scored_version_ = model->version();
      scored_ = scored_at_switch_ = 0;
      model_err_ = fallback_err_ = 0;
      compared_ = 0;
      gap_sum_ = run_sum_ = 0;
      regret_pub_.store(0, std::memory_order_relaxed);
      compared_pub_.store(0, std::memory_order_relaxed);
      evals_.clear();  // their pending entries become no-ops
      predicts_ok_ = false;
      clearViews();  // tokens in flight lose their shadow
      next_window_ = 0;
      debounce_ = {};
      // Trust from scratch, unless the publisher's held-out evidence is clear (see
      // XgbSchedulerOptions::held_out_trust_ratio): then a placing model's successor places on,
      // and any other is judged on its first window.
      one_window_to_model_ = clear && !was_model;
      if (!(clear && was_model)) setMode(false);
      emitGate(GateEvent::Kind::kNewVersion);
    }
  } else if (!model) {
    std::fill(out.begin(), out.end(), 1.0);
    return;
  }
  model_out_.resize(tokens.size());
  const std::span<double> mout = options_.fallback_gate ? std::span<double>(model_out_) : out;
  const auto t0 = std::chrono::steady_clock::now();
  if (model->version() != held_version_) {  // a new model: every cached prediction is stale
    held_cost_.clear();
    held_version_ = model->version();
  }
  if (held_cost_.empty()) {
    predictCosts(*model, tokens, mout);
  } else {
    // Tokens held back earlier keep the prediction they got then; only the others are
    // predicted (one hash lookup per token, only while something is held back).
    miss_tokens_.clear();
    miss_index_.clear();
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (auto it = held_cost_.find(tokens[i].id); it != held_cost_.end()) {
        mout[i] = it->second;
      } else {
        miss_tokens_.push_back(tokens[i]);
        miss_index_.push_back(static_cast<uint32_t>(i));
      }
    }
    cache_hits_.fetch_add(tokens.size() - miss_tokens_.size(), std::memory_order_relaxed);
    if (!miss_tokens_.empty()) {
      miss_out_.resize(miss_tokens_.size());
      predictCosts(*model, miss_tokens_, miss_out_);
      for (size_t k = 0; k < miss_index_.size(); ++k) mout[miss_index_[k]] = miss_out_[k];
    }
  }
  costed_n_ = tokens.size();
  costed_first_ = tokens.front().id;
  costed_last_ = tokens.back().id;
  const auto dt = std::chrono::steady_clock::now() - t0;
  predict_ns_.fetch_add(static_cast<uint64_t>(std::chrono::nanoseconds(dt).count()),
                        std::memory_order_relaxed);
  predicted_tokens_.fetch_add(tokens.size(), std::memory_order_relaxed);
  if (!options_.fallback_gate) return;
  // Keep both estimates of measurable tokens for scoring when they finish (tiny tokens are
  // dominated by timer noise and do not matter for placement).
  if (shadow_.size() > options_.max_shadow_tokens) clearViews();
  for (size_t i = 0; i < tokens.size(); ++i)
    if (std::max(mout[i], out[i]) >= options_.min_speed_token_ns)
      shadow_[tokens[i].id] = {mout[i], out[i]};
  if (use_model_) std::copy(mout.begin(), mout.end(), out.begin());
}

void XgbScheduler::score(uint32_t node, double run_ns, double model_ns, double fallback_ns) {
  // Both against the node they ran on, each with its own speed estimate (before this run).
  const double m = std::abs(std::log(run_ns / std::max(model_ns * nodeSlowness(node), 1.0)));
  const double f = std::abs(
      std::log(run_ns / std::max(fallback_ns / std::max(fallback_->nodeSpeed(node), 1e-3), 1.0)));
  ++scored_;
  const double w = std::max(options_.error_alpha, 1.0 / static_cast<double>(scored_));
  model_err_ += w * (m - model_err_);
  fallback_err_ += w * (f - fallback_err_);
  model_err_pub_.store(model_err_, std::memory_order_relaxed);
  fallback_err_pub_.store(fallback_err_, std::memory_order_relaxed);
  scored_pub_.store(scored_, std::memory_order_relaxed);
  decide();
}

XgbScheduler::LaneNode& XgbScheduler::laneNode(Weight lane, uint32_t node) {
  auto& v = lane_nodes_[weightIndex(lane)];
  if (v.size() <= node) v.resize(node + 1);
  return v[node];
}

void XgbScheduler::noteChoice(uint64_t id, Weight lane, const coordinator::Candidate& ran,
                              uint64_t ran_ahead, const coordinator::Candidate& alt,
                              uint64_t alt_ahead, bool by_model) {
  if (evals_.size() > options_.max_shadow_tokens) evals_.clear();  // e.g. cancelled jobs
  Eval e;
  e.node = ran.node;
  e.alt_node = alt.node;
  e.by_model = by_model;
  e.workers = std::max<uint32_t>(ran.workers, 1);
  e.alt_workers = std::max<uint32_t>(alt.workers, 1);
  if (alt.node == ran.node) {  // same choice: nothing to wait for, the gap is 0
    e.queued_ns = e.alt_queued_ns = 0;
    evals_[id] = e;
    return;
  }
  auto side = [&](uint32_t node, uint64_t ahead, double& work0, double& queued, bool is_alt) {
    LaneNode& ln = laneNode(lane, node);
    work0 = ln.work_ns;
    if (ahead == 0)
      queued = 0;
    else
      ln.pending.push({ln.done + ahead, id, is_alt});
  };
  side(ran.node, ran_ahead, e.work0, e.queued_ns, false);
  side(alt.node, alt_ahead, e.alt_work0, e.alt_queued_ns, true);
  evals_[id] = e;
}

void XgbScheduler::addToViews(Weight lane, uint32_t node, const Shadow& sh, double placed_ns,
                              double sign) {
  LaneNode& ln = laneNode(lane, node);
  ln.model_view = std::max(ln.model_view + sign * sh.model_ns, 0.0);
  ln.fb_view = std::max(ln.fb_view + sign * sh.fallback_ns, 0.0);
  ln.placed_view = std::max(ln.placed_view + sign * placed_ns, 0.0);
}

void XgbScheduler::clearViews() {
  for (auto& v : lane_nodes_)
    for (auto& ln : v) ln.model_view = ln.fb_view = ln.placed_view = 0;
  shadow_.clear();
}

void XgbScheduler::countResult(Weight lane, uint32_t node, double run_ns) {
  LaneNode& ln = laneNode(lane, node);
  ++ln.done;
  ln.work_ns += run_ns;
  while (!ln.pending.empty() && ln.pending.top().target <= ln.done) {
    const Pending p = ln.pending.top();
    ln.pending.pop();
    const auto it = evals_.find(p.id);
    if (it == evals_.end()) continue;
    Eval& e = it->second;
    if (p.alt)
      e.alt_queued_ns = (ln.work_ns - e.alt_work0) / e.alt_workers;
    else
      e.queued_ns = (ln.work_ns - e.work0) / e.workers;
    settle(it);
  }
}

void XgbScheduler::settle(std::unordered_map<uint64_t, Eval>::iterator it) {
  const Eval e = it->second;
  if (e.run_ns < 0 || e.queued_ns < 0 || e.alt_queued_ns < 0) return;
  evals_.erase(it);
  const double gap =
      e.alt_node == e.node
          ? 0.0
          : realisedCompletionGap(e.queued_ns, e.alt_queued_ns, e.run_ns,
                                  1.0 / nodeSlowness(e.node), 1.0 / nodeSlowness(e.alt_node));
  const double model_minus_fallback = e.by_model ? gap : -gap;
  ++compared_;
  const double w = std::max(options_.regret_alpha, 1.0 / static_cast<double>(compared_));
  gap_sum_ += w * (model_minus_fallback - gap_sum_);
  run_sum_ += w * (e.run_ns - run_sum_);
  regret_pub_.store(run_sum_ > 0 ? gap_sum_ / run_sum_ : 0, std::memory_order_relaxed);
  compared_pub_.store(compared_, std::memory_order_relaxed);
  decide();
}

void XgbScheduler::decide() {
  // Once per window of scored tokens (comparisons settling in between do not re-decide).
  if (scored_ < options_.min_compared_tokens || scored_ < next_window_) return;
  next_window_ = scored_ + std::max<uint32_t>(options_.min_tokens_between_switches, 1);
  GateScores g;
  g.scored = scored_;
  g.model_err = model_err_;
  g.fallback_err = fallback_err_;
  g.compared = compared_;
  g.regret = run_sum_ > 0 ? gap_sum_ / run_sum_ : 0;
  predicts_ok_ = g.scored >= options_.min_compared_tokens && g.model_err <= g.fallback_err;
  setMode(debounce_.update(use_model_, modelShouldPlace(g, options_),
                           one_window_to_model_ ? 1 : options_.windows_to_model,
                           options_.windows_to_fallback));
  if (use_model_) one_window_to_model_ = false;  // only until the version first places
}

void XgbScheduler::predictCosts(const costmodel::CostModel& model,
                                std::span<const coordinator::TokenInfo> tokens,
                                std::span<double> out) {
  // Distinct feature rows only. Repeated specs arrive as runs of identical tokens, so runs of
  // equal keys are collapsed (a compare per token, no hashing). Only the index of each run's
  // first token is kept; features are built for the rows actually predicted.
  run_start_.clear();
  row_of_token_.resize(tokens.size());
  RowKey prev{};
  for (size_t i = 0; i < tokens.size(); ++i) {
    const RowKey k = keyOf(tokens[i]);
    if (i == 0 || !(k == prev)) {
      run_start_.push_back(static_cast<uint32_t>(i));
      prev = k;
    }
    row_of_token_[i] = static_cast<uint32_t>(run_start_.size() - 1);
  }
  rows_.clear();
  const uint32_t load = laneLoad(tokens[0].lane, fastest_node_);  // one lane per call
  // Every distinct row, exactly.
  const auto predict_all_rows = [&] {
    rows_.clear();
    for (const uint32_t i : run_start_)
      rows_.push_back(nominalFeatures(tokens[i], fastest_node_, load));
    row_out_.resize(rows_.size());
    model.predict(rows_, row_out_);
    for (size_t i = 0; i < tokens.size(); ++i) out[i] = row_out_[row_of_token_[i]];
  };
  if (run_start_.size() <= options_.max_exact_rows) {
    predict_all_rows();
  } else {
    // Stride sample, sorted by first argument; every token takes its nearest sampled row.
    for (size_t j = 0; j < kSampledRows; ++j)
      rows_.push_back(nominalFeatures(tokens[run_start_[j * run_start_.size() / kSampledRows]],
                                      fastest_node_, load));
    std::sort(rows_.begin(), rows_.end(), [](const auto& x, const auto& y) {
      // NaN first, then ascending.
      if (std::isnan(x.first_numeric_arg)) return !std::isnan(y.first_numeric_arg);
      if (std::isnan(y.first_numeric_arg)) return false;
      return x.first_numeric_arg < y.first_numeric_arg;
    });
    const auto& sample = rows_;
    row_out_.resize(sample.size());
    model.predict(sample, row_out_);
    const auto [lo, hi] = std::minmax_element(row_out_.begin(), row_out_.end());
    // Flat over the slice (e.g. an op whose cost does not depend on its argument): one value.
    const bool flat = *hi <= *lo * 1.01;
    if (flat) std::fill(out.begin(), out.end(), std::midpoint(*lo, *hi));
    if (!flat && *hi >= options_.exact_rows_min_ns) {
      // Costs that matter for placement and vary with the argument: every distinct row,
      // exactly. The nearest sampled argument is not enough when the argument is heavy-tailed:
      // the 16 rows rarely hold the few largest tokens, which then took the cost of the largest
      // sampled one (heavytail replay: 15 ms and 28.8 ms tokens costed at 0.2 ms, all on the
      // slow node at the end, +6% makespan).
      predict_all_rows();
      model_rows_.fetch_add(kSampledRows, std::memory_order_relaxed);  // the sample, too
      model_rows_.fetch_add(rows_.size(), std::memory_order_relaxed);
      return;
    }
    for (size_t i = 0; i < tokens.size() && !flat; ++i) {
      if (i > 0 && row_of_token_[i] == row_of_token_[i - 1]) {
        out[i] = out[i - 1];
        continue;
      }
      const double a = tokens[i].first_arg;
      if (std::isnan(a)) {
        out[i] = row_out_[0];
        continue;
      }
      auto it = std::lower_bound(sample.begin(), sample.end(), a, [](const auto& s, double v) {
        return std::isnan(s.first_numeric_arg) || s.first_numeric_arg < v;
      });
      size_t k = static_cast<size_t>(it - sample.begin());
      if (k == sample.size()) --k;
      if (k > 0 && !std::isnan(sample[k - 1].first_numeric_arg) &&
          std::abs(sample[k - 1].first_numeric_arg - a) < std::abs(sample[k].first_numeric_arg - a))
        --k;
      out[i] = row_out_[k];
    }
  }
  model_rows_.fetch_add(rows_.size(), std::memory_order_relaxed);
}

void XgbScheduler::place(Weight lane, std::span<const coordinator::TokenInfo> tokens,
                         std::span<coordinator::Candidate> cands,
                         std::span<coordinator::Placement> out) {
  for (auto& p : out) p = {-1, lane};
  if (cands.empty() || tokens.empty()) return;
  const ScopeTimer timer{sched_ns_};
  place_calls_.fetch_add(1, std::memory_order_relaxed);
  offered_.fetch_add(tokens.size(), std::memory_order_relaxed);
  auto& loads = lane_load_[weightIndex(lane)];
  for (const auto& cand : cands) {
    if (loads.size() <= cand.node) loads.resize(cand.node + 1, 0);
    loads[cand.node] = static_cast<uint32_t>(std::min<uint64_t>(cand.in_flight, UINT32_MAX));
  }
  // Both estimates of measurable tokens (the shadow) exist only while a model exists; the
  // per lane-node views of them are kept whenever they do.
  const bool track = options_.fallback_gate && have_model_ && !shadow_.empty();
  // Realised-quality comparisons also need the fallback's speeds.
  const bool compare = track && options_.placement_gate;
  if (track && options_.own_queue_view) {
    // Candidate::outstanding sums the costs tokens were placed with, by whichever estimator
    // placed them; restate the measurable ones in the units of the estimator placing now.
    for (auto& cand : cands) {
      const LaneNode& ln = laneNode(lane, cand.node);
      const double own = use_model_ ? ln.model_view : ln.fb_view;
      cand.outstanding = std::max(0.0, cand.outstanding - ln.placed_view + own);
    }
  }
  if (compare) {
    cand_fspeed_.resize(cands.size());
    for (size_t c = 0; c < cands.size(); ++c)
      cand_fspeed_[c] = std::max(fallback_->nodeSpeed(cands[c].node), 1e-3);
  }
  if (!use_model_) {
    // Least-outstanding placement, with its own speed estimates (the core may have copied
    // the model's before a switch).
    for (auto& cand : cands) cand.speed = fallback_->nodeSpeed(cand.node);
    if (compare) {
      snap_ahead_.resize(cands.size());
      for (size_t c = 0; c < cands.size(); ++c)
        snap_ahead_[c] = cands[c].in_flight + cands[c].assigned;
    }
    fallback_->place(lane, tokens, cands, out);
    if (track && options_.fallback_horizon_guard && options_.queue_horizon_ns > 0) {
      // The horizon on the fallback's choices, in the model's estimates (see the option).
      guard_work_.assign(cands.size(), 0);
      guard_n_.assign(cands.size(), 0);
      for (size_t i = 0; i < tokens.size(); ++i) {
        const int32_t p = out[i].candidate;
        if (p < 0) continue;
        const auto it = shadow_.find(tokens[i].id);
        if (it == shadow_.end() || it->second.model_ns < options_.horizon_min_token_ns) continue;
        const auto k = static_cast<size_t>(p);
        const auto& c = cands[k];
        const double work = (laneNode(lane, c.node).model_view + guard_work_[k]) *
                            nodeSlowness(c.node) / std::max<uint32_t>(c.workers, 1);
        // No minimum token count here (the model path's min_queue_tokens): least-outstanding
        // cannot see an argument, so the tokens it sends to a node already holding one 30 ms
        // token may be two more of them (heavytail replay: +37% makespan, all on the slow node).
        if (c.in_flight + guard_n_[k] > 0 && work >= options_.queue_horizon_ns) {
          out[i].candidate = -1;
          held_back_.fetch_add(1, std::memory_order_relaxed);
          held_back_guard_.fetch_add(1, std::memory_order_relaxed);
          // It comes back every dispatch round until a node has room: keep the model's
          // prediction, as the model path does (a heavy-tailed slice is predicted row by row).
          held_cost_[tokens[i].id] = it->second.model_ns;
          continue;
        }
        guard_work_[k] += it->second.model_ns;
        ++guard_n_[k];
      }
    }
    if (!held_cost_.empty()) {
      for (size_t i = 0; i < tokens.size(); ++i)
        if (out[i].candidate >= 0) held_cost_.erase(tokens[i].id);
      if (held_cost_.size() > kMaxHeldPredictions) held_cost_.clear();
    }
    // Lanes follow the model's predictions once it predicts better than the running mean, even
    // while its placements are not trusted (reclassification is about cost, not node choice).
    if (predicts_ok_ && costed_n_ == tokens.size() && model_out_.size() == tokens.size() &&
        tokens.front().id == costed_first_ && tokens.back().id == costed_last_)
      updateOpLanes(lane, tokens, out, model_out_);
    if (!track) return;
    if (!compare) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (out[i].candidate < 0) continue;
        if (const auto it = shadow_.find(tokens[i].id); it != shadow_.end())
          addToViews(lane, cands[static_cast<size_t>(out[i].candidate)].node, it->second,
                     tokens[i].cost, 1);
      }
      return;
    }
    // Replay the fallback's choices in order; for each measurable token note where the model's
    // rule (earliest predicted completion with its costs, its view of the queues and its
    // slowness) would have put it.
    // The group spread is replayed too (its counts follow the fallback's actual placements).
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int32_t p = out[i].candidate;
      if (p < 0) continue;
      const bool counted = enterGroup(tokens[i]);
      const auto it = shadow_.find(tokens[i].id);
      if (it != shadow_.end()) {
        Shadow& sh = it->second;
        size_t best = static_cast<size_t>(p);
        double best_done = std::numeric_limits<double>::infinity();
        for (size_t c = 0; c < cands.size(); ++c) {
          const double cost = sh.model_ns * (counted ? spreadFactor(cands[c].node) : 1.0);
          const double done = (laneNode(lane, cands[c].node).model_view + cost) *
                              nodeSlowness(cands[c].node) / std::max<uint32_t>(cands[c].workers, 1);
          if (done < best_done) {
            best = c;
            best_done = done;
          }
        }
        noteChoice(tokens[i].id, lane, cands[static_cast<size_t>(p)],
                   snap_ahead_[static_cast<size_t>(p)], cands[best], snap_ahead_[best], false);
        addToViews(lane, cands[static_cast<size_t>(p)].node, sh, tokens[i].cost, 1);
      }
      ++snap_ahead_[static_cast<size_t>(p)];
      countGroup(cands[static_cast<size_t>(p)].node);
    }
    return;
  }
  // Largest predicted cost first (LPT) within each job (XgbSchedulerOptions::lpt_scope).
  // Skipped when costs are within 2x of each other, or all tiny (e.g. Leibniz terms, where a
  // trained model's noise made every 512-token slice look skewed): order hardly matters then.
  order_.resize(tokens.size());
  std::iota(order_.begin(), order_.end(), 0u);
  const auto [lo, hi] = std::minmax_element(
      tokens.begin(), tokens.end(), [](const auto& a, const auto& b) { return a.cost < b.cost; });
  if (hi->cost > 2 * lo->cost && hi->cost >= options_.lpt_min_token_ns) {
    const auto larger = [&](uint32_t a, uint32_t b) { return tokens[a].cost > tokens[b].cost; };
    if (options_.lpt_scope == XgbSchedulerOptions::LptScope::kSlice) {
      std::stable_sort(order_.begin(), order_.end(), larger);
    } else {
      // Within each job's run of consecutive tokens only (ids are job << 32 | token).
      for (size_t b = 0; b < tokens.size();) {
        size_t e = b + 1;
        while (e < tokens.size() && (tokens[e].id >> 32) == (tokens[b].id >> 32)) ++e;
        if (e - b > 1)
          std::stable_sort(order_.begin() + static_cast<ptrdiff_t>(b),
                           order_.begin() + static_cast<ptrdiff_t>(e), larger);
        b = e;
      }
    }
  }
  // Seconds-per-unit-of-work of each candidate, computed once per call. Candidate::speed is
  // not used: the core fills it from nodeSpeed(), i.e. this same slowness.
  cand_scale_.resize(cands.size());
  for (size_t c = 0; c < cands.size(); ++c)
    cand_scale_[c] = nodeSlowness(cands[c].node) / std::max<uint32_t>(cands[c].workers, 1);
  const bool spread = options_.group_spread > 0;
  for (const uint32_t i : order_) {
    const double cost = tokens[i].cost;
    // Group spread (tail latency): further tokens of the run being placed count more on a node
    // that already has some of them. The run's first token looks nothing up.
    const bool counted = spread && enterGroup(tokens[i]);
    int32_t best = -1;
    double best_done = 0;
    for (size_t c = 0; c < cands.size(); ++c) {
      const auto& cand = cands[c];
      if (cand.free_credit == 0) continue;
      const double eff = counted ? cost * spreadFactor(cand.node) : cost;
      const double done = (cand.outstanding + eff) * cand_scale_[c];
      if (best < 0 || done < best_done ||
          (done == best_done && cand.outstanding < cands[static_cast<size_t>(best)].outstanding)) {
        best = static_cast<int32_t>(c);
        best_done = done;
      }
    }
    if (best < 0) break;  // every candidate is full
    auto& c = cands[static_cast<size_t>(best)];
    // Work-based credit: a node already holding queue_horizon_ns of predicted work waits for
    // completions, so late big tokens still find a fast node instead of a long blind queue.
    if (options_.queue_horizon_ns > 0 && cost >= options_.horizon_min_token_ns &&
        c.in_flight + c.assigned >= options_.min_queue_tokens &&
        c.outstanding * cand_scale_[static_cast<size_t>(best)] >= options_.queue_horizon_ns) {
      held_back_.fetch_add(1, std::memory_order_relaxed);
      held_back_model_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (track) {
      if (const auto it = shadow_.find(tokens[i].id); it != shadow_.end() && !compare) {
        addToViews(lane, c.node, it->second, cost, 1);
      } else if (it != shadow_.end()) {
        // Where least-outstanding (its cost, its view of the queues, its speeds, the same group
        // spread) would have put the token.
        Shadow& sh = it->second;
        size_t alt = static_cast<size_t>(best);
        double alt_load = std::numeric_limits<double>::infinity();
        for (size_t k = 0; k < cands.size(); ++k) {
          if (cands[k].free_credit == 0) continue;
          const double fcost = sh.fallback_ns * (counted ? spreadFactor(cands[k].node) : 1.0);
          const double load = (laneNode(lane, cands[k].node).fb_view + fcost) /
                              (std::max<uint32_t>(cands[k].workers, 1) * cand_fspeed_[k]);
          if (load < alt_load) {
            alt = k;
            alt_load = load;
          }
        }
        const auto& b = cands[static_cast<size_t>(best)];
        noteChoice(tokens[i].id, lane, b, b.in_flight + b.assigned, cands[alt],
                   cands[alt].in_flight + cands[alt].assigned, true);
        addToViews(lane, b.node, sh, cost, 1);
      }
    }
    --c.free_credit;
    ++c.assigned;
    c.outstanding += cost;
    out[i] = {best, lane};
    if (spread) countGroup(c.node);
  }
  // Remember what held-back tokens were predicted to cost: they come back next round.
  for (size_t k = 0; k < tokens.size(); ++k) {
    if (out[k].candidate < 0) {
      if (tokens[k].cost >= options_.horizon_min_token_ns)
        held_cost_[tokens[k].id] = tokens[k].cost;
    } else if (!held_cost_.empty()) {
      held_cost_.erase(tokens[k].id);
    }
  }
  if (held_cost_.size() > kMaxHeldPredictions) held_cost_.clear();  // e.g. cancelled jobs
  updateOpLanes(lane, tokens, out, {});
}

void XgbScheduler::updateOpLanes(Weight lane, std::span<const coordinator::TokenInfo> tokens,
                                 std::span<const coordinator::Placement> out,
                                 std::span<const double> model_costs) {
  // Per-op running mean of the predicted cost of *placed* tokens (held-back tokens come back
  // and are predicted again; counting them would bias the mean and eat the dwell). The model's
  // predictions: tokens[].cost while it places, model_costs (from costs()) while the fallback
  // does.
  const auto cost = [&](size_t k) { return model_costs.empty() ? tokens[k].cost : model_costs[k]; };
  size_t i = 0;
  while (i < tokens.size()) {
    const uint32_t op = tokens[i].op;
    double sum = 0;
    uint64_t n = 0;
    size_t j = i;
    for (; j < tokens.size() && tokens[j].op == op; ++j) {
      if (out[j].candidate < 0) continue;
      sum += cost(j);
      ++n;
    }
    if (ops_.size() <= op) ops_.resize(op + 1);
    OpLane& o = ops_[op];
    if (n > 0) {
      const double mean = sum / static_cast<double>(n);
      // Per-token exponential weight, so many tiny slices and one big slice count the same.
      const double w = 1.0 - std::pow(1.0 - options_.op_cost_alpha, static_cast<double>(n));
      o.mean_cost_ns = o.predicted == 0 ? mean : o.mean_cost_ns + w * (mean - o.mean_cost_ns);
      o.predicted += n;
    }
    maybeReclassify(op, lane);
    i = j;
  }
}

void XgbScheduler::maybeReclassify(uint32_t op, Weight lane) {
  if (ops_.size() <= op) ops_.resize(op + 1);
  OpLane& o = ops_[op];
  // The op's current lane is the lane its tokens first arrive on; after a reclassification,
  // tokens already queued on the old lane still drain from it, so later lanes are not adopted.
  if (o.lane == Weight::kUnspecified) o.lane = lane;
  if (o.predicted < options_.min_tokens_for_reclassify) return;
  if (o.predicted_at_change > 0 &&
      o.predicted - o.predicted_at_change < options_.min_tokens_between_changes)
    return;
  const Weight to = fromModelWeight(
      costmodel::reclassify(o.mean_cost_ns, toModelWeight(o.lane), options_.thresholds));
  if (to == o.lane) return;
  const Weight from = o.lane;
  o.lane = to;
  o.predicted_at_change = o.predicted;
  reclassifications_.fetch_add(1, std::memory_order_relaxed);
  if (on_reclassify_) on_reclassify_(op, from, to);
}

void XgbScheduler::observe(const coordinator::TokenInfo& token, uint32_t node, double run_ns) {
  double model_ns = token.cost;  // the prediction made at dispatch, if the model placed it
  if (options_.fallback_gate) {
    fallback_->observe(token, node, run_ns);
    if (options_.placement_gate && run_ns >= 0 && std::isfinite(run_ns)) {
      countResult(token.lane, node, run_ns);
      if (!evals_.empty())
        if (const auto e = evals_.find(token.id); e != evals_.end()) {
          e->second.run_ns = run_ns;
          settle(e);
        }
    }
    const auto it = shadow_.find(token.id);
    if (it == shadow_.end()) {
      if (!use_model_) return;  // token.cost is the fallback's estimate: teaches no model speed
    } else {
      const Shadow sh = it->second;
      shadow_.erase(it);
      addToViews(token.lane, node, sh, token.cost, -1);
      model_ns = sh.model_ns;
      if (run_ns > 0 && std::isfinite(run_ns) && sh.model_ns > 0 && sh.fallback_ns > 0) {
        score(node, run_ns, sh.model_ns, sh.fallback_ns);
      }
    }
  }
  if (!(model_ns > 0) || !std::isfinite(model_ns) || !(run_ns > 0)) return;
  if (model_ns < options_.min_speed_token_ns) return;
  if (speed_.size() <= node) speed_.resize(node + 1);
  NodeSpeed& s = speed_[node];
  const double r = std::log(run_ns / model_ns);
  // Exact mean for the first 1/alpha observations, then exponentially weighted.
  ++s.n;
  const double w = std::max(options_.speed_alpha, 1.0 / static_cast<double>(s.n));
  s.mean_log_ratio += w * (r - s.mean_log_ratio);
  recomputeSlowness();
}

void XgbScheduler::recomputeSlowness() {
  // Relative to the fastest trusted node: a model that is off by a constant factor for every
  // node (e.g. just after a hot swap) does not change the split.
  double fastest = std::numeric_limits<double>::infinity();
  for (const auto& s : speed_)
    if (s.n >= options_.min_speed_observations) fastest = std::min(fastest, s.mean_log_ratio);
  slowness_.assign(speed_.size(), 1.0);
  if (!std::isfinite(fastest)) return;
  for (size_t i = 0; i < speed_.size(); ++i)
    if (speed_[i].n >= options_.min_speed_observations && speed_[i].mean_log_ratio == fastest)
      fastest_node_ = static_cast<uint32_t>(i);
  const double lim = std::log(options_.max_slowness);
  for (size_t i = 0; i < speed_.size(); ++i)
    if (speed_[i].n >= options_.min_speed_observations)
      slowness_[i] = std::exp(std::clamp(speed_[i].mean_log_ratio - fastest, -lim, lim));
}

void XgbScheduler::forgetNode(uint32_t node) {
  fallback_->forgetNode(node);
  for (auto& v : lane_nodes_)  // comparisons waiting on it stay until evals_ is cleared
    if (node < v.size()) v[node] = LaneNode{};
  if (node < speed_.size()) {
    speed_[node] = NodeSpeed{};
    recomputeSlowness();
  }
  for (auto& loads : lane_load_)
    if (node < loads.size()) loads[node] = 0;
}

double XgbScheduler::nodeSlowness(uint32_t node) const {
  return node < slowness_.size() ? slowness_[node] : 1.0;
}

uint32_t XgbScheduler::laneLoad(Weight lane, uint32_t node) const {
  const auto& loads = lane_load_[weightIndex(lane)];
  return node < loads.size() ? loads[node] : 0;
}

Weight XgbScheduler::laneOf(uint32_t op) const {
  return op < ops_.size() ? ops_[op].lane : Weight::kUnspecified;
}

}  // namespace tokengate::learned
