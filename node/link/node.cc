#include "node/link/node.h"

#include <capnp/message.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

#include "common/wire.h"
#include "node/link/health.h"
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

uint64_t rssBytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

wire::Weight laneWire(Weight w) { return toWire(w); }

}  // namespace

Registry defaultRegistry() {
  Registry r;
  auto st = registerBuiltinOps(r);
  if (!st.ok()) spdlog::error("built-in operations: {}", st.ToString());
  (void)r.addLinkedOperations();
  return r;
}

// Link-thread state. Only run() (the link thread) touches it.
struct Node::Impl {
  std::unique_ptr<zmq::socket_t> socket;
  State state = State::kHello;
  uint32_t heartbeat_ms = 1000;
  Nanos next_hello = 0;
  Nanos next_heartbeat = 0;
  Nanos last_rx = 0;
  bool stopping = false;
  Nanos stop_deadline = 0;
  bool draining = false;  // coordinator asked us to drain (reported in heartbeats)
  std::vector<TaskResult> results;
  std::vector<ReturnedTask> returned;
  std::vector<TaskResult> pending;
  std::vector<ReturnedTask> pending_returned;
  Nanos first_pending = 0;
  uint64_t dropped_sends = 0;
  size_t max_frame_bytes = kDefaultMaxFrameBytes;  // the coordinator's decode limit
  Nanos next_health = 0;
};

