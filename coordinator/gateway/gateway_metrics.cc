#include "coordinator/gateway/gateway_metrics.h"

#include <prometheus/text_serializer.h>

#include "coordinator/gateway/protocol.h"

namespace tokengate::gateway {

GatewayMetrics::GatewayMetrics(std::shared_ptr<prometheus::Registry> reg_ptr)
    : registry(std::move(reg_ptr)) {
  auto& reg = *registry;
  auto& clients = prometheus::BuildGauge()
                      .Name("tokengate_ws_clients")
                      .Help("Open WebSocket sessions on the gateway")
                      .Register(reg);
  ws_clients = &clients.Add({});
  ws_unauthenticated = &prometheus::BuildGauge()
                            .Name("tokengate_ws_unauthenticated_clients")
                            .Help("Open WebSocket sessions that have not authenticated yet")
                            .Register(reg)
                            .Add({});
  outbound_bytes = &prometheus::BuildGauge()
                        .Name("tokengate_gateway_outbound_bytes")
                        .Help("Bytes queued to WebSocket clients, all sessions")
                        .Register(reg)
                        .Add({});
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
  events_sent = &events.Add({{"result", "sent"}});
  events_dropped_slow = &events.Add({{"result", "dropped_slow_client"}});
  events_dropped_overload = &events.Add({{"result", "dropped_overload"}});
  auto& refusals = prometheus::BuildCounter()
                       .Name("tokengate_gateway_refusals_total")
                       .Help("Connections or commands refused by the gateway, by reason")
                       .Register(reg);
  slow_closed = &refusals.Add({{"reason", "slow_client_closed"}});
  budget_closed = &refusals.Add({{"reason", "outbound_budget_closed"}});
  auth_failures = &refusals.Add({{"reason", "auth_failed"}});
  auth_backoff = &refusals.Add({{"reason", "auth_backoff"}});
  auth_timeout = &refusals.Add({{"reason", "auth_timeout"}});
  rate_limited = &refusals.Add({{"reason", "rate_limited"}});
  ip_rate_limited = &refusals.Add({{"reason", "ip_rate_limited"}});
  origin_refused = &refusals.Add({{"reason", "origin"}});
  too_many_clients = &refusals.Add({{"reason", "too_many_clients"}});
  too_many_unauthenticated = &refusals.Add({{"reason", "too_many_unauthenticated"}});
  reply_too_large = &refusals.Add({{"reason", "reply_too_large"}});
  http_ = &prometheus::BuildCounter()
               .Name("tokengate_gateway_http_requests_total")
               .Help("HTTP requests by path")
               .Register(reg);
}

void GatewayMetrics::observeCommand(std::string_view cmd,
                                    std::chrono::steady_clock::time_point t0) {
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto it = cmd_latency_.find(cmd);
  if (it == cmd_latency_.end()) it = cmd_latency_.find("unknown");
  it->second->Observe(s);
}

void GatewayMetrics::countError(const std::string& code) {
  std::lock_guard lock(errors_mu_);
  auto it = errors_.find(code);
  if (it == errors_.end()) {
    it = errors_.emplace(code, &errors_family_->Add({{"code", code}})).first;
  }
  it->second->Increment();
}

std::string GatewayMetrics::text() const {
  prometheus::TextSerializer ser;
  return ser.Serialize(registry->Collect());
}

}  // namespace tokengate::gateway
