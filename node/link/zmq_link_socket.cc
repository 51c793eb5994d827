#include "node/link/zmq_link_socket.h"

#include <fmt/format.h>

#include <chrono>

#include "common/zmq_frame.h"

namespace tokengate::node {

StatusOr<std::unique_ptr<LinkSocket>> ZmqLinkSocket::open(zmq::context_t& context,
                                                          const ZmqLinkOptions& options) {
  try {
    zmq::socket_t s(context, zmq::socket_type::dealer);
    s.set(zmq::sockopt::routing_id, options.routing_id);
    s.set(zmq::sockopt::linger, options.linger_ms);
    s.set(zmq::sockopt::sndhwm, options.hwm);
    s.set(zmq::sockopt::rcvhwm, options.hwm);
    if (options.configure) {
      Status st = options.configure(s);
      if (!st.ok()) return st;
    }
    s.connect(options.endpoint);
    return std::unique_ptr<LinkSocket>(new ZmqLinkSocket(std::move(s)));
  } catch (const zmq::error_t& e) {
    return absl::InvalidArgumentError(
        fmt::format("cannot connect to {}: {}", options.endpoint, e.what()));
  }
}

bool ZmqLinkSocket::send(std::string frame) {
  // Big frames (result batches) go without a copy (common/zmq_frame.h).
  zmq::message_t m = zmqMessageOf(std::move(frame));
  auto rc = socket_.send(m, zmq::send_flags::dontwait);
  return rc.has_value();
}

size_t ZmqLinkSocket::receive(size_t max_frames,
                              const std::function<void(const void*, size_t)>& on_frame) {
  size_t n = 0;
  for (; n < max_frames; ++n) {
    zmq::message_t m;
    auto rc = socket_.recv(m, zmq::recv_flags::dontwait);
    if (!rc) break;
    on_frame(m.data(), m.size());
  }
  return n;
}

Status ZmqLinkSocket::wait(int wake_fd, Nanos timeout_ns, bool& readable) {
  readable = false;
  const auto wait_ms =
      std::chrono::milliseconds((std::max<Nanos>(0, timeout_ns) + kMillis - 1) / kMillis);
  zmq::pollitem_t items[2] = {
      {static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0},
      {nullptr, wake_fd, ZMQ_POLLIN, 0},
  };
  try {
    zmq::poll(items, wake_fd >= 0 ? 2 : 1, wait_ms);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) return absl::InternalError(fmt::format("zmq poll: {}", e.what()));
  }
  readable = (items[0].revents & ZMQ_POLLIN) != 0;
  return absl::OkStatus();
}

LinkSocketFactory zmqLinkSocketFactory(zmq::context_t& context, ZmqLinkOptions options) {
  return [&context, options = std::move(options)] { return ZmqLinkSocket::open(context, options); };
}

}  // namespace tokengate::node
