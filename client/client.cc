#include "client/client.h"

#include <fmt/format.h>
#include <kj/exception.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <unordered_set>

namespace tokengate::client {
namespace {

Output outputFromWire(wire::Output::Reader o) {
  Output out;
  out.index = o.getIndex();
  out.name = o.getName().cStr();
  if (o.isValue())
    out.value = fromWire(o.getValue());
  else
    out.status = fromWire(o.getError());
  return out;
}

}  // namespace

StatusOr<Value> JobResult::output(const std::string& name) const {
  for (const auto& o : outputs) {
    if (!name.empty() && o.name != name) continue;
    if (!o.status.ok()) return o.status;
    return o.value;
  }
  return absl::NotFoundError(fmt::format("job {} has no output '{}'", id, name));
}

StatusOr<std::string> normalizeEndpoint(const std::string& endpoint) {
  if (endpoint.empty()) return absl::InvalidArgumentError("empty coordinator endpoint");
  if (endpoint.find("://") != std::string::npos) return endpoint;
  if (endpoint.find_first_of(" \t/") != std::string::npos)
    return absl::InvalidArgumentError(
        fmt::format("malformed coordinator endpoint '{}' (expected host:port)", endpoint));
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos) return "tcp://" + endpoint + ":5555";
  const std::string port = endpoint.substr(colon + 1);
  if (colon == 0 || port.empty() || port.find_first_not_of("0123456789") != std::string::npos)
    return absl::InvalidArgumentError(
        fmt::format("malformed coordinator endpoint '{}' (expected host:port)", endpoint));
  return "tcp://" + endpoint;
}

Client::Client(std::string endpoint) : Client(std::move(endpoint), security::ClientCurve{}) {}

Client::Client(std::string endpoint, security::ClientCurve curve)
    : endpoint_(std::move(endpoint)),
      context_(1),
      socket_(context_, zmq::socket_type::dealer),
      monitor_(context_, zmq::socket_type::pair) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::rcvhwm, 0);
  socket_.set(zmq::sockopt::sndhwm, 0);  // pipelined submissions are bounded by window()
  std::random_device rd;
  socket_.set(zmq::sockopt::routing_id,
              fmt::format("client/{:016x}", (uint64_t{rd()} << 32) | rd()));
  setup_error_ = security::applyClientKeys(socket_, curve);
  curve_enabled_ = curve.enabled();
  // Monitored with or without CURVE: a mechanism mismatch (plain client, CURVE coordinator or
  // the reverse) fails calls at once with a clear error instead of a timeout.
  if (setup_error_.ok()) {
    const std::string ep = fmt::format("inproc://tg-client-monitor-{}", static_cast<void*>(this));
    if (zmq_socket_monitor(socket_.handle(), ep.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_SUCCEEDED) == 0) {
      monitor_.set(zmq::sockopt::linger, 0);
      monitor_.connect(ep);
      monitoring_ = true;
    }
  }
  if (!setup_error_.ok()) {
    endpoint_status_ = setup_error_;
    return;
  }
  auto normalized = normalizeEndpoint(endpoint_);
  if (!normalized.ok()) {
    endpoint_status_ = normalized.status();
    return;
  }
  endpoint_ = *normalized;
  try {
    socket_.connect(endpoint_);
  } catch (const zmq::error_t& e) {
    endpoint_status_ = absl::InvalidArgumentError(
        fmt::format("cannot connect to coordinator endpoint '{}': {}", endpoint_, e.what()));
  }
}

void Client::checkMonitor() {
  if (!setup_error_.ok() || !monitoring_) return;
  zmq::message_t event;
  while (monitor_.recv(event, zmq::recv_flags::dontwait)) {
    uint16_t id = 0;
    uint32_t value = 0;
    if (event.size() >= 6) {
      std::memcpy(&id, event.data(), sizeof id);
      std::memcpy(&value, static_cast<const char*>(event.data()) + 2, sizeof value);
    }
    while (event.more() && monitor_.recv(event, zmq::recv_flags::none)) {
    }
    if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) handshake_failures_ = 0, handshake_seen_ = true;
    // A connection cut mid-handshake also reports "no detail": a coordinator killed or
    // restarting (its listen backlog reset, or its ZAP handler still busy starting) cuts every
    // handshake in flight. Before any handshake succeeded a run of them means a wrong server key;
    // after one did, the key is right and they are restarts. They used to count anyway, and the
    // error is sticky: under load three restarts in a row left a client failing every call at
    // once, for good (the crash harness saw 30,177 instant failures after one acknowledgement).
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && !handshake_seen_) ++handshake_failures_;
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
        value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      setup_error_ = absl::PermissionDeniedError(fmt::format(
          "the coordinator at {} and this client disagree on CURVE: one runs with keys, the "
          "other with --insecure (docs/security.md)",
          endpoint_));
    } else if (curve_enabled_ &&
               (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
                id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || handshake_failures_ >= 3)) {
      setup_error_ = absl::PermissionDeniedError(fmt::format(
          "the coordinator at {} refused the CURVE handshake: this client's public key is not "
          "in its allow-list, or --curve-server-key is not the coordinator's key",
          endpoint_));
    }
  }
}

