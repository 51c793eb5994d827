// ZmqLinkSocket: the production LinkSocket, a ZeroMQ DEALER connected to the
// coordinator's ROUTER with the node's routing id ("<node-id>/<incarnation>").
//
// Socket options are applied in one place, zmqLinkSocketFactory(): the
// standard ones, then ZmqLinkOptions::configure (e.g. CURVE client keys)
// before connect().
#pragma once

#include <functional>
#include <string>
#include <zmq.hpp>

#include "node/link/link_socket.h"

namespace tokengate::node {

struct ZmqLinkOptions {
  std::string endpoint;    // e.g. tcp://127.0.0.1:5555
  std::string routing_id;  // "<node-id>/<incarnation hex>"
  int linger_ms = 200;     // lets the last results and bye out on a clean stop
  int hwm = 100'000;
  // Applied after the standard options and before connect() (security
  // options such as CURVE keys). An error fails the connection attempt.
  std::function<Status(zmq::socket_t&)> configure;
};

class ZmqLinkSocket final : public LinkSocket {
 public:
  // Connects; InvalidArgument for a bad endpoint or option.
  static StatusOr<std::unique_ptr<LinkSocket>> open(zmq::context_t& context,
                                                    const ZmqLinkOptions& options);

  bool send(std::string frame) override;
  size_t receive(size_t max_frames,
                 const std::function<void(const void*, size_t)>& on_frame) override;
  Status wait(int wake_fd, Nanos timeout_ns, bool& readable) override;
  void abandon() override { socket_.set(zmq::sockopt::linger, 0); }

 private:
  explicit ZmqLinkSocket(zmq::socket_t socket) : socket_(std::move(socket)) {}
  zmq::socket_t socket_;
};

// A factory opening ZmqLinkSockets on `context` (which must outlive it).
LinkSocketFactory zmqLinkSocketFactory(zmq::context_t& context, ZmqLinkOptions options);

}  // namespace tokengate::node
