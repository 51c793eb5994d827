// Decode boundary and codecs: malformed input is an error value, never a crash.
#include "common/wire.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "common/job_json.h"

namespace tokengate {
namespace {

std::string helloFrame(uint16_t version = kProtocolVersion) {
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(version);
  auto h = f.initHello();
  h.setNodeId("n1");
  h.initOperations(2)[0].setName("leibniz.term");
  return encodeFrame(msg);
}

TEST(WireTest, RoundTripsAFrame) {
  auto bytes = helloFrame();
  auto f = decodeFrame(bytes.data(), bytes.size());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->root().isHello());
  EXPECT_STREQ((*f)->root().getHello().getNodeId().cStr(), "n1");
}

// Frames built one after another on a reused first segment are each complete, the scratch is
// re-zeroed between them (a smaller frame after a larger one carries nothing of it), a frame
// larger than the scratch spills into malloc'ed segments, and a frame built while another holds
// the scratch gets its own segment.
TEST(WireTest, FrameScratchIsReusedAndStaysClean) {
  FrameScratch scratch(64);
  auto hello = [&](const std::string& id, unsigned ops) {
    auto f = newFrame(scratch);
    auto h = f.root.initHello();
    h.setNodeId(id);
    auto list = h.initOperations(ops);
    for (unsigned i = 0; i < ops; ++i) list[i].setName("op-" + std::to_string(i));
    return f.encode();
  };
  const std::string big = hello("a-long-node-identifier-for-the-first-frame", 40);  // > 64 words
  const std::string small = hello("n2", 1);
  for (const auto& [bytes, id, ops] :
       {std::tuple{big, "a-long-node-identifier-for-the-first-frame", 40u},
        std::tuple{small, "n2", 1u}}) {
    auto f = decodeFrame(bytes.data(), bytes.size());
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_STREQ((*f)->root().getHello().getNodeId().cStr(), id);
    EXPECT_EQ((*f)->root().getHello().getOperations().size(), ops);
  }
  // The small frame is byte-identical to the same frame built on a fresh segment.
  auto fresh = newFrame();
  auto h = fresh.root.initHello();
  h.setNodeId("n2");
  h.initOperations(1)[0].setName("op-0");
  EXPECT_EQ(small, fresh.encode());
  // Nested: the outer frame holds the scratch; the inner one still encodes correctly.
  auto outer = newFrame(scratch);
  outer.root.initHello().setNodeId("outer");
  const std::string inner = hello("inner", 2);
  const std::string outer_bytes = outer.encode();
  auto fi = decodeFrame(inner.data(), inner.size());
  auto fo = decodeFrame(outer_bytes.data(), outer_bytes.size());
  ASSERT_TRUE(fi.ok() && fo.ok());
  EXPECT_STREQ((*fi)->root().getHello().getNodeId().cStr(), "inner");
  EXPECT_STREQ((*fo)->root().getHello().getNodeId().cStr(), "outer");
}

// The scratch starts small and grows to the largest frame built on it (up to its bound), so a
// core that never sends a big frame never allocates a big segment; frames stay exact across
// the growth.
TEST(WireTest, FrameScratchGrowsToTheLargestFrameUpToItsBound) {
  FrameScratch scratch(4096, 64);
  EXPECT_EQ(scratch.words(), 64u);
  auto hello = [&](unsigned ops) {
    auto f = newFrame(scratch);
    auto list = f.root.initHello().initOperations(ops);
    for (unsigned i = 0; i < ops; ++i) list[i].setName("op-" + std::to_string(i));
    return f.encode();
  };
  const std::string small = hello(1);
  EXPECT_EQ(scratch.words(), 64u);     // fitted: no growth
  const std::string big = hello(100);  // > 64 words: spills, and asks for more next time
  EXPECT_EQ(scratch.words(), 64u);
  const std::string again = hello(100);
  EXPECT_GT(scratch.words(), 64u);
  EXPECT_LE(scratch.words(), 4096u);
  // The same frame, now in one segment (a stream's first word is the segment count - 1).
  auto segments = [](const std::string& f) { return 1 + static_cast<uint8_t>(f[0]); };
  EXPECT_GT(segments(big), 1);
  EXPECT_EQ(segments(again), 1);
  for (const std::string* f : {&big, &again}) {
    auto d = decodeFrame(f->data(), f->size());
    ASSERT_TRUE(d.ok()) << d.status();
    auto ops = (*d)->root().getHello().getOperations();
    ASSERT_EQ(ops.size(), 100u);
    EXPECT_STREQ(ops[99].getName().cStr(), "op-99");
  }
  EXPECT_EQ(small, hello(1));  // re-zeroed after the growth too
  (void)hello(2000);           // far beyond the bound: capped
  (void)hello(1);
  EXPECT_EQ(scratch.words(), 4096u);
}

// A handler may read a decoded frame's lists and values more than once (the coordinator reads
// a result batch's results, their values, then the returned list): that must not exceed the
// reader's traversal limit. A 1024 + 1024 dec50 hand-back batch read three times over.
TEST(WireTest, DecodedFramesCanBeReadSeveralTimes) {
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  auto rb = f.initResultBatch();
  auto results = rb.initResults(1024);
  for (unsigned i = 0; i < results.size(); ++i) {
    results[i].setId(i);
    toWire(Value(Dec50{}), results[i].initValue());
  }
  auto returned = rb.initReturned(1024);
  for (unsigned i = 0; i < returned.size(); ++i) returned[i].setId(i);
  const std::string bytes = encodeFrame(msg);
  auto decoded = decodeFrame(bytes.data(), bytes.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  uint64_t sum = 0;
  EXPECT_NO_THROW({
    for (int pass = 0; pass < 3; ++pass) {
      auto r = (*decoded)->root().getResultBatch();
      for (auto x : r.getResults()) sum += x.getId() + fromWire(x.getValue()).isDec();
      for (auto x : r.getReturned()) sum += x.getId();
    }
  });
  EXPECT_EQ(sum, 3u * (2u * (1023u * 1024u / 2) + 1024u));
}

// encodeFrame writes capnp's standard framing itself: byte-identical to capnp's own writer for
// one segment, an even and an odd number of segments (the table's padding word differs).
TEST(WireTest, EncodeFrameMatchesCapnpFramingForAnySegmentCount) {
  for (unsigned nodes : {1u, 20u, 60u, 400u}) {
    capnp::MallocMessageBuilder msg(16, capnp::AllocationStrategy::FIXED_SIZE);
    auto f = msg.initRoot<wire::Frame>();
    f.setVersion(kProtocolVersion);
    auto ops = f.initHello().initOperations(nodes);
    for (unsigned i = 0; i < nodes; ++i) ops[i].setName("operation-" + std::to_string(i));
    const std::string mine = encodeFrame(msg);
    auto flat = capnp::messageToFlatArray(msg);
    const auto bytes = flat.asBytes();
    EXPECT_EQ(mine, std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size()))
        << nodes << " operations, " << msg.getSegmentsForOutput().size() << " segments";
    auto d = decodeFrame(mine.data(), mine.size());
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ((*d)->root().getHello().getOperations().size(), nodes);
  }
}

// A borrowed decode reads aligned input in place and copies misaligned input; both read alike.
TEST(WireTest, BorrowedDecodeReadsAlignedAndMisalignedInput) {
  const std::string bytes = helloFrame();
  std::vector<capnp::word> aligned(bytes.size() / sizeof(capnp::word));
  std::memcpy(static_cast<void*>(aligned.data()), bytes.data(), bytes.size());
  std::string shifted(bytes.size() + 1, '\0');
  std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
  for (const void* p :
       {static_cast<const void*>(aligned.data()), static_cast<const void*>(shifted.data() + 1)}) {
    auto f = decodeFrameBorrowed(p, bytes.size());
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_STREQ((*f)->root().getHello().getNodeId().cStr(), "n1");
    EXPECT_EQ((*f)->bytes(), bytes.size());
  }
  // Borrowed decodes refuse what decodeFrame refuses.
  EXPECT_FALSE(decodeFrameBorrowed(aligned.data(), bytes.size() - 8).ok());
}

// kLazy skips the up-front walk: a frame with a pointer out of bounds decodes, and the bad part
// throws when it is read (callers catch kj::Exception); kFull refuses the same frame at once.
TEST(WireTest, LazyCheckDefersMalformedPointersToTheRead) {
  const std::string bytes = helloFrame();
  const size_t n = bytes.size() / sizeof(capnp::word);
  // A list pointer of 5 bytes, 2^29 words ahead: outside any frame.
  const uint64_t bad = 1 | (uint64_t{0x1fffffff} << 2) | (uint64_t{2} << 32) | (uint64_t{5} << 35);
  size_t deferred = 0;
  for (size_t i = 2; i < n; ++i) {  // word 0: segment table, word 1: root pointer
    std::vector<capnp::word> words(n);
    std::memcpy(static_cast<void*>(words.data()), bytes.data(), bytes.size());
    std::memcpy(static_cast<void*>(&words[i]), &bad, sizeof bad);
    const size_t size = n * sizeof(capnp::word);
    if (decodeFrame(words.data(), size).ok()) continue;  // a data word: nothing to catch
    auto lazy = decodeFrame(words.data(), size, kDefaultMaxFrameBytes, FrameCheck::kLazy);
    if (!lazy.ok()) continue;  // the frame header itself
    ++deferred;
    EXPECT_THROW((void)(*lazy)->root().totalSize(), kj::Exception) << "word " << i;
  }
  EXPECT_GT(deferred, 0u);
}

TEST(WireTest, TruncatedFramesAreRejectedAtEveryLength) {
  auto bytes = helloFrame();
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto f = decodeFrame(bytes.data(), len);
    EXPECT_FALSE(f.ok()) << "length " << len;
    if (!f.ok()) {
      EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(WireTest, WrongVersionIsRejected) {
  auto bytes = helloFrame(7);
  auto f = decodeFrame(bytes.data(), bytes.size());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("protocol version 7"), std::string::npos);
}

TEST(WireTest, OversizeFramesAreRejected) {
  std::string big(1 << 16, '\0');
  auto f = decodeFrame(big.data(), big.size(), 1024);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kResourceExhausted);
}

TEST(WireTest, ListClaimingMoreThanTheFrameHoldsIsRejected) {
  // A valid frame whose token list pointer is patched to claim 2^28 elements.
  capnp::MallocMessageBuilder msg;
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  f.initControl().initCancelTokens(1).set(0, 7);
  auto bytes = encodeFrame(msg);
  auto* words = reinterpret_cast<uint64_t*>(bytes.data());
  const size_t nwords = bytes.size() / 8;
  bool patched = false;
  for (size_t i = 1; i < nwords; ++i) {
    // List pointer: low 2 bits == 1; element count in the top 29 bits.
    if ((words[i] & 3) == 1 && (words[i] >> 35) == 1) {
      words[i] = (words[i] & ((uint64_t{1} << 35) - 1)) | (uint64_t{1} << 28 << 35);
      patched = true;
      break;
    }
  }
  ASSERT_TRUE(patched);
  auto d = decodeFrame(bytes.data(), bytes.size());
  EXPECT_FALSE(d.ok());
}

TEST(WireTest, RandomGarbageNeverCrashes) {
  std::mt19937_64 rng(42);
  auto good = helloFrame();
  int accepted = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string b = good;
    for (int k = 0; k < 4; ++k) b[rng() % b.size()] = static_cast<char>(rng());
    auto f = decodeFrame(b.data(), b.size());
    if (f.ok()) {
      ++accepted;
      (void)(*f)->root().which();
    }
  }
  for (int i = 0; i < 500; ++i) {
    std::string b(8 * (1 + rng() % 32), '\0');
    for (auto& c : b) c = static_cast<char>(rng());
    (void)decodeFrame(b.data(), b.size());
  }
  SUCCEED() << accepted << " mutated frames still decoded";
}

