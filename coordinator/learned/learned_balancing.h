// LearnedBalancing: the cost-model wiring for one coordinator. It owns the telemetry window,
// the online trainer and the model metrics; installs the telemetry sink and the XgbScheduler on
// the CoordinatorCore; and loads `--model`. app.cc creates it when --scheduler xgboost, --learn
// or --model is given.
//
// Ownership: owned by runCoordinator (or a test), outlives the CoordinatorServer's loop (stop()
// before the server is destroyed is not required: the core only calls back into it while the
// loop runs, and this object is declared before the loop starts and destroyed after it ends).
// Threads: install() and the sink / scheduler callbacks run on the coordinator loop thread; the
// trainer has its own thread; the metrics updater thread only reads trainer stats and atomics.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/status.h"
#include "coordinator/core/coordinator.h"
#include "coordinator/costmodel/online_trainer.h"
#include "coordinator/costmodel/telemetry_window.h"
#include "coordinator/costmodel/trace_recorder.h"
#include "coordinator/learned/xgb_scheduler.h"

namespace tokengate::learned {

struct LearnedConfig {
  std::string model_path;  // --model: XGBoost JSON to start from ("" = heuristic)
  // --model-out: every accepted online-trained model is saved here (XGBoost JSON, written to a
  // temp file and renamed, on the trainer thread). "" = not saved.
  std::string model_out;
  // --trace-out: telemetry samples are appended here as a CSV trace (tgctl model train --trace),
  // buffered and written by a TraceRecorder thread. "" = not recorded.
  std::string trace_out;
  bool train = true;  // run the online trainer thread
  // Install the XgbScheduler (cost-model placement). false: only the telemetry sink (e.g.
  // --trace-out under a heuristic policy records that policy's telemetry).
  bool place = true;
  size_t window_capacity = 20'000;
  // Telemetry kept per second at most: the core samples an even stride of results before
  // building a sample, so a 1M-token run of tiny tokens does not pay a window insert per token.
  uint32_t max_samples_per_s = 5'000;
  costmodel::OnlineTrainerOptions trainer = defaultTrainerOptions();
  XgbSchedulerOptions scheduler;

  static costmodel::OnlineTrainerOptions defaultTrainerOptions() {
    costmodel::OnlineTrainerOptions o;
    o.retrain_interval = 5 * kSeconds;
    o.retrain_every_samples = 4000;
    o.min_samples = 400;
    o.min_window_work = 10 * kMillis;
    // Drift: the active model is checked on every 256 new samples (a few hundred us of the
    // trainer thread's time, and only while a learned model is active), see OnlineTrainerOptions.
    o.drift_check_samples = 256;
    return o;
  }
};

// Loads `path` with XgbCostModel::load and makes it the trainer's active model. On error the
// trainer keeps its current (heuristic) model and the status says why (NotFound / DataLoss /
// InvalidArgument, message naming the path).
Status loadModelInto(costmodel::OnlineTrainer& trainer, const std::string& path);

class LearnedBalancing {
 public:
  LearnedBalancing(LearnedConfig config, const Clock& clock,
                   std::shared_ptr<prometheus::Registry> registry);
  ~LearnedBalancing();
  LearnedBalancing(const LearnedBalancing&) = delete;
  LearnedBalancing& operator=(const LearnedBalancing&) = delete;

  // Loads config.model_path if set. An error is logged and returned; the heuristic stays.
  Status loadModel();
  // Opens config.trace_out if set (before start()). An error is logged and returned; the
  // coordinator keeps running without a trace.
  Status openTrace();
  // Starts the trainer (if config.train) and the metrics updater.
  void start();
  void stop();
  // Loop thread: installs the telemetry sink and an XgbScheduler on `core`.
  void install(coordinator::CoordinatorCore& core);

  costmodel::OnlineTrainer& trainer() { return trainer_; }
  costmodel::TelemetryWindow& window() { return window_; }
  // Loop thread only; null before install().
  XgbScheduler* scheduler() { return scheduler_; }
  // Loop thread (or after the loop ended): results the core saw / samples it handed over.
  uint64_t samplesKept() const { return core_ ? core_->telemetryStats().sampled : 0; }
  uint64_t samplesSeen() const { return core_ ? core_->telemetryStats().seen : 0; }
  // Models written to config.model_out so far (any thread).
  uint64_t modelsSaved() const { return models_saved_.load(std::memory_order_relaxed); }
  // Null unless a trace is being recorded.
  costmodel::TraceRecorder* trace() { return trace_.get(); }
  // Test hook: what the core's telemetry sink does with one sample (loop thread).
  void addSample(const coordinator::CoordinatorCore::Sample& s) { onSample(s); }

 private:
  void onSample(const coordinator::CoordinatorCore::Sample& s);
  void updateMetrics();
  costmodel::OnlineTrainerOptions trainerOptions();
  void installScheduler(coordinator::CoordinatorCore& core);
  void saveModel(const costmodel::CostModel& model, uint64_t version);  // trainer thread

  const LearnedConfig config_;
  const Clock& clock_;
  std::shared_ptr<prometheus::Registry> registry_;
  costmodel::TelemetryWindow window_;
  std::unique_ptr<costmodel::TraceRecorder> trace_;  // set by openTrace() before start()
  std::atomic<uint64_t> models_saved_{0};
  costmodel::OnlineTrainer trainer_;
  prometheus::Histogram& m_error_;
  prometheus::Gauge& m_version_;
  prometheus::Counter& m_retrains_;
  prometheus::Family<prometheus::Counter>& m_reclass_;
  prometheus::Gauge& m_predict_ns_;
  prometheus::Gauge& m_model_places_;  // 1 = the model places, 0 = least-outstanding fallback
  prometheus::Counter& m_mode_switches_;
  prometheus::Family<prometheus::Gauge>& m_error_by_estimator_;
  prometheus::Gauge& m_model_err_;
  prometheus::Gauge& m_fallback_err_;
  prometheus::Gauge& m_regret_;
  prometheus::Counter& m_lost_to_mean_;
  prometheus::Counter& m_drifts_;
  // Loop-thread cost of placement and what the queue horizon held (see updateMetrics()).
  prometheus::Counter& m_sched_seconds_;
  prometheus::Counter& m_predict_seconds_;
  prometheus::Counter& m_offered_;
  prometheus::Counter& m_place_calls_;
  prometheus::Family<prometheus::Counter>& m_held_back_;
  prometheus::Counter& m_held_by_model_;
  prometheus::Counter& m_held_by_guard_;
  uint64_t retrains_exported_ = 0;  // metrics thread only
  uint64_t drifts_exported_ = 0;    // metrics thread only
  uint64_t switches_exported_ = 0;  // metrics thread only
  uint64_t lost_exported_ = 0;      // metrics thread only
  // Scheduler counters exported so far (metrics thread only).
  uint64_t sched_ns_exported_ = 0, predict_ns_exported_ = 0, offered_exported_ = 0,
           place_calls_exported_ = 0, held_model_exported_ = 0, held_guard_exported_ = 0;

  // Loop-thread state.
  coordinator::CoordinatorCore* core_ = nullptr;
  XgbScheduler* scheduler_ = nullptr;  // owned by core_

  std::atomic<const XgbScheduler*> published_scheduler_{nullptr};  // for the metrics thread
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread metrics_thread_;
};

}  // namespace tokengate::learned
