#include "coordinator/gateway/protocol.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>

#include "common/job_json.h"
#include "coordinator/gateway/access_policy.h"

namespace tokengate::gateway {

namespace json = boost::json;

namespace {
constexpr std::array<std::pair<std::string_view, uint32_t>, 4> kTopics{{
    {"job", kTopicJob},
    {"failures", kTopicFailures},
    {"nodes", kTopicNodes},
    {"ops", kTopicOps},
}};

// Handled by the session itself rather than the coordinator.
constexpr bool isSessionLevel(std::string_view name) {
  for (std::string_view n :
       {"hello", "auth", "ping", "subscribe", "unsubscribe", "whoami", "topics"})
    if (n == name) return true;
  return false;
}

// The commands and their least roles come from common/roles.h (shared with the coordinator's
// ZeroMQ access checks); the gateway adds which ones the session handles.
constexpr auto kCommands = [] {
  std::array<CommandInfo, std::size(kCommandRoles)> out{};
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = {kCommandRoles[i].name, kCommandRoles[i].least, isSessionLevel(kCommandRoles[i].name)};
  return out;
}();
}  // namespace

std::optional<uint32_t> topicBit(std::string_view name) {
  for (const auto& [n, bit] : kTopics) {
    if (n == name) return bit;
  }
  return std::nullopt;
}

json::array topicNames(uint32_t bits) {
  json::array out;
  for (const auto& [n, bit] : kTopics) {
    if (bits & bit) out.emplace_back(n);
  }
  return out;
}

const CommandInfo* findCommand(std::string_view name) {
  for (const auto& c : kCommands) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

json::array commandNames(Role role) {
  json::array out;
  for (const auto& c : kCommands) {
    if (roleAtLeast(role, c.min_role)) out.emplace_back(c.name);
  }
  return out;
}

std::string errorCodeName(StatusCode code) {
  std::string s = absl::StatusCodeToString(code);
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s.empty() ? "unknown" : s;
}

void sanitizeJson(json::value& v) {
  switch (v.kind()) {
    case json::kind::double_: {
      const double d = v.get_double();
      if (!std::isfinite(d)) {
        v = json::object{{"double", std::isnan(d) ? "nan" : (d > 0 ? "inf" : "-inf")}};
      }
      break;
    }
    case json::kind::array:
      for (auto& e : v.get_array()) sanitizeJson(e);
      break;
    case json::kind::object:
      for (auto& kv : v.get_object()) sanitizeJson(kv.value());
      break;
    default:
      break;
  }
}

std::string okReply(const json::value& id, json::value result) {
  sanitizeJson(result);
  json::object o;
  o["id"] = id;
  sanitizeJson(o["id"]);
  o["ok"] = true;
  o["result"] = std::move(result);
  return json::serialize(o);
}

std::string errorReply(const json::value& id, const Status& status) {
  json::object err;
  err["code"] = errorCodeName(status.code());
  err["message"] = std::string(status.message());
  json::object o;
  o["id"] = id;
  sanitizeJson(o["id"]);
  o["ok"] = false;
  o["error"] = std::move(err);
  return json::serialize(o);
}

std::string eventMessage(std::string_view topic, const json::object& data) {
  json::value d = data;
  sanitizeJson(d);
  // 64-bit ids as strings, as in replies.
  for (std::string_view key : {"job", "job_id", "token", "token_id"}) {
    if (json::value* v = d.get_object().if_contains(key)) {
      if (v->is_uint64()) *v = idJson(v->get_uint64());
      if (v->is_int64() && v->get_int64() >= 0) *v = idJson(static_cast<uint64_t>(v->get_int64()));
    }
  }
  json::object o;
  o["event"] = topic;
  o["data"] = std::move(d);
  return json::serialize(o);
}

namespace {
double finiteOr0(double v) { return std::isfinite(v) ? v : 0.0; }

json::object statusJson(const Status& s) {
  json::object o;
  o["code"] = errorCodeName(s.code());
  o["message"] = std::string(s.message());
  return o;
}
}  // namespace

namespace {
json::object jobHeader(const control::JobStatus& s) {
  json::object o;
  o["job_id"] = idJson(s.id);
  o["name"] = s.name;
  o["state"] = control::jobStateName(s.state);
  o["total"] = s.total;
  o["done"] = s.done;
  o["failed"] = s.failed;
  o["cancelled"] = s.cancelled;
  o["running"] = s.running;
  o["wall_ms"] = static_cast<double>(s.wall_ns) / 1e6;
  return o;
}

json::object outputJson(const control::OutputResult& r) {
  json::object out;
  out["index"] = r.index;
  out["name"] = r.name;
  out["ok"] = r.status.ok();
  if (r.status.ok()) {
    out["value"] = valueToJson(r.value);
  } else {
    out["error"] = statusJson(r.status);
  }
  return out;
}

// A running job's output that has not finished yet (the core reports it as
// unavailable): not listed.
bool unfinished(const control::JobStatus& s, const control::OutputResult& r) {
  return s.state == control::JobState::kRunning && r.status.code() == StatusCode::kUnavailable;
}
}  // namespace

json::object toJson(const control::JobStatus& s) {
  if (s.outputs.empty()) return jobHeader(s);  // job.list entries
  return jobStatusPage(s, 0, s.outputs.size(), std::numeric_limits<size_t>::max());
}

json::object jobStatusPage(const control::JobStatus& s, size_t offset, size_t limit,
                           size_t max_bytes) {
  json::object o = jobHeader(s);
  o["outputs_total"] = s.outputs.size();
  json::array outs;
  size_t used = json::serialize(o).size() + 64;  // header, "outputs", "next" and the envelope
  size_t pos = std::min(offset, s.outputs.size());
  const size_t end = std::min(s.outputs.size(), pos + std::min(limit, s.outputs.size()));
  for (; pos < end; ++pos) {
    const control::OutputResult& r = s.outputs[pos];
    if (unfinished(s, r)) continue;
    json::object out = outputJson(r);
    size_t bytes = json::serialize(out).size() + 1;
    if (used + bytes > max_bytes) {
      if (!outs.empty()) break;  // the next page starts here
      // A single value larger than a reply: say so instead of never progressing.
      control::OutputResult big = r;
      big.status = absl::ResourceExhaustedError(
          fmt::format("value of {} bytes does not fit in a reply (max {})", bytes, max_bytes));
      out = outputJson(big);
      bytes = json::serialize(out).size() + 1;
    }
    used += bytes;
    outs.emplace_back(std::move(out));
  }
  o["outputs"] = std::move(outs);
  if (pos < s.outputs.size()) {
    o["next"] = pos;
  } else {
    o["next"] = nullptr;
  }
  return o;
}

json::object toJson(const control::OpStatus& s) {
  json::object o;
  o["op"] = s.name;
  o["weight"] = weightName(s.weight);
  o["effective_weight"] = weightName(s.effective);
  o["paused"] = s.paused;
  o["state"] = s.paused ? "paused" : "running";
  json::object lim;
  lim["max_in_flight"] = s.limits.max_in_flight;
  lim["max_rate_per_s"] = finiteOr0(s.limits.max_rate_per_s);
  lim["run_timeout_ms"] = s.limits.run_timeout_ms;
  o["limits"] = std::move(lim);
  o["queued"] = s.queued;
  o["running"] = s.running;
  o["completed"] = s.completed;
  o["failed"] = s.failed;
  o["retried"] = s.retried;
  o["cancelled"] = s.cancelled;
  o["rate_per_s"] = finiteOr0(s.rate_per_s);
  o["mean_run_us"] = finiteOr0(s.mean_run_us);
  return o;
}

json::object toJson(const control::NodeStatus& s) {
  json::object o;
  o["node"] = s.id;
  o["session"] = s.session;
  o["pid"] = s.pid;
  o["state"] = control::nodeStateName(s.state);
  json::array lanes;
  for (const auto& l : s.lanes) {
    json::object lo;
    lo["weight"] = weightName(l.weight);
    json::array cores;
    for (uint32_t c : l.cores) cores.emplace_back(c);
    lo["cores"] = std::move(cores);
    lo["workers"] = l.workers;
    lo["queued"] = l.queued;
    lo["running"] = l.running;
    lo["in_flight"] = l.in_flight;
    lo["utilization"] = finiteOr0(l.utilization);
    lanes.emplace_back(std::move(lo));
  }
  o["lanes"] = std::move(lanes);
  o["in_flight"] = s.in_flight;
  o["completed"] = s.completed;
  o["heartbeat_age_ms"] = static_cast<double>(s.heartbeat_age_ns) / 1e6;
  o["speed_factor"] = finiteOr0(s.speed_factor);
  o["rss_bytes"] = s.rss_bytes;
  json::array ops;
  for (const auto& op : s.ops) ops.emplace_back(op);
  o["ops"] = std::move(ops);
  return o;
}

json::object toJson(const control::ClusterStats& s) {
  json::object o;
  o["nodes_ready"] = s.nodes_ready;
  o["nodes_draining"] = s.nodes_draining;
  o["nodes_quarantined"] = s.nodes_quarantined;
  o["run_timeouts"] = s.run_timeouts;
  o["nodes_dead"] = s.nodes_dead;
  o["jobs_running"] = s.jobs_running;
  o["jobs_total"] = s.jobs_total;
  o["tokens_admitted"] = s.tokens_admitted;
  o["tokens_completed"] = s.tokens_completed;
  o["tokens_failed"] = s.tokens_failed;
  o["tokens_retried"] = s.tokens_retried;
  o["tokens_live"] = s.tokens_live;
  o["queued"] = s.queued;
  o["in_flight"] = s.in_flight;
  o["admission_limit"] = s.admission_limit;
  o["admission_rejects"] = s.admission_rejects;
  o["throughput_per_s"] = finiteOr0(s.throughput_per_s);
  o["nodes_lost"] = s.nodes_lost;
  o["nodes_disconnected"] = s.nodes_disconnected;
  o["tokens_requeued"] = s.tokens_requeued;
  o["tokens_returned"] = s.tokens_returned;
  o["scheduler"] = s.scheduler;
  o["placement"] = s.placement;
  return o;
}

StatusOr<std::string> stringField(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return absl::InvalidArgumentError(fmt::format("missing field '{}'", key));
  if (!v->is_string()) {
    return absl::InvalidArgumentError(fmt::format("field '{}' must be a string", key));
  }
  const json::string& s = v->get_string();
  if (s.empty()) return absl::InvalidArgumentError(fmt::format("field '{}' is empty", key));
  return std::string(s);
}

StatusOr<uint64_t> asUint(const json::value& v, std::string_view key) {
  if (v.is_uint64()) return v.get_uint64();
  if (v.is_int64() && v.get_int64() >= 0) return static_cast<uint64_t>(v.get_int64());
  if (v.is_double()) {
    double d = v.get_double();
    if (d >= 0 && d <= 9007199254740992.0 && std::floor(d) == d) return static_cast<uint64_t>(d);
  }
  if (v.is_string()) {
    std::string_view str = v.get_string();
    uint64_t out = 0;
    auto [ptr, ec] = std::from_chars(str.data(), str.data() + str.size(), out);
    if (!str.empty() && ec == std::errc() && ptr == str.data() + str.size()) return out;
  }
  return absl::InvalidArgumentError(
      fmt::format("field '{}' must be a non-negative integer (a number or a decimal string)", key));
}

namespace {
StatusOr<double> doubleField(const json::object& o, std::string_view key, double dflt) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return dflt;
  if (!v->is_number()) {
    return absl::InvalidArgumentError(fmt::format("field '{}' must be a number", key));
  }
  double d = v->to_number<double>();
  if (!std::isfinite(d) || d < 0) {
    return absl::InvalidArgumentError(fmt::format("field '{}' must be >= 0", key));
  }
  return d;
}

template <typename T, typename F>
control::Callback<T> wrap(ResultFn reply, F encode) {
  return [reply = std::move(reply), encode = std::move(encode)](StatusOr<T> r) {
    if (!r.ok()) {
      reply(r.status());
      return;
    }
    reply(json::value(encode(*r)));
  };
}
}  // namespace

StatusOr<uint64_t> uintField(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return absl::InvalidArgumentError(fmt::format("missing field '{}'", key));
  return asUint(*v, key);
}

void runControlCommand(std::string_view cmd, const json::object& req,
                       control::ClusterControl& control, ResultFn reply,
                       const CommandLimits& limits) {
  using control::ClusterStats;
  using control::JobStatus;
  using control::NodeStatus;
  using control::OpStatus;

  auto fail = [&](const Status& s) { reply(s); };

  if (cmd == "submit") {
    const json::value* job = req.if_contains("job");
    if (job == nullptr || !job->is_object()) {
      return fail(absl::InvalidArgumentError("field 'job' must be a job object (CLI job JSON)"));
    }
    StatusOr<JobSpec> spec = jobFromJson(*job);
    if (!spec.ok()) return fail(spec.status());
    control.submitJob(std::move(*spec), wrap<uint64_t>(std::move(reply), [](uint64_t id) {
                        return json::object{{"job_id", idJson(id)}};
                      }));
  } else if (cmd == "job.status") {
    auto id = uintField(req, "job_id");
    if (!id.ok()) return fail(id.status());
    size_t offset = 0, limit = kDefaultOutputPage;
    if (const json::value* v = req.if_contains("offset"); v != nullptr && !v->is_null()) {
      auto n = asUint(*v, "offset");
      if (!n.ok()) return fail(n.status());
      offset = static_cast<size_t>(*n);
    }
    if (const json::value* v = req.if_contains("limit"); v != nullptr && !v->is_null()) {
      auto n = asUint(*v, "limit");
      if (!n.ok()) return fail(n.status());
      if (*n == 0 || *n > kMaxOutputPage) {
        return fail(
            absl::InvalidArgumentError(fmt::format("field 'limit' must be 1..{}", kMaxOutputPage)));
      }
      limit = static_cast<size_t>(*n);
    }
    const size_t max_bytes = limits.max_reply_bytes;
    control.jobStatus(
        *id, wrap<JobStatus>(std::move(reply), [offset, limit, max_bytes](const JobStatus& s) {
          return jobStatusPage(s, offset, limit, max_bytes);
        }));
  } else if (cmd == "job.list") {
    control.listJobs(wrap<std::vector<JobStatus>>(std::move(reply), [](const auto& jobs) {
      json::array a;
      for (const auto& j : jobs) a.emplace_back(toJson(j));
      return json::object{{"jobs", std::move(a)}};
    }));
  } else if (cmd == "job.cancel") {
    auto id = uintField(req, "job_id");
    if (!id.ok()) return fail(id.status());
    uint64_t job_id = *id;
    control.cancelJob(job_id, wrap<uint64_t>(std::move(reply), [job_id](uint64_t n) {
                        return json::object{{"job_id", idJson(job_id)}, {"cancelled", n}};
                      }));
  } else if (cmd == "token.cancel") {
    auto id = uintField(req, "token_id");
    if (!id.ok()) return fail(id.status());
    uint64_t token_id = *id;
    control.cancelToken(token_id, wrap<bool>(std::move(reply), [token_id](bool c) {
                          return json::object{{"token_id", idJson(token_id)}, {"cancelled", c}};
                        }));
  } else if (cmd == "op.list") {
    control.listOps(wrap<std::vector<OpStatus>>(std::move(reply), [](const auto& ops) {
      json::array a;
      for (const auto& o : ops) a.emplace_back(toJson(o));
      return json::object{{"ops", std::move(a)}};
    }));
  } else if (cmd == "op.pause" || cmd == "op.resume") {
    auto op = stringField(req, "op");
    if (!op.ok()) return fail(op.status());
    auto cb = wrap<OpStatus>(std::move(reply), [](const OpStatus& s) {
      return json::object{{"op", toJson(s)}};
    });
    if (cmd == "op.pause") {
      control.pauseOp(std::move(*op), std::move(cb));
    } else {
      control.resumeOp(std::move(*op), std::move(cb));
    }
  } else if (cmd == "op.drain" || cmd == "op.cancel_running") {
    auto op = stringField(req, "op");
    if (!op.ok()) return fail(op.status());
    const char* key = cmd == "op.drain" ? "dropped" : "cancelled";
    auto cb = wrap<uint64_t>(std::move(reply), [name = *op, key](uint64_t n) {
      return json::object{{"op", name}, {key, n}};
    });
    if (cmd == "op.drain") {
      control.drainOp(std::move(*op), std::move(cb));
    } else {
      control.cancelRunningOp(std::move(*op), std::move(cb));
    }
  } else if (cmd == "op.limits") {
    auto op = stringField(req, "op");
    if (!op.ok()) return fail(op.status());
    control::OpLimits limits;
    if (const json::value* v = req.if_contains("max_in_flight"); v != nullptr && !v->is_null()) {
      auto n = asUint(*v, "max_in_flight");
      if (!n.ok()) return fail(n.status());
      if (*n > std::numeric_limits<uint32_t>::max()) {
        return fail(absl::InvalidArgumentError("field 'max_in_flight' is too large"));
      }
      limits.max_in_flight = static_cast<uint32_t>(*n);
    }
    auto rate = doubleField(req, "max_rate_per_s", 0);
    if (!rate.ok()) return fail(rate.status());
    limits.max_rate_per_s = *rate;
    if (const json::value* v = req.if_contains("run_timeout_ms"); v != nullptr && !v->is_null()) {
      auto n = asUint(*v, "run_timeout_ms");
      if (!n.ok()) return fail(n.status());
      if (*n > std::numeric_limits<uint32_t>::max()) {
        return fail(absl::InvalidArgumentError("field 'run_timeout_ms' is too large"));
      }
      limits.run_timeout_ms = static_cast<uint32_t>(*n);
    }
    control.setOpLimits(std::move(*op), limits,
                        wrap<OpStatus>(std::move(reply), [](const OpStatus& s) {
                          return json::object{{"op", toJson(s)}};
                        }));
  } else if (cmd == "node.list") {
    control.listNodes(wrap<std::vector<NodeStatus>>(std::move(reply), [](const auto& nodes) {
      json::array a;
      for (const auto& n : nodes) a.emplace_back(toJson(n));
      return json::object{{"nodes", std::move(a)}};
    }));
  } else if (cmd == "node.drain" || cmd == "node.undrain") {
    auto node = stringField(req, "node");
    if (!node.ok()) return fail(node.status());
    auto cb = wrap<NodeStatus>(std::move(reply), [](const NodeStatus& s) {
      return json::object{{"node", toJson(s)}};
    });
    if (cmd == "node.drain") {
      control.drainNode(std::move(*node), std::move(cb));
    } else {
      control.undrainNode(std::move(*node), std::move(cb));
    }
  } else if (cmd == "node.evict") {
    auto node = stringField(req, "node");
    if (!node.ok()) return fail(node.status());
    control.evictNode(*node, wrap<uint64_t>(std::move(reply), [name = *node](uint64_t n) {
      return json::object{{"node", name}, {"requeued", n}};
    }));
  } else if (cmd == "cluster.stats") {
    control.stats(
        wrap<ClusterStats>(std::move(reply), [](const ClusterStats& s) { return toJson(s); }));
  } else if (cmd == "cluster.limits") {
    auto limit = uintField(req, "admission_limit");
    if (!limit.ok()) return fail(limit.status());
    control.setAdmissionLimit(
        *limit,
        wrap<ClusterStats>(std::move(reply), [](const ClusterStats& s) { return toJson(s); }));
  } else {
    fail(absl::UnimplementedError(fmt::format("unknown command '{}'", cmd)));
  }
}

}  // namespace tokengate::gateway

