#include "cli/keys.h"

#include <fmt/format.h>

#include "common/security/curve.h"
#include "common/security/curve_flags.h"

namespace tokengate::cli {
namespace {
struct KeysArgs {
  std::string out;
  std::string name = "tokengate";
  std::string file;
};
KeysArgs& args() {
  static KeysArgs a;  // one CLI parse per process
  return a;
}
}  // namespace

void addKeysCommands(CLI::App& app) {
  auto* keys = app.add_subcommand("keys", "CurveZMQ keys (docs/security.md)");
  keys->require_subcommand(1);
  auto* gen = keys->add_subcommand(
      "generate", "write one key pair: DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub");
  gen->add_option("--out", args().out, "directory (created 0700 if missing)")->required();
  gen->add_option("--name", args().name, "file name stem")->capture_default_str();
  auto* init = keys->add_subcommand(
      "init",
      "write a cluster's keys: server, node and admin pairs, allow/nodes/node.pub and "
      "allow/clients/admin/admin.pub (use with --curve-dir DIR)");
  init->add_option("--out", args().out, "directory (created 0700 if missing)")->required();
  auto* pub = keys->add_subcommand("public", "print the public key of a secret key file");
  pub->add_option("file", args().file, "secret key file (Z85 text, e.g. DIR/NAME.key)")->required();
}

int runKeysCommands(const CLI::App& app) {
  const auto* keys = app.get_subcommand("keys");
  if (!keys->parsed()) return -1;
  const auto& a = args();
  if (keys->get_subcommand("generate")->parsed()) {
    auto kp = security::generateKeyPair();
    if (!kp.ok()) return fmt::print(stderr, "error: {}\n", kp.status().message()), 1;
    if (auto st = security::writeKeyPair(a.out, a.name, *kp); !st.ok())
      return fmt::print(stderr, "error: {}\n", st.message()), 1;
    fmt::print("{}/{}.key (secret)\n{}/{}.pub (public: {})\n", a.out, a.name, a.out, a.name,
               kp->public_key);
    return 0;
  }
  if (keys->get_subcommand("init")->parsed()) {
    if (auto st = security::writeClusterKeys(a.out); !st.ok())
      return fmt::print(stderr, "error: {}\n", st.message()), 1;
    fmt::print(
        "wrote {0}: server.key/.pub, node.key/.pub, admin.key/.pub, allow/nodes/, "
        "allow/clients/{{admin,operator,viewer}}/\n"
        "  coordinator: --curve-dir {0}\n  nodes:       --curve-dir {0}   (node.key, server.pub)\n"
        "  tgctl:       --curve-dir {0}   (admin.key, server.pub)\n",
        a.out);
    return 0;
  }
  auto secret = security::readKeyFile(a.file);
  if (!secret.ok()) return fmt::print(stderr, "error: {}\n", secret.status().message()), 1;
  auto pub = security::publicKeyOf(*secret);
  if (!pub.ok()) return fmt::print(stderr, "error: {}\n", pub.status().message()), 1;
  fmt::print("{}\n", *pub);
  return 0;
}

}  // namespace tokengate::cli
