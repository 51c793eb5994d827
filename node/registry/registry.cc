#include "node/registry/registry.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <exception>

#include "common/names.h"

namespace tokengate::node {

namespace {
struct LinkedOp {
  std::string name;
  Weight weight;
  OpFn fn;
  OpFlags flags = OpFlags::kNone;
};
// Function-local static so registration order across translation units does
// not matter.
std::vector<LinkedOp>& linkedOps() {
  static std::vector<LinkedOp> ops;
  return ops;
}
}  // namespace

namespace internal {
bool registerLinkedOperation(const char* name, Weight weight, OpFn fn, OpFlags flags) {
  linkedOps().push_back(LinkedOp{name, weight, std::move(fn), flags});
  return true;
}
}  // namespace internal

StatusOr<Value> invokeOperation(const Operation& op, OpContext& ctx, std::span<const Value> args) {
  try {
    auto out = op.fn(ctx, args);
    // A deeper list would make the coordinator refuse the whole result frame; a value over
    // the per-value limit is refused here too, naming the operation.
    if (out.ok()) {
      if (Status st = out->check(); !st.ok())
        return absl::InvalidArgumentError(fmt::format("{}: result {}", op.name, st.message()));
    }
    return out;
  } catch (const std::bad_variant_access& e) {
    return absl::InvalidArgumentError(
        fmt::format("{}: argument of the wrong type ({})", op.name, e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(fmt::format("{} threw: {}", op.name, e.what()));
  } catch (...) {
    return absl::InternalError(fmt::format("{} threw a non-std exception", op.name));
  }
}

Registry::Registry(const Registry& other) { *this = other; }

Registry& Registry::operator=(const Registry& other) {
  if (this == &other) return *this;
  ops_.clear();
  by_name_.clear();
  for (const auto& op : other.ops_) {
    auto st = add(op->name, op->weight, op->fn, op->flags());
    (void)st;  // names in `other` are already unique and valid
  }
  return *this;
}

Status Registry::add(std::string name, Weight weight, OpFn fn, OpFlags flags) {
  if (Status st = validateOperationName(name); !st.ok()) return st;
  if (!fn) return absl::InvalidArgumentError(fmt::format("operation {} has no function", name));
  if (weight != Weight::kLight && weight != Weight::kMedium && weight != Weight::kHeavy)
    return absl::InvalidArgumentError(
        fmt::format("operation {}: default weight must be light, medium or heavy", name));
  if (by_name_.contains(name))
    return absl::AlreadyExistsError(fmt::format("operation {} is already registered", name));
  auto op = std::make_unique<Operation>(Operation{std::move(name), weight, std::move(fn),
                                                  hasFlag(flags, OpFlags::kDeterministic),
                                                  hasFlag(flags, OpFlags::kNonBlocking)});
  by_name_.emplace(op->name, op.get());
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

const Operation* Registry::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

StatusOr<const Operation*> Registry::lookup(std::string_view name) const {
  const Operation* op = find(name);
  if (op == nullptr) return absl::NotFoundError(fmt::format("unknown operation {}", name));
  return op;
}

Status Registry::addLinkedOperations() {
  Status first;
  for (const auto& l : linkedOps()) {
    auto st = add(l.name, l.weight, l.fn, l.flags);
    if (!st.ok()) {
      spdlog::warn("skipping linked operation: {}", st.ToString());
      if (first.ok()) first = st;
    }
  }
  return first;
}

Registry Registry::withLinkedOperations() {
  Registry r;
  (void)r.addLinkedOperations();
  return r;
}

}  // namespace tokengate::node
