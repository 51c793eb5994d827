// CoordinatorLink over the in-memory LinkSocket and a FakeClock: the link's
// connection rules (hello once per connection, reconnect, give-up after the
// coordinator's loss timeout, no stale hellos after a partition), the result
// path and stop, with no real socket and no wall-clock waits on the link.
// Token execution uses a real single-worker Executor; where a test needs its
// results it waits for them (a bounded wait, nothing asserts on speed).
#include "node/link/coordinator_link.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <thread>

#include "common/wire.h"
#include "node/link/node.h"
#include "node/ops/builtin_ops.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_link_socket.h"

namespace tokengate::node {
namespace {

using Which = wire::Frame::Which;
using testing::FakeClock;
using testing::MemoryLinkNetwork;

std::unique_ptr<DecodedFrame> decode(const std::string& bytes) {
  auto d = decodeFrame(bytes.data(), bytes.size());
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? std::move(*d) : nullptr;
}

wire::Frame::Builder frame(capnp::MessageBuilder& msg) {
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  return f;
}

class CoordinatorLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registerBuiltinOps(registry_).ok());
    ExecutorConfig ec;
    ec.cores = {allowedCores().front()};
    ec.heavy_cores = 0;
    ec.pin = false;
    auto ex = Executor::create(
        std::move(ec), [] {}, clock_);
    ASSERT_TRUE(ex.ok()) << ex.status();
    executor_ = std::move(*ex);
    config_.node_id = "n1";
    config_.incarnation = 7;
  }

  void makeLink() {
    link_ =
        std::make_unique<CoordinatorLink>(config_, registry_, *executor_, net_.factory(), clock_);
    ASSERT_TRUE(link_->start().ok());
  }

  // Frames the coordinator received since the last call, decoded.
  struct Got {
    uint64_t connection;
    std::unique_ptr<DecodedFrame> frame;
    Which which() const { return frame->root().which(); }
  };
  std::vector<Got> received() {
    std::vector<Got> out;
    for (auto& s : net_.take()) out.push_back({s.connection, decode(s.bytes)});
    return out;
  }
  static size_t count(const std::vector<Got>& v, Which w) {
    size_t n = 0;
    for (const auto& g : v) n += g.which() == w;
    return n;
  }

  void welcome(uint64_t session, uint32_t heartbeat_ms = 500, uint32_t loss_timeout_ms = 3000,
               uint64_t max_frame_bytes = 0, bool packed_results = false) {
    capnp::MallocMessageBuilder msg;
    auto w = frame(msg).initWelcome();
    w.setAccepted(true);
    w.setSession(session);
    w.setHeartbeatMs(heartbeat_ms);
    w.setLossTimeoutMs(loss_timeout_ms);
    w.setMaxFrameBytes(max_frame_bytes);
    w.setPackedResults(packed_results);
    net_.push(encodeFrame(msg));
    link_->onReadable();
    link_->tick();
  }
  void unknownSession() {
    capnp::MallocMessageBuilder msg;
    auto w = frame(msg).initWelcome();
    w.setAccepted(false);
    toWire(absl::FailedPreconditionError("unknown session: send hello"), w.initError());
    net_.push(encodeFrame(msg));
    link_->onReadable();
  }
  std::string tokenBatch(uint64_t session, const std::string& op, uint64_t id,
                         const std::vector<Value>& args) {
    capnp::MallocMessageBuilder msg;
    auto b = frame(msg).initTokenBatch();
    b.setSession(session);
    b.initOps(1).set(0, op);
    auto t = b.initTokens(1)[0];
    t.setId(id);
    t.setAttempt(1);
    t.setOp(0);
    t.setWeight(wire::Weight::LIGHT);
    auto al = t.initArgs(static_cast<unsigned>(args.size()));
    for (unsigned i = 0; i < args.size(); ++i) toWire(args[i], al[i]);
    return encodeFrame(msg);
  }
  // Advances the fake clock in `step_ms` steps, ticking the link each time.
  void run(int64_t ms, int64_t step_ms = 100) {
    for (int64_t t = 0; t < ms; t += step_ms) {
      clock_.advanceMs(step_ms);
      link_->onReadable();
      link_->tick();
    }
  }
  void useInlineExecutor();
  OpFn advancesClock();
  bool answeredInline(uint64_t session, const std::string& op, uint64_t id, int64_t arg);
  void waitExecutorIdle() {
    for (int i = 0; i < 10'000 && !executor_->idle(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(executor_->idle());
  }

  FakeClock clock_;
  Registry registry_;
  std::unique_ptr<Executor> executor_;
  MemoryLinkNetwork net_;
  LinkConfig config_;
  std::unique_ptr<CoordinatorLink> link_;
};

