#include "common/security/curve_flags.h"

#include <fmt/format.h>

#include <filesystem>

namespace tokengate::security {
namespace fs = std::filesystem;

void addCurveFlags(CLI::App& app, CurveFlags& f, CurveSide side) {
  const char* group = "CURVE security (docs/security.md)";
  app.add_option("--curve-dir", f.dir,
                 "Key directory written by `tgctl keys init` (default file names inside)")
      ->envname("TG_CURVE_DIR")
      ->group(group);
  app.add_option("--curve-secret-key-file", f.secret_key_file,
                 "This process's CURVE secret key (Z85 file)")
      ->envname("TG_CURVE_SECRET_KEY_FILE")
      ->group(group);
  if (side == CurveSide::kCoordinator) {
    app.add_option("--curve-allow-nodes", f.allow_nodes,
                   "Node public keys: a directory of key files, or a file with one key per line")
        ->envname("TG_CURVE_ALLOW_NODES")
        ->group(group);
    app.add_option("--curve-allow-clients", f.allow_clients,
                   "Client public keys: a directory with admin/, operator/, viewer/ "
                   "subdirectories of key files, or a file of '<role> <key>' lines")
        ->envname("TG_CURVE_ALLOW_CLIENTS")
        ->group(group);
  } else {
    app.add_option("--curve-server-key", f.server_key,
                   "The coordinator's CURVE public key (Z85 text or a file holding it)")
        ->envname("TG_CURVE_SERVER_KEY")
        ->group(group);
  }
  app.add_flag("--insecure", f.insecure,
               "Plain TCP without CURVE: anyone who reaches the port is trusted")
      ->envname("TG_INSECURE")
      ->group(group);
}

namespace {
std::string inDir(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}
Status missingKeys(const char* what) {
  return absl::FailedPreconditionError(fmt::format(
      "no CURVE keys: give {} (`tgctl keys init --out DIR` writes them; --curve-dir DIR uses "
      "that layout), or run without security with --insecure",
      what));
}
}  // namespace

StatusOr<ServerCurve> resolveServerCurve(const CurveFlags& f) {
  std::string secret_file = f.secret_key_file, nodes = f.allow_nodes, clients = f.allow_clients;
  // --insecure overrides a --curve-dir (which may come from the environment), not explicit keys.
  if (f.insecure) {
    if (!secret_file.empty())
      return absl::InvalidArgumentError("--insecure and a CURVE key file given: choose one");
    return ServerCurve{};
  }
  if (!f.dir.empty()) {
    if (secret_file.empty()) secret_file = inDir(f.dir, "server.key");
    if (nodes.empty()) nodes = inDir(f.dir, "allow/nodes");
    if (clients.empty()) clients = inDir(f.dir, "allow/clients");
  }
  if (secret_file.empty()) return missingKeys("--curve-secret-key-file and the allow-lists");
  if (nodes.empty() && clients.empty())
    return absl::InvalidArgumentError(
        "CURVE on but no allow-list: give --curve-allow-nodes and/or --curve-allow-clients");
  auto secret = readKeyFile(secret_file);
  if (!secret.ok()) return secret.status();
  return ServerCurve{*secret, nodes, clients};
}

StatusOr<ClientCurve> resolveClientCurve(const CurveFlags& f, const std::string& default_name) {
  std::string secret_file = f.secret_key_file, server = f.server_key;
  if (f.insecure) {
    if (!secret_file.empty())
      return absl::InvalidArgumentError("--insecure and a CURVE key file given: choose one");
    return ClientCurve{};
  }
  if (!f.dir.empty()) {
    if (secret_file.empty()) secret_file = inDir(f.dir, default_name + ".key");
    if (server.empty()) server = inDir(f.dir, "server.pub");
  }
  if (secret_file.empty()) return missingKeys("--curve-secret-key-file and --curve-server-key");
  if (server.empty())
    return absl::InvalidArgumentError(
        "CURVE on but no --curve-server-key (coordinator public key)");
  auto secret = readKeyFile(secret_file);
  if (!secret.ok()) return secret.status();
  auto server_key = keyFromTextOrFile(server);
  if (!server_key.ok()) return server_key.status();
  auto pub = publicKeyOf(*secret);
  if (!pub.ok()) return pub.status();
  return ClientCurve{*secret, *pub, *server_key};
}

Status writeClusterKeys(const std::string& dir) {
  for (const char* name : {"server", "node", "admin"}) {
    auto kp = generateKeyPair();
    if (!kp.ok()) return kp.status();
    if (auto st = writeKeyPair(dir, name, *kp); !st.ok()) return st;
    std::string allow;
    if (std::string(name) == "node") allow = inDir(dir, "allow/nodes");
    if (std::string(name) == "admin") allow = inDir(dir, "allow/clients/admin");
    if (allow.empty()) continue;
    std::error_code ec;
    fs::create_directories(allow, ec);
    if (ec) return absl::InternalError(fmt::format("cannot create {}: {}", allow, ec.message()));
    if (auto st = writePublicKey(inDir(allow, std::string(name) + ".pub"), kp->public_key);
        !st.ok())
      return st;
  }
  for (const char* role : {"operator", "viewer"}) {
    std::error_code ec;
    fs::create_directories(inDir(dir, std::string("allow/clients/") + role), ec);
  }
  return absl::OkStatus();
}

}  // namespace tokengate::security
