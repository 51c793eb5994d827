// The node's link against a scripted coordinator: a real ROUTER socket on
// an ephemeral loopback port, driven step by step by the test. Waits are
// generous upper bounds; nothing asserts on how fast things happen.
#include <capnp/message.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <thread>
#include <zmq.hpp>

#include "common/wire.h"
#include "node/link/health.h"
#include "node/link/node.h"

namespace tokengate::node {
namespace {

using namespace std::chrono_literals;
using Which = wire::Frame::Which;

struct Received {
  std::string peer;
  std::unique_ptr<DecodedFrame> frame;
  wire::Frame::Reader root() const { return frame->root(); }
};

class FakeCoordinator {
 public:
  FakeCoordinator() : router_(ctx_, zmq::socket_type::router) {
    router_.set(zmq::sockopt::linger, 0);
    router_.set(zmq::sockopt::router_handover, 1);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }
  const std::string& endpoint() const { return endpoint_; }

  std::optional<Received> recv(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{static_cast<void*>(router_), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    zmq::message_t peer, body;
    (void)router_.recv(peer);
    (void)router_.recv(body);
    auto decoded = decodeFrame(body.data(), body.size());
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    if (!decoded.ok()) return std::nullopt;
    return Received{peer.to_string(), std::move(*decoded)};
  }

  // Next frame of `kind`; others are counted and skipped (heartbeats get a pong).
  std::optional<Received> expect(Which kind, std::chrono::milliseconds timeout = 30s,
                                 bool quiet = false) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      auto r = recv(100ms);
      if (!r) continue;
      const Which w = r->root().which();
      seen_[w]++;
      if (w == kind) return r;
      if (w == Which::HEARTBEAT && answer_heartbeats_) {
        capnp::MallocMessageBuilder msg;
        frame(msg).setPong(1);
        send(r->peer, msg);
      }
    }
    if (!quiet) ADD_FAILURE() << "no frame of kind " << static_cast<int>(kind);
    return std::nullopt;
  }

  static wire::Frame::Builder frame(capnp::MessageBuilder& msg) {
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    return f;
  }
  void send(const std::string& peer, capnp::MessageBuilder& msg) {
    sendRaw(peer, encodeFrame(msg));
  }
  void sendRaw(const std::string& peer, const std::string& bytes) {
    router_.send(zmq::buffer(peer), zmq::send_flags::sndmore);
    router_.send(zmq::buffer(bytes), zmq::send_flags::none);
  }
  void welcome(const std::string& peer, uint64_t session, uint32_t heartbeat_ms = 50,
               uint64_t max_frame_bytes = 0) {
    capnp::MallocMessageBuilder msg;
    auto w = frame(msg).initWelcome();
    w.setAccepted(true);
    w.setSession(session);
    w.setHeartbeatMs(heartbeat_ms);
    w.setMaxFrameBytes(max_frame_bytes);
    send(peer, msg);
  }
  void control(const std::string& peer, const std::function<void(wire::Control::Builder)>& fill) {
    capnp::MallocMessageBuilder msg;
    fill(frame(msg).initControl());
    send(peer, msg);
  }

  struct Tok {
    uint64_t id;
    uint16_t op;
    std::vector<Value> args;
    uint32_t attempt = 1;
    wire::Weight weight = wire::Weight::UNSPECIFIED;
  };
  void batch(const std::string& peer, uint64_t session, const std::vector<std::string>& ops,
             const std::vector<Tok>& toks) {
    capnp::MallocMessageBuilder msg;
    auto b = frame(msg).initTokenBatch();
    b.setSession(session);
    auto ol = b.initOps(static_cast<unsigned>(ops.size()));
    for (unsigned i = 0; i < ops.size(); ++i) ol.set(i, ops[i]);
    auto tl = b.initTokens(static_cast<unsigned>(toks.size()));
    for (unsigned i = 0; i < toks.size(); ++i) {
      tl[i].setId(toks[i].id);
      tl[i].setOp(toks[i].op);
      tl[i].setAttempt(toks[i].attempt);
      tl[i].setWeight(toks[i].weight);
      auto al = tl[i].initArgs(static_cast<unsigned>(toks[i].args.size()));
      for (unsigned j = 0; j < toks[i].args.size(); ++j) toWire(toks[i].args[j], al[j]);
    }
    send(peer, msg);
  }

