#include "coordinator/learned/learned_balancing.h"

#include <fmt/format.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

#include "coordinator/costmodel/xgb_cost_model.h"

namespace tokengate::learned {

namespace {
const prometheus::Histogram::BucketBoundaries& errorBuckets() {
  // |ln(predicted / actual)|: 0.1 ~ 10%, 0.69 = 2x, 2.08 = 8x.
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.05, 0.1, 0.2,  0.41,
                                                                   0.69, 1.1, 2.08, 3.0};
  return kBuckets;
}
// The production trainer runs under SCHED_IDLE (falling back to nice 19): on a box with as
// many busy threads as cores, a retrain at normal priority took CPU from the loop thread and
// the nodes (the 1M-token Leibniz run got ~35% slower; at nice 19 still a few %). A regular
// training is never urgent; the heuristic or previous model serves meanwhile. Each runs on a
// thread of its own, lowered for good, so the trainer thread itself keeps its normal priority
// for the drift check and the retrain after a drift (OnlineTrainerOptions::drift_train_fn): when
// the whole trainer thread was SCHED_IDLE, at load 10-15 a drift was seen 1 s late and its
// retrains took 1-9 s, while least-outstanding placed.
costmodel::TrainFn lowPriorityTrainFn() {
  return [base = costmodel::xgbTrainFn()](std::span<const costmodel::TelemetrySample> samples,
                                          const costmodel::XgbParams& params) {
    StatusOr<costmodel::TrainedModel> out = absl::InternalError("training thread did not run");
    std::thread t([&] {
      sched_param none{};
      if (sched_setscheduler(0, SCHED_IDLE, &none) != 0 &&
          setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 19) != 0)
        spdlog::debug("cost model: could not lower the trainer's priority");
      out = base(samples, params);
    });
    t.join();
    return out;
  };
}
}  // namespace

Status loadModelInto(costmodel::OnlineTrainer& trainer, const std::string& path) {
  auto model = costmodel::XgbCostModel::load(path);
  if (!model.ok()) {
    return Status(model.status().code(),
                  fmt::format("cost model --model {}: {}; using the heuristic (per-op mean) "
                              "until a model is trained",
                              path, model.status().message()));
  }
  trainer.setActive(std::move(*model));
  return absl::OkStatus();
}

