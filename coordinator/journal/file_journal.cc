#include "coordinator/journal/file_journal.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/crc.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>

#include "common/wire.h"
#include "tokengate.capnp.h"

namespace tokengate::journal {

namespace {

constexpr char kMagic[8] = {'T', 'G', 'J', 'O', 'U', 'R', 'N', '1'};
constexpr size_t kHeader = 8;                // u32 length + u32 crc
constexpr uint32_t kMaxRecord = 256u << 20;  // a record larger than this is corruption

uint32_t crc32(const void* data, size_t n) {
  boost::crc_32_type crc;
  crc.process_bytes(data, n);
  return crc.checksum();
}

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

std::string frame(const std::string& payload) {
  std::string out(kHeader, '\0');
  const auto len = static_cast<uint32_t>(payload.size());
  const uint32_t crc = crc32(payload.data(), payload.size());
  std::memcpy(out.data(), &len, 4);
  std::memcpy(out.data() + 4, &crc, 4);
  out += payload;
  return out;
}

std::string encodeAdmit(uint64_t id, const JobSpec& spec) {
  capnp::MallocMessageBuilder msg;
  auto a = msg.initRoot<wire::JournalRecord>().initAdmitted();
  a.setJobId(id);
  toWire(spec, a.initJob());
  return encodeFrame(msg);
}

std::string encodeFinish(const control::JobStatus& s) {
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::JournalRecord>().initFinished();
  f.setName(s.name);
  f.setCancelled(s.cancelled);
  auto d = f.initDone();
  d.setJobId(s.id);
  d.setState(static_cast<wire::JobState>(s.state));
  auto p = d.initProgress();
  p.setJobId(s.id);
  p.setTotal(s.total);
  p.setDone(s.done);
  p.setFailed(s.failed + s.cancelled);
  d.setWallNs(static_cast<uint64_t>(s.wall_ns));
  auto outs = d.initOutputs(static_cast<unsigned>(s.outputs.size()));
  for (unsigned i = 0; i < s.outputs.size(); ++i) {
    const auto& o = s.outputs[i];
    outs[i].setIndex(o.index);
    outs[i].setName(o.name);
    if (o.status.ok())
      toWire(o.value, outs[i].initValue());
    else
      toWire(o.status, outs[i].initError());
  }
  return encodeFrame(msg);
}

control::JobStatus decodeFinish(wire::JournalFinish::Reader f) {
  control::JobStatus s;
  auto d = f.getDone();
  s.id = d.getJobId();
  s.name = f.getName().cStr();
  const auto raw = static_cast<uint8_t>(d.getState());
  s.state = raw <= 3 ? static_cast<control::JobState>(raw) : control::JobState::kFailed;
  auto p = d.getProgress();
  s.total = p.getTotal();
  s.done = p.getDone();
  s.cancelled = std::min<uint64_t>(f.getCancelled(), p.getFailed());
  s.failed = p.getFailed() - s.cancelled;
  s.wall_ns = static_cast<Nanos>(d.getWallNs());
  for (auto o : d.getOutputs()) {
    control::OutputResult r;
    r.index = o.getIndex();
    r.name = o.getName().cStr();
    if (o.isValue())
      r.value = fromWire(o.getValue());
    else
      r.status = fromWire(o.getError());
    s.outputs.push_back(std::move(r));
  }
  return s;
}

// One decoded record; InvalidArgument if the payload is not a JournalRecord we understand.
struct Decoded {
  bool admit = false;
  uint64_t id = 0;
  JobSpec spec;
  control::JobStatus status;
};

StatusOr<Decoded> decode(const char* data, size_t n) {
  if (n % sizeof(capnp::word) != 0) return absl::InvalidArgumentError("payload not word-sized");
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(n / sizeof(capnp::word));
  std::memcpy(words.begin(), data, n);
  try {
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = words.size() * 2 + 64;
    capnp::FlatArrayMessageReader reader(words, opts);
    auto rec = reader.getRoot<wire::JournalRecord>();
    Decoded out;
    switch (rec.which()) {
      case wire::JournalRecord::ADMITTED: {
        auto a = rec.getAdmitted();
        auto spec = fromWire(a.getJob());
        if (!spec.ok()) return spec.status();
        out.admit = true;
        out.id = a.getJobId();
        out.spec = *std::move(spec);
        return out;
      }
      case wire::JournalRecord::FINISHED:
        out.status = decodeFinish(rec.getFinished());
        out.id = out.status.id;
        return out;
    }
    return absl::InvalidArgumentError("unknown record kind");
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(fmt::format("malformed record: {}", e.what()));
  }
}

}  // namespace

FileJournal::FileJournal(std::string path, FileJournalOptions options)
    : path_(std::move(path)), options_(std::move(options)) {
  if (!options_.registry) return;
  auto& reg = *options_.registry;
  auto& records = prometheus::BuildCounter()
                      .Name("tokengate_journal_records_total")
                      .Help("job journal records written, by kind")
                      .Register(reg);
  m_.admits = &records.Add({{"kind", "admitted"}});
  m_.finishes = &records.Add({{"kind", "finished"}});
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
  m_.sync_seconds =
      &prometheus::BuildHistogram()
           .Name("tokengate_journal_sync_seconds")
           .Help("fdatasync time per admission (the job waits for it)")
           .Register(reg)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25});
}

void FileJournal::exportSize() {
  if (m_.bytes) m_.bytes->Set(static_cast<double>(bytes_));
}

