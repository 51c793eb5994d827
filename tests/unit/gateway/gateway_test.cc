// Gateway tests: the real Gateway on a loopback port over FakeClusterControl,
// driven by a synchronous Beast client. Ports are 0; nothing waits on wall
// time except bounded polls for asynchronous effects.
#include "coordinator/gateway/gateway.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "common/job_json.h"
#include "coordinator/gateway/protocol.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_cluster_control.h"
#include "tests/support/ws_test_client.h"

namespace tokengate::gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace json = boost::json;
using tcp = net::ip::tcp;

constexpr const char* kAdmin = "admin-secret";
constexpr const char* kOperator = "operator-secret";
constexpr const char* kViewer = "viewer-secret";

GatewayConfig testConfig() {
  GatewayConfig c;
  c.admin_tokens = {kAdmin};
  c.operator_tokens = {kOperator};
  c.viewer_tokens = {kViewer};
  c.commands_per_s = 0;  // unlimited unless a test wants the limiter
  c.ip_commands_per_s = 0;
  return c;
}

using Client = tokengate::testing::WsClient;
using tokengate::testing::eventually;
using tokengate::testing::httpGet;
using tokengate::testing::HttpResult;
using tokengate::testing::metricValue;

class GatewayTest : public ::testing::Test {
 protected:
  void startGateway(GatewayConfig cfg = testConfig()) {
    gw_ = std::make_unique<Gateway>(std::move(cfg), fake_);
    ASSERT_TRUE(gw_->start().ok());
    ASSERT_NE(gw_->port(), 0);
  }
  void TearDown() override {
    if (gw_) gw_->stop();
  }
  uint16_t port() const { return gw_->port(); }

  testing::FakeClusterControl fake_;
  std::unique_ptr<Gateway> gw_;
};

TEST(ProtocolTest, ErrorCodesAndRoles) {
  EXPECT_EQ(errorCodeName(StatusCode::kInvalidArgument), "invalid_argument");
  EXPECT_EQ(errorCodeName(StatusCode::kResourceExhausted), "resource_exhausted");
  EXPECT_EQ(findCommand("node.evict")->min_role, Role::kAdmin);
  EXPECT_EQ(findCommand("op.pause")->min_role, Role::kOperator);
  EXPECT_EQ(findCommand("op.list")->min_role, Role::kViewer);
  EXPECT_EQ(findCommand("nope"), nullptr);
  EXPECT_EQ(topicBit("ops"), kTopicOps);
  EXPECT_FALSE(topicBit("everything").has_value());
  EXPECT_EQ(okReply(json::value(7), json::object{{"a", 1}}),
            R"({"id":7,"ok":true,"result":{"a":1}})");
  EXPECT_EQ(errorReply(json::value("x"), absl::NotFoundError("gone")),
            R"({"id":"x","ok":false,"error":{"code":"not_found","message":"gone"}})");
}

TEST_F(GatewayTest, AuthRolesAndRefusals) {
  startGateway();
  Client c(port());
  ASSERT_FALSE(c.connect());
  // Unauthenticated: only hello/auth/ping.
  EXPECT_EQ(c.errorCode({{"cmd", "op.list"}}), "unauthenticated");
  EXPECT_TRUE(c.ok({{"cmd", "ping"}}).at("pong").as_bool());
  EXPECT_EQ(c.errorCode({{"cmd", "hello"}, {"token", "wrong"}}), "unauthenticated");
  // Viewer reads, cannot control.
  json::object h = c.ok({{"cmd", "hello"}, {"token", kViewer}});
  EXPECT_EQ(h.at("role").as_string(), "viewer");
  EXPECT_TRUE(c.ok({{"cmd", "op.list"}}).contains("ops"));
  EXPECT_EQ(c.errorCode({{"cmd", "op.pause"}, {"op", "leibniz.term"}}), "permission_denied");
  // Operator controls, cannot evict or set the admission limit.
  EXPECT_EQ(c.ok({{"cmd", "auth"}, {"token", kOperator}}).at("role").as_string(), "operator");
  EXPECT_TRUE(c.ok({{"cmd", "op.pause"}, {"op", "leibniz.term"}}).contains("op"));
  EXPECT_EQ(c.errorCode({{"cmd", "node.evict"}, {"node", "node-1"}}), "permission_denied");
  EXPECT_EQ(c.errorCode({{"cmd", "cluster.limits"}, {"admission_limit", 10}}), "permission_denied");
  EXPECT_EQ(fake_.calls("evictNode"), 0);
  EXPECT_EQ(c.ok({{"cmd", "auth"}, {"token", kAdmin}}).at("role").as_string(), "admin");
  EXPECT_EQ(c.ok({{"cmd", "node.evict"}, {"node", "node-2"}}).at("node").as_string(), "node-2");
  EXPECT_EQ(c.errorCode({{"cmd", "hello"}, {"protocol", 99}}), "failed_precondition");
  // A protocol that is not a number is a wrong type, not an unsupported version.
  EXPECT_EQ(c.errorCode({{"cmd", "hello"}, {"protocol", "1"}}), "invalid_argument");
  EXPECT_EQ(c.errorCode({{"cmd", "auth"}, {"token", kAdmin}, {"protocol", true}}),
            "invalid_argument");
}

