// The C++ Beast client (tests/support/ws_test_client.h) drives every gateway
// command against a real cluster: a tokengate-coordinator with --gateway and
// tokengate-node processes started by LocalCluster. Each test asserts the
// command's effect on real work, not just the reply's shape.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <thread>

#include "client/client.h"
#include "client/local_cluster.h"
#include "common/job.h"
#include "common/job_json.h"
#include "tests/support/cluster_fixture.h"
#include "tests/support/ws_test_client.h"

namespace tokengate {
namespace {

namespace json = boost::json;
using client::LocalCluster;
using client::LocalClusterOptions;
using testing::eventually;
using testing::httpGet;
using testing::metricValue;
using testing::WsClient;
using namespace std::chrono_literals;

constexpr const char* kAdmin = "itest-admin";
constexpr const char* kOperator = "itest-operator";
constexpr const char* kViewer = "itest-viewer";

// 64-bit ids (job_id, token_id, the "job" of job events) arrive as decimal strings.
uint64_t u64(const json::value& v) {
  return v.is_string() ? std::stoull(std::string(v.as_string())) : v.to_number<uint64_t>();
}

// The gateway allows 50 commands/s per connection (burst 100): polls that send
// one or two commands per round wait this long between rounds.
constexpr int kPollMs = 50;
template <typename F>
bool pollFor(F pred, int ms = 5000) {
  return eventually(pred, ms, kPollMs);
}

class GatewayClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LocalClusterOptions o = testing::clusterOptions(2);
    o.gateway = "127.0.0.1:0";
    o.node_args = {"--enable-test-ops"};  // sleep, spin, fail, crash, wait_cancel
    o.gateway_token = kAdmin;
    o.coordinator_args.insert(o.coordinator_args.end(), {"--gateway-operator-token", kOperator,
                                                         "--gateway-viewer-token", kViewer});
    auto c = LocalCluster::start(std::move(o));
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = *std::move(c);
    ASSERT_NE(cluster_->gatewayPort(), 0);
    ws_ = std::make_unique<WsClient>(port());
    ASSERT_FALSE(ws_->connect());
    ws_->hello(kAdmin);
    // Both nodes registered.
    ASSERT_TRUE(pollFor(
        [&] {
          return u64(ws_->ok({{"cmd", "cluster.stats"}}).at("nodes_ready")) == 2;
        },
        30000));
  }
  void TearDown() override {
    if (cluster_) cluster_->stop();
  }
  uint16_t port() const { return cluster_->gatewayPort(); }

  json::object op(const std::string& name) {
    const json::object r = ws_->ok({{"cmd", "op.list"}});
    for (const auto& o : r.at("ops").as_array())
      if (o.at("op").as_string() == name) return o.as_object();
    ADD_FAILURE() << "no op " << name;
    return {};
  }
  json::object node(const std::string& id) {
    const json::object r = ws_->ok({{"cmd", "node.list"}});
    for (const auto& n : r.at("nodes").as_array())
      if (n.at("node").as_string() == id && n.at("state").as_string() != "dead")
        return n.as_object();
    for (const auto& n : r.at("nodes").as_array())
      if (n.at("node").as_string() == id) return n.as_object();
    ADD_FAILURE() << "no node " << id;
    return {};
  }
  uint64_t submit(json::value job) {
    json::object r = ws_->ok({{"cmd", "submit"}, {"job", std::move(job)}});
    return r.contains("job_id") ? u64(r.at("job_id")) : 0;
  }
  static json::value tokens(const std::string& op, int repeat, json::array args) {
    return json::object{
        {"tokens", json::array{json::object{{"op", op}, {"repeat", repeat}, {"args", args}}}}};
  }
  // job.status once the job left `running` (or after `ms`, still running).
  json::object waitJob(uint64_t id, int ms) {
    json::object st;
    pollFor(
        [&] {
          st = ws_->ok({{"cmd", "job.status"}, {"job_id", id}});
          return st.at("state").as_string() != "running";
        },
        ms);
    return st;
  }

  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<WsClient> ws_;  // admin session, connected once the cluster is up
};

