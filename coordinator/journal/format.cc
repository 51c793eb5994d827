#include "coordinator/journal/format.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fmt/format.h>

#include <algorithm>
#include <boost/crc.hpp>
#include <cstring>
#include <deque>
#include <unordered_map>

#include "common/wire.h"
#include "coordinator/control/status_wire.h"
#include "coordinator/core/journal.h"
#include "tokengate.capnp.h"

namespace tokengate::journal {

namespace {

uint32_t crc32(const void* data, size_t n) {
  boost::crc_32_type crc;
  crc.process_bytes(data, n);
  return crc.checksum();
}

uint32_t load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // the file is little endian, like every machine we build for
}

void store32(std::string& out, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}

control::JobStatus decodeFinish(wire::JournalFinish::Reader f) {
  control::JobStatus s;
  auto d = f.getDone();
  s.id = d.getJobId();
  s.incarnation = f.getIncarnation();
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

// Decodes one payload; an error if it is not a JournalRecord we understand.
Status decode(const char* data, size_t n, Record& out) {
  if (n == 0 || n % sizeof(capnp::word) != 0)
    return absl::InvalidArgumentError("payload is not a whole number of words");
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(n / sizeof(capnp::word));
  std::memcpy(words.begin(), data, n);
  try {
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = words.size() * 8 + 64;
    opts.nestingLimit = 32;
    capnp::FlatArrayMessageReader reader(words, opts);
    auto rec = reader.getRoot<wire::JournalRecord>();
    switch (rec.which()) {
      case wire::JournalRecord::ADMITTED: {
        auto a = rec.getAdmitted();
        auto spec = fromWire(a.getJob());
        if (!spec.ok()) return spec.status();
        out.kind = Record::kAdmit;
        out.id = a.getJobId();
        out.incarnation = a.getIncarnation();
        out.spec = *std::move(spec);
        return absl::OkStatus();
      }
      case wire::JournalRecord::FINISHED:
        out.kind = Record::kFinish;
        out.status = decodeFinish(rec.getFinished());
        out.id = out.status.id;
        out.incarnation = out.status.incarnation;
        return absl::OkStatus();
      case wire::JournalRecord::CHECKPOINT: {
        auto c = rec.getCheckpoint();
        out.kind = Record::kCheckpoint;
        out.id = c.getJobId();
        out.incarnation = c.getIncarnation();
        auto tokens = c.getTokens();
        auto values = c.getValues();
        if (tokens.size() != values.size())
          return absl::InvalidArgumentError("checkpoint: tokens and values differ in length");
        out.checkpoint.reserve(tokens.size());
        for (uint32_t i = 0; i < tokens.size(); ++i)
          out.checkpoint.emplace_back(tokens[i], fromWire(values[i]));
        return absl::OkStatus();
      }
      case wire::JournalRecord::KEY: {
        auto k = rec.getKey();
        out.kind = Record::kKey;
        out.key = k.getKey().cStr();
        if (out.key.empty()) return absl::InvalidArgumentError("key record without a key");
        out.id = k.getTokenId();
        out.incarnation = k.getIncarnation();
        out.value = fromWire(k.getValue());
        return absl::OkStatus();
      }
      case wire::JournalRecord::QUARANTINE: {
        auto q = rec.getQuarantine();
        out.kind = Record::kQuarantine;
        auto& n = out.quarantine;
        n.node_id = q.getNodeId().cStr();
        if (n.node_id.empty())
          return absl::InvalidArgumentError("quarantine record without a node id");
        n.key = q.getKey().cStr();
        n.reason = q.getReason().cStr();
        n.at_ns = q.getAtNs();
        n.lifted = q.getLifted();
        n.cause = q.getCause() == 1 ? coordinator::QuarantineNote::kVerify
                                    : coordinator::QuarantineNote::kRunTimeouts;
        return absl::OkStatus();
      }
      case wire::JournalRecord::EPOCH: {
        auto e = rec.getEpoch();
        out.kind = Record::kEpoch;
        out.epoch = e.getEpoch();
        out.started_ns = e.getStartedNs();
        if (out.epoch == 0 || out.epoch > coordinator::kMaxEpoch)
          return absl::InvalidArgumentError(fmt::format("epoch {} out of range", out.epoch));
        return absl::OkStatus();
      }
    }
    return absl::InvalidArgumentError("unknown record kind (written by a newer version?)");
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(fmt::format("malformed record: {}", e.what()));
  }
}

// A record header at `pos` whose marker and header checksum hold: its payload length.
bool headerAt(std::string_view d, size_t pos, uint32_t& len) {
  if (d.size() - pos < kRecordHeader) return false;
  const char* p = d.data() + pos;
  if (load32(p) != kRecordMarker) return false;
  if (crc32(p, 12) != load32(p + 12)) return false;
  len = load32(p + 4);
  return len <= kMaxRecord;
}

// Old format: [u32 len][u32 crc][payload]..., read up to the first bad record.
void scanV1(std::string_view d, Scan& s) {
  size_t pos = kMagicV1.size();
  while (pos < d.size()) {
    std::string why;
    Record r;
    uint32_t len = 0;
    if (d.size() - pos < 8) {
      why = "truncated record header";
    } else {
      len = load32(d.data() + pos);
      if (len > kMaxRecord)
        why = fmt::format("record length {} is implausible", len);
      else if (d.size() - pos - 8 < len)
        why = "truncated record";
      else if (crc32(d.data() + pos + 8, len) != load32(d.data() + pos + 4))
        why = "checksum mismatch";
      else if (Status st = decode(d.data() + pos + 8, len, r); !st.ok())
        why = std::string(st.message());
    }
    if (!why.empty()) {
      s.damage.push_back({pos, d.size() - pos, "old format, " + why, true});
      return;
    }
    r.offset = pos;
    r.bytes = 8 + len;
    s.records.push_back(std::move(r));
    pos += 8 + len;
  }
}

}  // namespace

std::string encodeAdmit(uint64_t id, uint64_t incarnation, const JobSpec& spec) {
  capnp::MallocMessageBuilder msg;
  auto a = msg.initRoot<wire::JournalRecord>().initAdmitted();
  a.setJobId(id);
  a.setIncarnation(incarnation);
  toWire(spec, a.initJob());
  return encodeFrame(msg);
}

std::string encodeFinish(const control::JobStatus& s) {
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::JournalRecord>().initFinished();
  f.setName(s.name);
  f.setCancelled(s.cancelled);
  f.setIncarnation(s.incarnation);
  control::toWire(s, f.initDone());
  return encodeFrame(msg);
}

std::string encodeEpoch(uint32_t epoch, int64_t started_ns) {
  capnp::MallocMessageBuilder msg;
  auto e = msg.initRoot<wire::JournalRecord>().initEpoch();
  e.setEpoch(epoch);
  e.setStartedNs(started_ns);
  return encodeFrame(msg);
}

std::string encodeCheckpoint(uint64_t job_id, uint64_t incarnation,
                             const coordinator::Checkpoint& results) {
  capnp::MallocMessageBuilder msg;
  auto c = msg.initRoot<wire::JournalRecord>().initCheckpoint();
  c.setJobId(job_id);
  c.setIncarnation(incarnation);
  auto tokens = c.initTokens(static_cast<unsigned>(results.size()));
  auto values = c.initValues(static_cast<unsigned>(results.size()));
  for (size_t i = 0; i < results.size(); ++i) {
    tokens.set(static_cast<unsigned>(i), results[i].first);
    toWire(results[i].second, values[static_cast<unsigned>(i)]);
  }
  return encodeFrame(msg);
}

std::string encodeKey(const std::string& key, uint64_t token_id, uint64_t incarnation,
                      const Value& value) {
  capnp::MallocMessageBuilder msg;
  auto k = msg.initRoot<wire::JournalRecord>().initKey();
  k.setKey(key);
  k.setTokenId(token_id);
  k.setIncarnation(incarnation);
  toWire(value, k.initValue());
  return encodeFrame(msg);
}

std::string encodeQuarantine(const coordinator::QuarantineNote& n) {
  capnp::MallocMessageBuilder msg;
  auto q = msg.initRoot<wire::JournalRecord>().initQuarantine();
  q.setNodeId(n.node_id);
  q.setKey(n.key);
  q.setReason(n.reason);
  q.setAtNs(n.at_ns);
  q.setLifted(n.lifted);
  q.setCause(static_cast<uint8_t>(n.cause));
  return encodeFrame(msg);
}

void appendRecord(std::string& out, std::string_view payload) {
  const size_t start = out.size();
  store32(out, kRecordMarker);
  store32(out, static_cast<uint32_t>(payload.size()));
  store32(out, crc32(payload.data(), payload.size()));
  store32(out, crc32(out.data() + start, 12));
  out.append(payload);
}

uint64_t Scan::damagedBytes() const {
  uint64_t n = 0;
  for (const auto& d : damage) n += d.bytes;
  return n;
}

namespace {

uint64_t intactBytes(const Scan& s) {
  uint64_t n = 0;
  for (const auto& r : s.records) n += r.bytes;
  return n;
}

// The v2 scan; `trust_magic`: a "TGJOURN2" at offset 0 is the magic (otherwise the first 8
// bytes are scanned like any other bytes, and damage starts at offset 0).
Scan scanV2(std::string_view d, bool trust_magic) {
  Scan s;
  s.size = d.size();
  size_t pos = 0;
  if (trust_magic && d.size() >= kMagic.size() && d.substr(0, kMagic.size()) == kMagic) {
    s.version = 2;
    pos = kMagic.size();
  }
  size_t bad_from = pos < kMagic.size() ? 0 : SIZE_MAX;  // no magic: damage from byte 0
  std::string why = bad_from == 0 ? "no journal magic" : "";
  auto closeDamage = [&](size_t end, bool tail) {
    if (bad_from == SIZE_MAX) return;
    // (A file without magic that starts with a record has nothing damaged before it.)
    if (end > bad_from) s.damage.push_back({bad_from, end - bad_from, why, tail});
    bad_from = SIZE_MAX;
    why.clear();
  };
  while (pos < d.size()) {
    uint32_t len = 0;
    std::string here;
    bool skip_whole = false;  // header intact: the record's own length is trustworthy
    if (!headerAt(d, pos, len)) {
      here = d.size() - pos < kRecordHeader ? "truncated record header" : "bad record header";
    } else if (d.size() - pos - kRecordHeader < len) {
      here = "truncated record";
    } else if (crc32(d.data() + pos + kRecordHeader, len) != load32(d.data() + pos + 8)) {
      here = "checksum mismatch";
    } else {
      Record r;
      if (Status st = decode(d.data() + pos + kRecordHeader, len, r); st.ok()) {
        closeDamage(pos, false);
        r.offset = pos;
        r.bytes = kRecordHeader + len;
        s.records.push_back(std::move(r));
        pos += kRecordHeader + len;
        continue;
      } else {
        // Checksummed but not understood: a genuine record we cannot use. Skip it whole.
        here = std::string(st.message());
        skip_whole = true;
      }
    }
    if (bad_from == SIZE_MAX) {
      bad_from = pos;
      why = here;
    }
    if (skip_whole) {
      pos += kRecordHeader + len;
      continue;
    }
    // Resynchronise: the next marker after pos (its header and payload are checked above).
    const char m[4] = {static_cast<char>(kRecordMarker & 0xff),
                       static_cast<char>((kRecordMarker >> 8) & 0xff),
                       static_cast<char>((kRecordMarker >> 16) & 0xff),
                       static_cast<char>((kRecordMarker >> 24) & 0xff)};
    const size_t next = d.find(std::string_view(m, 4), pos + 1);
    pos = next == std::string_view::npos ? d.size() : next;
  }
  closeDamage(d.size(), true);
  // A tail-only damage after intact records is a torn write; damage with nothing intact after
  // it was marked tail above. Anything recognisable makes the file ours.
  s.parseable = s.version == 2 || !s.records.empty();
  return s;
}

}  // namespace

Scan scanJournal(std::string_view d) {
  if (d.empty()) {
    Scan s;
    s.parseable = true;
    return s;
  }
  if (d.size() >= kMagicV1.size() && d.substr(0, kMagicV1.size()) == kMagicV1) {
    Scan s;
    s.size = d.size();
    s.version = 1;
    s.parseable = true;
    scanV1(d, s);
    if (s.damage.empty()) return s;
    // "TGJOURN1" may be a v2 magic with its last byte flipped ('2' -> '1'): a v1 scan of v2
    // records stops at the first one (its marker reads as an implausible length) and would drop
    // every intact record. Read it as a v2 file with a damaged magic when that finds more.
    Scan v2 = scanV2(d, false);
    if (intactBytes(v2) > intactBytes(s)) {
      if (!v2.damage.empty() && v2.damage.front().offset == 0)
        v2.damage.front().why = "damaged magic (reads TGJOURN1, but the records are v2)";
      return v2;
    }
    return s;
  }
  return scanV2(d, true);
}

Folded fold(const Scan& scan, size_t keep_finished, size_t keep_keys) {
  Folded f;
  // key -> (position in `key_order`, record); the newest record of a key wins.
  std::unordered_map<std::string_view, std::pair<size_t, const Record*>> keys;
  std::vector<const Record*> key_order;
  f.epoch_in_use.assign(coordinator::kMaxEpoch + 1, false);
  // id -> position in admission order; erased when finished.
  std::unordered_map<uint64_t, const Record*> live;
  std::vector<uint64_t> order;
  std::deque<const Record*> finished;
  // node id -> position in `quarantine_order` (the newest record of an id wins).
  std::unordered_map<std::string_view, size_t> quarantined;
  std::vector<const Record*> quarantine_order;
  for (const Record& r : scan.records) {
    switch (r.kind) {
      case Record::kEpoch:
        f.last_epoch = r.epoch;
        break;
      case Record::kAdmit:
        if (live.emplace(r.id, &r).second)
          order.push_back(r.id);
        else
          live[r.id] = &r;
        f.checkpoints.erase(r.id);  // a re-admission starts from nothing
        break;
      case Record::kCheckpoint:
        // Only after its job's admission, and of the same incarnation (never another job's).
        if (auto it = live.find(r.id); it != live.end() && it->second->incarnation == r.incarnation)
          f.checkpoints[r.id].push_back(&r);
        break;
      case Record::kKey:
        if (auto [it, fresh] = keys.try_emplace(r.key, key_order.size(), &r); !fresh) {
          key_order[it->second.first] = nullptr;  // superseded
          it->second = {key_order.size(), &r};
        }
        key_order.push_back(&r);
        break;
      case Record::kQuarantine:
        if (auto it = quarantined.find(r.quarantine.node_id); it != quarantined.end()) {
          quarantine_order[it->second] = nullptr;  // superseded (re-convicted or lifted)
          quarantined.erase(it);
        }
        if (!r.quarantine.lifted) {
          quarantined.emplace(r.quarantine.node_id, quarantine_order.size());
          quarantine_order.push_back(&r);
        }
        break;
      case Record::kFinish:
        live.erase(r.id);
        f.checkpoints.erase(r.id);
        // A newer outcome of the same id replaces the older one.
        std::erase_if(finished, [&](const Record* p) { return p->id == r.id; });
        finished.push_back(&r);
        while (finished.size() > keep_finished) finished.pop_front();
        break;
    }
  }
  for (uint64_t id : order) {
    auto it = live.find(id);
    if (it == live.end()) continue;
    f.live.push_back(it->second);
    live.erase(it);  // an id admitted twice (a reused id in an old file) is listed once
  }
  f.finished.assign(finished.begin(), finished.end());
  for (const Record* r : key_order)
    if (r) f.keys.push_back(r);
  for (const Record* r : quarantine_order)
    if (r) f.quarantines.push_back(r);
  if (f.keys.size() > keep_keys)
    f.keys.erase(f.keys.begin(), f.keys.begin() + static_cast<long>(f.keys.size() - keep_keys));
  for (const Record* r : f.live) f.epoch_in_use[coordinator::epochOf(r->id) & 0xfff] = true;
  for (const Record* r : f.finished) f.epoch_in_use[coordinator::epochOf(r->id) & 0xfff] = true;
  return f;
}

uint32_t chooseEpoch(const Folded& f, uint32_t random_epoch) {
  uint32_t e = f.last_epoch ? coordinator::nextEpoch(f.last_epoch)
                            : std::clamp<uint32_t>(random_epoch, 1, coordinator::kMaxEpoch);
  for (uint32_t i = 0; i < coordinator::kMaxEpoch && f.epoch_in_use[e]; ++i)
    e = coordinator::nextEpoch(e);
  return e;
}

}  // namespace tokengate::journal