TEST_F(GatewayTest, TooManyAuthFailuresClose) {
  startGateway();
  Client c(port());
  ASSERT_FALSE(c.connect());
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(c.errorCode({{"cmd", "auth"}, {"token", "x"}}), "unauthenticated");
  beast::flat_buffer buf;
  beast::error_code ec;
  c.ws().read(buf, ec);
  EXPECT_EQ(ec, websocket::error::closed);
  EXPECT_EQ(c.ws().reason().code, websocket::close_code::policy_error);
}

TEST_F(GatewayTest, TokenInQueryOrHeader) {
  startGateway();
  Client q(port());
  ASSERT_FALSE(q.connect(std::string("/ws?token=") + kOperator));
  EXPECT_EQ(q.ok({{"cmd", "whoami"}}).at("role").as_string(), "operator");
  Client h(port());
  ASSERT_FALSE(h.connect("/ws", "", kAdmin));
  EXPECT_EQ(h.ok({{"cmd", "whoami"}}).at("role").as_string(), "admin");
  Client bad(port());
  EXPECT_TRUE(bad.connect("/ws?token=nope"));  // 401 on the upgrade
}

TEST_F(GatewayTest, AnonymousReadOnlyByFlag) {
  GatewayConfig cfg = testConfig();
  cfg.allow_anonymous_read = true;
  startGateway(cfg);
  Client c(port());
  ASSERT_FALSE(c.connect());
  EXPECT_TRUE(c.ok({{"cmd", "node.list"}}).contains("nodes"));
  EXPECT_EQ(c.errorCode({{"cmd", "op.pause"}, {"op", "leibniz.term"}}), "permission_denied");
}

TEST_F(GatewayTest, EveryCommand) {
  startGateway();
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kAdmin);

  auto job = makeLeibnizJob(10'000, Precision::kDouble);
  ASSERT_TRUE(job.ok());
  json::object sub = c.ok({{"cmd", "submit"}, {"job", jobToJson(*job)}});
  // 64-bit ids travel as decimal strings and are accepted as strings or numbers.
  ASSERT_TRUE(sub.at("job_id").is_string());
  uint64_t job_id = std::stoull(std::string(sub.at("job_id").as_string()));
  EXPECT_EQ(fake_.calls("submitJob"), 1);

  json::object st = c.ok({{"cmd", "job.status"}, {"job_id", job_id}});
  EXPECT_EQ(st.at("state").as_string(), "running");
  EXPECT_EQ(c.ok({{"cmd", "job.status"}, {"job_id", std::to_string(job_id)}}).at("job_id"),
            sub.at("job_id"));
  EXPECT_EQ(st.at("total").to_number<uint64_t>(), job->tokenCount());
  EXPECT_EQ(c.ok({{"cmd", "job.list"}}).at("jobs").as_array().size(), 1u);

  json::object p = c.ok({{"cmd", "op.pause"}, {"op", "leibniz.term"}}).at("op").as_object();
  EXPECT_TRUE(p.at("paused").as_bool());
  EXPECT_EQ(p.at("state").as_string(), "paused");
  EXPECT_FALSE(
      c.ok({{"cmd", "op.resume"}, {"op", "leibniz.term"}}).at("op").at("paused").as_bool());
  json::object d = c.ok({{"cmd", "op.drain"}, {"op", "leibniz.chunk"}});
  EXPECT_EQ(d.at("dropped").to_number<uint64_t>(), 10u);
  EXPECT_TRUE(c.ok({{"cmd", "op.cancel_running"}, {"op", "leibniz.term"}}).contains("cancelled"));
  json::object lim = c.ok({{"cmd", "op.limits"},
                           {"op", "leibniz.term"},
                           {"max_in_flight", 8},
                           {"max_rate_per_s", 100.5}});
  EXPECT_EQ(lim.at("op").at("limits").at("max_in_flight").to_number<uint64_t>(), 8u);
  EXPECT_DOUBLE_EQ(lim.at("op").at("limits").at("max_rate_per_s").as_double(), 100.5);
  json::array ops = c.ok({{"cmd", "op.list"}}).at("ops").as_array();
  EXPECT_EQ(ops.size(), 5u);
  EXPECT_TRUE(ops[0].as_object().contains("weight"));

  json::array nodes = c.ok({{"cmd", "node.list"}}).at("nodes").as_array();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].at("lanes").as_array().size(), 3u);
  EXPECT_EQ(c.ok({{"cmd", "node.drain"}, {"node", "node-1"}}).at("node").at("state").as_string(),
            "draining");
  EXPECT_EQ(c.ok({{"cmd", "node.undrain"}, {"node", "node-1"}}).at("node").at("state").as_string(),
            "ready");
  EXPECT_TRUE(c.ok({{"cmd", "node.evict"}, {"node", "node-2"}}).contains("requeued"));

  json::object stats = c.ok({{"cmd", "cluster.stats"}});
  EXPECT_EQ(stats.at("nodes_ready").to_number<uint64_t>(), 1u);
  EXPECT_EQ(stats.at("nodes_dead").to_number<uint64_t>(), 1u);
  EXPECT_EQ(c.ok({{"cmd", "cluster.limits"}, {"admission_limit", 5}})
                .at("admission_limit")
                .to_number<uint64_t>(),
            5u);
  // The admission limit now rejects a new job.
  EXPECT_EQ(c.errorCode({{"cmd", "submit"}, {"job", jobToJson(*job)}}), "resource_exhausted");

  json::object tc = c.ok({{"cmd", "token.cancel"}, {"token_id", (job_id << 32) | 3}});
  EXPECT_TRUE(tc.at("cancelled").as_bool());
  json::object jc = c.ok({{"cmd", "job.cancel"}, {"job_id", job_id}});
  EXPECT_GT(jc.at("cancelled").to_number<uint64_t>(), 0u);
  EXPECT_EQ(c.ok({{"cmd", "job.status"}, {"job_id", job_id}}).at("state").as_string(), "cancelled");

  EXPECT_EQ(c.ok({{"cmd", "subscribe"}, {"topics", json::array{"ops", "job"}}})
                .at("topics")
                .as_array()
                .size(),
            2u);
  EXPECT_EQ(c.ok({{"cmd", "unsubscribe"}}).at("topics").as_array().size(), 0u);
  // [] means all topics, like an absent field.
  EXPECT_EQ(c.ok({{"cmd", "subscribe"}, {"topics", json::array{}}}).at("topics").as_array().size(),
            4u);
  c.ok({{"cmd", "unsubscribe"}});
  EXPECT_EQ(c.ok({{"cmd", "topics"}}).at("topics").as_array().size(), 4u);

  // Errors from the coordinator pass through with their code.
  EXPECT_EQ(c.errorCode({{"cmd", "job.status"}, {"job_id", 999}}), "not_found");
  EXPECT_EQ(c.errorCode({{"cmd", "op.pause"}, {"op", "no.such.op"}}), "not_found");
  EXPECT_EQ(c.errorCode({{"cmd", "node.drain"}, {"node", "node-9"}}), "not_found");
}

