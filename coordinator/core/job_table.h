// JobTable: the coordinator's admitted jobs, their token DAGs and results, and the summaries of
// finished jobs. Owned by CoordinatorCore; loop thread only.
//
// How a job moves through it: add() creates the record and build() lays out its tokens (spec
// index, dependency counts, the CSR of dependents, the outputs) and counts its tokens live. The
// core then drives tokens; the table owns the per-token bookkeeping that only concerns the job
// itself: storing a result (inline scalars, boxed others), waking dependents whose last input
// finished (completed()), freeing an input's result once its last consumer finished (retired()),
// and the job's end (finishIfDone(): state, finish time, a summary kept for status calls).
// Finished records are dropped by reap() on the next tick; their summaries stay (the newest
// `finished_kept`). No call walks every job except list() and forEachRunning(), which exist for
// listings and periodic events.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/clock.h"
#include "common/job.h"
#include "common/status.h"
#include "coordinator/control/control.h"
#include "coordinator/core/node_table.h"
#include "coordinator/core/scheduler.h"

namespace tokengate::coordinator {

enum TokenState : uint8_t {
  kWaiting = 0,  // inputs not done
  kReady,        // in a ready queue
  kDelayed,      // retry backoff
  kRunning,      // dispatched to a node
  kDone,
  kFailed,
  kCancelled,
  kAlias,  // idempotency duplicate waiting for its original
};
enum ValueTag : uint8_t { kNoValue = 0, kInt, kDouble, kBool, kNull, kBoxed };

struct TokenRec {
  uint64_t val = 0;         // inline int/double/bool bits, or boxed index
  uint32_t pending = 0;     // inputs not finished
  uint32_t consumers = 0;   // dependents not finished (result freed at 0)
  uint32_t node = kNoNode;  // node slot while running
  uint32_t spec = 0;        // index into JobRec::specs
  uint8_t state = kWaiting;
  uint8_t attempt = 0;  // attempts started
  uint8_t deaths = 0;   // node losses while this token was in flight
  uint8_t tag = kNoValue;
  uint8_t lane = 0;    // lane it was dispatched on
  uint8_t errors = 0;  // error results seen (retry budget)
  uint16_t load = 0;   // tokens in flight on that node lane at dispatch (saturated; telemetry)
  float cost = 1;      // predicted cost when dispatched (outstanding-work accounting)
  // Node slot whose result was accepted (kNoBy: none yet, or not from a node), with kVerifiedBit
  // when a second node agreed (verify): JobTable::reopen re-runs a lying node's unverified work.
  uint32_t by = kNoBy;

  static constexpr uint32_t kVerifiedBit = 1u << 31;
  static constexpr uint32_t kNoBy = kVerifiedBit - 1;
  uint32_t bySlot() const { return by & ~kVerifiedBit; }
  bool verified() const { return (by & kVerifiedBit) != 0; }
  bool finished() const { return state == kDone || state == kFailed || state == kCancelled; }
};

static_assert(sizeof(TokenRec) <= 40, "TokenRec is per token: keep it small");

struct SpecRec {
  TokenSpec spec;
  uint32_t first = 0;  // job-local index of repetition 0
  uint32_t op = 0;     // coordinator op index
  Weight weight = Weight::kLight;
  uint8_t max_attempts = 3;
  bool keep_result = false;      // output (or sink) result retained
  bool explicit_weight = false;  // the spec named a weight class (overrides the op's lane)
  bool checkpoint = false;       // results journalled as checkpoints (fan-in tokens; resume.cc)
};

struct JobRec {
  uint64_t id = 0;
  uint64_t seq = 0;          // admission order in this process (JobTable::add), never reused
  uint64_t incarnation = 0;  // of the process that admitted it (survives restarts)
  std::string name;
  Nanos admitted_at = 0, finished_at = 0;
  std::vector<SpecRec> specs;
  std::vector<TokenRec> tokens;
  std::vector<uint32_t> dep_offset;  // CSR: dependents of token i in deps[off[i]..off[i+1])
  std::vector<uint32_t> deps;
  std::vector<Value> boxed;  // non-scalar results
  std::vector<uint32_t> boxed_free;
  std::unordered_map<uint32_t, Status> errors;  // failed/cancelled tokens' causes
  std::vector<uint32_t> outputs;                // local indices reported in JobDone
  uint64_t done = 0, failed = 0, cancelled = 0, running = 0;
  std::vector<std::string> watchers;  // peers streaming progress
  // Outputs finished since the last progress frame, kept only while someone watches.
  std::vector<control::OutputResult> streamed;
  Nanos last_progress = 0;
  control::JobState state = control::JobState::kRunning;
  bool any_failed = false;
  bool any_output = false;  // some spec flagged output (else sinks are the outputs)
  Status first_error;       // cause reported for failed outputs without their own
  // Verified execution (verifier.h): the job's `verify` in basis points (0..10000; ops may ask
  // for more), and what came of its sampled tokens.
  uint32_t verify_bp = 0;
  uint64_t verified = 0, unverifiable = 0, mismatched = 0;
  uint64_t reopened = 0;  // finished tokens run again: a lying node's, or fed by one

