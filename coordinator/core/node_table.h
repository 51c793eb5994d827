// NodeTable: the coordinator's node registrations, by slot, peer and node id, with each node's
// own index of the tokens it holds. Owned by CoordinatorCore; loop thread only.
//
// How a node moves through it: add() registers it (a slot, its metric series); the core
// records every token it sends there (dispatched()) so losing, draining or evicting the node
// visits that node's tokens only, never every live token. markDeparted() starts its retention:
// a departed node stays listed (as dead) for `departed_retention`, then reap() drops the record
// and its metric series and frees the slot, so a flood of node ids cannot grow memory or
// /metrics without bound.
#pragma once

#include <prometheus/gauge.h>

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/job.h"
#include "coordinator/control/control.h"
#include "coordinator/core/metrics.h"

namespace tokengate::coordinator {

constexpr uint32_t kNoNode = UINT32_MAX;

// Tokens placed on a node and not yet sent, flushed as one TokenBatch frame.
struct PendingBatch {
  std::vector<uint64_t> ids;
  Nanos first_at = 0;
  double work = 0;  // predicted cost of the tokens in it (Scheduler::batchWorkTarget)
};

struct NodeRec {
  std::string id;
  std::string peer;  // routing id
  uint64_t session = 0;
  uint64_t incarnation = 0;
  uint32_t pid = 0;
  control::NodeState state = control::NodeState::kReady;
  bool vacant = false;  // slot freed by reap(), waiting for reuse
  // An undrain was sent and no heartbeat since has said "not draining": heartbeats that still
  // say draining were sent before the node read the undrain (CoordinatorCore::onHeartbeat).
  bool undrain_unconfirmed = false;
  Nanos last_seen = 0;
  Nanos departed_at = 0;
  double speed_factor = 1.0;
  double speed = 1.0;        // observed relative speed: Scheduler::nodeSpeed (1 = fastest)
  std::vector<bool> offers;  // by op index
  std::vector<std::string> op_names;
  struct Lane {
    bool present = false;
    std::vector<uint32_t> cores;
    uint32_t workers = 0;
    uint64_t in_flight = 0;
    double outstanding = 0;
    uint32_t reported_queued = 0, reported_running = 0;
    uint64_t busy_ns = 0;
    Nanos busy_at = 0;
    double utilization = 0;
    prometheus::Gauge* m_in_flight = nullptr;
    prometheus::Gauge* m_util = nullptr;
  } lanes[kLaneCount];
  PendingBatch batch;
  // Token ids sent to this node (in dispatch order), possibly stale: an entry counts only
  // while its token is still running here (the caller re-checks). Compacted as results come.
  std::vector<uint64_t> tokens;
  uint64_t suspect = 0;  // isolated suspect token in flight (0 = none)
  uint64_t completed = 0;
  uint64_t rss = 0;
  prometheus::Gauge* m_rss = nullptr;
  std::unordered_map<uint32_t, prometheus::Gauge*> m_cores;  // by core number

  uint64_t inFlight() const {
    uint64_t n = 0;
    for (const auto& l : lanes) n += l.in_flight;
    return n;
  }
};

class NodeTable {
 public:
  NodeTable(Metrics& metrics, Nanos departed_retention)
      : metrics_(metrics), retention_(departed_retention) {}

  // Slots, vacant ones included (check NodeRec::vacant when iterating).
  size_t size() const { return nodes_.size(); }
  NodeRec& operator[](uint32_t slot) { return nodes_[slot]; }
  const NodeRec& operator[](uint32_t slot) const { return nodes_[slot]; }
  auto begin() { return nodes_.begin(); }
  auto end() { return nodes_.end(); }
  auto begin() const { return nodes_.begin(); }
  auto end() const { return nodes_.end(); }
  // No node has ever registered (records dropped after their retention still count).
  bool neverRegistered() const { return nodes_.empty(); }
  uint32_t slotOf(const NodeRec& n) const { return static_cast<uint32_t>(&n - nodes_.data()); }

  // The registration on `peer` (live or departed and still kept), or null.
  NodeRec* byPeer(const std::string& peer);
  // The newest registration of node `id` (the live one if any), or null.
  NodeRec* byId(const std::string& id);
  // True when `n` is the newest registration of its id (older ones are not listed).
  bool isNewest(const NodeRec& n) const;

  // Registers a node (its lanes already filled in): picks a slot, maps its peer and id and
  // creates its metric series. Returns the slot.
  uint32_t add(NodeRec rec);

  // `token` was sent to `slot` (kept in the node's token index).
  void dispatched(uint32_t slot, uint64_t token) { nodes_[slot].tokens.push_back(token); }
  // Drops stale entries from `slot`'s token index once it has grown past twice the node's
  // in-flight count; `live(id)` says whether a token still runs there.
  template <typename Live>
  void compact(uint32_t slot, Live&& live) {
    NodeRec& n = nodes_[slot];
    if (n.tokens.size() < 2 * n.inFlight() + kCompactSlack) return;
    std::erase_if(n.tokens, [&](uint64_t id) { return !live(id); });
  }
  // Hands over `slot`'s token index (the caller re-checks each entry).
  std::vector<uint64_t> takeTokens(uint32_t slot) { return std::move(nodes_[slot].tokens); }

  // `slot`'s registration ended at `now` (the caller has set its state to kDead).
  void markDeparted(uint32_t slot, Nanos now);
  // Drops the records of nodes departed `departed_retention` ago or earlier. Returns the slots
  // freed (the caller forgets per-slot state such as scheduler speeds).
  std::vector<uint32_t> reap(Nanos now);

 private:
  static constexpr size_t kCompactSlack = 1024;
  void removeSeries(NodeRec& n);

  Metrics& metrics_;
  Nanos retention_;
  std::vector<NodeRec> nodes_;
  std::vector<uint32_t> free_;
  std::unordered_map<std::string, uint32_t> by_peer_;
  std::unordered_map<std::string, uint32_t> by_id_;  // newest registration of each id
  std::deque<std::pair<Nanos, uint32_t>> departed_;  // (when, slot), oldest first
};

}  // namespace tokengate::coordinator
