// LinkSocket: the node's one connection to the coordinator, as the link sees it.
//
// The coordinator link (coordinator_link.h) talks to the coordinator only
// through this interface, so its rules (hello once per connection, give-up,
// reconnect, result batching) are unit-tested with the in-memory
// implementation in tests/fakes/memory_link_socket.h and a FakeClock. The
// production implementation is ZmqLinkSocket (zmq_link_socket.h): a DEALER.
//
// A LinkSocket is one connection attempt: "reconnect" means destroying it and
// opening a new one through the LinkSocketFactory, which discards whatever the
// old one still had queued (a stale hello must never reach the coordinator
// after a partition heals).
//
// Ownership/threads: owned by the CoordinatorLink and touched only by the link
// thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/clock.h"
#include "common/status.h"

namespace tokengate::node {

class LinkSocket {
 public:
  virtual ~LinkSocket() = default;

  // Queues one frame without blocking. False when the frame was dropped (the
  // send queue is full); the link counts and logs drops.
  virtual bool send(std::string frame) = 0;

  // Hands up to `max_frames` received frames, in order, to `on_frame` without
  // blocking; returns how many. The bytes are valid only during the call.
  virtual size_t receive(size_t max_frames,
                         const std::function<void(const void* data, size_t size)>& on_frame) = 0;

  // Blocks until a frame can be received, `wake_fd` (an eventfd, -1 = none)
  // is readable, or `timeout_ns` passed. Sets `readable` if frames are
  // waiting. Only the production run loop calls it; tests step the link.
  virtual Status wait(int wake_fd, Nanos timeout_ns, bool& readable) = 0;

  // Frames still queued are discarded when the socket is destroyed (a
  // reconnect). Without it, destruction tries to deliver them for a short
  // while (the final results and bye of a clean stop).
  virtual void abandon() = 0;
};

// Opens a new connection to the coordinator (non-blocking: connecting goes on
// in the background, frames sent meanwhile are queued).
using LinkSocketFactory = std::function<StatusOr<std::unique_ptr<LinkSocket>>()>;

}  // namespace tokengate::node
