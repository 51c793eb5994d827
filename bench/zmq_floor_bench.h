// tokengate-bench zmq-floor (zmq_floor_bench.cc): the transport floor under a lone token's round
// trip. Raw cppzmq round trips over loopback TCP (or ipc://) between real processes, with the
// socket types the cluster uses (DEALER clients and nodes, a ROUTER server), no TokenGate code on
// the path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tokengate::bench {

struct ZmqFloorOptions {
  uint32_t round_trips = 10'000;  // measured per run and shape
  uint32_t warmup = 500;
  uint32_t runs = 3;              // runs per shape, alternating shapes; medians of the percentiles
  uint32_t bytes = 256;           // payload per message (a one-token SubmitJob frame is ~200-300)
  std::string security = "both";  // insecure | curve | both
  std::vector<std::string> shapes{"one-hop", "two-hop"};
  // Receivers (client, relay, echo) poll with ZMQ_DONTWAIT for this long before blocking in
  // recv: what a spin-then-block wait could buy on top of ZeroMQ (its I/O threads still block).
  std::vector<uint32_t> spin_us{0};
  // Who spins: "all" receivers, or only the "server" (the ROUTER that binds: the relay in
  // two-hop, as the coordinator's loop would; the echo in one-hop).
  std::string spin_at = "all";
  // tcp: loopback TCP (127.0.0.1, port 0); ipc: a Unix domain socket in /tmp (ipc://), what a
  // node or client on the coordinator's host can use (docs/deployment.md, "Co-located peers").
  std::string transport = "tcp";
};

int runZmqFloor(const ZmqFloorOptions& options);

// One run of one shape ("one-hop" | "two-hop") with fresh server processes: the timed round
// trips in us (o.round_trips of them, after o.warmup). `tokengate-bench latency --with-floor`
// interleaves these with its cluster runs. Exits the process if a server cannot start.
std::vector<double> zmqFloorRoundTrips(const ZmqFloorOptions& o, const std::string& shape,
                                       bool curve, uint32_t spin_us = 0);

// The server side, run in a child process (`tokengate-bench zmq-floor-serve`, hidden): role
// "echo" binds a ROUTER (one-hop) or, with `connect` set, connects a DEALER to a relay (two-hop)
// and sends every message back; role "relay" binds a ROUTER and forwards client messages to the
// echo peer and the echo's answers back to their client. Writes its bound endpoint as one line
// to stdout, then serves until killed.
struct ZmqFloorServeOptions {
  std::string role;
  std::string connect;     // echo in two-hop: the relay's endpoint
  std::string secret_key;  // CURVE server secret (bound sockets) or client secret (echo)
  std::string server_key;  // CURVE: the relay's public key (two-hop echo)
  uint32_t spin_us = 0;
  std::string transport = "tcp";  // of the bound ROUTER: tcp | ipc
};

int serveZmqFloor(const ZmqFloorServeOptions& options);

}  // namespace tokengate::bench
