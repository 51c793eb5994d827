// tgctl leibniz | submit | wait | cancel | info | jobs.
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/command.h"
#include "cli/progress.h"
#include "common/job_json.h"

namespace tokengate::cli {
namespace {

namespace json = boost::json;

// Human output shows a list's or packed array's first elements only (--json has them all).
constexpr size_t kShownItems = 16;

int printResult(const StatusOr<client::JobResult>& r, bool json_out) {
  if (!r.ok()) return fail(std::string(r.status().message()));
  if (json_out) {
    json::array outs;
    for (const auto& o : r->outputs) {
      json::object jo{{"index", o.index}, {"name", o.name}};
      if (o.status.ok())
        jo["value"] = valueToJson(o.value);
      else
        jo["error"] = json::object{{"code", absl::StatusCodeToString(o.status.code())},
                                   {"message", std::string(o.status.message())}};
      outs.push_back(std::move(jo));
    }
    json::object out{{"job", r->id},
                     {"state", client::jobStateName(r->state)},
                     {"total", r->progress.total},
                     {"done", r->progress.done},
                     {"failed", r->progress.failed},
                     {"wall_s", static_cast<double>(r->wall_ns) / 1e9},
                     {"outputs", std::move(outs)}};
    std::cout << json::serialize(out) << std::endl;
  } else {
    fmt::print("job {} {}: {}/{} tokens done, {} failed, {:.3f} s\n", r->id,
               client::jobStateName(r->state), r->progress.done, r->progress.total,
               r->progress.failed, static_cast<double>(r->wall_ns) / 1e9);
    for (const auto& o : r->outputs) {
      if (o.status.ok())
        fmt::print("  {} = {}\n", o.name, o.value.toString(kShownItems));
      else
        fmt::print("  {} ! {}: {}\n", o.name, absl::StatusCodeToString(o.status.code()),
                   o.status.message());
    }
  }
  return r->state == client::JobState::kSucceeded ? 0 : 3;
}

// Submits `job`, says its id at once (stdout with --detach, else stderr, so Ctrl-C never loses
// it), then waits with a progress bar unless detached.
StatusOr<client::JobResult> submitAndWait(client::Client& c, const JobSpec& job,
                                          const GlobalOptions& g, bool detach, int* rc) {
  auto id = c.submitWithBackpressure(job, g.timeout());
  if (!id.ok()) return id.status();
  if (detach) {
    if (g.json)
      fmt::print("{}\n", json::serialize(json::object{{"job", *id}}));
    else
      fmt::print("{}\n", *id);
    *rc = 0;
    return absl::CancelledError("detached");
  }
  if (!g.quiet)
    fmt::print(stderr, "job {} submitted (tgctl wait {} to follow it again)\n", *id, *id);
  ProgressBar bar(!g.quiet && !g.json && isatty(2));
  auto r = c.wait(
      *id, [&](const client::Progress& p) { bar.update(p); }, g.timeout());
  bar.finish();
  return r;
}

// `count` copies of `job` through the pipelined client: up to `window` submissions in flight,
// each finished job printed as it comes (one line, or one JSON object per line with --json),
// then a summary on stderr. Exit 0 when every job succeeded, else 3 (1 on a transport error).
int submitMany(client::Client& c, const JobSpec& job, uint32_t count, uint32_t window,
               const GlobalOptions& g) {
  c.setWindow(window);
  uint64_t succeeded = 0, failed = 0;
  auto take = [&](const client::AsyncResult& r) {
    const bool json_line = g.json;
    if (!r.result.ok()) {
      ++failed;
      if (json_line)
        std::cout << json::serialize(
                         json::object{{"error", std::string(r.result.status().message())}})
                  << "\n";
      else
        fmt::print("job ! {}\n", r.result.status().message());
      return;
    }
    const client::JobResult& jr = *r.result;
    (jr.state == client::JobState::kSucceeded ? succeeded : failed) += 1;
    if (json_line) {
      std::cout << json::serialize(json::object{{"job", jr.id},
                                                {"state", client::jobStateName(jr.state)},
                                                {"done", jr.progress.done},
                                                {"failed", jr.progress.failed}})
                << "\n";
    } else if (!g.quiet) {
      fmt::print("job {} {}: {}/{} tokens done, {} failed\n", jr.id, client::jobStateName(jr.state),
                 jr.progress.done, jr.progress.total, jr.progress.failed);
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  for (uint32_t i = 0; i < count; ++i) {
    auto h = c.submitAsync(job, client::Backpressure::kRetry, g.timeout());
    if (!h.ok()) return fail(std::string(h.status().message()));
    while (c.outstanding() > c.inFlight()) {  // finished ones: print without waiting
      auto r = c.waitAny(0);
      if (!r.ok()) return fail(std::string(r.status().message()));
      take(*r);
    }
  }
  auto rest = c.waitAll(g.timeout());
  if (!rest.ok()) return fail(std::string(rest.status().message()));
  for (const auto& r : *rest) take(r);
  std::cout.flush();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!g.quiet)
    fmt::print(stderr, "{} jobs: {} succeeded, {} failed, {:.3f} s ({:.0f} jobs/s)\n", count,
               succeeded, failed, s, s > 0 ? count / s : 0.0);
  return failed ? 3 : 0;
}

}  // namespace

void addJobCommands(CLI::App& app, Context& ctx) {
  const GlobalOptions& g = ctx.global;

  auto* leib = app.add_subcommand("leibniz", "Run the Leibniz pi job and check it bit for bit");
  struct LeibnizArgs {
    uint64_t terms = 1'000'000;
    std::string precision = "double";
    uint32_t chunk = 1000, partials = 10;
    double verify = 0;
    bool detach = false;
  };
  auto la = std::make_shared<LeibnizArgs>();
  leib->add_option("--terms", la->terms, "Number of series terms (tokens)")->capture_default_str();
  leib->add_option("--precision", la->precision, "double | dec50")->capture_default_str();
  leib->add_option("--chunk", la->chunk, "Terms summed per chunk token")->capture_default_str();
  leib->add_option("--partials", la->partials, "Chunks summed per partial token")
      ->capture_default_str();
  leib->add_option("--verify", la->verify,
                   "Verified execution: run this % of the tokens again on another node and "
                   "compare (docs/security.md)")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  leib->add_flag("-d,--detach", la->detach, "Print the job id and return without waiting");
  leib->callback([&ctx, &g, la] {
    ctx.run = [&g, la]() -> int {
      auto p = parsePrecision(la->precision);
      if (!p.ok()) return fail(std::string(p.status().message()), 2);
      auto job = makeLeibnizJob(la->terms, *p, la->chunk, la->partials);
      if (!job.ok()) return fail(std::string(job.status().message()), 2);
      job->verify_pct = la->verify;
      auto c = connect(g);
      if (!c) return 1;
      int rc = 1;
      auto r = submitAndWait(*c, *job, g, la->detach, &rc);
      if (la->detach && rc == 0) return 0;
      if (r.ok() && !g.json) {
        const Value expect = leibnizLocal(la->terms, *p, la->chunk, la->partials);
        auto got = r->output("pi");
        if (got.ok())
          fmt::print("pi ~= {}  ({} the single-thread computation)\n", got->toString(),
                     *got == expect ? "bit-identical to" : "DIFFERS from");
      }
      return printResult(r, g.json);
    };
  });

  auto* submit = app.add_subcommand("submit", "Submit a job from a JSON file ('-' = stdin)");
  struct SubmitArgs {
    std::string file;
    bool detach = false;
    uint32_t count = 1;
    uint32_t window = 1024;
  };
  auto sa = std::make_shared<SubmitArgs>();
  submit->add_option("file", sa->file, "Job JSON (docs/protocol.md), '-' for stdin")->required();
  submit->add_flag("-d,--detach,--no-wait", sa->detach,
                   "Print the job id and return without waiting");
  submit
      ->add_option("-n,--count", sa->count,
                   "Submit the job this many times, pipelined (one line per finished job, then a "
                   "summary)")
      ->check(CLI::Range(1u, 100'000'000u))
      ->capture_default_str();
  submit
      ->add_option("--window", sa->window,
                   "With --count: jobs in flight at once (submissions not yet answered)")
      ->check(CLI::Range(1u, 1'000'000u))
      ->capture_default_str();
  submit->callback([&ctx, &g, sa] {
    ctx.run = [&g, sa]() -> int {
      std::stringstream ss;
      if (sa->file == "-") {
        ss << std::cin.rdbuf();
      } else {
        std::ifstream in(sa->file);
        if (!in) return fail("cannot read " + sa->file, 2);
        ss << in.rdbuf();
      }
      auto job = parseJobJson(ss.str());
      if (!job.ok()) return fail(std::string(job.status().message()), 2);
      if (sa->count > 1 && sa->detach) return fail("--count does not combine with --detach", 2);
      auto c = connect(g);
      if (!c) return 1;
      if (sa->count > 1) return submitMany(*c, *job, sa->count, sa->window, g);
      int rc = 1;
      auto r = submitAndWait(*c, *job, g, sa->detach, &rc);
      if (sa->detach && rc == 0) return 0;
      return printResult(r, g.json);
    };
  });

  auto job_id = std::make_shared<uint64_t>(0);
  auto wait_ids = std::make_shared<std::vector<uint64_t>>();
  auto* wait = app.add_subcommand("wait", "Wait for jobs and print their results");
  wait->add_option("jobs", *wait_ids, "Job ids (several: all watched at once, printed in order)")
      ->required();
  wait->callback([&ctx, &g, wait_ids] {
    ctx.run = [&g, wait_ids]() -> int {
      auto c = connect(g);
      if (!c) return 1;
      const bool one = wait_ids->size() == 1;
      // Every watch goes out before the first wait: the jobs' results come back over the one
      // socket in whatever order they finish.
      for (uint64_t id : *wait_ids)
        if (auto st = c->watch(id); !st.ok()) return fail(std::string(st.message()));
      int rc = 0;
      for (uint64_t id : *wait_ids) {
        ProgressBar bar(one && !g.quiet && !g.json && isatty(2));
        auto r = c->wait(
            id, [&](const client::Progress& p) { bar.update(p); }, g.timeout());
        bar.finish();
        rc = std::max(rc, printResult(r, g.json));
      }
      return rc;
    };
  });

  auto* cancel = app.add_subcommand("cancel", "Cancel a job");
  cancel->add_option("job", *job_id, "Job id")->required();
  cancel->callback([&ctx, &g, job_id] {
    ctx.run = [&g, job_id]() -> int {
      auto c = connect(g);
      if (!c) return 1;
      if (auto st = c->cancel(*job_id); !st.ok()) return fail(std::string(st.message()));
      fmt::print("job {} cancelled\n", *job_id);
      return 0;
    };
  });

  auto* info = app.add_subcommand("info", "Cluster summary and nodes");
  auto wait_nodes = std::make_shared<uint32_t>(0);
  info->add_option("--wait-nodes", *wait_nodes,
                   "Wait (up to --timeout) until this many nodes are ready");
  info->callback([&ctx, &g, wait_nodes] {
    ctx.run = [&g, wait_nodes]() -> int {
      auto c = connect(g);
      if (!c) return 1;
      if (*wait_nodes) {
        if (auto st = c->waitForNodes(*wait_nodes, g.timeout()); !st.ok())
          return fail(std::string(st.message()));
      }
      auto i = c->info();
      if (!i.ok()) return fail(std::string(i.status().message()));
      fmt::print(
          "nodes ready {}  draining {}  jobs running {}  tokens live {}  completed {}  failed {}  "
          "queued {}  in flight {}\n",
          i->nodes_ready, i->nodes_draining, i->jobs_running, i->tokens_live, i->tokens_completed,
          i->tokens_failed, i->queued, i->in_flight);
      fmt::print("nodes lost {} (disconnected {})  tokens re-queued {}  returned by draining {}\n",
                 i->nodes_lost, i->nodes_disconnected, i->tokens_requeued, i->tokens_returned);
      fmt::print("nodes quarantined {}  run timeouts {}\n", i->nodes_quarantined, i->run_timeouts);
      fmt::print("verify runs {}  matched {}  mismatched {}  unverifiable {}  tokens reopened {}\n",
                 i->verify_reruns, i->verify_matched, i->verify_mismatched, i->verify_unverifiable,
                 i->tokens_reopened);
      for (const auto& n : i->nodes)
        fmt::print("  {:<16} {:<9} completed {:>10}  in flight {:>6}\n", n.id, n.state, n.completed,
                   n.in_flight);
      return 0;
    };
  });

  auto* jobs = app.add_subcommand("jobs", "List jobs (running and recently finished)");
  jobs->callback([&ctx, &g] {
    ctx.run = [&g]() -> int {
      auto c = connect(g);
      if (!c) return 1;
      auto r = c->admin(client::AdminCall(client::AdminCall::Kind::kListJobs), g.timeout());
      if (!r.ok()) return fail(std::string(r.status().message()));
      if (g.json) return fmt::print("{}\n", *r), 0;
      const auto list = json::parse(*r).as_array();
      fmt::print("{:>20}  {:<10} {:>10} {:>10} {:>8} {:>10}  {}\n", "JOB", "STATE", "DONE", "TOTAL",
                 "FAILED", "WALL S", "NAME");
      for (const auto& v : list) {
        const auto& j = v.as_object();
        fmt::print("{:>20}  {:<10} {:>10} {:>10} {:>8} {:>10.3f}  {}\n",
                   json::value_to<uint64_t>(j.at("id")), json::value_to<std::string>(j.at("state")),
                   json::value_to<uint64_t>(j.at("done")), json::value_to<uint64_t>(j.at("total")),
                   json::value_to<uint64_t>(j.at("failed")), json::value_to<double>(j.at("wall_s")),
                   json::value_to<std::string>(j.at("name")));
      }
      return 0;
    };
  });
}

}  // namespace tokengate::cli
