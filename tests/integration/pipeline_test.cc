// The pipelined C++ client (Client::submitAsync / waitAny / wait(handle) / waitAll) against
// real processes on loopback: a coordinator and nodes started by LocalCluster, with CURVE.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <zmq.hpp>

#include "client/client.h"
#include "client/local_cluster.h"
#include "common/security/curve.h"
#include "common/wire.h"
#include "tests/support/cluster_fixture.h"

namespace tokengate {
namespace {

using client::AsyncResult;
using client::Backpressure;
using client::Client;
using client::JobHandle;
using client::LocalCluster;
using client::LocalClusterOptions;

using testing::startCluster;

LocalClusterOptions baseOptions(uint32_t nodes) {
  return testing::clusterOptions(nodes, /*fast_failure_detection=*/false);
}

JobSpec echoJob(int64_t v) {
  JobSpec job;
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::val(v));
  job.add(t);
  return job;
}

TEST(PipelineTest, TwoThousandOneTokenJobsInFlightCompleteExactlyOnce) {
  auto cluster = startCluster(baseOptions(2));
  ASSERT_NE(cluster, nullptr);
  Client c(cluster->endpoint(), cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(2, 30 * kSeconds).ok());
  auto before = c.info();
  ASSERT_TRUE(before.ok()) << before.status();
  constexpr int kJobs = 2000;
  c.setWindow(kJobs);                    // all of them in flight at once
  std::map<uint64_t, int64_t> expected;  // handle -> echoed value
  for (int i = 0; i < kJobs; ++i) {
    auto h = c.submitAsync(echoJob(1000 + i));
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE(expected.emplace(h->id, 1000 + i).second) << "handle reused";
  }
  EXPECT_EQ(c.outstanding(), static_cast<size_t>(kJobs));
  std::set<uint64_t> handles_seen, jobs_seen;
  for (int i = 0; i < kJobs; ++i) {
    auto r = c.waitAny(120 * kSeconds);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->result.ok()) << r->result.status();
    EXPECT_TRUE(handles_seen.insert(r->handle.id).second) << "handle " << r->handle.id << " twice";
    EXPECT_TRUE(jobs_seen.insert(r->result->id).second) << "job " << r->result->id << " twice";
    EXPECT_EQ(r->result->state, client::JobState::kSucceeded);
    auto v = r->result->output();
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_TRUE(v->isInt());
    EXPECT_EQ(v->asInt(), expected.at(r->handle.id));  // this handle's job, not another's
  }
  EXPECT_EQ(handles_seen.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(c.inFlight(), 0u);
  EXPECT_EQ(c.outstanding(), 0u);
  EXPECT_EQ(c.waitAny(kSeconds).status().code(), StatusCode::kNotFound);
  // Each job ran exactly once on the cluster.
  auto after = c.info();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->tokens_completed - before->tokens_completed, static_cast<uint64_t>(kJobs));
  // The blocking calls still work on the same client afterwards.
  auto r = c.run(echoJob(7), {}, 60 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->output()->asInt(), 7);
}

