// FileJournal: replay, epochs, the exclusive lock, corruption tolerance (mid-file damage
// skipped, torn tail cut, unparseable files refused or moved aside), compaction; and the core's
// use of a journal (group commit: nothing acknowledged or started before its sync; incarnations;
// epoch rollover).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "common/job_json.h"
#include "coordinator/core/coordinator.h"
#include "coordinator/journal/file_journal.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::journal {
namespace {

namespace fs = std::filesystem;
using coordinator::firstIdOf;

std::string readFile(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void writeFile(const std::string& p, const std::string& data) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
}

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
    s.incarnation = 99;
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
  FileJournalOptions opts() const {
    FileJournalOptions o;
    o.sync = false;
    o.random_epoch = [this] { return random_epoch_; };
    return o;
  }
  // open() + activate(), as the app does once started.
  std::unique_ptr<FileJournal> open(Replay* r, FileJournalOptions o) {
    auto j = FileJournal::open(path_, o, r);
    EXPECT_TRUE(j.ok()) << j.status();
    if (!j.ok()) return nullptr;
    EXPECT_TRUE((*j)->activate().ok());
    return *std::move(j);
  }
  std::unique_ptr<FileJournal> open(Replay* r) { return open(r, opts()); }
  static void admit(FileJournal& j, uint64_t id, const JobSpec& spec) {
    ASSERT_TRUE(j.admitted(id, 99, spec).ok());
    ASSERT_TRUE(j.commit().ok());
  }
  static std::string json(const JobSpec& j) { return boost::json::serialize(jobToJson(j)); }
  std::vector<fs::path> siblings(const std::string& what) const {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(what) != std::string::npos) out.push_back(e.path());
    return out;
  }

  fs::path dir_;
  std::string path_;
  uint32_t random_epoch_ = 77;
};

TEST_F(JournalTest, ReplaysUnfinishedJobsAndFinishedOutcomes) {
  {
    Replay r;
    auto j = open(&r);
    EXPECT_EQ(r.records, 0u);
    admit(*j, 1, job("a", 3));
    admit(*j, 2, job("b", 5));
    admit(*j, 3, job("c", 1));
    j->finished(done(1, "a"));
    ASSERT_TRUE(j->commit().ok());
  }
  Replay r;
  auto j = open(&r);
  EXPECT_EQ(r.records, 5u);  // epoch header + 3 admissions + 1 finish
  EXPECT_TRUE(r.damage.empty());
  ASSERT_EQ(r.unfinished.size(), 2u);
  EXPECT_EQ(r.unfinished[0].id, 2u);
  EXPECT_EQ(r.unfinished[0].incarnation, 99u);
  EXPECT_EQ(json(r.unfinished[0].spec), json(job("b", 5)));
  EXPECT_EQ(r.unfinished[1].id, 3u);
  ASSERT_EQ(r.finished.size(), 1u);
  const auto& f = r.finished[0];
  EXPECT_EQ(f.id, 1u);
  EXPECT_EQ(f.incarnation, 99u);
  EXPECT_EQ(f.name, "a");
  EXPECT_EQ(f.state, control::JobState::kSucceeded);
  EXPECT_EQ(f.done, 3u);
  ASSERT_EQ(f.outputs.size(), 1u);
  EXPECT_EQ(f.outputs[0].name, "answer");
  EXPECT_EQ(f.outputs[0].value, Value(3.25));
}

TEST_F(JournalTest, EveryStartTakesANewEpochAndALostFileARandomOne) {
  Replay r;
  { open(&r); }
  EXPECT_EQ(r.epoch, 77u);
  EXPECT_TRUE(r.epoch_random);
  { open(&r); }
  EXPECT_EQ(r.epoch, 78u);
  EXPECT_FALSE(r.epoch_random);
  { open(&r); }
  EXPECT_EQ(r.epoch, 79u);
  // Truncated to nothing, or deleted: the previous epoch is unknown, a random one is taken.
  fs::resize_file(path_, 0);
  random_epoch_ = 5;
  { open(&r); }
  EXPECT_EQ(r.epoch, 5u);
  EXPECT_TRUE(r.epoch_random);
  fs::remove(path_);
  random_epoch_ = 4000;
  { open(&r); }
  EXPECT_EQ(r.epoch, 4000u);
  // Truncated after its header: the epoch survives (the header always names the current one).
  {
    auto j = open(&r);
    EXPECT_EQ(r.epoch, 4001u);
    admit(*j, firstIdOf(4001), job("a", 1));
  }
  fs::resize_file(path_, fs::file_size(path_) - 10);
  { open(&r); }
  EXPECT_EQ(r.epoch, 4002u);
}

TEST_F(JournalTest, EpochsWrapAndSkipEpochsStillUsedByKeptJobs) {
  random_epoch_ = coordinator::kMaxEpoch;
  {
    Replay r;
    auto j = open(&r);
    EXPECT_EQ(r.epoch, coordinator::kMaxEpoch);
    admit(*j, firstIdOf(1) + 5, job("old", 1));  // a job of epoch 1 still live
  }
  Replay r;
  open(&r);
  EXPECT_EQ(r.epoch, 2u);  // 4095 -> 1 is in use -> 2
}

TEST_F(JournalTest, RolloverToANewEpochRewritesTheHeader) {
  {
    Replay r;
    auto j = open(&r);
    EXPECT_EQ(j->compactions(), 1u);
    j->epochStarted(200);
    ASSERT_TRUE(j->commit().ok());
    EXPECT_EQ(j->compactions(), 2u);
  }
  const Scan s = scanJournal(readFile(path_));
  ASSERT_FALSE(s.records.empty());
  EXPECT_EQ(s.records[0].kind, Record::kEpoch);
  EXPECT_EQ(s.records[0].epoch, 200u);
}

TEST_F(JournalTest, ASecondOwnerIsRefusedAndTouchesNothing) {
  Replay r;
  auto first = open(&r);
  admit(*first, firstIdOf(r.epoch), job("a", 2));
  for (uint32_t round = 0; round < 2; ++round) {
    const std::string before = readFile(path_);
    auto second = FileJournal::open(path_, opts(), nullptr);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(second.status().message().find("locked by another process"), std::string::npos)
        << second.status();
    EXPECT_EQ(readFile(path_), before);
    // After a compaction (a new file renamed over the path) the lock still holds.
    first->epochStarted(r.epoch + 1 + round);
    ASSERT_TRUE(first->commit().ok());
    EXPECT_EQ(first->compactions(), 2u + round);
  }
  first.reset();
  Replay again;
  auto j = FileJournal::open(path_, opts(), &again);
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_EQ(again.unfinished.size(), 1u);
}

TEST_F(JournalTest, OpeningWritesNothingUntilActivated) {
  {
    Replay r;
    auto j = open(&r);
    admit(*j, 1, job("a", 2));
  }
  const std::string before = readFile(path_);
  {
    auto j = FileJournal::open(path_, opts(), nullptr);  // e.g. the gateway port is taken next
    ASSERT_TRUE(j.ok());
    EXPECT_FALSE((*j)->admitted(2, 1, job("b", 1)).ok());
  }
  EXPECT_EQ(readFile(path_), before);
}

// Offsets of the intact records in the file, in order.
std::vector<Record> records(const std::string& path) { return scanJournal(readFile(path)).records; }

