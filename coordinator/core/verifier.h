// Verifier: verified execution (`verify: N%`). Owned by CoordinatorCore; loop thread only.
//
// How a sampled token moves through it: sampled() decides, from a secret seed, the job id and
// the token's index alone (so a run is reproducible given the seed), whether a token is
// verified. The seed is secret (random per coordinator process unless set): a node that knew it
// could compute which of its tokens are checked and lie only on the others. The first result of a
// sampled token is not accepted: it becomes a vote, and the token runs again on a node that has
// not voted yet (the Dispatcher's verify queue asks ranOn() which nodes to skip). Each further
// result is another vote; vote() decides:
//   - two votes that are bitwise equal: the value is accepted as verified (matched);
//   - two that differ: a third node breaks the tie (rerun); when it agrees with one of them,
//     that value is accepted and the odd node is named a liar (the core quarantines it and
//     re-runs its unverified work, JobTable::reopen); when all three differ, the token fails
//     with DATA_LOSS and nobody is quarantined (no majority to trust).
// A token that cannot find a node it has not run on is parked; after `wait` (expired()) one
// vote is accepted unverified (counted `unverifiable`), two differing votes fail the token with
// DATA_LOSS naming both nodes (two nodes cannot tell which of them lies; nobody is
// quarantined). The record of an open token holds its votes until decided; dropJob() forgets
// a finished job's records.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "common/value.h"

namespace tokengate::coordinator {

// Percentage 0..100 as basis points (0..10000); out-of-range values are clamped.
uint32_t verifyBasisPoints(double pct);

// Bitwise equality: the same kind and the same bits (doubles compared by their bit patterns,
// so NaN equals the same NaN and -0 differs from +0; dec50 by digits; lists element-wise).
bool bitwiseEqual(const Value& a, const Value& b);

class Verifier {
 public:
  struct Config {
    Nanos wait = 10 * kSeconds;  // a parked token's wait for a node that has not run it
  };
  struct Vote {
    std::string node;  // node id
    uint32_t slot = 0;
    Value value;
  };
  struct Outcome {
    enum Kind : uint8_t { kRerun, kAccept, kFail } kind = kRerun;
    Value value;                     // kAccept
    bool verified = false;           // kAccept: a second node agreed (else unverifiable)
    bool mismatch = false;           // votes disagreed at some point
    std::vector<std::string> liars;  // kAccept after a tie-break: the odd node(s)
    std::vector<uint32_t> voters;    // slots of the nodes whose votes the outcome kept
    Status error;                    // kFail
  };
  struct Counters {
    uint64_t sampled = 0;       // tokens opened for verification
    uint64_t reruns = 0;        // verification runs asked for (second and third runs)
    uint64_t matched = 0;       // accepted with two equal votes, no disagreement
    uint64_t mismatched = 0;    // tokens whose votes disagreed (resolved or failed)
    uint64_t unverifiable = 0;  // accepted on one vote: no other node within `wait`
    uint64_t failed = 0;        // failed with DATA_LOSS (no majority)
  };

  explicit Verifier(Config config) : config_(config) {}

  // Whether token `local` of job `job_id` is verified at `basis_points` / 10000 under `seed`.
  static bool sampled(uint64_t seed, uint64_t job_id, uint32_t local, uint32_t basis_points);

  bool empty() const { return records_.empty(); }
  size_t open() const { return records_.size(); }
  bool isOpen(uint64_t token) const { return records_.contains(token); }
  // Whether `node` already voted on `token` (its re-run must go elsewhere).
  bool ranOn(uint64_t token, const std::string& node) const;

  // A result of `token` from `vote.node`. Opens the record on the first vote. A second vote from
  // a node that already voted is ignored (kRerun).
  Outcome vote(uint64_t token, Vote vote);

  // `token` found no node it has not run on: parked from `now` (the first call counts).
  void park(uint64_t token, Nanos now);
  // `token` was placed again: it is no longer waiting.
  void unpark(uint64_t token);
  // Decides parked tokens that waited `wait` or longer: `fn(token, Outcome)` (kAccept
  // unverified or kFail). Their records are closed.
  template <typename Fn>
  void expired(Nanos now, Fn&& fn) {
    for (auto it = records_.begin(); it != records_.end();) {
      Record& r = it->second;
      if (r.parked_at < 0 || now - r.parked_at < config_.wait) {
        ++it;
        continue;
      }
      const uint64_t token = it->first;
      Outcome o = expire(r);
      it = records_.erase(it);
      fn(token, o);
    }
  }

  // `node` was found lying: its votes on open tokens no longer count. Returns the tokens whose
  // records it emptied (they are decided afresh by their next result).
  std::vector<uint64_t> forgetNode(const std::string& node);
  // Closes a token's record (it failed or was cancelled) or every record of a finished job.
  void drop(uint64_t token) { records_.erase(token); }
  void dropJob(uint64_t job_id);

  const Counters& counters() const { return counters_; }
  Nanos wait() const { return config_.wait; }

 private:
  struct Record {
    std::vector<Vote> votes;
    bool mismatch = false;
    Nanos parked_at = -1;
  };
  Outcome expire(Record& r);

  Config config_;
  std::map<uint64_t, Record> records_;  // by token id (job << 32 | local): dropJob is a range
  Counters counters_;
};

}  // namespace tokengate::coordinator
