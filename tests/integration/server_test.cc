// CoordinatorServer over real loopback TCP, in process: its transport reports a closed
// connection as a lost node (socket monitor + ZMQ_SRCFD mapping), reads what a peer sent
// before closing first, and does not blame a new connection that reuses a closed one's fd.
#include "coordinator/core/server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "common/wire.h"

namespace tokengate::coordinator {
namespace {

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerConfig cfg;
    cfg.listen = "tcp://127.0.0.1:0";
    cfg.core.heartbeat_ms = 100;
    cfg.core.node_timeout_ns = 3600 * kSeconds;  // only a closed connection can lose a node
    server_ = std::make_unique<CoordinatorServer>(cfg);
    ASSERT_TRUE(server_->bind().ok());
    loop_ = std::thread([this] { server_->run(); });
  }
  void TearDown() override {
    server_->stop();
    loop_.join();
  }

  control::ClusterStats stats() {
    std::promise<control::ClusterStats> p;
    server_->stats([&](StatusOr<control::ClusterStats> s) { p.set_value(*s); });
    return p.get_future().get();
  }
  // Polls stats() until `pred` holds (5 s at most); returns the last stats.
  template <typename Pred>
  control::ClusterStats waitFor(Pred pred) {
    auto s = stats();
    for (int i = 0; i < 500 && !pred(s); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      s = stats();
    }
    return s;
  }

  // A node's socket that has said hello and been welcomed.
  std::unique_ptr<zmq::socket_t> joinNode(const std::string& id, uint64_t* session) {
    auto s = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    s->set(zmq::sockopt::routing_id, id + "/1");
    s->set(zmq::sockopt::linger, 1000);
    s->set(zmq::sockopt::rcvtimeo, 5000);
    s->connect(server_->endpoint());
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto h = f.initHello();
    h.setProtocolVersion(kProtocolVersion);
    h.setNodeId(id);
    h.setIncarnation(1);
    h.initOperations(1)[0].setName("echo");
    send(*s, msg);
    zmq::message_t reply;
    EXPECT_TRUE(s->recv(reply));
    auto decoded = decodeFrame(reply.data(), reply.size());
    EXPECT_TRUE(decoded.ok());
    if (decoded.ok()) {
      EXPECT_TRUE((*decoded)->root().isWelcome());
      EXPECT_TRUE((*decoded)->root().getWelcome().getAccepted());
      *session = (*decoded)->root().getWelcome().getSession();
    }
    return s;
  }
  static void send(zmq::socket_t& s, capnp::MallocMessageBuilder& msg) {
    const std::string bytes = encodeFrame(msg);
    s.send(zmq::buffer(bytes), zmq::send_flags::none);
  }

  zmq::context_t ctx_;
  std::unique_ptr<CoordinatorServer> server_;
  std::thread loop_;
};

TEST_F(ServerTest, ClosedConnectionLosesItsNodeAtOnce) {
  uint64_t session = 0;
  auto a = joinNode("a", &session);
  auto b = joinNode("b", &session);
  ASSERT_EQ(waitFor([](auto& s) { return s.nodes_ready == 2; }).nodes_ready, 2u);
  const auto t0 = std::chrono::steady_clock::now();
  a->close();
  auto s = waitFor([](auto& s) { return s.nodes_lost >= 1; });
  EXPECT_EQ(s.nodes_lost, 1u);
  EXPECT_EQ(s.nodes_disconnected, 1u);
  EXPECT_EQ(s.nodes_ready, 1u);
  // The node timeout is an hour: only the transport can have told.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST_F(ServerTest, ANewConnectionOnAReusedFdIsNotBlamedForTheOldOne) {
  uint64_t session = 0;
  for (int round = 0; round < 5; ++round) {
    const auto before = stats();
    auto old_node = joinNode("old" + std::to_string(round), &session);
    old_node->close();
    // Connected at once: the accept very likely reuses the closed connection's fd.
    auto fresh = joinNode("new" + std::to_string(round), &session);
    auto s = waitFor([&](auto& s) { return s.nodes_lost > before.nodes_lost; });
    EXPECT_EQ(s.nodes_disconnected, before.nodes_disconnected + 1) << "round " << round;
    // Some time for a wrongly mapped disconnect to land on the new node.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s = stats();
    EXPECT_EQ(s.nodes_lost, before.nodes_lost + 1) << "round " << round;
    EXPECT_EQ(s.nodes_ready, 1u) << "round " << round;
    fresh->close();
    s = waitFor([&](auto& s) { return s.nodes_ready == 0; });
    EXPECT_EQ(s.nodes_disconnected, before.nodes_disconnected + 2) << "round " << round;
  }
}

// A node whose connection dropped comes back on a new one under the same routing id: the old
// connection's close ends the old registration only, never the one made on the new connection.
TEST_F(ServerTest, ReconnectUnderTheSameRoutingIdKeepsTheNewRegistration) {
  uint64_t session = 0;
  for (int round = 0; round < 5; ++round) {
    const auto before = stats();
    auto first = joinNode("same", &session);
    first->close();
    auto again = joinNode("same", &session);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto s = stats();
    EXPECT_EQ(s.nodes_ready, 1u) << "round " << round << ": the new registration was lost";
    EXPECT_EQ(s.nodes_lost, before.nodes_lost + 1) << "round " << round;
    again->close();
    s = waitFor([](auto& s) { return s.nodes_ready == 0; });
    EXPECT_EQ(s.nodes_ready, 0u);
  }
}

TEST_F(ServerTest, ByeSentJustBeforeClosingIsReadBeforeTheDisconnect) {
  uint64_t session = 0;
  for (int round = 0; round < 5; ++round) {
    auto n = joinNode("leaver" + std::to_string(round), &session);
    // Queued ahead of the bye: more than the loop handles in one burst, so the bye is still
    // unread when the disconnect event is seen.
    for (int i = 0; i < 1000; ++i) {
      capnp::MallocMessageBuilder ping;
      auto p = ping.initRoot<wire::Frame>();
      p.setVersion(kProtocolVersion);
      p.setPing(static_cast<uint64_t>(i));
      send(*n, ping);
    }
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto bye = f.initBye();
    bye.setSession(session);
    bye.setReason("shutdown");
    send(*n, msg);
    n->close();  // linger: the bye goes out, then the connection closes
    auto s = waitFor([&](auto& s) { return s.nodes_lost >= static_cast<uint64_t>(round + 1); });
    EXPECT_EQ(s.nodes_lost, static_cast<uint64_t>(round + 1));
    EXPECT_EQ(s.nodes_disconnected, 0u) << "round " << round << ": a clean exit counted as a death";
  }
}

}  // namespace
}  // namespace tokengate::coordinator
