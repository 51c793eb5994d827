// FakeClusterControl: an in-memory ClusterControl for gateway tests and the
// tokengate-gateway-fake demo server. Like the real coordinator it owns one
// "loop" thread: every method posts to it and the callback runs there, so the
// gateway is exercised across threads exactly as in production.
//
// It models just enough of a cluster for the control page and the protocol
// tests: nodes with lanes, operations with pause/limits/counters, and jobs
// whose tokens progress when step() is called (per op, at a fixed simulated
// rate; paused ops make no progress, drained tokens are cancelled).
//
// Ownership: the test owns it; it must outlive any Gateway built on it.
// Test hooks (emit, sync, setHung, calls, step) are thread-safe.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/job.h"
#include "coordinator/control/control.h"

namespace tokengate::testing {

class FakeClusterControl final : public control::ClusterControl {
 public:
  // demo: seed two nodes and the Leibniz operations.
  explicit FakeClusterControl(bool demo = true)
      : registry_(std::make_shared<prometheus::Registry>()),
        completed_family_(&prometheus::BuildCounter()
                               .Name("tokengate_tokens_completed_total")
                               .Help("Tokens completed (fake cluster)")
                               .Register(*registry_)),
        queue_depth_family_(&prometheus::BuildGauge()
                                 .Name("tokengate_queue_depth")
                                 .Help("Queued tokens per operation (fake cluster)")
                                 .Register(*registry_)) {
    if (demo) seedDemo();
    thread_ = std::thread([this] { loop(); });
  }

  ~FakeClusterControl() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // ---- ClusterControl ----
  void submitJob(JobSpec job, control::Callback<uint64_t> done) override {
    call("submitJob", std::move(done), [this, job = std::move(job)]() -> StatusOr<uint64_t> {
      if (Status s = job.validate(10'000'000); !s.ok()) return s;
      uint64_t n = job.tokenCount();
      if (live() + n > admission_limit_) {  // as the coordinator: the limit is absolute
        ++admission_rejects_;
        return absl::ResourceExhaustedError("admission limit reached");
      }
      FakeJob fj;
      fj.status.id = next_job_++;
      fj.status.name = job.name;
      fj.status.total = n;
      for (const auto& t : job.tokens) {
        auto& op = opFor(t.op, t.weight);
        op.queued += t.repeat;
        fj.remaining[t.op] += t.repeat;
        if (t.output) fj.outputs.push_back(t.name);
      }
      tokens_admitted_ += n;
      uint64_t id = fj.status.id;
      jobs_[id] = std::move(fj);
      emitLocked(jobEvent(jobs_[id].status));
      return id;
    });
  }

  void jobStatus(uint64_t job_id, control::Callback<control::JobStatus> done) override {
    call("jobStatus", std::move(done), [this, job_id]() -> StatusOr<control::JobStatus> {
      auto it = jobs_.find(job_id);
      if (it == jobs_.end()) return absl::NotFoundError("no such job");
      control::JobStatus s = it->second.status;
      if (s.state != control::JobState::kRunning) {
        uint32_t i = 0;
        for (const auto& name : it->second.outputs) {
          control::OutputResult r;
          r.index = i++;
          r.name = name;
          if (s.state == control::JobState::kSucceeded) {
            r.value = Value(static_cast<double>(s.done));
          } else {
            r.status = absl::CancelledError("job did not complete");
          }
          s.outputs.push_back(std::move(r));
        }
      }
      return s;
    });
  }

  void listJobs(control::Callback<std::vector<control::JobStatus>> done) override {
    call("listJobs", std::move(done), [this]() -> StatusOr<std::vector<control::JobStatus>> {
      std::vector<control::JobStatus> out;
      for (const auto& [id, j] : jobs_) out.push_back(j.status);
      return out;
    });
  }

