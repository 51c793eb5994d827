// Unit tests of the gateway's pure pieces: URL parsing, access policy, token
// buckets (FakeClock), event fan-out and the protocol's request parsing and
// session commands. No sockets.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/gateway/access_policy.h"
#include "coordinator/gateway/connection_limits.h"
#include "coordinator/gateway/fanout.h"
#include "coordinator/gateway/protocol.h"
#include "coordinator/gateway/token_bucket.h"
#include "coordinator/gateway/url.h"
#include "tests/fakes/fake_clock.h"

namespace tokengate::gateway {
namespace {

namespace json = boost::json;
using tokengate::testing::FakeClock;

TEST(Url, PathAndQuery) {
  EXPECT_EQ(pathOf("/ws?token=a"), "/ws");
  EXPECT_EQ(pathOf("/metrics"), "/metrics");
  EXPECT_EQ(queryParam("/ws?x=1&token=a%2Bb+c", "token"), "a+b c");
  EXPECT_EQ(queryParam("/ws?tokenx=1", "token"), "");
  EXPECT_EQ(queryParam("/ws", "token"), "");
  EXPECT_EQ(percentDecode("%zz%4"), "%zz%4");
}

TEST(Url, BearerForms) {
  EXPECT_EQ(bearerToken("Bearer abc"), "abc");
  EXPECT_EQ(bearerToken("bearer abc"), "abc");
  EXPECT_EQ(bearerToken("BEARER \t abc  "), "abc");
  EXPECT_EQ(bearerToken("Basic abc"), std::nullopt);
  EXPECT_EQ(bearerToken("Bearer"), std::nullopt);
  EXPECT_EQ(bearerToken("Bearer "), std::nullopt);
  EXPECT_EQ(bearerToken("Bearerabc"), std::nullopt);
  EXPECT_EQ(bearerToken("abc"), std::nullopt);
  EXPECT_EQ(bearerToken("Bearer a b"), std::nullopt);
}

TEST(AccessPolicy, RolesFromTokens) {
  AccessPolicy p({"v"}, {"o"}, {"a", "o"}, false, {});
  EXPECT_EQ(p.roleForToken("v"), Role::kViewer);
  EXPECT_EQ(p.roleForToken("o"), Role::kAdmin);  // highest role wins
  EXPECT_EQ(p.roleForToken("a"), Role::kAdmin);
  EXPECT_EQ(p.roleForToken("x"), Role::kNone);
  EXPECT_EQ(p.roleForToken(""), Role::kNone);
  EXPECT_EQ(p.initialRole(), Role::kNone);
  EXPECT_EQ(AccessPolicy({}, {}, {}, true, {}).initialRole(), Role::kViewer);
}

TEST(AccessPolicy, SameOriginChecksScheme) {
  AccessPolicy p({}, {}, {}, false, {});
  EXPECT_TRUE(p.originAllowed("http://gw.example:8080", "gw.example:8080", false));
  EXPECT_TRUE(p.originAllowed("HTTP://GW.example:8080/", "gw.example:8080", false));
  // The scheme must match the connection: an http page may not drive a TLS gateway.
  EXPECT_FALSE(p.originAllowed("http://gw.example:8080", "gw.example:8080", true));
  EXPECT_TRUE(p.originAllowed("https://gw.example:8080", "gw.example:8080", true));
  EXPECT_FALSE(p.originAllowed("ftp://gw.example:8080", "gw.example:8080", false));
  // Default ports are the same origin as none.
  EXPECT_TRUE(p.originAllowed("https://gw.example", "gw.example:443", true));
  EXPECT_TRUE(p.originAllowed("http://gw.example:80", "gw.example", false));
  EXPECT_FALSE(p.originAllowed("http://evil.example:8080", "gw.example:8080", false));
  EXPECT_FALSE(p.originAllowed("null", "gw.example", false));
  EXPECT_TRUE(p.originAllowed("http://[::1]:8080", "[::1]:8080", false));
}

TEST(AccessPolicy, AllowListComparesSchemeHostPort) {
  AccessPolicy p({}, {}, {}, false, {"https://ui.example", "http://localhost:3000"});
  EXPECT_TRUE(p.originAllowed("https://ui.example", "gw:8080", false));
  EXPECT_TRUE(p.originAllowed("https://UI.example:443/", "gw:8080", false));
  EXPECT_FALSE(p.originAllowed("http://ui.example", "gw:8080", false));
  EXPECT_FALSE(p.originAllowed("https://ui.example:8443", "gw:8080", false));
  EXPECT_TRUE(p.originAllowed("http://localhost:3000", "gw:8080", false));
  // The list replaces same-origin (Host is client-chosen).
  EXPECT_FALSE(p.originAllowed("http://gw:8080", "gw:8080", false));
  EXPECT_TRUE(AccessPolicy({}, {}, {}, false, {"*"}).originAllowed("http://x", "y", false));
  EXPECT_EQ(parseOriginList(" a , ,b,"), (std::vector<std::string>{"a", "b"}));
}

TEST(TokenBucket, RefillsOnFakeClock) {
  FakeClock clock;
  TokenBucket b(10, 3, clock.now());
  EXPECT_TRUE(b.take(clock.now()));
  EXPECT_TRUE(b.take(clock.now()));
  EXPECT_TRUE(b.take(clock.now()));
  EXPECT_FALSE(b.take(clock.now()));
  clock.advanceMs(100);  // one token at 10/s
  EXPECT_TRUE(b.take(clock.now()));
  EXPECT_FALSE(b.take(clock.now()));
  clock.advanceMs(10'000);  // capped at the burst
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.take(clock.now()));
  EXPECT_FALSE(b.take(clock.now()));
  TokenBucket unlimited(0, 1, clock.now());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(unlimited.take(clock.now()));
}

TEST(KeyedRateLimiter, PerKeyAndBoundedMemory) {
  FakeClock clock;
  KeyedRateLimiter l(10, 2, /*max_keys=*/2);
  EXPECT_TRUE(l.take("a", clock.now()));
  EXPECT_TRUE(l.take("a", clock.now()));
  EXPECT_FALSE(l.take("a", clock.now()));  // a's bucket is shared by all of a's connections
  EXPECT_TRUE(l.take("b", clock.now()));   // other keys are not affected
  // The map is full (a, b): a third key shares the overflow bucket.
  EXPECT_TRUE(l.take("c", clock.now()));
  EXPECT_TRUE(l.take("d", clock.now()));
  EXPECT_FALSE(l.take("e", clock.now()));
  EXPECT_EQ(l.keys(), 2u);
  // Once a and b have refilled they are forgotten and new keys get buckets.
  clock.advanceMs(1000);
  EXPECT_TRUE(l.take("c", clock.now()));
  EXPECT_TRUE(l.take("c", clock.now()));
  EXPECT_FALSE(l.take("c", clock.now()));
  EXPECT_LE(l.keys(), 2u);
}

TEST(ConnectionLimiter, UnauthenticatedNeverTakeAuthenticatedSlots) {
  using R = ConnectionLimiter::Result;
  ConnectionLimiter l(/*auth=*/2, /*unauth=*/3, /*per_ip=*/2);
  EXPECT_EQ(l.admitUnauthenticated("1.1.1.1"), R::kOk);
  EXPECT_EQ(l.admitUnauthenticated("1.1.1.1"), R::kOk);
  EXPECT_EQ(l.admitUnauthenticated("1.1.1.1"), R::kTooManyFromAddress);
  EXPECT_EQ(l.admitUnauthenticated("2.2.2.2"), R::kOk);
  EXPECT_EQ(l.admitUnauthenticated("3.3.3.3"), R::kTooManyUnauthenticated);
  // The unauthenticated pool is full; operators still get in with a token.
  EXPECT_EQ(l.admitAuthenticated(), R::kOk);
  EXPECT_EQ(l.unauthenticated(), 3u);
  // An unauthenticated session that authenticates moves pools.
  EXPECT_EQ(l.promote("1.1.1.1"), R::kOk);
  EXPECT_EQ(l.authenticated(), 2u);
  EXPECT_EQ(l.unauthenticated(), 2u);
  EXPECT_EQ(l.admitUnauthenticated("1.1.1.1"), R::kOk);  // its per-IP slot came back
  EXPECT_EQ(l.admitAuthenticated(), R::kTooManyClients);
  EXPECT_EQ(l.promote("2.2.2.2"), R::kTooManyClients);
  EXPECT_EQ(l.unauthenticated(), 3u);  // a failed promote keeps its slot
  l.releaseAuthenticated();
  l.releaseUnauthenticated("2.2.2.2");
  EXPECT_EQ(l.authenticated(), 1u);
  EXPECT_EQ(l.unauthenticated(), 2u);
}

TEST(ConnectionLimiter, CapIsExactUnderConcurrency) {
  ConnectionLimiter l(100, 50, 1000);
  std::atomic<int> ok_auth{0}, ok_unauth{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (l.admitAuthenticated() == ConnectionLimiter::Result::kOk) ++ok_auth;
        if (l.admitUnauthenticated("ip") == ConnectionLimiter::Result::kOk) ++ok_unauth;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok_auth.load(), 100);
  EXPECT_EQ(ok_unauth.load(), 50);
}

TEST(AuthBackoff, FailuresBackOffPerAddress) {
  FakeClock clock;
  AuthBackoff b(/*free=*/3, /*base=*/kSeconds, /*max=*/8 * kSeconds);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(b.blockedFor("a", clock.now()), 0);
    b.onFailure("a", clock.now());
  }
  EXPECT_EQ(b.blockedFor("a", clock.now()), 0);
  b.onFailure("a", clock.now());  // 4th: 1 s
  EXPECT_EQ(b.blockedFor("a", clock.now()), kSeconds);
  EXPECT_EQ(b.blockedFor("b", clock.now()), 0);  // other addresses unaffected
  clock.advanceMs(1000);
  EXPECT_EQ(b.blockedFor("a", clock.now()), 0);
  b.onFailure("a", clock.now());  // 5th: 2 s
  EXPECT_EQ(b.blockedFor("a", clock.now()), 2 * kSeconds);
  clock.advanceMs(2000);
  b.onFailure("a", clock.now());  // 6th: 4 s
  clock.advanceMs(4000);
  b.onFailure("a", clock.now());  // 7th: 8 s
  clock.advanceMs(8000);
  b.onFailure("a", clock.now());  // capped at 8 s
  EXPECT_EQ(b.blockedFor("a", clock.now()), 8 * kSeconds);
  b.onSuccess("a");
  EXPECT_EQ(b.blockedFor("a", clock.now()), 0);
  // An address idle for a full maximum block starts over.
  for (int i = 0; i < 4; ++i) b.onFailure("c", clock.now());
  clock.advanceMs(20'000);
  b.onFailure("c", clock.now());
  EXPECT_EQ(b.blockedFor("c", clock.now()), 0);
}

TEST(AuthBackoff, GuessingRateIsBounded) {
  // A guesser that retries the moment it may: over 60 s it gets the free
  // attempts plus about one per max_block, not thousands.
  FakeClock clock;
  AuthBackoff b(5, kSeconds, 30 * kSeconds);
  int attempts = 0;
  const Nanos end = clock.now() + 60 * kSeconds;
  while (clock.now() < end) {
    Nanos wait = b.blockedFor("x", clock.now());
    if (wait > 0) {
      clock.advance(wait);
      continue;
    }
    ++attempts;
    b.onFailure("x", clock.now());
    clock.advanceMs(1);
  }
  EXPECT_LE(attempts, 12);
}

TEST(AuthBackoff, MemoryIsBounded) {
  FakeClock clock;
  AuthBackoff b(0, kSeconds, 10 * kSeconds, /*max_ips=*/4);
  for (int i = 0; i < 100; ++i) b.onFailure("ip" + std::to_string(i), clock.now());
  EXPECT_LE(b.addresses(), 4u);
  // New addresses share the overflow record, which is blocked too.
  EXPECT_GT(b.blockedFor("ip99", clock.now()), 0);
}

TEST(OutboundBudget, DropsTheLargestQueue) {
  OutboundBudget b(100);
  EXPECT_EQ(b.add(1, 60), std::nullopt);
  EXPECT_EQ(b.add(2, 30), std::nullopt);
  EXPECT_EQ(b.add(2, 20), std::optional<uint64_t>(1));  // 110 > 100: 1 holds the most
  b.forget(1);
  EXPECT_EQ(b.total(), 50u);
  b.remove(2, 50);
  EXPECT_EQ(b.total(), 0u);
  EXPECT_EQ(b.add(3, 101), std::optional<uint64_t>(3));
}

class RecordingSubscriber : public EventSubscriber {
 public:
  void deliverEvent(std::shared_ptr<const std::string> msg) override { got.push_back(*msg); }
  void shutdown() override { closed = true; }
  void evict(const char*) override { closed = true; }
  std::vector<std::string> got;
  bool closed = false;
};

TEST(Fanout, DeliversToSubscribedLiveSessions) {
  SessionRegistry r;
  auto a = std::make_shared<RecordingSubscriber>();
  auto b = std::make_shared<RecordingSubscriber>();
  a->topics = kTopicJob;
  b->topics = kTopicJob | kTopicNodes;
  r.add(1, a);
  r.add(2, b);
  r.topicDelta(a->topics, +1);
  r.topicDelta(b->topics, +1);
  EXPECT_TRUE(r.wanted(kTopicJob));
  EXPECT_TRUE(r.wanted(kTopicNodes));
  EXPECT_FALSE(r.wanted(kTopicOps));
  auto msg = std::make_shared<const std::string>("m");
  EXPECT_EQ(r.fanOut(kTopicNodes, msg), 1u);
  EXPECT_EQ(r.fanOut(kTopicJob, msg), 2u);
  EXPECT_EQ(a->got.size(), 1u);
  EXPECT_EQ(b->got.size(), 2u);
  b.reset();  // a dead session is skipped
  EXPECT_EQ(r.fanOut(kTopicJob, msg), 1u);
  EXPECT_EQ(r.live().size(), 1u);
  EXPECT_EQ(r.find(1), a);
  EXPECT_EQ(r.find(2), nullptr);
  r.remove(1);
  EXPECT_EQ(r.size(), 1u);
  r.topicDelta(kTopicJob, -2);
  EXPECT_FALSE(r.wanted(kTopicJob));
}

TEST(Fanout, BacklogIsBounded) {
  FanoutBacklog q(2);
  EXPECT_TRUE(q.tryReserve());
  EXPECT_TRUE(q.tryReserve());
  EXPECT_FALSE(q.tryReserve());
  q.release();
  EXPECT_TRUE(q.tryReserve());
  EXPECT_EQ(q.pending(), 2);
}

TEST(Protocol, ParseRequest) {
  json::value id;
  auto r = parseRequest(R"({"id":7,"cmd":"job.status","job_id":1})", &id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->cmd, "job.status");
  EXPECT_EQ(id, json::value(7));
  r = parseRequest(R"({"id":"x","cmd":"nope"})", &id);
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(id, json::value("x"));
  EXPECT_EQ(parseRequest("[1]", &id).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parseRequest(R"({"id":[1],"cmd":"ping"})", &id).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(parseRequest("{", &id).status().code(), StatusCode::kInvalidArgument);
  // Found by protocol_fuzz: an id too large for a double is infinity, which JSON cannot echo.
  EXPECT_EQ(parseRequest(R"({"id":7555558888E000001951014577,"cmd":"ping"})", &id).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(id.is_null());
  EXPECT_EQ(
      errorReply(json::value(std::numeric_limits<double>::infinity()),
                 absl::InvalidArgumentError("x")),
      R"({"id":{"double":"inf"},"ok":false,"error":{"code":"invalid_argument","message":"x"}})");
  std::string deep(kMaxJsonDepth + 1, '[');
  deep += std::string(kMaxJsonDepth + 1, ']');
  EXPECT_EQ(parseRequest(R"({"cmd":"ping","data":)" + deep + "}", &id).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(Protocol, RoleCheck) {
  const CommandInfo* submit = findCommand("submit");
  ASSERT_NE(submit, nullptr);
  EXPECT_EQ(checkRole(*submit, Role::kNone).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(checkRole(*submit, Role::kViewer).code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(checkRole(*submit, Role::kOperator).ok());
}

TEST(Protocol, SessionCommands) {
  AccessPolicy policy({"v"}, {}, {"a"}, false, {});
  SessionState st;
  json::value id;
  auto run = [&](std::string_view text) {
    auto req = parseRequest(text, &id);
    EXPECT_TRUE(req.ok()) << text;
    return runSessionCommand(*req, st, policy, json::object{{"max_frame_bytes", 1}});
  };
  SessionOutcome o = run(R"({"cmd":"hello","token":"bad"})");
  EXPECT_TRUE(o.auth_failed);
  EXPECT_EQ(o.reply.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(st.role, Role::kNone);
  o = run(R"({"cmd":"hello","token":"v","protocol":1})");
  ASSERT_TRUE(o.reply.ok());
  EXPECT_TRUE(o.token_accepted);
  EXPECT_EQ(st.role, Role::kViewer);
  EXPECT_EQ(o.reply->at("limits").at("max_frame_bytes"), json::value(1));
  EXPECT_EQ(run(R"({"cmd":"hello","protocol":2})").reply.status().code(),
            StatusCode::kFailedPrecondition);
  o = run(R"({"cmd":"subscribe","topics":["job"]})");
  EXPECT_EQ(o.topics_before, 0u);
  EXPECT_EQ(o.topics_after, static_cast<uint32_t>(kTopicJob));
  o = run(R"({"cmd":"subscribe","topics":[]})");  // [] = all
  EXPECT_EQ(st.topics, kAllTopics);
  o = run(R"({"cmd":"unsubscribe","topics":["ops"]})");
  EXPECT_EQ(st.topics, kAllTopics & ~static_cast<uint32_t>(kTopicOps));
  EXPECT_EQ(run(R"({"cmd":"subscribe","topics":["x"]})").reply.status().code(),
            StatusCode::kInvalidArgument);
  o = run(R"({"cmd":"ping","data":{"a":1}})");
  EXPECT_EQ(o.reply->at("data").at("a"), json::value(1));
}

control::JobStatus jobWithOutputs(size_t n, control::JobState state) {
  control::JobStatus s;
  s.id = (uint64_t{1} << 53) + 1;  // not representable as a JavaScript number
  s.state = state;
  for (uint32_t i = 0; i < n; ++i) {
    control::OutputResult r;
    r.index = 10 + i;
    r.name = "out" + std::to_string(i);
    if (i % 3 == 1) {
      r.status = absl::UnavailableError("not finished");
    } else {
      r.value = Value(static_cast<int64_t>(i));
    }
    s.outputs.push_back(r);
  }
  return s;
}

TEST(Protocol, JobStatusPagesOutputs) {
  control::JobStatus s = jobWithOutputs(10, control::JobState::kSucceeded);
  json::object p = jobStatusPage(s, 0, 4, 1 << 20);
  EXPECT_EQ(p.at("job_id").as_string(), "9007199254740993");
  EXPECT_EQ(p.at("outputs_total").to_number<uint64_t>(), 10u);
  EXPECT_EQ(p.at("outputs").as_array().size(), 4u);
  EXPECT_EQ(p.at("next").to_number<uint64_t>(), 4u);
  p = jobStatusPage(s, 8, 4, 1 << 20);
  EXPECT_EQ(p.at("outputs").as_array().size(), 2u);
  EXPECT_TRUE(p.at("next").is_null());
  p = jobStatusPage(s, 50, 4, 1 << 20);  // past the end: empty, done
  EXPECT_TRUE(p.at("outputs").as_array().empty());
  EXPECT_TRUE(p.at("next").is_null());
}

TEST(Protocol, RunningJobListsOnlyFinishedOutputs) {
  control::JobStatus s = jobWithOutputs(6, control::JobState::kRunning);
  json::object p = jobStatusPage(s, 0, 6, 1 << 20);
  for (const auto& o : p.at("outputs").as_array()) {
    EXPECT_TRUE(o.at("ok").as_bool()) << json::serialize(o);
  }
  EXPECT_EQ(p.at("outputs").as_array().size(), 4u);  // positions 1 and 4 are unfinished
  EXPECT_TRUE(p.at("next").is_null());
}

TEST(Protocol, PagesStopBelowTheByteBound) {
  control::JobStatus s = jobWithOutputs(0, control::JobState::kSucceeded);
  for (uint32_t i = 0; i < 50; ++i) {
    control::OutputResult r;
    r.index = i;
    r.name = "big";
    r.value = Value(std::string(1000, 'x'));
    s.outputs.push_back(r);
  }
  const size_t max = 8000;
  json::object p = jobStatusPage(s, 0, 50, max);
  EXPECT_LE(okReply(json::value(1), p).size(), max);
  const size_t got = p.at("outputs").as_array().size();
  EXPECT_GE(got, 5u);
  EXPECT_EQ(p.at("next").to_number<uint64_t>(), got);
  // A single value larger than a reply is reported, not skipped forever.
  s.outputs[0].value = Value(std::string(20000, 'y'));
  p = jobStatusPage(s, 0, 1, max);
  EXPECT_EQ(p.at("outputs").as_array()[0].at("error").at("code").as_string(), "resource_exhausted");
  EXPECT_EQ(p.at("next").to_number<uint64_t>(), 1u);
}

TEST(Protocol, RepliesAndEventsAreValidJson) {
  const double inf = std::numeric_limits<double>::infinity();
  std::string r = okReply(json::value(1), json::object{{"a", inf}, {"b", json::array{-inf}}});
  EXPECT_EQ(r, R"({"id":1,"ok":true,"result":{"a":{"double":"inf"},"b":[{"double":"-inf"}]}})");
  std::string e =
      eventMessage("job", json::object{{"job", uint64_t{1} << 60}, {"r", std::nan("")}});
  EXPECT_EQ(e, R"({"event":"job","data":{"job":"1152921504606846976","r":{"double":"nan"}}})");
  json::value id;
  json::object body{{"job_id", "18446744073709551615"}};
  EXPECT_EQ(*uintField(body, "job_id"), UINT64_MAX);
  EXPECT_FALSE(uintField(json::object{{"job_id", "-1"}}, "job_id").ok());
  EXPECT_FALSE(uintField(json::object{{"job_id", ""}}, "job_id").ok());
}

}  // namespace
}  // namespace tokengate::gateway
