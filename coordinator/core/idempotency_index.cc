#include "coordinator/core/idempotency_index.h"

namespace tokengate::coordinator {

bool IdempotencyIndex::claim(const std::string& key, uint64_t token) {
  ++work_;
  auto it = keys_.find(key);
  if (it != keys_.end()) {
    Entry& e = it->second;
    // The first alias of a finished key queues it for takeSettled(); later ones join it.
    if (e.finished && e.aliases.empty()) settle_.push_back(key);
    e.aliases.push_back(token);
    return false;
  }
  Entry entry;
  entry.token = token;
  keys_.emplace(key, std::move(entry));
  key_of_.emplace(token, key);
  order_.push_back(key);
  evictOldest();
  return true;
}

void IdempotencyIndex::restore(const std::string& key, uint64_t token, Value value) {
  Entry entry;
  entry.token = token;
  entry.finished = true;
  entry.status = absl::OkStatus();
  entry.value = std::move(value);
  if (!keys_.emplace(key, std::move(entry)).second) return;
  order_.push_back(key);
  evictOldest();
}

void IdempotencyIndex::evictOldest() {
  while (keys_.size() > max_keys_ && !order_.empty()) {
    auto old = keys_.find(order_.front());
    if (old != keys_.end() && old->second.finished && old->second.aliases.empty())
      keys_.erase(old);
    else if (old != keys_.end())
      break;  // oldest still live: keep going over the cap rather than lose it
    order_.pop_front();
  }
}

std::vector<IdempotencyIndex::Settled> IdempotencyIndex::takeSettled() {
  std::vector<Settled> out;
  for (const std::string& key : settle_) {
    ++work_;
    auto it = keys_.find(key);
    if (it == keys_.end() || !it->second.finished || it->second.aliases.empty()) continue;
    Entry& e = it->second;
    out.push_back({std::move(e.aliases), e.status, e.value});
    e.aliases.clear();
  }
  settle_.clear();
  return out;
}

std::vector<uint64_t> IdempotencyIndex::finished(uint64_t token, const Value& value) {
  auto k = key_of_.find(token);
  if (k == key_of_.end()) return {};
  std::vector<uint64_t> aliases;
  if (auto e = keys_.find(k->second); e != keys_.end()) {
    e->second.finished = true;
    e->second.value = value;
    e->second.status = absl::OkStatus();
    aliases = std::move(e->second.aliases);
    e->second.aliases.clear();
  }
  key_of_.erase(k);
  return aliases;
}

std::vector<uint64_t> IdempotencyIndex::failed(uint64_t token) {
  auto k = key_of_.find(token);
  if (k == key_of_.end()) return {};
  std::vector<uint64_t> aliases;
  if (auto e = keys_.find(k->second); e != keys_.end()) {
    aliases = std::move(e->second.aliases);
    keys_.erase(e);
  }
  key_of_.erase(k);
  return aliases;
}

}  // namespace tokengate::coordinator