StatusOr<std::unique_ptr<Node>> Node::create(NodeConfig config, zmq::context_t* context,
                                             const Clock& clock) {
  std::unique_ptr<Node> node(new Node(std::move(config), context, clock));
  node->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (node->wake_fd_ < 0) return absl::InternalError("eventfd failed");
  const int fd = node->wake_fd_;
  ExecutorConfig ec;
  ec.cores = node->config_.cores;
  ec.heavy_cores = node->config_.heavy_cores;
  ec.speed_factor = node->config_.speed_factor;
  ec.pin = node->config_.pin;
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
    : config_(std::move(config)), clock_(clock), impl_(std::make_unique<Impl>()) {
  registry_ =
      config_.registry ? config_.registry : std::make_shared<const Registry>(defaultRegistry());
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
  executor_.reset();  // joins workers (they may still call the wake callback)
  impl_->socket.reset();
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Node::requestStop() {
  stop_requested_.store(true);
  const uint64_t one = 1;
  ssize_t rc = write(wake_fd_, &one, sizeof one);
  (void)rc;
}

namespace {

class Sender {
 public:
  explicit Sender(zmq::socket_t& s, uint64_t& dropped) : s_(s), dropped_(dropped) {}
  void send(capnp::MessageBuilder& msg) {
    std::string bytes = encodeFrame(msg);
    auto rc = s_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    if (!rc) {
      if (dropped_++ % 1000 == 0)
        spdlog::warn("send queue to the coordinator is full; dropped {} frame(s)", dropped_);
    }
  }

 private:
  zmq::socket_t& s_;
  uint64_t& dropped_;
};

wire::Frame::Builder initFrame(capnp::MessageBuilder& msg) {
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  return f;
}

}  // namespace

Status Node::run() {
  Impl& s = *impl_;
  const Registry& registry = *registry_;
  s.max_frame_bytes = config_.max_frame_bytes;

  auto open_socket = [&] {
    s.socket = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::dealer);
    s.socket->set(zmq::sockopt::routing_id, routing_id_);
    s.socket->set(zmq::sockopt::linger, 200);
    s.socket->set(zmq::sockopt::sndhwm, 100'000);
    s.socket->set(zmq::sockopt::rcvhwm, 100'000);
    // CURVE (docs/security.md): this node's key pair and the coordinator's public key.
    if (auto st = security::applyClientKeys(*s.socket, config_.curve); !st.ok()) {
      spdlog::error("node CURVE setup: {}", st.message());
      throw zmq::error_t(EINVAL);
    }
    s.socket->connect(config_.coordinator);
  };
  try {
    open_socket();
  } catch (const zmq::error_t& e) {
    return absl::InvalidArgumentError(
        fmt::format("cannot connect to {}: {}", config_.coordinator, e.what()));
  }
  spdlog::info("node {} connecting to {} ({} cores, heavy lane on {} core(s), speed factor {})",
               routing_id_, config_.coordinator, executor_->cores().size(),
               executor_->layout()[2].cores == executor_->layout()[0].cores
                   ? 0
                   : executor_->layout()[2].cores.size(),
               executor_->speedFactor());

  auto send_hello = [&] {
    capnp::MallocMessageBuilder msg;
    auto h = initFrame(msg).initHello();
    h.setProtocolVersion(kProtocolVersion);
    h.setNodeId(node_id_);
    h.setIncarnation(incarnation_);
    const auto& cores = executor_->cores();
    auto cl = h.initCores(static_cast<unsigned>(cores.size()));
    for (unsigned i = 0; i < cores.size(); ++i) cl.set(i, static_cast<uint32_t>(cores[i]));
    const auto& layout = executor_->layout();
    auto ll = h.initLanes(static_cast<unsigned>(layout.size()));
    for (unsigned i = 0; i < layout.size(); ++i) {
      ll[i].setWeight(laneWire(layout[i].weight));
      auto lc = ll[i].initCores(static_cast<unsigned>(layout[i].cores.size()));
      for (unsigned j = 0; j < layout[i].cores.size(); ++j)
        lc.set(j, static_cast<uint32_t>(layout[i].cores[j]));
      ll[i].setWorkers(layout[i].workers);
    }
    const auto& ops = registry.operations();
    auto ol = h.initOperations(static_cast<unsigned>(ops.size()));
    for (unsigned i = 0; i < ops.size(); ++i) {
      ol[i].setName(ops[i]->name);
      ol[i].setWeight(laneWire(ops[i]->weight));
    }
    h.setPid(static_cast<uint32_t>(getpid()));
    h.setSpeedFactor(executor_->speedFactor());
    Sender(*s.socket, s.dropped_sends).send(msg);
    s.next_hello = clock_.now() + config_.hello_resend_ms * kMillis;
  };

  auto send_heartbeat = [&] {
    capnp::MallocMessageBuilder msg;
    auto hb = initFrame(msg).initHeartbeat();
    hb.setSession(session_.load());
    auto lanes = executor_->laneStats();
    auto ll = hb.initLanes(static_cast<unsigned>(lanes.size()));
    for (unsigned i = 0; i < lanes.size(); ++i) {
      ll[i].setWeight(laneWire(lanes[i].weight));
      ll[i].setQueued(lanes[i].queued);
      ll[i].setRunning(lanes[i].running);
      ll[i].setBusyNs(lanes[i].busy_ns);
      ll[i].setCompleted(lanes[i].completed);
    }
    auto cores = executor_->coreStats();
    auto cl = hb.initCores(static_cast<unsigned>(cores.size()));
    for (unsigned i = 0; i < cores.size(); ++i) {
      cl[i].setCore(cores[i].core);
      cl[i].setTokens(cores[i].tokens);
    }
    hb.setRssBytes(rssBytes());
    hb.setDraining(executor_->draining());
    Sender(*s.socket, s.dropped_sends).send(msg);
    s.next_heartbeat = clock_.now() + s.heartbeat_ms * kMillis;
  };

  auto send_bye = [&](const std::string& reason) {
    capnp::MallocMessageBuilder msg;
    auto b = initFrame(msg).initBye();
    b.setSession(session_.load());
    b.setReason(reason);
    Sender(*s.socket, s.dropped_sends).send(msg);
  };

  // Wire size of one result, conservatively: the TokenResult and Value
  // structs (~16 words) plus the payload rounded up to whole words.
  auto result_bytes = [](const TaskResult& r) -> size_t {
    const size_t payload =
        r.outcome.ok() ? r.outcome->byteSize() : r.outcome.status().message().size();
    return 128 + (payload + 7) / 8 * 8;
  };

  // Sends everything pending: at most flush_results results per frame and
  // frames below the coordinator's limit (Welcome.maxFrameBytes).
  auto flush = [&] {
    const size_t budget = s.max_frame_bytes > 4096 ? s.max_frame_bytes - 2048 : 2048;
    for (auto& r : s.pending) {
      if (result_bytes(r) <= budget) continue;
      const size_t size = result_bytes(r);
      r.outcome = absl::ResourceExhaustedError(
          fmt::format("result of ~{} bytes exceeds the coordinator's frame limit of {} bytes", size,
                      s.max_frame_bytes));
    }
    size_t ri = 0, ti = 0;
    while (ri < s.pending.size() || ti < s.pending_returned.size()) {
      size_t bytes = 256, nr = 0;
      while (ri + nr < s.pending.size() && nr < config_.flush_results) {
        const size_t b = result_bytes(s.pending[ri + nr]);
        if (nr > 0 && bytes + b > budget) break;
        bytes += b;
        ++nr;
      }
      size_t nt = 0;
      while (ti + nt < s.pending_returned.size() && nt < config_.flush_results &&
             bytes + 24 <= budget) {
        bytes += 24;
        ++nt;
      }
      capnp::MallocMessageBuilder msg(
          static_cast<unsigned>(std::min<size_t>(bytes / 8 + 64, 1u << 20)));
      auto rb = initFrame(msg).initResultBatch();
      rb.setSession(session_.load());
      auto rl = rb.initResults(static_cast<unsigned>(nr));
      for (unsigned i = 0; i < nr; ++i) {
        const TaskResult& r = s.pending[ri + i];
        auto b = rl[i];
        b.setId(r.id);
        b.setAttempt(r.attempt);
        if (r.outcome.ok())
          toWire(*r.outcome, b.initValue());
        else
          toWire(r.outcome.status(), b.initError());
        b.setRunNs(r.run_ns);
        b.setQueueNs(r.queue_ns);
        b.setCore(r.core);
        b.setLane(laneWire(r.lane));
      }
      auto tl = rb.initReturned(static_cast<unsigned>(nt));
      for (unsigned i = 0; i < nt; ++i) {
        tl[i].setId(s.pending_returned[ti + i].id);
        tl[i].setAttempt(s.pending_returned[ti + i].attempt);
      }
      Sender(*s.socket, s.dropped_sends).send(msg);
      ri += nr;
      ti += nt;
    }
    s.pending.clear();
    s.pending_returned.clear();
  };

  // The coordinator no longer knows our session: its queued work is void.
  auto lose_session = [&](const char* why) {
    const size_t dropped = executor_->dropQueued();
    spdlog::warn("{}: dropping {} queued token(s) and {} unsent result(s){}", why, dropped,
                 s.pending.size() + s.pending_returned.size(),
                 s.stopping ? "" : "; saying hello again");
    s.pending.clear();
    s.pending_returned.clear();
    session_.store(0);
    s.state = State::kHello;
  };

  auto begin_stop = [&](const char* why) {
    if (s.stopping) return;
    s.stopping = true;
    s.stop_deadline = clock_.now() + config_.stop_grace_ms * kMillis;
    spdlog::info("{}: draining ({} token(s) outstanding)", why, executor_->outstanding());
    executor_->drain();
    // Tell the coordinator now, not at the next heartbeat: it stops sending batches that we
    // would only hand back.
    if (s.state == State::kReady) send_heartbeat();
  };

  auto immediate_error = [&](const wire::TokenTask::Reader& tok, uint64_t session, Status st) {
    TaskResult r;
    r.id = tok.getId();
    r.attempt = tok.getAttempt();
    r.session = session;
    r.outcome = std::move(st);
    const Weight w = fromWire(tok.getWeight());
    r.lane = w == Weight::kUnspecified ? Weight::kLight : w;
    if (s.pending.empty() && s.pending_returned.empty()) s.first_pending = clock_.now();
    s.pending.push_back(std::move(r));
  };

  auto on_token_batch = [&](wire::TokenBatch::Reader b) {
    const uint64_t session = session_.load();
    if (s.state != State::kReady || b.getSession() != session) {
      spdlog::debug("dropping a token batch for session {:x} (current {:x})", b.getSession(),
                    session);
      return;
    }
    auto names = b.getOps();
    std::vector<const Operation*> table(names.size());
    for (unsigned i = 0; i < names.size(); ++i) {
      auto n = names[i];
      table[i] = registry.find(std::string_view(n.begin(), n.size()));
    }
    auto tokens = b.getTokens();
    std::vector<Task> tasks;
    tasks.reserve(tokens.size());
    const Nanos now = clock_.now();
    for (auto tok : tokens) {
      const uint16_t idx = tok.getOp();
      if (idx >= table.size()) {
        immediate_error(tok, session,
                        absl::InvalidArgumentError(fmt::format(
                            "operation index {} out of range ({} ops)", idx, table.size())));
        continue;
      }
      if (table[idx] == nullptr) {
        immediate_error(
            tok, session,
            absl::NotFoundError(fmt::format("unknown operation {}", names[idx].cStr())));
        continue;
      }
      Task& t = tasks.emplace_back();
      t.id = tok.getId();
      t.attempt = tok.getAttempt();
      t.session = session;
      t.op = table[idx];
      t.lane = fromWire(tok.getWeight());
      t.deadline_ns = tok.getDeadlineMs() != 0 ? now + tok.getDeadlineMs() * kMillis : 0;
      auto args = tok.getArgs();
      t.args.reserve(args.size());
      for (auto a : args) t.args.push_back(fromWire(a));
    }
    executor_->submit(std::move(tasks));
  };

  auto on_control = [&](wire::Control::Reader c) {
    switch (c.which()) {
      case wire::Control::CANCEL_TOKENS: {
        auto l = c.getCancelTokens();
        std::vector<uint64_t> ids;
        ids.reserve(l.size());
        for (uint64_t id : l) ids.push_back(id);
        executor_->cancelTokens(ids);
        break;
      }
      case wire::Control::CANCEL_OP: {
        auto name = c.getCancelOp();
        const Operation* op = registry.find(std::string_view(name.begin(), name.size()));
        if (op != nullptr) executor_->cancelOp(op);
        break;
      }
      case wire::Control::DRAIN:
        spdlog::info("coordinator asked to drain");
        executor_->drain();
        break;
      case wire::Control::UNDRAIN:
        spdlog::info("coordinator asked to undrain");
        if (!s.stopping) executor_->undrain();
        break;
      case wire::Control::SHUTDOWN:
        begin_stop("coordinator asked to shut down");
        break;
      default:
        spdlog::warn("unknown control command {}", static_cast<int>(c.which()));
    }
  };

  auto on_frame = [&](const wire::Frame::Reader& f) {
    s.last_rx = clock_.now();
    switch (f.which()) {
      case wire::Frame::WELCOME: {
        auto w = f.getWelcome();
        if (!w.getAccepted()) {
          Status st = fromWire(w.getError());
          // "unknown session" while we think we have one: the coordinator
          // restarted or dropped us; say hello at once (lose_session logs it). While
          // still saying hello (e.g. a version mismatch) the 1 s resend paces the retries.
          if (st.code() == StatusCode::kFailedPrecondition && s.state == State::kReady &&
              s.stopping) {
            // Stopping (e.g. evicted: the coordinator dropped us before our draining
            // heartbeat arrived): nothing to hand back to it, and no new session wanted.
            lose_session("coordinator does not know our session (stopping)");
          } else if (st.code() == StatusCode::kFailedPrecondition && s.state == State::kReady) {
            lose_session("coordinator does not know our session");
            send_hello();
          } else if (st.code() == StatusCode::kFailedPrecondition) {
            // A reply to a heartbeat sent before our new hello: the hello is on its way.
            spdlog::debug("coordinator: {} (hello already sent)", st.ToString());
          } else {
            spdlog::error("coordinator rejected this node: {}", st.ToString());
          }
          return;
        }
        const uint64_t old = session_.load();
        if (s.state == State::kReady && old == w.getSession()) return;  // duplicate welcome
        if (s.state == State::kReady) lose_session("coordinator started a new session");
        session_.store(w.getSession());
        s.heartbeat_ms =
            w.getHeartbeatMs() != 0 ? w.getHeartbeatMs() : config_.default_heartbeat_ms;
        // The coordinator's decode limit, if it states one (older ones do not).
        s.max_frame_bytes = w.getMaxFrameBytes() != 0
                                ? static_cast<size_t>(std::min<uint64_t>(w.getMaxFrameBytes(),
                                                                         config_.max_frame_bytes))
                                : config_.max_frame_bytes;
        s.state = State::kReady;
        spdlog::info("welcomed: session {:x}, heartbeat every {} ms", w.getSession(),
                     s.heartbeat_ms);
        send_heartbeat();
        return;
      }
      case wire::Frame::TOKEN_BATCH:
        on_token_batch(f.getTokenBatch());
        return;
      case wire::Frame::CONTROL:
        on_control(f.getControl());
        return;
      case wire::Frame::PING: {
        capnp::MallocMessageBuilder msg;
        initFrame(msg).setPong(f.getPing());
        Sender(*s.socket, s.dropped_sends).send(msg);
        return;
      }
      case wire::Frame::PONG:
        return;
      case wire::Frame::REJECT: {
        Status st = fromWire(f.getReject().getError());
        spdlog::warn("coordinator rejected a frame: {}", st.ToString());
        return;
      }
      default:
        spdlog::debug("ignoring unexpected frame kind {}", static_cast<int>(f.which()));
    }
  };

  auto receive_all = [&] {
    for (int i = 0; i < 4096; ++i) {
      zmq::message_t m;
      auto rc = s.socket->recv(m, zmq::recv_flags::dontwait);
      if (!rc) return;
      auto decoded = decodeFrame(m.data(), m.size());
      if (!decoded.ok()) {
        spdlog::warn("dropping malformed frame from the coordinator ({} bytes): {}", m.size(),
                     decoded.status().ToString());
        continue;
      }
      on_frame((*decoded)->root());
    }
  };

  auto collect = [&] {
    executor_->takeResults(s.results, s.returned);
    const uint64_t session = session_.load();
    if (s.pending.empty() && !s.results.empty()) s.first_pending = clock_.now();
    if (s.pending.empty() && session != 0) {
      // Common case: take the whole vector, then drop other sessions' results.
      s.pending.swap(s.results);
      std::erase_if(s.pending, [&](const TaskResult& r) { return r.session != session; });
    }
    for (auto& r : s.results) {
      if (r.session != session || session == 0) continue;  // from a lost session
      if (s.pending.empty() && s.pending_returned.empty()) s.first_pending = clock_.now();
      s.pending.push_back(std::move(r));
    }
    for (auto& t : s.returned) {
      if (t.session != session || session == 0) continue;
      if (s.pending.empty() && s.pending_returned.empty()) s.first_pending = clock_.now();
      s.pending_returned.push_back(t);
    }
    s.results.clear();
    s.returned.clear();
  };

  send_hello();
  while (true) {
    Nanos now = clock_.now();
    if (stop_requested_.load() && !s.stopping) begin_stop("stop requested");
    if (s.stopping) {
      if (s.state != State::kReady) {
        spdlog::info("stopping before a session was established");
        break;
      }
      if (executor_->idle() && s.pending.empty() && s.pending_returned.empty()) {
        send_bye("shutdown");
        spdlog::info("drained; bye");
        break;
      }
      if (now >= s.stop_deadline) {
        spdlog::warn("stop grace period over with {} token(s) still running; cancelling them",
                     executor_->outstanding());
        for (const auto& op : registry.operations()) executor_->cancelOp(op.get());
        for (int i = 0; i < 100 && !executor_->idle(); ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        collect();
        flush();
        send_bye("shutdown (grace period over)");
        break;
      }
    }

    Nanos wake_at = now + 100 * kMillis;
    if (s.state == State::kHello) {
      wake_at = std::min(wake_at, s.next_hello);
    } else {
      wake_at = std::min(wake_at, s.next_heartbeat);
      wake_at = std::min(wake_at, s.last_rx + config_.missed_heartbeats * s.heartbeat_ms * kMillis);
    }
    if (!s.pending.empty() || !s.pending_returned.empty())
      wake_at = std::min(wake_at, s.first_pending + config_.flush_after_ns);
    const Nanos wait_ns = std::max<Nanos>(0, wake_at - now);
    const auto wait_ms = std::chrono::milliseconds((wait_ns + kMillis - 1) / kMillis);

    zmq::pollitem_t items[2] = {
        {static_cast<void*>(*s.socket), 0, ZMQ_POLLIN, 0},
        {nullptr, wake_fd_, ZMQ_POLLIN, 0},
    };
    try {
      zmq::poll(items, 2, wait_ms);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) return absl::InternalError(fmt::format("zmq poll: {}", e.what()));
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t v;
      ssize_t rc = read(wake_fd_, &v, sizeof v);
      (void)rc;
    }
    if (items[0].revents & ZMQ_POLLIN) receive_all();

    collect();
    now = clock_.now();
    const bool any_pending = !s.pending.empty() || !s.pending_returned.empty();
    if (any_pending && (s.pending.size() >= config_.flush_results ||
                        now - s.first_pending >= config_.flush_after_ns || executor_->idle()))
      flush();

    if (!config_.health_file.empty() && now >= s.next_health) {
      writeHealthFile(config_.health_file, s.state != State::kReady   ? HealthState::kConnecting
                                           : s.draining || s.stopping ? HealthState::kDraining
                                                                      : HealthState::kReady);
      s.next_health = now + kSeconds;
    }
    if (s.state == State::kHello) {
      if (now >= s.next_hello) send_hello();
    } else {
      if (now - s.last_rx >=
          static_cast<Nanos>(config_.missed_heartbeats) * s.heartbeat_ms * kMillis) {
        lose_session("no word from the coordinator for 5 heartbeat intervals");
        s.socket.reset();
        open_socket();
        send_hello();
      } else if (now >= s.next_heartbeat) {
        send_heartbeat();
      }
    }
  }
  s.socket.reset();  // linger delivers the last results and bye
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
