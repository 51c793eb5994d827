// TraceRecorder: appends telemetry samples to a CSV trace (the format of writeTraceCsv /
// traceCsvRow, readable by `tgctl model train --trace FILE`) from a running coordinator
// (`--trace-out PATH`).
//
// record() only appends to an in-memory buffer (bounded: beyond `max_buffered` samples waiting
// to be written, new ones are dropped and counted); a writer thread formats and appends them to
// the file every `flush_interval`. So the dispatch thread never formats a row or touches the
// file.
//
// Ownership: owned by the coordinator wiring (LearnedBalancing). Threads: record() / counters
// from any thread; flush() and the destructor from any thread but the writer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "coordinator/costmodel/features.h"

namespace tokengate::costmodel {

struct TraceRecorderOptions {
  size_t max_buffered = 200'000;                  // samples waiting for the writer
  std::chrono::milliseconds flush_interval{250};  // writer wake-up period
};

class TraceRecorder {
 public:
  // Opens `path` for appending; writes the CSV header if the file is new or empty. An existing
  // non-empty file must start with the canonical header (FailedPrecondition otherwise: rows of
  // another layout would be appended under it). PermissionDenied if it cannot be opened.
  static StatusOr<std::unique_ptr<TraceRecorder>> open(const std::string& path,
                                                       TraceRecorderOptions options = {});
  ~TraceRecorder();  // writes what is buffered, stops the writer, closes the file
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;

  void record(const TelemetrySample& sample);
  // Writes everything recorded so far before returning.
  Status flush();

  uint64_t written() const;
  uint64_t dropped() const;
  const std::string& path() const { return path_; }

 private:
  TraceRecorder(std::string path, std::FILE* file, TraceRecorderOptions options);
  void loop();
  Status writeOut();  // drains the buffer into the file (write_mu_)

  const std::string path_;
  const TraceRecorderOptions options_;
  std::mutex write_mu_;  // file and write_error_
  std::FILE* file_;
  Status write_error_;
  mutable std::mutex mu_;  // buffer_, counters, stop_
  std::condition_variable wake_;
  std::vector<TelemetrySample> buffer_;
  uint64_t written_ = 0, dropped_ = 0;
  bool stop_ = false;
  std::thread writer_;
};

}  // namespace tokengate::costmodel