LearnedBalancing::LearnedBalancing(LearnedConfig config, const Clock& clock,
                                   std::shared_ptr<prometheus::Registry> registry)
    : config_(std::move(config)),
      clock_(clock),
      registry_(std::move(registry)),
      window_(config_.window_capacity),
      trainer_(window_, clock_, trainerOptions(), lowPriorityTrainFn()),
      m_error_(prometheus::BuildHistogram()
                   .Name("tokengate_model_prediction_error")
                   .Help("|ln(predicted / actual)| run time of finished tokens (sampled)")
                   .Register(*registry_)
                   .Add({}, errorBuckets())),
      m_version_(prometheus::BuildGauge()
                     .Name("tokengate_model_version")
                     .Help("version of the active cost model (heuristic refreshes count too)")
                     .Register(*registry_)
                     .Add({})),
      m_retrains_(prometheus::BuildCounter()
                      .Name("tokengate_model_retrains_total")
                      .Help("cost model training attempts")
                      .Register(*registry_)
                      .Add({})),
      m_reclass_(prometheus::BuildCounter()
                     .Name("tokengate_model_reclassifications_total")
                     .Help("ops moved to another lane because of their predicted cost")
                     .Register(*registry_)),
      m_predict_ns_(prometheus::BuildGauge()
                        .Name("tokengate_model_predict_ns_per_token")
                        .Help("wall ns per token spent in cost model prediction (dispatch)")
                        .Register(*registry_)
                        .Add({})),
      m_model_places_(prometheus::BuildGauge()
                          .Name("tokengate_placement_model_active")
                          .Help("1 while the trained model places tokens, 0 while the "
                                "least-outstanding fallback does")
                          .Register(*registry_)
                          .Add({})),
      m_mode_switches_(prometheus::BuildCounter()
                           .Name("tokengate_placement_mode_switches_total")
                           .Help("switches between model and fallback placement")
                           .Register(*registry_)
                           .Add({})),
      m_error_by_estimator_(prometheus::BuildGauge()
                                .Name("tokengate_placement_recent_error")
                                .Help("running mean |ln(predicted / actual)| of finished tokens "
                                      "scored for the current model version, per estimator")
                                .Register(*registry_)),
      m_model_err_(m_error_by_estimator_.Add({{"estimator", "model"}})),
      m_fallback_err_(m_error_by_estimator_.Add({{"estimator", "running_mean"}})),
      m_regret_(prometheus::BuildGauge()
                    .Name("tokengate_placement_regret")
                    .Help("realised completion of the model's node choices minus least-"
                          "outstanding's, per unit of run time (> 0: the model places worse)")
                    .Register(*registry_)
                    .Add({})),
      m_lost_to_mean_(prometheus::BuildCounter()
                          .Name("tokengate_model_rejected_vs_mean_total")
                          .Help("trained candidates not published: no better than the running "
                                "mean on the newest held-out telemetry")
                          .Register(*registry_)
                          .Add({})),
      m_drifts_(prometheus::BuildCounter()
                    .Name("tokengate_model_drifts_total")
                    .Help("drifts detected: the active model's error on the newest samples jumped; "
                          "placement fell back and the next model trains on samples since")
                    .Register(*registry_)
                    .Add({})),
      m_sched_seconds_(prometheus::BuildCounter()
                           .Name("tokengate_placement_loop_seconds_total")
                           .Help("wall time the coordinator loop spent in the xgboost "
                                 "scheduler's costs() and place() (prediction included)")
                           .Register(*registry_)
                           .Add({})),
      m_predict_seconds_(prometheus::BuildCounter()
                             .Name("tokengate_model_predict_seconds_total")
                             .Help("wall time spent in cost model prediction at dispatch")
                             .Register(*registry_)
                             .Add({})),
      m_offered_(prometheus::BuildCounter()
                     .Name("tokengate_placement_tokens_offered_total")
                     .Help("tokens offered to the xgboost scheduler's place(); a token held "
                           "back by the queue horizon is offered again every dispatch round")
                     .Register(*registry_)
                     .Add({})),
      m_place_calls_(prometheus::BuildCounter()
                         .Name("tokengate_placement_rounds_total")
                         .Help("place() calls (dispatch slices) of the xgboost scheduler")
                         .Register(*registry_)
                         .Add({})),
      m_held_back_(prometheus::BuildCounter()
                       .Name("tokengate_placement_held_back_total")
                       .Help("placements deferred by the queue horizon: by=\"model\" on the "
                             "model's path, by=\"guard\" by the fallback's horizon guard")
                       .Register(*registry_)),
      m_held_by_model_(m_held_back_.Add({{"by", "model"}})),
      m_held_by_guard_(m_held_back_.Add({{"by", "guard"}})) {}

LearnedBalancing::~LearnedBalancing() { stop(); }

costmodel::OnlineTrainerOptions LearnedBalancing::trainerOptions() {
  costmodel::OnlineTrainerOptions o = config_.trainer;
  // After a drift, train at the trainer thread's own (normal) priority: tens of ms once per
  // drift, while least-outstanding places (see lowPriorityTrainFn).
  if (!o.drift_train_fn) o.drift_train_fn = costmodel::xgbTrainFn();
  // The model's timeline (drift, trainings, publications) at info: where the seconds between a
  // drift and a trusted new model go (docs/cost-model.md "drift-long").
  o.on_event = [chained = std::move(o.on_event)](const costmodel::TrainerEvent& e) {
    spdlog::info(
        "cost model: {} version {}{} ({} samples{}{})", costmodel::trainerEventName(e.kind),
        e.version, e.after_drift ? " after drift" : "", e.samples,
        e.candidate_err >= 0
            ? fmt::format(", |ln error| {:.3f} vs running mean {:.3f}", e.candidate_err, e.mean_err)
            : std::string(),
        e.duration > 0
            ? fmt::format(", trained in {:.0f} ms", static_cast<double>(e.duration) / 1e6)
            : std::string());
    if (chained) chained(e);
  };
  if (!config_.model_out.empty()) {
    auto chained = std::move(o.on_accepted);
    o.on_accepted = [this, chained](const costmodel::CostModel& m, uint64_t version) {
      saveModel(m, version);
      if (chained) chained(m, version);
    };
  }
  return o;
}

