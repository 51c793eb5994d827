// Injectable monotonic clock. Production code takes a `Clock&`; tests pass a
// FakeClock (tests/fakes/fake_clock.h) and advance time by hand.
#pragma once

#include <chrono>
#include <cstdint>

namespace tokengate {

using Nanos = int64_t;
constexpr Nanos kMillis = 1'000'000;
constexpr Nanos kSeconds = 1'000'000'000;

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic nanoseconds; the epoch is arbitrary.
  virtual Nanos now() const = 0;
};

class SystemClock final : public Clock {
 public:
  Nanos now() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }
};

}  // namespace tokengate
