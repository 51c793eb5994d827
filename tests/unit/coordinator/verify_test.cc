// Verified execution (`verify: N%`): the Verifier's sampling, comparison and votes on their own,
// JobTable::reopen (re-running a lying node's results and what they fed), then CoordinatorCore on
// the FakeClock with FakeNodes: honest nodes agree, a lying node is outvoted, quarantined and its
// unverified work re-run so the job's result is exact; two nodes that disagree fail the token;
// a lone node's sampled tokens wait, then count as unverifiable.
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "coordinator/core/coordinator.h"
#include "coordinator/core/job_table.h"
#include "coordinator/core/verifier.h"
#include "tests/fakes/core_fixture.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::coordinator {
namespace {

using testing::FakeClock;
using testing::FakeNode;
using testing::MemoryOutbox;
using testing::TaskCopy;

// ---- Verifier alone

TEST(VerifierTest, SamplingIsReproducibleAndNearTheRate) {
  EXPECT_EQ(verifyBasisPoints(0), 0u);
  EXPECT_EQ(verifyBasisPoints(5), 500u);
  EXPECT_EQ(verifyBasisPoints(0.001), 1u);  // tiny but on: at least one basis point
  EXPECT_EQ(verifyBasisPoints(100), 10000u);
  EXPECT_EQ(verifyBasisPoints(250), 10000u);
  EXPECT_EQ(verifyBasisPoints(std::nan("")), 0u);
  for (uint32_t bp : {100u, 500u, 1000u}) {
    uint64_t n = 0;
    for (uint32_t i = 0; i < 200'000; ++i) n += Verifier::sampled(1, 42, i, bp) ? 1 : 0;
    const double expect = 200'000.0 * bp / 10000;
    EXPECT_NEAR(static_cast<double>(n), expect, expect * 0.1) << bp;
  }
  // The same job and index always give the same answer; another job another sample.
  size_t same = 0, differs = 0;
  for (uint32_t i = 0; i < 10'000; ++i) {
    EXPECT_EQ(Verifier::sampled(1, 7, i, 1000), Verifier::sampled(1, 7, i, 1000));
    if (Verifier::sampled(1, 7, i, 1000)) (Verifier::sampled(1, 8, i, 1000) ? same : differs)++;
  }
  EXPECT_GT(differs, same);
  for (uint32_t i = 0; i < 1000; ++i) {
    EXPECT_FALSE(Verifier::sampled(1, 7, i, 0));
    EXPECT_TRUE(Verifier::sampled(1, 7, i, 10000));
  }
  // Another seed, another sample: a node cannot tell which tokens are checked without it.
  size_t agree = 0, sampled = 0;
  for (uint32_t i = 0; i < 10'000; ++i) {
    if (!Verifier::sampled(1, 7, i, 1000)) continue;
    ++sampled;
    agree += Verifier::sampled(2, 7, i, 1000) ? 1 : 0;
  }
  EXPECT_LT(agree, sampled / 4);
}

TEST(VerifierTest, ComparisonIsBitwise) {
  EXPECT_TRUE(bitwiseEqual(Value(int64_t{3}), Value(int64_t{3})));
  EXPECT_FALSE(bitwiseEqual(Value(int64_t{3}), Value(3.0)));  // kinds must match
  EXPECT_FALSE(bitwiseEqual(Value(0.0), Value(-0.0)));        // == would say equal
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(bitwiseEqual(Value(nan), Value(nan)));  // == would say different
  EXPECT_FALSE(bitwiseEqual(Value(0.1 + 0.2), Value(0.3)));
  EXPECT_TRUE(bitwiseEqual(Value(std::string("ab")), Value(std::string("ab"))));
  EXPECT_FALSE(bitwiseEqual(Value(std::string("ab")), Value(std::string("ac"))));
  const Value d1(fromBigFloat(BigFloat(1) / 3)), d2(fromBigFloat(BigFloat(1) / 3));
  EXPECT_TRUE(bitwiseEqual(d1, d2));
  EXPECT_FALSE(bitwiseEqual(d1, Value(fromBigFloat(BigFloat(2) / 3))));
  List a{{Value(1.0), Value(int64_t{2})}}, b{{Value(1.0), Value(int64_t{2})}},
      c{{Value(-0.0 + 1.0), Value(int64_t{3})}};
  EXPECT_TRUE(bitwiseEqual(Value(a), Value(b)));
  EXPECT_FALSE(bitwiseEqual(Value(a), Value(c)));
}

TEST(VerifierTest, TwoEqualVotesAcceptAsVerified) {
  Verifier v({});
  auto o = v.vote(1, {"a", 0, Value(int64_t{5})});
  EXPECT_EQ(o.kind, Verifier::Outcome::kRerun);
  EXPECT_TRUE(v.ranOn(1, "a"));
  EXPECT_FALSE(v.ranOn(1, "b"));
  // The same node again is not a second opinion.
  o = v.vote(1, {"a", 0, Value(int64_t{5})});
  EXPECT_EQ(o.kind, Verifier::Outcome::kRerun);
  o = v.vote(1, {"b", 1, Value(int64_t{5})});
  ASSERT_EQ(o.kind, Verifier::Outcome::kAccept);
  EXPECT_TRUE(o.verified);
  EXPECT_FALSE(o.mismatch);
  EXPECT_TRUE(o.liars.empty());
  EXPECT_EQ(o.value, Value(int64_t{5}));
  EXPECT_FALSE(v.isOpen(1));
  EXPECT_EQ(v.counters().matched, 1u);
  EXPECT_EQ(v.counters().mismatched, 0u);
}

TEST(VerifierTest, AThirdNodeBreaksATieAndNamesTheOddOne) {
  Verifier v({});
  EXPECT_EQ(v.vote(9, {"honest1", 0, Value(1.5)}).kind, Verifier::Outcome::kRerun);
  auto o = v.vote(9, {"liar", 1, Value(2.5)});
  EXPECT_EQ(o.kind, Verifier::Outcome::kRerun);  // two that differ: a third is needed
  EXPECT_TRUE(v.ranOn(9, "liar"));
  o = v.vote(9, {"honest2", 2, Value(1.5)});
  ASSERT_EQ(o.kind, Verifier::Outcome::kAccept);
  EXPECT_TRUE(o.verified);
  EXPECT_TRUE(o.mismatch);
  EXPECT_EQ(o.value, Value(1.5));
  EXPECT_EQ(o.liars, std::vector<std::string>{"liar"});
  EXPECT_EQ(o.voters, (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(v.counters().mismatched, 1u);
  // The liar first: the same verdict.
  v.vote(10, {"liar", 1, Value(2.5)});
  v.vote(10, {"honest1", 0, Value(1.5)});
  o = v.vote(10, {"honest2", 2, Value(1.5)});
  EXPECT_EQ(o.liars, std::vector<std::string>{"liar"});
}

TEST(VerifierTest, ThreeDifferentResultsFailWithDataLoss) {
  Verifier v({});
  v.vote(3, {"a", 0, Value(int64_t{1})});
  v.vote(3, {"b", 1, Value(int64_t{2})});
  auto o = v.vote(3, {"c", 2, Value(int64_t{3})});
  ASSERT_EQ(o.kind, Verifier::Outcome::kFail);
  EXPECT_EQ(o.error.code(), StatusCode::kDataLoss);
  EXPECT_TRUE(o.liars.empty());  // no majority: nobody is convicted
  EXPECT_EQ(v.counters().failed, 1u);
}

TEST(VerifierTest, AParkedTokenWaitsItsBoundThenIsUnverifiableOrFails) {
  Verifier v({.wait = 10 * kSeconds});
  v.vote(1, {"only", 0, Value(int64_t{1})});
  v.vote(2, {"a", 0, Value(int64_t{1})});
  v.vote(2, {"b", 1, Value(int64_t{2})});
  v.park(1, 100 * kSeconds);
  v.park(2, 100 * kSeconds);
  v.park(1, 105 * kSeconds);  // parked again: the first time counts
  std::map<uint64_t, Verifier::Outcome> got;
  auto take = [&](uint64_t id, Verifier::Outcome o) { got.emplace(id, std::move(o)); };
  v.expired(109 * kSeconds, take);
  EXPECT_TRUE(got.empty());
  v.expired(110 * kSeconds, take);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].kind, Verifier::Outcome::kAccept);
  EXPECT_FALSE(got[1].verified);
  EXPECT_EQ(got[2].kind, Verifier::Outcome::kFail);
  EXPECT_EQ(got[2].error.code(), StatusCode::kDataLoss);
  EXPECT_EQ(v.counters().unverifiable, 1u);
  EXPECT_TRUE(v.empty());
  // Placed again before the bound: the wait starts over when it parks next time.
  v.vote(3, {"a", 0, Value(int64_t{1})});
  v.park(3, 0);
  v.unpark(3);
  v.expired(60 * kSeconds, take);
  EXPECT_TRUE(v.isOpen(3));
}

TEST(VerifierTest, ForgettingALiarDropsItsVotesAndFinishedJobsDropTheirRecords) {
  Verifier v({});
  const uint64_t job5 = uint64_t{5} << 32, job6 = uint64_t{6} << 32;
  v.vote(job5 | 1, {"liar", 0, Value(int64_t{1})});
  v.vote(job5 | 2, {"liar", 0, Value(int64_t{1})});
  v.vote(job5 | 2, {"b", 1, Value(int64_t{2})});
  v.vote(job6 | 1, {"b", 1, Value(int64_t{2})});
  auto emptied = v.forgetNode("liar");
  EXPECT_EQ(emptied, std::vector<uint64_t>{job5 | 1});
  EXPECT_FALSE(v.ranOn(job5 | 2, "liar"));
  EXPECT_TRUE(v.ranOn(job5 | 2, "b"));
  v.dropJob(5);
  EXPECT_FALSE(v.isOpen(job5 | 2));
  EXPECT_TRUE(v.isOpen(job6 | 1));
}

// ---- JobTable::reopen

class ReopenTest : public ::testing::Test {
 protected:
  // 4 terms -> 2 chunks (2 terms each) -> 1 final.
  void SetUp() override {
    JobSpec spec;
    TokenSpec term;
    term.op = "num";
    term.repeat = 4;
    term.args.push_back(Arg::val(int64_t{0}, 1));
    spec.add(term);
    TokenSpec chunk;
    chunk.op = "sum";
    chunk.repeat = 2;
    chunk.args.push_back(Arg::refs(0, 2, 2));
    spec.add(chunk);
    TokenSpec fin;
    fin.op = "sum";
    fin.args.push_back(Arg::refs(4, 2));
    fin.output = true;
    spec.add(fin);
    job_ = &jobs_.add(1, 0, "j", 0);
    jobs_.build(*job_, spec, [](SpecRec&) {});
  }
  void complete(uint32_t i, int64_t v) {
    JobTable::completed(*job_, i, Value(v));
    JobTable::wake(*job_, i, [](uint32_t) {});
    jobs_.retired(*job_, i);
  }
  JobTable jobs_{10};
  JobRec* job_ = nullptr;
};

TEST_F(ReopenTest, AWrongTermReopensWhatItFedAndTheFreedInputsThoseNeed) {
  for (uint32_t i = 0; i < 4; ++i) complete(i, i);
  complete(4, 1);
  complete(5, 5);
  complete(6, 6);
  EXPECT_EQ(job_->done, 7u);
  EXPECT_EQ(jobs_.liveTokens(), 0u);
  std::vector<uint32_t> stopped, ready;
  const uint64_t n = jobs_.reopen(
      *job_, {1}, [&](uint32_t x) { stopped.push_back(x); },
      [&](uint32_t x) { ready.push_back(x); });
  // Term 1, chunk 0 and the final are wrong; term 0's and chunk 1's results were freed when
  // their consumers finished, so they run again to feed them, and chunk 1's terms with it.
  EXPECT_EQ(n, 7u);
  EXPECT_TRUE(stopped.empty());
  EXPECT_EQ(std::set<uint32_t>(ready.begin(), ready.end()), (std::set<uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(job_->done, 0u);
  EXPECT_EQ(jobs_.liveTokens(), 7u);
  EXPECT_EQ(job_->tokens[4].pending, 2u);
  EXPECT_EQ(job_->tokens[6].pending, 2u);
  // Running it again to the end balances every count.
  for (uint32_t i = 0; i < 4; ++i) complete(i, i);
  complete(4, 1);
  complete(5, 5);
  complete(6, 6);
  EXPECT_EQ(job_->done, 7u);
  EXPECT_EQ(jobs_.liveTokens(), 0u);
  EXPECT_EQ(JobTable::getResult(*job_, job_->tokens[6]), Value(int64_t{6}));
}

TEST_F(ReopenTest, UnfinishedDependentsAreStoppedAndKeptInputsAreNotRerun) {
  for (uint32_t i = 0; i < 4; ++i) complete(i, i);
  complete(4, 1);
  job_->tokens[5].state = kRunning;  // chunk 1 is running with terms 2 and 3
  std::vector<uint32_t> stopped, ready;
  const uint64_t n = jobs_.reopen(
      *job_, {2}, [&](uint32_t x) { stopped.push_back(x); },
      [&](uint32_t x) { ready.push_back(x); });
  // Term 2 is wrong: chunk 1 holds it (stopped, waits again); term 3's result is still kept for
  // chunk 1, so it does not run again; chunk 0 and its terms are untouched.
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(stopped, std::vector<uint32_t>{5});
  EXPECT_EQ(ready, std::vector<uint32_t>{2});
  EXPECT_EQ(job_->tokens[5].state, kWaiting);
  EXPECT_EQ(job_->tokens[5].pending, 1u);
  EXPECT_EQ(job_->tokens[4].state, kDone);
  EXPECT_EQ(job_->tokens[6].pending, 1u);  // still waits for chunk 1 only
}

TEST_F(ReopenTest, VerifiedOrUnrelatedSeedsThatAreNotDoneAreIgnored) {
  complete(0, 0);
  const uint64_t n = jobs_.reopen(
      *job_, {1, 99}, [](uint32_t) {}, [](uint32_t) {});
  EXPECT_EQ(n, 0u);  // term 1 never finished; 99 is not a token
  EXPECT_EQ(job_->done, 1u);
}

// ---- CoordinatorCore

class VerifyCoreTest : public testing::CoreTestBase {
 protected:
  void SetUp() override {
    config_.first_job_id = 1;  // job ids and the seed, so the samples, are the same every run
    config_.verify_seed = 12345;
    config_.verify_wait_ns = 5 * kSeconds;
    config_.node_timeout_ns = 60 * kSeconds;
    make();
  }
  std::unique_ptr<FakeNode> node(const std::string& id, bool deterministic = true) {
    return addNode(id, {{"num", Weight::kLight}, {"sum", Weight::kLight}}, 1, deterministic);
  }
  // `terms` num tokens (value = index) -> chunks of `chunk` -> one output "total".
  static JobSpec sumJob(uint32_t terms, uint32_t chunk, double verify) {
    JobSpec job;
    job.verify_pct = verify;
    TokenSpec t;
    t.op = "num";
    t.repeat = terms;
    t.args.push_back(Arg::val(int64_t{0}, 1));
    job.add(t);
    TokenSpec c;
    c.op = "sum";
    c.repeat = terms / chunk;
    c.args.push_back(Arg::refs(0, chunk, chunk));
    job.add(c);
    TokenSpec f;
    f.op = "sum";
    f.name = "total";
    f.output = true;
    f.args.push_back(Arg::refs(terms, terms / chunk));
    job.add(f);
    return job;
  }
  static Value honest(const TaskCopy& t) {
    if (t.op == "num") return t.args[0];
    int64_t s = 0;
    for (const auto& a : t.args) s += a.asInt();
    return Value(s);
  }
  // Every node answers what it holds (liars add one), heartbeats, the clock moves 50 ms.
  // Returns the tasks each node ran, by node id.
  void round(std::initializer_list<FakeNode*> nodes, const std::set<FakeNode*>& liars = {}) {
    core_->flushAll();
    for (auto* n : nodes) {
      for (auto& t : n->takeTasks()) {
        ran_[n->peer()].push_back(t.id);
        Value v = honest(t);
        if (liars.contains(n)) v = Value(v.asInt() + 1);
        n->ok(t, v);
      }
      n->heartbeat();
    }
    clock_.advance(50 * kMillis);
    core_->tick();
  }
  control::JobStatus status(uint64_t id) {
    auto st = core_->jobStatus(id);
    EXPECT_TRUE(st.ok());
    return *st;
  }
  static int64_t total(uint32_t terms) { return int64_t{terms} * (terms - 1) / 2; }

  std::map<std::string, std::vector<uint64_t>> ran_;  // token ids each peer ran
};

TEST_F(VerifyCoreTest, HonestNodesAgreeOnEverySampledTokenAndEachRunsOnTwoNodes) {
  auto a = node("a"), b = node("b");
  auto id = core_->submitJob(sumJob(100, 10, 100));
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 100 && status(*id).state == control::JobState::kRunning; ++i)
    round({a.get(), b.get()});
  auto st = status(*id);
  ASSERT_EQ(st.state, control::JobState::kSucceeded);
  EXPECT_EQ(st.outputs.at(0).value, Value(total(100)));
  EXPECT_EQ(st.verified, 111u);  // every token, at 100%
  EXPECT_EQ(st.mismatched, 0u);
  EXPECT_EQ(core_->verifyCounters().matched, 111u);
  EXPECT_EQ(core_->stats().verify_matched, 111u);
  EXPECT_EQ(metric("tokengate_verifications_total", "outcome", "matched"), 111);
  // Every token ran once on each node: never twice on the same one.
  for (auto* n : {a.get(), b.get()}) {
    std::set<uint64_t> once(ran_[n->peer()].begin(), ran_[n->peer()].end());
    EXPECT_EQ(once.size(), 111u);
    EXPECT_EQ(ran_[n->peer()].size(), 111u);
  }
}

TEST_F(VerifyCoreTest, ASampleOfTheTokensRunsTwiceAndTheRestOnce) {
  auto a = node("a"), b = node("b");
  auto id = core_->submitJob(sumJob(2000, 100, 5));
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 200 && status(*id).state == control::JobState::kRunning; ++i)
    round({a.get(), b.get()});
  auto st = status(*id);
  ASSERT_EQ(st.state, control::JobState::kSucceeded);
  EXPECT_EQ(st.outputs.at(0).value, Value(total(2000)));
  uint64_t sampled = 0;
  for (uint32_t i = 0; i < 2021; ++i)
    sampled += Verifier::sampled(config_.verify_seed, *id, i, 500) ? 1 : 0;
  EXPECT_GT(sampled, 60u);
  EXPECT_LT(sampled, 150u);
  EXPECT_EQ(st.verified, sampled);
  EXPECT_EQ(ran_[a->peer()].size() + ran_[b->peer()].size(), 2021u + sampled);
}

TEST_F(VerifyCoreTest, ALyingNodeIsQuarantinedAndItsWorkRunsAgainSoTheResultIsExact) {
  auto liar = node("liar"), h1 = node("h1"), h2 = node("h2");
  auto id = core_->submitJob(sumJob(600, 20, 10));
  ASSERT_TRUE(id.ok());
  bool success_seen_while_liar_free = false;
  for (int i = 0; i < 400 && status(*id).state == control::JobState::kRunning; ++i) {
    round({liar.get(), h1.get(), h2.get()}, {liar.get()});
    if (status(*id).state == control::JobState::kSucceeded &&
        stateOf("liar") != control::NodeState::kQuarantined)
      success_seen_while_liar_free = true;
  }
  auto st = status(*id);
  ASSERT_EQ(st.state, control::JobState::kSucceeded);
  EXPECT_FALSE(success_seen_while_liar_free);
  EXPECT_EQ(st.outputs.at(0).value, Value(total(600)));  // exact despite the liar
  EXPECT_EQ(stateOf("liar"), control::NodeState::kQuarantined);
  EXPECT_EQ(stateOf("h1"), control::NodeState::kReady);
  EXPECT_EQ(stateOf("h2"), control::NodeState::kReady);
  EXPECT_GE(st.mismatched, 1u);
  EXPECT_GT(st.reopened, 0u);
  EXPECT_EQ(core_->counters().verify_quarantines, 1u);
  EXPECT_EQ(core_->stats().nodes_quarantined, 1u);
  EXPECT_GE(core_->stats().verify_mismatched, 1u);
  EXPECT_GT(core_->stats().tokens_reopened, 0u);
  EXPECT_EQ(metric("tokengate_nodes", "state", "quarantined"), 1);
  EXPECT_GE(metric("tokengate_verifications_total", "outcome", "mismatched"), 1);
  EXPECT_GT(metric("tokengate_tokens_reopened_total"), 0);
  // No new work for it; a second job runs on the honest nodes only and is exact.
  ran_.clear();
  auto id2 = core_->submitJob(sumJob(200, 20, 10));
  ASSERT_TRUE(id2.ok());
  for (int i = 0; i < 200 && status(*id2).state == control::JobState::kRunning; ++i)
    round({liar.get(), h1.get(), h2.get()}, {liar.get()});
  EXPECT_EQ(status(*id2).state, control::JobState::kSucceeded);
  EXPECT_EQ(status(*id2).outputs.at(0).value, Value(total(200)));
  EXPECT_TRUE(ran_[liar->peer()].empty());
  EXPECT_EQ(core_->stats().tokens_live, 0u);
  // A reconnect does not clear it; undrain does.
  ASSERT_TRUE(liar->hello());
  EXPECT_EQ(stateOf("liar"), control::NodeState::kQuarantined);
  ASSERT_TRUE(core_->drainNode("liar", false).ok());
  EXPECT_EQ(stateOf("liar"), control::NodeState::kReady);
}

// A liar's unverified results stay traceable after its node record is dropped
// (--departed-node-retention-s): the slot keeps the id (a tombstone) and is not reused while a
// job that may hold its results runs, so a conviction after the drop still re-runs its work.
TEST_F(VerifyCoreTest, ALiarsResultsAreTracedAfterItsRecordIsDroppedAndTheResultIsExact) {
  config_.departed_node_retention_ns = 1 * kSeconds;
  config_.verify_wait_ns = 600 * kSeconds;  // the parked ties wait for a third node
  make();
  auto liar = node("liar"), h1 = node("h1");
  auto id = core_->submitJob(sumJob(400, 20, 10));
  ASSERT_TRUE(id.ok());
  // Two nodes: sampled tokens they disagree on wait for a tie-break; the liar's unsampled
  // results are accepted meanwhile.
  for (int i = 0; i < 40; ++i) round({liar.get(), h1.get()}, {liar.get()});
  ASSERT_EQ(status(*id).state, control::JobState::kRunning);
  ASSERT_EQ(core_->counters().verify_quarantines, 0u);
  liar->disconnect();
  for (int i = 0; i < 40; ++i) round({h1.get()});  // > retention: the liar's record is dropped
  EXPECT_EQ(stateOf("liar"), control::NodeState::kDead);
  for (const auto& n : core_->listNodes()) EXPECT_NE(n.id, "liar") << "record dropped";
  // A third node breaks the ties: the liar is outvoted although its record is gone, and every
  // result it produced runs again. The new node must not inherit the liar's slot.
  auto h2 = node("h2");
  for (int i = 0; i < 400 && status(*id).state == control::JobState::kRunning; ++i)
    round({h1.get(), h2.get()});
  auto st = status(*id);
  ASSERT_EQ(st.state, control::JobState::kSucceeded);
  EXPECT_EQ(st.outputs.at(0).value, Value(total(400)));
  EXPECT_EQ(core_->counters().verify_quarantines, 1u);
  EXPECT_GT(st.reopened, 0u);
  EXPECT_TRUE(core_->convictions().quarantined("liar"));
  // Once no job that may hold its results runs, the slot is free for a newcomer again.
  auto h3 = node("h3");
  EXPECT_EQ(stateOf("h3"), control::NodeState::kReady);
}

// Convictions are kept apart from node records, name the node's key, survive the record's
// drop, and make a node that says hello with a convicted key join quarantined under any id.
TEST_F(VerifyCoreTest, AConvictedKeyJoinsQuarantinedUnderAnyIdUntilUndrained) {
  config_.departed_node_retention_ns = 1 * kSeconds;
  make();
  auto liar = std::make_unique<FakeNode>(
      *core_, outbox_, "liar",
      std::vector<std::pair<std::string, Weight>>{{"num", Weight::kLight}, {"sum", Weight::kLight}},
      1);
  liar->key = "liar-public-key";
  ASSERT_TRUE(liar->hello());
  auto h1 = node("h1"), h2 = node("h2");
  auto id = core_->submitJob(sumJob(600, 20, 10));
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 400 && status(*id).state == control::JobState::kRunning; ++i)
    round({liar.get(), h1.get(), h2.get()}, {liar.get()});
  ASSERT_EQ(status(*id).outputs.at(0).value, Value(total(600)));
  const QuarantineNote* c = core_->convictions().find("liar");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->key, "liar-public-key");
  EXPECT_EQ(c->cause, QuarantineNote::kVerify);
  EXPECT_NE(c->reason.find("verify"), std::string::npos) << c->reason;
  // Gone and dropped, it comes back under a new id with the same key: quarantined.
  liar->disconnect();
  for (int i = 0; i < 40; ++i) round({h1.get(), h2.get()});
  auto alias = std::make_unique<FakeNode>(
      *core_, outbox_, "fresh-id",
      std::vector<std::pair<std::string, Weight>>{{"num", Weight::kLight}}, 1);
  alias->key = "liar-public-key";
  ASSERT_TRUE(alias->hello());
  EXPECT_EQ(stateOf("fresh-id"), control::NodeState::kQuarantined);
  // Another key under another id is not affected.
  auto other = node("other");
  EXPECT_EQ(stateOf("other"), control::NodeState::kReady);
  // Undrain lifts the id's conviction and the key's: both ids may work again.
  ASSERT_TRUE(core_->drainNode("fresh-id", false).ok());
  EXPECT_EQ(stateOf("fresh-id"), control::NodeState::kReady);
  EXPECT_FALSE(core_->convictions().quarantined("liar", "liar-public-key"));
  EXPECT_EQ(core_->convictions().size(), 0u);
}

