// Where the coordinator's units send frames. `peer` is the ZeroMQ routing id. The server's
// implementation writes to its ROUTER socket; tests queue frames in memory.
#pragma once

#include <string>

namespace tokengate::coordinator {

class Outbox {
 public:
  virtual ~Outbox() = default;
  virtual void send(const std::string& peer, std::string frame) = 0;
};

}  // namespace tokengate::coordinator
