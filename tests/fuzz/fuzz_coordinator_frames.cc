// libFuzzer target: the coordinator's handlers for every frame a peer may send
// (hello, heartbeat, resultBatch, bye, submitJob, watchJob, cancelJob, ping,
// statsRequest, and kinds it must refuse), on a fresh CoordinatorCore per
// input with an in-memory outbox and a fake clock. Input: a frame sequence
// (frame_sequence.h); the record's peer byte picks one of four routing ids,
// and between records the clock moves on and the core's timers run.
#include <prometheus/registry.h>

#include <cstddef>
#include <cstdint>

#include "coordinator/core/coordinator.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fuzz/frame_sequence.h"

using namespace tokengate;

namespace {

class CountingOutbox final : public coordinator::Outbox {
 public:
  void send(const std::string&, std::string frame) override { bytes_ += frame.size(); }
  size_t bytes_ = 0;
};

const std::string kPeers[4] = {"node-a/0000000000000001", "node-b/0000000000000002", "client-1",
                               "client-2"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  testing::FakeClock clock;
  CountingOutbox outbox;
  coordinator::CoordinatorConfig config;
  config.max_frame_bytes = 1 << 20;
  config.max_live_tokens = 100'000;  // bounds what a fuzzed job may admit
  config.max_job_tokens = 100'000;
  coordinator::CoordinatorCore core(config, clock, outbox,
                                    std::make_shared<prometheus::Registry>());
  for (const auto& r : fuzz::splitRecords(data, size, 64)) {
    const std::string& peer = kPeers[r.peer & 3];
    if (r.peer & 0x80) {
      core.onDisconnected(peer);
      continue;
    }
    core.onBytes(peer, r.data, r.size);
    clock.advance((r.peer >> 2 & 0x1f) * 100 * kMillis);
    core.tick();
  }
  return 0;
}
