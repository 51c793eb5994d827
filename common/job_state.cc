#include "common/job_state.h"

namespace tokengate {

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
    case JobState::kUnknown:
      break;
  }
  return "unknown";
}

}  // namespace tokengate
