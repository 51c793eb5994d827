// Status values used across TokenGate: absl::Status with canonical codes.
// ResourceExhausted = admission reject, Unavailable = lost node / retryable,
// InvalidArgument = bad input, NotFound = unknown op/job, DeadlineExceeded,
// Cancelled, Aborted = quarantined (poison) token.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include <fmt/format.h>

#include <string_view>
#include <type_traits>

// Debian's abseil has its own string_view type; let fmt print it.
#if !defined(ABSL_USES_STD_STRING_VIEW)
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<std::string_view> {
  template <typename Ctx>
  auto format(absl::string_view s, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(std::string_view(s.data(), s.size()), ctx);
  }
};
#endif

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
