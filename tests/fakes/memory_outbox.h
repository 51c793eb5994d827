// In-memory transport for CoordinatorCore tests: frames the core sends are
// queued per peer and decoded on demand; FakeNode plays a node's side.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/wire.h"
#include "coordinator/core/coordinator.h"

namespace tokengate::testing {

class MemoryOutbox final : public coordinator::Outbox {
 public:
  void send(const std::string& peer, std::string frame) override {
    queues_[peer].push_back(std::move(frame));
  }
  // Next frame sent to `peer`, decoded; nullptr if none.
  std::unique_ptr<DecodedFrame> next(const std::string& peer) {
    auto& q = queues_[peer];
    if (q.empty()) return nullptr;
    auto f = decodeFrame(q.front().data(), q.front().size());
    q.pop_front();
    return f.ok() ? *std::move(f) : nullptr;
  }
  size_t pending(const std::string& peer) { return queues_[peer].size(); }
  void clear(const std::string& peer) { queues_[peer].clear(); }

 private:
  std::map<std::string, std::deque<std::string>> queues_;
};

struct TaskCopy {
  uint64_t id = 0;
  uint32_t attempt = 0;
  std::string op;
  Weight lane = Weight::kLight;
  std::vector<Value> args;
};

// Drives the node side of the protocol against a CoordinatorCore.
class FakeNode {
 public:
  FakeNode(coordinator::CoordinatorCore& core, MemoryOutbox& outbox, std::string id,
           std::vector<std::pair<std::string, Weight>> ops, uint32_t workers = 1)
      : core_(core),
        outbox_(outbox),
        id_(std::move(id)),
        peer_(id_ + "/peer"),
        ops_(std::move(ops)),
        workers_(workers) {}

  const std::string& peer() const { return peer_; }
  // Declared in hello for every op (verify samples deterministic ops only).
  bool deterministic = true;
  // Its CURVE public key, handed to the core with every frame as PeerAuth does ("" = CURVE off).
  std::string key;
  uint64_t session() const { return session_; }

  // Sends hello and consumes the welcome. Returns whether it was accepted.
  bool hello(uint16_t version = kProtocolVersion) {
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto h = f.initHello();
    h.setProtocolVersion(version);
    h.setNodeId(id_);
    h.setIncarnation(++incarnation_);
    h.setPackedTokens(packed_tokens);
    auto ops = h.initOperations(static_cast<unsigned>(ops_.size()));
    for (unsigned i = 0; i < ops_.size(); ++i) {
      ops[i].setName(ops_[i].first);
      ops[i].setWeight(toWire(ops_[i].second));
      ops[i].setDeterministic(deterministic);
    }
    auto lanes = h.initLanes(3);
    for (unsigned w = 0; w < 3; ++w) {
      lanes[w].setWeight(static_cast<wire::Weight>(w));
      lanes[w].setWorkers(workers_);
    }
    deliver(msg);
    while (auto fr = outbox_.next(peer_)) {
      if (fr->root().isWelcome()) {
        session_ = fr->root().getWelcome().getSession();
        packed_results = fr->root().getWelcome().getPackedResults();
        packed_dec_results = fr->root().getWelcome().getPackedDecResults();
        return fr->root().getWelcome().getAccepted();
      }
    }
    return false;
  }

  void heartbeat(bool draining = false, uint64_t cpu_ns = 0) {
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto hb = f.initHeartbeat();
    hb.setSession(session_);
    hb.setDraining(draining);
    hb.setCpuNs(cpu_ns);
    deliver(msg);
  }

  // Collects every task sent to this node so far (batches), skipping other frames.
  std::vector<TaskCopy> takeTasks() {
    std::vector<TaskCopy> out;
    while (auto fr = outbox_.next(peer_)) {
      auto root = fr->root();
      if (root.isControl()) {
        controls.push_back(root.getControl().which());
        continue;
      }
      if (!root.isTokenBatch()) continue;
      ++batches;
      auto b = root.getTokenBatch();
      batch_sizes.push_back(b.getTokens().size());
      for (auto t : b.getTokens()) {
        TaskCopy c;
        c.id = t.getId();
        c.attempt = t.getAttempt();
        c.op = b.getOps()[t.getOp()].cStr();
        c.lane = fromWire(t.getWeight());
        for (auto a : t.getArgs()) c.args.push_back(fromWire(a));
        out.push_back(std::move(c));
      }
      for (auto blk : b.getPacked()) {
        // Each list read once: reading a list counts against the message's traversal limit.
        const bool f64 = blk.which() == wire::PackedTokens::F64S;
        auto ids = blk.getIds();
        auto attempts = blk.getAttempts();
        auto ops = blk.getOps();
        auto weights = blk.getWeights();
        auto floats = f64 ? blk.getF64s() : capnp::List<double>::Reader();
        auto ints = f64 ? capnp::List<int64_t>::Reader() : blk.getI64s();
        for (unsigned i = 0; i < ids.size(); ++i) {
          TaskCopy c;
          c.id = ids[i];
          c.attempt = attempts[i];
          c.op = b.getOps()[ops[i]].cStr();
          c.lane = fromWire(weights[i]);
          if (f64)
            c.args.emplace_back(floats[i]);
          else
            c.args.emplace_back(int64_t{ints[i]});
          out.push_back(std::move(c));
          ++packed_tasks;
        }
      }
    }
    return out;
  }