TEST_F(CoordinatorLinkTest, OneHelloPerConnectionAndAReconnectPerResend) {
  makeLink();
  auto got = received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].which(), Which::HELLO);
  EXPECT_EQ(got[0].connection, 1u);
  auto h = got[0].frame->root().getHello();
  EXPECT_EQ(std::string(h.getNodeId().cStr()), "n1");
  EXPECT_EQ(h.getIncarnation(), 7u);
  EXPECT_TRUE(h.getPackedTokens());  // this node reads TokenBatch.packed

  run(900);
  EXPECT_TRUE(received().empty());  // no second hello on the same connection
  run(100);
  got = received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].which(), Which::HELLO);
  EXPECT_EQ(got[0].connection, 2u);  // the resend is a new connection
  EXPECT_EQ(net_.connections(), 2u);
}

TEST_F(CoordinatorLinkTest, AfterAThirtySecondPartitionExactlyOneHelloArrives) {
  makeLink();
  welcome(11);
  EXPECT_EQ(link_->state(), CoordinatorLink::State::kReady);
  (void)received();
  net_.partition();
  run(30'000);
  EXPECT_EQ(link_->state(), CoordinatorLink::State::kHello);
  EXPECT_GT(net_.connections(), 20u);  // it kept trying
  EXPECT_TRUE(received().empty());
  net_.heal();
  auto got = received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].which(), Which::HELLO);
  EXPECT_EQ(got[0].connection, net_.connections());
  welcome(12);
  EXPECT_EQ(link_->session(), 12u);
  got = received();
  EXPECT_EQ(count(got, Which::HELLO), 0u);
  EXPECT_EQ(count(got, Which::HEARTBEAT), 1u);
}

TEST_F(CoordinatorLinkTest, GivesUpStrictlyAfterTheCoordinatorsLossTimeout) {
  makeLink();
  welcome(21, /*heartbeat_ms=*/500, /*loss_timeout_ms=*/3000);
  EXPECT_GT(link_->giveUpAfter(), 3000 * kMillis);
  const uint64_t connects = net_.connections();
  net_.partition();
  run(3000, 50);  // the coordinator has given up on us by now: we have not
  EXPECT_EQ(link_->state(), CoordinatorLink::State::kReady);
  EXPECT_EQ(net_.connections(), connects);
  run(500, 50);
  EXPECT_EQ(link_->state(), CoordinatorLink::State::kHello);
  EXPECT_EQ(net_.connections(), connects + 1);
}

TEST_F(CoordinatorLinkTest, GiveUpUsesTheConfiguredLossTimeoutWhenTheWelcomeStatesNone) {
  config_.coordinator_loss_timeout_ms = 4000;
  makeLink();
  welcome(22, /*heartbeat_ms=*/200, /*loss_timeout_ms=*/0);
  EXPECT_EQ(link_->giveUpAfter(), 4200 * kMillis);
  // Many heartbeats: the heartbeat count bounds it from below.
  welcome(23, /*heartbeat_ms=*/2000, /*loss_timeout_ms=*/1000);
  EXPECT_EQ(link_->giveUpAfter(), 10'000 * kMillis);
}

TEST_F(CoordinatorLinkTest, HeartbeatsCarryTheSessionAndKeepTheSessionAlive) {
  makeLink();
  welcome(31, 500);
  auto got = received();
  ASSERT_EQ(count(got, Which::HEARTBEAT), 1u);  // at once after the welcome
  for (int i = 0; i < 10; ++i) {
    run(500);
    capnp::MallocMessageBuilder msg;
    frame(msg).setPong(1);  // any frame counts as word from the coordinator
    net_.push(encodeFrame(msg));
  }
  got = received();
  EXPECT_EQ(count(got, Which::HEARTBEAT), 10u);
  for (const auto& g : got) {
    if (g.which() == Which::HEARTBEAT) {
      EXPECT_EQ(g.frame->root().getHeartbeat().getSession(), 31u);
    }
  }
  EXPECT_EQ(link_->state(), CoordinatorLink::State::kReady);
  EXPECT_EQ(net_.connections(), 1u);
}

TEST_F(CoordinatorLinkTest, UnknownSessionMeansOneHelloOnANewConnection) {
  makeLink();
  welcome(41);
  (void)received();
  unknownSession();
  EXPECT_EQ(link_->state(), CoordinatorLink::State::kHello);
  auto got = received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].which(), Which::HELLO);
  EXPECT_EQ(got[0].connection, 2u);
  // A second "unknown session" (the reply to a heartbeat in flight) changes nothing.
  unknownSession();
  EXPECT_TRUE(received().empty());
}

