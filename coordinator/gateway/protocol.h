// The WebSocket control protocol, without any networking: roles, the command
// table, request validation, JSON encoding of control results and replies.
// Kept apart from the Beast code so it compiles fast and is testable alone.
// Wire format: docs/protocol.md ("WebSocket control").
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/roles.h"
#include "common/status.h"
#include "coordinator/control/control.h"

namespace tokengate::gateway {

constexpr int kProtocolVersion = 1;
constexpr std::string_view kServerName = "tokengate-gateway/1";

// Roles and their ranking are the cluster's (common/roles.h): the same for bearer tokens here and
// CURVE keys on the coordinator's ZeroMQ port.
using tokengate::Role;
using tokengate::roleName;

// Event topics a session may subscribe to, as bits.
enum Topic : uint32_t { kTopicJob = 1, kTopicFailures = 2, kTopicNodes = 4, kTopicOps = 8 };
constexpr uint32_t kAllTopics = kTopicJob | kTopicFailures | kTopicNodes | kTopicOps;
std::optional<uint32_t> topicBit(std::string_view name);
boost::json::array topicNames(uint32_t bits);

struct CommandInfo {
  std::string_view name;
  Role min_role;
  bool session_level;  // handled by the session itself (hello, auth, subscribe...)
};
// nullptr when unknown.
const CommandInfo* findCommand(std::string_view name);
boost::json::array commandNames(Role role);

// "invalid_argument", "not_found", ... (lower-case absl code names).
std::string errorCodeName(StatusCode code);

// Replies. `id` is echoed as sent (null when the request had none).
std::string okReply(const boost::json::value& id, boost::json::value result);
std::string errorReply(const boost::json::value& id, const Status& status);
// {"event": topic, "data": data}
std::string eventMessage(std::string_view topic, const boost::json::object& data);

// Replies never contain a non-finite double: any that reaches okReply or
// eventMessage is written {"double": "inf" | "-inf" | "nan"} (also how values
// carry them, common/job_json.h). 64-bit ids (job_id, token_id, and the "job"
// id of job events) are written as decimal strings.
void sanitizeJson(boost::json::value& v);

// job.status paging (docs/protocol.md): outputs are listed by position in the
// job's output list, `limit` positions from `offset`.
constexpr size_t kDefaultOutputPage = 100;
constexpr size_t kMaxOutputPage = 1000;

// JSON forms of control results (documented in docs/protocol.md).
// toJson(JobStatus) lists every output; jobStatusPage() the outputs at
// positions [offset, offset + limit) that fit in max_bytes, with
// "outputs_total" and "next" (the offset of the next page, null at the end).
// Outputs of a running job that have not finished are left out (their
// positions still count).
boost::json::object toJson(const control::JobStatus& s);
boost::json::object jobStatusPage(const control::JobStatus& s, size_t offset, size_t limit,
                                  size_t max_bytes);
boost::json::object toJson(const control::OpStatus& s);
boost::json::object toJson(const control::NodeStatus& s);
boost::json::object toJson(const control::ClusterStats& s);

// Runs a coordinator command: validates the request fields, calls control and
// calls `reply` exactly once with the result object or an error. `reply` may
// run synchronously (validation errors) or later on the coordinator thread.
// Session-level commands and role checks are the caller's job.
using ResultFn = std::function<void(StatusOr<boost::json::value>)>;
struct CommandLimits {
  size_t max_reply_bytes = 4 << 20;  // job.status pages stop short of this
};
void runControlCommand(std::string_view cmd, const boost::json::object& req,
                       control::ClusterControl& control, ResultFn reply,
                       const CommandLimits& limits = {});

// Nesting limit of request JSON (deeper frames are invalid_argument).
constexpr int kMaxJsonDepth = 64;

// One parsed request frame.
struct Request {
  boost::json::value id;  // echoed in the reply (null when the request had none)
  std::string cmd;
  boost::json::object body;
  const CommandInfo* info = nullptr;
};
// Parses a text frame: a JSON object (nesting <= kMaxJsonDepth) with an
// optional id (string, number or null) and a known string `cmd`. On an error
// `*id` holds the request's id when it could be read, for the error reply.
StatusOr<Request> parseRequest(std::string_view text, boost::json::value* id);
// ok when `role` may run the command; unauthenticated / permission_denied otherwise.
Status checkRole(const CommandInfo& info, Role role);

// Protocol state of one session (owned by the session, on its strand).
struct SessionState {
  Role role = Role::kNone;
  uint32_t topics = 0;
};

// What a session-level command did besides its reply.
struct SessionOutcome {
  StatusOr<boost::json::value> reply = boost::json::value();
  bool auth_failed = false;     // an invalid token was presented
  bool token_accepted = false;  // a valid token was presented
  uint32_t topics_before = 0, topics_after = 0;
};

class AccessPolicy;
// Runs hello, auth, ping, whoami, topics, subscribe, unsubscribe against the
// session's state. `limits` is the hello reply's "limits" object.
SessionOutcome runSessionCommand(const Request& req, SessionState& state,
                                 const AccessPolicy& policy, const boost::json::object& limits);

// Field helpers (exposed for the session-level commands).
StatusOr<std::string> stringField(const boost::json::object& o, std::string_view key);
// A non-negative integer: a JSON integer, an integral double <= 2^53, or a
// decimal string (how 64-bit ids travel); uintField errors when it is missing.
StatusOr<uint64_t> uintField(const boost::json::object& o, std::string_view key);
StatusOr<uint64_t> asUint(const boost::json::value& v, std::string_view key);
// A 64-bit id as JSON: a decimal string.
inline boost::json::value idJson(uint64_t id) { return boost::json::string(std::to_string(id)); }

}  // namespace tokengate::gateway
