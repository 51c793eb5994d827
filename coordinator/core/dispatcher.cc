#include "coordinator/core/dispatcher.h"

#include <algorithm>
#include <cstring>

#include "common/wire.h"

namespace tokengate::coordinator {

using control::NodeState;

Weight Dispatcher::laneFor(const SpecRec& s) const {
  return s.explicit_weight ? s.weight : ops_[s.op].effective;
}

void Dispatcher::ready(JobRec& job, uint32_t local) {
  TokenRec& t = job.tokens[local];
  t.state = kReady;
  const uint64_t id = JobTable::tokenId(job.id, local);
  if (t.deaths > 0) {
    suspects_.push_back(id);
  } else {
    const SpecRec& s = job.specs[t.spec];
    ops_[s.op].ready[static_cast<int>(laneFor(s))].push_back(id);
  }
}

void Dispatcher::readyVerify(JobRec& job, uint32_t local) {
  job.tokens[local].state = kReady;
  verify_.push_back(JobTable::tokenId(job.id, local));
}

void Dispatcher::unparkVerify() {
  if (parked_.empty()) return;
  verify_.insert(verify_.end(), parked_.begin(), parked_.end());
  parked_.clear();
}

void Dispatcher::runVerify() {
  const Nanos now = clock_.now();
  for (size_t limit = verify_.size(); limit > 0 && !verify_.empty(); --limit) {
    const uint64_t id = verify_.front();
    verify_.pop_front();
    JobRec* j = jobs_.find(id >> 32);
    if (!j) continue;
    const auto local = static_cast<uint32_t>(id);
    TokenRec& t = j->tokens[local];
    if (t.state != kReady) continue;  // cancelled, failed or reopened meanwhile
    const SpecRec& s = j->specs[t.spec];
    if (ops_[s.op].paused) {
      verify_.push_back(id);
      continue;
    }
    const Weight lane = laneFor(s);
    const int li = static_cast<int>(lane);
    bool eligible = false;
    uint32_t best = kNoNode;
    double best_load = 0;
    for (uint32_t slot = 0; slot < nodes_.size(); ++slot) {
      const NodeRec& n = nodes_[slot];
      if (n.state != NodeState::kReady || s.op >= n.offers.size() || !n.offers[s.op]) continue;
      const auto& l = n.lanes[li];
      if (!l.present) continue;
      if (verify_filter_ && !verify_filter_(id, n)) continue;
      eligible = true;
      if (l.in_flight >= static_cast<uint64_t>(l.workers) * config_.credit_per_worker) continue;
      const double load = static_cast<double>(l.in_flight) / l.workers;
      if (best == kNoNode || load < best_load) best = slot, best_load = load;
    }
    if (!eligible) {
      parked_.push_back(id);
      if (on_parked_) on_parked_(id);
      continue;
    }
    if (best == kNoNode) {  // allowed nodes exist but are full: try again next round
      verify_.push_front(id);
      break;
    }
    markRunning(*j, local, best, lane, t.cost, now);
    addToBatch(nodes_[best], best, id, t.cost, 0, now);
  }
}

size_t Dispatcher::queued() const {
  size_t n = suspects_.size() + verify_.size() + parked_.size();
  for (const auto& op : ops_) n += op.queued();
  return n;
}

void Dispatcher::release(JobRec& job, TokenRec& t) {
  if (t.state != kRunning || t.node == kNoNode) return;
  NodeRec& n = nodes_[t.node];
  auto& lane = n.lanes[t.lane];
  if (lane.in_flight) --lane.in_flight;
  lane.outstanding = lane.in_flight ? std::max(0.0, lane.outstanding - t.cost) : 0.0;
  const uint64_t id = JobTable::tokenId(job.id, static_cast<uint32_t>(&t - job.tokens.data()));
  if (n.suspect == id) n.suspect = 0;
  OpState& op = ops_[job.specs[t.spec].op];
  if (op.running) --op.running;
  if (job.running) --job.running;
  t.node = kNoNode;
}

void Dispatcher::requeueUnsent(uint32_t slot) {
  NodeRec& n = nodes_[slot];
  for (uint64_t id : n.batch.ids) {
    JobRec* j = jobs_.find(id >> 32);
    if (!j) continue;
    TokenRec& t = j->tokens[static_cast<uint32_t>(id)];
    if (t.state == kRunning && t.node == slot) {
      release(*j, t);
      --t.attempt;
      ready(*j, static_cast<uint32_t>(id));
    }
  }
  n.batch.ids.clear();
}

void Dispatcher::run() {
  runSuspects();
  if (!verify_.empty()) runVerify();
  runLane(Weight::kHeavy);
  runLane(Weight::kMedium);
  runLane(Weight::kLight);
  for (uint32_t slot = 0; slot < nodes_.size(); ++slot) {
    NodeRec& n = nodes_[slot];
    if (n.batch.ids.empty()) continue;
    // Idle: everything in flight there is in this batch, so the node waits for it.
    const bool idle = n.inFlight() <= n.batch.ids.size();
    if (idle || n.batch.ids.size() >= config_.max_batch) flush(slot);
  }
}

void Dispatcher::runSuspects() {
  // Suspects (in flight when a node died) run isolated: one per node at a time.
  for (uint32_t slot = 0; slot < nodes_.size() && !suspects_.empty(); ++slot) {
    NodeRec& n = nodes_[slot];
    if (n.state != NodeState::kReady || n.suspect != 0) continue;
    size_t scanned = 0, limit = suspects_.size();
    while (!suspects_.empty() && scanned++ < limit) {
      uint64_t id = suspects_.front();
      suspects_.pop_front();
      JobRec* j = jobs_.find(id >> 32);
      if (!j) continue;
      const auto local = static_cast<uint32_t>(id);
      TokenRec& t = j->tokens[local];
      if (t.state != kReady) continue;
      const SpecRec& s = j->specs[t.spec];
      OpState& op = ops_[s.op];
      const Weight lane = laneFor(s);
      if (op.paused || !n.offers[s.op] || !n.lanes[static_cast<int>(lane)].present) {
        suspects_.push_back(id);
        continue;
      }
      const Nanos now = clock_.now();
      markRunning(*j, local, slot, lane, t.cost, now);
      n.suspect = id;
      if (n.batch.ids.empty()) n.batch.first_at = now;
      n.batch.ids.push_back(id);
      flush(slot);
      break;
    }
  }
}

void Dispatcher::runLane(Weight lane) {
  // Ops share the lane's credit in slices, round after round, so a
  // downstream op (chunk sums) is not starved behind a million ready
  // upstream tokens: its inputs' results are freed sooner.
  constexpr uint64_t kSlice = 512;
  const int li = static_cast<int>(lane);
  bool progress = true;
  while (progress) {
    progress = false;
    for (uint32_t k = 0; k < ops_.size(); ++k) {
      // Newest-registered ops first: downstream ops are usually registered after upstream ones.
      const uint32_t oi = static_cast<uint32_t>(ops_.size()) - 1 - k;
      if (ops_[oi].dispatchable(li) && runSlice(oi, lane, kSlice) > 0) progress = true;
    }
  }
}

size_t Dispatcher::runSlice(uint32_t oi, Weight lane, uint64_t max_tokens) {
  const int li = static_cast<int>(lane);
  OpState& op = ops_[oi];
  // Candidates: ready nodes offering the op with credit on this lane.
  auto& cands = scratch_cands_;
  cands.clear();
  uint64_t total_credit = 0;
  for (uint32_t slot = 0; slot < nodes_.size(); ++slot) {
    NodeRec& n = nodes_[slot];
    if (n.state != NodeState::kReady || oi >= n.offers.size() || !n.offers[oi]) continue;
    auto& l = n.lanes[li];
    if (!l.present) continue;
    const uint64_t cap = static_cast<uint64_t>(l.workers) * config_.credit_per_worker;
    if (l.in_flight >= cap) continue;
    Candidate c;
    c.node = slot;
    c.free_credit = static_cast<uint32_t>(cap - l.in_flight);
    c.workers = l.workers;
    c.outstanding = l.outstanding;
    c.in_flight = l.in_flight;
    n.speed = scheduler_->nodeSpeed(slot);
    c.speed = n.speed;
    total_credit += c.free_credit;
    cands.push_back(c);
  }
  if (cands.empty()) return 0;
  auto& ready = op.ready[li];
  uint64_t want = std::min<uint64_t>(total_credit, max_tokens);
  if (op.limits.max_in_flight)
    want = std::min<uint64_t>(want, op.limits.max_in_flight - op.running);
  if (op.limits.max_rate_per_s > 0)
    want = std::min<uint64_t>(want, static_cast<uint64_t>(op.rate_tokens));
  auto& infos = scratch_tokens_;
  infos.clear();
  while (infos.size() < want && !ready.empty()) {
    const uint64_t id = ready.front();
    ready.pop_front();
    JobRec* j = jobs_.find(id >> 32);
    if (!j) continue;
    const auto local = static_cast<uint32_t>(id);
    if (j->tokens[local].state != kReady) continue;
    infos.push_back(JobTable::tokenInfo(*j, local));
    infos.back().lane = lane;
  }
  if (infos.empty()) return 0;
  scratch_costs_.resize(infos.size());
  scheduler_->costs(infos, scratch_costs_);
  const double work_target = scheduler_->batchWorkTarget();  // after costs(): same units
  for (size_t i = 0; i < infos.size(); ++i) infos[i].cost = scratch_costs_[i];
  scratch_place_.assign(infos.size(), Placement{});
  scheduler_->place(lane, infos, cands, scratch_place_);
  size_t placed = 0;
  // Unplaced tokens go back to the front in their original order.
  for (size_t i = infos.size(); i-- > 0;) {
    if (scratch_place_[i].candidate < 0) ready.push_front(infos[i].id);
  }
  JobRec* j = nullptr;
  const Nanos now = clock_.now();
  for (size_t i = 0; i < infos.size(); ++i) {
    const Placement& p = scratch_place_[i];
    if (p.candidate < 0) continue;
    const uint32_t slot = cands[static_cast<size_t>(p.candidate)].node;
    NodeRec& n = nodes_[slot];
    if (!j || j->id != (infos[i].id >> 32)) j = jobs_.find(infos[i].id >> 32);
    const auto local = static_cast<uint32_t>(infos[i].id);
    markRunning(*j, local, slot, p.lane == Weight::kUnspecified ? lane : p.lane, infos[i].cost,
                now);
    addToBatch(n, slot, infos[i].id, infos[i].cost, work_target, now);
    ++placed;
  }
  if (op.limits.max_rate_per_s > 0) op.rate_tokens -= static_cast<double>(placed);
  return placed;
}

void Dispatcher::markRunning(JobRec& job, uint32_t local, uint32_t slot, Weight lane, double cost,
                             Nanos now) {
  TokenRec& t = job.tokens[local];
  NodeRec& n = nodes_[slot];
  t.state = kRunning;
  t.node = slot;
  t.lane = static_cast<uint8_t>(lane);
  t.cost = static_cast<float>(cost);
  ++t.attempt;
  ++ops_[job.specs[t.spec].op].running;
  ++job.running;
  auto& l = n.lanes[t.lane];
  t.load = static_cast<uint16_t>(std::min<uint64_t>(l.in_flight, UINT16_MAX));
  ++l.in_flight;
  l.outstanding += cost;
  nodes_.dispatched(slot, JobTable::tokenId(job.id, local));
  if (on_started_) on_started_(job, local, slot, now);
}

void Dispatcher::addToBatch(NodeRec& n, uint32_t slot, uint64_t id, double cost, double work_target,
                            Nanos now) {
  if (n.batch.ids.empty()) n.batch.first_at = now;
  n.batch.ids.push_back(id);
  n.batch.work += cost;
  // By work: flush once another token like this one would push the batch past the target, so
  // a run of equal tokens goes out floor(target / cost) at a time (costmodel::batchSizeFor).
  if (n.batch.ids.size() >= config_.max_batch ||
      (work_target > 0 && n.batch.work + cost > work_target))
    flush(slot);
}

uint8_t Dispatcher::packedArg(const JobRec& j, uint32_t local, uint64_t& bits) const {
  const TokenRec& t = j.tokens[local];
  const SpecRec& s = j.specs[t.spec];
  if (s.spec.deadline_ms != 0 || argCount(s.spec) != 1 || s.spec.args.size() != 1) return 0;
  const Arg& a = s.spec.args.front();
  const uint32_t rep = local - s.first;
  if (a.kind == Arg::Kind::kValue) {
    if (a.step != 0 || a.value.isInt()) {
      bits = static_cast<uint64_t>(a.value.asInt() + a.step * rep);
      return 2;
    }
    if (a.value.isDouble()) {
      const double d = a.value.asDouble();
      std::memcpy(&bits, &d, sizeof d);
      return 1;
    }
    return 0;
  }
  const TokenRec& in =
      j.tokens[static_cast<uint32_t>(static_cast<int64_t>(a.start) + a.step * rep)];
  if (in.tag != kInt && in.tag != kDouble) return 0;
  bits = in.val;
  return in.tag == kDouble ? 1 : 2;
}

void Dispatcher::flush(uint32_t slot) {
  NodeRec& n = nodes_[slot];
  n.batch.work = 0;
  if (n.batch.ids.empty()) return;
  std::vector<uint64_t> ids = std::move(n.batch.ids);
  n.batch.ids.clear();
  // Drop tokens cancelled while waiting in the batch.
  std::erase_if(ids, [&](uint64_t id) {
    const JobRec* j = jobs_.find(id >> 32);
    if (!j) return true;
    const TokenRec& t = j->tokens[static_cast<uint32_t>(id)];
    return t.state != kRunning || t.node != slot;
  });
  if (ids.empty()) return;
  auto msg = newFrame(scratch_);
  auto f = msg.root;
  auto b = f.initTokenBatch();
  b.setSession(n.session);
  // Op table for this batch.
  std::vector<uint32_t>& op_table = scratch_op_table_;
  op_table.clear();
  auto opSlot = [&](uint32_t op) -> uint16_t {
    for (size_t i = 0; i < op_table.size(); ++i)
      if (op_table[i] == op) return static_cast<uint16_t>(i);
    op_table.push_back(op);
    return static_cast<uint16_t>(op_table.size() - 1);
  };
  const Nanos now = clock_.now();
  // Packed columns for a node that reads them (NodeHello.packedTokens): tokens with exactly one
  // int or float argument and no deadline (~24 bytes each on the wire instead of ~64).
  std::vector<uint8_t>& kinds = scratch_kinds_;
  std::vector<uint64_t>& bits = scratch_bits_;
  size_t per_kind[3] = {ids.size(), 0, 0};
  const JobRec* j = nullptr;
  if (n.packed_tokens) {
    kinds.assign(ids.size(), 0);
    bits.resize(ids.size());
    per_kind[0] = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!j || j->id != (ids[i] >> 32)) j = jobs_.find(ids[i] >> 32);
      kinds[i] = packedArg(*j, static_cast<uint32_t>(ids[i]), bits[i]);
      ++per_kind[kinds[i]];
    }
  }
  auto tokens = b.initTokens(static_cast<unsigned>(per_kind[0]));
  unsigned plain = 0;
  for (unsigned i = 0; i < ids.size(); ++i) {
    if (n.packed_tokens && kinds[i] != 0) continue;
    const uint64_t id = ids[i];
    if (!j || j->id != (id >> 32)) j = jobs_.find(id >> 32);
    const auto local = static_cast<uint32_t>(id);
    const TokenRec& t = j->tokens[local];
    const SpecRec& s = j->specs[t.spec];
    auto tb = tokens[plain++];
    tb.setId(id);
    tb.setOp(opSlot(s.op));
    tb.setWeight(toWire(static_cast<Weight>(t.lane)));
    tb.setAttempt(t.attempt);
    if (s.spec.deadline_ms) {
      const Nanos left = j->admitted_at + s.spec.deadline_ms * kMillis - now;
      tb.setDeadlineMs(static_cast<uint32_t>(std::max<Nanos>(1, left / kMillis)));
    }
    auto args = tb.initArgs(argCount(s.spec));
    const uint32_t rep = local - s.first;
    unsigned k = 0;
    for (const auto& a : s.spec.args) {
      if (a.kind == Arg::Kind::kValue) {
        if (a.step != 0)
          args[k++].setInt(a.value.asInt() + a.step * rep);
        else
          toWire(a.value, args[k++]);
        continue;
      }
      const int64_t start = static_cast<int64_t>(a.start) + a.step * rep;
      const uint32_t count = a.kind == Arg::Kind::kRef ? 1 : a.count;
      for (uint32_t c = 0; c < count; ++c) {
        const TokenRec& in = j->tokens[static_cast<uint32_t>(start + c)];
        auto vb = args[k++];
        switch (in.tag) {
          case kInt:
            vb.setInt(static_cast<int64_t>(in.val));
            break;
          case kDouble: {
            double d;
            std::memcpy(&d, &in.val, sizeof d);
            vb.setFloat(d);
            break;
          }
          default:
            toWire(JobTable::getResult(*j, in), vb);
        }
      }
    }
  }
  if (per_kind[1] + per_kind[2] > 0) {
    auto blocks = b.initPacked((per_kind[1] > 0 ? 1u : 0u) + (per_kind[2] > 0 ? 1u : 0u));
    unsigned bi = 0;
    for (uint8_t kind = 1; kind <= 2; ++kind) {
      const auto count = static_cast<unsigned>(per_kind[kind]);
      if (count == 0) continue;
      auto blk = blocks[bi++];
      auto pids = blk.initIds(count);
      auto pops = blk.initOps(count);
      auto pweights = blk.initWeights(count);
      auto pattempts = blk.initAttempts(count);
      auto f64s = kind == 1 ? blk.initF64s(count) : capnp::List<double>::Builder();
      auto i64s = kind == 2 ? blk.initI64s(count) : capnp::List<int64_t>::Builder();
      unsigned p = 0;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (kinds[i] != kind) continue;
        const uint64_t id = ids[i];
        if (!j || j->id != (id >> 32)) j = jobs_.find(id >> 32);
        const TokenRec& t = j->tokens[static_cast<uint32_t>(id)];
        pids.set(p, id);
        pops.set(p, opSlot(j->specs[t.spec].op));
        pweights.set(p, toWire(static_cast<Weight>(t.lane)));
        pattempts.set(p, t.attempt);
        if (kind == 1) {
          double d;
          std::memcpy(&d, &bits[i], sizeof d);
          f64s.set(p, d);
        } else {
          i64s.set(p, static_cast<int64_t>(bits[i]));
        }
        ++p;
      }
    }
  }
  auto table = b.initOps(static_cast<unsigned>(op_table.size()));
  for (unsigned i = 0; i < op_table.size(); ++i) table.set(i, ops_[op_table[i]].name);
  outbox_.send(n.peer, msg.encode());
  dispatched_ += ids.size();
  ++batches_;
  metrics_.batch_size.Observe(static_cast<double>(ids.size()));
}

void Dispatcher::flushAll() {
  for (uint32_t slot = 0; slot < nodes_.size(); ++slot) flush(slot);
}

bool Dispatcher::pending() const {
  for (const auto& n : nodes_)
    if (!n.batch.ids.empty()) return true;
  return false;
}

}  // namespace tokengate::coordinator
