// IdempotencyIndex: which token owns each idempotency key, the outcome once it finished, and
// the duplicates ("aliases") waiting for it. Owned by CoordinatorCore; loop thread only.
//
// How a keyed token moves through it: claim() makes the first token with a key its original
// (it runs) and every later one an alias of it (it does not run). When the original finishes,
// finished() hands back its aliases to complete with the same value; when it fails,
// failed() frees the key (the next submission may run it again) and hands back the aliases to
// fail. An alias claimed after its original already finished is settled right after its
// job's admission: takeSettled() returns exactly those, so admission costs the number of keys
// the job uses, never the number of keys the index holds.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "common/value.h"

namespace tokengate::coordinator {

class IdempotencyIndex {
 public:
  explicit IdempotencyIndex(size_t max_keys) : max_keys_(max_keys) {}

  // Registers `token` under `key`. True: the key is new and `token` is its original (run it).
  // False: `token` is an alias, settled later by finished()/failed() or takeSettled().
  bool claim(const std::string& key, uint64_t token);

  // Aliases of an original that already finished, with its outcome.
  struct Settled {
    std::vector<uint64_t> aliases;
    Status status;
    Value value;
  };
  // The aliases claimed against already-finished keys since the last call.
  std::vector<Settled> takeSettled();

  // `token` completed with `value`. Returns the aliases waiting on it (none when `token` is
  // not an original). The key stays, answering later duplicates with `value`.
  std::vector<uint64_t> finished(uint64_t token, const Value& value);
  // `token` failed or was cancelled. A failed original does not poison its key: the key is
  // freed and the aliases waiting on it are returned (to fail with the same cause).
  std::vector<uint64_t> failed(uint64_t token);

  // Restart recovery: `key` finished with `value` (its original was `token`), as if claimed and
  // finished now. Later claims of it are aliases settled with `value`. A key already present
  // is left as it is.
  void restore(const std::string& key, uint64_t token, Value value);

  size_t size() const { return keys_.size(); }
  // Key entries looked at by claim()/takeSettled() so far (work, for tests and benchmarks).
  uint64_t work() const { return work_; }

 private:
  struct Entry {
    uint64_t token = 0;  // the original
    bool finished = false;
    Status status;
    Value value;
    std::vector<uint64_t> aliases;  // tokens waiting on the original
  };
  void evictOldest();

  size_t max_keys_;
  std::unordered_map<std::string, Entry> keys_;
  std::deque<std::string> order_;                     // admission order, for the cap
  std::unordered_map<uint64_t, std::string> key_of_;  // original token -> key, while live
  std::vector<std::string> settle_;                   // finished keys that got new aliases
  uint64_t work_ = 0;
};

}  // namespace tokengate::coordinator
