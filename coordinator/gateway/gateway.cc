// The Beast side of the gateway: listener, HTTP sessions, WebSocket sessions.
// Every Beast type lives in this one translation unit (they are slow to
// compile); protocol.cc holds the command logic.
//
// Threads: the io_context threads run the listener and the sessions, each
// session on its own strand. The coordinator loop thread only ever runs the
// ClusterControl callbacks and the event sink below, which post to a strand
// through LoopHandle and return.
#include "coordinator/gateway/gateway.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <bit>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "coordinator/gateway/access_policy.h"
#include "coordinator/gateway/connection_limits.h"
#include "coordinator/gateway/event_json.h"
#include "coordinator/gateway/fanout.h"
#include "coordinator/gateway/gateway_metrics.h"
#include "coordinator/gateway/protocol.h"
#include "coordinator/gateway/token_bucket.h"
#include "coordinator/gateway/url.h"
#include "coordinator/gateway/web_assets.h"

namespace tokengate::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace ssl = net::ssl;
namespace json = boost::json;
using tcp = net::ip::tcp;

void addTokenFromEnv(GatewayConfig& config) {
  const char* t = std::getenv("TG_GATEWAY_TOKEN");
  if (t != nullptr && *t != '\0') config.admin_tokens.emplace_back(t);
}

void addAllowedOriginsFromEnv(GatewayConfig& config) {
  const char* v = std::getenv("TG_GATEWAY_ALLOWED_ORIGINS");
  if (v == nullptr) return;
  for (auto& o : parseOriginList(v)) config.allowed_origins.push_back(std::move(o));
}