void LearnedBalancing::saveModel(const costmodel::CostModel& model, uint64_t version) {
  const auto* xgb = dynamic_cast<const costmodel::XgbCostModel*>(&model);
  if (!xgb) return;  // only trained XGBoost models are worth saving
  // XgbCostModel::save writes a temp file next to the target and renames it over.
  if (Status st = xgb->save(config_.model_out); !st.ok()) {
    spdlog::error("cost model --model-out {}: {}", config_.model_out, st.message());
    return;
  }
  models_saved_.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("cost model: saved version {} to {}", version, config_.model_out);
}

Status LearnedBalancing::openTrace() {
  if (config_.trace_out.empty()) return absl::OkStatus();
  auto rec = costmodel::TraceRecorder::open(config_.trace_out);
  if (!rec.ok()) {
    spdlog::error("cost model --trace-out: {}; not recording", rec.status().message());
    return rec.status();
  }
  trace_ = *std::move(rec);
  spdlog::info("cost model: appending telemetry samples to {}", config_.trace_out);
  return absl::OkStatus();
}

Status LearnedBalancing::loadModel() {
  if (config_.model_path.empty()) return absl::OkStatus();
  Status st = loadModelInto(trainer_, config_.model_path);
  if (st.ok()) {
    spdlog::info("cost model: loaded {} (version {})", config_.model_path,
                 trainer_.stats().model_version);
  } else {
    spdlog::error("{}", st.message());
  }
  updateMetrics();
  return st;
}

void LearnedBalancing::start() {
  if (config_.train) trainer_.start();
  metrics_thread_ = std::thread([this] {
    std::unique_lock lock(stop_mu_);
    while (!stopping_) {
      lock.unlock();
      updateMetrics();
      lock.lock();
      stop_cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_; });
    }
  });
}

void LearnedBalancing::stop() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (metrics_thread_.joinable()) metrics_thread_.join();
  trainer_.stop();
  updateMetrics();
  if (trace_) {
    if (Status st = trace_->flush(); !st.ok()) spdlog::error("cost model: {}", st.message());
    spdlog::info("cost model: trace {}: {} samples written, {} dropped", trace_->path(),
                 trace_->written(), trace_->dropped());
  }
}

void LearnedBalancing::updateMetrics() {
  const costmodel::TrainerStats st = trainer_.stats();
  m_version_.Set(static_cast<double>(st.model_version));
  if (st.retrain_count > retrains_exported_) {
    m_retrains_.Increment(static_cast<double>(st.retrain_count - retrains_exported_));
    retrains_exported_ = st.retrain_count;
  }
  if (st.drift_count > drifts_exported_) {
    m_drifts_.Increment(static_cast<double>(st.drift_count - drifts_exported_));
    drifts_exported_ = st.drift_count;
  }
  if (st.lost_to_mean_count > lost_exported_) {
    m_lost_to_mean_.Increment(static_cast<double>(st.lost_to_mean_count - lost_exported_));
    lost_exported_ = st.lost_to_mean_count;
  }
  // Only the scheduler's atomics are read; it lives as long as the core.
  const XgbScheduler* s = published_scheduler_.load(std::memory_order_acquire);
  if (s && s->predictedTokens() > 0)
    m_predict_ns_.Set(static_cast<double>(s->predictNs()) /
                      static_cast<double>(s->predictedTokens()));
  if (s) {
    m_model_places_.Set(s->usingModel() ? 1 : 0);
    m_model_err_.Set(s->modelError());
    m_fallback_err_.Set(s->fallbackError());
    m_regret_.Set(s->placementRegret());
    if (const uint64_t n = s->modeSwitches(); n > switches_exported_) {
      m_mode_switches_.Increment(static_cast<double>(n - switches_exported_));
      switches_exported_ = n;
    }
    // Monotonic scheduler counters -> Prometheus counters (by the difference since last time).
    const auto exportDelta = [](prometheus::Counter& c, uint64_t now, uint64_t& done, double unit) {
      if (now > done) c.Increment(static_cast<double>(now - done) * unit);
      done = std::max(done, now);
    };
    exportDelta(m_sched_seconds_, s->schedulerNs(), sched_ns_exported_, 1e-9);
    exportDelta(m_predict_seconds_, s->predictNs(), predict_ns_exported_, 1e-9);
    exportDelta(m_offered_, s->tokensOffered(), offered_exported_, 1);
    exportDelta(m_place_calls_, s->placeCalls(), place_calls_exported_, 1);
    exportDelta(m_held_by_guard_, s->heldBackByGuard(), held_guard_exported_, 1);
    exportDelta(m_held_by_model_, s->heldBackByModel(), held_model_exported_, 1);
  }
}