TEST_F(JournalTest, ADamagedRecordMidFileIsSkippedAndReplayContinues) {
  {
    Replay r;
    auto j = open(&r);
    for (uint64_t id = 1; id <= 5; ++id) admit(*j, id, job("j" + std::to_string(id), 2));
  }
  auto recs = records(path_);
  ASSERT_EQ(recs.size(), 6u);  // header + 5
  std::string data = readFile(path_);
  // A flipped byte in the payload of job 2, and a destroyed length field in job 4's header.
  data[recs[2].offset + kRecordHeader + 9] ^= 0x40;
  data[recs[4].offset + 5] ^= 0x01;
  writeFile(path_, data);
  auto reg = std::make_shared<prometheus::Registry>();
  FileJournalOptions o = opts();
  o.registry = reg;
  Replay r;
  auto j = FileJournal::open(path_, o, &r);
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_EQ(r.damage.size(), 2u);
  EXPECT_EQ(r.damage[0].offset, recs[2].offset);
  EXPECT_EQ(r.damage[0].bytes, recs[2].bytes);
  EXPECT_EQ(r.damage[0].why, "checksum mismatch");
  EXPECT_FALSE(r.damage[0].tail);
  EXPECT_EQ(r.damage[1].offset, recs[4].offset);
  EXPECT_EQ(r.damage[1].why, "bad record header");
  EXPECT_FALSE(r.damage[1].tail);
  std::vector<uint64_t> ids;
  for (const auto& a : r.unfinished) ids.push_back(a.id);
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 3, 5}));
  EXPECT_EQ(r.epoch, 78u);  // the header survived
  for (const auto& fam : reg->Collect()) {
    if (fam.name != "tokengate_journal_damage_total") continue;
    for (const auto& m : fam.metric) {
      EXPECT_EQ(m.counter.value, m.label[0].value == "skipped" ? 2 : 0) << m.label[0].value;
    }
  }
  // Activation rewrites a clean file and keeps the damaged one beside it, byte for byte.
  ASSERT_TRUE((*j)->activate().ok());
  auto kept = siblings(".damaged-");
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(readFile(kept[0].string()), data);
  EXPECT_TRUE(scanJournal(readFile(path_)).damage.empty());
}

TEST_F(JournalTest, AFlippedByteInTheFirstRecordLosesOnlyThatRecord) {
  {
    Replay r;
    auto j = open(&r);
    for (uint64_t id = 1; id <= 3; ++id) admit(*j, id, job("j", 1));
    j->finished(done(1, "j"));
    ASSERT_TRUE(j->commit().ok());
  }
  std::string data = readFile(path_);
  data[kMagic.size() + 2] ^= 0xff;  // the epoch header's marker
  writeFile(path_, data);
  Replay r;
  random_epoch_ = 9;
  auto j = open(&r);
  ASSERT_EQ(r.unfinished.size(), 2u);
  ASSERT_EQ(r.finished.size(), 1u);
  EXPECT_EQ(r.finished[0].outputs[0].value, Value(3.25));
  EXPECT_TRUE(r.epoch_random);  // its epoch was lost with it: a random one
  EXPECT_EQ(r.epoch, 9u);
}

