#include "common/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/multiprecision/cpp_int.hpp>
#include <cmath>
#include <iterator>
#include <limits>

namespace tokengate {

namespace mp = boost::multiprecision;

Dec50 fromBigFloat(const BigFloat& x) {
  Dec50 d;
  const auto& be = x.backend();
  switch (be.exponent()) {
    case BigFloat::backend_type::exponent_zero:
      d.kind = 0;
      d.negative = be.sign();
      return d;
    case BigFloat::backend_type::exponent_infinity:
      d.kind = 2;
      d.negative = be.sign();
      return d;
    case BigFloat::backend_type::exponent_nan:
      d.kind = 3;
      return d;
    default:
      break;
  }
  d.kind = 1;
  d.negative = be.sign();
  d.exponent = static_cast<int32_t>(be.exponent());
  // The mantissa is a fixed-width cpp_int backend; copy its limbs directly.
  const auto& bits = be.bits();
  const auto* limbs = bits.limbs();
  const size_t n = bits.size();
  static_assert(sizeof(*limbs) == sizeof(uint64_t));
  for (size_t i = 0; i < 3 && i < n; ++i) d.limbs[i] = limbs[i];
  return d;
}

BigFloat toBigFloat(const Dec50& d) {
  BigFloat x;
  auto& be = x.backend();
  switch (d.kind) {
    case 0:
      x = 0;
      if (d.negative) x = -x;
      return x;
    case 2:
      x = std::numeric_limits<BigFloat>::infinity();
      return d.negative ? BigFloat(-x) : x;
    case 3:
      return std::numeric_limits<BigFloat>::quiet_NaN();
    default:
      break;
  }
  auto& bits = be.bits();
  bits.resize(3, 3);
  auto* limbs = bits.limbs();
  for (size_t i = 0; i < bits.size(); ++i) limbs[i] = d.limbs[i];
  bits.normalize();
  be.exponent() = d.exponent;
  be.sign() = d.negative;
  return x;
}

double Value::toDouble() const {
  if (isDouble()) return asDouble();
  if (isInt()) return static_cast<double>(asInt());
  if (isDec()) return toBigFloat(asDec()).convert_to<double>();
  if (isBool()) return asBool() ? 1.0 : 0.0;
  return std::numeric_limits<double>::quiet_NaN();
}

size_t Value::byteSize() const {
  if (isList()) {
    size_t n = 8;  // the list tag word
    for (const auto& x : asList()) n += 24 + (x.byteSize() + 7) / 8 * 8;
    return n;
  }
  if (isText()) return asText().size();
  if (isBytes()) return asBytes().data.size();
  if (isDec()) return sizeof(Dec50);
  if (isNull()) return 0;
  return 8;
}

int Value::listDepth() const {
  if (!isList()) return 0;
  int deepest = 0;
  for (const auto& x : asList()) deepest = std::max(deepest, x.listDepth());
  return deepest + 1;
}

const char* Value::typeName() const {
  static const char* kNames[] = {"null", "int", "float", "text", "bytes", "dec", "bool", "list"};
  static_assert(std::variant_size_v<Variant> == std::size(kNames));
  return kNames[v_.index()];
}

std::string Value::toString() const {
  if (isNull()) return "null";
  if (isInt()) return std::to_string(asInt());
  if (isDouble()) return fmt::format("{:.17g}", asDouble());
  if (isText()) return asText();
  if (isBytes()) return fmt::format("<{} bytes>", asBytes().data.size());
  if (isBool()) return asBool() ? "true" : "false";
  if (isList()) {
    std::string out = "[";
    for (const auto& x : asList()) {
      if (out.size() > 1) out += ", ";
      out += x.isText() ? fmt::format("\"{}\"", x.asText()) : x.toString();
    }
    return out + "]";
  }
  return toBigFloat(asDec()).str(50);
}

}  // namespace tokengate
