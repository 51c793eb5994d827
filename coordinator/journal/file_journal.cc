#include "coordinator/journal/file_journal.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>

namespace tokengate::journal {

namespace {

Status ioError(const std::string& what, const std::string& path) {
  return absl::InternalError(fmt::format("journal {}: {}: {}", path, what, std::strerror(errno)));
}

Status writeAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ioError("write", path);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

Status readAll(int fd, std::string& out, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ioError("stat", path);
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ioError("read", path);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return absl::OkStatus();
}

// Opens (creating if missing) and exclusively locks `path`. Retries when the file was replaced
// between open and lock (the owner's compaction renamed a new file over it).
StatusOr<int> openLocked(const std::string& path) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return ioError("cannot open", path);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK)
        return absl::FailedPreconditionError(fmt::format(
            "journal {} is locked by another process (is another coordinator using it?); "
            "refusing to start, the file is left untouched",
            path));
      errno = err;
      return ioError("cannot lock", path);
    }
    struct stat held {
    }, named{};
    if (::fstat(fd, &held) == 0 && ::stat(path.c_str(), &named) == 0 &&
        held.st_ino == named.st_ino && held.st_dev == named.st_dev)
      return fd;
    ::close(fd);  // locked a file that is no longer `path`: try the new one
  }
  return absl::UnavailableError(fmt::format("journal {}: replaced while locking it", path));
}

void syncDir(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

int64_t wallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string stamped(const std::string& path, const char* what) {
  return fmt::format("{}.{}-{}", path, what,
                     std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count());
}

}  // namespace

FileJournal::FileJournal(std::string path, FileJournalOptions options)
    : path_(std::move(path)), options_(std::move(options)) {}

void FileJournal::exportMetrics(prometheus::Registry& reg) {
  auto& records = prometheus::BuildCounter()
                      .Name("tokengate_journal_records_total")
                      .Help("job journal records written, by kind")
                      .Register(reg);
  m_.admits = &records.Add({{"kind", "admitted"}});
  m_.finishes = &records.Add({{"kind", "finished"}});
  m_.checkpoints = &records.Add({{"kind", "checkpoint"}});
  m_.keys = &records.Add({{"kind", "key"}});
  m_.quarantines = &records.Add({{"kind", "quarantine"}});
  m_.errors = &prometheus::BuildCounter()
                   .Name("tokengate_journal_errors_total")
                   .Help("job journal writes that failed (admissions refused, finishes lost)")
                   .Register(reg)
                   .Add({});
  m_.compactions = &prometheus::BuildCounter()
                        .Name("tokengate_journal_compactions_total")
                        .Help("job journal rewrites (at start and when grown)")
                        .Register(reg)
                        .Add({});
  m_.syncs = &prometheus::BuildCounter()
                  .Name("tokengate_journal_syncs_total")
                  .Help("fdatasync calls (group commits: admissions per sync = records/syncs)")
                  .Register(reg)
                  .Add({});
  auto& damage = prometheus::BuildCounter()
                     .Name("tokengate_journal_damage_total")
                     .Help("damaged ranges found at replay: skipped mid-file, or a torn tail cut")
                     .Register(reg);
  m_.damaged = &damage.Add({{"kind", "skipped"}});
  m_.torn = &damage.Add({{"kind", "tail"}});
  m_.bytes = &prometheus::BuildGauge()
                  .Name("tokengate_journal_bytes")
                  .Help("size of the job journal file")
                  .Register(reg)
                  .Add({});
  m_.resumed = &prometheus::BuildGauge()
                    .Name("tokengate_journal_resumed_jobs")
                    .Help("unfinished jobs found in the journal at start (resumed)")
                    .Register(reg)
                    .Add({});
  m_.epoch = &prometheus::BuildGauge()
                  .Name("tokengate_journal_epoch")
                  .Help("job id epoch being handed out (job id >> 20)")
                  .Register(reg)
                  .Add({});
  m_.sync_seconds =
      &prometheus::BuildHistogram()
           .Name("tokengate_journal_sync_seconds")
           .Help("fdatasync time per group commit (the admissions in it wait for it)")
           .Register(reg)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25});
  m_.resumed->Set(static_cast<double>(resumed_));
  m_.torn->Increment(static_cast<double>(torn_ranges_));
  m_.damaged->Increment(static_cast<double>(damaged_ranges_));
  m_.epoch->Set(active_ ? epoch_ : 0);
  exportSize();
}

