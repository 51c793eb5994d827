// Example statistics operations over numeric arguments (ints, doubles, dec50 all accepted via
// Value::toDouble()). With a refRange argument they aggregate the results of other tokens, e.g.
// a fan-out of words.count tokens summarised by one stats.summary token.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "node/registry/registry.h"

namespace {

using tokengate::StatusOr;
using tokengate::Value;
using tokengate::node::OpContext;

StatusOr<double> numberAt(std::span<const Value> args, size_t i, const char* op) {
  const Value& v = args[i];
  if (!v.isInt() && !v.isDouble() && !v.isDec())
    return absl::InvalidArgumentError(std::string(op) + ": argument " + std::to_string(i) + " is " +
                                      v.typeName() + ", not a number");
  return v.toDouble();
}

// stats.mean(number...) -> double.
StatusOr<Value> mean(OpContext&, std::span<const Value> args) {
  if (args.empty()) return absl::InvalidArgumentError("stats.mean needs at least one number");
  double sum = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    auto x = numberAt(args, i, "stats.mean");
    if (!x.ok()) return x.status();
    sum += *x;
  }
  return Value(sum / static_cast<double>(args.size()));
}

// stats.summary(number...) -> text "n=.. min=.. max=.. mean=.. stddev=.." (population stddev,
// Welford's one-pass update so long inputs do not lose precision).
StatusOr<Value> summary(OpContext& ctx, std::span<const Value> args) {
  if (args.empty()) return absl::InvalidArgumentError("stats.summary needs at least one number");
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, m = 0, m2 = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    if ((i & 0xfff) == 0 && ctx.cancelled()) return absl::CancelledError("stats.summary cancelled");
    auto x = numberAt(args, i, "stats.summary");
    if (!x.ok()) return x.status();
    lo = std::min(lo, *x);
    hi = std::max(hi, *x);
    const double d = *x - m;
    m += d / static_cast<double>(i + 1);
    m2 += d * (*x - m);
  }
  const double n = static_cast<double>(args.size());
  char buf[160];
  std::snprintf(buf, sizeof buf, "n=%zu min=%g max=%g mean=%g stddev=%g", args.size(), lo, hi, m,
                std::sqrt(m2 / n));
  return Value(std::string(buf));
}

}  // namespace

TG_OPERATION("stats.mean", tokengate::Weight::kLight, mean);
TG_OPERATION("stats.summary", tokengate::Weight::kLight, summary);
