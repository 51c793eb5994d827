// CurveZMQ keys, allow-lists, ZAP decisions, role checks per frame kind, frame-kind peeking and
// node-id binding (common/security, coordinator/core/peer_auth.h).
#include <capnp/message.h>
#include <capnp/schema.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "common/security/curve.h"
#include "common/security/curve_flags.h"
#include "common/security/zap.h"
#include "common/wire.h"
#include "coordinator/core/peer_auth.h"

namespace tokengate::security {
namespace {
namespace fs = std::filesystem;
using F = wire::Frame;

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("tg_security_test_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void writeText(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

mode_t modeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

KeyPair pair() {
  auto kp = generateKeyPair();
  EXPECT_TRUE(kp.ok()) << kp.status();
  return *kp;
}

TEST(Keys, GeneratedPairsAreZ85AndThePublicKeyDerivesFromTheSecret) {
  ASSERT_TRUE(curveAvailable());
  const KeyPair kp = pair();
  EXPECT_TRUE(isZ85Key(kp.public_key));
  EXPECT_TRUE(isZ85Key(kp.secret_key));
  EXPECT_NE(kp.public_key, kp.secret_key);
  auto derived = publicKeyOf(kp.secret_key);
  ASSERT_TRUE(derived.ok());
  EXPECT_EQ(*derived, kp.public_key);
  EXPECT_FALSE(isZ85Key(kp.public_key.substr(1)));
  EXPECT_FALSE(isZ85Key(std::string(40, ' ')));
  EXPECT_FALSE(publicKeyOf("not a key").ok());
}

TEST(Keys, WrittenWithModesAndNeverOverwritten) {
  TempDir dir;
  const KeyPair kp = pair();
  ASSERT_TRUE(writeKeyPair(dir / "k", "node", kp).ok());
  EXPECT_EQ(modeOf(dir / "k/node.key"), 0600u);
  EXPECT_EQ(modeOf(dir / "k/node.pub"), 0644u);
  EXPECT_EQ(modeOf(dir / "k"), 0700u);
  EXPECT_EQ(*readKeyFile(dir / "k/node.key"), kp.secret_key);
  EXPECT_EQ(*readKeyFile(dir / "k/node.pub"), kp.public_key);
  auto again = writeKeyPair(dir / "k", "node", pair());
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*readKeyFile(dir / "k/node.key"), kp.secret_key);  // untouched
}

TEST(Keys, AHashInsideAKeyIsAZ85DigitNotAComment) {
  // '#' is in the Z85 alphabet; find a key that has one (about 1 in 3 do).
  KeyPair kp;
  for (int i = 0; i < 200 && kp.public_key.find('#') == std::string::npos; ++i) kp = pair();
  ASSERT_NE(kp.public_key.find('#'), std::string::npos);
  TempDir dir;
  writeText(dir / "a.pub", "# a comment line\n\n  " + kp.public_key + "  trailing words\n");
  auto key = readKeyFile(dir / "a.pub");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(*key, kp.public_key);
  EXPECT_EQ(*keyFromTextOrFile(kp.public_key), kp.public_key);  // text that is a key
  EXPECT_EQ(*keyFromTextOrFile(dir / "a.pub"), kp.public_key);  // a file holding one
  writeText(dir / "bad.pub", "short\n");
  EXPECT_FALSE(readKeyFile(dir / "bad.pub").ok());
  EXPECT_FALSE(readKeyFile(dir / "missing.pub").ok());
}

TEST(AllowList, DirectoriesGiveRolesBySubdirectory) {
  TempDir dir;
  const KeyPair n1 = pair(), n2 = pair(), admin = pair(), op = pair(), viewer = pair();
  fs::create_directories(dir / "nodes");
  ASSERT_TRUE(writePublicKey(dir / "nodes/n1.pub", n1.public_key).ok());
  writeText(dir / "nodes/n2.pub", n2.public_key + "\n");
  writeText(dir / "nodes/.hidden", "ignored\n");  // Kubernetes' ..data entries and the like
  writeText(dir / "clients/admin/a.pub", admin.public_key + "\n");
  writeText(dir / "clients/operator/o.pub", op.public_key + "\n");
  writeText(dir / "clients/viewer/v.pub", viewer.public_key + "\n");
  AllowList allow;
  ASSERT_TRUE(allow.addNodes(dir / "nodes").ok());
  ASSERT_TRUE(allow.addClients(dir / "clients").ok());
  EXPECT_EQ(allow.roleOf(n1.public_key), Role::kNode);
  EXPECT_EQ(allow.roleOf(n2.public_key), Role::kNode);
  EXPECT_EQ(allow.roleOf(admin.public_key), Role::kAdmin);
  EXPECT_EQ(allow.roleOf(op.public_key), Role::kOperator);
  EXPECT_EQ(allow.roleOf(viewer.public_key), Role::kViewer);
  EXPECT_EQ(allow.roleOf(pair().public_key), Role::kNone);
  EXPECT_EQ(allow.count(Role::kNode), 2u);
  EXPECT_EQ(allow.size(), 5u);

  // A client key without a role directory is refused, not given a default role.
  writeText(dir / "clients/stray.pub", pair().public_key + "\n");
  AllowList strict;
  EXPECT_FALSE(strict.addClients(dir / "clients").ok());
}

TEST(AllowList, FilesListKeysWithRolesAndRefuseConflicts) {
  TempDir dir;
  const KeyPair n = pair(), a = pair(), v = pair();
  writeText(dir / "nodes.txt",
            "# node keys\n" + n.public_key + "  worker-1\nnode " + pair().public_key + "\n");
  writeText(dir / "clients.txt",
            "admin " + a.public_key + "  alice\nviewer " + v.public_key + "\n");
  AllowList allow;
  ASSERT_TRUE(allow.addNodes(dir / "nodes.txt").ok());
  ASSERT_TRUE(allow.addClients(dir / "clients.txt").ok());
  EXPECT_EQ(allow.roleOf(n.public_key), Role::kNode);
  EXPECT_EQ(allow.roleOf(a.public_key), Role::kAdmin);
  EXPECT_EQ(allow.roleOf(v.public_key), Role::kViewer);

  writeText(dir / "bad_role.txt", "superuser " + pair().public_key + "\n");
  EXPECT_FALSE(AllowList().addClients(dir / "bad_role.txt").ok());
  writeText(dir / "node_as_client.txt", "node " + pair().public_key + "\n");
  EXPECT_FALSE(AllowList().addClients(dir / "node_as_client.txt").ok());
  // One key, two roles: refused rather than picking one.
  writeText(dir / "conflict.txt", "viewer " + n.public_key + "\n");
  EXPECT_FALSE(allow.addClients(dir / "conflict.txt").ok());
  writeText(dir / "garbage.txt", "not-a-key\n");
  EXPECT_FALSE(AllowList().addNodes(dir / "garbage.txt").ok());
}

std::string rawKey(const std::string& z85) {
  std::string raw(32, '\0');
  EXPECT_NE(zmq_z85_decode(reinterpret_cast<uint8_t*>(raw.data()), z85.c_str()), nullptr);
  return raw;
}

TEST(Zap, AdmitsListedKeysWithTheirRoleAndRefusesTheRest) {
  const KeyPair node = pair(), viewer = pair(), stranger = pair();
  AllowList allow;
  ASSERT_TRUE(allow.add(node.public_key, Role::kNode, "test").ok());
  ASSERT_TRUE(allow.add(viewer.public_key, Role::kViewer, "test").ok());

  auto d = decideZap(allow, kZapDomain, "CURVE", rawKey(node.public_key));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.status_code, "200");
  EXPECT_EQ(d.role, Role::kNode);
  EXPECT_EQ(d.user_id, "node " + node.public_key);
  const PeerIdentity who = parseUserId(d.user_id);
  EXPECT_EQ(who.role, Role::kNode);
  EXPECT_EQ(who.public_key, node.public_key);

