#include "node/ops/builtin_ops.h"

#include <fmt/format.h>
#include <sys/prctl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace tokengate::node {

namespace {

Status argCount(std::string_view op, std::span<const Value> args, size_t min, size_t max) {
  if (args.size() < min || args.size() > max) {
    if (min == max)
      return absl::InvalidArgumentError(
          fmt::format("{} takes {} argument(s), got {}", op, min, args.size()));
    return absl::InvalidArgumentError(
        fmt::format("{} takes {}..{} arguments, got {}", op, min, max, args.size()));
  }
  return absl::OkStatus();
}

StatusOr<int64_t> intArg(std::string_view op, std::span<const Value> args, size_t i) {
  if (!args[i].isInt())
    return absl::InvalidArgumentError(
        fmt::format("{}: argument {} must be int, got {}", op, i, args[i].typeName()));
  return args[i].asInt();
}

// Sums in argument order starting from args[0], exactly like leibnizLocal's
// pyramid (`T s = v[0]; for (i = 1..) s += v[i];`), so cluster results are
// bit-identical to the single-thread reference.
StatusOr<Value> sumInOrder(std::string_view op, std::span<const Value> args, bool times4) {
  if (args.empty()) return absl::InvalidArgumentError(fmt::format("{} needs >= 1 argument", op));
  if (args[0].isDouble()) {
    double s = args[0].asDouble();
    for (size_t i = 1; i < args.size(); ++i) {
      if (!args[i].isDouble())
        return absl::InvalidArgumentError(fmt::format(
            "{}: argument {} is {}, expected float like argument 0", op, i, args[i].typeName()));
      s += args[i].asDouble();
    }
    if (times4) s = s * 4;
    return Value(s);
  }
  if (args[0].isDec()) {
    BigFloat s = toBigFloat(args[0].asDec());
    for (size_t i = 1; i < args.size(); ++i) {
      if (!args[i].isDec())
        return absl::InvalidArgumentError(fmt::format(
            "{}: argument {} is {}, expected dec like argument 0", op, i, args[i].typeName()));
      s += toBigFloat(args[i].asDec());
    }
    if (times4) s = s * 4;
    return Value(fromBigFloat(s));
  }
  return absl::InvalidArgumentError(
      fmt::format("{}: arguments must be all float or all dec, got {}", op, args[0].typeName()));
}

StatusOr<Value> leibnizTerm(OpContext&, std::span<const Value> args) {
  if (auto st = argCount("leibniz.term", args, 1, 1); !st.ok()) return st;
  auto k = intArg("leibniz.term", args, 0);
  if (!k.ok()) return k.status();
  return Value(leibnizTermDouble(*k));
}

StatusOr<Value> leibnizTermDec50(OpContext&, std::span<const Value> args) {
  if (auto st = argCount("leibniz.term_dec50", args, 1, 1); !st.ok()) return st;
  auto k = intArg("leibniz.term_dec50", args, 0);
  if (!k.ok()) return k.status();
  return Value(fromBigFloat(leibnizTermDec(*k)));
}

// Sleeps in short slices so a cancel is noticed within ~1 ms.
StatusOr<Value> sleepOp(OpContext& ctx, std::span<const Value> args) {
  if (auto st = argCount("sleep", args, 1, 1); !st.ok()) return st;
  auto ms = intArg("sleep", args, 0);
  if (!ms.ok()) return ms.status();
  if (*ms < 0) return absl::InvalidArgumentError("sleep: milliseconds must be >= 0");
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(*ms);
  while (std::chrono::steady_clock::now() < end) {
    if (ctx.cancelled()) return absl::CancelledError("sleep cancelled");
    auto left = end - std::chrono::steady_clock::now();
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(1)));
  }
  return Value(*ms);
}

StatusOr<Value> spinOp(OpContext& ctx, std::span<const Value> args) {
  if (auto st = argCount("spin", args, 1, 1); !st.ok()) return st;
  auto us = intArg("spin", args, 0);
  if (!us.ok()) return us.status();
  if (*us < 0) return absl::InvalidArgumentError("spin: microseconds must be >= 0");
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(*us);
  uint64_t iterations = 0;
  while (std::chrono::steady_clock::now() < end) {
    if ((++iterations & 63) == 0 && ctx.cancelled()) return absl::CancelledError("spin cancelled");
  }
  return Value(*us);
}

