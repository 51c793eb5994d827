#include "coordinator/core/peer_auth.h"

#include <capnp/message.h>
#include <capnp/schema.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/wire.h"

namespace tokengate::coordinator {

// ---------------------------------------------------------------- NodeIdentityTable

Status NodeIdentityTable::admitHello(const std::string& node_id, const std::string& key,
                                     uint64_t incarnation, bool live) {
  auto it = by_id_.find(node_id);
  if (it == by_id_.end() || !live) {
    Binding& b = by_id_[node_id];
    if (b.key != key) b.superseded.clear();  // a new owner: the old one's history is moot
    b.key = key;
    b.incarnation = incarnation;
    return absl::OkStatus();
  }
  Binding& b = it->second;
  if (b.key != key)
    return absl::PermissionDeniedError(
        fmt::format("node id '{}' is in use by a live node with another key; pick another --id "
                    "(or stop that node)",
                    node_id));
  if (b.incarnation == incarnation) return absl::OkStatus();
  if (std::find(b.superseded.begin(), b.superseded.end(), incarnation) != b.superseded.end())
    return absl::PermissionDeniedError(fmt::format(
        "node id '{}': this process (incarnation {:x}) was replaced by incarnation {:x}; two "
        "processes are using one node id",
        node_id, incarnation, b.incarnation));
  b.superseded.push_back(b.incarnation);
  if (b.superseded.size() > kMaxSuperseded) b.superseded.erase(b.superseded.begin());
  b.incarnation = incarnation;
  return absl::OkStatus();
}

void NodeIdentityTable::prune(const std::function<bool(const std::string&)>& live, size_t max_ids) {
  if (by_id_.size() <= max_ids) return;
  for (auto it = by_id_.begin(); it != by_id_.end();)
    it = live(it->first) ? std::next(it) : by_id_.erase(it);
}

// ---------------------------------------------------------------- PeerAuth

namespace {
constexpr size_t kMaxTrackedPeers = 100'000;
constexpr size_t kMaxNodeIds = 50'000;
constexpr Nanos kLogEvery = 60 * kSeconds;
}  // namespace

PeerAuth::PeerAuth(security::ServerCurve curve, prometheus::Registry& registry, const Clock& clock,
                   size_t max_frame_bytes)
    : curve_(std::move(curve)),
      clock_(clock),
      max_frame_bytes_(max_frame_bytes),
      refused_family_(prometheus::BuildCounter()
                          .Name("tokengate_security_refused_total")
                          .Help("Connections and frames refused by the coordinator's access "
                                "checks, by reason (docs/security.md)")
                          .Register(registry)) {}

PeerAuth::~PeerAuth() = default;

Status PeerAuth::setUp(zmq::context_t& context, zmq::socket_t& router) {
  if (!curve_.enabled()) return absl::OkStatus();
  auto zap = security::ZapHandler::create(
      context, curve_, [this](const security::ZapDecision& d, const std::string& address) {
        const std::string reason = d.status_code == "400" ? "unknown_key" : "zap_error";
        refused_family_.Add({{"reason", reason}}).Increment();
        ++refusals_;
        const Nanos now = clock_.now();
        auto [it, fresh] = last_logged_.try_emplace("zap " + address, now);
        if (!fresh && now - it->second < kLogEvery) return;
        it->second = now;
        spdlog::warn("refused connection from {}: {}", address, d.status_text);
      });
  if (!zap.ok()) return zap.status();
  zap_ = std::move(*zap);
  if (auto st = security::applyServerKeys(router, curve_); !st.ok()) return st;
  const auto& allow = zap_->allowList();
  spdlog::info("CURVE on: {} node keys, {} admin / {} operator / {} viewer client keys",
               allow.count(security::Role::kNode), allow.count(security::Role::kAdmin),
               allow.count(security::Role::kOperator), allow.count(security::Role::kViewer));
  return absl::OkStatus();
}

zmq::socket_t* PeerAuth::zapSocket() { return zap_ ? &zap_->socket() : nullptr; }

void PeerAuth::serveZap() {
  if (zap_) zap_->handlePending();
}

std::string PeerAuth::refuse(const std::string& peer, const std::string& reason,
                             const Status& status, bool as_welcome) {
  refused_family_.Add({{"reason", reason}}).Increment();
  ++refusals_;
  if (last_logged_.size() > kMaxTrackedPeers) last_logged_.clear();
  const Nanos now = clock_.now();
  auto [it, fresh] = last_logged_.try_emplace(peer, now);
  if (fresh || now - it->second >= kLogEvery) {
    it->second = now;
    // Routing ids are peer-chosen bytes: log a bounded, printable form.
    std::string shown;
    for (char c : peer.substr(0, 64)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
    spdlog::warn(
        "refused frame from peer '{}' ({}): {} (further refusals of this peer are "
        "logged at most once a minute)",
        shown, reason, status.message());
  }
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  if (as_welcome) {
    // A refused hello: the node logs the error and keeps its pace of hellos.
    auto w = f.initWelcome();
    w.setAccepted(false);
    toWire(status, w.initError());
  } else {
    toWire(status, f.initReject().initError());
  }
  return encodeFrame(msg);
}

std::optional<std::string> PeerAuth::check(const std::string& peer, zmq::message_t& body,
                                           const std::function<bool(const std::string&)>& node_live,
                                           std::string* key_out) {
  security::PeerIdentity who;
  if (curve_.enabled()) {
    const char* uid = zmq_msg_gets(body.handle(), "User-Id");
    who = security::parseUserId(uid ? uid : "");
  }
  if (key_out) *key_out = who.public_key;
  return checkFrame(peer, who, body.data(), body.size(), node_live);
}

std::optional<std::string> PeerAuth::checkFrame(
    const std::string& peer, const security::PeerIdentity& who, const void* data, size_t size,
    const std::function<bool(const std::string&)>& node_live) {
  const auto kind = security::peekFrameKind(data, size);
  if (curve_.enabled()) {
    if (who.role == security::Role::kNone)  // cannot happen past the ZAP handler; fail closed
      return refuse(peer, "no_identity", absl::UnauthenticatedError("peer has no CURVE identity"),
                    false);
    if (peer_key_.size() > kMaxTrackedPeers) peer_key_.clear();
    auto [it, fresh] = peer_key_.try_emplace(peer, who.public_key);
    if (!fresh && it->second != who.public_key)
      return refuse(
          peer, "peer_id_taken",
          absl::PermissionDeniedError("this routing id belongs to a connection with another key"),
          false);
    if (!kind)
      return refuse(peer, "unreadable",
                    absl::InvalidArgumentError("frame kind unreadable (not a TokenGate frame)"),
                    false);
    if (!security::roleAllows(who.role, *kind))
      return refuse(peer, "role",
                    absl::PermissionDeniedError(fmt::format("a {} key may not send {} frames",
                                                            security::roleName(who.role),
                                                            security::frameKindName(*kind))),
                    *kind == wire::Frame::HELLO);
  }
  if (curve_.enabled() && kind == wire::Frame::ADMIN_REQUEST)
    return checkAdmin(peer, who, data, size);
  if (kind != wire::Frame::HELLO) return std::nullopt;
  // A hello: bind its node id to this key and process. Hellos are rare, so decode it here.
  auto frame = decodeFrame(data, size, max_frame_bytes_);
  if (!frame.ok()) return std::nullopt;  // the core refuses it as malformed
  std::string node_id;
  uint64_t incarnation = 0;
  try {
    auto hello = (*frame)->root().getHello();
    node_id = hello.getNodeId().cStr();
    incarnation = hello.getIncarnation();
  } catch (const kj::Exception&) {
    return std::nullopt;
  }
  if (node_id.empty()) return std::nullopt;  // the core answers that one
  identities_.prune(node_live, kMaxNodeIds);
  auto st = identities_.admitHello(node_id, who.public_key, incarnation, node_live(node_id));
  if (st.ok()) return std::nullopt;
  return refuse(peer, "node_id_in_use", st, true);
}

std::optional<std::string> PeerAuth::checkAdmin(const std::string& peer,
                                                const security::PeerIdentity& who, const void* data,
                                                size_t size) {
  // Admin requests are rare (tgctl): decode here to check the request against the role.
  auto frame = decodeFrame(data, size, max_frame_bytes_);
  if (!frame.ok()) return std::nullopt;  // the core refuses it as malformed
  wire::AdminRequest::Which which;
  uint64_t request_id = 0;
  try {
    auto req = (*frame)->root().getAdminRequest();
    which = req.which();
    request_id = req.getRequestId();
  } catch (const kj::Exception&) {
    return std::nullopt;
  }
  const security::Role needed = security::adminRequestRole(which);
  if (security::roleAtLeast(who.role, needed)) return std::nullopt;
  const auto fields = capnp::Schema::from<wire::AdminRequest>().getUnionFields();
  const auto i = static_cast<unsigned>(which);
  const std::string name = i < fields.size() ? fields[i].getProto().getName().cStr() : "?";
  auto status = absl::PermissionDeniedError(
      fmt::format("a {} key may not send the {} admin request (needs {})",
                  security::roleName(who.role), name, security::roleName(needed)));
  refuse(peer, "role", status, false);  // counted and logged; the reply names the request
  auto f = newFrame();
  auto r = f.root.initAdminReply();
  r.setRequestId(request_id);
  toWire(status, r.initError());
  return f.encode();
}

void PeerAuth::forget(const std::string& peer) {
  peer_key_.erase(peer);
  last_logged_.erase(peer);
}

}  // namespace tokengate::coordinator
