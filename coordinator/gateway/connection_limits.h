// Pre-authentication budget of the gateway (docs/protocol.md, "Limits"):
//  - ConnectionLimiter: WebSocket slots. Authenticated sessions (a valid token
//    in the upgrade request, or after hello/auth) have their own cap;
//    unauthenticated ones a small global cap and a per-source-IP cap, so they
//    can never take an operator's slot. Check-and-take is one locked step.
//  - AuthBackoff: failed token attempts per source IP; after a few, that IP
//    may not try again for an exponentially growing time.
//  - OutboundBudget: bytes queued to clients across all sessions; over it the
//    session with the most queued bytes (the slowest reader) is dropped.
// All three are thread-safe (one mutex each, held for a map update) and take
// time from the caller, so tests drive them on a FakeClock
// (tests/unit/gateway/policy_test.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/clock.h"

namespace tokengate::gateway {

class ConnectionLimiter {
 public:
  ConnectionLimiter(size_t max_authenticated, size_t max_unauthenticated,
                    size_t max_unauthenticated_per_ip);

  enum class Result { kOk, kTooManyClients, kTooManyUnauthenticated, kTooManyFromAddress };
  Result admitAuthenticated();
  Result admitUnauthenticated(std::string_view ip);
  // An unauthenticated session authenticated: it takes an authenticated slot
  // and gives its unauthenticated one back. On kTooManyClients it keeps the
  // unauthenticated slot (the caller closes it).
  Result promote(std::string_view ip);
  void releaseAuthenticated();
  void releaseUnauthenticated(std::string_view ip);

  size_t authenticated() const;
  size_t unauthenticated() const;

 private:
  const size_t max_auth_, max_unauth_, max_unauth_per_ip_;
  mutable std::mutex mu_;
  size_t auth_ = 0, unauth_ = 0;                    // guarded by mu_
  std::unordered_map<std::string, size_t> per_ip_;  // guarded by mu_
};

class AuthBackoff {
 public:
  // The first `free_failures` failures per IP cost nothing; each further one
  // blocks the IP for base * 2^(n-1), at most `max_block`. A success clears
  // the IP. At most max_ips addresses are remembered; beyond that, all new
  // addresses share one record (a flood of addresses cannot grow memory or
  // escape the back-off).
  AuthBackoff(int free_failures, Nanos base_block, Nanos max_block, size_t max_ips = 65536);

  // 0 when `ip` may try a token now, else how long it must wait.
  Nanos blockedFor(std::string_view ip, Nanos now) const;
  void onFailure(std::string_view ip, Nanos now);
  void onSuccess(std::string_view ip);
  size_t addresses() const;

 private:
  struct Record {
    int failures = 0;
    Nanos blocked_until = 0;
    Nanos last = 0;
  };
  Record* find(std::string_view ip, Nanos now, bool create);

  const int free_failures_;
  const Nanos base_, max_;
  const size_t max_ips_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Record> records_;  // guarded by mu_
  Record overflow_;                                  // guarded by mu_
};

class OutboundBudget {
 public:
  explicit OutboundBudget(size_t max_bytes) : max_(max_bytes) {}
  // Adds n bytes to session `id`'s queue. When that takes the total over the
  // budget, returns the id of the session to drop (the one with the most
  // queued bytes, possibly `id` itself); the bytes are counted regardless.
  std::optional<uint64_t> add(uint64_t id, size_t n);
  void remove(uint64_t id, size_t n);
  // The session is gone: forget it (its bytes must have been removed).
  void forget(uint64_t id);
  size_t total() const;
  size_t max() const { return max_; }

 private:
  const size_t max_;
  mutable std::mutex mu_;
  size_t total_ = 0;                               // guarded by mu_
  std::unordered_map<uint64_t, size_t> sessions_;  // guarded by mu_
};

}  // namespace tokengate::gateway
