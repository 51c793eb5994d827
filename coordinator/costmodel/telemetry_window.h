// Bounded sliding window of telemetry samples (a ring buffer): the newest `capacity` samples.
//
// Ownership: owned by the coordinator wiring and shared by reference with the OnlineTrainer.
// Threads: the coordinator event-loop thread calls add(); the trainer thread calls snapshot().
// Both take a short mutex; snapshot() copies so training never holds the lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "coordinator/costmodel/features.h"
#include "coordinator/costmodel/sync.h"

namespace tokengate::costmodel {

class TelemetryWindow {
 public:
  explicit TelemetryWindow(size_t capacity);

  TelemetryWindow(const TelemetryWindow&) = delete;
  TelemetryWindow& operator=(const TelemetryWindow&) = delete;

  void add(const TelemetrySample& sample);
  void addBatch(std::span<const TelemetrySample> samples);

  // Copy of the current contents, oldest first. With `total`: also totalAdded() at the same
  // moment, so sample i of the copy is the (total - size + i)-th ever added.
  std::vector<TelemetrySample> snapshot(uint64_t* total = nullptr) const;
  // The newest min(n, size()) samples, oldest first, and totalAdded() at the same moment.
  std::vector<TelemetrySample> newest(size_t n, uint64_t* total = nullptr) const;

  size_t size() const;
  size_t capacity() const { return capacity_; }
  // Samples ever added (monotonic); the trainer uses it to count "new samples since last train".
  uint64_t totalAdded() const;

 private:
  const size_t capacity_;
  mutable internal::Mutex mu_;
  std::vector<TelemetrySample> ring_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;  // slot the next sample goes to once the ring is full
  uint64_t total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tokengate::costmodel
