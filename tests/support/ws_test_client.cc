#include "tests/support/ws_test_client.h"

#include <gtest/gtest.h>

namespace tokengate::testing {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace json = boost::json;
using tcp = net::ip::tcp;

WsClient::WsClient(uint16_t port) : port_(port), ws_(ioc_) {}

beast::error_code WsClient::connect(const std::string& target, const std::string& origin,
                                    const std::string& bearer, const std::string& host) {
  beast::error_code ec;
  beast::get_lowest_layer(ws_).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_),
                                       ec);
  if (ec) return ec;
  ws_.set_option(websocket::stream_base::decorator([=](websocket::request_type& req) {
    if (!origin.empty()) req.set(http::field::origin, origin);
    if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
  }));
  ws_.handshake(host.empty() ? "127.0.0.1:" + std::to_string(port_) : host, target, ec);
  return ec;
}

void WsClient::sendText(const std::string& s) {
  ws_.text(true);
  ws_.write(net::buffer(s));
}

json::object WsClient::readMessage() {
  beast::flat_buffer buf;
  ws_.read(buf);
  return json::parse(beast::buffers_to_string(buf.data())).as_object();
}

json::object WsClient::readReply(const json::value& id) {
  for (;;) {
    json::object m = readMessage();
    if (m.contains("event")) {
      events.push_back(m);
      continue;
    }
    if (m.at("id") == id) return m;
  }
}

json::object WsClient::cmd(json::object req) {
  int64_t id = next_id_++;
  req["id"] = id;
  sendText(json::serialize(req));
  return readReply(json::value(id));
}

json::object WsClient::ok(json::object req) {
  std::string what = json::serialize(req);
  json::object r = cmd(std::move(req));
  EXPECT_TRUE(r.at("ok").as_bool()) << what << " -> " << json::serialize(r);
  if (!r.at("ok").as_bool()) return {};
  return r.at("result").as_object();
}

std::string WsClient::errorCode(json::object req) {
  json::object r = cmd(std::move(req));
  EXPECT_FALSE(r.at("ok").as_bool()) << json::serialize(r);
  if (r.at("ok").as_bool()) return "ok";
  return std::string(r.at("error").at("code").as_string());
}

void WsClient::hello(const std::string& token) {
  json::object r = ok({{"cmd", "hello"}, {"token", token}});
  ASSERT_TRUE(r.contains("protocol"));
  ASSERT_EQ(r.at("protocol").as_int64(), 1);
}

HttpResult httpGet(uint16_t port, const std::string& target, http::verb verb) {
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::empty_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(s, req);
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.skip(verb == http::verb::head);  // a HEAD reply has Content-Length but no body
  http::read(s, buf, parser);
  const auto& res = parser.get();
  return {static_cast<int>(res.result_int()), res.body(),
          std::string(res[http::field::content_type])};
}

double metricValue(const std::string& text, const std::string& prefix) {
  size_t pos = 0;
  while ((pos = text.find(prefix, pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      size_t eol = text.find('\n', pos);
      std::string line = text.substr(pos, eol - pos);
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
    pos += prefix.size();
  }
  return -1;
}

}  // namespace tokengate::testing