FileJournal::~FileJournal() {
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<std::unique_ptr<FileJournal>> FileJournal::open(const std::string& path,
                                                         FileJournalOptions options,
                                                         Replay* replay) {
  std::unique_ptr<FileJournal> j(new FileJournal(path, options));
  Replay local;
  Replay& r = replay ? *replay : local;
  r = Replay{};

  std::string data;
  if (std::filesystem::exists(path)) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return ioError("cannot open for reading", path);
    data.assign(std::istreambuf_iterator<char>(in), {});
    if (in.bad()) return ioError("read", path);
  }
  std::map<uint64_t, Decoded> live;  // id -> admit
  std::deque<control::JobStatus> finished;
  if (!data.empty()) {
    if (data.size() < sizeof kMagic || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0)
      return absl::FailedPreconditionError(fmt::format(
          "journal {}: not a TokenGate journal (bad magic); refusing to overwrite it", path));
    size_t pos = sizeof kMagic;
    while (pos < data.size()) {
      std::string why;
      uint32_t len = 0, crc = 0;
      if (data.size() - pos < kHeader) {
        why = "truncated record header";
      } else {
        std::memcpy(&len, data.data() + pos, 4);
        std::memcpy(&crc, data.data() + pos + 4, 4);
        if (len > kMaxRecord)
          why = fmt::format("record length {} is implausible", len);
        else if (data.size() - pos - kHeader < len)
          why = "truncated record";
        else if (crc32(data.data() + pos + kHeader, len) != crc)
          why = "checksum mismatch";
      }
      StatusOr<Decoded> rec = absl::UnknownError("");
      if (why.empty()) {
        rec = decode(data.data() + pos + kHeader, len);
        if (!rec.ok()) why = std::string(rec.status().message());
      }
      if (!why.empty()) {
        r.discarded_bytes = data.size() - pos;
        r.discarded_reason = why;
        spdlog::warn("journal {}: {} at byte {}; the last {} bytes are discarded", path, why, pos,
                     r.discarded_bytes);
        break;
      }
      ++r.records;
      if (rec->admit) {
        live[rec->id] = *std::move(rec);
      } else {
        live.erase(rec->id);
        finished.push_back(std::move(rec->status));
        while (finished.size() > options.keep_finished) finished.pop_front();
      }
      pos += kHeader + len;
    }
  }
  for (auto& [id, d] : live) {
    j->live_[id] = encodeAdmit(id, d.spec);
    r.unfinished.push_back({id, std::move(d.spec)});
  }
  for (auto& s : finished) {
    j->finished_.push_back(encodeFinish(s));
    r.finished.push_back(std::move(s));
  }
  if (Status st = j->compact(); !st.ok()) return st;
  if (j->m_.resumed) j->m_.resumed->Set(static_cast<double>(r.unfinished.size()));
  return j;
}

Status FileJournal::compact() {
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return ioError("cannot create", tmp);
  std::string buf(kMagic, sizeof kMagic);
  for (const auto& [id, p] : live_) buf += frame(p);
  for (const auto& p : finished_) buf += frame(p);
  Status st = writeAll(fd, buf.data(), buf.size(), tmp);
  if (st.ok() && ::fsync(fd) != 0) st = ioError("fsync", tmp);
  ::close(fd);
  if (!st.ok()) return st;
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return ioError("rename over", path_);
  // The rename itself must survive a crash: sync the directory.
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  if (const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) return ioError("cannot open for appending", path_);
  bytes_ = bytes_after_compaction_ = buf.size();
  ++compactions_;
  if (m_.compactions) m_.compactions->Increment();
  exportSize();
  return absl::OkStatus();
}

Status FileJournal::append(const std::string& payload, bool sync) {
  if (fd_ < 0) return absl::FailedPreconditionError(fmt::format("journal {} is not open", path_));
  const std::string rec = frame(payload);
  if (Status st = writeAll(fd_, rec.data(), rec.size(), path_); !st.ok()) return st;
  bytes_ += rec.size();
  exportSize();
  if (sync) {
    const auto t0 = std::chrono::steady_clock::now();
    if (::fdatasync(fd_) != 0) return ioError("fdatasync", path_);
    if (m_.sync_seconds)
      m_.sync_seconds->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return absl::OkStatus();
}

Status FileJournal::admitted(uint64_t job_id, const JobSpec& spec) {
  std::string payload = encodeAdmit(job_id, spec);
  if (Status st = append(payload, options_.sync); !st.ok()) {
    if (m_.errors) m_.errors->Increment();
    return st;
  }
  if (m_.admits) m_.admits->Increment();
  live_[job_id] = std::move(payload);
  return absl::OkStatus();
}

void FileJournal::finished(const control::JobStatus& status) {
  std::string payload = encodeFinish(status);
  if (Status st = append(payload, false); !st.ok()) {
    if (m_.errors) m_.errors->Increment();
    spdlog::error("{} (job {} will run again after a restart)", st.message(), status.id);
    return;
  }
  if (m_.finishes) m_.finishes->Increment();
  live_.erase(status.id);
  finished_.push_back(std::move(payload));
  if (finished_.size() > options_.keep_finished)
    finished_.erase(
        finished_.begin(),
        finished_.begin() + static_cast<long>(finished_.size() - options_.keep_finished));
  if (bytes_ - bytes_after_compaction_ >= options_.compact_bytes) {
    if (Status st = compact(); !st.ok())
      spdlog::error("journal compaction failed: {}", st.message());
  }
}

}  // namespace tokengate::journal