  uint64_t finishedTokens() const { return done + failed + cancelled; }
};

// Visits the job-local indices a token's arguments reference, in argument order.
template <typename Fn>
void forEachRef(const TokenSpec& spec, uint32_t rep, Fn&& fn) {
  for (const auto& a : spec.args) {
    if (a.kind == Arg::Kind::kValue) continue;
    const int64_t start = static_cast<int64_t>(a.start) + a.step * rep;
    const uint32_t count = a.kind == Arg::Kind::kRef ? 1 : a.count;
    for (uint32_t k = 0; k < count; ++k) fn(static_cast<uint32_t>(start + k));
  }
}

// Arguments a token of `spec` is sent with (a range counts each of its refs).
uint32_t argCount(const TokenSpec& spec);

class JobTable {
 public:
  // Sink outputs kept per job when no spec flags outputs (bounded: a 1M-token map has 1M sinks).
  static constexpr size_t kMaxSinkOutputs = 100'000;

  explicit JobTable(size_t finished_kept) : finished_kept_(finished_kept) {}

  static uint64_t tokenId(uint64_t job, uint32_t local) { return (job << 32) | local; }

  // ---- records
  JobRec* find(uint64_t job_id);
  const JobRec* find(uint64_t job_id) const;
  // A new, empty record (its tokens are laid out by build()).
  JobRec& add(uint64_t job_id, uint64_t incarnation, std::string name, Nanos now);
  // Drops a record whose build or admission failed (never counted running).
  void remove(uint64_t job_id) {
    if (auto it = jobs_.find(job_id); it != jobs_.end()) running_seqs_.erase(it->second->seq);
    jobs_.erase(job_id);
  }

  // Lays out `job`'s tokens from `spec`: `init(spec_rec)` fills each spec's op, weight and
  // attempts (the op table's business); then spec index, input counts, dependents (CSR) and
  // outputs. Counts the job running and its tokens live. Readiness, deadlines and keys are the
  // caller's (it walks the specs afterwards).
  template <typename InitSpec>
  void build(JobRec& job, JobSpec spec, InitSpec&& init) {
    job.specs.reserve(spec.tokens.size());
    uint32_t first = 0;
    for (auto& ts : spec.tokens) {
      SpecRec& s = job.specs.emplace_back();
      s.first = first;
      first += ts.repeat;
      s.keep_result = ts.output;
      job.any_output |= ts.output;
      s.spec = std::move(ts);
      init(s);
    }
    layOut(job);
  }

  // ---- results
  static void setResult(JobRec& job, TokenRec& t, const Value& v);
  static Value getResult(const JobRec& job, const TokenRec& t);
  static void freeResult(JobRec& job, TokenRec& t);
  static bool isOutput(const JobRec& job, uint32_t local);
  static std::string outputName(const JobRec& job, uint32_t local);
  // Placement features of a token (Scheduler::costs/place).
  static TokenInfo tokenInfo(const JobRec& job, uint32_t local);

