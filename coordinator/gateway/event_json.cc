#include "coordinator/gateway/event_json.h"

#include "coordinator/control/control.h"
#include "coordinator/gateway/protocol.h"

namespace tokengate::gateway {

namespace json = boost::json;

namespace {

const char* nodeChangeName(control::NodeEvent::Change c) {
  switch (c) {
    case control::NodeEvent::Change::kJoined:
      return "joined";
    case control::NodeEvent::Change::kDraining:
      return "draining";
    case control::NodeEvent::Change::kReady:
      return "ready";
    case control::NodeEvent::Change::kLeft:
      return "left";
    case control::NodeEvent::Change::kQuarantined:
      return "quarantined";
  }
  return "unknown";
}

struct ToJson {
  json::object operator()(const control::JobEvent& e) const {
    json::object o{{"job", idJson(e.job)},  // 64-bit ids are strings (docs/protocol.md)
                   {"name", e.name},       {"state", control::jobStateName(e.state)},
                   {"total", e.total},     {"done", e.done},
                   {"failed", e.failed},   {"cancelled", e.cancelled}};
    // A running job reports its running tokens; a finished one its wall time instead.
    if (e.state == control::JobState::kRunning)
      o["running"] = e.running;
    else
      o["wall_s"] = static_cast<double>(e.wall_ns) / 1e9;
    return o;
  }
  json::object operator()(const control::FailuresEvent& e) const {
    return {{"op", e.op}, {"count", e.count}, {"last_error", e.last_error}};
  }
  json::object operator()(const control::NodeEvent& e) const {
    json::object o{{"event", nodeChangeName(e.change)}, {"node", e.node}};
    if (e.change == control::NodeEvent::Change::kLeft ||
        e.change == control::NodeEvent::Change::kQuarantined) {
      o["reason"] = e.reason;
      o["requeued"] = e.requeued;
      o["quarantined"] = e.quarantined;
    }
    return o;
  }
  json::object operator()(const control::OpPausedEvent& e) const {
    return {{"op", e.op}, {"paused", e.paused}};
  }
  json::object operator()(const control::OpRatesEvent& e) const {
    json::array arr;
    arr.reserve(e.ops.size());
    for (const auto& op : e.ops)
      arr.push_back(json::object{{"op", op.op},
                                 {"rate_per_s", op.rate_per_s},
                                 {"queued", op.queued},
                                 {"running", op.running},
                                 {"completed", op.completed},
                                 {"failed", op.failed},
                                 {"paused", op.paused}});
    return {{"ops", std::move(arr)}};
  }
};

}  // namespace

json::object eventData(const control::Event& e) { return std::visit(ToJson{}, e); }

std::string eventMessage(const control::Event& e) {
  return eventMessage(control::eventTopic(e), eventData(e));
}

}  // namespace tokengate::gateway