  void cancelJob(uint64_t job_id, control::Callback<uint64_t> done) override {
    call("cancelJob", std::move(done), [this, job_id]() -> StatusOr<uint64_t> {
      auto it = jobs_.find(job_id);
      if (it == jobs_.end()) return absl::NotFoundError("no such job");
      FakeJob& j = it->second;
      uint64_t n = 0;
      for (auto& [op, left] : j.remaining) {
        ops_[op].queued -= left;
        ops_[op].cancelled += left;
        n += left;
        left = 0;
      }
      j.status.cancelled += n;
      if (j.status.state == control::JobState::kRunning) {
        j.status.state = control::JobState::kCancelled;
        emitLocked(jobEvent(j.status));
      }
      return n;
    });
  }

  void cancelToken(uint64_t token_id, control::Callback<bool> done) override {
    call("cancelToken", std::move(done), [this, token_id]() -> StatusOr<bool> {
      // Fake token ids: (job_id << 32) | index.
      auto it = jobs_.find(token_id >> 32);
      if (it == jobs_.end()) return absl::NotFoundError("no such token");
      return it->second.status.state == control::JobState::kRunning;
    });
  }

  void pauseOp(std::string op, control::Callback<control::OpStatus> done) override {
    call("pauseOp", std::move(done), [this, op]() -> StatusOr<control::OpStatus> {
      auto it = ops_.find(op);
      if (it == ops_.end()) return absl::NotFoundError("no such operation: " + op);
      it->second.paused = true;
      it->second.running = 0;
      emitLocked(control::OpPausedEvent{op, true});
      return it->second;
    });
  }

  void resumeOp(std::string op, control::Callback<control::OpStatus> done) override {
    call("resumeOp", std::move(done), [this, op]() -> StatusOr<control::OpStatus> {
      auto it = ops_.find(op);
      if (it == ops_.end()) return absl::NotFoundError("no such operation: " + op);
      it->second.paused = false;
      emitLocked(control::OpPausedEvent{op, false});
      return it->second;
    });
  }

  void drainOp(std::string op, control::Callback<uint64_t> done) override {
    call("drainOp", std::move(done), [this, op]() -> StatusOr<uint64_t> {
      auto it = ops_.find(op);
      if (it == ops_.end()) return absl::NotFoundError("no such operation: " + op);
      uint64_t n = 0;
      for (auto& [id, j] : jobs_) {
        auto r = j.remaining.find(op);
        if (r == j.remaining.end() || r->second == 0) continue;
        n += r->second;
        j.status.cancelled += r->second;
        r->second = 0;
        finishIfDone(j);
      }
      it->second.queued -= std::min(it->second.queued, n);
      it->second.cancelled += n;
      return n;
    });
  }

  void cancelRunningOp(std::string op, control::Callback<uint64_t> done) override {
    call("cancelRunningOp", std::move(done), [this, op]() -> StatusOr<uint64_t> {
      auto it = ops_.find(op);
      if (it == ops_.end()) return absl::NotFoundError("no such operation: " + op);
      return it->second.running;
    });
  }

  void setOpLimits(std::string op, control::OpLimits limits,
                   control::Callback<control::OpStatus> done) override {
    call("setOpLimits", std::move(done), [this, op, limits]() -> StatusOr<control::OpStatus> {
      auto it = ops_.find(op);
      if (it == ops_.end()) return absl::NotFoundError("no such operation: " + op);
      it->second.limits = limits;
      return it->second;
    });
  }

  void listOps(control::Callback<std::vector<control::OpStatus>> done) override {
    call("listOps", std::move(done), [this]() -> StatusOr<std::vector<control::OpStatus>> {
      std::vector<control::OpStatus> out;
      for (const auto& [n, o] : ops_) out.push_back(o);
      return out;
    });
  }

  void listNodes(control::Callback<std::vector<control::NodeStatus>> done) override {
    call("listNodes", std::move(done),
         [this]() -> StatusOr<std::vector<control::NodeStatus>> { return nodes_; });
  }

  void drainNode(std::string node_id, control::Callback<control::NodeStatus> done) override {
    call("drainNode", std::move(done), [this, node_id]() -> StatusOr<control::NodeStatus> {
      return setNodeState(node_id, control::NodeState::kDraining);
    });
  }

