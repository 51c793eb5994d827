// ScriptedCostModel: a CostModel whose predictions a test sets by hand (per op, optionally
// times the first argument), so scheduler tests do not depend on training.
// Owned by the test; predict() is const and reads only what the test set before sharing it.
#pragma once

#include <cmath>
#include <span>
#include <string_view>
#include <unordered_map>

#include "coordinator/costmodel/cost_model.h"

namespace tokengate::testing {

class ScriptedCostModel final : public costmodel::CostModel {
 public:
  // Predicted ns for `op`; if per_arg, multiplied by the token's first argument.
  void set(uint32_t op, double ns, bool per_arg = false) { costs_[op] = {ns, per_arg}; }
  void setDefault(double ns) { default_ns_ = ns; }

  void predict(std::span<const costmodel::TokenFeatures> in,
               std::span<double> out_ns) const override {
    ++calls_;
    for (size_t i = 0; i < in.size(); ++i) {
      auto it = costs_.find(in[i].op_id);
      double ns = it == costs_.end() ? default_ns_ : it->second.ns;
      if (it != costs_.end() && it->second.per_arg && std::isfinite(in[i].first_numeric_arg))
        ns *= in[i].first_numeric_arg;
      out_ns[i] = ns > 0 ? ns : 1;
    }
  }
  std::string_view name() const override { return "scripted"; }
  // predict() calls so far (tests check batching).
  uint64_t calls() const { return calls_; }

 private:
  struct Cost {
    double ns = 0;
    bool per_arg = false;
  };
  std::unordered_map<uint32_t, Cost> costs_;
  double default_ns_ = 1000;
  mutable uint64_t calls_ = 0;  // test-only counter, single-threaded use
};

}  // namespace tokengate::testing