  d = decideZap(allow, kZapDomain, "CURVE", rawKey(viewer.public_key));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.user_id, "viewer " + viewer.public_key);

  d = decideZap(allow, kZapDomain, "CURVE", rawKey(stranger.public_key));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.status_code, "400");
  EXPECT_TRUE(d.user_id.empty());
  EXPECT_NE(d.status_text.find("not in the allow-lists"), std::string::npos);

  EXPECT_FALSE(decideZap(allow, kZapDomain, "NULL", "").allowed);
  EXPECT_FALSE(decideZap(allow, kZapDomain, "PLAIN", rawKey(node.public_key)).allowed);
  EXPECT_FALSE(decideZap(allow, "other", "CURVE", rawKey(node.public_key)).allowed);
  EXPECT_FALSE(decideZap(allow, kZapDomain, "CURVE", "short").allowed);
  EXPECT_EQ(parseUserId("").role, Role::kNone);
  EXPECT_EQ(parseUserId("root abc").role, Role::kNone);
}

TEST(Roles, EachRoleMaySendExactlyItsFrames) {
  const F::Which node_frames[] = {F::HELLO, F::HEARTBEAT, F::RESULT_BATCH, F::BYE, F::PING};
  // adminRequest: the request inside decides (AdminRequestsNeedTheGatewaysRoles).
  const F::Which viewer_frames[] = {F::WATCH_JOB, F::STATS_REQUEST, F::PING, F::ADMIN_REQUEST};
  const F::Which operator_frames[] = {F::WATCH_JOB,     F::STATS_REQUEST, F::PING,
                                      F::ADMIN_REQUEST, F::SUBMIT_JOB,    F::CANCEL_JOB};
  auto in = [](auto& list, F::Which k) {
    return std::find(std::begin(list), std::end(list), k) != std::end(list);
  };
  const auto kinds = capnp::Schema::from<wire::Frame>().getUnionFields().size();
  ASSERT_GE(kinds, 18u);
  for (unsigned i = 0; i < kinds; ++i) {
    const auto k = static_cast<F::Which>(i);
    SCOPED_TRACE(frameKindName(k));
    EXPECT_EQ(roleAllows(Role::kNode, k), in(node_frames, k));
    EXPECT_EQ(roleAllows(Role::kViewer, k), in(viewer_frames, k));
    EXPECT_EQ(roleAllows(Role::kOperator, k), in(operator_frames, k));
    EXPECT_EQ(roleAllows(Role::kAdmin, k), in(operator_frames, k));
    EXPECT_FALSE(roleAllows(Role::kNone, k));
  }
  // The two the issue names: a client key cannot say hello; a node key cannot submit.
  EXPECT_FALSE(roleAllows(Role::kAdmin, F::HELLO));
  EXPECT_FALSE(roleAllows(Role::kNode, F::SUBMIT_JOB));
  EXPECT_FALSE(roleAllows(Role::kViewer, F::SUBMIT_JOB));
  EXPECT_FALSE(roleAllows(Role::kViewer, F::CANCEL_JOB));
  EXPECT_EQ(frameKindName(F::SUBMIT_JOB), "submitJob");
}