Status addLimitsFromEnv(GatewayConfig& c) {
  auto num = [](const char* name, auto& field) -> Status {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return absl::OkStatus();
    char* end = nullptr;
    double d = std::strtod(v, &end);
    if (end == v || *end != '\0' || !std::isfinite(d) || d < 0) {
      return absl::InvalidArgumentError(
          fmt::format("{}='{}' is not a non-negative number", name, v));
    }
    field = static_cast<std::remove_reference_t<decltype(field)>>(d);
    return absl::OkStatus();
  };
  for (Status st : {
           num("TG_GATEWAY_MAX_FRAME_BYTES", c.max_frame_bytes),
           num("TG_GATEWAY_MAX_WS_CLIENTS", c.max_ws_clients),
           num("TG_GATEWAY_COMMANDS_PER_S", c.commands_per_s),
           num("TG_GATEWAY_COMMAND_BURST", c.command_burst),
           num("TG_GATEWAY_MAX_QUEUED_BYTES", c.max_queued_bytes),
           num("TG_GATEWAY_AUTH_TIMEOUT_MS", c.auth_timeout_ms),
           num("TG_GATEWAY_MAX_UNAUTHENTICATED", c.max_unauthenticated),
           num("TG_GATEWAY_MAX_UNAUTHENTICATED_PER_IP", c.max_unauthenticated_per_ip),
           num("TG_GATEWAY_AUTH_FREE_FAILURES", c.auth_free_failures),
           num("TG_GATEWAY_AUTH_BACKOFF_BASE_MS", c.auth_backoff_base_ms),
           num("TG_GATEWAY_AUTH_BACKOFF_MAX_MS", c.auth_backoff_max_ms),
           num("TG_GATEWAY_IP_COMMANDS_PER_S", c.ip_commands_per_s),
           num("TG_GATEWAY_IP_COMMAND_BURST", c.ip_command_burst),
           num("TG_GATEWAY_MAX_OUTBOUND_BYTES", c.max_outbound_bytes),
           num("TG_GATEWAY_MAX_REPLY_BYTES", c.max_reply_bytes),
       }) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

namespace {

// How threads outside the gateway (the coordinator loop) reach it. Control
// callbacks and the event sink hold only this and weak session pointers:
// never an executor, timer or session reference of their own, because the
// coordinator may destroy a callback after the gateway's io_context is gone
// (a strand executor released then would touch freed Asio state). Posting
// is refused once the gateway closes the handle, which it does before
// destroying the io_context. The mutex is held only for a post.
class LoopHandle {
 public:
  void open(net::io_context::executor_type ex) {
    std::lock_guard lock(mu_);
    ex_.emplace(ex);
  }
  void close() {
    std::lock_guard lock(mu_);
    ex_.reset();
  }
  // Runs f on the io_context.
  template <typename F>
  bool post(F&& f) {
    std::lock_guard lock(mu_);
    if (!ex_) return false;
    net::post(*ex_, std::forward<F>(f));
    return true;
  }
  // Runs fn(session) on the session's strand if the gateway and the session
  // are both alive. The strong reference is taken and handed to the posted
  // handler under the lock, so it is never the last one on the caller's thread.
  template <typename Session, typename F>
  void postTo(const std::weak_ptr<Session>& weak, F&& fn) {
    std::lock_guard lock(mu_);
    if (!ex_) return;
    std::shared_ptr<Session> s = weak.lock();
    if (!s) return;
    auto ex = s->executor();
    net::post(ex, [s = std::move(s), fn = std::forward<F>(fn)]() mutable { fn(*s); });
  }

 private:
  std::mutex mu_;
  std::optional<net::io_context::executor_type> ex_;
};

// What the coordinator-side event sink touches. Shared with the sink, so a
// sink call racing with unsubscribe() during stop() never reads a destroyed
// gateway.
struct EventGate {
  EventGate(std::shared_ptr<LoopHandle> l, int64_t max_pending)
      : loop(std::move(l)), backlog(max_pending) {}
  std::shared_ptr<LoopHandle> loop;
  SessionRegistry sessions;
  FanoutBacklog backlog;
  std::shared_ptr<GatewayMetrics> metrics;
};

}  // namespace

using WsSessionBase = EventSubscriber;

// Shared state of a running gateway. Owned by Gateway; outlives every session
// (stop() destroys the io_context, and with it the sessions, first).
class Gateway::Impl {
 public:
  Impl(GatewayConfig config, control::ClusterControl& control);
  ~Impl() { stop(); }

  Status start();
  void stop();

  void addSession(uint64_t id, const std::shared_ptr<WsSessionBase>& s) {
    gate_->sessions.add(id, s);
    metrics_->ws_clients->Set(static_cast<double>(gate_->sessions.size()));
  }
  void removeSession(uint64_t id) {
    gate_->sessions.remove(id);
    metrics_->ws_clients->Set(static_cast<double>(gate_->sessions.size()));
  }
  size_t sessionCount() const { return gate_->sessions.size(); }
  void updateUnauthGauge() {
    metrics_->ws_unauthenticated->Set(static_cast<double>(limiter_.unauthenticated()));
  }
  // Session `victim` holds the most of the exhausted outbound budget.
  void evictForBudget(uint64_t victim) {
    if (auto s = gate_->sessions.find(victim)) s->evict("outbound budget exhausted");
  }
  void topicDelta(uint32_t bits, int delta) { gate_->sessions.topicDelta(bits, delta); }

  // The hello reply's "limits" object.
  json::object helloLimits() const {
    json::object lim;
    lim["max_frame_bytes"] = config_.max_frame_bytes;
    lim["commands_per_s"] = config_.commands_per_s;
    lim["command_burst"] = config_.command_burst;
    lim["max_queued_events"] = config_.max_queued_events;
    lim["max_queued_bytes"] = config_.max_queued_bytes;
    lim["max_reply_bytes"] = config_.max_reply_bytes;
    lim["ip_commands_per_s"] = config_.ip_commands_per_s;
    lim["ip_command_burst"] = config_.ip_command_burst;
    lim["auth_timeout_ms"] = config_.auth_timeout_ms;
    return lim;
  }

  GatewayConfig config_;
  control::ClusterControl& control_;
  const Clock& clock_;
  AccessPolicy policy_;
  ConnectionLimiter limiter_;
  AuthBackoff backoff_;
  KeyedRateLimiter ip_limiter_;
  OutboundBudget outbound_;
  std::shared_ptr<GatewayMetrics> metrics_;
  std::shared_ptr<LoopHandle> loop_ = std::make_shared<LoopHandle>();
  std::shared_ptr<EventGate> gate_;
  std::atomic<uint64_t> next_session_id_{1};
  uint64_t subscription_ = 0;
  bool subscribed_ = false;

  std::unique_ptr<net::io_context> ioc_;
  std::unique_ptr<ssl::context> ssl_ctx_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
  bool started_ = false, stopped_ = false;

 private:
  void doAccept();
};

namespace {

template <class Stream>
constexpr bool kIsSsl = !std::is_same_v<Stream, beast::tcp_stream>;

// One WebSocket connection. Owned by the handlers of its pending Beast
// operations (shared_from_this); runs only on its strand.
template <class Stream>
class WsSession final : public WsSessionBase {
 public:
  // The caller has taken this session's connection slot: an authenticated
  // one when `authenticated`, else an unauthenticated one for `ip`.
  WsSession(Stream&& stream, Gateway::Impl& gw, Role role, std::string ip, bool authenticated)
      : ws_(std::move(stream)),
        gw_(gw),
        hello_limits_(gw.helloLimits()),
        id_(gw.next_session_id_.fetch_add(1)),
        ip_(std::move(ip)),
        authenticated_(authenticated),
        bucket_(gw.config_.commands_per_s, gw.config_.command_burst, gw.clock_.now()) {
    state_.role = role;
  }

  ~WsSession() override {
    if (registered_) {
      gw_.removeSession(id_);
      gw_.topicDelta(topics.load(), -1);
    }
    if (authenticated_) {
      gw_.limiter_.releaseAuthenticated();
    } else {
      gw_.limiter_.releaseUnauthenticated(ip_);
      gw_.updateUnauthGauge();
    }
    gw_.outbound_.forget(id_);
    gw_.metrics_->outbound_bytes->Set(static_cast<double>(gw_.outbound_.total()));
  }

  void run(http::request<http::string_body> req) {
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds(30);
    if (!authenticated_) {
      gw_.updateUnauthGauge();
      t.handshake_timeout = std::chrono::milliseconds(std::max(1, gw_.config_.auth_timeout_ms));
      // Token-less anonymous viewers have no deadline; everyone else must
      // present a valid token in time.
      if (state_.role == Role::kNone) {
        auth_timer_.expires_after(
            std::chrono::milliseconds(std::max(1, gw_.config_.auth_timeout_ms)));
        auth_timer_.async_wait([self = self()](beast::error_code ec) {
          if (ec || self->authenticated_ || self->closing_) return;
          self->gw_.metrics_->auth_timeout->Increment();
          self->closeWith(websocket::close_code::policy_error, "authentication timeout");
        });
      }
    }
    t.idle_timeout = std::chrono::seconds(std::max(1, gw_.config_.idle_timeout_s));
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, kServerName); }));
    ws_.read_message_max(authenticated_ ? gw_.config_.max_frame_bytes
                                        : std::min(gw_.config_.max_frame_bytes,
                                                   gw_.config_.unauthenticated_max_frame_bytes));
    ws_.auto_fragment(false);
    ws_.async_accept(req, beast::bind_front_handler(&WsSession::onAccept, self()));
  }

  auto executor() { return ws_.get_executor(); }

  void deliverEvent(std::shared_ptr<const std::string> msg) override {
    net::post(ws_.get_executor(), [self = self(), msg = std::move(msg)]() mutable {
      self->enqueue(std::move(msg), true);
    });
  }

  void shutdown() override {
    net::post(ws_.get_executor(), [self = self()] {
      self->closeWith(websocket::close_code::going_away, "gateway stopping");
    });
  }

  void evict(const char* reason) override {
    net::post(ws_.get_executor(), [self = self(), reason] {
      if (self->closing_) return;
      self->gw_.metrics_->budget_closed->Increment();
      spdlog::warn("gateway: session {} holds the most of the exhausted outbound budget; closing",
                   self->id_);
      self->closeWith(websocket::close_code::policy_error, reason);
    });
  }

 private:
  std::shared_ptr<WsSession> self() {
    return std::static_pointer_cast<WsSession>(shared_from_this());
  }

  void onAccept(beast::error_code ec) {
    if (ec) return;
    registered_ = true;
    gw_.addSession(id_, shared_from_this());
    doRead();
  }

  void doRead() { ws_.async_read(buffer_, beast::bind_front_handler(&WsSession::onRead, self())); }

  void onRead(beast::error_code ec, size_t) {
    if (ec) {
      // message_too_big: Beast has already sent close 1009. Everything else
      // (closed, reset, timeout) just ends the session.
      if (ec == websocket::error::message_too_big) {
        spdlog::info("gateway: session {} sent an oversize frame; closed", id_);
      }
      closing_ = true;
      return;
    }
    if (!ws_.got_text()) {
      if (!rateLimited(std::chrono::steady_clock::now()))
        sendReply(json::value(nullptr),
                  absl::InvalidArgumentError("binary frames are not supported; send JSON text"),
                  "unknown", std::chrono::steady_clock::now());
    } else {
      std::string text = beast::buffers_to_string(buffer_.data());
      handleMessage(text);
    }
    buffer_.consume(buffer_.size());
    // A large frame must not pin its buffer for the session's lifetime.
    if (buffer_.capacity() > (64u << 10)) buffer_.shrink_to_fit();
    if (!closing_) doRead();
  }

  Status rateLimitError() const {
    return absl::ResourceExhaustedError(
        fmt::format("rate limit: at most {} commands/s per connection (burst {})",
                    gw_.config_.commands_per_s, gw_.config_.command_burst));
  }

  // Every frame (text or binary) takes a token from the connection's bucket
  // before anything else, so malformed frames (bad JSON, non-objects, bad ids,
  // binary) cannot bypass the limit. True if it was refused (reply sent).
  bool rateLimited(std::chrono::steady_clock::time_point t0) {
    std::optional<Status> refused = takeTokens();
    if (!refused) return false;
    sendReply(json::value(nullptr), *refused, "unknown", t0);
    return true;
  }

  // Takes one token from the connection's bucket and one from its source
  // address's; the error when either is empty.
  std::optional<Status> takeTokens() {
    const Nanos now = gw_.clock_.now();
    if (!bucket_.take(now)) {
      gw_.metrics_->rate_limited->Increment();
      return rateLimitError();
    }
    if (!gw_.ip_limiter_.take(ip_, now)) {
      gw_.metrics_->ip_rate_limited->Increment();
      return absl::ResourceExhaustedError(
          fmt::format("rate limit: at most {} commands/s per source address (burst {})",
                      gw_.config_.ip_commands_per_s, gw_.config_.ip_command_burst));
    }
    return std::nullopt;
  }

  void handleMessage(const std::string& text) {
    auto t0 = std::chrono::steady_clock::now();
    // Every frame counts against the bucket, taken before any parsing so that
    // malformed frames (bad JSON, non-objects, bad ids) cannot bypass it. The
    // frame is still parsed (bounded by max_frame_bytes, nothing reaches the
    // coordinator) only to echo its id in the refusal.
    const std::optional<Status> refused = takeTokens();
    json::value id;
    StatusOr<Request> parsed = parseRequest(text, &id);
    if (refused) return sendReply(id, *refused, "unknown", t0);
    if (!parsed.ok()) return sendReply(id, parsed.status(), "unknown", t0);
    Request& req = *parsed;
    if (Status st = checkRole(*req.info, state_.role); !st.ok()) {
      return sendReply(req.id, st, req.cmd, t0);
    }
    if (req.info->session_level) return handleSessionCommand(req, t0);

    // A coordinator command. The reply comes back on the coordinator thread;
    // post it to this strand. A timer answers for a coordinator that never
    // does; whichever of the two finds the request still pending replies.
    uint64_t seq = ++next_seq_;
    auto timer = std::make_shared<net::steady_timer>(ws_.get_executor());
    timer->expires_after(std::chrono::milliseconds(gw_.config_.command_timeout_ms));
    pending_.emplace(seq, timer);
    timer->async_wait([self = self(), seq, id = req.id, cmd = req.cmd, t0](beast::error_code ec) {
      if (ec || self->pending_.erase(seq) == 0) return;
      self->sendReply(id, absl::UnavailableError("the coordinator did not answer in time"), cmd,
                      t0);
    });
    std::weak_ptr<WsSession> weak = self();
    CommandLimits limits;
    limits.max_reply_bytes = gw_.config_.max_reply_bytes;
    runControlCommand(
        req.cmd, req.body, gw_.control_,
        [weak, loop = gw_.loop_, seq, id = req.id, cmd = req.cmd,
         t0](StatusOr<json::value> r) mutable {
          loop->postTo(weak, [seq, id = std::move(id), cmd = std::move(cmd), t0,
                              r = std::move(r)](WsSession& s) mutable {
            s.onControlResult(seq, id, cmd, t0, std::move(r));
          });
        },
        limits);
  }

  void onControlResult(uint64_t seq, const json::value& id, const std::string& cmd,
                       std::chrono::steady_clock::time_point t0, StatusOr<json::value> r) {
    auto it = pending_.find(seq);
    if (it == pending_.end()) return;  // timed out already
    it->second->cancel();
    pending_.erase(it);
    if (r.ok()) {
      sendResult(id, std::move(*r), cmd, t0);
    } else {
      sendReply(id, r.status(), cmd, t0);
    }
  }

  void handleSessionCommand(const Request& req, std::chrono::steady_clock::time_point t0) {
    const json::value* token = req.body.if_contains("token");
    if (token != nullptr && !token->is_null()) {
      // A token attempt from an address in back-off is not even checked.
      if (Nanos wait = gw_.backoff_.blockedFor(ip_, gw_.clock_.now()); wait > 0) {
        gw_.metrics_->auth_backoff->Increment();
        return sendReply(req.id,
                         absl::ResourceExhaustedError(fmt::format(
                             "too many failed authentication attempts from your address; "
                             "retry in {} ms",
                             (wait + kMillis - 1) / kMillis)),
                         req.cmd, t0);
      }
    }
    SessionState before = state_;
    SessionOutcome out = runSessionCommand(req, state_, gw_.policy_, hello_limits_);
    if (out.token_accepted) {
      gw_.backoff_.onSuccess(ip_);
      if (!authenticated_) {
        if (gw_.limiter_.promote(ip_) != ConnectionLimiter::Result::kOk) {
          state_ = before;
          gw_.metrics_->too_many_clients->Increment();
          sendReply(req.id, absl::ResourceExhaustedError("too many WebSocket clients"), req.cmd,
                    t0);
          return closeWith(websocket::close_code::try_again_later, "too many clients");
        }
        authenticated_ = true;
        gw_.updateUnauthGauge();
        auth_timer_.cancel();
        ws_.read_message_max(gw_.config_.max_frame_bytes);
      }
    }
    if (out.auth_failed) gw_.backoff_.onFailure(ip_, gw_.clock_.now());
    if (out.topics_after != out.topics_before) {
      topics.store(out.topics_after);
      if (registered_) {
        gw_.topicDelta(out.topics_after & ~out.topics_before, +1);
        gw_.topicDelta(out.topics_before & ~out.topics_after, -1);
      }
    }
    if (out.reply.ok()) {
      sendResult(req.id, std::move(*out.reply), req.cmd, t0);
    } else {
      sendReply(req.id, out.reply.status(), req.cmd, t0);
    }
    if (out.auth_failed) {
      gw_.metrics_->auth_failures->Increment();
      if (++auth_failures_ >= 5) {
        closeWith(websocket::close_code::policy_error, "too many authentication failures");
      }
    }
  }

  void sendResult(const json::value& id, json::value result, const std::string& cmd,
                  std::chrono::steady_clock::time_point t0) {
    auto text = std::make_shared<const std::string>(okReply(id, std::move(result)));
    if (text->size() > gw_.config_.max_reply_bytes) {
      // No reply is larger than max_reply_bytes (docs/protocol.md); job.status pages stop short
      // of it, so this is a list too long for one reply.
      gw_.metrics_->reply_too_large->Increment();
      return sendReply(id,
                       absl::ResourceExhaustedError(
                           fmt::format("the reply would be {} bytes, over max_reply_bytes ({})",
                                       text->size(), gw_.config_.max_reply_bytes)),
                       cmd, t0);
    }
    gw_.metrics_->observeCommand(cmd, t0);
    enqueue(std::move(text), false);
  }

  void sendReply(const json::value& id, const Status& status, const std::string& cmd,
                 std::chrono::steady_clock::time_point t0) {
    gw_.metrics_->observeCommand(cmd, t0);
    gw_.metrics_->countError(errorCodeName(status.code()));
    enqueue(std::make_shared<const std::string>(errorReply(id, status)), false);
  }

  // Bounded outbound queue. Events beyond max_queued_events are dropped (and
  // counted; the client later gets a "gap" event saying how many). Replies
  // are never dropped, but a client that lets max_queued_bytes pile up is
  // disconnected: it is not reading.
  void enqueue(std::shared_ptr<const std::string> msg, bool is_event) {
    if (closing_) return;
    const auto& cfg = gw_.config_;
    if (is_event) {
      if (queued_events_ >= cfg.max_queued_events ||
          queued_bytes_ + msg->size() > cfg.max_queued_bytes) {
        ++dropped_;
        gw_.metrics_->events_dropped_slow->Increment();
        return;
      }
      if (dropped_ > 0) {
        json::object d;
        d["dropped"] = dropped_;
        push(std::make_shared<const std::string>(eventMessage("gap", d)), false);
        dropped_ = 0;
      }
      gw_.metrics_->events_sent->Increment();
    } else if (queued_bytes_ + msg->size() > cfg.max_queued_bytes) {
      gw_.metrics_->slow_closed->Increment();
      spdlog::warn("gateway: session {} is not reading its replies; closing", id_);
      closeWith(websocket::close_code::policy_error, "outbound queue overflow");
      return;
    }
    push(std::move(msg), is_event);
  }

  void push(std::shared_ptr<const std::string> msg, bool is_event) {
    queued_bytes_ += msg->size();
    std::optional<uint64_t> victim = gw_.outbound_.add(id_, msg->size());
    gw_.metrics_->outbound_bytes->Set(static_cast<double>(gw_.outbound_.total()));
    if (is_event) ++queued_events_;
    queue_.push_back({std::move(msg), is_event});
    if (victim) {
      if (*victim == id_) {
        gw_.metrics_->budget_closed->Increment();
        spdlog::warn("gateway: session {} holds the most of the exhausted outbound budget; closing",
                     id_);
        return closeWith(websocket::close_code::policy_error, "outbound budget exhausted");
      }
      gw_.evictForBudget(*victim);
    }
    if (!writing_) doWrite();
  }

  void doWrite() {
    writing_ = true;
    ws_.text(true);
    ws_.async_write(net::buffer(*queue_.front().msg),
                    beast::bind_front_handler(&WsSession::onWrite, self()));
  }

  void onWrite(beast::error_code ec, size_t) {
    const Outgoing& done = queue_.front();
    queued_bytes_ -= done.msg->size();
    gw_.outbound_.remove(id_, done.msg->size());
    gw_.metrics_->outbound_bytes->Set(static_cast<double>(gw_.outbound_.total()));
    if (done.is_event) --queued_events_;
    queue_.pop_front();
    if (ec) {
      writing_ = false;
      closing_ = true;
      dropQueued();
      return;
    }
    if (!queue_.empty() && !closing_) {
      doWrite();
    } else {
      writing_ = false;
    }
  }

  // Drops every queued message but the one being written (Beast owns its buffer).
  void dropQueued() {
    size_t keep = writing_ ? 1 : 0;
    while (queue_.size() > keep) {
      const Outgoing& o = queue_.back();
      queued_bytes_ -= o.msg->size();
      if (o.is_event) --queued_events_;
      gw_.outbound_.remove(id_, o.msg->size());
      queue_.pop_back();
    }
    gw_.metrics_->outbound_bytes->Set(static_cast<double>(gw_.outbound_.total()));
  }

  // Sends a close frame with `reason` after the message being written, drops
  // the rest, and closes the socket a second later whatever the peer does (a
  // client that reads nothing never lets the close frame out).
  void closeWith(websocket::close_code code, const char* reason) {
    if (closing_) return;
    closing_ = true;
    dropQueued();
    auth_timer_.cancel();
    close_timer_.expires_after(std::chrono::seconds(1));
    close_timer_.async_wait([self = self()](beast::error_code ec) {
      if (ec) return;
      beast::error_code ignored;
      beast::get_lowest_layer(self->ws_).socket().close(ignored);
    });
    ws_.async_close(websocket::close_reason(code, reason),
                    [self = self()](beast::error_code) { self->close_timer_.cancel(); });
  }

  struct Outgoing {
    std::shared_ptr<const std::string> msg;
    bool is_event;
  };

  websocket::stream<Stream> ws_;
  Gateway::Impl& gw_;
  const json::object hello_limits_;
  SessionState state_;
  const uint64_t id_;
  const std::string ip_;
  bool authenticated_;  // holds an authenticated slot (else an unauthenticated one)
  net::steady_timer auth_timer_{ws_.get_executor()};
  net::steady_timer close_timer_{ws_.get_executor()};
  TokenBucket bucket_;
  beast::flat_buffer buffer_;
  std::deque<Outgoing> queue_;
  size_t queued_bytes_ = 0, queued_events_ = 0;
  uint64_t dropped_ = 0;
  bool writing_ = false, closing_ = false, registered_ = false;
  int auth_failures_ = 0;
  uint64_t next_seq_ = 0;
  std::unordered_map<uint64_t, std::shared_ptr<net::steady_timer>> pending_;
};

