#include "coordinator/costmodel/tgctl_model.h"

#include <fmt/format.h>

#include <cmath>
#include <string>

#include "coordinator/costmodel/trace.h"

namespace tokengate::costmodel {

void addModelCommands(CLI::App& app) {
  auto* model = app.add_subcommand("model", "train or inspect the XGBoost cost model");
  model->require_subcommand(1);

  auto* train = model->add_subcommand("train", "train a cost model offline from a trace");
  train->add_option("--trace", "CSV or JSONL telemetry trace (docs/cost-model.md)")->required();
  train->add_option("-o,--out", "where to write the model (XGBoost JSON)")
      ->default_str("model.json");
  const XgbParams defaults;
  train->add_option("--rounds", "boosting rounds")
      ->default_str(std::to_string(defaults.num_rounds));
  train->add_option("--depth", "maximum tree depth")
      ->default_str(std::to_string(defaults.max_depth));
  train->add_option("--objective", "reg:squarederror or reg:pseudohubererror")
      ->default_str(defaults.objective);
  train->add_option("--threads", "training threads")->default_str(std::to_string(defaults.nthread));

  auto* show = model->add_subcommand("show", "print held-out quality and feature importance");
  show->add_option("model", "model file")->default_str("model.json");
}

namespace {

template <typename T>
T optionOr(CLI::App* cmd, const std::string& name, T fallback) {
  CLI::Option* opt = cmd->get_option(name);
  if (opt->count() == 0) return fallback;
  return opt->as<T>();
}

int runTrain(CLI::App* train) {
  XgbParams params;
  params.num_rounds = optionOr<int>(train, "--rounds", params.num_rounds);
  params.max_depth = optionOr<int>(train, "--depth", params.max_depth);
  params.objective = optionOr<std::string>(train, "--objective", params.objective);
  params.nthread = optionOr<int>(train, "--threads", params.nthread);
  const auto trace = train->get_option("--trace")->as<std::string>();
  const auto out = optionOr<std::string>(train, "--out", "model.json");

  auto quality = trainFromTrace(trace, out, params);
  if (!quality.ok()) {
    fmt::print(stderr, "error: {}\n", std::string(quality.status().message()));
    return 1;
  }
  fmt::print("trained {} from {} ({} train / {} held-out samples)\n", out, trace, quality->n_train,
             quality->n_test);
  auto text = describeModel(out);
  if (text.ok()) fmt::print("{}", *text);
  return 0;
}

int runShow(CLI::App* show) {
  const auto path = optionOr<std::string>(show, "model", "model.json");
  auto text = describeModel(path);
  if (!text.ok()) {
    fmt::print(stderr, "error: {}\n", std::string(text.status().message()));
    return 1;
  }
  fmt::print("{}", *text);
  return 0;
}

}  // namespace

int runModelCommands(CLI::App& app) {
  CLI::App* model = app.get_subcommand("model");
  if (!model || !model->parsed()) return -1;
  if (CLI::App* train = model->get_subcommand("train"); train->parsed()) return runTrain(train);
  if (CLI::App* show = model->get_subcommand("show"); show->parsed()) return runShow(show);
  fmt::print(stderr, "error: tgctl model needs a subcommand: train or show\n");
  return 2;
}

}  // namespace tokengate::costmodel