TEST(Roles, AdminRequestsNeedTheGatewaysRoles) {
  using A = wire::AdminRequest;
  EXPECT_EQ(adminRequestRole(A::LIST_JOBS), Role::kViewer);
  EXPECT_EQ(adminRequestRole(A::LIST_OPS), Role::kViewer);
  EXPECT_EQ(adminRequestRole(A::LIST_NODES), Role::kViewer);
  for (auto w :
       {A::PAUSE_OP, A::RESUME_OP, A::DRAIN_OP, A::SET_OP_LIMITS, A::DRAIN_NODE, A::UNDRAIN_NODE})
    EXPECT_EQ(adminRequestRole(w), Role::kOperator);
  EXPECT_EQ(adminRequestRole(A::EVICT_NODE), Role::kAdmin);
  EXPECT_TRUE(roleAtLeast(Role::kAdmin, Role::kOperator));
  EXPECT_TRUE(roleAtLeast(Role::kOperator, Role::kViewer));
  EXPECT_FALSE(roleAtLeast(Role::kViewer, Role::kOperator));
  EXPECT_FALSE(roleAtLeast(Role::kOperator, Role::kAdmin));
  EXPECT_FALSE(roleAtLeast(Role::kNode, Role::kViewer));
  EXPECT_FALSE(roleAtLeast(Role::kAdmin, Role::kNode));
  EXPECT_TRUE(roleAtLeast(Role::kNone, Role::kNone));  // the gateway's hello, ping, whoami
  // Every request needs a client role (none needs nothing, so a node key can send none) and
  // each is exactly the gateway command of the same meaning (one table: common/roles.h).
  const auto fields = capnp::Schema::from<A>().getUnionFields();
  const std::pair<A::Which, std::string_view> same[] = {
      {A::LIST_JOBS, "job.list"},    {A::LIST_OPS, "op.list"},
      {A::PAUSE_OP, "op.pause"},     {A::RESUME_OP, "op.resume"},
      {A::DRAIN_OP, "op.drain"},     {A::SET_OP_LIMITS, "op.limits"},
      {A::DRAIN_NODE, "node.drain"}, {A::UNDRAIN_NODE, "node.undrain"},
      {A::EVICT_NODE, "node.evict"}, {A::LIST_NODES, "node.list"}};
  ASSERT_EQ(fields.size(), std::size(same));  // a new request kind needs a row here
  for (const auto& [which, command] : same) {
    EXPECT_NE(adminRequestRole(which), Role::kNone);
    EXPECT_FALSE(roleAtLeast(Role::kNode, adminRequestRole(which)));
    EXPECT_EQ(adminRequestRole(which), commandRole(command)) << command;
  }
  EXPECT_EQ(parseRole("operator"), Role::kOperator);
  EXPECT_EQ(parseRole("node"), Role::kNode);
  EXPECT_EQ(parseRole("none"), std::nullopt);
  EXPECT_STREQ(roleName(Role::kViewer), "viewer");
}