void FileJournal::exportSize() {
  if (m_.bytes) m_.bytes->Set(static_cast<double>(bytes_));
}

FileJournal::~FileJournal() {
  if (fd_ >= 0) {
    if (active_) (void)commit();
    ::close(fd_);  // releases the lock
  }
}

StatusOr<std::unique_ptr<FileJournal>> FileJournal::open(const std::string& path,
                                                         FileJournalOptions options,
                                                         Replay* replay) {
  std::unique_ptr<FileJournal> j(new FileJournal(path, options));
  Replay local;
  Replay& r = replay ? *replay : local;
  r = Replay{};

  auto fd = openLocked(path);
  if (!fd.ok()) return fd.status();
  j->fd_ = *fd;
  std::string data;
  if (Status st = readAll(j->fd_, data, path); !st.ok()) return st;
  Scan scan = scanJournal(data);
  if (!scan.parseable) {
    if (!options.reset)
      return absl::FailedPreconditionError(fmt::format(
          "journal {}: not a TokenGate journal, or damaged beyond recognition ({} bytes, no "
          "intact record); refusing to start and leaving it untouched. Inspect it with `tgctl "
          "journal check {}`; start with --journal-reset to move it aside and begin a new "
          "journal",
          path, data.size(), path));
    r.moved_aside = stamped(path, "unparseable");
    if (::rename(path.c_str(), r.moved_aside.c_str()) != 0)
      return ioError("cannot move aside to " + r.moved_aside, path);
    syncDir(path);
    spdlog::warn("journal {}: unparseable, moved aside to {} (--journal-reset)", path,
                 r.moved_aside);
    ::close(j->fd_);
    j->fd_ = -1;
    auto again = openLocked(path);
    if (!again.ok()) return again.status();
    j->fd_ = *again;
    data.clear();
    scan = scanJournal(data);
  }
  for (const Damage& d : scan.damage) {
    spdlog::warn("journal {}: {} bytes at offset {} {} ({})", path, d.bytes, d.offset,
                 d.tail ? "are a torn tail, cut off" : "are damaged, skipped", d.why);
    ++(d.tail ? j->torn_ranges_ : j->damaged_ranges_);
  }
  r.damage = scan.damage;
  r.damaged_bytes = scan.damagedBytes();
  j->keep_damaged_ = r.damaged_bytes > 0 || scan.version == 1;
  r.records = scan.records.size();

  const Folded f = fold(scan, options.keep_finished, options.keep_keys);
  r.keys.reserve(f.keys.size());
  // Key records are kept as read (intact, checksummed): no re-encoding of up to a million.
  const size_t header = scan.version == 1 ? 8 : kRecordHeader;
  for (const Record* k : f.keys) {
    j->keepKey(k->key, data.substr(k->offset + header, k->bytes - header));
    r.keys.push_back({k->key, k->id, k->incarnation, k->value});
  }
  for (const Record* q : f.quarantines) {
    j->quarantines_[q->quarantine.node_id] = {j->next_quarantine_seq_++,
                                              data.substr(q->offset + header, q->bytes - header)};
    r.quarantines.push_back(q->quarantine);
  }
  for (const Record* a : f.live) {
    const uint64_t seq = j->next_seq_++;
    j->live_seq_[a->id] = seq;
    j->live_[seq] = encodeAdmit(a->id, a->incarnation, a->spec);
    r.unfinished.push_back({a->id, a->incarnation, a->spec, {}});
    if (auto it = f.checkpoints.find(a->id); it != f.checkpoints.end()) {
      // Merged into one record (a later result of the same token wins).
      std::map<uint32_t, const Value*> merged;
      for (const Record* c : it->second)
        for (const auto& [local, value] : c->checkpoint) merged[local] = &value;
      auto& cp = r.unfinished.back().checkpoint;
      cp.reserve(merged.size());
      for (const auto& [local, value] : merged) cp.emplace_back(local, *value);
      j->checkpoints_[seq].push_back(encodeCheckpoint(a->id, a->incarnation, cp));
    }
  }
  for (const Record* s : f.finished) {
    j->finished_.push_back(encodeFinish(s->status));
    r.finished.push_back(s->status);
  }
  uint32_t random_epoch = 0;
  if (f.last_epoch == 0) {
    if (options.random_epoch) {
      random_epoch = options.random_epoch();
    } else {
      std::random_device rd;
      random_epoch = 1 + rd() % coordinator::kMaxEpoch;
    }
  }
  r.epoch_random = f.last_epoch == 0;
  r.epoch = j->epoch_ = chooseEpoch(f, random_epoch);
  j->resumed_ = r.unfinished.size();
  j->bytes_ = data.size();
  if (options.registry) j->exportMetrics(*options.registry);
  return j;
}

