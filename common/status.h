// Status values used across TokenGate: absl::Status with canonical codes.
// ResourceExhausted = admission reject, Unavailable = lost node / retryable,
// InvalidArgument = bad input, NotFound = unknown op/job, DeadlineExceeded,
// Cancelled, Aborted = quarantined (poison) token.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tokengate {
using absl::Status;
using absl::StatusCode;
using absl::StatusOr;

// Whether a failed token may be retried on another attempt.
inline bool isRetryable(StatusCode code) {
  return code == StatusCode::kUnavailable || code == StatusCode::kInternal ||
         code == StatusCode::kUnknown || code == StatusCode::kAborted;
}
}  // namespace tokengate