std::string encodeKind(F::Which kind, size_t payload = 0) {
  capnp::MallocMessageBuilder msg(64);  // small first segment: big frames span segments
  auto f = msg.initRoot<F>();
  f.setVersion(kProtocolVersion);
  switch (kind) {
    case F::HELLO:
      f.initHello().setNodeId("n1");
      break;
    case F::HEARTBEAT:
      f.initHeartbeat();
      break;
    case F::RESULT_BATCH:
      f.initResultBatch().initResults(static_cast<unsigned>(payload));
      break;
    case F::SUBMIT_JOB:
      f.initSubmitJob().setRequestId(7);
      break;
    case F::WATCH_JOB:
      f.initWatchJob();
      break;
    case F::CANCEL_JOB:
      f.initCancelJob();
      break;
    case F::STATS_REQUEST:
      f.setStatsRequest(3);
      break;
    case F::PING:
      f.setPing(1);
      break;
    case F::BYE:
      f.initBye();
      break;
    default:
      f.initReject();
      break;
  }
  return encodeFrame(msg);
}

TEST(PeekFrameKind, MatchesTheDecodedKindWithoutDecoding) {
  for (auto k : {F::HELLO, F::HEARTBEAT, F::RESULT_BATCH, F::SUBMIT_JOB, F::WATCH_JOB,
                 F::CANCEL_JOB, F::STATS_REQUEST, F::PING, F::BYE, F::REJECT}) {
    const std::string bytes = encodeKind(k);
    auto peeked = peekFrameKind(bytes.data(), bytes.size());
    ASSERT_TRUE(peeked.has_value()) << frameKindName(k);
    EXPECT_EQ(*peeked, k);
    auto decoded = decodeFrame(bytes.data(), bytes.size());
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ((*decoded)->root().which(), *peeked);
  }
  // A multi-segment frame (many results) still peeks right.
  const std::string big = encodeKind(F::RESULT_BATCH, 5000);
  uint32_t segments_minus_one = 0;
  std::memcpy(&segments_minus_one, big.data(), 4);
  EXPECT_GT(segments_minus_one, 0u);
  EXPECT_EQ(peekFrameKind(big.data(), big.size()), F::RESULT_BATCH);
}

