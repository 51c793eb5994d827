#include "coordinator/costmodel/trace.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "coordinator/costmodel/synthetic.h"

namespace tokengate::costmodel {
namespace {

std::string tempPath(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() /
             (std::string("tg_trace_") + info->test_suite_name() + "_" + info->name());
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

TEST(Trace, ParsesCsvWithHeaderByNameAndDefaults) {
  const std::string text =
      "# recorded by the coordinator\n"
      "run_ns,op,op_name,weight,arg0,node_speed\n"
      "1500,3,fib,heavy,25,2.5\n"
      "200,1,add,0,,\n";
  auto samples = parseTrace(text, "t.csv");
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 2u);
  const auto& a = (*samples)[0];
  EXPECT_EQ(a.run_ns, 1500);
  EXPECT_EQ(a.features.op_id, 3u);
  EXPECT_EQ(a.features.declared_weight, 2);
  EXPECT_DOUBLE_EQ(a.features.first_numeric_arg, 25);
  EXPECT_DOUBLE_EQ(a.features.node_speed, 2.5);
  const auto& b = (*samples)[1];
  EXPECT_TRUE(std::isnan(b.features.first_numeric_arg));
  EXPECT_DOUBLE_EQ(b.features.node_speed, 1.0);
  EXPECT_EQ(b.features.node_load, 0u);
}

TEST(Trace, ParsesJsonl) {
  const std::string text =
      R"({"op":2,"op_name":"mul","weight":"medium","lane":1,"arg_count":2,"arg_bytes":16,)"
      R"("arg0":7,"node":1,"node_speed":1.0,"node_load":4,"queue_wait_ns":10,"run_ns":999})"
      "\n\n"
      R"({"op":5,"run_ns":12,"arg0":null})"
      "\n";
  auto samples = parseTrace(text, "t.jsonl");
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 2u);
  const auto& a = (*samples)[0];
  EXPECT_EQ(a.features.op_id, 2u);
  EXPECT_EQ(a.features.declared_weight, 1);
  EXPECT_EQ(a.features.lane, 1);
  EXPECT_EQ(a.features.arg_count, 2u);
  EXPECT_EQ(a.features.arg_total_bytes, 16u);
  EXPECT_EQ(a.features.node_index, 1u);
  EXPECT_EQ(a.features.node_load, 4u);
  EXPECT_EQ(a.queue_wait_ns, 10);
  EXPECT_EQ(a.run_ns, 999);
  EXPECT_TRUE(std::isnan((*samples)[1].features.first_numeric_arg));
}

TEST(Trace, MalformedRowsGiveLineNumbers) {
  struct Case {
    std::string text, expect;
  };
  const Case cases[] = {
      {"op,run_ns\n1,abc\n", "t.csv:2: column run_ns: 'abc' is not a number"},
      {"op,run_ns\n1,2,3\n", "t.csv:2: expected 2 columns, found 3"},
      {"op,weight\n1,2\n", "must name at least the columns op and run_ns"},
      {"op,run_ns\n-1,5\n", "t.csv:2: column op must be a number"},
      {"op,run_ns,weight\n1,5,7\n", "t.csv:2: column weight must be a number in [0, 2]"},
      {"", "empty trace"},
  };
  for (const auto& c : cases) {
    auto r = parseTrace(c.text, "t.csv");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(r.status().message()).find(c.expect), std::string::npos) << r.status();
  }
  auto j = parseTrace("{\"op\":1,\"run_ns\":5}\n{\"op\":1\n", "t.jsonl");
  ASSERT_FALSE(j.ok());
  EXPECT_NE(std::string(j.status().message()).find("t.jsonl:2: invalid JSON"), std::string::npos)
      << j.status();
  auto missing = parseTrace("{\"op\":1}\n", "t.jsonl");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("needs at least op and run_ns"),
            std::string::npos);
}

TEST(Trace, WriteReadRoundTrip) {
  SyntheticWorkload w;
  const auto samples = w.samples(100);
  const std::string path = tempPath("trace.csv");
  ASSERT_TRUE(writeTraceCsv(path, samples).ok());
  auto back = readTrace(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto &a = samples[i].features, &b = (*back)[i].features;
    EXPECT_EQ(a.op_id, b.op_id);
    EXPECT_EQ(a.declared_weight, b.declared_weight);
    EXPECT_EQ(a.arg_total_bytes, b.arg_total_bytes);
    EXPECT_EQ(std::isnan(a.first_numeric_arg), std::isnan(b.first_numeric_arg));
    if (!std::isnan(a.first_numeric_arg)) {
      EXPECT_DOUBLE_EQ(a.first_numeric_arg, b.first_numeric_arg);
    }
    EXPECT_EQ(a.node_index, b.node_index);
    EXPECT_EQ(samples[i].run_ns, (*back)[i].run_ns);
  }
}

TEST(Trace, MissingTraceIsNotFound) {
  auto r = readTrace(tempPath("nope.csv"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST(Trace, TrainFromTraceThenDescribe) {
  SyntheticWorkload w;
  const std::string trace = tempPath("trace.csv");
  const std::string model = tempPath("model.json");
  ASSERT_TRUE(writeTraceCsv(trace, w.samples(3000)).ok());
  XgbParams p;
  p.nthread = 1;
  auto q = trainFromTrace(trace, model, p);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_GE(q->r2, 0.9);
  ASSERT_TRUE(std::filesystem::exists(model));

  auto text = describeModel(model);
  ASSERT_TRUE(text.ok()) << text.status();
  std::printf("%s", text->c_str());
  EXPECT_NE(text->find("R^2 = "), std::string::npos);
  EXPECT_NE(text->find("MAE = "), std::string::npos);
  EXPECT_NE(text->find("feature importance"), std::string::npos);
  EXPECT_NE(text->find("node_speed"), std::string::npos);

  auto bad = describeModel(tempPath("missing.json"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound);
}

TEST(Trace, TrainFromTooSmallTraceFailsClearly) {
  const std::string trace = tempPath("tiny.csv");
  std::ofstream(trace) << "op,run_ns\n1,100\n2,200\n";
  auto q = trainFromTrace(trace, tempPath("m.json"));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(q.status().message()).find("need at least"), std::string::npos);
}

}  // namespace
}  // namespace tokengate::costmodel
