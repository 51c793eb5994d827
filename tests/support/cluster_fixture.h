// What every integration test with real processes starts from: LocalCluster options for the
// binaries of this build, and a start that records a test failure instead of returning one.
// Header-only on purpose: TG_BIN_DIR is a compile definition of each integration test target
// (tests/integration/CMakeLists.txt), where the coordinator and node binaries are.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "client/local_cluster.h"

#ifndef TG_BIN_DIR
#error "TG_BIN_DIR (the directory of tokengate-coordinator and tokengate-node) must be defined"
#endif

namespace tokengate::testing {

// `nodes` nodes of this build's binaries (TG_TEST_BIN_DIR names another directory holding
// tokengate-coordinator and tokengate-node, e.g. a copy used while the tree rebuilds), logging
// at TG_TEST_LOG (default warn). With `fast_failure_detection` the coordinator expects a
// heartbeat every 100 ms and loses a node after 1.5 s of silence.
inline client::LocalClusterOptions clusterOptions(uint32_t nodes,
                                                  bool fast_failure_detection = true) {
  client::LocalClusterOptions o;
  o.bin_dir = std::getenv("TG_TEST_BIN_DIR") ? std::getenv("TG_TEST_BIN_DIR") : TG_BIN_DIR;
  o.nodes = nodes;
  o.log_level = std::getenv("TG_TEST_LOG") ? std::getenv("TG_TEST_LOG") : "warn";
  if (fast_failure_detection)
    o.coordinator_args = {"--heartbeat-ms", "100", "--node-timeout-ms", "1500"};
  return o;
}

// Starts the cluster; on failure records a test failure (with the reason) and returns null.
inline std::unique_ptr<client::LocalCluster> startCluster(client::LocalClusterOptions o) {
  auto c = client::LocalCluster::start(std::move(o));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

// Replaces the value of a coordinator flag already in `o` (e.g. one clusterOptions() set).
inline void setCoordinatorArg(client::LocalClusterOptions& o, const std::string& flag,
                              const std::string& value) {
  auto it = std::find(o.coordinator_args.begin(), o.coordinator_args.end(), flag);
  ASSERT_NE(it, o.coordinator_args.end()) << flag;
  ASSERT_NE(it + 1, o.coordinator_args.end()) << flag;
  *(it + 1) = value;
}

}  // namespace tokengate::testing
