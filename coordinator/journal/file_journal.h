// FileJournal: the coordinator's job journal on local disk (`--journal PATH`); file format in
// format.h and docs/journal.md.
//
// Ownership: open() takes an exclusive flock() on the file before reading it and keeps it for
// the journal's lifetime, so a second coordinator pointed at the same file fails at once and
// touches nothing. open() only reads (a missing file is created empty); the file is rewritten
// only by activate(), which the app calls once the process is fully started (ports bound), and
// by compactions after that: the live records go to PATH.tmp, which is locked, synced and
// renamed over PATH while the old file's lock is still held.
//
// Replay: intact records are replayed, damaged ones skipped (counted, logged with their offset),
// a torn tail is cut. Jobs admitted and not finished come back in admission order, the newest
// `keep_finished` finished jobs with their outputs. A file with damage is kept as
// PATH.damaged-<unix time> (a hard link to the old inode) when activate() replaces it. A file
// with nothing recognisable in it is refused (left untouched) unless `reset` is set, which moves
// it aside to PATH.unparseable-<unix time> and starts a new journal.
//
// Epochs (coordinator/core/journal.h): open() chooses this process's epoch, one above the
// file's last (random if the file had none: new, lost or truncated), and activate() makes it
// durable before the first id of it is handed out.
//
// Group commit: admitted()/finished()/epochStarted() append to a buffer; commit() writes it with
// one write() and, if it holds an admission or epoch, one fdatasync().
//
// Threads: one (the coordinator loop thread, or the app thread before the loop runs).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/job.h"
#include "common/status.h"
#include "coordinator/control/control.h"
#include "coordinator/core/journal.h"
#include "coordinator/journal/format.h"

namespace tokengate::journal {

struct FileJournalOptions {
  size_t keep_finished = 1000;  // finished jobs kept across restarts (status + outputs)
  // Idempotency keys whose results are kept across restarts: the newest keep_keys (the app
  // passes the core's max_idempotency_keys, so a restart does not shorten a key's life).
  size_t keep_keys = 1'000'000;
  bool sync = true;  // fdatasync on commit (false: tests of the format only)
  uint64_t compact_bytes = 64ull << 20;
  bool reset = false;  // --journal-reset: move an unparseable file aside instead of refusing
  // Exports tokengate_journal_* metrics when set.
  std::shared_ptr<prometheus::Registry> registry;
  // The epoch when the file has none (tests); default: random.
  std::function<uint32_t()> random_epoch;
};

struct Replay {
  struct Admitted {
    uint64_t id = 0;
    uint64_t incarnation = 0;
    JobSpec spec;
    coordinator::Checkpoint checkpoint;  // results of its tokens that finished (resume from)
  };
  std::vector<Admitted> unfinished;          // admission order
  std::vector<control::JobStatus> finished;  // oldest first, at most keep_finished
  struct Key {
    std::string key;
    uint64_t token_id = 0;  // the original token
    uint64_t incarnation = 0;
    Value value;
  };
  std::vector<Key> keys;  // results of idempotency keys, oldest first, at most keep_keys
  // Quarantines in force (convicted nodes whose quarantine was not lifted), oldest first.
  std::vector<coordinator::QuarantineNote> quarantines;
  uint64_t records = 0;        // intact records read
  std::vector<Damage> damage;  // skipped ranges (a torn tail last)
  uint64_t damaged_bytes = 0;
  uint32_t epoch = 0;         // the epoch this process hands out
  bool epoch_random = false;  // the file had no epoch record (new, lost or truncated)
  std::string moved_aside;    // where an unparseable file went (reset)
};

class FileJournal final : public coordinator::JobJournal {
 public:
  // Locks `path` and replays it into `replay` (a missing file is created empty). Writes nothing
  // else. Errors: FailedPrecondition if another process holds the lock or the file is not
  // parseable (and !reset); Internal for I/O errors (with the path and errno text).
  static StatusOr<std::unique_ptr<FileJournal>> open(const std::string& path,
                                                     FileJournalOptions options, Replay* replay);
  ~FileJournal() override;
  FileJournal(const FileJournal&) = delete;
  FileJournal& operator=(const FileJournal&) = delete;

