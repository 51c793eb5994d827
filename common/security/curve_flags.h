// The CURVE flags every TokenGate binary takes, with TG_* environment equivalents:
//   --curve-dir DIR              TG_CURVE_DIR              a `tgctl keys init` layout
//   --curve-secret-key-file F    TG_CURVE_SECRET_KEY_FILE  this process's secret key
//   --curve-server-key K|F       TG_CURVE_SERVER_KEY       coordinator public key (nodes, clients)
//   --curve-allow-nodes P        TG_CURVE_ALLOW_NODES      coordinator: node keys (dir or file)
//   --curve-allow-clients P      TG_CURVE_ALLOW_CLIENTS    coordinator: client keys with roles
//   --insecure                   TG_INSECURE=1             plain TCP, every peer trusted
// Explicit flags win over --curve-dir; --insecure overrides --curve-dir but not explicit key files.
// Without keys and without --insecure the binary refuses to start (secure by default). See
// docs/security.md.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "common/security/curve.h"

namespace tokengate::security {

struct CurveFlags {
  std::string dir;
  std::string secret_key_file;
  std::string server_key;
  std::string allow_nodes;
  std::string allow_clients;
  bool insecure = false;
};

enum class CurveSide { kCoordinator, kNode, kClient };

void addCurveFlags(CLI::App& app, CurveFlags& flags, CurveSide side);

// Coordinator: key pair and allow-lists. A disabled ServerCurve only with flags.insecure.
StatusOr<ServerCurve> resolveServerCurve(const CurveFlags& flags);
// Node or client: own key (`<dir>/<default_name>.key` under --curve-dir) and the coordinator's
// public key (`<dir>/server.pub`). A disabled ClientCurve only with flags.insecure.
StatusOr<ClientCurve> resolveClientCurve(const CurveFlags& flags, const std::string& default_name);

// The files `tgctl keys init` writes under `dir`: server, node and admin key pairs and the
// allow-list directories (allow/nodes/node.pub, allow/clients/admin/admin.pub).
Status writeClusterKeys(const std::string& dir);

}  // namespace tokengate::security