Status FileJournal::activate() {
  if (active_) return absl::OkStatus();
  if (Status st = compact(); !st.ok()) return st;
  active_ = true;
  if (m_.epoch) m_.epoch->Set(epoch_);
  return absl::OkStatus();
}

Status FileJournal::compact() {
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return ioError("cannot create", tmp);
  // Locked before it becomes PATH, so there is never an unlocked journal under that name.
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    Status st = ioError("cannot lock", tmp);
    ::close(fd);
    return st;
  }
  std::string buf(kMagic);
  appendRecord(buf, encodeEpoch(epoch_, wallNs()));
  // Quarantines before anything a node could be given (oldest conviction first).
  std::vector<const std::pair<uint64_t, std::string>*> quarantines;
  quarantines.reserve(quarantines_.size());
  for (const auto& [id, q] : quarantines_) quarantines.push_back(&q);
  std::sort(quarantines.begin(), quarantines.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  for (const auto* q : quarantines) appendRecord(buf, q->second);
  // Keys first: a restart restores them before it resumes the live jobs that may use them.
  std::deque<std::pair<uint64_t, std::string>> order;
  for (auto& [seq, key] : key_order_) {
    auto it = keys_.find(key);
    if (it == keys_.end() || it->second.seq != seq) continue;  // superseded or evicted
    appendRecord(buf, it->second.payload);
    order.emplace_back(seq, std::move(key));
  }
  key_order_ = std::move(order);
  for (const auto& [seq, p] : live_) {
    appendRecord(buf, p);
    if (auto it = checkpoints_.find(seq); it != checkpoints_.end())
      for (const auto& c : it->second) appendRecord(buf, c);
  }
  for (const auto& p : finished_) appendRecord(buf, p);
  Status st = writeAll(fd, buf.data(), buf.size(), tmp);
  if (st.ok() && options_.sync && ::fsync(fd) != 0) st = ioError("fsync", tmp);
  if (!st.ok()) {
    ::close(fd);
    return st;
  }
  if (keep_damaged_) {
    // The damaged original stays as it was, under another name (the same inode).
    const std::string keep = stamped(path_, "damaged");
    if (::link(path_.c_str(), keep.c_str()) == 0)
      spdlog::warn("journal {}: the damaged original is kept as {}", path_, keep);
    else if (errno != EEXIST)
      spdlog::warn("journal {}: cannot keep the damaged original as {}: {}", path_, keep,
                   std::strerror(errno));
    keep_damaged_ = false;
  }
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    st = ioError("rename over", path_);
    ::close(fd);
    return st;
  }
  // The rename itself must survive a crash: sync the directory.
  if (options_.sync) syncDir(path_);
  ::close(fd_);  // the old file's lock goes only now
  fd_ = fd;
  bytes_ = bytes_after_compaction_ = buf.size();
  ++compactions_;
  if (m_.compactions) m_.compactions->Increment();
  exportSize();
  return absl::OkStatus();
}

Status FileJournal::admitted(uint64_t job_id, uint64_t incarnation, const JobSpec& spec) {
  if (!active_) {
    if (m_.errors) m_.errors->Increment();
    return absl::FailedPreconditionError(
        fmt::format("journal {} is not active yet (activate() after start-up)", path_));
  }
  std::string payload = encodeAdmit(job_id, incarnation, spec);
  appendRecord(buffer_, payload);
  needs_sync_ = true;
  if (m_.admits) m_.admits->Increment();
  if (auto it = live_seq_.find(job_id); it != live_seq_.end()) {
    live_.erase(it->second);
    checkpoints_.erase(it->second);
  }
  live_seq_[job_id] = next_seq_;
  live_[next_seq_++] = std::move(payload);
  return absl::OkStatus();
}

