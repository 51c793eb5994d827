// `tgctl keys ...`: CurveZMQ key files for docs/security.md.
//   tgctl keys generate --out DIR [--name NAME]   DIR/NAME.key (secret, 0600) + DIR/NAME.pub
//   tgctl keys init --out DIR                     a whole cluster's keys and allow-lists
//   tgctl keys public FILE                        the public key of a secret key file
#pragma once

#include <CLI/CLI.hpp>

namespace tokengate::cli {

void addKeysCommands(CLI::App& app);
// Runs a parsed keys command: its exit code, or -1 when no keys command was given.
int runKeysCommands(const CLI::App& app);

}  // namespace tokengate::cli