TEST_F(CoordinatorLinkTest, FramesBehindAnUnknownSessionInTheSameReadAreIgnored) {
  makeLink();
  welcome(42);
  (void)received();
  capnp::MallocMessageBuilder msg;
  auto w = frame(msg).initWelcome();
  w.setAccepted(false);
  toWire(absl::FailedPreconditionError("unknown session: send hello"), w.initError());
  net_.push(encodeFrame(msg));                                // ends the connection...
  net_.push(tokenBatch(42, "echo", 5, {Value(int64_t{5})}));  // ...so this is stale
  link_->onReadable();  // reconnects after the read loop, not inside it
  EXPECT_EQ(net_.connections(), 2u);
  EXPECT_TRUE(executor_->idle());
  auto got = received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].which(), Which::HELLO);
}

TEST_F(CoordinatorLinkTest, ALoneResultGoesOutAtOnce) {
  makeLink();
  welcome(51);
  (void)received();
  net_.push(tokenBatch(51, "echo", 99, {Value(int64_t{5})}));
  link_->onReadable();
  waitExecutorIdle();
  link_->tick();  // no clock advance: no timer involved
  auto got = received();
  ASSERT_EQ(count(got, Which::RESULT_BATCH), 1u);
  auto rb = got.back().frame->root().getResultBatch();
  EXPECT_EQ(rb.getSession(), 51u);
  ASSERT_EQ(rb.getResults().size(), 1u);
  EXPECT_EQ(rb.getResults()[0].getId(), 99u);
  EXPECT_EQ(rb.getResults()[0].getValue().getInt(), 5);
}

TEST_F(CoordinatorLinkTest, ALoneFastTokenIsAnsweredInsideOnReadableOnceItsOpIsKnownFast) {
  ExecutorConfig ec;
  ec.cores = {allowedCores().front()};
  ec.heavy_cores = 0;
  ec.pin = false;
  ec.inline_below_ns = 1'000'000;  // the fake clock times every echo at 0 ns: fast
  auto ex = Executor::create(
      std::move(ec), [] {}, clock_);
  ASSERT_TRUE(ex.ok()) << ex.status();
  executor_ = std::move(*ex);
  makeLink();
  welcome(52);
  (void)received();
  // The first echo token: nobody has timed echo yet, so it goes to the worker and its result
  // only leaves at a tick.
  net_.push(tokenBatch(52, "echo", 1, {Value(int64_t{10})}));
  link_->onReadable();
  waitExecutorIdle();
  EXPECT_EQ(count(received(), Which::RESULT_BATCH), 0u);
  link_->tick();
  EXPECT_EQ(count(received(), Which::RESULT_BATCH), 1u);
  const uint64_t worker_tokens = executor_->coreStats().front().tokens;
  // The second: echo is known fast and the worker is idle, so the link runs it and sends its
  // result before onReadable() returns, without a tick.
  net_.push(tokenBatch(52, "echo", 2, {Value(int64_t{20})}));
  link_->onReadable();
  auto got = received();
  ASSERT_EQ(count(got, Which::RESULT_BATCH), 1u);
  auto rb = got.back().frame->root().getResultBatch();
  EXPECT_EQ(rb.getSession(), 52u);
  ASSERT_EQ(rb.getResults().size(), 1u);
  EXPECT_EQ(rb.getResults()[0].getId(), 2u);
  EXPECT_EQ(rb.getResults()[0].getValue().getInt(), 20);
  EXPECT_TRUE(executor_->idle());
  // Counted like a worker's token (heartbeat core stats).
  uint64_t tokens = 0;
  for (const auto& c : executor_->coreStats()) tokens += c.tokens;
  EXPECT_EQ(tokens, worker_tokens + 1);
}

// A test op "slow_when N": returns N; run on the test thread (inline) it advances the fake
// clock by N ms, so the executor times it N ms. Run on a worker it is only ever given N = 0 (the
// fake clock is written by the test thread alone).
void CoordinatorLinkTest::useInlineExecutor() {
  ExecutorConfig ec;
  ec.cores = {allowedCores().front()};
  ec.heavy_cores = 0;
  ec.pin = false;
  ec.inline_below_ns = kMillis;  // 1 ms
  auto ex = Executor::create(
      std::move(ec), [] {}, clock_);
  ASSERT_TRUE(ex.ok()) << ex.status();
  executor_ = std::move(*ex);
}

OpFn CoordinatorLinkTest::advancesClock() {
  return [this](OpContext&, std::span<const Value> a) -> StatusOr<Value> {
    clock_.advanceMs(a[0].asInt());
    return a[0];
  };
}

