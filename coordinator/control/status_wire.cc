#include "coordinator/control/status_wire.h"

namespace tokengate::control {

void toWire(const OutputResult& o, wire::Output::Builder out) {
  out.setIndex(o.index);
  out.setName(o.name);
  if (o.status.ok())
    tokengate::toWire(o.value, out.initValue());
  else
    tokengate::toWire(o.status, out.initError());
}

void toWire(const JobStatus& s, wire::JobDone::Builder d) {
  d.setJobId(s.id);
  d.setState(static_cast<wire::JobState>(s.state));
  auto p = d.initProgress();
  p.setJobId(s.id);
  p.setTotal(s.total);
  p.setDone(s.done);
  p.setFailed(s.failed + s.cancelled);
  d.setWallNs(static_cast<uint64_t>(s.wall_ns));
  auto outs = d.initOutputs(static_cast<unsigned>(s.outputs.size()));
  for (unsigned i = 0; i < s.outputs.size(); ++i) toWire(s.outputs[i], outs[i]);
}

}  // namespace tokengate::control
