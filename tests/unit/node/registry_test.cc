#include "node/registry/registry.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace tokengate::node {
namespace {

StatusOr<Value> twice(OpContext&, std::span<const Value> args) {
  return Value(args[0].asInt() * 2);
}

TG_OPERATION("test.twice", Weight::kMedium, twice);
TG_OPERATION_FLAGS("test.twice_pure", Weight::kLight, twice,
                   OpFlags::kDeterministic | OpFlags::kNonBlocking);

TEST(RegistryTest, AddFindAndLookup) {
  Registry r;
  ASSERT_TRUE(r.add("a", Weight::kLight, twice).ok());
  ASSERT_TRUE(r.add("b", Weight::kHeavy, twice).ok());
  ASSERT_NE(r.find("a"), nullptr);
  EXPECT_EQ(r.find("a")->name, "a");
  EXPECT_EQ(r.find("b")->weight, Weight::kHeavy);
  EXPECT_EQ(r.find("c"), nullptr);
  auto missing = r.lookup("c");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "unknown operation c");
  ASSERT_EQ(r.operations().size(), 2u);
  EXPECT_EQ(r.operations()[0]->name, "a");  // registration order
}

TEST(RegistryTest, RejectsBadRegistrations) {
  Registry r;
  EXPECT_EQ(r.add("", Weight::kLight, twice).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.add("x", Weight::kLight, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.add("x", Weight::kUnspecified, twice).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(r.add("x", Weight::kLight, twice).ok());
  EXPECT_EQ(r.add("x", Weight::kMedium, twice).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(r.find("x")->weight, Weight::kLight);
}

TEST(RegistryTest, CopiesAreIndependent) {
  Registry r;
  ASSERT_TRUE(r.add("x", Weight::kLight, twice).ok());
  Registry copy = r;
  ASSERT_TRUE(copy.add("y", Weight::kLight, twice).ok());
  EXPECT_EQ(r.find("y"), nullptr);
  ASSERT_NE(copy.find("x"), nullptr);
  EXPECT_NE(copy.find("x"), r.find("x"));
}

TEST(RegistryTest, StaticRegistrationViaMacro) {
  Registry r = Registry::withLinkedOperations();
  const Operation* op = r.find("test.twice");
  ASSERT_NE(op, nullptr);
  EXPECT_EQ(op->weight, Weight::kMedium);
  OpContext ctx;
  Value args[] = {Value(21)};
  auto out = invokeOperation(*op, ctx, args);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->asInt(), 42);
  // Adding the linked set twice reports the duplicate but keeps the first.
  EXPECT_EQ(r.addLinkedOperations().code(), StatusCode::kAlreadyExists);
}

TEST(RegistryTest, FlagsAreDeclaredAtRegistrationAndSurviveCopiesAndLinking) {
  Registry r;
  ASSERT_TRUE(r.add("plain", Weight::kLight, twice).ok());
  ASSERT_TRUE(r.add("det", Weight::kLight, twice, /*deterministic=*/true).ok());
  ASSERT_TRUE(r.add("nb", Weight::kLight, twice, OpFlags::kNonBlocking).ok());
  ASSERT_TRUE(
      r.add("pure", Weight::kLight, twice, OpFlags::kDeterministic | OpFlags::kNonBlocking).ok());
  Registry copy = r;
  for (const Registry* reg : {&r, &copy}) {
    EXPECT_FALSE(reg->find("plain")->deterministic);
    EXPECT_FALSE(reg->find("plain")->non_blocking);  // nothing is non-blocking unless declared
    EXPECT_TRUE(reg->find("det")->deterministic);
    EXPECT_FALSE(reg->find("det")->non_blocking);
    EXPECT_FALSE(reg->find("nb")->deterministic);
    EXPECT_TRUE(reg->find("nb")->non_blocking);
    EXPECT_TRUE(reg->find("pure")->deterministic);
    EXPECT_TRUE(reg->find("pure")->non_blocking);
  }
  Registry linked = Registry::withLinkedOperations();
  ASSERT_NE(linked.find("test.twice_pure"), nullptr);
  EXPECT_TRUE(linked.find("test.twice_pure")->non_blocking);
  EXPECT_TRUE(linked.find("test.twice_pure")->deterministic);
  EXPECT_FALSE(linked.find("test.twice")->non_blocking);
}

TEST(RegistryTest, ExceptionsBecomeErrors) {
  Registry r;
  ASSERT_TRUE(
      r.add("throws", Weight::kLight, [](OpContext&, std::span<const Value>) -> StatusOr<Value> {
         throw std::runtime_error("boom");
       }).ok());
  ASSERT_TRUE(r.add("wrongtype", Weight::kLight,
                    [](OpContext&, std::span<const Value> a) -> StatusOr<Value> {
                      return Value(a[0].asInt());  // throws bad_variant_access on text
                    })
                  .ok());
  ASSERT_TRUE(r.add("throws_int", Weight::kLight,
                    [](OpContext&, std::span<const Value>) -> StatusOr<Value> { throw 7; })
                  .ok());
  OpContext ctx;
  Value args[] = {Value("text")};
  auto a = invokeOperation(*r.find("throws"), ctx, args);
  EXPECT_EQ(a.status().code(), StatusCode::kInternal);
  EXPECT_NE(a.status().message().find("boom"), std::string::npos);
  EXPECT_EQ(invokeOperation(*r.find("wrongtype"), ctx, args).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(invokeOperation(*r.find("throws_int"), ctx, args).status().code(),
            StatusCode::kInternal);
}

TEST(RegistryTest, ContextCancelAndDeadline) {
  std::atomic<uint64_t> word{0};
  OpContext ctx(7, 2, 0, &word, 5);
  EXPECT_EQ(ctx.tokenId(), 7u);
  EXPECT_EQ(ctx.attempt(), 2u);
  EXPECT_FALSE(ctx.cancelled());
  word = 4;  // aimed at another token
  EXPECT_FALSE(ctx.cancelled());
  word = 5;
  EXPECT_TRUE(ctx.cancelled());
  EXPECT_TRUE(ctx.cancelRequested());

  OpContext expired(1, 1, /*deadline_ns=*/1);  // long past on the steady clock
  EXPECT_TRUE(expired.deadlineExceeded());
  EXPECT_TRUE(expired.cancelled());
  EXPECT_FALSE(expired.cancelRequested());
}

}  // namespace
}  // namespace tokengate::node
