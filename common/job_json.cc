#include "common/job_json.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>

namespace tokengate {

namespace json = boost::json;

namespace {

std::string toHex(const std::string& s) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char c : s) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

StatusOr<std::string> fromHex(std::string_view s) {
  if (s.size() % 2) return absl::InvalidArgumentError("hex string has odd length");
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < s.size(); i += 2) {
    int hi = nib(s[i]), lo = nib(s[i + 1]);
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("invalid hex digit");
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

template <typename T>
StatusOr<T> getUint(const json::object& o, std::string_view key, T dflt, std::string_view where) {
  auto* v = o.if_contains(key);
  if (!v) return dflt;
  if (!v->is_int64() && !v->is_uint64())
    return absl::InvalidArgumentError(fmt::format("{}: '{}' must be an integer", where, key));
  auto x = v->is_int64() ? v->get_int64() : static_cast<int64_t>(v->get_uint64());
  if (x < 0 || static_cast<uint64_t>(x) > std::numeric_limits<T>::max())
    return absl::InvalidArgumentError(fmt::format("{}: '{}' out of range", where, key));
  return static_cast<T>(x);
}

StatusOr<std::string> getString(const json::object& o, std::string_view key, std::string_view where,
                                bool required) {
  auto* v = o.if_contains(key);
  if (!v) {
    if (required) return absl::InvalidArgumentError(fmt::format("{}: missing '{}'", where, key));
    return std::string();
  }
  if (!v->is_string())
    return absl::InvalidArgumentError(fmt::format("{}: '{}' must be a string", where, key));
  return std::string(v->get_string());
}

// Integral JSON number (int64 or uint64 storage) as int64; nullopt otherwise.
std::optional<int64_t> asInt(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX))
    return static_cast<int64_t>(v.get_uint64());
  return std::nullopt;
}

StatusOr<Arg> argFromJson(const json::value& v, std::string_view where) {
  if (!v.is_object()) {
    auto val = valueFromJson(v);
    if (!val.ok()) return val.status();
    return Arg::val(*std::move(val));
  }
  const auto& o = v.get_object();
  auto step = o.if_contains("step");
  int64_t step_v = 0;
  if (step) {
    auto s = asInt(*step);
    if (!s) return absl::InvalidArgumentError(fmt::format("{}: step must be an integer", where));
    step_v = *s;
  }
  if (auto* r = o.if_contains("ref")) {
    auto i = asInt(*r);
    if (!i || *i < 0 || *i > UINT32_MAX)
      return absl::InvalidArgumentError(fmt::format("{}: ref must be a token index", where));
    return Arg::ref(static_cast<uint32_t>(*i), step_v);
  }
  if (auto* r = o.if_contains("refs")) {
    std::optional<int64_t> start, count;
    if (r->is_array() && r->get_array().size() == 2) {
      start = asInt(r->get_array()[0]);
      count = asInt(r->get_array()[1]);
    }
    if (!start || !count || *start < 0 || *count <= 0 || *start > UINT32_MAX || *count > UINT32_MAX)
      return absl::InvalidArgumentError(
          fmt::format("{}: refs must be [start, count] with count > 0", where));
    return Arg::refs(static_cast<uint32_t>(*start), static_cast<uint32_t>(*count), step_v);
  }
  if (auto* r = o.if_contains("value")) {
    auto val = valueFromJson(*r);
    if (!val.ok()) return val.status();
    return Arg::val(*std::move(val), step_v);
  }
  auto val = valueFromJson(v);
  if (!val.ok()) return val.status();
  return Arg::val(*std::move(val), step_v);
}

}  // namespace

