// Operator calls over the wire port (Frame.adminRequest, used by tgctl jobs/op/node): the same
// CoordinatorCore methods the gateway's op.* / node.* / job.list commands reach, answered with
// one adminReply whose body is JSON. Runs on the loop thread like every frame handler.
#include <boost/json.hpp>

#include "coordinator/core/coordinator.h"

namespace tokengate::coordinator {
namespace {

namespace json = boost::json;

json::object opJson(const control::OpStatus& o) {
  return {{"name", o.name},
          {"weight", weightName(o.weight)},
          {"effective_weight", weightName(o.effective)},
          {"paused", o.paused},
          {"max_in_flight", o.limits.max_in_flight},
          {"max_rate_per_s", o.limits.max_rate_per_s},
          {"run_timeout_ms", o.limits.run_timeout_ms},
          {"verify_pct", o.limits.verify_pct},
          {"deterministic", o.deterministic},
          {"queued", o.queued},
          {"running", o.running},
          {"completed", o.completed},
          {"failed", o.failed},
          {"retried", o.retried},
          {"cancelled", o.cancelled},
          {"rate_per_s", o.rate_per_s},
          {"mean_run_us", o.mean_run_us}};
}

json::object nodeJson(const control::NodeStatus& n) {
  json::array ops;
  for (const auto& op : n.ops) ops.emplace_back(op);
  return {{"id", n.id},
          {"state", control::nodeStateName(n.state)},
          {"session", n.session},
          {"pid", n.pid},
          {"in_flight", n.in_flight},
          {"completed", n.completed},
          {"heartbeat_age_ms", static_cast<double>(n.heartbeat_age_ns) / 1e6},
          {"rss_bytes", n.rss_bytes},
          {"ops", std::move(ops)}};
}

json::object jobJson(const control::JobStatus& j) {
  return {{"id", j.id},
          {"name", j.name},
          {"state", control::jobStateName(j.state)},
          {"total", j.total},
          {"done", j.done},
          {"failed", j.failed},
          {"cancelled", j.cancelled},
          {"running", j.running},
          {"wall_s", static_cast<double>(j.wall_ns) / 1e9}};
}

template <typename T, typename F>
StatusOr<json::value> mapped(StatusOr<T> r, F&& f) {
  if (!r.ok()) return r.status();
  return json::value(f(*r));
}

StatusOr<json::value> count(StatusOr<uint64_t> r, const char* key) {
  if (!r.ok()) return r.status();
  return json::value(json::object{{key, *r}});
}

}  // namespace

void CoordinatorCore::onAdmin(const std::string& peer, wire::AdminRequest::Reader req) {
  StatusOr<json::value> result = absl::InvalidArgumentError("unknown admin request");
  switch (req.which()) {
    case wire::AdminRequest::LIST_JOBS: {
      json::array a;
      for (const auto& j : listJobs()) a.push_back(jobJson(j));
      result = json::value(std::move(a));
      break;
    }
    case wire::AdminRequest::LIST_OPS: {
      json::array a;
      for (const auto& o : listOps()) a.push_back(opJson(o));
      result = json::value(std::move(a));
      break;
    }
    case wire::AdminRequest::LIST_NODES: {
      json::array a;
      for (const auto& n : listNodes()) a.push_back(nodeJson(n));
      result = json::value(std::move(a));
      break;
    }
    case wire::AdminRequest::PAUSE_OP:
      result = mapped(pauseOp(req.getPauseOp().cStr(), true), opJson);
      break;
    case wire::AdminRequest::RESUME_OP:
      result = mapped(pauseOp(req.getResumeOp().cStr(), false), opJson);
      break;
    case wire::AdminRequest::DRAIN_OP:
      result = count(drainOp(req.getDrainOp().cStr()), "dropped");
      break;
    case wire::AdminRequest::SET_OP_LIMITS: {
      auto l = req.getSetOpLimits();
      control::OpLimits limits;
      limits.max_in_flight = l.getMaxInFlight();
      limits.max_rate_per_s = l.getMaxRatePerS();
      limits.run_timeout_ms = l.getRunTimeoutMs();
      limits.verify_pct = l.getVerifyPct();
      if (!(limits.max_rate_per_s >= 0)) {
        result = absl::InvalidArgumentError("max rate must be >= 0");
        break;
      }
      result = mapped(setOpLimits(l.getOp().cStr(), limits), opJson);
      break;
    }
    case wire::AdminRequest::DRAIN_NODE:
      result = mapped(drainNode(req.getDrainNode().cStr(), true), nodeJson);
      break;
    case wire::AdminRequest::UNDRAIN_NODE:
      result = mapped(drainNode(req.getUndrainNode().cStr(), false), nodeJson);
      break;
    case wire::AdminRequest::EVICT_NODE:
      result = count(evictNode(req.getEvictNode().cStr()), "requeued");
      break;
  }
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  auto rep = f.initAdminReply();
  rep.setRequestId(req.getRequestId());
  if (result.ok())
    rep.setJson(json::serialize(*result));
  else
    toWire(result.status(), rep.initError());
  outbox_.send(peer, encodeFrame(msg));
}

}  // namespace tokengate::coordinator