  void undrainNode(std::string node_id, control::Callback<control::NodeStatus> done) override {
    call("undrainNode", std::move(done), [this, node_id]() -> StatusOr<control::NodeStatus> {
      return setNodeState(node_id, control::NodeState::kReady);
    });
  }

  void evictNode(std::string node_id, control::Callback<uint64_t> done) override {
    call("evictNode", std::move(done), [this, node_id]() -> StatusOr<uint64_t> {
      auto n = setNodeState(node_id, control::NodeState::kDead);
      if (!n.ok()) return n.status();
      return n->in_flight;
    });
  }

  void stats(control::Callback<control::ClusterStats> done) override {
    call("stats", std::move(done),
         [this]() -> StatusOr<control::ClusterStats> { return statsLocked(); });
  }

  void setAdmissionLimit(uint64_t max_live_tokens,
                         control::Callback<control::ClusterStats> done) override {
    call("setAdmissionLimit", std::move(done),
         [this, max_live_tokens]() -> StatusOr<control::ClusterStats> {
           admission_limit_ = max_live_tokens;
           return statsLocked();
         });
  }

  uint64_t subscribe(std::function<void(const control::Event&)> sink) override {
    std::lock_guard lock(sinks_mu_);
    uint64_t id = next_sub_++;
    sinks_[id] = std::move(sink);
    return id;
  }

  // Synchronous: once it returns the sink is never called again.
  void unsubscribe(uint64_t subscription) override {
    std::lock_guard lock(sinks_mu_);
    sinks_.erase(subscription);
  }

  std::shared_ptr<prometheus::Registry> metricsRegistry() override { return registry_; }

  // ---- Test hooks ----

  // Runs every sink on the loop thread with this event.
  void emit(control::Event event) {
    post([this, e = std::move(event)] { emitEvent(e); });
  }

  // Blocks until the loop has run everything posted before the call.
  void sync() {
    std::promise<void> p;
    auto f = p.get_future();
    post([&p] { p.set_value(); });
    f.wait();
  }

  // Runs fn on the loop thread and waits (state inspection in tests).
  template <typename F>
  auto onLoop(F fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto f = task.get_future();
    post([&task] { task(); });
    return f.get();
  }

  // While hung, callbacks are kept but never run (a coordinator that does
  // not answer).
  void setHung(bool hung) { hung_.store(hung); }

  // How many times a ClusterControl method was called, by name.
  int calls(const std::string& method) const {
    std::lock_guard lock(calls_mu_);
    auto it = calls_.find(method);
    return it == calls_.end() ? 0 : it->second;
  }

  size_t sinkCount() const {
    std::lock_guard lock(sinks_mu_);
    return sinks_.size();
  }

  // Simulated progress for dt seconds: each op that is not paused completes
  // up to its rate (limited by max_rate_per_s) of queued tokens, oldest job
  // first; emits "job" events for changed jobs and one "ops" event.
  void step(double dt_s) {
    post([this, dt_s] { stepLocked(dt_s); });
  }

  // Adds a ready node, emitting a "nodes" joined event.
  void addNode(std::string id) {
    post([this, id = std::move(id)] {
      nodes_.push_back(makeNode(id, static_cast<uint32_t>(nodes_.size())));
      emitLocked(control::NodeEvent{control::NodeEvent::Change::kJoined, id, {}, 0, 0});
    });
  }

 private:
  struct FakeJob {
    control::JobStatus status;
    std::map<std::string, uint64_t> remaining;  // queued tokens per op
    std::vector<std::string> outputs;
  };

  // Loop thread plumbing.
  void post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

  void loop() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ and drained
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  template <typename T, typename F>
  void call(const char* name, control::Callback<T> done, F body) {
    {
      std::lock_guard lock(calls_mu_);
      ++calls_[name];
    }
    post([this, done = std::move(done), body = std::move(body)]() mutable {
      StatusOr<T> r = body();
      if (hung_.load()) {
        hung_callbacks_.push_back([done = std::move(done)] {});
        return;
      }
      done(std::move(r));
    });
  }

