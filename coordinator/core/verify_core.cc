// CoordinatorCore's verified execution (`verify: N%`): the votes of sampled tokens go to the
// Verifier (verifier.h); this file applies its outcomes. A node whose result is outvoted is
// convicted: quarantined like a node that withholds results (no new work, listed, lifted by
// undrain), and every unverified result it produced in unfinished jobs is run again elsewhere,
// together with the finished tokens downstream that consumed them (JobTable::reopen), so the
// jobs' results are exact.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <unordered_map>

#include "coordinator/core/coordinator.h"

namespace tokengate::coordinator {

using control::NodeState;

uint32_t CoordinatorCore::verifyBasisPointsFor(const Job& job, const SpecRec& s) const {
  const OpState& op = ops_[s.op];
  if (!op.deterministic) return 0;  // results may differ honestly: never sampled
  return std::max(job.verify_bp, op.verify_bp);
}

void CoordinatorCore::onVerifiedResult(Job& job, uint32_t local, uint32_t slot, Value value) {
  const uint64_t id = tokenId(job.id, local);
  auto outcome = verifier_.vote(id, {nodes_[slot].id, slot, std::move(value)});
  releaseFromNode(job, job.tokens[local]);  // not finished until the votes decide
  applyVerifyOutcome(job, local, std::move(outcome));
}

void CoordinatorCore::applyVerifyOutcome(Job& job, uint32_t local, Verifier::Outcome o) {
  TokenRec& t = job.tokens[local];
  switch (o.kind) {
    case Verifier::Outcome::kRerun:
      dispatcher_.readyVerify(job, local);
      break;
    case Verifier::Outcome::kAccept: {
      if (o.mismatch) ++job.mismatched;
      // Convict first: the liar's other results in this job must be reopened before this token
      // can be the one that finishes the job.
      for (const std::string& liar : o.liars)
        convictNode(liar, fmt::format("its result for token {} of job {} differs from {} other "
                                      "nodes' (verify)",
                                      local, job.id, o.voters.size()));
      if (t.state == kWaiting) break;  // its own inputs were the liar's: it runs again
      if (o.verified)
        ++job.verified;
      else
        ++job.unverifiable;
      t.by = (o.voters.empty() ? TokenRec::kNoBy : o.voters.front()) |
             (o.verified ? TokenRec::kVerifiedBit : 0);
      completeToken(job, local, o.value);
      break;
    }
    case Verifier::Outcome::kFail:
      ++job.mismatched;
      if (job.mismatched <= 3 || (job.mismatched & (job.mismatched - 1)) == 0)  // rate-limited
        spdlog::error("job {} token {}: {} ({} so far in this job)", job.id, local,
                      o.error.message(), job.mismatched);
      failToken(job, local, o.error, false);
      break;
  }
  syncVerifyMetrics();
}

void CoordinatorCore::convictNode(const std::string& node_id, const std::string& why) {
  // Survives reconnects, record reaping and (journalled) restarts; lifted by undrain.
  NodeRec* known = nodes_.byId(node_id);
  const bool first =
      convict(node_id, known ? known->key : std::string(), why, QuarantineNote::kVerify);
  if (first) ++counters_.verify_quarantines;
  if (NodeRec* n = known; n && n->state != NodeState::kDead && n->state != NodeState::kQuarantined)
    quarantineNode(nodes_.slotOf(*n), why);
  else if (first)
    spdlog::warn("node {} quarantined ({})", node_id, why);
  verifier_.forgetNode(node_id);  // its votes on open tokens no longer count
  const uint64_t reopened = reopenNodeWork(node_id);
  if (reopened)
    spdlog::warn(
        "node {}: {} finished tokens of running jobs run again (its unverified results "
        "and what they fed)",
        node_id, reopened);
}

uint64_t CoordinatorCore::reopenNodeWork(const std::string& node_id) {
  uint64_t total = 0;
  std::unordered_map<uint32_t, std::vector<uint64_t>> cancels;  // by node slot
  jobs_.forEachRunning([&](Job& job) {
    std::vector<uint32_t> seeds;
    for (uint32_t i = 0; i < job.tokens.size(); ++i) {
      const TokenRec& t = job.tokens[i];
      if (t.state != kDone || t.verified() || t.bySlot() >= nodes_.size()) continue;
      if (nodes_[t.bySlot()].id == node_id) seeds.push_back(i);
    }
    if (seeds.empty()) return;
    const uint64_t n = jobs_.reopen(
        job, seeds,
        [&](uint32_t dep) {  // holds or was sent a wrong input: off its node, its votes void
          TokenRec& dt = job.tokens[dep];
          const uint64_t id = tokenId(job.id, dep);
          if (dt.state == kRunning) {
            if (dt.node != kNoNode) cancels[dt.node].push_back(id);
            releaseFromNode(job, dt);
          }
          verifier_.drop(id);
        },
        [&](uint32_t x) { makeReady(job, x); });
    total += n;
  });
  for (auto& [slot, ids] : cancels) sendControlCancel(slot, ids);
  counters_.reopened += total;
  metrics_.tokens_reopened.Increment(static_cast<double>(total));
  metrics_.live_tokens.Set(static_cast<double>(jobs_.liveTokens()));
  return total;
}

void CoordinatorCore::expireVerifications(Nanos now) {
  std::vector<std::pair<uint64_t, Verifier::Outcome>> due;
  verifier_.expired(now,
                    [&](uint64_t id, Verifier::Outcome o) { due.emplace_back(id, std::move(o)); });
  std::unordered_map<uint64_t, uint64_t> unverified;  // by job: one log line per job and tick
  for (auto& [id, o] : due) {
    Job* job = findJob(id >> 32);
    if (!job) continue;
    const auto local = static_cast<uint32_t>(id);
    if (job->tokens[local].state != kReady) continue;  // placed or closed meanwhile
    if (o.kind == Verifier::Outcome::kAccept) ++unverified[job->id];
    applyVerifyOutcome(*job, local, std::move(o));
  }
  for (const auto& [job_id, n] : unverified)
    spdlog::warn(
        "job {}: {} sampled tokens accepted unverified, no node other than the one that "
        "ran them within {} ms",
        job_id, n, verifier_.wait() / kMillis);
}

void CoordinatorCore::syncVerifyMetrics() {
  if (!m_verify_[0]) {
    static constexpr const char* kOutcomes[] = {"rerun", "matched", "mismatched", "unverifiable",
                                                "failed"};
    for (int i = 0; i < 5; ++i)
      m_verify_[i] = &metrics_.verifications.Add({{"outcome", kOutcomes[i]}});
  }
  const auto& c = verifier_.counters();
  const uint64_t now[5] = {c.reruns, c.matched, c.mismatched, c.unverifiable, c.failed};
  const uint64_t was[5] = {verify_synced_.reruns, verify_synced_.matched, verify_synced_.mismatched,
                           verify_synced_.unverifiable, verify_synced_.failed};
  for (int i = 0; i < 5; ++i)
    if (now[i] > was[i]) m_verify_[i]->Increment(static_cast<double>(now[i] - was[i]));
  verify_synced_ = c;
}

}  // namespace tokengate::coordinator