Client::~Client() = default;

void Client::send(capnp::MallocMessageBuilder& msg) {
  if (!endpoint_status_.ok()) return;  // every wait then times out; callers check first
  auto bytes = encodeFrame(msg);
  socket_.send(zmq::buffer(bytes), zmq::send_flags::none);
}

Status Client::pump(Nanos deadline) {
  if (!endpoint_status_.ok()) return endpoint_status_;
  checkMonitor();
  if (!setup_error_.ok()) return setup_error_;
  const Nanos now = SystemClock::instance().now();
  if (now >= deadline) return absl::DeadlineExceededError("timed out waiting for the coordinator");
  zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                             {monitor_.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, monitoring_ ? 2 : 1,
            std::chrono::milliseconds(std::max<Nanos>(1, (deadline - now) / kMillis)));
  if (items[1].revents & ZMQ_POLLIN) {
    checkMonitor();
    if (!setup_error_.ok()) return setup_error_;
  }
  if (!(items[0].revents & ZMQ_POLLIN)) return absl::OkStatus();
  zmq::message_t msg;
  if (!socket_.recv(msg, zmq::recv_flags::dontwait)) return absl::OkStatus();
  auto frame = decodeFrame(msg.data(), msg.size());
  if (!frame.ok()) {
    spdlog::warn("dropping malformed frame from coordinator: {}", frame.status().message());
    return absl::OkStatus();
  }
  // Typed reads may still throw on a malformed frame (common/wire.h): drop it, keep the client.
  try {
    auto f = (*frame)->root();
    switch (f.which()) {
      case wire::Frame::SUBMIT_REPLY: {
        auto r = f.getSubmitReply();
        if (auto a = async_requests_.find(r.getRequestId()); a != async_requests_.end()) {
          const uint64_t h = a->second;
          Pending& p = async_[h];
          if (r.isJobId()) {
            p.job_id = r.getJobId();
            async_jobs_[p.job_id] = h;
            async_requests_.erase(a);
            break;
          }
          Status st = fromWire(r.getError());
          const Nanos t = SystemClock::instance().now();
          if (st.code() == StatusCode::kResourceExhausted && p.bp == Backpressure::kRetry &&
              t + p.backoff < p.deadline) {
            async_requests_.erase(a);
            p.retry_at = t + p.backoff;
            p.backoff = std::min<Nanos>(p.backoff * 2, kSeconds);
            async_timers_.emplace(p.retry_at, h);
          } else {
            finishAsync(h, std::move(st));
          }
          break;
        }
        if (r.isJobId()) {
          replies_[r.getRequestId()] = r.getJobId();
          if (r.getIncarnation() != 0) incarnations_[r.getJobId()] = r.getIncarnation();
        } else {
          replies_[r.getRequestId()] = fromWire(r.getError());
        }
        break;
      }
      case wire::Frame::JOB_PROGRESS: {
        auto p = f.getJobProgress();
        if (async_jobs_.contains(p.getJobId())) break;  // pipelined jobs: results only
        progress_[p.getJobId()] =
            Progress{p.getJobId(), p.getTotal(), p.getDone(), p.getFailed(), p.getRunning()};
        if (p.hasOutputs()) {
          auto& streamed = streamed_[p.getJobId()];
          for (auto o : p.getOutputs()) streamed.push_back(outputFromWire(o));
        }
        ++heard_[p.getJobId()];
        break;
      }
      case wire::Frame::JOB_DONE: {
        auto d = f.getJobDone();
        JobResult r;
        r.id = d.getJobId();
        r.state = static_cast<JobState>(std::min<int>(static_cast<int>(d.getState()), 4));
        auto p = d.getProgress();
        r.progress = Progress{r.id, p.getTotal(), p.getDone(), p.getFailed(), 0};
        r.wall_ns = static_cast<Nanos>(d.getWallNs());
        for (auto o : d.getOutputs()) r.outputs.push_back(outputFromWire(o));
        // A JobDone with a request id is also the submission's ack (ackWithResult): no
        // SubmitReply came, or will come, for it.
        if (d.getRequestId() != 0) {
          if (auto a = async_requests_.find(d.getRequestId()); a != async_requests_.end()) {
            finishAsync(a->second, std::move(r));
            break;
          }
        }
        if (auto a = async_jobs_.find(r.id); a != async_jobs_.end()) {
          finishAsync(a->second, std::move(r));
          break;
        }
        ++heard_[r.id];
        done_[r.id] = std::move(r);
        break;
      }
      case wire::Frame::STATS_REPLY: {
        auto s = f.getStatsReply();
        ClusterInfo info;
        info.nodes_ready = s.getNodesReady();
        info.nodes_draining = s.getNodesDraining();
        info.jobs_running = s.getJobsRunning();
        info.tokens_live = s.getTokensLive();
        info.tokens_completed = s.getTokensCompleted();
        info.tokens_failed = s.getTokensFailed();
        info.queued = s.getQueued();
        info.in_flight = s.getInFlight();
        info.nodes_lost = s.getNodesLost();
        info.nodes_disconnected = s.getNodesDisconnected();
        info.tokens_requeued = s.getTokensRequeued();
        info.tokens_returned = s.getTokensReturned();
        info.nodes_quarantined = s.getNodesQuarantined();
        info.run_timeouts = s.getRunTimeouts();
        info.verify_reruns = s.getVerifyReruns();
        info.verify_matched = s.getVerifyMatched();
        info.verify_mismatched = s.getVerifyMismatched();
        info.verify_unverifiable = s.getVerifyUnverifiable();
        info.tokens_reopened = s.getTokensReopened();
        for (auto n : s.getNodes())
          info.nodes.push_back(NodeSummary{n.getId().cStr(), n.getState().cStr(), n.getCompleted(),
                                           n.getInFlight(), n.getSession()});
        stats_replies_[s.getRequestId()] = info;
        break;
      }
      case wire::Frame::PONG:
        pongs_.insert(f.getPong());
        break;
      case wire::Frame::ADMIN_REPLY: {
        auto r = f.getAdminReply();
        if (r.isJson())
          admin_replies_[r.getRequestId()] = std::string(r.getJson().cStr());
        else
          admin_replies_[r.getRequestId()] = fromWire(r.getError());
        break;
      }
      case wire::Frame::REJECT: {
        auto rej = f.getReject();
        last_reject_ = fromWire(rej.getError());
        if (auto a = async_requests_.find(rej.getRequestId()); a != async_requests_.end()) {
          finishAsync(a->second, last_reject_);
          break;
        }
        if (rej.getRequestId() != 0)
          request_errors_[rej.getRequestId()] = last_reject_;
        else if (last_reject_.code() == StatusCode::kPermissionDenied ||
                 last_reject_.code() == StatusCode::kUnauthenticated)
          return last_reject_;  // the key's role does not allow the request: fail it now
        else
          spdlog::warn("coordinator rejected a request: {}", last_reject_.message());
        break;
      }
      default:
        break;
    }
  } catch (const kj::Exception& e) {
    spdlog::warn("dropping malformed frame from coordinator: {}", e.getDescription().cStr());
  }
  return absl::OkStatus();
}

