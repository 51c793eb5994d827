// libFuzzer target: the coordinator's side of the wire for every frame a peer may send (hello,
// heartbeat, resultBatch, bye, submitJob, watchJob, cancelJob, adminRequest, ping,
// statsRequest, and kinds it must refuse), as CoordinatorServer::handleMessage runs it with
// CURVE on: PeerAuth's access check (role per frame kind, admin request per role, node id bound
// to its key), then CoordinatorCore::onBytes with the peer's key (convictions by key). A fresh
// PeerAuth and core per input, an in-memory outbox and a fake clock.
//
// Speed (2026-11-29, 2-core machine shared with other builds, load 5-9): CPU per input 2.33 ms
// -> 1.03 ms (40 s runs from the seed corpus, -seed=1: 7,218 inputs in 16.9 CPU s before,
// 15,725 in 16.2 CPU s after; system time 6.9 s -> 0.9 s); wall rate in those runs 180 -> 393
// inputs/s, in 60 s runs 133 -> 328 (load ~8). perf showed a quarter of the time in page faults
// zeroing the core's and dispatcher's 512 KiB FrameScratch segments, built per input (219k ->
// 85k minor faults replaying 471 inputs); they now start at 8 KiB and grow to the largest frame
// (common/wire.h). Nothing the target checks changed. What is left per input: about a
// quarter in libFuzzer's feature bookkeeping (InputCorpus::UpdateFeatureFrequency: thousands
// of edges per input), a fifth in ASan's allocator (malloc/free with stack traces), a fifth
// building and destroying the core and its metric families, the rest in the handlers
// (OpTable::intern of fuzzed hellos with up to 4096 op names, 12 metric series each).
//
// Input: a frame sequence (frame_sequence.h). The record's peer byte:
//   bits 0-2  which peer sends it (kPeers: two node keys, a restarted node-a, a rogue node key,
//             an admin, an operator and a viewer client, and a viewer on node-a's routing id);
//   bits 3-6  how far the clock moves after it (x 250 ms: heartbeats, node loss at 3 s, run
//             timeouts at 2 s, retries and events all fire);
//   bit 7     the peer's connection closes instead (the record's bytes are ignored).
// Invariants checked: every frame the coordinator sends decodes; no more tokens finish or stay
// live than were admitted.
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/security/curve.h"
#include "common/wire.h"
#include "coordinator/core/coordinator.h"
#include "coordinator/core/peer_auth.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fuzz/frame_sequence.h"

using namespace tokengate;
using security::Role;

namespace {

// Checks every frame the core or PeerAuth sends: it must decode as a frame.
class CheckingOutbox final : public coordinator::Outbox {
 public:
  void send(const std::string&, std::string frame) override {
    auto decoded = decodeFrame(frame.data(), frame.size(), size_t{1} << 30);
    if (!decoded.ok()) {
      fprintf(stderr, "coordinator sent an undecodable frame: %s\n",
              decoded.status().ToString().c_str());
      std::abort();
    }
    ++frames_;
  }
  size_t frames_ = 0;
};

struct Peer {
  std::string routing_id;
  Role role;
  std::string key;
};

// Routing ids as the node and client libraries make them (node: "<id>/<incarnation hex>").
const Peer kPeers[8] = {
    {"node-a/0000000000000001", Role::kNode, "key-node-a"},
    {"node-b/0000000000000002", Role::kNode, "key-node-b"},
    {"client-admin", Role::kAdmin, "key-admin"},
    {"client-operator", Role::kOperator, "key-operator"},
    {"client-viewer", Role::kViewer, "key-viewer"},
    {"node-a/0000000000000003", Role::kNode, "key-node-a"},    // node-a restarted, same key
    {"rogue/0000000000000004", Role::kNode, "key-rogue"},      // another node key
    {"node-a/0000000000000001", Role::kViewer, "key-viewer"},  // a viewer on node-a's id
};

// Logs are off (TG_FUZZ_LOG=1 turns them on to read what an input does).
struct Quiet {
  Quiet() {
    if (std::getenv("TG_FUZZ_LOG") == nullptr) spdlog::set_level(spdlog::level::off);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Quiet quiet;
  testing::FakeClock clock;
  CheckingOutbox outbox;
  coordinator::CoordinatorConfig config;
  config.max_frame_bytes = 1 << 20;
  // Bounds what a fuzzed job may admit: a repeat of 100k tokens with an idempotency key costs
  // ~100 ms per input and finds nothing a 2k one does not.
  config.max_live_tokens = 4'000;
  config.max_job_tokens = 2'000;
  config.run_timeout_ns = 2 * kSeconds;
  config.run_timeout_quarantine = 2;
  config.run_timeout_strike_window_ns = 10 * kSeconds;
  config.departed_node_retention_ns = 5 * kSeconds;
  auto registry = std::make_shared<prometheus::Registry>();
  coordinator::CoordinatorCore core(config, clock, outbox, registry);
  // CURVE "on" without sockets: the ZAP handler is not set up; each peer's identity is given.
  security::ServerCurve curve;
  curve.secret_key = "fuzz";
  coordinator::PeerAuth auth(curve, *registry, clock, config.max_frame_bytes);
  const auto node_live = [&](const std::string& id) { return core.nodeLive(id); };
  for (const auto& r : fuzz::splitRecords(data, size, 64)) {
    const Peer& peer = kPeers[r.peer & 7];
    if (r.peer & 0x80) {
      core.onDisconnected(peer.routing_id);
      auth.forget(peer.routing_id);
    } else if (auto refusal = auth.checkFrame(peer.routing_id, {peer.role, peer.key}, r.data,
                                              r.size, node_live)) {
      outbox.send(peer.routing_id, std::move(*refusal));
    } else {
      core.onBytes(peer.routing_id, r.data, r.size, peer.key);  // as the server passes it
    }
    core.flushAll();
    clock.advance((r.peer >> 3 & 0xf) * 250 * kMillis);
    core.tick();
  }
  // What the gateway and tgctl read must stay consistent with what happened.
  (void)core.listJobs();
  (void)core.listNodes();
  (void)core.listOps();
  const auto stats = core.stats();
  const auto& c = core.counters();
  const uint64_t finished = c.completed + c.failed + c.cancelled;
  if (finished > c.admitted || stats.tokens_live > c.admitted) {
    fprintf(stderr, "tokens: %lu admitted, %lu finished, %lu live\n",
            static_cast<unsigned long>(c.admitted), static_cast<unsigned long>(finished),
            static_cast<unsigned long>(stats.tokens_live));
    std::abort();
  }
  return 0;
}