// Sends one token of `op` and says whether its result left before onReadable() returned (an
// inline run); otherwise waits for the worker and checks the result leaves at the next tick.
bool CoordinatorLinkTest::answeredInline(uint64_t session, const std::string& op, uint64_t id,
                                         int64_t arg) {
  net_.push(tokenBatch(session, op, id, {Value(arg)}));
  link_->onReadable();
  auto got = received();
  if (count(got, Which::RESULT_BATCH) == 1) {
    auto rb = got.back().frame->root().getResultBatch();
    EXPECT_EQ(rb.getResults()[0].getId(), id);
    return true;
  }
  EXPECT_EQ(count(got, Which::RESULT_BATCH), 0u);
  waitExecutorIdle();
  link_->tick();
  got = received();
  EXPECT_EQ(count(got, Which::RESULT_BATCH), 1u) << op << " " << id;
  return false;
}

TEST_F(CoordinatorLinkTest, AnOpNotDeclaredNonBlockingNeverRunsInline) {
  ASSERT_TRUE(registry_.add("plain.echo", Weight::kLight, advancesClock()).ok());
  useInlineExecutor();
  makeLink();
  welcome(55);
  (void)received();
  // Timed fast by the worker again and again (0 ns on the fake clock), still never inline.
  for (uint64_t id = 1; id <= 4; ++id) EXPECT_FALSE(answeredInline(55, "plain.echo", id, 0)) << id;
  // The same executor runs a declared op (echo is built in, declared) inline once timed.
  EXPECT_FALSE(answeredInline(55, "echo", 10, 1));
  EXPECT_TRUE(answeredInline(55, "echo", 11, 1));
  EXPECT_FALSE(answeredInline(55, "plain.echo", 12, 0));
}

TEST_F(CoordinatorLinkTest, ADeclaredOpWhoseInlineRunTurnsSlowGoesBackToTheWorkers) {
  ASSERT_TRUE(
      registry_.add("slow_when", Weight::kLight, advancesClock(), OpFlags::kNonBlocking).ok());
  useInlineExecutor();
  makeLink();
  welcome(56);
  (void)received();
  EXPECT_FALSE(answeredInline(56, "slow_when", 1, 0));  // never timed: a worker
  EXPECT_TRUE(answeredInline(56, "slow_when", 2, 0));   // timed fast: inline
  // This run takes 5 ms (>= the 1 ms bound): it was already running inline, so it finishes
  // there, and the op is demoted.
  EXPECT_TRUE(answeredInline(56, "slow_when", 3, 5));
  EXPECT_FALSE(answeredInline(56, "slow_when", 4, 0));  // back on a worker...
  EXPECT_TRUE(answeredInline(56, "slow_when", 5, 0));   // ...which timed it fast again
}

TEST_F(CoordinatorLinkTest, InlineRunsAreOnByDefaultOnANode) {
  EXPECT_GT(NodeConfig{}.inline_below_ns, 0);      // the declaration, not the flag, is the guard
  EXPECT_EQ(ExecutorConfig{}.inline_below_ns, 0);  // a bare executor stays conservative
}

TEST_F(CoordinatorLinkTest, WithInlineRunsOffEveryTokenGoesToTheWorkers) {
  makeLink();  // the fixture's executor: inline_below_ns 0
  welcome(53);
  (void)received();
  for (uint64_t id = 1; id <= 2; ++id) {
    net_.push(tokenBatch(53, "echo", id, {Value(int64_t{1})}));
    link_->onReadable();
    EXPECT_EQ(count(received(), Which::RESULT_BATCH), 0u) << id;
    waitExecutorIdle();
    link_->tick();
    EXPECT_EQ(count(received(), Which::RESULT_BATCH), 1u) << id;
  }
}

TEST_F(CoordinatorLinkTest, ResultsUsePackedColumnsOnlyWhenTheWelcomeSaysSo) {
  makeLink();
  welcome(54);
  EXPECT_FALSE(link_->packedResults());
  (void)received();
  net_.push(tokenBatch(54, "echo", 1, {Value(int64_t{5})}));
  link_->onReadable();
  waitExecutorIdle();
  link_->tick();
  auto got = received();
  ASSERT_EQ(count(got, Which::RESULT_BATCH), 1u);
  auto rb = got.back().frame->root().getResultBatch();
  EXPECT_EQ(rb.getResults().size(), 1u);  // an older coordinator: the plain list
  EXPECT_EQ(rb.getPacked().size(), 0u);

  welcome(55, 500, 3000, 0, /*packed_results=*/true);
  EXPECT_TRUE(link_->packedResults());
  (void)received();
  net_.push(tokenBatch(55, "echo", 2, {Value(int64_t{6})}));
  link_->onReadable();
  waitExecutorIdle();
  link_->tick();
  got = received();
  ASSERT_EQ(count(got, Which::RESULT_BATCH), 1u);
  rb = got.back().frame->root().getResultBatch();
  EXPECT_EQ(rb.getResults().size(), 0u);
  ASSERT_EQ(rb.getPacked().size(), 1u);
  auto blk = rb.getPacked()[0];
  ASSERT_EQ(blk.which(), wire::PackedResults::I64S);
  ASSERT_EQ(blk.getIds().size(), 1u);
  EXPECT_EQ(blk.getIds()[0], 2u);
  EXPECT_EQ(blk.getAttempts()[0], 1u);
  EXPECT_EQ(blk.getI64s()[0], 6);
}

