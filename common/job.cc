#include "common/job.h"

#include <fmt/format.h>

#include <algorithm>

namespace tokengate {

const char* weightName(Weight w) {
  switch (w) {
    case Weight::kLight:
      return "light";
    case Weight::kMedium:
      return "medium";
    case Weight::kHeavy:
      return "heavy";
    default:
      return "unspecified";
  }
}

StatusOr<Weight> parseWeight(std::string_view s) {
  if (s == "light") return Weight::kLight;
  if (s == "medium") return Weight::kMedium;
  if (s == "heavy") return Weight::kHeavy;
  if (s == "" || s == "unspecified" || s == "default") return Weight::kUnspecified;
  return absl::InvalidArgumentError(fmt::format("unknown weight class '{}'", s));
}

StatusOr<Precision> parsePrecision(std::string_view s) {
  if (s == "double") return Precision::kDouble;
  if (s == "dec50") return Precision::kDec50;
  return absl::InvalidArgumentError(
      fmt::format("unknown precision '{}' (expected double or dec50)", s));
}

uint64_t JobSpec::tokenCount() const {
  uint64_t n = 0;
  for (const auto& t : tokens) n += t.repeat;
  return n;
}

uint32_t JobSpec::add(TokenSpec spec) {
  auto first = static_cast<uint32_t>(tokenCount());
  tokens.push_back(std::move(spec));
  return first;
}

Status JobSpec::validate(uint64_t max_tokens, size_t max_frame_bytes) const {
  if (tokens.empty()) return absl::InvalidArgumentError("job has no tokens");
  if (!(verify_pct >= 0 && verify_pct <= 100))
    return absl::InvalidArgumentError("job: verify must be a percentage from 0 to 100");
  // The reserve is a quarter of the frame at most: a small configured frame limit (tests,
  // embedded set-ups) still leaves room for a token's arguments.
  const size_t reserve = std::min(kTokenBatchOverheadBytes, max_frame_bytes / 4);
  const size_t arg_budget = max_frame_bytes - reserve;
  uint64_t next = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto& t = tokens[i];
    if (t.op.empty()) return absl::InvalidArgumentError(fmt::format("token spec {}: empty op", i));
    if (t.repeat == 0)
      return absl::InvalidArgumentError(fmt::format("token spec {}: repeat must be >= 1", i));
    if (next + t.repeat > max_tokens)
      return absl::InvalidArgumentError(
          fmt::format("job expands to more than {} tokens", max_tokens));
    const int64_t last_rep = static_cast<int64_t>(t.repeat) - 1;
    uint64_t arg_bytes = 0;  // lower bound of one instance's resolved arguments on the wire
    uint64_t resolved = 0;
    for (size_t a = 0; a < t.args.size(); ++a) {
      const auto& arg = t.args[a];
      const uint64_t n = arg.kind == Arg::Kind::kRefRange ? arg.count : 1;
      resolved += n;
      arg_bytes += kMinArgWireBytes * n;
      if (arg.kind == Arg::Kind::kValue) {
        arg_bytes += (arg.value.byteSize() + 7) / 8 * 8;
        if (Status st = arg.value.check(); !st.ok())
          return absl::InvalidArgumentError(
              fmt::format("token spec {} arg {}: {}", i, a, st.message()));
      }
      // The last repetition's offset, step * (repeat - 1), must fit int64.
      int64_t span = 0;
      if (__builtin_mul_overflow(arg.step, last_rep, &span))
        return absl::InvalidArgumentError(
            fmt::format("token spec {} arg {}: step {} x {} repetitions overflows int64", i, a,
                        arg.step, last_rep));
      if (arg.kind == Arg::Kind::kValue) {
        if (arg.step == 0) continue;
        if (!arg.value.isInt())
          return absl::InvalidArgumentError(
              fmt::format("token spec {} arg {}: step needs an int value", i, a));
        int64_t last = 0;
        if (__builtin_add_overflow(arg.value.asInt(), span, &last))
          return absl::InvalidArgumentError(
              fmt::format("token spec {} arg {}: value {} + step {} x {} overflows int64", i, a,
                          arg.value.asInt(), arg.step, last_rep));
        continue;
      }
      const int64_t count = arg.kind == Arg::Kind::kRef ? 1 : arg.count;
      if (count == 0)
        return absl::InvalidArgumentError(
            fmt::format("token spec {} arg {}: empty ref range", i, a));
      // Refs must name earlier tokens: lowest and highest across repetitions.
      int64_t end = 0, hi = 0;
      if (__builtin_add_overflow(static_cast<int64_t>(arg.start), span, &end) ||
          __builtin_add_overflow(std::max<int64_t>(arg.start, end), count - 1, &hi))
        return absl::InvalidArgumentError(
            fmt::format("token spec {} arg {}: ref step overflows int64", i, a));
      const int64_t lo = std::min<int64_t>(arg.start, end);
      if (lo < 0 || hi >= static_cast<int64_t>(next))
        return absl::InvalidArgumentError(
            fmt::format("token spec {} arg {}: refs [{}, {}] must name earlier tokens (< {})", i, a,
                        lo, hi, next));
    }
    if (max_frame_bytes != 0 && arg_bytes > arg_budget)
      return absl::ResourceExhaustedError(fmt::format(
          "token spec {} ({}): its {} argument(s) take at least {} bytes on the wire, more than "
          "a token batch may carry ({} bytes); split the fan-in into a tree of smaller tokens",
          i, t.op, resolved, arg_bytes, max_frame_bytes));
    next += t.repeat;
  }
  return absl::OkStatus();
}

