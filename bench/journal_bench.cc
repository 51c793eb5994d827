// tokengate-journal-bench: journalled admission throughput. Starts a local cluster (coordinator
// with --journal on a temporary file, N nodes) and submits 1-token jobs from ONE client over a
// raw DEALER socket (with the cluster's CURVE client keys), pipelined: up to --window SubmitJob
// frames are in flight, each reply lets the next one go. It measures acknowledgements (each an
// fdatasync'ed admission), which the C++ Client's pipeline (submitAsync) does not expose: its
// window runs until each job's result. `tokengate-bench jobs --journal` measures that.
// Prints acknowledged jobs/s (an acknowledgement means the admission was fdatasync'ed), the
// coordinator's CPU, and the time until all jobs finished.
//
//   tokengate-journal-bench --jobs 100000 --window 512
//   tokengate-journal-bench --no-journal                 # the same without a journal
//   tokengate-journal-bench --bin-dir /other/build/bin   # another build's coordinator and node
//   tokengate-journal-bench --keyed                      # every job's token has its own key
//   tokengate-journal-bench --replay-keys 100000         # replay time of a journal with N keys
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <zmq.hpp>

#include "client/client.h"
#include "client/local_cluster.h"
#include "common/log.h"
#include "common/security/curve.h"
#include "common/wire.h"
#include "coordinator/core/coordinator.h"
#include "coordinator/journal/file_journal.h"

using namespace tokengate;

