#include "cli/journal_check.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <unordered_set>

#include "coordinator/core/journal.h"
#include "coordinator/journal/format.h"

namespace tokengate::cli {

namespace {

struct Args {
  CLI::App* journal = nullptr;
  CLI::App* check = nullptr;
  std::string file;
  size_t keep_finished = 1000;
  size_t keep_keys = 1'000'000;
  size_t list = 20;
} args;

// The pid holding a flock() on `path`, from /proc/locks (0: none). Reading it takes no lock,
// so a coordinator starting at this moment is not disturbed.
long lockHolder(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  std::ifstream locks("/proc/locks");
  std::string line;
  const std::string dev = fmt::format("{:02x}:{:02x}:{}", major(st.st_dev), minor(st.st_dev),
                                      static_cast<unsigned long>(st.st_ino));
  while (std::getline(locks, line)) {
    std::istringstream in(line);
    std::string id, kind, mode, rw, pid, where;
    in >> id >> kind;
    if (kind == "->") in >> kind;  // a waiter
    in >> mode >> rw >> pid >> where;
    if (kind == "FLOCK" && where == dev) return std::atol(pid.c_str());
  }
  return 0;
}

int check(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    fmt::print(stderr, "error: cannot read {}\n", path);
    return 2;
  }
  const std::string data{std::istreambuf_iterator<char>(in), {}};
  const journal::Scan scan = journal::scanJournal(data);
  const long holder = lockHolder(path);
  fmt::print("journal {}: {} bytes, format {}{}\n", path, data.size(),
             scan.version == 2   ? "v2"
             : scan.version == 1 ? "v1 (old; rewritten as v2 at the next start)"
                                 : "unknown",
             holder ? fmt::format(", in use by process {}", holder) : ", not in use");
  if (!scan.parseable) {
    fmt::print(
        "unparseable: no journal magic and no intact record. A coordinator refuses to start on "
        "it (and leaves it alone) unless started with --journal-reset, which moves it aside.\n");
    return 2;
  }
  std::map<int, uint64_t> kinds;
  for (const auto& r : scan.records) ++kinds[r.kind];
  const uint64_t checkpoints = kinds[journal::Record::kCheckpoint];
  const uint64_t keyed = kinds[journal::Record::kKey];
  fmt::print("records: {} intact ({} admitted, {} finished, {} epoch{}{})\n", scan.records.size(),
             kinds[journal::Record::kAdmit], kinds[journal::Record::kFinish],
             kinds[journal::Record::kEpoch],
             checkpoints ? fmt::format(", {} checkpoint", checkpoints) : std::string(),
             keyed ? fmt::format(", {} key", keyed) : std::string());
  const journal::Folded f = journal::fold(scan, args.keep_finished, args.keep_keys);
  std::unordered_set<std::string_view> answered;  // keys with a journalled result
  for (const auto* k : f.keys) answered.insert(k->key);
  if (f.last_epoch)
    fmt::print("epoch: {} (job ids {}..{}); the next start takes {}\n", f.last_epoch,
               coordinator::firstIdOf(f.last_epoch),
               coordinator::firstIdOf(f.last_epoch) + coordinator::kSequenceMask,
               journal::chooseEpoch(f, 1));
  else
    fmt::print("epoch: none recorded; the next start takes a random one\n");
  if (!f.quarantines.empty()) {
    fmt::print("quarantined nodes (kept off work at the next start): {}\n", f.quarantines.size());
    for (size_t i = 0; i < f.quarantines.size() && i < args.list; ++i) {
      const auto& q = f.quarantines[i]->quarantine;
      fmt::print("  node {:<24} key {} ({})\n", q.node_id, q.key.empty() ? "-" : q.key, q.reason);
    }
  }
  fmt::print("live jobs (admitted, not finished; resumed at the next start): {}\n", f.live.size());
  for (size_t i = 0; i < f.live.size() && i < args.list; ++i) {
    const auto* r = f.live[i];
    size_t done = 0;
    if (auto it = f.checkpoints.find(r->id); it != f.checkpoints.end())
      for (const auto* c : it->second) done += c->checkpoint.size();
    // Keyed tokens, and how many of them a journalled key result answers at the next start.
    uint64_t keyed_tokens = 0, keys_answered = 0;
    for (const auto& t : r->spec.tokens) {
      if (t.idempotency_key.empty()) continue;
      keyed_tokens += t.repeat;
      for (uint32_t i = 0; i < t.repeat; ++i)
        keys_answered += answered.count(t.repeat > 1 ? fmt::format("{}#{}", t.idempotency_key, i)
                                                     : t.idempotency_key);
    }
    fmt::print("  job {:<12} {:<24} {} tokens (offset {}){}{}\n", r->id,
               r->spec.name.empty() ? "-" : r->spec.name, r->spec.tokenCount(), r->offset,
               done ? fmt::format(", {} token results checkpointed", done) : std::string(),
               keyed_tokens ? fmt::format(", {} keyed tokens ({} answered by a key result)",
                                          keyed_tokens, keys_answered)
                            : std::string());
  }
  if (f.live.size() > args.list) fmt::print("  ... {} more\n", f.live.size() - args.list);
  fmt::print("finished jobs kept: {}\n", f.finished.size());
  fmt::print("idempotency keys with results (answered at the next start): {}\n", f.keys.size());
  for (size_t i = 0; i < f.keys.size() && i < args.list; ++i) {
    const auto* k = f.keys[f.keys.size() - 1 - i];  // newest first
    fmt::print("  key {:<32} job {} token {} = {}\n", k->key, k->id >> 32, k->id & 0xffffffffu,
               k->value.toString());
  }
  if (f.keys.size() > args.list) fmt::print("  ... {} more\n", f.keys.size() - args.list);
  if (scan.damage.empty()) {
    fmt::print("damage: none\n");
    return 0;
  }
  fmt::print("damage: {} bytes in {} ranges\n", scan.damagedBytes(), scan.damage.size());
  for (const auto& d : scan.damage)
    fmt::print("  offset {:<10} {:>8} bytes  {}: {}\n", d.offset, d.bytes,
               d.tail ? "torn tail (cut at the next start)" : "skipped", d.why);
  return 1;
}

}  // namespace

void addJournalCommands(CLI::App& app) {
  args.journal = app.add_subcommand("journal", "inspect a coordinator journal file (--journal)");
  args.journal->require_subcommand(1);
  args.check = args.journal->add_subcommand(
      "check",
      "report records, live jobs, epoch and damage (exit 0 clean, 1 damaged, 2 unparseable)");
  args.check->add_option("file", args.file, "journal file")->required();
  args.check
      ->add_option("--keep-finished", args.keep_finished,
                   "finished jobs a coordinator keeps (--finished-jobs-kept)")
      ->capture_default_str();
  args.check
      ->add_option("--keep-keys", args.keep_keys,
                   "idempotency keys a coordinator keeps (--max-idempotency-keys)")
      ->capture_default_str();
  args.check->add_option("--list", args.list, "live jobs to list")->capture_default_str();
}

int runJournalCommands(const CLI::App&) {
  if (!args.journal || !*args.journal) return -1;
  if (*args.check) return check(args.file);
  return 2;
}

}  // namespace tokengate::cli
