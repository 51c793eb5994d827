#include "coordinator/core/job_table.h"

#include <gtest/gtest.h>

namespace tokengate::coordinator {
namespace {

// term x4 (repeat) -> sum(refs 0..3) -> scale(ref 4): a fan-in and a chain.
JobSpec mapReduce() {
  JobSpec spec;
  spec.name = "mr";
  TokenSpec term;
  term.op = "term";
  term.repeat = 4;
  term.args = {Arg::val(Value(int64_t{10}), 1)};
  TokenSpec sum;
  sum.op = "sum";
  sum.args = {Arg::refs(0, 4)};
  TokenSpec scale;
  scale.op = "scale";
  scale.name = "result";
  scale.args = {Arg::ref(4), Arg::val(Value(2.5))};
  spec.tokens = {term, sum, scale};
  return spec;
}

JobRec& admit(JobTable& table, uint64_t id, JobSpec spec, Nanos now = 0) {
  JobRec& job = table.add(id, 7, spec.name, now);
  uint32_t next_op = 0;
  table.build(job, std::move(spec), [&](SpecRec& s) { s.op = next_op++; });
  return job;
}

TEST(JobTable, BuildLaysOutTheDagAndItsSinkOutputs) {
  JobTable table(10);
  JobRec& job = admit(table, 3, mapReduce());
  ASSERT_EQ(job.tokens.size(), 6u);
  EXPECT_EQ(table.liveTokens(), 6u);
  EXPECT_EQ(table.running(), 1u);
  EXPECT_EQ(table.admitted(), 1u);
  EXPECT_EQ(job.specs[1].first, 4u);
  EXPECT_EQ(job.specs[2].op, 2u);
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(job.tokens[i].pending, 0u);
    EXPECT_EQ(job.tokens[i].consumers, 1u);
  }
  EXPECT_EQ(job.tokens[4].pending, 4u);
  EXPECT_EQ(job.tokens[5].pending, 1u);
  EXPECT_EQ(job.outputs, std::vector<uint32_t>{5}) << "no flagged outputs: the sink";
  EXPECT_TRUE(JobTable::isOutput(job, 5));
  EXPECT_FALSE(JobTable::isOutput(job, 4));
  EXPECT_EQ(JobTable::outputName(job, 5), "result");
  EXPECT_EQ(argCount(job.specs[1].spec), 4u);
  const TokenInfo info = JobTable::tokenInfo(job, 2);
  EXPECT_EQ(info.id, JobTable::tokenId(3, 2));
  EXPECT_EQ(info.op, 0u);
  EXPECT_DOUBLE_EQ(info.first_arg, 12) << "value + step * repetition";
}

TEST(JobTable, CompletionWakesADependentOnlyAfterItsLastInput) {
  JobTable table(10);
  JobRec& job = admit(table, 1, mapReduce());
  std::vector<uint32_t> woken;
  auto finish = [&](uint32_t local, Value v) {
    JobTable::completed(job, local, v);
    JobTable::wake(job, local, [&](uint32_t d) { woken.push_back(d); });
    table.retired(job, local);
  };
  for (uint32_t i = 0; i < 3; ++i) finish(i, Value(int64_t{i}));
  EXPECT_TRUE(woken.empty());
  finish(3, Value(int64_t{3}));
  EXPECT_EQ(woken, std::vector<uint32_t>{4});
  EXPECT_EQ(job.done, 4u);
  EXPECT_EQ(table.liveTokens(), 2u);
  // The inputs' results were kept while their consumer waited, and freed once it finished.
  EXPECT_EQ(JobTable::getResult(job, job.tokens[2]).asInt(), 2);
  finish(4, Value("boxed sum"));
  EXPECT_EQ(job.tokens[0].tag, kNoValue);
  EXPECT_EQ(JobTable::getResult(job, job.tokens[4]).asText(), "boxed sum");
  EXPECT_FALSE(table.finishIfDone(job, 50));
  finish(5, Value(2.5));
  EXPECT_EQ(job.tokens[4].tag, kNoValue) << "boxed input freed";
  EXPECT_EQ(job.boxed_free.size(), 1u) << "its box is reused";
  EXPECT_TRUE(table.finishIfDone(job, 50));
  EXPECT_FALSE(table.finishIfDone(job, 60)) << "finishes once";
  EXPECT_EQ(job.state, control::JobState::kSucceeded);
  EXPECT_EQ(table.running(), 0u);
  auto s = table.statusOf(job, true, 99);
  EXPECT_EQ(s.wall_ns, 50);
  ASSERT_EQ(s.outputs.size(), 1u);
  EXPECT_DOUBLE_EQ(s.outputs[0].value.asDouble(), 2.5);
}

TEST(JobTable, FinishedRecordsAreReapedAndTheNewestSummariesRemembered) {
  JobTable table(2);
  for (uint64_t id = 1; id <= 3; ++id) {
    JobSpec spec;
    spec.tokens.resize(1);
    spec.tokens[0].op = "x";
    JobRec& job = admit(table, id, spec);
    table.watch(job, "peer");
    EXPECT_EQ(table.watched().count(id), 1u);
    JobTable::completed(job, 0, Value(int64_t{1}));
    table.retired(job, 0);
    ASSERT_TRUE(table.finishIfDone(job, 10));
    EXPECT_EQ(table.watched().count(id), 0u) << "finished jobs are not watched";
    table.remember(table.statusOf(job, true, 10));
  }
  EXPECT_EQ(table.records(), 3u) << "records stay until the reap";
  table.reap();
  EXPECT_EQ(table.records(), 0u);
  EXPECT_EQ(table.remembered(), 2u);
  EXPECT_EQ(table.status(1, false, 20).status().code(), StatusCode::kNotFound) << "oldest gone";
  auto s3 = table.status(3, true, 20);
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ(s3->outputs.size(), 1u);
  EXPECT_TRUE(table.status(3, false, 20)->outputs.empty());
  EXPECT_EQ(table.list(20).size(), 2u);
}

TEST(JobTable, FailedAndCancelledTokensDecideTheJobState) {
  JobTable table(10);
  JobSpec spec;
  spec.tokens.resize(2);
  spec.tokens[0].op = spec.tokens[1].op = "x";
  spec.tokens[1].output = true;
  JobRec& job = admit(table, 1, spec);
  EXPECT_EQ(job.outputs, std::vector<uint32_t>{1}) << "flagged outputs only";
  job.tokens[0].state = kCancelled;
  ++job.cancelled;
  table.retired(job, 0);
  EXPECT_FALSE(table.finishIfDone(job, 5));
  auto running = table.list(5);
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0].state, control::JobState::kRunning);
  job.tokens[1].state = kFailed;
  ++job.failed;
  job.first_error = absl::InternalError("boom");
  table.retired(job, 1);
  ASSERT_TRUE(table.finishIfDone(job, 5));
  EXPECT_EQ(job.state, control::JobState::kFailed) << "a failure outranks a cancellation";
  auto s = table.statusOf(job, true, 5);
  ASSERT_EQ(s.outputs.size(), 1u);
  EXPECT_EQ(s.outputs[0].status.message(), "boom");
  EXPECT_EQ(table.liveTokens(), 0u);
}

}  // namespace
}  // namespace tokengate::coordinator
