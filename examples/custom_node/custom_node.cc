// tokengate-custom-node: the stock node plus the operations in word_ops.cc.
// Same flags as tokengate-node (a subset, to keep the example short).
#include <CLI/CLI.hpp>

#include "common/log.h"
#include "node/link/node.h"

int main(int argc, char** argv) {
  tokengate::node::NodeConfig config;
  config.handle_signals = true;  // SIGTERM/SIGINT: drain, flush, bye, exit 0
  std::string log_level;
  CLI::App app{"TokenGate node with word-count operations"};
  app.add_option("--coordinator", config.coordinator, "coordinator endpoint")
      ->capture_default_str();
  app.add_option("--id", config.node_id, "node id");
  app.add_option("--heavy-cores", config.heavy_cores, "cores reserved for heavy tokens");
  app.add_option("--log-level", log_level, "log level");
  CLI11_PARSE(app, argc, argv);
  tokengate::initLogging("custom-node", log_level);
  // registry left null: built-ins + every TG_OPERATION linked into this binary.
  return tokengate::node::runNode(std::move(config));
}