TEST_F(GatewayTest, BadInputGetsErrorsAndTheConnectionSurvives) {
  startGateway();
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kAdmin);
  auto errorOf = [&](const std::string& raw) {
    c.sendText(raw);
    json::object r = c.readMessage();
    EXPECT_FALSE(r.at("ok").as_bool()) << raw;
    return std::string(r.at("error").at("code").as_string());
  };
  EXPECT_EQ(errorOf("{not json"), "invalid_argument");
  EXPECT_EQ(errorOf("[1,2,3]"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":42})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":{"x":1},"cmd":"ping"})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"launch.missiles"})"), "unimplemented");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"job.status","job_id":"seven"})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"job.status","job_id":-3})"), "invalid_argument");
  // One integer rule: integers outside int64 are invalid_argument wherever they appear.
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"job.status","job_id":9223372036854775808})"),
            "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"job.status","job_id":18446744073709551616})"),
            "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"job.status","job_id":"12x"})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"job.status"})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"op.pause","op":7})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"op.limits","op":"leibniz.term","max_rate_per_s":"fast"})"),
            "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"submit","job":"pi please"})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"submit","job":{"name":"x","tokens":[{"op":""}]}})"),
            "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"subscribe","topics":["weather"]})"), "invalid_argument");
  EXPECT_EQ(errorOf(R"({"id":1,"cmd":"subscribe","topics":"ops"})"), "invalid_argument");
  // Binary frames are refused too.
  c.ws().binary(true);
  c.ws().write(net::buffer(std::string("\x01\x02")));
  EXPECT_EQ(c.readMessage().at("error").at("code").as_string(), "invalid_argument");
  // Ids are echoed as sent, strings included; the session still works.
  c.sendText(R"({"id":"abc","cmd":"ping"})");
  json::object r = c.readMessage();
  EXPECT_EQ(r.at("id").as_string(), "abc");
  EXPECT_TRUE(r.at("ok").as_bool());
  EXPECT_EQ(fake_.calls("submitJob"), 1);  // the empty op is refused by the coordinator
}

