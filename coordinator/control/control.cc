#include "coordinator/control/control.h"

namespace tokengate::control {

const char* jobStateName(JobState s) {
  switch (s) {
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

const char* nodeStateName(NodeState s) {
  switch (s) {
    case NodeState::kReady:
      return "ready";
    case NodeState::kDraining:
      return "draining";
    case NodeState::kDead:
      return "dead";
    case NodeState::kQuarantined:
      return "quarantined";
  }
  return "unknown";
}

}  // namespace tokengate::control
