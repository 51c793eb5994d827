// Rate limiting for the gateway: a token bucket on an injected clock, and the
// same bucket keyed by source address. Not thread-safe by itself: a session's
// bucket is touched only on its strand; KeyedRateLimiter locks.
// Tests: tests/unit/gateway/token_bucket_test.cc (FakeClock).
#pragma once

#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/clock.h"

namespace tokengate::gateway {

class TokenBucket {
 public:
  // rate <= 0: unlimited. The bucket starts full.
  TokenBucket(double rate, double burst, Nanos now);
  // Takes one token if there is one.
  bool take(Nanos now);

 private:
  double rate_, burst_, tokens_;
  Nanos last_;
};

// One bucket per key (source IP), shared by all of that key's connections.
// Memory is bounded: at most max_keys buckets; when full, buckets that have
// refilled completely (idle keys) are forgotten first, and if none has, the
// new key shares a single overflow bucket (a flood of distinct addresses
// cannot grow the map or bypass the limit). Thread-safe.
class KeyedRateLimiter {
 public:
  KeyedRateLimiter(double rate, double burst, size_t max_keys = 65536);
  bool take(std::string_view key, Nanos now);
  size_t keys() const;

 private:
  struct Bucket {
    double tokens;
    Nanos last;
  };
  bool takeFrom(Bucket& b, Nanos now) const;

  const double rate_, burst_;
  const size_t max_keys_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;  // guarded by mu_
  Bucket overflow_;                                  // guarded by mu_
};

}  // namespace tokengate::gateway
