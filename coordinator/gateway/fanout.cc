#include "coordinator/gateway/fanout.h"

namespace tokengate::gateway {

void SessionRegistry::add(uint64_t id, std::weak_ptr<EventSubscriber> s) {
  std::lock_guard lock(mu_);
  sessions_[id] = std::move(s);
}

void SessionRegistry::remove(uint64_t id) {
  std::lock_guard lock(mu_);
  sessions_.erase(id);
}

size_t SessionRegistry::size() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

std::vector<std::shared_ptr<EventSubscriber>> SessionRegistry::live() const {
  std::vector<std::shared_ptr<EventSubscriber>> out;
  std::lock_guard lock(mu_);
  out.reserve(sessions_.size());
  for (const auto& [id, w] : sessions_) {
    if (auto s = w.lock()) out.push_back(std::move(s));
  }
  return out;
}

std::shared_ptr<EventSubscriber> SessionRegistry::find(uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.lock();
}

void SessionRegistry::topicDelta(uint32_t bits, int delta) {
  for (int i = 0; i < 4; ++i) {
    if (bits & (1u << i)) topic_subscribers_[i].fetch_add(delta);
  }
}

bool SessionRegistry::wanted(uint32_t bit) const {
  for (int i = 0; i < 4; ++i) {
    if ((bit & (1u << i)) && topic_subscribers_[i].load(std::memory_order_relaxed) > 0) return true;
  }
  return false;
}

size_t SessionRegistry::fanOut(uint32_t bit, const std::shared_ptr<const std::string>& msg) const {
  std::vector<std::shared_ptr<EventSubscriber>> targets;
  {
    std::lock_guard lock(mu_);
    targets.reserve(sessions_.size());
    for (const auto& [id, w] : sessions_) {
      if (auto s = w.lock(); s && (s->topics.load() & bit)) targets.push_back(std::move(s));
    }
  }
  for (auto& s : targets) s->deliverEvent(msg);
  return targets.size();
}

}  // namespace tokengate::gateway
