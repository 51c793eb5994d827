// tokengate-bench zmq-floor: how fast can a message make the round trip a lone token makes,
// with ZeroMQ alone? A lone token crosses client -> coordinator -> node -> coordinator -> client:
// four TCP messages, each leaving through the sender's ZeroMQ I/O thread and arriving through
// the receiver's, with the coordinator's and the node's application threads in between. This
// bench times the same shapes between real processes without any TokenGate code:
//
//   one-hop   client DEALER <-> echo ROUTER                         (two messages)
//   two-hop   client DEALER -> relay ROUTER -> echo DEALER           (four messages:
//             -> relay ROUTER -> client DEALER                         our path's shape)
//   two-hop-ack  two-hop, plus a 32-byte acknowledgement from the relay to the client right
//             after it forwards the request (five messages: a watched job's SubmitReply)
//
// plain TCP and CURVE, each round trip timed from send to receive in the client. A TokenGate
// round trip cannot beat the two-hop figure of the same security mode on the same machine:
// what it adds on top is our decode, admission, dispatch, the node's run and the encodes.
//
// The servers are this binary run as `zmq-floor-serve` child processes (fork + exec), so
// every process has its own ZeroMQ context and I/O thread, as the cluster's processes do.
#include "bench/zmq_floor_bench.h"

#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <zmq.hpp>

namespace tokengate::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr const char* kEchoId = "echo";
constexpr size_t kAckBytes = 32;  // two-hop-ack: the relay's acknowledgement

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

struct Keys {
  std::string public_key, secret_key;
};

Keys newKeys() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    fmt::print(stderr, "zmq_curve_keypair: {}\n", zmq_strerror(zmq_errno()));
    std::exit(1);
  }
  return {pub, sec};
}

// Receives one message: first polls without blocking for up to `spin_us`, then blocks.
void recvSpin(zmq::socket_t& s, zmq::message_t& m, uint32_t spin_us) {
  if (spin_us > 0) {
    const auto end = SteadyClock::now() + std::chrono::microseconds(spin_us);
    do {
      if (s.recv(m, zmq::recv_flags::dontwait)) return;
    } while (SteadyClock::now() < end);
  }
  while (!s.recv(m, zmq::recv_flags::none)) {
  }
}

void recvNext(zmq::socket_t& s, zmq::message_t& m) {
  while (!s.recv(m, zmq::recv_flags::none)) {
  }
}

std::string selfExe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<size_t>(n));
}

// A `zmq-floor-serve` child: its stdout is a pipe the parent reads one line from.
struct Child {
  pid_t pid = -1;
  std::string line;
};

Child spawnServe(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) {
    fmt::print(stderr, "pipe failed\n");
    std::exit(1);
  }
  std::vector<std::string> all{selfExe(), "zmq-floor-serve"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  // One line, within 10 s.
  std::string line;
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 10'000) <= 0) break;
    char ch;
    if (read(fds[0], &ch, 1) != 1 || ch == '\n') break;
    line.push_back(ch);
  }
  close(fds[0]);
  if (line.empty()) {
    fmt::print(stderr, "zmq-floor-serve {} did not start\n", fmt::join(args, " "));
    kill(c.pid, SIGKILL);
    waitpid(c.pid, nullptr, 0);
    std::exit(1);
  }
  c.line = line;
  return c;
}

void stopChild(Child& c) {
  if (c.pid <= 0) return;
  kill(c.pid, SIGKILL);
  waitpid(c.pid, nullptr, 0);
  c.pid = -1;
  // A killed ROUTER leaves its ipc:// socket file behind.
  if (c.line.rfind("ipc://", 0) == 0) unlink(c.line.c_str() + 6);
}

struct Config {
  std::string shape;
  bool curve = false;
  uint32_t spin_us = 0;
  std::string spin_at;
  std::string name() const {
    return fmt::format("{} {}{}", shape, curve ? "curve" : "insecure",
                       spin_us ? fmt::format(" spin {} us ({})", spin_us, spin_at) : std::string());
  }
};