// A token batch with one plain echo (id base+1, arg 7) and packed columns: ints 8 and 9 for
// echo (base+2, base+3) and a float for an unknown op (base+4). `short_ops` drops the last op
// index of the int block (malformed).
std::string packedTokenBatch(uint64_t session, uint64_t base, bool short_ops = false) {
  capnp::MallocMessageBuilder msg;
  auto b = frame(msg).initTokenBatch();
  b.setSession(session);
  auto ops = b.initOps(2);
  ops.set(0, "echo");
  ops.set(1, "no.such.op");
  auto t = b.initTokens(1)[0];
  t.setId(base + 1);
  t.setAttempt(1);
  t.setOp(0);
  t.setWeight(wire::Weight::LIGHT);
  t.initArgs(1)[0].setInt(7);
  auto blocks = b.initPacked(2);
  auto ints = blocks[0];
  ints.initIds(2).set(0, base + 2);
  ints.getIds().set(1, base + 3);
  auto iops = ints.initOps(short_ops ? 1 : 2);
  for (unsigned i = 0; i < iops.size(); ++i) iops.set(i, 0);
  auto iw = ints.initWeights(2);
  iw.set(0, wire::Weight::LIGHT);
  iw.set(1, wire::Weight::LIGHT);
  auto ia = ints.initAttempts(2);
  ia.set(0, 1);
  ia.set(1, 2);
  auto iv = ints.initI64s(2);
  iv.set(0, 8);
  iv.set(1, 9);
  auto floats = blocks[1];
  floats.initIds(1).set(0, base + 4);
  floats.initOps(1).set(0, 1);
  floats.initWeights(1).set(0, wire::Weight::LIGHT);
  floats.initAttempts(1).set(0, 1);
  floats.initF64s(1).set(0, 0.5);
  return encodeFrame(msg);
}

TEST_F(CoordinatorLinkTest, PackedTokensRunLikePlainOnesAndAMalformedBlockFailsTheBatch) {
  makeLink();
  welcome(56);
  (void)received();
  auto answers = [&](uint64_t session, uint64_t base, bool short_ops) {
    net_.push(packedTokenBatch(session, base, short_ops));
    link_->onReadable();
    waitExecutorIdle();
    link_->tick();
    std::map<uint64_t, std::pair<uint32_t, StatusOr<Value>>> by_id;
    for (const auto& g : received()) {
      if (g.which() != Which::RESULT_BATCH) continue;
      for (auto r : g.frame->root().getResultBatch().getResults())
        by_id.emplace(r.getId(),
                      std::pair<uint32_t, StatusOr<Value>>(
                          r.getAttempt(), r.isValue() ? StatusOr<Value>(fromWire(r.getValue()))
                                                      : StatusOr<Value>(fromWire(r.getError()))));
    }
    return by_id;
  };
  auto got = answers(56, 100, false);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(*got.at(101).second, Value(int64_t{7}));
  EXPECT_EQ(*got.at(102).second, Value(int64_t{8}));
  EXPECT_EQ(*got.at(103).second, Value(int64_t{9}));
  EXPECT_EQ(got.at(103).first, 2u);  // its attempt column
  EXPECT_EQ(got.at(104).second.status().code(), StatusCode::kNotFound);
  // Unequal columns: nothing of the batch runs; every token, plain and packed, gets an error.
  got = answers(56, 200, true);
  ASSERT_EQ(got.size(), 4u);
  for (uint64_t id = 201; id <= 204; ++id) {
    ASSERT_TRUE(got.count(id)) << id;
    EXPECT_EQ(got.at(id).second.status().code(), StatusCode::kInvalidArgument) << id;
  }
}

