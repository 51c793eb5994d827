#include "coordinator/core/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace tokengate::coordinator {

void Scheduler::costs(std::span<const TokenInfo> tokens, std::span<double> out) {
  std::fill(out.begin(), out.end(), 1.0);
}

namespace {

class RoundRobin final : public Scheduler {
 public:
  const char* name() const override { return "round-robin"; }
  void place(Weight lane, std::span<const TokenInfo> tokens, std::span<Candidate> cands,
             std::span<Placement> out) override {
    if (cands.empty()) return;
    for (size_t i = 0; i < tokens.size(); ++i) {
      out[i].candidate = -1;
      for (size_t tries = 0; tries < cands.size(); ++tries) {
        auto& c = cands[next_++ % cands.size()];
        if (c.free_credit == 0) continue;
        --c.free_credit;
        ++c.assigned;
        c.outstanding += tokens[i].cost;
        out[i] = {static_cast<int32_t>(&c - cands.data()), lane};
        break;
      }
    }
  }

 private:
  size_t next_ = 0;
};

// Places each token on the candidate with the least outstanding work per worker, weighted by
// observed node speed (Dask/Ray-like baseline). A token's cost is the running mean of the observed
// run time of its op (Dask's per-prefix mean; arguments are not looked at), normalised to the
// fastest node; before an op has been seen it costs the mean over every op seen, and before
// anything has been seen 1 (the policy then counts tokens). Node speed: per node, a running mean
// of log(run / op mean) over ops whose mean is long enough to measure, relative to the fastest.
class LeastOutstanding final : public Scheduler {
 public:
  explicit LeastOutstanding(LeastOutstandingOptions o) : o_(o) {}
  const char* name() const override { return "least-outstanding"; }

