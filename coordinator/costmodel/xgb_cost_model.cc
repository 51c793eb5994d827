#include "coordinator/costmodel/xgb_cost_model.h"

#include <unistd.h>
#include <xgboost/c_api.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <system_error>

#include "absl/container/flat_hash_map.h"
#include "coordinator/costmodel/quality.h"
#include "coordinator/costmodel/strings.h"

namespace tokengate::costmodel {

using internal::cat;
using internal::split;
using internal::strip;
using internal::toLower;

namespace {

constexpr char kFormatAttr[] = "tokengate.format";
constexpr char kFormatValue[] = "tokengate-costmodel-v1";
constexpr char kR2Attr[] = "tokengate.r2";
constexpr char kMaeAttr[] = "tokengate.mae_log";
constexpr char kNTrainAttr[] = "tokengate.n_train";
constexpr char kNTestAttr[] = "tokengate.n_test";
constexpr char kFeaturesAttr[] = "tokengate.features";

constexpr double kMaxPredNs = 1e13;  // ~2.8 hours; anything above is a modelling accident
constexpr size_t kPredictChunk = 4096;

// XGBoost error strings carry a multi-line stack trace; the first line is the message.
std::string firstLine(const char* s) {
  std::string_view v(s ? s : "");
  return std::string(v.substr(0, v.find('\n')));
}

Status xgbError(std::string_view what) {
  return absl::InternalError(cat("xgboost: ", what, ": ", firstLine(XGBGetLastError())));
}

void quietXgboostOnce() {
  static std::once_flag once;
  std::call_once(once, [] { XGBSetGlobalConfig(R"({"verbosity":0})"); });
}

std::string featureListAttr() {
  std::string s;
  for (size_t i = 0; i < kNumFeatures; ++i) s += cat(i ? "," : "", kFeatureNames[i]);
  return s;
}

// RAII for a DMatrixHandle / BoosterHandle.
struct DMatrixGuard {
  DMatrixHandle h = nullptr;
  ~DMatrixGuard() {
    if (h) XGDMatrixFree(h);
  }
};
struct BoosterGuard {
  BoosterHandle h = nullptr;
  ~BoosterGuard() {
    if (h) XGBoosterFree(h);
  }
  BoosterHandle release() { return std::exchange(h, nullptr); }
};

std::vector<float> encodeRows(std::span<const TelemetrySample> samples,
                              std::span<const size_t> idx) {
  std::vector<float> rows(idx.size() * kNumFeatures);
  for (size_t i = 0; i < idx.size(); ++i) {
    encodeFeatures(samples[idx[i]].features,
                   std::span<float, kNumFeatures>(rows.data() + i * kNumFeatures, kNumFeatures));
  }
  return rows;
}

// Robust clip bounds for log labels per (op, first argument), computed from the training rows
// only. Per op alone (before 2026-11-29) an op whose cost is in its argument was cut down to its
// majority: bimodal's 5 ms tokens (1 in 11 of the op, MAD ~0) were clamped to 4.5x the 100 us
// median, heavytail's tokens above ~0.8 ms (Pareto, MAD of the log ~0.4) to ~0.8 ms, so the
// model put its biggest tokens anywhere. Tokens of the same op and argument should cost alike;
// a hung one is an outlier among those. Groups of fewer than 5 rows get no bounds here (the
// residual pass still clips them against the features).
struct ClipBounds {
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, std::pair<double, double>> per_key;
  static std::pair<uint32_t, uint64_t> keyOf(const TokenFeatures& f) {
    const double a = f.first_numeric_arg;
    return {f.op_id, std::isnan(a) ? ~uint64_t{0} : std::bit_cast<uint64_t>(a)};
  }
  [[nodiscard]] double clamp(const TokenFeatures& f, double y) const {
    auto it = per_key.find(keyOf(f));
    if (it == per_key.end()) return y;
    return std::clamp(y, it->second.first, it->second.second);
  }
};

ClipBounds computeClipBounds(std::span<const TelemetrySample> samples,
                             std::span<const size_t> train_idx, const XgbParams& p) {
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, std::vector<double>> by_key;
  for (size_t i : train_idx)
    by_key[ClipBounds::keyOf(samples[i].features)].push_back(logLabel(samples[i].run_ns));
  ClipBounds b;
  for (auto& [key, ys] : by_key) {
    if (ys.size() < 5) continue;
    const double med = quantile(ys, 0.5);
    std::vector<double> dev(ys.size());
    for (size_t i = 0; i < ys.size(); ++i) dev[i] = std::abs(ys[i] - med);
    const double mad = quantile(dev, 0.5);
    const double half = std::max(p.clip_mads * 1.4826 * mad, p.clip_min_log);
    b.per_key[key] = {med - half, med + half};
  }
  return b;
}

}  // namespace

XgbCostModel::XgbCostModel(void* booster) : booster_(booster) {}

XgbCostModel::~XgbCostModel() {
  if (booster_) XGBoosterFree(booster_);
}

namespace {
// Creates a booster on `dtrain` and runs `rounds` boosting rounds.
Status boost(DMatrixHandle dtrain, const XgbParams& p, double base_score, int rounds,
             BoosterGuard& out) {
  if (XGBoosterCreate(&dtrain, 1, &out.h) != 0) return xgbError("create booster");
  const std::pair<std::string, std::string> params[] = {
      {"verbosity", "0"},
      {"tree_method", "hist"},
      {"objective", p.objective},
      {"huber_slope", cat(p.huber_slope)},
      {"max_depth", cat(p.max_depth)},
      {"eta", cat(p.eta)},
      {"min_child_weight", cat(p.min_child_weight)},
      {"subsample", cat(p.subsample)},
      {"lambda", cat(p.lambda)},
      {"nthread", cat(std::max(p.nthread, 1))},
      {"seed", cat(p.seed % 2147483647)},
      {"base_score", cat(base_score)},
  };
  for (const auto& [k, v] : params) {
    // huber_slope is only understood by the pseudo-Huber objective.
    if (k == "huber_slope" && p.objective != "reg:pseudohubererror") continue;
    if (XGBoosterSetParam(out.h, k.c_str(), v.c_str()) != 0) {
      return xgbError(cat("set param ", k, "=", v));
    }
  }
  for (int iter = 0; iter < rounds; ++iter) {
    if (p.cancel && p.cancel->load(std::memory_order_relaxed)) {
      return absl::CancelledError("training cancelled");
    }
    if (XGBoosterUpdateOneIter(out.h, iter, dtrain) != 0) {
      return xgbError(cat("boosting round ", iter));
    }
  }
  return absl::OkStatus();
}
}  // namespace

StatusOr<std::shared_ptr<XgbCostModel>> XgbCostModel::train(
    std::span<const TelemetrySample> samples, const XgbParams& p) {
  quietXgboostOnce();
  if (samples.size() < std::max<size_t>(p.min_samples, 4)) {
    return absl::InvalidArgumentError(cat("need at least ", std::max<size_t>(p.min_samples, 4),
                                          " samples to train, have ", samples.size()));
  }
  if (p.num_rounds <= 0 || p.max_depth <= 0) {
    return absl::InvalidArgumentError("num_rounds and max_depth must be positive");
  }
  const Split split = trainTestSplit(samples.size(), p.test_fraction, p.seed);
  const ClipBounds clip = computeClipBounds(samples, split.train, p);

  std::vector<float> train_rows = encodeRows(samples, split.train);
  std::vector<float> labels(split.train.size());
  double label_sum = 0;
  for (size_t i = 0; i < split.train.size(); ++i) {
    const auto& s = samples[split.train[i]];
    const double y = clip.clamp(s.features, logLabel(s.run_ns));
    labels[i] = static_cast<float>(y);
    label_sum += y;
  }
  const double base_score = label_sum / static_cast<double>(labels.size());

  DMatrixGuard dtrain;
  if (XGDMatrixCreateFromMat_omp(train_rows.data(), split.train.size(), kNumFeatures,
                                 std::numeric_limits<float>::quiet_NaN(), &dtrain.h,
                                 std::max(p.nthread, 1)) != 0) {
    return xgbError("create training matrix");
  }
  if (XGDMatrixSetFloatInfo(dtrain.h, "label", labels.data(), labels.size()) != 0) {
    return xgbError("set labels");
  }
  {
    std::vector<const char*> names, types;
    for (size_t i = 0; i < kNumFeatures; ++i) {
      names.push_back(kFeatureNames[i].data());
      types.push_back(i == 0 && !p.categorical_op ? "q" : kFeatureTypes[i].data());
    }
    if (XGDMatrixSetStrFeatureInfo(dtrain.h, "feature_name", names.data(), kNumFeatures) != 0 ||
        XGDMatrixSetStrFeatureInfo(dtrain.h, "feature_type", types.data(), kNumFeatures) != 0) {
      return xgbError("set feature info");
    }
  }

  BoosterGuard booster;
  // The first pass is a reference for the residual band: heavily regularised (big leaves) so it
  // cannot chase individual samples.
  XgbParams first_pass = p;
  if (p.residual_clip) first_pass.min_child_weight = std::max(4 * p.min_child_weight, 32.0);
  if (auto st = boost(dtrain.h, first_pass, base_score, p.num_rounds, booster); !st.ok()) {
    return st;
  }

  if (p.residual_clip) {
    // Second pass: clip each label to within a robust band around the first model's prediction
    // and retrain. Per-op clipping alone leaves a hung token up to the op's own spread above its
    // neighbours; the residual band is much tighter because the model explains that spread.
    const bst_ulong* shape = nullptr;
    bst_ulong dim = 0;
    const float* pred = nullptr;
    if (XGBoosterPredictFromDMatrix(
            booster.h, dtrain.h,
            R"({"type":0,"training":false,"iteration_begin":0,"iteration_end":0,"strict_shape":false})",
            &shape, &dim, &pred) != 0) {
      return xgbError("predict training rows");
    }
    std::vector<double> residual(labels.size());
    for (size_t i = 0; i < labels.size(); ++i) residual[i] = labels[i] - pred[i];
    const double med = quantile(residual, 0.5);
    std::vector<double> dev(residual.size());
    for (size_t i = 0; i < residual.size(); ++i) dev[i] = std::abs(residual[i] - med);
    const double band =
        std::max(p.residual_clip_mads * 1.4826 * quantile(dev, 0.5), p.residual_clip_min_log);
    for (size_t i = 0; i < labels.size(); ++i) {
      const double lo = pred[i] + med - band, hi = pred[i] + med + band;
      labels[i] = static_cast<float>(std::clamp(static_cast<double>(labels[i]), lo, hi));
    }
    if (XGDMatrixSetFloatInfo(dtrain.h, "label", labels.data(), labels.size()) != 0) {
      return xgbError("set clipped labels");
    }
    BoosterGuard second;
    if (auto st = boost(dtrain.h, p, base_score, p.num_rounds, second); !st.ok()) return st;
    std::swap(booster.h, second.h);
  }
  if (XGBoosterSetParam(booster.h, "nthread", cat(std::max(p.predict_nthread, 1)).c_str()) != 0) {
    return xgbError("set predict nthread");
  }

  std::shared_ptr<XgbCostModel> model(new XgbCostModel(booster.release()));
  model->compileForest(std::span<const float>(train_rows)
                           .first(std::min<size_t>(train_rows.size(), 2000 * kNumFeatures)));

  // Held-out quality, against clipped labels so one hung token in the test split does not decide
  // whether an otherwise good model is accepted.
  std::vector<TelemetrySample> test;
  test.reserve(split.test.size());
  for (size_t i : split.test) {
    TelemetrySample s = samples[i];
    s.run_ns =
        static_cast<int64_t>(std::llround(std::exp(clip.clamp(s.features, logLabel(s.run_ns)))));
    test.push_back(s);
  }
  ModelQuality q = evaluateModel(*model, test);
  q.n_train = split.train.size();
  q.n_test = split.test.size();
  model->quality_ = q;

  const std::pair<const char*, std::string> attrs[] = {
      {kFormatAttr, kFormatValue}, {kFeaturesAttr, featureListAttr()}, {kR2Attr, cat(q.r2)},
      {kMaeAttr, cat(q.mae_log)},  {kNTrainAttr, cat(q.n_train)},      {kNTestAttr, cat(q.n_test)},
  };
  for (const auto& [k, v] : attrs) {
    if (XGBoosterSetAttr(model->booster_, k, v.c_str()) != 0) return xgbError("set attribute");
  }
  return model;
}

StatusOr<std::shared_ptr<XgbCostModel>> XgbCostModel::load(const std::string& path,
                                                           int predict_nthread) {
  quietXgboostOnce();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(cat("cost model file '", path, "' does not exist"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(cat("cannot open cost model file '", path, "'"));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  if (text.empty()) {
    return absl::DataLossError(cat("cost model file '", path, "' is empty"));
  }
  // XGBoost's own parser reports errors with a stack trace; check the obvious failure modes first
  // so the message says what is wrong with the file. (The model JSON contains NaN literals, so a
  // strict JSON parser cannot be used for this.)
  const std::string_view body = strip(text);
  if (body.empty() || body.front() != '{') {
    return absl::DataLossError(
        cat("cost model file '", path, "' is not valid JSON (corrupt: does not start with '{')"));
  }
  if (body.back() != '}') {
    return absl::DataLossError(
        cat("cost model file '", path, "' is not valid JSON (truncated: does not end with '}')"));
  }
  if (body.find("\"learner\"") == std::string_view::npos) {
    return absl::DataLossError(
        cat("cost model file '", path, "' is JSON but not an XGBoost model (no \"learner\" key)"));
  }
  BoosterGuard booster;
  if (XGBoosterCreate(nullptr, 0, &booster.h) != 0) return xgbError("create booster");
  if (XGBoosterLoadModelFromBuffer(booster.h, text.data(), text.size()) != 0) {
    return absl::DataLossError(cat("cost model file '", path, "' is not a loadable XGBoost model: ",
                                   firstLine(XGBGetLastError())));
  }
  bst_ulong nfeat = 0;
  if (XGBoosterGetNumFeature(booster.h, &nfeat) != 0) return xgbError("get feature count");
  if (nfeat != kNumFeatures) {
    return absl::InvalidArgumentError(
        cat("cost model file '", path, "' has ", nfeat, " features, expected ", kNumFeatures));
  }
  auto getAttr = [&](const char* key) -> std::optional<std::string> {
    const char* out = nullptr;
    int success = 0;
    if (XGBoosterGetAttr(booster.h, key, &out, &success) != 0 || !success || !out) {
      return std::nullopt;
    }
    return std::string(out);
  };
  if (auto feats = getAttr(kFeaturesAttr); feats && *feats != featureListAttr()) {
    return absl::InvalidArgumentError(cat("cost model file '", path, "' was trained on features [",
                                          *feats, "], this build uses [", featureListAttr(), "]"));
  }
  if (XGBoosterSetParam(booster.h, "nthread", cat(std::max(predict_nthread, 1)).c_str()) != 0) {
    return xgbError("set predict nthread");
  }
  ModelQuality q;
  auto num = [&](const char* key) {
    auto v = getAttr(key);
    return v ? std::strtod(v->c_str(), nullptr) : 0.0;
  };
  q.r2 = num(kR2Attr);
  q.mae_log = num(kMaeAttr);
  q.n_train = static_cast<uint64_t>(num(kNTrainAttr));
  q.n_test = static_cast<uint64_t>(num(kNTestAttr));
  std::shared_ptr<XgbCostModel> model(new XgbCostModel(booster.release()));
  model->quality_ = q;
  // Warm up: the first prediction configures the learner; do it before the model is shared.
  TokenFeatures probe;
  double probe_out = 0;
  model->predictWithXgboost(std::span<const TokenFeatures>(&probe, 1),
                            std::span<double>(&probe_out, 1));
  model->compileForest({});
  return model;
}

Status XgbCostModel::save(const std::string& path) const {
  bst_ulong len = 0;
  const char* data = nullptr;
  if (XGBoosterSaveModelToBuffer(booster_, R"({"format":"json"})", &len, &data) != 0) {
    return xgbError("serialise model");
  }
  const std::string tmp = cat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(cat("cannot write '", tmp, "'"));
    out.write(data, static_cast<std::streamsize>(len));
    out.flush();
    if (!out) return absl::DataLossError(cat("short write to '", tmp, "'"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return absl::PermissionDeniedError(cat("cannot rename model into '", path, "'"));
  }
  return absl::OkStatus();
}

int XgbCostModel::numTrees() const {
  int rounds = 0;
  if (XGBoosterBoostedRounds(booster_, &rounds) != 0) return 0;
  return rounds;
}

bool XgbCostModel::predictChunk(const float* rows, size_t n, double* out) const {
  char iface[160];
  std::snprintf(
      iface, sizeof(iface), R"({"data":[%llu,true],"shape":[%zu,%zu],"typestr":"<f4","version":3})",
      static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(rows)), n, kNumFeatures);
  static constexpr char kConfig[] =
      R"({"type":0,"training":false,"iteration_begin":0,"iteration_end":0,"strict_shape":false,"missing":NaN,"cache_id":0})";
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* result = nullptr;
  if (XGBoosterPredictFromDense(booster_, iface, kConfig, nullptr, &shape, &dim, &result) != 0) {
    // Cannot happen for a well-formed booster. Dispatch must go on, so fail safe with a
    // neutral 1 ms guess and say so once.
    static std::atomic<bool> reported{false};
    if (!reported.exchange(true)) {
      std::fprintf(stderr, "tokengate costmodel: XGBoost predict failed (using 1 ms): %s\n",
                   firstLine(XGBGetLastError()).c_str());
    }
    std::fill(out, out + n, 1e6);
    return false;
  }
  for (size_t i = 0; i < n; ++i) {
    out[i] = std::clamp(std::exp(static_cast<double>(result[i])), 1.0, kMaxPredNs);
  }
  return true;
}

void XgbCostModel::predict(std::span<const TokenFeatures> in, std::span<double> out_ns) const {
  if (!forest_) {
    predictWithXgboost(in, out_ns);
    return;
  }
  assert(in.size() == out_ns.size());
  const size_t n = std::min(in.size(), out_ns.size());
  constexpr size_t kChunk = 256;
  std::array<float, kChunk * kNumFeatures> rows;
  for (size_t start = 0; start < n; start += kChunk) {
    const size_t m = std::min(kChunk, n - start);
    for (size_t i = 0; i < m; ++i) {
      encodeFeatures(in[start + i],
                     std::span<float, kNumFeatures>(rows.data() + i * kNumFeatures, kNumFeatures));
    }
    double* out = out_ns.data() + start;
    forest_->predictMargins(rows.data(), m, out);
    for (size_t i = 0; i < m; ++i) out[i] = std::clamp(std::exp(out[i]), 1.0, kMaxPredNs);
  }
}

void XgbCostModel::compileForest(std::span<const float> rows) {
  forest_.reset();
  bst_ulong len = 0;
  const char* data = nullptr;
  if (XGBoosterSaveModelToBuffer(booster_, R"({"format":"json"})", &len, &data) != 0) return;
  auto forest = CompiledForest::fromXgboostJson(std::string_view(data, len));
  if (!forest.ok()) return;
  // Probe rows in addition to the caller's: unseen ops, missing values, extreme numbers.
  std::vector<float> probe(rows.begin(), rows.end());
  std::mt19937_64 rng(12345);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int i = 0; i < 512; ++i) {
    std::array<float, kNumFeatures> r;
    r[0] = static_cast<float>(rng() % 80);
    r[1] = static_cast<float>(rng() % 3);
    r[2] = static_cast<float>(rng() % 6);
    r[3] = static_cast<float>(rng() % 200000);
    r[4] = (i % 5 == 0) ? nan : static_cast<float>(static_cast<double>(rng() % 4000) / 37.0);
    r[5] = static_cast<float>(rng() % 8);
    r[6] = static_cast<float>(0.5 + static_cast<double>(rng() % 400) / 100.0);
    r[7] = static_cast<float>(rng() % 3);
    r[8] = static_cast<float>(rng() % 64);
    if (i % 7 == 0) r[static_cast<size_t>(rng() % kNumFeatures)] = nan;
    probe.insert(probe.end(), r.begin(), r.end());
  }
  const size_t n = probe.size() / kNumFeatures;
  std::vector<double> reference(n);
  for (size_t start = 0; start < n; start += kPredictChunk) {
    const size_t m = std::min(kPredictChunk, n - start);
    if (!predictChunk(probe.data() + start * kNumFeatures, m, reference.data() + start)) return;
  }
  for (size_t i = 0; i < n; ++i) {
    const double mine =
        std::clamp(std::exp(forest->predictMargin(std::span<const float, kNumFeatures>(
                       probe.data() + i * kNumFeatures, kNumFeatures))),
                   1.0, kMaxPredNs);
    // Summation order differs (XGBoost accumulates in float), so allow a tiny relative error.
    if (std::abs(mine / reference[i] - 1.0) > 1e-4) return;
  }
  forest_ = *std::move(forest);
}

void XgbCostModel::predictWithXgboost(std::span<const TokenFeatures> in,
                                      std::span<double> out_ns) const {
  assert(in.size() == out_ns.size());
  const size_t n = std::min(in.size(), out_ns.size());
  thread_local std::vector<float> rows;
  for (size_t start = 0; start < n; start += kPredictChunk) {
    const size_t m = std::min(kPredictChunk, n - start);
    rows.resize(m * kNumFeatures);
    for (size_t i = 0; i < m; ++i) {
      encodeFeatures(in[start + i],
                     std::span<float, kNumFeatures>(rows.data() + i * kNumFeatures, kNumFeatures));
    }
    predictChunk(rows.data(), m, out_ns.data() + start);
  }
}

StatusOr<std::vector<FeatureImportance>> XgbCostModel::featureImportance(
    std::string_view importance_type) const {
  std::string names;
  for (size_t i = 0; i < kNumFeatures; ++i)
    names += cat(i ? "," : "", "\"", kFeatureNames[i], "\"");
  const std::string config =
      cat(R"({"importance_type":")", importance_type, R"(","feature_names":[)", names, "]}");
  bst_ulong n_features = 0, dim = 0;
  const char** features = nullptr;
  const bst_ulong* shape = nullptr;
  const float* scores = nullptr;
  if (XGBoosterFeatureScore(booster_, config.c_str(), &n_features, &features, &dim, &shape,
                            &scores) != 0) {
    return xgbError("feature score");
  }
  std::vector<FeatureImportance> out;
  double total = 0;
  for (size_t i = 0; i < kNumFeatures; ++i) out.push_back({std::string(kFeatureNames[i]), 0, 0});
  for (bst_ulong i = 0; i < n_features; ++i) {
    for (auto& fi : out) {
      if (fi.feature == features[i]) fi.score = scores[i];
    }
  }
  for (const auto& fi : out) total += fi.score;
  for (auto& fi : out) fi.share = total > 0 ? fi.score / total : 0;
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.score > b.score; });
  return out;
}

}  // namespace tokengate::costmodel