TEST(ResultFrames, PackedFramesPutPlainNumbersInColumnsAndEverythingElseInTheList) {
  std::vector<TaskResult> results(6);
  for (uint64_t i = 0; i < results.size(); ++i) {
    results[i].id = 100 + i;
    results[i].attempt = 1 + static_cast<uint32_t>(i % 2);
    results[i].run_ns = 1000 * i;
    results[i].queue_ns = 7 * i;
  }
  results[0].outcome = Value(1.5);
  results[1].outcome = Value(int64_t{-3});
  results[2].outcome = absl::UnavailableError("retry");
  results[3].outcome = Value(std::string("text"));
  results[4].outcome = Value(2.5);
  results[4].run_ns = uint64_t{5} << 32;  // too long for the 32-bit column
  results[5].outcome = Value(-0.25);
  const std::vector<ReturnedTask> returned = {{9, 1, 0}};
  for (bool packed : {false, true}) {
    const std::string bytes = resultBatchFrame(7, results, returned, nullptr, packed);
    auto d = decode(bytes);
    ASSERT_NE(d, nullptr);
    auto rb = d->root().getResultBatch();
    EXPECT_EQ(rb.getSession(), 7u);
    EXPECT_EQ(rb.getReturned().size(), 1u);
    if (!packed) {
      EXPECT_EQ(rb.getResults().size(), 6u);
      EXPECT_EQ(rb.getPacked().size(), 0u);
      continue;
    }
    // Plain list: the error, the text and the long-running float.
    ASSERT_EQ(rb.getResults().size(), 3u);
    EXPECT_EQ(rb.getResults()[0].getId(), 102u);
    EXPECT_EQ(rb.getResults()[1].getId(), 103u);
    EXPECT_EQ(rb.getResults()[2].getId(), 104u);
    EXPECT_EQ(rb.getResults()[2].getRunNs(), uint64_t{5} << 32);
    ASSERT_EQ(rb.getPacked().size(), 2u);
    auto floats = rb.getPacked()[0];
    ASSERT_EQ(floats.which(), wire::PackedResults::F64S);
    ASSERT_EQ(floats.getIds().size(), 2u);
    EXPECT_EQ(floats.getIds()[0], 100u);
    EXPECT_EQ(floats.getIds()[1], 105u);
    EXPECT_EQ(floats.getAttempts()[1], 2u);
    EXPECT_EQ(floats.getRunNs()[1], 5000u);
    EXPECT_EQ(floats.getQueueNs()[1], 35u);
    EXPECT_EQ(floats.getF64s()[0], 1.5);
    EXPECT_EQ(floats.getF64s()[1], -0.25);
    auto ints = rb.getPacked()[1];
    ASSERT_EQ(ints.which(), wire::PackedResults::I64S);
    ASSERT_EQ(ints.getIds().size(), 1u);
    EXPECT_EQ(ints.getIds()[0], 101u);
    EXPECT_EQ(ints.getAttempts()[0], 2u);
    EXPECT_EQ(ints.getI64s()[0], -3);
  }
  // Fewer bytes per result: the point of the columns.
  std::vector<TaskResult> many(1000);
  for (uint64_t i = 0; i < many.size(); ++i) {
    many[i].id = i;
    many[i].attempt = 1;
    many[i].outcome = Value(static_cast<double>(i));
  }
  const size_t plain = resultBatchFrame(1, many, {}, nullptr, false).size();
  const size_t packed = resultBatchFrame(1, many, {}, nullptr, true).size();
  EXPECT_LT(packed * 2, plain) << plain << " vs " << packed;
}

TEST_F(CoordinatorLinkTest, UnknownOperationIsAnsweredWithAnError) {
  makeLink();
  welcome(52);
  (void)received();
  net_.push(tokenBatch(52, "no.such.op", 3, {}));
  link_->onReadable();
  link_->tick();
  auto got = received();
  ASSERT_EQ(count(got, Which::RESULT_BATCH), 1u);
  auto r = got.back().frame->root().getResultBatch().getResults()[0];
  EXPECT_EQ(r.getId(), 3u);
  EXPECT_EQ(fromWire(r.getError()).code(), StatusCode::kNotFound);
}

TEST_F(CoordinatorLinkTest, AnOversizeTokenBatchIsAnsweredNotDropped) {
  config_.max_frame_bytes = 64 * 1024;
  makeLink();
  welcome(61);
  (void)received();
  net_.push(tokenBatch(61, "hash", 77, {Value(std::string(200 * 1024, 'x'))}));
  link_->onReadable();
  link_->tick();
  auto got = received();
  ASSERT_EQ(count(got, Which::RESULT_BATCH), 1u);
  auto r = got.back().frame->root().getResultBatch().getResults()[0];
  EXPECT_EQ(r.getId(), 77u);
  EXPECT_EQ(r.getAttempt(), 1u);
  const Status st = fromWire(r.getError());
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("frame limit"), std::string::npos) << st;
}

TEST_F(CoordinatorLinkTest, BatchesForAnotherSessionAreIgnored) {
  makeLink();
  welcome(62);
  (void)received();
  net_.push(tokenBatch(999, "echo", 1, {Value(int64_t{1})}));
  link_->onReadable();
  link_->tick();
  EXPECT_TRUE(executor_->idle());
  EXPECT_EQ(count(received(), Which::RESULT_BATCH), 0u);
}

