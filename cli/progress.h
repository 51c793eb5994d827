// A one-line progress bar on stderr for tgctl and tokengate-local.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "client/client.h"
#include "common/clock.h"

namespace tokengate::cli {

// Remaining time at the average rate so far: "12s", "3m05s", "1h02m", or "?" before any rate.
inline std::string formatEta(uint64_t remaining, double rate_per_s) {
  if (remaining == 0) return "0s";
  if (!(rate_per_s > 0)) return "?";
  const double s = static_cast<double>(remaining) / rate_per_s;
  if (s >= 360000) return ">100h";
  const auto secs = static_cast<uint64_t>(s + 0.5);
  if (secs < 60) return fmt::format("{}s", secs);
  if (secs < 3600) return fmt::format("{}m{:02}s", secs / 60, secs % 60);
  return fmt::format("{}h{:02}m", secs / 3600, (secs % 3600) / 60);
}

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled), start_(SystemClock::instance().now()) {}
  void update(const client::Progress& p) {
    if (!enabled_ || p.total == 0) return;
    const Nanos now = SystemClock::instance().now();
    if (now - last_ < 100 * kMillis && p.done + p.failed < p.total) return;
    last_ = now;
    const double frac = static_cast<double>(p.done + p.failed) / static_cast<double>(p.total);
    const int width = 30;
    const int filled = static_cast<int>(frac * width);
    const double secs = static_cast<double>(now - start_) / 1e9;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(width - filled), '.');
    const double rate = secs > 0 ? static_cast<double>(p.done + p.failed) / secs : 0.0;
    fmt::print(stderr, "\r[{}] {:5.1f}%  {}/{} tokens  {} failed  {:.0f} tok/s  ETA {}   ", bar,
               frac * 100, p.done + p.failed, p.total, p.failed, rate,
               formatEta(p.total - std::min(p.total, p.done + p.failed), rate));
    std::fflush(stderr);
    drawn_ = true;
  }
  void finish() {
    if (drawn_) fmt::print(stderr, "\n");
    drawn_ = false;
  }

 private:
  bool enabled_;
  bool drawn_ = false;
  Nanos start_;
  Nanos last_ = 0;
};

}  // namespace tokengate::cli
