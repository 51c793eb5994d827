// Request-target and header parsing for the gateway's HTTP side, kept apart
// from Beast so it is unit-tested alone (tests/unit/gateway/url_test.cc).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tokengate::gateway {

// "/ws?token=x" -> "/ws".
std::string_view pathOf(std::string_view target);
// %XX escapes and '+' (form encoding) decoded; a malformed escape is kept as is.
std::string percentDecode(std::string_view s);
// The decoded value of the first `key=` in the query string; empty when absent.
std::string queryParam(std::string_view target, std::string_view key);
// The token of an Authorization header value. Accepted forms (docs/protocol.md):
// "Bearer <token>" with the scheme in any case and one or more spaces or tabs
// before the token; trailing whitespace is ignored. Anything else (Basic,
// an empty token, a bare token) is nullopt.
std::optional<std::string> bearerToken(std::string_view authorization);

}  // namespace tokengate::gateway