TEST(WireTest, ValuesRoundTripIncludingDec50) {
  std::vector<Value> values{
      Value(),
      Value(int64_t{-5}),
      Value(2.5),
      Value("text"),
      Value(Bytes{std::string("\0\1\2", 3)}),
      Value(true),
      Value(fromBigFloat(BigFloat("3.14159265358979323846264338327950288419716939937510")))};
  for (const auto& v : values) {
    capnp::MallocMessageBuilder msg;
    auto b = msg.initRoot<wire::Value>();
    toWire(v, b);
    EXPECT_EQ(fromWire(b.asReader()), v) << v.toString();
  }
  BigFloat x("-0.00000123456789012345678901234567890123456789012345");
  EXPECT_EQ(toBigFloat(fromBigFloat(x)), x);
}

TEST(WireTest, JobSpecRoundTrips) {
  auto job = makeLeibnizJob(10000, Precision::kDec50);
  ASSERT_TRUE(job.ok());
  capnp::MallocMessageBuilder msg;
  toWire(*job, msg.initRoot<wire::JobSpec>());
  auto back = fromWire(msg.getRoot<wire::JobSpec>().asReader());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->tokenCount(), job->tokenCount());
  EXPECT_EQ(back->tokens[1].args[0].count, 1000u);
  EXPECT_TRUE(back->validate(1 << 20).ok());
}

