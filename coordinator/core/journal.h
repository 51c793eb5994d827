// JobJournal: where the coordinator core records what it promised, so a restarted coordinator
// can keep the promise (`--journal PATH`, coordinator/journal/ has the file implementation);
// and the layout of job ids, which must never repeat across restarts.
//
// Group commit: admitted(), finished() and epochStarted() only append to the journal's buffer;
// commit() writes the buffer and, if it holds an admission or an epoch, fdatasyncs it. The core
// acknowledges an admission (SubmitReply, gateway reply) and starts the job only after the
// commit() that covered its record returned OK (CoordinatorCore::commitJournal, called by the
// server loop once per burst of frames, so admissions arriving together share one sync).
// Every method runs on the coordinator loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/job.h"
#include "common/status.h"
#include "coordinator/control/control.h"

namespace tokengate::coordinator {

// Job ids are 32 bits (a token id is job_id << 32 | index): the high kEpochBits bits are the
// epoch, the low kSequenceBits a sequence within it. A coordinator takes a new epoch at every
// start (one above the journal's last, or a random one without a journal or when the journal
// was lost) and when it has used up the 2^20 ids of its epoch, and records it durably before it
// acknowledges any id of that epoch. Epoch 0 is never handed out (ids below 2^20 are those of
// journals written before epochs existed), so epochs run 1..4095 and then wrap to 1: an id comes
// back only after 4095 epochs (restarts or million-job blocks), and a client that sends the
// job's incarnation (C++ client) is told NOT_FOUND even then.
inline constexpr int kEpochBits = 12;
inline constexpr int kSequenceBits = 32 - kEpochBits;
inline constexpr uint32_t kMaxEpoch = (1u << kEpochBits) - 1;
inline constexpr uint64_t kSequenceMask = (uint64_t{1} << kSequenceBits) - 1;
inline constexpr uint32_t epochOf(uint64_t job_id) {
  return static_cast<uint32_t>(job_id >> kSequenceBits);
}
inline constexpr uint64_t firstIdOf(uint32_t epoch) {
  return static_cast<uint64_t>(epoch) << kSequenceBits;
}
// The epoch after `e` (1..kMaxEpoch, wrapping; 0 -> 1).
inline constexpr uint32_t nextEpoch(uint32_t e) { return e >= kMaxEpoch ? 1 : e + 1; }

// Results of finished tokens of one job: (job-local index, value).
using Checkpoint = std::vector<std::pair<uint32_t, Value>>;

// A node convicted (quarantined: no new work until an operator lifts it) or its quarantine
// lifted. Journalled so that a restarted coordinator keeps a caught node off work.
struct QuarantineNote {
  enum Cause : uint8_t { kRunTimeouts = 0, kVerify = 1 };
  std::string node_id;
  std::string key;  // the node's CURVE public key (Z85) when caught; empty with CURVE off
  std::string reason;
  Cause cause = kRunTimeouts;
  bool lifted = false;  // an operator lifted it (undrain)
  int64_t at_ns = 0;    // wall clock (unix ns); the journal stamps it when 0

  static QuarantineNote convicted(std::string node_id, std::string key, std::string reason,
                                  Cause cause) {
    QuarantineNote n;
    n.node_id = std::move(node_id);
    n.key = std::move(key);
    n.reason = std::move(reason);
    n.cause = cause;
    return n;
  }
  static QuarantineNote liftOf(std::string node_id) {
    QuarantineNote n;
    n.node_id = std::move(node_id);
    n.lifted = true;
    return n;
  }
};

class JobJournal {
 public:
  virtual ~JobJournal() = default;
  // Appends an admission record; durable once the next commit() returned OK. An error means
  // it could not even be encoded/buffered: the job is refused.
  virtual Status admitted(uint64_t job_id, uint64_t incarnation, const JobSpec& spec) = 0;
  // Best effort: a lost finish record only means the job re-runs after a restart.
  virtual void finished(const control::JobStatus& status) = 0;
  // Results of finished tokens of a live job (resume, don't re-run); best effort, written with
  // the next commit() but not synced for: a lost checkpoint only means those tokens run again.
  virtual void checkpoint(uint64_t /*job_id*/, uint64_t /*incarnation*/,
                          const Checkpoint& /*results*/) {}
  // The result of an idempotency key's original token (the first token admitted with `key`), so
  // that a restarted coordinator answers later tokens with the key with it instead of running
  // them. Written with the next commit() but not synced for itself: the next admission's sync
  // covers it (same file, written in order), and the value reaches no client before that
  // commit's write. Best effort otherwise: lost, the original runs again if its job is live.
  virtual void keyFinished(const std::string& /*key*/, uint64_t /*token_id*/,
                           uint64_t /*incarnation*/, const Value& /*value*/) {}
  // A quarantine imposed or lifted; durable with the next commit() (which syncs for it: it is
  // rare, and a lost one lets a caught node work again after a restart).
  virtual void quarantine(const QuarantineNote& /*note*/) {}
  // Ids of `epoch` are about to be handed out; durable with the next commit().
  virtual void epochStarted(uint32_t epoch) = 0;
  // Writes what was appended; fdatasync()s first if it holds an admission or an epoch.
  virtual Status commit() = 0;
};

}  // namespace tokengate::coordinator
