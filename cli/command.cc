#include "cli/command.h"

#include <fmt/format.h>

namespace tokengate::cli {

int fail(const std::string& message, int code) {
  fmt::print(stderr, "error: {}\n", message);
  return code;
}

std::unique_ptr<client::Client> connect(const GlobalOptions& g) {
  auto curve = security::resolveClientCurve(g.curve, "admin");
  if (!curve.ok()) {
    fail(std::string(curve.status().message()));
    return nullptr;
  }
  auto c = std::make_unique<client::Client>(g.endpoint, *curve);
  if (!c->endpointStatus().ok()) {
    fail(std::string(c->endpointStatus().message()));
    return nullptr;
  }
  if (auto st = c->ping(static_cast<Nanos>(g.connect_timeout_s * 1e9)); !st.ok()) {
    fail(fmt::format("{} (--connect-timeout {} s, -c/TG_COORDINATOR to point elsewhere)",
                     st.message(), g.connect_timeout_s));
    return nullptr;
  }
  return c;
}

}  // namespace tokengate::cli
