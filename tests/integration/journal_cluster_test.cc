// The journal with real processes (docs/journal.md): a coordinator SIGKILLed during a job
// resumes it from its checkpoints instead of re-running it, and a crash harness that kills the
// coordinator many times while several clients submit and wait.
//
//   TG_CRASH_KILLS=200 build/release/bin/journal_cluster_test --gtest_filter='*CrashHarness*'
//
// runs the long harness (default: 6 kills, for CI); TG_TEST_BIN_DIR names another directory
// holding tokengate-coordinator and tokengate-node.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "client/client.h"
#include "client/local_cluster.h"
#include "tests/support/cluster_fixture.h"

namespace tokengate {
namespace {

using client::Client;
using client::LocalCluster;
using client::LocalClusterOptions;

using testing::startCluster;

LocalClusterOptions baseOptions(uint32_t nodes, const std::string& journal) {
  LocalClusterOptions o = testing::clusterOptions(nodes);
  o.coordinator_args.insert(o.coordinator_args.end(), {"--journal", journal});
  return o;
}

std::string journalPath(const std::string& what) {
  const std::string p = ::testing::TempDir() + "tg-" + what + "-" + std::to_string(getpid());
  std::filesystem::remove(p);
  return p;
}

// Tokens of `op` this coordinator process has completed (admin listOps).
uint64_t completedOf(Client& c, const std::string& op) {
  auto r = c.admin(client::AdminCall(client::AdminCall::Kind::kListOps));
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return 0;
  const boost::json::value ops = boost::json::parse(*r);
  for (const auto& v : ops.as_array()) {
    const auto& o = v.as_object();
    if (o.at("name").as_string() == op) return o.at("completed").to_number<uint64_t>();
  }
  return 0;
}

double secondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Issue 11 item 5: a 1M-term dec50 Leibniz job, coordinator SIGKILLed at 80%: the restarted
// coordinator resumes from the checkpointed chunk sums, runs only the terms of unfinished
// chunks, and the result is exact. With checkpointing off (--checkpoint-min-inputs 0) the same
// crash re-runs every term: the count below is what the checkpoints save.
TEST(JournalClusterTest, ACrashAt80PercentResumesFromCheckpointsAndRerunsOnlyTheRest) {
  const uint64_t terms = 1'000'000;
  auto job = makeLeibnizJob(terms, Precision::kDec50);
  ASSERT_TRUE(job.ok());
  const Value want = leibnizLocal(terms, Precision::kDec50);
  for (const bool checkpoints : {true, false}) {
    SCOPED_TRACE(checkpoints ? "checkpoints on" : "checkpoints off");
    const std::string journal = journalPath("resume-journal");
    auto o = baseOptions(1, journal);
    // Progress every 5 ms, so the 80% mark is seen before the job ends however fast it runs
    // (at the default 100 ms a fast run could go from below 80% to done between two frames).
    o.coordinator_args.insert(o.coordinator_args.end(), {"--progress-interval-ms", "5"});
    if (!checkpoints)
      o.coordinator_args.insert(o.coordinator_args.end(), {"--checkpoint-min-inputs", "0"});
    auto cluster = startCluster(o);
    ASSERT_NE(cluster, nullptr);
    Client c(cluster->endpoint(), cluster->clientCurve());
    ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
    // An uninterrupted run first: the full time to compare with.
    auto t0 = std::chrono::steady_clock::now();
    auto full = c.run(*job, {}, 300 * kSeconds);
    ASSERT_TRUE(full.ok()) << full.status();
    const double full_s = secondsSince(t0);
    ASSERT_EQ(*full->output("pi"), want);

    auto id = c.submit(*job);
    ASSERT_TRUE(id.ok()) << id.status();
    bool crashed = false;
    uint64_t done_at_kill = 0;
    std::chrono::steady_clock::time_point killed_at;
    auto r = c.wait(
        *id,
        [&](const client::Progress& p) {
          if (!crashed && p.done > p.total * 8 / 10) {
            crashed = true;
            done_at_kill = p.done;
            killed_at = std::chrono::steady_clock::now();
            EXPECT_TRUE(cluster->restartCoordinator(SIGKILL).ok());
          }
        },
        300 * kSeconds);
    ASSERT_TRUE(crashed) << "the job finished before the coordinator could be killed";
    ASSERT_TRUE(r.ok()) << r.status();
    const double resume_s = secondsSince(killed_at);
    EXPECT_EQ(r->id, *id);
    EXPECT_EQ(r->state, client::JobState::kSucceeded);
    EXPECT_EQ(*r->output("pi"), want);
    const uint64_t rerun = completedOf(c, "leibniz.term_dec50");
    std::printf(
        "[ figures ] checkpoints %s: full run %.2f s; killed at %llu/%llu tokens done; after the "
        "kill the client had its result after %.2f s (restart, node re-registration and the "
        "client's 2 s re-watch included); the resumed job ran %.2f s in the new coordinator "
        "(full run: %.2f s there); terms run by the restarted coordinator: %llu of %llu\n",
        checkpoints ? "on" : "off", full_s, static_cast<unsigned long long>(done_at_kill),
        static_cast<unsigned long long>(job->tokenCount()), resume_s,
        static_cast<double>(r->wall_ns) / 1e9, static_cast<double>(full->wall_ns) / 1e9,
        static_cast<unsigned long long>(rerun), static_cast<unsigned long long>(terms));
    if (checkpoints) {
      // ~20% of the terms remained (plus chunks whose sum had not reached the journal yet).
      EXPECT_LT(rerun, terms * 4 / 10);
    } else {
      EXPECT_GE(rerun, terms * 9 / 10);  // without checkpoints everything runs again
    }
    cluster->stop();
    std::filesystem::remove(journal);
  }
}

// Issue 11's crash harness: the coordinator is SIGKILLed at random moments while three clients
// submit jobs (with and without idempotency keys) and wait for them. Every acknowledged job
// must finish, under its id, with its own result (each job carries a value unique to it, so a
// client handed another job's data fails), however many times the coordinator died meanwhile.
//
// Idempotency keys: every second job gives its `echo` token (which waits for pi, so it runs
// last) a key. Right after such a job is acknowledged the client submits a duplicate (a job of
// one `echo` with the same key and a different value): it waits as an alias of the first job's
// token, across restarts, and must finish with the FIRST job's value. And after every restart
// each client resubmits two keys whose first results it has already seen, again with other
// values: the answer must be the first result, never the new value (a new run).
TEST(JournalClusterTest, CrashHarnessEveryAcknowledgedJobFinishesWithItsOwnResult) {
  const int kills = getenv("TG_CRASH_KILLS") ? std::atoi(getenv("TG_CRASH_KILLS")) : 6;
  const std::string journal = journalPath("crash-journal");
  auto cluster = startCluster(baseOptions(2, journal));
  ASSERT_NE(cluster, nullptr);
  {
    Client c(cluster->endpoint(), cluster->clientCurve());
    ASSERT_TRUE(c.waitForNodes(2, 30 * kSeconds).ok());
  }
  const uint64_t terms = 20'000;
  const Value pi = leibnizLocal(terms, Precision::kDouble);
  std::atomic<bool> stop{false};
  std::atomic<int> restarts{0};
  std::atomic<uint64_t> acked{0}, verified{0}, unacked{0};
  std::atomic<uint64_t> dup_acked{0}, dup_first{0}, resubmitted{0}, resubmit_first{0},
      resubmit_unacked{0};
  std::mutex mu;
  std::vector<std::string> failures;
  // Why submissions were not acknowledged, by message (shown with the figures): a restart
  // explains a timeout; an error that repeats thousands of times in seconds is a client bug.
  std::map<std::string, uint64_t> unacked_why;
  auto notAcked = [&](const Status& st) {
    std::lock_guard<std::mutex> lock(mu);
    ++unacked_why[std::string(absl::StatusCodeToString(st.code())) + ": " +
                  std::string(st.message())];
  };
  auto fail = [&](std::string why) {
    std::lock_guard<std::mutex> lock(mu);
    failures.push_back(std::move(why));
  };
  // A job of one echo of `v` with `key` (a duplicate: it must be answered with the key's first
  // result instead of running).
  auto duplicate = [](const std::string& key, int64_t v) {
    JobSpec d;
    d.name = "dup-" + key;
    TokenSpec e;
    e.op = "echo";
    e.args.push_back(Arg::val(v));
    e.output = true;
    e.name = "tag";
    e.idempotency_key = key;
    d.add(e);
    return d;
  };
  // Waits for a duplicate of `key` (first result `first`); true if answered with it.
  auto checkDuplicate = [&](Client& c, uint64_t id, const std::string& key, int64_t first) {
    auto r = c.wait(id, {}, 120 * kSeconds);
    if (!r.ok()) {
      fail(fmt::format("acknowledged duplicate {} of key {}: {}", id, key, r.status().message()));
      return false;
    }
    auto got = r->output("tag");
    if (r->id != id || r->state != client::JobState::kSucceeded || !got.ok() ||
        *got != Value(first)) {
      fail(fmt::format("duplicate {} of key {}: got {} (state {}), the key's first result is {}",
                       id, key, got.ok() ? got->toString() : got.status().ToString(),
                       static_cast<int>(r->state), first));
      return false;
    }
    return true;
  };
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&, t] {
      Client c(cluster->endpoint(), cluster->clientCurve());
      std::mt19937 pick(static_cast<uint32_t>(t + 17));
      std::vector<std::pair<std::string, int64_t>> seen_keys;  // first results this client saw
      int seen_restarts = 0;
      for (int64_t seq = 0; !stop.load(); ++seq) {
        if (const int r = restarts.load(); r != seen_restarts && !seen_keys.empty()) {
          seen_restarts = r;
          for (int i = 0; i < 2; ++i) {
            const auto& [key, first] = seen_keys[pick() % seen_keys.size()];
            auto id = c.submit(duplicate(key, -first - r), 3 * kSeconds);
            if (!id.ok()) {
              ++resubmit_unacked;
              notAcked(id.status());
              continue;
            }
            ++resubmitted;
            if (checkDuplicate(c, *id, key, first)) ++resubmit_first;
          }
        }
        const int64_t tag = int64_t{t + 1} * 1'000'000'000 + seq;
        auto job = makeLeibnizJob(terms, Precision::kDouble);
        if (!job.ok()) return fail(std::string(job.status().message()));
        job->name = "crash-" + std::to_string(tag);
        uint32_t pi_token = 0;
        for (const TokenSpec& ts : job->tokens) {
          if (ts.name == "pi") break;
          pi_token += ts.repeat;
        }
        TokenSpec e;
        e.op = "echo";
        e.args.push_back(Arg::val(tag));
        e.args.push_back(Arg::ref(pi_token));  // runs once pi is there (echo returns args[0])
        e.output = true;
        e.name = "tag";
        const bool keyed = seq % 2 == 1;
        const std::string key = "crash-key-" + std::to_string(tag);
        if (keyed) e.idempotency_key = key;
        job->add(e);
        auto id = c.submit(*job, 3 * kSeconds);
        if (!id.ok()) {
          ++unacked;  // not acknowledged (the coordinator was down): no promise made
          notAcked(id.status());
          continue;
        }
        ++acked;
        // A duplicate while the first is still running: a pending alias, across restarts.
        StatusOr<uint64_t> dup = absl::UnavailableError("not keyed");
        if (keyed) {
          dup = c.submit(duplicate(key, -tag), 3 * kSeconds);
          if (dup.ok()) ++dup_acked;
        }
        auto r = c.wait(*id, {}, 120 * kSeconds);
        if (!r.ok()) {
          fail(fmt::format("acknowledged job {} (tag {}): {}", *id, tag, r.status().message()));
          continue;
        }
        auto got_tag = r->output("tag");
        auto got_pi = r->output("pi");
        if (r->id != *id || r->state != client::JobState::kSucceeded || !got_tag.ok() ||
            *got_tag != Value(tag) || !got_pi.ok() || *got_pi != pi) {
          fail(fmt::format("job {} (tag {}): wrong outcome: id {}, tag {}, pi {}", *id, tag, r->id,
                           got_tag.ok() ? got_tag->toString() : got_tag.status().ToString(),
                           got_pi.ok() ? got_pi->toString() : got_pi.status().ToString()));
          continue;
        }
        ++verified;
        if (keyed) seen_keys.emplace_back(key, tag);
        if (dup.ok() && checkDuplicate(c, *dup, key, tag)) ++dup_first;
      }
    });
  }
  // At least `kills` SIGKILLs, then more until the run has exercised what it checks (enough
  // acknowledged jobs, a duplicate of a running keyed job, a resubmission of a seen key after a
  // restart): how many submissions get through between kills depends on the machine's load
  // (under asan on a busy machine a restart takes seconds), so a fixed time proves nothing.
  // Each extra kill waits for a new acknowledgement first, so every round makes progress.
  constexpr uint64_t kMinAcked = 6;
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  auto enough = [&] {
    return acked.load() >= kMinAcked && dup_acked.load() > 0 && resubmitted.load() > 0;
  };
  auto pastLimit = [&] { return std::chrono::steady_clock::now() >= limit; };
  std::mt19937 rng(static_cast<uint32_t>(getpid()));
  std::uniform_int_distribution<int> pause_ms(50, 700);
  int done_kills = 0;
  while ((done_kills < kills || !enough()) && !pastLimit()) {
    if (done_kills >= kills) {
      const uint64_t before = acked.load();
      while (acked.load() == before && !pastLimit())
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms(rng)));
    if (Status st = cluster->restartCoordinator(SIGKILL); !st.ok()) {
      ADD_FAILURE() << "restart " << done_kills << ": " << st;
      break;
    }
    ++done_kills;
    ++restarts;
  }
  // Let the clients finish what they are waiting for (and resubmit after the last restart);
  // an acknowledged job is always waited for, whatever `stop` says.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  for (auto& th : clients) th.join();
  std::printf(
      "[ figures ] crash harness: %d SIGKILLs; %llu jobs acknowledged, %llu finished with their "
      "own result, %llu submissions not acknowledged; keys: %llu duplicates submitted while the "
      "first ran, %llu answered with the first result; %llu resubmissions of seen keys after "
      "restarts (%llu not acknowledged), %llu answered with the first result; %zu failures\n",
      done_kills, static_cast<unsigned long long>(acked.load()),
      static_cast<unsigned long long>(verified.load()),
      static_cast<unsigned long long>(unacked.load()),
      static_cast<unsigned long long>(dup_acked.load()),
      static_cast<unsigned long long>(dup_first.load()),
      static_cast<unsigned long long>(resubmitted.load()),
      static_cast<unsigned long long>(resubmit_unacked.load()),
      static_cast<unsigned long long>(resubmit_first.load()), failures.size());
  for (const auto& [why, n] : unacked_why)
    std::printf("[ figures ] not acknowledged %llu times: %s\n", static_cast<unsigned long long>(n),
                why.c_str());
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_GE(done_kills, kills);
  EXPECT_TRUE(enough()) << "the run ended (" << done_kills
                        << " kills; it stops after 300 s) with only " << acked.load()
                        << " jobs were acknowledged (" << dup_acked.load()
                        << " duplicates of running keyed jobs, " << resubmitted.load()
                        << " resubmissions of seen keys); see the reasons above";
  EXPECT_GT(verified.load(), 0u);
  EXPECT_EQ(verified.load(), acked.load());
  EXPECT_GT(resubmitted.load(), 0u);
  EXPECT_EQ(resubmit_first.load(), resubmitted.load());
  EXPECT_GT(dup_acked.load(), 0u);
  EXPECT_EQ(dup_first.load(), dup_acked.load());
  cluster->stop();
  std::filesystem::remove(journal);
}

}  // namespace
}  // namespace tokengate