void FileJournal::finished(const control::JobStatus& status) {
  if (!active_) return;
  std::string payload = encodeFinish(status);
  appendRecord(buffer_, payload);
  if (m_.finishes) m_.finishes->Increment();
  if (auto it = live_seq_.find(status.id); it != live_seq_.end()) {
    live_.erase(it->second);
    checkpoints_.erase(it->second);
    live_seq_.erase(it);
  }
  finished_.push_back(std::move(payload));
  if (finished_.size() > options_.keep_finished)
    finished_.erase(
        finished_.begin(),
        finished_.begin() + static_cast<long>(finished_.size() - options_.keep_finished));
}

void FileJournal::checkpoint(uint64_t job_id, uint64_t incarnation,
                             const coordinator::Checkpoint& results) {
  if (!active_ || results.empty()) return;
  auto it = live_seq_.find(job_id);
  if (it == live_seq_.end()) return;  // finished meanwhile: nothing to resume
  std::string payload = encodeCheckpoint(job_id, incarnation, results);
  appendRecord(buffer_, payload);  // no sync: a lost checkpoint only means re-running tokens
  if (m_.checkpoints) m_.checkpoints->Increment();
  checkpoints_[it->second].push_back(std::move(payload));
}

void FileJournal::keyFinished(const std::string& key, uint64_t token_id, uint64_t incarnation,
                              const Value& value) {
  if (!active_) return;
  std::string payload = encodeKey(key, token_id, incarnation, value);
  appendRecord(buffer_, payload);  // synced by the next admission's commit (journal.h)
  if (m_.keys) m_.keys->Increment();
  keepKey(key, std::move(payload));
}

void FileJournal::keepKey(const std::string& key, std::string payload) {
  const uint64_t seq = next_key_seq_++;
  keys_[key] = {seq, std::move(payload)};
  key_order_.emplace_back(seq, key);
  while (!key_order_.empty()) {
    auto& [old_seq, old_key] = key_order_.front();
    auto it = keys_.find(old_key);
    const bool current = it != keys_.end() && it->second.seq == old_seq;
    if (current && keys_.size() <= options_.keep_keys) break;
    if (current) keys_.erase(it);  // the oldest key beyond keep_keys
    key_order_.pop_front();
  }
}

void FileJournal::quarantine(const coordinator::QuarantineNote& note) {
  if (!active_ || note.node_id.empty()) return;
  coordinator::QuarantineNote stamped_note = note;
  if (stamped_note.at_ns == 0) stamped_note.at_ns = wallNs();
  std::string payload = encodeQuarantine(stamped_note);
  appendRecord(buffer_, payload);
  needs_sync_ = true;  // rare; lost, a caught node would work again after a restart
  if (m_.quarantines) m_.quarantines->Increment();
  if (note.lifted)
    quarantines_.erase(note.node_id);
  else
    quarantines_[note.node_id] = {next_quarantine_seq_++, std::move(payload)};
}

void FileJournal::epochStarted(uint32_t epoch) {
  if (epoch == epoch_) return;
  epoch_ = epoch;
  appendRecord(buffer_, encodeEpoch(epoch, wallNs()));
  needs_sync_ = true;
  compact_soon_ = true;  // the header should name the current epoch (a truncation keeps it)
  if (m_.epoch) m_.epoch->Set(epoch);
}

Status FileJournal::commit() {
  if (buffer_.empty()) return absl::OkStatus();
  if (!active_) return absl::FailedPreconditionError("journal not active");
  std::string buf = std::move(buffer_);
  buffer_.clear();
  const bool sync = needs_sync_;
  needs_sync_ = false;
  Status st = writeAll(fd_, buf.data(), buf.size(), path_);
  if (st.ok() && sync && options_.sync) {
    const auto t0 = std::chrono::steady_clock::now();
    if (::fdatasync(fd_) != 0) st = ioError("fdatasync", path_);
    ++syncs_;
    if (m_.syncs) m_.syncs->Increment();
    if (m_.sync_seconds)
      m_.sync_seconds->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (!st.ok()) {
    if (m_.errors) m_.errors->Increment();
    // Cut what may have been half written, so later records follow a clean end.
    if (::ftruncate(fd_, static_cast<off_t>(bytes_)) != 0)
      spdlog::error("journal {}: cannot cut a failed write: {}", path_, std::strerror(errno));
    return st;
  }
  bytes_ += buf.size();
  exportSize();
  if (compact_soon_ || bytes_ - bytes_after_compaction_ >= options_.compact_bytes) {
    compact_soon_ = false;
    if (Status c = compact(); !c.ok()) spdlog::error("journal compaction failed: {}", c.message());
  }
  return absl::OkStatus();
}

}  // namespace tokengate::journal