namespace {

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

class NullOutbox final : public coordinator::Outbox {
 public:
  void send(const std::string&, std::string) override {}
};

// Writes a journal of `n` finished keyed 1-token jobs (admission, key result, finish each, as a
// coordinator writes them), then times what a restart does with it: open (scan and fold),
// restoring the keys and finished jobs into a core, and activation (the compaction rewrite).
int replayKeys(uint64_t n, const std::string& dir) {
  const std::string path = fmt::format("{}/tg-journal-bench-keys-{}.journal", dir, getpid());
  std::filesystem::remove(path);
  journal::FileJournalOptions o;
  o.sync = false;
  o.compact_bytes = UINT64_MAX;
  {
    auto j = journal::FileJournal::open(path, o, nullptr);
    if (!j.ok() || !(*j)->activate().ok()) {
      fmt::print(stderr, "error: cannot create {}\n", path);
      return 1;
    }
    const uint64_t first = coordinator::firstIdOf((*j)->epoch());
    for (uint64_t i = 0; i < n; ++i) {
      JobSpec job;
      TokenSpec t;
      t.op = "echo";
      t.args.push_back(Arg::val(static_cast<int64_t>(i)));
      t.idempotency_key = fmt::format("replay-bench-key-{}", i);
      t.output = true;
      job.add(t);
      const uint64_t id = first + i;
      (void)(*j)->admitted(id, 1, job);
      (*j)->keyFinished(t.idempotency_key, id << 32, 1, Value(static_cast<int64_t>(i)));
      control::JobStatus st;
      st.id = id;
      st.incarnation = 1;
      st.state = control::JobState::kSucceeded;
      st.total = st.done = 1;
      (*j)->finished(st);
      if (i % 4096 == 4095) (void)(*j)->commit();
    }
    (void)(*j)->commit();
  }
  const uint64_t bytes = std::filesystem::file_size(path);
  const auto t0 = std::chrono::steady_clock::now();
  journal::Replay r;
  auto j = journal::FileJournal::open(path, o, &r);
  if (!j.ok()) {
    fmt::print(stderr, "error: {}\n", j.status().message());
    return 1;
  }
  const auto t1 = std::chrono::steady_clock::now();
  SystemClock clock;
  NullOutbox outbox;
  coordinator::CoordinatorCore core({}, clock, outbox, std::make_shared<prometheus::Registry>());
  for (auto& k : r.keys) core.restoreKey(k.key, k.token_id, std::move(k.value));
  for (auto& f : r.finished) core.restoreFinished(std::move(f));
  const auto t2 = std::chrono::steady_clock::now();
  if (Status st = (*j)->activate(); !st.ok()) {
    fmt::print(stderr, "error: {}\n", st.message());
    return 1;
  }
  const auto t3 = std::chrono::steady_clock::now();
  fmt::print(
      "replay of {} keyed jobs ({} records, {:.1f} MB): open (read, scan, fold) {:.3f} s, restore "
      "{} keys and {} finished jobs into the core {:.3f} s, activation (compaction to {:.1f} MB) "
      "{:.3f} s; total {:.3f} s\n",
      n, r.records, static_cast<double>(bytes) / 1e6, seconds(t1 - t0), r.keys.size(),
      r.finished.size(), seconds(t2 - t1), static_cast<double>((*j)->bytes()) / 1e6,
      seconds(t3 - t2), seconds(t3 - t0));
  j->reset();
  // The next restart reads the compacted file: key records and the kept finished jobs only.
  const auto t4 = std::chrono::steady_clock::now();
  journal::Replay again;
  auto k = journal::FileJournal::open(path, o, &again);
  if (!k.ok()) {
    fmt::print(stderr, "error: {}\n", k.status().message());
    return 1;
  }
  coordinator::CoordinatorCore core2({}, clock, outbox, std::make_shared<prometheus::Registry>());
  for (auto& key : again.keys) core2.restoreKey(key.key, key.token_id, std::move(key.value));
  for (auto& f : again.finished) core2.restoreFinished(std::move(f));
  fmt::print("replay of the compacted journal ({} records): open and restore {:.3f} s\n",
             again.records, seconds(std::chrono::steady_clock::now() - t4));
  k->reset();
  std::filesystem::remove(path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tokengate-journal-bench: pipelined journalled admissions of 1-token jobs"};
  uint64_t jobs = 100'000;
  uint32_t window = 512, nodes = 1, runs = 3;
  bool no_journal = false, keyed = false;
  uint64_t replay_keys = 0;
  std::string bin_dir, dir = std::filesystem::temp_directory_path().string(), log_level = "warn";
  app.add_option("--jobs", jobs, "jobs per run")->capture_default_str();
  app.add_option("--window", window, "submissions in flight")->capture_default_str();
  app.add_option("--nodes", nodes)->capture_default_str();
  app.add_option("--runs", runs, "runs (a fresh cluster and journal each)")->capture_default_str();
  app.add_flag("--no-journal", no_journal, "run the coordinator without --journal");
  app.add_flag("--keyed", keyed, "give every job's token its own idempotency key");
  app.add_option("--replay-keys", replay_keys,
                 "instead: time the replay of a journal of this many keyed jobs (no cluster)");
  app.add_option("--bin-dir", bin_dir, "coordinator and node binaries (default: next to this)");
  app.add_option("--dir", dir, "directory for the journal file")->capture_default_str();
  app.add_option("--log-level", log_level);
  CLI11_PARSE(app, argc, argv);
  initLogging("journal-bench", log_level);
  if (replay_keys > 0) return replayKeys(replay_keys, dir);

  JobSpec job;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::val(int64_t{1}));
  job.add(t);

  for (uint32_t run = 0; run < runs; ++run) {
    const std::string journal = fmt::format("{}/tg-journal-bench-{}.journal", dir, getpid());
    std::filesystem::remove(journal);
    client::LocalClusterOptions o;
    o.bin_dir = bin_dir;
    o.nodes = nodes;
    o.log_level = log_level;
    o.coordinator_args = {"--max-live-tokens", std::to_string(jobs + 1000)};
    if (!no_journal) o.coordinator_args.insert(o.coordinator_args.end(), {"--journal", journal});
    auto cluster = client::LocalCluster::start(o);
    if (!cluster.ok()) {
      fmt::print(stderr, "error: {}\n", cluster.status().message());
      return 1;
    }
    client::Client c((*cluster)->endpoint(), (*cluster)->clientCurve());
    if (auto st = c.waitForNodes(nodes, 30 * kSeconds); !st.ok()) {
      fmt::print(stderr, "error: {}\n", st.message());
      return 1;
    }
    const auto before = c.info();
    zmq::context_t ctx(1);
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::sndhwm, 0);
    sock.set(zmq::sockopt::rcvhwm, 0);
    if (auto st = security::applyClientKeys(sock, (*cluster)->clientCurve()); !st.ok()) {
      fmt::print(stderr, "error: {}\n", st.message());
      return 1;
    }
    sock.connect((*cluster)->endpoint());
    const pid_t coordinator = (*cluster)->coordinatorPid();
    const double cpu0 = client::cpuSecondsOf(coordinator);
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t sent = 0, acked = 0, refused = 0;
    std::string first_error;
    while (acked + refused < jobs) {
      while (sent < jobs && sent - acked - refused < window) {
        if (keyed)
          job.tokens[0].idempotency_key =
              fmt::format("journal-bench-{}-{}-{}", getpid(), run, sent);
        const std::string f = submitJobFrame(job, ++sent, /*watch=*/true);
        sock.send(zmq::buffer(f), zmq::send_flags::none);
      }
      zmq::message_t m;
      if (!sock.recv(m, zmq::recv_flags::none)) continue;
      auto frame = decodeFrame(m.data(), m.size());
      if (!frame.ok() || !(*frame)->root().isSubmitReply()) continue;
      auto rep = (*frame)->root().getSubmitReply();
      if (rep.isJobId()) {
        ++acked;
      } else {
        if (first_error.empty()) first_error = rep.getError().getMessage().cStr();
        ++refused;
      }
    }
    const double admit_s = seconds(std::chrono::steady_clock::now() - t0);
    const double admit_cpu = client::cpuSecondsOf(coordinator) - cpu0;
    // Then until every job ran.
    const uint64_t base = before.ok() ? before->tokens_completed : 0;
    double done_s = 0;
    for (int i = 0; i < 60'000; ++i) {
      auto info = c.info();
      if (info.ok() && info->tokens_completed >= base + acked) {
        done_s = seconds(std::chrono::steady_clock::now() - t0);
        break;
      }
      usleep(1000);
    }
    const uint64_t journal_bytes =
        std::filesystem::exists(journal) ? std::filesystem::file_size(journal) : 0;
    fmt::print(
        "run {}: {} {}jobs {} (window {}): {:.0f} acknowledged jobs/s ({:.3f} s, coordinator CPU "
        "{:.2f} s), all finished after {:.3f} s ({:.0f} jobs/s){}; journal {} bytes\n",
        run + 1, acked, keyed ? "keyed " : "", no_journal ? "without journal" : "journalled",
        window, static_cast<double>(acked) / admit_s, admit_s, admit_cpu, done_s,
        done_s > 0 ? static_cast<double>(acked) / done_s : 0.0,
        refused ? fmt::format(", {} refused ({})", refused, first_error) : std::string(),
        journal_bytes);
    (*cluster)->stop();
    std::filesystem::remove(journal);
  }
  return 0;
}
