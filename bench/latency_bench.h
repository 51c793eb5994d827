// tokengate-bench latency (latency_bench.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tokengate::bench {

struct LatencyOptions {
  uint32_t jobs = 10'000;  // measured round trips per run
  uint32_t warmup = 500;
  uint32_t nodes = 2;
  uint32_t runs = 1;  // per configuration, alternating; medians of the runs' percentiles
  // Coordinator and node binaries (default: next to tokengate-bench). More than one: runs
  // alternate between the builds, figures per build.
  std::vector<std::string> bin_dirs;
  // Also time the ZeroMQ floor of the same path shape (zmq-floor's two-hop: client -> relay ->
  // echo -> relay -> client, same transport and security) in every run, between the cluster
  // runs, and print each build's distance to it.
  bool with_floor = false;
  // The floor's shapes with --with-floor: two-hop, and/or two-hop-ack (two-hop plus an
  // acknowledgement to the client after the forward: the SubmitReply a watched job gets).
  std::vector<std::string> floor_shapes{"two-hop"};
  // Also run every build with SubmitJob.ackWithResult set (each build then appears twice, with
  // and without, in the same rotated rounds): a job that finishes within the coordinator's
  // --ack-hold-us gets no SubmitReply, its JobDone carries the request id.
  bool ack_with_result = false;
  std::string transport = "tcp";      // tcp (loopback) | ipc (nodes and client over ipc://)
  std::string security = "insecure";  // insecure | curve
  bool pin = true;  // nodes on disjoint cores (LocalCluster's default); --no-pin: let them float
  std::string log_level = "warn";
  std::vector<std::string> coordinator_args;
  std::vector<std::string> node_args;
};

int runLatency(const LatencyOptions& options);

}  // namespace tokengate::bench
