// Value: what tokens take as arguments and return as results.
// Small tagged union mirroring wire::Value. Dec50 is kept in its packed wire
// form so the coordinator can route it without touching multiprecision code;
// operations convert with toBigFloat()/fromBigFloat().
#pragma once

#include <boost/multiprecision/cpp_bin_float.hpp>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"

namespace tokengate {

using BigFloat = boost::multiprecision::cpp_bin_float_50;

struct Dec50 {
  uint64_t limbs[3] = {0, 0, 0};
  int32_t exponent = 0;
  bool negative = false;
  uint8_t kind = 0;  // 0 zero, 1 finite, 2 inf, 3 nan
  bool operator==(const Dec50&) const = default;
};

Dec50 fromBigFloat(const BigFloat& x);
BigFloat toBigFloat(const Dec50& d);

// A decimal string as a Dec50 (the JSON {"dec": "..."} form): [+-] digits [. digits]
// [e|E [+-] digits] (at least one mantissa digit), or nan / inf / infinity (also
// capitalised or upper-case, with a sign). Digits past the 100th significant one are
// ignored (a Dec50 holds about 50). Exponents out of range overflow to +-inf or underflow
// to 0, however many digits they have. InvalidArgument for anything else. Never hands
// Boost.Multiprecision a string it mis-parses: its own parser overflows on an exponent
// beyond int64 (a stack overflow for exponent -2^63, found by protocol_fuzz) and is
// quadratic in the number of integer digits.
StatusOr<Dec50> parseDec50(std::string_view text);

struct Bytes {
  std::string data;
  bool operator==(const Bytes&) const = default;
};

struct Null {
  bool operator==(const Null&) const = default;
};

class Value;
// A list of values (any types, mixed, nested up to kMaxListDepth): a vector, a
// matrix as a list of rows, a record as a list of fields.
struct List {
  std::vector<Value> items;
  bool operator==(const List&) const;
};

// Packed numeric arrays: a vector or a matrix's cells without a Value per element (8 bytes
// each on the wire instead of a 24-byte struct plus payload). JSON: {"i64s": [1, 2]},
// {"f64s": [0.5, "inf"]}.
struct I64s {
  std::vector<int64_t> items;
  bool operator==(const I64s&) const = default;
};
struct F64s {
  std::vector<double> items;
  bool operator==(const F64s& o) const;  // element-wise, NaN equal to NaN (see Value)
};

// Deepest list nesting accepted from JSON and the wire ([[1]] has depth 2).
constexpr int kMaxListDepth = 8;
// Largest single value (Value::byteSize()) accepted as a job argument or an operation's
// result: 16 MiB, e.g. a packed array of 2M doubles. Frames have their own, larger limit.
constexpr size_t kMaxValueBytes = size_t{16} << 20;
// Most elements in one packed array (kMaxValueBytes / 8).
constexpr size_t kMaxPackedElements = kMaxValueBytes / 8;

class Value {
 public:
  // The alternatives' order is the wire::Value union's (typeName(), hashValues()).
  using Variant =
      std::variant<Null, int64_t, double, std::string, Bytes, Dec50, bool, List, I64s, F64s>;

  Value() = default;
  Value(int64_t v) : v_(v) {}                   // NOLINT(google-explicit-constructor)
  Value(int v) : v_(int64_t{v}) {}              // NOLINT(google-explicit-constructor)
  Value(double v) : v_(v) {}                    // NOLINT(google-explicit-constructor)
  Value(std::string v) : v_(std::move(v)) {}    // NOLINT(google-explicit-constructor)
  Value(const char* v) : v_(std::string(v)) {}  // NOLINT(google-explicit-constructor)
  Value(Bytes v) : v_(std::move(v)) {}          // NOLINT(google-explicit-constructor)
  Value(Dec50 v) : v_(v) {}                     // NOLINT(google-explicit-constructor)
  Value(bool v) : v_(v) {}                      // NOLINT(google-explicit-constructor)
  Value(List v) : v_(std::move(v)) {}           // NOLINT(google-explicit-constructor)
  Value(I64s v) : v_(std::move(v)) {}           // NOLINT(google-explicit-constructor)
  Value(F64s v) : v_(std::move(v)) {}           // NOLINT(google-explicit-constructor)
  static Value list(std::vector<Value> items) { return Value(List{std::move(items)}); }
  static Value i64s(std::vector<int64_t> items) { return Value(I64s{std::move(items)}); }
  static Value f64s(std::vector<double> items) { return Value(F64s{std::move(items)}); }

  bool isNull() const { return std::holds_alternative<Null>(v_); }
  bool isInt() const { return std::holds_alternative<int64_t>(v_); }
  bool isDouble() const { return std::holds_alternative<double>(v_); }
  bool isText() const { return std::holds_alternative<std::string>(v_); }
  bool isBytes() const { return std::holds_alternative<Bytes>(v_); }
  bool isDec() const { return std::holds_alternative<Dec50>(v_); }
  bool isBool() const { return std::holds_alternative<bool>(v_); }
  bool isList() const { return std::holds_alternative<List>(v_); }
  bool isI64s() const { return std::holds_alternative<I64s>(v_); }
  bool isF64s() const { return std::holds_alternative<F64s>(v_); }

  int64_t asInt() const { return std::get<int64_t>(v_); }
  double asDouble() const { return std::get<double>(v_); }
  const std::string& asText() const { return std::get<std::string>(v_); }
  const Bytes& asBytes() const { return std::get<Bytes>(v_); }
  const Dec50& asDec() const { return std::get<Dec50>(v_); }
  bool asBool() const { return std::get<bool>(v_); }
  const std::vector<Value>& asList() const { return std::get<List>(v_).items; }
  const std::vector<int64_t>& asI64s() const { return std::get<I64s>(v_).items; }
  const std::vector<double>& asF64s() const { return std::get<F64s>(v_).items; }

  // Numeric view: int, double or dec as a double.
  double toDouble() const;
  // Approximate encoded size in bytes (telemetry feature, batch sizing, frame-size
  // checks): a list counts every element's bytes plus 24 per element (its wire struct).
  size_t byteSize() const;
  // List nesting depth: 0 for a scalar, 1 for [1, 2], 2 for [[1], [2]].
  int listDepth() const;
  // The admission rule for one value (a job argument, an operation's result): lists nest
  // at most kMaxListDepth deep, byteSize() is at most kMaxValueBytes and a packed array
  // holds at most kMaxPackedElements. InvalidArgument naming the limit otherwise.
  Status check() const;
  // Human-readable form: decimals in full precision, bytes as length, lists as [a, b],
  // packed arrays as i64s[1, 2] / f64s[0.5, inf]. With max_items, a list or packed array
  // shows its first max_items elements then "... (N in all)".
  std::string toString(size_t max_items = SIZE_MAX) const;
  const char* typeName() const;

  const Variant& variant() const { return v_; }
  // The one definition of "same value" (tests, result comparison, dedup): same kind and
  // same contents; doubles compare with == except that NaN equals NaN (scalar, in lists
  // and in f64s), so a deterministic NaN result matches itself. 0.0 == -0.0.
  bool operator==(const Value& o) const;

 private:
  Variant v_;
};

inline bool List::operator==(const List& o) const { return items == o.items; }

}  // namespace tokengate
