#include "coordinator/core/server.h"

#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

namespace tokengate::coordinator {

class CoordinatorServer::RouterOutbox final : public Outbox {
 public:
  explicit RouterOutbox(zmq::socket_t& socket) : socket_(socket) {}
  void send(const std::string& peer, std::string frame) override {
    try {
      socket_.send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      zmq::message_t body(frame.data(), frame.size());
      socket_.send(body, zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      spdlog::warn("send to peer failed: {}", e.what());
    }
  }

 private:
  zmq::socket_t& socket_;
};

CoordinatorServer::CoordinatorServer(ServerConfig config, Clock& clock)
    : config_(std::move(config)),
      clock_(clock),
      registry_(std::make_shared<prometheus::Registry>()),
      context_(1),
      router_(context_, zmq::socket_type::router) {
  router_.set(zmq::sockopt::linger, 0);
  router_.set(zmq::sockopt::sndhwm, 0);  // credit flow control bounds what we queue
  router_.set(zmq::sockopt::rcvhwm, 10000);
  router_.set(zmq::sockopt::router_handover, 1);
  // Frames above twice the limit are cut off by libzmq; between the limit and
  // that, the sender gets a clear ResourceExhausted reject.
  router_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(config_.max_frame_bytes * 2));
  outbox_ = std::make_unique<RouterOutbox>(router_);
  config_.core.max_frame_bytes = config_.max_frame_bytes;
  core_ = std::make_unique<CoordinatorCore>(config_.core, clock_, *outbox_, registry_);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

CoordinatorServer::~CoordinatorServer() {
  if (wake_fd_ >= 0) close(wake_fd_);
}

Status CoordinatorServer::bind() {
  try {
    router_.bind(config_.listen);
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(fmt::format("cannot bind {}: {}", config_.listen, e.what()));
  }
  return absl::OkStatus();
}

void CoordinatorServer::post(std::function<void(CoordinatorCore&)> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
}

void CoordinatorServer::stop() {
  stop_requested_ = true;
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
}

void CoordinatorServer::runPosted() {
  uint64_t n;
  (void)!read(wake_fd_, &n, sizeof n);
  std::vector<std::function<void(CoordinatorCore&)>> tasks;
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    tasks.swap(posted_);
  }
  for (auto& t : tasks) t(*core_);
}

void CoordinatorServer::handleMessage() {
  zmq::message_t peer;
  if (!router_.recv(peer, zmq::recv_flags::dontwait)) return;
  std::string peer_id(static_cast<const char*>(peer.data()), peer.size());
  // A ROUTER message is [routing id][part...]; a TokenGate frame is exactly one part.
  std::vector<zmq::message_t> parts;
  bool more = peer.more();
  while (more) {
    zmq::message_t part;
    if (!router_.recv(part, zmq::recv_flags::none)) break;
    more = part.more();
    parts.push_back(std::move(part));
  }
  if (parts.size() != 1) {
    core_->onMalformed(
        peer_id, absl::InvalidArgumentError(fmt::format(
                     "a frame must be exactly one ZeroMQ message part, got {}", parts.size())));
    return;
  }
  auto frame = decodeFrame(parts[0].data(), parts[0].size(), config_.max_frame_bytes);
  if (!frame.ok()) {
    core_->onMalformed(peer_id, frame.status());
    return;
  }
  core_->onFrame(peer_id, (*frame)->root());
}

void CoordinatorServer::run() {
  running_ = true;
  spdlog::info("coordinator listening on {}", endpoint_);
  runPosted();  // work posted before run() (journal recovery) goes before any message
  Nanos next_tick = clock_.now();
  zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  while (!stop_requested_) {
    const Nanos now = clock_.now();
    long timeout_ms = 0;
    if (next_tick > now) timeout_ms = static_cast<long>((next_tick - now + kMillis - 1) / kMillis);
    zmq::poll(items, 2, std::chrono::milliseconds(timeout_ms));
    if (items[0].revents & ZMQ_POLLIN) {
      // Bounded burst so timers and posted work are not starved.
      for (int i = 0; i < 256; ++i) {
        if (!(router_.get(zmq::sockopt::events) & ZMQ_POLLIN)) break;
        handleMessage();
      }
    }
    if (items[1].revents & ZMQ_POLLIN) runPosted();
    if (clock_.now() >= next_tick) next_tick = core_->tick();
  }
  core_->flushAll();
  running_ = false;
}

// ---- ClusterControl: post to the loop, answer from it.

void CoordinatorServer::submitJob(JobSpec job, control::Callback<uint64_t> done) {
  post([job = std::move(job), done = std::move(done)](CoordinatorCore& c) mutable {
    done(c.submitJob(std::move(job)));
  });
}
void CoordinatorServer::jobStatus(uint64_t id, control::Callback<control::JobStatus> done) {
  post([=](CoordinatorCore& c) { done(c.jobStatus(id, true)); });
}
void CoordinatorServer::listJobs(control::Callback<std::vector<control::JobStatus>> done) {
  post([=](CoordinatorCore& c) { done(c.listJobs()); });
}
void CoordinatorServer::cancelJob(uint64_t id, control::Callback<uint64_t> done) {
  post([=](CoordinatorCore& c) { done(c.cancelJob(id)); });
}
void CoordinatorServer::cancelToken(uint64_t id, control::Callback<bool> done) {
  post([=](CoordinatorCore& c) { done(c.cancelToken(id)); });
}
void CoordinatorServer::pauseOp(std::string op, control::Callback<control::OpStatus> done) {
  post([=](CoordinatorCore& c) { done(c.pauseOp(op, true)); });
}
void CoordinatorServer::resumeOp(std::string op, control::Callback<control::OpStatus> done) {
  post([=](CoordinatorCore& c) { done(c.pauseOp(op, false)); });
}
void CoordinatorServer::drainOp(std::string op, control::Callback<uint64_t> done) {
  post([=](CoordinatorCore& c) { done(c.drainOp(op)); });
}
void CoordinatorServer::cancelRunningOp(std::string op, control::Callback<uint64_t> done) {
  post([=](CoordinatorCore& c) { done(c.cancelRunningOp(op)); });
}
void CoordinatorServer::setOpLimits(std::string op, control::OpLimits limits,
                                    control::Callback<control::OpStatus> done) {
  post([=](CoordinatorCore& c) { done(c.setOpLimits(op, limits)); });
}
void CoordinatorServer::listOps(control::Callback<std::vector<control::OpStatus>> done) {
  post([=](CoordinatorCore& c) { done(c.listOps()); });
}
void CoordinatorServer::listNodes(control::Callback<std::vector<control::NodeStatus>> done) {
  post([=](CoordinatorCore& c) { done(c.listNodes()); });
}
void CoordinatorServer::drainNode(std::string id, control::Callback<control::NodeStatus> done) {
  post([=](CoordinatorCore& c) { done(c.drainNode(id, true)); });
}
void CoordinatorServer::undrainNode(std::string id, control::Callback<control::NodeStatus> done) {
  post([=](CoordinatorCore& c) { done(c.drainNode(id, false)); });
}
void CoordinatorServer::evictNode(std::string id, control::Callback<uint64_t> done) {
  post([=](CoordinatorCore& c) { done(c.evictNode(id)); });
}
void CoordinatorServer::stats(control::Callback<control::ClusterStats> done) {
  post([=](CoordinatorCore& c) { done(c.stats()); });
}
void CoordinatorServer::setAdmissionLimit(uint64_t limit,
                                          control::Callback<control::ClusterStats> done) {
  post([=](CoordinatorCore& c) {
    c.setAdmissionLimit(limit);
    done(c.stats());
  });
}
uint64_t CoordinatorServer::subscribe(std::function<void(const control::Event&)> sink) {
  const uint64_t id = next_subscription_++;
  post([id, sink = std::move(sink)](CoordinatorCore& c) mutable {
    c.subscribe(id, std::move(sink));
  });
  return id;
}
void CoordinatorServer::unsubscribe(uint64_t id) {
  post([id](CoordinatorCore& c) { c.unsubscribe(id); });
}

}  // namespace tokengate::coordinator
