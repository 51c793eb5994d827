#include <gtest/gtest.h>

#include <limits>
#include <thread>

#include "node/ops/builtin_ops.h"

namespace tokengate::node {
namespace {

class OpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registerBuiltinOps(registry_).ok());
    ASSERT_TRUE(registerTestOps(registry_).ok());
  }

  StatusOr<Value> call(std::string_view name, std::vector<Value> args) {
    const Operation* op = registry_.find(name);
    EXPECT_NE(op, nullptr) << name;
    if (op == nullptr) return absl::NotFoundError("missing");
    OpContext ctx;
    return invokeOperation(*op, ctx, args);
  }

  // The Leibniz pyramid computed through the operations, grouped exactly like
  // makeLeibnizJob: terms -> chunks -> partials -> final.
  Value pyramid(uint64_t terms, Precision p, uint32_t chunk, uint32_t partials) {
    const char* term_op = p == Precision::kDouble ? "leibniz.term" : "leibniz.term_dec50";
    std::vector<Value> chunk_values;
    for (uint64_t c = 0; c < terms / chunk; ++c) {
      std::vector<Value> ts;
      for (uint64_t k = c * chunk; k < (c + 1) * chunk; ++k) {
        auto t = call(term_op, {Value(static_cast<int64_t>(k))});
        EXPECT_TRUE(t.ok());
        ts.push_back(*t);
      }
      auto s = call("leibniz.chunk", ts);
      EXPECT_TRUE(s.ok()) << s.status();
      chunk_values.push_back(*s);
    }
    const size_t per = chunk_values.size() / partials;
    std::vector<Value> parts;
    for (size_t i = 0; i < partials; ++i) {
      std::vector<Value> in(chunk_values.begin() + static_cast<long>(i * per),
                            chunk_values.begin() + static_cast<long>((i + 1) * per));
      auto s = call("leibniz.partial", in);
      EXPECT_TRUE(s.ok());
      parts.push_back(*s);
    }
    auto pi = call("leibniz.final", parts);
    EXPECT_TRUE(pi.ok());
    return *pi;
  }

  Registry registry_;
};

TEST_F(OpsTest, DefaultWeights) {
  for (const char* n : {"leibniz.term", "leibniz.term_dec50", "leibniz.chunk", "leibniz.partial",
                        "leibniz.final", "spin", "fail", "hash", "echo", "crash"})
    EXPECT_EQ(registry_.find(n)->weight, Weight::kLight) << n;
  EXPECT_EQ(registry_.find("sleep")->weight, Weight::kMedium);
  EXPECT_EQ(registry_.find("wait_cancel")->weight, Weight::kMedium);
}