TEST_F(VerifyCoreTest, TwoNodesThatDisagreeFailTheTokenWithDataLossNotSilently) {
  auto liar = node("liar"), honest = node("honest");
  auto id = core_->submitJob(sumJob(40, 10, 100));
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 400 && status(*id).state == control::JobState::kRunning; ++i)
    round({liar.get(), honest.get()}, {liar.get()});
  auto st = status(*id);
  ASSERT_EQ(st.state, control::JobState::kFailed);
  EXPECT_EQ(st.outputs.at(0).status.code(), StatusCode::kFailedPrecondition);  // its inputs
  EXPECT_GT(st.mismatched, 0u);
  EXPECT_GT(core_->verifyCounters().failed, 0u);
  // Two nodes cannot tell which one lies: neither is quarantined.
  EXPECT_EQ(stateOf("liar"), control::NodeState::kReady);
  EXPECT_EQ(stateOf("honest"), control::NodeState::kReady);
  EXPECT_GE(clock_.now(), config_.verify_wait_ns);  // it waited for a third node first
}

TEST_F(VerifyCoreTest, ALoneNodesSampledTokensWaitTheBoundThenCountAsUnverifiable) {
  auto only = node("only");
  auto id = core_->submitJob(sumJob(100, 10, 20));
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 60; ++i) round({only.get()});           // 3 s: less than the 5 s wait
  EXPECT_EQ(status(*id).state, control::JobState::kRunning);  // not done while samples wait
  for (int i = 0; i < 400 && status(*id).state == control::JobState::kRunning; ++i)
    round({only.get()});
  auto st = status(*id);
  ASSERT_EQ(st.state, control::JobState::kSucceeded);
  EXPECT_EQ(st.outputs.at(0).value, Value(total(100)));
  EXPECT_GT(st.unverifiable, 0u);
  EXPECT_EQ(st.verified, 0u);
  EXPECT_EQ(core_->stats().verify_unverifiable, st.unverifiable);
  EXPECT_EQ(metric("tokengate_verifications_total", "outcome", "unverifiable"),
            static_cast<double>(st.unverifiable));
}

