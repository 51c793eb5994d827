#include "coordinator/costmodel/telemetry_window.h"

#include <algorithm>
#include <cassert>

namespace tokengate::costmodel {

TelemetryWindow::TelemetryWindow(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {
  ring_.reserve(std::min<size_t>(capacity_, 1 << 16));
}

void TelemetryWindow::add(const TelemetrySample& sample) {
  internal::MutexLock lock(&mu_);
  if (ring_.size() < capacity_) {
    ring_.push_back(sample);
  } else {
    ring_[next_] = sample;
    next_ = (next_ + 1) % capacity_;
  }
  ++total_;
}

void TelemetryWindow::addBatch(std::span<const TelemetrySample> samples) {
  internal::MutexLock lock(&mu_);
  for (const auto& s : samples) {
    if (ring_.size() < capacity_) {
      ring_.push_back(s);
    } else {
      ring_[next_] = s;
      next_ = (next_ + 1) % capacity_;
    }
  }
  total_ += samples.size();
}

std::vector<TelemetrySample> TelemetryWindow::newest(size_t n, uint64_t* total) const {
  internal::MutexLock lock(&mu_);
  if (total) *total = total_;
  n = std::min(n, ring_.size());
  std::vector<TelemetrySample> out;
  out.reserve(n);
  // The newest sample sits just before next_ (ring full) or at the end (partial ring, next_ 0).
  const size_t size = ring_.size();
  for (size_t k = n; k > 0; --k) out.push_back(ring_[(next_ + size - k) % size]);
  return out;
}

std::vector<TelemetrySample> TelemetryWindow::snapshot(uint64_t* total) const {
  internal::MutexLock lock(&mu_);
  if (total) *total = total_;
  std::vector<TelemetrySample> out;
  out.reserve(ring_.size());
  // Until the ring is full next_ stays 0, so this is also correct for a partial ring.
  out.insert(out.end(), ring_.begin() + static_cast<ptrdiff_t>(next_), ring_.end());
  out.insert(out.end(), ring_.begin(), ring_.begin() + static_cast<ptrdiff_t>(next_));
  return out;
}

size_t TelemetryWindow::size() const {
  internal::MutexLock lock(&mu_);
  return ring_.size();
}

uint64_t TelemetryWindow::totalAdded() const {
  internal::MutexLock lock(&mu_);
  return total_;
}

}  // namespace tokengate::costmodel
