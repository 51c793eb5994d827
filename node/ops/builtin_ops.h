// The operations every stock node offers: the Leibniz pyramid (double and
// 50-digit), small general-purpose operations (hash, echo), list operations
// (list.make, list.concat, list.sum) and packed-array ones (vec.pack, vec.dot). Test
// operations (sleep, spin, fail, crash, wait_cancel) are registered only on
// request (tokengate-node --enable-test-ops): any submitter could otherwise
// kill or occupy every node. See docs/writing-operations.md.
#pragma once

#include "node/registry/registry.h"

namespace tokengate::node {

// leibniz.term, leibniz.term_dec50, leibniz.chunk, leibniz.partial,
// leibniz.final (all light).
Status registerLeibnizOps(Registry& registry);
// hash, echo, list.make, list.concat, list.sum, vec.pack, vec.dot (light).
Status registerGeneralOps(Registry& registry);
// Test operations: sleep (medium), spin, fail, crash (light), wait_cancel (medium).
Status registerTestOps(Registry& registry);
// The production set: Leibniz + general. Not the test operations.
Status registerBuiltinOps(Registry& registry);

// FNV-1a (64-bit) over the canonical bytes of `args` (what the `hash`
// operation returns, as int64): per value a one-byte type tag (the
// wire::Value union ordinal) then its payload: int/float as 8 little-endian
// bytes, text/data raw bytes preceded by their 8-byte length, dec as its
// three limbs, exponent (4 bytes), sign and kind bytes, bool as one byte, a list
// as its element count (8 bytes) then the hashValues() of its elements (8 bytes),
// i64s / f64s as their element count then each element's 8 little-endian bytes.
uint64_t hashValues(std::span<const Value> args);

}  // namespace tokengate::node
