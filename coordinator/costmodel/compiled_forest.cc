#include "coordinator/costmodel/compiled_forest.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "boost/json/parse.hpp"
#include "boost/json/value.hpp"
#include "coordinator/costmodel/strings.h"

namespace tokengate::costmodel {

using internal::cat;

namespace {

// XGBoost writes non-finite floats as bare NaN / inf / -inf tokens, which strict JSON (and
// Boost.JSON 1.81) rejects. Rewrite them outside string literals: NaN -> null, +-inf -> +-1e308
// (which becomes +-inf again when narrowed to float).
std::string sanitizeNonFinite(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  bool in_string = false;
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (in_string) {
      out.push_back(c);
      if (c == '\\' && i + 1 < in.size()) {
        out.push_back(in[++i]);
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      out.push_back(c);
      continue;
    }
    auto starts = [&](std::string_view tok) { return in.substr(i, tok.size()) == tok; };
    if (starts("NaN")) {
      out += "null";
      i += 2;
    } else if (starts("-Infinity")) {
      out += "-1e308";
      i += 8;
    } else if (starts("Infinity")) {
      out += "1e308";
      i += 7;
    } else if (starts("-inf")) {
      out += "-1e308";
      i += 3;
    } else if (starts("inf")) {
      out += "1e308";
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

double toDouble(const boost::json::value& v) {
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (v.is_string()) return std::strtod(v.as_string().c_str(), nullptr);
  return v.to_number<double>();
}

const boost::json::value* find(const boost::json::value& v,
                               std::initializer_list<const char*> path) {
  const boost::json::value* cur = &v;
  for (const char* key : path) {
    if (!cur->is_object()) return nullptr;
    cur = cur->as_object().if_contains(key);
    if (!cur) return nullptr;
  }
  return cur;
}

Status bad(std::string_view what) {
  return absl::InvalidArgumentError(cat("cannot compile XGBoost model: ", what));
}

}  // namespace

StatusOr<CompiledForest> CompiledForest::fromXgboostJson(std::string_view json) {
  boost::system::error_code ec;
  const boost::json::value root = boost::json::parse(sanitizeNonFinite(json), ec);
  if (ec) return bad(cat("JSON: ", ec.message()));

  const auto* objective = find(root, {"learner", "objective", "name"});
  if (!objective || !objective->is_string()) return bad("no objective");
  const std::string obj(objective->as_string());
  if (obj != "reg:squarederror" && obj != "reg:pseudohubererror" && obj != "reg:absoluteerror") {
    return bad(cat("objective ", obj, " has a non-identity link"));
  }
  const auto* base = find(root, {"learner", "learner_model_param", "base_score"});
  if (!base) return bad("no base_score");
  const auto* nfeat = find(root, {"learner", "learner_model_param", "num_feature"});
  if (!nfeat || toDouble(*nfeat) != static_cast<double>(kNumFeatures)) {
    return bad("unexpected feature count");
  }
  const auto* booster_name = find(root, {"learner", "gradient_booster", "name"});
  if (!booster_name || !booster_name->is_string() || booster_name->as_string() != "gbtree") {
    return bad("not a gbtree booster");
  }
  const auto* trees = find(root, {"learner", "gradient_booster", "model", "trees"});
  if (!trees || !trees->is_array()) return bad("no trees");

  CompiledForest f;
  f.cat_bits_.push_back(0);  // word 0: the empty category set shared by non-categorical nodes
  // base_score is stored as float32 text; use the float value XGBoost itself uses.
  f.base_score_ = static_cast<double>(static_cast<float>(toDouble(*base)));
  for (const auto& tv : trees->as_array()) {
    if (!tv.is_object()) return bad("tree is not an object");
    const auto& t = tv.as_object();
    auto arr = [&](const char* key) -> const boost::json::array* {
      const auto* v = t.if_contains(key);
      return v && v->is_array() ? &v->as_array() : nullptr;
    };
    const auto* left = arr("left_children");
    const auto* right = arr("right_children");
    const auto* cond = arr("split_conditions");
    const auto* index = arr("split_indices");
    const auto* dleft = arr("default_left");
    const auto* stype = arr("split_type");
    if (!left || !right || !cond || !index || !dleft) return bad("tree is missing arrays");
    const size_t n = left->size();
    if (n == 0 || right->size() != n || cond->size() != n || index->size() != n ||
        dleft->size() != n || (stype && stype->size() != n)) {
      return bad("tree arrays have inconsistent sizes");
    }
    const auto offset = static_cast<int32_t>(f.nodes_.size());
    f.roots_.push_back(static_cast<uint32_t>(offset));
    for (size_t i = 0; i < n; ++i) {
      Node node{};
      const auto l = static_cast<int64_t>(toDouble((*left)[i]));
      const auto r = static_cast<int64_t>(toDouble((*right)[i]));
      const auto cond_i = static_cast<float>(toDouble((*cond)[i]));
      node.cat_begin = 0;  // the shared all-zero word
      node.cat_words = 0;
      if (l < 0) {
        // Leaves point to themselves so a walk can take a fixed number of steps.
        node.left = offset + static_cast<int32_t>(i);
        node.right = node.left;
        node.flags = kLeaf;
        node.threshold = std::numeric_limits<float>::infinity();
        node.leaf_value = cond_i;  // XGBoost stores leaf values in split_conditions
      } else {
        node.threshold = cond_i;
        if (l >= static_cast<int64_t>(n) || r < 0 || r >= static_cast<int64_t>(n)) {
          return bad("child index out of range");
        }
        node.left = offset + static_cast<int32_t>(l);
        node.right = offset + static_cast<int32_t>(r);
        const auto feature = static_cast<int64_t>(toDouble((*index)[i]));
        if (feature < 0 || feature >= static_cast<int64_t>(kNumFeatures)) {
          return bad("split feature out of range");
        }
        node.feature = static_cast<uint8_t>(feature);
        if (toDouble((*dleft)[i]) == 0) node.flags |= kNanRight;
        if (stype && toDouble((*stype)[i]) == 1) {
          node.flags |= kCategorical;
          node.threshold = std::numeric_limits<float>::infinity();
        }
      }
      f.nodes_.push_back(node);
    }
    // Categorical splits: the listed categories go RIGHT; anything else (including categories
    // beyond the set's range, or invalid ones) goes LEFT -- XGBoost's common::Decision.
    const auto* cat_nodes = arr("categories_nodes");
    const auto* cat_segments = arr("categories_segments");
    const auto* cat_sizes = arr("categories_sizes");
    const auto* cats = arr("categories");
    if (cat_nodes && !cat_nodes->empty()) {
      if (!cat_segments || !cat_sizes || !cats || cat_segments->size() != cat_nodes->size() ||
          cat_sizes->size() != cat_nodes->size()) {
        return bad("inconsistent categorical split arrays");
      }
      for (size_t k = 0; k < cat_nodes->size(); ++k) {
        const auto nid = static_cast<int64_t>(toDouble((*cat_nodes)[k]));
        const auto beg = static_cast<size_t>(toDouble((*cat_segments)[k]));
        const auto size = static_cast<size_t>(toDouble((*cat_sizes)[k]));
        if (nid < 0 || nid >= static_cast<int64_t>(n) || beg + size > cats->size()) {
          return bad("categorical split out of range");
        }
        Node& node = f.nodes_[static_cast<size_t>(offset + nid)];
        if (!(node.flags & kCategorical)) return bad("category set on a numerical split");
        int64_t max_cat = -1;
        for (size_t j = beg; j < beg + size; ++j) {
          max_cat = std::max(max_cat, static_cast<int64_t>(toDouble((*cats)[j])));
        }
        const size_t words = max_cat < 0 ? 0 : static_cast<size_t>(max_cat / 64 + 1);
        if (words >= 0xffff) return bad("category id too large");
        node.cat_begin = static_cast<uint32_t>(f.cat_bits_.size());
        node.cat_words = static_cast<uint16_t>(words);
        // One extra zero word: lookups past the set land on it (see step()).
        f.cat_bits_.resize(f.cat_bits_.size() + words + 1, 0);
        for (size_t j = beg; j < beg + size; ++j) {
          const auto c = static_cast<uint64_t>(toDouble((*cats)[j]));
          f.cat_bits_[node.cat_begin + c / 64] |= uint64_t{1} << (c % 64);
        }
      }
    }
  }
  if (f.roots_.empty()) return bad("model has no trees");
  // Depth of each tree (iteratively; also rejects cycles, which would make a walk endless).
  for (size_t t = 0; t < f.roots_.size(); ++t) {
    const size_t end = t + 1 < f.roots_.size() ? f.roots_[t + 1] : f.nodes_.size();
    std::vector<std::pair<int32_t, uint32_t>> stack = {{static_cast<int32_t>(f.roots_[t]), 0}};
    uint32_t depth = 0;
    size_t visited = 0;
    while (!stack.empty()) {
      auto [nid, d] = stack.back();
      stack.pop_back();
      if (++visited > end - f.roots_[t]) return bad("tree is not a tree");
      depth = std::max(depth, d);
      const Node& node = f.nodes_[static_cast<size_t>(nid)];
      if (node.flags & kLeaf) continue;
      stack.emplace_back(node.left, d + 1);
      stack.emplace_back(node.right, d + 1);
    }
    f.depths_.push_back(depth);
  }
  return f;
}

inline int32_t CompiledForest::step(const Node& node, const float* row) const {
  // Same decisions as xgboost::predictor::GetNextNode for dense rows with missing = NaN, but
  // branch-free: random rows make tree branches unpredictable, and mispredictions were most of
  // the cost. Invariants set up at build time make one formula cover every node kind:
  //  * numerical split: go right iff v >= threshold (false for NaN);
  //  * categorical split: threshold = +inf, go right iff v is a listed category;
  //  * missing value: go right iff the node's default is right (kNanRight);
  //  * leaf: threshold = +inf, no categories, kNanRight clear, and left == right == itself.
  constexpr float kMaxCat = 16777216.0f;  // 2^24, XGBoost's categorical limit
  const float v = row[node.feature];
  const bool num_right = v >= node.threshold;
  const bool nan_right = (v != v) & ((node.flags & kNanRight) != 0);
  // Out-of-range, negative and NaN categories map past the set: an all-zero word.
  const float cv = (v >= 0.0f && v < kMaxCat) ? v : kMaxCat;
  const auto c = static_cast<uint32_t>(cv);
  const uint32_t word = std::min<uint32_t>(c >> 6, node.cat_words);
  const bool in_set = ((cat_bits_[node.cat_begin + word] >> (c & 63)) & 1) != 0;
  const bool go_right = num_right | nan_right | in_set;
  return node.left + (-static_cast<int32_t>(go_right) & (node.right - node.left));
}

double CompiledForest::predictMargin(std::span<const float, kNumFeatures> row) const {
  double out = 0;
  predictMargins(row.data(), 1, &out);
  return out;
}

void CompiledForest::predictMargins(const float* rows, size_t n, double* out) const {
  constexpr size_t kBlock = 16;
  const Node* nodes = nodes_.data();
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t m = std::min(kBlock, n - start);
    const float* block = rows + start * kNumFeatures;
    double sum[kBlock];
    for (size_t r = 0; r < m; ++r) sum[r] = base_score_;
    int32_t idx[kBlock];
    for (size_t t = 0; t < roots_.size(); ++t) {
      for (size_t r = 0; r < m; ++r) idx[r] = static_cast<int32_t>(roots_[t]);
      for (uint32_t d = 0; d < depths_[t]; ++d) {
        for (size_t r = 0; r < m; ++r) idx[r] = step(nodes[idx[r]], block + r * kNumFeatures);
      }
      for (size_t r = 0; r < m; ++r) sum[r] += nodes[idx[r]].leaf_value;
    }
    for (size_t r = 0; r < m; ++r) out[start + r] = sum[r];
  }
}

}  // namespace tokengate::costmodel
