// The gateway's Prometheus metrics, registered once in the coordinator's
// registry. Owned by Gateway::Impl; the metric objects are owned by the
// registry and are thread-safe, so sessions on any strand update them.
// Names and meanings: docs/protocol.md ("Metrics").
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace tokengate::gateway {

class GatewayMetrics {
 public:
  explicit GatewayMetrics(std::shared_ptr<prometheus::Registry> registry);

  // Command latency, request received to reply queued; unknown names count as "unknown".
  void observeCommand(std::string_view cmd, std::chrono::steady_clock::time_point t0);
  void countError(const std::string& code);
  void countHttp(const char* path) { http_->Add({{"path", path}}).Increment(); }
  std::string text() const;

  std::shared_ptr<prometheus::Registry> registry;

  prometheus::Gauge* ws_clients = nullptr;  // open WebSocket sessions, all kinds
  prometheus::Gauge* ws_unauthenticated = nullptr;
  prometheus::Gauge* outbound_bytes = nullptr;  // queued to clients, all sessions
  prometheus::Counter* events_sent = nullptr;
  prometheus::Counter* events_dropped_slow = nullptr;
  prometheus::Counter* events_dropped_overload = nullptr;
  // tokengate_gateway_refusals_total{reason}
  prometheus::Counter* slow_closed = nullptr;
  prometheus::Counter* budget_closed = nullptr;
  prometheus::Counter* auth_failures = nullptr;
  prometheus::Counter* auth_backoff = nullptr;
  prometheus::Counter* auth_timeout = nullptr;
  prometheus::Counter* rate_limited = nullptr;
  prometheus::Counter* ip_rate_limited = nullptr;
  prometheus::Counter* origin_refused = nullptr;
  prometheus::Counter* too_many_clients = nullptr;
  prometheus::Counter* too_many_unauthenticated = nullptr;
  prometheus::Counter* reply_too_large = nullptr;

 private:
  std::map<std::string, prometheus::Histogram*, std::less<>> cmd_latency_;
  prometheus::Family<prometheus::Counter>* errors_family_ = nullptr;
  prometheus::Family<prometheus::Counter>* http_ = nullptr;
  std::mutex errors_mu_;
  std::map<std::string, prometheus::Counter*> errors_;  // guarded by errors_mu_
};

}  // namespace tokengate::gateway