// spin2(x, us): spins `us` microseconds and returns x. The cost is in the second argument, which
// the cost model does not see (it sees the first), and x may be a predecessor's output: the
// balance benchmark's drift (same features, 10x cost) and DAG workloads use it.
StatusOr<Value> spin2Op(OpContext& ctx, std::span<const Value> args) {
  if (auto st = argCount("spin2", args, 2, 2); !st.ok()) return st;
  const Value us = args[1];
  auto spun = spinOp(ctx, std::span<const Value>(&us, 1));
  if (!spun.ok()) return spun.status();
  return args[0];
}

// nap(us): sleeps `us` microseconds (wall-clock cost, no CPU), in slices of at most 1 ms so a
// cancel is noticed. The balance benchmark's default work (`--work sleep`): with more nodes than
// cores, a sleeping token's run time does not depend on what else the machine runs, so the suite
// measures placement rather than the OS scheduler. The calling thread's timer slack is set to
// 1 us once (Linux default 50 us), so a 50 us nap overshoots by the wake-up latency only.
StatusOr<Value> napOp(OpContext& ctx, std::span<const Value> args) {
  if (auto st = argCount("nap", args, 1, 1); !st.ok()) return st;
  auto us = intArg("nap", args, 0);
  if (!us.ok()) return us.status();
  if (*us < 0) return absl::InvalidArgumentError("nap: microseconds must be >= 0");
  thread_local const bool slack_set = [] {
    ::prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    return true;
  }();
  (void)slack_set;
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(*us);
  while (true) {
    if (ctx.cancelled()) return absl::CancelledError("nap cancelled");
    const auto now = std::chrono::steady_clock::now();
    if (now >= end) break;
    std::this_thread::sleep_until(
        std::min<std::chrono::steady_clock::time_point>(end, now + std::chrono::milliseconds(1)));
  }
  return Value(*us);
}

// nap2(x, us): naps `us` microseconds and returns x; the wall-clock twin of spin2 (the cost is in
// the second argument, which the cost model does not see).
StatusOr<Value> nap2Op(OpContext& ctx, std::span<const Value> args) {
  if (auto st = argCount("nap2", args, 2, 2); !st.ok()) return st;
  const Value us = args[1];
  auto napped = napOp(ctx, std::span<const Value>(&us, 1));
  if (!napped.ok()) return napped.status();
  return args[0];
}

StatusOr<Value> failOp(OpContext&, std::span<const Value> args) {
  if (auto st = argCount("fail", args, 1, 2); !st.ok()) return st;
  auto code = intArg("fail", args, 0);
  if (!code.ok()) return code.status();
  if (*code < 1 || *code > 16)
    return absl::InvalidArgumentError(
        fmt::format("fail: code {} is not an error code 1..16", *code));
  std::string message = "fail";
  if (args.size() == 2) {
    if (!args[1].isText()) return absl::InvalidArgumentError("fail: message must be text");
    message = args[1].asText();
  }
  return Status(static_cast<StatusCode>(*code), message);
}

StatusOr<Value> hashOp(OpContext&, std::span<const Value> args) {
  return Value(static_cast<int64_t>(hashValues(args)));
}

StatusOr<Value> echoOp(OpContext&, std::span<const Value> args) {
  if (args.empty()) return absl::InvalidArgumentError("echo needs 1 argument");
  return args[0];
}

[[noreturn]] StatusOr<Value> crashOp(OpContext&, std::span<const Value>) { std::abort(); }

