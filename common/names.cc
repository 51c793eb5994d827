#include "common/names.h"

#include <fmt/format.h>

namespace tokengate {

namespace {

// Printable, escaped and bounded: the name may be anything a peer sent.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      out += static_cast<char>(c);
    else
      out += fmt::format("\\x{:02x}", c);
  }
  if (s.size() > 40) out += "...";
  return out + "\"";
}

Status validateName(std::string_view what, std::string_view name, bool allow_slash) {
  if (name.empty()) return absl::InvalidArgumentError(fmt::format("{} must not be empty", what));
  if (name.size() > kMaxNameBytes)
    return absl::InvalidArgumentError(fmt::format("{} {} is {} bytes long (at most {})", what,
                                                  quoted(name), name.size(), kMaxNameBytes));
  for (char ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' || ch == ':' ||
                    ch == '@' || (allow_slash && ch == '/');
    if (!ok)
      return absl::InvalidArgumentError(
          fmt::format("{} {} has a character outside [A-Za-z0-9._:@-{}]", what, quoted(name),
                      allow_slash ? "/" : ""));
  }
  return absl::OkStatus();
}

}  // namespace

Status validateNodeId(std::string_view id) { return validateName("node id", id, false); }

Status validateOperationName(std::string_view name) {
  return validateName("operation name", name, true);
}

Status validateHello(wire::NodeHello::Reader hello) {
  auto id = hello.getNodeId();
  if (Status st = validateNodeId(std::string_view(id.begin(), id.size())); !st.ok()) return st;
  auto ops = hello.getOperations();
  if (ops.size() > kMaxHelloOperations)
    return absl::InvalidArgumentError(
        fmt::format("hello offers {} operations (at most {})", ops.size(), kMaxHelloOperations));
  for (auto op : ops) {
    auto n = op.getName();
    if (Status st = validateOperationName(std::string_view(n.begin(), n.size())); !st.ok())
      return st;
  }
  return absl::OkStatus();
}

}  // namespace tokengate
