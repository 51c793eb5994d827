// Packed numeric arrays (issue 15 item 3): i64s / f64s in the C++ type, the wire codec
// through real decoded frames, JSON both ways (non-finite doubles as strings), the
// per-value limits at validation, equality and the display form.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/job_json.h"
#include "common/wire.h"

namespace tokengate {
namespace {

namespace json = boost::json;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Value ints() { return Value::i64s({0, -1, INT64_MAX, INT64_MIN, 42}); }
Value doubles() { return Value::f64s({0.5, -0.0, 1e300, kInf, -kInf, kNaN, 3.0}); }

TEST(PackedArray, TypeBasics) {
  const Value i = ints(), d = doubles();
  ASSERT_TRUE(i.isI64s());
  ASSERT_TRUE(d.isF64s());
  EXPECT_FALSE(i.isList());
  EXPECT_STREQ(i.typeName(), "i64s");
  EXPECT_STREQ(d.typeName(), "f64s");
  EXPECT_EQ(i.asI64s().size(), 5u);
  EXPECT_EQ(d.asF64s()[6], 3.0);
  // One 8-byte word per element: far less than a List of Values.
  EXPECT_EQ(Value::f64s(std::vector<double>(1000, 1.0)).byteSize(), 8000u);
  EXPECT_GT(Value::list(std::vector<Value>(1000, Value(1.0))).byteSize(), 3u * 8000u);
  EXPECT_EQ(i.listDepth(), 0);
  EXPECT_TRUE(std::isnan(d.toDouble()));
}

TEST(PackedArray, EqualityIsElementWiseWithNaNEqualToItself) {
  EXPECT_EQ(doubles(), doubles());  // holds a NaN: still equal to itself
  EXPECT_EQ(Value(kNaN), Value(kNaN));
  EXPECT_EQ(Value::list({Value(kNaN)}), Value::list({Value(kNaN)}));
  EXPECT_EQ(Value::f64s({0.0}), Value::f64s({-0.0}));  // IEEE ==, as for scalars
  EXPECT_NE(Value::f64s({1.0, 2.0}), Value::f64s({1.0}));
  EXPECT_NE(Value::f64s({kNaN}), Value::f64s({1.0}));
  // Kinds never compare equal across each other, even with the same numbers.
  EXPECT_NE(Value::i64s({1, 2}), Value::f64s({1.0, 2.0}));
  EXPECT_NE(Value::i64s({1, 2}), Value::list({Value(1), Value(2)}));
  EXPECT_NE(Value::i64s({}), Value::f64s({}));
  EXPECT_NE(Value(1.0), Value(int64_t{1}));
}

TEST(PackedArray, DisplayForm) {
  EXPECT_EQ(Value::i64s({1, -2}).toString(), "i64s[1, -2]");
  EXPECT_EQ(Value::f64s({0.5, kInf, -kInf, kNaN}).toString(), "f64s[0.5, inf, -inf, nan]");
  EXPECT_EQ(Value::i64s({}).toString(), "i64s[]");
  EXPECT_EQ(Value::i64s({1, 2, 3, 4}).toString(2), "i64s[1, 2, ... (4 in all)]");
  EXPECT_EQ(Value::list({Value::f64s({1, 2, 3}), Value(1)}).toString(1),
            "[f64s[1, ... (3 in all)], ... (2 in all)]");
}

TEST(PackedArray, RoundTripsThroughWireValue) {
  for (const auto& v : {ints(), doubles(), Value::i64s({}), Value::f64s({}),
                        Value::list({ints(), Value::list({doubles()})})}) {
    capnp::MallocMessageBuilder msg;
    auto b = msg.initRoot<wire::Value>();
    toWire(v, b);
    EXPECT_EQ(fromWire(b.asReader()), v) << v.toString();
  }
  // Bit-exact doubles: -0.0 keeps its sign and NaN stays NaN through the wire.
  capnp::MallocMessageBuilder msg;
  auto b = msg.initRoot<wire::Value>();
  toWire(doubles(), b);
  ASSERT_EQ(b.which(), wire::Value::F64S);
  const Value back = fromWire(b.asReader());
  EXPECT_TRUE(std::signbit(back.asF64s()[1]));
  EXPECT_TRUE(std::isnan(back.asF64s()[5]));
}

// A SubmitJob frame and a result batch carrying large packed arrays through decodeFrame.
TEST(PackedArray, SurvivesDecodedFrames) {
  std::vector<double> big(100000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<double>(i) / 3;
  const Value arr = Value::f64s(big);
  {
    auto f = newFrame();
    JobSpec job;
    TokenSpec t;
    t.op = "vec.dot";
    t.args.push_back(Arg::val(arr));
    t.args.push_back(Arg::val(ints()));
    job.tokens.push_back(t);
    toWire(job, f.root.initSubmitJob().initJob());
    const std::string bytes = f.encode();
    // Packed: ~8 bytes per element on the wire.
    EXPECT_LT(bytes.size(), big.size() * 8 + 1024);
    auto d = decodeFrame(bytes.data(), bytes.size());
    ASSERT_TRUE(d.ok()) << d.status();
    auto back = fromWire((*d)->root().getSubmitJob().getJob());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->tokens[0].args[0].value, arr);
    EXPECT_EQ(back->tokens[0].args[1].value, ints());
  }
  {
    auto f = newFrame();
    auto r = f.root.initResultBatch().initResults(1)[0];
    toWire(arr, r.initValue());
    const std::string bytes = f.encode();
    auto d = decodeFrame(bytes.data(), bytes.size());
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(fromWire((*d)->root().getResultBatch().getResults()[0].getValue()), arr);
  }
}

TEST(PackedArray, JsonBothWays) {
  EXPECT_EQ(json::serialize(valueToJson(Value::i64s({1, -2, INT64_MAX}))),
            R"({"i64s":[1,-2,9223372036854775807]})");
  EXPECT_EQ(json::serialize(valueToJson(Value::f64s({0.5, kInf, -kInf, kNaN}))),
            R"({"f64s":[5E-1,"inf","-inf","nan"]})");
  EXPECT_EQ(json::serialize(valueToJson(Value::f64s({}))), R"({"f64s":[]})");
  for (const auto& v : {ints(), doubles(), Value::list({ints(), doubles()})}) {
    auto back = valueFromJson(valueToJson(v));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, v) << v.toString();
  }
  // Integers are accepted in f64s (as doubles); the spellings {"double": ...} takes too.
  auto mixed = valueFromJson(json::parse(R"({"f64s": [1, 2.5, "Infinity", "-inf", "NaN"]})"));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(*mixed, Value::f64s({1.0, 2.5, kInf, -kInf, kNaN}));
  // Through parseJsonText too: the integer rule applies inside i64s.
  auto text = parseJsonText(R"({"i64s": [9223372036854775807, -9223372036854775808]})");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*valueFromJson(*text), Value::i64s({INT64_MAX, INT64_MIN}));
  EXPECT_FALSE(parseJsonText(R"({"i64s": [9223372036854775808]})").ok());
}

