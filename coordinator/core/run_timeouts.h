// RunTimeouts: the per-token run timeout (start-to-close) and the strikes that quarantine a
// node which keeps withholding results. Owned by CoordinatorCore; loop thread only.
//
// How a token moves through it: the core calls started() when it places a token on a node
// (the clock starts at dispatch, so the node's own queue counts); tokens that are still running
// there under the same attempt when their time comes are handed back by expire(), and the core
// re-queues them elsewhere. Entries are never removed when a token closes in time (that would
// cost a lookup per result): they go stale and are dropped by expire() or by compact(), which
// runs once the table has doubled since the last compaction, so the cost per token stays O(1)
// and memory follows the tokens in flight, not the tokens ever run.
//
// Deadlines are kept in buckets of `granularity` (a timeout fires up to one bucket late), so
// placing a batch of tokens with the same timeout is one append per token.
//
// Strikes are counted per node id (not per session), so a node cannot clear its record by
// reconnecting: after `quarantine_after` run timeouts within `strike_window` the id is
// quarantined until an operator lifts it (tgctl node undrain). A strike expires
// `strike_window` after it was given, so an honest node that hits a timeout now and then (a
// slow disk, a noisy neighbour) is not quarantined by strikes collected over weeks; a node that
// withholds results keeps collecting them faster than they expire. Both maps are bounded
// (oldest ids forgotten first), and each id keeps at most `quarantine_after` strike times.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/clock.h"

namespace tokengate::coordinator {

class RunTimeouts {
 public:
  struct Config {
    Nanos granularity = 100 * kMillis;
    uint32_t quarantine_after = 3;  // run timeouts on one node id; 0 = never quarantine
    // A strike counts toward quarantine this long after it was given; 0 = strikes never expire.
    Nanos strike_window = 60 * 60 * kSeconds;
    size_t max_ids = 4096;  // node ids remembered (strikes and quarantines)
  };
  struct Entry {
    uint64_t token = 0;
    uint32_t slot = 0;    // node slot it was sent to
    uint8_t attempt = 0;  // TokenRec::attempt at dispatch
  };

  explicit RunTimeouts(Config config) : config_(config) {}

  // `token` (attempt `attempt`) was placed on `slot` at `now`; it must close by now + timeout.
  // timeout 0: no run timeout for this token.
  void started(uint64_t token, uint8_t attempt, uint32_t slot, Nanos now, Nanos timeout) {
    if (timeout <= 0) return;
    const int64_t bucket = (now + timeout + config_.granularity - 1) / config_.granularity;
    if (bucket != last_bucket_ || last_ == nullptr) {
      last_ = &buckets_[bucket];
      last_bucket_ = bucket;
    }
    last_->push_back({token, slot, attempt});
    ++size_;
  }

  // Hands every entry due at `now` to `fn(const Entry&)`, oldest bucket first. Entries may be
  // stale: the caller checks that the token still runs on that slot under that attempt.
  template <typename Fn>
  void expire(Nanos now, Fn&& fn) {
    while (!buckets_.empty() && buckets_.begin()->first * config_.granularity <= now) {
      std::vector<Entry> due = std::move(buckets_.begin()->second);
      if (last_bucket_ == buckets_.begin()->first) last_ = nullptr;
      buckets_.erase(buckets_.begin());
      size_ -= due.size();
      for (const Entry& e : due) fn(e);
    }
  }

  // When the next bucket falls due (INT64_MAX when none).
  Nanos nextExpiry() const {
    return buckets_.empty() ? INT64_MAX : buckets_.begin()->first * config_.granularity;
  }

  // Drops entries whose token no longer runs (`live(entry)` false) once the table has doubled
  // since the last compaction (plus slack). Amortised O(1) per started token.
  template <typename Live>
  void compact(Live&& live) {
    if (size_ < 2 * kept_ + kCompactSlack) return;
    size_ = 0;
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      std::erase_if(it->second, [&](const Entry& e) { return !live(e); });
      size_ += it->second.size();
      if (it->second.empty()) {
        if (last_bucket_ == it->first) last_ = nullptr;
        it = buckets_.erase(it);
      } else {
        ++it;
      }
    }
    kept_ = size_;
    ++compactions_;
  }

  size_t pending() const { return size_; }
  uint64_t compactions() const { return compactions_; }

  // A run timeout on node `id` at `now`. Returns true when this strike quarantines the id
  // (`quarantine_after` strikes given within the last `strike_window`, this one included).
  bool strike(const std::string& id, Nanos now);
  bool quarantined(const std::string& id) const { return quarantined_.contains(id); }
  // Strikes of `id` that have not expired at `now`.
  uint32_t strikes(const std::string& id, Nanos now) const;
  // An operator lifted the quarantine (or undrained the node): strikes start over.
  void lift(const std::string& id);

 private:
  static constexpr size_t kCompactSlack = 64 * 1024;
  void remember(const std::string& id);
  bool expired(Nanos given, Nanos now) const {
    return config_.strike_window > 0 && now - given >= config_.strike_window;
  }

  Config config_;
  std::map<int64_t, std::vector<Entry>> buckets_;  // by deadline bucket
  std::vector<Entry>* last_ = nullptr;             // bucket of the last started() (hot path)
  int64_t last_bucket_ = 0;
  size_t size_ = 0, kept_ = 0;
  uint64_t compactions_ = 0;
  // Times of each id's latest strikes, oldest first (at most max(quarantine_after, 1)).
  std::unordered_map<std::string, std::deque<Nanos>> strikes_;
  std::unordered_set<std::string> quarantined_;
  std::deque<std::string> order_;  // ids in first-strike order, for the bound
};

}  // namespace tokengate::coordinator
