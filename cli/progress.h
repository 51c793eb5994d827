// A one-line progress bar on stderr for tgctl and tokengate-local.
#pragma once

#include <cstdio>
#include <fmt/format.h>
#include <string>

#include "client/client.h"
#include "common/clock.h"

namespace tokengate::cli {

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
    fmt::print(stderr, "\r[{}] {:5.1f}%  {}/{} tokens  {} failed  {:.0f} tok/s   ", bar, frac * 100,
               p.done + p.failed, p.total, p.failed, secs > 0 ? (p.done + p.failed) / secs : 0.0);
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
