// JobJournal: where the coordinator core records what it promised, so a restarted coordinator
// can keep the promise (`--journal PATH`, coordinator/journal/ has the file implementation).
//
// The core calls admitted() before it acknowledges a job (the submit fails if the record could
// not be made durable) and finished() when a job reaches a final state, before its watchers
// are told. Both run on the coordinator loop thread.
#pragma once

#include <cstdint>

#include "common/job.h"
#include "common/status.h"
#include "coordinator/control/control.h"

namespace tokengate::coordinator {

class JobJournal {
 public:
  virtual ~JobJournal() = default;
  // Durable (or an error) when it returns.
  virtual Status admitted(uint64_t job_id, const JobSpec& spec) = 0;
  // Best effort: a lost finish record only means the job re-runs after a restart.
  virtual void finished(const control::JobStatus& status) = 0;
};

}  // namespace tokengate::coordinator