// One HTTP connection (keep-alive); hands itself over to a WsSession on an
// upgrade to /ws. Owned by its pending operations; runs on its strand.
template <class Stream>
class HttpSession final : public std::enable_shared_from_this<HttpSession<Stream>> {
 public:
  template <typename... Args>
  HttpSession(Gateway::Impl& gw, Args&&... args) : gw_(gw), stream_(std::forward<Args>(args)...) {}

  void run() {
    if constexpr (kIsSsl<Stream>) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (!ec) self->doRead();
                              });
    } else {
      net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->doRead(); });
    }
  }

 private:
  using Response = http::response<http::string_body>;

  void doRead() {
    parser_.emplace();
    parser_->header_limit(16 * 1024);
    parser_->body_limit(64 * 1024);
    // A request (an upgrade included) must arrive within the auth timeout, so
    // idle pre-upgrade connections cost little.
    beast::get_lowest_layer(stream_).expires_after(
        std::chrono::milliseconds(std::max(1000, gw_.config_.auth_timeout_ms)));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->onRead(ec); });
  }

  void onRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream) return doShutdown();
    if (ec) return;
    req_ = parser_->release();
    std::string_view target(req_.target().data(), req_.target().size());
    std::string_view path = pathOf(target);

    if (websocket::is_upgrade(req_)) {
      countHttp("/ws");
      if (path != "/ws")
        return respond(text(http::status::not_found, "no WebSocket here; use /ws\n"));
      auto origin = req_[http::field::origin];
      auto host = req_[http::field::host];
      if (!origin.empty() &&
          !gw_.policy_.originAllowed(std::string_view(origin.data(), origin.size()),
                                     std::string_view(host.data(), host.size()), kIsSsl<Stream>)) {
        gw_.metrics_->origin_refused->Increment();
        return respond(text(http::status::forbidden, "origin not allowed\n"), true);
      }
      Role role = gw_.policy_.initialRole();
      std::string token = queryParam(target, "token");
      auto authz = req_[http::field::authorization];
      if (!authz.empty()) {
        std::optional<std::string> bearer =
            bearerToken(std::string_view(authz.data(), authz.size()));
        if (!bearer) {
          return respond(
              text(http::status::unauthorized, "Authorization must be 'Bearer <token>'\n"), true);
        }
        token = std::move(*bearer);
      }
      const std::string ip = remoteAddress();
      bool authenticated = false;
      if (!token.empty()) {
        if (Nanos wait = gw_.backoff_.blockedFor(ip, gw_.clock_.now()); wait > 0) {
          gw_.metrics_->auth_backoff->Increment();
          auto res = text(http::status::too_many_requests,
                          "too many failed authentication attempts from your address\n");
          res.set(http::field::retry_after, std::to_string((wait + kSeconds - 1) / kSeconds));
          return respond(std::move(res), true);
        }
        Role r = gw_.policy_.roleForToken(token);
        if (r == Role::kNone) {
          gw_.metrics_->auth_failures->Increment();
          gw_.backoff_.onFailure(ip, gw_.clock_.now());
          return respond(text(http::status::unauthorized, "invalid token\n"), true);
        }
        gw_.backoff_.onSuccess(ip);
        role = higherRole(role, r);
        authenticated = true;
      }
      using R = ConnectionLimiter::Result;
      R admitted =
          authenticated ? gw_.limiter_.admitAuthenticated() : gw_.limiter_.admitUnauthenticated(ip);
      if (admitted != R::kOk) {
        const char* why = "too many WebSocket clients\n";
        if (admitted == R::kTooManyClients) {
          gw_.metrics_->too_many_clients->Increment();
        } else {
          gw_.metrics_->too_many_unauthenticated->Increment();
          why = admitted == R::kTooManyFromAddress
                    ? "too many unauthenticated WebSocket clients from your address\n"
                    : "too many unauthenticated WebSocket clients; present a token in the "
                      "upgrade request\n";
        }
        return respond(text(http::status::service_unavailable, why), true);
      }
      beast::get_lowest_layer(stream_).expires_never();
      std::make_shared<WsSession<Stream>>(std::move(stream_), gw_, role, ip, authenticated)
          ->run(std::move(req_));
      return;
    }

    if (req_.method() != http::verb::get && req_.method() != http::verb::head) {
      countHttp("other");
      auto res = text(http::status::method_not_allowed, "only GET\n");
      res.set(http::field::allow, "GET, HEAD");
      return respond(std::move(res));
    }
    if (path == "/metrics") {
      countHttp("/metrics");
      auto res = text(http::status::ok, gw_.metrics_->text());
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      return respond(std::move(res));
    }
    if (path == "/healthz") {
      countHttp("/healthz");
      return respond(text(http::status::ok, "ok\n"));
    }
    if (path == "/ws") {
      countHttp("/ws");
      auto res = text(http::status::upgrade_required, "/ws is a WebSocket endpoint\n");
      res.set(http::field::upgrade, "websocket");
      return respond(std::move(res));
    }
    if (path == "/readyz") {
      countHttp("/readyz");
      return readyz();
    }
    countHttp(path == "/" || findWebAsset(path) != nullptr ? "static" : "other");
    serveStatic(path);
  }

  // Ready when the coordinator answers stats() and has config_.ready_min_nodes ready nodes.
  // The timer (a member, so only strand code touches it) answers for a
  // coordinator that does not; ready_seq_ tells a late answer from a current
  // one on a keep-alive connection.
  void readyz() {
    uint64_t seq = ++ready_seq_;
    ready_timer_.expires_after(std::chrono::seconds(2));
    ready_timer_.async_wait([self = this->shared_from_this(), seq](beast::error_code ec) {
      if (ec || self->ready_answered_ >= seq) return;
      self->ready_answered_ = seq;
      self->respond(self->text(http::status::service_unavailable, "coordinator not answering\n"));
    });
    std::weak_ptr<HttpSession> weak = this->shared_from_this();
    gw_.control_.stats([weak, loop = gw_.loop_, seq](StatusOr<control::ClusterStats> s) mutable {
      loop->postTo(weak, [seq, s = std::move(s)](HttpSession& self) { self.onReady(seq, s); });
    });
  }

  void onReady(uint64_t seq, const StatusOr<control::ClusterStats>& s) {
    if (ready_answered_ >= seq) return;
    ready_answered_ = seq;
    ready_timer_.cancel();
    if (!s.ok()) {
      return respond(text(http::status::service_unavailable,
                          "not ready: " + std::string(s.status().message()) + "\n"));
    }
    if (s->nodes_ready < gw_.config_.ready_min_nodes) {
      return respond(text(http::status::service_unavailable,
                          fmt::format("not ready: {} of {} node(s) ready\n", s->nodes_ready,
                                      gw_.config_.ready_min_nodes)));
    }
    respond(text(http::status::ok, fmt::format("ready: {} node(s)\n", s->nodes_ready)));
  }

 public:
  auto executor() { return stream_.get_executor(); }

 private:
  void serveStatic(std::string_view path) {
    if (path == "/") path = "/index.html";
    if (!gw_.config_.web_root.empty()) {
      // Development override: files from disk, no path escapes.
      if (path.find("..") != std::string_view::npos || path.find('\\') != std::string_view::npos) {
        return respond(text(http::status::bad_request, "bad path\n"));
      }
      std::ifstream f(std::filesystem::path(gw_.config_.web_root) / std::string(path.substr(1)),
                      std::ios::binary);
      if (!f) return respond(text(http::status::not_found, "not found\n"));
      std::ostringstream ss;
      ss << f.rdbuf();
      auto res = text(http::status::ok, ss.str());
      res.set(http::field::content_type, contentTypeFor(path));
      return respond(std::move(res));
    }
    const WebAsset* a = findWebAsset(path);
    if (a == nullptr) return respond(text(http::status::not_found, "not found\n"));
    auto res = text(http::status::ok, std::string(a->body));
    res.set(http::field::content_type, contentTypeFor(a->path));
    res.set(http::field::cache_control, "no-cache");
    res.set("Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; "
            "img-src 'self' data:; "
            "frame-ancestors 'none'");
    res.set("X-Content-Type-Options", "nosniff");
    respond(std::move(res));
  }

  Response text(http::status st, std::string body) {
    Response res{st, req_.version()};
    res.set(http::field::server, kServerName);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.keep_alive(req_.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
  }

  void respond(Response res, bool close = false) {
    if (close) res.keep_alive(false);
    if (req_.method() == http::verb::head) {
      res.content_length(res.body().size());
      res.body().clear();
    }
    auto sp = std::make_shared<Response>(std::move(res));
    bool keep = sp->keep_alive();
    http::async_write(stream_, *sp,
                      [self = this->shared_from_this(), sp, keep](beast::error_code ec, size_t) {
                        if (ec) return;
                        if (!keep) return self->doShutdown();
                        self->doRead();
                      });
  }

  void doShutdown() {
    if constexpr (kIsSsl<Stream>) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  }

  void countHttp(const char* path) { gw_.metrics_->countHttp(path); }

  std::string remoteAddress() {
    beast::error_code ec;
    auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    return ec ? std::string("unknown") : ep.address().to_string();
  }

  Gateway::Impl& gw_;
  Stream stream_;
  net::steady_timer ready_timer_{stream_.get_executor()};
  uint64_t ready_seq_ = 0, ready_answered_ = 0;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
};

}  // namespace

