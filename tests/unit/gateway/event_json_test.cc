// The JSON shapes of control events (docs/protocol.md, Events).
#include "coordinator/gateway/event_json.h"

#include <gtest/gtest.h>

namespace tokengate::gateway {
namespace {

namespace json = boost::json;

TEST(EventJson, RunningJobReportsRunningNotWallTime) {
  control::JobEvent e{3, "pi", control::JobState::kRunning, 100111, 51200, 0, 0, 64, 0};
  EXPECT_EQ(json::serialize(eventData(e)),
            R"({"job":"3","name":"pi","state":"running","total":100111,"done":51200,)"
            R"("failed":0,"cancelled":0,"running":64})");
  EXPECT_STREQ(control::eventTopic(e), "job");
}

TEST(EventJson, FinishedJobReportsWallSeconds) {
  control::JobEvent e{3, "pi", control::JobState::kSucceeded, 10, 10, 0, 0, 0, 810'000'000};
  json::object o = eventData(e);
  EXPECT_EQ(o.at("state").as_string(), "succeeded");
  EXPECT_DOUBLE_EQ(o.at("wall_s").as_double(), 0.81);
  EXPECT_FALSE(o.contains("running"));
}

TEST(EventJson, NodeEvents) {
  using C = control::NodeEvent::Change;
  EXPECT_EQ(json::serialize(eventData(control::NodeEvent{C::kJoined, "a", {}, 0, 0})),
            R"({"event":"joined","node":"a"})");
  EXPECT_EQ(json::serialize(eventData(control::NodeEvent{C::kDraining, "a", {}, 0, 0})),
            R"({"event":"draining","node":"a"})");
  EXPECT_EQ(json::serialize(eventData(control::NodeEvent{C::kLeft, "a", "evicted", 4, 1})),
            R"({"event":"left","node":"a","reason":"evicted","requeued":4,"quarantined":1})");
  EXPECT_STREQ(control::eventTopic(control::NodeEvent{}), "nodes");
}

TEST(EventJson, OpsAndFailures) {
  EXPECT_EQ(json::serialize(eventData(control::OpPausedEvent{"sq", true})),
            R"({"op":"sq","paused":true})");
  control::OpRatesEvent rates;
  rates.ops.push_back({"sq", 2.5, 1, 2, 3, 4, false});
  EXPECT_EQ(json::serialize(eventData(rates)),
            R"({"ops":[{"op":"sq","rate_per_s":2.5E0,"queued":1,"running":2,"completed":3,)"
            R"("failed":4,"paused":false}]})");
  EXPECT_EQ(json::serialize(eventData(control::FailuresEvent{"f", 12, "UNAVAILABLE: x"})),
            R"({"op":"f","count":12,"last_error":"UNAVAILABLE: x"})");
  EXPECT_STREQ(control::eventTopic(rates), "ops");
  EXPECT_EQ(eventMessage(control::OpPausedEvent{"sq", false}),
            R"({"event":"ops","data":{"op":"sq","paused":false}})");
}

}  // namespace
}  // namespace tokengate::gateway