TEST(JobJsonTest, ParsesTheDocumentedShape) {
  auto job = parseJobJson(R"({"name":"demo","tokens":[
      {"op":"hash","weight":"light","args":["abc", 1, 2.5, true, null, {"dec":"1.5"}]},
      {"op":"spin","repeat":4,"args":[{"value":100,"step":10}],"key":"k","deadline_ms":500},
      {"op":"sum","args":[{"refs":[1,4]}],"output":true,"name":"total"}]})");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->tokenCount(), 6u);
  EXPECT_TRUE(job->validate(100).ok());
  EXPECT_EQ(job->tokens[1].args[0].step, 10);
  auto again = jobFromJson(jobToJson(*job));
  ASSERT_TRUE(again.ok()) << again.status() << " " << boost::json::serialize(jobToJson(*job));
  EXPECT_EQ(again->tokenCount(), 6u);
}

TEST(JobJsonTest, BadInputGetsClearErrors) {
  struct Case {
    const char* text;
    const char* needle;
  } cases[] = {
      {"{", "invalid JSON"},
      {"[]", "must be a JSON object"},
      {R"({"tokens":5})", "'tokens' must be an array"},
      {R"({"tokens":[{"args":[]}]})", "missing 'op'"},
      {R"({"tokens":[{"op":"x","weight":"huge"}]})", "unknown weight class"},
      {R"({"tokens":[{"op":"x","repeat":-1}]})", "out of range"},
      {R"({"tokens":[{"op":"x","args":[{"refs":[0]}]}]})", "refs must be"},
      {R"({"tokens":[{"op":"x","args":[{"dec":"pi"}]}]})", "not a decimal"},
  };
  for (const auto& c : cases) {
    auto r = parseJobJson(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos)
        << c.text << " -> " << r.status().message();
  }
}

