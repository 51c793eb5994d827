// Logging setup shared by every binary (spdlog). Level from --log-level or
// the TG_LOG env var; logs go to stderr so stdout stays for results.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace tokengate {
void initLogging(const std::string& name, const std::string& level);
}  // namespace tokengate