  // Token `local` finished with `v`: keeps the result if someone needs it (a consumer, an output,
  // an alias's own result) and marks it done. Then wake() its dependents and retired() it.
  static void completed(JobRec& job, uint32_t local, const Value& v) {
    TokenRec& t = job.tokens[local];
    if (t.consumers > 0 || job.specs[t.spec].keep_result || t.state == kAlias ||
        job.outputs.size() < kMaxSinkOutputs)
      setResult(job, t, v);
    t.state = kDone;
    ++job.done;
  }
  // Calls `ready(dep)` for each waiting dependent of `local` whose last input this was.
  template <typename Ready>
  static void wake(JobRec& job, uint32_t local, Ready&& ready) {
    for (uint32_t d = job.dep_offset[local]; d < job.dep_offset[local + 1]; ++d) {
      TokenRec& dt = job.tokens[job.deps[d]];
      // Only waiting tokens count inputs: a finished dependent of a token run again (reopen)
      // already has its inputs.
      if (dt.state == kWaiting && --dt.pending == 0) ready(job.deps[d]);
    }
  }
  // Token `local` reached a final state: its inputs lose a consumer (a result nobody else needs
  // is freed) and it stops counting live.
  void retired(JobRec& job, uint32_t local);
  // Re-runs wrong results (verify found a lying node): `seeds` are done tokens whose results
  // cannot be trusted. They and every finished token downstream of them are reopened (result
  // freed, state kWaiting, counted live again); unfinished dependents that already hold or were
  // sent the wrong value are handed to `stop(local)` first (the caller takes them off their
  // node or queue), then wait again. Inputs of reopened tokens whose results were already freed
  // are reopened too (they run again to feed them). Pending counts and consumers are
  // recomputed; `ready(local)` is called for every reopened or stopped token whose inputs are
  // all done. Returns the number of done tokens reopened.
  template <typename Stop, typename Ready>
  uint64_t reopen(JobRec& job, const std::vector<uint32_t>& seeds, Stop&& stop, Ready&& ready) {
    std::vector<uint32_t> order;
    std::vector<uint8_t> mark;
    collectReopen(job, seeds, order, mark, stop);
    return applyReopen(job, order, mark, ready);
  }
  // `tokens` of a just-built job were marked done from a journal checkpoint at restart
  // (CoordinatorCore::applyCheckpoint): they stop counting live without being retired().
  void resumedDone(uint64_t tokens) { live_tokens_ -= tokens; }

  // ---- job lifecycle
  // When every token of a running job is finished: sets its final state and finish time, stops
  // counting it running and returns true (the caller sends its outcome, then remember()s it);
  // its token arrays are freed by the next reap().
  bool finishIfDone(JobRec& job, Nanos now);
  // Keeps a finished job's summary (the newest `finished_kept` are kept); also restores
  // summaries from the journal.
  void remember(control::JobStatus status);
  // Frees the records of jobs finished since the last call.
  void reap();

  // `peer` streams progress of running `job`.
  void watch(JobRec& job, const std::string& peer);
  // Running jobs with watchers (ids; the caller re-checks them).
  const std::unordered_set<uint64_t>& watched() const { return watched_; }

  // ---- queries
  control::JobStatus statusOf(const JobRec& job, bool with_outputs, Nanos now) const;
  // A live job's status, else a remembered summary, else NotFound.
  StatusOr<control::JobStatus> status(uint64_t job_id, bool with_outputs, Nanos now) const;
  // Remembered summaries (oldest first), then running jobs; without outputs.
  std::vector<control::JobStatus> list(Nanos now) const;
  template <typename Fn>
  void forEachRunning(Fn&& fn) {
    for (auto& [id, j] : jobs_)
      if (j->state == control::JobState::kRunning) fn(*j);
  }
  uint64_t running() const { return running_; }
  uint64_t admitted() const { return admitted_; }
  // The admission sequence (JobRec::seq) of the oldest running job; admitted() when none runs.
  // Every job admitted before sequence s has finished once this is >= s (NodeTable holds slots
  // of departed nodes until then: their results in those jobs must stay traceable).
  uint64_t oldestRunningSeq() const {
    return running_seqs_.empty() ? admitted_ : *running_seqs_.begin();
  }
  uint64_t liveTokens() const { return live_tokens_; }
  size_t records() const { return jobs_.size(); }
  size_t remembered() const { return finished_.size(); }