namespace {
StatusOr<Value> valueFromJsonAt(const json::value& v, int depth);

// A JSON number, or one of the strings a non-finite double is written as.
std::optional<double> doubleFromJson(const json::value& d) {
  if (d.is_number()) return d.to_number<double>();
  if (d.is_string()) {
    std::string_view s = d.get_string();
    if (s == "inf" || s == "+inf" || s == "Infinity")
      return std::numeric_limits<double>::infinity();
    if (s == "-inf" || s == "-Infinity") return -std::numeric_limits<double>::infinity();
    if (s == "nan" || s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  }
  return std::nullopt;
}

// Finite doubles as JSON numbers, the others as "inf", "-inf", "nan".
json::value doubleToJson(double d) {
  if (std::isfinite(d)) return d;
  return json::string(std::isnan(d) ? "nan" : (d > 0 ? "inf" : "-inf"));
}
}  // namespace

StatusOr<Value> valueFromJson(const json::value& v) { return valueFromJsonAt(v, 0); }

namespace {

StatusOr<Value> valueFromJsonAt(const json::value& v, int depth) {
  switch (v.kind()) {
    case json::kind::null:
      return Value();
    case json::kind::bool_:
      return Value(v.get_bool());
    case json::kind::int64:
      return Value(v.get_int64());
    case json::kind::uint64:
      if (v.get_uint64() > static_cast<uint64_t>(INT64_MAX))
        return absl::InvalidArgumentError("integer out of range");
      return Value(static_cast<int64_t>(v.get_uint64()));
    case json::kind::double_:
      return Value(v.get_double());
    case json::kind::string:
      return Value(std::string(v.get_string()));
    case json::kind::object: {
      const auto& o = v.get_object();
      if (auto* d = o.if_contains("dec"); d && d->is_string()) {
        auto dec = parseDec50(std::string_view(d->get_string()));
        if (!dec.ok()) return dec.status();
        return Value(*dec);
      }
      if (auto* b = o.if_contains("bytes"); b && b->is_string()) {
        auto raw = fromHex(b->get_string());
        if (!raw.ok()) return raw.status();
        return Value(Bytes{*std::move(raw)});
      }
      if (auto* a = o.if_contains("i64s")) {
        if (!a->is_array()) return absl::InvalidArgumentError("{\"i64s\": ...} must be an array");
        I64s out;
        out.items.reserve(a->get_array().size());
        for (const auto& x : a->get_array()) {
          auto n = asInt(x);
          if (!n)
            return absl::InvalidArgumentError(fmt::format(
                "{{\"i64s\": [...]}}: element {} is not an int64 integer", out.items.size()));
          out.items.push_back(*n);
        }
        return Value(std::move(out));
      }
      if (auto* a = o.if_contains("f64s")) {
        if (!a->is_array()) return absl::InvalidArgumentError("{\"f64s\": ...} must be an array");
        F64s out;
        out.items.reserve(a->get_array().size());
        for (const auto& x : a->get_array()) {
          auto d = doubleFromJson(x);
          if (!d)
            return absl::InvalidArgumentError(fmt::format(
                "{{\"f64s\": [...]}}: element {} must be a number or \"inf\", \"-inf\", \"nan\"",
                out.items.size()));
          out.items.push_back(*d);
        }
        return Value(std::move(out));
      }
      if (auto* i = o.if_contains("int"); i && i->is_int64()) return Value(i->get_int64());
      if (auto* d = o.if_contains("double")) {
        if (auto x = doubleFromJson(*d)) return Value(*x);
        return absl::InvalidArgumentError(
            "{\"double\": ...} must be a number or \"inf\", \"-inf\", \"nan\"");
      }
      return absl::InvalidArgumentError(
          "object values must be {\"dec\": \"...\"}, {\"bytes\": \"hex\"}, {\"int\": n}, "
          "{\"double\": \"inf\"|\"-inf\"|\"nan\"}, {\"i64s\": [...]} or {\"f64s\": [...]}");
    }
    case json::kind::array: {
      if (depth >= kMaxListDepth)
        return absl::InvalidArgumentError(
            fmt::format("lists nest deeper than {} levels", kMaxListDepth));
      const auto& a = v.get_array();
      List out;
      out.items.reserve(a.size());
      for (const auto& item : a) {
        auto x = valueFromJsonAt(item, depth + 1);
        if (!x.ok()) return x.status();
        out.items.push_back(*std::move(x));
      }
      return Value(std::move(out));
    }
  }
  return absl::InvalidArgumentError("unsupported JSON value");
}

}  // namespace

json::value valueToJson(const Value& v) {
  if (v.isNull()) return nullptr;
  if (v.isInt()) return v.asInt();
  if (v.isDouble()) {
    const double d = v.asDouble();
    if (std::isfinite(d)) return d;
    return json::object{{"double", doubleToJson(d)}};
  }
  if (v.isI64s()) {
    json::array out;
    out.reserve(v.asI64s().size());
    for (int64_t x : v.asI64s()) out.push_back(x);
    return json::object{{"i64s", std::move(out)}};
  }
  if (v.isF64s()) {
    json::array out;
    out.reserve(v.asF64s().size());
    for (double x : v.asF64s()) out.push_back(doubleToJson(x));
    return json::object{{"f64s", std::move(out)}};
  }
  if (v.isText()) return json::string(v.asText());
  if (v.isBool()) return v.asBool();
  if (v.isBytes()) return json::object{{"bytes", toHex(v.asBytes().data)}};
  if (v.isList()) {
    json::array out;
    out.reserve(v.asList().size());
    for (const auto& x : v.asList()) out.push_back(valueToJson(x));
    return out;
  }
  return json::object{{"dec", v.toString()}};
}

StatusOr<JobSpec> jobFromJson(const json::value& v) {
  if (!v.is_object()) return absl::InvalidArgumentError("job must be a JSON object");
  const auto& o = v.get_object();
  JobSpec job;
  auto name = getString(o, "name", "job", false);
  if (!name.ok()) return name.status();
  job.name = *name;
  if (const json::value* vf = o.if_contains("verify"); vf != nullptr && !vf->is_null()) {
    // A number of percent (5, 0.5) or a string "5%".
    double pct = -1;
    if (vf->is_number()) {
      pct = vf->to_number<double>();
    } else if (vf->is_string()) {
      std::string s(vf->get_string());
      if (!s.empty() && s.back() == '%') s.pop_back();
      char* end = nullptr;
      pct = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size()) pct = -1;
    }
    if (!(pct >= 0 && pct <= 100))
      return absl::InvalidArgumentError(
          "job: 'verify' must be a percentage from 0 to 100 (a number, or a string like \"5%\")");
    job.verify_pct = pct;
  }
  auto* tokens = o.if_contains("tokens");
  if (!tokens || !tokens->is_array())
    return absl::InvalidArgumentError("job: 'tokens' must be an array");
  size_t i = 0;
  for (const auto& tv : tokens->get_array()) {
    std::string where = fmt::format("tokens[{}]", i++);
    if (!tv.is_object()) return absl::InvalidArgumentError(where + ": must be an object");
    const auto& t = tv.get_object();
    TokenSpec s;
    auto op = getString(t, "op", where, true);
    if (!op.ok()) return op.status();
    s.op = *op;
    auto weight = getString(t, "weight", where, false);
    if (!weight.ok()) return weight.status();
    auto w = parseWeight(*weight);
    if (!w.ok())
      return absl::InvalidArgumentError(where + ": " + std::string(w.status().message()));
    s.weight = *w;
    auto key = getString(t, "key", where, false);
    if (!key.ok()) return key.status();
    s.idempotency_key = *key;
    auto label = getString(t, "name", where, false);
    if (!label.ok()) return label.status();
    s.name = *label;
    auto deadline = getUint<uint32_t>(t, "deadline_ms", 0, where);
    if (!deadline.ok()) return deadline.status();
    s.deadline_ms = *deadline;
    auto run_timeout = getUint<uint32_t>(t, "run_timeout_ms", 0, where);
    if (!run_timeout.ok()) return run_timeout.status();
    s.run_timeout_ms = *run_timeout;
    auto attempts = getUint<uint8_t>(t, "max_attempts", 0, where);
    if (!attempts.ok()) return attempts.status();
    s.max_attempts = *attempts;
    auto repeat = getUint<uint32_t>(t, "repeat", 1, where);
    if (!repeat.ok()) return repeat.status();
    s.repeat = *repeat;
    if (auto* out = t.if_contains("output")) {
      if (!out->is_bool()) return absl::InvalidArgumentError(where + ": 'output' must be a bool");
      s.output = out->get_bool();
    }
    if (auto* args = t.if_contains("args")) {
      if (!args->is_array()) return absl::InvalidArgumentError(where + ": 'args' must be an array");
      size_t a = 0;
      for (const auto& av : args->get_array()) {
        auto arg = argFromJson(av, fmt::format("{}.args[{}]", where, a++));
        if (!arg.ok()) return arg.status();
        s.args.push_back(*std::move(arg));
      }
    }
    job.tokens.push_back(std::move(s));
  }
  return job;
}