TEST(PipelineTest, AWindowOfOneBehavesLikeSubmit) {
  auto cluster = startCluster(baseOptions(1));
  ASSERT_NE(cluster, nullptr);
  Client c(cluster->endpoint(), cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  c.setWindow(1);
  std::vector<JobHandle> handles;
  for (int i = 0; i < 20; ++i) {
    auto h = c.submitAsync(echoJob(i), Backpressure::kFail, 60 * kSeconds);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_LE(c.inFlight(), 1u);
    // submitAsync blocked until the previous job's result was in: taking it does not wait.
    if (!handles.empty()) {
      auto prev = c.wait(handles.back(), 0);
      ASSERT_TRUE(prev.ok()) << prev.status();
      ASSERT_TRUE(prev->result.ok()) << prev->result.status();
      EXPECT_EQ(prev->result->output()->asInt(), i - 1);
    }
    handles.push_back(*h);
  }
  auto last = c.wait(handles.back(), 60 * kSeconds);
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_TRUE(last->result.ok()) << last->result.status();
  EXPECT_EQ(last->result->output()->asInt(), 19);
  // Taken once: a second wait on the same handle is NotFound.
  EXPECT_EQ(c.wait(handles.back(), 0).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c.outstanding(), 0u);
}

TEST(PipelineTest, ARejectedSubmissionSurfacesOnItsHandleAndTheOthersComplete) {
  auto o = baseOptions(1);
  o.coordinator_args = {"--max-live-tokens", "25000"};
  auto cluster = startCluster(o);
  ASSERT_NE(cluster, nullptr);
  Client c(cluster->endpoint(), cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  auto big = makeLeibnizJob(30'000, Precision::kDouble);  // 30,000 tokens > the limit
  ASSERT_TRUE(big.ok());
  auto h1 = c.submitAsync(echoJob(1));
  auto h2 = c.submitAsync(*big);
  auto h3 = c.submitAsync(echoJob(3));
  ASSERT_TRUE(h1.ok() && h2.ok() && h3.ok());
  auto all = c.waitAll(60 * kSeconds);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].handle, *h1);
  EXPECT_EQ((*all)[1].handle, *h2);
  EXPECT_EQ((*all)[2].handle, *h3);
  ASSERT_TRUE((*all)[0].result.ok()) << (*all)[0].result.status();
  EXPECT_EQ((*all)[0].result->output()->asInt(), 1);
  EXPECT_EQ((*all)[1].result.status().code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE((*all)[2].result.ok()) << (*all)[2].result.status();
  EXPECT_EQ((*all)[2].result->output()->asInt(), 3);
  EXPECT_EQ(c.inFlight(), 0u);
}

TEST(PipelineTest, RetryBackpressureAdmitsJobsThatFitOneAtATime) {
  auto o = baseOptions(1);
  o.coordinator_args = {"--max-live-tokens", "25000"};
  auto cluster = startCluster(o);
  ASSERT_NE(cluster, nullptr);
  Client c(cluster->endpoint(), cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  // Each fits alone, two do not: with kRetry the second is re-sent until the first is done.
  auto j = makeLeibnizJob(20'000, Precision::kDouble);
  ASSERT_TRUE(j.ok());
  // The kFail one, sent while the first is live, shows the limit bites: the kRetry one sent
  // after it was refused too, and got in by retrying.
  auto h1 = c.submitAsync(*j, Backpressure::kRetry, 120 * kSeconds);
  auto h2 = c.submitAsync(*j, Backpressure::kFail, 120 * kSeconds);
  auto h3 = c.submitAsync(*j, Backpressure::kRetry, 120 * kSeconds);
  ASSERT_TRUE(h1.ok() && h2.ok() && h3.ok());
  auto all = c.waitAll(120 * kSeconds);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[1].result.status().code(), StatusCode::kResourceExhausted);
  for (size_t i : {size_t{0}, size_t{2}}) {
    const AsyncResult& r = (*all)[i];
    ASSERT_TRUE(r.result.ok()) << r.result.status();
    EXPECT_EQ(*r.result->output("pi"), leibnizLocal(20'000, Precision::kDouble));
  }
  EXPECT_NE((*all)[0].result->id, (*all)[2].result->id);
}

TEST(PipelineTest, AJobNotBackWithinItsTimeoutCompletesItsHandleWithDeadlineExceeded) {
  auto o = baseOptions(1);
  o.node_args = {"--enable-test-ops"};  // sleep
  auto cluster = startCluster(o);
  ASSERT_NE(cluster, nullptr);
  Client c(cluster->endpoint(), cluster->clientCurve());
  ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  JobSpec slow;
  TokenSpec t;
  t.op = "sleep";
  t.args.push_back(Arg::val(int64_t{5'000}));  // 5 s: cannot be back within 300 ms
  slow.add(t);
  auto hs = c.submitAsync(slow, Backpressure::kFail, 300 * kMillis);
  auto hf = c.submitAsync(echoJob(5), Backpressure::kFail, 60 * kSeconds);
  ASSERT_TRUE(hs.ok() && hf.ok());
  auto fast = c.wait(*hf, 60 * kSeconds);
  ASSERT_TRUE(fast.ok()) << fast.status();
  ASSERT_TRUE(fast->result.ok()) << fast->result.status();
  EXPECT_EQ(fast->result->output()->asInt(), 5);
  auto r = c.waitAny(30 * kSeconds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->handle, *hs);
  EXPECT_EQ(r->result.status().code(), StatusCode::kDeadlineExceeded) << r->result.status();
  EXPECT_EQ(c.inFlight(), 0u);
  EXPECT_EQ(c.outstanding(), 0u);
}

// SubmitJob.ackWithResult against real processes (issue 13): with a 2 s ack hold, fast jobs
// are answered by one JobDone carrying their request id and get no SubmitReply; a job still
// running when the hold ends gets its SubmitReply then, its JobDone later. The pipelined
// client completes its handles from such JobDones (and, with the option off, as before).
TEST(PipelineTest, AcksRideOnTheResultAndALongJobIsAckedAtTheHoldsEnd) {
  auto o = baseOptions(1);
  o.coordinator_args.insert(o.coordinator_args.end(), {"--ack-hold-us", "2000000"});
  o.node_args = {"--enable-test-ops"};  // sleep
  auto cluster = startCluster(o);
  ASSERT_NE(cluster, nullptr);
  {
    Client c(cluster->endpoint(), cluster->clientCurve());
    ASSERT_TRUE(c.waitForNodes(1, 30 * kSeconds).ok());
  }
  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.set(zmq::sockopt::rcvtimeo, 60'000);
  ASSERT_TRUE(security::applyClientKeys(sock, cluster->clientCurve()).ok());
  sock.connect(cluster->endpoint());
  JobSpec slow;
  TokenSpec t;
  t.op = "sleep";
  t.args.push_back(Arg::val(int64_t{4'000}));  // outlasts the 2 s hold
  slow.add(t);
  constexpr uint64_t kFast = 20, kSlow = kFast + 1;
  // The fast jobs first, the slow one once they are back: sent together, the slow token could
  // hold the node's worker while the fast ones wait past the hold.
  for (uint64_t req = 1; req <= kFast; ++req) {
    const std::string f = submitJobFrame(echoJob(static_cast<int64_t>(req)), req, true, true);
    sock.send(zmq::buffer(f), zmq::send_flags::none);
  }
  bool slow_sent = false;
  std::set<uint64_t> done_requests;
  uint64_t slow_job = 0;
  bool slow_done = false;
  int replies = 0;
  while (!slow_done) {
    zmq::message_t m;
    ASSERT_TRUE(sock.recv(m, zmq::recv_flags::none)) << "no frame within 60 s";
    auto frame = decodeFrame(m.data(), m.size());
    ASSERT_TRUE(frame.ok()) << frame.status();
    auto root = (*frame)->root();
    if (root.isSubmitReply()) {
      ++replies;
      auto r = root.getSubmitReply();
      EXPECT_EQ(r.getRequestId(), kSlow) << "a fast job got a SubmitReply";
      ASSERT_TRUE(r.isJobId());
      EXPECT_NE(r.getIncarnation(), 0u);
      slow_job = r.getJobId();
    } else if (root.isJobDone()) {
      auto d = root.getJobDone();
      if (d.getRequestId() == 0) {
        EXPECT_NE(slow_job, 0u) << "a JobDone without request id before its SubmitReply";
        EXPECT_EQ(d.getJobId(), slow_job);
        EXPECT_EQ(done_requests.size(), kFast);  // the fast ones came first
        slow_done = true;
        continue;
      }
      EXPECT_NE(d.getIncarnation(), 0u);
      EXPECT_EQ(d.getState(), wire::JobState::SUCCEEDED);
      EXPECT_EQ(fromWire(d.getOutputs()[0].getValue()),
                Value(static_cast<int64_t>(d.getRequestId())));
      EXPECT_TRUE(done_requests.insert(d.getRequestId()).second) << d.getRequestId() << " twice";
    }
    if (done_requests.size() == kFast && !slow_sent) {
      const std::string sf = submitJobFrame(slow, kSlow, true, /*ack_with_result=*/true);
      sock.send(zmq::buffer(sf), zmq::send_flags::none);
      slow_sent = true;
    }
  }
  EXPECT_EQ(replies, 1);
  EXPECT_EQ(done_requests.size(), kFast);

  // The pipelined client, with the option on (default) and off.
  for (bool on : {true, false}) {
    Client c(cluster->endpoint(), cluster->clientCurve());
    EXPECT_TRUE(c.ackWithResult());
    c.setAckWithResult(on);
    std::map<uint64_t, int64_t> expected;
    for (int i = 0; i < 200; ++i) {
      auto h = c.submitAsync(echoJob(i), Backpressure::kFail, 60 * kSeconds);
      ASSERT_TRUE(h.ok()) << h.status();
      expected[h->id] = i;
    }
    auto all = c.waitAll(60 * kSeconds);
    ASSERT_TRUE(all.ok()) << all.status() << " (ack with result " << on << ")";
    ASSERT_EQ(all->size(), 200u);
    std::set<uint64_t> jobs;
    for (const auto& r : *all) {
      ASSERT_TRUE(r.result.ok()) << r.result.status();
      EXPECT_NE(r.result->id, 0u);
      EXPECT_TRUE(jobs.insert(r.result->id).second);
      EXPECT_EQ(r.result->output()->asInt(), expected.at(r.handle.id));
    }
  }
}

}  // namespace
}  // namespace tokengate
