// The Beast side of the gateway: listener, HTTP sessions, WebSocket sessions.
// Every Beast type lives in this one translation unit (they are slow to
// compile); protocol.cc holds the command logic.
//
// Threads: the io_context threads run the listener and the sessions, each
// session on its own strand. The coordinator loop thread only ever runs the
// ClusterControl callbacks and the event sink below, which post to a strand
// through LoopHandle and return.
#include "coordinator/gateway/gateway.h"

#include <openssl/crypto.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/text_serializer.h>
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
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "coordinator/gateway/event_json.h"
#include "coordinator/gateway/protocol.h"
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

std::vector<std::string> parseOriginList(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front())))
      item.remove_prefix(1);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back())))
      item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

void addAllowedOriginsFromEnv(GatewayConfig& config) {
  const char* v = std::getenv("TG_GATEWAY_ALLOWED_ORIGINS");
  if (v == nullptr) return;
  for (auto& o : parseOriginList(v)) config.allowed_origins.push_back(std::move(o));
}

namespace {

constexpr std::string_view kServerName = "tokengate-gateway/1";

// Origins compare case-insensitively (scheme and host are), without a trailing '/'.
std::string normalizeOrigin(std::string_view o) {
  while (!o.empty() && o.back() == '/') o.remove_suffix(1);
  std::string out(o);
  for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

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
  std::shared_ptr<LoopHandle> loop;
  std::atomic<int> topic_subscribers[4] = {0, 0, 0, 0};
  std::atomic<int64_t> pending_fanouts{0};
  int64_t max_pending_fanouts = 0;
  std::shared_ptr<prometheus::Registry> registry;  // keeps the counter below alive
  prometheus::Counter* dropped_overload = nullptr;
};

class TokenBucket {
 public:
  TokenBucket(double rate, double burst, Nanos now)
      : rate_(rate), burst_(std::max(1.0, burst)), tokens_(burst_), last_(now) {}
  bool take(Nanos now) {
    if (rate_ <= 0) return true;
    tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now - last_) / 1e9);
    last_ = now;
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

 private:
  double rate_, burst_, tokens_;
  Nanos last_;
};

