// Annotated mutex for tg_costmodel. A thin wrapper over std::mutex rather than absl::Mutex:
// Debian's libabsl is not built with ThreadSanitizer, so TSAN cannot see absl::Mutex
// synchronisation and reports false races, while pthread mutexes are intercepted. The wrapper
// keeps the Clang thread-safety annotations (ABSL_GUARDED_BY and friends).
#pragma once

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace tokengate::costmodel::internal {

class ABSL_LOCKABLE Mutex {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* mu_;
};

}  // namespace tokengate::costmodel::internal