  void reply(const std::vector<std::pair<TaskCopy, StatusOr<Value>>>& results,
             uint64_t run_ns = 1000) {
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto rb = f.initResultBatch();
    rb.setSession(session_);
    auto list = rb.initResults(static_cast<unsigned>(results.size()));
    for (unsigned i = 0; i < results.size(); ++i) {
      list[i].setId(results[i].first.id);
      list[i].setAttempt(results[i].first.attempt);
      list[i].setRunNs(run_ns);
      if (results[i].second.ok())
        toWire(*results[i].second, list[i].initValue());
      else
        toWire(results[i].second.status(), list[i].initError());
    }
    deliver(msg);
  }

  // Successful results as one ResultBatch.packed block (values all ints, all floats or all Dec50s,
  // as a node sends them after Welcome.packedResults / packedDecResults). `short_column` drops the
  // last attempt, making the block malformed; `dec_flags_or` is or-ed into every Dec flags byte
  // (a bit above 2 makes the block malformed).
  void replyPacked(const std::vector<TaskCopy>& tasks, const std::vector<Value>& values,
                   bool short_column = false, uint32_t run_ns = 1000, uint8_t dec_flags_or = 0) {
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto rb = f.initResultBatch();
    rb.setSession(session_);
    const auto n = static_cast<unsigned>(tasks.size());
    auto blk = rb.initPacked(1)[0];
    auto ids = blk.initIds(n);
    auto attempts = blk.initAttempts(short_column && n > 0 ? n - 1 : n);
    auto run = blk.initRunNs(n);
    auto queue = blk.initQueueNs(n);
    const bool floats = !values.empty() && values.front().isDouble();
    const bool decs = !values.empty() && values.front().isDec();
    auto f64s = floats ? blk.initF64s(n) : capnp::List<double>::Builder();
    auto i64s = floats || decs ? capnp::List<int64_t>::Builder() : blk.initI64s(n);
    std::optional<PackedDecWriter> dec;
    if (decs) {
      auto group = blk.initDecs();
      group.initLimbs(3 * n);
      group.initExponents(n);
      group.initFlags(n);
      dec.emplace(group);
    }
    for (unsigned i = 0; i < n; ++i) {
      ids.set(i, tasks[i].id);
      if (i < attempts.size()) attempts.set(i, tasks[i].attempt);
      run.set(i, run_ns);
      queue.set(i, 0);
      if (floats) {
        f64s.set(i, values[i].asDouble());
      } else if (decs) {
        dec->set(i, values[i].asDec());
        dec->flags.set(i, dec->flags[i] | dec_flags_or);
      } else {
        i64s.set(i, values[i].asInt());
      }
    }
    deliver(msg);
  }

  // Hands queued tasks back unrun, as a draining node does (ResultBatch.returned).
  void giveBack(const std::vector<TaskCopy>& tasks) {
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto rb = f.initResultBatch();
    rb.setSession(session_);
    auto list = rb.initReturned(static_cast<unsigned>(tasks.size()));
    for (unsigned i = 0; i < tasks.size(); ++i) {
      list[i].setId(tasks[i].id);
      list[i].setAttempt(tasks[i].attempt);
    }
    deliver(msg);
  }

  // The transport saw this node's connection close (crash, kill).
  void disconnect() { core_.onDisconnected(peer_); }

  // A clean exit: the node says bye (after a drain, as on SIGTERM).
  void bye(const std::string& reason = "shutdown") {
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto b = f.initBye();
    b.setSession(session_);
    b.setReason(reason);
    deliver(msg);
  }

  void ok(const TaskCopy& t, Value v) { reply({{t, StatusOr<Value>(std::move(v))}}); }
  void fail(const TaskCopy& t, Status s) { reply({{t, StatusOr<Value>(std::move(s))}}); }

  void deliver(capnp::MallocMessageBuilder& msg) {
    auto bytes = encodeFrame(msg);
    auto f = decodeFrame(bytes.data(), bytes.size());
    if (f.ok()) core_.onFrame(peer_, (*f)->root(), key);
  }

  bool packed_results = false;      // the welcome's packedResults
  bool packed_dec_results = false;  // the welcome's packedDecResults
  bool packed_tokens = false;       // said in hello: the core may send TokenBatch.packed
  int packed_tasks = 0;             // tasks takeTasks() read from packed columns
  int batches = 0;
  std::vector<size_t> batch_sizes;  // tokens per TokenBatch, in arrival order
  std::vector<wire::Control::Which> controls;

 private:
  coordinator::CoordinatorCore& core_;
  MemoryOutbox& outbox_;
  std::string id_;
  std::string peer_;
  std::vector<std::pair<std::string, Weight>> ops_;
  uint32_t workers_;
  uint64_t session_ = 0;
  uint64_t incarnation_ = 0;
};

}  // namespace tokengate::testing
