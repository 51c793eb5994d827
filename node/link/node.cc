#include "node/link/node.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <random>

#include "common/names.h"
#include "common/wire.h"
#include "node/link/zmq_link_socket.h"
#include "node/ops/builtin_ops.h"

namespace tokengate::node {

namespace {

uint64_t randomIncarnation() {
  std::random_device rd;
  uint64_t v = 0;
  while (v == 0) v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return v;
}

std::string defaultNodeId() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "node");
  return fmt::format("{}-{}", host, getpid());
}

}  // namespace

namespace {

// The lying node of the verify tests: wraps every operation so that `fraction` of the tokens
// (by a hash of the token id, so a re-run on this node lies the same way) return a wrong value.
Registry lyingRegistry(const Registry& honest, double fraction) {
  Registry r;
  for (const auto& op : honest.operations()) {
    OpFn fn = [inner = op->fn, fraction](OpContext& ctx,
                                         std::span<const Value> args) -> StatusOr<Value> {
      auto v = inner(ctx, args);
      uint64_t z = ctx.tokenId() * 0x9E3779B97F4A7C15ULL;
      z ^= z >> 29;
      z *= 0xBF58476D1CE4E5B9ULL;
      z ^= z >> 32;
      if (!v.ok() || static_cast<double>(z % 1'000'000) >= fraction * 1e6) return v;
      if (v->isInt()) return Value(v->asInt() + 1);
      if (v->isDouble()) return Value(v->asDouble() + 1.0);
      if (v->isDec()) return Value(fromBigFloat(toBigFloat(v->asDec()) + 1));
      return v;
    };
    (void)r.add(op->name, op->weight, std::move(fn), op->deterministic);
  }
  return r;
}

}  // namespace

Registry defaultRegistry(bool test_ops) {
  Registry r;
  auto st = registerBuiltinOps(r);
  if (!st.ok()) spdlog::error("built-in operations: {}", st.ToString());
  if (test_ops) {
    st = registerTestOps(r);
    if (!st.ok()) spdlog::error("test operations: {}", st.ToString());
  }
  (void)r.addLinkedOperations();
  return r;
}

StatusOr<std::unique_ptr<Node>> Node::create(NodeConfig config, zmq::context_t* context,
                                             const Clock& clock) {
  std::unique_ptr<Node> node(new Node(std::move(config), context, clock));
  if (Status st = validateNodeId(node->node_id_); !st.ok()) return st;
  node->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (node->wake_fd_ < 0) return absl::InternalError("eventfd failed");
  const int fd = node->wake_fd_;
  ExecutorConfig ec;
  ec.cores = node->config_.cores;
  ec.heavy_cores = node->config_.heavy_cores;
  ec.speed_factor = node->config_.speed_factor;
  ec.pin = node->config_.pin;
  ec.inline_below_ns = node->config_.inline_below_ns;
  auto ex = Executor::create(
      std::move(ec),
      [fd] {
        const uint64_t one = 1;
        ssize_t rc = write(fd, &one, sizeof one);
        (void)rc;  // EAGAIN only when the counter is saturated: already awake
      },
      clock);
  if (!ex.ok()) return ex.status();
  node->executor_ = std::move(*ex);
  return node;
}

Node::Node(NodeConfig config, zmq::context_t* context, const Clock& clock)
    : config_(std::move(config)), clock_(clock) {
  registry_ = config_.registry
                  ? config_.registry
                  : std::make_shared<const Registry>(defaultRegistry(config_.enable_test_ops));
  if (config_.enable_test_ops && config_.test_wrong_results > 0) {
    spdlog::warn("TEST MODE: {:.1f}% of this node's results are deliberately wrong",
                 config_.test_wrong_results * 100);
    registry_ =
        std::make_shared<const Registry>(lyingRegistry(*registry_, config_.test_wrong_results));
  }
  if (context == nullptr) {
    own_context_ = std::make_unique<zmq::context_t>(1);
    context_ = own_context_.get();
  } else {
    context_ = context;
  }
  node_id_ = config_.node_id.empty() ? defaultNodeId() : config_.node_id;
  incarnation_ = config_.incarnation != 0 ? config_.incarnation : randomIncarnation();
  routing_id_ = fmt::format("{}/{:016x}", node_id_, incarnation_);
}

