// The standard node main, as a library: flags and environment -> NodeConfig -> runNode(), plus
// the probe mode (`--check-health`). `tokengate-node` is a thin caller of nodeMain(); so is
// every binary built with the SDK's `tokengate_add_node()` (TokenGate::node_main), which is how
// a node with your own operations keeps the flags, the health file and the SIGTERM drain that
// the Docker image and the Helm chart rely on.
#pragma once

#include <string>

namespace tokengate::node {

struct NodeMainOptions {
  // First line of --help and the name used in log lines.
  std::string description = "TokenGate node: runs tokens for a coordinator";
  std::string log_name = "node";
};

// Parses argv, runs the node (or the health probe) and returns the process exit code.
int nodeMain(int argc, char** argv, const NodeMainOptions& options = {});

}  // namespace tokengate::node