TEST_F(GatewayTest, OriginCheck) {
  startGateway();
  Client evil(port());
  EXPECT_TRUE(evil.connect("/ws", "http://evil.example"));
  Client same(port());
  EXPECT_FALSE(same.connect("/ws", "http://127.0.0.1:" + std::to_string(port())));
  Client none(port());
  EXPECT_FALSE(none.connect("/ws"));
  // The scheme counts: an https page is not this plain-http gateway's origin.
  Client scheme(port());
  EXPECT_TRUE(scheme.connect("/ws", "https://127.0.0.1:" + std::to_string(port())));
  EXPECT_GE(metricValue(httpGet(port(), "/metrics").body,
                        "tokengate_gateway_refusals_total{reason=\"origin\"}"),
            1);
}

TEST_F(GatewayTest, AllowedOriginsList) {
  GatewayConfig cfg = testConfig();
  cfg.allowed_origins = {"https://ops.example"};
  startGateway(cfg);
  Client ok(port());
  EXPECT_FALSE(ok.connect("/ws", "https://ops.example"));
  Client bad(port());
  EXPECT_TRUE(bad.connect("/ws", "http://127.0.0.1:" + std::to_string(port())));
}

TEST_F(GatewayTest, AllowListClosesTheDnsRebindingHoleOfSameOrigin) {
  {
    // Default (no list): same-origin compares Origin with the client-chosen Host, so a
    // rebound hostile name passes.
    startGateway();
    const std::string port_s = std::to_string(port());
    Client rebound(port());
    EXPECT_FALSE(
        rebound.connect("/ws", "http://evil.example:" + port_s, "", "evil.example:" + port_s));
    gw_->stop();
  }
  GatewayConfig cfg = testConfig();
  cfg.allowed_origins = {"https://ops.example:8443"};
  startGateway(cfg);
  const std::string port_s = std::to_string(port());
  Client rebound(port());
  EXPECT_TRUE(
      rebound.connect("/ws", "http://evil.example:" + port_s, "", "evil.example:" + port_s));
  // Listed origins match case-insensitively, a trailing slash ignored.
  Client listed(port());
  EXPECT_FALSE(listed.connect("/ws", "HTTPS://Ops.Example:8443/"));
  Client other_port(port());
  EXPECT_TRUE(other_port.connect("/ws", "https://ops.example:9443"));
}

TEST(GatewayOriginsTest, EnvListIsCommaSeparatedAndAppended) {
  EXPECT_EQ(parseOriginList(" https://a.example , ,http://b.example:8080,"),
            (std::vector<std::string>{"https://a.example", "http://b.example:8080"}));
  EXPECT_TRUE(parseOriginList("").empty());
  GatewayConfig cfg;
  cfg.allowed_origins = {"https://flag.example"};
  ::setenv("TG_GATEWAY_ALLOWED_ORIGINS", "https://a.example,https://b.example", 1);
  addAllowedOriginsFromEnv(cfg);
  ::unsetenv("TG_GATEWAY_ALLOWED_ORIGINS");
  EXPECT_EQ(
      cfg.allowed_origins,
      (std::vector<std::string>{"https://flag.example", "https://a.example", "https://b.example"}));
  addAllowedOriginsFromEnv(cfg);  // unset: unchanged
  EXPECT_EQ(cfg.allowed_origins.size(), 3u);
}

TEST_F(GatewayTest, OversizeFrameClosesWith1009) {
  GatewayConfig cfg = testConfig();
  cfg.max_frame_bytes = 1024;
  startGateway(cfg);
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kAdmin);
  beast::error_code ec;
  c.ws().text(true);
  // The server may cut the connection while this write is still going (broken pipe).
  c.ws().write(net::buffer(R"({"id":1,"cmd":"ping","data":")" + std::string(4096, 'x') + "\"}"),
               ec);
  beast::flat_buffer buf;
  if (!ec) c.ws().read(buf, ec);
  // The server answers with close code 1009. If it closes the TCP socket while our
  // oversize frame is still unread in its buffer, the kernel may reset the connection
  // before the close frame is read here; either way the connection must end.
  ASSERT_TRUE(ec) << "oversize frame was accepted";
  if (ec == websocket::error::closed) {
    EXPECT_EQ(c.ws().reason().code, websocket::close_code::too_big);
  }  // else: reset / broken pipe / not connected: the transport ended first.
  // Other clients are unaffected.
  Client d(port());
  ASSERT_FALSE(d.connect());
  EXPECT_TRUE(d.ok({{"cmd", "ping"}}).at("pong").as_bool());
}

TEST_F(GatewayTest, RateLimitPerConnection) {
  GatewayConfig cfg = testConfig();
  cfg.commands_per_s = 0.001;  // effectively no refill during the test
  cfg.command_burst = 5;
  startGateway(cfg);
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kAdmin);  // 1
  for (int i = 0; i < 4; ++i) c.ok({{"cmd", "ping"}});
  EXPECT_EQ(c.errorCode({{"cmd", "ping"}}), "resource_exhausted");
  EXPECT_EQ(c.errorCode({{"cmd", "cluster.stats"}}), "resource_exhausted");
  EXPECT_EQ(fake_.calls("stats"), 0);
  // A second connection has its own bucket.
  Client d(port());
  ASSERT_FALSE(d.connect());
  EXPECT_TRUE(d.ok({{"cmd", "ping"}}).at("pong").as_bool());
}

