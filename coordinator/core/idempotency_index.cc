#include "coordinator/core/idempotency_index.h"

#include <algorithm>
#include <functional>

namespace tokengate::coordinator {

namespace {
uint64_t hashKey(std::string_view key) { return std::hash<std::string_view>{}(key); }
}  // namespace

int64_t IdempotencyIndex::lookup(std::string_view key, uint64_t hash) {
  if (slots_.empty()) return -1;
  const size_t mask = slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.ref == 0) return -1;
    if (s.hash == hash && entry(s.ref - 1).keyView() == key) return static_cast<int64_t>(s.ref - 1);
  }
}

void IdempotencyIndex::insertSlot(uint64_t hash, uint64_t seq) {
  if ((used_slots_ + 1) * 2 > slots_.size()) grow();
  const size_t mask = slots_.size() - 1;
  size_t i = hash & mask;
  while (slots_[i].ref != 0) i = (i + 1) & mask;
  slots_[i] = {hash, seq + 1};
  ++used_slots_;
}

void IdempotencyIndex::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 64 : old.size() * 2, Slot{});
  const size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {  // the stored hash places each slot: entries are not touched
    if (s.ref == 0) continue;
    size_t i = s.hash & mask;
    while (slots_[i].ref != 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

void IdempotencyIndex::eraseSlot(uint64_t hash, uint64_t seq) {
  const size_t mask = slots_.size() - 1;
  size_t i = hash & mask;
  while (slots_[i].ref != seq + 1) {
    if (slots_[i].ref == 0) return;  // not present (cannot happen for a live entry)
    i = (i + 1) & mask;
  }
  // Backward-shift deletion: pull later slots of the probe run into the hole when their home
  // position does not lie (cyclically) after the hole.
  for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
    if (slots_[j].ref == 0) break;
    const size_t home = slots_[j].hash & mask;
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    slots_[i] = slots_[j];
    i = j;
  }
  slots_[i] = Slot{};
  --used_slots_;
}

bool IdempotencyIndex::claim(const std::string& key, uint64_t token) {
  ++work_;
  const uint64_t hash = hashKey(key);
  if (int64_t found = lookup(key, hash); found >= 0) {
    Entry& e = entry(static_cast<uint64_t>(found));
    // The first alias of a finished key queues it for takeSettled(); later ones join it.
    if (e.finished && e.aliases.empty()) settle_.push_back(static_cast<uint64_t>(found));
    e.aliases.push_back(token);
    return false;
  }
  const uint64_t seq = end_seq_;
  Entry& e = appendEntry(key);
  e.hash = hash;
  e.token = token;
  ++live_;
  insertSlot(hash, seq);
  seq_of_.emplace(token, seq);
  evictOldest();
  return true;
}

void IdempotencyIndex::restore(const std::string& key, uint64_t token, Value value) {
  const uint64_t hash = hashKey(key);
  if (lookup(key, hash) >= 0) return;
  const uint64_t seq = end_seq_;
  Entry& e = appendEntry(key);
  e.hash = hash;
  e.token = token;
  e.finished = true;
  e.status = absl::OkStatus();
  e.value = std::move(value);
  ++live_;
  insertSlot(hash, seq);
  evictOldest();
}

IdempotencyIndex::Entry& IdempotencyIndex::appendEntry(std::string_view key) {
  if (end_seq_ - chunk_base_ == chunks_.size() * kChunkEntries)
    chunks_.push_back(std::make_unique<Entry[]>(kChunkEntries));
  if (key_blocks_.empty() || key_blocks_.back().size - key_blocks_.back().used < key.size()) {
    KeyBlock& b = key_blocks_.emplace_back();
    b.size = std::max(kKeyBlockBytes, key.size());
    b.bytes = std::make_unique_for_overwrite<char[]>(b.size);
  }
  KeyBlock& b = key_blocks_.back();
  char* at = b.bytes.get() + b.used;
  std::copy(key.begin(), key.end(), at);
  b.used += key.size();
  b.end_seq = end_seq_ + 1;
  Entry& e = entry(end_seq_++);
  e = Entry{};
  e.key = at;
  e.key_size = static_cast<uint32_t>(key.size());
  return e;
}

void IdempotencyIndex::popFront() {
  entry(first_seq_) = Entry{};  // frees its value and alias list now
  ++first_seq_;
  if (first_seq_ - chunk_base_ == kChunkEntries) {
    chunks_.pop_front();
    chunk_base_ += kChunkEntries;
  }
  while (key_blocks_.size() > 1 && key_blocks_.front().end_seq <= first_seq_)
    key_blocks_.pop_front();
}

void IdempotencyIndex::evictOldest() {
  while (first_seq_ < end_seq_) {
    Entry& old = entry(first_seq_);
    if (old.live) {
      // Oldest still running or awaited: keep going over the cap rather than lose it.
      if (live_ <= max_keys_ || !old.finished || !old.aliases.empty()) break;
      eraseSlot(old.hash, first_seq_);
      --live_;
    }
    popFront();
  }
}

std::vector<IdempotencyIndex::Settled> IdempotencyIndex::takeSettled() {
  std::vector<Settled> out;
  for (uint64_t seq : settle_) {
    ++work_;
    if (seq < first_seq_) continue;
    Entry& e = entry(seq);
    if (!e.live || !e.finished || e.aliases.empty()) continue;
    out.push_back({std::move(e.aliases), e.status, e.value});
    e.aliases.clear();
  }
  settle_.clear();
  return out;
}

std::vector<uint64_t> IdempotencyIndex::finished(uint64_t token, const Value& value) {
  auto k = seq_of_.find(token);
  if (k == seq_of_.end()) return {};
  Entry& e = entry(k->second);
  seq_of_.erase(k);
  e.finished = true;
  e.value = value;
  e.status = absl::OkStatus();
  std::vector<uint64_t> aliases = std::move(e.aliases);
  e.aliases.clear();
  return aliases;
}

std::vector<uint64_t> IdempotencyIndex::failed(uint64_t token) {
  auto k = seq_of_.find(token);
  if (k == seq_of_.end()) return {};
  const uint64_t seq = k->second;
  seq_of_.erase(k);
  Entry& e = entry(seq);
  std::vector<uint64_t> aliases = std::move(e.aliases);
  // The key is free again; the entry stays in admission order, emptied, until the front.
  eraseSlot(e.hash, seq);
  e.live = false;
  --live_;
  e.aliases = {};
  e.value = Value();
  evictOldest();
  return aliases;
}

}  // namespace tokengate::coordinator
