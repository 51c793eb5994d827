// Dispatcher: moves ready tokens onto nodes. Owned by CoordinatorCore; loop thread only.
//
// How a token moves through it: ready() puts a token whose inputs are done into its op's ready
// queue for its lane (or, if a node died while it ran, into the suspects queue: suspects run
// one per node at a time, so a poison token kills one node, not all). run() hands each lane's
// queues to the scheduler in slices, bounded by every node lane's credit (workers x
// credit_per_worker tokens in flight), op limits and rate buckets; placed tokens are marked
// running on their node and appended to that node's pending batch. A batch is sent when it is
// full (by count, or by predicted work once the scheduler sets a work target), at once when its
// node has nothing else in flight (an idle node never waits), and otherwise by flushAll(), which
// the server loop calls after each burst of frames it handles: a busy node's batch fills only
// while the loop is still reading frames that may add to it, and never waits for a timer (Nagle
// off, like Kafka's linger.ms=0). release() undoes the
// accounting when a running token finishes, fails, is returned or is re-queued.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "common/clock.h"
#include "common/wire.h"
#include "coordinator/core/job_table.h"
#include "coordinator/core/metrics.h"
#include "coordinator/core/node_table.h"
#include "coordinator/core/op_table.h"
#include "coordinator/core/outbox.h"
#include "coordinator/core/scheduler.h"

namespace tokengate::coordinator {

struct DispatchConfig {
  uint32_t max_batch = 1024;          // tokens per batch
  uint32_t credit_per_worker = 2048;  // in-flight tokens per lane worker
};

class Dispatcher {
 public:
  Dispatcher(DispatchConfig config, JobTable& jobs, OpTable& ops, NodeTable& nodes, Clock& clock,
             Outbox& outbox, Metrics& metrics)
      : config_(config),
        jobs_(jobs),
        ops_(ops),
        nodes_(nodes),
        clock_(clock),
        outbox_(outbox),
        metrics_(metrics) {}

  // The placement policy (not owned; the core owns it and outlives every call).
  void setScheduler(Scheduler& scheduler) { scheduler_ = &scheduler; }
  // Called for every token markRunning() starts (the core's run-timeout bookkeeping). `now` is
  // read once per dispatch pass, not per token: a clock read cost as much as the rest of the
  // per-token bookkeeping, and run timeouts are coarse (RunTimeouts buckets of 100 ms).
  using StartedHook =
      std::function<void(const JobRec& job, uint32_t local, uint32_t slot, Nanos now)>;
  void setStartedHook(StartedHook hook) { on_started_ = std::move(hook); }
  // Verified execution (verifier.h): a sampled token runs again only on a node `filter(id,
  // node)` allows (one that has not run it yet). A token no node may run now is parked and
  // `parked(id)` is called; unparkVerify() lets parked tokens try again.
  using VerifyFilter = std::function<bool(uint64_t id, const NodeRec& node)>;
  using ParkedHook = std::function<void(uint64_t id)>;
  void setVerifyHooks(VerifyFilter filter, ParkedHook parked) {
    verify_filter_ = std::move(filter);
    on_parked_ = std::move(parked);
  }

  // Lane a token of spec `s` runs on: the spec's explicit weight, else its op's effective lane.
  Weight laneFor(const SpecRec& s) const;
  // Token `local` of `job` may run: queued for dispatch (state kReady).
  void ready(JobRec& job, uint32_t local);
  // Token `local` of `job` runs again for verification: queued (state kReady) for a node the
  // verify filter allows. Verification runs go before the ready queues, ignore op rate limits
  // and are placed on the allowed node with the fewest tokens in flight per worker.
  void readyVerify(JobRec& job, uint32_t local);
  // Parked verification runs try again (a node joined or was undrained; the core calls it on
  // every tick).
  void unparkVerify();
  size_t parkedVerify() const { return parked_.size(); }
  // Places queued tokens on nodes with credit and sends batches that are full or whose node is
  // idle. A busy node's partial batch waits for flushAll() (the end of the burst).
  void run();
  // Sends `slot`'s pending batch now (tokens no longer running there are dropped from it).
  void flush(uint32_t slot);
  void flushAll();
  // Whether some node has a partial batch not yet sent.
  bool pending() const;

  // Marks a token running on `slot` (lane accounting, the node's token index). Used by run()
  // and for suspects.
  void markRunning(JobRec& job, uint32_t local, uint32_t slot, Weight lane, double cost, Nanos now);
  // Undoes markRunning's accounting for a running token (it finished, failed, came back).
  void release(JobRec& job, TokenRec& t);
  // Tokens placed on `slot` but not yet sent go back to the ready queues (drain).
  void requeueUnsent(uint32_t slot);

  // Tokens waiting for dispatch (ready queues and suspects).
  size_t queued() const;
  // Drops suspects for which `drop(id)` returns true (op drain).
  template <typename Drop>
  void removeSuspects(Drop&& drop) {
    std::deque<uint64_t> keep;
    for (uint64_t id : suspects_)
      if (!drop(id)) keep.push_back(id);
    suspects_ = std::move(keep);
  }

  uint64_t dispatched() const { return dispatched_; }
  uint64_t batches() const { return batches_; }

 private:
  void runSuspects();
  void runVerify();
  void runLane(Weight lane);
  size_t runSlice(uint32_t op, Weight lane, uint64_t max_tokens);
  // Appends a placed token to the node's pending batch and sends the batch once it is full by
  // count or by predicted work (`work_target` 0 = count only).
  void addToBatch(NodeRec& n, uint32_t slot, uint64_t id, double cost, double work_target,
                  Nanos now);

  DispatchConfig config_;
  JobTable& jobs_;
  OpTable& ops_;
  NodeTable& nodes_;
  Clock& clock_;
  Outbox& outbox_;
  Metrics& metrics_;
  StartedHook on_started_;
  Scheduler* scheduler_ = nullptr;
  std::deque<uint64_t> suspects_;  // tokens that were in flight when a node died
  std::deque<uint64_t> verify_;    // verification runs waiting for a node (readyVerify)
  std::deque<uint64_t> parked_;    // verification runs no node may take now
  VerifyFilter verify_filter_;
  ParkedHook on_parked_;
  uint64_t dispatched_ = 0, batches_ = 0;
  // A token's single int (2) or float (1) argument for TokenBatch.packed, or 0 (not packable:
  // a deadline, not exactly one argument, another value kind).
  uint8_t packedArg(const JobRec& j, uint32_t local, uint64_t& bits) const;

  // Scratch buffers reused across dispatch rounds.
  std::vector<TokenInfo> scratch_tokens_;
  std::vector<Placement> scratch_place_;
  std::vector<Candidate> scratch_cands_;
  std::vector<double> scratch_costs_;
  std::vector<uint32_t> scratch_op_table_;
  std::vector<uint8_t> scratch_kinds_;  // flush(): 0 plain, 1 packed float, 2 packed int
  std::vector<uint64_t> scratch_bits_;  // flush(): a packed token's argument (its 8 bytes)
  FrameScratch scratch_;  // first segment of every batch frame (flush() builds one at a time)
};

}  // namespace tokengate::coordinator
