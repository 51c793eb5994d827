// Features the coordinator knows about a token before it runs, and the telemetry sample a node
// reports after it ran. Plain values: no ownership, no threads.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>

namespace tokengate::costmodel {

// Declared weight / lane numbering used throughout the cost model (matches the scheduler lanes).
enum class Weight : uint8_t { kLight = 0, kMedium = 1, kHeavy = 2 };

std::string_view weightName(Weight w);

struct TokenFeatures {
  // Interned operation id (categorical; the coordinator owns the interning).
  uint32_t op_id = 0;
  // Declared weight: 0 light, 1 medium, 2 heavy.
  uint8_t declared_weight = 0;
  // Lane the token is dispatched on: 0/1/2.
  uint8_t lane = 0;
  uint32_t arg_count = 0;
  uint64_t arg_total_bytes = 0;
  // First numeric argument (e.g. n in fib(n)); NaN if the token has none.
  double first_numeric_arg = std::numeric_limits<double>::quiet_NaN();
  uint32_t node_index = 0;
  // Observed slowness of the node: 1.0 = nominal, 2.0 = runs tokens twice as long.
  double node_speed = 1.0;
  // Queued + running tokens on the node at dispatch time.
  uint32_t node_load = 0;
};

struct TelemetrySample {
  TokenFeatures features;
  // Label: wall time the token spent running on the node.
  int64_t run_ns = 0;
  // Time spent queued on the node before running (not a model input; kept for analysis).
  int64_t queue_wait_ns = 0;
};

// Column order of the model's input row. Changing it invalidates saved models, so the order is
// also stored in the model file and checked on load.
inline constexpr size_t kNumFeatures = 9;
inline constexpr std::array<std::string_view, kNumFeatures> kFeatureNames = {
    "op",   "declared_weight", "arg_count", "arg_bytes", "arg0",
    "node", "node_speed",      "lane",      "node_load"};
// XGBoost feature types: "c" categorical, "q" quantitative.
inline constexpr std::array<std::string_view, kNumFeatures> kFeatureTypes = {
    "c", "q", "q", "q", "q", "q", "q", "q", "q"};

// Writes the kNumFeatures model inputs for `f` into `row` (missing values as NaN).
void encodeFeatures(const TokenFeatures& f, std::span<float, kNumFeatures> row);

}  // namespace tokengate::costmodel