 private:
  void layOut(JobRec& job);
  // reopen(): 1 = done token to run again, 2 = unfinished token whose inputs are recounted.
  template <typename Stop>
  static void collectReopen(JobRec& job, const std::vector<uint32_t>& seeds,
                            std::vector<uint32_t>& order, std::vector<uint8_t>& mark, Stop&& stop) {
    mark.assign(job.tokens.size(), 0);
    for (uint32_t s : seeds) {
      if (s >= job.tokens.size() || mark[s] || job.tokens[s].state != kDone) continue;
      mark[s] = 1;
      order.push_back(s);
    }
    // Downstream: everything that consumed a wrong value.
    for (size_t k = 0; k < order.size(); ++k) {
      const uint32_t x = order[k];
      if (mark[x] != 1) continue;
      for (uint32_t d = job.dep_offset[x]; d < job.dep_offset[x + 1]; ++d) {
        const uint32_t dep = job.deps[d];
        if (mark[dep]) continue;
        TokenRec& dt = job.tokens[dep];
        if (dt.state == kDone) {
          mark[dep] = 1;
        } else if (dt.state == kRunning || dt.state == kReady || dt.state == kDelayed) {
          stop(dep);
          dt.state = kWaiting;
          mark[dep] = 2;
        } else if (dt.state == kWaiting) {
          mark[dep] = 2;
        } else {
          continue;  // failed, cancelled, alias: left as they are
        }
        order.push_back(dep);
      }
    }
    // Upstream: inputs of reopened tokens whose results are gone run again too.
    for (size_t k = 0; k < order.size(); ++k) {
      const uint32_t x = order[k];
      if (mark[x] != 1) continue;
      const SpecRec& s = job.specs[job.tokens[x].spec];
      forEachRef(s.spec, x - s.first, [&](uint32_t i) {
        const TokenRec& in = job.tokens[i];
        if (mark[i] || in.state != kDone || in.tag != kNoValue) return;
        mark[i] = 1;
        order.push_back(i);
      });
    }
  }
  template <typename Ready>
  uint64_t applyReopen(JobRec& job, const std::vector<uint32_t>& order,
                       const std::vector<uint8_t>& mark, Ready&& ready) {
    uint64_t reopened = 0;
    for (uint32_t x : order) {
      if (mark[x] != 1) continue;
      TokenRec& t = job.tokens[x];
      freeResult(job, t);
      t.state = kWaiting;
      t.by = TokenRec::kNoBy;
      --job.done;
      ++reopened;
    }
    for (uint32_t x : order) {  // a reopened token is again a consumer of each input
      if (mark[x] != 1) continue;
      const SpecRec& s = job.specs[job.tokens[x].spec];
      forEachRef(s.spec, x - s.first, [&](uint32_t i) { ++job.tokens[i].consumers; });
    }
    for (uint32_t x : order) {
      TokenRec& t = job.tokens[x];
      if (t.state != kWaiting) continue;  // a stopped token the caller failed meanwhile
      const SpecRec& s = job.specs[t.spec];
      t.pending = 0;
      forEachRef(s.spec, x - s.first, [&](uint32_t i) {
        if (job.tokens[i].state != kDone) ++t.pending;
      });
    }
    live_tokens_ += reopened;
    job.reopened += reopened;
    for (uint32_t x : order)
      if (job.tokens[x].state == kWaiting && job.tokens[x].pending == 0) ready(x);
    return reopened;
  }

  size_t finished_kept_;
  std::unordered_map<uint64_t, std::unique_ptr<JobRec>> jobs_;
  // Kept beside jobs_ so no tick or stats call walks every job.
  uint64_t running_ = 0;
  uint64_t admitted_ = 0;            // this process (resumed jobs included)
  std::set<uint64_t> running_seqs_;  // JobRec::seq of running jobs
  uint64_t live_tokens_ = 0;
  std::unordered_set<uint64_t> watched_;  // running jobs with progress watchers
  std::vector<uint64_t> finished_ids_;    // finished since the last reap
  std::deque<control::JobStatus> finished_;
};

}  // namespace tokengate::coordinator
