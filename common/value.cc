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

StatusOr<Dec50> parseDec50(std::string_view text) {
  auto invalid = [&] {
    // Quoted up to 40 bytes, cut before a UTF-8 continuation byte: the message goes into JSON
    // replies and half a character is not valid JSON text (found by protocol_fuzz).
    size_t cut = std::min<size_t>(text.size(), 40);
    while (cut > 0 && cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
      --cut;
    return absl::InvalidArgumentError(fmt::format(
        "'{}{}' is not a decimal number", text.substr(0, cut), cut < text.size() ? "..." : ""));
  };
  std::string_view s = text;
  const bool negative = !s.empty() && s.front() == '-';
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) s.remove_prefix(1);
  for (std::string_view word :
       {"nan", "NaN", "NAN", "inf", "Inf", "INF", "infinity", "Infinity", "INFINITY"}) {
    if (s == word) {
      BigFloat x = word[0] == 'n' || word[0] == 'N' ? std::numeric_limits<BigFloat>::quiet_NaN()
                                                    : std::numeric_limits<BigFloat>::infinity();
      if (negative) x = -x;
      return fromBigFloat(x);
    }
  }
  auto isDigit = [](char c) { return c >= '0' && c <= '9'; };
  // The mantissa's significant digits (leading zeros dropped, at most kMaxDigits kept) and
  // the power of ten they are scaled by.
  constexpr size_t kMaxDigits = 100;
  std::string digits;
  int64_t scale = 0;
  size_t mantissa_digits = 0;
  bool point = false;
  size_t i = 0;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '.' && !point) {
      point = true;
      continue;
    }
    if (!isDigit(c)) break;
    ++mantissa_digits;
    if (digits.empty() && c == '0') {
      if (point) --scale;  // 0.001: a leading zero after the point
      continue;
    }
    if (digits.size() < kMaxDigits) {
      digits.push_back(c);
      if (point) --scale;
    } else if (!point) {
      ++scale;  // an integer digit past the kept ones
    }
  }
  if (mantissa_digits == 0) return invalid();
  // The exponent, saturated: with at most kMaxDigits digits, any power of ten past kClamp
  // either way overflows or underflows a Dec50, so clamping changes no result.
  constexpr int64_t kClamp = 1'000'000'000;
  static_assert(std::numeric_limits<BigFloat>::max_exponent10 + int64_t{kMaxDigits} < kClamp);
  static_assert(std::numeric_limits<BigFloat>::min_exponent10 - int64_t{kMaxDigits} > -kClamp);
  int64_t exponent = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    bool exp_negative = false;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) exp_negative = s[i++] == '-';
    const size_t first = i;
    for (; i < s.size() && isDigit(s[i]); ++i) {
      exponent = std::min<int64_t>(exponent * 10 + (s[i] - '0'), 4 * kClamp);
    }
    if (i == first) return invalid();
    if (exp_negative) exponent = -exponent;
  }
  if (i != s.size()) return invalid();
  if (digits.empty()) return fromBigFloat(BigFloat(0));  // as before: "-0" is 0
  // scale is bounded by the text's length, exponent by 4 * kClamp: no overflow.
  const int64_t power = std::clamp<int64_t>(exponent + scale, -kClamp, kClamp);
  BigFloat x(fmt::format("{}{}e{}", negative ? "-" : "", digits, power));
  return fromBigFloat(x);
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

namespace {
bool sameDouble(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }
}  // namespace

bool F64s::operator==(const F64s& o) const {
  return std::equal(items.begin(), items.end(), o.items.begin(), o.items.end(), sameDouble);
}

bool Value::operator==(const Value& o) const {
  if (v_.index() != o.v_.index()) return false;
  if (isDouble()) return sameDouble(asDouble(), o.asDouble());
  return v_ == o.v_;  // lists compare their elements with this operator, f64s with sameDouble
}

size_t Value::byteSize() const {
  // Packed arrays, like text and bytes, count their payload only: kMaxPackedElements of
  // them are exactly kMaxValueBytes.
  if (isI64s()) return 8 * asI64s().size();
  if (isF64s()) return 8 * asF64s().size();
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

Status Value::check() const {
  if (isI64s() || isF64s()) {
    const size_t n = isI64s() ? asI64s().size() : asF64s().size();
    if (n > kMaxPackedElements)
      return absl::InvalidArgumentError(
          fmt::format("{} of {} elements is larger than the {}-element limit per packed array",
                      typeName(), n, kMaxPackedElements));
  }
  if (isList() && listDepth() > kMaxListDepth)
    return absl::InvalidArgumentError(
        fmt::format("lists nest {} deep, more than {}", listDepth(), kMaxListDepth));
  if (const size_t bytes = byteSize(); bytes > kMaxValueBytes)
    return absl::InvalidArgumentError(
        fmt::format("{} value of {} bytes is larger than the {}-byte limit per value", typeName(),
                    bytes, kMaxValueBytes));
  return absl::OkStatus();
}

const char* Value::typeName() const {
  static const char* kNames[] = {"null", "int",  "float", "text", "bytes",
                                 "dec",  "bool", "list",  "i64s", "f64s"};
  static_assert(std::variant_size_v<Variant> == std::size(kNames));
  return kNames[v_.index()];
}

namespace {
std::string doubleText(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  return fmt::format("{:.17g}", d);
}

// "[a, b, ... (N in all)]" over the first max_items of n elements.
template <typename F>
std::string joinItems(size_t n, size_t max_items, F&& item) {
  std::string out = "[";
  for (size_t i = 0; i < n && i < max_items; ++i) {
    if (i) out += ", ";
    out += item(i);
  }
  if (n > max_items) out += fmt::format("{}... ({} in all)", max_items ? ", " : "", n);
  return out + "]";
}
}  // namespace

std::string Value::toString(size_t max_items) const {
  if (isNull()) return "null";
  if (isInt()) return std::to_string(asInt());
  if (isDouble()) return doubleText(asDouble());
  if (isI64s())
    return "i64s" + joinItems(asI64s().size(), max_items,
                              [&](size_t i) { return std::to_string(asI64s()[i]); });
  if (isF64s())
    return "f64s" +
           joinItems(asF64s().size(), max_items, [&](size_t i) { return doubleText(asF64s()[i]); });
  if (isText()) return asText();
  if (isBytes()) return fmt::format("<{} bytes>", asBytes().data.size());
  if (isBool()) return asBool() ? "true" : "false";
  if (isList()) {
    return joinItems(asList().size(), max_items, [&](size_t i) {
      const Value& x = asList()[i];
      return x.isText() ? fmt::format("\"{}\"", x.asText()) : x.toString(max_items);
    });
  }
  return toBigFloat(asDec()).str(50);
}

}  // namespace tokengate