TEST(PeekFrameKind, RefusesWhatItCannotReadAndNeverReadsOutOfBounds) {
  const std::string ok = encodeKind(F::SUBMIT_JOB);
  for (size_t n = 0; n < ok.size(); ++n)  // every truncation
    EXPECT_FALSE(peekFrameKind(ok.data(), n).has_value()) << n;
  std::string null_root(16, '\0');  // one segment of one word: a null root pointer
  null_root[4] = 1;
  EXPECT_FALSE(peekFrameKind(null_root.data(), null_root.size()).has_value());
  std::string far = ok;  // root pointer turned into a far pointer
  far[8] = static_cast<char>((far[8] & ~3) | 2);
  EXPECT_FALSE(peekFrameKind(far.data(), far.size()).has_value());
  std::mt19937 rng(42);
  for (int i = 0; i < 20000; ++i) {  // random bytes: any answer, but no crash (ASan build)
    std::string junk(rng() % 64, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    (void)peekFrameKind(junk.data(), junk.size());
  }
}

TEST(CurveFlags, SecureByDefaultInsecureOnlyWhenAsked) {
  CurveFlags none;
  EXPECT_EQ(resolveServerCurve(none).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(resolveClientCurve(none, "node").status().code(),
            absl::StatusCode::kFailedPrecondition);
  CurveFlags insecure;
  insecure.insecure = true;
  EXPECT_FALSE(resolveServerCurve(insecure)->enabled());
  EXPECT_FALSE(resolveClientCurve(insecure, "node")->enabled());

  TempDir dir;
  ASSERT_TRUE(writeClusterKeys(dir / "k").ok());
  CurveFlags f;
  f.dir = dir / "k";
  auto server = resolveServerCurve(f);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(server->enabled());
  auto allow = loadAllowList(*server);
  ASSERT_TRUE(allow.ok());
  auto node = resolveClientCurve(f, "node");
  auto admin = resolveClientCurve(f, "admin");
  ASSERT_TRUE(node.ok() && admin.ok());
  EXPECT_EQ(allow->roleOf(node->public_key), Role::kNode);
  EXPECT_EQ(allow->roleOf(admin->public_key), Role::kAdmin);
  EXPECT_EQ(node->server_key, *publicKeyOf(server->secret_key));

  // --insecure beats a --curve-dir (say from the environment) but not an explicit key file.
  f.insecure = true;
  EXPECT_FALSE(resolveClientCurve(f, "node")->enabled());
  f.secret_key_file = dir / "k/node.key";
  EXPECT_FALSE(resolveClientCurve(f, "node").ok());
  // Keys but no coordinator key: refused.
  CurveFlags half;
  half.secret_key_file = dir / "k/node.key";
  EXPECT_FALSE(resolveClientCurve(half, "node").ok());
}

}  // namespace
}  // namespace tokengate::security

namespace tokengate::coordinator {
namespace {

TEST(NodeIdentity, ALiveIdIsNeverTakenByAnotherKey) {
  NodeIdentityTable t;
  EXPECT_TRUE(t.admitHello("n1", "keyA", 1, false).ok());
  // Same id, another key, while n1 is live: refused (no eviction), every time.
  for (int i = 0; i < 3; ++i) {
    auto st = t.admitHello("n1", "keyB", 2, true);
    EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_NE(st.message().find("another key"), std::string::npos);
  }
  // The owner's own re-hello (same process) passes.
  EXPECT_TRUE(t.admitHello("n1", "keyA", 1, true).ok());
  // Once n1 is gone, the id is free for any listed key.
  EXPECT_TRUE(t.admitHello("n1", "keyB", 2, false).ok());
  EXPECT_EQ(t.admitHello("n1", "keyA", 3, true).code(), absl::StatusCode::kPermissionDenied);
}

TEST(NodeIdentity, ARestartReplacesTheOldSessionOnceThenTheOldProcessIsRefused) {
  NodeIdentityTable t;
  ASSERT_TRUE(t.admitHello("n1", "k", 100, false).ok());
  // The same key, a new process (incarnation) while the old session still looks live: a
  // restart. Admitted once.
  EXPECT_TRUE(t.admitHello("n1", "k", 200, true).ok());
  // The old process is still running (two processes with one id): it cannot take the id back.
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(t.admitHello("n1", "k", 100, true).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(t.admitHello("n1", "k", 200, true).ok());  // the current one re-hellos fine
  // Without CURVE the key is "" for everyone: the same rule stops two processes flapping.
  NodeIdentityTable plain;
  ASSERT_TRUE(plain.admitHello("n1", "", 1, false).ok());
  ASSERT_TRUE(plain.admitHello("n1", "", 2, true).ok());
  EXPECT_FALSE(plain.admitHello("n1", "", 1, true).ok());
}

TEST(NodeIdentity, PruneDropsOnlyIdsThatAreNotLive) {
  NodeIdentityTable t;
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(t.admitHello("n" + std::to_string(i), "k", 1, false).ok());
  t.prune([](const std::string& id) { return id == "n7"; }, 1000);
  EXPECT_EQ(t.size(), 100u);  // under the cap: kept
  t.prune([](const std::string& id) { return id == "n7"; }, 10);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.admitHello("n7", "other", 5, true).code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace tokengate::coordinator
