// Resume, don't re-run (docs/journal.md): the core's side of token checkpoints. Finished results
// of fan-in tokens (SpecRec::checkpoint) are gathered per job as they complete and handed to the
// journal once per group commit (flushCheckpoints); a restarted coordinator re-admits a job with
// the results it had checkpointed (applyCheckpoint) and runs only the tokens still needed.
// Loop thread only, like the rest of CoordinatorCore.
#include <vector>

#include "coordinator/core/coordinator.h"

namespace tokengate::coordinator {

void CoordinatorCore::flushCheckpoints() {
  if (checkpoints_.empty()) return;
  for (auto& [id, results] : checkpoints_) {
    const Job* job = findJob(id);
    // A job that finished meanwhile has its outcome journalled: nothing left to resume.
    if (!job || job->state != control::JobState::kRunning || results.empty()) continue;
    journal_->checkpoint(id, job->incarnation, results);
  }
  checkpoints_.clear();
}

uint64_t CoordinatorCore::applyCheckpoint(Job& job, const Checkpoint& checkpoint) {
  const auto n = static_cast<uint32_t>(job.tokens.size());
  std::vector<const Value*> have(n, nullptr);
  for (const auto& [local, value] : checkpoint)
    if (local < n) have[local] = &value;
  // A token must run if it is not checkpointed and it is a sink (its result or effect is what
  // the job is for) or a token that must run depends on it. Refs name earlier tokens only
  // (JobSpec::validate), so one pass from the last token back decides every token.
  std::vector<bool> run(n, false);
  for (uint32_t i = n; i-- > 0;) {
    if (have[i]) continue;
    const uint32_t from = job.dep_offset[i], to = job.dep_offset[i + 1];
    bool needed = from == to;
    for (uint32_t d = from; d < to && !needed; ++d) needed = run[job.deps[d]];
    run[i] = needed;
  }
  // Dependency counts as if the tokens that do not run had finished: a token that runs waits
  // only for inputs that run too, and an input's result is kept for the dependents that run.
  for (uint32_t i = 0; i < n; ++i) {
    job.tokens[i].pending = 0;
    job.tokens[i].consumers = 0;
  }
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t d = job.dep_offset[i]; d < job.dep_offset[i + 1]; ++d) {
      TokenRec& dep = job.tokens[job.deps[d]];
      if (run[i])
        ++dep.pending;  // also on a dependent that does not run: completeToken counts it down
      if (run[job.deps[d]]) ++job.tokens[i].consumers;
    }
  }
  uint64_t marked = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (run[i]) continue;
    TokenRec& t = job.tokens[i];
    t.state = kDone;
    ++job.done;
    ++marked;
    if (have[i] && (t.consumers > 0 || job.specs[t.spec].keep_result || JobTable::isOutput(job, i)))
      JobTable::setResult(job, t, *have[i]);
  }
  jobs_.resumedDone(marked);
  counters_.resumed_done += marked;
  return marked;
}

}  // namespace tokengate::coordinator
