// libFuzzer target for the gateway's request path without sockets: a frame
// goes through parseRequest (JSON, nesting limit, integer rule), the role
// check, the session commands and runControlCommand (field validation, job
// JSON, paging) against a control that answers at once with canned results,
// and every reply is serialized. Any crash, sanitizer report or a reply that
// is not valid JSON is a finding.
//
//   cmake --preset fuzz && cmake --build --preset fuzz --target protocol_fuzz
//   build/fuzz/bin/protocol_fuzz tests/fuzz/corpus/protocol -max_total_time=60
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "coordinator/gateway/access_policy.h"
#include "coordinator/gateway/protocol.h"

namespace tokengate::gateway {
namespace {

namespace json = boost::json;

// Answers every call synchronously; job.status reports a finished job with
// outputs of every value kind, including non-finite doubles.
class CannedControl final : public control::ClusterControl {
 public:
  void submitJob(JobSpec job, control::Callback<uint64_t> done) override {
    Status st = job.validate(1 << 20);
    if (!st.ok()) return done(st);
    done(uint64_t{1} << 40);
  }
  void jobStatus(uint64_t id, control::Callback<control::JobStatus> done) override {
    control::JobStatus s;
    s.id = id;
    s.state = id % 2 ? control::JobState::kRunning : control::JobState::kSucceeded;
    s.total = 5;
    const Value values[] = {
        Value(int64_t{-1}),
        Value(1e308 * 10),
        Value(-1e308 * 10),
        Value(0.0 / 1.0),
        Value(std::string("t\x01\"")),
        Value(Bytes{"\xff"}),
        Value::list({Value(1e308 * 10), Value::list({Value("x"), Value()}), Value::list({})}),
        Value::f64s({1.5, 1e308 * 10, -1e308 * 10, 0.0 / 1.0, -0.0}),
        Value::i64s({INT64_MIN, INT64_MAX}),
        Value::list({Value::f64s({}), Value::i64s({1})})};
    for (uint32_t i = 0; i < std::size(values); ++i) {
      control::OutputResult r;
      r.index = i;
      r.name = "o" + std::to_string(i);
      if (i == 3) {
        r.status = absl::UnavailableError("not finished");
      } else {
        r.value = values[i];
      }
      s.outputs.push_back(r);
    }
    done(s);
  }
  void listJobs(control::Callback<std::vector<control::JobStatus>> done) override {
    done(std::vector<control::JobStatus>(2));
  }
  void cancelJob(uint64_t, control::Callback<uint64_t> done) override { done(uint64_t{3}); }
  void cancelToken(uint64_t, control::Callback<bool> done) override { done(true); }
  void pauseOp(std::string op, control::Callback<control::OpStatus> done) override {
    opStatus(std::move(op), std::move(done));
  }
  void resumeOp(std::string op, control::Callback<control::OpStatus> done) override {
    opStatus(std::move(op), std::move(done));
  }
  void drainOp(std::string, control::Callback<uint64_t> done) override { done(uint64_t{0}); }
  void cancelRunningOp(std::string, control::Callback<uint64_t> done) override {
    done(absl::NotFoundError("no such op"));
  }
  void setOpLimits(std::string op, control::OpLimits,
                   control::Callback<control::OpStatus> done) override {
    opStatus(std::move(op), std::move(done));
  }
  void listOps(control::Callback<std::vector<control::OpStatus>> done) override {
    done(std::vector<control::OpStatus>(1));
  }
  void listNodes(control::Callback<std::vector<control::NodeStatus>> done) override {
    done(std::vector<control::NodeStatus>(1));
  }
  void drainNode(std::string, control::Callback<control::NodeStatus> done) override {
    done(control::NodeStatus{});
  }
  void undrainNode(std::string, control::Callback<control::NodeStatus> done) override {
    done(control::NodeStatus{});
  }
  void evictNode(std::string, control::Callback<uint64_t> done) override { done(uint64_t{4}); }
  void stats(control::Callback<control::ClusterStats> done) override {
    done(control::ClusterStats{});
  }
  void setAdmissionLimit(uint64_t, control::Callback<control::ClusterStats> done) override {
    done(control::ClusterStats{});
  }
  uint64_t subscribe(std::function<void(const control::Event&)>) override { return 1; }
  void unsubscribe(uint64_t) override {}
  std::shared_ptr<prometheus::Registry> metricsRegistry() override { return nullptr; }

 private:
  void opStatus(std::string op, control::Callback<control::OpStatus> done) {
    control::OpStatus s;
    s.name = std::move(op);
    s.rate_per_s = 1e308 * 10;  // non-finite: must still serialize as valid JSON
    done(s);
  }
};

// Every reply must parse back as JSON.
void checkJson(const std::string& text) {
  boost::system::error_code ec;
  json::parse(text, ec);
  if (ec) std::abort();
}

}  // namespace
}  // namespace tokengate::gateway

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tokengate::gateway;
  // No state survives an input (a crash replays alone): the control and the policy are made
  // afresh each time, as a session's are per connection.
  CannedControl control;
  const AccessPolicy policy({"v"}, {"o"}, {"a"}, false, {});
  std::string_view text(reinterpret_cast<const char*>(data), size);
  boost::json::value id;
  auto req = parseRequest(text, &id);
  if (!req.ok()) {
    checkJson(errorReply(id, req.status()));
    return 0;
  }
  SessionState st;
  st.role = static_cast<Role>(size % 4);
  if (tokengate::Status role = checkRole(*req->info, st.role); !role.ok()) {
    checkJson(errorReply(req->id, role));
    return 0;
  }
  if (req->info->session_level) {
    SessionOutcome out = runSessionCommand(*req, st, policy, boost::json::object{});
    checkJson(out.reply.ok() ? okReply(req->id, *out.reply)
                             : errorReply(req->id, out.reply.status()));
    return 0;
  }
  CommandLimits limits;
  limits.max_reply_bytes = 4096;
  runControlCommand(
      req->cmd, req->body, control,
      [&](tokengate::StatusOr<boost::json::value> r) {
        checkJson(r.ok() ? okReply(req->id, *r) : errorReply(req->id, r.status()));
      },
      limits);
  return 0;
}
