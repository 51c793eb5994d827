#include "coordinator/core/server.h"

#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/zmq_frame.h"

namespace tokengate::coordinator {

class CoordinatorServer::RouterOutbox final : public Outbox {
 public:
  explicit RouterOutbox(zmq::socket_t& socket) : socket_(socket) {}
  void send(const std::string& peer, std::string frame) override {
    try {
      socket_.send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      zmq::message_t body = zmqMessageOf(std::move(frame));  // big frames: no copy
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
      auth_(std::make_unique<PeerAuth>(config_.curve, *registry_, clock_, config_.max_frame_bytes)),
      router_(context_, zmq::socket_type::router),
      monitor_(context_, zmq::socket_type::pair) {
  router_.set(zmq::sockopt::linger, 0);
  router_.set(zmq::sockopt::sndhwm, 0);  // credit flow control bounds what we queue
  router_.set(zmq::sockopt::rcvhwm, 10000);
  router_.set(zmq::sockopt::router_handover, 1);
  // Frames above twice the limit are cut off by libzmq; between the limit and
  // that, the sender gets a clear ResourceExhausted reject.
  router_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(config_.max_frame_bytes * 2));
  // No ZMTP heartbeats (ZMQ_HEARTBEAT_IVL/TIMEOUT): libzmq 4.3.4 aborts the process with
  // "Assertion failed: !_io_error (stream_engine_base.cpp:331)" when a heartbeat timeout hits
  // a connection whose input is stalled (zeromq/libzmq#4364, #4767); our frozen-node test
  // tripped it. A frozen or cut-off node is found by its missed application heartbeats
  // (--node-timeout-ms); a crashed or killed one by its closed connection, reported below.
  // The monitor reports closed connections (the fd is the event value).
  const std::string monitor_ep =
      fmt::format("inproc://tg-router-monitor-{}", static_cast<const void*>(this));
  if (zmq_socket_monitor(router_.handle(), monitor_ep.c_str(), ZMQ_EVENT_DISCONNECTED) != 0)
    throw zmq::error_t();
  monitor_.set(zmq::sockopt::linger, 0);
  monitor_.connect(monitor_ep);
  outbox_ = std::make_unique<RouterOutbox>(router_);
  config_.core.max_frame_bytes = config_.max_frame_bytes;
  core_ = std::make_unique<CoordinatorCore>(config_.core, clock_, *outbox_, registry_);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

CoordinatorServer::~CoordinatorServer() {
  zmq_socket_monitor(router_.handle(), nullptr, 0);
  if (wake_fd_ >= 0) close(wake_fd_);
}

Status CoordinatorServer::bind() {
  // CURVE: the ZAP handler is bound and the socket made a CURVE server before anyone connects.
  if (auto st = auth_->setUp(context_, router_); !st.ok()) return st;
  std::vector<std::string> all{config_.listen};
  all.insert(all.end(), config_.also_listen.begin(), config_.also_listen.end());
  for (const auto& ep : all) {
    try {
      router_.bind(ep);
      endpoints_.push_back(router_.get(zmq::sockopt::last_endpoint));
    } catch (const zmq::error_t& e) {
      return absl::UnavailableError(fmt::format("cannot bind {}: {}", ep, e.what()));
    }
  }
  endpoint_ = endpoints_.front();
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

bool CoordinatorServer::monitorHasEvents() {
  if (monitor_signaled_) return true;
  // Its ZMQ_FD is readable while the monitor has commands queued; every event we have not
  // read came with one, as collectMonitorEvents() always reads until the queue is empty (the
  // PAIR's pipe then asks its writer to announce the next event). A plain poll() of it costs
  // one syscall; a recv() or ZMQ_EVENTS on the socket would also check the fork pid.
  pollfd p{monitor_fd_, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

void CoordinatorServer::collectMonitorEvents() {
  monitor_signaled_ = false;
  while (true) {
    zmq::message_t event;
    if (!monitor_.recv(event, zmq::recv_flags::dontwait)) return;
    // Frame 1: u16 event id + u32 value (the fd for DISCONNECTED); frame 2: the endpoint.
    uint16_t id = 0;
    uint32_t value = 0;
    const bool ok = event.size() >= 6;
    if (ok) {
      std::memcpy(&id, event.data(), sizeof id);
      std::memcpy(&value, static_cast<const char*>(event.data()) + 2, sizeof value);
    }
    while (event.more()) {
      if (!monitor_.recv(event, zmq::recv_flags::none)) break;
    }
    if (!ok || id != ZMQ_EVENT_DISCONNECTED) continue;
    // Resolved now: the fd is still this peer's (libzmq reports DISCONNECTED before it closes
    // the fd, and every message that arrived before this event was read has been mapped).
    // A peer that closes before its first message is read stays unknown here; the heartbeat
    // timeout covers that rare case.
    const int fd = static_cast<int>(value);
    if (auto it = fd_peer_.find(fd); it != fd_peer_.end()) closed_.emplace_back(it->second, fd);
  }
}

void CoordinatorServer::applyDisconnects() {
  if (monitor_signaled_) collectMonitorEvents();
  if (closed_.empty()) return;
  // What a peer sent before its connection closed is already queued on the ROUTER (a
  // draining node's hand-back and bye): handle that first, then the loss.
  for (int i = 0; i < 10'000 && handleMessage(); ++i) {
  }
  auto closed = std::move(closed_);
  closed_.clear();
  for (auto& [peer, fd] : closed) {
    if (auto it = peer_fd_.find(peer); it != peer_fd_.end() && it->second == fd) {
      peer_fd_.erase(it);
      fd_peer_.erase(fd);
    }
    auth_->forget(peer);
    core_->onDisconnected(peer);
  }
}

void CoordinatorServer::applyDisconnectsOf(const std::string& peer, int current_fd) {
  for (size_t i = 0; i < closed_.size();) {
    if (closed_[i].first != peer || closed_[i].second == current_fd) {
      ++i;
      continue;
    }
    const int fd = closed_[i].second;
    closed_.erase(closed_.begin() + static_cast<std::ptrdiff_t>(i));
    if (auto it = peer_fd_.find(peer); it != peer_fd_.end() && it->second == fd) {
      peer_fd_.erase(it);
      fd_peer_.erase(fd);
    }
    auth_->forget(peer);
    core_->onDisconnected(peer);
  }
}

void CoordinatorServer::notePeerFd(const std::string& peer, int fd) {
  if (fd < 0) return;
  auto [it, added] = peer_fd_.try_emplace(peer, fd);
  if (!added && it->second == fd) return;
  if (!added) {  // the routing id moved to a new connection
    if (auto old = fd_peer_.find(it->second); old != fd_peer_.end() && old->second == peer)
      fd_peer_.erase(old);
    it->second = fd;
  }
  auto [fit, fresh] = fd_peer_.try_emplace(fd, peer);
  if (!fresh && fit->second != peer) {  // the fd was reused by a new connection
    if (auto prev = peer_fd_.find(fit->second); prev != peer_fd_.end() && prev->second == fd)
      peer_fd_.erase(prev);
    fit->second = peer;
  }
}

bool CoordinatorServer::handleMessage() {
  zmq::message_t peer;
  if (!router_.recv(peer, zmq::recv_flags::dontwait)) return false;
  // Disconnect events queued before this message are resolved to their peers first: the fd
  // cannot have been reused by the connection this message came on without that event
  // already being in the queue. (Read after the message, the queue holds those events and
  // maybe later ones, as it could have had the message arrived a little later; a failed recv
  // costs no monitor check.)
  if (monitorHasEvents()) collectMonitorEvents();
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
  // ZMQ_SRCFD (deprecated, still in 4.3): the connection a message came on. Read it from a
  // body part: the routing-id part the ROUTER prepends carries no metadata once it was
  // prefetched (ZMQ_EVENTS), so it has no fd.
  if (!parts.empty()) {
    const int fd = zmq_msg_get(parts.back().handle(), ZMQ_SRCFD);
    // The peer is back on a new connection (same routing id, handed over): its old one is
    // gone for good, so that loss goes first, before this message can register it anew.
    if (fd >= 0 && !closed_.empty()) applyDisconnectsOf(peer_id, fd);
    notePeerFd(peer_id, fd);
  }
  if (parts.size() != 1) {
    core_->onMalformed(
        peer_id, absl::InvalidArgumentError(fmt::format(
                     "a frame must be exactly one ZeroMQ message part, got {}", parts.size())));
    return true;
  }
  // Access checks (peer_auth.h): role per frame kind, node id bound to its key.
  std::string key;
  if (auto refusal = auth_->check(
          peer_id, parts[0], [this](const std::string& id) { return core_->nodeLive(id); }, &key)) {
    outbox_->send(peer_id, std::move(*refusal));
    return true;
  }
  core_->onBytes(peer_id, parts[0].data(), parts[0].size(), key);
  return true;
}

void CoordinatorServer::run() {
  running_ = true;
  spdlog::info("coordinator listening on {}", fmt::join(endpoints_, ", "));
  runPosted();  // work posted before run() (journal recovery) goes before any message
  Nanos next_tick = clock_.now();
  zmq::socket_t* zap = auth_->zapSocket();  // CURVE handshakes wait for its answers
  // A plain poll() over the sockets' ZMQ_FDs instead of zmq_poll(): zmq_poll asks every
  // socket for ZMQ_EVENTS before and after it sleeps (each a mailbox check: a poll() and a
  // getpid() syscall), which cost ~12 syscalls per message here. A ZMQ_FD is readable while
  // its socket has commands queued (e.g. "messages arrived"), so a socket is read until it
  // has none left before its fd is trusted again: the ROUTER until recv fails, the monitor
  // and the ZAP socket likewise (collectMonitorEvents, ZapHandler::handlePending).
  const int router_fd = router_.get(zmq::sockopt::fd);
  monitor_fd_ = monitor_.get(zmq::sockopt::fd);
  pollfd fds[] = {{router_fd, POLLIN, 0},
                  {wake_fd_, POLLIN, 0},
                  {monitor_fd_, POLLIN, 0},
                  {zap ? zap->get(zmq::sockopt::fd) : -1, POLLIN, 0}};
  const nfds_t poll_count = zap ? 4 : 3;
  // A pipe announces new messages only once its reader has found it empty: read both once.
  monitor_signaled_ = true;
  if (zap) auth_->serveZap();
  while (!stop_requested_) {
    const Nanos now = clock_.now();
    // Held acks (ackWithResult) are due within microseconds: ppoll's timespec keeps them so.
    const Nanos wake = std::min(next_tick, core_->nextAckDue());
    timespec timeout{0, 0};
    if (wake > now) {
      timeout.tv_sec = static_cast<time_t>((wake - now) / kSeconds);
      timeout.tv_nsec = static_cast<long>((wake - now) % kSeconds);
    }
    // Sends on the ROUTER (last turn's replies and batches) may have processed the command
    // that announced new messages, leaving its fd quiet with messages queued: ask once
    // before sleeping.
    const bool router_ready = (router_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
    if (router_ready) timeout = timespec{0, 0};
    if (::ppoll(fds, poll_count, &timeout, nullptr) < 0) {
      for (auto& f : fds) f.revents = 0;  // EINTR
    }
    if (zap && (fds[3].revents & POLLIN)) auth_->serveZap();
    if (fds[2].revents & POLLIN) monitor_signaled_ = true;
    if (router_ready || (fds[0].revents & POLLIN)) {
      // Bounded burst so timers and posted work are not starved; it ends on a failed recv,
      // which leaves no command unread.
      for (int i = 0; i < 256 && handleMessage(); ++i) {
      }
    }
    applyDisconnects();
    if (fds[1].revents & POLLIN) {
      core_->writeKeyResults();  // posted work (gateway status queries) may read key results
      runPosted();
    }
    // Group commit: the admissions of this burst share one journal sync, and are acknowledged
    // (and started) only after it.
    core_->commitJournal();
    core_->releaseAcks();
    if (clock_.now() >= next_tick) next_tick = core_->tick();
    // End of the burst: batches that filled during it go out now (no flush timer).
    core_->flushAll();
  }
  core_->commitJournal();
  core_->flushAll();
  running_ = false;
}

// ---- ClusterControl: post to the loop, answer from it.

void CoordinatorServer::submitJob(JobSpec job, control::Callback<uint64_t> done) {
  post([job = std::move(job), done = std::move(done)](CoordinatorCore& c) mutable {
    c.submitJobAsync(std::move(job), {}, 0, std::move(done));  // answered after the commit
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
