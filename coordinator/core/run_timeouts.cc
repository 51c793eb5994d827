#include "coordinator/core/run_timeouts.h"

namespace tokengate::coordinator {

bool RunTimeouts::strike(const std::string& id) {
  auto [it, inserted] = strikes_.try_emplace(id, 0);
  if (inserted) remember(id);
  ++it->second;
  if (config_.quarantine_after == 0 || it->second < config_.quarantine_after) return false;
  return quarantined_.insert(id).second;
}

bool RunTimeouts::quarantine(const std::string& id) {
  if (strikes_.try_emplace(id, 0).second) remember(id);
  return quarantined_.insert(id).second;
}

uint32_t RunTimeouts::strikes(const std::string& id) const {
  auto it = strikes_.find(id);
  return it == strikes_.end() ? 0 : it->second;
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
