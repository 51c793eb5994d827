// CurveZMQ for every TokenGate ZeroMQ socket: key files, allow-lists with
// roles, socket setup for both sides, and the per-frame role check.
//
// Keys are Z85 text (40 characters, zmq_z85_encode of 32 bytes). A key file
// holds one key on its first non-comment line (a line starting with `#` is a
// comment; `#` inside a line is a Z85 digit; words after the key are ignored). A
// secret key file is enough to derive its public key (zmq_curve_public).
//
// Roles: a peer admitted by the coordinator's ZAP handler (zap.h) carries the
// User-Id "<role> <public key>"; CoordinatorServer reads it from every
// message and checks the frame kind against the role before the core sees it.
// Same meaning as on the gateway: viewer = watch and info; operator = viewer +
// submit and cancel (pause and drain on the gateway); admin = everything a
// client may send; node = the node protocol (hello, heartbeat, results, bye).
// No client role may say hello as a node and a node key cannot submit.
//
// Stateless functions; thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/roles.h"
#include "common/status.h"
#include "tokengate.capnp.h"

namespace tokengate::security {

constexpr size_t kZ85KeyChars = 40;
// The ZAP domain the coordinator's ROUTER asks its handler about.
constexpr const char* kZapDomain = "tokengate";

// Roles, their names and ranking are the cluster's (common/roles.h), shared with the gateway.
using tokengate::parseRole;
using tokengate::Role;
using tokengate::roleAtLeast;
using tokengate::roleName;

struct KeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// True when this libzmq was built with CURVE (libsodium or tweetnacl).
bool curveAvailable();
bool isZ85Key(std::string_view text);
StatusOr<KeyPair> generateKeyPair();
// The public key of a Z85 secret key.
StatusOr<std::string> publicKeyOf(const std::string& secret_key);

// Reads the first key of a key file (comments and blank lines skipped).
StatusOr<std::string> readKeyFile(const std::string& path);
// `text` itself when it is a Z85 key, else the key in the file it names.
StatusOr<std::string> keyFromTextOrFile(const std::string& text);
// Writes DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub (public, mode 0644);
// creates DIR (0700) when missing. Refuses to overwrite an existing file.
Status writeKeyPair(const std::string& dir, const std::string& name, const KeyPair& keys);
// Writes one public key to `path` (0644), refusing to overwrite.
Status writePublicKey(const std::string& path, const std::string& public_key);

// Public key -> role. Loaded from the coordinator's allow-lists:
//  * --curve-allow-nodes PATH: a directory of key files (every regular file, e.g. *.pub) or one
//    file with one key per line; every key gets the role `node`.
//  * --curve-allow-clients PATH: a directory whose subdirectories `admin/`, `operator/`,
//    `viewer/` hold key files (files directly in PATH are refused: the role must be explicit),
//    or one file with lines "<role> <key>".
// A key listed twice keeps its first role, and loading fails when the roles differ.
class AllowList {
 public:
  Status addNodes(const std::string& path);
  Status addClients(const std::string& path);
  Status add(const std::string& public_key, Role role, const std::string& origin);
  Role roleOf(const std::string& public_key) const;
  size_t size() const { return keys_.size(); }
  size_t count(Role r) const;

 private:
  std::map<std::string, Role> keys_;
};

// The coordinator's side: its key pair and where its allow-lists live.
struct ServerCurve {
  std::string secret_key;  // Z85; empty = CURVE off (plain TCP, every peer trusted)
  std::string allow_nodes;
  std::string allow_clients;
  bool enabled() const { return !secret_key.empty(); }
};
// Node and client side: its own key pair and the coordinator's public key.
struct ClientCurve {
  std::string secret_key;  // Z85; empty = CURVE off
  std::string public_key;  // Z85; derived from secret_key when empty
  std::string server_key;  // Z85 public key of the coordinator
  bool enabled() const { return !secret_key.empty(); }
};

// Sets CURVE server options (and the ZAP domain) on a socket before bind().
// No-op when !curve.enabled().
Status applyServerKeys(zmq::socket_t& socket, const ServerCurve& curve);
// Sets CURVE client options on a socket before connect(). No-op when !curve.enabled().
Status applyClientKeys(zmq::socket_t& socket, const ClientCurve& curve);

// "<role> <public key>", the ZAP User-Id of an admitted peer, and back.
std::string userIdOf(Role role, const std::string& public_key);
struct PeerIdentity {
  Role role = Role::kNone;
  std::string public_key;
};
PeerIdentity parseUserId(std::string_view user_id);

// The schema name of a frame kind ("submitJob"), for messages.
std::string frameKindName(wire::Frame::Which kind);
// Whether a peer of `role` may send frames of `kind` to the coordinator.
// For adminRequest frames (which viewers may send) the request inside decides:
// adminRequestRole() is the least role it needs, as the gateway's command table has it.
bool roleAllows(Role role, wire::Frame::Which kind);
// The least role of the gateway command each request is (common/roles.h kCommandRoles):
// listJobs/listOps/listNodes: viewer; evictNode: admin; every other request: operator.
Role adminRequestRole(wire::AdminRequest::Which request);

// The union discriminant of an encoded Frame without decoding the message (no copy, no
// allocation): nullopt when the bytes are too short or not a single-segment message with a
// near root pointer (what every TokenGate encoder writes). The full decode stays with the core.
std::optional<wire::Frame::Which> peekFrameKind(const void* data, size_t size);

}  // namespace tokengate::security
