// Example operation over list values and packed arrays: a matrix is a list of rows, each row
// a list of numbers (JSON: [[1, 2], [3, 4]]) or a packed array (JSON: [{"f64s": [1, 2]},
// {"f64s": [3, 4]}], 8 bytes a cell on the wire instead of a Value each). Integers stay
// integers while the products fit int64; any float element makes the result float. The
// result's rows are packed (i64s / f64s) when any input row was packed, else lists.
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
  bool packed = false;        // some row was an i64s / f64s
  std::vector<int64_t> ints;  // row-major cells, while all_int
  std::vector<double> reals;  // row-major cells as doubles, always
};

// Appends one row's cells; false when an element is not a number.
bool addRow(const Value& row, Matrix& m, size_t& n, std::string& bad_type) {
  auto addInt = [&](int64_t x) {
    m.ints.push_back(x);
    m.reals.push_back(static_cast<double>(x));
    ++n;
  };
  auto addReal = [&](double x) {
    m.all_int = false;
    m.reals.push_back(x);
    ++n;
  };
  if (row.isI64s()) {
    m.packed = true;
    for (int64_t x : row.asI64s()) addInt(x);
  } else if (row.isF64s()) {
    m.packed = true;
    for (double x : row.asF64s()) addReal(x);
  } else {
    for (const auto& x : row.asList()) {
      if (x.isInt()) {
        addInt(x.asInt());
      } else if (x.isDouble()) {
        addReal(x.asDouble());
      } else {
        bad_type = x.typeName();
        return false;
      }
    }
  }
  return true;
}

StatusOr<Matrix> asMatrix(const Value& v, const char* which) {
  const std::string where = std::string("matrix.mul: ") + which;
  if (!v.isList() || v.asList().empty())
    return absl::InvalidArgumentError(where + " must be a non-empty list of rows");
  Matrix m;
  m.rows = v.asList().size();
  for (const auto& row : v.asList()) {
    if (!row.isList() && !row.isI64s() && !row.isF64s())
      return absl::InvalidArgumentError(where + ": every row must be a list, i64s or f64s");
    size_t n = 0;
    std::string bad_type;
    if (!addRow(row, m, n, bad_type))
      return absl::InvalidArgumentError(where + ": elements must be int or float, got " + bad_type);
    if (n == 0) return absl::InvalidArgumentError(where + ": every row must be non-empty");
    if (m.cols == 0) m.cols = n;
    if (n != m.cols) return absl::InvalidArgumentError(where + ": rows differ in length");
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
  const bool as_int = a->all_int && b->all_int;
  const bool packed = a->packed || b->packed;
  std::vector<Value> out;
  out.reserve(a->rows);
  for (size_t i = 0; i < a->rows; ++i) {
    std::vector<int64_t> irow;
    std::vector<double> frow;
    for (size_t j = 0; j < b->cols; ++j) {
      int64_t isum = 0;
      double fsum = 0;
      for (size_t k = 0; k < a->cols; ++k) {
        fsum += a->reals[i * a->cols + k] * b->reals[k * b->cols + j];
        int64_t p = 0;
        if (as_int &&
            (__builtin_mul_overflow(a->ints[i * a->cols + k], b->ints[k * b->cols + j], &p) ||
             __builtin_add_overflow(isum, p, &isum)))
          return absl::OutOfRangeError("matrix.mul: an integer product overflows int64");
      }
      if (as_int)
        irow.push_back(isum);
      else
        frow.push_back(fsum);
    }
    if (packed) {
      out.push_back(as_int ? Value::i64s(std::move(irow)) : Value::f64s(std::move(frow)));
    } else {
      std::vector<Value> row;
      for (int64_t x : irow) row.emplace_back(x);
      for (double x : frow) row.emplace_back(x);
      out.push_back(Value::list(std::move(row)));
    }
  }
  return Value::list(std::move(out));
}

}  // namespace

TG_OPERATION("matrix.mul", tokengate::Weight::kLight, mul);