std::string_view pathOf(std::string_view target) {
  auto q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

std::string percentDecode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

std::string queryParam(std::string_view target, std::string_view key) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return {};
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view kv = rest.substr(0, amp);
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == key && eq != std::string_view::npos) {
      return percentDecode(kv.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return {};
}

bool constantTimeEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

// What the fan-out and stop() need from a WebSocket session, whatever its
// stream type. deliverEvent() and shutdown() may be called from any thread:
// they post to the session's strand.
class WsSessionBase : public std::enable_shared_from_this<WsSessionBase> {
 public:
  virtual ~WsSessionBase() = default;
  virtual void deliverEvent(std::shared_ptr<const std::string> msg) = 0;
  virtual void shutdown() = 0;
  std::atomic<uint32_t> topics{0};
};

// Shared state of a running gateway. Owned by Gateway; outlives every session
// (stop() destroys the io_context, and with it the sessions, first).
class Gateway::Impl {
 public:
  Impl(GatewayConfig config, control::ClusterControl& control);
  ~Impl() { stop(); }

  Status start();
  void stop();

  // Highest role whose token matches; kNone when none does.
  Role roleForToken(std::string_view token) const {
    Role best = Role::kNone;
    auto scan = [&](const std::vector<std::string>& tokens, Role r) {
      for (const auto& t : tokens) {
        if (!t.empty() && constantTimeEquals(t, token) && r > best) best = r;
      }
    };
    scan(config_.viewer_tokens, Role::kViewer);
    scan(config_.operator_tokens, Role::kOperator);
    scan(config_.admin_tokens, Role::kAdmin);
    return best;
  }
  Role initialRole() const { return config_.allow_anonymous_read ? Role::kViewer : Role::kNone; }
  bool originAllowed(std::string_view origin, std::string_view host) const;

  void addSession(uint64_t id, const std::shared_ptr<WsSessionBase>& s) {
    std::lock_guard lock(sessions_mu_);
    sessions_[id] = s;
    ws_clients_->Set(static_cast<double>(sessions_.size()));
  }
  void removeSession(uint64_t id) {
    std::lock_guard lock(sessions_mu_);
    sessions_.erase(id);
    ws_clients_->Set(static_cast<double>(sessions_.size()));
  }
  size_t sessionCount() const {
    std::lock_guard lock(sessions_mu_);
    return sessions_.size();
  }
  // Subscriber counts per topic bit, so the coordinator-side sink can skip
  // serializing events nobody listens to.
  void topicDelta(uint32_t bits, int delta) {
    for (int i = 0; i < 4; ++i) {
      if (bits & (1u << i)) gate_->topic_subscribers[i].fetch_add(delta);
    }
  }
  void fanOut(uint32_t bit, const std::shared_ptr<const std::string>& msg);

  void observeCommand(std::string_view cmd, std::chrono::steady_clock::time_point t0) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto it = cmd_latency_.find(cmd);
    if (it == cmd_latency_.end()) it = cmd_latency_.find("unknown");
    it->second->Observe(s);
  }
  void countError(const std::string& code) {
    std::lock_guard lock(metrics_mu_);
    auto it = errors_.find(code);
    if (it == errors_.end()) {
      it = errors_.emplace(code, &errors_family_->Add({{"code", code}})).first;
    }
    it->second->Increment();
  }
  std::string metricsText() const {
    prometheus::TextSerializer ser;
    return ser.Serialize(registry_->Collect());
  }

  GatewayConfig config_;
  control::ClusterControl& control_;
  const Clock& clock_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<LoopHandle> loop_ = std::make_shared<LoopHandle>();

  // Metrics (owned by the registry).
  prometheus::Gauge* ws_clients_ = nullptr;
  std::map<std::string, prometheus::Histogram*, std::less<>> cmd_latency_;
  prometheus::Family<prometheus::Counter>* errors_family_ = nullptr;
  std::map<std::string, prometheus::Counter*> errors_;
  prometheus::Counter* events_sent_ = nullptr;
  prometheus::Counter* events_dropped_slow_ = nullptr;
  prometheus::Counter* events_dropped_overload_ = nullptr;
  prometheus::Counter* slow_closed_ = nullptr;
  prometheus::Counter* auth_failures_ = nullptr;
  prometheus::Counter* rate_limited_ = nullptr;
  prometheus::Counter* origin_refused_ = nullptr;
  prometheus::Counter* too_many_clients_ = nullptr;
  prometheus::Family<prometheus::Counter>* http_family_ = nullptr;

  std::shared_ptr<EventGate> gate_ = std::make_shared<EventGate>();
  std::atomic<uint64_t> next_session_id_{1};
  uint64_t subscription_ = 0;
  bool subscribed_ = false;

  std::unique_ptr<net::io_context> ioc_;
  std::unique_ptr<ssl::context> ssl_ctx_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
  bool started_ = false, stopped_ = false;

  mutable std::mutex metrics_mu_;
  mutable std::mutex sessions_mu_;
  std::unordered_map<uint64_t, std::weak_ptr<WsSessionBase>> sessions_;  // guarded by sessions_mu_

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
  WsSession(Stream&& stream, Gateway::Impl& gw, Role role)
      : ws_(std::move(stream)),
        gw_(gw),
        role_(role),
        id_(gw.next_session_id_.fetch_add(1)),
        bucket_(gw.config_.commands_per_s, gw.config_.command_burst, gw.clock_.now()) {}

  ~WsSession() override {
    if (registered_) {
      gw_.removeSession(id_);
      gw_.topicDelta(topics.load(), -1);
    }
  }

  void run(http::request<http::string_body> req) {
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds(30);
    t.idle_timeout = std::chrono::seconds(std::max(1, gw_.config_.idle_timeout_s));
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, kServerName); }));
    ws_.read_message_max(gw_.config_.max_frame_bytes);
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
    if (bucket_.take(gw_.clock_.now())) return false;
    gw_.rate_limited_->Increment();
    sendReply(json::value(nullptr), rateLimitError(), "unknown", t0);
    return true;
  }

  void handleMessage(const std::string& text) {
    auto t0 = std::chrono::steady_clock::now();
    json::value id = nullptr;
    // Every frame counts against the bucket, taken before any parsing so that
    // malformed frames (bad JSON, non-objects, bad ids) cannot bypass it. The
    // frame is still parsed (bounded by max_frame_bytes, nothing reaches the
    // coordinator) only to echo its id in the refusal.
    const bool allowed = bucket_.take(gw_.clock_.now());
    auto refuse = [&](Status st) {
      if (!allowed) {
        gw_.rate_limited_->Increment();
        st = rateLimitError();
      }
      sendReply(id, st, "unknown", t0);
    };
    boost::system::error_code jec;
    json::parse_options opts;
    opts.max_depth = 64;
    json::value v = json::parse(text, jec, {}, opts);
    if (jec) return refuse(absl::InvalidArgumentError("invalid JSON: " + jec.message()));
    if (!v.is_object())
      return refuse(absl::InvalidArgumentError("a request must be a JSON object"));
    json::object& req = v.get_object();
    if (const json::value* idv = req.if_contains("id")) {
      if (idv->is_string() || idv->is_number() || idv->is_null()) {
        id = *idv;
      } else {
        return refuse(absl::InvalidArgumentError("'id' must be a string or a number"));
      }
    }
    if (!allowed) return refuse(rateLimitError());
    const json::value* cmdv = req.if_contains("cmd");
    if (cmdv == nullptr || !cmdv->is_string()) {
      return sendReply(id, absl::InvalidArgumentError("missing string field 'cmd'"), "unknown", t0);
    }
    std::string cmd(cmdv->get_string());
    const CommandInfo* info = findCommand(cmd);
    if (info == nullptr) {
      return sendReply(id, absl::UnimplementedError(fmt::format("unknown command '{}'", cmd)),
                       "unknown", t0);
    }
    if (role_ < info->min_role) {
      if (role_ == Role::kNone) {
        return sendReply(id,
                         absl::UnauthenticatedError(fmt::format(
                             "'{}' needs a token: send {{\"cmd\":\"hello\",\"token\":...}}", cmd)),
                         cmd, t0);
      }
      return sendReply(
          id,
          absl::PermissionDeniedError(fmt::format("'{}' needs role {}; you are {}", cmd,
                                                  roleName(info->min_role), roleName(role_))),
          cmd, t0);
    }
    if (info->session_level) return handleSessionCommand(id, cmd, req, t0);

    // A coordinator command. The reply comes back on the coordinator thread;
    // post it to this strand. A timer answers for a coordinator that never
    // does; whichever of the two finds the request still pending replies.
    uint64_t seq = ++next_seq_;
    auto timer = std::make_shared<net::steady_timer>(ws_.get_executor());
    timer->expires_after(std::chrono::milliseconds(gw_.config_.command_timeout_ms));
    pending_.emplace(seq, timer);
    timer->async_wait([self = self(), seq, id, cmd, t0](beast::error_code ec) {
      if (ec || self->pending_.erase(seq) == 0) return;
      self->sendReply(id, absl::UnavailableError("the coordinator did not answer in time"), cmd,
                      t0);
    });
    std::weak_ptr<WsSession> weak = self();
    runControlCommand(cmd, req, gw_.control_,
                      [weak, loop = gw_.loop_, seq, id, cmd, t0](StatusOr<json::value> r) mutable {
                        loop->postTo(weak, [seq, id = std::move(id), cmd = std::move(cmd), t0,
                                            r = std::move(r)](WsSession& s) mutable {
                          s.onControlResult(seq, id, cmd, t0, std::move(r));
                        });
                      });
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

  void handleSessionCommand(const json::value& id, const std::string& cmd, const json::object& req,
                            std::chrono::steady_clock::time_point t0) {
    if (cmd == "hello" || cmd == "auth") {
      if (const json::value* p = req.if_contains("protocol"); p != nullptr && !p->is_null()) {
        if (!p->is_number()) {
          return sendReply(id, absl::InvalidArgumentError("field 'protocol' must be a number"), cmd,
                           t0);
        }
        if (p->to_number<double>() != kProtocolVersion) {
          return sendReply(
              id,
              absl::FailedPreconditionError(fmt::format(
                  "unsupported protocol version; this gateway speaks {}", kProtocolVersion)),
              cmd, t0);
        }
      }
      const json::value* tv = req.if_contains("token");
      if (cmd == "auth" && tv == nullptr) {
        return sendReply(id, absl::InvalidArgumentError("missing field 'token'"), cmd, t0);
      }
      if (tv != nullptr && !tv->is_null()) {
        if (!tv->is_string()) {
          return sendReply(id, absl::InvalidArgumentError("field 'token' must be a string"), cmd,
                           t0);
        }
        Role r = gw_.roleForToken(std::string_view(tv->get_string()));
        if (r == Role::kNone) {
          gw_.auth_failures_->Increment();
          sendReply(id, absl::UnauthenticatedError("invalid token"), cmd, t0);
          if (++auth_failures_ >= 5) {
            closeWith(websocket::close_code::policy_error, "too many authentication failures");
          }
          return;
        }
        role_ = std::max(role_, r);
      }
      json::object res;
      res["protocol"] = kProtocolVersion;
      res["server"] = kServerName;
      res["role"] = roleName(role_);
      if (cmd == "hello") {
        res["commands"] = commandNames(role_);
        res["topics"] = topicNames(kAllTopics);
        json::object lim;
        lim["max_frame_bytes"] = gw_.config_.max_frame_bytes;
        lim["commands_per_s"] = gw_.config_.commands_per_s;
        lim["command_burst"] = gw_.config_.command_burst;
        lim["max_queued_events"] = gw_.config_.max_queued_events;
        res["limits"] = std::move(lim);
      }
      return sendResult(id, std::move(res), cmd, t0);
    }
    if (cmd == "ping") {
      json::object res;
      res["pong"] = true;
      if (const json::value* d = req.if_contains("data")) res["data"] = *d;
      return sendResult(id, std::move(res), cmd, t0);
    }
    if (cmd == "whoami") return sendResult(id, json::object{{"role", roleName(role_)}}, cmd, t0);
    if (cmd == "topics")
      return sendResult(id, json::object{{"topics", topicNames(kAllTopics)}}, cmd, t0);
    if (cmd == "subscribe" || cmd == "unsubscribe") {
      uint32_t bits = 0;
      const json::value* tv = req.if_contains("topics");
      if (tv == nullptr || tv->is_null()) {
        bits = kAllTopics;
      } else if (!tv->is_array()) {
        return sendReply(
            id, absl::InvalidArgumentError("field 'topics' must be an array of strings"), cmd, t0);
      } else {
        for (const auto& t : tv->get_array()) {
          std::optional<uint32_t> b;
          if (t.is_string()) b = topicBit(std::string_view(t.get_string()));
          if (!b) {
            return sendReply(
                id,
                absl::InvalidArgumentError(fmt::format(
                    "unknown topic {}; topics are job, failures, nodes, ops", json::serialize(t))),
                cmd, t0);
          }
          bits |= *b;
        }
      }
      uint32_t before = topics.load();
      uint32_t after = cmd == "subscribe" ? (before | bits) : (before & ~bits);
      topics.store(after);
      if (registered_) {
        gw_.topicDelta(after & ~before, +1);
        gw_.topicDelta(before & ~after, -1);
      }
      return sendResult(id, json::object{{"topics", topicNames(after)}}, cmd, t0);
    }
    sendReply(id, absl::UnimplementedError("unhandled session command"), cmd, t0);
  }

  void sendResult(const json::value& id, json::value result, const std::string& cmd,
                  std::chrono::steady_clock::time_point t0) {
    gw_.observeCommand(cmd, t0);
    enqueue(std::make_shared<const std::string>(okReply(id, std::move(result))), false);
  }

  void sendReply(const json::value& id, const Status& status, const std::string& cmd,
                 std::chrono::steady_clock::time_point t0) {
    gw_.observeCommand(cmd, t0);
    gw_.countError(errorCodeName(status.code()));
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
        gw_.events_dropped_slow_->Increment();
        return;
      }
      if (dropped_ > 0) {
        json::object d;
        d["dropped"] = dropped_;
        push(std::make_shared<const std::string>(eventMessage("gap", d)), false);
        dropped_ = 0;
      }
      gw_.events_sent_->Increment();
    } else if (queued_bytes_ + msg->size() > cfg.max_queued_bytes) {
      gw_.slow_closed_->Increment();
      spdlog::warn("gateway: session {} is not reading its replies; closing", id_);
      closeWith(websocket::close_code::policy_error, "outbound queue overflow");
      return;
    }
    push(std::move(msg), is_event);
  }

  void push(std::shared_ptr<const std::string> msg, bool is_event) {
    queued_bytes_ += msg->size();
    if (is_event) ++queued_events_;
    queue_.push_back({std::move(msg), is_event});
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
    if (done.is_event) --queued_events_;
    queue_.pop_front();
    if (ec) {
      writing_ = false;
      closing_ = true;
      queue_.clear();
      return;
    }
    if (!queue_.empty() && !closing_) {
      doWrite();
    } else {
      writing_ = false;
    }
  }

  void closeWith(websocket::close_code code, const char* reason) {
    if (closing_) return;
    closing_ = true;
    ws_.async_close(websocket::close_reason(code, reason), [self = self()](beast::error_code) {});
  }

  struct Outgoing {
    std::shared_ptr<const std::string> msg;
    bool is_event;
  };

  websocket::stream<Stream> ws_;
  Gateway::Impl& gw_;
  Role role_;
  const uint64_t id_;
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
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
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
      if (!origin.empty() && !gw_.originAllowed(std::string_view(origin.data(), origin.size()),
                                                std::string_view(host.data(), host.size()))) {
        gw_.origin_refused_->Increment();
        return respond(text(http::status::forbidden, "origin not allowed\n"), true);
      }
      if (gw_.sessionCount() >= gw_.config_.max_ws_clients) {
        gw_.too_many_clients_->Increment();
        return respond(text(http::status::service_unavailable, "too many WebSocket clients\n"),
                       true);
      }
      Role role = gw_.initialRole();
      std::string token = queryParam(target, "token");
      auto authz = req_[http::field::authorization];
      if (authz.starts_with("Bearer ")) token = std::string(authz.substr(7));
      if (!token.empty()) {
        Role r = gw_.roleForToken(token);
        if (r == Role::kNone) {
          gw_.auth_failures_->Increment();
          return respond(text(http::status::unauthorized, "invalid token\n"), true);
        }
        role = std::max(role, r);
      }
      beast::get_lowest_layer(stream_).expires_never();
      std::make_shared<WsSession<Stream>>(std::move(stream_), gw_, role)->run(std::move(req_));
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
      auto res = text(http::status::ok, gw_.metricsText());
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

  // Ready when the coordinator answers stats() and has a ready node.
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
    if (s->nodes_ready == 0) {
      return respond(text(http::status::service_unavailable, "not ready: no ready node\n"));
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

  void countHttp(const char* path) { gw_.http_family_->Add({{"path", path}}).Increment(); }

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
      registry_(control.metricsRegistry()) {
  config_.threads = std::clamp(config_.threads, 1, 2);
  auto& reg = *registry_;
  ws_clients_ = &prometheus::BuildGauge()
                     .Name("tokengate_ws_clients")
                     .Help("Open WebSocket sessions on the gateway")
                     .Register(reg)
                     .Add({});
  ws_clients_->Set(0);
  auto& lat = prometheus::BuildHistogram()
                  .Name("tokengate_gateway_command_seconds")
                  .Help("WebSocket command latency, request received to reply queued")
                  .Register(reg);
  const prometheus::Histogram::BucketBoundaries buckets{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
      0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   10};
  for (const auto& c : commandNames(Role::kAdmin)) {
    std::string name(c.get_string());
    cmd_latency_[name] = &lat.Add({{"cmd", name}}, buckets);
  }
  cmd_latency_["unknown"] = &lat.Add({{"cmd", "unknown"}}, buckets);
  errors_family_ = &prometheus::BuildCounter()
                        .Name("tokengate_gateway_command_errors_total")
                        .Help("WebSocket error replies by code")
                        .Register(reg);
  auto& events = prometheus::BuildCounter()
                     .Name("tokengate_gateway_events_total")
                     .Help(
                         "Events queued to WebSocket clients, and dropped (slow client, or the "
                         "gateway's fan-out backlog full)")
                     .Register(reg);
  events_sent_ = &events.Add({{"result", "sent"}});
  events_dropped_slow_ = &events.Add({{"result", "dropped_slow_client"}});
  events_dropped_overload_ = &events.Add({{"result", "dropped_overload"}});
  auto& sessions = prometheus::BuildCounter()
                       .Name("tokengate_gateway_refusals_total")
                       .Help("Connections or commands refused by the gateway, by reason")
                       .Register(reg);
  slow_closed_ = &sessions.Add({{"reason", "slow_client_closed"}});
  auth_failures_ = &sessions.Add({{"reason", "auth_failed"}});
  rate_limited_ = &sessions.Add({{"reason", "rate_limited"}});
  origin_refused_ = &sessions.Add({{"reason", "origin"}});
  too_many_clients_ = &sessions.Add({{"reason", "too_many_clients"}});
  http_family_ = &prometheus::BuildCounter()
                      .Name("tokengate_gateway_http_requests_total")
                      .Help("HTTP requests by path")
                      .Register(reg);
}

bool Gateway::Impl::originAllowed(std::string_view origin, std::string_view host) const {
  const std::string want = normalizeOrigin(origin);
  for (const auto& o : config_.allowed_origins) {
    if (o == "*" || normalizeOrigin(o) == want) return true;
  }
  // An allow-list replaces the same-origin check (Host is client-chosen: DNS rebinding).
  if (!config_.allowed_origins.empty()) return false;
  // Same origin: the Origin's authority equals the Host header.
  auto sep = want.find("://");
  if (sep == std::string::npos) return false;
  return std::string_view(want).substr(sep + 3) == normalizeOrigin(host);
}

void Gateway::Impl::fanOut(uint32_t bit, const std::shared_ptr<const std::string>& msg) {
  std::vector<std::shared_ptr<WsSessionBase>> targets;
  {
    std::lock_guard lock(sessions_mu_);
    targets.reserve(sessions_.size());
    for (auto& [id, w] : sessions_) {
      if (auto s = w.lock(); s && (s->topics.load() & bit)) targets.push_back(std::move(s));
    }
  }
  for (auto& s : targets) s->deliverEvent(msg);
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
  gate_->loop = loop_;
  gate_->max_pending_fanouts = static_cast<int64_t>(config_.max_pending_fanouts);
  gate_->registry = registry_;
  gate_->dropped_overload = events_dropped_overload_;
  loop_->open(ioc_->get_executor());
  subscription_ = control_.subscribe([gate = gate_, this](const control::Event& e) {
    std::optional<uint32_t> bit = topicBit(control::eventTopic(e));
    if (!bit) return;
    int idx = std::countr_zero(*bit);
    if (gate->topic_subscribers[idx].load(std::memory_order_relaxed) <= 0) return;
    if (gate->pending_fanouts.load(std::memory_order_relaxed) >= gate->max_pending_fanouts) {
      gate->dropped_overload->Increment();
      return;
    }
    auto msg = std::make_shared<const std::string>(eventMessage(e));
    gate->pending_fanouts.fetch_add(1);
    // `this` is only used inside the io_context, which the gateway
    // destroys only after closing the loop handle.
    if (!gate->loop->post([this, gate, b = *bit, msg] {
          gate->pending_fanouts.fetch_sub(1);
          fanOut(b, msg);
        })) {
      gate->pending_fanouts.fetch_sub(1);
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
  std::vector<std::shared_ptr<WsSessionBase>> open;
  {
    std::lock_guard lock(sessions_mu_);
    for (auto& [id, w] : sessions_) {
      if (auto s = w.lock()) open.push_back(std::move(s));
    }
  }
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
  ws_clients_->Set(0);
}

Gateway::Gateway(GatewayConfig config, control::ClusterControl& control)
    : impl_(std::make_unique<Impl>(std::move(config), control)) {}
Gateway::~Gateway() = default;
Status Gateway::start() { return impl_->start(); }
void Gateway::stop() { impl_->stop(); }
uint16_t Gateway::port() const { return impl_->port_; }
size_t Gateway::wsClients() const { return impl_->sessionCount(); }

}  // namespace tokengate::gateway
