#include "coordinator/core/verifier.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tokengate::coordinator {

uint32_t verifyBasisPoints(double pct) {
  if (!(pct > 0)) return 0;  // also NaN
  if (pct >= 100) return 10000;
  return std::max<uint32_t>(1, static_cast<uint32_t>(std::lround(pct * 100)));
}

bool bitwiseEqual(const Value& a, const Value& b) {
  if (a.isDouble() && b.isDouble()) {
    const double x = a.asDouble(), y = b.asDouble();
    return std::memcmp(&x, &y, sizeof x) == 0;
  }
  if (a.isList() && b.isList()) {
    const auto& x = a.asList();
    const auto& y = b.asList();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!bitwiseEqual(x[i], y[i])) return false;
    return true;
  }
  return a == b;  // ints, bools, text, bytes, dec50 digits, null; kinds must match
}

bool Verifier::sampled(uint64_t seed, uint64_t job_id, uint32_t local, uint32_t basis_points) {
  if (basis_points == 0) return false;
  if (basis_points >= 10000) return true;
  // splitmix64 of (seed, job, index): reproducible for a seed, evenly spread over indices.
  uint64_t z = (seed ^ (job_id * 0x9E3779B97F4A7C15ULL)) + local + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  z += seed;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z % 10000 < basis_points;
}

bool Verifier::ranOn(uint64_t token, const std::string& node) const {
  auto it = records_.find(token);
  if (it == records_.end()) return false;
  for (const Vote& v : it->second.votes)
    if (v.node == node) return true;
  return false;
}

Verifier::Outcome Verifier::vote(uint64_t token, Vote vote) {
  auto [it, inserted] = records_.try_emplace(token);
  Record& r = it->second;
  if (inserted) ++counters_.sampled;
  Outcome o;
  for (const Vote& v : r.votes) {
    if (v.node == vote.node) {  // the same node again: not a second opinion
      ++counters_.reruns;
      return o;
    }
  }
  r.votes.push_back(std::move(vote));
  r.parked_at = -1;
  if (r.votes.size() == 1) {
    ++counters_.reruns;
    return o;
  }
  // The value with the most votes; a majority is two.
  size_t best = 0, best_count = 0;
  for (size_t i = 0; i < r.votes.size(); ++i) {
    size_t c = 0;
    for (const Vote& w : r.votes) c += bitwiseEqual(r.votes[i].value, w.value) ? 1 : 0;
    if (c > best_count) best = i, best_count = c;
  }
  if (best_count < r.votes.size()) r.mismatch = true;
  o.mismatch = r.mismatch;
  if (best_count >= 2) {
    o.kind = Outcome::kAccept;
    o.verified = true;
    o.value = r.votes[best].value;
    for (const Vote& w : r.votes) {
      if (bitwiseEqual(w.value, o.value))
        o.voters.push_back(w.slot);
      else
        o.liars.push_back(w.node);
    }
    if (r.mismatch)
      ++counters_.mismatched;
    else
      ++counters_.matched;
    records_.erase(it);
    return o;
  }
  if (r.votes.size() >= 3) {  // three different answers: no majority to trust
    o.kind = Outcome::kFail;
    std::string said;
    for (const Vote& w : r.votes) said += fmt::format("{}{}", said.empty() ? "" : ", ", w.node);
    o.error = absl::DataLossError(fmt::format(
        "verification failed: nodes {} returned {} different results", said, r.votes.size()));
    ++counters_.mismatched;
    ++counters_.failed;
    records_.erase(it);
    return o;
  }
  ++counters_.reruns;  // two that differ: a third node breaks the tie
  return o;
}

void Verifier::park(uint64_t token, Nanos now) {
  auto it = records_.find(token);
  if (it != records_.end() && it->second.parked_at < 0) it->second.parked_at = now;
}

void Verifier::unpark(uint64_t token) {
  auto it = records_.find(token);
  if (it != records_.end()) it->second.parked_at = -1;
}

Verifier::Outcome Verifier::expire(Record& r) {
  Outcome o;
  o.mismatch = r.mismatch;
  if (r.votes.size() == 1) {
    o.kind = Outcome::kAccept;
    o.value = r.votes[0].value;
    o.voters.push_back(r.votes[0].slot);
    ++counters_.unverifiable;
    return o;
  }
  o.kind = Outcome::kFail;
  if (r.votes.size() >= 2) {
    o.error = absl::DataLossError(fmt::format(
        "verification mismatch: nodes {} and {} returned different results and no third node "
        "ran it within {} ms to break the tie",
        r.votes[0].node, r.votes[1].node, config_.wait / kMillis));
    ++counters_.mismatched;
  } else {
    o.error = absl::DataLossError("verification lost every vote");
  }
  ++counters_.failed;
  return o;
}

std::vector<uint64_t> Verifier::forgetNode(const std::string& node) {
  std::vector<uint64_t> emptied;
  for (auto it = records_.begin(); it != records_.end();) {
    auto& votes = it->second.votes;
    const size_t before = votes.size();
    std::erase_if(votes, [&](const Vote& v) { return v.node == node; });
    if (votes.size() != before && votes.empty()) {
      emptied.push_back(it->first);
      it = records_.erase(it);
      continue;
    }
    ++it;
  }
  return emptied;
}

void Verifier::dropJob(uint64_t job_id) {
  records_.erase(records_.lower_bound(job_id << 32), records_.lower_bound((job_id + 1) << 32));
}

}  // namespace tokengate::coordinator
