// libFuzzer target for journal replay (coordinator/journal/format.h), two properties per input:
//  1. Arbitrary bytes as a journal file: the scan never crashes, hangs or reads out of bounds
//     (ASan), and accounts for every byte: magic + intact records + damaged ranges = the file,
//     in order, without overlaps; folding and choosing an epoch work on whatever it found.
//  2. Intact records are never dropped: the input is read as edits (offset, byte) and a cut
//     applied to a known good journal; every original record whose bytes were neither edited
//     nor cut must be replayed, unless an edit forged a whole new record (header and payload
//     checksums) overlapping it.
// Built with -DTG_FUZZ=ON and clang (scripts/test.sh); a 30 s run is a ctest entry.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/core/journal.h"
#include "coordinator/journal/format.h"

using namespace tokengate;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "journal replay property violated: %s\n", what);
    std::abort();
  }
}

void checkAccounting(std::string_view data, const journal::Scan& s) {
  uint64_t pos = s.version == 2 || s.version == 1 ? 8 : 0;
  size_t r = 0, d = 0;
  // Records and damage interleave in file order and tile the file.
  while (r < s.records.size() || d < s.damage.size()) {
    if (r < s.records.size() && s.records[r].offset == pos) {
      check(s.records[r].bytes > 0, "empty record");
      pos += s.records[r++].bytes;
    } else if (d < s.damage.size() && s.damage[d].offset == pos) {
      check(s.damage[d].bytes > 0, "empty damage range");
      pos += s.damage[d++].bytes;
    } else {
      check(false, "records and damage do not tile the file");
    }
    check(pos <= data.size(), "range past the end of the file");
  }
  check(pos == data.size() || (data.empty() && pos == 0), "bytes unaccounted for");
  for (size_t i = 0; i + 1 < s.damage.size(); ++i) check(!s.damage[i].tail, "tail before the end");
}

const std::string& goodJournal(std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  static std::string file;
  static std::vector<std::pair<uint64_t, uint64_t>> rs;
  if (file.empty()) {
    file = std::string(journal::kMagic);
    auto add = [&](const std::string& payload) {
      const size_t at = file.size();
      journal::appendRecord(file, payload);
      rs.emplace_back(at, file.size() - at);
    };
    add(journal::encodeEpoch(7, 1));
    for (uint64_t id = 1; id <= 6; ++id) {
      JobSpec spec;
      spec.name = "job" + std::to_string(id);
      TokenSpec t;
      t.op = "echo";
      t.repeat = static_cast<uint32_t>(id);
      t.args.push_back(Arg::val(static_cast<int64_t>(id)));
      spec.add(t);
      add(journal::encodeAdmit(coordinator::firstIdOf(7) + id, 42, spec));
      if (id == 3)  // a checkpoint of a live job (resume, don't re-run)
        add(journal::encodeCheckpoint(coordinator::firstIdOf(7) + id, 42,
                                      {{0, Value(int64_t{3})}, {1, Value(1.5)}}));
      if (id == 4) {  // quarantines between jobs: convicted (both causes), then a lift
        add(journal::encodeQuarantine(coordinator::QuarantineNote::convicted(
            "node-a", "", "run timeouts", coordinator::QuarantineNote::kRunTimeouts)));
        add(journal::encodeQuarantine(coordinator::QuarantineNote::convicted(
            "node-b", "rq:cg1y}8Ldnwzq5e=VlzY8#l%g9XQ7NDnQHkpKz", "verify mismatch",
            coordinator::QuarantineNote::kVerify)));
        add(journal::encodeQuarantine(coordinator::QuarantineNote::liftOf("node-a")));
      }
      if (id % 2 == 0) {
        control::JobStatus st;
        st.id = coordinator::firstIdOf(7) + id;
        st.state = control::JobState::kSucceeded;
        st.total = st.done = id;
        control::OutputResult o;
        o.index = 0;
        o.name = "out";
        o.value = Value(static_cast<double>(id) / 3);
        st.outputs.push_back(o);
        add(journal::encodeFinish(st));
      }
    }
  }
  ranges = rs;
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view raw(reinterpret_cast<const char*>(data), size);
  {
    const journal::Scan s = journal::scanJournal(raw);
    checkAccounting(raw, s);
    const journal::Folded f = journal::fold(s, 8);
    const uint32_t e = journal::chooseEpoch(f, 1);
    check(e >= 1 && e <= coordinator::kMaxEpoch, "epoch out of range");
  }
  // Property 2: input = [u16 cut][ (u16 offset, u8 byte) ... ]
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::string file = goodJournal(ranges);
  const size_t original = file.size();
  std::vector<bool> touched(original, false);
  size_t i = 0;
  if (size >= 2) {
    const size_t cut = (data[0] | (data[1] << 8)) % (original + 1);
    if (cut < original && (data[0] & 1)) file.resize(cut);  // half the inputs cut the file
    i = 2;
  }
  for (; i + 3 <= size; i += 3) {
    const size_t off = (data[i] | (data[i + 1] << 8)) % original;
    if (off < file.size() && file[off] != static_cast<char>(data[i + 2])) {
      file[off] = static_cast<char>(data[i + 2]);
      touched[off] = true;
    }
  }
  const journal::Scan s = journal::scanJournal(file);
  checkAccounting(file, s);
  for (const auto& [at, len] : ranges) {
    if (at + len > file.size()) continue;  // cut
    bool clean = true;
    for (uint64_t b = at; b < at + len && clean; ++b) clean = !touched[b];
    if (!clean) continue;
    bool found = false, forged_overlap = false;
    for (const auto& r : s.records) {
      if (r.offset == at && r.bytes == len)
        found = true;
      else if (r.offset < at + len && at < r.offset + r.bytes)
        forged_overlap = true;
    }
    check(found || forged_overlap, "an intact record was dropped");
  }
  return 0;
}
