// tgctl: command-line client. Global options are in GlobalOptions (cli/command.h); command
// families register themselves below, one line each, from their own files under cli/.
#include <CLI/CLI.hpp>

<<<<<<< HEAD
#include "cli/command.h"
#include "cli/journal_check.h"
=======
#include "cli/keys.h"
#include "cli/progress.h"
#include "client/client.h"
#include "common/job_json.h"
>>>>>>> trust
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
<<<<<<< HEAD
  cli::addJournalCommands(app);
  CLI11_PARSE(app, argc, argv);
  initLogging("tgctl", g.log_level);
#ifdef TG_HAVE_COSTMODEL
  if (auto rc = costmodel::runModelCommands(app); rc >= 0) return rc;
#endif
  if (auto rc = cli::runJournalCommands(app); rc >= 0) return rc;
  return ctx.run ? ctx.run() : 0;
=======
  cli::addKeysCommands(app);
  security::CurveFlags curve_flags;
  security::addCurveFlags(app, curve_flags, security::CurveSide::kClient);
  CLI11_PARSE(app, argc, argv);
  if (auto rc = cli::runKeysCommands(app); rc >= 0) return rc;
  initLogging("tgctl", log_level);
  const Nanos timeout = static_cast<Nanos>(timeout_s * 1e9);

#ifdef TG_HAVE_COSTMODEL
  if (auto rc = costmodel::runModelCommands(app); rc >= 0) return rc;
#endif
  auto curve = security::resolveClientCurve(curve_flags, "admin");
  if (!curve.ok()) return fmt::print(stderr, "error: {}\n", curve.status().message()), 2;
  client::Client c(endpoint, *curve);
  cli::ProgressBar bar(!quiet && !json_out && isatty(2));
  auto progress = [&](const client::Progress& p) { bar.update(p); };

  if (*leib) {
    auto p = parsePrecision(precision);
    if (!p.ok()) return fmt::print(stderr, "error: {}\n", p.status().message()), 2;
    auto job = makeLeibnizJob(terms, *p, chunk, partials);
    if (!job.ok()) return fmt::print(stderr, "error: {}\n", job.status().message()), 2;
    auto r = c.run(*job, progress, timeout);
    bar.finish();
    if (r.ok() && !json_out) {
      const Value expect = leibnizLocal(terms, *p, chunk, partials);
      auto got = r->output("pi");
      if (got.ok())
        fmt::print("pi ~= {}  ({} the single-thread computation)\n", got->toString(),
                   *got == expect ? "bit-identical to" : "DIFFERS from");
    }
    return printResult(r, json_out);
  }
  if (*submit) {
    std::stringstream ss;
    if (file == "-") {
      ss << std::cin.rdbuf();
    } else {
      std::ifstream in(file);
      if (!in) return fmt::print(stderr, "error: cannot read {}\n", file), 2;
      ss << in.rdbuf();
    }
    auto job = parseJobJson(ss.str());
    if (!job.ok()) return fmt::print(stderr, "error: {}\n", job.status().message()), 2;
    if (no_wait) {
      auto id = c.submitWithBackpressure(*job, timeout);
      if (!id.ok()) return fmt::print(stderr, "error: {}\n", id.status().message()), 1;
      fmt::print("{}\n", *id);
      return 0;
    }
    auto r = c.run(*job, progress, timeout);
    bar.finish();
    return printResult(r, json_out);
  }
  if (*status) {
    if (auto st = c.watch(job_id); !st.ok())
      return fmt::print(stderr, "error: {}\n", st.message()), 1;
    auto r = c.wait(job_id, progress, timeout);
    bar.finish();
    return printResult(r, json_out);
  }
  if (*cancel) {
    auto st = c.cancel(job_id);
    if (!st.ok()) return fmt::print(stderr, "error: {}\n", st.message()), 1;
    fmt::print("job {} cancelled\n", job_id);
    return 0;
  }
  if (*info) {
    if (wait_nodes) {
      if (auto st = c.waitForNodes(wait_nodes, timeout); !st.ok())
        return fmt::print(stderr, "error: {}\n", st.message()), 1;
    }
    auto i = c.info();
    if (!i.ok()) return fmt::print(stderr, "error: {}\n", i.status().message()), 1;
    fmt::print(
        "nodes ready {}  draining {}  jobs running {}  tokens live {}  completed {}  failed {}  "
        "queued {}  in flight {}\n",
        i->nodes_ready, i->nodes_draining, i->jobs_running, i->tokens_live, i->tokens_completed,
        i->tokens_failed, i->queued, i->in_flight);
    fmt::print("nodes lost {} (disconnected {})  tokens re-queued {}  returned by draining {}\n",
               i->nodes_lost, i->nodes_disconnected, i->tokens_requeued, i->tokens_returned);
    for (const auto& n : i->nodes)
      fmt::print("  {:<16} {:<9} completed {:>10}  in flight {:>6}\n", n.id, n.state, n.completed,
                 n.in_flight);
    return 0;
  }
  return 0;
>>>>>>> trust
}
