// List values (issue 15 item 3): the C++ type, the wire codec through real decoded frames,
// JSON both ways, the nesting limit and the frame-size accounting.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/job_json.h"
#include "common/wire.h"

namespace tokengate {
namespace {

namespace json = boost::json;

// [[[...[x]...]]] with `depth` levels of list around x.
Value nested(int depth, Value x = Value(int64_t{7})) {
  for (int i = 0; i < depth; ++i) x = Value::list({std::move(x)});
  return x;
}

Value sample() {
  return Value::list({Value(int64_t{1}), Value(2.5), Value("three"), Value(),
                      Value::list({Value(true), Value(Bytes{std::string("\0\xff", 2)})}),
                      Value::list({}), Value(fromBigFloat(BigFloat("0.1")))});
}

TEST(ListValue, TypeBasics) {
  const Value v = sample();
  ASSERT_TRUE(v.isList());
  EXPECT_STREQ(v.typeName(), "list");
  EXPECT_EQ(v.asList().size(), 7u);
  EXPECT_EQ(v.listDepth(), 2);
  EXPECT_EQ(Value(int64_t{1}).listDepth(), 0);
  EXPECT_EQ(nested(5).listDepth(), 5);
  EXPECT_EQ(Value::list({Value(int64_t{1}), Value("a")}).toString(), "[1, \"a\"]");
  EXPECT_NE(v, Value::list({}));
  EXPECT_EQ(v, sample());
  // Every element is counted: a list of 1000 ints is more than 1000 x 8 bytes, and a list
  // of long texts at least the sum of their lengths.
  std::vector<Value> ints(1000, Value(int64_t{0}));
  EXPECT_GE(Value::list(ints).byteSize(), 1000u * (8 + 24));
  std::vector<Value> texts(10, Value(std::string(1000, 'x')));
  EXPECT_GE(Value::list({Value::list(texts)}).byteSize(), 10u * 1000);
}

TEST(ListValue, RoundTripsThroughWireValue) {
  for (const auto& v : {sample(), Value::list({}), nested(kMaxListDepth)}) {
    capnp::MallocMessageBuilder msg;
    auto b = msg.initRoot<wire::Value>();
    toWire(v, b);
    EXPECT_EQ(fromWire(b.asReader()), v) << v.toString();
  }
}

// The deepest paths a list travels: a SubmitJob frame (client -> coordinator), a token batch
// (coordinator -> node) and a result batch (node -> coordinator), each through decodeFrame.
TEST(ListValue, DeepestAllowedListSurvivesEveryFrameKind) {
  const Value deep = Value::list({nested(kMaxListDepth - 1), sample()});
  ASSERT_EQ(deep.listDepth(), kMaxListDepth);
  {
    auto f = newFrame();
    JobSpec job;
    TokenSpec t;
    t.op = "echo";
    t.args.push_back(Arg::val(deep));
    job.tokens.push_back(t);
    toWire(job, f.root.initSubmitJob().initJob());
    const std::string bytes = f.encode();
    auto d = decodeFrame(bytes.data(), bytes.size());
    ASSERT_TRUE(d.ok()) << d.status();
    auto back = fromWire((*d)->root().getSubmitJob().getJob());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->tokens[0].args[0].value, deep);
    EXPECT_TRUE(back->validate(10, kDefaultMaxFrameBytes).ok());
  }
  {
    auto f = newFrame();
    auto tb = f.root.initTokenBatch();
    tb.initOps(1).set(0, "echo");
    toWire(deep, tb.initTokens(1)[0].initArgs(1)[0]);
    const std::string bytes = f.encode();
    auto d = decodeFrame(bytes.data(), bytes.size());
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(fromWire((*d)->root().getTokenBatch().getTokens()[0].getArgs()[0]), deep);
  }
  {
    auto f = newFrame();
    auto r = f.root.initResultBatch().initResults(1)[0];
    toWire(deep, r.initValue());
    const std::string bytes = f.encode();
    auto d = decodeFrame(bytes.data(), bytes.size());
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(fromWire((*d)->root().getResultBatch().getResults()[0].getValue()), deep);
  }
}

TEST(ListValue, AbsurdNestingOnTheWireIsAMalformedFrame) {
  auto f = newFrame();
  auto r = f.root.initResultBatch().initResults(1)[0];
  toWire(nested(200), r.initValue());
  const std::string bytes = f.encode();
  auto d = decodeFrame(bytes.data(), bytes.size());
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
}

TEST(ListValue, JsonArraysAreLists) {
  auto v = valueFromJson(
      json::parse(R"([1, 2.5, "three", null, [true, {"bytes": "00ff"}], [], {"double": "-inf"}])"));
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_TRUE(v->isList());
  ASSERT_EQ(v->asList().size(), 7u);
  EXPECT_EQ(v->asList()[0], Value(int64_t{1}));
  EXPECT_EQ(v->asList()[4].asList()[1], Value(Bytes{std::string("\0\xff", 2)}));
  EXPECT_TRUE(v->asList()[5].asList().empty());
  EXPECT_EQ(v->asList()[6].asDouble(), -std::numeric_limits<double>::infinity());
  // And back: the same JSON (non-finite doubles in their object form, valid JSON).
  EXPECT_EQ(json::serialize(valueToJson(*v)),
            R"([1,2.5E0,"three",null,[true,{"bytes":"00ff"}],[],{"double":"-inf"}])");
  auto again = valueFromJson(valueToJson(sample()));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, sample());
}

TEST(ListValue, JsonNestingLimit) {
  std::string ok_text(kMaxListDepth, '['), bad_text(kMaxListDepth + 1, '[');
  ok_text += "1" + std::string(kMaxListDepth, ']');
  bad_text += "1" + std::string(kMaxListDepth + 1, ']');
  auto ok = valueFromJson(json::parse(ok_text));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->listDepth(), kMaxListDepth);
  auto bad = valueFromJson(json::parse(bad_text));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("nest deeper"), std::string::npos) << bad.status();
}

TEST(ListValue, JobJsonArgsTakeLists) {
  auto job = parseJobJson(R"({"tokens":[
      {"op":"list.sum","args":[[1, 2, 3], {"value": [[4], [5]]}]},
      {"op":"list.concat","args":[{"ref":0}, [6]],"output":true}]})");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->validate(10).ok());
  EXPECT_EQ(job->tokens[0].args[0].value,
            Value::list({Value(int64_t{1}), Value(int64_t{2}), Value(int64_t{3})}));
  EXPECT_EQ(job->tokens[0].args[1].value.listDepth(), 2);
  auto again = jobFromJson(jobToJson(*job));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->tokens[0].args[1].value, job->tokens[0].args[1].value);
  // A step applies to int values only.
  auto stepped =
      parseJobJson(R"({"tokens":[{"op":"x","repeat":2,"args":[{"value":[1],"step":1}]}]})");
  ASSERT_TRUE(stepped.ok());
  EXPECT_EQ(stepped->validate(10).code(), StatusCode::kInvalidArgument);
}

TEST(ListValue, ValidationCountsListBytesAndDepth) {
  JobSpec job;
  TokenSpec t;
  t.op = "echo";
  // 100k ints: ~3.2 MB on the wire, more than a 1 MiB frame limit allows.
  t.args.push_back(Arg::val(Value::list(std::vector<Value>(100000, Value(int64_t{1})))));
  job.tokens.push_back(t);
  EXPECT_EQ(job.validate(10, 1 << 20).code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(job.validate(10, 64 << 20).ok());
  job.tokens[0].args[0] = Arg::val(nested(kMaxListDepth + 1));
  EXPECT_EQ(job.validate(10).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tokengate
