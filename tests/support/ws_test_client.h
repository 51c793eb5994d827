// Synchronous Boost.Beast WebSocket/HTTP client for tests of the gateway:
// the unit tests (gateway over FakeClusterControl) and the integration test
// (gateway in a real coordinator with real nodes) share it.
#pragma once

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace tokengate::testing {

// Synchronous WebSocket client. Events that arrive while waiting for a reply
// are kept in `events`. ok()/errorCode() record a GoogleTest failure when the
// reply is not what they expect.
class WsClient {
 public:
  explicit WsClient(uint16_t port);

  // The upgrade's error (e.g. HTTP 401/403 refusals), empty on success.
  boost::beast::error_code connect(const std::string& target = "/ws",
                                   const std::string& origin = "", const std::string& bearer = "",
                                   const std::string& host = "");

  void sendText(const std::string& s);
  // Next message (reply or event), parsed.
  boost::json::object readMessage();
  // Reads until the reply with this id, keeping events aside.
  boost::json::object readReply(const boost::json::value& id);
  // Sends `req` with a fresh id and returns the whole reply.
  boost::json::object cmd(boost::json::object req);
  // The result; a test failure (and an empty object) if the reply is an error.
  boost::json::object ok(boost::json::object req);
  // The error code of a reply that must be an error ("ok" if it was not).
  std::string errorCode(boost::json::object req);
  // hello with a token; a test failure unless accepted with protocol 1.
  void hello(const std::string& token);
  // Pings (every 50 ms: well under the gateway's default command rate limit)
  // until an event of `topic` satisfying `pred` has arrived (it is removed
  // from `events` and returned) or `ms` passed (empty object).
  template <typename Pred>
  boost::json::object waitEvent(const std::string& topic, Pred pred, int ms = 5000);

  boost::beast::websocket::stream<boost::beast::tcp_stream>& ws() { return ws_; }
  std::vector<boost::json::object> events;

 private:
  uint16_t port_;
  boost::asio::io_context ioc_;
  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  int64_t next_id_ = 1;
};

struct HttpResult {
  int status = 0;
  std::string body;
  std::string content_type;
};

HttpResult httpGet(uint16_t port, const std::string& target,
                   boost::beast::http::verb verb = boost::beast::http::verb::get);

// Value of the first sample line starting with `prefix` ("name{labels}"), -1 if none.
double metricValue(const std::string& text, const std::string& prefix);

// Polls `pred` every `every_ms` for up to `ms`; its last value.
template <typename F>
bool eventually(F pred, int ms = 5000, int every_ms = 5) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(every_ms));
  }
  return pred();
}

template <typename Pred>
boost::json::object WsClient::waitEvent(const std::string& topic, Pred pred, int ms) {
  boost::json::object found;
  eventually(
      [&] {
        for (auto it = events.begin(); it != events.end(); ++it) {
          if (it->at("event").as_string() == topic && pred(it->at("data").as_object())) {
            found = std::move(*it);
            events.erase(it);
            return true;
          }
        }
        cmd({{"cmd", "ping"}});  // lets queued events in
        return false;
      },
      ms, 50);
  return found;
}

}  // namespace tokengate::testing
