// Operation registry: the plain C++ functions a node offers, by name.
//
// An operation is `StatusOr<Value>(OpContext&, std::span<const Value> args)`.
// Register one either on a Registry instance you wire up yourself
//
//   registry.add("my.op", Weight::kLight, myOp);
//
// or statically, from any translation unit linked into the node binary:
//
//   TG_OPERATION("my.op", Weight::kLight, myOp);
//
// (TG_DETERMINISTIC_OPERATION, or add(..., /*deterministic=*/true), for an operation whose
// result is bitwise a function of its arguments: the coordinator may then verify it.)
//
// Traits beyond the weight are flags (OpFlags): kDeterministic as above, and kNonBlocking for
// an operation that never waits (no I/O, lock, sleep or condition wait; CPU work bounded by its
// arguments): only such an operation may run a lone token on the node's link thread
// (Executor::runInline). Either form:
//
//   registry.add("my.op", Weight::kLight, myOp, OpFlags::kDeterministic | OpFlags::kNonBlocking);
//   TG_OPERATION_FLAGS("my.op", Weight::kLight, myOp, OpFlags::kNonBlocking);
//
// The macro appends to a process-wide list of *linked* operations (the one
// unavoidable global: static registration has nowhere else to go). Nothing
// reads that list implicitly: Registry::withLinkedOperations() copies it into
// an ordinary Registry that main()/runNode() owns and passes around.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/job.h"
#include "common/status.h"
#include "common/value.h"

namespace tokengate::node {

// What an operation may know about the token it runs. Built by the executor
// on the worker's stack for each token; only the running worker touches it,
// except the cancel flag, which the link thread sets.
class OpContext {
 public:
  // `cancel_word`: the token counts as cancelled once *cancel_word ==
  // cancel_value. The executor points it at the worker's slot and uses the
  // token's enqueue sequence number as the value, so a late cancel aimed at
  // the previous token on that worker can never hit this one. For a simple
  // flag pass an atomic that you set to 1 (the default value).
  OpContext(uint64_t token_id = 0, uint32_t attempt = 0, Nanos deadline_ns = 0,
            const std::atomic<uint64_t>* cancel_word = nullptr, uint64_t cancel_value = 1,
            const Clock* clock = nullptr)
      : token_id_(token_id),
        attempt_(attempt),
        deadline_ns_(deadline_ns),
        cancel_word_(cancel_word),
        cancel_value_(cancel_value),
        clock_(clock != nullptr ? clock : &SystemClock::instance()) {}

  // Cooperative cancellation: true once the token or its operation was
  // cancelled (Control.cancelTokens / cancelOp) or its deadline passed.
  // Long-running operations should poll it and return absl::CancelledError().
  bool cancelled() const { return cancelRequested() || deadlineExceeded(); }
  // Only the explicit cancel (not the deadline).
  bool cancelRequested() const {
    return cancel_word_ != nullptr &&
           cancel_word_->load(std::memory_order_relaxed) == cancel_value_;
  }
  bool deadlineExceeded() const { return deadline_ns_ != 0 && clock_->now() >= deadline_ns_; }
  uint64_t tokenId() const { return token_id_; }
  uint32_t attempt() const { return attempt_; }
  // Absolute monotonic deadline (Clock::now() scale), 0 = none.
  Nanos deadline() const { return deadline_ns_; }
  const Clock& clock() const { return *clock_; }

 private:
  uint64_t token_id_;
  uint32_t attempt_;
  Nanos deadline_ns_;
  const std::atomic<uint64_t>* cancel_word_;
  uint64_t cancel_value_;
  const Clock* clock_;
};

using OpFn = std::function<StatusOr<Value>(OpContext&, std::span<const Value>)>;

// What an operation declares about itself at registration (combine with |).
enum class OpFlags : uint32_t {
  kNone = 0,
  // Bitwise the same result for the same arguments: verifiable (Operation::deterministic).
  kDeterministic = 1u << 0,
  // Never blocks: no I/O, locks, sleeps or waits, and CPU time bounded by its arguments. A lone
  // token of it may run on the node's link thread (Operation::non_blocking).
  kNonBlocking = 1u << 1,
};
constexpr OpFlags operator|(OpFlags a, OpFlags b) {
  return static_cast<OpFlags>(static_cast<uint32_t>(a) | static_cast<uint32_t>(b));
}
constexpr bool hasFlag(OpFlags set, OpFlags flag) {
  return (static_cast<uint32_t>(set) & static_cast<uint32_t>(flag)) != 0;
}

struct Operation {
  std::string name;
  Weight weight = Weight::kLight;  // default lane when a token says `unspecified`
  OpFn fn;
  // The same arguments always give bitwise the same result (no clock, randomness, races or
  // floating-point reassociation): the coordinator may verify it by re-running a sample of its
  // tokens on another node (`verify: N%`, docs/security.md). Declared in the hello.
  bool deterministic = false;
  // Never blocks (OpFlags::kNonBlocking): the node may run a lone token of it on the link thread
  // when it was last timed fast and the workers are idle (NodeConfig::inline_below_ns). Node-local:
  // not sent to the coordinator. An operation that is not declared always runs on a worker.
  bool non_blocking = false;

