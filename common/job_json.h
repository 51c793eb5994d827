// JSON form of jobs and values, shared by tgctl (job files) and the gateway.
// Format documented in docs/protocol.md ("Job JSON").
#pragma once

#include <boost/json.hpp>
#include <string_view>

#include "common/job.h"
#include "common/status.h"

namespace tokengate {

StatusOr<JobSpec> jobFromJson(const boost::json::value& v);
StatusOr<JobSpec> parseJobJson(std::string_view text);
boost::json::value jobToJson(const JobSpec& job);

// Plain JSON scalars map to int/float/text/bool/null; {"dec": "3.14..."},
// {"bytes": "<hex>"} carry the rest.
StatusOr<Value> valueFromJson(const boost::json::value& v);
boost::json::value valueToJson(const Value& v);

}  // namespace tokengate
