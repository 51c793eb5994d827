// Convictions: the nodes caught misbehaving (results other nodes contradicted under `verify`, or
// too many run timeouts), quarantined until an operator lifts it (`tgctl node undrain`).
//
// Kept apart from node records (NodeTable) on purpose: a node record goes away
// `--departed-node-retention-s` after the node left, a conviction does not. It is small (one
// entry per caught node id) and it is what the journal saves (JobJournal::quarantine) and a
// restarted coordinator restores, so a caught node stays off work across reconnects, record
// reaping and coordinator restarts.
//
// A conviction names the node id and the CURVE public key the node was caught with. A hello
// under a convicted id, or from a convicted key under any id, joins quarantined: with CURVE on a
// caught key cannot come back under a fresh id. With CURVE off the key is empty and only the id
// counts.
//
// Bounded (max_entries, oldest forgotten first, logged by the caller) so an id flood with CURVE
// off cannot grow it without limit. Owned by CoordinatorCore; loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coordinator/core/journal.h"

namespace tokengate::coordinator {

class Convictions {
 public:
  explicit Convictions(size_t max_entries = 65536) : max_entries_(max_entries) {}

  // Records `note` (node id, key, reason, cause, time). Returns true when the id was not
  // convicted yet (a newer conviction of a convicted id only replaces its note). Ids forgotten
  // to keep the bound are appended to `forgotten` when given.
  bool convict(const QuarantineNote& note, std::vector<std::string>* forgotten = nullptr) {
    auto [it, fresh] = by_id_.try_emplace(note.node_id);
    if (!fresh) unindexKey(it->second.key);
    it->second = note;
    it->second.lifted = false;
    if (!note.key.empty()) ++by_key_[note.key];
    if (fresh) {
      order_.push_back(note.node_id);
      while (by_id_.size() > max_entries_ && !order_.empty()) {
        auto old = by_id_.find(order_.front());
        if (old != by_id_.end()) {
          if (forgotten) forgotten->push_back(old->first);
          unindexKey(old->second.key);
          by_id_.erase(old);
        }
        order_.pop_front();
      }
    }
    return fresh;
  }

  // Whether a node with this id, or this key (ignored when empty), must get no work.
  bool quarantined(const std::string& id, const std::string& key = {}) const {
    return by_id_.contains(id) || (!key.empty() && by_key_.contains(key));
  }
  const QuarantineNote* find(const std::string& id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &it->second;
  }

  // Lifts the conviction of `id` and every conviction made under `key` (the operator trusts
  // that node and its key again). Returns the ids lifted.
  std::vector<std::string> lift(const std::string& id, const std::string& key = {}) {
    std::vector<std::string> lifted;
    if (auto it = by_id_.find(id); it != by_id_.end()) {
      unindexKey(it->second.key);
      by_id_.erase(it);
      lifted.push_back(id);
    }
    if (!key.empty() && by_key_.contains(key)) {
      for (auto it = by_id_.begin(); it != by_id_.end();) {
        if (it->second.key == key) {
          lifted.push_back(it->first);
          unindexKey(key);
          it = by_id_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (!lifted.empty())  // order_ keeps stale names; drop them when it has grown
      if (order_.size() > 2 * by_id_.size() + 64)
        std::erase_if(order_, [&](const std::string& x) { return !by_id_.contains(x); });
    return lifted;
  }

  size_t size() const { return by_id_.size(); }
  template <typename Fn>
  void forEach(Fn&& fn) const {
    for (const auto& [id, note] : by_id_) fn(note);
  }

 private:
  void unindexKey(const std::string& key) {
    if (key.empty()) return;
    if (auto k = by_key_.find(key); k != by_key_.end() && --k->second == 0) by_key_.erase(k);
  }

  size_t max_entries_;
  std::unordered_map<std::string, QuarantineNote> by_id_;
  std::unordered_map<std::string, uint32_t> by_key_;  // key -> convicted ids under it
  std::deque<std::string> order_;                     // ids in conviction order (for the bound)
};

}  // namespace tokengate::coordinator
