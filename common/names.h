// Validation of the names peers send us: node ids and operation names end up
// in logs, metric labels (/metrics must stay parseable), the control page and
// routing ids, so both ends check them: a node at start, the coordinator at
// hello (validateHello), before anything is stored.
//
// Rules: 1..128 bytes of ASCII letters, digits and `.` `_` `-` `:` `@`
// (operation names may also use `/`; node ids may not: the routing id is
// "<node-id>/<incarnation>"). ASCII-only implies valid UTF-8 and keeps
// Prometheus label values and JSON plain.
#pragma once

#include <string_view>

#include "common/status.h"
#include "tokengate.capnp.h"

namespace tokengate {

constexpr size_t kMaxNameBytes = 128;
constexpr size_t kMaxHelloOperations = 4096;

// InvalidArgument with the reason (the offending name is quoted escaped and
// truncated, so the message itself is safe to log).
Status validateNodeId(std::string_view id);
Status validateOperationName(std::string_view name);
// Node id, every operation name, and the operation count of a hello.
Status validateHello(wire::NodeHello::Reader hello);

}  // namespace tokengate