StatusOr<Value> waitCancelOp(OpContext& ctx, std::span<const Value> args) {
  if (auto st = argCount("wait_cancel", args, 1, 1); !st.ok()) return st;
  auto ms = intArg("wait_cancel", args, 0);
  if (!ms.ok()) return ms.status();
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(*ms);
  while (std::chrono::steady_clock::now() < end) {
    if (ctx.cancelled()) return absl::CancelledError("wait_cancel cancelled");
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  if (ctx.cancelled()) return absl::CancelledError("wait_cancel cancelled");
  return Value(false);
}

// A running sum: int while every element is an int and the sum fits int64, else float.
struct NumberSum {
  int64_t isum = 0;
  double fsum = 0;
  bool is_float = false;
  void add(int64_t x) {
    int64_t next = 0;  // written even on overflow: keep isum intact for the fallback
    if (!is_float && !__builtin_add_overflow(isum, x, &next)) {
      isum = next;
      return;
    }
    add(static_cast<double>(x));
  }
  void add(double x) {
    if (!is_float) fsum = static_cast<double>(isum);
    is_float = true;
    fsum += x;
  }
  Value value() const { return is_float ? Value(fsum) : Value(isum); }
};

// Adds every number in `v` (lists walked depth-first, packed arrays in order).
Status addNumbers(std::string_view op, const Value& v, NumberSum& sum) {
  if (v.isList()) {
    for (const auto& x : v.asList())
      if (auto st = addNumbers(op, x, sum); !st.ok()) return st;
    return absl::OkStatus();
  }
  if (v.isI64s()) {
    for (int64_t x : v.asI64s()) sum.add(x);
    return absl::OkStatus();
  }
  if (v.isF64s()) {
    for (double x : v.asF64s()) sum.add(x);
    return absl::OkStatus();
  }
  if (v.isInt()) {
    sum.add(v.asInt());
    return absl::OkStatus();
  }
  if (v.isDouble()) {
    sum.add(v.asDouble());
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      fmt::format("{}: elements must be int or float, got {}", op, v.typeName()));
}

// Appends every number in `v` (as addNumbers walks it) to ints while all are ints, else to
// doubles.
Status flattenNumbers(std::string_view op, const Value& v, std::vector<int64_t>& ints,
                      std::vector<double>& doubles, bool& is_float) {
  auto toDoubles = [&] {
    if (is_float) return;
    is_float = true;
    doubles.assign(ints.begin(), ints.end());
    ints.clear();
  };
  if (v.isList()) {
    for (const auto& x : v.asList())
      if (auto st = flattenNumbers(op, x, ints, doubles, is_float); !st.ok()) return st;
  } else if (v.isI64s()) {
    if (is_float)
      doubles.insert(doubles.end(), v.asI64s().begin(), v.asI64s().end());
    else
      ints.insert(ints.end(), v.asI64s().begin(), v.asI64s().end());
  } else if (v.isF64s()) {
    toDoubles();
    doubles.insert(doubles.end(), v.asF64s().begin(), v.asF64s().end());
  } else if (v.isInt()) {
    if (is_float)
      doubles.push_back(static_cast<double>(v.asInt()));
    else
      ints.push_back(v.asInt());
  } else if (v.isDouble()) {
    toDoubles();
    doubles.push_back(v.asDouble());
  } else {
    return absl::InvalidArgumentError(
        fmt::format("{}: elements must be int or float, got {}", op, v.typeName()));
  }
  if (ints.size() + doubles.size() > kMaxPackedElements)
    return absl::InvalidArgumentError(
        fmt::format("{}: more than {} elements", op, kMaxPackedElements));
  return absl::OkStatus();
}

// vec.pack(x...): every number in its arguments (lists flattened, packed arrays spliced) as
// one packed array: i64s while all are ints, else f64s. vec.pack([1, 2], 3) = i64s[1, 2, 3].
StatusOr<Value> vecPackOp(OpContext&, std::span<const Value> args) {
  std::vector<int64_t> ints;
  std::vector<double> doubles;
  bool is_float = false;
  for (const auto& a : args)
    if (auto st = flattenNumbers("vec.pack", a, ints, doubles, is_float); !st.ok()) return st;
  return is_float ? Value::f64s(std::move(doubles)) : Value::i64s(std::move(ints));
}

// vec.dot(a, b): the dot product of two equally long vectors, each a packed array or a
// (flat) list of numbers. Int when both are all ints and it fits int64 (OutOfRange when it
// does not), else float, summed in index order.
StatusOr<Value> vecDotOp(OpContext&, std::span<const Value> args) {
  if (auto st = argCount("vec.dot", args, 2, 2); !st.ok()) return st;
  std::vector<int64_t> ints[2];
  std::vector<double> doubles[2];
  bool is_float[2] = {false, false};
  for (int k = 0; k < 2; ++k) {
    if (!args[k].isList() && !args[k].isI64s() && !args[k].isF64s())
      return absl::InvalidArgumentError(
          fmt::format("vec.dot: argument {} must be i64s, f64s or a list of numbers, got {}", k,
                      args[k].typeName()));
    if (args[k].isList() && args[k].listDepth() > 1)
      return absl::InvalidArgumentError(fmt::format("vec.dot: argument {} must be a flat list", k));
    if (auto st = flattenNumbers("vec.dot", args[k], ints[k], doubles[k], is_float[k]); !st.ok())
      return st;
  }
  const size_t n0 = is_float[0] ? doubles[0].size() : ints[0].size();
  const size_t n1 = is_float[1] ? doubles[1].size() : ints[1].size();
  if (n0 != n1)
    return absl::InvalidArgumentError(
        fmt::format("vec.dot: vectors differ in length ({} and {})", n0, n1));
  if (!is_float[0] && !is_float[1]) {
    int64_t sum = 0;
    for (size_t i = 0; i < n0; ++i) {
      int64_t p = 0;
      if (__builtin_mul_overflow(ints[0][i], ints[1][i], &p) ||
          __builtin_add_overflow(sum, p, &sum))
        return absl::OutOfRangeError("vec.dot: the integer dot product overflows int64");
    }
    return Value(sum);
  }
  auto at = [&](int k, size_t i) {
    return is_float[k] ? doubles[k][i] : static_cast<double>(ints[k][i]);
  };
  double sum = 0;
  for (size_t i = 0; i < n0; ++i) sum += at(0, i) * at(1, i);
  return Value(sum);
}

// list.sum(x...): the sum of every number in its arguments, lists (nested ones too) and
// packed arrays included. list.sum([1, 2], 3) = 6; an empty list sums to 0.
StatusOr<Value> listSumOp(OpContext&, std::span<const Value> args) {
  NumberSum sum;
  for (const auto& a : args)
    if (auto st = addNumbers("list.sum", a, sum); !st.ok()) return st;
  return sum.value();
}

// list.make(x...): its arguments as one list (gathers the results of a ref range).
StatusOr<Value> listMakeOp(OpContext&, std::span<const Value> args) {
  return Value::list(std::vector<Value>(args.begin(), args.end()));
}

// list.concat(x...): list arguments spliced, other arguments appended as elements.
StatusOr<Value> listConcatOp(OpContext&, std::span<const Value> args) {
  std::vector<Value> out;
  for (const auto& a : args) {
    if (a.isList())
      out.insert(out.end(), a.asList().begin(), a.asList().end());
    else
      out.push_back(a);
  }
  return Value::list(std::move(out));
}

struct Fnv {
  uint64_t h = 14695981039346656037ull;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ull;
    }
  }
  void u8(uint8_t v) { bytes(&v, 1); }
  void u64(uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    bytes(b, 8);
  }
};

}  // namespace

