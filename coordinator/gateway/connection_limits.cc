#include "coordinator/gateway/connection_limits.h"

#include <algorithm>

namespace tokengate::gateway {

ConnectionLimiter::ConnectionLimiter(size_t max_authenticated, size_t max_unauthenticated,
                                     size_t max_unauthenticated_per_ip)
    : max_auth_(max_authenticated),
      max_unauth_(max_unauthenticated),
      max_unauth_per_ip_(max_unauthenticated_per_ip) {}

ConnectionLimiter::Result ConnectionLimiter::admitAuthenticated() {
  std::lock_guard lock(mu_);
  if (auth_ >= max_auth_) return Result::kTooManyClients;
  ++auth_;
  return Result::kOk;
}

ConnectionLimiter::Result ConnectionLimiter::admitUnauthenticated(std::string_view ip) {
  std::lock_guard lock(mu_);
  if (unauth_ >= max_unauth_) return Result::kTooManyUnauthenticated;
  auto it = per_ip_.find(std::string(ip));
  if (it != per_ip_.end() && it->second >= max_unauth_per_ip_) return Result::kTooManyFromAddress;
  if (max_unauth_per_ip_ == 0) return Result::kTooManyFromAddress;
  ++unauth_;
  if (it == per_ip_.end()) it = per_ip_.emplace(std::string(ip), 0).first;
  ++it->second;
  return Result::kOk;
}

ConnectionLimiter::Result ConnectionLimiter::promote(std::string_view ip) {
  std::lock_guard lock(mu_);
  if (auth_ >= max_auth_) return Result::kTooManyClients;
  ++auth_;
  if (unauth_ > 0) --unauth_;
  if (auto it = per_ip_.find(std::string(ip)); it != per_ip_.end() && --it->second == 0) {
    per_ip_.erase(it);
  }
  return Result::kOk;
}

void ConnectionLimiter::releaseAuthenticated() {
  std::lock_guard lock(mu_);
  if (auth_ > 0) --auth_;
}

void ConnectionLimiter::releaseUnauthenticated(std::string_view ip) {
  std::lock_guard lock(mu_);
  if (unauth_ > 0) --unauth_;
  if (auto it = per_ip_.find(std::string(ip)); it != per_ip_.end() && --it->second == 0) {
    per_ip_.erase(it);
  }
}

size_t ConnectionLimiter::authenticated() const {
  std::lock_guard lock(mu_);
  return auth_;
}

size_t ConnectionLimiter::unauthenticated() const {
  std::lock_guard lock(mu_);
  return unauth_;
}

AuthBackoff::AuthBackoff(int free_failures, Nanos base_block, Nanos max_block, size_t max_ips)
    : free_failures_(std::max(0, free_failures)),
      base_(std::max<Nanos>(1, base_block)),
      max_(std::max(base_block, max_block)),
      max_ips_(std::max<size_t>(1, max_ips)) {}

AuthBackoff::Record* AuthBackoff::find(std::string_view ip, Nanos now, bool create) {
  auto it = records_.find(std::string(ip));
  if (it != records_.end()) return &it->second;
  if (!create) return nullptr;
  if (records_.size() >= max_ips_) {
    // Forget addresses that have not failed for a full maximum block.
    std::erase_if(records_, [&](const auto& kv) {
      return now - std::max(kv.second.last, kv.second.blocked_until) >= max_;
    });
  }
  if (records_.size() >= max_ips_) return &overflow_;
  return &records_.emplace(std::string(ip), Record{}).first->second;
}

Nanos AuthBackoff::blockedFor(std::string_view ip, Nanos now) const {
  std::lock_guard lock(mu_);
  auto it = records_.find(std::string(ip));
  const Record* r = it != records_.end() ? &it->second : nullptr;
  if (r == nullptr && records_.size() >= max_ips_) r = &overflow_;
  if (r == nullptr || now >= r->blocked_until) return 0;
  return r->blocked_until - now;
}

void AuthBackoff::onFailure(std::string_view ip, Nanos now) {
  std::lock_guard lock(mu_);
  Record* r = find(ip, now, true);
  // A record idle for a full maximum block after its last block ended starts over.
  if (r->failures > 0 && now - std::max(r->last, r->blocked_until) >= max_) r->failures = 0;
  r->last = now;
  ++r->failures;
  const int over = r->failures - free_failures_;
  if (over <= 0) return;
  Nanos block = base_;
  for (int i = 1; i < over && block < max_; ++i) block *= 2;
  r->blocked_until = now + std::min(block, max_);
}

void AuthBackoff::onSuccess(std::string_view ip) {
  std::lock_guard lock(mu_);
  records_.erase(std::string(ip));
}

size_t AuthBackoff::addresses() const {
  std::lock_guard lock(mu_);
  return records_.size();
}

std::optional<uint64_t> OutboundBudget::add(uint64_t id, size_t n) {
  std::lock_guard lock(mu_);
  total_ += n;
  sessions_[id] += n;
  if (total_ <= max_) return std::nullopt;
  uint64_t victim = id;
  size_t most = 0;
  for (const auto& [sid, bytes] : sessions_) {
    if (bytes > most) {
      most = bytes;
      victim = sid;
    }
  }
  return victim;
}

void OutboundBudget::remove(uint64_t id, size_t n) {
  std::lock_guard lock(mu_);
  total_ -= std::min(total_, n);
  if (auto it = sessions_.find(id); it != sessions_.end()) {
    it->second -= std::min(it->second, n);
  }
}

void OutboundBudget::forget(uint64_t id) {
  std::lock_guard lock(mu_);
  if (auto it = sessions_.find(id); it != sessions_.end()) {
    total_ -= std::min(total_, it->second);
    sessions_.erase(it);
  }
}

size_t OutboundBudget::total() const {
  std::lock_guard lock(mu_);
  return total_;
}

}  // namespace tokengate::gateway
