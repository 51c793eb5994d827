// NodeTable on its own, and the core's node events through it: node loss visits only the lost
// node's tokens, the `left` event counts what was re-queued, departed records are dropped.
#include "coordinator/core/node_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <variant>

#include "coordinator/core/coordinator.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::coordinator {
namespace {

using testing::FakeClock;
using testing::FakeNode;
using testing::MemoryOutbox;

NodeRec rec(const std::string& id, const std::string& peer) {
  NodeRec n;
  n.id = id;
  n.peer = peer;
  for (auto& l : n.lanes) l.present = true, l.workers = 1;
  return n;
}

bool hasSeries(prometheus::Registry& r, const std::string& node) {
  for (const auto& fam : r.Collect())
    for (const auto& m : fam.metric)
      for (const auto& l : m.label)
        if (l.name == "node" && l.value == node) return true;
  return false;
}

// The value of tokengate_nodes{state=...}.
double nodesGauge(prometheus::Registry& r, const std::string& state) {
  for (const auto& fam : r.Collect()) {
    if (fam.name != "tokengate_nodes") continue;
    for (const auto& m : fam.metric)
      for (const auto& l : m.label)
        if (l.name == "state" && l.value == state) return m.gauge.value;
  }
  return -1;
}

TEST(NodeTable, LooksUpByPeerAndNewestRegistrationOfAnId) {
  auto registry = std::make_shared<prometheus::Registry>();
  Metrics metrics(registry);
  NodeTable t(metrics, 10 * kSeconds);
  const uint32_t a = t.add(rec("a", "peer-1"));
  EXPECT_EQ(t.byPeer("peer-1"), &t[a]);
  EXPECT_EQ(t.byId("a"), &t[a]);
  t[a].state = control::NodeState::kDead;
  t.markDeparted(a, 0);
  const uint32_t a2 = t.add(rec("a", "peer-2"));
  EXPECT_NE(a, a2);
  EXPECT_EQ(t.byId("a"), &t[a2]);
  EXPECT_FALSE(t.isNewest(t[a]));
  EXPECT_TRUE(t.isNewest(t[a2]));
  EXPECT_EQ(t.byPeer("peer-1"), &t[a]) << "kept while retained";
  EXPECT_EQ(t.byPeer("nobody"), nullptr);
}

TEST(NodeTable, DepartedRecordsAndSeriesAreDroppedAfterRetentionAndSlotsReused) {
  auto registry = std::make_shared<prometheus::Registry>();
  Metrics metrics(registry);
  NodeTable t(metrics, 10 * kSeconds);
  const uint32_t a = t.add(rec("a", "pa"));
  const uint32_t b = t.add(rec("b", "pb"));
  EXPECT_TRUE(hasSeries(*registry, "a"));
  t[a].state = control::NodeState::kDead;
  t.markDeparted(a, 5 * kSeconds);
  EXPECT_TRUE(t.reap(14 * kSeconds).empty());
  EXPECT_EQ(t.reap(15 * kSeconds), std::vector<uint32_t>{a});
  EXPECT_TRUE(t[a].vacant);
  EXPECT_EQ(t.byPeer("pa"), nullptr);
  EXPECT_EQ(t.byId("a"), nullptr);
  EXPECT_FALSE(hasSeries(*registry, "a"));
  EXPECT_TRUE(hasSeries(*registry, "b"));
  EXPECT_EQ(t.add(rec("c", "pc")), a) << "the freed slot is reused";
  EXPECT_EQ(t.size(), 2u);
  EXPECT_FALSE(t[b].vacant);
}

TEST(NodeTable, ACleanDepartureIsDroppedAtTheNextReapWhateverTheRetention) {
  auto registry = std::make_shared<prometheus::Registry>();
  Metrics metrics(registry);
  NodeTable t(metrics, 10 * kSeconds);
  const uint32_t a = t.add(rec("a", "pa"));
  const uint32_t b = t.add(rec("b", "pb"));
  t[a].state = t[b].state = control::NodeState::kDead;
  t.markDeparted(a, 5 * kSeconds, /*clean=*/true);
  t.markDeparted(b, 5 * kSeconds);
  EXPECT_TRUE(t[a].left);
  EXPECT_FALSE(t[b].left);
  EXPECT_EQ(t.reap(5 * kSeconds), std::vector<uint32_t>{a}) << "no retention for a clean exit";
  EXPECT_TRUE(t[a].vacant);
  EXPECT_FALSE(hasSeries(*registry, "a"));
  EXPECT_TRUE(hasSeries(*registry, "b")) << "a lost node keeps its series for the retention";
  EXPECT_TRUE(t.reap(6 * kSeconds).empty());
  EXPECT_EQ(t.reap(15 * kSeconds), std::vector<uint32_t>{b});
}

// A departed node that had results accepted may be named by finished tokens of running jobs
// (TokenRec::by): its record is dropped, but the slot keeps the id and is not reused until
// every job admitted before the drop has finished. A node without results (an id flood) frees
// its slot at once.
TEST(NodeTable, ASlotWhoseNodeHadResultsKeepsItsIdUntilTheJobsThatMayNameItFinish) {
  auto registry = std::make_shared<prometheus::Registry>();
  Metrics metrics(registry);
  NodeTable t(metrics, 10 * kSeconds);
  const uint32_t worked = t.add(rec("worked", "pw"));
  const uint32_t idle = t.add(rec("idle", "pi"));
  t[worked].completed = 5;
  for (uint32_t s : {worked, idle}) {
    t[s].state = control::NodeState::kDead;
    t.markDeparted(s, 0);
  }
  // Jobs 0..2 were admitted (sequences 0, 1, 2) when the records are dropped.
  auto freed = t.reap(10 * kSeconds, 3);
  EXPECT_EQ(freed.size(), 2u);  // both records (and their series) are dropped
  EXPECT_TRUE(t[worked].vacant);
  EXPECT_FALSE(hasSeries(*registry, "worked"));
  EXPECT_EQ(t.byId("worked"), nullptr);
  EXPECT_EQ(t[worked].id, "worked") << "the tombstone keeps the id for tracing";
  EXPECT_EQ(t.held(), 1u);
  EXPECT_EQ(t.add(rec("n1", "p1")), idle) << "the idle node's slot is reused at once";
  const uint32_t n2 = t.add(rec("n2", "p2"));
  EXPECT_NE(n2, worked) << "held while an older job runs";
  t.releaseHeld(2);  // job 2 still runs
  EXPECT_EQ(t.held(), 1u);
  EXPECT_EQ(t[worked].id, "worked");
  t.releaseHeld(3);  // every job admitted before the drop has finished
  EXPECT_EQ(t.held(), 0u);
  EXPECT_TRUE(t[worked].id.empty());
  EXPECT_EQ(t.add(rec("n3", "p3")), worked);
}

TEST(NodeTable, TokenIndexIsCompactedToTheLiveTokens) {
  auto registry = std::make_shared<prometheus::Registry>();
  Metrics metrics(registry);
  NodeTable t(metrics, kSeconds);
  const uint32_t a = t.add(rec("a", "pa"));
  for (uint64_t id = 0; id < 5000; ++id) t.dispatched(a, id);
  t[a].lanes[0].in_flight = 10;  // ids 0..9 still run there
  t.compact(a, [](uint64_t id) { return id < 10; });
  EXPECT_EQ(t[a].tokens.size(), 10u);
  t.compact(a, [](uint64_t) { return false; });
  EXPECT_EQ(t[a].tokens.size(), 10u) << "small index: not worth a pass";
}

class CoreNodeEvents : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.credit_per_worker = 100;
    config_.departed_node_retention_ns = 60 * kSeconds;
    core_ = std::make_unique<CoordinatorCore>(config_, clock_, outbox_, registry_);
    core_->subscribe(1, [this](const control::Event& e) { events_.push_back(e); });
  }
  std::unique_ptr<FakeNode> node(const std::string& id) {
    auto n = std::make_unique<FakeNode>(
        *core_, outbox_, id, std::vector<std::pair<std::string, Weight>>{{"echo", Weight::kLight}});
    EXPECT_TRUE(n->hello());
    return n;
  }
  static JobSpec echoJob(uint32_t n) {
    JobSpec job;
    TokenSpec t;
    t.op = "echo";
    t.repeat = n;
    t.args.push_back(Arg::val(int64_t{0}, 1));
    job.add(t);
    return job;
  }
  const control::NodeEvent* lastLeft() const {
    for (auto it = events_.rbegin(); it != events_.rend(); ++it)
      if (auto* n = std::get_if<control::NodeEvent>(&*it);
          n && n->change == control::NodeEvent::Change::kLeft)
        return n;
    return nullptr;
  }

  CoordinatorConfig config_;
  FakeClock clock_;
  MemoryOutbox outbox_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<CoordinatorCore> core_;
  std::vector<control::Event> events_;
};

