// PeerAuth: the gate between the coordinator's ROUTER socket and CoordinatorCore.
//
// With CURVE on (ServerConfig::curve) it owns the ZAP handler (common/security/zap.h),
// reads each message's User-Id ("<role> <key>", set by the handler) and refuses frames the
// peer's role may not send (security::roleAllows) before the core sees them. With CURVE on
// or off it binds node ids to keys and incarnations (NodeIdentityTable) so that a hello for
// a live node id never evicts that node.
//
// Refusals are answered (a Reject, or a refused Welcome for a hello), counted in
// tokengate_security_refused_total{reason} and logged at most once a minute per peer.
//
// Ownership: CoordinatorServer owns it; only the server's loop thread touches it.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/security/curve.h"
#include "common/security/zap.h"
#include "common/status.h"

namespace tokengate::coordinator {

// Which key and process (incarnation) own each node id. Pure logic, no I/O.
class NodeIdentityTable {
 public:
  // Whether a hello for `node_id` from `key` ("" when CURVE is off) and `incarnation` may
  // reach the core; `live`: the core has a node with this id that is not dead.
  //  * not live: admitted; the id is now bound to this key and incarnation;
  //  * live under another key: PermissionDenied (the live node keeps running);
  //  * live, same key, a new incarnation: admitted once (a restarted node replaces its old
  //    session); the old incarnation is then refused while the id is live, so two processes
  //    sharing one id and key cannot take turns evicting each other;
  //  * live, same key and incarnation (a re-hello of the same process): admitted.
  Status admitHello(const std::string& node_id, const std::string& key, uint64_t incarnation,
                    bool live);
  // Drops bindings of ids that are not live once the table holds more than `max_ids`.
  void prune(const std::function<bool(const std::string&)>& live, size_t max_ids);
  size_t size() const { return by_id_.size(); }

 private:
  struct Binding {
    std::string key;
    uint64_t incarnation = 0;
    std::vector<uint64_t> superseded;  // newest last, at most kMaxSuperseded
  };
  static constexpr size_t kMaxSuperseded = 16;
  std::unordered_map<std::string, Binding> by_id_;
};

class PeerAuth {
 public:
  PeerAuth(security::ServerCurve curve, prometheus::Registry& registry, const Clock& clock,
           size_t max_frame_bytes);
  ~PeerAuth();

  bool curveEnabled() const { return curve_.enabled(); }
  // CURVE on: binds the ZAP handler in `context` and makes `router` a CURVE server. Call
  // before router.bind(), once.
  Status setUp(zmq::context_t& context, zmq::socket_t& router);
  // The ZAP socket to poll (null with CURVE off), and the call when it is readable.
  zmq::socket_t* zapSocket();
  void serveZap();

  // Admits or refuses one message body from `peer`. Returns the encoded frame to send back
  // when refused (the message must not reach the core), nullopt when admitted.
  // `node_live(id)`: whether the core has a live node with this id.
  // `key_out` (when given) receives the peer's public key ("" with CURVE off).
  std::optional<std::string> check(const std::string& peer, zmq::message_t& body,
                                   const std::function<bool(const std::string&)>& node_live,
                                   std::string* key_out = nullptr);
  // The same for a frame whose sender is already known: `who` is the identity the ZAP handler
  // gave the connection (ignored with CURVE off). check() reads it from the message's User-Id;
  // the frame fuzzer (tests/fuzz) calls this directly with a role per fuzzed peer.
  std::optional<std::string> checkFrame(const std::string& peer, const security::PeerIdentity& who,
                                        const void* data, size_t size,
                                        const std::function<bool(const std::string&)>& node_live);

  // The peer's connection closed: its routing id may be reused by any key.
  void forget(const std::string& peer);
  uint64_t refusals() const { return refusals_; }

 private:
  std::string refuse(const std::string& peer, const std::string& reason, const Status& status,
                     bool as_welcome);
  // An adminRequest from a client key: refused (AdminReply with PermissionDenied and the
  // request's id) unless the key's role allows that request.
  std::optional<std::string> checkAdmin(const std::string& peer, const security::PeerIdentity& who,
                                        const void* data, size_t size);

  const security::ServerCurve curve_;
  const Clock& clock_;
  const size_t max_frame_bytes_;
  prometheus::Family<prometheus::Counter>& refused_family_;
  std::unique_ptr<security::ZapHandler> zap_;
  NodeIdentityTable identities_;
  // The key each routing id first sent with: a peer cannot take over another's routing id.
  std::unordered_map<std::string, std::string> peer_key_;
  std::unordered_map<std::string, Nanos> last_logged_;  // peer -> last refusal logged
  uint64_t refusals_ = 0;
};

}  // namespace tokengate::coordinator
