// Example text operations. TG_OPERATION registers them statically; because this
// file is compiled into the executable (not a static library), the
// registration is always linked in.
#include <cctype>

#include "node/registry/registry.h"

namespace {

using tokengate::StatusOr;
using tokengate::Value;
using tokengate::node::OpContext;

// words.count(text) -> int: number of whitespace-separated words.
StatusOr<Value> countWords(OpContext& ctx, std::span<const Value> args) {
  if (args.size() != 1 || !args[0].isText())
    return absl::InvalidArgumentError("words.count takes one text argument");
  const std::string& s = args[0].asText();
  int64_t words = 0;
  bool in_word = false;
  for (size_t i = 0; i < s.size(); ++i) {
    // Long inputs: stay responsive to cancellation.
    if ((i & 0xffff) == 0 && ctx.cancelled()) return absl::CancelledError("words.count cancelled");
    const bool space = std::isspace(static_cast<unsigned char>(s[i])) != 0;
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return Value(words);
}

// words.total(int...) -> int: sums the counts of a refRange of words.count tokens.
StatusOr<Value> totalWords(OpContext&, std::span<const Value> args) {
  int64_t total = 0;
  for (const Value& v : args) {
    if (!v.isInt()) return absl::InvalidArgumentError("words.total sums ints");
    total += v.asInt();
  }
  return Value(total);
}

}  // namespace

TG_OPERATION("words.count", tokengate::Weight::kLight, countWords);
// A sum that never waits (no I/O, locks or sleeps): a lone words.total token may run on the
// node's link thread (docs/writing-operations.md, "Non-blocking?").
TG_OPERATION_FLAGS("words.total", tokengate::Weight::kLight, totalWords,
                   tokengate::node::OpFlags::kNonBlocking);
