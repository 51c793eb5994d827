#include "coordinator/costmodel/telemetry_window.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace tokengate::costmodel {
namespace {

TelemetrySample sampleWithRun(int64_t run_ns) {
  TelemetrySample s;
  s.run_ns = run_ns;
  return s;
}

TEST(TelemetryWindow, KeepsNewestSamplesOldestFirst) {
  TelemetryWindow w(3);
  EXPECT_EQ(w.size(), 0u);
  for (int i = 1; i <= 5; ++i) w.add(sampleWithRun(i));
  EXPECT_EQ(w.size(), 3u);
  EXPECT_EQ(w.totalAdded(), 5u);
  const auto snap = w.snapshot();
  ASSERT_EQ(snap.size(), 3u);
  EXPECT_EQ(snap[0].run_ns, 3);
  EXPECT_EQ(snap[1].run_ns, 4);
  EXPECT_EQ(snap[2].run_ns, 5);
}

TEST(TelemetryWindow, PartialRingSnapshotInInsertionOrder) {
  TelemetryWindow w(10);
  std::vector<TelemetrySample> batch = {sampleWithRun(1), sampleWithRun(2)};
  w.addBatch(batch);
  w.add(sampleWithRun(3));
  const auto snap = w.snapshot();
  ASSERT_EQ(snap.size(), 3u);
  EXPECT_EQ(snap[0].run_ns, 1);
  EXPECT_EQ(snap[2].run_ns, 3);
}

TEST(TelemetryWindow, BatchLargerThanCapacityKeepsTail) {
  TelemetryWindow w(4);
  std::vector<TelemetrySample> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(sampleWithRun(i));
  w.addBatch(batch);
  const auto snap = w.snapshot();
  ASSERT_EQ(snap.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(snap[static_cast<size_t>(i)].run_ns, 6 + i);
  EXPECT_EQ(w.totalAdded(), 10u);
}

TEST(TelemetryWindow, ConcurrentAddAndSnapshot) {
  TelemetryWindow w(1000);
  // The writer keeps adding until the reader has taken 100 snapshots, so they really overlap
  // (a writer that finished first made this test flaky).
  std::atomic<size_t> snapshots{0};
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 20000 || snapshots.load() < 100; ++i) w.add(sampleWithRun(i));
    done.store(true);
  });
  while (!done.load()) {
    const auto snap = w.snapshot();
    // Always a contiguous, increasing run of the newest samples.
    for (size_t i = 1; i < snap.size(); ++i) ASSERT_EQ(snap[i].run_ns, snap[i - 1].run_ns + 1);
    snapshots.fetch_add(1);
  }
  writer.join();
  EXPECT_EQ(w.size(), 1000u);
  EXPECT_GE(w.totalAdded(), 20000u);
}

}  // namespace
}  // namespace tokengate::costmodel