TEST(PackedArray, JsonRejectsWrongElements) {
  for (const char* bad : {R"({"i64s": [1, 2.5]})", R"({"i64s": ["1"]})", R"({"i64s": [[1]]})",
                          R"({"i64s": 1})", R"({"f64s": ["one"]})", R"({"f64s": [null]})",
                          R"({"f64s": [[1.0]]})", R"({"f64s": {"a": 1}})"}) {
    auto v = valueFromJson(json::parse(bad));
    EXPECT_FALSE(v.ok()) << bad;
    EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  auto v = valueFromJson(json::parse(R"({"i64s": [1, 2, 0.5]})"));
  EXPECT_NE(v.status().message().find("element 2"), std::string::npos) << v.status();
}

TEST(PackedArray, JobJsonArgsTakePackedArrays) {
  auto job = parseJobJson(R"({"tokens":[
      {"op":"vec.dot","args":[{"f64s":[1, 2, 3]}, {"value": {"i64s": [4, 5, 6]}}],
       "output":true}]})");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->validate(10).ok());
  EXPECT_EQ(job->tokens[0].args[0].value, Value::f64s({1, 2, 3}));
  EXPECT_EQ(job->tokens[0].args[1].value, Value::i64s({4, 5, 6}));
  auto again = jobFromJson(jobToJson(*job));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->tokens[0].args[0].value, job->tokens[0].args[0].value);
  EXPECT_EQ(again->tokens[0].args[1].value, job->tokens[0].args[1].value);
}

TEST(PackedArray, PerValueLimitsAtValidation) {
  EXPECT_TRUE(Value::f64s(std::vector<double>(kMaxPackedElements)).check().ok());
  const Value too_many = Value::f64s(std::vector<double>(kMaxPackedElements + 1));
  const Status st = too_many.check();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("f64s of 2097153 elements"), std::string::npos) << st;
  EXPECT_NE(st.message().find("2097152-element limit"), std::string::npos) << st;
  // The byte limit holds for every kind: a 17 MiB text, a list of packed arrays.
  EXPECT_EQ(Value(std::string(kMaxValueBytes + 1, 'x')).check().code(),
            StatusCode::kInvalidArgument);
  const Value half = Value::i64s(std::vector<int64_t>(kMaxPackedElements / 2));
  EXPECT_TRUE(half.check().ok());
  const Value two_halves = Value::list({half, half});
  const Status list_st = two_halves.check();
  EXPECT_EQ(list_st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(list_st.message().find("limit per value"), std::string::npos) << list_st;

  // At admission (JobSpec::validate), naming the token and the argument, whatever the frame
  // limit (a coordinator with a 256 MiB frame limit still refuses a 17 MiB value).
  JobSpec job;
  TokenSpec t;
  t.op = "vec.dot";
  t.args.push_back(Arg::val(ints()));
  t.args.push_back(Arg::val(too_many));
  job.tokens.push_back(t);
  const Status v = job.validate(10, size_t{256} << 20);
  EXPECT_EQ(v.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(v.message().find("token spec 0 arg 1: f64s of"), std::string::npos) << v;
  job.tokens[0].args[1] = Arg::val(half);
  EXPECT_TRUE(job.validate(10, size_t{256} << 20).ok());
}

}  // namespace
}  // namespace tokengate
