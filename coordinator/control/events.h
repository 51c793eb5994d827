// Typed control events: what the coordinator core tells its subscribers (the gateway, tools).
// The core raises these structs; the gateway turns them into the JSON of docs/protocol.md
// (coordinator/gateway/event_json.h), so no protocol shape lives in the core.
//
// Topics: "job" (progress + done, <= 4/s per job), "failures" (aggregated token failures,
// <= 4/s), "nodes" (joined/left/state), "ops" (per-op throughput, 1/s; pause/resume).
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "common/clock.h"
#include "common/job_state.h"

namespace tokengate::control {

using tokengate::JobState;  // common/job_state.h (kUnknown is never raised by the core)

// Progress of a running job, or its outcome once finished (state != kRunning; then wall_ns
// is set and running is not reported).
struct JobEvent {
  uint64_t job = 0;
  std::string name;
  JobState state = JobState::kRunning;
  uint64_t total = 0, done = 0, failed = 0, cancelled = 0, running = 0;
  Nanos wall_ns = 0;
};

// Token failures of one op since the last event.
struct FailuresEvent {
  std::string op;
  uint64_t count = 0;
  std::string last_error;
};

// A node joined, left, was drained/undrained or quarantined. `reason`, `requeued` and
// `quarantined` are meaningful for kLeft and kQuarantined only (`quarantined`: poison tokens).
struct NodeEvent {
  enum class Change : uint8_t { kJoined, kDraining, kReady, kLeft, kQuarantined };
  Change change = Change::kJoined;
  std::string node;
  std::string reason;
  uint64_t requeued = 0, quarantined = 0;
};

// An op was paused or resumed.
struct OpPausedEvent {
  std::string op;
  bool paused = false;
};

// Per-op throughput, once a second.
struct OpRatesEvent {
  struct Op {
    std::string op;
    double rate_per_s = 0;
    uint64_t queued = 0, running = 0, completed = 0, failed = 0;
    bool paused = false;
  };
  std::vector<Op> ops;
};

using Event = std::variant<JobEvent, FailuresEvent, NodeEvent, OpPausedEvent, OpRatesEvent>;

// The subscription topic an event belongs to.
inline const char* eventTopic(const Event& e) {
  struct Topic {
    const char* operator()(const JobEvent&) const { return "job"; }
    const char* operator()(const FailuresEvent&) const { return "failures"; }
    const char* operator()(const NodeEvent&) const { return "nodes"; }
    const char* operator()(const OpPausedEvent&) const { return "ops"; }
    const char* operator()(const OpRatesEvent&) const { return "ops"; }
  };
  return std::visit(Topic{}, e);
}

}  // namespace tokengate::control