// One run: fresh server processes, warm-up, then `round_trips` timed round trips (us each).
std::vector<double> runOnce(const ZmqFloorOptions& o, const Config& cfg) {
  Keys server;
  if (cfg.curve) server = newKeys();
  const std::string spin = std::to_string(cfg.spin_us);
  const bool all_spin = o.spin_at == "all";
  const std::string peer_spin = all_spin ? spin : "0";  // the two-hop echo and the client
  const uint32_t client_spin = all_spin ? cfg.spin_us : 0;
  std::vector<Child> children;
  std::vector<std::string> args{
      "--role",
      cfg.shape == "one-hop" ? "echo" : cfg.shape == "two-hop-ack" ? "relay-ack" : "relay",
      "--spin-us",
      spin,
      "--transport",
      o.transport};
  if (cfg.curve) {
    args.push_back("--secret-key");
    args.push_back(server.secret_key);
  }
  children.push_back(spawnServe(args));
  const std::string endpoint = children.back().line;
  if (cfg.shape != "one-hop") {
    std::vector<std::string> echo_args{"--role", "echo",      "--connect",
                                       endpoint, "--spin-us", peer_spin};
    if (cfg.curve) {
      const Keys echo = newKeys();
      echo_args.insert(echo_args.end(),
                       {"--secret-key", echo.secret_key, "--server-key", server.public_key});
    }
    children.push_back(spawnServe(echo_args));  // its line: connected and welcomed by the relay
  }
  std::vector<double> us;
  {
    zmq::context_t ctx(1);
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    if (cfg.curve) {
      const Keys mine = newKeys();
      sock.set(zmq::sockopt::curve_serverkey, server.public_key);
      sock.set(zmq::sockopt::curve_publickey, mine.public_key);
      sock.set(zmq::sockopt::curve_secretkey, mine.secret_key);
    }
    sock.connect(endpoint);
    const std::string payload(o.bytes, 'x');
    us.reserve(o.round_trips);
    const uint32_t total = o.warmup + o.round_trips;
    zmq::message_t reply;
    for (uint32_t i = 0; i < total; ++i) {
      const auto t0 = SteadyClock::now();
      sock.send(zmq::buffer(payload), zmq::send_flags::none);
      if (cfg.shape == "two-hop-ack") recvSpin(sock, reply, client_spin);  // the ack
      recvSpin(sock, reply, client_spin);
      const double dt = std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count();
      if (reply.size() != payload.size()) {
        fmt::print(stderr, "zmq-floor: reply of {} bytes, sent {}\n", reply.size(), payload.size());
        std::exit(1);
      }
      if (i >= o.warmup) us.push_back(dt);
    }
  }
  for (auto& c : children) stopChild(c);
  return us;
}

std::string loadAverage() {
  double l[3] = {0, 0, 0};
  if (getloadavg(l, 3) != 3) return "?";
  return fmt::format("{:.2f} {:.2f} {:.2f}", l[0], l[1], l[2]);
}

// Server roles ---------------------------------------------------------------------------------

void applyServer(zmq::socket_t& s, const ZmqFloorServeOptions& o) {
  if (o.secret_key.empty()) return;
  s.set(zmq::sockopt::curve_server, 1);
  s.set(zmq::sockopt::curve_secretkey, o.secret_key);
}

std::string boundEndpoint(zmq::socket_t& s, const ZmqFloorServeOptions& o) {
  if (o.transport == "ipc")
    s.bind(fmt::format("ipc:///tmp/tokengate-floor-{}.sock", getpid()));
  else
    s.bind("tcp://127.0.0.1:0");
  return s.get(zmq::sockopt::last_endpoint);
}

// One-hop echo: ROUTER, [client id][payload] back as received.
[[noreturn]] void serveEchoRouter(const ZmqFloorServeOptions& o) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::router);
  s.set(zmq::sockopt::linger, 0);
  applyServer(s, o);
  std::cout << boundEndpoint(s, o) << std::endl;
  zmq::message_t id, payload;
  for (;;) {
    recvSpin(s, id, o.spin_us);
    recvNext(s, payload);
    s.send(id, zmq::send_flags::sndmore);
    s.send(payload, zmq::send_flags::none);
  }
}

// Two-hop echo: a DEALER connected to the relay (as a node connects to the coordinator);
// [client id][payload] back as received.
[[noreturn]] void serveEchoDealer(const ZmqFloorServeOptions& o) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::routing_id, kEchoId);
  if (!o.secret_key.empty()) {
    char pub[41] = {};
    if (zmq_curve_public(pub, o.secret_key.c_str()) != 0) std::exit(1);
    s.set(zmq::sockopt::curve_serverkey, o.server_key);
    s.set(zmq::sockopt::curve_publickey, std::string(pub));
    s.set(zmq::sockopt::curve_secretkey, o.secret_key);
  }
  s.connect(o.connect);
  s.send(zmq::str_buffer("hello"), zmq::send_flags::none);
  zmq::message_t m;
  recvNext(s, m);  // the relay's welcome
  std::cout << "ready" << std::endl;
  zmq::message_t client, payload;
  for (;;) {
    recvSpin(s, client, o.spin_us);
    recvNext(s, payload);
    s.send(client, zmq::send_flags::sndmore);
    s.send(payload, zmq::send_flags::none);
  }
}

// Relay: one ROUTER for clients and the echo peer, as the coordinator has one for clients and
// nodes. Client [id][payload] -> echo [client id][payload]; echo's answer -> that client.
[[noreturn]] void serveRelay(const ZmqFloorServeOptions& o, bool ack) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::router);
  s.set(zmq::sockopt::linger, 0);
  applyServer(s, o);
  std::cout << boundEndpoint(s, o) << std::endl;
  const std::string_view echo_id = kEchoId;
  zmq::message_t from, first, second;
  for (;;) {
    recvSpin(s, from, o.spin_us);
    recvNext(s, first);
    if (from.to_string_view() == echo_id) {
      if (!first.more()) {  // the echo's hello
        s.send(zmq::buffer(echo_id), zmq::send_flags::sndmore);
        s.send(zmq::str_buffer("welcome"), zmq::send_flags::none);
        continue;
      }
      recvNext(s, second);
      s.send(first, zmq::send_flags::sndmore);  // the client's id
      s.send(second, zmq::send_flags::none);
      continue;
    }
    const std::string client_id = ack ? std::string(from.to_string_view()) : std::string();
    s.send(zmq::buffer(echo_id), zmq::send_flags::sndmore);
    s.send(from, zmq::send_flags::sndmore);
    s.send(first, zmq::send_flags::none);
    if (ack) {  // after the forward, as the coordinator sends a SubmitReply after the batch
      s.send(zmq::buffer(client_id), zmq::send_flags::sndmore);
      s.send(zmq::buffer(std::string(kAckBytes, 'a')), zmq::send_flags::none);
    }
  }
}

}  // namespace

