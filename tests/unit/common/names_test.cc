// Name validation (common/names.h) and the fan-in budget of JobSpec::validate.
#include "common/names.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include "common/job.h"
#include "common/wire.h"

namespace tokengate {
namespace {

TEST(Names, AcceptsTheNamesInUse) {
  for (const char* id : {"node-1", "worker.example.com-4242", "tg-node-7f9c4", "a", "n_1:eu@x"})
    EXPECT_TRUE(validateNodeId(id).ok()) << id;
  for (const char* op : {"leibniz.term", "leibniz.term_dec50", "demo.square_sum", "words/count",
                         "hash", "v2:resize@gpu"})
    EXPECT_TRUE(validateOperationName(op).ok()) << op;
  EXPECT_TRUE(validateNodeId(std::string(kMaxNameBytes, 'x')).ok());
}

TEST(Names, RefusesEmptyLongNonAsciiAndControlCharacters) {
  const std::string bad[] = {"",
                             std::string(kMaxNameBytes + 1, 'x'),
                             "caf\xc3\xa9",  // valid UTF-8, but outside the charset
                             "bad\xff",      // not UTF-8
                             "sp ace",
                             "new\nline",
                             "quote\"",
                             "brace{x}",
                             std::string("nul\0x", 5)};
  for (const auto& name : bad) {
    const Status a = validateNodeId(name), b = validateOperationName(name);
    EXPECT_EQ(a.code(), StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(b.code(), StatusCode::kInvalidArgument) << name;
    // The message quotes the name escaped: printable ASCII only.
    for (char c : a.message()) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << a.message();
  }
  // Node ids may not contain '/': the routing id is "<node-id>/<incarnation>".
  EXPECT_FALSE(validateNodeId("a/b").ok());
  EXPECT_TRUE(validateOperationName("a/b").ok());
}

TEST(Names, HelloIsCheckedIdAndEveryOperation) {
  auto hello = [](const std::string& id, std::vector<std::string> ops) {
    auto msg = std::make_unique<capnp::MallocMessageBuilder>();
    auto h = msg->initRoot<wire::NodeHello>();
    h.setNodeId(id);
    auto l = h.initOperations(static_cast<unsigned>(ops.size()));
    for (unsigned i = 0; i < ops.size(); ++i) l[i].setName(ops[i]);
    return validateHello(h.asReader());
  };
  EXPECT_TRUE(hello("node-1", {"leibniz.term", "echo"}).ok());
  EXPECT_FALSE(hello("", {"echo"}).ok());
  EXPECT_FALSE(hello("node-1", {"echo", "bad\xff"}).ok());
  EXPECT_FALSE(hello("node-1", std::vector<std::string>(kMaxHelloOperations + 1, "op")).ok());
}

JobSpec fanIn(uint32_t inputs) {
  JobSpec job;
  TokenSpec leaf;
  leaf.op = "echo";
  leaf.repeat = inputs;
  leaf.args.push_back(Arg::val(Value(int64_t{1})));
  job.add(leaf);
  TokenSpec sink;
  sink.op = "hash";
  sink.args.push_back(Arg::refs(0, inputs));
  job.add(sink);
  return job;
}

TEST(FanInBudget, AnArgumentSetLargerThanAFrameIsRefusedAtValidation) {
  const size_t frame = 1 << 20;
  // 1 MB / 24 bytes per argument: ~43k arguments fit, 100k cannot.
  EXPECT_TRUE(fanIn(10'000).validate(1 << 22, frame).ok());
  const Status st = fanIn(100'000).validate(1 << 22, frame);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("100000 argument(s)"), std::string::npos) << st;
  // Without a frame budget (callers that do not ship the job) nothing changes.
  EXPECT_TRUE(fanIn(100'000).validate(1 << 22).ok());
  // Literal values count with their payload.
  JobSpec big;
  TokenSpec t;
  t.op = "hash";
  t.args.push_back(Arg::val(Value(std::string(2 << 20, 'x'))));
  big.add(t);
  EXPECT_EQ(big.validate(10, frame).code(), StatusCode::kResourceExhausted);
  // The 1M Leibniz pyramid (1000-way chunks) is far below the default frame limit.
  auto leibniz = makeLeibnizJob(1'000'000, Precision::kDouble);
  ASSERT_TRUE(leibniz.ok());
  EXPECT_TRUE(leibniz->validate(4'000'000, kDefaultMaxFrameBytes).ok());
}

}  // namespace
}  // namespace tokengate
