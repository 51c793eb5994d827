// The control page (coordinator/gateway/web/), embedded at build time by
// embed_web.cmake so the binary is self-contained.
#pragma once

#include <cstddef>
#include <string_view>

namespace tokengate::gateway {

struct WebAsset {
  std::string_view path;  // "/index.html", "/app.js", ...
  std::string_view body;
};

// nullptr when there is no such file.
const WebAsset* findWebAsset(std::string_view path);
std::string_view contentTypeFor(std::string_view path);

}  // namespace tokengate::gateway
