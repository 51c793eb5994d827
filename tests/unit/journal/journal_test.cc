// FileJournal: replay, torn tails, compaction, refusal to touch foreign files; and the
// core's use of a journal (admission waits for it, restore keeps job ids).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/job_json.h"
#include "coordinator/core/coordinator.h"
#include "coordinator/journal/file_journal.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::journal {
namespace {

namespace fs = std::filesystem;

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tg-journal-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "jobs.journal").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  static JobSpec job(const std::string& name, uint32_t n) {
    JobSpec j;
    j.name = name;
    TokenSpec t;
    t.op = "echo";
    t.repeat = n;
    t.args.push_back(Arg::val(int64_t{7}, 1));
    j.add(t);
    return j;
  }
  static control::JobStatus done(uint64_t id, const std::string& name) {
    control::JobStatus s;
    s.id = id;
    s.name = name;
    s.state = control::JobState::kSucceeded;
    s.total = s.done = 3;
    s.wall_ns = 42;
    control::OutputResult o;
    o.index = 2;
    o.name = "answer";
    o.value = Value(3.25);
    s.outputs.push_back(o);
    return s;
  }
  std::unique_ptr<FileJournal> open(Replay* r, FileJournalOptions o = {}) {
    o.sync = false;
    auto j = FileJournal::open(path_, o, r);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? *std::move(j) : nullptr;
  }
  static std::string json(const JobSpec& j) { return boost::json::serialize(jobToJson(j)); }

  fs::path dir_;
  std::string path_;
};

TEST_F(JournalTest, ReplaysUnfinishedJobsAndFinishedOutcomes) {
  {
    Replay r;
    auto j = open(&r);
    EXPECT_EQ(r.records, 0u);
    ASSERT_TRUE(j->admitted(1, job("a", 3)).ok());
    ASSERT_TRUE(j->admitted(2, job("b", 5)).ok());
    ASSERT_TRUE(j->admitted(3, job("c", 1)).ok());
    j->finished(done(1, "a"));
  }
  Replay r;
  auto j = open(&r);
  EXPECT_EQ(r.records, 4u);
  EXPECT_EQ(r.discarded_bytes, 0u);
  ASSERT_EQ(r.unfinished.size(), 2u);
  EXPECT_EQ(r.unfinished[0].id, 2u);
  EXPECT_EQ(json(r.unfinished[0].spec), json(job("b", 5)));
  EXPECT_EQ(r.unfinished[1].id, 3u);
  ASSERT_EQ(r.finished.size(), 1u);
  const auto& f = r.finished[0];
  EXPECT_EQ(f.id, 1u);
  EXPECT_EQ(f.name, "a");
  EXPECT_EQ(f.state, control::JobState::kSucceeded);
  EXPECT_EQ(f.done, 3u);
  ASSERT_EQ(f.outputs.size(), 1u);
  EXPECT_EQ(f.outputs[0].name, "answer");
  EXPECT_EQ(f.outputs[0].value, Value(3.25));
}

TEST_F(JournalTest, TornTailIsCutOffAndTheGoodPrefixSurvives) {
  {
    auto j = open(nullptr);
    ASSERT_TRUE(j->admitted(1, job("a", 3)).ok());
    ASSERT_TRUE(j->admitted(2, job("b", 3)).ok());
  }
  // A crash in the middle of the second record's write.
  const auto size = fs::file_size(path_);
  fs::resize_file(path_, size - 5);
  {
    Replay r;
    auto j = open(&r);
    EXPECT_EQ(r.records, 1u);
    EXPECT_GT(r.discarded_bytes, 0u);
    EXPECT_EQ(r.discarded_reason, "truncated record");
    ASSERT_EQ(r.unfinished.size(), 1u);
    EXPECT_EQ(r.unfinished[0].id, 1u);
    // New records append after the clean prefix.
    ASSERT_TRUE(j->admitted(5, job("e", 2)).ok());
  }
  // Flipped bits in a record: the checksum catches them.
  {
    std::fstream f(path_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(path_) - 3));
    f.put('\x5a');
  }
  Replay r;
  auto j = open(&r);
  EXPECT_EQ(r.discarded_reason, "checksum mismatch");
  ASSERT_EQ(r.unfinished.size(), 1u);
  EXPECT_EQ(r.unfinished[0].id, 1u);
  // The compaction at open left a clean file.
  j.reset();
  Replay again;
  open(&again);
  EXPECT_EQ(again.discarded_bytes, 0u);
  EXPECT_EQ(again.records, 1u);
}

TEST_F(JournalTest, RefusesAFileThatIsNotAJournalAndLeavesItAlone) {
  { std::ofstream(path_) << "precious data, not a journal\n"; }
  const auto before = fs::file_size(path_);
  Replay r;
  auto j = FileJournal::open(path_, {}, &r);
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(j.status().message().find("not a TokenGate journal"), std::string::npos);
  EXPECT_EQ(fs::file_size(path_), before);
}