TEST_F(OpsTest, LeibnizTerms) {
  EXPECT_EQ(call("leibniz.term", {Value(0)})->asDouble(), 1.0);
  EXPECT_EQ(call("leibniz.term", {Value(1)})->asDouble(), -1.0 / 3.0);
  EXPECT_EQ(call("leibniz.term", {Value(5)})->asDouble(), leibnizTermDouble(5));
  auto d = call("leibniz.term_dec50", {Value(3)});
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->isDec());
  EXPECT_EQ(toBigFloat(d->asDec()), leibnizTermDec(3));
  EXPECT_EQ(call("leibniz.term", {Value(1.5)}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(call("leibniz.term", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(call("leibniz.term_dec50", {Value("x")}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(OpsTest, SumsKeepArgumentOrderAndType) {
  // Order matters in floating point: (1e16 + 1) + -1e16 = 0 but 1e16 + -1e16 + 1 = 1.
  EXPECT_EQ(call("leibniz.chunk", {Value(1e16), Value(1.0), Value(-1e16)})->asDouble(),
            (1e16 + 1.0) + -1e16);
  EXPECT_EQ(call("leibniz.partial", {Value(1e16), Value(-1e16), Value(1.0)})->asDouble(), 1.0);
  EXPECT_EQ(call("leibniz.final", {Value(0.25), Value(0.5)})->asDouble(), 3.0);
  EXPECT_EQ(call("leibniz.chunk", {Value(2.0)})->asDouble(), 2.0);
  EXPECT_EQ(call("leibniz.chunk", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(call("leibniz.chunk", {Value(1.0), Value(int64_t{1})}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(call("leibniz.partial", {Value(int64_t{1})}).status().code(),
            StatusCode::kInvalidArgument);
  Dec50 one = fromBigFloat(BigFloat(1));
  EXPECT_EQ(call("leibniz.final", {Value(one), Value(1.0)}).status().code(),
            StatusCode::kInvalidArgument);
  auto dec = call("leibniz.final", {Value(one), Value(one)});
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(toBigFloat(dec->asDec()), BigFloat(8));
}

TEST_F(OpsTest, PyramidMatchesLeibnizLocalBitExactly) {
  struct Case {
    uint64_t terms;
    uint32_t chunk, partials;
  };
  for (Case c : {Case{60, 6, 5}, Case{1000, 10, 10}, Case{10000, 1000, 10}}) {
    for (Precision p : {Precision::kDouble, Precision::kDec50}) {
      Value got = pyramid(c.terms, p, c.chunk, c.partials);
      Value want = leibnizLocal(c.terms, p, c.chunk, c.partials);
      EXPECT_EQ(got, want) << c.terms << " terms, "
                           << (p == Precision::kDouble ? "double" : "dec50") << ": "
                           << got.toString() << " vs " << want.toString();
    }
  }
}

TEST_F(OpsTest, FailReturnsTheRequestedError) {
  auto r = call("fail", {Value(int64_t{14}), Value("node on fire")});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(), "node on fire");
  EXPECT_EQ(call("fail", {Value(int64_t{0}), Value("x")}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(call("fail", {Value(int64_t{99})}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(OpsTest, HashIsFnv1aOfTheArguments) {
  // FNV-1a of no bytes is the offset basis.
  EXPECT_EQ(static_cast<uint64_t>(call("hash", {})->asInt()), 14695981039346656037ull);
  auto a = call("hash", {Value(1), Value("abc")});
  auto b = call("hash", {Value(1), Value("abc")});
  auto c = call("hash", {Value(1), Value("abd")});
  auto d = call("hash", {Value("abc"), Value(1)});
  EXPECT_EQ(a->asInt(), b->asInt());
  EXPECT_NE(a->asInt(), c->asInt());
  EXPECT_NE(a->asInt(), d->asInt());
  EXPECT_NE(call("hash", {Value(1)})->asInt(), call("hash", {Value(1.0)})->asInt());
}

TEST_F(OpsTest, ListOperations) {
  const Value l12 = Value::list({Value(1), Value(2)});
  EXPECT_EQ(*call("list.make", {Value(1), Value(2)}), l12);
  EXPECT_EQ(*call("list.make", {}), Value::list({}));
  EXPECT_EQ(*call("list.concat", {l12, Value(3), Value::list({Value("x")})}),
            Value::list({Value(1), Value(2), Value(3), Value("x")}));
  // Sums walk nested lists; ints stay int, a float anywhere makes a float.
  EXPECT_EQ(*call("list.sum", {l12, Value::list({Value::list({Value(3)})}), Value(4)}), Value(10));
  EXPECT_EQ(*call("list.sum", {Value::list({})}), Value(0));
  EXPECT_EQ(*call("list.sum", {Value::list({Value(1), Value(0.5)})}), Value(1.5));
  // int64 overflow falls back to float instead of wrapping.
  auto big = call("list.sum", {Value::list({Value(INT64_MAX), Value(INT64_MAX)})});
  ASSERT_TRUE(big->isDouble());
  EXPECT_EQ(big->asDouble(), 2.0 * static_cast<double>(INT64_MAX));
  auto bad = call("list.sum", {Value::list({Value(1), Value("two")})});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("got text"), std::string::npos) << bad.status();
  // Lists hash by content and structure.
  EXPECT_EQ(call("hash", {l12})->asInt(),
            call("hash", {Value::list({Value(1), Value(2)})})->asInt());
  EXPECT_NE(call("hash", {l12})->asInt(), call("hash", {Value(1), Value(2)})->asInt());
  EXPECT_NE(call("hash", {Value::list({l12})})->asInt(), call("hash", {l12})->asInt());
}

TEST_F(OpsTest, PackedArrayOperations) {
  const double inf = std::numeric_limits<double>::infinity();
  // list.sum takes packed arrays beside lists and scalars.
  EXPECT_EQ(*call("list.sum", {Value::i64s({1, 2, 3}), Value::list({Value(4)})}), Value(10));
  EXPECT_EQ(*call("list.sum", {Value::f64s({0.5, 0.25}), Value::i64s({1})}), Value(1.75));
  EXPECT_EQ(*call("list.sum", {Value::f64s({})}), Value(0));
  auto big = call("list.sum", {Value::i64s({INT64_MAX, 1})});
  ASSERT_TRUE(big->isDouble());
  // vec.pack flattens numbers into one packed array: i64s while all are ints.
  EXPECT_EQ(*call("vec.pack", {Value::list({Value(1), Value(2)}), Value(3)}),
            Value::i64s({1, 2, 3}));
  EXPECT_EQ(*call("vec.pack", {Value::i64s({1}), Value(2.5), Value::list({Value(3)})}),
            Value::f64s({1.0, 2.5, 3.0}));
  EXPECT_EQ(*call("vec.pack", {}), Value::i64s({}));
  EXPECT_EQ(call("vec.pack", {Value("x")}).status().code(), StatusCode::kInvalidArgument);
  // vec.dot: packed or flat lists, int when both are ints.
  EXPECT_EQ(*call("vec.dot", {Value::i64s({1, 2, 3}), Value::i64s({4, 5, 6})}), Value(32));
  EXPECT_EQ(*call("vec.dot", {Value::f64s({0.5, 2}), Value::list({Value(2), Value(0.25)})}),
            Value(1.5));
  EXPECT_EQ(*call("vec.dot", {Value::f64s({inf, 1}), Value::f64s({1, 1})}), Value(inf));
  EXPECT_EQ(*call("vec.dot", {Value::f64s({}), Value::i64s({})}), Value(0.0));
  EXPECT_EQ(call("vec.dot", {Value::i64s({INT64_MAX}), Value::i64s({2})}).status().code(),
            StatusCode::kOutOfRange);
  auto len = call("vec.dot", {Value::i64s({1, 2}), Value::i64s({1})});
  EXPECT_EQ(len.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(len.status().message().find("differ in length (2 and 1)"), std::string::npos);
  EXPECT_EQ(call("vec.dot", {Value(1), Value(2)}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(
      call("vec.dot", {Value::list({Value::list({Value(1)})}), Value::i64s({1})}).status().code(),
      StatusCode::kInvalidArgument);
  // Packed arrays hash by kind and content: i64s[1, 2] is neither f64s[1, 2] nor [1, 2].
  const auto h = [&](Value v) { return call("hash", {std::move(v)})->asInt(); };
  EXPECT_EQ(h(Value::i64s({1, 2})), h(Value::i64s({1, 2})));
  EXPECT_NE(h(Value::i64s({1, 2})), h(Value::f64s({1, 2})));
  EXPECT_NE(h(Value::i64s({1, 2})), h(Value::list({Value(1), Value(2)})));
  EXPECT_NE(h(Value::i64s({1, 2})), h(Value::i64s({2, 1})));
}

TEST_F(OpsTest, ResultsOverThePerValueLimitAreAnError) {
  auto r = call("vec.pack",
                {Value::i64s(std::vector<int64_t>(kMaxPackedElements, 1)), Value::i64s({1})});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  // echo of an oversized value: refused by the registry's result check, naming the op.
  auto e = call("echo", {Value(std::string(kMaxValueBytes + 1, 'x'))});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("echo: result text value of"), std::string::npos)
      << e.status();
}

TEST_F(OpsTest, ResultsNestedTooDeepAreAnError) {
  Value v(1);
  for (int i = 0; i <= kMaxListDepth; ++i) v = Value::list({v});
  auto r = call("echo", {v});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(OpsTest, EchoSleepSpin) {
  EXPECT_EQ(*call("echo", {Value("hi"), Value(2)}), Value("hi"));
  EXPECT_EQ(call("echo", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*call("sleep", {Value(1)}), Value(1));
  EXPECT_EQ(*call("spin", {Value(50)}), Value(50));
  EXPECT_EQ(call("sleep", {Value(-1)}).status().code(), StatusCode::kInvalidArgument);
}

// nap/nap2: wall-clock cost (a lower bound only: an upper bound would flake on a loaded box).
TEST_F(OpsTest, NapSleepsItsArgumentAndNap2ReturnsItsFirst) {
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(*call("nap", {Value(int64_t{3000})}), Value(int64_t{3000}));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::microseconds(3000));
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(*call("nap2", {Value("x"), Value(int64_t{2000})}), Value("x"));
  EXPECT_GE(std::chrono::steady_clock::now() - t1, std::chrono::microseconds(2000));
  EXPECT_EQ(call("nap", {Value(int64_t{-1})}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(call("nap2", {Value(int64_t{1})}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_.find("nap")->weight, Weight::kLight);
}

TEST_F(OpsTest, LongOperationsHonourCancel) {
  for (const char* name : {"sleep", "spin", "nap", "wait_cancel"}) {
    std::atomic<uint64_t> word{0};
    OpContext ctx(1, 1, 0, &word, 1);
    std::thread canceller([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      word = 1;
    });
    // 60 s (spin: 60 s in microseconds): only a cancel ends these in time.
    const std::string_view n = name;
    Value arg = n == "spin" || n == "nap" ? Value(int64_t{60'000'000}) : Value(60'000);
    Value args[] = {arg};
    auto r = invokeOperation(*registry_.find(name), ctx, args);
    canceller.join();
    EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << name;
  }
}

TEST_F(OpsTest, WaitCancelTimesOutWithoutCancel) {
  auto r = call("wait_cancel", {Value(5)});
  ASSERT_TRUE(r.ok());
}

TEST_F(OpsTest, CrashAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH((void)call("crash", {}), "");
}

}  // namespace
}  // namespace tokengate::node
