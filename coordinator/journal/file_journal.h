// FileJournal: the coordinator's job journal on local disk (`--journal PATH`).
//
// An append-only file of records (schema/tokengate.capnp JournalRecord), each framed as
// [u32 payload bytes][u32 CRC-32 of the payload][payload: one Cap'n Proto message, flat array].
// admitted() writes and fdatasync()s before returning, so an acknowledged job survives a crash
// of the coordinator process or the machine; finished() writes without waiting for the disk.
//
// open() replays the file: jobs admitted and not finished come back in admission order, the
// newest `keep_finished` finished jobs with their outputs; a torn or corrupt tail (a crash in
// the middle of a write) ends the replay and is cut off. It then compacts: the live records
// are written to PATH.tmp, synced and renamed over PATH, so the file holds only what a restart
// needs. At run time the file is compacted the same way once it has grown by `compact_bytes`
// since the last compaction (live specs are kept in memory for that).
//
// Threads: one (the coordinator loop thread) after open().
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/job.h"
#include "common/status.h"
#include "coordinator/control/control.h"
#include "coordinator/core/journal.h"

namespace tokengate::journal {

struct FileJournalOptions {
  size_t keep_finished = 1000;  // finished jobs kept across restarts (status + outputs)
  bool sync = true;             // fdatasync each admission (false: tests of the format only)
  uint64_t compact_bytes = 64ull << 20;
  // Exports tokengate_journal_* metrics when set.
  std::shared_ptr<prometheus::Registry> registry;
};

struct Replay {
  struct Admitted {
    uint64_t id = 0;
    JobSpec spec;
  };
  std::vector<Admitted> unfinished;          // admission order
  std::vector<control::JobStatus> finished;  // oldest first, at most keep_finished
  uint64_t records = 0;                      // good records read
  uint64_t discarded_bytes = 0;              // torn / corrupt tail cut off
  std::string discarded_reason;              // why the tail was cut ("" if none)
};

class FileJournal final : public coordinator::JobJournal {
 public:
  // Replays `path` into `replay` (a missing file is an empty journal), compacts it and opens it
  // for appending. Errors: the file cannot be read, written or renamed (with the path and
  // errno text).
  static StatusOr<std::unique_ptr<FileJournal>> open(const std::string& path,
                                                     FileJournalOptions options, Replay* replay);
  ~FileJournal() override;
  FileJournal(const FileJournal&) = delete;
  FileJournal& operator=(const FileJournal&) = delete;

  Status admitted(uint64_t job_id, const JobSpec& spec) override;
  void finished(const control::JobStatus& status) override;

  uint64_t bytes() const { return bytes_; }
  uint64_t compactions() const { return compactions_; }

 private:
  FileJournal(std::string path, FileJournalOptions options);
  Status append(const std::string& payload, bool sync);
  // Rewrites the file from live_ and finished_ (tmp + fsync + rename + dir fsync).
  Status compact();

  const std::string path_;
  const FileJournalOptions options_;
  int fd_ = -1;
  uint64_t bytes_ = 0;
  uint64_t bytes_after_compaction_ = 0;
  uint64_t compactions_ = 0;
  struct Metrics {
    prometheus::Counter* admits = nullptr;
    prometheus::Counter* finishes = nullptr;
    prometheus::Counter* errors = nullptr;
    prometheus::Counter* compactions = nullptr;
    prometheus::Gauge* bytes = nullptr;
    prometheus::Gauge* resumed = nullptr;
    prometheus::Histogram* sync_seconds = nullptr;
  } m_;
  void exportSize();
  // Encoded records of what a compaction must keep.
  std::map<uint64_t, std::string> live_;  // job id -> admit record payload
  std::vector<std::string> finished_;     // finish record payloads, oldest first
};

}  // namespace tokengate::journal