TEST_F(JournalTest, CompactionKeepsOnlyLiveJobsAndTheNewestFinished) {
  FileJournalOptions o;
  o.keep_finished = 5;
  o.compact_bytes = 4096;
  {
    auto j = open(nullptr, o);
    for (uint64_t id = 1; id <= 400; ++id) {
      ASSERT_TRUE(j->admitted(id, job("j" + std::to_string(id), 10)).ok());
      if (id != 7) j->finished(done(id, "j" + std::to_string(id)));
    }
    EXPECT_GT(j->compactions(), 2u);  // at open and while running
    EXPECT_LT(j->bytes(), 3 * 4096u);
  }
  Replay r;
  open(&r, o);
  ASSERT_EQ(r.unfinished.size(), 1u);
  EXPECT_EQ(r.unfinished[0].id, 7u);
  ASSERT_EQ(r.finished.size(), 5u);
  EXPECT_EQ(r.finished.front().id, 396u);
  EXPECT_EQ(r.finished.back().id, 400u);
}

double metric(prometheus::Registry& reg, const std::string& name,
              const std::string& label_value = {}) {
  for (const auto& fam : reg.Collect()) {
    if (fam.name != name) continue;
    for (const auto& m : fam.metric) {
      if (!label_value.empty() && (m.label.empty() || m.label.front().value != label_value))
        continue;
      if (fam.type == prometheus::MetricType::Counter) return m.counter.value;
      if (fam.type == prometheus::MetricType::Gauge) return m.gauge.value;
    }
  }
  return -1;
}

TEST_F(JournalTest, ExportsRecordsSizeAndResumedJobs) {
  FileJournalOptions o;
  o.registry = std::make_shared<prometheus::Registry>();
  {
    auto j = open(nullptr, o);
    ASSERT_TRUE(j->admitted(1, job("a", 3)).ok());
    ASSERT_TRUE(j->admitted(2, job("b", 3)).ok());
    j->finished(done(1, "a"));
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_records_total", "admitted"), 2);
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_records_total", "finished"), 1);
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_bytes"), static_cast<double>(j->bytes()));
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_bytes"),
              static_cast<double>(fs::file_size(path_)));
  }
  o.registry = std::make_shared<prometheus::Registry>();
  open(nullptr, o);
  EXPECT_EQ(metric(*o.registry, "tokengate_journal_resumed_jobs"), 1);
  EXPECT_EQ(metric(*o.registry, "tokengate_journal_compactions_total"), 1);
}

// ---- the core's side of the contract

class RecordingJournal final : public coordinator::JobJournal {
 public:
  Status admitted(uint64_t id, const JobSpec&) override {
    if (fail) return absl::InternalError("disk full");
    admits.push_back(id);
    return absl::OkStatus();
  }
  void finished(const control::JobStatus& s) override { finishes.push_back(s.id); }
  bool fail = false;
  std::vector<uint64_t> admits, finishes;
};

TEST(CoreJournalTest, AdmissionIsJournalledFirstAndRefusedIfItCannotBe) {
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  coordinator::CoordinatorCore core({}, clock, outbox, std::make_shared<prometheus::Registry>());
  RecordingJournal j;
  core.setJournal(&j);
  testing::FakeNode node(core, outbox, "n1", {{"echo", Weight::kLight}}, 1);
  ASSERT_TRUE(node.hello());
  JobSpec spec;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::val(int64_t{1}));
  spec.add(t);
  auto id = core.submitJob(spec);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(j.admits, std::vector<uint64_t>{*id});
  for (auto& task : node.takeTasks()) node.ok(task, task.args[0]);
  EXPECT_EQ(j.finishes, std::vector<uint64_t>{*id});

  j.fail = true;
  auto refused = core.submitJob(spec);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("disk full"), std::string::npos);
  EXPECT_EQ(core.stats().jobs_running, 0u);
}

TEST(CoreJournalTest, RestoredJobsKeepTheirIdsAndNewOnesComeAfter) {
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  coordinator::CoordinatorCore core({}, clock, outbox, std::make_shared<prometheus::Registry>());
  control::JobStatus old;
  old.id = 5;
  old.state = control::JobState::kSucceeded;
  core.restoreFinished(old);
  JobSpec spec;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::val(int64_t{9}));
  t.output = true;
  spec.add(t);
  ASSERT_TRUE(core.restoreJob(12, spec).ok());
  EXPECT_EQ(core.restoreJob(12, spec).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(core.jobStatus(5)->state, control::JobState::kSucceeded);
  EXPECT_EQ(core.jobStatus(12)->state, control::JobState::kRunning);
  auto id = core.submitJob(spec);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, 13u);
  // The restored job runs once a node offers its op.
  testing::FakeNode node(core, outbox, "n1", {{"echo", Weight::kLight}}, 1);
  ASSERT_TRUE(node.hello());
  for (int round = 0; round < 3; ++round)
    for (auto& task : node.takeTasks()) node.ok(task, task.args[0]);
  auto st = core.jobStatus(12);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  ASSERT_EQ(st->outputs.size(), 1u);
  EXPECT_EQ(st->outputs[0].value, Value(int64_t{9}));
}

}  // namespace
}  // namespace tokengate::journal
