// Online training loop: a background thread retrains the cost model from the telemetry window
// every `retrain_interval` or every `retrain_every_samples` new samples and hot-swaps the
// candidate in only if (a) its own held-out R^2 >= r2_threshold and (b) on the newest
// `recent_holdout` of the window, which the candidate never trained on, its log error is below
// the running-mean estimator's on the same samples (scored prequentially, as the online per-op
// mean would have done). Otherwise the heuristic MeanCostModel (rebuilt from the same window)
// stays or becomes active.
//
// Ownership: owned by the coordinator wiring; holds references to a TelemetryWindow and a Clock
// that must outlive it.
// Threads: active()/stats() are called from any thread (dispatch) and take only a short mutex
// around a shared_ptr copy -- never held while training. runOnce() runs on the trainer thread
// (or a test thread); concurrent runOnce() calls serialise on their own mutex.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "common/clock.h"
#include "common/status.h"
#include "coordinator/costmodel/cost_model.h"
#include "coordinator/costmodel/mean_cost_model.h"
#include "coordinator/costmodel/sync.h"
#include "coordinator/costmodel/telemetry_window.h"
#include "coordinator/costmodel/xgb_cost_model.h"

namespace tokengate::costmodel {

// What a trainer function returns: a model plus its held-out quality.
struct TrainedModel {
  std::shared_ptr<CostModel> model;
  ModelQuality quality;
};
// Injectable so tests can substitute a deliberately slow or failing trainer.
using TrainFn =
    std::function<StatusOr<TrainedModel>(std::span<const TelemetrySample>, const XgbParams&)>;
// The production trainer: XgbCostModel::train.
TrainFn xgbTrainFn();

// One step of the model's life (OnlineTrainerOptions::on_event): where the seconds between a
// drift and a trusted new model go (the coordinator logs them at info).
struct TrainerEvent {
  enum class Kind : uint8_t {
    kDrift,       // checkDrift() declared a drift; the heuristic is published (version)
    kTrainStart,  // runOnce() snapshot taken: `samples` to train and validate on
    kAccepted,    // the candidate was published as `version`
    kRejected,    // the candidate was not published; version = what is active after it
  };
  Kind kind = Kind::kTrainStart;
  Nanos at = 0;               // by the trainer's injected Clock
  uint64_t version = 0;       // active model version after the event
  size_t samples = 0;         // window samples used (kTrainStart, kAccepted, kRejected)
  bool after_drift = false;   // a retrain on the samples since a drift
  double candidate_err = -1;  // kAccepted / kRejected: candidate's mean |log error| on the hold-out
  double mean_err = -1;       // the running mean's on the same samples
  Nanos duration = 0;         // kAccepted / kRejected: training time
};
const char* trainerEventName(TrainerEvent::Kind kind);

// Where a drift began in a run of per-sample errors (oldest first): the start of the suffix whose
// sum of (error - threshold) is largest, i.e. the first sample of the stretch the model is off
// on (errors above the threshold count for it, those below against it). errors.size() when no
// suffix sums above 0.
size_t driftStart(std::span<const double> errors, double threshold);

struct OnlineTrainerOptions {
  Nanos retrain_interval = 30 * kSeconds;
  uint64_t retrain_every_samples = 5000;
  // No training below this many samples in the window (the heuristic serves meanwhile).
  size_t min_samples = 500;
  // No training while the window's tokens add up to less run time than this: training costs
  // tens of ms of CPU, which a window of sub-µs tokens (1M-term Leibniz) can never pay back,
  // and such tokens are placed by lane credit anyway. The heuristic is refreshed instead.
  Nanos min_window_work = 0;
  // Candidate must reach this held-out R^2 (log space) to become active.
  double r2_threshold = 0.7;
  // Fraction of the window (its newest samples) held out of training and used to compare the
  // candidate with the running-mean estimator; 0 = no comparison (R^2 gate only).
  double recent_holdout = 0.2;
  // The candidate must beat the running mean's mean |log error| on the recent hold-out by this
  // relative margin (0.02 = 2% lower error) to be published.
  double beat_margin = 0.02;
  XgbParams xgb;
  MeanCostOptions mean;
  // Drift. On every wake-up, once drift_check_samples new samples have arrived, the active
  // learned model is scored on the newest drift_check_samples samples; a mean |log error| there
  // above max(drift_error_factor x its error on the recent hold-out when it was accepted, that +
  // drift_min_increase), while it is also worse there than the running mean scored prequentially
  // on the window before them, is a drift: the heuristic is published at once (placement falls back
  // to least-outstanding), and training uses only the samples from the first of those checked on
  // (the window's older samples describe costs that no longer hold) until the window holds no
  // older ones; a retrain is due every drift_min_samples (0: min_samples) new samples until a
  // candidate is accepted, whatever retrain_interval / retrain_every_samples say. Before, the
  // next model came at the next regular retrain and was trained on a window still mostly from
  // before the change (the 10x-swap drift: seconds). 0 = no drift check.
  size_t drift_check_samples = 0;
  double drift_error_factor = 2.0;
  double drift_min_increase = 0.3;
  size_t drift_min_samples = 0;
  // The trainer for the retrains after a drift (placement is on the fallback until one is
  // accepted); empty: the constructor's. The coordinator trains at SCHED_IDLE except these (a
  // starved trainer thread took 1-9 s per training at load 10-15).
  TrainFn drift_train_fn;
  // How often the background thread wakes to check the (injected) clock. Real time, only a
  // polling granularity; decisions use the Clock.
  std::chrono::milliseconds poll_interval{100};
  // Called on the training thread (never the dispatch thread) after a trained candidate was
  // accepted and published, with the model and its version (e.g. to save it: --model-out).
  std::function<void(const CostModel& model, uint64_t version)> on_accepted;
  // Called on the thread that runs checkDrift() / runOnce() (the trainer thread), outside the
  // trainer's locks, at each TrainerEvent.
  std::function<void(const TrainerEvent&)> on_event;
};

struct TrainerStats {
  uint64_t model_version = 0;        // version of the active model
  uint64_t retrain_count = 0;        // training attempts (accepted + rejected + failed)
  uint64_t accepted_count = 0;       // candidates that became active
  uint64_t rejected_count = 0;       // candidates below the R^2 threshold or not beating the mean
  uint64_t lost_to_mean_count = 0;   // of which: worse than the running mean on recent samples
  uint64_t failed_count = 0;         // trainer returned an error
  uint64_t skipped_count = 0;        // attempts skipped: too little token work in the window
  uint64_t fallback_count = 0;       // times a learned model was replaced by the heuristic
  uint64_t drift_count = 0;          // drifts detected (checkDrift), each also a fallback
  ModelQuality last_quality;         // of the last candidate (its trainer's own held-out split)
  ModelQuality last_recent_quality;  // of the last candidate on the recent hold-out
  ModelQuality last_mean_quality;    // of the running mean on the same recent hold-out
  std::string active_model;          // name() of the active model
  Nanos last_train_duration = 0;     // by the injected clock
  std::string last_error;
};

class OnlineTrainer {
 public:
  OnlineTrainer(TelemetryWindow& window, const Clock& clock, OnlineTrainerOptions options,
                TrainFn train_fn = xgbTrainFn());
  ~OnlineTrainer();

