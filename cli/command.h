// tgctl's command registry. Each command family lives in its own file under cli/ and adds its
// subcommands with one line in tgctl.cc's main():
//
//   void addMyCommands(CLI::App& app, cli::Context& ctx);   // in cli/my_commands.cc
//
// A subcommand sets `ctx.run` from its CLI11 callback; main() calls it after parsing, so global
// options (-c, --timeout, --json, ...) are parsed wherever they appear on the line.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "client/client.h"
#include "common/clock.h"
#include "common/security/curve_flags.h"

namespace tokengate::cli {

struct GlobalOptions {
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::string log_level = "warn";
  bool json = false;
  bool quiet = false;
  double timeout_s = 3600;
  double connect_timeout_s = 5;
  // CURVE keys (docs/security.md); tgctl uses the `admin` key pair under --curve-dir.
  security::CurveFlags curve;

  Nanos timeout() const { return static_cast<Nanos>(timeout_s * 1e9); }
};

struct Context {
  GlobalOptions global;
  // Set by the selected subcommand's callback; returns the exit code.
  std::function<int()> run;
};

// A client connected to g.endpoint that answered a ping within --connect-timeout, or null after
// printing why not to stderr (the caller exits 1).
std::unique_ptr<client::Client> connect(const GlobalOptions& g);

// Prints "error: <message>" to stderr and returns `code`.
int fail(const std::string& message, int code = 1);

void addJobCommands(CLI::App& app, Context& ctx);    // cli/job_commands.cc
void addAdminCommands(CLI::App& app, Context& ctx);  // cli/admin_commands.cc

}  // namespace tokengate::cli