  void costs(std::span<const TokenInfo> tokens, std::span<double> out) override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const uint32_t op = tokens[i].op;
      out[i] = op < ops_.size() && ops_[op].n > 0 ? ops_[op].place_ns : default_cost_;
    }
  }

  void observe(const TokenInfo& token, uint32_t node, double run_ns) override {
    if (!(run_ns > 0) || !std::isfinite(run_ns)) return;
    if (ops_.size() <= token.op) ops_.resize(token.op + 1);
    OpMean& m = ops_[token.op];
    // Speed first, against the op's mean before this run is folded in.
    if (m.n >= 8 && m.mean_ns >= o_.min_speed_token_ns) {
      if (speed_.size() <= node) speed_.resize(node + 1);
      NodeSpeed& s = speed_[node];
      ++s.n;
      const double r = std::clamp(std::log(run_ns / m.mean_ns), -5.0, 5.0);
      const double w = std::max(o_.speed_alpha, 1.0 / static_cast<double>(s.n));
      s.mean_log_ratio += w * (r - s.mean_log_ratio);
      s.mean_sq += w * (r * r - s.mean_sq);
      recomputeSlowness();
    }
    double work = run_ns / slowness(node);  // as if run on the fastest node
    if (m.n > 0) work = std::min(work, m.mean_ns * o_.outlier_factor);  // a hung token
    ++m.n;
    const double w = std::max(o_.alpha, 1.0 / static_cast<double>(m.n));
    m.mean_ns += w * (work - m.mean_ns);
    m.mean_sq += w * (work * work - m.mean_sq);
    // The placement cost's weight: smaller for an op whose runs scatter. Recomputed every
    // kPlaceWeightEvery runs (and while the mean is exact), not per result: the divisions sat on
    // the per-result path of 1M-token jobs (~20 ns a result, measured in the Leibniz A/B).
    if (o_.cost_rel_error <= 0) {
      m.place_w = w;
    } else if (w > o_.alpha || (m.n & (kPlaceWeightEvery - 1)) == 0) {
      double pw = w;
      if (m.mean_ns > 0) {
        const double e2 = o_.cost_rel_error * o_.cost_rel_error;
        const double cv2 = std::max(m.mean_sq / (m.mean_ns * m.mean_ns) - 1, 0.0);
        pw = std::clamp(2 * e2 / (cv2 + e2), std::min(o_.min_alpha, o_.alpha), o_.alpha);
        pw = std::max(pw, 1.0 / static_cast<double>(m.n));
      }
      m.place_w = pw;
    }
    m.place_ns += m.place_w * (work - m.place_ns);
    ++all_n_;
    all_mean_ns_ += std::max(o_.alpha, 1.0 / static_cast<double>(all_n_)) * (work - all_mean_ns_);
    default_cost_ = all_mean_ns_;
  }

  double nodeSpeed(uint32_t node) const override { return 1.0 / slowness(node); }

  void place(Weight lane, std::span<const TokenInfo> tokens, std::span<Candidate> cands,
             std::span<Placement> out) override {
    const bool spread = o_.group_spread > 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
      // In the group's first token (every token of a job whose tokens differ in their first
      // argument, e.g. Leibniz terms) nothing is counted yet: no per-node lookups.
      bool counted = false;
      if (spread) {
        const GroupKey key = groupOf(tokens[i]);
        if (!(key == group_)) {
          group_ = key;
          for (uint32_t node : group_nodes_) group_on_node_[node] = 0;
          group_nodes_.clear();
        }
        counted = !group_nodes_.empty();
      }
      int32_t best = -1;
      double best_load = 0;
      for (size_t c = 0; c < cands.size(); ++c) {
        if (cands[c].free_credit == 0) continue;
        double cost = tokens[i].cost;
        if (counted && cands[c].node < group_on_node_.size())
          cost *= 1 + o_.group_spread * static_cast<double>(group_on_node_[cands[c].node]);
        double load =
            (cands[c].outstanding + cost) / (cands[c].workers * std::max(cands[c].speed, 1e-3));
        if (best < 0 || load < best_load) {
          best = static_cast<int32_t>(c);
          best_load = load;
        }
      }
      out[i] = {best, lane};
      if (best < 0) continue;
      auto& c = cands[static_cast<size_t>(best)];
      if (o_.horizon_ns > 0 && tokens[i].cost >= o_.horizon_min_token_ns &&
          c.in_flight + c.assigned >= uint64_t{o_.horizon_min_tokens} * c.workers &&
          c.outstanding / (c.workers * std::max(c.speed, 1e-3)) >= o_.horizon_ns) {
        out[i].candidate = -1;  // every node is past the horizon: wait for a result
        continue;
      }
      --c.free_credit;
      ++c.assigned;
      c.outstanding += tokens[i].cost;
      if (spread) {
        if (group_on_node_.size() <= c.node) group_on_node_.resize(c.node + 1, 0);
        if (group_on_node_[c.node]++ == 0) group_nodes_.push_back(c.node);
      }
    }
  }

  void forgetNode(uint32_t node) override {
    if (node >= speed_.size()) return;
    speed_[node] = NodeSpeed{};
    recomputeSlowness();
  }

 private:
  struct OpMean {
    double mean_ns = 0;   // EWMA alpha of run time (speed estimation, outlier clipping)
    double mean_sq = 0;   // EWMA alpha of its square (the op's recent spread)
    double place_ns = 0;  // placement cost: the same mean, weight shrunk by the spread
    double place_w = 1;   // place_ns's current weight (see observe)
    uint64_t n = 0;
  };
  struct NodeSpeed {
    double mean_log_ratio = 0;
    double mean_sq = 0;  // running mean of the squared log ratio (for its standard error)
    uint64_t n = 0;
  };
  // Standard error of a node's mean_log_ratio: variance x the running mean's effective weight
  // (1/n while the mean is exact, alpha/(2-alpha) once exponentially weighted).
  double standardError(const NodeSpeed& s) const {
    const double var = std::max(s.mean_sq - s.mean_log_ratio * s.mean_log_ratio, 0.0);
    const double n = static_cast<double>(std::max<uint64_t>(s.n, 1));
    const double w = 1.0 / n > o_.speed_alpha ? 1.0 / n : o_.speed_alpha / (2 - o_.speed_alpha);
    return std::sqrt(var * w);
  }
  double slowness(uint32_t node) const { return node < slowness_.size() ? slowness_[node] : 1.0; }
  void recomputeSlowness() {
    const NodeSpeed* fastest = nullptr;
    for (const auto& s : speed_)
      if (s.n >= o_.min_speed_observations &&
          (!fastest || s.mean_log_ratio < fastest->mean_log_ratio))
        fastest = &s;
    slowness_.assign(speed_.size(), 1.0);
    if (!fastest) return;
    const double lim = std::log(o_.max_slowness);
    const double se_fastest = standardError(*fastest);
    for (size_t i = 0; i < speed_.size(); ++i) {
      if (speed_[i].n < o_.min_speed_observations) continue;
      const double d = speed_[i].mean_log_ratio - fastest->mean_log_ratio;
      // A difference within the noise is no difference: with an op whose tokens cost 50 us to
      // 60 ms, log(run / op mean) scatters by ~2, and equal nodes looked up to ~1.3x apart.
      const double se = std::hypot(standardError(speed_[i]), se_fastest);
      if (d <= o_.speed_significance * se) continue;
      slowness_[i] = std::exp(std::clamp(d, 0.0, lim));
    }
  }

  // A run of tokens that likely cost the same: one job, one op, one first argument. Tokens of a
  // job's `repeat` run are consecutive in the dispatcher's ready queue, so the run being placed
  // is remembered across place() calls until a token of another run comes.
  struct GroupKey {
    uint64_t job = ~uint64_t{0};
    uint32_t op = 0;
    uint64_t arg_bits = 0;
    bool operator==(const GroupKey&) const = default;
  };
  static GroupKey groupOf(const TokenInfo& t) {
    GroupKey k;
    k.job = t.id >> 32;
    k.op = t.op;
    if (!std::isnan(t.first_arg)) std::memcpy(&k.arg_bits, &t.first_arg, sizeof k.arg_bits);
    return k;
  }

  const LeastOutstandingOptions o_;
  GroupKey group_;
  static constexpr uint64_t kPlaceWeightEvery = 16;  // a power of two
  std::vector<uint32_t> group_on_node_;              // by node slot: tokens of group_ placed there
  std::vector<uint32_t> group_nodes_;                // slots whose group_on_node_ entry is non-zero
  std::vector<OpMean> ops_;                          // by op index
  std::vector<NodeSpeed> speed_;
  std::vector<double> slowness_;  // by node slot, >= 1
  double all_mean_ns_ = 0;
  uint64_t all_n_ = 0;
  double default_cost_ = 1;
};

}  // namespace

std::unique_ptr<Scheduler> makeRoundRobinScheduler() { return std::make_unique<RoundRobin>(); }
std::unique_ptr<Scheduler> makeLeastOutstandingScheduler(LeastOutstandingOptions options) {
  return std::make_unique<LeastOutstanding>(options);
}
std::unique_ptr<Scheduler> makeScheduler(const std::string& name,
                                         const LeastOutstandingOptions& lo) {
  if (name == "round-robin") return makeRoundRobinScheduler();
  if (name == "least-outstanding") return makeLeastOutstandingScheduler(lo);
  return nullptr;
}

}  // namespace tokengate::coordinator
