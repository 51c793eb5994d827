// libFuzzer target: the node's handlers for every frame the coordinator
// sends (welcome, tokenBatch, control, ping/pong, reject, and kinds it must
// ignore), through CoordinatorLink::handleFrame over the in-memory socket and
// a fake clock; tokens run on a real one-worker executor offering the
// production operations (no test operations: `crash` would end the run).
// Input: a frame sequence (frame_sequence.h); the peer byte's low bits move
// the clock between records so timers (give-up, reconnect) run too.
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <thread>

#include "node/link/coordinator_link.h"
#include "node/ops/builtin_ops.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_link_socket.h"
#include "tests/fuzz/frame_sequence.h"

using namespace tokengate;
using namespace tokengate::node;

namespace {

struct Fixture {
  Fixture() {
    // Logs are off (TG_FUZZ_LOG=1 turns them on to read what an input does).
    if (std::getenv("TG_FUZZ_LOG") == nullptr) spdlog::set_level(spdlog::level::off);
    (void)registerBuiltinOps(registry);
    ExecutorConfig ec;
    ec.cores = {allowedCores().front()};
    ec.heavy_cores = 0;
    ec.pin = false;
    executor = std::move(*Executor::create(
        std::move(ec), [] {}, clock));
  }
  testing::FakeClock clock;
  Registry registry;
  std::unique_ptr<Executor> executor;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* fx = new Fixture();  // one executor (its threads) for the whole run
  testing::MemoryLinkNetwork net;
  LinkConfig config;
  config.node_id = "fuzz";
  config.incarnation = 1;
  config.max_frame_bytes = 1 << 20;
  config.stop_grace_ms = 0;
  CoordinatorLink link(config, fx->registry, *fx->executor, net.factory(), fx->clock);
  if (!link.start().ok()) return 0;
  for (const auto& r : fuzz::splitRecords(data, size, 64)) {
    link.handleFrame(r.data, r.size);
    fx->clock.advance((r.peer & 0x3f) * 100 * kMillis);
    link.tick();
    (void)net.take();
  }
  // Leave nothing behind for the next input: drop what is queued, let the rest finish.
  fx->executor->dropQueued();
  for (int i = 0; i < 10'000 && !fx->executor->idle(); ++i)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  link.tick();
  std::vector<TaskResult> results;
  std::vector<ReturnedTask> returned;
  fx->executor->takeResults(results, returned);
  fx->executor->undrain();
  return 0;
}
