#include "coordinator/core/job_table.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>

namespace tokengate::coordinator {

using control::JobState;

uint32_t argCount(const TokenSpec& spec) {
  uint32_t n = 0;
  for (const auto& a : spec.args) n += a.kind == Arg::Kind::kRefRange ? a.count : 1;
  return n;
}

JobRec* JobTable::find(uint64_t job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

const JobRec* JobTable::find(uint64_t job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

JobRec& JobTable::add(uint64_t job_id, uint64_t incarnation, std::string name, Nanos now) {
  ++admitted_;
  auto job = std::make_unique<JobRec>();
  job->seq = admitted_ - 1;
  job->id = job_id;
  job->incarnation = incarnation;
  job->name = std::move(name);
  job->admitted_at = now;
  JobRec& ref = *job;
  jobs_[job_id] = std::move(job);
  return ref;
}

void JobTable::layOut(JobRec& job) {
  uint32_t n = 0;
  for (const SpecRec& s : job.specs) n += s.spec.repeat;
  job.tokens.resize(n);
  // Per-token spec index and dependency counts (CSR of dependents).
  std::vector<uint32_t> dep_count(n + 1, 0);
  for (uint32_t si = 0; si < job.specs.size(); ++si) {
    const SpecRec& s = job.specs[si];
    for (uint32_t r = 0; r < s.spec.repeat; ++r) {
      TokenRec& t = job.tokens[s.first + r];
      t.spec = si;
      forEachRef(s.spec, r, [&](uint32_t j) {
        ++dep_count[j];
        ++t.pending;
      });
    }
  }
  job.dep_offset.resize(n + 1);
  uint32_t acc = 0;
  for (uint32_t i = 0; i < n; ++i) {
    job.dep_offset[i] = acc;
    job.tokens[i].consumers = dep_count[i];
    acc += dep_count[i];
  }
  job.dep_offset[n] = acc;
  job.deps.resize(acc);
  std::vector<uint32_t> fill(job.dep_offset.begin(), job.dep_offset.end() - 1);
  for (const SpecRec& s : job.specs) {
    for (uint32_t r = 0; r < s.spec.repeat; ++r) {
      const uint32_t i = s.first + r;
      forEachRef(s.spec, r, [&](uint32_t j) { job.deps[fill[j]++] = i; });
    }
  }
  // Outputs: flagged tokens, else the job's sinks (bounded).
  for (const SpecRec& s : job.specs) {
    for (uint32_t r = 0; r < s.spec.repeat; ++r) {
      const uint32_t i = s.first + r;
      if (job.any_output ? s.keep_result : job.tokens[i].consumers == 0) {
        if (job.outputs.size() < kMaxSinkOutputs) job.outputs.push_back(i);
      }
    }
  }
  live_tokens_ += n;
  ++running_;
  running_seqs_.insert(job.seq);
}

void JobTable::setResult(JobRec& job, TokenRec& t, const Value& v) {
  if (v.isInt()) {
    t.tag = kInt;
    t.val = static_cast<uint64_t>(v.asInt());
  } else if (v.isDouble()) {
    t.tag = kDouble;
    double d = v.asDouble();
    std::memcpy(&t.val, &d, sizeof d);
  } else if (v.isBool()) {
    t.tag = kBool;
    t.val = v.asBool();
  } else if (v.isNull()) {
    t.tag = kNull;
  } else {
    t.tag = kBoxed;
    if (!job.boxed_free.empty()) {
      t.val = job.boxed_free.back();
      job.boxed_free.pop_back();
      job.boxed[t.val] = v;
    } else {
      t.val = job.boxed.size();
      job.boxed.push_back(v);
    }
  }
}

Value JobTable::getResult(const JobRec& job, const TokenRec& t) {
  switch (t.tag) {
    case kInt:
      return Value(static_cast<int64_t>(t.val));
    case kDouble: {
      double d;
      std::memcpy(&d, &t.val, sizeof d);
      return Value(d);
    }
    case kBool:
      return Value(t.val != 0);
    case kBoxed:
      return job.boxed[t.val];
    default:
      return Value();
  }
}

void JobTable::freeResult(JobRec& job, TokenRec& t) {
  if (t.tag == kBoxed) {
    job.boxed[t.val] = Value();
    job.boxed_free.push_back(static_cast<uint32_t>(t.val));
  }
  t.tag = kNoValue;
}

bool JobTable::isOutput(const JobRec& job, uint32_t local) {
  const SpecRec& s = job.specs[job.tokens[local].spec];
  if (job.any_output) return s.keep_result;
  return job.dep_offset[local] == job.dep_offset[local + 1];
}

std::string JobTable::outputName(const JobRec& job, uint32_t local) {
  const SpecRec& sp = job.specs[job.tokens[local].spec];
  if (sp.spec.name.empty()) return sp.spec.op;
  return sp.spec.repeat > 1 ? fmt::format("{}[{}]", sp.spec.name, local - sp.first) : sp.spec.name;
}

TokenInfo JobTable::tokenInfo(const JobRec& job, uint32_t local) {
  const TokenRec& t = job.tokens[local];
  const SpecRec& s = job.specs[t.spec];
  TokenInfo info;
  info.id = tokenId(job.id, local);
  info.op = s.op;
  info.declared = s.weight;
  info.arg_count = argCount(s.spec);
  info.arg_bytes = info.arg_count * 8;
  info.first_arg = std::numeric_limits<double>::quiet_NaN();
  for (const auto& a : s.spec.args) {
    if (a.kind != Arg::Kind::kValue) continue;
    if (a.value.isInt())
      info.first_arg = static_cast<double>(a.value.asInt() + a.step * (local - s.first));
    else if (a.value.isDouble())
      info.first_arg = a.value.asDouble();
    else
      info.arg_bytes += static_cast<uint32_t>(a.value.byteSize());
    break;
  }
  return info;
}

void JobTable::retired(JobRec& job, uint32_t local) {
  const SpecRec& s = job.specs[job.tokens[local].spec];
  forEachRef(s.spec, local - s.first, [&](uint32_t j) {
    TokenRec& in = job.tokens[j];
    if (in.consumers && --in.consumers == 0 && !job.specs[in.spec].keep_result) freeResult(job, in);
  });
  --live_tokens_;
}

bool JobTable::finishIfDone(JobRec& job, Nanos now) {
  if (job.state != JobState::kRunning) return false;
  if (job.finishedTokens() < job.tokens.size()) return false;
  job.finished_at = now;
  --running_;
  running_seqs_.erase(job.seq);
  watched_.erase(job.id);
  finished_ids_.push_back(job.id);
  job.state = job.failed > 0      ? JobState::kFailed
              : job.cancelled > 0 ? JobState::kCancelled
                                  : JobState::kSucceeded;
  return true;
}

void JobTable::remember(control::JobStatus status) {
  finished_.push_back(std::move(status));
  while (finished_.size() > finished_kept_) finished_.pop_front();
}

void JobTable::reap() {
  for (uint64_t id : finished_ids_) jobs_.erase(id);
  finished_ids_.clear();
}

void JobTable::watch(JobRec& job, const std::string& peer) {
  if (std::find(job.watchers.begin(), job.watchers.end(), peer) == job.watchers.end())
    job.watchers.push_back(peer);
  if (job.state == JobState::kRunning) watched_.insert(job.id);
}

control::JobStatus JobTable::statusOf(const JobRec& job, bool with_outputs, Nanos now) const {
  control::JobStatus s;
  s.id = job.id;
  s.incarnation = job.incarnation;
  s.name = job.name;
  s.state = job.state;
  s.total = job.tokens.size();
  s.done = job.done;
  s.failed = job.failed;
  s.cancelled = job.cancelled;
  s.running = job.running;
  s.wall_ns = (job.finished_at ? job.finished_at : now) - job.admitted_at;
  s.verify_pct = job.verify_bp / 100.0;
  s.verified = job.verified;
  s.unverifiable = job.unverifiable;
  s.mismatched = job.mismatched;
  s.reopened = job.reopened;
  if (with_outputs) {
    for (uint32_t i : job.outputs) {
      control::OutputResult o;
      o.index = i;
      const TokenRec& t = job.tokens[i];
      o.name = outputName(job, i);
      if (t.state == kDone) {
        o.value = getResult(job, t);
      } else if (auto e = job.errors.find(i); e != job.errors.end()) {
        o.status = e->second;
      } else if (t.state == kFailed || t.state == kCancelled) {
        o.status = job.first_error;
      } else {
        o.status = absl::UnavailableError("not finished");
      }
      s.outputs.push_back(std::move(o));
    }
  }
  return s;
}

StatusOr<control::JobStatus> JobTable::status(uint64_t job_id, bool with_outputs, Nanos now) const {
  if (const JobRec* j = find(job_id)) return statusOf(*j, with_outputs, now);
  for (auto it = finished_.rbegin(); it != finished_.rend(); ++it) {
    if (it->id != job_id) continue;
    auto s = *it;
    if (!with_outputs) s.outputs.clear();
    return s;
  }
  return absl::NotFoundError(fmt::format("no job {}", job_id));
}

std::vector<control::JobStatus> JobTable::list(Nanos now) const {
  std::vector<control::JobStatus> out;
  for (const auto& f : finished_) {
    out.push_back(f);
    out.back().outputs.clear();
  }
  for (const auto& [id, j] : jobs_)
    if (j->state == JobState::kRunning) out.push_back(statusOf(*j, false, now));
  return out;
}

}  // namespace tokengate::coordinator
