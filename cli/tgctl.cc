// tgctl: command-line client. Global options are in GlobalOptions (cli/command.h); command
// families register themselves below, one line each, from their own files under cli/.
#include <CLI/CLI.hpp>

#include "cli/command.h"
#include "cli/journal_check.h"
#include "cli/keys.h"
#include "common/log.h"
#include "common/security/curve_flags.h"

#ifdef TG_HAVE_COSTMODEL
#include "coordinator/costmodel/tgctl_model.h"
#endif

using namespace tokengate;

int main(int argc, char** argv) {
  CLI::App app{"tgctl: TokenGate command-line client"};
  app.require_subcommand(1);
  // Global options are accepted before or after the subcommand.
  app.fallthrough();
  cli::Context ctx;
  auto& g = ctx.global;
  app.add_option("-c,--coordinator", g.endpoint,
                 "Coordinator wire endpoint: tcp://host:port, host:port or host (port 5555)")
      ->envname("TG_COORDINATOR")
      ->capture_default_str();
  app.add_flag("--json", g.json, "Print results as JSON on stdout");
  app.add_flag("-q,--quiet", g.quiet, "No progress bar");
  app.add_option("--timeout", g.timeout_s, "Seconds to wait for a job or a reply")
      ->capture_default_str();
  app.add_option("--connect-timeout", g.connect_timeout_s,
                 "Seconds to wait for the coordinator to answer before giving up")
      ->capture_default_str();
  app.add_option("--log-level", g.log_level, "trace|debug|info|warn|error")->capture_default_str();

  cli::addJobCommands(app, ctx);
  cli::addAdminCommands(app, ctx);
#ifdef TG_HAVE_COSTMODEL
  costmodel::addModelCommands(app);
#endif
  cli::addJournalCommands(app);
  cli::addKeysCommands(app);
  security::addCurveFlags(app, g.curve, security::CurveSide::kClient);
  CLI11_PARSE(app, argc, argv);
  if (auto rc = cli::runKeysCommands(app); rc >= 0) return rc;
  initLogging("tgctl", g.log_level);
#ifdef TG_HAVE_COSTMODEL
  if (auto rc = costmodel::runModelCommands(app); rc >= 0) return rc;
#endif
  if (auto rc = cli::runJournalCommands(app); rc >= 0) return rc;
  return ctx.run ? ctx.run() : 0;
}
