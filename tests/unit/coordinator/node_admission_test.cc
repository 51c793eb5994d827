// What the coordinator refuses before it stores or ships anything: hellos
// with invalid node ids or operation names (common/names.h), and jobs whose
// fan-in cannot fit one token batch (JobSpec::validate's frame budget).
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "common/wire.h"
#include "coordinator/core/coordinator.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::coordinator {
namespace {

class NodeAdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.max_frame_bytes = 1 << 20;
    core_ = std::make_unique<CoordinatorCore>(config_, clock_, outbox_,
                                              std::make_shared<prometheus::Registry>());
  }
  // Sends a hello and returns the welcome's status.
  Status hello(const std::string& peer, const std::string& id, const std::string& op) {
    capnp::MallocMessageBuilder msg;
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto h = f.initHello();
    h.setProtocolVersion(kProtocolVersion);
    h.setNodeId(id);
    h.setIncarnation(1);
    auto ops = h.initOperations(1);
    ops[0].setName(op);
    ops[0].setWeight(wire::Weight::LIGHT);
    const std::string bytes = encodeFrame(msg);
    core_->onBytes(peer, bytes.data(), bytes.size());
    auto reply = outbox_.next(peer);
    if (!reply || reply->root().which() != wire::Frame::WELCOME)
      return absl::InternalError("no welcome");
    auto w = reply->root().getWelcome();
    EXPECT_GT(w.getLossTimeoutMs(), 0u);  // nodes give up only after it
    return w.getAccepted() ? absl::OkStatus() : fromWire(w.getError());
  }

  testing::FakeClock clock_;
  testing::MemoryOutbox outbox_;
  CoordinatorConfig config_;
  std::unique_ptr<CoordinatorCore> core_;
};

TEST_F(NodeAdmissionTest, HellosWithInvalidNamesAreRefusedAndNothingIsStored) {
  EXPECT_EQ(hello("p1", "bad\xff", "echo").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(hello("p2", "node-2", "op\nwith newline").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(hello("p3", std::string(200, 'n'), "echo").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(core_->listNodes().empty());
  EXPECT_TRUE(hello("p4", "node-4", "echo").ok());
  ASSERT_EQ(core_->listNodes().size(), 1u);
  EXPECT_EQ(core_->listNodes()[0].id, "node-4");
}

TEST_F(NodeAdmissionTest, AnOversizeFanInIsRefusedAtAdmissionWithAClearError) {
  ASSERT_TRUE(hello("p1", "node-1", "echo").ok());
  ASSERT_TRUE(hello("p2", "node-2", "hash").ok());
  JobSpec job;
  TokenSpec leaf;
  leaf.op = "echo";
  leaf.repeat = 200'000;  // x 24 bytes per argument: well above a 1 MB batch
  leaf.args.push_back(Arg::val(Value(int64_t{1})));
  job.add(leaf);
  TokenSpec sink;
  sink.op = "hash";
  sink.args.push_back(Arg::refs(0, 200'000));
  job.add(sink);
  auto r = core_->submitJob(job);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("split the fan-in"), std::string::npos) << r.status();
  EXPECT_EQ(core_->stats().tokens_live, 0u);
}

}  // namespace
}  // namespace tokengate::coordinator
