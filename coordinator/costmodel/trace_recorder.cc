#include "coordinator/costmodel/trace_recorder.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "coordinator/costmodel/strings.h"
#include "coordinator/costmodel/trace.h"

namespace tokengate::costmodel {

using internal::cat;

StatusOr<std::unique_ptr<TraceRecorder>> TraceRecorder::open(const std::string& path,
                                                             TraceRecorderOptions options) {
  {
    std::ifstream in(path);
    std::string first;
    if (in && std::getline(in, first) && !first.empty() && first != traceCsvHeader())
      return absl::FailedPreconditionError(cat("trace '", path, "' exists with another header ('",
                                               first, "'); expected '", traceCsvHeader(), "'"));
  }
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (!f)
    return absl::PermissionDeniedError(
        cat("cannot open trace '", path, "' for appending: ", std::strerror(errno)));
  std::fseek(f, 0, SEEK_END);
  if (std::ftell(f) == 0) {
    const std::string header = traceCsvHeader() + "\n";
    if (std::fwrite(header.data(), 1, header.size(), f) != header.size() || std::fflush(f) != 0) {
      std::fclose(f);
      return absl::DataLossError(cat("cannot write to trace '", path, "'"));
    }
  }
  return std::unique_ptr<TraceRecorder>(new TraceRecorder(path, f, options));
}

TraceRecorder::TraceRecorder(std::string path, std::FILE* file, TraceRecorderOptions options)
    : path_(std::move(path)), options_(options), file_(file) {
  writer_ = std::thread([this] { loop(); });
}

TraceRecorder::~TraceRecorder() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (writer_.joinable()) writer_.join();
  (void)writeOut();
  std::fclose(file_);
}

void TraceRecorder::record(const TelemetrySample& sample) {
  std::lock_guard lock(mu_);
  if (buffer_.size() >= options_.max_buffered) {
    ++dropped_;
    return;
  }
  buffer_.push_back(sample);
}

void TraceRecorder::loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, options_.flush_interval, [this] { return stop_; });
    lock.unlock();
    (void)writeOut();
    lock.lock();
  }
}

Status TraceRecorder::writeOut() {
  std::lock_guard wlock(write_mu_);
  std::vector<TelemetrySample> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(buffer_);
  }
  if (batch.empty()) return write_error_;
  std::string text;
  text.reserve(batch.size() * 48);
  for (const auto& s : batch) {
    text += traceCsvRow(s);
    text += '\n';
  }
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
    write_error_ =
        absl::DataLossError(cat("short write to trace '", path_, "': ", std::strerror(errno)));
    std::lock_guard lock(mu_);
    dropped_ += batch.size();
    return write_error_;
  }
  std::lock_guard lock(mu_);
  written_ += batch.size();
  return write_error_;
}

Status TraceRecorder::flush() { return writeOut(); }

uint64_t TraceRecorder::written() const {
  std::lock_guard lock(mu_);
  return written_;
}

uint64_t TraceRecorder::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

}  // namespace tokengate::costmodel