TEST_F(GatewayClusterTest, HelloAuthRolesAndBadInput) {
  WsClient anon(port());
  ASSERT_FALSE(anon.connect());
  EXPECT_EQ(anon.errorCode({{"cmd", "op.list"}}), "unauthenticated");
  EXPECT_EQ(anon.errorCode({{"cmd", "hello"}, {"token", "wrong"}}), "unauthenticated");
  EXPECT_EQ(anon.errorCode({{"cmd", "hello"}, {"protocol", 2}}), "failed_precondition");
  EXPECT_EQ(anon.errorCode({{"cmd", "hello"}, {"protocol", "1"}}), "invalid_argument");
  EXPECT_EQ(anon.ok({{"cmd", "topics"}}).at("topics").as_array().size(), 4u);
  EXPECT_EQ(anon.ok({{"cmd", "auth"}, {"token", kViewer}}).at("role").as_string(), "viewer");
  EXPECT_EQ(anon.ok({{"cmd", "whoami"}}).at("role").as_string(), "viewer");
  EXPECT_TRUE(anon.ok({{"cmd", "node.list"}}).contains("nodes"));
  EXPECT_EQ(anon.errorCode({{"cmd", "op.pause"}, {"op", "leibniz.term"}}), "permission_denied");
  EXPECT_FALSE(op("leibniz.term").at("paused").as_bool());  // nothing happened
  EXPECT_EQ(anon.ok({{"cmd", "auth"}, {"token", kOperator}}).at("role").as_string(), "operator");
  EXPECT_EQ(anon.errorCode({{"cmd", "node.evict"}, {"node", cluster_->nodeId(0)}}),
            "permission_denied");
  EXPECT_EQ(anon.errorCode({{"cmd", "cluster.limits"}, {"admission_limit", 1}}),
            "permission_denied");
  EXPECT_EQ(node(cluster_->nodeId(0)).at("state").as_string(), "ready");
  // Bad input gets error replies; the connection keeps working.
  anon.sendText("{nope");
  EXPECT_EQ(anon.readMessage().at("error").at("code").as_string(), "invalid_argument");
  EXPECT_EQ(anon.errorCode({{"cmd", "job.status"}, {"job_id", "x"}}), "invalid_argument");
  EXPECT_EQ(anon.errorCode({{"cmd", "no.such"}}), "unimplemented");
  EXPECT_EQ(anon.errorCode({{"cmd", "job.status"}, {"job_id", 987654321}}), "not_found");
  EXPECT_EQ(anon.errorCode({{"cmd", "submit"}, {"job", tokens("leibniz.trem", 1, json::array{1})}}),
            "not_found");
  EXPECT_TRUE(anon.ok({{"cmd", "ping"}}).at("pong").as_bool());
  // A bad token on the upgrade is refused.
  WsClient bad(port());
  EXPECT_TRUE(bad.connect("/ws?token=nope"));
}