TEST(LeibnizTest, LocalReferenceConvergesToPi) {
  auto d = leibnizLocal(100000, Precision::kDouble);
  EXPECT_NEAR(d.asDouble(), 3.14159265358979, 2e-5);
  auto q = leibnizLocal(10000, Precision::kDec50);
  EXPECT_NEAR(q.toDouble(), 3.14159265358979, 2e-4);
  EXPECT_FALSE(makeLeibnizJob(1234, Precision::kDouble).ok());
}

TEST(LeibnizTest, Dec50TermIsBoostsQuotientBitForBit) {
  auto same = [](int64_t k) {
    const Dec50 fast = leibnizTermDec50(k);
    const Dec50 boost = fromBigFloat(leibnizTermDec(k));
    EXPECT_EQ(fast, boost) << "k=" << k << " exponent " << fast.exponent << " vs " << boost.exponent
                           << ", limb2 " << fast.limbs[2] << " vs " << boost.limbs[2] << ", limb0 "
                           << fast.limbs[0] << " vs " << boost.limbs[0];
    return fast == boost;
  };
  for (int64_t k = 0; k < 200000; ++k)
    if (!same(k)) return;
  // Around every power of two of d = 2k + 1 (the exponent steps there), the fast path's end and
  // the Boost fallback beyond it (negative k, k >= 2^62).
  for (int b = 1; b < 63; ++b)
    for (int64_t delta = -3; delta <= 3; ++delta)
      if (!same((int64_t{1} << b) / 2 + delta)) return;
  for (int64_t k :
       {(int64_t{1} << 62) - 1, int64_t{1} << 62, std::numeric_limits<int64_t>::max() / 2,
        int64_t{-1}, int64_t{-2}, int64_t{-12345}})
    if (!same(k)) return;
  std::mt19937_64 rng(13);
  for (int i = 0; i < 100000; ++i) {
    const int bits = 1 + static_cast<int>(rng() % 62);
    if (!same(static_cast<int64_t>(rng() >> (64 - bits)))) return;
  }
}