  void emitEvent(const control::Event& e) {
    std::lock_guard lock(sinks_mu_);
    for (auto& [id, sink] : sinks_) sink(e);
  }
  void emitLocked(control::Event event) { emitEvent(event); }

  static control::JobEvent jobEvent(const control::JobStatus& s) {
    return {s.id, s.name, s.state, s.total, s.done, s.failed, s.cancelled, s.running, s.wall_ns};
  }

  control::OpStatus& opFor(const std::string& name, Weight w) {
    auto it = ops_.find(name);
    if (it != ops_.end()) return it->second;
    control::OpStatus o;
    o.name = name;
    o.weight = o.effective = (w == Weight::kUnspecified ? Weight::kLight : w);
    return ops_[name] = o;
  }

  static control::NodeStatus makeNode(const std::string& id, uint32_t i) {
    control::NodeStatus n;
    n.id = id;
    n.session = i + 1;
    n.pid = 1000 + i;
    for (int w = 0; w < kLaneCount; ++w) {
      control::LaneStatus l;
      l.weight = static_cast<Weight>(w);
      l.cores = {static_cast<uint32_t>(w == 0 ? 0 : 1)};
      l.workers = w == 0 ? 2 : 1;
      n.lanes.push_back(l);
    }
    n.ops = {"leibniz.term", "leibniz.term_dec50", "leibniz.chunk", "leibniz.partial",
             "leibniz.final"};
    n.rss_bytes = 32 << 20;
    return n;
  }

  void seedDemo() {
    nodes_.push_back(makeNode("node-1", 0));
    nodes_.push_back(makeNode("node-2", 1));
    opFor("leibniz.term", Weight::kLight);
    opFor("leibniz.term_dec50", Weight::kMedium);
    opFor("leibniz.chunk", Weight::kLight);
    opFor("leibniz.partial", Weight::kMedium);
    opFor("leibniz.final", Weight::kHeavy);
  }

  StatusOr<control::NodeStatus> setNodeState(const std::string& id, control::NodeState st) {
    for (auto& n : nodes_) {
      if (n.id != id) continue;
      if (n.state == control::NodeState::kDead && st != control::NodeState::kDead) {
        return absl::FailedPreconditionError("node is dead");
      }
      n.state = st;
      emitLocked(control::NodeEvent{
          st == control::NodeState::kDead       ? control::NodeEvent::Change::kLeft
          : st == control::NodeState::kDraining ? control::NodeEvent::Change::kDraining
                                                : control::NodeEvent::Change::kReady,
          id, st == control::NodeState::kDead ? "evicted" : "", 0, 0});
      return n;
    }
    return absl::NotFoundError("no such node: " + id);
  }

  uint64_t live() const {
    uint64_t n = 0;
    for (const auto& [id, j] : jobs_) {
      for (const auto& [op, left] : j.remaining) n += left;
    }
    return n;
  }

  control::ClusterStats statsLocked() const {
    control::ClusterStats s;
    for (const auto& n : nodes_) {
      if (n.state == control::NodeState::kReady) ++s.nodes_ready;
      if (n.state == control::NodeState::kDraining) ++s.nodes_draining;
      if (n.state == control::NodeState::kDead) ++s.nodes_dead;
    }
    for (const auto& [id, j] : jobs_) {
      if (j.status.state == control::JobState::kRunning) ++s.jobs_running;
    }
    s.jobs_total = jobs_.size();
    s.tokens_admitted = tokens_admitted_;
    s.tokens_completed = tokens_completed_;
    s.tokens_live = live();
    s.queued = s.tokens_live;
    for (const auto& [n, o] : ops_) s.in_flight += o.running;
    s.admission_limit = admission_limit_;
    s.admission_rejects = admission_rejects_;
    s.throughput_per_s = throughput_;
    s.scheduler = "least-outstanding";  // the coordinator's default policy
    s.placement = "least-outstanding";
    return s;
  }

  void finishIfDone(FakeJob& j) {
    if (j.status.state != control::JobState::kRunning) return;
    for (const auto& [op, left] : j.remaining) {
      if (left > 0) return;
    }
    j.status.running = 0;
    j.status.state =
        j.status.cancelled > 0 ? control::JobState::kCancelled : control::JobState::kSucceeded;
    emitLocked(jobEvent(j.status));
  }

