// tgctl op list|pause|resume|drain|limits and node list|drain|undrain|evict: operator calls over
// the wire port (Frame.adminRequest), the same effects as the gateway's op.* / node.* commands.
#include <boost/json.hpp>

#include "cli/command.h"

namespace tokengate::cli {
namespace {

namespace json = boost::json;
using Kind = client::AdminCall::Kind;

std::string str(const json::object& o, const char* k) {
  return json::value_to<std::string>(o.at(k));
}
double num(const json::object& o, const char* k) { return o.at(k).to_number<double>(); }

void printOp(const json::object& o) {
  const double rate = num(o, "max_rate_per_s");
  const double inflight = num(o, "max_in_flight");
  fmt::print(
      "{:<24} {:<7} {:<7} queued {:>9}  running {:>6}  completed {:>11}  failed {:>7}  "
      "limits in-flight {} rate {} verify {}\n",
      str(o, "name"), str(o, "effective_weight"), o.at("paused").as_bool() ? "paused" : "active",
      num(o, "queued"), num(o, "running"), num(o, "completed"), num(o, "failed"),
      inflight > 0 ? fmt::format("{}", inflight) : "-", rate > 0 ? fmt::format("{}/s", rate) : "-",
      o.if_contains("verify_pct") && num(o, "verify_pct") > 0
          ? fmt::format("{}%", num(o, "verify_pct"))
          : (o.if_contains("deterministic") && o.at("deterministic").as_bool() ? "-" : "n/a"));
}

void printNode(const json::object& n) {
  fmt::print(
      "{:<24} {:<9} in flight {:>7}  completed {:>11}  rss {:>6.1f} MB  heartbeat {:.0f} ms ago\n",
      str(n, "id"), str(n, "state"), num(n, "in_flight"), num(n, "completed"),
      num(n, "rss_bytes") / 1e6, num(n, "heartbeat_age_ms"));
}

// Runs one admin call and prints its reply (JSON with --json), `print` for a human.
int call(const GlobalOptions& g, const client::AdminCall& a,
         const std::function<void(const json::value&)>& print) {
  auto c = connect(g);
  if (!c) return 1;
  auto r = c->admin(a, std::min<Nanos>(g.timeout(), 30 * kSeconds));
  if (!r.ok()) return fail(std::string(r.status().message()));
  if (g.json) {
    fmt::print("{}\n", *r);
    return 0;
  }
  print(json::parse(*r));
  return 0;
}

struct Target {
  std::string name;
  uint32_t max_in_flight = 0;
  uint32_t run_timeout_ms = 0;
  double max_rate = 0;
  double verify_pct = 0;
};

}  // namespace

void addAdminCommands(CLI::App& app, Context& ctx) {
  const GlobalOptions& g = ctx.global;
  auto t = std::make_shared<Target>();

  auto* op = app.add_subcommand("op", "Operations: list, pause, resume, drain, limits");
  op->require_subcommand(1);
  auto* op_list = op->add_subcommand("list", "Every operation offered, with counters and limits");
  op_list->callback([&ctx, &g] {
    ctx.run = [&g] {
      return call(g, client::AdminCall(Kind::kListOps), [](const json::value& v) {
        for (const auto& o : v.as_array()) printOp(o.as_object());
      });
    };
  });
  struct OpVerb {
    const char* name;
    const char* help;
    Kind kind;
  };
  for (const OpVerb& verb :
       {OpVerb{"pause", "Stop dispatching the operation's tokens (running ones finish)",
               Kind::kPauseOp},
        OpVerb{"resume", "Dispatch the operation's tokens again", Kind::kResumeOp},
        OpVerb{"drain", "Drop the operation's queued tokens (they fail as Cancelled)",
               Kind::kDrainOp}}) {
    auto* sub = op->add_subcommand(verb.name, verb.help);
    sub->add_option("op", t->name, "Operation name")->required();
    const Kind kind = verb.kind;
    sub->callback([&ctx, &g, t, kind] {
      ctx.run = [&g, t, kind] {
        return call(g, client::AdminCall(kind, t->name), [kind](const json::value& v) {
          if (kind == Kind::kDrainOp)
            fmt::print("dropped {} queued tokens\n",
                       v.as_object().at("dropped").to_number<double>());
          else
            printOp(v.as_object());
        });
      };
    });
  }
  auto* limits = op->add_subcommand("limits", "Set an operation's in-flight and rate limits");
  limits->add_option("op", t->name, "Operation name")->required();
  limits
      ->add_option("--max-in-flight", t->max_in_flight,
                   "Most tokens of the operation running at once over the cluster (0 = no limit)")
      ->capture_default_str();
  limits
      ->add_option("--max-rate", t->max_rate,
                   "Most tokens of the operation started per second (0 = no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  limits
      ->add_option("--run-timeout-ms", t->run_timeout_ms,
                   "Start-to-close limit of each token of the operation, dispatch to result "
                   "(0 = the coordinator's --run-timeout-ms)")
      ->capture_default_str();
  limits
      ->add_option("--verify", t->verify_pct,
                   "Verified execution: run this % of the operation's tokens of every job again "
                   "on another node and compare (0 = as each job's verify says; deterministic "
                   "operations only, docs/security.md)")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  limits->callback([&ctx, &g, t] {
    ctx.run = [&g, t] {
      client::AdminCall a(Kind::kSetOpLimits, t->name);
      a.max_in_flight = t->max_in_flight;
      a.max_rate_per_s = t->max_rate;
      a.run_timeout_ms = t->run_timeout_ms;
      a.verify_pct = t->verify_pct;
      return call(g, a, [](const json::value& v) { printOp(v.as_object()); });
    };
  });

  auto* node = app.add_subcommand("node", "Nodes: list, drain, undrain, evict");
  node->require_subcommand(1);
  auto* node_list = node->add_subcommand("list", "Every node the coordinator knows");
  node_list->callback([&ctx, &g] {
    ctx.run = [&g] {
      return call(g, client::AdminCall(Kind::kListNodes), [](const json::value& v) {
        for (const auto& n : v.as_array()) printNode(n.as_object());
      });
    };
  });
  struct NodeVerb {
    const char* name;
    const char* help;
    Kind kind;
  };
  for (const NodeVerb& verb :
       {NodeVerb{"drain", "Send no new tokens; the node hands its queued tokens back",
                 Kind::kDrainNode},
        NodeVerb{"undrain", "Let a drained node take tokens again", Kind::kUndrainNode},
        NodeVerb{"evict", "Drop the node's session now; its in-flight tokens are re-queued",
                 Kind::kEvictNode}}) {
    auto* sub = node->add_subcommand(verb.name, verb.help);
    sub->add_option("node", t->name, "Node id (tgctl info lists them)")->required();
    const Kind kind = verb.kind;
    sub->callback([&ctx, &g, t, kind] {
      ctx.run = [&g, t, kind] {
        return call(g, client::AdminCall(kind, t->name), [kind, t](const json::value& v) {
          if (kind == Kind::kEvictNode)
            fmt::print("node {} evicted, {} tokens re-queued\n", t->name,
                       v.as_object().at("requeued").to_number<double>());
          else
            printNode(v.as_object());
        });
      };
    });
  }
}

}  // namespace tokengate::cli