TEST_F(CoreNodeEvents, NodeLossVisitsOnlyThatNodesTokens) {
  auto a = node("a");
  auto b = node("b");
  // 100,000 live tokens; each node holds its credit (100 per lane worker) in flight.
  ASSERT_TRUE(core_->submitJob(echoJob(100'000)).ok());
  core_->flushAll();
  const uint64_t on_a = a->takeTasks().size();
  ASSERT_GT(on_a, 0u);
  ASSERT_LE(on_a, 100u);
  const uint64_t visits = core_->counters().node_token_visits;
  a->disconnect();
  EXPECT_EQ(core_->counters().node_token_visits - visits, on_a);
  EXPECT_EQ(core_->counters().requeued, on_a);
  ASSERT_NE(lastLeft(), nullptr);
  EXPECT_EQ(lastLeft()->requeued, on_a);
}

// Unit-level benchmark figure for issue 13 ("node loss with 1M live tokens in < 10 ms of
// coordinator time"): a 1,000,000-token job, every node holding its credit in flight, then one
// node's connection closes. Asserts the work (only that node's tokens are visited); prints the
// time the core spent handling the loss (not asserted: timing on a shared machine).
TEST_F(CoreNodeEvents, NodeLossWithAMillionLiveTokensPrintsItsCost) {
  auto a = node("a");
  auto b = node("b");
  ASSERT_TRUE(core_->submitJob(echoJob(1'000'000)).ok());
  core_->flushAll();
  const uint64_t on_a = a->takeTasks().size();
  ASSERT_GT(on_a, 0u);
  const uint64_t visits = core_->counters().node_token_visits;
  const auto t0 = std::chrono::steady_clock::now();
  a->disconnect();
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(core_->counters().node_token_visits - visits, on_a);
  EXPECT_EQ(core_->counters().requeued, on_a);
  const double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  std::printf("node loss with 1,000,000 live tokens (%llu in flight on the lost node): %.3f ms\n",
              static_cast<unsigned long long>(on_a), ms);
  RecordProperty("node_loss_ms", std::to_string(ms));
}

TEST_F(CoreNodeEvents, IndexStaysNearTheInFlightCountAsResultsComeBack) {
  auto a = node("a");
  ASSERT_TRUE(core_->submitJob(echoJob(20'000)).ok());
  for (int round = 0; round < 1000; ++round) {
    core_->tick();
    auto tasks = a->takeTasks();
    if (tasks.empty()) break;
    for (auto& t : tasks) a->ok(t, t.args[0]);
  }
  EXPECT_EQ(core_->stats().tokens_completed, 20'000u);
  const uint64_t visits = core_->counters().node_token_visits;
  a->disconnect();
  // Everything finished: the stale entries left in the index are bounded by the compaction
  // threshold (2 x in flight + 1024 slack, in flight now 0), not by the 20,000 tokens it ran.
  EXPECT_LT(core_->counters().node_token_visits - visits, 1024u);
}

TEST_F(CoreNodeEvents, EvictEventCarriesTheRequeuedCountOfTheReply) {
  auto a = node("a");
  auto b = node("b");
  ASSERT_TRUE(core_->submitJob(echoJob(8)).ok());
  core_->flushAll();
  const uint64_t on_a = a->takeTasks().size();
  ASSERT_GT(on_a, 0u);
  auto r = core_->evictNode("a");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, on_a);
  ASSERT_NE(lastLeft(), nullptr);
  EXPECT_EQ(lastLeft()->reason, "evicted");
  EXPECT_EQ(lastLeft()->requeued, on_a);
  EXPECT_EQ(core_->counters().node_deaths, 1u);
}

TEST_F(CoreNodeEvents, DepartedNodesAreListedAsDeadThenDropped) {
  for (int i = 0; i < 50; ++i) node("flood-" + std::to_string(i))->disconnect();
  auto live = node("live");
  EXPECT_EQ(core_->listNodes().size(), 51u);
  EXPECT_EQ(core_->stats().nodes_dead, 50u);
  EXPECT_TRUE(hasSeries(*registry_, "flood-7"));
  clock_.advance(61 * kSeconds);
  live->heartbeat();
  core_->tick();
  auto nodes = core_->listNodes();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].id, "live");
  EXPECT_EQ(core_->stats().nodes_dead, 0u);
  EXPECT_FALSE(hasSeries(*registry_, "flood-7"));
  EXPECT_TRUE(hasSeries(*registry_, "live"));
  // Slots are reused: a second flood does not grow the table.
  for (int i = 0; i < 50; ++i) node("again-" + std::to_string(i))->disconnect();
  clock_.advance(61 * kSeconds);
  live->heartbeat();
  core_->tick();
  EXPECT_EQ(core_->listNodes().size(), 1u);
}

// Issue 15 item 5: after a rollout (every node drains and says bye) no node is listed or
// counted as dead; a lost node is, until its retention ends.
TEST_F(CoreNodeEvents, ANodeThatSaidByeDisappearsAtOnceALostOneIsListedDeadUntilRetention) {
  auto a = node("a");
  auto b = node("b");
  auto c = node("c");
  a->bye();
  ASSERT_NE(lastLeft(), nullptr);
  EXPECT_EQ(lastLeft()->node, "a");
  auto listed = [&] {
    std::vector<std::string> ids;
    for (const auto& n : core_->listNodes())
      ids.push_back(n.id + ":" + control::nodeStateName(n.state));
    std::sort(ids.begin(), ids.end());  // slots are reused: list order is not arrival order
    return ids;
  };
  EXPECT_EQ(listed(), (std::vector<std::string>{"b:ready", "c:ready"}));
  EXPECT_EQ(core_->stats().nodes_dead, 0u);
  EXPECT_EQ(core_->stats().nodes_lost, 1u) << "still counted as a departure";
  EXPECT_EQ(nodesGauge(*registry_, "dead"), 0);
  EXPECT_EQ(nodesGauge(*registry_, "ready"), 2);
  core_->tick();  // no time passes: its series go with the next tick
  EXPECT_FALSE(hasSeries(*registry_, "a"));
  b->disconnect();
  EXPECT_EQ(listed(), (std::vector<std::string>{"b:dead", "c:ready"}));
  EXPECT_EQ(core_->stats().nodes_dead, 1u);
  EXPECT_EQ(nodesGauge(*registry_, "dead"), 1);
  clock_.advance(30 * kSeconds);
  c->heartbeat();
  core_->tick();
  EXPECT_TRUE(hasSeries(*registry_, "b")) << "a lost node is shown for the retention";
  // The same id comes back (a restarted pod keeping its name): listed once, ready.
  auto a2 = node("a");
  EXPECT_EQ(listed(), (std::vector<std::string>{"a:ready", "b:dead", "c:ready"}));
  clock_.advance(31 * kSeconds);
  c->heartbeat();
  a2->heartbeat();
  core_->tick();
  EXPECT_EQ(listed(), (std::vector<std::string>{"a:ready", "c:ready"}));
  EXPECT_FALSE(hasSeries(*registry_, "b"));
  EXPECT_EQ(nodesGauge(*registry_, "dead"), 0);
}

// Issue 15 item 6: node CPU for the dashboards, from the heartbeats' process CPU time.
TEST_F(CoreNodeEvents, NodeCpuTimeIsReExportedPerNodeAndGoesWithTheNode) {
  auto a = node("a");
  auto b = node("b");
  a->heartbeat(false, 2'500'000'000);
  b->heartbeat(false, 400'000'000);
  auto cpu = [&](const std::string& id) {
    for (const auto& fam : registry_->Collect()) {
      if (fam.name != "tokengate_node_cpu_seconds") continue;
      for (const auto& m : fam.metric)
        for (const auto& l : m.label)
          if (l.name == "node" && l.value == id) return m.gauge.value;
    }
    return -1.0;
  };
  EXPECT_DOUBLE_EQ(cpu("a"), 2.5);
  EXPECT_DOUBLE_EQ(cpu("b"), 0.4);
  a->heartbeat(false, 3'000'000'000);
  EXPECT_DOUBLE_EQ(cpu("a"), 3.0);
  a->bye();
  core_->tick();
  EXPECT_EQ(cpu("a"), -1.0) << "its series left with it";
  EXPECT_DOUBLE_EQ(cpu("b"), 0.4);
}

TEST_F(CoreNodeEvents, UnknownOpsStayRefusedAfterEveryNodeRecordWasDropped) {
  node("a")->disconnect();
  clock_.advance(61 * kSeconds);
  core_->tick();
  EXPECT_TRUE(core_->listNodes().empty());
  JobSpec job;
  TokenSpec t;
  t.op = "no.such.op";
  job.add(t);
  EXPECT_EQ(core_->submitJob(job).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(core_->submitJob(echoJob(1)).ok()) << "a known op waits for a node";
}

}  // namespace
}  // namespace tokengate::coordinator