  struct Outcome {
    StatusOr<Value> value;
    uint32_t attempt;
    uint32_t core;
    wire::Weight lane;
  };
  // Gathers result batches until `ids` results and `returned` hand-backs arrived.
  void gather(size_t results, size_t returned = 0) {
    const auto until = std::chrono::steady_clock::now() + 30s;
    while ((results_.size() < results || returned_.size() < returned) &&
           std::chrono::steady_clock::now() < until) {
      auto r = expect(Which::RESULT_BATCH, 1s, /*quiet=*/true);
      if (!r) continue;
      auto rb = r->root().getResultBatch();
      last_session_ = rb.getSession();
      max_result_frame_ = std::max(max_result_frame_, r->frame->bytes());
      ++result_frames_;
      for (auto res : rb.getResults()) {
        Outcome o{absl::UnknownError(""), res.getAttempt(), res.getCore(), res.getLane()};
        if (res.isValue())
          o.value = fromWire(res.getValue());
        else
          o.value = fromWire(res.getError());
        EXPECT_FALSE(results_.contains(res.getId())) << "duplicate result " << res.getId();
        results_.emplace(res.getId(), std::move(o));
      }
      for (auto t : rb.getReturned()) returned_[t.getId()] = t.getAttempt();
    }
    ASSERT_GE(results_.size(), results);
    ASSERT_GE(returned_.size(), returned);
  }

  std::map<uint64_t, Outcome> results_;
  std::map<uint64_t, uint32_t> returned_;
  std::map<Which, int> seen_;
  uint64_t last_session_ = 0;
  size_t max_result_frame_ = 0;
  size_t result_frames_ = 0;
  bool answer_heartbeats_ = true;

 private:
  zmq::context_t ctx_;
  zmq::socket_t router_;
  std::string endpoint_;
};

class LinkTest : public ::testing::Test {
 protected:
  void start(NodeConfig cfg = {}) {
    cfg.coordinator = coord_.endpoint();
    cfg.node_id = "test-node";
    cfg.enable_test_ops = true;
    cfg.stop_grace_ms = 20'000;
    auto n = Node::create(cfg);
    ASSERT_TRUE(n.ok()) << n.status();
    node_ = std::move(*n);
    thread_ = std::thread([this] { status_ = node_->run(); });
  }
  void TearDown() override {
    if (thread_.joinable()) {
      node_->requestStop();
      thread_.join();
    }
  }
  // hello -> welcome; returns the node's routing id.
  std::string handshake(uint64_t session, uint32_t heartbeat_ms = 50,
                        uint64_t max_frame_bytes = 0) {
    auto hello = coord_.expect(Which::HELLO);
    if (!hello) return "";
    coord_.welcome(hello->peer, session, heartbeat_ms, max_frame_bytes);
    return hello->peer;
  }
  void waitRunning(Weight lane, uint32_t n) {
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (node_->executor().laneStats()[static_cast<int>(lane)].running < n &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(1ms);
    ASSERT_GE(node_->executor().laneStats()[static_cast<int>(lane)].running, n);
  }
  void stopAndJoin() {
    node_->requestStop();
    thread_.join();
    EXPECT_TRUE(status_.ok()) << status_;
  }

  FakeCoordinator coord_;
  std::unique_ptr<Node> node_;
  std::thread thread_;
  Status status_;
};

TEST_F(LinkTest, HelloDescribesTheNode) {
  start();
  auto hello = coord_.expect(Which::HELLO);
  ASSERT_TRUE(hello);
  auto h = hello->root().getHello();
  EXPECT_EQ(h.getProtocolVersion(), kProtocolVersion);
  EXPECT_EQ(std::string(h.getNodeId().cStr()), "test-node");
  EXPECT_NE(h.getIncarnation(), 0u);
  EXPECT_EQ(hello->peer, fmt::format("test-node/{:016x}", h.getIncarnation()));
  EXPECT_EQ(hello->peer, node_->routingId());
  EXPECT_EQ(h.getPid(), static_cast<uint32_t>(getpid()));
  EXPECT_EQ(h.getSpeedFactor(), 1.0);
  EXPECT_EQ(h.getLanes().size(), 3u);
  EXPECT_EQ(h.getCores().size(), node_->executor().cores().size());
  std::map<std::string, wire::Weight> ops;
  for (auto o : h.getOperations()) ops[o.getName().cStr()] = o.getWeight();
  EXPECT_EQ(ops.at("leibniz.term"), wire::Weight::LIGHT);
  EXPECT_EQ(ops.at("sleep"), wire::Weight::MEDIUM);
  EXPECT_TRUE(ops.contains("leibniz.final"));
  // Without a welcome the node keeps saying hello.
  EXPECT_TRUE(coord_.expect(Which::HELLO));
}

TEST_F(LinkTest, BatchResultsHeartbeatAndMalformedFrames) {
  start();
  const std::string peer = handshake(77);
  ASSERT_FALSE(peer.empty());
  auto hb = coord_.expect(Which::HEARTBEAT);
  ASSERT_TRUE(hb);
  EXPECT_EQ(hb->root().getHeartbeat().getSession(), 77u);
  EXPECT_EQ(hb->root().getHeartbeat().getLanes().size(), 3u);
  EXPECT_GT(hb->root().getHeartbeat().getRssBytes(), 0u);
  EXPECT_GT(hb->root().getHeartbeat().getCpuNs(), 0u) << "the process's CPU time";
  EXPECT_FALSE(hb->root().getHeartbeat().getDraining());

  coord_.batch(peer, 77, {"leibniz.term", "echo", "nope"},
               {{1, 0, {Value(3)}}, {2, 1, {Value("x")}, 4}, {3, 2, {}}, {4, 9, {}}});
  coord_.gather(4);
  auto& r = coord_.results_;
  EXPECT_EQ(coord_.last_session_, 77u);
  ASSERT_TRUE(r.at(1).value.ok());
  EXPECT_EQ(r.at(1).value->asDouble(), leibnizTermDouble(3));
  EXPECT_EQ(r.at(1).lane, wire::Weight::LIGHT);
  EXPECT_EQ(*r.at(2).value, Value("x"));
  EXPECT_EQ(r.at(2).attempt, 4u);
  EXPECT_EQ(r.at(3).value.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.at(3).value.status().message(), "unknown operation nope");
  EXPECT_EQ(r.at(4).value.status().code(), StatusCode::kInvalidArgument);

  // Garbage, a truncated frame and a wrong protocol version are dropped...
  coord_.sendRaw(peer, "not a capnp frame");
  coord_.sendRaw(peer, std::string(16, '\xff'));
  {
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion + 1);
    f.setPing(5);
    coord_.sendRaw(peer, encodeFrame(msg));
  }
  // ...a stale session's batch is ignored...
  coord_.batch(peer, 76, {"echo"}, {{5, 0, {Value(5)}}});
  // ...and the node keeps serving.
  coord_.batch(peer, 77, {"hash", "echo"}, {{6, 0, {Value(1)}}, {7, 1, {Value(7)}}});
  coord_.gather(6);
  EXPECT_FALSE(r.contains(5));
  EXPECT_TRUE(r.at(6).value.ok());
  EXPECT_EQ(*r.at(7).value, Value(7));

