#include "coordinator/control/control.h"

namespace tokengate::control {

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