StatusOr<JobSpec> makeLeibnizJob(uint64_t terms, Precision precision, uint32_t chunk,
                                 uint32_t partials) {
  if (terms == 0 || chunk == 0 || partials == 0 || terms % chunk != 0 ||
      (terms / chunk) % partials != 0)
    return absl::InvalidArgumentError(fmt::format(
        "terms ({}) must be a multiple of chunk ({}) x partials ({})", terms, chunk, partials));
  if (terms > UINT32_MAX / 2) return absl::InvalidArgumentError("too many terms");
  const bool dec = precision == Precision::kDec50;
  const auto chunks = static_cast<uint32_t>(terms / chunk);
  const uint32_t per_partial = chunks / partials;
  JobSpec job;
  job.name = fmt::format("leibniz-{}-{}", terms, dec ? "dec50" : "double");
  TokenSpec term;
  term.op = dec ? "leibniz.term_dec50" : "leibniz.term";
  term.repeat = static_cast<uint32_t>(terms);
  term.args.push_back(Arg::val(int64_t{0}, 1));
  const uint32_t first_term = job.add(std::move(term));

  TokenSpec chunk_spec;
  chunk_spec.op = "leibniz.chunk";
  chunk_spec.repeat = chunks;
  chunk_spec.args.push_back(Arg::refs(first_term, chunk, chunk));
  const uint32_t first_chunk = job.add(std::move(chunk_spec));

  TokenSpec partial;
  partial.op = "leibniz.partial";
  partial.repeat = partials;
  partial.args.push_back(Arg::refs(first_chunk, per_partial, per_partial));
  const uint32_t first_partial = job.add(std::move(partial));

  TokenSpec fin;
  fin.op = "leibniz.final";
  fin.args.push_back(Arg::refs(first_partial, partials));
  fin.output = true;
  fin.name = "pi";
  job.add(std::move(fin));
  return job;
}

namespace {
template <typename T>
T sumRange(const std::vector<T>& v, size_t start, size_t count) {
  T s = v[start];
  for (size_t i = 1; i < count; ++i) s += v[start + i];
  return s;
}

template <typename T, typename TermFn>
T pyramid(uint64_t terms, uint32_t chunk, uint32_t partials, TermFn term) {
  std::vector<T> chunks;
  chunks.reserve(terms / chunk);
  for (uint64_t c = 0; c < terms / chunk; ++c) {
    T s = term(c * chunk);
    for (uint64_t k = c * chunk + 1; k < (c + 1) * chunk; ++k) s += term(k);
    chunks.push_back(s);
  }
  std::vector<T> parts;
  const size_t per = chunks.size() / partials;
  for (size_t p = 0; p < partials; ++p) parts.push_back(sumRange(chunks, p * per, per));
  return sumRange(parts, 0, parts.size()) * 4;
}
}  // namespace

