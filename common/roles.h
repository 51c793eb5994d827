// Roles and what each may do, defined once for both halves of the control plane: the
// gateway's WebSocket commands (bearer tokens, coordinator/gateway/protocol.h) and the
// coordinator's ZeroMQ frames and admin requests (CURVE keys, common/security/curve.h).
//
//   viewer    watch and read (job.status, job.list, op.list, node.list, cluster.stats)
//   operator  viewer + submit, cancel, pause, resume, drain, op limits, node (un)drain
//   admin     everything (node.evict, cluster.limits)
//   node      the node protocol only (hello, heartbeat, results, bye): ranks below every client
//             role, so it can run no command
//
// Header-only and constexpr (no link dependency); thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace tokengate {

enum class Role : uint8_t { kNone = 0, kViewer = 1, kOperator = 2, kAdmin = 3, kNode = 4 };

constexpr const char* roleName(Role r) {
  switch (r) {
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
    case Role::kNode:
      return "node";
    case Role::kNone:
      break;
  }
  return "none";
}

constexpr std::optional<Role> parseRole(std::string_view name) {
  for (Role r : {Role::kViewer, Role::kOperator, Role::kAdmin, Role::kNode})
    if (name == roleName(r)) return r;
  return std::nullopt;
}

// The client ranking: admin > operator > viewer > none; a node key ranks with none.
constexpr int roleRank(Role r) {
  switch (r) {
    case Role::kViewer:
      return 1;
    case Role::kOperator:
      return 2;
    case Role::kAdmin:
      return 3;
    default:
      return 0;
  }
}

// Whether `role` includes `needed`: every role includes kNone, kNode includes only itself, and
// the client roles follow their ranking.
constexpr bool roleAtLeast(Role role, Role needed) {
  if (needed == Role::kNone) return true;
  if (needed == Role::kNode || role == Role::kNode) return role == needed;
  return roleRank(role) >= roleRank(needed);
}

// The higher of two client roles (a session that presents several tokens keeps the best).
constexpr Role higherRole(Role a, Role b) { return roleRank(b) > roleRank(a) ? b : a; }

// Every control command and the least role it needs. The gateway's WebSocket commands are these
// names; the ZeroMQ frames and admin requests map onto them (security::roleAllows,
// security::adminRequestRole): submitJob = "submit", cancelJob = "job.cancel", watchJob =
// "job.status", statsRequest = "cluster.stats", adminRequest.pauseOp = "op.pause", ...
struct CommandRole {
  std::string_view name;
  Role least;
};
inline constexpr CommandRole kCommandRoles[] = {
    {"hello", Role::kNone},
    {"auth", Role::kNone},
    {"ping", Role::kNone},
    {"subscribe", Role::kViewer},
    {"unsubscribe", Role::kViewer},
    {"submit", Role::kOperator},
    {"job.status", Role::kViewer},
    {"job.list", Role::kViewer},
    {"job.cancel", Role::kOperator},
    {"token.cancel", Role::kOperator},
    {"op.list", Role::kViewer},
    {"op.pause", Role::kOperator},
    {"op.resume", Role::kOperator},
    {"op.drain", Role::kOperator},
    {"op.cancel_running", Role::kOperator},
    {"op.limits", Role::kOperator},
    {"node.list", Role::kViewer},
    {"node.drain", Role::kOperator},
    {"node.undrain", Role::kOperator},
    {"node.evict", Role::kAdmin},
    {"cluster.stats", Role::kViewer},
    {"cluster.limits", Role::kAdmin},
    {"whoami", Role::kNone},
    {"topics", Role::kNone},
};

// The least role `command` needs; nullopt for an unknown command.
constexpr std::optional<Role> commandRole(std::string_view command) {
  for (const auto& c : kCommandRoles)
    if (c.name == command) return c.least;
  return std::nullopt;
}

}  // namespace tokengate
