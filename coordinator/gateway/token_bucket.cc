#include "coordinator/gateway/token_bucket.h"

#include <algorithm>

namespace tokengate::gateway {

TokenBucket::TokenBucket(double rate, double burst, Nanos now)
    : rate_(rate), burst_(std::max(1.0, burst)), tokens_(burst_), last_(now) {}

bool TokenBucket::take(Nanos now) {
  if (rate_ <= 0) return true;
  if (now > last_) {
    tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now - last_) / 1e9);
    last_ = now;
  }
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

KeyedRateLimiter::KeyedRateLimiter(double rate, double burst, size_t max_keys)
    : rate_(rate),
      burst_(std::max(1.0, burst)),
      max_keys_(std::max<size_t>(1, max_keys)),
      overflow_{burst_, 0} {}

bool KeyedRateLimiter::takeFrom(Bucket& b, Nanos now) const {
  if (now > b.last) {
    b.tokens = std::min(burst_, b.tokens + rate_ * static_cast<double>(now - b.last) / 1e9);
    b.last = now;
  }
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

bool KeyedRateLimiter::take(std::string_view key, Nanos now) {
  if (rate_ <= 0) return true;
  std::lock_guard lock(mu_);
  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      // Forget keys whose bucket would be full by now: they hold no state.
      const auto full_after = static_cast<Nanos>(burst_ / rate_ * 1e9);
      std::erase_if(buckets_, [&](const auto& kv) { return now - kv.second.last >= full_after; });
    }
    if (buckets_.size() >= max_keys_) return takeFrom(overflow_, now);
    it = buckets_.emplace(std::string(key), Bucket{burst_, now}).first;
  }
  return takeFrom(it->second, now);
}

size_t KeyedRateLimiter::keys() const {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

}  // namespace tokengate::gateway
