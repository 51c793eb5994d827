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
// {"bytes": "<hex>"} carry the rest. Doubles that JSON cannot write (inf,
// -inf, nan) are {"double": "inf" | "-inf" | "nan"} both ways; {"double": 1.5}
// is accepted too. A JSON array is a list value ([1, [2, 3], "x"]), nested at
// most kMaxListDepth deep. Packed arrays are {"i64s": [1, 2]} (int64 integers) and
// {"f64s": [0.5, 2, "inf", "-inf", "nan"]} (numbers; non-finite ones as those strings).
StatusOr<Value> valueFromJson(const boost::json::value& v);
boost::json::value valueToJson(const Value& v);

// The integer rule for JSON input (docs/protocol.md): every integer literal
// (a number written without '.', 'e' or 'E') must lie in the int64 range,
// else invalid_argument naming it. Boost.JSON would otherwise make 2^63..2^64-1
// a uint64 and larger ones a double.
Status checkIntegerLiterals(std::string_view text);
// json::parse with a nesting limit and the integer rule.
StatusOr<boost::json::value> parseJsonText(std::string_view text, int max_depth = 64);

}  // namespace tokengate
