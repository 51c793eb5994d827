// NodeTable: the coordinator's node registrations, by slot, peer and node id, with each node's
// own index of the tokens it holds. Owned by CoordinatorCore; loop thread only.
//
// How a node moves through it: add() registers it (a slot, its metric series); the core
// records every token it sends there (dispatched()) so losing, draining or evicting the node
// visits that node's tokens only, never every live token. markDeparted() starts its retention:
// a lost node (missed heartbeats, closed connection, evicted) stays listed (as dead) for
// `departed_retention`, then reap() drops the record and its metric series and frees the slot,
// so a flood of node ids cannot grow memory or /metrics without bound. A node that left cleanly
// (bye) is `left`: unlisted and uncounted at once, its record dropped at the next reap(), so a
// rollout leaves no dead nodes behind.
//
// A finished token remembers the slot of the node whose result was accepted (TokenRec::by), so
// that a node convicted of lying later (verify) can have its results in unfinished jobs run
// again. A dropped record must not break that trace: reap() keeps the node id in the vacant
// slot (a tombstone of a few bytes) and holds the slot back from reuse until every job admitted
// before the drop has finished (releaseHeld), when no token can name it any more. Nodes that
// never had a result accepted (`completed == 0`: an id flood) are freed at once as before.
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
  std::string key;   // CURVE public key it said hello with ("" with CURVE off)
  uint64_t session = 0;
  uint64_t incarnation = 0;
  uint32_t pid = 0;
  control::NodeState state = control::NodeState::kReady;
  bool vacant = false;  // slot freed by reap(), waiting for reuse
  bool left = false;    // said bye: not listed or counted, dropped by the next reap()
  // An undrain was sent and no heartbeat since has said "not draining": heartbeats that still
  // say draining were sent before the node read the undrain (CoordinatorCore::onHeartbeat).
  bool undrain_unconfirmed = false;
  bool packed_tokens = false;  // its hello said it reads TokenBatch.packed
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
  uint64_t cpu_ns = 0;  // process CPU time, as last reported
  prometheus::Gauge* m_rss = nullptr;
  prometheus::Gauge* m_cpu = nullptr;
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

  // `slot`'s registration ended at `now` (the caller has set its state to kDead). `clean`: the
  // node said bye; it is marked `left` and dropped by the next reap() whatever the retention.
  void markDeparted(uint32_t slot, Nanos now, bool clean = false);
  // Drops the records of nodes that left cleanly and of nodes departed `departed_retention`
  // ago or earlier. Returns the slots freed (the caller forgets per-slot state such as
  // scheduler speeds).
  // `jobs_admitted`: JobTable::admitted() now; a slot whose node had results accepted is
  // reused only once every job admitted before this call has finished (releaseHeld).
  std::vector<uint32_t> reap(Nanos now, uint64_t jobs_admitted = 0);
  // Frees the held slots whose jobs have all finished: `oldest_running` is
  // JobTable::oldestRunningSeq(). Until then a held slot keeps the node id (tombstone).
  void releaseHeld(uint64_t oldest_running);
  size_t held() const { return held_.size(); }

 private:
  static constexpr size_t kCompactSlack = 1024;
  void removeSeries(NodeRec& n);
  // Drops `slot`'s record (a departed node), its series if it is its id's newest registration;
  // a slot whose node had results accepted is held (tombstone) rather than freed.
  void drop(uint32_t slot, uint64_t jobs_admitted);

  Metrics& metrics_;
  Nanos retention_;
  std::vector<NodeRec> nodes_;
  std::vector<uint32_t> free_;
  // (jobs admitted when reaped, slot): vacant slots whose id tombstone may still be named by a
  // finished token of a running job. Barriers never decrease, so the front is freed first.
  std::deque<std::pair<uint64_t, uint32_t>> held_;
  std::unordered_map<std::string, uint32_t> by_peer_;
  std::unordered_map<std::string, uint32_t> by_id_;  // newest registration of each id
  std::deque<std::pair<Nanos, uint32_t>> departed_;  // (when, slot), oldest first
  std::vector<uint32_t> left_;                       // clean departures since the last reap
};

}  // namespace tokengate::coordinator