// Fuzz finding journal_replay-crash-b790064f: the magic's last byte flipped '2' -> '1' made the
// file look like the old format, whose scan stops at the first v2 record and dropped them all.
TEST_F(JournalTest, AMagicFlippedToTheOldFormatsStillReplaysEveryRecord) {
  {
    Replay r;
    auto j = open(&r);
    for (uint64_t id = 1; id <= 3; ++id) admit(*j, id, job("j", 1));
    j->finished(done(1, "j"));
    ASSERT_TRUE(j->commit().ok());
  }
  std::string data = readFile(path_);
  const auto before = scanJournal(data).records;
  ASSERT_EQ(before.size(), 5u);  // epoch + 3 admitted + 1 finished
  data[7] = '1';                 // "TGJOURN2" -> "TGJOURN1"
  writeFile(path_, data);

  const Scan s = scanJournal(data);
  ASSERT_EQ(s.records.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(s.records[i].offset, before[i].offset);
  ASSERT_EQ(s.damage.size(), 1u);
  EXPECT_EQ(s.damage[0].offset, 0u);
  EXPECT_EQ(s.damage[0].bytes, kMagic.size());
  EXPECT_FALSE(s.damage[0].tail);

  Replay r;
  auto j = open(&r);
  ASSERT_EQ(r.unfinished.size(), 2u);
  ASSERT_EQ(r.finished.size(), 1u);
  EXPECT_EQ(r.epoch, 78u);  // the header record survived (as in the mid-file test above)
  EXPECT_FALSE(r.epoch_random);
  EXPECT_EQ(siblings(".damaged-").size(), 1u);
}

TEST_F(JournalTest, TornTailIsCutOffAndTheGoodPrefixSurvives) {
  {
    Replay r;
    auto j = open(&r);
    admit(*j, 1, job("a", 3));
    admit(*j, 2, job("b", 3));
  }
  // A crash in the middle of the second record's write.
  fs::resize_file(path_, fs::file_size(path_) - 5);
  {
    Replay r;
    auto j = open(&r);
    ASSERT_EQ(r.damage.size(), 1u);
    EXPECT_TRUE(r.damage[0].tail);
    EXPECT_EQ(r.damage[0].why, "truncated record");
    ASSERT_EQ(r.unfinished.size(), 1u);
    EXPECT_EQ(r.unfinished[0].id, 1u);
    admit(*j, 5, job("e", 2));  // appended after the clean prefix
  }
  // Garbage after the last record (a write that never completed, zero-filled).
  { std::ofstream(path_, std::ios::binary | std::ios::app) << std::string(37, '\0'); }
  Replay r;
  auto j = open(&r);
  ASSERT_EQ(r.damage.size(), 1u);
  EXPECT_TRUE(r.damage[0].tail);
  EXPECT_EQ(r.damage[0].bytes, 37u);
  ASSERT_EQ(r.unfinished.size(), 2u);
  EXPECT_EQ(r.unfinished[1].id, 5u);
  j.reset();
  Replay again;
  open(&again);
  EXPECT_TRUE(again.damage.empty());
  EXPECT_EQ(again.unfinished.size(), 2u);
}

TEST_F(JournalTest, AnUnparseableFileIsRefusedUntouchedAndMovedAsideOnlyOnReset) {
  const std::string precious = "precious data, not a journal\n";
  writeFile(path_, precious);
  Replay r;
  auto j = FileJournal::open(path_, opts(), &r);
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(j.status().message().find("--journal-reset"), std::string::npos) << j.status();
  EXPECT_EQ(readFile(path_), precious);
  EXPECT_TRUE(siblings(".unparseable-").empty());

  FileJournalOptions o = opts();
  o.reset = true;
  auto k = FileJournal::open(path_, o, &r);
  ASSERT_TRUE(k.ok()) << k.status();
  ASSERT_FALSE(r.moved_aside.empty());
  EXPECT_EQ(readFile(r.moved_aside), precious);
  EXPECT_TRUE(r.epoch_random);
  ASSERT_TRUE((*k)->activate().ok());
  EXPECT_EQ(readFile(r.moved_aside), precious);
  EXPECT_EQ(readFile(path_).substr(0, 8), kMagic);
}

TEST_F(JournalTest, ReadsTheOldFormat) {
  // "TGJOURN1" + [u32 len][u32 crc][payload], as written before epochs.
  std::string v1(kMagicV1);
  for (uint64_t id : {1, 2}) {
    std::string p = encodeAdmit(id, 0, job("old", 2));
    std::string framed;
    appendRecord(framed, p);  // [marker][len][crc][hcrc][payload]: reuse len + crc
    v1 += framed.substr(4, 8) + p;
  }
  writeFile(path_, v1);
  Replay r;
  auto j = open(&r);
  ASSERT_EQ(r.unfinished.size(), 2u);
  EXPECT_EQ(r.unfinished[1].id, 2u);
  EXPECT_EQ(siblings(".damaged-").size(), 1u);  // the old file is kept beside the new one
  EXPECT_EQ(readFile(path_).substr(0, 8), kMagic);
}

TEST_F(JournalTest, CompactionKeepsOnlyLiveJobsAndTheNewestFinished) {
  FileJournalOptions o = opts();
  o.keep_finished = 5;
  o.compact_bytes = 4096;
  {
    auto j = open(nullptr, o);
    for (uint64_t id = 1; id <= 400; ++id) {
      admit(*j, id, job("j" + std::to_string(id), 10));
      if (id != 7) j->finished(done(id, "j" + std::to_string(id)));
    }
    ASSERT_TRUE(j->commit().ok());
    EXPECT_GT(j->compactions(), 2u);  // at activation and while running
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

TEST_F(JournalTest, ExportsRecordsSizeSyncsAndResumedJobs) {
  FileJournalOptions o = opts();
  o.sync = true;
  o.registry = std::make_shared<prometheus::Registry>();
  {
    auto j = open(nullptr, o);
    // Three admissions and a finish in one commit: one sync.
    ASSERT_TRUE(j->admitted(1, 1, job("a", 3)).ok());
    ASSERT_TRUE(j->admitted(2, 1, job("b", 3)).ok());
    ASSERT_TRUE(j->admitted(3, 1, job("c", 3)).ok());
    j->finished(done(1, "a"));
    ASSERT_TRUE(j->commit().ok());
    EXPECT_EQ(j->syncs(), 1u);
    // A finish alone is written, not synced.
    j->finished(done(3, "c"));
    ASSERT_TRUE(j->commit().ok());
    EXPECT_EQ(j->syncs(), 1u);
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_syncs_total"), 1);
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_records_total", "admitted"), 3);
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_records_total", "finished"), 2);
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_bytes"), static_cast<double>(j->bytes()));
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_bytes"),
              static_cast<double>(fs::file_size(path_)));
    EXPECT_EQ(metric(*o.registry, "tokengate_journal_epoch"), 77);
  }
  o.registry = std::make_shared<prometheus::Registry>();
  open(nullptr, o);
  EXPECT_EQ(metric(*o.registry, "tokengate_journal_resumed_jobs"), 1);
  EXPECT_EQ(metric(*o.registry, "tokengate_journal_compactions_total"), 1);
}

TEST_F(JournalTest, CheckpointsOfLiveJobsAreReplayedMergedAndDroppedWhenTheJobFinishes) {
  {
    Replay r;
    auto j = open(&r);
    admit(*j, 1, job("a", 30));
    admit(*j, 2, job("b", 30));
    j->checkpoint(1, 99, {{20, Value(int64_t{5})}, {21, Value(2.5)}});
    j->checkpoint(2, 99, {{20, Value(int64_t{7})}});
    j->checkpoint(1, 99, {{22, Value(std::string("x"))}, {20, Value(int64_t{6})}});
    j->checkpoint(1, 12345, {{23, Value(int64_t{1})}});  // another incarnation's: ignored
    j->checkpoint(9, 99, {{1, Value(int64_t{1})}});      // not a live job: not written
    ASSERT_TRUE(j->commit().ok());
    j->finished(done(2, "b"));
    ASSERT_TRUE(j->commit().ok());
  }
  auto check = [&](const Replay& r) {
    ASSERT_EQ(r.unfinished.size(), 1u);
    EXPECT_EQ(r.unfinished[0].id, 1u);
    const coordinator::Checkpoint want{
        {20, Value(int64_t{6})}, {21, Value(2.5)}, {22, Value(std::string("x"))}};
    EXPECT_EQ(r.unfinished[0].checkpoint, want);
  };
  {
    Replay r;
    auto j = open(&r);  // activation compacts: job 2's checkpoint goes, job 1's stays (merged)
    check(r);
    const Scan s = scanJournal(readFile(path_));
    size_t checkpoints = 0;
    for (const auto& rec : s.records) checkpoints += rec.kind == Record::kCheckpoint;
    EXPECT_EQ(checkpoints, 1u);
  }
  Replay r;
  auto j = open(&r);
  check(r);
  j->finished(done(1, "a"));
  ASSERT_TRUE(j->commit().ok());
  j.reset();
  Replay after;
  open(&after);
  EXPECT_TRUE(after.unfinished.empty());
  for (const auto& rec : scanJournal(readFile(path_)).records)
    EXPECT_NE(rec.kind, Record::kCheckpoint);  // a finished job's checkpoints are compacted away
}

// Issue 11: the idempotency index survives a restart. A key's result is kept while the key is
// among the newest keep_keys (the core's own cap), whether or not its job is still remembered;
// the newest record of a key wins; compaction keeps exactly the kept keys, oldest first.
TEST_F(JournalTest, KeyResultsAreReplayedNewestFirstAndCompactionKeepsTheNewestKeepKeys) {
  FileJournalOptions o = opts();
  o.keep_keys = 4;
  o.keep_finished = 2;
  {
    auto j = open(nullptr, o);
    for (uint64_t id = 1; id <= 6; ++id) {
      admit(*j, id, job("j" + std::to_string(id), 1));
      j->keyFinished("k" + std::to_string(id), id << 32, 99, Value(int64_t(id * 10)));
      j->finished(done(id, "j" + std::to_string(id)));  // the job is reaped; its key is not
    }
    // k4 finishes again (its entry was freed and claimed anew): the newer result wins.
    j->keyFinished("k4", uint64_t{7} << 32, 99, Value(std::string("again")));
    ASSERT_TRUE(j->commit().ok());
    EXPECT_EQ(j->keys(), 4u);  // k3, k5, k6, k4
  }
  auto check = [](const Replay& r) {
    ASSERT_EQ(r.keys.size(), 4u);
    EXPECT_EQ(r.keys[0].key, "k3");
    EXPECT_EQ(r.keys[0].value, Value(int64_t{30}));
    EXPECT_EQ(r.keys[0].token_id, uint64_t{3} << 32);
    EXPECT_EQ(r.keys[0].incarnation, 99u);
    EXPECT_EQ(r.keys[1].key, "k5");
    EXPECT_EQ(r.keys[2].key, "k6");
    EXPECT_EQ(r.keys[3].key, "k4");
    EXPECT_EQ(r.keys[3].value, Value(std::string("again")));
    EXPECT_EQ(r.keys[3].token_id, uint64_t{7} << 32);
    EXPECT_EQ(r.finished.size(), 2u);  // fewer jobs than keys are remembered
  };
  {
    Replay r;
    auto j = open(&r, o);  // replays the appended file, then compacts it
    check(r);
    size_t key_records = 0;
    for (const auto& rec : scanJournal(readFile(path_)).records)
      key_records += rec.kind == Record::kKey;
    EXPECT_EQ(key_records, 4u);  // k1, k2 and the older k4 were dropped by the compaction
    // A larger cap at the next start keeps what the file still has.
  }
  Replay r;
  o.keep_keys = 100;
  open(&r, o);
  check(r);
  // Fewer kept at start than in the file: the newest survive.
  o.keep_keys = 1;
  Replay one;
  open(&one, o);
  ASSERT_EQ(one.keys.size(), 1u);
  EXPECT_EQ(one.keys[0].key, "k4");
}

TEST_F(JournalTest, ADamagedKeyRecordIsSkippedAndTheOtherKeysReplay) {
  {
    auto j = open(nullptr);
    admit(*j, 1, job("a", 1));
    j->keyFinished("first", uint64_t{1} << 32, 99, Value(int64_t{1}));
    j->keyFinished("second", (uint64_t{1} << 32) | 1, 99, Value(int64_t{2}));
    j->keyFinished("third", (uint64_t{1} << 32) | 2, 99, Value(int64_t{3}));
    ASSERT_TRUE(j->commit().ok());
  }
  auto recs = records(path_);
  ASSERT_EQ(recs.size(), 5u);  // header, admission, 3 keys
  ASSERT_EQ(recs[3].kind, Record::kKey);
  ASSERT_EQ(recs[3].key, "second");
  std::string data = readFile(path_);
  data[recs[3].offset + kRecordHeader + 12] ^= 0x08;
  writeFile(path_, data);
  Replay r;
  open(&r);
  ASSERT_EQ(r.damage.size(), 1u);
  EXPECT_EQ(r.damage[0].offset, recs[3].offset);
  EXPECT_FALSE(r.damage[0].tail);
  ASSERT_EQ(r.keys.size(), 2u);
  EXPECT_EQ(r.keys[0].key, "first");
  EXPECT_EQ(r.keys[1].key, "third");
  EXPECT_EQ(r.keys[1].value, Value(int64_t{3}));
  ASSERT_EQ(r.unfinished.size(), 1u);  // the job around them is intact
}

// ---- the core's side of the contract

class RecordingJournal final : public coordinator::JobJournal {
 public:
  Status admitted(uint64_t id, uint64_t, const JobSpec&) override {
    events.push_back("admit " + std::to_string(id));
    admits.push_back(id);
    return absl::OkStatus();
  }
  void finished(const control::JobStatus& s) override {
    events.push_back("finish " + std::to_string(s.id));
    finishes.push_back(s.id);
  }
  void epochStarted(uint32_t e) override { events.push_back("epoch " + std::to_string(e)); }
  void checkpoint(uint64_t id, uint64_t, const coordinator::Checkpoint& results) override {
    events.push_back("checkpoint " + std::to_string(id));
    for (const auto& r : results) checkpoints[id].push_back(r);
  }
  void keyFinished(const std::string& key, uint64_t, uint64_t, const Value& v) override {
    events.push_back("key " + key + "=" + v.toString());
  }
  Status commit() override {
    events.push_back("commit");
    if (fail) return absl::InternalError("disk full");
    ++commits;
    return absl::OkStatus();
  }
  bool fail = false;
  int commits = 0;
  std::vector<std::string> events;
  std::vector<uint64_t> admits, finishes;
  std::map<uint64_t, coordinator::Checkpoint> checkpoints;
};

JobSpec echoJob(int64_t v) {
  JobSpec spec;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::val(v));
  t.output = true;
  spec.add(t);
  return spec;
}

std::string watchFrame(uint64_t job, uint64_t incarnation, uint64_t request_id) {
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  auto w = f.initWatchJob();
  w.setRequestId(request_id);
  w.setJobId(job);
  w.setIncarnation(incarnation);
  return encodeFrame(msg);
}

struct CoreFixture {
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  coordinator::CoordinatorCore core{coordinator::CoordinatorConfig{}, clock, outbox,
                                    std::make_shared<prometheus::Registry>()};
  RecordingJournal journal;
  CoreFixture() { core.setJournal(&journal); }
  void deliver(const std::string& peer, const std::string& frame) {
    core.onBytes(peer, frame.data(), frame.size());
  }
};

TEST(CoreJournalTest, AdmissionsArrivingTogetherShareOneCommitAndNoAckComesBeforeIt) {
  CoreFixture f;
  testing::FakeNode node(f.core, f.outbox, "n1", {{"echo", Weight::kLight}}, 1);
  ASSERT_TRUE(node.hello());
  for (uint64_t req = 1; req <= 3; ++req)
    f.deliver("client", submitJobFrame(echoJob(10), req, /*watch=*/true));
  // Journalled, not yet durable: no reply, nothing dispatched.
  EXPECT_EQ(f.journal.admits.size(), 3u);
  EXPECT_EQ(f.journal.commits, 0);
  EXPECT_EQ(f.outbox.pending("client"), 0u);
  EXPECT_EQ(f.core.heldAdmissions(), 3u);
  EXPECT_TRUE(node.takeTasks().empty());
  EXPECT_EQ(f.core.stats().jobs_running, 0u);

  f.core.commitJournal();
  EXPECT_EQ(f.journal.commits, 1);
  EXPECT_EQ(f.journal.events,
            (std::vector<std::string>{"admit " + std::to_string(f.journal.admits[0]),
                                      "admit " + std::to_string(f.journal.admits[1]),
                                      "admit " + std::to_string(f.journal.admits[2]), "commit"}));
  for (uint64_t req = 1; req <= 3; ++req) {
    auto fr = f.outbox.next("client");
    ASSERT_NE(fr, nullptr);
    ASSERT_TRUE(fr->root().isSubmitReply());
    auto rep = fr->root().getSubmitReply();
    EXPECT_EQ(rep.getRequestId(), req);
    ASSERT_TRUE(rep.isJobId());
    EXPECT_EQ(rep.getJobId(), f.journal.admits[req - 1]);
    EXPECT_EQ(rep.getIncarnation(), f.core.incarnation());
  }
  f.core.flushAll();
  EXPECT_EQ(node.takeTasks().size(), 3u);
}

// SubmitJob.ackWithResult with a journal: nothing before the admission is durable, the ack is
// then held, and a keyed job's JobDone carrying it waits for the commit of its key result.
TEST(CoreJournalTest, AnAckHeldForTheResultComesAfterTheCommitsOfAdmissionAndKey) {
  CoreFixture f;
  testing::FakeNode node(f.core, f.outbox, "n1", {{"echo", Weight::kLight}}, 1);
  ASSERT_TRUE(node.hello());
  JobSpec job = echoJob(42);
  job.tokens[0].idempotency_key = "answer";
  f.deliver("client", submitJobFrame(job, 5, /*watch=*/true, /*ack_with_result=*/true));
  EXPECT_EQ(f.outbox.pending("client"), 0u);
  EXPECT_EQ(f.core.heldAcks(), 0u);  // not admitted yet: nothing to hold
  EXPECT_TRUE(node.takeTasks().empty());
  f.core.commitJournal();
  EXPECT_EQ(f.outbox.pending("client"), 0u);  // durable, admitted, its ack held
  EXPECT_EQ(f.core.heldAcks(), 1u);
  f.core.flushAll();
  auto tasks = node.takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  node.ok(tasks[0], Value(int64_t{42}));
  EXPECT_EQ(f.core.heldAcks(), 0u);
  EXPECT_EQ(f.outbox.pending("client"), 0u);  // the key result is not written yet
  f.core.commitJournal();
  auto fr = f.outbox.next("client");
  ASSERT_NE(fr, nullptr);
  ASSERT_TRUE(fr->root().isJobDone());
  EXPECT_EQ(fr->root().getJobDone().getRequestId(), 5u);
  EXPECT_EQ(fr->root().getJobDone().getJobId(), f.journal.admits[0]);
  EXPECT_EQ(fr->root().getJobDone().getIncarnation(), f.core.incarnation());
  EXPECT_EQ(f.outbox.next("client"), nullptr);
}

TEST(CoreJournalTest, AFailedCommitRefusesTheHeldAdmissions) {
  CoreFixture f;
  f.deliver("client", submitJobFrame(echoJob(1), 1, /*watch=*/true));
  f.journal.fail = true;
  f.core.commitJournal();
  auto fr = f.outbox.next("client");
  ASSERT_NE(fr, nullptr);
  auto rep = fr->root().getSubmitReply();
  ASSERT_TRUE(rep.isError());
  EXPECT_NE(std::string(rep.getError().getMessage().cStr()).find("disk full"), std::string::npos);
  EXPECT_EQ(f.core.stats().jobs_running, 0u);
  // The refusal is journalled too, so a restart does not resume what the client was told failed.
  EXPECT_EQ(f.journal.finishes, f.journal.admits);
  // The synchronous API commits by itself.
  f.journal.fail = false;
  auto id = f.core.submitJob(echoJob(2));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(f.journal.events.back(), "commit");
}

TEST(CoreJournalTest, AWatchNamingAnotherIncarnationIsNotFound) {
  CoreFixture f;
  auto id = f.core.submitJob(echoJob(3));
  ASSERT_TRUE(id.ok());
  f.deliver("client", watchFrame(*id, f.core.incarnation() ^ 0x10, 7));
  auto fr = f.outbox.next("client");
  ASSERT_NE(fr, nullptr);
  ASSERT_TRUE(fr->root().isReject()) << fr->root().which();
  EXPECT_EQ(fr->root().getReject().getRequestId(), 7u);
  EXPECT_EQ(fromWire(fr->root().getReject().getError()).code(), absl::StatusCode::kNotFound);
  // Its own incarnation, or none (gateway, old clients): the job.
  f.deliver("client", watchFrame(*id, f.core.incarnation(), 8));
  fr = f.outbox.next("client");
  ASSERT_NE(fr, nullptr);
  EXPECT_TRUE(fr->root().isJobProgress());
  f.deliver("other", watchFrame(*id, 0, 9));
  fr = f.outbox.next("other");
  ASSERT_NE(fr, nullptr);
  EXPECT_TRUE(fr->root().isJobProgress());
}

TEST(CoreJournalTest, IdsRollOverToTheNextEpochAndTheJournalHearsFirst) {
  CoreFixture f;
  f.core.setNextJobId(firstIdOf(5) + coordinator::kSequenceMask);
  auto a = f.core.submitJob(echoJob(1));
  auto b = f.core.submitJob(echoJob(2));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, firstIdOf(5) + coordinator::kSequenceMask);
  EXPECT_EQ(*b, firstIdOf(6));
  auto it = std::find(f.journal.events.begin(), f.journal.events.end(), "epoch 6");
  ASSERT_NE(it, f.journal.events.end());
  EXPECT_EQ(*std::next(it), "admit " + std::to_string(firstIdOf(6)));
  // The last epoch wraps to 1, never to 0.
  f.core.setNextJobId(0xffff'ffffu);
  auto c = f.core.submitJob(echoJob(3));
  auto d = f.core.submitJob(echoJob(4));
  ASSERT_TRUE(c.ok() && d.ok());
  EXPECT_EQ(*c, 0xffff'ffffu);
  EXPECT_EQ(*d, firstIdOf(1));
}

TEST(CoreJournalTest, RestoredJobsKeepTheirIdsAndIncarnations) {
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  coordinator::CoordinatorCore core({}, clock, outbox, std::make_shared<prometheus::Registry>());
  control::JobStatus old;
  old.id = 5;
  old.incarnation = 1234;
  old.state = control::JobState::kSucceeded;
  core.restoreFinished(old);
  ASSERT_TRUE(core.restoreJob(12, echoJob(9), 1234).ok());
  EXPECT_EQ(core.restoreJob(12, echoJob(9)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(core.jobStatus(5)->state, control::JobState::kSucceeded);
  EXPECT_EQ(core.jobStatus(5)->incarnation, 1234u);
  EXPECT_EQ(core.jobStatus(12)->state, control::JobState::kRunning);
  EXPECT_EQ(core.jobStatus(12)->incarnation, 1234u);
  auto id = core.submitJob(echoJob(1));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, 13u);  // same epoch (0, as in the old format): after the restored ids
  EXPECT_EQ(core.jobStatus(*id)->incarnation, core.incarnation());
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

// A two-level sum: 40 "term" tokens (value = index), 4 "sum" tokens of 10 terms each, one
// "total" of the 4 sums. Sums and the total have >= 4 inputs: checkpointed.
JobSpec sumPyramid() {
  JobSpec spec;
  spec.name = "pyramid";
  TokenSpec term;
  term.op = "term";
  term.repeat = 40;
  term.args.push_back(Arg::val(int64_t{0}, 1));
  const uint32_t t = spec.add(term);
  TokenSpec sum;
  sum.op = "sum";
  sum.repeat = 4;
  sum.args.push_back(Arg::refs(t, 10, 10));
  const uint32_t s = spec.add(sum);
  TokenSpec total;
  total.op = "sum";
  total.args.push_back(Arg::refs(s, 4));
  total.output = true;
  total.name = "total";
  spec.add(total);
  return spec;
}

// Runs the tasks the node is given whose job-local index `allow`s (the others stay in flight,
// unanswered): term -> its argument, sum -> the sum of its arguments. Returns the runs by op.
std::map<std::string, int> runAll(coordinator::CoordinatorCore& core, testing::FakeNode& node,
                                  const std::function<bool(uint32_t)>& allow = nullptr) {
  std::map<std::string, int> ran;
  for (int round = 0; round < 20; ++round) {
    core.flushAll();
    auto tasks = node.takeTasks();
    if (tasks.empty()) break;
    for (auto& task : tasks) {
      if (allow && !allow(static_cast<uint32_t>(task.id))) continue;
      int64_t v = 0;
      for (const auto& a : task.args) v += a.asInt();
      ++ran[task.op];
      node.ok(task, Value(v));
    }
  }
  return ran;
}

TEST(CoreJournalTest, FinishedFanInResultsAreCheckpointedAndAResumedJobRunsOnlyWhatIsLeft) {
  coordinator::CoordinatorConfig cfg;
  cfg.checkpoint_min_inputs = 4;
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  RecordingJournal journal;
  coordinator::CoordinatorCore core(cfg, clock, outbox, std::make_shared<prometheus::Registry>());
  core.setJournal(&journal);
  const std::vector<std::pair<std::string, Weight>> ops{{"term", Weight::kLight},
                                                        {"sum", Weight::kLight}};
  testing::FakeNode node(core, outbox, "n1", ops, 1);
  ASSERT_TRUE(node.hello());
  auto id = core.submitJob(sumPyramid());
  ASSERT_TRUE(id.ok()) << id.status();
  // Terms 0..19 finish (in index order), then the first two sums: a crash comes after that.
  auto ran =
      runAll(core, node, [](uint32_t local) { return local < 20 || local == 40 || local == 41; });
  EXPECT_EQ(ran["term"], 20);
  EXPECT_EQ(ran["sum"], 2);
  // Checkpoints reach the journal with the next commit, not one call per token.
  EXPECT_TRUE(journal.checkpoints.empty());
  core.commitJournal();
  ASSERT_EQ(journal.checkpoints.count(*id), 1u);
  const coordinator::Checkpoint want{{40, Value(int64_t{45})}, {41, Value(int64_t{145})}};
  EXPECT_EQ(journal.checkpoints[*id], want);  // sums only: terms have one input each

  // A new coordinator resumes the job from the checkpoint.
  testing::MemoryOutbox outbox2;
  coordinator::CoordinatorCore again(cfg, clock, outbox2, std::make_shared<prometheus::Registry>());
  RecordingJournal journal2;
  ASSERT_TRUE(again.restoreJob(*id, sumPyramid(), 7, &journal.checkpoints[*id]).ok());
  again.setJournal(&journal2);
  EXPECT_EQ(again.counters().resumed_done, 22u);  // 2 sums + the 20 terms only they needed
  EXPECT_EQ(again.jobStatus(*id)->done, 22u);
  testing::FakeNode node2(again, outbox2, "n1", ops, 1);
  ASSERT_TRUE(node2.hello());
  auto rerun = runAll(again, node2);
  EXPECT_EQ(rerun["term"], 20);  // terms 20..39 only
  EXPECT_EQ(rerun["sum"], 3);    // sums 2 and 3, and the total
  auto st = again.jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  ASSERT_EQ(st->outputs.size(), 1u);
  EXPECT_EQ(st->outputs[0].value, Value(int64_t{780}));  // 0 + 1 + ... + 39
  again.commitJournal();
  EXPECT_EQ(journal2.checkpoints.count(*id), 0u);  // finished: its checkpoints are not written

  // A checkpoint that holds the output finishes the job at once, running nothing.
  testing::MemoryOutbox outbox3;
  coordinator::CoordinatorCore third(cfg, clock, outbox3, std::make_shared<prometheus::Registry>());
  const coordinator::Checkpoint all{{44, Value(int64_t{780})}};
  ASSERT_TRUE(third.restoreJob(*id, sumPyramid(), 7, &all).ok());
  auto st3 = third.jobStatus(*id);
  ASSERT_TRUE(st3.ok());
  EXPECT_EQ(st3->state, control::JobState::kSucceeded);
  ASSERT_EQ(st3->outputs.size(), 1u);
  EXPECT_EQ(st3->outputs[0].value, Value(int64_t{780}));
  EXPECT_EQ(third.stats().tokens_live, 0u);
}

TEST(CoreJournalTest, CheckpointingOffWritesNone) {
  coordinator::CoordinatorConfig cfg;
  cfg.checkpoint_min_inputs = 0;
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  RecordingJournal journal;
  coordinator::CoordinatorCore core(cfg, clock, outbox, std::make_shared<prometheus::Registry>());
  core.setJournal(&journal);
  testing::FakeNode node(core, outbox, "n1", {{"term", Weight::kLight}, {"sum", Weight::kLight}},
                         1);
  ASSERT_TRUE(node.hello());
  auto id = core.submitJob(sumPyramid());
  ASSERT_TRUE(id.ok());
  runAll(core, node);
  core.commitJournal();
  EXPECT_EQ(core.jobStatus(*id)->state, control::JobState::kSucceeded);
  EXPECT_TRUE(journal.checkpoints.empty());
}

// Issue 11: keys across a restart, through the real file. Before the "crash": job A's keyed
// token finished (A finished too), job L's keyed token finished while L still runs, job P's
// keyed token is running and job Q holds a pending alias of it. After the restart: L's keyed
// token is not run again (its journalled result answers it), P's runs and Q's alias gets P's
// value (not its own), and a new duplicate of A's key completes at once with A's value.
TEST(CoreJournalTest, IdempotencyKeysAnswerTheSameAfterARestart) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("tg-keys-" + std::to_string(getpid()) + ".journal"))
                               .string();
  std::filesystem::remove(path);
  FileJournalOptions o;
  o.sync = false;
  auto keyed = [](const std::string& key, int64_t v, bool with_unkeyed) {
    JobSpec spec;
    TokenSpec t;
    t.op = "echo";
    t.args.push_back(Arg::val(v));
    t.output = true;
    t.name = "keyed";
    t.idempotency_key = key;
    spec.add(t);
    if (with_unkeyed) {
      TokenSpec u;
      u.op = "echo";
      u.args.push_back(Arg::val(int64_t{-1}));
      u.output = true;
      u.name = "plain";
      spec.add(u);
    }
    return spec;
  };
  const std::vector<std::pair<std::string, Weight>> ops{{"echo", Weight::kLight}};
  uint64_t a = 0, l = 0, p = 0, q = 0;
  {
    auto j = FileJournal::open(path, o, nullptr);
    ASSERT_TRUE(j.ok()) << j.status();
    ASSERT_TRUE((*j)->activate().ok());
    testing::FakeClock clock;
    testing::MemoryOutbox outbox;
    coordinator::CoordinatorCore core({}, clock, outbox, std::make_shared<prometheus::Registry>());
    core.setNextJobId(firstIdOf((*j)->epoch()));
    core.setJournal(j->get());
    testing::FakeNode node(core, outbox, "n1", ops, 1);
    ASSERT_TRUE(node.hello());
    auto sa = core.submitJob(keyed("ka", 10, false));
    auto sl = core.submitJob(keyed("kl", 30, true));
    ASSERT_TRUE(sa.ok() && sl.ok());
    a = *sa;
    l = *sl;
    core.flushAll();
    for (auto& task : node.takeTasks()) {
      if (task.id == (l << 32 | 1)) continue;  // L's unkeyed token stays running
      node.ok(task, task.args[0]);
    }
    auto sp = core.submitJob(keyed("kp", 20, false));
    auto sq = core.submitJob(keyed("kp", 99, false));
    ASSERT_TRUE(sp.ok() && sq.ok());
    p = *sp;
    q = *sq;
    core.flushAll();
    EXPECT_EQ(node.takeTasks().size(), 1u);  // P's token only: Q's is its alias
    core.commitJournal();
    EXPECT_EQ(core.jobStatus(a)->state, control::JobState::kSucceeded);
    EXPECT_EQ(core.jobStatus(l)->state, control::JobState::kRunning);
    EXPECT_EQ((*j)->keys(), 2u);  // ka and kl have results; kp is still running
  }                               // the process "dies" here (the file holds what was written)

  Replay r;
  auto j = FileJournal::open(path, o, &r);
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_EQ(r.keys.size(), 2u);
  EXPECT_EQ(r.keys[0].key, "ka");
  EXPECT_EQ(r.keys[0].token_id, a << 32);
  EXPECT_EQ(r.keys[1].key, "kl");
  std::vector<uint64_t> live;
  for (const auto& u : r.unfinished) live.push_back(u.id);
  EXPECT_EQ(live, (std::vector<uint64_t>{l, p, q}));
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  coordinator::CoordinatorCore core({}, clock, outbox, std::make_shared<prometheus::Registry>());
  // As the app does: keys, finished jobs, then the live jobs in admission order.
  for (auto& k : r.keys) core.restoreKey(k.key, k.token_id, k.value);
  for (auto& f : r.finished) core.restoreFinished(f);
  for (auto& u : r.unfinished)
    ASSERT_TRUE(core.restoreJob(u.id, u.spec, u.incarnation, &u.checkpoint).ok());
  ASSERT_TRUE((*j)->activate().ok());
  core.setNextJobId(firstIdOf((*j)->epoch()));
  core.setJournal(j->get());
  testing::FakeNode node(core, outbox, "n1", ops, 1);
  ASSERT_TRUE(node.hello());
  core.flushAll();
  std::vector<uint64_t> ran;
  for (int round = 0; round < 5; ++round) {
    for (auto& task : node.takeTasks()) {
      ran.push_back(task.id);
      node.ok(task, task.args[0]);
    }
    core.commitJournal();
    core.flushAll();
  }
  std::sort(ran.begin(), ran.end());
  // L's unkeyed token and P's keyed token; not L's keyed token, not Q's alias.
  EXPECT_EQ(ran, (std::vector<uint64_t>{l << 32 | 1, p << 32}));
  auto output = [&](uint64_t id, const std::string& name) {
    auto st = core.jobStatus(id);
    EXPECT_TRUE(st.ok());
    if (!st.ok()) return Value();
    EXPECT_EQ(st->state, control::JobState::kSucceeded) << id;
    for (const auto& out : st->outputs)
      if (out.name == name) return out.value;
    ADD_FAILURE() << "no output " << name << " in job " << id;
    return Value();
  };
  EXPECT_EQ(output(l, "keyed"), Value(int64_t{30}));
  EXPECT_EQ(output(p, "keyed"), Value(int64_t{20}));
  EXPECT_EQ(output(q, "keyed"), Value(int64_t{20}));  // the pending alias: P's value
  // A new duplicate of a finished job's key: answered from the journal, nothing runs.
  auto dup = core.submitJob(keyed("ka", 555, false));
  ASSERT_TRUE(dup.ok());
  core.flushAll();
  EXPECT_TRUE(node.takeTasks().empty());
  EXPECT_EQ(output(*dup, "keyed"), Value(int64_t{10}));
  EXPECT_EQ((*j)->keys(), 3u);  // kp joined when P's token finished; aliases write nothing
  j->reset();
  std::filesystem::remove(path);
}

// A key's result is written before any client can see it: the JobDone of a job whose keyed
// token just finished waits for the commit that writes the key record.
TEST(CoreJournalTest, AKeyResultIsWrittenBeforeAnyJobDoneShowsIt) {
  CoreFixture f;
  testing::FakeNode node(f.core, f.outbox, "n1", {{"echo", Weight::kLight}}, 1);
  ASSERT_TRUE(node.hello());
  JobSpec job = echoJob(42);
  job.tokens[0].idempotency_key = "answer";
  f.deliver("client", submitJobFrame(job, 1, /*watch=*/true));
  f.core.commitJournal();
  auto reply = f.outbox.next("client");
  ASSERT_NE(reply, nullptr);
  ASSERT_TRUE(reply->root().isSubmitReply());
  f.core.flushAll();
  auto tasks = node.takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  f.journal.events.clear();
  node.ok(tasks[0], Value(int64_t{42}));
  EXPECT_EQ(
      f.journal.events,
      (std::vector<std::string>{"key answer=42", "finish " + std::to_string(f.journal.admits[0])}));
  EXPECT_EQ(f.outbox.pending("client"), 0u);  // not before the commit
  f.core.commitJournal();
  EXPECT_EQ(f.journal.events.back(), "commit");
  std::unique_ptr<DecodedFrame> done;
  while (auto fr = f.outbox.next("client")) {
    if (fr->root().isJobDone()) done = std::move(fr);
  }
  ASSERT_NE(done, nullptr);
  // An unkeyed job's JobDone is not held.
  f.deliver("client", submitJobFrame(echoJob(7), 2, /*watch=*/true));
  f.core.commitJournal();
  while (f.outbox.next("client")) {
  }
  f.core.flushAll();
  tasks = node.takeTasks();
  ASSERT_EQ(tasks.size(), 1u);
  node.ok(tasks[0], Value(int64_t{7}));
  bool got_done = false;
  while (auto fr = f.outbox.next("client")) got_done |= fr->root().isJobDone();
  EXPECT_TRUE(got_done);
}

// Issue 11 item 5 beyond fan-in: a token without fan-in that ran long (>= checkpoint_min_run_ms)
// and whose result is still needed is checkpointed, so a restart does not run it again; a short
// one is not (it is cheaper to run again than to journal).
TEST(CoreJournalTest, ALongRunningTokenWhoseResultIsNeededIsCheckpointedWhateverItsFanIn) {
  coordinator::CoordinatorConfig cfg;
  cfg.checkpoint_min_inputs = 0;  // fan-in checkpoints off: only the run time counts here
  cfg.checkpoint_min_run_ms = 1000;
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  RecordingJournal journal;
  coordinator::CoordinatorCore core(cfg, clock, outbox, std::make_shared<prometheus::Registry>());
  core.setJournal(&journal);
  const std::vector<std::pair<std::string, Weight>> ops{{"term", Weight::kLight},
                                                        {"sum", Weight::kLight}};
  testing::FakeNode node(core, outbox, "n1", ops, 1);
  ASSERT_TRUE(node.hello());
  // long (0) and short (1) leaves, each feeding a chain step; the last step is the output.
  JobSpec spec;
  TokenSpec leaf;
  leaf.op = "term";
  leaf.repeat = 2;
  leaf.args.push_back(Arg::val(int64_t{5}, 1));
  spec.add(leaf);
  TokenSpec step;
  step.op = "sum";
  step.args.push_back(Arg::ref(0));
  spec.add(step);  // 2
  step.args = {Arg::ref(1), Arg::ref(2)};
  step.output = true;
  step.name = "out";
  spec.add(step);  // 3
  auto id = core.submitJob(spec);
  ASSERT_TRUE(id.ok()) << id.status();
  core.flushAll();
  auto tasks = node.takeTasks();
  ASSERT_EQ(tasks.size(), 2u);
  for (auto& task : tasks) {
    const bool long_one = static_cast<uint32_t>(task.id) == 0;
    node.reply({{task, StatusOr<Value>(task.args[0])}}, long_one ? 2'000'000'000 : 5'000'000);
  }
  core.commitJournal();
  const coordinator::Checkpoint want{{0, Value(int64_t{5})}};
  EXPECT_EQ(journal.checkpoints[*id], want);  // the long leaf only

  // A restart resumes from it: the long leaf does not run again, the short one does.
  testing::MemoryOutbox outbox2;
  coordinator::CoordinatorCore again(cfg, clock, outbox2, std::make_shared<prometheus::Registry>());
  ASSERT_TRUE(again.restoreJob(*id, spec, 7, &journal.checkpoints[*id]).ok());
  testing::FakeNode node2(again, outbox2, "n1", ops, 1);
  ASSERT_TRUE(node2.hello());
  std::vector<uint32_t> ran;
  for (int round = 0; round < 5; ++round) {
    again.flushAll();
    for (auto& task : node2.takeTasks()) {
      ran.push_back(static_cast<uint32_t>(task.id));
      int64_t v = 0;
      for (const auto& a : task.args) v += a.asInt();
      node2.ok(task, Value(v));
    }
  }
  std::sort(ran.begin(), ran.end());
  EXPECT_EQ(ran, (std::vector<uint32_t>{1, 2, 3}));
  auto st = again.jobStatus(*id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, control::JobState::kSucceeded);
  ASSERT_EQ(st->outputs.size(), 1u);
  EXPECT_EQ(st->outputs[0].value, Value(int64_t{11}));  // short leaf 6 + (long leaf 5)
}

// ---- quarantines (convicted nodes) across restarts

namespace quarantine_tests {

using coordinator::QuarantineNote;

QuarantineNote note(const std::string& id, const std::string& key, const std::string& why,
                    QuarantineNote::Cause cause = QuarantineNote::kVerify) {
  return QuarantineNote::convicted(id, key, why, cause);
}

size_t quarantineRecords(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string data{std::istreambuf_iterator<char>(in), {}};
  size_t n = 0;
  for (const auto& r : scanJournal(data).records) n += r.kind == Record::kQuarantine;
  return n;
}

}  // namespace quarantine_tests

TEST_F(JournalTest, QuarantinesAreReplayedLiftsForgetThemAndCompactionKeepsTheLiveOnes) {
  using namespace quarantine_tests;
  FileJournalOptions o = opts();
  o.compact_bytes = 4096;
  {
    auto j = open(nullptr, o);
    j->quarantine(note("a", "KEY-A", "lied (verify)"));
    j->quarantine(note("b", "", "3 run timeouts", QuarantineNote::kRunTimeouts));
    j->quarantine(note("c", "KEY-C", "lied again"));
    j->quarantine(QuarantineNote::liftOf("b"));  // an operator lifted b
    j->quarantine(note("a", "KEY-A", "caught a second time"));
    ASSERT_TRUE(j->commit().ok());
    EXPECT_EQ(j->quarantines(), 2u);
    // Enough traffic for several compactions: the quarantines in force are kept by each.
    for (uint64_t id = 1; id <= 300; ++id) {
      admit(*j, id, job("j" + std::to_string(id), 10));
      j->finished(done(id, "j" + std::to_string(id)));
    }
    ASSERT_TRUE(j->commit().ok());
    EXPECT_GT(j->compactions(), 2u);
  }
  EXPECT_EQ(quarantineRecords(path_), 2u);  // b's conviction and lift, a's first: gone
  Replay r;
  auto j = open(&r, o);
  EXPECT_TRUE(r.damage.empty());
  ASSERT_EQ(r.quarantines.size(), 2u);
  EXPECT_EQ(r.quarantines[0].node_id, "c");  // oldest conviction first
  EXPECT_EQ(r.quarantines[0].key, "KEY-C");
  EXPECT_EQ(r.quarantines[1].node_id, "a");
  EXPECT_EQ(r.quarantines[1].reason, "caught a second time");
  EXPECT_EQ(r.quarantines[1].cause, QuarantineNote::kVerify);
  EXPECT_FALSE(r.quarantines[1].lifted);
  EXPECT_GT(r.quarantines[1].at_ns, 1'600'000'000'000'000'000);  // stamped: wall clock
  // A lift after the restart forgets it for the next one.
  j->quarantine(coordinator::QuarantineNote::liftOf("c"));
  ASSERT_TRUE(j->commit().ok());
  j.reset();
  Replay again;
  open(&again, o);
  ASSERT_EQ(again.quarantines.size(), 1u);
  EXPECT_EQ(again.quarantines[0].node_id, "a");
}

// A journal written before quarantine records existed (admissions, outcomes, keys, epochs
// only) still loads as it did: nothing quarantined, nothing damaged, every job back.
TEST_F(JournalTest, AJournalFromBeforeQuarantineRecordsStillLoads) {
  std::string file(kMagic);
  appendRecord(file, encodeEpoch(5, 1));
  appendRecord(file, encodeKey("k", uint64_t{1} << 32, 99, Value(int64_t{4})));
  appendRecord(file, encodeAdmit(firstIdOf(5) + 1, 99, job("old", 2)));
  appendRecord(file, encodeAdmit(firstIdOf(5) + 2, 99, job("old2", 2)));
  appendRecord(file, encodeFinish(done(firstIdOf(5) + 2, "old2")));
  writeFile(path_, file);
  Replay r;
  auto j = open(&r);
  EXPECT_TRUE(r.damage.empty());
  EXPECT_TRUE(r.quarantines.empty());
  ASSERT_EQ(r.unfinished.size(), 1u);
  EXPECT_EQ(r.unfinished[0].id, firstIdOf(5) + 1);
  EXPECT_EQ(r.finished.size(), 1u);
  EXPECT_EQ(r.keys.size(), 1u);
  EXPECT_EQ(r.epoch, 6u);
}

// End to end through the core: a node caught withholding results (run timeouts) is journalled
// with its key; a restarted core fed the replay keeps it quarantined (no token reaches it);
// undrain journals the lift and the next restart lets it work.
TEST(CoreJournalTest, AQuarantineSurvivesARestartUntilAnOperatorLiftsIt) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("tg-quarantine-" + std::to_string(getpid()) + ".journal"))
                               .string();
  std::filesystem::remove(path);
  FileJournalOptions o;
  o.sync = false;
  const std::vector<std::pair<std::string, Weight>> ops{{"echo", Weight::kLight}};
  coordinator::CoordinatorConfig config;
  config.run_timeout_ns = 1 * kSeconds;
  config.run_timeout_quarantine = 1;
  config.node_timeout_ns = 60 * kSeconds;
  struct Restarted {
    std::unique_ptr<FileJournal> journal;
    Replay replay;
    testing::FakeClock clock;
    testing::MemoryOutbox outbox;
    std::unique_ptr<coordinator::CoordinatorCore> core;
  };
  auto start = [&](Restarted& s) {
    auto j = FileJournal::open(path, o, &s.replay);
    ASSERT_TRUE(j.ok()) << j.status();
    s.journal = *std::move(j);
    ASSERT_TRUE(s.journal->activate().ok());
    s.core = std::make_unique<coordinator::CoordinatorCore>(
        config, s.clock, s.outbox, std::make_shared<prometheus::Registry>());
    for (const auto& q : s.replay.quarantines) s.core->restoreQuarantine(q);
    s.core->setNextJobId(firstIdOf(s.journal->epoch()));
    s.core->setJournal(s.journal.get());
  };
  auto stateOf = [](coordinator::CoordinatorCore& core, const std::string& id) {
    for (const auto& n : core.listNodes())
      if (n.id == id && n.state != control::NodeState::kDead) return n.state;
    return control::NodeState::kDead;
  };
  {
    Restarted s;
    start(s);
    testing::FakeNode silent(*s.core, s.outbox, "silent", ops, 1);
    silent.key = "SILENT-KEY";
    ASSERT_TRUE(silent.hello());
    ASSERT_TRUE(s.core->submitJob(echoJob(1)).ok());
    s.core->commitJournal();
    s.core->flushAll();
    ASSERT_EQ(silent.takeTasks().size(), 1u);  // and never answered
    s.clock.advance(2 * kSeconds);
    silent.heartbeat();
    s.core->tick();
    ASSERT_EQ(stateOf(*s.core, "silent"), control::NodeState::kQuarantined);
    s.core->commitJournal();
  }
  {
    Restarted s;
    start(s);
    ASSERT_EQ(s.replay.quarantines.size(), 1u);
    EXPECT_EQ(s.replay.quarantines[0].node_id, "silent");
    EXPECT_EQ(s.replay.quarantines[0].key, "SILENT-KEY");
    EXPECT_EQ(s.replay.quarantines[0].cause, coordinator::QuarantineNote::kRunTimeouts);
    EXPECT_NE(s.replay.quarantines[0].reason.find("run timeout"), std::string::npos);
    ASSERT_EQ(s.replay.unfinished.size(), 1u);  // the job it held is resumed...
    ASSERT_TRUE(s.core
                    ->restoreJob(s.replay.unfinished[0].id, s.replay.unfinished[0].spec,
                                 s.replay.unfinished[0].incarnation)
                    .ok());
    testing::FakeNode silent(*s.core, s.outbox, "silent", ops, 1);
    silent.key = "SILENT-KEY";
    ASSERT_TRUE(silent.hello());
    EXPECT_EQ(stateOf(*s.core, "silent"), control::NodeState::kQuarantined);
    s.core->flushAll();
    EXPECT_TRUE(silent.takeTasks().empty());  // ...but not on the caught node
    testing::FakeNode honest(*s.core, s.outbox, "honest", ops, 1);
    ASSERT_TRUE(honest.hello());
    s.core->flushAll();
    auto tasks = honest.takeTasks();
    ASSERT_EQ(tasks.size(), 1u);
    honest.ok(tasks[0], tasks[0].args[0]);
    // The operator lifts it: journalled.
    ASSERT_TRUE(s.core->drainNode("silent", false).ok());
    EXPECT_EQ(stateOf(*s.core, "silent"), control::NodeState::kReady);
    s.core->commitJournal();
  }
  {
    Restarted s;
    start(s);
    EXPECT_TRUE(s.replay.quarantines.empty());
    testing::FakeNode silent(*s.core, s.outbox, "silent", ops, 1);
    silent.key = "SILENT-KEY";
    ASSERT_TRUE(silent.hello());
    EXPECT_EQ(stateOf(*s.core, "silent"), control::NodeState::kReady);
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tokengate::journal
