#include "coordinator/core/run_timeouts.h"

#include <algorithm>

namespace tokengate::coordinator {

bool RunTimeouts::strike(const std::string& id, Nanos now) {
  auto [it, inserted] = strikes_.try_emplace(id);
  std::deque<Nanos>& given = it->second;
  while (!given.empty() && expired(given.front(), now)) given.pop_front();
  given.push_back(now);
  // Only the latest quarantine_after strikes can decide a quarantine: older ones expire first.
  while (given.size() > std::max<uint32_t>(config_.quarantine_after, 1)) given.pop_front();
  const auto count = static_cast<uint32_t>(given.size());
  if (inserted) remember(id);  // may forget `id` itself when max_ids is 0; `count` is kept
  if (config_.quarantine_after == 0 || count < config_.quarantine_after) return false;
  return quarantined_.insert(id).second;
}

uint32_t RunTimeouts::strikes(const std::string& id, Nanos now) const {
  auto it = strikes_.find(id);
  if (it == strikes_.end()) return 0;
  return static_cast<uint32_t>(std::count_if(it->second.begin(), it->second.end(),
                                             [&](Nanos given) { return !expired(given, now); }));
}

void RunTimeouts::lift(const std::string& id) {
  strikes_.erase(id);
  quarantined_.erase(id);
}

void RunTimeouts::remember(const std::string& id) {
  order_.push_back(id);
  // Forget the oldest ids beyond the bound (an id flood cannot grow this without limit). An id
  // lifted and struck again sits in order_ twice, so past the bound it may be forgotten early.
  while (order_.size() > config_.max_ids) {
    strikes_.erase(order_.front());
    quarantined_.erase(order_.front());
    order_.pop_front();
  }
}

}  // namespace tokengate::coordinator
