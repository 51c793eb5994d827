#include "coordinator/core/coordinator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "common/names.h"
#include "coordinator/control/status_wire.h"

namespace tokengate::coordinator {

using control::JobState;
using control::NodeState;

namespace {

constexpr Nanos kGaugeInterval = 100 * kMillis;

LeastOutstandingOptions leastOutstandingOptions(const CoordinatorConfig& c) {
  LeastOutstandingOptions o;
  if (c.placement_horizon_ms >= 0) o.horizon_ns = c.placement_horizon_ms * 1e6;
  return o;
}

}  // namespace

CoordinatorCore::CoordinatorCore(CoordinatorConfig config, Clock& clock, Outbox& outbox,
                                 std::shared_ptr<prometheus::Registry> registry)
    : config_(std::move(config)),
      clock_(clock),
      outbox_(outbox),
      metrics_(std::move(registry)),
      scheduler_(makeScheduler(config_.scheduler, leastOutstandingOptions(config_))) {
  held_acks_ = HeldAcks(config_.max_held_acks);
  // Job ids are the high 32 bits of token ids.
  next_job_ = std::clamp<uint64_t>(config_.first_job_id, 1, 0xffff'ffffu);
  if (config_.incarnation == 0) {
    std::random_device rd;
    config_.incarnation = (uint64_t{rd()} << 32 | rd()) | 1;
  }
  if (config_.verify_seed == 0) {
    std::random_device rd;
    config_.verify_seed = (uint64_t{rd()} << 32 | rd()) | 1;
  }
  if (!scheduler_) {
    spdlog::warn("unknown scheduler '{}', using least-outstanding", config_.scheduler);
    scheduler_ = makeLeastOutstandingScheduler(leastOutstandingOptions(config_));
  }
  dispatcher_.setScheduler(*scheduler_);
  dispatcher_.setStartedHook([this](const Job& job, uint32_t local, uint32_t slot, Nanos now) {
    const TokenRec& t = job.tokens[local];
    runs_.started(tokenId(job.id, local), t.attempt, slot, now, runTimeoutFor(job, t));
    if (!verifier_.empty()) verifier_.unpark(tokenId(job.id, local));
  });
  dispatcher_.setVerifyHooks(
      [this](uint64_t id, const NodeRec& n) { return !verifier_.ranOn(id, n.id); },
      [this](uint64_t id) { verifier_.park(id, clock_.now()); });
  for (int s = 0; s < control::kNodeStateCount; ++s)
    m_nodes_[s] =
        &metrics_.nodes.Add({{"state", control::nodeStateName(static_cast<NodeState>(s))}});
  for (int s = 0; s < 4; ++s)
    m_jobs_[s] = &metrics_.jobs.Add({{"state", control::jobStateName(static_cast<JobState>(s))}});
  last_tick_ = last_event_ = last_rate_ = clock_.now();
}

CoordinatorCore::~CoordinatorCore() = default;

void CoordinatorCore::setScheduler(std::unique_ptr<Scheduler> scheduler) {
  scheduler_ = std::move(scheduler);
  dispatcher_.setScheduler(*scheduler_);  // the started hook set by the constructor stays
}

// ---------------------------------------------------------------- ops

uint32_t CoordinatorCore::opIndex(const std::string& name) {
  const uint32_t idx = ops_.intern(name);
  if (idx + 1 == ops_.size())
    for (auto& n : nodes_) n.offers.resize(ops_.size(), false);
  return idx;
}

void CoordinatorCore::setEffectiveLane(uint32_t op, Weight lane) {
  if (op < ops_.size() && lane != Weight::kUnspecified) ops_[op].effective = lane;
}

// ---------------------------------------------------------------- admission

Status CoordinatorCore::checkAdmission(const JobSpec& spec, uint64_t count) {
  if (auto st = spec.validate(config_.max_job_tokens, config_.max_frame_bytes); !st.ok()) return st;
  if (auto st = checkOpsKnown(spec); !st.ok()) return st;
  if (jobs_.liveTokens() + held_tokens_ + count > config_.max_live_tokens) {
    ++counters_.rejects;
    metrics_.admission_rejects.Increment();
    return absl::ResourceExhaustedError(fmt::format(
        "admission limit reached: {} tokens live + {} requested > limit {}; retry later",
        jobs_.liveTokens() + held_tokens_, count, config_.max_live_tokens));
  }
  return absl::OkStatus();
}

uint64_t CoordinatorCore::allocateJobId() {
  const uint64_t id = next_job_++;
  // Past the last epoch: wrap to epoch 1 (journal.h).
  if (next_job_ > 0xffff'ffffu) next_job_ = firstIdOf(1);
  if ((id & kSequenceMask) == 0 && journal_) journal_->epochStarted(epochOf(id));
  return id;
}

namespace {
Status notJournalled(const Status& st) {
  return absl::UnavailableError(
      fmt::format("job not admitted: the journal could not record it: {}", st.message()));
}
}  // namespace

StatusOr<uint64_t> CoordinatorCore::submitJob(JobSpec spec, const std::string& watcher,
                                              uint64_t request_id) {
  const uint64_t count = spec.tokenCount();
  if (auto st = checkAdmission(spec, count); !st.ok()) return st;
  if (!journal_) return admitJob(allocateJobId(), std::move(spec), watcher, count, incarnation());
  StatusOr<uint64_t> result = absl::UnknownError("not committed");
  submitJobAsync(std::move(spec), watcher, request_id,
                 [&result](StatusOr<uint64_t> r) { result = std::move(r); });
  commitJournal();
  return result;
}

void CoordinatorCore::submitJobAsync(JobSpec spec, const std::string& watcher, uint64_t request_id,
                                     SubmitDone done) {
  const uint64_t count = spec.tokenCount();
  if (auto st = checkAdmission(spec, count); !st.ok()) return done(st);
  if (!journal_)
    return done(admitJob(allocateJobId(), std::move(spec), watcher, count, incarnation()));
  // Durable before anyone is told the job exists, and before it runs.
  const uint64_t id = allocateJobId();
  if (Status st = journal_->admitted(id, incarnation(), spec); !st.ok())
    return done(notJournalled(st));
  held_tokens_ += count;
  held_.push_back({id, std::move(spec), watcher, count, std::move(done)});
}

void CoordinatorCore::commitJournal() {
  if (!journal_) return;
  flushCheckpoints();
  const Status st = journal_->commit();
  keys_unwritten_ = false;
  // Written (or failed, and logged below: the outcome stands, a restart may run it again).
  for (auto& [peer, frame] : held_done_) outbox_.send(peer, std::move(frame));
  held_done_.clear();
  if (held_.empty()) {
    if (!st.ok()) spdlog::error("journal: {}", st.message());
    return;
  }
  auto held = std::move(held_);
  held_.clear();
  held_tokens_ = 0;
  bool refusals = false;
  for (auto& h : held) {
    // A refused job's record may be on disk: mark it refused, so a restart does not resume a
    // job its client was told failed.
    auto refuse = [&](const Status& why) {
      control::JobStatus refused;
      refused.id = h.id;
      refused.incarnation = incarnation();
      refused.name = h.spec.name;
      refused.state = JobState::kFailed;
      refused.total = h.count;
      journal_->finished(refused);
      refusals = true;
      h.done(why);
    };
    if (!st.ok()) {
      refuse(notJournalled(st));
      continue;
    }
    const std::string name = h.spec.name;  // refuse() needs it after the move
    auto id = admitJob(h.id, std::move(h.spec), h.watcher, h.count, incarnation());
    h.spec.name = name;
    if (!id.ok()) {
      refuse(id.status());
      continue;
    }
    h.done(std::move(id));
  }
  if (refusals) (void)journal_->commit();
}

Status CoordinatorCore::checkOpsKnown(const JobSpec& spec) const {
  // Before any node has registered nothing is known yet: the job waits for nodes.
  if (!config_.reject_unknown_ops || nodes_.neverRegistered()) return absl::OkStatus();
  for (const TokenSpec& ts : spec.tokens) {
    if (const uint32_t* op = ops_.find(ts.op); op && ops_[*op].weight_known) continue;
    const std::vector<std::string> offered = ops_.offered();
    return absl::NotFoundError(fmt::format(
        "unknown operation '{}': no node has offered it (offered: {}); start a node that "
        "registers it, or run the coordinator with --allow-unknown-ops to let such jobs wait",
        ts.op, offered.empty() ? "none" : fmt::format("{}", fmt::join(offered, ", "))));
  }
  return absl::OkStatus();
}

Status CoordinatorCore::restoreJob(uint64_t job_id, JobSpec spec, uint64_t incarnation,
                                   const Checkpoint* checkpoint) {
  if (auto st = spec.validate(config_.max_job_tokens, config_.max_frame_bytes); !st.ok()) return st;
  if (findJob(job_id)) return absl::AlreadyExistsError(fmt::format("job {} exists", job_id));
  // New ids come after restored ones of the same epoch (the app starts a new epoch anyway).
  if (epochOf(job_id) == epochOf(next_job_)) next_job_ = std::max(next_job_, job_id + 1);
  const uint64_t count = spec.tokenCount();
  auto id = admitJob(job_id, std::move(spec), {}, count, incarnation, checkpoint);
  return id.ok() ? absl::OkStatus() : id.status();
}

void CoordinatorCore::restoreFinished(control::JobStatus status) {
  if (epochOf(status.id) == epochOf(next_job_)) next_job_ = std::max(next_job_, status.id + 1);
  jobs_.remember(std::move(status));
}

void CoordinatorCore::restoreKey(const std::string& key, uint64_t token_id, Value value) {
  keys_.restore(key, token_id, std::move(value));
}

namespace {
// The key a token claims: with repeat > 1, instance i of a spec uses "<key>#<i>".
std::string claimedKey(const SpecRec& s, uint32_t local) {
  return s.spec.repeat > 1 ? fmt::format("{}#{}", s.spec.idempotency_key, local - s.first)
                           : s.spec.idempotency_key;
}
}  // namespace

StatusOr<uint64_t> CoordinatorCore::admitJob(uint64_t job_id, JobSpec spec,
                                             const std::string& watcher, uint64_t count,
                                             uint64_t incarnation, const Checkpoint* resume) {
  Job& ref = jobs_.add(job_id, incarnation, spec.name, clock_.now());
  if (auto st = buildJob(ref, std::move(spec), resume); !st.ok()) {
    jobs_.remove(ref.id);
    return st;
  }
  if (!watcher.empty()) jobs_.watch(ref, watcher);
  counters_.admitted += count;
  metrics_.live_tokens.Set(static_cast<double>(jobs_.liveTokens()));
  const uint64_t id = ref.id;
  resolveAliases();
  maybeFinishJob(ref);
  dispatch();
  return id;
}

Status CoordinatorCore::buildJob(Job& job, JobSpec spec, const Checkpoint* resume) {
  job.verify_bp = verifyBasisPoints(spec.verify_pct);
  jobs_.build(job, std::move(spec), [&](SpecRec& s) {
    s.op = opIndex(s.spec.op);
    const OpState& op = ops_[s.op];
    s.explicit_weight = s.spec.weight != Weight::kUnspecified;
    s.weight = s.explicit_weight ? s.spec.weight : op.weight;
    s.max_attempts = s.spec.max_attempts ? s.spec.max_attempts : config_.default_max_attempts;
  });
  if (config_.checkpoint_min_inputs > 0) {
    for (SpecRec& s : job.specs)
      s.checkpoint = s.spec.repeat > 0 && s.spec.idempotency_key.empty() &&
                     job.tokens[s.first].pending >= config_.checkpoint_min_inputs;
  }
  if (resume) applyCheckpoint(job, *resume);
  // Admission metrics, deadlines, idempotency keys, initial readiness.
  for (const SpecRec& s : job.specs) {
    OpState& op = ops_[s.op];
    op.m_admitted[static_cast<int>(s.weight) % kLaneCount]->Increment(s.spec.repeat);
    for (uint32_t r = 0; r < s.spec.repeat; ++r) {
      const uint32_t i = s.first + r;
      TokenRec& t = job.tokens[i];
      if (t.state == kDone) continue;  // resumed from a checkpoint
      const uint64_t id = tokenId(job.id, i);
      if (s.spec.deadline_ms)
        deadlines_.emplace(job.admitted_at + s.spec.deadline_ms * kMillis, id);
      if (!s.spec.idempotency_key.empty()) {
        if (!keys_.claim(claimedKey(s, i), id)) {
          t.state = kAlias;  // runs when (or as) its original finishes
          continue;
        }
      }
      if (t.pending == 0) makeReady(job, i);
    }
  }
  return absl::OkStatus();
}

// Aliases admitted against keys whose original already finished complete at once.
void CoordinatorCore::resolveAliases() {
  for (const auto& settled : keys_.takeSettled())
    settleAliases(settled.aliases, settled.status, settled.value);
}

void CoordinatorCore::settleAliases(const std::vector<uint64_t>& aliases, const Status& status,
                                    const Value& value) {
  for (uint64_t id : aliases) {
    Job* j = findJob(id >> 32);
    const auto local = static_cast<uint32_t>(id);
    if (!j || j->tokens[local].state != kAlias) continue;
    if (status.ok())
      completeToken(*j, local, value);
    else
      failToken(*j, local, status, status.code() == StatusCode::kCancelled);
  }
}

void CoordinatorCore::makeReady(Job& job, uint32_t local) {
  // A sampled token between its votes runs again only where it has not run (verifier.h).
  if (!verifier_.empty() && verifier_.isOpen(tokenId(job.id, local))) {
    dispatcher_.readyVerify(job, local);
    return;
  }
  dispatcher_.ready(job, local);
}

// ---------------------------------------------------------------- results

void CoordinatorCore::releaseFromNode(Job& job, TokenRec& t) { dispatcher_.release(job, t); }

void CoordinatorCore::completeToken(Job& job, uint32_t local, const Value& v, uint64_t run_ns) {
  TokenRec& t = job.tokens[local];
  releaseFromNode(job, t);
  const SpecRec& s = job.specs[t.spec];
  const bool original = t.state != kAlias;  // an alias completes with its original's value
  // Fan-in tokens are checkpointed (resume.cc); so is a long run whose result is still needed,
  // so that losing it to a crash does not cost its run time again. Keyed tokens have their
  // key record instead.
  const bool checkpoint =
      s.checkpoint || (config_.checkpoint_min_run_ms > 0 &&
                       run_ns >= uint64_t{config_.checkpoint_min_run_ms} * 1'000'000 &&
                       s.spec.idempotency_key.empty() &&
                       (t.consumers > 0 || s.keep_result || JobTable::isOutput(job, local)));
  JobTable::completed(job, local, v);
  if (checkpoint && journal_) checkpoints_[job.id].emplace_back(local, v);
  streamOutput(job, local, absl::OkStatus(), v);
  ++counters_.completed;
  OpState& op = ops_[s.op];
  ++op.completed;
  op.m_completed[t.lane % kLaneCount]->Increment();
  if (!s.spec.idempotency_key.empty()) {
    // Journalled before any client can see the value (the commit at the end of this burst
    // writes it before replies go out), so a restart answers the key the same way.
    if (original && journal_) {
      journal_->keyFinished(claimedKey(s, local), tokenId(job.id, local), job.incarnation, v);
      keys_unwritten_ = true;
    }
    settleAliases(keys_.finished(tokenId(job.id, local), v), absl::OkStatus(), v);
  }
  JobTable::wake(job, local, [&](uint32_t dep) { makeReady(job, dep); });
  finishToken(job, local);
}

void CoordinatorCore::finishToken(Job& job, uint32_t local) {
  jobs_.retired(job, local);
  maybeFinishJob(job);
}

void CoordinatorCore::failToken(Job& job, uint32_t root, const Status& cause, bool cancelled) {
  std::vector<std::pair<uint32_t, Status>> stack{{root, cause}};
  bool root_cancel = cancelled;
  while (!stack.empty()) {
    auto [local, why] = std::move(stack.back());
    stack.pop_back();
    TokenRec& t = job.tokens[local];
    if (t.state == kDone || t.state == kFailed || t.state == kCancelled) continue;
    if (t.state == kRunning) {
      if (root_cancel && t.node != kNoNode) sendControlCancel(t.node, {tokenId(job.id, local)});
      releaseFromNode(job, t);
    }
    const bool is_cancel = root_cancel && local == root;
    t.state = is_cancel || why.code() == StatusCode::kCancelled ? kCancelled : kFailed;
    // Causes are kept for outputs (reported in JobDone) and the job's first failure;
    // storing a Status per token would make cancelling a 1M-token job slow and big.
    if (JobTable::isOutput(job, local)) job.errors[local] = why;
    if (job.first_error.ok()) job.first_error = why;
    streamOutput(job, local, why, Value());
    OpState& op = ops_[job.specs[t.spec].op];
    if (t.state == kCancelled) {
      ++job.cancelled;
      ++counters_.cancelled;
      ++op.cancelled;
    } else {
      ++job.failed;
      ++counters_.failed;
      ++op.failed;
      ++op.failed_since_event;
      op.last_error = std::string(why.message());
      job.any_failed = true;
    }
    ops_.failedCounter(op, job.specs[t.spec].weight, why.code()).Increment();
    const uint64_t id = tokenId(job.id, local);
    if (!job.specs[t.spec].spec.idempotency_key.empty()) {
      // A failed original does not poison its key: the next submission may run it again.
      for (uint64_t a : keys_.failed(id)) {
        Job* aj = findJob(a >> 32);
        if (aj && aj->tokens[static_cast<uint32_t>(a)].state == kAlias) {
          if (aj == &job)
            stack.emplace_back(static_cast<uint32_t>(a), why);  // same job: no recursion
          else
            failToken(*aj, static_cast<uint32_t>(a), why, false);
        }
      }
    }
    if (job.dep_offset[local] != job.dep_offset[local + 1]) {
      // Cancellation passes through unchanged (no per-token formatting on a big cancel).
      const Status dep_cause =
          why.code() == StatusCode::kCancelled
              ? why
              : Status(StatusCode::kFailedPrecondition,
                       fmt::format("input token {} failed: {}", id, why.message()));
      for (uint32_t d = job.dep_offset[local]; d < job.dep_offset[local + 1]; ++d)
        stack.emplace_back(job.deps[d], dep_cause);
    }
    finishToken(job, local);
    root_cancel = false;
  }
}

void CoordinatorCore::retryToken(Job& job, uint32_t local, bool count_error) {
  TokenRec& t = job.tokens[local];
  releaseFromNode(job, t);
  if (count_error) ++t.errors;
  ++counters_.retried;
  OpState& op = ops_[job.specs[t.spec].op];
  ++op.retried;
  op.m_retried[t.lane % kLaneCount]->Increment();
  const Nanos backoff =
      std::min<Nanos>(kSeconds, config_.retry_backoff_ns << std::min<int>(t.errors, 10));
  t.state = kDelayed;
  delayed_.emplace(clock_.now() + (count_error ? backoff : 0), tokenId(job.id, local));
}

void CoordinatorCore::maybeFinishJob(Job& job) {
  // Its token arrays are freed by the next tick's reap. Checked before reading the clock: this
  // runs for every finished token.
  if (job.state != JobState::kRunning || job.finishedTokens() < job.tokens.size()) return;
  if (!jobs_.finishIfDone(job, clock_.now())) return;
  if (!verifier_.empty()) verifier_.dropJob(job.id);
  m_jobs_[static_cast<int>(job.state)]->Increment();
  metrics_.job_seconds.Add({{"state", control::jobStateName(job.state)}}, Metrics::jobBuckets())
      .Observe(static_cast<double>(job.finished_at - job.admitted_at) / 1e9);
  auto status = jobs_.statusOf(job, true, clock_.now());
  if (journal_) journal_->finished(status);  // before anyone can act on the outcome
  // A held ack (ackWithResult) rides on its submitter's JobDone.
  std::optional<HeldAcks::Ack> ack = held_acks_.take(job.id);
  for (const auto& w : job.watchers)
    sendJobDone(w, status, ack && ack->peer == w ? ack->request_id : 0);
  emit(control::JobEvent{job.id, job.name, job.state, job.tokens.size(), job.done, job.failed,
                         job.cancelled, job.running, job.finished_at - job.admitted_at});
  jobs_.remember(std::move(status));
  job.watchers.clear();
}

// ---------------------------------------------------------------- status

void CoordinatorCore::streamOutput(Job& job, uint32_t local, Status status, const Value& value) {
  if (job.watchers.empty() || !JobTable::isOutput(job, local)) return;
  control::OutputResult o;
  o.index = local;
  o.name = JobTable::outputName(job, local);
  o.status = std::move(status);
  if (o.status.ok()) o.value = value;
  job.streamed.push_back(std::move(o));
}

StatusOr<control::JobStatus> CoordinatorCore::jobStatus(uint64_t job_id, bool with_outputs) const {
  return jobs_.status(job_id, with_outputs, clock_.now());
}

std::vector<control::JobStatus> CoordinatorCore::listJobs() const {
  return jobs_.list(clock_.now());
}

StatusOr<uint64_t> CoordinatorCore::cancelJob(uint64_t job_id) {
  Job* j = findJob(job_id);
  if (!j || j->state != JobState::kRunning) {
    if (jobStatus(job_id, false).ok()) return uint64_t{0};
    return absl::NotFoundError(fmt::format("no job {}", job_id));
  }
  // Counted as the job's cancelled tokens before and after: failing a token
  // also cancels its dependents, which the loop then skips.
  const uint64_t cancelled_before = j->cancelled;
  std::unordered_map<uint32_t, std::vector<uint64_t>> running;
  for (uint32_t i = 0; i < j->tokens.size() && j->state == JobState::kRunning; ++i) {
    TokenRec& t = j->tokens[i];
    if (t.state == kDone || t.state == kFailed || t.state == kCancelled) continue;
    if (t.state == kRunning && t.node != kNoNode) running[t.node].push_back(tokenId(j->id, i));
    failToken(*j, i, absl::CancelledError("job cancelled"), false);
  }
  for (auto& [slot, ids] : running) sendControlCancel(slot, ids);
  return j->cancelled - cancelled_before;
}

StatusOr<bool> CoordinatorCore::cancelToken(uint64_t token_id) {
  Job* j = findJob(token_id >> 32);
  const auto local = static_cast<uint32_t>(token_id);
  if (!j || local >= j->tokens.size())
    return absl::NotFoundError(fmt::format("no live token {}", token_id));
  TokenRec& t = j->tokens[local];
  if (t.state == kDone || t.state == kFailed || t.state == kCancelled) return false;
  failToken(*j, local, absl::CancelledError("token cancelled"), true);
  return true;
}

// ---------------------------------------------------------------- op control

std::vector<control::OpStatus> CoordinatorCore::listOps() const { return ops_.list(); }

StatusOr<control::OpStatus> CoordinatorCore::pauseOp(const std::string& name, bool paused) {
  const uint32_t* it = ops_.find(name);
  if (!it) return absl::NotFoundError(fmt::format("unknown operation '{}'", name));
  OpState& op = ops_[*it];
  op.paused = paused;
  emit(control::OpPausedEvent{name, paused});
  if (!paused) dispatch();
  return ops_[*it].status();
}

StatusOr<uint64_t> CoordinatorCore::drainOp(const std::string& name) {
  const uint32_t* it = ops_.find(name);
  if (!it) return absl::NotFoundError(fmt::format("unknown operation '{}'", name));
  OpState& op = ops_[*it];
  uint64_t n = 0;
  auto drop = [&](uint64_t id) {
    Job* j = findJob(id >> 32);
    if (!j) return;
    const auto local = static_cast<uint32_t>(id);
    TokenRec& t = j->tokens[local];
    if (t.state != kReady || j->specs[t.spec].op != *it) return;
    ++n;
    failToken(*j, local, absl::CancelledError(fmt::format("operation '{}' drained", name)), true);
  };
  for (auto& q : op.ready) {
    auto ready = std::move(q);
    q.clear();
    for (uint64_t id : ready) drop(id);
  }
  dispatcher_.removeSuspects([&](uint64_t id) {
    Job* j = findJob(id >> 32);
    if (!j || j->specs[j->tokens[static_cast<uint32_t>(id)].spec].op != *it) return false;
    drop(id);
    return true;
  });
  return n;
}

StatusOr<uint64_t> CoordinatorCore::cancelRunningOp(const std::string& name) {
  const uint32_t* it = ops_.find(name);
  if (!it) return absl::NotFoundError(fmt::format("unknown operation '{}'", name));
  // Every token the coordinator counts as running gets exactly one outcome:
  // batches still being assembled go out first, so the node holds every such
  // token when the cancel arrives. The node answers each one -- Cancelled for
  // those it had not started (and for running ones whose operation sees the
  // flag), onResults marks those cancelled and never retries them.
  for (uint32_t slot = 0; slot < nodes_.size(); ++slot) {
    NodeRec& n = nodes_[slot];
    if (n.state == NodeState::kDead) continue;
    dispatcher_.flush(slot);
    auto msg = newFrame();
    auto f = msg.root;
    f.initControl().setCancelOp(name);
    outbox_.send(n.peer, msg.encode());
  }
  return ops_[*it].running;
}

StatusOr<control::OpStatus> CoordinatorCore::setOpLimits(const std::string& name,
                                                         control::OpLimits limits) {
  if (limits.max_rate_per_s < 0) return absl::InvalidArgumentError("max_rate_per_s must be >= 0");
  if (!(limits.verify_pct >= 0 && limits.verify_pct <= 100))
    return absl::InvalidArgumentError("verify_pct must be a percentage from 0 to 100");
  const uint32_t* it = ops_.find(name);
  if (!it) return absl::NotFoundError(fmt::format("unknown operation '{}'", name));
  ops_.setLimits(ops_[*it], limits);
  ops_[*it].verify_bp = verifyBasisPoints(limits.verify_pct);
  dispatch();
  return ops_[*it].status();
}

// ---------------------------------------------------------------- nodes

NodeRec* CoordinatorCore::nodeByPeer(const std::string& peer) { return nodes_.byPeer(peer); }

NodeRec* CoordinatorCore::nodeById(const std::string& id) { return nodes_.byId(id); }

void CoordinatorCore::onHello(const std::string& peer, wire::NodeHello::Reader hello,
                              const std::string& key) {
  auto reply = [&](const Status& st, uint64_t session) {
    auto msg = newFrame();
    auto f = msg.root;
    auto w = f.initWelcome();
    w.setAccepted(st.ok());
    if (!st.ok()) toWire(st, w.initError());
    w.setHeartbeatMs(config_.heartbeat_ms);
    w.setSession(session);
    w.setMaxFrameBytes(config_.max_frame_bytes);
    w.setLossTimeoutMs(static_cast<uint32_t>(config_.node_timeout_ns / kMillis));
    w.setPackedResults(true);     // onResults reads ResultBatch.packed
    w.setPackedDecResults(true);  // ... and its Dec50 columns
    outbox_.send(peer, msg.encode());
  };
  if (hello.getProtocolVersion() != kProtocolVersion) {
    reply(absl::FailedPreconditionError(fmt::format("protocol version {} not supported, need {}",
                                                    hello.getProtocolVersion(), kProtocolVersion)),
          0);
    return;
  }
  if (Status st = validateHello(hello); !st.ok()) {  // ids and op names: common/names.h
    reply(st, 0);
    return;
  }
  std::string id = hello.getNodeId().cStr();
  // A re-hello from a known peer, or a new incarnation of a known node id,
  // replaces the old registration: its in-flight work is re-queued.
  if (NodeRec* old = nodeByPeer(peer); old && old->state != NodeState::kDead)
    loseNode(nodes_.slotOf(*old), "node re-registered");
  // At most one live registration per id: the newest.
  if (NodeRec* same = nodeById(id); same && same->state != NodeState::kDead)
    loseNode(nodes_.slotOf(*same), "replaced by a new incarnation");

  NodeRec n;
  n.id = id;
  n.peer = peer;
  n.key = key;
  n.session = next_session_++;
  n.incarnation = hello.getIncarnation();
  n.pid = hello.getPid();
  n.speed_factor = hello.getSpeedFactor() > 0 ? hello.getSpeedFactor() : 1.0;
  n.packed_tokens = hello.getPackedTokens();
  n.last_seen = clock_.now();
  for (auto op : hello.getOperations()) {
    const uint32_t idx = opIndex(op.getName().cStr());
    OpState& st = ops_[idx];
    st.deterministic |= op.getDeterministic();  // any node's word: a liar cannot opt out
    if (!st.weight_known) {
      st.weight_known = true;
      st.weight = fromWire(op.getWeight());
      if (st.weight == Weight::kUnspecified) st.weight = Weight::kLight;
      st.effective = st.weight;
    }
    n.op_names.emplace_back(op.getName().cStr());
  }
  n.offers.assign(ops_.size(), false);
  for (const auto& name : n.op_names) n.offers[*ops_.find(name)] = true;
  for (auto lane : hello.getLanes()) {
    auto w = static_cast<int>(fromWire(lane.getWeight()));
    if (w >= kLaneCount) continue;
    auto& l = n.lanes[w];
    l.present = true;
    l.workers = std::max<uint32_t>(1, lane.getWorkers());
    for (auto c : lane.getCores()) l.cores.push_back(c);
  }
  // A node that reports no lanes still serves every weight on one worker.
  bool any = false;
  for (auto& l : n.lanes) any |= l.present;
  if (!any)
    for (auto& l : n.lanes) l.present = true, l.workers = 1;
  // Reconnecting (or a coordinator restart: the journal restores convictions) does not clear
  // a quarantine, nor does a new id under a convicted key (convictions.h).
  if (convictions_.quarantined(id, key)) {
    const QuarantineNote* c = convictions_.find(id);
    spdlog::warn("node {} joined while quarantined ({}): it gets no work until undrained", id,
                 c ? c->reason : "its key was convicted under another node id");
    n.state = NodeState::kQuarantined;
  }
  const uint32_t slot = nodes_.add(std::move(n));
  scheduler_->forgetNode(slot);  // a reused slot starts without its last owner's speed
  reply(absl::OkStatus(), nodes_[slot].session);
  spdlog::info("node {} joined (session {}, pid {}, {} ops)", id, nodes_[slot].session,
               nodes_[slot].pid, nodes_[slot].op_names.size());
  emit(control::NodeEvent{control::NodeEvent::Change::kJoined, id, {}, 0, 0});
  updateNodeGauges();
}

void CoordinatorCore::sendUnknownSession(const std::string& peer) {
  auto msg = newFrame();
  auto f = msg.root;
  auto w = f.initWelcome();
  w.setAccepted(false);
  toWire(absl::FailedPreconditionError("unknown session: send hello"), w.initError());
  outbox_.send(peer, msg.encode());
}

void CoordinatorCore::onHeartbeat(const std::string& peer, wire::Heartbeat::Reader hb) {
  NodeRec* n = nodeByPeer(peer);
  if (!n || n->state == NodeState::kDead || n->session != hb.getSession()) {
    sendUnknownSession(peer);
    return;
  }
  const Nanos now = clock_.now();
  n->last_seen = now;
  n->rss = hb.getRssBytes();
  n->cpu_ns = hb.getCpuNs();
  // An operator's drain reaches the node as Control.drain and comes back in every heartbeat
  // until the node reads the undrain; heartbeats sent before that are still in the pipe when
  // drainNode(false) returns. Taking one of them for a node that drains on its own left an
  // undrained node draining for good (it never says so again, so nothing turns it back):
  // until a heartbeat says "not draining", "draining" is the node's echo of our old order.
  if (!hb.getDraining()) n->undrain_unconfirmed = false;
  if (hb.getDraining() && n->state == NodeState::kReady && !n->undrain_unconfirmed) {
    // The node drains on its own (SIGTERM): no new work; its unsent batch goes elsewhere.
    spdlog::info("node {} is draining (reported by the node)", n->id);
    n->state = NodeState::kDraining;
    dispatcher_.requeueUnsent(nodes_.slotOf(*n));
    emit(control::NodeEvent{control::NodeEvent::Change::kDraining, n->id, {}, 0, 0});
  }
  for (auto l : hb.getLanes()) {
    auto w = static_cast<int>(fromWire(l.getWeight()));
    if (w >= kLaneCount) continue;
    auto& lane = n->lanes[w];
    lane.reported_queued = l.getQueued();
    lane.reported_running = l.getRunning();
    if (lane.busy_at && now > lane.busy_at && l.getBusyNs() >= lane.busy_ns) {
      lane.utilization = std::min(
          1.0, static_cast<double>(l.getBusyNs() - lane.busy_ns) /
                   (static_cast<double>(now - lane.busy_at) * std::max<uint32_t>(1, lane.workers)));
    }
    lane.busy_ns = l.getBusyNs();
    lane.busy_at = now;
    if (lane.m_util) lane.m_util->Set(lane.utilization);
  }
  for (auto c : hb.getCores()) {
    prometheus::Gauge*& g = n->m_cores[c.getCore()];
    if (!g) g = &metrics_.core_tokens.Add({{"node", n->id}, {"core", std::to_string(c.getCore())}});
    g->Set(static_cast<double>(c.getTokens()));
  }
  if (n->m_rss) n->m_rss->Set(static_cast<double>(n->rss));
  if (n->m_cpu) n->m_cpu->Set(static_cast<double>(n->cpu_ns) / 1e9);
  auto msg = newFrame();
  auto f = msg.root;
  f.setPong(hb.getSession());
  outbox_.send(peer, msg.encode());
}

void CoordinatorCore::TelemetryTap::tick(Nanos now) {
  if (window_start != 0 && now - window_start < 100 * kMillis) return;
  // The stride for the next window spreads its budget over the results the last one saw.
  last_window_results = window_results;
  stride = static_cast<uint32_t>(std::max<uint64_t>(1, last_window_results / per_window));
  if (countdown > stride) countdown = stride;
  window_start = now;
  window_results = 0;
  window_sampled = 0;
}

void CoordinatorCore::onResults(const std::string& peer, wire::ResultBatch::Reader rb) {
  NodeRec* n = nodeByPeer(peer);
  if (!n || n->state == NodeState::kDead || n->session != rb.getSession()) {
    uint64_t count = rb.getResults().size();
    for (auto blk : rb.getPacked()) count += blk.getIds().size();
    counters_.late_results += count;
    metrics_.late_results.Increment(static_cast<double>(count));
    if (!n || n->state != NodeState::kDead) sendUnknownSession(peer);
    return;
  }
  const uint32_t slot = nodes_.slotOf(*n);
  n->last_seen = clock_.now();
  if (telemetry_) telemetry_.tick(n->last_seen);
  Job* job = nullptr;
  std::vector<uint32_t> touched_ops;
  uint64_t late = 0;
  // One result: `r` for one of `results`, else `packed` holds the value of a packed (successful)
  // one.
  auto one = [&](uint64_t id, uint32_t attempt, uint64_t run_ns, uint64_t queue_ns,
                 const wire::TokenResult::Reader* r, const Value* packed) {
    if (!job || job->id != (id >> 32)) job = findJob(id >> 32);
    const auto local = static_cast<uint32_t>(id);
    if (!job || local >= job->tokens.size()) {
      ++late;
      return;
    }
    TokenRec& t = job->tokens[local];
    if (t.state != kRunning || t.node != slot || t.attempt != attempt) {
      ++late;
      return;
    }
    const SpecRec& s = job->specs[t.spec];
    OpState& op = ops_[s.op];
    if (std::find(touched_ops.begin(), touched_ops.end(), s.op) == touched_ops.end())
      touched_ops.push_back(s.op);
    OpTable::observe(op, run_ns, queue_ns);
    if (telemetry_ && telemetry_.take()) {
      Sample sample;
      sample.token = JobTable::tokenInfo(*job, local);
      sample.token.cost = t.cost;  // the prediction made at dispatch
      sample.node = slot;
      sample.lane = static_cast<Weight>(t.lane);
      sample.node_load = static_cast<double>(t.load);
      sample.node_speed = n->speed;
      sample.run_ns = run_ns;
      sample.queue_ns = queue_ns;
      telemetry_.sink(sample);
    }
    if (packed != nullptr || r->isValue()) {
      ++n->completed;
      TokenInfo seen;  // what Scheduler::observe promises: no argument features
      seen.id = id;
      seen.op = s.op;
      seen.declared = s.weight;
      seen.cost = t.cost;
      seen.lane = static_cast<Weight>(t.lane);
      seen.load = t.load;
      scheduler_->observe(seen, slot, static_cast<double>(run_ns));
      const bool verify =
          (job->verify_bp || op.verify_bp) &&
          Verifier::sampled(config_.verify_seed, job->id, local, verifyBasisPointsFor(*job, s));
      if (!verify) t.by = slot;
      if (packed != nullptr) {
        if (verify)
          onVerifiedResult(*job, local, slot, *packed);
        else
          completeToken(*job, local, *packed, run_ns);
      } else {
        Value v = fromWire(r->getValue());
        if (verify)
          onVerifiedResult(*job, local, slot, std::move(v));
        else
          completeToken(*job, local, v, run_ns);
      }
      return;
    }
    Status err = fromWire(r->getError());
    if (err.code() == StatusCode::kCancelled) {
      failToken(*job, local, err, false);
    } else if (isRetryable(err.code()) && t.errors + 1 < s.max_attempts) {
      retryToken(*job, local, true);
    } else {
      failToken(*job, local,
                Status(err.code(),
                       fmt::format("{} (attempt {} on node {})", err.message(), t.attempt, n->id)),
                false);
    }
  };
  for (auto r : rb.getResults())
    one(r.getId(), r.getAttempt(), r.getRunNs(), r.getQueueNs(), &r, nullptr);
  for (auto blk : rb.getPacked()) {
    auto count = packedResultCount(blk);
    if (!count.ok()) {
      onMalformed(peer, absl::InvalidArgumentError(
                            fmt::format("{} (block ignored)", count.status().message())));
      continue;
    }
    const auto ids = blk.getIds();
    const auto attempts = blk.getAttempts();
    const auto run = blk.getRunNs();
    const auto queue = blk.getQueueNs();
    const auto n = static_cast<unsigned>(*count);
    Value v;
    switch (blk.which()) {
      case wire::PackedResults::F64S: {
        const auto floats = blk.getF64s();
        for (unsigned i = 0; i < n; ++i) {
          v = Value(floats[i]);
          one(ids[i], attempts[i], run[i], queue[i], nullptr, &v);
        }
        break;
      }
      case wire::PackedResults::I64S: {
        const auto ints = blk.getI64s();
        for (unsigned i = 0; i < n; ++i) {
          v = Value(static_cast<int64_t>(ints[i]));
          one(ids[i], attempts[i], run[i], queue[i], nullptr, &v);
        }
        break;
      }
      default: {  // DECS (packedResultCount refuses unknown kinds)
        const PackedDecColumns decs(blk.getDecs());
        for (unsigned i = 0; i < n; ++i) {
          v = Value(decs.at(i));
          one(ids[i], attempts[i], run[i], queue[i], nullptr, &v);
        }
        break;
      }
    }
  }
  for (auto ret : rb.getReturned()) {
    const uint64_t id = ret.getId();
    Job* j = findJob(id >> 32);
    const auto local = static_cast<uint32_t>(id);
    if (!j || local >= j->tokens.size()) continue;
    TokenRec& t = j->tokens[local];
    if (t.state != kRunning || t.node != slot || t.attempt != ret.getAttempt()) continue;
    releaseFromNode(*j, t);
    makeReady(*j, local);
    ++counters_.returned;
  }
  if (late) {
    counters_.late_results += late;
    metrics_.late_results.Increment(static_cast<double>(late));
  }
  for (uint32_t o : touched_ops) OpTable::flushMetrics(ops_[o]);
  const Job* cached = nullptr;
  nodes_.compact(slot, [&](uint64_t id) {
    if (!cached || cached->id != (id >> 32)) cached = findJob(id >> 32);
    if (!cached) return false;
    const TokenRec& t = cached->tokens[static_cast<uint32_t>(id)];
    return t.state == kRunning && t.node == slot;
  });
}

void CoordinatorCore::onBye(const std::string& peer, wire::Bye::Reader bye) {
  NodeRec* n = nodeByPeer(peer);
  if (!n || n->state == NodeState::kDead) return;
  spdlog::info("node {} said bye: {}", n->id, bye.getReason().cStr());
  // A clean exit is no one's fault: re-queue without counting deaths.
  loseNode(nodes_.slotOf(*n), "left", /*blame=*/false, /*left=*/true);
}

void CoordinatorCore::onDisconnected(const std::string& peer) {
  NodeRec* n = nodeByPeer(peer);
  if (!n || n->state == NodeState::kDead) return;
  ++counters_.disconnects;
  loseNode(nodes_.slotOf(*n), "connection closed");
  dispatch();
}

void CoordinatorCore::loseNode(uint32_t slot, const std::string& why, bool blame, bool left) {
  NodeRec& n = nodes_[slot];
  if (n.state == NodeState::kDead) return;
  n.state = NodeState::kDead;
  ++counters_.node_deaths;
  n.batch.ids.clear();
  uint64_t requeued = 0, quarantined = 0;
  const uint64_t suspect = n.suspect;
  n.suspect = 0;
  // Only this node's tokens: its index may hold stale entries, so each is re-checked.
  Job* job = nullptr;
  for (uint64_t id : nodes_.takeTokens(slot)) {
    ++counters_.node_token_visits;
    if (!job || job->id != (id >> 32)) job = findJob(id >> 32);
    if (!job) continue;
    const auto i = static_cast<uint32_t>(id);
    TokenRec& t = job->tokens[i];
    if (t.state != kRunning || t.node != slot) continue;
    if (!blame) {
      releaseFromNode(*job, t);
      makeReady(*job, i);
      ++requeued;
      ++counters_.requeued;
      continue;
    }
    // Blame: an isolated suspect takes the death; others become suspects.
    if (id == suspect || t.deaths == 0) ++t.deaths;
    if (t.deaths >= config_.poison_threshold) {
      ++quarantined;
      ++counters_.quarantined;
      failToken(*job, i,
                absl::AbortedError(fmt::format(
                    "quarantined as poison: {} nodes were lost while running it (last: {})",
                    t.deaths, n.id)),
                false);
    } else {
      retryToken(*job, i, false);
      ++requeued;
      ++counters_.requeued;
    }
  }
  nodes_.markDeparted(slot, clock_.now(), left);
  for (auto& l : n.lanes) {
    l.in_flight = 0;
    l.outstanding = 0;
    if (l.m_in_flight) l.m_in_flight->Set(0);
    if (l.m_util) l.m_util->Set(0);
  }
  // A clean goodbye is routine; anything that cost work is worth a warning.
  spdlog::log(!blame && quarantined == 0 ? spdlog::level::info : spdlog::level::warn,
              "node {} lost ({}): {} tokens re-queued, {} quarantined", n.id, why, requeued,
              quarantined);
  emit(control::NodeEvent{control::NodeEvent::Change::kLeft, n.id, why, requeued, quarantined});
  updateNodeGauges();
}

void CoordinatorCore::updateNodeGauges() {
  double count[control::kNodeStateCount] = {};
  for (const auto& n : nodes_)
    if (!n.vacant && !n.left) count[static_cast<int>(n.state)] += 1;
  for (int s = 0; s < control::kNodeStateCount; ++s) m_nodes_[s]->Set(count[s]);
}

void CoordinatorCore::sendControlCancel(uint32_t slot, const std::vector<uint64_t>& ids) {
  const NodeRec& n = nodes_[slot];
  if (n.state == NodeState::kDead || ids.empty()) return;
  auto msg = newFrame();
  auto f = msg.root;
  auto list = f.initControl().initCancelTokens(static_cast<unsigned>(ids.size()));
  for (unsigned i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
  outbox_.send(n.peer, msg.encode());
}

control::NodeStatus CoordinatorCore::nodeStatus(const NodeRec& n) const {
  control::NodeStatus s;
  s.id = n.id;
  s.session = n.session;
  s.pid = n.pid;
  s.state = n.state;
  s.completed = n.completed;
  s.heartbeat_age_ns = clock_.now() - n.last_seen;
  s.speed_factor = n.speed_factor;
  s.rss_bytes = n.rss;
  s.ops = n.op_names;
  for (int w = 0; w < kLaneCount; ++w) {
    const auto& l = n.lanes[w];
    if (!l.present) continue;
    control::LaneStatus ls;
    ls.weight = static_cast<Weight>(w);
    ls.cores = l.cores;
    ls.workers = l.workers;
    ls.queued = l.reported_queued;
    ls.running = l.reported_running;
    ls.in_flight = l.in_flight;
    ls.utilization = l.utilization;
    s.in_flight += l.in_flight;
    s.lanes.push_back(std::move(ls));
  }
  return s;
}

bool CoordinatorCore::nodeLive(const std::string& id) {
  const NodeRec* n = nodeById(id);
  return n && n->state != NodeState::kDead;
}

std::vector<control::NodeStatus> CoordinatorCore::listNodes() const {
  std::vector<control::NodeStatus> out;
  for (const auto& n : nodes_) {
    // A node that said bye is not listed; a lost one is listed (dead) until a newer
    // registration of its id replaces it or its retention ends.
    if (n.vacant || n.left) continue;
    if (n.state == NodeState::kDead && !nodes_.isNewest(n)) continue;
    out.push_back(nodeStatus(n));
  }
  return out;
}

StatusOr<control::NodeStatus> CoordinatorCore::drainNode(const std::string& node_id, bool drain) {
  NodeRec* n = nodeById(node_id);
  if (!n || n->state == NodeState::kDead)
    return absl::NotFoundError(fmt::format("no live node '{}'", node_id));
  n->state = drain ? NodeState::kDraining : NodeState::kReady;
  n->undrain_unconfirmed = !drain;  // see onHeartbeat
  if (!drain) {                     // undrain also lifts a quarantine: of the id and of its key
    runs_.lift(node_id);
    for (const std::string& lifted : convictions_.lift(node_id, n->key)) {
      spdlog::warn("node {}: quarantine lifted by an operator", lifted);
      if (journal_) journal_->quarantine(QuarantineNote::liftOf(lifted));
    }
  }
  if (drain) dispatcher_.requeueUnsent(nodes_.slotOf(*n));
  auto msg = newFrame();
  auto f = msg.root;
  if (drain)
    f.initControl().setDrain();
  else
    f.initControl().setUndrain();
  outbox_.send(n->peer, msg.encode());
  emit(control::NodeEvent{
      drain ? control::NodeEvent::Change::kDraining : control::NodeEvent::Change::kReady,
      node_id,
      {},
      0,
      0});
  updateNodeGauges();
  if (!drain) dispatch();
  return nodeStatus(*n);
}

StatusOr<uint64_t> CoordinatorCore::evictNode(const std::string& node_id) {
  NodeRec* n = nodeById(node_id);
  if (!n || n->state == NodeState::kDead)
    return absl::NotFoundError(fmt::format("no live node '{}'", node_id));
  const uint64_t in_flight = n->inFlight();
  auto msg = newFrame();
  auto f = msg.root;
  f.initControl().setShutdown();
  outbox_.send(n->peer, msg.encode());
  // Eviction is an operator's decision, not the tokens' fault: no deaths counted.
  loseNode(nodes_.slotOf(*n), "evicted", /*blame=*/false);
  dispatch();
  return in_flight;
}

// ---------------------------------------------------------------- dispatch

size_t CoordinatorCore::readyCount() const { return dispatcher_.queued(); }

void CoordinatorCore::dispatch() { dispatcher_.run(); }

void CoordinatorCore::flushAll() { dispatcher_.flushAll(); }

// ---------------------------------------------------------------- frames

void CoordinatorCore::onFrame(const std::string& peer, wire::Frame::Reader frame,
                              const std::string& key) {
  switch (frame.which()) {
    case wire::Frame::HELLO:
      onHello(peer, frame.getHello(), key);
      break;
    case wire::Frame::HEARTBEAT:
      onHeartbeat(peer, frame.getHeartbeat());
      break;
    case wire::Frame::RESULT_BATCH:
      onResults(peer, frame.getResultBatch());
      break;
    case wire::Frame::BYE:
      onBye(peer, frame.getBye());
      break;
    case wire::Frame::SUBMIT_JOB:
      onSubmit(peer, frame.getSubmitJob());
      break;
    case wire::Frame::WATCH_JOB:
      onWatch(peer, frame.getWatchJob());
      break;
    case wire::Frame::ADMIN_REQUEST:
      onAdmin(peer, frame.getAdminRequest());
      break;
    case wire::Frame::CANCEL_JOB: {
      auto r = cancelJob(frame.getCancelJob().getJobId());
      auto msg = newFrame();
      auto f = msg.root;
      auto rep = f.initSubmitReply();
      rep.setRequestId(frame.getCancelJob().getRequestId());
      if (r.ok())
        rep.setJobId(frame.getCancelJob().getJobId());
      else
        toWire(r.status(), rep.initError());
      outbox_.send(peer, msg.encode());
      break;
    }
    case wire::Frame::STATS_REQUEST: {
      const auto st = stats();
      auto msg = newFrame();
      auto f = msg.root;
      auto r = f.initStatsReply();
      r.setRequestId(frame.getStatsRequest());
      r.setNodesReady(static_cast<uint32_t>(st.nodes_ready));
      r.setNodesDraining(static_cast<uint32_t>(st.nodes_draining));
      r.setJobsRunning(static_cast<uint32_t>(st.jobs_running));
      r.setTokensLive(st.tokens_live);
      r.setTokensCompleted(st.tokens_completed);
      r.setTokensFailed(st.tokens_failed);
      r.setQueued(st.queued);
      r.setInFlight(st.in_flight);
      r.setNodesLost(st.nodes_lost);
      r.setNodesDisconnected(st.nodes_disconnected);
      r.setTokensRequeued(st.tokens_requeued);
      r.setTokensReturned(st.tokens_returned);
      r.setNodesQuarantined(static_cast<uint32_t>(st.nodes_quarantined));
      r.setRunTimeouts(st.run_timeouts);
      r.setVerifyReruns(st.verify_reruns);
      r.setVerifyMatched(st.verify_matched);
      r.setVerifyMismatched(st.verify_mismatched);
      r.setVerifyUnverifiable(st.verify_unverifiable);
      r.setTokensReopened(st.tokens_reopened);
      const auto nodes = listNodes();
      auto list = r.initNodes(static_cast<unsigned>(nodes.size()));
      for (unsigned i = 0; i < nodes.size(); ++i) {
        list[i].setId(nodes[i].id);
        list[i].setState(control::nodeStateName(nodes[i].state));
        list[i].setCompleted(nodes[i].completed);
        list[i].setInFlight(nodes[i].in_flight);
        list[i].setSession(nodes[i].session);
      }
      outbox_.send(peer, msg.encode());
      return;
    }
    case wire::Frame::PING: {
      auto msg = newFrame();
      auto f = msg.root;
      f.setPong(frame.getPing());
      outbox_.send(peer, msg.encode());
      break;
    }
    default:
      sendReject(peer, absl::InvalidArgumentError(
                           fmt::format("frame kind {} is not accepted by the coordinator",
                                       static_cast<int>(frame.which()))));
      return;
  }
  dispatch();
}

void CoordinatorCore::onBytes(const std::string& peer, const void* data, size_t size,
                              const std::string& key) {
  // Borrowed: the server's message outlives this call, and nothing keeps the frame.
  auto frame = decodeFrameBorrowed(data, size, config_.max_frame_bytes);
  if (!frame.ok()) {
    onMalformed(peer, frame.status());
    return;
  }
  try {
    onFrame(peer, (*frame)->root(), key);
  } catch (const kj::Exception& e) {
    // A validated frame that still cannot be read (e.g. over the traversal limit): refuse it,
    // keep serving. Handlers read their input before changing state where they can.
    onMalformed(peer, absl::InvalidArgumentError(fmt::format("frame could not be processed: {}",
                                                             e.getDescription().cStr())));
  }
}

void CoordinatorCore::onMalformed(const std::string& peer, const Status& error) {
  ++counters_.malformed;
  metrics_.malformed_frames.Increment();
  spdlog::warn("rejected frame from peer ({} bytes id): {}", peer.size(), error.message());
  sendReject(peer, error);
}

void CoordinatorCore::sendReject(const std::string& peer, const Status& s, uint64_t request_id) {
  auto msg = newFrame();
  auto f = msg.root;
  auto r = f.initReject();
  toWire(s, r.initError());
  r.setRequestId(request_id);
  outbox_.send(peer, msg.encode());
}

void CoordinatorCore::onSubmit(const std::string& peer, wire::SubmitJob::Reader submit) {
  auto spec = fromWire(submit.getJob());
  const uint64_t request_id = submit.getRequestId();
  const bool watch = submit.getWatch();
  // ackWithResult: the SubmitReply of an admitted job may be held (held_acks.h). The watcher is
  // added by the reply below, not at admission, so a job that finishes during admission (all
  // aliases of finished keys) sends one JobDone, carrying the request id, and nothing else.
  const bool ack_with_result = watch && submit.getAckWithResult() && config_.ack_hold_ns > 0;
  // Answered once the admission is durable (commitJournal), at once without a journal.
  SubmitDone reply = [this, peer, request_id, watch, ack_with_result](StatusOr<uint64_t> id) {
    if (ack_with_result && id.ok()) {
      Job* j = findJob(*id);
      if (j && j->state == JobState::kRunning) {
        jobs_.watch(*j, peer);
        // Its first progress frame one interval from now, not at the next tick (which would
        // end the hold early).
        j->last_progress = clock_.now();
        if (held_acks_.hold(clock_.now() + config_.ack_hold_ns, *id, peer, request_id)) return;
        return sendSubmitReply(peer, request_id, id);
      }
      if (auto s = jobStatus(*id, true); s.ok()) return sendJobDone(peer, *s, request_id);
    }
    sendSubmitReply(peer, request_id, id);
    // A job that finished during admission (all aliases) already sent JobDone
    // to its watcher before this reply; resend so the reply comes first.
    if (id.ok() && watch) {
      if (!findJob(*id) || findJob(*id)->state != JobState::kRunning) {
        if (auto s = jobStatus(*id, true); s.ok()) sendJobDone(peer, *s);
      }
    }
  };
  if (!spec.ok()) return reply(spec.status());
  submitJobAsync(*std::move(spec), watch && !ack_with_result ? peer : std::string(), request_id,
                 std::move(reply));
}

void CoordinatorCore::sendSubmitReply(const std::string& peer, uint64_t request_id,
                                      StatusOr<uint64_t> id) {
  auto msg = newFrame(scratch_);
  auto rep = msg.root.initSubmitReply();
  rep.setRequestId(request_id);
  if (id.ok()) {
    rep.setJobId(*id);
    rep.setIncarnation(incarnation());
  } else {
    toWire(id.status(), rep.initError());
  }
  outbox_.send(peer, msg.encode());
}

void CoordinatorCore::releaseAcks() {
  if (held_acks_.nextDue() > clock_.now()) return;
  held_acks_.expire(clock_.now(), [this](const HeldAcks::Ack& a) {
    sendSubmitReply(a.peer, a.request_id, a.job_id);
  });
}

void CoordinatorCore::onWatch(const std::string& peer, wire::JobRef::Reader ref) {
  // A job id of another incarnation: the job this client means is not the one we know by that
  // id (the journal was lost, or the id came round again), so it is unknown here.
  if (const uint64_t inc = ref.getIncarnation(); inc != 0) {
    auto known = jobStatus(ref.getJobId(), false);
    if (known.ok() && known->incarnation != 0 && known->incarnation != inc) {
      sendReject(peer,
                 absl::NotFoundError(fmt::format(
                     "no job {} of coordinator incarnation {:x} (this id now names another job)",
                     ref.getJobId(), inc)),
                 ref.getRequestId());
      return;
    }
  }
  Job* j = findJob(ref.getJobId());
  if (j && j->state == JobState::kRunning) {
    jobs_.watch(*j, peer);
    sendProgress(*j, false);
    return;
  }
  auto s = jobStatus(ref.getJobId(), true);
  if (!s.ok()) {
    sendReject(peer, s.status(), ref.getRequestId());
    return;
  }
  sendJobDone(peer, *s);
}

void CoordinatorCore::sendProgress(Job& job, bool) {
  // Nothing about a job reaches its submitter before its id: a held ack goes first.
  if (auto a = held_acks_.take(job.id)) sendSubmitReply(a->peer, a->request_id, a->job_id);
  for (const auto& w : job.watchers) {
    auto msg = newFrame(scratch_);
    auto f = msg.root;
    auto p = f.initJobProgress();
    p.setJobId(job.id);
    p.setTotal(job.tokens.size());
    p.setDone(job.done);
    p.setFailed(job.failed + job.cancelled);
    p.setRunning(job.running);
    auto outs = p.initOutputs(static_cast<unsigned>(job.streamed.size()));
    for (unsigned i = 0; i < job.streamed.size(); ++i) control::toWire(job.streamed[i], outs[i]);
    outbox_.send(w, msg.encode());
  }
  job.streamed.clear();
  job.last_progress = clock_.now();
}

void CoordinatorCore::sendJobDone(const std::string& peer, const control::JobStatus& s,
                                  uint64_t request_id) {
  auto msg = newFrame(scratch_);
  auto f = msg.root;
  auto done = f.initJobDone();
  control::toWire(s, done);
  if (request_id != 0) {
    done.setRequestId(request_id);
    done.setIncarnation(s.incarnation != 0 ? s.incarnation : incarnation());
  }
  // A key's result must reach the file before any client can see it: while the journal's
  // buffer holds key results, JobDone waits for the commit that writes them (commitJournal,
  // at the end of this burst; streamed outputs go out after it anyway).
  if (keys_unwritten_)
    held_done_.emplace_back(peer, msg.encode());
  else
    outbox_.send(peer, msg.encode());
}

void CoordinatorCore::writeKeyResults() {
  if (!journal_ || !keys_unwritten_) return;
  commitJournal();
}

// ---------------------------------------------------------------- timers

Nanos CoordinatorCore::tick() {
  const Nanos now = clock_.now();
  releaseAcks();
  // Lost nodes.
  for (uint32_t s = 0; s < nodes_.size(); ++s) {
    NodeRec& n = nodes_[s];
    if (n.state != NodeState::kDead && now - n.last_seen > config_.node_timeout_ns)
      loseNode(s, fmt::format("no heartbeat for {} ms", (now - n.last_seen) / kMillis));
  }
  // Deadlines.
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    auto [when, id] = deadlines_.top();
    deadlines_.pop();
    Job* j = findJob(id >> 32);
    if (!j) continue;
    const auto local = static_cast<uint32_t>(id);
    TokenRec& t = j->tokens[local];
    if (t.state == kDone || t.state == kFailed || t.state == kCancelled) continue;
    if (t.state == kRunning && t.node != kNoNode) sendControlCancel(t.node, {id});
    failToken(*j, local,
              absl::DeadlineExceededError(
                  fmt::format("deadline of {} ms exceeded", j->specs[t.spec].spec.deadline_ms)),
              false);
  }
  expireRunTimeouts(now);
  if (!verifier_.empty()) {
    dispatcher_.unparkVerify();
    expireVerifications(now);
  }
  // Retry backoff.
  while (!delayed_.empty() && delayed_.top().first <= now) {
    const uint64_t id = delayed_.top().second;
    delayed_.pop();
    Job* j = findJob(id >> 32);
    if (!j) continue;
    const auto local = static_cast<uint32_t>(id);
    if (j->tokens[local].state == kDelayed) makeReady(*j, local);
  }
  // Rate limits: refill token buckets.
  const double dt = static_cast<double>(now - last_tick_) / 1e9;
  ops_.refill(dt);
  last_tick_ = now;
  // Progress to watchers (watched running jobs only).
  for (uint64_t id : jobs_.watched()) {
    Job* j = findJob(id);
    if (j && !j->watchers.empty() && now - j->last_progress >= config_.progress_interval_ns)
      sendProgress(*j, false);
  }
  if (now - last_event_ >= kGaugeInterval) {
    ops_.updateGauges();
    for (auto& n : nodes_)
      for (auto& l : n.lanes)
        if (l.m_in_flight) l.m_in_flight->Set(static_cast<double>(l.in_flight));
    metrics_.live_tokens.Set(static_cast<double>(jobs_.liveTokens()));
    metrics_.sampleProcess(now, kSeconds);
  }
  emitPeriodic(now);
  dispatch();
  // Drop departed nodes' records once their retention ended.
  if (auto freed = nodes_.reap(now, jobs_.admitted()); !freed.empty()) {
    for (uint32_t slot : freed) scheduler_->forgetNode(slot);
    updateNodeGauges();
  }
  // Slots of dropped records are reused once no running job can hold their results.
  nodes_.releaseHeld(jobs_.oldestRunningSeq());
  // Reap finished jobs (their summaries are remembered).
  jobs_.reap();
  // Next wake-up.
  Nanos next = now + 50 * kMillis;
  if (!deadlines_.empty()) next = std::min(next, deadlines_.top().first);
  if (!delayed_.empty()) next = std::min(next, delayed_.top().first);
  // Watched running jobs get their progress every progress_interval_ns, however short.
  if (!jobs_.watched().empty()) next = std::min(next, now + config_.progress_interval_ns);
  next = std::min(next, runs_.nextExpiry());
  return next;
}

void CoordinatorCore::subscribe(uint64_t id, std::function<void(const control::Event&)> sink) {
  subscribers_.emplace(id, std::move(sink));
}

void CoordinatorCore::unsubscribe(uint64_t id) { subscribers_.erase(id); }

void CoordinatorCore::emit(const control::Event& ev) {
  if (subscribers_.empty()) return;
  for (auto& [id, sink] : subscribers_) sink(ev);
}

void CoordinatorCore::emitPeriodic(Nanos now) {
  if (now - last_event_ < config_.event_interval_ns) return;
  const double dt = static_cast<double>(now - last_rate_) / 1e9;
  const bool rate_due = dt >= 1.0;
  if (rate_due) {
    for (auto& op : ops_) {
      op.rate_per_s = static_cast<double>(op.completed - op.completed_at_last_event) / dt;
      op.completed_at_last_event = op.completed;
    }
    last_rate_ = now;
  }
  last_event_ = now;
  if (subscribers_.empty()) return;
  jobs_.forEachRunning([&](const Job& j) {
    emit(control::JobEvent{j.id, j.name, JobState::kRunning, j.tokens.size(), j.done, j.failed,
                           j.cancelled, j.running, 0});
  });
  for (auto& op : ops_) {
    if (op.failed_since_event) {
      emit(control::FailuresEvent{op.name, op.failed_since_event, op.last_error});
      op.failed_since_event = 0;
    }
  }
  if (rate_due) {
    control::OpRatesEvent rates;
    rates.ops.reserve(ops_.size());
    for (auto& op : ops_)
      rates.ops.push_back(
          {op.name, op.rate_per_s, op.queued(), op.running, op.completed, op.failed, op.paused});
    emit(rates);
  }
}

control::ClusterStats CoordinatorCore::stats() const {
  control::ClusterStats s;
  for (const auto& n : nodes_) {
    if (n.vacant || n.left) continue;
    if (n.state == NodeState::kReady) ++s.nodes_ready;
    if (n.state == NodeState::kDraining) ++s.nodes_draining;
    if (n.state == NodeState::kDead) ++s.nodes_dead;
    if (n.state == NodeState::kQuarantined) ++s.nodes_quarantined;
    for (const auto& l : n.lanes) s.in_flight += l.in_flight;
  }
  s.jobs_running = jobs_.running();
  s.jobs_total = jobs_.admitted();
  s.tokens_admitted = counters_.admitted;
  s.tokens_completed = counters_.completed;
  s.tokens_failed = counters_.failed + counters_.cancelled;
  s.tokens_retried = counters_.retried;
  s.tokens_live = jobs_.liveTokens();
  s.queued = readyCount();
  s.admission_limit = config_.max_live_tokens;
  s.admission_rejects = counters_.rejects;
  for (const auto& op : ops_) s.throughput_per_s += op.rate_per_s;
  s.nodes_lost = counters_.node_deaths;
  s.nodes_disconnected = counters_.disconnects;
  s.tokens_requeued = counters_.requeued;
  s.tokens_returned = counters_.returned;
  s.run_timeouts = counters_.run_timeouts;
  const auto& v = verifier_.counters();
  s.verify_reruns = v.reruns;
  s.verify_matched = v.matched;
  s.verify_mismatched = v.mismatched;
  s.verify_unverifiable = v.unverifiable;
  s.tokens_reopened = counters_.reopened;
  s.scheduler = scheduler_->name();
  s.placement = scheduler_->placementMode();
  return s;
}

}  // namespace tokengate::coordinator
