// A finished job's status as the wire's JobDone (schema/tokengate.capnp): one encoder for the
// JobDone frame a client receives and the journal's finished-job record, so the two never drift.
#pragma once

#include "common/wire.h"
#include "coordinator/control/control.h"

namespace tokengate::control {

void toWire(const OutputResult& o, wire::Output::Builder out);
void toWire(const JobStatus& s, wire::JobDone::Builder d);

}  // namespace tokengate::control
