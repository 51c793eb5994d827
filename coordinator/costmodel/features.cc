#include "coordinator/costmodel/features.h"

#include <algorithm>
#include <cmath>

namespace tokengate::costmodel {

std::string_view weightName(Weight w) {
  switch (w) {
    case Weight::kLight:
      return "light";
    case Weight::kMedium:
      return "medium";
    case Weight::kHeavy:
      return "heavy";
  }
  return "unknown";
}

namespace {
// Doubles outside float range would become +-inf; trees only care about order, so saturate.
float toFloat(double v) {
  if (std::isnan(v)) return std::numeric_limits<float>::quiet_NaN();
  constexpr auto kMax = static_cast<double>(std::numeric_limits<float>::max());
  return static_cast<float>(std::clamp(v, -kMax, kMax));
}
}  // namespace

void encodeFeatures(const TokenFeatures& f, std::span<float, kNumFeatures> row) {
  row[0] = static_cast<float>(f.op_id);
  row[1] = static_cast<float>(f.declared_weight);
  row[2] = static_cast<float>(f.arg_count);
  row[3] = static_cast<float>(f.arg_total_bytes);
  row[4] = toFloat(f.first_numeric_arg);
  row[5] = static_cast<float>(f.node_index);
  row[6] =
      (std::isfinite(f.node_speed) && f.node_speed > 0) ? static_cast<float>(f.node_speed) : 1.0f;
  row[7] = static_cast<float>(f.lane);
  row[8] = static_cast<float>(f.node_load);
}

}  // namespace tokengate::costmodel
