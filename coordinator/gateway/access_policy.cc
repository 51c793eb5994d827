#include "coordinator/gateway/access_policy.h"

#include <openssl/crypto.h>

#include <cctype>
#include <charconv>

namespace tokengate::gateway {

namespace {

bool constantTimeEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

uint16_t defaultPort(std::string_view scheme) {
  if (scheme == "http" || scheme == "ws") return 80;
  if (scheme == "https" || scheme == "wss") return 443;
  return 0;
}

// "host[:port]" (IPv6 in brackets) with `dflt` when there is no port.
std::optional<std::pair<std::string, uint16_t>> splitAuthority(std::string_view a, uint16_t dflt) {
  if (a.empty()) return std::nullopt;
  std::string_view host = a, port;
  if (a.front() == '[') {
    auto close = a.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = a.substr(0, close + 1);
    std::string_view rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
    }
  } else if (auto colon = a.rfind(':'); colon != std::string_view::npos) {
    host = a.substr(0, colon);
    port = a.substr(colon + 1);
  }
  if (host.empty() || host.find_first_of("/?#@ ") != std::string_view::npos) return std::nullopt;
  uint16_t p = dflt;
  if (!port.empty()) {
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size()) return std::nullopt;
  }
  return std::make_pair(lower(host), p);
}

}  // namespace

std::optional<OriginParts> parseOrigin(std::string_view o) {
  while (!o.empty() && o.back() == '/') o.remove_suffix(1);
  auto sep = o.find("://");
  if (sep == std::string_view::npos || sep == 0) return std::nullopt;
  OriginParts p;
  p.scheme = lower(o.substr(0, sep));
  auto hp = splitAuthority(o.substr(sep + 3), defaultPort(p.scheme));
  if (!hp) return std::nullopt;
  p.host = std::move(hp->first);
  p.port = hp->second;
  return p;
}

std::vector<std::string> parseOriginList(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front())))
      item.remove_prefix(1);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back())))
      item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

AccessPolicy::AccessPolicy(std::vector<std::string> viewer_tokens,
                           std::vector<std::string> operator_tokens,
                           std::vector<std::string> admin_tokens, bool allow_anonymous_read,
                           std::vector<std::string> allowed_origins)
    : viewer_(std::move(viewer_tokens)),
      operator_(std::move(operator_tokens)),
      admin_(std::move(admin_tokens)),
      allow_anonymous_read_(allow_anonymous_read) {
  has_origin_list_ = !allowed_origins.empty();
  for (const auto& o : allowed_origins) {
    if (o == "*") {
      any_origin_ = true;
    } else if (auto p = parseOrigin(o)) {
      origins_.push_back(std::move(*p));
    }
    // An unparsable entry matches nothing (it still makes this an allow-list).
  }
}

Role AccessPolicy::roleForToken(std::string_view token) const {
  Role best = Role::kNone;
  auto scan = [&](const std::vector<std::string>& tokens, Role r) {
    for (const auto& t : tokens) {
      if (!t.empty() && constantTimeEquals(t, token) && r > best) best = r;
    }
  };
  scan(viewer_, Role::kViewer);
  scan(operator_, Role::kOperator);
  scan(admin_, Role::kAdmin);
  return best;
}

bool AccessPolicy::originAllowed(std::string_view origin, std::string_view host, bool tls) const {
  if (any_origin_) return true;
  std::optional<OriginParts> o = parseOrigin(origin);
  if (!o) return false;
  // An allow-list replaces the same-origin check (Host is client-chosen: DNS rebinding).
  if (has_origin_list_) {
    for (const auto& a : origins_) {
      if (a == *o) return true;
    }
    return false;
  }
  const char* scheme = tls ? "https" : "http";
  if (o->scheme != scheme) return false;
  auto h = splitAuthority(host, defaultPort(scheme));
  return h && h->first == o->host && h->second == o->port;
}

}  // namespace tokengate::gateway
