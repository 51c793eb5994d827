#include "common/security/zap.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>
#include <vector>

namespace tokengate::security {

ZapDecision decideZap(const AllowList& allow, std::string_view domain, std::string_view mechanism,
                      std::string_view credentials) {
  ZapDecision d;
  d.status_code = "400";
  if (domain != kZapDomain) {
    d.status_text = fmt::format("unknown ZAP domain '{}'", domain);
    return d;
  }
  if (mechanism != "CURVE") {
    d.status_text = fmt::format("mechanism {} not accepted: CURVE required", mechanism);
    return d;
  }
  if (credentials.size() != 32) {
    d.status_text = "malformed CURVE credentials";
    return d;
  }
  std::array<char, kZ85KeyChars + 1> z85{};
  if (zmq_z85_encode(z85.data(), reinterpret_cast<const uint8_t*>(credentials.data()), 32) ==
      nullptr) {
    d.status_code = "500";
    d.status_text = "cannot encode key";
    return d;
  }
  const std::string key(z85.data());
  const Role role = allow.roleOf(key);
  if (role == Role::kNone) {
    d.status_text = fmt::format("key {} is not in the allow-lists", key);
    return d;
  }
  d.allowed = true;
  d.role = role;
  d.status_code = "200";
  d.status_text = "OK";
  d.user_id = userIdOf(role, key);
  return d;
}

StatusOr<AllowList> loadAllowList(const ServerCurve& curve) {
  AllowList allow;
  if (!curve.allow_nodes.empty())
    if (auto st = allow.addNodes(curve.allow_nodes); !st.ok()) return st;
  if (!curve.allow_clients.empty())
    if (auto st = allow.addClients(curve.allow_clients); !st.ok()) return st;
  return allow;
}

StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::create(zmq::context_t& context, ServerCurve curve,
                                                         RefusedSink on_refused) {
  auto allow = loadAllowList(curve);
  if (!allow.ok()) return allow.status();
  try {
    return std::unique_ptr<ZapHandler>(
        new ZapHandler(context, std::move(curve), std::move(*allow), std::move(on_refused)));
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(
        fmt::format("cannot bind the ZAP handler (inproc://zeromq.zap.01): {}", e.what()));
  }
}

ZapHandler::ZapHandler(zmq::context_t& context, ServerCurve curve, AllowList allow,
                       RefusedSink on_refused)
    : curve_(std::move(curve)),
      socket_(context, zmq::socket_type::rep),
      allow_(std::move(allow)),
      on_refused_(std::move(on_refused)),
      loaded_at_(std::chrono::steady_clock::now()) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind("inproc://zeromq.zap.01");
}

void ZapHandler::reloadIfDue() {
  const auto now = std::chrono::steady_clock::now();
  if (now - loaded_at_ < std::chrono::seconds(1)) return;
  loaded_at_ = now;
  auto fresh = loadAllowList(curve_);
  if (!fresh.ok()) {
    spdlog::error("allow-lists not reloaded (keeping the previous ones): {}",
                  fresh.status().message());
    return;
  }
  if (fresh->size() != allow_.size())
    spdlog::info("allow-lists reloaded: {} node keys, {} client keys", fresh->count(Role::kNode),
                 fresh->size() - fresh->count(Role::kNode));
  allow_ = std::move(*fresh);
}

size_t ZapHandler::handlePending() {
  size_t n = 0;
  while (handleOne()) ++n;
  return n;
}

bool ZapHandler::handleOne() {
  std::vector<zmq::message_t> parts;
  zmq::message_t part;
  if (!socket_.recv(part, zmq::recv_flags::dontwait)) return false;
  bool more = part.more();
  parts.push_back(std::move(part));
  while (more) {
    zmq::message_t next;
    if (!socket_.recv(next, zmq::recv_flags::none)) break;
    more = next.more();
    parts.push_back(std::move(next));
  }
  // Request: version, request id, domain, address, identity, mechanism, credentials...
  auto str = [&](size_t i) { return i < parts.size() ? parts[i].to_string() : std::string(); };
  reloadIfDue();
  ZapDecision d;
  if (parts.size() < 6 || str(0) != "1.0") {
    d.status_code = "500";
    d.status_text = "malformed ZAP request";
  } else {
    d = decideZap(allow_, str(2), str(5), parts.size() >= 7 ? parts[6].to_string_view() : "");
  }
  if (d.allowed) {
    ++admitted_;
  } else {
    ++refused_;
    if (on_refused_) on_refused_(d, str(3));
  }
  // Reply: version, request id, status code, status text, user id, metadata.
  socket_.send(zmq::buffer(std::string("1.0")), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(str(1)), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(d.status_code), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(d.status_text), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(d.user_id), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(std::string()), zmq::send_flags::none);
  return true;
}

}  // namespace tokengate::security
