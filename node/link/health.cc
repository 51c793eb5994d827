#include "node/link/health.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string_view>

namespace tokengate::node {
namespace {

std::string_view stateName(HealthState s) {
  switch (s) {
    case HealthState::kConnecting:
      return "connecting";
    case HealthState::kReady:
      return "ready";
    case HealthState::kDraining:
      return "draining";
  }
  return "unknown";
}

}  // namespace

void writeHealthFile(const std::string& path, HealthState state) {
  static thread_local int last_errno = 0;
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  bool ok = f != nullptr;
  if (ok) {
    const auto name = stateName(state);
    ok = std::fwrite(name.data(), 1, name.size(), f) == name.size() && std::fputc('\n', f) != EOF;
    ok = (std::fclose(f) == 0) && ok;
  }
  if (ok) ok = std::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok && errno != last_errno) {
    spdlog::warn("cannot write health file {}: {}", path, std::strerror(errno));
    last_errno = errno;
  } else if (ok) {
    last_errno = 0;
  }
}

HealthCheck checkHealthFile(const std::string& path, int max_age_s, bool require_ready,
                            double now_unix_s) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    return {false, fmt::format("{}: {}", path, std::strerror(errno))};
  if (now_unix_s < 0)
    now_unix_s =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const double mtime = static_cast<double>(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec * 1e-9;
  const double age = now_unix_s - mtime;
  if (age > max_age_s)
    return {false, fmt::format("link loop stalled: {} last written {:.1f} s ago (limit {} s)", path,
                               age, max_age_s)};
  std::ifstream in(path);
  std::string state;
  in >> state;
  if (state != "ready" && state != "connecting" && state != "draining")
    return {false, fmt::format("{}: unexpected content '{}'", path, state)};
  if (require_ready && state != "ready") return {false, fmt::format("not ready: {}", state)};
  return {true, fmt::format("{} ({:.1f} s ago)", state, age)};
}

}  // namespace tokengate::node
