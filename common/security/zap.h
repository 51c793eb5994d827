// The coordinator's ZAP handler (ZeroMQ RFC 27): libzmq asks it, over
// inproc://zeromq.zap.01 in the coordinator's context, whether a peer that
// completed the CURVE handshake may connect. It admits a key only if the
// allow-lists (curve.h) list it and answers with the User-Id "<role> <key>",
// which every message of that connection then carries.
//
// Ownership: CoordinatorServer owns the handler and only its loop thread
// touches it (the REP socket is one more poll item of the loop). libzmq
// holds a connection's handshake until the reply, so a busy loop delays new
// connections, never messages of admitted ones.
//
// Allow-lists are re-read at most once a second, when a request arrives, so a
// key added to (or removed from) an allow-list directory takes effect for the
// next connection without a restart. Connections already admitted are not
// re-checked (see docs/security.md, key rotation).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <zmq.hpp>

#include "common/security/curve.h"
#include "common/status.h"

namespace tokengate::security {

struct ZapDecision {
  bool allowed = false;
  Role role = Role::kNone;
  std::string status_code;  // "200" admitted, "400" refused, "500" internal
  std::string status_text;
  std::string user_id;  // set when allowed
};

// The decision alone (no sockets), for the handler and for tests.
ZapDecision decideZap(const AllowList& allow, std::string_view domain, std::string_view mechanism,
                      std::string_view credentials);

class ZapHandler {
 public:
  using RefusedSink = std::function<void(const ZapDecision&, const std::string& address)>;
  // Binds inproc://zeromq.zap.01 in `context` (one handler per context) after loading the
  // allow-lists; fails on an unreadable list or when another handler is bound.
  static StatusOr<std::unique_ptr<ZapHandler>> create(zmq::context_t& context, ServerCurve curve,
                                                      RefusedSink on_refused = {});
  zmq::socket_t& socket() { return socket_; }
  // Answers every queued request; returns how many.
  size_t handlePending();
  const AllowList& allowList() const { return allow_; }
  uint64_t admitted() const { return admitted_; }
  uint64_t refused() const { return refused_; }

 private:
  ZapHandler(zmq::context_t& context, ServerCurve curve, AllowList allow, RefusedSink on_refused);
  void reloadIfDue();
  bool handleOne();

  const ServerCurve curve_;
  zmq::socket_t socket_;
  AllowList allow_;
  RefusedSink on_refused_;
  std::chrono::steady_clock::time_point loaded_at_;
  uint64_t admitted_ = 0, refused_ = 0;
};

// Builds the allow-list from curve.allow_nodes and curve.allow_clients.
StatusOr<AllowList> loadAllowList(const ServerCurve& curve);

}  // namespace tokengate::security