  // Ping gets a pong.
  {
    capnp::MallocMessageBuilder msg;
    FakeCoordinator::frame(msg).setPing(99);
    coord_.send(peer, msg);
    auto pong = coord_.expect(Which::PONG);
    ASSERT_TRUE(pong);
    EXPECT_EQ(pong->root().getPong(), 99u);
  }

  coord_.control(peer, [](wire::Control::Builder c) { c.setShutdown(); });
  auto bye = coord_.expect(Which::BYE);
  ASSERT_TRUE(bye);
  EXPECT_EQ(bye->root().getBye().getSession(), 77u);
  thread_.join();
  EXPECT_TRUE(status_.ok()) << status_;
}

TEST_F(LinkTest, DrainHandsBackQueuedTokensAndCancelReachesRunningOnes) {
  NodeConfig cfg;
  cfg.heavy_cores = 0;
  start(cfg);
  const std::string peer = handshake(5);
  ASSERT_FALSE(peer.empty());
  const uint32_t workers = node_->executor().layout()[0].workers;
  std::vector<FakeCoordinator::Tok> toks;
  for (uint32_t i = 0; i < workers; ++i) toks.push_back({100 + i, 0, {Value(60'000)}});
  coord_.batch(peer, 5, {"wait_cancel", "echo"}, toks);
  // Wait until every worker is blocked, then queue more behind them.
  waitRunning(Weight::kMedium, workers);
  coord_.batch(peer, 5, {"echo"}, {{1, 0, {Value(1)}, 3}, {2, 0, {Value(2)}, 1}});
  coord_.control(peer, [](wire::Control::Builder c) { c.setDrain(); });
  coord_.gather(0, 2);
  EXPECT_EQ(coord_.returned_.at(1), 3u);
  EXPECT_EQ(coord_.returned_.at(2), 1u);
  // Heartbeats now say draining.
  bool draining = false;
  for (int i = 0; i < 20 && !draining; ++i) {
    auto hb = coord_.expect(Which::HEARTBEAT);
    ASSERT_TRUE(hb);
    draining = hb->root().getHeartbeat().getDraining();
  }
  EXPECT_TRUE(draining);
  // Work sent while draining comes straight back.
  coord_.batch(peer, 5, {"echo"}, {{3, 0, {Value(3)}}});
  coord_.gather(0, 3);
  // Cancel the running blockers: they report Cancelled.
  coord_.control(peer, [&](wire::Control::Builder c) {
    auto l = c.initCancelTokens(workers);
    for (uint32_t i = 0; i < workers; ++i) l.set(i, 100 + i);
  });
  coord_.gather(workers, 3);
  for (uint32_t i = 0; i < workers; ++i)
    EXPECT_EQ(coord_.results_.at(100 + i).value.status().code(), StatusCode::kCancelled);
  // Undrain: work runs again.
  coord_.control(peer, [](wire::Control::Builder c) { c.setUndrain(); });
  coord_.batch(peer, 5, {"echo"}, {{4, 0, {Value(4)}}});
  coord_.gather(workers + 1, 3);
  EXPECT_EQ(*coord_.results_.at(4).value, Value(4));
  stopAndJoin();
  EXPECT_TRUE(coord_.expect(Which::BYE));
}

TEST_F(LinkTest, CancelOpFromTheCoordinator) {
  start();
  const std::string peer = handshake(9);
  coord_.batch(peer, 9, {"wait_cancel"}, {{1, 0, {Value(60'000)}}});
  waitRunning(Weight::kMedium, 1);
  coord_.control(peer, [](wire::Control::Builder c) { c.setCancelOp("wait_cancel"); });
  coord_.gather(1);
  EXPECT_EQ(coord_.results_.at(1).value.status().code(), StatusCode::kCancelled);
}

TEST_F(LinkTest, SaysHelloAgainAfterCoordinatorSilence) {
  start();
  std::string peer = handshake(1, /*heartbeat_ms=*/30);
  ASSERT_FALSE(peer.empty());
  coord_.answer_heartbeats_ = false;  // play dead: no pongs
  auto again = coord_.expect(Which::HELLO);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->peer, peer);  // same incarnation, same routing id
  coord_.answer_heartbeats_ = true;
  coord_.welcome(again->peer, 2, 1000);
  coord_.batch(again->peer, 2, {"echo"}, {{11, 0, {Value(11)}}});
  coord_.gather(1);
  EXPECT_EQ(coord_.last_session_, 2u);
  EXPECT_EQ(node_->session(), 2u);
}

TEST_F(LinkTest, UnknownSessionRejectionTriggersHello) {
  start();
  std::string peer = handshake(1, 1000);
  ASSERT_FALSE(peer.empty());
  capnp::MallocMessageBuilder msg;
  auto w = FakeCoordinator::frame(msg).initWelcome();
  w.setAccepted(false);
  toWire(absl::FailedPreconditionError("unknown session"), w.initError());
  coord_.send(peer, msg);
  auto again = coord_.expect(Which::HELLO, 5s);  // immediately, not after the resend delay
  ASSERT_TRUE(again);
  coord_.welcome(peer, 3, 1000);
  coord_.batch(peer, 3, {"echo"}, {{1, 0, {Value(1)}}});
  coord_.gather(1);
}

TEST_F(LinkTest, ShutdownTellsTheCoordinatorAtOnceAndAnEvictedNodeDoesNotRejoin) {
  start();
  std::string peer = handshake(1, 1000);  // heartbeats 1 s apart: the next one is not due
  ASSERT_FALSE(peer.empty());
  // A running token keeps the node from finishing its drain (and leaving) on its own.
  coord_.batch(peer, 1, {"sleep"}, {{1, 0, {Value(int64_t{1000})}}});
  waitRunning(Weight::kMedium, 1);
  coord_.control(peer, [](wire::Control::Builder c) { c.setShutdown(); });
  // The draining heartbeat goes out at once, not at the next heartbeat interval (1 s away).
  const auto until = std::chrono::steady_clock::now() + 500ms;
  bool draining = false;
  while (!draining && std::chrono::steady_clock::now() < until) {
    auto hb = coord_.expect(Which::HEARTBEAT, 100ms, /*quiet=*/true);
    draining = hb && hb->root().getHeartbeat().getDraining();
  }
  EXPECT_TRUE(draining) << "no draining heartbeat within 500 ms of the shutdown";
  // An evicting coordinator has already forgotten the session: the stopping node must not
  // say hello again (it would rejoin for a moment), it just stops.
  capnp::MallocMessageBuilder msg;
  auto w = FakeCoordinator::frame(msg).initWelcome();
  w.setAccepted(false);
  toWire(absl::FailedPreconditionError("unknown session"), w.initError());
  coord_.send(peer, msg);
  thread_.join();
  EXPECT_TRUE(status_.ok()) << status_;
  EXPECT_FALSE(coord_.expect(Which::HELLO, 300ms, /*quiet=*/true))
      << "an evicted node said hello again";
}

TEST_F(LinkTest, ResultFramesStayBelowTheWelcomeFrameLimit) {
  NodeConfig cfg;
  start(cfg);
  cfg.max_frame_bytes = 16 * 1024;
  const std::string peer = handshake(8, 1000, cfg.max_frame_bytes);
  std::vector<FakeCoordinator::Tok> toks;
  for (uint64_t i = 0; i < 40; ++i) toks.push_back({i, 0, {Value(std::string(3000, 'a'))}});
  toks.push_back({100, 0, {Value(std::string(20'000, 'b'))}});  // cannot fit at all
  coord_.batch(peer, 8, {"echo"}, toks);
  coord_.gather(41);
  EXPECT_LE(coord_.max_result_frame_, cfg.max_frame_bytes);
  EXPECT_GE(coord_.result_frames_, 8u);
  for (uint64_t i = 0; i < 40; ++i) EXPECT_EQ(coord_.results_.at(i).value->asText().size(), 3000u);
  EXPECT_EQ(coord_.results_.at(100).value.status().code(), StatusCode::kResourceExhausted);
}

TEST_F(LinkTest, RequestStopSendsBye) {
  start();
  const std::string peer = handshake(42, 1000);
  coord_.batch(peer, 42, {"sleep"}, {{1, 0, {Value(300)}}});
  waitRunning(Weight::kMedium, 1);
  stopAndJoin();
  // The running token finished and its result went out before bye.
  coord_.gather(1);
  EXPECT_TRUE(coord_.results_.at(1).value.ok());
  auto bye = coord_.expect(Which::BYE);
  ASSERT_TRUE(bye);
  EXPECT_EQ(bye->root().getBye().getSession(), 42u);
}

TEST_F(LinkTest, HealthFileTracksTheSessionForProbes) {
  const std::string path = ::testing::TempDir() + "tg-node-health-" + std::to_string(getpid());
  std::remove(path.c_str());
  NodeConfig cfg;
  cfg.health_file = path;
  start(cfg);
  auto waitFor = [&](bool want_ready) {
    const auto until = std::chrono::steady_clock::now() + 10s;
    HealthCheck c;
    while (std::chrono::steady_clock::now() < until) {
      c = checkHealthFile(path, 10, want_ready);
      if (c.healthy) break;
      std::this_thread::sleep_for(10ms);
    }
    return c;
  };
  // Before the welcome: alive (liveness passes) but not ready.
  auto live = waitFor(false);
  ASSERT_TRUE(live.healthy) << live.reason;
  auto notReady = checkHealthFile(path, 10, true);
  EXPECT_FALSE(notReady.healthy);
  EXPECT_NE(notReady.reason.find("connecting"), std::string::npos) << notReady.reason;
  ASSERT_FALSE(handshake(1, 1000).empty());
  auto ready = waitFor(true);
  EXPECT_TRUE(ready.healthy) << ready.reason;
  stopAndJoin();
  // A loop that stopped rewriting the file fails liveness once the file is old enough.
  const double later =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() +
      60;
  auto stalled = checkHealthFile(path, 10, false, later);
  EXPECT_FALSE(stalled.healthy);
  EXPECT_NE(stalled.reason.find("stalled"), std::string::npos) << stalled.reason;
  std::remove(path.c_str());
}

TEST(HealthFile, MissingOrGarbledFilesAreUnhealthy) {
  const std::string path = ::testing::TempDir() + "tg-health-garbled-" + std::to_string(getpid());
  std::remove(path.c_str());
  auto missing = checkHealthFile(path, 10, false);
  EXPECT_FALSE(missing.healthy);
  EXPECT_NE(missing.reason.find("No such file"), std::string::npos) << missing.reason;
  { std::ofstream(path) << "bogus\n"; }
  EXPECT_FALSE(checkHealthFile(path, 10, false).healthy);
  writeHealthFile(path, HealthState::kDraining);
  EXPECT_TRUE(checkHealthFile(path, 10, false).healthy);
  EXPECT_FALSE(checkHealthFile(path, 10, true).healthy);  // draining is alive, not ready
  writeHealthFile(path, HealthState::kReady);
  EXPECT_TRUE(checkHealthFile(path, 10, true).healthy);
  std::remove(path.c_str());
}
}  // namespace
}  // namespace tokengate::node
