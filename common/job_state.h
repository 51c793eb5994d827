// A job's state as the wire carries it (schema JobState), shared by the coordinator's control
// surface (control::JobState) and the client (client::JobState): one enum, one set of names.
#pragma once

#include <cstdint>

namespace tokengate {

// kUnknown: the client has no outcome for the job (never on the wire from the coordinator).
enum class JobState : uint8_t {
  kRunning = 0,
  kSucceeded = 1,
  kFailed = 2,
  kCancelled = 3,
  kUnknown
};

// "running", "succeeded", "failed", "cancelled", or "unknown".
const char* jobStateName(JobState s);

}  // namespace tokengate
