// tokengate-node: the standard node main (node/app) with the built-in operations.
#include "node/app/node_main.h"

int main(int argc, char** argv) { return tokengate::node::nodeMain(argc, argv); }