  static double baseRate(Weight w) {
    switch (w) {
      case Weight::kLight:
        return 4000;
      case Weight::kMedium:
        return 1000;
      default:
        return 200;
    }
  }

  void stepLocked(double dt) {
    double total = 0;
    std::map<uint64_t, bool> changed;
    for (auto& [name, op] : ops_) {
      double rate = baseRate(op.effective);
      if (op.limits.max_rate_per_s > 0) rate = std::min(rate, op.limits.max_rate_per_s);
      auto budget = op.paused ? 0 : static_cast<uint64_t>(rate * dt);
      uint64_t did = 0;
      for (auto& [id, j] : jobs_) {
        if (budget == 0) break;
        auto r = j.remaining.find(name);
        if (r == j.remaining.end() || r->second == 0) continue;
        uint64_t n = std::min(budget, r->second);
        r->second -= n;
        budget -= n;
        did += n;
        j.status.done += n;
        j.status.wall_ns += static_cast<Nanos>(dt * 1e9);
        changed[id] = true;
      }
      op.queued -= std::min(op.queued, did);
      op.completed += did;
      op.running = op.paused ? 0 : std::min<uint64_t>(op.queued, 4);
      op.rate_per_s = dt > 0 ? static_cast<double>(did) / dt : 0;
      op.mean_run_us = did > 0 ? 1e6 / rate : op.mean_run_us;
      if (did > 0) {
        completed_family_->Add({{"op", name}, {"weight", weightName(op.weight)}})
            .Increment(static_cast<double>(did));
      }
      queue_depth_family_->Add({{"op", name}}).Set(static_cast<double>(op.queued));
      tokens_completed_ += did;
      total += static_cast<double>(did);
    }
    throughput_ = dt > 0 ? total / dt : 0;
    for (auto& [id, yes] : changed) {
      FakeJob& j = jobs_[id];
      j.status.running = 0;
      for (const auto& [op, left] : j.remaining) {
        if (left > 0 && !ops_[op].paused) j.status.running += std::min<uint64_t>(left, 4);
      }
      emitLocked(jobEvent(j.status));
      finishIfDone(j);
    }
    for (auto& n : nodes_) {
      for (auto& l : n.lanes) {
        l.running = 0;
        l.utilization = 0;
        for (const auto& [name, op] : ops_) {
          if (op.effective == l.weight && op.running > 0) {
            l.running += static_cast<uint32_t>(std::min<uint64_t>(op.running, l.workers));
            l.utilization = 0.9;
          }
        }
        l.in_flight = l.running;
      }
      n.in_flight = 0;
      for (const auto& l : n.lanes) n.in_flight += l.in_flight;
      n.completed = tokens_completed_ / std::max<size_t>(1, nodes_.size());
    }
    control::OpRatesEvent rates;
    for (const auto& [name, op] : ops_)
      rates.ops.push_back(
          {name, op.rate_per_s, op.queued, op.running, op.completed, op.failed, op.paused});
    emitLocked(std::move(rates));
  }

  // Loop-thread state.
  std::map<std::string, control::OpStatus> ops_;
  std::vector<control::NodeStatus> nodes_;
  std::map<uint64_t, FakeJob> jobs_;
  uint64_t next_job_ = 1;
  uint64_t admission_limit_ = 8'000'000, admission_rejects_ = 0;
  uint64_t tokens_admitted_ = 0, tokens_completed_ = 0;
  double throughput_ = 0;
  std::vector<std::function<void()>> hung_callbacks_;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* completed_family_;
  prometheus::Family<prometheus::Gauge>* queue_depth_family_;

  std::atomic<bool> hung_{false};
  mutable std::mutex calls_mu_;
  std::map<std::string, int> calls_;
  mutable std::mutex sinks_mu_;
  std::map<uint64_t, std::function<void(const control::Event&)>> sinks_;
  uint64_t next_sub_ = 1;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: started after everything above exists
};

}  // namespace tokengate::testing
