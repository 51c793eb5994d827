#include "node/link/frames.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/exception.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <optional>

namespace tokengate::node {

namespace {

wire::Frame::Builder initFrame(capnp::MessageBuilder& msg) {
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  return f;
}

}  // namespace

HelloInfo helloInfo(const std::string& node_id, uint64_t incarnation, const Executor& executor,
                    const Registry& registry) {
  HelloInfo h;
  h.node_id = node_id;
  h.incarnation = incarnation;
  h.cores = executor.cores();
  h.lanes = executor.layout();
  for (const auto& op : registry.operations()) {
    h.operations.emplace_back(op->name, op->weight);
    h.deterministic.push_back(op->deterministic);
  }
  h.pid = static_cast<uint32_t>(getpid());
  h.speed_factor = executor.speedFactor();
  return h;
}

std::string helloFrame(const HelloInfo& info) {
  capnp::MallocMessageBuilder msg;
  auto h = initFrame(msg).initHello();
  h.setProtocolVersion(kProtocolVersion);
  h.setNodeId(info.node_id);
  h.setIncarnation(info.incarnation);
  auto cl = h.initCores(static_cast<unsigned>(info.cores.size()));
  for (unsigned i = 0; i < info.cores.size(); ++i) cl.set(i, static_cast<uint32_t>(info.cores[i]));
  auto ll = h.initLanes(static_cast<unsigned>(info.lanes.size()));
  for (unsigned i = 0; i < info.lanes.size(); ++i) {
    const LaneLayout& lane = info.lanes[i];
    ll[i].setWeight(toWire(lane.weight));
    auto lc = ll[i].initCores(static_cast<unsigned>(lane.cores.size()));
    for (unsigned j = 0; j < lane.cores.size(); ++j)
      lc.set(j, static_cast<uint32_t>(lane.cores[j]));
    ll[i].setWorkers(lane.workers);
  }
  auto ol = h.initOperations(static_cast<unsigned>(info.operations.size()));
  for (unsigned i = 0; i < info.operations.size(); ++i) {
    ol[i].setName(info.operations[i].first);
    ol[i].setWeight(toWire(info.operations[i].second));
    ol[i].setDeterministic(i < info.deterministic.size() && info.deterministic[i]);
  }
  h.setPid(info.pid);
  h.setSpeedFactor(info.speed_factor);
  h.setPackedTokens(info.packed_tokens);
  return encodeFrame(msg);
}

std::string heartbeatFrame(uint64_t session, const std::vector<LaneStats>& lanes,
                           const std::vector<CoreStats>& cores, uint64_t rss_bytes, bool draining,
                           uint64_t cpu_ns) {
  capnp::MallocMessageBuilder msg;
  auto hb = initFrame(msg).initHeartbeat();
  hb.setSession(session);
  auto ll = hb.initLanes(static_cast<unsigned>(lanes.size()));
  for (unsigned i = 0; i < lanes.size(); ++i) {
    ll[i].setWeight(toWire(lanes[i].weight));
    ll[i].setQueued(lanes[i].queued);
    ll[i].setRunning(lanes[i].running);
    ll[i].setBusyNs(lanes[i].busy_ns);
    ll[i].setCompleted(lanes[i].completed);
  }
  auto cl = hb.initCores(static_cast<unsigned>(cores.size()));
  for (unsigned i = 0; i < cores.size(); ++i) {
    cl[i].setCore(cores[i].core);
    cl[i].setTokens(cores[i].tokens);
  }
  hb.setRssBytes(rss_bytes);
  hb.setDraining(draining);
  hb.setCpuNs(cpu_ns);
  return encodeFrame(msg);
}

std::string byeFrame(uint64_t session, const std::string& reason) {
  capnp::MallocMessageBuilder msg;
  auto b = initFrame(msg).initBye();
  b.setSession(session);
  b.setReason(reason);
  return encodeFrame(msg);
}

std::string pongFrame(uint64_t ping) {
  capnp::MallocMessageBuilder msg;
  initFrame(msg).setPong(ping);
  return encodeFrame(msg);
}

size_t resultWireBytes(const TaskResult& r) {
  const size_t payload =
      r.outcome.ok() ? r.outcome->byteSize() : r.outcome.status().message().size();
  return 128 + (payload + 7) / 8 * 8;
}

std::string resultBatchFrame(uint64_t session, std::span<const TaskResult> results,
                             std::span<const ReturnedTask> returned, FrameScratch* scratch,
                             bool packed, bool packed_decs) {
  if (scratch != nullptr) {
    auto f = newFrame(*scratch);
    fillResultBatch(f.root, session, results, returned, packed, packed_decs);
    return f.encode();
  }
  size_t bytes = kResultFrameOverhead + returned.size() * kReturnedWireBytes;
  for (const auto& r : results) bytes += resultWireBytes(r);
  auto f = newFrame(static_cast<unsigned>(std::min<size_t>(bytes / 8 + 64, 1u << 20)));
  fillResultBatch(f.root, session, results, returned, packed, packed_decs);
  return f.encode();
}

int packedKind(const TaskResult& r, bool decs) {
  constexpr uint64_t kMax32 = std::numeric_limits<uint32_t>::max();
  if (!r.outcome.ok() || r.run_ns > kMax32 || r.queue_ns > kMax32) return 0;
  if (r.outcome->isDouble()) return 1;
  if (r.outcome->isInt()) return 2;
  if (decs && r.outcome->isDec()) return 3;
  return 0;
}

void fillResultBatch(wire::Frame::Builder frame, uint64_t session,
                     std::span<const TaskResult> results, std::span<const ReturnedTask> returned,
                     bool packed, bool packed_decs) {
  auto rb = frame.initResultBatch();
  rb.setSession(session);
  packed_decs = packed && packed_decs;
  size_t per_kind[4] = {results.size(), 0, 0, 0};
  if (packed) {
    per_kind[0] = 0;
    for (const auto& r : results) ++per_kind[packedKind(r, packed_decs)];
  }
  auto rl = rb.initResults(static_cast<unsigned>(per_kind[0]));
  unsigned plain = 0;
  for (const auto& r : results) {
    if (packed && packedKind(r, packed_decs) != 0) continue;
    auto b = rl[plain++];
    b.setId(r.id);
    b.setAttempt(r.attempt);
    if (r.outcome.ok())
      toWire(*r.outcome, b.initValue());
    else
      toWire(r.outcome.status(), b.initError());
    b.setRunNs(r.run_ns);
    b.setQueueNs(r.queue_ns);
    b.setCore(r.core);
    b.setLane(toWire(r.lane));
  }
  const unsigned nblocks =
      (per_kind[1] > 0 ? 1u : 0u) + (per_kind[2] > 0 ? 1u : 0u) + (per_kind[3] > 0 ? 1u : 0u);
  if (nblocks > 0) {
    auto blocks = rb.initPacked(nblocks);
    unsigned bi = 0;
    for (int kind = 1; kind <= 3; ++kind) {
      const auto n = static_cast<unsigned>(per_kind[kind]);
      if (n == 0) continue;
      auto blk = blocks[bi++];
      auto ids = blk.initIds(n);
      auto attempts = blk.initAttempts(n);
      auto run = blk.initRunNs(n);
      auto queue = blk.initQueueNs(n);
      auto f64s = kind == 1 ? blk.initF64s(n) : capnp::List<double>::Builder();
      auto i64s = kind == 2 ? blk.initI64s(n) : capnp::List<int64_t>::Builder();
      std::optional<PackedDecWriter> decs;
      if (kind == 3) {
        auto group = blk.initDecs();
        group.initLimbs(3 * n);
        group.initExponents(n);
        group.initFlags(n);
        decs.emplace(group);
      }
      unsigned i = 0;
      for (const auto& r : results) {
        if (packedKind(r, packed_decs) != kind) continue;
        ids.set(i, r.id);
        attempts.set(i, r.attempt);
        run.set(i, static_cast<uint32_t>(r.run_ns));
        queue.set(i, static_cast<uint32_t>(r.queue_ns));
        if (kind == 1)
          f64s.set(i, r.outcome->asDouble());
        else if (kind == 2)
          i64s.set(i, r.outcome->asInt());
        else
          decs->set(i, r.outcome->asDec());
        ++i;
      }
    }
  }
  auto tl = rb.initReturned(static_cast<unsigned>(returned.size()));
  for (unsigned i = 0; i < returned.size(); ++i) {
    tl[i].setId(returned[i].id);
    tl[i].setAttempt(returned[i].attempt);
  }
}

namespace {

TaskResult errorResult(uint64_t id, uint32_t attempt, Weight lane, uint64_t session, Status st) {
  TaskResult r;
  r.id = id;
  r.attempt = attempt;
  r.session = session;
  r.outcome = std::move(st);
  r.lane = lane == Weight::kUnspecified ? Weight::kLight : lane;
  return r;
}

}  // namespace

size_t packedTokenCount(wire::PackedTokens::Reader blk) {
  const unsigned n = blk.getIds().size();
  const bool f64 = blk.which() == wire::PackedTokens::F64S;
  const bool i64 = blk.which() == wire::PackedTokens::I64S;
  if ((!f64 && !i64) || blk.getOps().size() != n || blk.getWeights().size() != n ||
      blk.getAttempts().size() != n || (f64 ? blk.getF64s().size() : blk.getI64s().size()) != n)
    throw KJ_EXCEPTION(FAILED,
                       "packed token block of an unknown kind or with columns of unequal lengths");
  return n;
}

DecodedBatch decodeTokenBatch(wire::TokenBatch::Reader batch, const Registry& registry,
                              uint64_t session, Nanos now) {
  DecodedBatch out;
  auto names = batch.getOps();
  std::vector<const Operation*> table(names.size());
  for (unsigned i = 0; i < names.size(); ++i) {
    auto n = names[i];
    table[i] = registry.find(std::string_view(n.begin(), n.size()));
  }
  // One token: its Task, or nullptr when it became an error result. For a plain token (`tok`)
  // the Task is complete; a packed one's caller appends the argument in place (no Value
  // temporary copied into the Task per token).
  auto one = [&](uint64_t id, uint32_t attempt, uint16_t idx, wire::Weight weight,
                 const wire::TokenTask::Reader* tok) -> Task* {
    if (idx >= table.size()) {
      out.errors.push_back(
          errorResult(id, attempt, fromWire(weight), session,
                      absl::InvalidArgumentError(fmt::format(
                          "operation index {} out of range ({} ops)", idx, table.size()))));
      return nullptr;
    }
    if (table[idx] == nullptr) {
      // The name is whatever the peer sent: quote it with its length bounded.
      auto n = names[idx];
      std::string_view name(n.begin(), std::min<size_t>(n.size(), 128));
      out.errors.push_back(
          errorResult(id, attempt, fromWire(weight), session,
                      absl::NotFoundError(fmt::format("unknown operation {}", name))));
      return nullptr;
    }
    Task& t = out.tasks.emplace_back();
    t.id = id;
    t.attempt = attempt;
    t.session = session;
    t.op = table[idx];
    t.lane = fromWire(weight);
    if (tok == nullptr) return &t;
    t.deadline_ns = tok->getDeadlineMs() != 0 ? now + tok->getDeadlineMs() * kMillis : 0;
    auto args = tok->getArgs();
    t.args.reserve(args.size());
    for (auto a : args) t.args.push_back(fromWire(a));
    return &t;
  };
  auto tokens = batch.getTokens();
  auto packed = batch.getPacked();
  // Every block is checked before any token is kept: a malformed one refuses the whole batch
  // (thrown, like any malformed frame: CoordinatorLink answers each token with an error).
  size_t total = tokens.size();
  for (auto blk : packed) total += packedTokenCount(blk);
  out.tasks.reserve(total);
  for (auto tok : tokens) one(tok.getId(), tok.getAttempt(), tok.getOp(), tok.getWeight(), &tok);
  for (auto blk : packed) {
    const unsigned n = blk.getIds().size();
    auto ids = blk.getIds();
    auto ops = blk.getOps();
    auto weights = blk.getWeights();
    auto attempts = blk.getAttempts();
    const bool f64 = blk.which() == wire::PackedTokens::F64S;
    capnp::List<double>::Reader floats;
    capnp::List<int64_t>::Reader ints;
    if (f64)
      floats = blk.getF64s();
    else
      ints = blk.getI64s();
    for (unsigned i = 0; i < n; ++i) {
      Task* t = one(ids[i], attempts[i], ops[i], weights[i], nullptr);
      if (t == nullptr) continue;
      if (f64)
        t->args.emplace_back(floats[i]);
      else
        t->args.emplace_back(static_cast<int64_t>(ints[i]));
    }
  }
  return out;
}

StatusOr<std::vector<TokenRef>> tokenRefsOfOversizeBatch(const void* data, size_t size,
                                                         uint64_t& session) {
  if (size == 0 || size % sizeof(capnp::word) != 0)
    return absl::InvalidArgumentError("frame is not a whole number of words");
  // The copy is of a frame we already hold in memory; the reader below reads
  // only the token list's structs (ids, attempts), never the arguments.
  auto words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, size);
  try {
    capnp::ReaderOptions options;
    // Each word of the frame is read at most twice (the token list, then each token's
    // size): a frame of pointer loops or shared subtrees cannot amplify beyond that.
    options.traversalLimitInWords = size / sizeof(capnp::word) * 2 + 64;
    options.nestingLimit = 16;
    capnp::FlatArrayMessageReader reader(words, options);
    auto root = reader.getRoot<wire::Frame>();
    if (root.which() != wire::Frame::TOKEN_BATCH)
      return absl::InvalidArgumentError("not a token batch");
    auto batch = root.getTokenBatch();
    session = batch.getSession();
    std::vector<TokenRef> refs;
    auto tokens = batch.getTokens();
    refs.reserve(tokens.size());
    for (auto t : tokens) {
      const Weight w = fromWire(t.getWeight());
      refs.push_back({t.getId(), t.getAttempt(), w == Weight::kUnspecified ? Weight::kLight : w,
                      static_cast<size_t>(t.totalSize().wordCount) * sizeof(capnp::word)});
    }
    // Packed tokens: one 8-byte argument each. Every id is answered (a short attempts or weights
    // column gives attempt 0, which the coordinator discards, and the light lane).
    for (auto blk : batch.getPacked()) {
      auto ids = blk.getIds();
      auto attempts = blk.getAttempts();
      auto weights = blk.getWeights();
      for (unsigned i = 0; i < ids.size(); ++i) {
        const Weight w = i < weights.size() ? fromWire(weights[i]) : Weight::kLight;
        refs.push_back({ids[i], i < attempts.size() ? attempts[i] : 0,
                        w == Weight::kUnspecified ? Weight::kLight : w, 32});
      }
    }
    return refs;
  } catch (const kj::Exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("malformed frame: {}", e.getDescription().cStr()));
  }
}

}  // namespace tokengate::node