double leibnizTermDouble(int64_t k) {
  const double sign = (k & 1) ? -1.0 : 1.0;
  return sign / (2.0 * static_cast<double>(k) + 1.0);
}

BigFloat leibnizTermDec(int64_t k) {
  // 2k + 1 overflows int64 once |k| >= 2^62 (k comes from a token's argument): form it in
  // BigFloat there, where it is exact (168-bit mantissa).
  constexpr int64_t kSafe = int64_t{1} << 62;
  const BigFloat d = k > -kSafe && k < kSafe ? BigFloat(2 * k + 1) : BigFloat(BigFloat(k) * 2 + 1);
  BigFloat t = BigFloat(1) / d;
  if (k & 1) t.backend().negate();
  return t;
}

Dec50 leibnizTermDec50(int64_t k) {
  // cpp_bin_float_50 keeps a 168-bit mantissa m (top bit set) and an exponent e: the value is
  // m * 2^(e - 167) (common/value.cc copies both as they are).
  constexpr int kBits = 168;
  static_assert(BigFloat::backend_type::bit_count == kBits);
  if (k < 0 || k >= (int64_t{1} << 62)) return fromBigFloat(leibnizTermDec(k));
  const uint64_t d = 2 * static_cast<uint64_t>(k) + 1;
  Dec50 out;
  out.kind = 1;
  out.negative = (k & 1) != 0;
  if (d == 1) {  // exactly 1
    out.limbs[2] = uint64_t{1} << (kBits - 1 - 128);
    return out;
  }
  // d in (2^(s-1), 2^s) (odd, > 1, so not a power of two): 1/d in (2^-s, 2^-(s-1)), so e = -s
  // and m = round(2^(167 + s) / d), which lies in (2^167, 2^168).
  const int s = 64 - __builtin_clzll(d);
  const int n = kBits - 1 + s;  // numerator 2^n, n < 256: four 64-bit digits
  uint64_t num[4] = {0, 0, 0, 0};
  num[n / 64] = uint64_t{1} << (n % 64);
  uint64_t q[4] = {0, 0, 0, 0};
  __extension__ typedef unsigned __int128 U128;  // GCC and Clang; __extension__: -Wpedantic
  U128 rem = 0;
  for (int i = 3; i >= 0; --i) {
    const U128 cur = (rem << 64) | num[i];
    q[i] = static_cast<uint64_t>(cur / d);
    rem = cur % d;
  }
  // Round to nearest: up when the remainder is more than half of d (never exactly half).
  if (2 * rem > d) {
    for (int i = 0; i < 4 && ++q[i] == 0; ++i) {
    }
  }
  int exponent = -s;
  if (q[kBits / 64] >> (kBits % 64) != 0) {  // rounded up to 2^168: m = 2^167, one more e
    q[0] = q[1] = q[3] = 0;
    q[2] = uint64_t{1} << (kBits - 1 - 128);
    ++exponent;
  }
  out.limbs[0] = q[0];
  out.limbs[1] = q[1];
  out.limbs[2] = q[2];
  out.exponent = exponent;
  return out;
}

Value leibnizLocal(uint64_t terms, Precision precision, uint32_t chunk, uint32_t partials) {
  if (precision == Precision::kDouble) {
    return pyramid<double>(terms, chunk, partials,
                           [](uint64_t k) { return leibnizTermDouble(static_cast<int64_t>(k)); });
  }
  BigFloat pi = pyramid<BigFloat>(
      terms, chunk, partials, [](uint64_t k) { return leibnizTermDec(static_cast<int64_t>(k)); });
  return fromBigFloat(pi);
}

}  // namespace tokengate
