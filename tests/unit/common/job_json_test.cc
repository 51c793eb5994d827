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

// {"dec": "..."} strings (protocol_fuzz finding): Boost.Multiprecision's own parser keeps the
// exponent in an int64 that wraps, and an exponent of exactly -2^63 (written so, or wrapped
// there) recursed until the stack overflowed: one gateway frame crashed the coordinator.
Dec50 decOf(const std::string& text) {
  auto v = valueFromJson(json::value(json::object{{"dec", text}}));
  EXPECT_TRUE(v.ok()) << text << ": " << v.status();
  if (!v.ok() || !v->isDec()) return Dec50{};
  return v->asDec();
}

TEST(JobJson, DecExponentsOfAnySizeOverflowOrUnderflow) {
  for (const char* zero :
       {"1e-9223372036854775808", "0.5e-9223372036854775807", "1e-99999999999999999999",
        "-7e-1000000001", "1e-18446744073709551616", "0.0", "-0", "000e5"}) {
    EXPECT_EQ(decOf(zero).kind, 0) << zero;
  }
  // 27670116110564327424 = 2^64 + 2^63 wrapped to -2^63 in Boost's parser.
  for (const char* inf : {"1e27670116110564327424", "1e9223372036854775807", "1e999999999",
                          "+2.5E+99999999999999999999999999"}) {
    Dec50 d = decOf(inf);
    EXPECT_EQ(d.kind, 2) << inf;
    EXPECT_FALSE(d.negative) << inf;
  }
  Dec50 neg = decOf("-1e27670116110564327424");
  EXPECT_EQ(neg.kind, 2);
  EXPECT_TRUE(neg.negative);
}

TEST(JobJson, DecStringsParseAsBoostDoesWithinRange) {
  for (const char* text : {"0.5", "1.5", "-3.25", "123.45e-2", "1e300", "-1E-300", ".5", "7.",
                           "0.000000000000000000000000000000001234", "+42", "1e+5",
                           "3.14159265358979323846264338327950288419716939937510"}) {
    EXPECT_EQ(decOf(text), fromBigFloat(BigFloat(text))) << text;
  }
  // Integer digits are all significant to Boost (its parse is quadratic in them); ours keeps
  // the first 100, far past a Dec50's ~50, and scales: the same value.
  const std::string many(5000, '7');
  EXPECT_EQ(decOf(many), fromBigFloat(BigFloat(many)));
  const std::string huge(1 << 20, '9');  // a 1 MiB frame's worth: was minutes of bignum work
  EXPECT_EQ(decOf(huge), fromBigFloat(BigFloat("1e1048576")));
  EXPECT_EQ(decOf("inf").kind, 2);
  EXPECT_TRUE(decOf("-Infinity").negative);
  EXPECT_EQ(decOf("NaN").kind, 3);
  // A long invalid string is quoted in part, never cut inside a UTF-8 character (the message
  // goes into a JSON reply): 39 digits then a 2-byte character across byte 40.
  const std::string accented = std::string(39, '3') + "\xc7\xbf" + "9;1";
  auto v = valueFromJson(json::value(json::object{{"dec", accented}}));
  ASSERT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  const std::string quoted = "'" + std::string(39, '3') + "...' is not a decimal number";
  EXPECT_EQ(v.status().message(), quoted);
  boost::system::error_code ec;
  json::parse(json::serialize(json::value(std::string(v.status().message()))), ec);
  EXPECT_FALSE(ec) << v.status().message();
  for (const char* bad : {"", ".", "-", "1e", "1e+", "--1", "1.2.3", "0x10", " 1", "1 ", "pi",
                          "1e5.5", "infinite", "e5"}) {
    auto v = valueFromJson(json::value(json::object{{"dec", bad}}));
    EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument) << '"' << bad << '"';
  }
}

}  // namespace
}  // namespace tokengate