  OpFlags flags() const {
    return (deterministic ? OpFlags::kDeterministic : OpFlags::kNone) |
           (non_blocking ? OpFlags::kNonBlocking : OpFlags::kNone);
  }
};

// Runs `op` on `args`, turning exceptions into Internal errors so a buggy
// operation fails its token instead of the node.
StatusOr<Value> invokeOperation(const Operation& op, OpContext& ctx, std::span<const Value> args);

// A name -> Operation table. Built single-threaded at start-up, then only read
// (concurrently by the link and the workers); Operation pointers are stable
// for the registry's lifetime.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry& other);
  Registry& operator=(const Registry& other);
  Registry(Registry&&) = default;
  Registry& operator=(Registry&&) = default;

  // InvalidArgument for a name that validateOperationName() refuses
  // (common/names.h: 1..128 of [A-Za-z0-9._:@/-]), a null function or
  // `unspecified` weight; AlreadyExists for a duplicate name.
  Status add(std::string name, Weight weight, OpFn fn, OpFlags flags);
  Status add(std::string name, Weight weight, OpFn fn, bool deterministic = false) {
    return add(std::move(name), weight, std::move(fn),
               deterministic ? OpFlags::kDeterministic : OpFlags::kNone);
  }
  // nullptr when absent.
  const Operation* find(std::string_view name) const;
  // NotFound "unknown operation X" when absent.
  StatusOr<const Operation*> lookup(std::string_view name) const;
  // In registration order.
  const std::vector<std::unique_ptr<Operation>>& operations() const { return ops_; }
  size_t size() const { return ops_.size(); }

  // Everything registered with TG_OPERATION in this binary. Duplicates of
  // names already present are logged and skipped.
  static Registry withLinkedOperations();
  // Adds every TG_OPERATION-registered operation to this registry.
  Status addLinkedOperations();

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::unique_ptr<Operation>> ops_;
  std::unordered_map<std::string, const Operation*, Hash, std::equal_to<>> by_name_;
};

namespace internal {
// Static-registration hook used by TG_OPERATION; returns a dummy so it can
// initialise a namespace-scope variable.
bool registerLinkedOperation(const char* name, Weight weight, OpFn fn,
                             OpFlags flags = OpFlags::kNone);
}  // namespace internal

}  // namespace tokengate::node

#define TG_OP_CONCAT_INNER(a, b) a##b
#define TG_OP_CONCAT(a, b) TG_OP_CONCAT_INNER(a, b)

// Registers `fn` under `name` with default weight class `weight` for every
// Registry::withLinkedOperations() in this binary. Use it in a .cc file that
// is linked into the executable directly (objects in a static library are
// only linked when something references them).
#define TG_OPERATION(name, weight, fn)                                                     \
  [[maybe_unused]] static const bool TG_OP_CONCAT(tg_operation_registered_, __COUNTER__) = \
      ::tokengate::node::internal::registerLinkedOperation(name, weight, fn)
// The same for an operation whose result depends on its arguments alone, bitwise (verify may
// sample it: Operation::deterministic).
#define TG_DETERMINISTIC_OPERATION(name, weight, fn)                                       \
  [[maybe_unused]] static const bool TG_OP_CONCAT(tg_operation_registered_, __COUNTER__) = \
      ::tokengate::node::internal::registerLinkedOperation(                                \
          name, weight, fn, ::tokengate::node::OpFlags::kDeterministic)
// The same with any OpFlags, e.g. OpFlags::kDeterministic | OpFlags::kNonBlocking.
#define TG_OPERATION_FLAGS(name, weight, fn, flags)                                        \
  [[maybe_unused]] static const bool TG_OP_CONCAT(tg_operation_registered_, __COUNTER__) = \
      ::tokengate::node::internal::registerLinkedOperation(name, weight, fn, flags)
