#include "coordinator/costmodel/online_trainer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "coordinator/costmodel/strings.h"

namespace tokengate::costmodel {

TrainFn xgbTrainFn() {
  return [](std::span<const TelemetrySample> samples,
            const XgbParams& params) -> StatusOr<TrainedModel> {
    auto model = XgbCostModel::train(samples, params);
    if (!model.ok()) return model.status();
    TrainedModel out;
    out.quality = (*model)->quality();
    out.model = *std::move(model);
    return out;
  };
}

const char* trainerEventName(TrainerEvent::Kind kind) {
  switch (kind) {
    case TrainerEvent::Kind::kDrift:
      return "drift";
    case TrainerEvent::Kind::kTrainStart:
      return "train-start";
    case TrainerEvent::Kind::kAccepted:
      return "accepted";
    case TrainerEvent::Kind::kRejected:
      return "rejected";
  }
  return "?";
}

size_t driftStart(std::span<const double> errors, double threshold) {
  size_t best = errors.size();
  double sum = 0, best_sum = 0;
  for (size_t i = errors.size(); i-- > 0;) {
    sum += errors[i] - threshold;
    if (sum > best_sum) {
      best_sum = sum;
      best = i;
    }
  }
  return best;
}

namespace {
// |ln(predicted / actual)| of each sample (as evaluateModel averages it).
std::vector<double> sampleErrors(const CostModel& model, std::span<const TelemetrySample> samples) {
  std::vector<TokenFeatures> feats;
  feats.reserve(samples.size());
  for (const auto& s : samples) feats.push_back(s.features);
  std::vector<double> pred(samples.size());
  model.predict(feats, pred);
  for (size_t i = 0; i < samples.size(); ++i)
    pred[i] = std::abs(std::log(std::max(pred[i], 1.0)) - logLabel(samples[i].run_ns));
  return pred;
}
}  // namespace

OnlineTrainer::OnlineTrainer(TelemetryWindow& window, const Clock& clock,
                             OnlineTrainerOptions options, TrainFn train_fn)
    : window_(window), clock_(clock), options_(std::move(options)), train_fn_(std::move(train_fn)) {
  internal::MutexLock lock(&mu_);
  publish(std::make_shared<MeanCostModel>(options_.mean));
}

OnlineTrainer::~OnlineTrainer() { stop(); }

std::shared_ptr<const CostModel> OnlineTrainer::active() const {
  internal::MutexLock lock(&mu_);
  return active_;
}

void OnlineTrainer::publish(std::shared_ptr<CostModel> model) {
  model->setVersion(next_version_++);
  stats_.model_version = model->version();
  stats_.active_model = std::string(model->name());
  active_is_learned_ = dynamic_cast<const MeanCostModel*>(model.get()) == nullptr;
  accepted_mae_ = -1;  // runOnce() sets it for the candidates it accepts
  active_ = std::move(model);
}

void OnlineTrainer::setActive(std::shared_ptr<CostModel> model) {
  if (!model) return;
  internal::MutexLock lock(&mu_);
  publish(std::move(model));
}

void OnlineTrainer::start() {
  internal::MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  cancel_.store(false);
  thread_ = std::thread([this] { loop(); });
}

void OnlineTrainer::stop() {
  {
    internal::MutexLock lock(&mu_);
    stop_ = true;
  }
  wake_.notify_all();
  cancel_.store(true);
  if (thread_.joinable()) thread_.join();
}

void OnlineTrainer::kick() {
  {
    internal::MutexLock lock(&mu_);
    kicked_ = true;
  }
  wake_.notify_all();
}

bool OnlineTrainer::due() const {
  const size_t size = window_.size();
  if (size < std::max<size_t>(options_.min_samples, 1)) return false;
  const uint64_t total = window_.totalAdded();
  const Nanos now = clock_.now();
  internal::MutexLock lock(&mu_);
  // First model as soon as there is enough data.
  if (stats_.retrain_count == 0 && stats_.skipped_count == 0) return true;
  const uint64_t fresh = total - last_trained_total_;
  if (fresh == 0) return false;
  if (drift_pending_) {
    // As soon as there are enough samples since the drift, then every drift_min_samples more.
    const uint64_t need =
        options_.drift_min_samples ? options_.drift_min_samples : options_.min_samples;
    return total - drift_since_ >= std::max<uint64_t>(need, 1) && fresh >= need;
  }
  if (fresh >= options_.retrain_every_samples) return true;
  return now - last_train_time_ >= options_.retrain_interval;
}

void OnlineTrainer::loop() {
  while (true) {
    {
      internal::MutexLock lock(&mu_);
      wake_.wait_for(mu_, options_.poll_interval, [this] { return stop_ || kicked_; });
      if (stop_) return;
      kicked_ = false;
    }
    (void)checkDrift();
    if (due()) (void)runOnce();  // outcome is recorded in stats()
  }
}

bool OnlineTrainer::checkDrift() {
  if (options_.drift_check_samples == 0) return false;
  const uint64_t total = window_.totalAdded();
  std::shared_ptr<const CostModel> current;
  double base = -1;
  {
    internal::MutexLock lock(&mu_);
    if (!active_is_learned_ || accepted_mae_ < 0) return false;
    if (total - last_drift_check_total_ < options_.drift_check_samples) return false;
    last_drift_check_total_ = total;
    current = active_;
    base = accepted_mae_;
  }
  const size_t chunk = options_.drift_check_samples;
  const std::vector<TelemetrySample> recent = window_.newest(chunk);
  if (recent.size() < chunk) return false;
  const ModelQuality q = evaluateModel(*current, recent);
  const double limit =
      std::max(base * options_.drift_error_factor, base + options_.drift_min_increase);
  if (!(q.mae_log > limit)) return false;
  // Where did it start? Older chunks of the window, newest first, while the model is as far off
  // there too (at most kDriftLookBack chunks; checks run every chunk, so usually none).
  constexpr size_t kDriftLookBack = 16;
  uint64_t at_all = 0;
  const std::vector<TelemetrySample> back = window_.newest(chunk * kDriftLookBack, &at_all);
  const auto all = std::span<const TelemetrySample>(back);
  // A drift only if the model is now also worse than the running mean on those samples (the
  // issue's rule for the fallback): a newest stretch that is merely harder (e.g. the end of a
  // pass, where only the biggest tokens are left) is not one.
  if (all.size() > chunk) {
    const auto last = all.last(chunk);
    const double model_err = evaluateModel(*current, last).mae_log;
    const double mean_err =
        evaluateRunningMean(all.first(all.size() - chunk), last, options_.mean).mae_log;
    if (!(model_err > mean_err)) return false;
  }
  size_t bad = chunk;  // the newest `bad` samples (numbered up to at_all) are off
  while (bad + chunk <= all.size() &&
         evaluateModel(*current, all.subspan(all.size() - bad - chunk, chunk)).mae_log > limit)
    bad += chunk;
  // To the sample: the oldest chunk found off is only off on average (a check fires once a
  // fraction of the newest chunk is off), and its older samples are from before the change; a
  // retrain on them learns the old costs again (drift-long: up to 200 of the first 400). The
  // drift begins where the errors over the off chunks and the one before them (if any) rise above
  // the limit for good (driftStart).
  {
    const size_t span = std::min(all.size(), bad + chunk);
    const std::vector<double> err = sampleErrors(*current, all.last(span));
    const size_t k = driftStart(err, limit);
    if (k < span) bad = span - k;
  }
  std::shared_ptr<MeanCostModel> heuristic = MeanCostModel::fromSamples(recent, options_.mean);
  TrainerEvent e;
  e.kind = TrainerEvent::Kind::kDrift;
  e.samples = bad;
  e.candidate_err = q.mae_log;
  {
    internal::MutexLock lock(&mu_);
    if (active_ != current) return false;  // replaced meanwhile
    drift_since_ = at_all - std::min<uint64_t>(bad, at_all);
    drift_window_ = drift_pending_ = true;
    last_trained_total_ = std::min(last_trained_total_, drift_since_);
    stats_.drift_count++;
    stats_.fallback_count++;
    stats_.last_error = internal::cat("drift: the model's mean |log error| on the newest ",
                                      recent.size(), " samples rose to ", q.mae_log,
                                      " (accepted at ", base, "); retraining on samples since");
    publish(std::move(heuristic));
    e.version = stats_.model_version;
  }
  e.at = clock_.now();
  emit(e);
  return true;
}

Status OnlineTrainer::runOnce() {
  internal::MutexLock train_lock(&train_mu_);
  uint64_t total = 0;
  std::vector<TelemetrySample> snapshot = window_.snapshot(&total);
  const Nanos t0 = clock_.now();
  bool drift_retrain = false;
  {
    internal::MutexLock lock(&mu_);
    last_trained_total_ = total;
    last_train_time_ = t0;
    // After a drift, only the samples since it (see OnlineTrainerOptions::drift_check_samples).
    if (drift_window_) {
      const uint64_t oldest = total - snapshot.size();
      if (drift_since_ > oldest) {
        snapshot.erase(snapshot.begin(),
                       snapshot.begin() + static_cast<ptrdiff_t>(std::min<uint64_t>(
                                              drift_since_ - oldest, snapshot.size())));
      } else {
        drift_window_ = false;  // the window holds nothing older any more
      }
      drift_retrain = drift_pending_;
    }
  }
  // Built outside any lock: it is the fallback whenever the learned model is not good enough.
  std::shared_ptr<MeanCostModel> heuristic = MeanCostModel::fromSamples(snapshot, options_.mean);
  if (snapshot.size() < std::max<size_t>(options_.min_samples, 1)) {
    // Too little data to train or validate anything; keep the heuristic current.
    internal::MutexLock lock(&mu_);
    if (!active_is_learned_ && !snapshot.empty()) publish(std::move(heuristic));
    return absl::FailedPreconditionError(internal::cat(
        "need ", options_.min_samples, " samples to train, window has ", snapshot.size()));
  }

  Nanos work = 0;
  for (const TelemetrySample& t : snapshot) work += std::max<int64_t>(t.run_ns, 0);
  if (work < options_.min_window_work) {
    internal::MutexLock lock(&mu_);
    stats_.skipped_count++;
    if (!active_is_learned_) publish(std::move(heuristic));
    return absl::FailedPreconditionError(internal::cat(
        "window holds ", work / 1000, " us of token work, below the ",
        options_.min_window_work / 1000, " us worth training for; the heuristic serves"));
  }

  {
    TrainerEvent e;
    e.kind = TrainerEvent::Kind::kTrainStart;
    e.at = t0;
    e.samples = snapshot.size();
    e.after_drift = drift_retrain;
    e.version = stats().model_version;
    emit(e);
  }
  // The newest samples are held out of training: the candidate must predict them better than
  // the running mean would have (the fallback placement's estimator) before it is published.
  const auto n_recent = static_cast<size_t>(static_cast<double>(snapshot.size()) *
                                            std::clamp(options_.recent_holdout, 0.0, 0.5));
  const auto all = std::span<const TelemetrySample>(snapshot);
  const auto history = all.first(snapshot.size() - n_recent);
  const auto recent = all.last(n_recent);

  XgbParams params = options_.xgb;
  params.cancel = &cancel_;
  // After a drift the fallback places until this candidate is in: the urgent trainer, if any.
  const TrainFn& train =
      drift_retrain && options_.drift_train_fn ? options_.drift_train_fn : train_fn_;
  StatusOr<TrainedModel> result = train(history, params);
  const Nanos duration = clock_.now() - t0;

  bool accepted = result.ok() && result->model && result->quality.r2 >= options_.r2_threshold;
  bool lost_to_mean = false;
  ModelQuality recent_q, mean_q;
  if (result.ok() && result->model && n_recent > 0) {
    recent_q = evaluateModel(*result->model, recent);
    mean_q = evaluateRunningMean(history, recent, options_.mean);
    lost_to_mean = !(recent_q.mae_log < mean_q.mae_log * (1 - options_.beat_margin));
    accepted = accepted && !lost_to_mean;
  }
  // If the candidate is not good enough, check whether the current learned model still is, on
  // the newest data (a drifted model is worse than the heuristic).
  bool keep_current_learned = false;
  if (!accepted) {
    std::shared_ptr<const CostModel> current;
    bool learned = false;
    {
      internal::MutexLock lock(&mu_);
      current = active_;
      learned = active_is_learned_;
    }
    if (learned && current) {
      const size_t n_last = std::max<size_t>(snapshot.size() / 5, 1);
      const auto last = all.last(std::min(n_last, snapshot.size()));
      const ModelQuality cur = evaluateModel(*current, last);
      keep_current_learned = cur.r2 >= options_.r2_threshold;
      if (options_.recent_holdout > 0) {
        // ... and still beats the running mean there (scored as in acceptance).
        const auto older = all.first(snapshot.size() - last.size());
        keep_current_learned =
            keep_current_learned &&
            cur.mae_log < evaluateRunningMean(older, last, options_.mean).mae_log;
      }
    }
  }

  if (accepted) {
    std::shared_ptr<const CostModel> model = result->model;
    uint64_t version = 0;
    {
      internal::MutexLock lock(&mu_);
      stats_.retrain_count++;
      stats_.last_train_duration = duration;
      stats_.accepted_count++;
      stats_.last_quality = result->quality;
      stats_.last_recent_quality = recent_q;
      stats_.last_mean_quality = mean_q;
      stats_.last_error.clear();
      if (n_recent > 0) result->model->setHeldOut({recent_q.mae_log, mean_q.mae_log, n_recent});
      publish(std::move(result->model));
      accepted_mae_ = n_recent > 0 ? recent_q.mae_log : -1;
      if (drift_retrain) drift_pending_ = false;
      last_drift_check_total_ = total;
      version = stats_.model_version;
    }
    // Outside mu_: active()/stats() stay free while the hook (e.g. a file write) runs.
    if (options_.on_accepted) options_.on_accepted(*model, version);
    TrainerEvent e;
    e.kind = TrainerEvent::Kind::kAccepted;
    e.at = clock_.now();
    e.version = version;
    e.samples = snapshot.size();
    e.after_drift = drift_retrain;
    e.candidate_err = recent_q.mae_log;
    e.mean_err = mean_q.mae_log;
    e.duration = duration;
    emit(e);
    return absl::OkStatus();
  }
  TrainerEvent e;
  e.kind = TrainerEvent::Kind::kRejected;
  e.samples = snapshot.size();
  e.after_drift = drift_retrain;
  e.candidate_err = recent_q.mae_log;
  e.mean_err = mean_q.mae_log;
  e.duration = duration;
  {
    internal::MutexLock lock(&mu_);
    rejectLocked(result, lost_to_mean, recent_q, mean_q, duration, keep_current_learned,
                 std::move(heuristic));
    e.version = stats_.model_version;
  }
  e.at = clock_.now();
  emit(e);
  return result.ok() ? absl::OkStatus() : result.status();
}

void OnlineTrainer::rejectLocked(const StatusOr<TrainedModel>& result, bool lost_to_mean,
                                 const ModelQuality& recent_q, const ModelQuality& mean_q,
                                 Nanos duration, bool keep_current_learned,
                                 std::shared_ptr<MeanCostModel> heuristic) {
  stats_.retrain_count++;
  stats_.last_train_duration = duration;
  if (!result.ok()) {
    stats_.failed_count++;
    stats_.last_error = result.status().ToString();
  } else {
    stats_.rejected_count++;
    if (lost_to_mean) stats_.lost_to_mean_count++;
    stats_.last_quality = result->quality;
    stats_.last_recent_quality = recent_q;
    stats_.last_mean_quality = mean_q;
    stats_.last_error.clear();
  }
  if (!keep_current_learned) {
    if (active_is_learned_) stats_.fallback_count++;
    publish(std::move(heuristic));
  }
}

TrainerStats OnlineTrainer::stats() const {
  internal::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace tokengate::costmodel