Status Client::ping(Nanos timeout) {
  if (!endpoint_status_.ok()) return endpoint_status_;
  const uint64_t req = next_request_++;
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  f.setPing(req);
  send(msg);
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (!pongs_.erase(req)) {
    if (SystemClock::instance().now() >= deadline)
      return absl::UnavailableError(
          fmt::format("no answer from the coordinator at {} within {:.1f} s (is it running and "
                      "reachable?)",
                      endpoint_, static_cast<double>(timeout) / 1e9));
    if (auto st = pump(deadline); !st.ok() && st.code() != StatusCode::kDeadlineExceeded) return st;
  }
  return absl::OkStatus();
}

StatusOr<std::string> Client::admin(const AdminCall& call, Nanos timeout) {
  if (!endpoint_status_.ok()) return endpoint_status_;
  const uint64_t req = next_request_++;
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  auto a = f.initAdminRequest();
  a.setRequestId(req);
  using K = AdminCall::Kind;
  switch (call.kind) {
    case K::kListJobs:
      a.setListJobs();
      break;
    case K::kListOps:
      a.setListOps();
      break;
    case K::kPauseOp:
      a.setPauseOp(call.target);
      break;
    case K::kResumeOp:
      a.setResumeOp(call.target);
      break;
    case K::kDrainOp:
      a.setDrainOp(call.target);
      break;
    case K::kSetOpLimits: {
      auto l = a.initSetOpLimits();
      l.setOp(call.target);
      l.setMaxInFlight(call.max_in_flight);
      l.setMaxRatePerS(call.max_rate_per_s);
      l.setRunTimeoutMs(call.run_timeout_ms);
      l.setVerifyPct(call.verify_pct);
      break;
    }
    case K::kDrainNode:
      a.setDrainNode(call.target);
      break;
    case K::kUndrainNode:
      a.setUndrainNode(call.target);
      break;
    case K::kEvictNode:
      a.setEvictNode(call.target);
      break;
    case K::kListNodes:
      a.setListNodes();
      break;
  }
  send(msg);
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (true) {
    if (auto it = admin_replies_.find(req); it != admin_replies_.end()) {
      auto r = std::move(it->second);
      admin_replies_.erase(it);
      return r;
    }
    if (auto it = request_errors_.find(req); it != request_errors_.end()) {
      auto st = it->second;
      request_errors_.erase(it);
      return st;
    }
    if (auto st = pump(deadline); !st.ok()) return st;
  }
}