int serveZmqFloor(const ZmqFloorServeOptions& o) {
  try {
    if (o.role == "relay" || o.role == "relay-ack") serveRelay(o, o.role == "relay-ack");
    if (o.role == "echo") {
      if (o.connect.empty()) serveEchoRouter(o);
      serveEchoDealer(o);
    }
  } catch (const zmq::error_t& e) {
    fmt::print(stderr, "zmq-floor-serve: {}\n", e.what());
    return 1;
  }
  fmt::print(stderr, "zmq-floor-serve: unknown role {}\n", o.role);
  return 2;
}

std::vector<double> zmqFloorRoundTrips(const ZmqFloorOptions& o, const std::string& shape,
                                       bool curve, uint32_t spin_us) {
  return runOnce(o, Config{shape, curve, spin_us, o.spin_at});
}

int runZmqFloor(const ZmqFloorOptions& o) {
  std::vector<bool> curves;
  if (o.security == "insecure" || o.security == "both") curves.push_back(false);
  if (o.security == "curve" || o.security == "both") curves.push_back(true);
  if (curves.empty() || o.round_trips == 0 || o.runs == 0) {
    fmt::print(stderr, "error: --security insecure|curve|both, --round-trips and --runs > 0\n");
    return 2;
  }
  for (const auto& s : o.shapes)
    if (s != "one-hop" && s != "two-hop" && s != "two-hop-ack") {
      fmt::print(stderr, "error: unknown shape {} (one-hop | two-hop | two-hop-ack)\n", s);
      return 2;
    }
  if (o.spin_at != "all" && o.spin_at != "server") {
    fmt::print(stderr, "error: --spin-at all|server\n");
    return 2;
  }
  if (o.transport != "tcp" && o.transport != "ipc") {
    fmt::print(stderr, "error: --transport tcp|ipc\n");
    return 2;
  }
  std::vector<Config> configs;
  for (const auto& shape : o.shapes)
    for (bool curve : curves)
      for (uint32_t spin : o.spin_us) configs.push_back(Config{shape, curve, spin, o.spin_at});
  const std::string load_before = loadAverage();
  // Runs alternate between the configurations so a change in the machine's load hits them all.
  std::vector<std::vector<double>> p50(configs.size()), p90(configs.size()), p99(configs.size());
  for (uint32_t r = 0; r < o.runs; ++r)
    for (size_t c = 0; c < configs.size(); ++c) {
      auto us = runOnce(o, configs[c]);
      p50[c].push_back(percentile(us, 0.50));
      p90[c].push_back(percentile(us, 0.90));
      p99[c].push_back(percentile(us, 0.99));
      fmt::print("run {} {}: p50 {:.0f} us, p90 {:.0f} us, p99 {:.0f} us\n", r + 1,
                 configs[c].name(), p50[c].back(), p90[c].back(), p99[c].back());
    }
  const std::string load_after = loadAverage();
  fmt::print(
      "{} round trips of {} bytes per run over {}, medians of {} runs (load average {} -> {}):\n",
      o.round_trips, o.bytes, o.transport, o.runs, load_before, load_after);
  boost::json::array results;
  for (size_t c = 0; c < configs.size(); ++c) {
    const auto [lo, hi] = std::minmax_element(p50[c].begin(), p50[c].end());
    fmt::print("  {:<28} p50 {:>4.0f} us ({:.0f}-{:.0f}), p90 {:>4.0f} us, p99 {:>4.0f} us\n",
               configs[c].name(), median(p50[c]), *lo, *hi, median(p90[c]), median(p99[c]));
    results.push_back(boost::json::object{{"shape", configs[c].shape},
                                          {"security", configs[c].curve ? "curve" : "insecure"},
                                          {"spin_us", configs[c].spin_us},
                                          {"spin_at", configs[c].spin_at},
                                          {"p50_us", median(p50[c])},
                                          {"p50_min_us", *lo},
                                          {"p50_max_us", *hi},
                                          {"p90_us", median(p90[c])},
                                          {"p99_us", median(p99[c])}});
  }
  boost::json::object out{
      {"bench", "zmq-floor"},     {"transport", o.transport}, {"round_trips", o.round_trips},
      {"runs", o.runs},           {"bytes", o.bytes},         {"load_before", load_before},
      {"load_after", load_after}, {"results", results}};
  std::cout << boost::json::serialize(out) << std::endl;
  return 0;
}

}  // namespace tokengate::bench