TEST_F(CoordinatorLinkTest, StopDrainsThenSaysByeOnce) {
  makeLink();
  welcome(71);
  (void)received();
  link_->beginStop("test");
  auto got = received();
  ASSERT_EQ(count(got, Which::HEARTBEAT), 1u);  // tells the coordinator at once
  EXPECT_TRUE(got.back().frame->root().getHeartbeat().getDraining());
  link_->tick();
  EXPECT_TRUE(link_->finished());
  got = received();
  ASSERT_EQ(count(got, Which::BYE), 1u);
  EXPECT_EQ(got.back().frame->root().getBye().getSession(), 71u);
  link_->tick();
  EXPECT_TRUE(received().empty());
}

TEST_F(CoordinatorLinkTest, StopBeforeAWelcomeFinishesWithoutBye) {
  makeLink();
  (void)received();
  link_->beginStop("test");
  link_->tick();
  EXPECT_TRUE(link_->finished());
  EXPECT_EQ(count(received(), Which::BYE), 0u);
}

TEST_F(CoordinatorLinkTest, AFailedReconnectIsRetriedAtTheNextResend) {
  makeLink();
  (void)received();
  net_.refuseConnects(true);
  run(1000);
  EXPECT_FALSE(net_.open());
  run(1000);
  net_.refuseConnects(false);
  run(1000);
  auto got = received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].which(), Which::HELLO);
}

TEST_F(CoordinatorLinkTest, PingIsAnsweredAndMalformedFramesAreDropped) {
  makeLink();
  welcome(81);
  (void)received();
  capnp::MallocMessageBuilder msg;
  frame(msg).setPing(1234);
  net_.push(encodeFrame(msg));
  net_.push(std::string(24, '\xff'));
  net_.push("abc");
  link_->onReadable();
  auto got = received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].frame->root().getPong(), 1234u);
  EXPECT_EQ(link_->state(), CoordinatorLink::State::kReady);
}

// fuzz_node_frames finding (input:
// tests/fuzz/corpus/node_frames/regress-traversal-limit-in-handler): a token batch of our session
// that decodeFrame accepts (it walks the frame once, within the reader's traversal limit) but whose
// tokens share subtrees, so reading them in the handler crosses the limit and Cap'n Proto throws.
// The link let that exception escape (std::terminate ended the node); now the frame is treated as
// malformed and the link keeps its session.
constexpr const char* kAmplifiedTokenBatchHex =
    "000000005a000000000000000200010001000300000000000000000000000000000000000100020001000000000000"
    "00"
    "050000002e00000035000000c7000000110000006a0000001500000072000000190000002a000000190000002a0000"
    "00"
    "0000000000000000d0bf00000000000000000200000000000000000000000000c03f00000000000000001000000002"
    "00"
    "010003000000000000000000000000000000250000002a000000040000000000000000000000000000001d04000012"
    "00"
    "0000060000000000000001000000000000000000000000000000000000000000000000000000000000000000000000"
    "00"
    "0000746578740000000001020000000000000400000002000100050000000000000000000000000000000000000004"
    "00"
    "00000000000000000000000000000000000000000000d0000000010000000001000004000000020001000100000000"
    "00"
    "0000010000000000000000000000000000000400000002000100010000000000000009000000000000000000000000"
    "00"
    "000000d8020000000000005a0000000000000002000100010003000000000000000000000000000000000001000200"
    "02"
    "00000000000000050000002e00000035000000c7000000110000006a0000001500000072000000190000002a000000"
    "19"
    "0000002a000000190000005a0000006c6569626e697a2e7465726d000000006c6569626e697a2e6368756e6b000000"
    "68"
    "617368000000006563686f000000006e6f2e737563682e6f7000000000000018000000030001006400000000000000"
    "00"
    "000000010000000000000000000000510000001f00000065000000000000000100000001000000e803000000000000"
    "51"
    "0000004f00000066000000000000000200000001000000000000000000000069000000670000006700000000000000"
    "03"
    "000300010000000000000000000000950000001f000000680000000000000004000000010000000000000000000000"
    "a5"
    "0000001f00000069";

std::string unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

