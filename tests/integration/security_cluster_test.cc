// Trust on the wire with real processes (docs/security.md): a coordinator and nodes started by
// LocalCluster with throw-away CURVE keys, plus intruder processes started here.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "client/client.h"
#include "client/local_cluster.h"
#include "common/security/curve.h"
#include "common/wire.h"
#include "tests/support/cluster_fixture.h"

extern char** environ;

namespace tokengate {
namespace {

using client::Client;
using client::LocalCluster;
using client::LocalClusterOptions;
using security::Role;

using testing::startCluster;

LocalClusterOptions baseOptions(uint32_t nodes) {
  LocalClusterOptions o = testing::clusterOptions(nodes);
  o.pin = false;
  return o;
}

// A node process started outside LocalCluster, its output in a log file; killed when dropped.
class Intruder {
 public:
  Intruder(const std::string& log, std::vector<std::string> args) : log_(log) {
    std::vector<std::string> all{std::string(TG_BIN_DIR) + "/tokengate-node", "--log-level", "info",
                                 "--no-pin"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Intruder() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // Waits (bounded) until the log holds `text`.
  bool waitForLog(const std::string& text, int seconds = 30) const {
    for (int i = 0; i < seconds * 10; ++i) {
      if (log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  bool running() const { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  std::string log_;
  pid_t pid_ = -1;
};

std::string tempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "-" + std::to_string(getpid()) + ".log"))
      .string();
}

// A fresh key pair in `dir`; listed as a node key when `allow_as_node`.
security::KeyPair newKey(const LocalCluster& cluster, const std::string& name, bool allow_as_node) {
  auto kp = security::generateKeyPair();
  EXPECT_TRUE(kp.ok());
  EXPECT_TRUE(security::writeKeyPair(cluster.keyDir() + "/extra", name, *kp).ok());
  if (allow_as_node) {
    EXPECT_TRUE(
        security::writePublicKey(cluster.keyDir() + "/allow/nodes/" + name + ".pub", kp->public_key)
            .ok());
  }
  return *kp;
}

const client::NodeSummary* findNode(const client::ClusterInfo& info, const std::string& id) {
  for (const auto& n : info.nodes)
    if (n.id == id && n.state != "dead") return &n;
  return nullptr;
}

// Two node processes dialling `ep` that must never join: one with a key not in the allow-list
// ("intruder-unlisted"), one speaking plain TCP without CURVE ("intruder-plain").
class NodeIntruders {
 public:
  NodeIntruders(const LocalCluster& cluster, const std::string& ep, const std::string& tag)
      : unlisted_(tempPath(tag + "-unlisted"), unlistedArgs(cluster, ep)),
        plain_(tempPath(tag + "-plain"),
               {"--coordinator", ep, "--id", "intruder-plain", "--insecure"}) {}
  // Both started: the plain one logs its warning at start.
  bool started() const { return plain_.waitForLog("plain TCP"); }
  void expectNeitherWelcomed() const {
    EXPECT_TRUE(unlisted_.running());
    EXPECT_EQ(unlisted_.log().find("welcomed"), std::string::npos);
    EXPECT_EQ(plain_.log().find("welcomed"), std::string::npos);
  }

 private:
  static std::vector<std::string> unlistedArgs(const LocalCluster& cluster, const std::string& ep) {
    newKey(cluster, "unlisted", /*allow_as_node=*/false);
    return {"--coordinator",
            ep,
            "--id",
            "intruder-unlisted",
            "--curve-dir",
            cluster.keyDir(),
            "--curve-secret-key-file",
            cluster.keyDir() + "/extra/unlisted.key"};
  }
  Intruder unlisted_, plain_;
};

TEST(SecurityClusterTest, NodesWithoutAValidKeyGetNoToken) {
  auto cluster = startCluster(baseOptions(1));
  ASSERT_NE(cluster, nullptr);
  ASSERT_FALSE(cluster->keyDir().empty());  // CURVE is the default
  const std::string ep = cluster->endpoint();
  // A node whose key is not in the allow-list, and one speaking plain TCP.
  NodeIntruders intruders(*cluster, ep, "tg");
  ASSERT_TRUE(intruders.started());

  Client c(ep, cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  auto job = makeLeibnizJob(20'000, Precision::kDouble, 1000, 10);
  ASSERT_TRUE(job.ok());
  auto r = c.run(*job, {}, 120 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, client::JobState::kSucceeded);
  EXPECT_EQ(*r->output("pi"), leibnizLocal(20'000, Precision::kDouble, 1000, 10));
  auto info = c.info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->nodes_ready, 1u);
  for (const auto& n : info->nodes) EXPECT_EQ(n.id, "node-1") << "an intruder joined";
  ASSERT_NE(findNode(*info, "node-1"), nullptr);
  EXPECT_EQ(findNode(*info, "node-1")->completed, r->progress.total);
  intruders.expectNeitherWelcomed();
}

// Co-located peers (docs/deployment.md, "Co-located nodes and clients: ipc://"): the
// coordinator listens on TCP and on an ipc:// socket at once, one ROUTER, so CURVE, the key
// allow-lists and the role checks are the same on both. LocalCluster's nodes join over ipc.
TEST(SecurityClusterTest, NodesAndClientsOverIpcUseCurveAndUnauthenticatedPeersAreRefused) {
  LocalClusterOptions o = baseOptions(1);
  o.transport = "ipc";
  auto cluster = startCluster(o);
  ASSERT_NE(cluster, nullptr);
  ASSERT_FALSE(cluster->keyDir().empty());  // CURVE is the default
  ASSERT_EQ(cluster->endpoints().size(), 2u);
  const std::string tcp = cluster->endpoints()[0];
  const std::string ipc = cluster->endpoint();  // what node-1 connected to
  ASSERT_EQ(tcp.rfind("tcp://", 0), 0u) << tcp;
  ASSERT_EQ(ipc.rfind("ipc://", 0), 0u) << ipc;
  EXPECT_EQ(cluster->endpoints()[1], ipc);
  // Node intruders on the ipc socket: a key not in the allow-list, and no CURVE at all.
  NodeIntruders intruders(*cluster, ipc, "tg-ipc");
  ASSERT_TRUE(intruders.started());

  // A client over ipc, with the admin key: node-1 (over ipc) runs its job.
  Client c(ipc, cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  auto job = makeLeibnizJob(10'000, Precision::kDouble, 1000, 10);
  ASSERT_TRUE(job.ok());
  auto r = c.run(*job, {}, 120 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, client::JobState::kSucceeded);
  EXPECT_EQ(*r->output("pi"), leibnizLocal(10'000, Precision::kDouble, 1000, 10));
  // The same keys work on the TCP endpoint of the same coordinator.
  Client over_tcp(tcp, cluster->clientCurve());
  auto r2 = over_tcp.run(*job, {}, 120 * kSeconds);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->state, client::JobState::kSucceeded);

  // Unauthenticated clients on ipc: no CURVE is refused as on TCP; an unlisted key fails its
  // handshake; a viewer key may not submit (roles are checked per frame on every endpoint).
  Client plain_client(ipc);
  auto plain_info = plain_client.info(120 * kSeconds);
  ASSERT_FALSE(plain_info.ok());
  EXPECT_EQ(plain_info.status().code(), absl::StatusCode::kPermissionDenied) << plain_info.status();
  security::ClientCurve stranger = cluster->clientCurve();
  auto stranger_keys = security::generateKeyPair();
  ASSERT_TRUE(stranger_keys.ok());
  stranger.secret_key = stranger_keys->secret_key;
  stranger.public_key.clear();
  Client unknown(ipc, stranger);
  auto unknown_submit = unknown.submit(*job, 30 * kSeconds);
  ASSERT_FALSE(unknown_submit.ok());
  Client viewer(ipc, cluster->clientCurve(Role::kViewer));
  auto viewer_submit = viewer.submit(*job, 30 * kSeconds);
  ASSERT_FALSE(viewer_submit.ok());
  EXPECT_EQ(viewer_submit.status().code(), absl::StatusCode::kPermissionDenied)
      << viewer_submit.status();

  auto info = c.info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->nodes_ready, 1u);
  for (const auto& n : info->nodes) EXPECT_EQ(n.id, "node-1") << "an intruder joined";
  intruders.expectNeitherWelcomed();
  // The socket file lives in the cluster's directory while it runs.
  EXPECT_TRUE(std::filesystem::exists(ipc.substr(6))) << ipc;
}

TEST(SecurityClusterTest, EachClientRoleMaySendOnlyItsFrames) {
  auto cluster = startCluster(baseOptions(1));
  ASSERT_NE(cluster, nullptr);
  const std::string ep = cluster->endpoint();
  auto job = makeLeibnizJob(10'000, Precision::kDouble, 1000, 10);
  ASSERT_TRUE(job.ok());

  Client viewer(ep, cluster->clientCurve(Role::kViewer));
  ASSERT_TRUE(viewer.waitForNodes(1, 30 * kSeconds).ok());  // info (stats) is allowed
  auto refused = viewer.submit(*job, 30 * kSeconds);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();

  Client op(ep, cluster->clientCurve(Role::kOperator));
  auto id = op.submit(*job, 30 * kSeconds);
  ASSERT_TRUE(id.ok()) << id.status();
  auto r = op.wait(*id, {}, 120 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, client::JobState::kSucceeded);

  // The viewer may watch it; it may not cancel it.
  Client viewer2(ep, cluster->clientCurve(Role::kViewer));
  EXPECT_TRUE(viewer2.watch(*id).ok());
  auto cancel = viewer2.cancel(*id);
  EXPECT_EQ(cancel.code(), absl::StatusCode::kPermissionDenied) << cancel;

  // A node key cannot submit.
  security::ClientCurve node_keys = cluster->clientCurve();
  node_keys.secret_key = *security::readKeyFile(cluster->keyDir() + "/node.key");
  node_keys.public_key.clear();
  Client as_node(ep, node_keys);
  auto by_node = as_node.submit(*job, 30 * kSeconds);
  EXPECT_EQ(by_node.status().code(), absl::StatusCode::kPermissionDenied) << by_node.status();

  // A client key cannot say hello as a node: the refusal is a Welcome with accepted = false.
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 10000);
  ASSERT_TRUE(security::applyClientKeys(s, cluster->clientCurve(Role::kAdmin)).ok());
  s.connect(ep);
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  auto h = f.initHello();
  h.setProtocolVersion(kProtocolVersion);
  h.setNodeId("admin-posing-as-node");
  const std::string bytes = encodeFrame(msg);
  s.send(zmq::buffer(bytes), zmq::send_flags::none);
  zmq::message_t reply;
  ASSERT_TRUE(s.recv(reply));
  auto decoded = decodeFrame(reply.data(), reply.size());
  ASSERT_TRUE(decoded.ok());
  ASSERT_TRUE((*decoded)->root().isWelcome());
  EXPECT_FALSE((*decoded)->root().getWelcome().getAccepted());
  EXPECT_EQ(fromWire((*decoded)->root().getWelcome().getError()).code(),
            absl::StatusCode::kPermissionDenied);
  auto info = op.info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(findNode(*info, "admin-posing-as-node"), nullptr);
}

// Admin requests (tgctl jobs/op/node) are checked against the key's role per request, as the
// gateway's command table does: viewers list, operators pause and drain, only admins evict.
TEST(SecurityClusterTest, AdminRequestsAreCheckedPerRequestAgainstTheRole) {
  auto cluster = startCluster(baseOptions(1));
  ASSERT_NE(cluster, nullptr);
  const std::string ep = cluster->endpoint();
  using K = client::AdminCall::Kind;
  Client viewer(ep, cluster->clientCurve(Role::kViewer));
  ASSERT_TRUE(viewer.waitForNodes(1, 30 * kSeconds).ok());
  EXPECT_TRUE(viewer.admin(client::AdminCall(K::kListJobs)).ok());
  EXPECT_TRUE(viewer.admin(client::AdminCall(K::kListNodes)).ok());
  auto paused = viewer.admin(client::AdminCall(K::kPauseOp, "echo"));
  ASSERT_FALSE(paused.ok());
  EXPECT_EQ(paused.status().code(), absl::StatusCode::kPermissionDenied) << paused.status();

  Client op(ep, cluster->clientCurve(Role::kOperator));
  EXPECT_TRUE(op.admin(client::AdminCall(K::kPauseOp, "echo")).ok());
  EXPECT_TRUE(op.admin(client::AdminCall(K::kResumeOp, "echo")).ok());
  auto evicted = op.admin(client::AdminCall(K::kEvictNode, "node-1"));
  ASSERT_FALSE(evicted.ok());
  EXPECT_EQ(evicted.status().code(), absl::StatusCode::kPermissionDenied) << evicted.status();
  // The refusal failed that request only: the operator's connection still works.
  EXPECT_TRUE(op.admin(client::AdminCall(K::kListOps)).ok());
  auto info = op.info();
  ASSERT_TRUE(info.ok());
  EXPECT_NE(findNode(*info, "node-1"), nullptr);
}

// A client without keys (or with keys, against an --insecure coordinator) is told at once that
// the two disagree on CURVE; it does not wait for its timeout.
TEST(SecurityClusterTest, APlainClientIsToldTheCoordinatorRequiresCurve) {
  auto cluster = startCluster(baseOptions(1));
  ASSERT_NE(cluster, nullptr);
  Client plain(cluster->endpoint());
  auto info = plain.info(120 * kSeconds);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kPermissionDenied) << info.status();
  EXPECT_NE(std::string(info.status().message()).find("CURVE"), std::string::npos) << info.status();
}

// A coordinator killed or restarting cuts CURVE handshakes in flight, which the client's socket
// monitor reports "without detail", as it does for a wrong server key. A client that has
// already talked to this coordinator must take them for restarts: before the fix three in a row
// made every later call fail at once with "refused the CURVE handshake", for good (the crash
// harness under load: 1 of 30,178 submissions acknowledged). Here the coordinator's port is held
// by a listener that accepts and closes every connection while the coordinator is down.
TEST(SecurityClusterTest, HandshakesCutWhileTheCoordinatorRestartsDoNotBreakAClient) {
  auto cluster = startCluster(baseOptions(0));
  ASSERT_NE(cluster, nullptr);
  Client c(cluster->endpoint(), cluster->clientCurve());
  ASSERT_TRUE(c.ping(30 * kSeconds).ok());
  const std::string& ep = cluster->endpoint();
  const int port = std::stoi(ep.substr(ep.rfind(':') + 1));
  int cut = 0;
  Status restarted = cluster->restartCoordinator(SIGKILL, [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << errno;
    ASSERT_EQ(::listen(fd, 16), 0);
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    // The client reconnects every 100 ms or so: more than three cuts in a row.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    std::thread pinger([&] { (void)c.ping(kSeconds); });  // keeps the client's monitor read
    while (std::chrono::steady_clock::now() < until) {
      if (const int conn = ::accept(fd, nullptr, nullptr); conn >= 0) {
        ::close(conn);
        ++cut;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    pinger.join();
    ::close(fd);
  });
  ASSERT_TRUE(restarted.ok()) << restarted;
  EXPECT_GE(cut, 4) << "the client did not try to reconnect often enough to prove anything";
  Status st = c.ping(30 * kSeconds);
  EXPECT_TRUE(st.ok()) << st << " (after " << cut << " cut handshakes)";
  // A client that never got through still fails fast on a wrong server key.
  security::ClientCurve wrong = cluster->clientCurve();
  wrong.server_key = security::generateKeyPair()->public_key;
  Client lost(cluster->endpoint(), wrong);
  Status refused = lost.ping(60 * kSeconds);
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
}

// Reads node-1's session and the coordinator's count of ended node registrations.
std::pair<uint64_t, uint64_t> sessionAndLost(Client& c) {
  auto info = c.info();
  EXPECT_TRUE(info.ok());
  if (!info.ok()) return {0, 0};
  const auto* n = findNode(*info, "node-1");
  EXPECT_NE(n, nullptr);
  return {n ? n->session : 0, info->nodes_lost};
}

TEST(SecurityClusterTest, ASecondNodeWithTheSameIdAndAnotherKeyIsRefusedAndTheFirstNeverFlaps) {
  auto cluster = startCluster(baseOptions(1));
  ASSERT_NE(cluster, nullptr);
  const std::string ep = cluster->endpoint();
  Client c(ep, cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  const auto before = sessionAndLost(c);
  newKey(*cluster, "twin", /*allow_as_node=*/true);  // a valid node key, another identity
  Intruder twin(tempPath("tg-twin"),
                {"--coordinator", ep, "--id", "node-1", "--curve-dir", cluster->keyDir(),
                 "--curve-secret-key-file", cluster->keyDir() + "/extra/twin.key"});
  // Refused with a clear error, logged on its side...
  ASSERT_TRUE(twin.waitForLog("PERMISSION_DENIED")) << twin.log();
  EXPECT_NE(twin.log().find("in use by a live node with another key"), std::string::npos);
  // ... while it keeps saying hello (every second), node-1 keeps its session and works.
  auto job = makeLeibnizJob(20'000, Precision::kDouble, 1000, 10);
  ASSERT_TRUE(job.ok());
  auto r = c.run(*job, {}, 120 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, client::JobState::kSucceeded);
  ASSERT_TRUE(twin.waitForLog("PERMISSION_DENIED: node id 'node-1'"));
  const std::string log_before = twin.log();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // >= 2 more hellos
  EXPECT_GT(twin.log().size(), log_before.size()) << "the twin stopped trying";
  EXPECT_EQ(sessionAndLost(c), before);
  EXPECT_EQ(twin.log().find("welcomed"), std::string::npos);
}

TEST(SecurityClusterTest, ARestartWithTheSameKeyReplacesTheOldSessionOnceAndNoMore) {
  auto cluster = startCluster(baseOptions(1));
  ASSERT_NE(cluster, nullptr);
  const std::string ep = cluster->endpoint();
  Client c(ep, cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  const auto before = sessionAndLost(c);
  // Same id, same key, a new process, while the old one still runs (as after a restart whose
  // old process has not died yet, or two processes started with one --id).
  Intruder second(tempPath("tg-second"),
                  {"--coordinator", ep, "--id", "node-1", "--curve-dir", cluster->keyDir()});
  ASSERT_TRUE(second.waitForLog("welcomed")) << second.log();
  // The old process learns it lost its session and is refused from then on.
  ASSERT_TRUE(cluster->nodePid(0) > 0);
  for (int i = 0; i < 100; ++i) {
    const auto now = sessionAndLost(c);
    if (now.first != before.first) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto replaced = sessionAndLost(c);
  EXPECT_NE(replaced.first, before.first);
  EXPECT_EQ(replaced.second, before.second + 1);                 // exactly one replacement
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // old one retries: refused
  EXPECT_EQ(sessionAndLost(c), replaced) << "node-1 flapped between the two processes";
  auto job = makeLeibnizJob(10'000, Precision::kDouble, 1000, 10);
  ASSERT_TRUE(job.ok());
  auto r = c.run(*job, {}, 120 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, client::JobState::kSucceeded);
}

// A hand-written node with a valid node key that says hello for the Leibniz ops, heartbeats on
// time and never answers a token: it keeps its registration, so only the run timeout can take
// its tokens away. One thread owns the socket.
class SilentNode {
 public:
  SilentNode(const std::string& endpoint, security::ClientCurve keys, std::string id)
      : thread_([this, endpoint, keys = std::move(keys), id = std::move(id)] {
          run(endpoint, keys, id);
        }) {}
  ~SilentNode() {
    stop_ = true;
    thread_.join();
  }
  bool welcomed() const { return welcomed_; }
  uint64_t tokensHeld() const { return tokens_; }
  uint64_t cancelsSeen() const { return cancels_; }

 private:
  void run(const std::string& endpoint, const security::ClientCurve& keys, const std::string& id) {
    zmq::context_t ctx;
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 50);
    if (!security::applyClientKeys(s, keys).ok()) return;
    s.connect(endpoint);
    auto hello = [&] {
      capnp::MallocMessageBuilder msg;
      auto f = msg.initRoot<wire::Frame>();
      f.setVersion(kProtocolVersion);
      auto h = f.initHello();
      h.setProtocolVersion(kProtocolVersion);
      h.setNodeId(id);
      h.setIncarnation(42);
      const char* ops[] = {"leibniz.term", "leibniz.chunk", "leibniz.partial", "leibniz.final"};
      auto list = h.initOperations(4);
      for (unsigned i = 0; i < 4; ++i) list[i].setName(ops[i]);
      auto lanes = h.initLanes(3);
      for (unsigned w = 0; w < 3; ++w) {
        lanes[w].setWeight(static_cast<wire::Weight>(w));
        lanes[w].setWorkers(1);
      }
      const std::string bytes = encodeFrame(msg);
      s.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    };
    uint64_t session = 0;
    auto next_beat = std::chrono::steady_clock::now();
    auto next_hello = next_beat;
    while (!stop_) {
      // Until welcomed, say hello once a second (a connection refused before the coordinator
      // re-read its allow-list loses what was queued on it).
      if (session == 0 && std::chrono::steady_clock::now() >= next_hello) {
        hello();
        next_hello += std::chrono::seconds(1);
      }
      zmq::message_t m;
      if (s.recv(m)) {
        auto decoded = decodeFrame(m.data(), m.size());
        if (!decoded.ok()) continue;
        auto root = (*decoded)->root();
        if (root.isWelcome() && root.getWelcome().getAccepted()) {
          session = root.getWelcome().getSession();
          welcomed_ = true;
        } else if (root.isTokenBatch()) {
          tokens_ += root.getTokenBatch().getTokens().size();  // held, never answered
        } else if (root.isControl() && root.getControl().isCancelTokens()) {
          cancels_ += root.getControl().getCancelTokens().size();
        }
      }
      if (session != 0 && std::chrono::steady_clock::now() >= next_beat) {
        capnp::MallocMessageBuilder msg;
        auto f = msg.initRoot<wire::Frame>();
        f.setVersion(kProtocolVersion);
        f.initHeartbeat().setSession(session);
        const std::string bytes = encodeFrame(msg);
        s.send(zmq::buffer(bytes), zmq::send_flags::none);
        next_beat += std::chrono::milliseconds(100);
      }
    }
  }

  std::atomic<bool> stop_{false}, welcomed_{false};
  std::atomic<uint64_t> tokens_{0}, cancels_{0};
  std::thread thread_;
};

TEST(SecurityClusterTest, ASilentNodeLosesItsTokensByTheRunTimeoutAndIsQuarantined) {
  auto o = baseOptions(1);
  o.coordinator_args.insert(o.coordinator_args.end(),
                            {"--run-timeout-ms", "3000", "--run-timeout-quarantine", "3"});
  auto cluster = startCluster(o);
  ASSERT_NE(cluster, nullptr);
  const std::string ep = cluster->endpoint();
  Client c(ep, cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  auto kp = newKey(*cluster, "silent", /*allow_as_node=*/true);
  security::ClientCurve keys = cluster->clientCurve();
  keys.secret_key = kp.secret_key;
  keys.public_key = kp.public_key;
  // The coordinator re-reads allow-lists at most once a second; a refused CURVE handshake is not
  // retried by ZeroMQ, so connect once the new key is surely seen.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  SilentNode silent(ep, keys, "silent-1");
  ASSERT_TRUE(c.waitForNodes(2, 30 * kSeconds).ok());
  ASSERT_TRUE(silent.welcomed());

  auto job = makeLeibnizJob(20'000, Precision::kDouble, 1000, 10);
  ASSERT_TRUE(job.ok());
  auto r = c.run(*job, {}, 120 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, client::JobState::kSucceeded);
  EXPECT_EQ(*r->output("pi"), leibnizLocal(20'000, Precision::kDouble, 1000, 10));
  EXPECT_GT(silent.tokensHeld(), 0u) << "the silent node got no work: the test proves nothing";
  EXPECT_GT(silent.cancelsSeen(), 0u);  // it was told to stop what it held
  auto info = c.info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->nodes_quarantined, 1u);
  EXPECT_GE(info->run_timeouts, 3u);
  const auto* s = findNode(*info, "silent-1");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->state, "quarantined");
  EXPECT_EQ(s->completed, 0u);
  EXPECT_EQ(s->in_flight, 0u);
  ASSERT_NE(findNode(*info, "node-1"), nullptr);
  EXPECT_EQ(findNode(*info, "node-1")->completed, r->progress.total);
}

TEST(SecurityClusterTest, ALyingNodeWithAValidKeyIsCaughtByVerifyAndTheResultIsExact) {
  auto cluster = startCluster(baseOptions(2));
  ASSERT_NE(cluster, nullptr);
  const std::string ep = cluster->endpoint();
  Client c(ep, cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(2, 30 * kSeconds).ok());
  // The rogue holds the cluster's own node key (valid, allowed) and lies on 30% of its tokens.
  Intruder rogue(tempPath("tg-rogue"),
                 {"--coordinator", ep, "--id", "rogue-1", "--curve-dir", cluster->keyDir(),
                  "--enable-test-ops", "--test-wrong-results", "0.3"});
  ASSERT_TRUE(c.waitForNodes(3, 30 * kSeconds).ok()) << rogue.log();
  ASSERT_TRUE(rogue.waitForLog("deliberately wrong")) << rogue.log();

  auto job = makeLeibnizJob(20'000, Precision::kDouble, 1000, 10);
  ASSERT_TRUE(job.ok());
  job->verify_pct = 3;
  auto r = c.run(*job, {}, 120 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, client::JobState::kSucceeded);
  EXPECT_EQ(*r->output("pi"), leibnizLocal(20'000, Precision::kDouble, 1000, 10));  // exact
  auto info = c.info();
  ASSERT_TRUE(info.ok());
  const auto* s = findNode(*info, "rogue-1");
  ASSERT_NE(s, nullptr);
  EXPECT_GT(s->completed, 0u) << "the rogue got no work: the test proves nothing";
  EXPECT_EQ(s->state, "quarantined");
  EXPECT_EQ(s->in_flight, 0u);
  EXPECT_EQ(info->nodes_quarantined, 1u);
  EXPECT_GE(info->verify_mismatched, 1u);
  EXPECT_GT(info->verify_matched, 0u);
  EXPECT_GT(info->tokens_reopened, 0u);
  EXPECT_EQ(findNode(*info, "node-1")->state, "ready");
  EXPECT_EQ(findNode(*info, "node-2")->state, "ready");
  // A second job runs without it and is exact too.
  const uint64_t rogue_done = s->completed;
  auto r2 = c.run(*job, {}, 120 * kSeconds);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(*r2->output("pi"), leibnizLocal(20'000, Precision::kDouble, 1000, 10));
  auto info2 = c.info();
  ASSERT_TRUE(info2.ok());
  EXPECT_EQ(findNode(*info2, "rogue-1")->completed, rogue_done);
}

}  // namespace
}  // namespace tokengate
