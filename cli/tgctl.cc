// tgctl: command-line client. Submits the Leibniz job or a JSON job file to
// a coordinator, shows live progress and prints the results.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/keys.h"
#include "cli/progress.h"
#include "client/client.h"
#include "common/job_json.h"
#include "common/log.h"
#include "common/security/curve_flags.h"

#ifdef TG_HAVE_COSTMODEL
#include "coordinator/costmodel/tgctl_model.h"
#endif

using namespace tokengate;

namespace {

int printResult(const StatusOr<client::JobResult>& r, bool json_out) {
  if (!r.ok()) {
    fmt::print(stderr, "error: {}\n", r.status().message());
    return 1;
  }
  if (json_out) {
    boost::json::array outs;
    for (const auto& o : r->outputs) {
      boost::json::object jo{{"index", o.index}, {"name", o.name}};
      if (o.status.ok())
        jo["value"] = valueToJson(o.value);
      else
        jo["error"] = boost::json::object{{"code", absl::StatusCodeToString(o.status.code())},
                                          {"message", std::string(o.status.message())}};
      outs.push_back(std::move(jo));
    }
    boost::json::object out{{"job", r->id},
                            {"state", client::jobStateName(r->state)},
                            {"total", r->progress.total},
                            {"done", r->progress.done},
                            {"failed", r->progress.failed},
                            {"wall_s", static_cast<double>(r->wall_ns) / 1e9},
                            {"outputs", std::move(outs)}};
    std::cout << boost::json::serialize(out) << std::endl;
  } else {
    fmt::print("job {} {}: {}/{} tokens done, {} failed, {:.3f} s\n", r->id,
               client::jobStateName(r->state), r->progress.done, r->progress.total,
               r->progress.failed, static_cast<double>(r->wall_ns) / 1e9);
    for (const auto& o : r->outputs) {
      if (o.status.ok())
        fmt::print("  {} = {}\n", o.name, o.value.toString());
      else
        fmt::print("  {} ! {}: {}\n", o.name, absl::StatusCodeToString(o.status.code()),
                   o.status.message());
    }
  }
  return r->state == client::JobState::kSucceeded ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tgctl: TokenGate command-line client"};
  app.require_subcommand(1);
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::string log_level = "warn";
  bool json_out = false, quiet = false;
  double timeout_s = 3600;
  app.add_option("-c,--coordinator", endpoint, "coordinator endpoint")
      ->envname("TG_COORDINATOR")
      ->capture_default_str();
  app.add_flag("--json", json_out, "print results as JSON");
  app.add_flag("-q,--quiet", quiet, "no progress bar");
  app.add_option("--timeout", timeout_s, "seconds to wait")->capture_default_str();
  app.add_option("--log-level", log_level);

  auto* leib = app.add_subcommand("leibniz", "run the Leibniz pi job");
  uint64_t terms = 1'000'000;
  std::string precision = "double";
  uint32_t chunk = 1000, partials = 10;
  leib->add_option("--terms", terms)->capture_default_str();
  leib->add_option("--precision", precision, "double | dec50")->capture_default_str();
  leib->add_option("--chunk", chunk)->capture_default_str();
  leib->add_option("--partials", partials)->capture_default_str();

  auto* submit = app.add_subcommand("submit", "submit a job from a JSON file ('-' = stdin)");
  std::string file;
  bool no_wait = false;
  submit->add_option("file", file)->required();
  submit->add_flag("--no-wait", no_wait, "print the job id and return");

  auto* status = app.add_subcommand("wait", "wait for a job and print its results");
  uint64_t job_id = 0;
  status->add_option("job", job_id)->required();
  auto* cancel = app.add_subcommand("cancel", "cancel a job");
  cancel->add_option("job", job_id)->required();
  auto* info = app.add_subcommand("info", "cluster summary");
  uint32_t wait_nodes = 0;
  info->add_option("--wait-nodes", wait_nodes, "wait until this many nodes are ready");

#ifdef TG_HAVE_COSTMODEL
  costmodel::addModelCommands(app);
#endif
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
}