Status checkIntegerLiterals(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const char c = text[i];
    if (c == '"') {  // skip a string, escapes included
      for (++i; i < n && text[i] != '"'; ++i) {
        if (text[i] == '\\') ++i;
      }
      ++i;
      continue;
    }
    if (c != '-' && (c < '0' || c > '9')) {
      ++i;
      continue;
    }
    size_t end = i + 1;
    bool integral = true;
    while (end < n) {
      const char d = text[end];
      if (d >= '0' && d <= '9') {
      } else if (d == '.' || d == 'e' || d == 'E' || d == '+' || d == '-') {
        integral = false;
      } else {
        break;
      }
      ++end;
    }
    if (integral) {
      int64_t v = 0;
      std::string_view lit = text.substr(i, end - i);
      auto [ptr, ec] = std::from_chars(lit.data(), lit.data() + lit.size(), v);
      if (ec == std::errc::result_out_of_range) {
        return absl::InvalidArgumentError(fmt::format(
            "integer {} is outside the int64 range (send 64-bit ids as strings)",
            lit.size() > 40 ? std::string(lit.substr(0, 40)) + "..." : std::string(lit)));
      }
    }
    i = end;
  }
  return absl::OkStatus();
}

StatusOr<json::value> parseJsonText(std::string_view text, int max_depth) {
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = static_cast<size_t>(max_depth);
  json::value v = json::parse(text, ec, {}, opts);
  if (ec) return absl::InvalidArgumentError(fmt::format("invalid JSON: {}", ec.message()));
  if (Status st = checkIntegerLiterals(text); !st.ok()) return st;
  return v;
}

