// Offline side of the cost model: reading/writing telemetry traces, training a model from a
// trace, and describing a saved model. These back `tgctl model train --trace FILE` and
// `tgctl model show`. Trace format: docs/cost-model.md.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/costmodel/features.h"
#include "coordinator/costmodel/xgb_cost_model.h"

namespace tokengate::costmodel {

// Reads a CSV (header row, columns by name) or JSONL (one object per line) trace. JSONL is
// chosen for .jsonl/.ndjson/.json files or when the first non-blank character is '{'.
// NotFound if the file is missing; InvalidArgument with "file:line: ..." for malformed rows.
StatusOr<std::vector<TelemetrySample>> readTrace(const std::string& path);
// Parses trace text directly (`name` only labels error messages).
StatusOr<std::vector<TelemetrySample>> parseTrace(std::string_view text, std::string_view name);

// Writes samples as CSV with the canonical header (what the coordinator's trace recorder emits).
Status writeTraceCsv(const std::string& path, std::span<const TelemetrySample> samples);
std::string traceCsvHeader();
std::string traceCsvRow(const TelemetrySample& sample);

// Reads the trace, trains an XgbCostModel, saves it to model_out (XGBoost JSON) and returns the
// held-out quality.
StatusOr<ModelQuality> trainFromTrace(const std::string& trace_path, const std::string& model_out,
                                      const XgbParams& params = {});

// Human-readable summary of a saved model: held-out R^2, MAE, trees, feature importance.
StatusOr<std::string> describeModel(const std::string& path);

}  // namespace tokengate::costmodel