namespace tokengate::gateway {

namespace json = boost::json;

StatusOr<Request> parseRequest(std::string_view text, json::value* id) {
  *id = nullptr;
  boost::system::error_code jec;
  json::parse_options opts;
  opts.max_depth = kMaxJsonDepth;
  json::value v = json::parse(text, jec, {}, opts);
  if (jec) return absl::InvalidArgumentError("invalid JSON: " + jec.message());
  if (!v.is_object()) return absl::InvalidArgumentError("a request must be a JSON object");
  Request req;
  req.body = std::move(v.get_object());
  if (const json::value* idv = req.body.if_contains("id")) {
    // A number too large for a double parses as infinity, which JSON cannot echo
    // (found by protocol_fuzz).
    const bool finite = !idv->is_double() || std::isfinite(idv->get_double());
    if ((idv->is_string() || idv->is_number() || idv->is_null()) && finite) {
      *id = *idv;
      req.id = *idv;
    } else {
      return absl::InvalidArgumentError("'id' must be a string or a finite number");
    }
  }
  // The integer rule (int64 literals only) after the id, so the error echoes it.
  if (Status st = checkIntegerLiterals(text); !st.ok()) return st;
  const json::value* cmdv = req.body.if_contains("cmd");
  if (cmdv == nullptr || !cmdv->is_string()) {
    return absl::InvalidArgumentError("missing string field 'cmd'");
  }
  req.cmd = std::string(cmdv->get_string());
  req.info = findCommand(req.cmd);
  if (req.info == nullptr) {
    return absl::UnimplementedError(fmt::format("unknown command '{}'", req.cmd));
  }
  return req;
}

Status checkRole(const CommandInfo& info, Role role) {
  if (roleAtLeast(role, info.min_role)) return absl::OkStatus();
  if (role == Role::kNone) {
    return absl::UnauthenticatedError(
        fmt::format("'{}' needs a token: send {{\"cmd\":\"hello\",\"token\":...}}", info.name));
  }
  return absl::PermissionDeniedError(fmt::format("'{}' needs role {}; you are {}", info.name,
                                                 roleName(info.min_role), roleName(role)));
}

SessionOutcome runSessionCommand(const Request& r, SessionState& st, const AccessPolicy& policy,
                                 const json::object& limits) {
  SessionOutcome out;
  out.topics_before = out.topics_after = st.topics;
  const std::string& cmd = r.cmd;
  const json::object& req = r.body;
  auto fail = [&](Status s) {
    out.reply = std::move(s);
    return out;
  };
  if (cmd == "hello" || cmd == "auth") {
    if (const json::value* p = req.if_contains("protocol"); p != nullptr && !p->is_null()) {
      if (!p->is_number())
        return fail(absl::InvalidArgumentError("field 'protocol' must be a number"));
      if (p->to_number<double>() != kProtocolVersion) {
        return fail(absl::FailedPreconditionError(
            fmt::format("unsupported protocol version; this gateway speaks {}", kProtocolVersion)));
      }
    }
    const json::value* tv = req.if_contains("token");
    if (cmd == "auth" && tv == nullptr)
      return fail(absl::InvalidArgumentError("missing field 'token'"));
    if (tv != nullptr && !tv->is_null()) {
      if (!tv->is_string())
        return fail(absl::InvalidArgumentError("field 'token' must be a string"));
      Role role = policy.roleForToken(std::string_view(tv->get_string()));
      if (role == Role::kNone) {
        out.auth_failed = true;
        return fail(absl::UnauthenticatedError("invalid token"));
      }
      out.token_accepted = true;
      st.role = higherRole(st.role, role);
    }
    json::object res;
    res["protocol"] = kProtocolVersion;
    res["server"] = kServerName;
    res["role"] = roleName(st.role);
    if (cmd == "hello") {
      res["commands"] = commandNames(st.role);
      res["topics"] = topicNames(kAllTopics);
      res["limits"] = limits;
    }
    out.reply = json::value(std::move(res));
    return out;
  }
  if (cmd == "ping") {
    json::object res;
    res["pong"] = true;
    if (const json::value* d = req.if_contains("data")) res["data"] = *d;
    out.reply = json::value(std::move(res));
    return out;
  }
  if (cmd == "whoami") {
    out.reply = json::value(json::object{{"role", roleName(st.role)}});
    return out;
  }
  if (cmd == "topics") {
    out.reply = json::value(json::object{{"topics", topicNames(kAllTopics)}});
    return out;
  }
  if (cmd == "subscribe" || cmd == "unsubscribe") {
    uint32_t bits = 0;
    const json::value* tv = req.if_contains("topics");
    if (tv == nullptr || tv->is_null()) {
      bits = kAllTopics;
    } else if (!tv->is_array()) {
      return fail(absl::InvalidArgumentError("field 'topics' must be an array of strings"));
    } else if (tv->get_array().empty()) {
      bits = kAllTopics;  // [] means all, like an absent field (docs/protocol.md)
    } else {
      for (const auto& t : tv->get_array()) {
        std::optional<uint32_t> b;
        if (t.is_string()) b = topicBit(std::string_view(t.get_string()));
        if (!b) {
          return fail(absl::InvalidArgumentError(fmt::format(
              "unknown topic {}; topics are job, failures, nodes, ops", json::serialize(t))));
        }
        bits |= *b;
      }
    }
    st.topics = cmd == "subscribe" ? (st.topics | bits) : (st.topics & ~bits);
    out.topics_after = st.topics;
    out.reply = json::value(json::object{{"topics", topicNames(st.topics)}});
    return out;
  }
  return fail(absl::UnimplementedError("unhandled session command"));
}

}  // namespace tokengate::gateway