uint64_t hashValues(std::span<const Value> args) {
  Fnv f;
  for (const auto& v : args) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, Null>) {
            f.u8(0);
          } else if constexpr (std::is_same_v<T, int64_t>) {
            f.u8(1);
            f.u64(static_cast<uint64_t>(x));
          } else if constexpr (std::is_same_v<T, double>) {
            f.u8(2);
            uint64_t bits;
            std::memcpy(&bits, &x, sizeof bits);
            f.u64(bits);
          } else if constexpr (std::is_same_v<T, std::string>) {
            f.u8(3);
            f.u64(x.size());
            f.bytes(x.data(), x.size());
          } else if constexpr (std::is_same_v<T, Bytes>) {
            f.u8(4);
            f.u64(x.data.size());
            f.bytes(x.data.data(), x.data.size());
          } else if constexpr (std::is_same_v<T, Dec50>) {
            f.u8(5);
            for (uint64_t limb : x.limbs) f.u64(limb);
            const auto e = static_cast<uint32_t>(x.exponent);
            const unsigned char eb[4] = {
                static_cast<unsigned char>(e), static_cast<unsigned char>(e >> 8),
                static_cast<unsigned char>(e >> 16), static_cast<unsigned char>(e >> 24)};
            f.bytes(eb, 4);
            f.u8(x.negative ? 1 : 0);
            f.u8(x.kind);
          } else if constexpr (std::is_same_v<T, List>) {
            f.u8(7);
            f.u64(x.items.size());
            f.u64(hashValues(x.items));
          } else if constexpr (std::is_same_v<T, I64s>) {
            f.u8(8);
            f.u64(x.items.size());
            for (int64_t e : x.items) f.u64(static_cast<uint64_t>(e));
          } else if constexpr (std::is_same_v<T, F64s>) {
            f.u8(9);
            f.u64(x.items.size());
            for (double e : x.items) {
              uint64_t bits;
              std::memcpy(&bits, &e, sizeof bits);
              f.u64(bits);
            }
          } else {
            f.u8(6);
            f.u8(x ? 1 : 0);
          }
        },
        v.variant());
  }
  return f.h;
}