Gateway::Impl::Impl(GatewayConfig config, control::ClusterControl& control)
    : config_(std::move(config)),
      control_(control),
      clock_(config_.clock != nullptr ? *config_.clock : SystemClock::instance()),
      policy_(config_.viewer_tokens, config_.operator_tokens, config_.admin_tokens,
              config_.allow_anonymous_read, config_.allowed_origins),
      limiter_(config_.max_ws_clients, config_.max_unauthenticated,
               config_.max_unauthenticated_per_ip),
      backoff_(config_.auth_free_failures, config_.auth_backoff_base_ms * kMillis,
               config_.auth_backoff_max_ms * kMillis),
      ip_limiter_(config_.ip_commands_per_s, config_.ip_command_burst),
      outbound_(config_.max_outbound_bytes),
      metrics_(std::make_shared<GatewayMetrics>(control.metricsRegistry())),
      gate_(std::make_shared<EventGate>(loop_, static_cast<int64_t>(config_.max_pending_fanouts))) {
  config_.threads = std::clamp(config_.threads, 1, 2);
  metrics_->ws_clients->Set(0);
  gate_->metrics = metrics_;
}

Status Gateway::Impl::start() {
  if (started_) return absl::FailedPreconditionError("gateway already started");
  started_ = true;
  if (!config_.tls_cert_file.empty() || !config_.tls_key_file.empty()) {
    ssl_ctx_ = std::make_unique<ssl::context>(ssl::context::tls_server);
    ssl_ctx_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                          ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                          ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    ssl_ctx_->use_certificate_chain_file(config_.tls_cert_file, ec);
    if (!ec) ssl_ctx_->use_private_key_file(config_.tls_key_file, ssl::context::pem, ec);
    if (ec) {
      return absl::InvalidArgumentError(fmt::format("gateway TLS: cannot load {} / {}: {}",
                                                    config_.tls_cert_file, config_.tls_key_file,
                                                    ec.message()));
    }
  }
  ioc_ = std::make_unique<net::io_context>(config_.threads);
  boost::system::error_code ec;
  auto addr = net::ip::make_address(config_.bind_address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        fmt::format("gateway: bad bind address '{}': {}", config_.bind_address, ec.message()));
  }
  tcp::endpoint ep(addr, config_.port);
  acceptor_ = std::make_unique<tcp::acceptor>(net::make_strand(*ioc_));
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(fmt::format("gateway: cannot listen on {}:{}: {}",
                                              config_.bind_address, config_.port, ec.message()));
  }
  port_ = acceptor_->local_endpoint().port();

  // The sink runs on the coordinator thread: skip topics nobody wants,
  // serialize once, post the fan-out and return. A full fan-out backlog
  // drops the event rather than queueing without bound.
  loop_->open(ioc_->get_executor());
  subscription_ = control_.subscribe([gate = gate_](const control::Event& e) {
    std::optional<uint32_t> bit = topicBit(control::eventTopic(e));
    if (!bit || !gate->sessions.wanted(*bit)) return;
    if (!gate->backlog.tryReserve()) {
      gate->metrics->events_dropped_overload->Increment();
      return;
    }
    auto msg = std::make_shared<const std::string>(eventMessage(e));
    // The gate (shared) outlives the io_context's handlers.
    if (!gate->loop->post([gate, b = *bit, msg] {
          gate->backlog.release();
          gate->sessions.fanOut(b, msg);
        })) {
      gate->backlog.release();
    }
  });
  subscribed_ = true;

  doAccept();
  for (int i = 0; i < config_.threads; ++i) {
    threads_.emplace_back([this] { ioc_->run(); });
  }
  spdlog::info("gateway: listening on {}://{}:{}/ (WebSocket /ws, /metrics)",
               ssl_ctx_ ? "https" : "http", config_.bind_address, port_);
  return absl::OkStatus();
}

