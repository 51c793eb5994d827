#include "coordinator/costmodel/trace.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "boost/json/parse.hpp"
#include "boost/json/value.hpp"
#include "coordinator/costmodel/strings.h"

namespace tokengate::costmodel {

using internal::cat;
using internal::split;
using internal::strip;
using internal::toLower;

namespace {

std::string lineError(std::string_view name, size_t line, std::string_view msg) {
  return cat(name, ":", line, ": ", msg);
}

std::optional<double> parseDouble(std::string_view s) {
  s = strip(s);
  if (s.empty()) return std::nullopt;
  std::string lower = toLower(s);
  if (lower == "nan" || lower == "null" || lower == "none") {
    return std::numeric_limits<double>::quiet_NaN();
  }
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// Weight/lane columns accept 0/1/2 or light/medium/heavy.
std::optional<double> parseWeight(std::string_view s) {
  std::string lower = toLower(strip(s));
  if (lower == "light") return 0;
  if (lower == "medium") return 1;
  if (lower == "heavy") return 2;
  return parseDouble(s);
}

// Applies one named field to a sample. `value` is nullopt for an absent/empty cell.
Status applyField(std::string_view col, std::optional<double> v, TelemetrySample& s, bool& has_op,
                  bool& has_run) {
  auto nonneg = [&](std::string_view what, double max) -> Status {
    if (!v || std::isnan(*v) || *v < 0 || *v > max) {
      return absl::InvalidArgumentError(
          cat("column ", what, " must be a number in [0, ", max, "]"));
    }
    return absl::OkStatus();
  };
  constexpr double kU32 = 4294967295.0;
  if (col == "op" || col == "op_id") {
    if (auto st = nonneg(col, kU32); !st.ok()) return st;
    s.features.op_id = static_cast<uint32_t>(*v);
    has_op = true;
  } else if (col == "weight" || col == "declared_weight") {
    if (!v) return absl::OkStatus();
    if (auto st = nonneg(col, 2); !st.ok()) return st;
    s.features.declared_weight = static_cast<uint8_t>(*v);
  } else if (col == "lane") {
    if (!v) return absl::OkStatus();
    if (auto st = nonneg(col, 2); !st.ok()) return st;
    s.features.lane = static_cast<uint8_t>(*v);
  } else if (col == "arg_count") {
    if (!v) return absl::OkStatus();
    if (auto st = nonneg(col, kU32); !st.ok()) return st;
    s.features.arg_count = static_cast<uint32_t>(*v);
  } else if (col == "arg_bytes") {
    if (!v) return absl::OkStatus();
    if (auto st = nonneg(col, 1.8e19); !st.ok()) return st;
    s.features.arg_total_bytes = static_cast<uint64_t>(*v);
  } else if (col == "arg0") {
    s.features.first_numeric_arg = v ? *v : std::numeric_limits<double>::quiet_NaN();
  } else if (col == "node") {
    if (!v) return absl::OkStatus();
    if (auto st = nonneg(col, kU32); !st.ok()) return st;
    s.features.node_index = static_cast<uint32_t>(*v);
  } else if (col == "node_speed") {
    s.features.node_speed = (v && std::isfinite(*v) && *v > 0) ? *v : 1.0;
  } else if (col == "node_load") {
    if (!v) return absl::OkStatus();
    if (auto st = nonneg(col, kU32); !st.ok()) return st;
    s.features.node_load = static_cast<uint32_t>(*v);
  } else if (col == "queue_wait_ns") {
    if (!v) return absl::OkStatus();
    if (auto st = nonneg(col, 9.2e18); !st.ok()) return st;
    s.queue_wait_ns = static_cast<int64_t>(*v);
  } else if (col == "run_ns") {
    if (auto st = nonneg(col, 9.2e18); !st.ok()) return st;
    s.run_ns = static_cast<int64_t>(*v);
    has_run = true;
  }
  // Unknown columns (op_name and anything else) are ignored so traces can carry extra context.
  return absl::OkStatus();
}

StatusOr<std::vector<TelemetrySample>> parseCsv(std::string_view text, std::string_view name) {
  std::vector<TelemetrySample> out;
  std::vector<std::string> header;
  size_t line_no = 0;
  for (std::string_view line : split(text, '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string_view stripped = strip(line);
    if (stripped.empty() || stripped.front() == '#') continue;
    std::vector<std::string_view> cells = split(line, ',');
    if (header.empty()) {
      for (auto c : cells) header.push_back(toLower(strip(c)));
      bool has_op = false, has_run = false;
      for (const auto& h : header) {
        has_op |= h == "op" || h == "op_id";
        has_run |= h == "run_ns";
      }
      if (!has_op || !has_run) {
        return absl::InvalidArgumentError(
            lineError(name, line_no, "CSV header must name at least the columns op and run_ns"));
      }
      continue;
    }
    if (cells.size() != header.size()) {
      return absl::InvalidArgumentError(lineError(
          name, line_no, cat("expected ", header.size(), " columns, found ", cells.size())));
    }
    TelemetrySample s;
    bool has_op = false, has_run = false;
    for (size_t i = 0; i < cells.size(); ++i) {
      const std::string& col = header[i];
      if (col == "op_name") continue;
      std::optional<double> v;
      const std::string_view cell = strip(cells[i]);
      if (!cell.empty()) {
        v = (col == "weight" || col == "declared_weight" || col == "lane") ? parseWeight(cell)
                                                                           : parseDouble(cell);
        if (!v) {
          return absl::InvalidArgumentError(
              lineError(name, line_no, cat("column ", col, ": '", cell, "' is not a number")));
        }
      }
      if (auto st = applyField(col, v, s, has_op, has_run); !st.ok()) {
        return absl::InvalidArgumentError(lineError(name, line_no, std::string(st.message())));
      }
    }
    out.push_back(s);
  }
  if (header.empty()) return absl::InvalidArgumentError(cat(name, ": empty trace"));
  return out;
}

StatusOr<std::vector<TelemetrySample>> parseJsonl(std::string_view text, std::string_view name) {
  std::vector<TelemetrySample> out;
  size_t line_no = 0;
  for (std::string_view line : split(text, '\n')) {
    ++line_no;
    const std::string_view stripped = strip(line);
    if (stripped.empty() || stripped.front() == '#') continue;
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(stripped, ec);
    if (ec || !v.is_object()) {
      return absl::InvalidArgumentError(lineError(
          name, line_no,
          ec ? cat("invalid JSON: ", ec.message()) : std::string("expected a JSON object")));
    }
    TelemetrySample s;
    bool has_op = false, has_run = false;
    for (const auto& kv : v.as_object()) {
      const std::string col = toLower(std::string_view(kv.key()));
      if (col == "op_name") continue;
      std::optional<double> d;
      const auto& jv = kv.value();
      if (jv.is_number()) {
        d = jv.to_number<double>();
      } else if (jv.is_string()) {
        d = (col == "weight" || col == "declared_weight" || col == "lane")
                ? parseWeight(jv.as_string())
                : parseDouble(jv.as_string());
        if (!d) {
          return absl::InvalidArgumentError(
              lineError(name, line_no, cat("field ", col, " is not a number")));
        }
      } else if (!jv.is_null()) {
        return absl::InvalidArgumentError(
            lineError(name, line_no, cat("field ", col, " is not a number")));
      }
      if (auto st = applyField(col, d, s, has_op, has_run); !st.ok()) {
        return absl::InvalidArgumentError(lineError(name, line_no, std::string(st.message())));
      }
    }
    if (!has_op || !has_run) {
      return absl::InvalidArgumentError(
          lineError(name, line_no, "each record needs at least op and run_ns"));
    }
    out.push_back(s);
  }
  return out;
}

std::string formatDouble(double v) {
  if (std::isnan(v)) return "";
  return fmt::format("{}", v);
}

}  // namespace

StatusOr<std::vector<TelemetrySample>> parseTrace(std::string_view text, std::string_view name) {
  const std::string_view stripped = strip(text);
  const bool jsonl = name.ends_with(".jsonl") || name.ends_with(".ndjson") ||
                     name.ends_with(".json") || (!stripped.empty() && stripped[0] == '{');
  return jsonl ? parseJsonl(text, name) : parseCsv(text, name);
}

StatusOr<std::vector<TelemetrySample>> readTrace(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(cat("trace file '", path, "' does not exist"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(cat("cannot open trace '", path, "'"));
  std::stringstream buf;
  buf << in.rdbuf();
  return parseTrace(buf.str(), path);
}

std::string traceCsvHeader() {
  return "op,weight,lane,arg_count,arg_bytes,arg0,node,node_speed,node_load,queue_wait_ns,run_ns";
}

std::string traceCsvRow(const TelemetrySample& s) {
  const auto& f = s.features;
  return fmt::format("{},{},{},{},{},{},{},{},{},{},{}", f.op_id, f.declared_weight, f.lane,
                     f.arg_count, f.arg_total_bytes, formatDouble(f.first_numeric_arg),
                     f.node_index, formatDouble(f.node_speed), f.node_load, s.queue_wait_ns,
                     s.run_ns);
}

Status writeTraceCsv(const std::string& path, std::span<const TelemetrySample> samples) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(cat("cannot write trace '", path, "'"));
  out << traceCsvHeader() << '\n';
  for (const auto& s : samples) out << traceCsvRow(s) << '\n';
  out.flush();
  if (!out) return absl::DataLossError(cat("short write to trace '", path, "'"));
  return absl::OkStatus();
}

StatusOr<ModelQuality> trainFromTrace(const std::string& trace_path, const std::string& model_out,
                                      const XgbParams& params) {
  auto samples = readTrace(trace_path);
  if (!samples.ok()) return samples.status();
  auto model = XgbCostModel::train(*samples, params);
  if (!model.ok()) {
    return absl::Status(model.status().code(), cat("training from '", trace_path,
                                                   "': ", std::string(model.status().message())));
  }
  if (auto st = (*model)->save(model_out); !st.ok()) return st;
  return (*model)->quality();
}

StatusOr<std::string> describeModel(const std::string& path) {
  auto model = XgbCostModel::load(path);
  if (!model.ok()) return model.status();
  const ModelQuality& q = (*model)->quality();
  std::string out = fmt::format("model: {}\ntrees: {}\n", path, (*model)->numTrees());
  if (const CompiledForest* f = (*model)->compiledForest()) {
    out += fmt::format("predict path: compiled forest ({} nodes, {} node visits per token)\n",
                       f->numNodes(), f->stepsPerRow());
  } else {
    out += "predict path: XGBoost in-place predict (model could not be compiled)\n";
  }
  if (q.n_test > 0) {
    out += fmt::format(
        "held-out quality (log run time): R^2 = {:.4f}, MAE = {:.4f} (typical error x{:.2f})\n"
        "samples: {} train, {} test\n",
        q.r2, q.mae_log, std::exp(q.mae_log), q.n_train, q.n_test);
  } else {
    out += "held-out quality: unknown (model not trained by TokenGate)\n";
  }
  auto importance = (*model)->featureImportance("total_gain");
  if (!importance.ok()) return importance.status();
  out += "feature importance (total gain):\n";
  for (const auto& fi : *importance) {
    out += fmt::format("  {:<16} {:6.1f}%  {:.4g}\n", fi.feature, fi.share * 100, fi.score);
  }
  return out;
}

}  // namespace tokengate::costmodel
