#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

namespace tokengate {
void initLogging(const std::string& name, const std::string& level) {
  auto logger = spdlog::stderr_color_mt(name);
  spdlog::set_default_logger(logger);
  std::string lvl = level;
  if (lvl.empty()) {
    const char* env = std::getenv("TG_LOG");
    lvl = env ? env : "info";
  }
  spdlog::set_level(spdlog::level::from_str(lvl));
  spdlog::set_pattern("%H:%M:%S.%e %n %^%l%$ %v");
}
}  // namespace tokengate