StatusOr<JobSpec> parseJobJson(std::string_view text) {
  auto v = parseJsonText(text);
  if (!v.ok()) return v.status();
  return jobFromJson(*v);
}

json::value jobToJson(const JobSpec& job) {
  json::array tokens;
  for (const auto& t : job.tokens) {
    json::object o;
    o["op"] = t.op;
    if (t.weight != Weight::kUnspecified) o["weight"] = weightName(t.weight);
    if (!t.idempotency_key.empty()) o["key"] = t.idempotency_key;
    if (!t.name.empty()) o["name"] = t.name;
    if (t.deadline_ms) o["deadline_ms"] = t.deadline_ms;
    if (t.run_timeout_ms) o["run_timeout_ms"] = t.run_timeout_ms;
    if (t.max_attempts) o["max_attempts"] = t.max_attempts;
    if (t.repeat != 1) o["repeat"] = t.repeat;
    if (t.output) o["output"] = true;
    json::array args;
    for (const auto& a : t.args) {
      json::object ao;
      switch (a.kind) {
        case Arg::Kind::kValue:
          if (a.step == 0) {
            args.push_back(valueToJson(a.value));
            continue;
          }
          ao["value"] = valueToJson(a.value);
          break;
        case Arg::Kind::kRef:
          ao["ref"] = a.start;
          break;
        case Arg::Kind::kRefRange:
          ao["refs"] = json::array{a.start, a.count};
          break;
      }
      if (a.step) ao["step"] = a.step;
      args.push_back(std::move(ao));
    }
    o["args"] = std::move(args);
    tokens.push_back(std::move(o));
  }
  json::object out{{"name", job.name}, {"tokens", std::move(tokens)}};
  if (job.verify_pct > 0) out["verify"] = job.verify_pct;
  return out;
}

}  // namespace tokengate