TEST_F(GatewayTest, RateLimitCountsMalformedFramesToo) {
  GatewayConfig cfg = testConfig();
  cfg.commands_per_s = 0.001;  // effectively no refill during the test
  cfg.command_burst = 4;
  startGateway(cfg);
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kAdmin);  // 1
  auto codeOf = [&](const std::string& raw) {
    c.sendText(raw);
    json::object r = c.readMessage();
    EXPECT_FALSE(r.at("ok").as_bool()) << raw;
    return std::string(r.at("error").at("code").as_string());
  };
  // Malformed frames are answered, and each takes a token: 2, 3, 4.
  EXPECT_EQ(codeOf("{oops"), "invalid_argument");
  EXPECT_EQ(codeOf("[]"), "invalid_argument");
  EXPECT_EQ(codeOf(R"({"id":{"x":1},"cmd":"ping"})"), "invalid_argument");
  // The bucket is empty now: valid and malformed frames alike are refused.
  EXPECT_EQ(codeOf("{oops"), "resource_exhausted");
  EXPECT_EQ(codeOf("7"), "resource_exhausted");
  c.ws().binary(true);
  c.ws().write(net::buffer(std::string("\x01")));
  EXPECT_EQ(c.readMessage().at("error").at("code").as_string(), "resource_exhausted");
  json::object r = c.cmd({{"cmd", "cluster.stats"}});  // the refusal still echoes the id
  EXPECT_EQ(r.at("error").at("code").as_string(), "resource_exhausted");
  EXPECT_EQ(fake_.calls("stats"), 0);
  EXPECT_GE(metricValue(httpGet(port(), "/metrics").body,
                        "tokengate_gateway_refusals_total{reason=\"rate_limited\"}"),
            4);
}

TEST_F(GatewayTest, EventsFollowSubscriptions) {
  startGateway();
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kViewer);
  c.ok({{"cmd", "subscribe"}, {"topics", json::array{"nodes"}}});
  fake_.emit(control::OpRatesEvent{});  // not subscribed
  fake_.emit(control::NodeEvent{control::NodeEvent::Change::kJoined, "node-7", {}, 0, 0});
  json::object ev = c.readMessage();
  EXPECT_EQ(ev.at("event").as_string(), "nodes");
  EXPECT_EQ(ev.at("data").at("node").as_string(), "node-7");
  // The simulated cluster's own events.
  c.ok({{"cmd", "subscribe"}, {"topics", json::array{"ops", "job"}}});
  fake_.step(0.25);
  bool saw_ops = false;
  for (int i = 0; i < 10 && !saw_ops; ++i) {
    json::object m = c.readMessage();
    saw_ops = m.at("event").as_string() == "ops";
  }
  EXPECT_TRUE(saw_ops);
  c.ok({{"cmd", "unsubscribe"}});
  c.events.clear();
  fake_.emit(control::NodeEvent{control::NodeEvent::Change::kJoined, "node-8", {}, 0, 0});
  fake_.sync();
  // A round trip through the coordinator after the emit: any event would be
  // queued before this reply on the session's strand.
  c.ok({{"cmd", "cluster.stats"}});
  c.ok({{"cmd", "cluster.stats"}});
  EXPECT_TRUE(c.events.empty());
}