StatusOr<uint64_t> Client::submit(const JobSpec& job, Nanos timeout) {
  const uint64_t req = next_request_++;
  auto msg = newFrame();
  auto f = msg.root;
  auto s = f.initSubmitJob();
  s.setRequestId(req);
  s.setWatch(true);
  toWire(job, s.initJob());
  send(msg.message);
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (true) {
    if (auto it = replies_.find(req); it != replies_.end()) {
      auto r = std::move(it->second);
      replies_.erase(it);
      return r;
    }
    if (auto st = pump(deadline); !st.ok()) return st;
  }
}

void Client::sendAsync(uint64_t handle, const JobSpec& job) {
  Pending& p = async_[handle];
  p.request = next_request_++;
  p.retry_at = 0;
  async_requests_[p.request] = handle;
  auto msg = newFrame();
  auto s = msg.root.initSubmitJob();
  s.setRequestId(p.request);
  s.setWatch(true);
  s.setAckWithResult(ack_with_result_);
  toWire(job, s.initJob());
  send(msg.message);
}

void Client::finishAsync(uint64_t handle, StatusOr<JobResult> result) {
  auto it = async_.find(handle);
  if (it == async_.end() || it->second.finished) return;
  Pending& p = it->second;
  p.finished = true;
  p.result = std::move(result);
  p.job = JobSpec{};
  async_requests_.erase(p.request);
  if (p.job_id != 0) {
    async_jobs_.erase(p.job_id);
    incarnations_.erase(p.job_id);
  }
  --async_in_flight_;
  async_ready_.push_back(handle);
}

Nanos Client::serviceAsync(Nanos now) {
  while (!async_timers_.empty() && async_timers_.begin()->first <= now) {
    const uint64_t h = async_timers_.begin()->second;
    async_timers_.erase(async_timers_.begin());
    auto it = async_.find(h);
    if (it == async_.end() || it->second.finished) continue;
    Pending& p = it->second;
    if (now >= p.deadline) {
      finishAsync(
          h, absl::DeadlineExceededError(
                 p.job_id != 0 ? fmt::format("job {} did not finish in time", p.job_id)
                               : std::string("the coordinator did not admit the job in time")));
    } else if (p.retry_at != 0 && p.retry_at <= now) {
      sendAsync(h, p.job);
    }
  }
  return async_timers_.empty() ? std::numeric_limits<Nanos>::max() : async_timers_.begin()->first;
}

Status Client::pumpAsync(Nanos deadline) {
  const Nanos next = serviceAsync(SystemClock::instance().now());
  if (next < deadline && SystemClock::instance().now() < deadline) {
    auto st = pump(next);
    if (st.ok() || st.code() != StatusCode::kDeadlineExceeded) return st;
    return absl::OkStatus();  // a timer is due, not the caller's deadline
  }
  return pump(deadline);
}

