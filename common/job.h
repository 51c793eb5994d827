// JobSpec: a DAG of token specs, the C++ mirror of wire::JobSpec.
// A TokenSpec with repeat = R expands to R consecutive job-local tokens; refs
// name job-local token indices after expansion (see docs/protocol.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/value.h"

namespace tokengate {

enum class Weight : uint8_t { kLight = 0, kMedium = 1, kHeavy = 2, kUnspecified = 3 };
constexpr int kLaneCount = 3;

const char* weightName(Weight w);
StatusOr<Weight> parseWeight(std::string_view s);

struct Arg {
  enum class Kind : uint8_t { kValue, kRef, kRefRange };
  Kind kind = Kind::kValue;
  Value value;
  uint32_t start = 0;  // ref: the token; refRange: first token
  uint32_t count = 0;  // refRange only
  int64_t step = 0;    // per-repetition increment (int value or ref start)

  static Arg val(Value v, int64_t step = 0) {
    Arg a;
    a.value = std::move(v);
    a.step = step;
    return a;
  }
  static Arg ref(uint32_t token, int64_t step = 0) {
    Arg a;
    a.kind = Kind::kRef;
    a.start = token;
    a.step = step;
    return a;
  }
  static Arg refs(uint32_t start, uint32_t count, int64_t step = 0) {
    Arg a;
    a.kind = Kind::kRefRange;
    a.start = start;
    a.count = count;
    a.step = step;
    return a;
  }
};

struct TokenSpec {
  std::string op;
  Weight weight = Weight::kUnspecified;
  std::vector<Arg> args;
  std::string idempotency_key;
  uint32_t deadline_ms = 0;
  uint32_t run_timeout_ms = 0;  // start-to-close per attempt; 0 = the op's, else the cluster's
  uint8_t max_attempts = 0;
  uint32_t repeat = 1;
  bool output = false;
  std::string name;
};

// Wire size of one argument in a token batch before its payload: a Value
// struct in a List(Value) (two data words and a pointer).
constexpr size_t kMinArgWireBytes = 24;
// Room kept in a token batch for the frame, the ops table and the token itself.
constexpr size_t kTokenBatchOverheadBytes = 4096;

struct JobSpec {
  std::string name;
  std::vector<TokenSpec> tokens;
  // Verified execution: this percentage (0..100) of the job's tokens, a deterministic sample,
  // is run again on another node and the results compared (docs/security.md).
  double verify_pct = 0;

  // Number of tokens after expanding repeats.
  uint64_t tokenCount() const;
  // Structural checks: refs point backwards to existing tokens (so the job is
  // a DAG by construction), repeat >= 1, non-empty op names, size limits.
  // With max_frame_bytes != 0 also the fan-in budget: a token whose resolved
  // arguments cannot fit one token batch of that size (each argument takes at
  // least kMinArgWireBytes on the wire, literal values their payload too) is
  // refused with ResourceExhausted instead of being shipped and dropped.
  Status validate(uint64_t max_tokens, size_t max_frame_bytes = 0) const;
  // Appends a spec and returns the job-local index of its first token.
  uint32_t add(TokenSpec spec);
};

enum class Precision { kDouble, kDec50 };
StatusOr<Precision> parsePrecision(std::string_view s);

// The headline workload: `terms` term tokens -> terms/chunk chunk sums ->
// `partials` partial sums -> 1 final token (pi). Terms must divide evenly.
StatusOr<JobSpec> makeLeibnizJob(uint64_t terms, Precision precision, uint32_t chunk = 1000,
                                 uint32_t partials = 10);

// The same arithmetic, grouping and order as the job, in one thread. Double
// results are bit-identical to the cluster's; dec50 equal to the last digit.
Value leibnizLocal(uint64_t terms, Precision precision, uint32_t chunk = 1000,
                   uint32_t partials = 10);

}  // namespace tokengate

namespace tokengate {
// Term k of the series without the factor 4: (-1)^k / (2k + 1).
double leibnizTermDouble(int64_t k);
BigFloat leibnizTermDec(int64_t k);
// fromBigFloat(leibnizTermDec(k)), bit for bit, without Boost's general division: for
// 0 <= k < 2^62 the mantissa of 1 / (2k + 1) is one long division of a power of two by a 64-bit
// word, rounded to nearest (never a tie: 1 / d has no finite binary expansion for odd d > 1).
// Other k take the Boost path. The node's leibniz.term_dec50 spent most of its time in Boost's
// divide (perf, docs/benchmarks.md).
Dec50 leibnizTermDec50(int64_t k);
}  // namespace tokengate