// A packed result block as the node builds it: `n` ids and equal columns of Dec50s unless a test
// bends one.
static void decBlock(wire::PackedResults::Builder blk, unsigned n, unsigned limbs,
                     unsigned exponents, unsigned flags) {
  blk.initIds(n);
  blk.initAttempts(n);
  blk.initRunNs(n);
  blk.initQueueNs(n);
  auto decs = blk.initDecs();
  decs.initLimbs(limbs);
  decs.initExponents(exponents);
  decs.initFlags(flags);
}

TEST(WireTest, PackedDec50ColumnsRoundTripAndMalformedBlocksAreRefused) {
  capnp::MallocMessageBuilder msg;
  auto blk = msg.initRoot<wire::PackedResults>();
  decBlock(blk, 2, 6, 2, 2);
  Dec50 a = fromBigFloat(BigFloat(-5) / 7);
  Dec50 b;
  b.kind = 2;  // +inf
  PackedDecWriter(blk.getDecs()).set(0, a);
  PackedDecWriter(blk.getDecs()).set(1, b);
  auto ok = packedResultCount(blk.asReader());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, 2u);
  EXPECT_EQ(PackedDecColumns(blk.asReader().getDecs()).at(0), a);
  EXPECT_EQ(PackedDecColumns(blk.asReader().getDecs()).at(1), b);
  EXPECT_EQ(packedDecFlags(a), 0x3);  // negative, finite
  EXPECT_EQ(packedDecFlags(b), 0x4);  // infinity

  // An unknown flag bit.
  blk.getDecs().getFlags().set(1, 0x14);
  auto bad = packedResultCount(blk.asReader());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("unknown bits"), std::string::npos) << bad.status();

  // Columns of the wrong length: limbs not 3 per result, a short exponent or flags column.
  for (auto [limbs, exponents, flags] : {std::tuple{5u, 2u, 2u}, std::tuple{6u, 1u, 2u},
                                         std::tuple{6u, 2u, 3u}, std::tuple{0u, 0u, 0u}}) {
    capnp::MallocMessageBuilder m;
    auto x = m.initRoot<wire::PackedResults>();
    decBlock(x, 2, limbs, exponents, flags);
    auto st = packedResultCount(x.asReader());
    ASSERT_FALSE(st.ok()) << limbs << " " << exponents << " " << flags;
    EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
  }
  // A short common column in a float block.
  capnp::MallocMessageBuilder m;
  auto f = m.initRoot<wire::PackedResults>();
  f.initIds(3);
  f.initAttempts(3);
  f.initRunNs(2);
  f.initQueueNs(3);
  f.initF64s(3);
  EXPECT_FALSE(packedResultCount(f.asReader()).ok());
  f.initRunNs(3);
  EXPECT_TRUE(packedResultCount(f.asReader()).ok());
}

}  // namespace
}  // namespace tokengate
