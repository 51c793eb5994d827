// A flattened copy of an XGBoost tree ensemble for fast single-threaded prediction on the
// dispatch path. XGBoost's in-place predict costs ~1-2 us per token (JSON config parsing,
// DMatrix proxy, thread-local buffers, OpenMP dispatch); walking 40 small trees directly is an
// order of magnitude cheaper. Built from the booster's own JSON, and checked against XGBoost's
// predictions when it is built (XgbCostModel falls back to XGBoost if they ever disagree).
//
// Immutable after construction; predict is const and thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/costmodel/features.h"

namespace tokengate::costmodel {

class CompiledForest {
 public:
  // Parses an XGBoost 1.7 JSON model (as written by XGBoosterSaveModelToBuffer format=json).
  // Only identity-link regression objectives are accepted (squared error, pseudo-Huber,
  // absolute error); InvalidArgument otherwise or for any structural surprise.
  static StatusOr<CompiledForest> fromXgboostJson(std::string_view json);

  // Raw margin: base_score + sum of leaf values (for our models, log run time).
  double predictMargin(std::span<const float, kNumFeatures> row) const;
  // Batched: `rows` is n x kNumFeatures row-major; writes n margins. Walks each tree for a block
  // of rows at a time with a fixed number of steps (leaves point to themselves), so the walks of
  // different rows overlap instead of waiting on each other's loads and branches.
  void predictMargins(const float* rows, size_t n, double* out) const;

  size_t numTrees() const { return roots_.size(); }
  size_t numNodes() const { return nodes_.size(); }
  // Node visits per predicted row (sum of tree depths).
  size_t stepsPerRow() const {
    size_t s = 0;
    for (uint32_t d : depths_) s += d;
    return s;
  }

 private:
  struct Node {
    float threshold;   // numerical split: right iff value >= threshold; +inf otherwise
    float leaf_value;  // leaves only
    int32_t left;      // absolute node index; a leaf points to itself
    int32_t right;
    uint32_t cat_begin;  // first word of the category set in cat_bits_ (0: the empty set)
    uint16_t cat_words;  // words in the set, not counting the trailing zero word
    uint8_t feature;
    uint8_t flags;  // kNanRight | kCategorical | kLeaf
  };
  static constexpr uint8_t kNanRight = 1;
  static constexpr uint8_t kCategorical = 2;
  static constexpr uint8_t kLeaf = 4;

  int32_t step(const Node& node, const float* row) const;

  std::vector<Node> nodes_;
  std::vector<uint32_t> roots_;
  std::vector<uint32_t> depths_;  // max depth (edges) of each tree
  std::vector<uint64_t> cat_bits_;
  double base_score_ = 0;
};

}  // namespace tokengate::costmodel