  OnlineTrainer(const OnlineTrainer&) = delete;
  OnlineTrainer& operator=(const OnlineTrainer&) = delete;

  // The model dispatch should use right now. Never blocks on training.
  std::shared_ptr<const CostModel> active() const;
  // Installs a model (e.g. loaded with --model at start). Gets the next version number.
  void setActive(std::shared_ptr<CostModel> model);

  void start();
  // Stops the thread; an in-flight XGBoost training is cancelled between rounds.
  void stop();
  // Wakes the background thread to re-check whether retraining is due.
  void kick();

  // Whether a retrain is due now (enough new samples or interval elapsed, and enough samples;
  // after a drift, enough samples since it).
  bool due() const;
  // The drift check (OnlineTrainerOptions::drift_check_samples); the background thread runs it
  // before due() on every wake-up. True if it declared a drift now.
  bool checkDrift();
  // One training cycle on the calling thread: snapshot, train, validate, maybe swap.
  // Returns the trainer's error if it failed, FailedPrecondition if the window holds fewer than
  // min_samples (the heuristic is refreshed, nothing is counted); OK otherwise (including
  // "candidate rejected").
  Status runOnce();

  TrainerStats stats() const;

 private:
  void loop() ABSL_NO_THREAD_SAFETY_ANALYSIS;  // condition-variable wait on mu_
  void publish(std::shared_ptr<CostModel> model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // runOnce()'s bookkeeping for a candidate that was not published.
  void rejectLocked(const StatusOr<TrainedModel>& result, bool lost_to_mean,
                    const ModelQuality& recent_q, const ModelQuality& mean_q, Nanos duration,
                    bool keep_current_learned, std::shared_ptr<MeanCostModel> heuristic)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void emit(const TrainerEvent& e) const {
    if (options_.on_event) options_.on_event(e);
  }

  TelemetryWindow& window_;
  const Clock& clock_;
  const OnlineTrainerOptions options_;
  const TrainFn train_fn_;

  internal::Mutex train_mu_;    // serialises runOnce(); held for the whole (slow) training
  mutable internal::Mutex mu_;  // guards the published state below; held only briefly
  std::shared_ptr<const CostModel> active_ ABSL_GUARDED_BY(mu_);
  bool active_is_learned_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_version_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t last_trained_total_ ABSL_GUARDED_BY(mu_) = 0;
  Nanos last_train_time_ ABSL_GUARDED_BY(mu_) = 0;
  // The active learned model's mean |log error| on its recent hold-out when it was accepted
  // (-1: unknown, e.g. a model installed with setActive: no drift check).
  double accepted_mae_ ABSL_GUARDED_BY(mu_) = -1;
  uint64_t last_drift_check_total_ ABSL_GUARDED_BY(mu_) = 0;
  // After a drift: train only on samples numbered >= drift_since_ (totalAdded() order) while the
  // window still holds older ones; drift_pending_ until a candidate trained on them is accepted.
  bool drift_window_ ABSL_GUARDED_BY(mu_) = false;
  bool drift_pending_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t drift_since_ ABSL_GUARDED_BY(mu_) = 0;
  TrainerStats stats_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  std::condition_variable_any wake_;  // signalled by kick() and stop()

  std::atomic<bool> cancel_{false};
  std::thread thread_;  // last: started after everything above is initialised
};

}  // namespace tokengate::costmodel
