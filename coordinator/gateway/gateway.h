// Gateway: the cluster's user-facing HTTP port (Boost.Beast). Serves the
// WebSocket control protocol at /ws (docs/protocol.md), Prometheus text at
// /metrics, /healthz, /readyz and the embedded control page at /.
//
// Ownership: main() (or a test) owns the Gateway and the ClusterControl it is
// given; the control must outlive the Gateway. The Gateway owns its
// io_context and its 1-2 threads; every WebSocket/HTTP session runs on its
// own strand. Calls into ClusterControl return at once and their callbacks
// (coordinator loop thread) only post back to the session's strand, so the
// coordinator thread is never blocked by a client, however slow.
//
// start()/stop()/port() are called from the owning thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "coordinator/control/control.h"

namespace tokengate::gateway {

struct GatewayConfig {
  std::string bind_address = "127.0.0.1";
  uint16_t port = 0;  // 0 = pick a free port; read it back with Gateway::port()
  int threads = 1;    // io_context threads, 1 or 2

  // Bearer tokens per role. Empty strings are ignored. A connection starts
  // unauthenticated (or as viewer when allow_anonymous_read) and becomes the
  // highest role whose token it presents.
  std::vector<std::string> viewer_tokens;
  std::vector<std::string> operator_tokens;
  std::vector<std::string> admin_tokens;
  bool allow_anonymous_read = false;

  // Browser Origin values allowed to open /ws ("scheme://host[:port]",
  // compared case-insensitively, a trailing '/' ignored; "*" allows any).
  // Empty: same-origin only (the Origin's host:port equals the request's Host
  // header). A non-empty list replaces that check: Host is chosen by the
  // client, so under DNS rebinding a hostile page is "same-origin"; list the
  // page's real origin(s) to close that hole. Requests without an Origin
  // header (non-browser clients) are always allowed.
  std::vector<std::string> allowed_origins;

  size_t max_frame_bytes = 1 << 20;   // larger frames close the socket (1009)
  size_t max_ws_clients = 4096;       // authenticated sessions; further ones get HTTP 503
  double commands_per_s = 50;         // token bucket refill per connection; 0 = unlimited
  double command_burst = 100;         // token bucket size
  size_t max_queued_events = 256;     // per session; further events are dropped
  size_t max_queued_bytes = 8 << 20;  // per session outbound cap; over it the session closes

  // Pre-authentication budget (docs/protocol.md, "Limits"). A session without
  // a valid token is unauthenticated: it must send hello/auth with a valid
  // token within auth_timeout_ms or it is closed (1008), its frames may be at
  // most unauthenticated_max_frame_bytes, and it holds a slot in a pool of
  // its own (max_unauthenticated, at most max_unauthenticated_per_ip per
  // source address), never one of the max_ws_clients authenticated slots.
  // With allow_anonymous_read, token-less viewers stay in that pool without
  // a deadline.
  int auth_timeout_ms = 5000;
  size_t max_unauthenticated = 256;
  size_t max_unauthenticated_per_ip = 16;
  size_t unauthenticated_max_frame_bytes = 16 << 10;
  // Failed token attempts per source address: the first auth_free_failures
  // are free, then the address is blocked for 1 s, 2 s, 4 s ... up to
  // auth_backoff_max_ms (HTTP 429 on upgrade, resource_exhausted on hello).
  int auth_free_failures = 5;
  int auth_backoff_base_ms = 1000;
  int auth_backoff_max_ms = 60000;
  // Commands per source address, across its connections; 0 = unlimited.
  double ip_commands_per_s = 500;
  double ip_command_burst = 1000;
  // Bytes queued to all clients together. Over it, the session with the most
  // queued bytes (the slowest reader) is closed (1008 "outbound budget").
  size_t max_outbound_bytes = 64 << 20;
  // No reply is larger: job.status pages its outputs below it, any other
  // reply over it becomes resource_exhausted. Keep it above max_frame_bytes
  // (a ping echoes its data).
  size_t max_reply_bytes = 2 << 20;
  size_t max_pending_fanouts = 10000;  // events posted by the coordinator, not yet fanned out
  int command_timeout_ms = 10000;      // no control callback by then => "unavailable"
  int idle_timeout_s = 60;             // WebSocket idle timeout (keep-alive pings at half)

  // TLS through Beast's ssl streams when both are set (PEM files).
  std::string tls_cert_file;
  std::string tls_key_file;

  // Serve the control page from this directory instead of the copy embedded
  // at build time (development only). Empty = embedded.
  std::string web_root;

  const Clock* clock = nullptr;  // rate limiter time; nullptr = SystemClock
};

// Adds TG_GATEWAY_TOKEN (if set and non-empty) to config.admin_tokens.
void addTokenFromEnv(GatewayConfig& config);
// Splits a comma-separated origin list; entries are trimmed, empty ones skipped.
std::vector<std::string> parseOriginList(std::string_view list);
// Appends TG_GATEWAY_ALLOWED_ORIGINS (comma-separated) to config.allowed_origins.
void addAllowedOriginsFromEnv(GatewayConfig& config);
// Overrides limits from TG_GATEWAY_<NAME> variables (upper-case field names,
// e.g. TG_GATEWAY_MAX_UNAUTHENTICATED_PER_IP=4, TG_GATEWAY_IP_COMMANDS_PER_S=0).
// Returns an error naming a variable that is not a non-negative number.
Status addLimitsFromEnv(GatewayConfig& config);

class Gateway {
 public:
  Gateway(GatewayConfig config, control::ClusterControl& control);
  ~Gateway();  // stop()s
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Binds, subscribes to the coordinator's events and starts the threads.
  Status start();
  // Closes the listener and every session, unsubscribes and joins threads.
  // A stopped Gateway cannot be started again.
  void stop();
  // The bound port (after start()).
  uint16_t port() const;
  // Number of open WebSocket sessions (also the tokengate_ws_clients gauge).
  size_t wsClients() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tokengate::gateway
