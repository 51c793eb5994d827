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
//
// Layout (why not an unordered_map<string, Entry>): with 100,000+ keys a node-based map costs
// several cache misses per admission (bucket, node, next node's hash, each on its own line) and
// a rehash walks every node, so keyed admission slowed down as keys accumulated even though the
// number of steps did not grow. Entries live in admission order in large chunks (the cap evicts
// from the front, no second copy of each key), and the lookup table is an open-addressing array of
// {full hash, entry number} pairs, four to a cache line: claiming a new key reads one slot line
// (a hash mismatch never touches an entry), and growing the table never touches the entries.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
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

  size_t size() const { return live_; }
  // Key entries looked at by claim()/takeSettled() so far (work, for tests and benchmarks).
  uint64_t work() const { return work_; }

 private:
  struct Entry {
    const char* key = nullptr;  // in key_blocks_
    uint32_t key_size = 0;
    bool live = true;  // false: freed by failed(), no slot points here; dropped at the front
    bool finished = false;
    uint64_t hash = 0;
    uint64_t token = 0;  // the original
    Status status;
    Value value;
    std::vector<uint64_t> aliases;  // tokens waiting on the original
    std::string_view keyView() const { return {key, key_size}; }
  };
  // One lookup-table slot: the key's full hash (compared before the entry is touched) and its
  // entry's sequence number + 1 (0: empty).
  struct Slot {
    uint64_t hash = 0;
    uint64_t ref = 0;
  };
  // Key bytes, appended in admission order; a block is freed once every entry using it is gone.
  struct KeyBlock {
    std::unique_ptr<char[]> bytes;
    size_t size = 0, used = 0;
    uint64_t end_seq = 0;  // one past the newest entry whose key is here
  };
  // Entries and key bytes live in large blocks rather than one small heap object per key: with
  // 100,000+ keys held, per-key allocations interleaved with the loop's short-lived ones
  // fragmented the heap and made every later malloc slower.
  static constexpr size_t kChunkEntries = 1024;
  static constexpr size_t kKeyBlockBytes = 256 * 1024;

  Entry& entry(uint64_t seq) {
    const uint64_t i = seq - chunk_base_;
    return chunks_[i / kChunkEntries][i % kChunkEntries];
  }
  Entry& appendEntry(std::string_view key);  // at sequence number end_seq_ (then incremented)
  void popFront();
  // Sequence number of the live entry for `key`, or -1.
  int64_t lookup(std::string_view key, uint64_t hash);
  void insertSlot(uint64_t hash, uint64_t seq);
  void eraseSlot(uint64_t hash, uint64_t seq);  // backward-shift deletion, no tombstones
  void grow();
  void evictOldest();

  size_t max_keys_;
  // Entries in admission order: sequence numbers first_seq_ .. end_seq_ - 1, in chunks of
  // kChunkEntries starting at chunk_base_.
  std::deque<std::unique_ptr<Entry[]>> chunks_;
  uint64_t chunk_base_ = 0, first_seq_ = 0, end_seq_ = 0;
  std::deque<KeyBlock> key_blocks_;
  size_t live_ = 0;          // entries with live == true (the keys held)
  std::vector<Slot> slots_;  // power-of-two size, at most half full
  size_t used_slots_ = 0;
  std::unordered_map<uint64_t, uint64_t> seq_of_;  // original token -> sequence, while running
  std::vector<uint64_t> settle_;                   // finished entries that got new aliases
  uint64_t work_ = 0;
};

}  // namespace tokengate::coordinator