TEST_F(GatewayTest, SlowClientIsSkippedAndNeverBlocksTheCoordinator) {
  GatewayConfig cfg = testConfig();
  cfg.max_queued_events = 16;
  startGateway(cfg);
  Client slow(port());
  ASSERT_FALSE(slow.connect());
  slow.hello(kViewer);
  slow.ok({{"cmd", "subscribe"}, {"topics", json::array{"failures"}}});
  Client fast(port());
  ASSERT_FALSE(fast.connect());
  fast.hello(kViewer);

  // 2000 events of 64 KiB (125 MiB): far more than socket buffers hold. The
  // slow client does not read while they are emitted.
  const std::string blob(64 * 1024, 'f');
  const int kEvents = 2000;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kEvents; ++i)
    fake_.emit(control::FailuresEvent{"op", static_cast<uint64_t>(i), blob});
  fake_.sync();
  auto coordinator_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The fast client's commands still go through promptly.
  EXPECT_TRUE(fast.ok({{"cmd", "cluster.stats"}}).contains("nodes_ready"));
  EXPECT_LT(coordinator_s, 20.0);  // generous; the loop only serializes and posts

  std::string metrics;
  ASSERT_TRUE(eventually([&] {
    metrics = httpGet(port(), "/metrics").body;
    return metricValue(metrics, "tokengate_gateway_events_total{result=\"dropped_slow_client\"}") >
           0;
  }));
  // Now read. Markers keep coming until one arrives (one emitted while the
  // backlog is still queued would itself be dropped); the first accepted
  // event after drops is preceded by a gap notice counting them.
  std::atomic<bool> seen{false};
  std::thread marker([&] {
    while (!seen.load()) {
      fake_.emit(control::FailuresEvent{"marker", 0, {}});
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  int got = 0;
  uint64_t dropped = 0;
  for (;;) {
    json::object m = slow.readMessage();
    if (m.at("event").as_string() == "gap") {
      dropped += m.at("data").at("dropped").to_number<uint64_t>();
      continue;
    }
    if (m.at("data").at("op").as_string() == "marker") break;
    ++got;
  }
  seen = true;
  marker.join();
  EXPECT_GT(dropped, 0u);
  EXPECT_LT(got, kEvents);
  EXPECT_EQ(gw_->wsClients(), 2u);
}

TEST_F(GatewayTest, HungCoordinatorTimesOutAsUnavailable) {
  GatewayConfig cfg = testConfig();
  cfg.command_timeout_ms = 100;
  startGateway(cfg);
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kAdmin);
  fake_.setHung(true);
  EXPECT_EQ(c.errorCode({{"cmd", "cluster.stats"}}), "unavailable");
  fake_.setHung(false);
  EXPECT_TRUE(c.ok({{"cmd", "cluster.stats"}}).contains("nodes_ready"));
}

TEST_F(GatewayTest, HttpEndpoints) {
  startGateway();
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kViewer);
  c.ok({{"cmd", "cluster.stats"}});
  fake_.submitJob(*makeLeibnizJob(10000, Precision::kDouble), [](StatusOr<uint64_t>) {});
  fake_.step(1.0);
  fake_.sync();

  HttpResult m = httpGet(port(), "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.content_type.find("text/plain"), std::string::npos);
  EXPECT_EQ(metricValue(m.body, "tokengate_ws_clients"), 1);
  EXPECT_NE(m.body.find("tokengate_gateway_command_seconds_bucket{cmd=\"cluster.stats\""),
            std::string::npos);
  EXPECT_GT(metricValue(m.body, "tokengate_tokens_completed_total{op=\"leibniz.term\""), 0);

  EXPECT_EQ(httpGet(port(), "/healthz").status, 200);
  EXPECT_EQ(httpGet(port(), "/readyz").status, 200);
  HttpResult page = httpGet(port(), "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.content_type.find("text/html"), std::string::npos);
  EXPECT_NE(page.body.find("TokenGate"), std::string::npos);
  EXPECT_EQ(httpGet(port(), "/app.js").status, 200);
  EXPECT_EQ(httpGet(port(), "/style.css").status, 200);
  EXPECT_EQ(httpGet(port(), "/nope").status, 404);
  EXPECT_EQ(httpGet(port(), "/../etc/passwd").status, 404);
  EXPECT_EQ(httpGet(port(), "/metrics", http::verb::post).status, 405);
  HttpResult head = httpGet(port(), "/healthz", http::verb::head);
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
  EXPECT_EQ(httpGet(port(), "/ws").status, 426);  // a plain GET is not an upgrade
}

TEST_F(GatewayTest, UnauthenticatedConnectionsAreClosedAfterTheAuthTimeout) {
  GatewayConfig cfg = testConfig();
  cfg.auth_timeout_ms = 300;
  startGateway(cfg);
  Client idle(port());
  ASSERT_FALSE(idle.connect());
  Client authed(port());
  ASSERT_FALSE(authed.connect());
  authed.hello(kViewer);
  beast::flat_buffer buf;
  beast::error_code ec;
  idle.ws().read(buf, ec);  // blocks until the gateway closes it
  EXPECT_EQ(ec, websocket::error::closed);
  EXPECT_EQ(idle.ws().reason().code, websocket::close_code::policy_error);
  EXPECT_EQ(std::string(idle.ws().reason().reason.c_str()), "authentication timeout");
  EXPECT_TRUE(authed.ok({{"cmd", "whoami"}}).contains("role"));  // authenticated: no deadline
  EXPECT_GE(metricValue(httpGet(port(), "/metrics").body,
                        "tokengate_gateway_refusals_total{reason=\"auth_timeout\"}"),
            1);
}

TEST_F(GatewayTest, UnauthenticatedPoolNeverLocksOutTokenHolders) {
  GatewayConfig cfg = testConfig();
  cfg.max_unauthenticated = 3;
  cfg.max_unauthenticated_per_ip = 2;
  startGateway(cfg);
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < 2; ++i) {
    idle.push_back(std::make_unique<Client>(port()));
    ASSERT_FALSE(idle.back()->connect());
  }
  Client third(port());
  EXPECT_TRUE(third.connect());  // 503: per-address cap
  // A token in the upgrade request needs no unauthenticated slot.
  Client admin(port());
  ASSERT_FALSE(admin.connect("/ws", "", kAdmin));
  EXPECT_EQ(admin.ok({{"cmd", "whoami"}}).at("role").as_string(), "admin");
  EXPECT_TRUE(admin.ok({{"cmd", "cluster.stats"}}).contains("nodes_ready"));
  // An unauthenticated session that authenticates frees its slot for another.
  idle[0]->hello(kViewer);
  Client fourth(port());
  EXPECT_FALSE(fourth.connect());
  EXPECT_GE(metricValue(httpGet(port(), "/metrics").body,
                        "tokengate_gateway_refusals_total{reason=\"too_many_unauthenticated\"}"),
            1);
}

TEST_F(GatewayTest, FailedTokensBackOffPerAddress) {
  testing::FakeClock clock;
  GatewayConfig cfg = testConfig();
  cfg.clock = &clock;
  cfg.auth_free_failures = 2;
  cfg.auth_backoff_base_ms = 1000;
  startGateway(cfg);
  for (int i = 0; i < 3; ++i) {
    Client guess(port());
    EXPECT_TRUE(guess.connect("/ws", "", "guess-" + std::to_string(i)));  // 401
  }
  // Blocked now: even the right token is not checked (HTTP 429) ...
  Client blocked(port());
  EXPECT_TRUE(blocked.connect("/ws", "", kAdmin));
  // ... nor one sent in hello.
  Client hello(port());
  ASSERT_FALSE(hello.connect());
  EXPECT_EQ(hello.errorCode({{"cmd", "hello"}, {"token", kAdmin}}), "resource_exhausted");
  clock.advanceMs(1000);
  EXPECT_EQ(hello.ok({{"cmd", "hello"}, {"token", kAdmin}}).at("role").as_string(), "admin");
  EXPECT_GE(metricValue(httpGet(port(), "/metrics").body,
                        "tokengate_gateway_refusals_total{reason=\"auth_backoff\"}"),
            2);
}

TEST_F(GatewayTest, RateLimitPerSourceAddress) {
  testing::FakeClock clock;
  GatewayConfig cfg = testConfig();
  cfg.clock = &clock;
  cfg.ip_commands_per_s = 1;
  cfg.ip_command_burst = 4;
  startGateway(cfg);
  Client a(port()), b(port());
  ASSERT_FALSE(a.connect("/ws", "", kViewer));
  ASSERT_FALSE(b.connect("/ws", "", kViewer));
  EXPECT_TRUE(a.ok({{"cmd", "ping"}}).contains("pong"));
  EXPECT_TRUE(b.ok({{"cmd", "ping"}}).contains("pong"));
  EXPECT_TRUE(a.ok({{"cmd", "ping"}}).contains("pong"));
  EXPECT_TRUE(b.ok({{"cmd", "ping"}}).contains("pong"));
  // Both connections share 127.0.0.1's bucket: a fresh connection does not help.
  EXPECT_EQ(a.errorCode({{"cmd", "ping"}}), "resource_exhausted");
  Client c(port());
  ASSERT_FALSE(c.connect("/ws", "", kViewer));
  EXPECT_EQ(c.errorCode({{"cmd", "ping"}}), "resource_exhausted");
  clock.advanceMs(1000);
  EXPECT_TRUE(c.ok({{"cmd", "ping"}}).contains("pong"));
}

TEST_F(GatewayTest, UnauthenticatedFramesAreSmall) {
  GatewayConfig cfg = testConfig();
  cfg.unauthenticated_max_frame_bytes = 1024;
  startGateway(cfg);
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.sendText(R"({"cmd":"ping","data":")" + std::string(2000, 'x') + R"("})");
  beast::flat_buffer buf;
  beast::error_code ec;
  c.ws().read(buf, ec);
  EXPECT_EQ(c.ws().reason().code, websocket::close_code::too_big);
  Client d(port());
  ASSERT_FALSE(d.connect("/ws", "", kViewer));  // authenticated: max_frame_bytes
  d.sendText(R"({"id":1,"cmd":"ping","data":")" + std::string(2000, 'x') + R"("})");
  EXPECT_TRUE(d.readReply(json::value(1)).at("ok").as_bool());
}

TEST_F(GatewayTest, WebSocketClientCap) {
  GatewayConfig cfg = testConfig();
  cfg.max_ws_clients = 1;
  startGateway(cfg);
  Client a(port());
  ASSERT_FALSE(a.connect());
  a.hello(kViewer);  // registered once this reply arrives
  Client b(port());
  EXPECT_TRUE(b.connect("/ws", "", kViewer));  // a token in the upgrade: 503
  // Without a token b gets an unauthenticated slot, but cannot authenticate.
  Client b2(port());
  ASSERT_FALSE(b2.connect());
  EXPECT_EQ(b2.errorCode({{"cmd", "hello"}, {"token", kViewer}}), "resource_exhausted");
  a.ws().close(websocket::close_code::normal);
  EXPECT_TRUE(eventually([&] { return gw_->wsClients() == 0; }));
  Client c(port());
  EXPECT_FALSE(c.connect("/ws", "", kViewer));
}

TEST(ProtocolTest, JobStatusJson) {
  control::JobStatus s;
  s.id = 9;
  s.name = "pi";
  s.state = control::JobState::kFailed;
  s.total = 3;
  s.done = 2;
  s.failed = 1;
  s.wall_ns = 1'500'000;
  control::OutputResult good;
  good.name = "pi";
  good.value = Value(3.25);
  control::OutputResult bad;
  bad.index = 1;
  bad.name = "e";
  bad.status = absl::DeadlineExceededError("too slow");
  s.outputs = {good, bad};
  json::object o = toJson(s);
  EXPECT_EQ(o.at("job_id").as_string(), "9");
  EXPECT_EQ(o.at("state").as_string(), "failed");
  EXPECT_DOUBLE_EQ(o.at("wall_ms").as_double(), 1.5);
  const json::array& outs = o.at("outputs").as_array();
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_TRUE(outs[0].at("ok").as_bool());
  EXPECT_DOUBLE_EQ(outs[0].at("value").as_double(), 3.25);
  EXPECT_FALSE(outs[1].at("ok").as_bool());
  EXPECT_EQ(outs[1].at("error").at("code").as_string(), "deadline_exceeded");
}

TEST(GatewayReadyTest, NotReadyWithoutNodes) {
  testing::FakeClusterControl empty(/*demo=*/false);
  Gateway gw(testConfig(), empty);
  ASSERT_TRUE(gw.start().ok());
  EXPECT_EQ(httpGet(gw.port(), "/readyz").status, 503);
  empty.addNode("node-1");
  EXPECT_TRUE(eventually([&] { return httpGet(gw.port(), "/readyz").status == 200; }));
  gw.stop();
  EXPECT_EQ(empty.sinkCount(), 0u);
}

TEST_F(GatewayTest, StopClosesSessionsGoingAway) {
  startGateway();
  Client c(port());
  ASSERT_FALSE(c.connect());
  c.hello(kViewer);
  ASSERT_TRUE(eventually([&] { return gw_->wsClients() == 1; }));
  gw_->stop();
  beast::flat_buffer buf;
  beast::error_code ec;
  c.ws().read(buf, ec);
  EXPECT_TRUE(ec);
  EXPECT_EQ(gw_->wsClients(), 0u);
}

// TLS: a self-signed certificate made here, then a wss:// client.
void writeSelfSigned(const std::string& cert_path, const std::string& key_path) {
  EVP_PKEY* pkey = EVP_RSA_gen(2048);
  X509* x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, pkey);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_sign(x, pkey, EVP_sha256());
  FILE* f = std::fopen(cert_path.c_str(), "wb");
  PEM_write_X509(f, x);
  std::fclose(f);
  f = std::fopen(key_path.c_str(), "wb");
  PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(pkey);
}