TEST_F(GatewayClusterTest, SubmitStatusListStatsAndSubscriptions) {
  EXPECT_EQ(ws_->ok({{"cmd", "subscribe"}, {"topics", json::array{"job", "ops"}}})
                .at("topics")
                .as_array()
                .size(),
            2u);
  auto job = makeLeibnizJob(10'000, Precision::kDouble);
  ASSERT_TRUE(job.ok());
  const uint64_t id = submit(jobToJson(*job));
  ASSERT_NE(id, 0u);
  bool listed = false;
  const json::object jobs = ws_->ok({{"cmd", "job.list"}});
  for (const auto& j : jobs.at("jobs").as_array()) listed |= u64(j.at("job_id")) == id;
  EXPECT_TRUE(listed);
  // The job event stream reports it finishing.
  json::object done = ws_->waitEvent(
      "job",
      [&](const json::object& d) {
        return u64(d.at("job")) == id && d.at("state").as_string() != "running";
      },
      60000);
  ASSERT_FALSE(done.empty()) << "no job-finished event";
  EXPECT_EQ(done.at("data").at("state").as_string(), "succeeded");
  json::object st = ws_->ok({{"cmd", "job.status"}, {"job_id", id}});
  EXPECT_EQ(st.at("state").as_string(), "succeeded");
  EXPECT_EQ(u64(st.at("done")), job->tokenCount());
  ASSERT_EQ(st.at("outputs").as_array().size(), 1u);
  EXPECT_NEAR(st.at("outputs").at(0).at("value").to_number<double>(), 3.14149265, 1e-6);
  // Ops carry weight classes and counters; stats count the tokens.
  json::object term = op("leibniz.term");
  EXPECT_EQ(term.at("weight").as_string(), "light");
  EXPECT_EQ(u64(term.at("completed")), 10'000u);
  json::object stats = ws_->ok({{"cmd", "cluster.stats"}});
  EXPECT_GE(u64(stats.at("tokens_completed")), job->tokenCount());
  EXPECT_EQ(u64(stats.at("jobs_running")), 0u);
  // Per-operation throughput events arrive on `ops`.
  EXPECT_FALSE(
      ws_->waitEvent("ops", [](const json::object& d) { return d.contains("ops"); }).empty());
  // After unsubscribe no job events arrive for a new job.
  EXPECT_TRUE(ws_->ok({{"cmd", "unsubscribe"}}).at("topics").as_array().empty());
  ws_->events.clear();
  const uint64_t id2 = submit(jobToJson(*job));
  EXPECT_EQ(waitJob(id2, 60000).at("state").as_string(), "succeeded");
  for (int i = 0; i < 10; ++i) {
    ws_->ok({{"cmd", "ping"}});
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
  EXPECT_TRUE(ws_->events.empty()) << json::serialize(ws_->events.front());
  // cluster.limits: a job above the admission limit is refused, nothing admitted.
  const uint64_t limit = u64(stats.at("admission_limit"));
  EXPECT_EQ(
      u64(ws_->ok({{"cmd", "cluster.limits"}, {"admission_limit", 100}}).at("admission_limit")),
      100u);
  const uint64_t admitted = u64(ws_->ok({{"cmd", "cluster.stats"}}).at("tokens_admitted"));
  EXPECT_EQ(ws_->errorCode({{"cmd", "submit"}, {"job", jobToJson(*job)}}), "resource_exhausted");
  EXPECT_EQ(u64(ws_->ok({{"cmd", "cluster.stats"}}).at("tokens_admitted")), admitted);
  ws_->ok({{"cmd", "cluster.limits"}, {"admission_limit", limit}});
  // The same counts reach /metrics.
  auto m = httpGet(port(), "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_GE(metricValue(m.body, "tokengate_ws_clients"), 1);
}

// List values end to end: JSON arrays in, Cap'n Proto lists to the nodes and back, a list
// result passed by ref into another token, JSON arrays out.
TEST_F(GatewayClusterTest, ListValuesFlowThroughJobsAsJsonArrays) {
  const json::value job = json::parse(R"({"name": "lists", "tokens": [
      {"op": "echo", "repeat": 3, "args": [{"value": 10, "step": 1}]},
      {"op": "list.make", "args": [{"refs": [0, 3]}], "output": true, "name": "made"},
      {"op": "list.concat", "args": [{"ref": 3}, [13, [14, 15]], "x"], "output": true,
       "name": "concat"},
      {"op": "echo", "args": [[[1, 2], [3, {"double": "nan"}], [], {"dec": "0.5"}]],
       "output": true, "name": "echoed"}]})");
  const uint64_t id = submit(job);
  ASSERT_NE(id, 0u);
  json::object st = waitJob(id, 60000);
  ASSERT_EQ(st.at("state").as_string(), "succeeded") << json::serialize(st);
  std::map<std::string, std::string> out;
  for (const auto& o : st.at("outputs").as_array())
    out[std::string(o.at("name").as_string())] = json::serialize(o.at("value"));
  EXPECT_EQ(out["made"], "[10,11,12]");
  EXPECT_EQ(out["concat"], R"([10,11,12,13,[14,15],"x"])");
  EXPECT_EQ(out["echoed"], R"([[1,2],[3,{"double":"nan"}],[],{"dec":"0.5"}])");
  // A list result as the argument of list.sum (nested lists walked; a float makes a float).
  const uint64_t id2 = submit(json::parse(R"({"tokens": [
      {"op": "list.make", "args": [1, [2, 3]]},
      {"op": "list.sum", "args": [{"ref": 0}, [[1.5]]], "output": true, "name": "sum"}]})"));
  json::object st2 = waitJob(id2, 60000);
  ASSERT_EQ(st2.at("state").as_string(), "succeeded") << json::serialize(st2);
  EXPECT_EQ(st2.at("outputs").at(0).at("value").to_number<double>(), 7.5);
  // Nesting deeper than the limit is refused at submit, before admission.
  std::string deep(kMaxListDepth + 1, '[');
  deep += "1" + std::string(kMaxListDepth + 1, ']');
  EXPECT_EQ(
      ws_->errorCode({{"cmd", "submit"},
                      {"job", json::parse(R"({"tokens":[{"op":"echo","args":[)" + deep + "]}]}")}}),
      "invalid_argument");
}

// Packed numeric arrays end to end: {"i64s"/"f64s": [...]} in through the gateway, packed
// Cap'n Proto lists to the nodes and back (a packed result passed by ref), the same JSON out
// (non-finite doubles as strings); over the wire port a 1M-double array round-trips exactly
// and an array over the per-value limit is refused at admission.
TEST_F(GatewayClusterTest, PackedArraysFlowThroughJobsAndTheValueLimitHolds) {
  const uint64_t id = submit(json::parse(R"({"name": "packed", "tokens": [
      {"op": "vec.pack", "args": [[1, 2], 3], "output": true, "name": "packed"},
      {"op": "vec.dot", "args": [{"ref": 0}, {"f64s": [0.5, 1, 2]}], "output": true,
       "name": "dot"},
      {"op": "list.sum", "args": [{"ref": 0}, {"f64s": [0.25]}], "output": true, "name": "sum"},
      {"op": "echo", "args": [{"f64s": [1.5, "inf", "-inf", "nan", -0.0]}], "output": true,
       "name": "doubles"},
      {"op": "echo", "args": [{"i64s": [9223372036854775807, -9223372036854775808]}],
       "output": true, "name": "ints"},
      {"op": "list.make", "args": [{"ref": 0}, {"f64s": []}], "output": true, "name": "mixed"}
      ]})"));
  ASSERT_NE(id, 0u);
  json::object st = waitJob(id, 60000);
  ASSERT_EQ(st.at("state").as_string(), "succeeded") << json::serialize(st);
  std::map<std::string, json::value> out;
  for (const auto& o : st.at("outputs").as_array())
    out[std::string(o.at("name").as_string())] = o.at("value");
  EXPECT_EQ(json::serialize(out["packed"]), R"({"i64s":[1,2,3]})");
  EXPECT_EQ(out["dot"].to_number<double>(), 8.5);
  EXPECT_EQ(out["sum"].to_number<double>(), 6.25);
  const auto doubles = valueFromJson(out["doubles"]);
  ASSERT_TRUE(doubles.ok()) << doubles.status();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(*doubles, Value::f64s({1.5, inf, -inf, std::numeric_limits<double>::quiet_NaN(), 0}));
  EXPECT_TRUE(std::signbit(doubles->asF64s()[4]));  // -0.0 kept its sign both ways
  EXPECT_EQ(json::serialize(out["doubles"].at("f64s").as_array()[3]), R"("nan")");
  EXPECT_EQ(json::serialize(out["ints"]), R"({"i64s":[9223372036854775807,-9223372036854775808]})");
  EXPECT_EQ(json::serialize(out["mixed"]), R"([{"i64s":[1,2,3]},{"f64s":[]}])");
  // A wrong element is refused at submit, naming its position.
  json::object bad = ws_->cmd({{"cmd", "submit"}, {"job", json::parse(R"({"tokens":[{"op":"echo",
                                    "args":[{"i64s":[1, 2.5]}]}]})")}});
  ASSERT_TRUE(bad.contains("error")) << json::serialize(bad);
  EXPECT_EQ(bad.at("error").at("code").as_string(), "invalid_argument");
  EXPECT_NE(std::string(bad.at("error").at("message").as_string()).find("element 1"),
            std::string::npos)
      << json::serialize(bad);

  // Over the wire port (frames up to 64 MiB): 1M doubles (8 MB) each way.
  client::Client c(cluster_->endpoint(), cluster_->clientCurve());
  std::vector<double> big(1'000'000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = 1.0 / static_cast<double>(i + 1);
  JobSpec job;
  TokenSpec echo;
  echo.op = "echo";
  echo.output = true;
  echo.name = "big";
  echo.args.push_back(Arg::val(Value::f64s(big)));
  const uint32_t first = job.add(echo);
  TokenSpec dot;
  dot.op = "vec.dot";
  dot.output = true;
  dot.name = "norm2";
  dot.args = {Arg::ref(first), Arg::ref(first)};
  job.add(dot);
  auto r = c.run(job, {}, 120 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->state, client::JobState::kSucceeded);
  auto back = r->output("big");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == Value::f64s(big));  // not EXPECT_EQ: its message would print 1M numbers
  double want = 0;
  for (double x : big) want += x * x;
  EXPECT_EQ(*r->output("norm2"), Value(want));
  // One element over the limit: refused at admission with the limit in the message.
  JobSpec too_big;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::val(Value::f64s(std::vector<double>(kMaxPackedElements + 1, 1.0))));
  too_big.add(t);
  auto refused = c.submit(too_big);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << refused.status();
  EXPECT_NE(refused.status().message().find("2097152-element limit per packed array"),
            std::string::npos)
      << refused.status();
}

