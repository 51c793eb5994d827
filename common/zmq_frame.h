// A frame (an encoded std::string) as a ZeroMQ message without copying it when it is big.
// Header-only; include it only from targets that link libzmq.
#pragma once

#include <string>
#include <zmq.hpp>

namespace tokengate {

// Frames of kZeroCopyFromBytes and more move into the message: the message owns the string
// until ZeroMQ's I/O thread has written it (the free function runs there), so a token or
// result batch is not copied once more on its way out. Small frames are copied (cheaper than
// a heap handover between threads).
constexpr size_t kZeroCopyFromBytes = 4096;

inline zmq::message_t zmqMessageOf(std::string&& frame) {
  if (frame.size() < kZeroCopyFromBytes) return zmq::message_t(frame.data(), frame.size());
  auto owned = std::make_unique<std::string>(std::move(frame));
  zmq::message_t m(
      owned->data(), owned->size(),
      [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned.get());
  owned.release();  // the message owns it now
  return m;
}

}  // namespace tokengate
