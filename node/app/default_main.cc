// `main` of TokenGate::node_main: the standard node main plus whatever operations are linked into
// the executable (TG_OPERATION). Linked by tokengate_add_node().
#include "node/app/node_main.h"

int main(int argc, char** argv) {
  tokengate::node::NodeMainOptions options;
  options.description = "TokenGate node (built with tokengate_add_node)";
  return tokengate::node::nodeMain(argc, argv, options);
}