// Built-ins whose result depends on their arguments alone, bitwise (sums in argument order, no
// reassociation): verify may sample them. The test operations are not declared.
// The built-in pure operations: same result for the same arguments, and they never wait (CPU
// work bounded by their arguments), so a lone token of one may run on the link thread.
constexpr OpFlags kPure = OpFlags::kDeterministic | OpFlags::kNonBlocking;

Status registerLeibnizOps(Registry& r) {
  for (auto st : {
           r.add("leibniz.term", Weight::kLight, leibnizTerm, kPure),
           r.add("leibniz.term_dec50", Weight::kLight, leibnizTermDec50, kPure),
           r.add(
               "leibniz.chunk", Weight::kLight,
               [](OpContext&, std::span<const Value> a) {
                 return sumInOrder("leibniz.chunk", a, false);
               },
               kPure),
           r.add(
               "leibniz.partial", Weight::kLight,
               [](OpContext&, std::span<const Value> a) {
                 return sumInOrder("leibniz.partial", a, false);
               },
               kPure),
           r.add(
               "leibniz.final", Weight::kLight,
               [](OpContext&, std::span<const Value> a) {
                 return sumInOrder("leibniz.final", a, true);
               },
               kPure),
       }) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

Status registerGeneralOps(Registry& r) {
  for (auto st : {
           r.add("hash", Weight::kLight, hashOp, kPure),
           r.add("echo", Weight::kLight, echoOp, kPure),
           r.add("list.make", Weight::kLight, listMakeOp, kPure),
           r.add("list.concat", Weight::kLight, listConcatOp, kPure),
           r.add("list.sum", Weight::kLight, listSumOp, kPure),
           r.add("vec.pack", Weight::kLight, vecPackOp, kPure),
           r.add("vec.dot", Weight::kLight, vecDotOp, kPure),
       }) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

Status registerTestOps(Registry& r) {
  for (auto st : {
           r.add("sleep", Weight::kMedium, sleepOp),
           r.add("spin", Weight::kLight, spinOp),
           r.add("spin2", Weight::kLight, spin2Op),
           r.add("nap", Weight::kLight, napOp),
           r.add("nap2", Weight::kLight, nap2Op),
           r.add("fail", Weight::kLight, failOp),
           r.add("crash", Weight::kLight, crashOp),
           r.add("wait_cancel", Weight::kMedium, waitCancelOp),
       }) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

Status registerBuiltinOps(Registry& r) {
  if (auto st = registerLeibnizOps(r); !st.ok()) return st;
  return registerGeneralOps(r);
}

}  // namespace tokengate::node
