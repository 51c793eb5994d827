// Frame builders and parsers of the node side of the wire protocol
// (schema/tokengate.capnp). Pure functions of their inputs: no socket, no
// clock, no link state, so each is unit-tested and fuzzed on its own.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/wire.h"
#include "node/executor/executor.h"
#include "node/registry/registry.h"

namespace tokengate::node {

// What a hello says about this node.
struct HelloInfo {
  std::string node_id;
  uint64_t incarnation = 0;
  std::vector<int> cores;
  std::vector<LaneLayout> lanes;
  std::vector<std::pair<std::string, Weight>> operations;
  std::vector<bool> deterministic;  // by index of `operations` (missing = false)
  uint32_t pid = 0;
  double speed_factor = 1;
  bool packed_tokens = true;  // this node reads TokenBatch.packed
};
HelloInfo helloInfo(const std::string& node_id, uint64_t incarnation, const Executor& executor,
                    const Registry& registry);

std::string helloFrame(const HelloInfo& info);
// `cpu_ns`: CPU time the process has used (user + system).
std::string heartbeatFrame(uint64_t session, const std::vector<LaneStats>& lanes,
                           const std::vector<CoreStats>& cores, uint64_t rss_bytes, bool draining,
                           uint64_t cpu_ns = 0);
std::string byeFrame(uint64_t session, const std::string& reason);
std::string pongFrame(uint64_t ping);

// Conservative wire size of one result: the TokenResult and Value structs
// (~16 words) plus the payload rounded up to whole words.
size_t resultWireBytes(const TaskResult& r);
constexpr size_t kReturnedWireBytes = 24;
constexpr size_t kResultFrameOverhead = 256;

// One resultBatch frame with `results` and `returned` (the caller keeps it
// below the frame budget: see ResultBatcher). With `scratch` the frame is built in that
// reused first segment (common/wire.h) instead of a freshly calloc'ed one per frame.
// With `packed` (the coordinator's Welcome.packedResults), successful results with an int or
// float value whose run and queue times fit 32 bits go to ResultBatch.packed as columns (one
// block per value kind); the rest stay in `results`. With `packed_decs` as well (the welcome's
// packedDecResults), Dec50 values go to a block of `decs` columns too.
std::string resultBatchFrame(uint64_t session, std::span<const TaskResult> results,
                             std::span<const ReturnedTask> returned,
                             FrameScratch* scratch = nullptr, bool packed = false,
                             bool packed_decs = false);
void fillResultBatch(wire::Frame::Builder frame, uint64_t session,
                     std::span<const TaskResult> results, std::span<const ReturnedTask> returned,
                     bool packed = false, bool packed_decs = false);
// Whether `r` may travel in a PackedResults block, and as which kind (1 float, 2 int, 3 Dec50
// if `decs`, 0 no).
int packedKind(const TaskResult& r, bool decs = false);

// The number of tokens in a packed block; throws a kj::Exception (a malformed frame) if its
// columns differ in length or its value kind is unknown.
size_t packedTokenCount(wire::PackedTokens::Reader blk);

// A tokenBatch turned into executor tasks (`tokens`, then every `packed` block). Tokens naming an
// operation this node does not offer (or an out-of-range op index) become immediate error results
// instead. `now` anchors relative deadlines.
struct DecodedBatch {
  std::vector<Task> tasks;
  std::vector<TaskResult> errors;
};
DecodedBatch decodeTokenBatch(wire::TokenBatch::Reader batch, const Registry& registry,
                              uint64_t session, Nanos now);

// A tokenBatch larger than this node's frame limit (or one that fails the
// full decode) is not run, but its token list is read with a bounded reader so
// each token is answered with an error instead of staying in flight on the
// coordinator forever. Returns every token's id, attempt, lane and wire size
// (its arguments included), or an error if even that fails.
struct TokenRef {
  uint64_t id = 0;
  uint32_t attempt = 0;
  Weight lane = Weight::kLight;
  size_t wire_bytes = 0;
};
StatusOr<std::vector<TokenRef>> tokenRefsOfOversizeBatch(const void* data, size_t size,
                                                         uint64_t& session);

}  // namespace tokengate::node