TEST_F(VerifyCoreTest, ASecondNodeJoiningInTimeVerifiesParkedTokens) {
  auto first = node("first");
  auto id = core_->submitJob(sumJob(100, 10, 20));
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 20; ++i) round({first.get()});
  auto second = node("second");
  for (int i = 0; i < 200 && status(*id).state == control::JobState::kRunning; ++i)
    round({first.get(), second.get()});
  auto st = status(*id);
  ASSERT_EQ(st.state, control::JobState::kSucceeded);
  EXPECT_EQ(st.unverifiable, 0u);
  EXPECT_GT(st.verified, 0u);
}

TEST_F(VerifyCoreTest, OpsNotDeclaredDeterministicAreNeverSampledAndOpsCanAskForVerify) {
  auto a = node("a", /*deterministic=*/false), b = node("b", false);
  auto id = core_->submitJob(sumJob(100, 10, 100));
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 100 && status(*id).state == control::JobState::kRunning; ++i)
    round({a.get(), b.get()});
  EXPECT_EQ(status(*id).state, control::JobState::kSucceeded);
  EXPECT_EQ(core_->verifyCounters().sampled, 0u);
  // Another node declares them deterministic: a liar cannot opt an op out by saying otherwise.
  auto c = node("c", true);
  // The op's own verify applies to jobs that ask for none.
  control::OpLimits limits;
  limits.verify_pct = 100;
  ASSERT_TRUE(core_->setOpLimits("num", limits).ok());
  limits.verify_pct = 101;
  EXPECT_EQ(core_->setOpLimits("num", limits).status().code(), StatusCode::kInvalidArgument);
  auto id2 = core_->submitJob(sumJob(100, 10, 0));
  ASSERT_TRUE(id2.ok());
  for (int i = 0; i < 100 && status(*id2).state == control::JobState::kRunning; ++i)
    round({a.get(), b.get(), c.get()});
  auto st = status(*id2);
  EXPECT_EQ(st.state, control::JobState::kSucceeded);
  EXPECT_EQ(st.verified, 100u);  // the 100 num tokens, not the sums
  JobSpec bad = sumJob(10, 10, 150);
  EXPECT_EQ(core_->submitJob(bad).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tokengate::coordinator