  // Rewrites the file as [magic][epoch record][quarantines in force][kept key results][live
  // admissions and their checkpoints][kept outcomes] and syncs it;
  // from then on records can be appended and compactions run. Call once the process is fully
  // started, before the first job id is handed out.
  Status activate();

  Status admitted(uint64_t job_id, uint64_t incarnation, const JobSpec& spec) override;
  void finished(const control::JobStatus& status) override;
  void checkpoint(uint64_t job_id, uint64_t incarnation,
                  const coordinator::Checkpoint& results) override;
  void keyFinished(const std::string& key, uint64_t token_id, uint64_t incarnation,
                   const Value& value) override;
  void quarantine(const coordinator::QuarantineNote& note) override;
  void epochStarted(uint32_t epoch) override;
  Status commit() override;

  // Registers tokengate_journal_* in `reg` (also done by open() when options.registry is set).
  void exportMetrics(prometheus::Registry& reg);

  uint32_t epoch() const { return epoch_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t compactions() const { return compactions_; }
  uint64_t syncs() const { return syncs_; }
  size_t keys() const { return keys_.size(); }                // key results a compaction keeps
  size_t quarantines() const { return quarantines_.size(); }  // in force, kept by compaction
  const std::string& path() const { return path_; }

 private:
  FileJournal(std::string path, FileJournalOptions options);
  Status compact();
  void exportSize();
  void keepKey(const std::string& key, std::string payload);

  const std::string path_;
  const FileJournalOptions options_;
  int fd_ = -1;  // locked (LOCK_EX) for the journal's lifetime; O_APPEND once active
  bool active_ = false;
  bool keep_damaged_ = false;  // the replayed file had damage: keep it when replacing it
  uint32_t epoch_ = 0;
  uint64_t bytes_ = 0;
  uint64_t bytes_after_compaction_ = 0;
  uint64_t compactions_ = 0;
  uint64_t syncs_ = 0;
  uint64_t resumed_ = 0, torn_ranges_ = 0, damaged_ranges_ = 0;  // found at replay
  std::string buffer_;         // records appended since the last commit()
  bool needs_sync_ = false;    // buffer_ holds an admission or an epoch
  bool compact_soon_ = false;  // a new epoch began: rewrite the header after the commit
  struct Metrics {
    prometheus::Counter* admits = nullptr;
    prometheus::Counter* finishes = nullptr;
    prometheus::Counter* checkpoints = nullptr;
    prometheus::Counter* keys = nullptr;
    prometheus::Counter* quarantines = nullptr;
    prometheus::Counter* errors = nullptr;
    prometheus::Counter* compactions = nullptr;
    prometheus::Counter* syncs = nullptr;
    prometheus::Counter* damaged = nullptr;
    prometheus::Counter* torn = nullptr;
    prometheus::Gauge* bytes = nullptr;
    prometheus::Gauge* resumed = nullptr;
    prometheus::Gauge* epoch = nullptr;
    prometheus::Histogram* sync_seconds = nullptr;
  } m_;
  // Encoded payloads of what a compaction must keep.
  uint64_t next_seq_ = 0;
  std::map<uint64_t, std::string> live_;             // admission sequence -> admit payload
  std::unordered_map<uint64_t, uint64_t> live_seq_;  // job id -> admission sequence
  std::vector<std::string> finished_;                // finish payloads, oldest first
  // Checkpoint payloads of live jobs (admission sequence -> oldest first); dropped when the job
  // finishes, so they are kept by compactions only while their job is live.
  std::unordered_map<uint64_t, std::vector<std::string>> checkpoints_;
  // Key result payloads (key -> newest record), the newest keep_keys; `key_order_` holds
  // (sequence, key) oldest first, with entries of superseded records skipped by sequence.
  struct KeyRecord {
    uint64_t seq = 0;
    std::string payload;
  };
  // Quarantines in force: node id -> (sequence, payload of its newest record); a lift erases.
  // Few (each is a node caught misbehaving), so a compaction writes them all.
  std::map<std::string, std::pair<uint64_t, std::string>> quarantines_;
  uint64_t next_quarantine_seq_ = 0;
  std::unordered_map<std::string, KeyRecord> keys_;
  std::deque<std::pair<uint64_t, std::string>> key_order_;
  uint64_t next_key_seq_ = 0;
};

}  // namespace tokengate::journal
