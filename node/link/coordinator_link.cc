#include "node/link/coordinator_link.h"

#include <fmt/format.h>
#include <kj/exception.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <limits>
#include <thread>

#include "node/link/health.h"

namespace tokengate::node {

namespace {

uint64_t rssBytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// CPU time of the whole process (every worker thread), user + system.
uint64_t processCpuNs() {
  timespec ts{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

CoordinatorLink::CoordinatorLink(LinkConfig config, const Registry& registry, Executor& executor,
                                 LinkSocketFactory connect, const Clock& clock)
    : config_(std::move(config)),
      registry_(registry),
      executor_(executor),
      connect_(std::move(connect)),
      clock_(clock),
      hello_(helloInfo(config_.node_id, config_.incarnation, executor, registry)),
      heartbeat_ms_(config_.default_heartbeat_ms),
      loss_timeout_ns_(static_cast<Nanos>(config_.coordinator_loss_timeout_ms) * kMillis),
      max_frame_bytes_(config_.max_frame_bytes),
      batcher_(config_.results) {}

Status CoordinatorLink::start() {
  auto s = connect_();
  if (!s.ok()) return s.status();
  socket_ = std::move(*s);
  ++connects_;
  sayHello();
  return absl::OkStatus();
}

Status CoordinatorLink::wait(int wake_fd, Nanos timeout_ns, bool& readable) {
  return socket_->wait(wake_fd, timeout_ns, readable);
}

Nanos CoordinatorLink::giveUpAfter() const {
  const Nanos hb = static_cast<Nanos>(heartbeat_ms_) * kMillis;
  // Strictly after the coordinator's own loss timeout: it re-queues our work
  // first, so a blip shorter than its timeout never costs a session on our side.
  return std::max<Nanos>(static_cast<Nanos>(config_.missed_heartbeats) * hb, loss_timeout_ns_ + hb);
}

void CoordinatorLink::send(std::string frame) {
  if (!socket_) return;
  if (!socket_->send(std::move(frame))) {
    if (dropped_sends_++ % 1000 == 0)
      spdlog::warn("send queue to the coordinator is full; dropped {} frame(s)", dropped_sends_);
  }
}

void CoordinatorLink::sayHello() {
  send(helloFrame(hello_));
  next_hello_ = clock_.now() + static_cast<Nanos>(config_.hello_resend_ms) * kMillis;
}

void CoordinatorLink::reconnect(const char* why) {
  if (in_receive_) {
    // Called from a frame handler inside socket_->receive(): the socket may not be
    // destroyed under its own loop. onReadable() reconnects once the loop returns.
    reconnect_pending_ = why;
    return;
  }
  spdlog::info("{}: reconnecting to the coordinator", why);
  if (socket_) socket_->abandon();  // a queued hello must not arrive after the new one
  socket_.reset();
  auto s = connect_();
  if (!s.ok()) {
    // The endpoint was valid at start(): a transient failure; retry at the next resend.
    spdlog::warn("reconnect failed: {}", s.status().ToString());
    next_hello_ = clock_.now() + static_cast<Nanos>(config_.hello_resend_ms) * kMillis;
    return;
  }
  socket_ = std::move(*s);
  ++connects_;
  sayHello();
}

void CoordinatorLink::sendHeartbeat() {
  send(heartbeatFrame(session_, executor_.laneStats(), executor_.coreStats(), rssBytes(),
                      executor_.draining(), processCpuNs()));
  next_heartbeat_ = clock_.now() + static_cast<Nanos>(heartbeat_ms_) * kMillis;
}

// The coordinator no longer knows our session: its queued work is void.
void CoordinatorLink::loseSession(const char* why) {
  const size_t dropped = executor_.dropQueued();
  spdlog::warn("{}: dropping {} queued token(s) and {} unsent result(s){}", why, dropped,
               batcher_.size(), stopping_ ? "" : "; saying hello again");
  batcher_.clear();
  session_ = 0;
  state_ = State::kHello;
}

void CoordinatorLink::beginStop(const char* why) {
  if (stopping_) return;
  stopping_ = true;
  stop_deadline_ = clock_.now() + static_cast<Nanos>(config_.stop_grace_ms) * kMillis;
  spdlog::info("{}: draining ({} token(s) outstanding)", why, executor_.outstanding());
  executor_.drain();
  // Tell the coordinator now, not at the next heartbeat: it stops sending batches that we
  // would only hand back.
  if (state_ == State::kReady) sendHeartbeat();
}

void CoordinatorLink::onReadable() {
  if (!socket_) return;
  in_receive_ = true;
  socket_->receive(4096, [&](const void* data, size_t size) {
    // Frames behind one that ended the connection belong to the old session.
    if (reconnect_pending_ == nullptr) handleFrame(data, size);
  });
  in_receive_ = false;
  if (const char* why = reconnect_pending_) {
    reconnect_pending_ = nullptr;
    reconnect(why);
  }
}

void CoordinatorLink::handleFrame(const void* data, size_t size) {
  // Lazy: the coordinator is this link's only peer, and onTokenBatch decodes a batch whole before
  // queueing any of it, so a malformed frame (caught below) changes nothing. Borrowed: the
  // received message outlives this call and nothing keeps the frame.
  auto decoded = decodeFrameBorrowed(data, size, config_.max_frame_bytes, FrameCheck::kLazy);
  if (!decoded.ok()) {
    onOversizeFrame(data, size, decoded.status());
    return;
  }
  // A malformed pointer (decodeFrame did not walk the frame), or a frame built to be read many
  // times (pointers into shared subtrees) reaching the reader's traversal limit, makes Cap'n
  // Proto throw while a handler reads it. Handlers read the whole frame before acting on it (a
  // token batch is decoded in full before anything runs), so the frame is treated as malformed: a
  // token batch of our session gets every token answered with an error (fuzz_node_frames finding
  // node-crash-cf8bc8ce; it used to end the node in std::terminate).
  try {
    onFrame((*decoded)->root());
  } catch (const kj::Exception& e) {
    onOversizeFrame(
        data, size,
        absl::InvalidArgumentError(fmt::format("malformed frame: {}", e.getDescription().cStr())));
  }
}

// A frame we cannot (or may not) decode. If it is a token batch of our
// session whose token list can still be read, every token is answered with an
// error: otherwise the coordinator would count them in flight forever.
void CoordinatorLink::onOversizeFrame(const void* data, size_t size, const Status& why) {
  uint64_t session = 0;
  auto refs = tokenRefsOfOversizeBatch(data, size, session);
  if (!refs.ok() || state_ != State::kReady || session != session_) {
    spdlog::warn("dropping an undecodable frame from the coordinator ({} bytes): {}", size,
                 why.ToString());
    return;
  }
  last_rx_ = clock_.now();
  spdlog::error("token batch of {} bytes with {} token(s) refused: {}", size, refs->size(),
                why.ToString());
  // A token that alone exceeds the limit fails for good (ResourceExhausted is not
  // retried); the others only shared its batch and are retried (Unavailable).
  const size_t budget = config_.max_frame_bytes > 4096 ? config_.max_frame_bytes - 4096 : 0;
  const bool oversize = why.code() == StatusCode::kResourceExhausted;
  for (const auto& ref : *refs) {
    TaskResult r;
    r.id = ref.id;
    r.attempt = ref.attempt;
    r.session = session_;
    if (!oversize)
      r.outcome = absl::InvalidArgumentError(
          fmt::format("token batch could not be decoded: {}", why.message()));
    else if (ref.wire_bytes > budget)
      r.outcome = absl::ResourceExhaustedError(fmt::format(
          "token of {} bytes (its resolved arguments) exceeds the node's frame limit of {} bytes",
          ref.wire_bytes, config_.max_frame_bytes));
    else
      r.outcome = absl::UnavailableError(
          fmt::format("token batch of {} bytes exceeds the node's frame limit of {} bytes", size,
                      config_.max_frame_bytes));
    r.lane = ref.lane;
    batcher_.add(std::move(r));
  }
}

void CoordinatorLink::onFrame(const wire::Frame::Reader& f) {
  last_rx_ = clock_.now();
  switch (f.which()) {
    case wire::Frame::WELCOME:
      onWelcome(f.getWelcome());
      return;
    case wire::Frame::TOKEN_BATCH:
      onTokenBatch(f.getTokenBatch());
      return;
    case wire::Frame::CONTROL:
      onControl(f.getControl());
      return;
    case wire::Frame::PING:
      send(pongFrame(f.getPing()));
      return;
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
}

void CoordinatorLink::onWelcome(wire::Welcome::Reader w) {
  if (!w.getAccepted()) {
    Status st = fromWire(w.getError());
    if (st.code() == StatusCode::kFailedPrecondition && state_ == State::kReady && stopping_) {
      // Stopping (e.g. evicted: the coordinator dropped us before our draining
      // heartbeat arrived): nothing to hand back to it, and no new session wanted.
      loseSession("coordinator does not know our session (stopping)");
    } else if (st.code() == StatusCode::kFailedPrecondition && state_ == State::kReady) {
      // The coordinator restarted or dropped us: say hello at once.
      loseSession("coordinator does not know our session");
      reconnect("new session needed");
    } else if (st.code() == StatusCode::kFailedPrecondition) {
      // A reply to a heartbeat sent before our hello: the hello is on its way.
      spdlog::debug("coordinator: {} (hello already sent)", st.ToString());
    } else {
      // E.g. a version mismatch or an invalid id: the resend timer paces retries.
      spdlog::error("coordinator rejected this node: {}", st.ToString());
    }
    return;
  }
  if (state_ == State::kReady && session_ == w.getSession()) return;  // duplicate welcome
  if (state_ == State::kReady) loseSession("coordinator started a new session");
  session_ = w.getSession();
  heartbeat_ms_ = w.getHeartbeatMs() != 0 ? w.getHeartbeatMs() : config_.default_heartbeat_ms;
  loss_timeout_ns_ =
      static_cast<Nanos>(w.getLossTimeoutMs() != 0 ? w.getLossTimeoutMs()
                                                   : config_.coordinator_loss_timeout_ms) *
      kMillis;
  // The coordinator's decode limit, if it states one (older ones do not).
  max_frame_bytes_ =
      w.getMaxFrameBytes() != 0
          ? static_cast<size_t>(std::min<uint64_t>(w.getMaxFrameBytes(), config_.max_frame_bytes))
          : config_.max_frame_bytes;
  // Columns for plain numeric results, if this coordinator reads them (older ones do not).
  packed_results_ = w.getPackedResults();
  packed_dec_results_ = w.getPackedDecResults();
  state_ = State::kReady;
  spdlog::info("welcomed: session {:x}, heartbeat every {} ms, give-up after {} ms", session_,
               heartbeat_ms_, giveUpAfter() / kMillis);
  sendHeartbeat();
  next_health_ = 0;  // probes see "ready" at the next tick, not up to a second later
}

void CoordinatorLink::onTokenBatch(wire::TokenBatch::Reader b) {
  if (state_ != State::kReady || b.getSession() != session_) {
    spdlog::debug("dropping a token batch for session {:x} (current {:x})", b.getSession(),
                  session_);
    return;
  }
  auto decoded = decodeTokenBatch(b, registry_, session_, clock_.now());
  for (auto& e : decoded.errors) batcher_.add(std::move(e));
  if (decoded.tasks.size() == 1 && executor_.canRunInline(decoded.tasks.front())) {
    // A lone fast token while the workers are idle: run it here and answer at once (no worker
    // wake-up, no eventfd wake-up back, no extra loop turn).
    batcher_.add(executor_.runInline(decoded.tasks.front()));
    collect();
    if (batcher_.due(clock_.now(), executor_.idle())) flushResults();
    return;
  }
  executor_.submit(std::move(decoded.tasks));
}

void CoordinatorLink::onControl(wire::Control::Reader c) {
  switch (c.which()) {
    case wire::Control::CANCEL_TOKENS: {
      auto l = c.getCancelTokens();
      std::vector<uint64_t> ids;
      ids.reserve(l.size());
      for (uint64_t id : l) ids.push_back(id);
      executor_.cancelTokens(ids);
      break;
    }
    case wire::Control::CANCEL_OP: {
      auto name = c.getCancelOp();
      const Operation* op = registry_.find(std::string_view(name.begin(), name.size()));
      if (op != nullptr) executor_.cancelOp(op);
      break;
    }
    case wire::Control::DRAIN:
      spdlog::info("coordinator asked to drain");
      executor_.drain();
      break;
    case wire::Control::UNDRAIN:
      spdlog::info("coordinator asked to undrain");
      if (stopping_) break;
      executor_.undrain();
      // Confirm at once: until a heartbeat says "not draining" the coordinator reads the
      // draining flag of our earlier heartbeats as an echo of its own drain.
      if (state_ == State::kReady) sendHeartbeat();
      break;
    case wire::Control::SHUTDOWN:
      beginStop("coordinator asked to shut down");
      break;
    default:
      spdlog::warn("unknown control command {}", static_cast<int>(c.which()));
  }
}

void CoordinatorLink::collect() {
  executor_.takeResults(results_, returned_);
  batcher_.take(state_ == State::kReady ? session_ : 0, results_, returned_);
}

void CoordinatorLink::flushResults() {
  batcher_.flush(
      session_, max_frame_bytes_, clock_.now(), [&](std::string frame) { send(std::move(frame)); },
      packed_results_, packed_dec_results_);
}

void CoordinatorLink::finishStop(const char* reason) {
  send(byeFrame(session_, reason));
  finished_ = true;
}

void CoordinatorLink::tick() {
  if (finished_) return;
  collect();
  Nanos now = clock_.now();
  if (batcher_.due(now, executor_.idle())) flushResults();

  if (stopping_) {
    if (state_ != State::kReady) {
      spdlog::info("stopping before a session was established");
      finished_ = true;
      return;
    }
    if (executor_.idle() && batcher_.empty()) {
      spdlog::info("drained; bye");
      finishStop("shutdown");
      return;
    }
    if (now >= stop_deadline_) {
      spdlog::warn("stop grace period over with {} token(s) still running; cancelling them",
                   executor_.outstanding());
      for (const auto& op : registry_.operations()) executor_.cancelOp(op.get());
      // Real time on purpose: the workers, not the link's clock, have to react.
      for (int i = 0; i < 100 && !executor_.idle(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      collect();
      flushResults();
      finishStop("shutdown (grace period over)");
      return;
    }
  }

  if (!config_.health_file.empty() && now >= next_health_) {
    writeHealthFile(config_.health_file, state_ != State::kReady ? HealthState::kConnecting
                                         : executor_.draining() || stopping_
                                             ? HealthState::kDraining
                                             : HealthState::kReady);
    next_health_ = now + kSeconds;
  }
  if (state_ == State::kHello) {
    if (now >= next_hello_) reconnect("no welcome yet");
  } else if (now - last_rx_ >= giveUpAfter()) {
    loseSession(
        fmt::format("no word from the coordinator for {} ms", giveUpAfter() / kMillis).c_str());
    if (!stopping_) reconnect("session given up");
  } else if (now >= next_heartbeat_) {
    sendHeartbeat();
  }
}

Nanos CoordinatorLink::nextWakeAt() const {
  const Nanos now = clock_.now();
  Nanos at = now + 100 * kMillis;
  if (state_ == State::kHello) {
    at = std::min(at, next_hello_);
  } else {
    at = std::min(at, next_heartbeat_);
    at = std::min(at, last_rx_ + giveUpAfter());
  }
  if (!batcher_.empty()) at = std::min(at, batcher_.dueAt());
  if (stopping_) at = std::min(at, stop_deadline_);
  return at;
}

}  // namespace tokengate::node