void LearnedBalancing::install(coordinator::CoordinatorCore& core) {
  core_ = &core;
  if (config_.place) installScheduler(core);
  // The core samples evenly at most max_samples_per_s results per second before building a
  // Sample, so tiny tokens pay a counter decrement each, not a window insert.
  core.setTelemetrySink([this](const coordinator::CoordinatorCore::Sample& s) { onSample(s); },
                        config_.max_samples_per_s);
}

void LearnedBalancing::installScheduler(coordinator::CoordinatorCore& core) {
  auto sched = std::make_unique<XgbScheduler>(
      [this] { return trainer_.active(); },
      [this](uint32_t op, Weight from, Weight to) {
        core_->setEffectiveLane(op, to);
        const auto ops = core_->listOps();
        const std::string name = op < ops.size() ? ops[op].name : std::to_string(op);
        m_reclass_.Add({{"op", name}, {"from", weightName(from)}, {"to", weightName(to)}})
            .Increment();
        spdlog::info("cost model: op {} reclassified {} -> {}", name, weightName(from),
                     weightName(to));
      },
      config_.scheduler);
  sched->setGateListener([](const GateEvent& e) {
    spdlog::info(
        "placement gate: {} (model version {}, {} tokens scored, |ln error| model {:.3f} vs "
        "running mean {:.3f}, regret {:+.3f}; {} places)",
        gateEventName(e.kind), e.version, e.scored, e.model_err, e.fallback_err, e.regret,
        e.model_places ? "the model" : "least-outstanding");
  });
  scheduler_ = sched.get();
  published_scheduler_.store(scheduler_, std::memory_order_release);
  core.setScheduler(std::move(sched));
}

void LearnedBalancing::onSample(const coordinator::CoordinatorCore::Sample& s) {
  const double slowness = scheduler_ ? scheduler_->nodeSlowness(s.node) : 1.0;
  costmodel::TelemetrySample t;
  t.features.op_id = s.token.op;
  t.features.declared_weight =
      s.token.declared == Weight::kUnspecified ? 0 : static_cast<uint8_t>(s.token.declared);
  t.features.lane = static_cast<uint8_t>(s.lane == Weight::kUnspecified ? Weight::kLight : s.lane);
  t.features.arg_count = s.token.arg_count;
  t.features.arg_total_bytes = s.token.arg_bytes;
  t.features.first_numeric_arg = s.token.first_arg;
  t.features.node_index = s.node;
  t.features.node_speed = slowness;
  t.features.node_load = static_cast<uint32_t>(s.node_load);
  t.run_ns = static_cast<int64_t>(s.run_ns);
  t.queue_wait_ns = static_cast<int64_t>(s.queue_ns);
  if (trace_) trace_->record(t);
  window_.add(t);

  // s.token.cost is the nominal prediction made at dispatch (1.0 if another policy placed it).
  // (The core itself feeds every result to Scheduler::observe, which learns node speed.)
  if (scheduler_ && s.token.cost > 1.0 && s.run_ns > 0) {
    const double predicted = s.token.cost * slowness;
    m_error_.Observe(std::abs(std::log(predicted / static_cast<double>(s.run_ns))));
  }
}

}  // namespace tokengate::learned
