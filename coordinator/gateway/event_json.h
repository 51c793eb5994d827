// The JSON `data` of each control event as the gateway sends it (docs/protocol.md, Events).
// Split out of the session code so the shapes are unit-tested on their own.
#pragma once

#include <boost/json.hpp>
#include <string>

#include "coordinator/control/events.h"

namespace tokengate::gateway {

boost::json::object eventData(const control::Event& e);

// The whole WebSocket message: {"event": TOPIC, "data": {...}}.
std::string eventMessage(const control::Event& e);

}  // namespace tokengate::gateway
