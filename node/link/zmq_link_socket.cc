#include "node/link/zmq_link_socket.h"

#include <fmt/format.h>
#include <poll.h>

#include <cerrno>
#include <chrono>
#include <cstring>

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
  // A plain poll() over the DEALER's ZMQ_FD instead of zmq_poll(), which asks the socket for
  // ZMQ_EVENTS before and after it sleeps (each a mailbox check: a poll() and a getpid()
  // syscall). The fd is readable while the socket has commands queued; receive() reads until
  // recv fails, which leaves none unread, but a send since then (results, heartbeats) may
  // have processed the one announcing new frames: ask once before sleeping.
  try {
    readable = (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
  } catch (const zmq::error_t& e) {
    return absl::InternalError(fmt::format("zmq events: {}", e.what()));
  }
  if (readable) return absl::OkStatus();
  const int wait_ms = static_cast<int>((std::max<Nanos>(0, timeout_ns) + kMillis - 1) / kMillis);
  pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_fd, POLLIN, 0}};
  if (::poll(fds, wake_fd >= 0 ? 2 : 1, wait_ms) < 0) {
    if (errno != EINTR) return absl::InternalError(fmt::format("poll: {}", std::strerror(errno)));
    return absl::OkStatus();
  }
  // Readable fd: commands queued, maybe frames; receive() finds out (and may find none).
  readable = (fds[0].revents & POLLIN) != 0;
  return absl::OkStatus();
}

LinkSocketFactory zmqLinkSocketFactory(zmq::context_t& context, ZmqLinkOptions options) {
  return [&context, options = std::move(options)] { return ZmqLinkSocket::open(context, options); };
}

}  // namespace tokengate::node
