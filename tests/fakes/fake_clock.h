// FakeClock: time moves only when a test advances it.
#pragma once

#include "common/clock.h"

namespace tokengate::testing {

class FakeClock final : public Clock {
 public:
  Nanos now() const override { return now_; }
  void advance(Nanos d) { now_ += d; }
  void advanceMs(int64_t ms) { now_ += ms * kMillis; }

 private:
  Nanos now_ = 1'000 * kSeconds;
};

}  // namespace tokengate::testing