void Gateway::Impl::doAccept() {
  acceptor_->async_accept(net::make_strand(*ioc_), [this](beast::error_code ec, tcp::socket sock) {
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor_->is_open()) return;
      spdlog::warn("gateway: accept: {}", ec.message());
    } else {
      sock.set_option(tcp::no_delay(true), ec);
      if (ssl_ctx_) {
        std::make_shared<HttpSession<beast::ssl_stream<beast::tcp_stream>>>(*this, std::move(sock),
                                                                            *ssl_ctx_)
            ->run();
      } else {
        std::make_shared<HttpSession<beast::tcp_stream>>(*this, std::move(sock))->run();
      }
    }
    doAccept();
  });
}

void Gateway::Impl::stop() {
  if (!ioc_ || stopped_) return;  // never started, or start() failed before the loop existed
  stopped_ = true;
  if (subscribed_) control_.unsubscribe(subscription_);
  net::post(acceptor_->get_executor(), [this] {
    beast::error_code ec;
    acceptor_->close(ec);
  });
  std::vector<std::shared_ptr<WsSessionBase>> open = gate_->sessions.live();
  for (auto& s : open) s->shutdown();
  open.clear();
  // Give the close frames a moment, then stop hard.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (sessionCount() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  loop_->close();
  ioc_->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  acceptor_.reset();
  ioc_.reset();  // destroys the remaining sessions while the registry is alive
  metrics_->ws_clients->Set(0);
}

Gateway::Gateway(GatewayConfig config, control::ClusterControl& control)
    : impl_(std::make_unique<Impl>(std::move(config), control)) {}
Gateway::~Gateway() = default;
Status Gateway::start() { return impl_->start(); }
void Gateway::stop() { impl_->stop(); }
uint16_t Gateway::port() const { return impl_->port_; }
size_t Gateway::wsClients() const { return impl_->sessionCount(); }

}  // namespace tokengate::gateway
