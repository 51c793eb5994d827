// Who may do what on the gateway: bearer tokens -> roles, and which browser
// Origins may open /ws. Pure logic, immutable after construction, so any
// thread may call it (tests/unit/gateway/access_policy_test.cc).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/gateway/protocol.h"

namespace tokengate::gateway {

// An Origin split into its parts, lower-cased, with the scheme's default port
// made explicit ("https://A.example" -> {https, a.example, 443}).
struct OriginParts {
  std::string scheme, host;
  uint16_t port = 0;
  bool operator==(const OriginParts&) const = default;
};
// nullopt for anything that is not "scheme://host[:port]" (a trailing '/' is
// ignored), including "null" (opaque origins).
std::optional<OriginParts> parseOrigin(std::string_view origin);

// Splits a comma-separated list; entries are trimmed, empty ones skipped.
std::vector<std::string> parseOriginList(std::string_view list);

class AccessPolicy {
 public:
  AccessPolicy(std::vector<std::string> viewer_tokens, std::vector<std::string> operator_tokens,
               std::vector<std::string> admin_tokens, bool allow_anonymous_read,
               std::vector<std::string> allowed_origins);

  // Highest role whose token matches (constant-time compares); kNone if none.
  Role roleForToken(std::string_view token) const;
  // The role of a connection that has presented no token.
  Role initialRole() const { return allow_anonymous_read_ ? Role::kViewer : Role::kNone; }

  // May a browser page from `origin` open /ws on this gateway? `host` is the
  // request's Host header and `tls` whether the connection is TLS. With an
  // allow-list: the origin (scheme, host and port) must be listed, or "*".
  // Without: same origin, i.e. the Origin's scheme is https when the gateway
  // serves TLS and http otherwise, and its host:port equals Host.
  bool originAllowed(std::string_view origin, std::string_view host, bool tls) const;

 private:
  std::vector<std::string> viewer_, operator_, admin_;
  bool allow_anonymous_read_;
  bool any_origin_ = false;
  std::vector<OriginParts> origins_;
  bool has_origin_list_ = false;
};

}  // namespace tokengate::gateway
