#include "node/link/result_batcher.h"

#include <fmt/format.h>

#include <limits>

#include "node/link/frames.h"

namespace tokengate::node {

void ResultBatcher::take(uint64_t session, std::vector<TaskResult>& results,
                         std::vector<ReturnedTask>& returned) {
  if (session != 0) {
    if (pending_.empty()) {
      // Common case: take the whole vector, then drop other sessions' results.
      pending_.swap(results);
      std::erase_if(pending_, [&](const TaskResult& r) { return r.session != session; });
    } else {
      for (auto& r : results)
        if (r.session == session) pending_.push_back(std::move(r));
    }
    for (const auto& t : returned)
      if (t.session == session) returned_.push_back(t);
  }
  results.clear();
  returned.clear();
}

void ResultBatcher::clear() {
  pending_.clear();
  returned_.clear();
}

bool ResultBatcher::due(Nanos now, bool executor_idle) const {
  if (empty()) return false;
  if (executor_idle || size() >= config_.max_results) return true;
  return now - last_send_ >= config_.busy_window_ns;
}

Nanos ResultBatcher::dueAt() const {
  if (empty()) return std::numeric_limits<Nanos>::max();
  return last_send_ + config_.busy_window_ns;
}

size_t ResultBatcher::flush(uint64_t session, size_t max_frame_bytes, Nanos now,
                            const std::function<void(std::string)>& send, bool packed,
                            bool packed_decs) {
  if (empty()) return 0;
  const size_t budget = max_frame_bytes > 4096 ? max_frame_bytes - 2048 : 2048;
  for (auto& r : pending_) {
    const size_t size = resultWireBytes(r);
    if (size <= budget) continue;
    r.outcome = absl::ResourceExhaustedError(
        fmt::format("result of ~{} bytes exceeds the coordinator's frame limit of {} bytes", size,
                    max_frame_bytes));
  }
  size_t frames = 0, ri = 0, ti = 0;
  while (ri < pending_.size() || ti < returned_.size()) {
    size_t bytes = kResultFrameOverhead, nr = 0;
    while (ri + nr < pending_.size() && nr < config_.max_results) {
      const size_t b = resultWireBytes(pending_[ri + nr]);
      if (nr > 0 && bytes + b > budget) break;
      bytes += b;
      ++nr;
    }
    size_t nt = 0;
    while (ti + nt < returned_.size() && nt < config_.max_results &&
           bytes + kReturnedWireBytes <= budget) {
      bytes += kReturnedWireBytes;
      ++nt;
    }
    send(resultBatchFrame(session, std::span(pending_).subspan(ri, nr),
                          std::span(returned_).subspan(ti, nt), &scratch_, packed, packed_decs));
    ++frames;
    ri += nr;
    ti += nt;
  }
  clear();
  last_send_ = now;
  return frames;
}

}  // namespace tokengate::node
