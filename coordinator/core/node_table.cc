#include "coordinator/core/node_table.h"

namespace tokengate::coordinator {

NodeRec* NodeTable::byPeer(const std::string& peer) {
  auto it = by_peer_.find(peer);
  return it == by_peer_.end() ? nullptr : &nodes_[it->second];
}

NodeRec* NodeTable::byId(const std::string& id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &nodes_[it->second];
}

bool NodeTable::isNewest(const NodeRec& n) const {
  auto it = by_id_.find(n.id);
  return it != by_id_.end() && it->second == slotOf(n);
}

uint32_t NodeTable::add(NodeRec rec) {
  uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
    nodes_[slot] = std::move(rec);
  } else {
    slot = static_cast<uint32_t>(nodes_.size());
    nodes_.push_back(std::move(rec));
  }
  NodeRec& n = nodes_[slot];
  n.vacant = false;
  for (int w = 0; w < kLaneCount; ++w) {
    prometheus::Labels labels{{"node", n.id}, {"lane", weightName(static_cast<Weight>(w))}};
    n.lanes[w].m_in_flight = &metrics_.in_flight.Add(labels);
    n.lanes[w].m_util = &metrics_.lane_utilization.Add(labels);
  }
  n.m_rss = &metrics_.node_rss.Add({{"node", n.id}});
  n.m_cpu = &metrics_.node_cpu.Add({{"node", n.id}});
  by_peer_[n.peer] = slot;
  by_id_[n.id] = slot;
  return slot;
}

void NodeTable::markDeparted(uint32_t slot, Nanos now, bool clean) {
  nodes_[slot].departed_at = now;
  if (clean) {
    nodes_[slot].left = true;
    left_.push_back(slot);
  } else {
    departed_.emplace_back(now, slot);
  }
}

void NodeTable::removeSeries(NodeRec& n) {
  for (auto& l : n.lanes) {
    if (l.m_in_flight) metrics_.in_flight.Remove(l.m_in_flight);
    if (l.m_util) metrics_.lane_utilization.Remove(l.m_util);
    l.m_in_flight = l.m_util = nullptr;
  }
  if (n.m_rss) metrics_.node_rss.Remove(n.m_rss);
  n.m_rss = nullptr;
  if (n.m_cpu) metrics_.node_cpu.Remove(n.m_cpu);
  n.m_cpu = nullptr;
  for (auto& [core, g] : n.m_cores) metrics_.core_tokens.Remove(g);
  n.m_cores.clear();
}

void NodeTable::drop(uint32_t slot, uint64_t jobs_admitted) {
  NodeRec& n = nodes_[slot];
  // Series are labelled by node id: a newer registration of the same id shares them.
  auto id = by_id_.find(n.id);
  const bool newest = id != by_id_.end() && id->second == slot;
  if (newest) {
    removeSeries(n);
    by_id_.erase(id);
  }
  if (auto p = by_peer_.find(n.peer); p != by_peer_.end() && p->second == slot) by_peer_.erase(p);
  NodeRec empty;
  empty.state = control::NodeState::kDead;
  empty.vacant = true;
  const bool traced = n.completed > 0;  // finished tokens may name this slot (TokenRec::by)
  if (traced) empty.id = std::move(n.id);
  n = std::move(empty);
  if (traced)
    held_.emplace_back(jobs_admitted, slot);
  else
    free_.push_back(slot);
}

std::vector<uint32_t> NodeTable::reap(Nanos now, uint64_t jobs_admitted) {
  std::vector<uint32_t> freed;
  for (uint32_t slot : left_) {
    const NodeRec& n = nodes_[slot];
    if (n.vacant || !n.left) continue;
    drop(slot, jobs_admitted);
    freed.push_back(slot);
  }
  left_.clear();
  while (!departed_.empty() && now - departed_.front().first >= retention_) {
    const uint32_t slot = departed_.front().second;
    departed_.pop_front();
    const NodeRec& n = nodes_[slot];
    if (n.vacant || n.left || n.state != control::NodeState::kDead) continue;
    drop(slot, jobs_admitted);
    freed.push_back(slot);
  }
  return freed;
}

void NodeTable::releaseHeld(uint64_t oldest_running) {
  while (!held_.empty() && held_.front().first <= oldest_running) {
    const uint32_t slot = held_.front().second;
    held_.pop_front();
    nodes_[slot].id.clear();
    free_.push_back(slot);
  }
}

}  // namespace tokengate::coordinator