StatusOr<JobHandle> Client::submitAsync(const JobSpec& job, Backpressure bp, Nanos timeout) {
  if (!endpoint_status_.ok()) return endpoint_status_;
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (async_in_flight_ >= window_) {
    if (auto st = pumpAsync(deadline); !st.ok()) {
      if (st.code() == StatusCode::kDeadlineExceeded)
        return absl::DeadlineExceededError(fmt::format(
            "the pipeline window ({} submissions) stayed full for the whole timeout", window_));
      return st;
    }
  }
  const uint64_t h = next_handle_++;
  Pending& p = async_[h];
  if (bp == Backpressure::kRetry) p.job = job;  // kept to be re-sent
  p.bp = bp;
  p.deadline = deadline;
  ++async_in_flight_;
  async_timers_.emplace(deadline, h);
  sendAsync(h, job);
  return JobHandle{h};
}

StatusOr<AsyncResult> Client::waitAny(Nanos timeout) {
  if (async_.empty()) return absl::NotFoundError("no pipelined submission is outstanding");
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (true) {
    while (!async_ready_.empty()) {
      const uint64_t h = async_ready_.front();
      async_ready_.pop_front();
      auto it = async_.find(h);
      if (it == async_.end()) continue;  // taken by wait(handle)
      AsyncResult r{JobHandle{h}, std::move(it->second.result)};
      async_.erase(it);
      return r;
    }
    if (auto st = pumpAsync(deadline); !st.ok()) return st;
  }
}

StatusOr<AsyncResult> Client::wait(JobHandle handle, Nanos timeout) {
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (true) {
    auto it = async_.find(handle.id);
    if (it == async_.end())
      return absl::NotFoundError(fmt::format(
          "no outstanding pipelined submission {} (unknown or already taken)", handle.id));
    if (it->second.finished) {
      AsyncResult r{handle, std::move(it->second.result)};
      async_.erase(it);
      if (async_.empty()) async_ready_.clear();
      return r;
    }
    if (auto st = pumpAsync(deadline); !st.ok()) return st;
  }
}

StatusOr<std::vector<AsyncResult>> Client::waitAll(Nanos timeout) {
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (async_in_flight_ > 0) {
    if (auto st = pumpAsync(deadline); !st.ok()) return st;
  }
  std::vector<uint64_t> handles;
  handles.reserve(async_.size());
  for (const auto& [h, p] : async_) handles.push_back(h);
  std::sort(handles.begin(), handles.end());
  std::vector<AsyncResult> out;
  out.reserve(handles.size());
  for (uint64_t h : handles) out.push_back(AsyncResult{JobHandle{h}, std::move(async_[h].result)});
  async_.clear();
  async_ready_.clear();
  return out;
}

StatusOr<uint64_t> Client::submitWithBackpressure(const JobSpec& job, Nanos timeout) {
  const Nanos deadline = SystemClock::instance().now() + timeout;
  Nanos backoff = 10 * kMillis;
  while (true) {
    auto r = submit(job, std::max<Nanos>(kSeconds, deadline - SystemClock::instance().now()));
    if (r.ok() || r.status().code() != StatusCode::kResourceExhausted) return r;
    if (SystemClock::instance().now() + backoff > deadline) return r;
    std::this_thread::sleep_for(std::chrono::nanoseconds(backoff));
    backoff = std::min<Nanos>(backoff * 2, kSeconds);
  }
}

StatusOr<JobResult> Client::wait(uint64_t job,
                                 const std::function<void(const Progress&)>& on_progress,
                                 Nanos timeout) {
  return wait(job, on_progress, {}, timeout);
}