TEST_F(GatewayTest, TlsWebSocket) {
  auto dir = std::filesystem::temp_directory_path() /
             ("tg-gw-tls-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
              "-" + std::to_string(reinterpret_cast<uintptr_t>(this)));
  std::filesystem::create_directories(dir);
  std::string cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  writeSelfSigned(cert, key);
  GatewayConfig cfg = testConfig();
  cfg.tls_cert_file = cert;
  cfg.tls_key_file = key;
  startGateway(cfg);

  net::io_context ioc;
  net::ssl::context ctx(net::ssl::context::tls_client);
  ctx.load_verify_file(cert);
  websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws(ioc, ctx);
  beast::get_lowest_layer(ws).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port()));
  ws.next_layer().set_verify_mode(net::ssl::verify_peer);
  ws.next_layer().handshake(net::ssl::stream_base::client);
  ws.handshake("127.0.0.1", "/ws");
  ws.write(net::buffer(std::string(R"({"id":1,"cmd":"hello","token":"admin-secret"})")));
  beast::flat_buffer buf;
  ws.read(buf);
  json::object r = json::parse(beast::buffers_to_string(buf.data())).as_object();
  EXPECT_TRUE(r.at("ok").as_bool());
  EXPECT_EQ(r.at("result").at("role").as_string(), "admin");
  ws.close(websocket::close_code::normal);
  std::filesystem::remove_all(dir);

  GatewayConfig bad = testConfig();
  bad.tls_cert_file = "/nonexistent.pem";
  bad.tls_key_file = "/nonexistent.key";
  Gateway g2(bad, fake_);
  EXPECT_EQ(g2.start().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tokengate::gateway
