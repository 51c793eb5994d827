// JSON rules shared by tgctl job files and the gateway: the int64 integer
// rule, non-finite doubles, and value + step overflow caught at validation.
#include "common/job_json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace tokengate {
namespace {

namespace json = boost::json;

TEST(JobJson, IntegerLiteralsMustFitInt64) {
  EXPECT_TRUE(checkIntegerLiterals(R"({"a":9223372036854775807,"b":-9223372036854775808})").ok());
  EXPECT_EQ(checkIntegerLiterals(R"({"a":9223372036854775808})").code(),
            StatusCode::kInvalidArgument);  // 2^63: was accepted as uint64
  EXPECT_EQ(checkIntegerLiterals(R"({"a":18446744073709551616})").code(),
            StatusCode::kInvalidArgument);  // 2^64: was turned into a double
  EXPECT_EQ(checkIntegerLiterals(R"([-9223372036854775809])").code(), StatusCode::kInvalidArgument);
  // Doubles and strings are not integer literals.
  EXPECT_TRUE(
      checkIntegerLiterals(R"({"a":1e300,"b":18446744073709551616.0,"c":"99999999999999999999"})")
          .ok());
  EXPECT_TRUE(checkIntegerLiterals(R"({"k\"99999999999999999999":1})").ok());
  EXPECT_EQ(parseJsonText(R"({"x":[1,2,99999999999999999999]})").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(parseJsonText("[[[1]]]", 2).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(parseJsonText("[[1]]", 2).ok());
}

TEST(JobJson, NonFiniteDoublesRoundTrip) {
  for (double d :
       {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
        std::numeric_limits<double>::quiet_NaN()}) {
    json::value j = valueToJson(Value(d));
    ASSERT_TRUE(j.is_object()) << json::serialize(j);
    std::string text = json::serialize(j);
    auto back = valueFromJson(json::parse(text));
    ASSERT_TRUE(back.ok()) << text;
    ASSERT_TRUE(back->isDouble());
    if (std::isnan(d)) {
      EXPECT_TRUE(std::isnan(back->asDouble()));
    } else {
      EXPECT_EQ(back->asDouble(), d);
    }
  }
  EXPECT_EQ(json::serialize(valueToJson(Value(std::numeric_limits<double>::infinity()))),
            R"({"double":"inf"})");
  EXPECT_EQ(valueToJson(Value(1.5)), json::value(1.5));
  EXPECT_EQ(valueFromJson(json::parse(R"({"double":2.5})"))->asDouble(), 2.5);
  EXPECT_FALSE(valueFromJson(json::parse(R"({"double":"infinite"})")).ok());
}

TEST(JobJson, ValuePlusStepOverflowIsRefused) {
  auto job = parseJobJson(
      R"({"tokens":[{"op":"x","repeat":3,"args":[{"value":9223372036854775806,"step":1}]}]})");
  ASSERT_TRUE(job.ok());
  Status st = job->validate(1000);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("overflows"), std::string_view::npos) << st.message();
  job = parseJobJson(
      R"({"tokens":[{"op":"x","repeat":2,"args":[{"value":9223372036854775806,"step":1}]}]})");
  ASSERT_TRUE(job.ok());
  EXPECT_TRUE(job->validate(1000).ok());  // the last value is exactly INT64_MAX
  job = parseJobJson(
      R"({"tokens":[{"op":"x","repeat":3,"args":[{"value":0,"step":9223372036854775807}]}]})");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->validate(1000).code(), StatusCode::kInvalidArgument);
  job = parseJobJson(
      R"({"tokens":[{"op":"x"},{"op":"y","repeat":3,"args":[{"ref":0,"step":-9223372036854775807}]}]})");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->validate(1000).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(
      parseJobJson(R"({"tokens":[{"op":"x","args":[18446744073709551615]}]})").status().code(),
      StatusCode::kInvalidArgument);
}

TEST(JobJson, VerifyIsAPercentageAsANumberOrAString) {
  const std::string tokens = R"("tokens":[{"op":"echo","args":[1]}])";
  auto a = parseJobJson("{\"verify\":5," + tokens + "}");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->verify_pct, 5);
  auto b = parseJobJson("{\"verify\":\"0.5%\"," + tokens + "}");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->verify_pct, 0.5);
  auto none = parseJobJson("{" + tokens + "}");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->verify_pct, 0);
  for (const char* bad : {"150", "-1", "\"5 %\"", "\"x\"", "true"}) {
    auto r = parseJobJson(std::string("{\"verify\":") + bad + "," + tokens + "}");
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  // Round trip through JSON and the wire's validation.
  auto again = jobFromJson(jobToJson(*a));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->verify_pct, 5);
  JobSpec over = *a;
  over.verify_pct = 101;
  EXPECT_EQ(over.validate(100).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tokengate