StatusOr<JobResult> Client::wait(uint64_t job,
                                 const std::function<void(const Progress&)>& on_progress,
                                 const std::function<void(const Output&)>& on_output,
                                 Nanos timeout) {
  auto& clock = SystemClock::instance();
  std::unordered_set<uint32_t> delivered;  // output indices handed to on_output
  auto deliver = [&](const Output& o) {
    if (on_output && delivered.insert(o.index).second) on_output(o);
  };
  auto drainStreamed = [&] {
    if (auto it = streamed_.find(job); it != streamed_.end()) {
      for (const auto& o : it->second) deliver(o);
      streamed_.erase(it);
    }
  };
  const Nanos deadline = clock.now() + timeout;
  uint64_t last_done = UINT64_MAX;
  // Silence about the job (the coordinator restarted, or this client reconnected) is answered
  // by watching it again: a coordinator with a journal resumes the job under the same id.
  constexpr Nanos kRewatchAfter = 2 * kSeconds;
  uint64_t heard = heard_[job];
  Nanos last_heard = clock.now();
  auto forget = [&] {
    heard_.erase(job);
    streamed_.erase(job);
    if (auto it = watch_requests_.find(job); it != watch_requests_.end()) {
      request_errors_.erase(it->second);
      watch_requests_.erase(it);
    }
  };
  while (true) {
    drainStreamed();
    if (auto it = done_.find(job); it != done_.end()) {
      JobResult r = std::move(it->second);
      done_.erase(it);
      incarnations_.erase(job);
      progress_.erase(job);
      forget();
      for (const auto& o : r.outputs) deliver(o);  // those no progress frame carried
      if (on_progress) on_progress(r.progress);
      return r;
    }
    if (on_progress) {
      if (auto it = progress_.find(job); it != progress_.end() && it->second.done != last_done) {
        last_done = it->second.done;
        on_progress(it->second);
      }
    }
    // A refused watch (ours, or the caller's own watch()) ends the wait.
    if (auto w = watch_requests_.find(job); w != watch_requests_.end()) {
      if (auto it = request_errors_.find(w->second); it != request_errors_.end()) {
        Status st = it->second;
        forget();
        if (st.code() == StatusCode::kNotFound)
          return absl::NotFoundError(fmt::format(
              "the coordinator no longer knows job {} (restarted without --journal?): {}", job,
              st.message()));
        return st;
      }
    }
    const Nanos now = clock.now();
    if (now >= deadline) {
      forget();
      return absl::DeadlineExceededError("timed out waiting for the coordinator");
    }
    if (heard_[job] != heard) {
      heard = heard_[job];
      last_heard = now;
    } else if (now - last_heard >= kRewatchAfter) {
      (void)watch(job);
      last_heard = now;
    }
    if (auto st = pump(std::min(deadline, now + 250 * kMillis)); !st.ok()) return st;
  }
}

StatusOr<JobResult> Client::run(const JobSpec& job,
                                const std::function<void(const Progress&)>& on_progress,
                                Nanos timeout) {
  auto id = submitWithBackpressure(job, timeout);
  if (!id.ok()) return id.status();
  return wait(*id, on_progress, timeout);
}

Status Client::cancel(uint64_t job, Nanos timeout) {
  const uint64_t req = next_request_++;
  auto msg = newFrame();
  auto f = msg.root;
  auto c = f.initCancelJob();
  c.setRequestId(req);
  c.setJobId(job);
  send(msg.message);
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (true) {
    if (auto it = replies_.find(req); it != replies_.end()) {
      Status st = it->second.status();
      replies_.erase(it);
      return st;
    }
    if (auto st = pump(deadline); !st.ok()) return st;
  }
}

Status Client::watch(uint64_t job) {
  auto msg = newFrame();
  auto f = msg.root;
  auto w = f.initWatchJob();
  const uint64_t req = next_request_++;
  w.setRequestId(req);
  w.setJobId(job);
  // The coordinator answers NOT_FOUND if that id now names another incarnation's job.
  if (auto it = incarnations_.find(job); it != incarnations_.end()) w.setIncarnation(it->second);
  send(msg.message);
  if (auto it = watch_requests_.find(job); it != watch_requests_.end())
    request_errors_.erase(it->second);
  watch_requests_[job] = req;
  return absl::OkStatus();
}

StatusOr<ClusterInfo> Client::info(Nanos timeout) {
  const uint64_t req = next_request_++;
  auto msg = newFrame();
  auto f = msg.root;
  f.setStatsRequest(req);
  send(msg.message);
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (true) {
    if (auto it = stats_replies_.find(req); it != stats_replies_.end()) {
      auto r = it->second;
      stats_replies_.erase(it);
      return r;
    }
    if (auto st = pump(deadline); !st.ok()) return st;
  }
}

Status Client::waitForNodes(uint32_t nodes, Nanos timeout) {
  const Nanos deadline = SystemClock::instance().now() + timeout;
  while (true) {
    auto i = info(std::max<Nanos>(kSeconds, deadline - SystemClock::instance().now()));
    if (i.ok() && i->nodes_ready >= nodes) return absl::OkStatus();
    if (SystemClock::instance().now() >= deadline)
      return absl::DeadlineExceededError(
          fmt::format("only {} of {} nodes ready", i.ok() ? i->nodes_ready : 0, nodes));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace tokengate::client
