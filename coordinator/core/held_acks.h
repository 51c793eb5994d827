// Held acknowledgements (SubmitJob.ackWithResult): the SubmitReply of an admitted, watched job
// waits up to the coordinator's ack hold so that a job finishing within it is answered by one
// JobDone carrying the request id instead of SubmitReply + JobDone (one ZeroMQ message fewer
// per round trip). Every hold has the same length, so deadlines arrive in order and a FIFO is
// the timer queue: hold, take (the job finished first) and expire are O(1) each, nothing walks
// the held acks, and their number is capped (a hold that does not fit is refused: the caller
// acks at once).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/clock.h"

namespace tokengate::coordinator {

class HeldAcks {
 public:
  struct Ack {
    std::string peer;
    uint64_t request_id = 0;
    uint64_t job_id = 0;
  };

  explicit HeldAcks(size_t max_held = 65536) : max_held_(max_held) {}

  // Holds `job`'s ack until `due` (not before any due already held). False when full.
  bool hold(Nanos due, uint64_t job, std::string peer, uint64_t request_id) {
    if (queue_.size() >= max_held_ || held_.contains(job)) return false;
    held_.emplace(job, Ack{std::move(peer), request_id, job});
    queue_.emplace_back(due, job);
    return true;
  }
  // The held ack of `job`, no longer held (its JobDone or progress goes out now).
  std::optional<Ack> take(uint64_t job) {
    if (held_.empty()) return std::nullopt;
    auto it = held_.find(job);
    if (it == held_.end()) return std::nullopt;
    Ack a = std::move(it->second);
    held_.erase(it);
    return a;
  }
  // Calls send(ack) for each ack whose deadline is <= now, oldest first, and drops it.
  template <typename Send>
  void expire(Nanos now, Send&& send) {
    while (!queue_.empty() && queue_.front().first <= now) {
      const uint64_t job = queue_.front().second;
      queue_.pop_front();  // a taken ack leaves its entry here until its deadline
      if (auto a = take(job)) send(*a);
    }
  }
  // The earliest pending deadline (INT64_MAX when none).
  Nanos nextDue() const {
    return queue_.empty() ? std::numeric_limits<Nanos>::max() : queue_.front().first;
  }
  size_t held() const { return held_.size(); }
  bool empty() const { return held_.empty(); }

 private:
  size_t max_held_;
  std::unordered_map<uint64_t, Ack> held_;        // job id -> its held ack
  std::deque<std::pair<Nanos, uint64_t>> queue_;  // (deadline, job id), in deadline order
};

}  // namespace tokengate::coordinator
