// ResultBatcher: the node's result path, from executor results to
// resultBatch frames.
//
// Adaptive batching (Nagle off, like Kafka's linger.ms=0): results are due at
// once when the link is idle; batching happens only while results stream,
// i.e. while a result frame went out less than `busy_window_ns` ago. Then
// they wait until the batch holds `max_results`, the window since the last
// frame ran out, or the executor went idle (nothing more is coming). A lone
// result therefore never waits for a timer, and a million-token job still
// sends full frames.
//
// Frames stay below the coordinator's frame budget (Welcome.maxFrameBytes):
// a single result larger than the budget is replaced by a ResourceExhausted
// error so the token fails visibly instead of being dropped by the decoder.
//
// Ownership: owned by the CoordinatorLink; link thread only.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/wire.h"
#include "node/executor/executor.h"

namespace tokengate::node {

struct ResultBatcherConfig {
  size_t max_results = 1024;  // results per frame
  Nanos busy_window_ns = 0;   // 0 = every due check sends what is pending
};

class ResultBatcher {
 public:
  explicit ResultBatcher(ResultBatcherConfig config) : config_(config) {}

  void add(TaskResult r) { pending_.push_back(std::move(r)); }
  void addReturned(const ReturnedTask& t) { returned_.push_back(t); }
  // Moves the results of `session` out of `results` (others belong to a lost
  // session and are dropped) and likewise for `returned`; clears both.
  void take(uint64_t session, std::vector<TaskResult>& results,
            std::vector<ReturnedTask>& returned);

  bool empty() const { return pending_.empty() && returned_.empty(); }
  size_t size() const { return pending_.size() + returned_.size(); }
  void clear();

  // Whether pending results should go out now.
  bool due(Nanos now, bool executor_idle) const;
  // When a deferred batch becomes due (max Nanos if nothing is pending or
  // nothing is deferred).
  Nanos dueAt() const;

  // Sends everything pending as frames below `max_frame_bytes`; returns the
  // number of frames. `packed`: the coordinator reads ResultBatch.packed, `packed_decs`: and its
  // Dec50 columns (resultBatchFrame).
  size_t flush(uint64_t session, size_t max_frame_bytes, Nanos now,
               const std::function<void(std::string)>& send, bool packed = false,
               bool packed_decs = false);

 private:
  const ResultBatcherConfig config_;
  std::vector<TaskResult> pending_;
  std::vector<ReturnedTask> returned_;
  Nanos last_send_ = -1'000'000 * kSeconds;
  // First segment of every result frame (a full frame of 1,024 small results is ~140 KiB).
  FrameScratch scratch_{32 * 1024};
};

}  // namespace tokengate::node