TEST_F(CoordinatorLinkTest, ATokenBatchThatExceedsTheReadLimitInTheHandlerIsNotFatal) {
  const std::string bytes = unhex(kAmplifiedTokenBatchHex);
  auto d = decodeFrame(bytes.data(), bytes.size());
  ASSERT_TRUE(d.ok()) << d.status();  // it passes the decode boundary...
  ASSERT_EQ((*d)->root().which(), Which::TOKEN_BATCH);
  const uint64_t session = (*d)->root().getTokenBatch().getSession();
  makeLink();
  welcome(session);
  ASSERT_EQ(link_->state(), CoordinatorLink::State::kReady);
  (void)received();
  net_.push(bytes);
  link_->onReadable();  // ...and used to throw out of here
  waitExecutorIdle();
  link_->tick();
  EXPECT_EQ(link_->state(), CoordinatorLink::State::kReady);
  EXPECT_EQ(link_->session(), session);
  // The session goes on: the next batch runs and is answered.
  (void)received();
  net_.push(tokenBatch(session, "echo", 99, {Value(int64_t{5})}));
  link_->onReadable();
  waitExecutorIdle();
  link_->tick();
  auto got = received();
  ASSERT_GE(count(got, Which::RESULT_BATCH), 1u);
  bool answered = false;
  for (const auto& g : got)
    if (g.which() == Which::RESULT_BATCH)
      for (auto r : g.frame->root().getResultBatch().getResults())
        answered |= r.getId() == 99u && r.isValue() && r.getValue().getInt() == 5;
  EXPECT_TRUE(answered);
}

// ---------------------------------------------------------------- ResultBatcher

TaskResult result(uint64_t id, uint64_t session, std::string text = "") {
  TaskResult r;
  r.id = id;
  r.attempt = 1;
  r.session = session;
  r.outcome = text.empty() ? Value(static_cast<int64_t>(id)) : Value(std::move(text));
  return r;
}

TEST(ResultBatcher, ALoneResultIsDueAtOnceAndStreamingResultsWaitForAFullBatch) {
  ResultBatcher b({.max_results = 4, .busy_window_ns = 100 * 1000});
  Nanos now = 1'000 * kSeconds;
  EXPECT_FALSE(b.due(now, false));
  b.add(result(1, 1));
  EXPECT_TRUE(b.due(now, /*executor_idle=*/false));  // idle link: no linger
  std::vector<std::string> frames;
  auto sink = [&](std::string f) { frames.push_back(std::move(f)); };
  EXPECT_EQ(b.flush(1, kDefaultMaxFrameBytes, now, sink), 1u);
  // A frame just left: more results wait for a batch...
  b.add(result(2, 1));
  EXPECT_FALSE(b.due(now + 1000, false));
  EXPECT_EQ(b.dueAt(), now + 100 * 1000);
  // ...unless the executor has nothing more coming,
  EXPECT_TRUE(b.due(now + 1000, true));
  // or the batch is full,
  for (uint64_t id = 3; id <= 5; ++id) b.add(result(id, 1));
  EXPECT_TRUE(b.due(now + 1000, false));
  // or the window since the last frame ran out.
  b.flush(1, kDefaultMaxFrameBytes, now + 1000, sink);
  b.add(result(6, 1));
  EXPECT_FALSE(b.due(now + 1000 + 99'999, false));
  EXPECT_TRUE(b.due(now + 1000 + 100'000, false));
}

TEST(ResultBatcher, FramesStayBelowTheBudgetAndOversizeResultsBecomeErrors) {
  ResultBatcher b({.max_results = 1024, .busy_window_ns = 0});
  std::vector<TaskResult> in;
  for (uint64_t i = 0; i < 50; ++i) in.push_back(result(i, 5, std::string(1000, 'a')));
  in.push_back(result(50, 5, std::string(100'000, 'b')));  // above the budget
  in.push_back(result(51, 4));                             // a lost session's
  std::vector<ReturnedTask> ret{{.id = 60, .attempt = 1, .session = 5}};
  b.take(5, in, ret);
  EXPECT_TRUE(in.empty());
  EXPECT_EQ(b.size(), 52u);
  std::vector<std::string> frames;
  b.flush(5, 16 * 1024, 0, [&](std::string f) { frames.push_back(std::move(f)); });
  ASSERT_GT(frames.size(), 3u);
  size_t results = 0, returned = 0;
  bool oversize_error = false;
  for (const auto& f : frames) {
    EXPECT_LE(f.size(), 16u * 1024);
    auto d = decode(f);
    auto rb = d->root().getResultBatch();
    for (auto r : rb.getResults()) {
      ++results;
      if (r.getId() == 50) {
        oversize_error =
            r.isError() && fromWire(r.getError()).code() == StatusCode::kResourceExhausted;
      }
      EXPECT_NE(r.getId(), 51u);
    }
    returned += rb.getReturned().size();
  }
  EXPECT_EQ(results, 51u);
  EXPECT_EQ(returned, 1u);
  EXPECT_TRUE(oversize_error);
  EXPECT_TRUE(b.empty());
}

}  // namespace
}  // namespace tokengate::node