TEST_F(GatewayClusterTest, PauseStopsDispatchResumeRestartsJobCancelEndsIt) {
  // A rate limit keeps the job running long enough to steer it.
  ws_->ok({{"cmd", "op.limits"}, {"op", "leibniz.term"}, {"max_rate_per_s", 20000}});
  auto job = makeLeibnizJob(200'000, Precision::kDouble);
  ASSERT_TRUE(job.ok());
  const uint64_t id = submit(jobToJson(*job));
  ASSERT_TRUE(pollFor([&] { return u64(op("leibniz.term").at("completed")) > 1000; }, 30000));
  json::object ack = ws_->ok({{"cmd", "op.pause"}, {"op", "leibniz.term"}}).at("op").as_object();
  ASSERT_TRUE(ack.at("paused").as_bool());
  const uint64_t bound = u64(ack.at("completed")) + u64(ack.at("running"));
  std::this_thread::sleep_for(500ms);
  const uint64_t c1 = u64(op("leibniz.term").at("completed"));
  EXPECT_LE(c1, bound) << "tokens dispatched after the pause was acknowledged";
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(u64(op("leibniz.term").at("completed")), c1) << "paused op kept completing";
  EXPECT_EQ(u64(op("leibniz.term").at("running")), 0u);
  EXPECT_GT(u64(op("leibniz.term").at("queued")), 0u);
  EXPECT_FALSE(
      ws_->ok({{"cmd", "op.resume"}, {"op", "leibniz.term"}}).at("op").at("paused").as_bool());
  EXPECT_TRUE(pollFor([&] { return u64(op("leibniz.term").at("completed")) > c1; }));
  // job.cancel ends it with every token accounted for.
  json::object jc = ws_->ok({{"cmd", "job.cancel"}, {"job_id", id}});
  EXPECT_GT(u64(jc.at("cancelled")), 0u);
  json::object st = waitJob(id, 10000);
  EXPECT_EQ(st.at("state").as_string(), "cancelled");
  EXPECT_EQ(u64(st.at("done")) + u64(st.at("failed")) + u64(st.at("cancelled")),
            u64(st.at("total")));
  EXPECT_EQ(u64(st.at("cancelled")), u64(jc.at("cancelled")));
}

TEST_F(GatewayClusterTest, DrainDropsQueuedTokensAndTheyNeverRun) {
  ws_->ok({{"cmd", "op.pause"}, {"op", "leibniz.term"}});
  auto job = makeLeibnizJob(20'000, Precision::kDouble);
  ASSERT_TRUE(job.ok());
  const uint64_t completed_before = u64(op("leibniz.term").at("completed"));
  const uint64_t id = submit(jobToJson(*job));
  json::object dr = ws_->ok({{"cmd", "op.drain"}, {"op", "leibniz.term"}});
  EXPECT_EQ(u64(dr.at("dropped")), 20'000u);  // paused: every term was still queued
  EXPECT_EQ(u64(op("leibniz.term").at("queued")), 0u);
  ws_->ok({{"cmd", "op.resume"}, {"op", "leibniz.term"}});
  json::object st = waitJob(id, 10000);
  EXPECT_EQ(st.at("state").as_string(), "cancelled");
  EXPECT_EQ(u64(st.at("cancelled")), u64(st.at("total")));  // dependents cancelled too
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(u64(op("leibniz.term").at("completed")), completed_before) << "a drained token ran";
  EXPECT_EQ(u64(op("leibniz.term").at("cancelled")), 20'000u);
}

TEST_F(GatewayClusterTest, CancelRunningEndsEveryDispatchedTokenCancelled) {
  const uint64_t id = submit(tokens("wait_cancel", 5, json::array{60000}));
  ASSERT_TRUE(pollFor([&] { return u64(op("wait_cancel").at("running")) == 5; }, 10000));
  // "running" above counts tokens dispatched to a node; wait until a node's heartbeat says one
  // of its workers took a token (on a loaded machine the cancel could otherwise reach the node
  // before any worker did, and every token would end without seeing the flag).
  ASSERT_TRUE(pollFor(
      [&] {
        uint64_t started = 0;
        const json::object r = ws_->ok({{"cmd", "node.list"}});
        for (const auto& n : r.at("nodes").as_array())
          for (const auto& l : n.at("lanes").as_array()) started += u64(l.at("running"));
        return started > 0;
      },
      10000));
  const auto t0 = std::chrono::steady_clock::now();
  json::object cr = ws_->ok({{"cmd", "op.cancel_running"}, {"op", "wait_cancel"}});
  EXPECT_EQ(u64(cr.at("cancelled")), 5u);
  json::object st = waitJob(id, 5000);  // no job.cancel
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(st.at("state").as_string(), "cancelled");
  EXPECT_EQ(u64(st.at("cancelled")), 5u);
  int saw_flag = 0;
  for (const auto& o : st.at("outputs").as_array()) {
    EXPECT_EQ(o.at("error").at("code").as_string(), "cancelled");
    saw_flag += o.at("error").at("message").as_string() == "wait_cancel cancelled";
  }
  EXPECT_GE(saw_flag, 1) << "no running token saw the cooperative flag";
  json::object w = op("wait_cancel");
  EXPECT_EQ(u64(w.at("running")), 0u);
  EXPECT_EQ(u64(w.at("retried")), 0u);
}

TEST_F(GatewayClusterTest, TokenCancelQueuedRunningAndFinished) {
  // Queued: the op is paused, so the token waits in the coordinator.
  ws_->ok({{"cmd", "op.pause"}, {"op", "sleep"}});
  const uint64_t id = submit(tokens("sleep", 3, json::array{10}));
  json::object tc =
      ws_->ok({{"cmd", "token.cancel"}, {"token_id", std::to_string((id << 32) | 1)}});
  EXPECT_TRUE(tc.at("cancelled").as_bool());
  ws_->ok({{"cmd", "op.resume"}, {"op", "sleep"}});
  json::object st = waitJob(id, 10000);
  EXPECT_EQ(u64(st.at("done")), 2u);
  EXPECT_EQ(u64(st.at("cancelled")), 1u);
  EXPECT_EQ(st.at("outputs").at(1).at("error").at("code").as_string(), "cancelled");
  // Finished token of a finished job: not_found once the job is gone, or cancelled:false.
  json::object fin =
      ws_->cmd({{"cmd", "token.cancel"}, {"token_id", std::to_string((id << 32) | 0)}});
  if (fin.at("ok").as_bool())
    EXPECT_FALSE(fin.at("result").at("cancelled").as_bool());
  else
    EXPECT_EQ(fin.at("error").at("code").as_string(), "not_found");
  // Running: the cooperative flag stops it; a finished token of a live job is not cancelled.
  json::value job = json::object{
      {"tokens", json::array{json::object{{"op", "echo"}, {"args", json::array{1}}},
                             json::object{{"op", "wait_cancel"}, {"args", json::array{60000}}}}}};
  const uint64_t id2 = submit(job);
  ASSERT_TRUE(pollFor([&] {
    json::object s = ws_->ok({{"cmd", "job.status"}, {"job_id", id2}});
    return u64(s.at("done")) == 1 && u64(s.at("running")) == 1;
  }));
  EXPECT_FALSE(ws_->ok({{"cmd", "token.cancel"}, {"token_id", std::to_string(id2 << 32)}})
                   .at("cancelled")
                   .as_bool());
  EXPECT_TRUE(ws_->ok({{"cmd", "token.cancel"}, {"token_id", std::to_string((id2 << 32) | 1)}})
                  .at("cancelled")
                  .as_bool());
  st = waitJob(id2, 5000);
  EXPECT_EQ(st.at("state").as_string(), "cancelled");
  EXPECT_EQ(u64(op("wait_cancel").at("running")), 0u);
}

TEST_F(GatewayClusterTest, LimitsCapInFlightAndRate) {
  json::object lim = ws_->ok({{"cmd", "op.limits"}, {"op", "sleep"}, {"max_in_flight", 3}});
  EXPECT_EQ(u64(lim.at("op").at("limits").at("max_in_flight")), 3u);
  const uint64_t id = submit(tokens("sleep", 40, json::array{50}));
  uint64_t peak = 0;
  int samples = 0;
  while (ws_->ok({{"cmd", "job.status"}, {"job_id", id}}).at("state").as_string() == "running" &&
         samples < 1000) {
    peak = std::max(peak, u64(op("sleep").at("running")));
    ++samples;
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
  EXPECT_LE(peak, 3u);
  EXPECT_EQ(peak, 3u) << "the limit was never reached: sampling proves nothing";
  EXPECT_EQ(waitJob(id, 30000).at("state").as_string(), "succeeded");

  // Rate: 200 tokens/s (burst 20) on a job of 2000 cheap tokens.
  ws_->ok({{"cmd", "op.limits"}, {"op", "echo"}, {"max_rate_per_s", 200}});
  const uint64_t before = u64(op("echo").at("completed"));
  const uint64_t id2 = submit(tokens("echo", 2000, json::array{1}));
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(2s);
  const uint64_t ran = u64(op("echo").at("completed")) - before;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LE(static_cast<double>(ran), 200 * s + 60) << ran << " tokens in " << s << " s";
  EXPECT_GE(static_cast<double>(ran), 100 * s) << ran << " tokens in " << s << " s";
  // Lifting the limit lets the rest through at once.
  ws_->ok({{"cmd", "op.limits"}, {"op", "echo"}});
  EXPECT_EQ(waitJob(id2, 10000).at("state").as_string(), "succeeded");
}

TEST_F(GatewayClusterTest, NodesDrainUndrainEvict) {
  const std::string a = cluster_->nodeId(0), b = cluster_->nodeId(1);
  json::object na = node(a);
  EXPECT_EQ(na.at("lanes").as_array().size(), 3u);
  EXPECT_FALSE(na.at("ops").as_array().empty());
  ASSERT_TRUE(ws_->ok({{"cmd", "subscribe"}, {"topics", json::array{"nodes"}}}).contains("topics"));
  EXPECT_EQ(ws_->ok({{"cmd", "node.drain"}, {"node", a}}).at("node").at("state").as_string(),
            "draining");
  EXPECT_FALSE(ws_->waitEvent("nodes",
                              [&](const json::object& d) {
                                return d.at("event").as_string() == "draining" &&
                                       d.at("node").as_string() == a;
                              })
                   .empty());
  const uint64_t a0 = u64(node(a).at("completed")), b0 = u64(node(b).at("completed"));
  const uint64_t id = submit(tokens("echo", 500, json::array{1}));
  EXPECT_EQ(waitJob(id, 30000).at("state").as_string(), "succeeded");
  EXPECT_EQ(u64(node(a).at("completed")), a0) << "a draining node got new work";
  EXPECT_EQ(u64(node(b).at("completed")), b0 + 500);
  EXPECT_EQ(ws_->ok({{"cmd", "node.undrain"}, {"node", a}}).at("node").at("state").as_string(),
            "ready");
  // Evict b while it runs work: its tokens are requeued and finish on a.
  const uint64_t id2 = submit(tokens("sleep", 6, json::array{300}));
  ASSERT_TRUE(pollFor([&] { return u64(node(b).at("in_flight")) > 0; }));
  json::object ev = ws_->ok({{"cmd", "node.evict"}, {"node", b}});
  EXPECT_EQ(ev.at("node").as_string(), b);
  EXPECT_GT(u64(ev.at("requeued")), 0u);
  EXPECT_EQ(node(b).at("state").as_string(), "dead");
  json::object stats = ws_->ok({{"cmd", "cluster.stats"}});
  EXPECT_EQ(u64(stats.at("nodes_ready")), 1u);
  EXPECT_GE(u64(stats.at("nodes_lost")), 1u);
  EXPECT_GE(u64(stats.at("tokens_requeued")), u64(ev.at("requeued")));
  json::object st = waitJob(id2, 30000);
  EXPECT_EQ(st.at("state").as_string(), "succeeded");
  EXPECT_EQ(u64(st.at("done")), 6u);
  // Unknown or dead nodes.
  EXPECT_EQ(ws_->errorCode({{"cmd", "node.drain"}, {"node", "no-such-node"}}), "not_found");
  EXPECT_EQ(ws_->errorCode({{"cmd", "node.undrain"}, {"node", b}}), "not_found");
  EXPECT_EQ(ws_->errorCode({{"cmd", "node.evict"}, {"node", b}}), "not_found");
}

}  // namespace
}  // namespace tokengate
