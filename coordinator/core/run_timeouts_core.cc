// CoordinatorCore's run timeouts (start-to-close per token attempt) and the quarantine of nodes
// that withhold results. The bookkeeping lives in RunTimeouts (run_timeouts.h); this file holds
// the core's side of it: which timeout applies, what happens when one fires.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <unordered_map>

#include "coordinator/core/coordinator.h"

namespace tokengate::coordinator {

using control::NodeState;

Nanos CoordinatorCore::runTimeoutFor(const Job& job, const TokenRec& t) const {
  const SpecRec& s = job.specs[t.spec];
  if (s.spec.run_timeout_ms) return Nanos{s.spec.run_timeout_ms} * kMillis;
  const uint32_t op_ms = ops_[s.op].limits.run_timeout_ms;
  return op_ms ? Nanos{op_ms} * kMillis : config_.run_timeout_ns;
}

void CoordinatorCore::expireRunTimeouts(Nanos now) {
  std::unordered_map<uint32_t, std::vector<uint64_t>> cancels;  // by node slot
  Job* job = nullptr;
  runs_.expire(now, [&](const RunTimeouts::Entry& e) {
    if (!job || job->id != (e.token >> 32)) job = findJob(e.token >> 32);
    if (!job) return;
    const auto local = static_cast<uint32_t>(e.token);
    TokenRec& t = job->tokens[local];
    if (t.state != kRunning || t.node != e.slot || t.attempt != e.attempt) return;  // closed
    NodeRec& n = nodes_[e.slot];
    const Nanos limit = runTimeoutFor(*job, t);
    ++counters_.run_timeouts;
    metrics_.run_timeouts.Increment();
    cancels[e.slot].push_back(e.token);  // the node may still be working on it: stop it
    // The attempt counts against the token's budget, so a token that hangs everywhere fails
    // instead of wandering from node to node.
    if (t.errors + 1 < job->specs[t.spec].max_attempts) {
      retryToken(*job, local, true);
    } else {
      failToken(*job, local,
                absl::DeadlineExceededError(
                    fmt::format("run timeout of {} ms exceeded (attempt {} on node {})",
                                limit / kMillis, t.attempt, n.id)),
                false);
    }
    if (n.state != NodeState::kDead && n.state != NodeState::kQuarantined &&
        runs_.strike(n.id, now)) {
      const std::string why =
          fmt::format("{} run timeouts (last: {} ms)", runs_.strikes(n.id, now), limit / kMillis);
      convict(n.id, n.key, why, QuarantineNote::kRunTimeouts);
      quarantineNode(e.slot, why);
    }
  });
  for (auto& [slot, ids] : cancels) sendControlCancel(slot, ids);
  const Job* cached = nullptr;
  runs_.compact([&](const RunTimeouts::Entry& e) {
    if (!cached || cached->id != (e.token >> 32)) cached = findJob(e.token >> 32);
    if (!cached) return false;
    const TokenRec& t = cached->tokens[static_cast<uint32_t>(e.token)];
    return t.state == kRunning && t.node == e.slot && t.attempt == e.attempt;
  });
}

void CoordinatorCore::quarantineNode(uint32_t slot, const std::string& why) {
  NodeRec& n = nodes_[slot];
  n.state = NodeState::kQuarantined;
  ++counters_.nodes_quarantined;
  dispatcher_.requeueUnsent(slot);
  // Its other running tokens would time out one by one: they go elsewhere now.
  std::vector<uint64_t> ids;
  Job* job = nullptr;
  for (uint64_t id : n.tokens) {
    if (!job || job->id != (id >> 32)) job = findJob(id >> 32);
    if (!job) continue;
    const auto local = static_cast<uint32_t>(id);
    TokenRec& t = job->tokens[local];
    if (t.state != kRunning || t.node != slot) continue;
    releaseFromNode(*job, t);
    makeReady(*job, local);
    ids.push_back(id);
    ++counters_.requeued;
  }
  n.tokens.clear();
  sendControlCancel(slot, ids);
  spdlog::warn(
      "node {} quarantined ({}): no new work until `tgctl node undrain {}`; {} running tokens "
      "re-queued",
      n.id, why, n.id, ids.size());
  emit(control::NodeEvent{control::NodeEvent::Change::kQuarantined, n.id, why, ids.size(), 0});
  updateNodeGauges();
}

}  // namespace tokengate::coordinator

namespace tokengate::coordinator {

bool CoordinatorCore::convict(const std::string& node_id, const std::string& key,
                              const std::string& why, QuarantineNote::Cause cause) {
  const QuarantineNote note = QuarantineNote::convicted(node_id, key, why, cause);
  std::vector<std::string> forgotten;
  const bool first = convictions_.convict(note, &forgotten);
  for (const std::string& id : forgotten)
    spdlog::error("node {}: conviction forgotten (more than the bound of convicted node ids)", id);
  // The journal stamps the wall time; a restarted coordinator restores it (restoreQuarantine).
  if (journal_) journal_->quarantine(note);
  return first;
}

void CoordinatorCore::restoreQuarantine(const QuarantineNote& note) {
  if (note.lifted || note.node_id.empty()) return;
  convictions_.convict(note);
  spdlog::warn("journal: node {} stays quarantined ({}{}); `tgctl node undrain {}` lifts it",
               note.node_id, note.reason, note.key.empty() ? "" : ", key " + note.key,
               note.node_id);
}

}  // namespace tokengate::coordinator
