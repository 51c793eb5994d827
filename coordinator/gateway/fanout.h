// Event fan-out: which sessions want which topics, and the bounded hand-off of
// coordinator events to them. No Beast here: sessions are EventSubscribers.
// Thread-safe: the coordinator thread asks wanted()/tryReserve(), the gateway
// threads add/remove sessions and fan out. Tests: tests/unit/gateway/fanout_test.cc.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace tokengate::gateway {

// What the fan-out and stop() need from a WebSocket session. deliverEvent()
// and shutdown() may be called from any thread (a session posts to its strand).
class EventSubscriber : public std::enable_shared_from_this<EventSubscriber> {
 public:
  virtual ~EventSubscriber() = default;
  virtual void deliverEvent(std::shared_ptr<const std::string> msg) = 0;
  virtual void shutdown() = 0;
  // Close at once with a close reason, dropping what is queued (the gateway's
  // outbound budget is exhausted and this session holds the most of it).
  virtual void evict(const char* reason) = 0;
  std::atomic<uint32_t> topics{0};  // Topic bits (protocol.h)
};

class SessionRegistry {
 public:
  void add(uint64_t id, std::weak_ptr<EventSubscriber> s);
  void remove(uint64_t id);
  size_t size() const;
  std::vector<std::shared_ptr<EventSubscriber>> live() const;
  std::shared_ptr<EventSubscriber> find(uint64_t id) const;

  // Subscriber counts per topic bit (bits 0..3), so the coordinator-side sink
  // skips serializing events nobody listens to.
  void topicDelta(uint32_t bits, int delta);
  bool wanted(uint32_t bit) const;

  // Hands msg to every live session subscribed to `bit`; returns how many.
  size_t fanOut(uint32_t bit, const std::shared_ptr<const std::string>& msg) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::weak_ptr<EventSubscriber>> sessions_;  // guarded by mu_
  std::atomic<int> topic_subscribers_[4] = {0, 0, 0, 0};
};

// Events posted by the coordinator but not yet fanned out. A full backlog
// drops the event (counted) rather than queueing without bound.
class FanoutBacklog {
 public:
  explicit FanoutBacklog(int64_t max) : max_(max) {}
  bool tryReserve() {
    if (pending_.fetch_add(1, std::memory_order_relaxed) >= max_) {
      pending_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  void release() { pending_.fetch_sub(1, std::memory_order_relaxed); }
  int64_t pending() const { return pending_.load(std::memory_order_relaxed); }

 private:
  const int64_t max_;
  std::atomic<int64_t> pending_{0};
};

}  // namespace tokengate::gateway
