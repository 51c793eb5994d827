// The journal file format (docs/journal.md): encoding of records, and a scanner that reads a
// whole file, damaged or not, without ever trusting a byte it has not checked. Pure functions:
// used by FileJournal, `tgctl journal check` and the replay fuzzer (tests/fuzz).
//
//   file   = "TGJOURN2" record*
//   record = u32 marker 0xA1B2C3D4 | u32 payload length | u32 CRC-32 of the payload
//            | u32 CRC-32 of the previous 12 bytes | payload (one Cap'n Proto message, flat array,
//            a whole number of 8-byte words)           (all integers little endian)
//
// The first record of a file is an epoch record (its header). Because every record carries its
// own marker and a checksummed length, a damaged record in the middle is skipped and the scan
// resynchronises on the next marker whose header and payload both check out; whatever does not
// check out before the end of the file is a torn tail. Files written before this format
// ("TGJOURN1": u32 length, u32 CRC, payload) are read too, up to their first bad record.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/job.h"
#include "common/status.h"
#include "coordinator/control/control.h"
#include "coordinator/core/journal.h"

namespace tokengate::journal {

inline constexpr std::string_view kMagic{"TGJOURN2", 8};
inline constexpr std::string_view kMagicV1{"TGJOURN1", 8};
inline constexpr uint32_t kRecordMarker = 0xA1B2C3D4u;
inline constexpr size_t kRecordHeader = 16;
inline constexpr uint32_t kMaxRecord = 256u << 20;  // a longer record is corruption

// Payloads (one Cap'n Proto JournalRecord message each).
std::string encodeAdmit(uint64_t job_id, uint64_t incarnation, const JobSpec& spec);
std::string encodeFinish(const control::JobStatus& status);
std::string encodeEpoch(uint32_t epoch, int64_t started_ns);
std::string encodeCheckpoint(uint64_t job_id, uint64_t incarnation,
                             const coordinator::Checkpoint& results);
std::string encodeKey(const std::string& key, uint64_t token_id, uint64_t incarnation,
                      const Value& value);
std::string encodeQuarantine(const coordinator::QuarantineNote& note);
// Appends header + payload to `out`.
void appendRecord(std::string& out, std::string_view payload);

struct Record {
  enum Kind : uint8_t { kAdmit, kFinish, kEpoch, kCheckpoint, kKey, kQuarantine } kind = kAdmit;
  uint64_t offset = 0;  // of the record header in the file
  uint64_t bytes = 0;   // header + payload
  uint64_t id = 0;      // job id (admit, finish, checkpoint; key: the original token's id)
  uint64_t incarnation = 0;
  JobSpec spec;                            // admit
  control::JobStatus status;               // finish
  uint32_t epoch = 0;                      // epoch
  int64_t started_ns = 0;                  // epoch
  coordinator::Checkpoint checkpoint;      // checkpoint
  std::string key;                         // key
  Value value;                             // key
  coordinator::QuarantineNote quarantine;  // quarantine (imposed or lifted)
};

struct Damage {
  uint64_t offset = 0;
  uint64_t bytes = 0;
  std::string why;
  bool tail = false;  // nothing intact follows: a torn tail (a crash mid-write), cut off
};

struct Scan {
  int version = 0;         // 2, 1 (old format), 0 (no magic: unknown)
  bool parseable = false;  // empty, or a magic or at least one intact record was found
  uint64_t size = 0;
  std::vector<Record> records;  // intact records in file order
  std::vector<Damage> damage;   // skipped ranges in file order (a tail one last)
  uint64_t damagedBytes() const;
  bool hasTail() const { return !damage.empty() && damage.back().tail; }
};

// Never throws, never trusts a length it has not checksummed; linear in the file size for a
// healthy file (a damaged range costs a marker search over its bytes).
Scan scanJournal(std::string_view data);

// What a restart needs, folded from a scan: the live (admitted, unfinished) jobs in admission
// order (with the checkpoints written after their admission, same incarnation), the newest
// `keep_finished` finished jobs and the results of the newest `keep_keys` idempotency keys.
struct Folded {
  std::vector<const Record*> live;  // admission order
  std::unordered_map<uint64_t, std::vector<const Record*>>
      checkpoints;                      // live job id -> oldest first
  std::vector<const Record*> finished;  // oldest first
  // Key records, one per key (the newest wins), oldest first, at most keep_keys: a key is kept
  // until keep_keys newer keys have results, whether or not its job is still remembered.
  std::vector<const Record*> keys;
  // Quarantines in force: the newest record per node id unless it is a lift, oldest first.
  std::vector<const Record*> quarantines;
  uint32_t last_epoch = 0;         // of the last epoch record (0: none)
  std::vector<bool> epoch_in_use;  // [kMaxEpoch + 1]: epochs of live/kept jobs' ids
};
Folded fold(const Scan& scan, size_t keep_finished, size_t keep_keys = SIZE_MAX);

// The epoch a new coordinator takes: the one after `last_epoch` (or `random_epoch` when the file
// had no epoch record), skipping epochs still used by kept jobs. 1..kMaxEpoch.
uint32_t chooseEpoch(const Folded& f, uint32_t random_epoch);

}  // namespace tokengate::journal
