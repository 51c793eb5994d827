// Example operation over list values: a matrix is a list of rows, each a list of numbers
// (JSON: [[1, 2], [3, 4]]). Integers stay integers while the products fit int64; any float
// element makes the result float.
#include <cstdint>
#include <string>
#include <vector>

#include "node/registry/registry.h"

namespace {

using tokengate::StatusOr;
using tokengate::Value;
using tokengate::node::OpContext;

struct Matrix {
  size_t rows = 0, cols = 0;
  bool all_int = true;
  std::vector<const Value*> cells;  // row-major, pointing into the argument
};

StatusOr<Matrix> asMatrix(const Value& v, const char* which) {
  const std::string where = std::string("matrix.mul: ") + which;
  if (!v.isList() || v.asList().empty())
    return absl::InvalidArgumentError(where + " must be a non-empty list of rows");
  Matrix m;
  m.rows = v.asList().size();
  for (const auto& row : v.asList()) {
    if (!row.isList() || row.asList().empty())
      return absl::InvalidArgumentError(where + ": every row must be a non-empty list");
    if (m.cols == 0) m.cols = row.asList().size();
    if (row.asList().size() != m.cols)
      return absl::InvalidArgumentError(where + ": rows differ in length");
    for (const auto& x : row.asList()) {
      if (!x.isInt() && !x.isDouble())
        return absl::InvalidArgumentError(where + ": elements must be int or float, got " +
                                          x.typeName());
      m.all_int = m.all_int && x.isInt();
      m.cells.push_back(&x);
    }
  }
  return m;
}

// matrix.mul(A, B) -> A x B, for an n x k A and a k x m B.
StatusOr<Value> mul(OpContext&, std::span<const Value> args) {
  if (args.size() != 2) return absl::InvalidArgumentError("matrix.mul takes 2 matrices");
  auto a = asMatrix(args[0], "A");
  if (!a.ok()) return a.status();
  auto b = asMatrix(args[1], "B");
  if (!b.ok()) return b.status();
  if (a->cols != b->rows)
    return absl::InvalidArgumentError("matrix.mul: A has " + std::to_string(a->cols) +
                                      " columns but B has " + std::to_string(b->rows) + " rows");
  bool as_int = a->all_int && b->all_int;
  std::vector<Value> out;
  out.reserve(a->rows);
  for (size_t i = 0; i < a->rows; ++i) {
    std::vector<Value> row;
    row.reserve(b->cols);
    for (size_t j = 0; j < b->cols; ++j) {
      int64_t isum = 0;
      double fsum = 0;
      for (size_t k = 0; k < a->cols; ++k) {
        const Value& x = *a->cells[i * a->cols + k];
        const Value& y = *b->cells[k * b->cols + j];
        fsum += x.toDouble() * y.toDouble();
        int64_t p = 0;
        if (as_int && (__builtin_mul_overflow(x.asInt(), y.asInt(), &p) ||
                       __builtin_add_overflow(isum, p, &isum)))
          return absl::OutOfRangeError("matrix.mul: an integer product overflows int64");
      }
      row.push_back(as_int ? Value(isum) : Value(fsum));
    }
    out.push_back(Value::list(std::move(row)));
  }
  return Value::list(std::move(out));
}

}  // namespace

TG_OPERATION("matrix.mul", tokengate::Weight::kLight, mul);
