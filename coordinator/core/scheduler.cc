#include "coordinator/core/scheduler.h"

#include <algorithm>

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

// Places each token on the candidate with the least outstanding work per
// worker, weighted by observed speed (Dask/Ray-like baseline).
class LeastOutstanding final : public Scheduler {
 public:
  const char* name() const override { return "least-outstanding"; }
  void place(Weight lane, std::span<const TokenInfo> tokens, std::span<Candidate> cands,
             std::span<Placement> out) override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      int32_t best = -1;
      double best_load = 0;
      for (size_t c = 0; c < cands.size(); ++c) {
        if (cands[c].free_credit == 0) continue;
        double load = (cands[c].outstanding + tokens[i].cost) / (cands[c].workers * std::max(cands[c].speed, 1e-3));
        if (best < 0 || load < best_load) {
          best = static_cast<int32_t>(c);
          best_load = load;
        }
      }
      out[i] = {best, lane};
      if (best < 0) continue;
      auto& c = cands[static_cast<size_t>(best)];
      --c.free_credit;
      ++c.assigned;
      c.outstanding += tokens[i].cost;
    }
  }
};

}  // namespace

std::unique_ptr<Scheduler> makeRoundRobinScheduler() { return std::make_unique<RoundRobin>(); }
std::unique_ptr<Scheduler> makeLeastOutstandingScheduler() {
  return std::make_unique<LeastOutstanding>();
}
std::unique_ptr<Scheduler> makeScheduler(const std::string& name) {
  if (name == "round-robin") return makeRoundRobinScheduler();
  if (name == "least-outstanding") return makeLeastOutstandingScheduler();
  return nullptr;
}

}  // namespace tokengate::coordinator