Node::~Node() {
  link_.reset();
  executor_.reset();  // joins workers (they may still call the wake callback)
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Node::requestStop() {
  stop_requested_.store(true);
  const uint64_t one = 1;
  ssize_t rc = write(wake_fd_, &one, sizeof one);
  (void)rc;
}

Status Node::run() {
  LinkConfig lc;
  lc.node_id = node_id_;
  lc.incarnation = incarnation_;
  lc.hello_resend_ms = config_.hello_resend_ms;
  lc.default_heartbeat_ms = config_.default_heartbeat_ms;
  lc.missed_heartbeats = config_.missed_heartbeats;
  lc.coordinator_loss_timeout_ms = config_.coordinator_loss_timeout_ms;
  lc.max_frame_bytes = config_.max_frame_bytes;
  lc.results.max_results = config_.flush_results;
  lc.results.busy_window_ns = config_.result_busy_window_ns;
  lc.stop_grace_ms = config_.stop_grace_ms;
  lc.health_file = config_.health_file;
  ZmqLinkOptions zo;
  zo.endpoint = config_.coordinator;
  zo.routing_id = routing_id_;
  zo.configure = config_.configure_socket;
  link_ = std::make_unique<CoordinatorLink>(std::move(lc), *registry_, *executor_,
                                            zmqLinkSocketFactory(*context_, std::move(zo)), clock_);
  CoordinatorLink& link = *link_;
  if (Status st = link.start(); !st.ok()) return st;
  connects_.store(link.connects());
  spdlog::info("node {} connecting to {} ({} cores, heavy lane on {} core(s), speed factor {})",
               routing_id_, config_.coordinator, executor_->cores().size(),
               executor_->layout()[2].cores == executor_->layout()[0].cores
                   ? 0
                   : executor_->layout()[2].cores.size(),
               executor_->speedFactor());

  while (true) {
    if (stop_requested_.load() && !link.stopping()) link.beginStop("stop requested");
    link.tick();
    session_.store(link.session());
    connects_.store(link.connects());
    if (link.finished()) break;
    bool readable = false;
    if (Status st = link.wait(wake_fd_, link.nextWakeAt() - clock_.now(), readable); !st.ok())
      return st;
    uint64_t v;
    ssize_t rc = read(wake_fd_, &v, sizeof v);  // non-blocking; EAGAIN when not woken
    (void)rc;
    if (readable) {
      link.onReadable();
      session_.store(link.session());  // before tick() sends results of this session
    }
  }
  link.close();  // linger delivers the last results and bye
  session_.store(0);
  return absl::OkStatus();
}

namespace {
std::atomic<Node*> g_signal_node{nullptr};
extern "C" void onStopSignal(int) {
  if (Node* n = g_signal_node.load()) n->requestStop();
}
}  // namespace

int runNode(NodeConfig config) {
  const bool signals = config.handle_signals;
  auto node = Node::create(std::move(config));
  if (!node.ok()) {
    spdlog::error("cannot start node: {}", node.status().ToString());
    return 2;
  }
  if (signals) {
    g_signal_node.store(node->get());
    struct sigaction sa {};
    sa.sa_handler = onStopSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
  }
  Status st = (*node)->run();
  if (signals) g_signal_node.store(nullptr);
  if (!st.ok()) {
    spdlog::error("node stopped: {}", st.ToString());
    return 1;
  }
  if (!(*node)->executor().idle()) {
    // An operation ignored its cancel flag past the grace period; joining its
    // worker would hang the exit.
    spdlog::warn("exiting with tokens still running");
    std::fflush(nullptr);
    std::_Exit(0);
  }
  return 0;
}

}  // namespace tokengate::node
