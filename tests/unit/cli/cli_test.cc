// tgctl helpers: endpoint normalisation (client/client.h) and the progress bar's ETA.
#include <gtest/gtest.h>

#include "cli/progress.h"
#include "client/client.h"

namespace tokengate {
namespace {

TEST(NormalizeEndpoint, AddsTcpAndDefaultPort) {
  EXPECT_EQ(client::normalizeEndpoint("127.0.0.1:5555").value(), "tcp://127.0.0.1:5555");
  EXPECT_EQ(client::normalizeEndpoint("coordinator").value(), "tcp://coordinator:5555");
  EXPECT_EQ(client::normalizeEndpoint("tcp://h:1").value(), "tcp://h:1");
  EXPECT_EQ(client::normalizeEndpoint("ipc:///tmp/x").value(), "ipc:///tmp/x");
}

TEST(NormalizeEndpoint, RejectsMalformed) {
  for (const char* bad : {"", "host:", ":5555", "host:port", "a b:1", "host:55x"}) {
    auto r = client::normalizeEndpoint(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(NormalizeEndpoint, ClientWithBadEndpointFailsInsteadOfThrowing) {
  client::Client c("tcp://nonsense");  // zmq rejects it: no exception escapes
  EXPECT_EQ(c.endpointStatus().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.ping(kMillis).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(c.info(kMillis).ok());
}

TEST(NormalizeEndpoint, PingTimesOutAsUnavailable) {
  // Nothing listens on port 1: ZeroMQ keeps retrying, ping gives up after its timeout.
  client::Client c("127.0.0.1:1");
  ASSERT_TRUE(c.endpointStatus().ok());
  const Status st = c.ping(50 * kMillis);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("tcp://127.0.0.1:1"), std::string::npos);
}

TEST(ProgressEta, Formats) {
  EXPECT_EQ(cli::formatEta(0, 0), "0s");
  EXPECT_EQ(cli::formatEta(10, 0), "?");
  EXPECT_EQ(cli::formatEta(100, 10), "10s");
  EXPECT_EQ(cli::formatEta(1850, 10), "3m05s");
  EXPECT_EQ(cli::formatEta(3720, 1), "1h02m");
  EXPECT_EQ(cli::formatEta(1'000'000'000, 1), ">100h");
}

}  // namespace
}  // namespace tokengate
