// Writes the fuzz targets' seed corpora from real frames: the node's own
// frame builders (node/link/frames.h) and a real CoordinatorCore's replies,
// so the seeds are conversations the code actually has. Run by hand after a
// protocol change and check the output in:
//   build/fuzz/bin/tg_fuzz_make_seeds tests/fuzz/corpus
#include <capnp/message.h>
#include <fmt/format.h>
#include <prometheus/registry.h>

#include <filesystem>
#include <fstream>

#include "common/job.h"
#include "common/wire.h"
#include "coordinator/core/coordinator.h"
#include "coordinator/journal/format.h"
#include "node/link/frames.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"
#include "tests/fuzz/frame_sequence.h"

using namespace tokengate;
namespace fs = std::filesystem;

namespace {

wire::Frame::Builder frame(capnp::MessageBuilder& msg) {
  auto f = msg.initRoot<wire::Frame>();
  f.setVersion(kProtocolVersion);
  return f;
}

void write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

node::HelloInfo hello(const std::string& id) {
  node::HelloInfo h;
  h.node_id = id;
  h.incarnation = 1;
  h.cores = {0, 1};
  h.lanes = {{Weight::kLight, {0}, 1}, {Weight::kMedium, {0}, 1}, {Weight::kHeavy, {1}, 1}};
  for (const char* op : {"leibniz.term", "leibniz.term_dec50", "leibniz.chunk", "leibniz.partial",
                         "leibniz.final", "hash", "echo"})
    h.operations.emplace_back(op, Weight::kLight);
  h.pid = 42;
  return h;
}

std::string submit(uint64_t request_id, const JobSpec& job, bool ack_with_result = false) {
  capnp::MallocMessageBuilder msg;
  auto s = frame(msg).initSubmitJob();
  s.setRequestId(request_id);
  s.setAckWithResult(ack_with_result);
  toWire(job, s.initJob());
  return encodeFrame(msg);
}

std::string jobRef(bool cancel, uint64_t request_id, uint64_t job_id) {
  capnp::MallocMessageBuilder msg;
  auto r = cancel ? frame(msg).initCancelJob() : frame(msg).initWatchJob();
  r.setRequestId(request_id);
  r.setJobId(job_id);
  return encodeFrame(msg);
}

std::string u64Frame(int kind, uint64_t v) {
  capnp::MallocMessageBuilder msg;
  auto f = frame(msg);
  if (kind == 0) f.setPing(v);
  if (kind == 1) f.setPong(v);
  if (kind == 2) f.setStatsRequest(v);
  return encodeFrame(msg);
}

JobSpec smallJob() {
  JobSpec job;
  job.name = "seed";
  TokenSpec a;
  a.op = "echo";
  a.args.push_back(Arg::val(Value(int64_t{21})));
  job.add(a);
  TokenSpec b;
  b.op = "hash";
  b.args.push_back(Arg::ref(0));
  b.args.push_back(Arg::val(Value(std::string("salt"))));
  b.output = true;
  b.name = "sink";
  b.idempotency_key = "seed-key";
  job.add(b);
  return job;
}

std::string admin(uint64_t request_id, int kind, const std::string& arg = "hash") {
  capnp::MallocMessageBuilder msg;
  auto r = frame(msg).initAdminRequest();
  r.setRequestId(request_id);
  switch (kind) {
    case 0:
      r.setListJobs();
      break;
    case 1:
      r.setListOps();
      break;
    case 2:
      r.setListNodes();
      break;
    case 3:
      r.setPauseOp(arg);
      break;
    case 4:
      r.setResumeOp(arg);
      break;
    case 5:
      r.setDrainOp(arg);
      break;
    case 6: {
      auto l = r.initSetOpLimits();
      l.setOp(arg);
      l.setMaxInFlight(4);
      l.setMaxRatePerS(1000);
      l.setRunTimeoutMs(1500);
      break;
    }
    case 7:
      r.setDrainNode(arg);
      break;
    case 8:
      r.setUndrainNode(arg);
      break;
    default:
      r.setEvictNode(arg);
      break;
  }
  return encodeFrame(msg);
}

// Peers of fuzz_coordinator_frames (its kPeers) and its record byte: bits 0-2 the peer, bits
// 3-6 the clock step after the record (x 250 ms), bit 7 a disconnect.
enum PeerIndex : uint8_t {
  kNodeA = 0,
  kNodeB = 1,
  kAdmin = 2,
  kOperator = 3,
  kViewer = 4,
  kNodeARestarted = 5,
  kRogue = 6,
  kViewerOnNodeA = 7
};
constexpr uint8_t rec(uint8_t peer, uint8_t clock_steps = 0) {
  return static_cast<uint8_t>(peer | (clock_steps & 0xf) << 3);
}
constexpr uint8_t kDisconnect = 0x80;
const char* const kRouting[8] = {
    "node-a/0000000000000001", "node-b/0000000000000002", "client-admin",
    "client-operator",         "client-viewer",           "node-a/0000000000000003",
    "rogue/0000000000000004",  "node-a/0000000000000001"};

// Coordinator conversations: run a real core and record what the peers said (the core alone:
// every frame recorded here is one their roles allow).
void coordinatorSeeds(const fs::path& out, const fs::path& single) {
  testing::FakeClock clock;
  testing::MemoryOutbox outbox;
  coordinator::CoordinatorConfig config;
  config.max_frame_bytes = 1 << 20;
  coordinator::CoordinatorCore core(config, clock, outbox,
                                    std::make_shared<prometheus::Registry>());
  const std::string node_peer = kRouting[kNodeA];
  std::string seq;
  auto say = [&](uint8_t peer_index, const std::string& f, const std::string& name) {
    fuzz::appendRecord(seq, rec(peer_index), f);
    write(single, name, f);
    core.onBytes(kRouting[peer_index], f.data(), f.size());
    core.flushAll();
    core.tick();
  };
  say(kNodeA, node::helloFrame(hello("node-a")), "hello");
  auto welcome = outbox.next(node_peer);
  const uint64_t session = welcome->root().getWelcome().getSession();
  say(kNodeA,
      node::heartbeatFrame(session, {{Weight::kLight, 0, 0, 0, 0}}, {{0, 0}}, 1 << 20, false),
      "heartbeat");
  for (int kind : {0, 1}) {  // leibniz double, then dec50
    auto job = makeLeibnizJob(100, kind == 0 ? Precision::kDouble : Precision::kDec50, 10, 2);
    say(kOperator, submit(7 + kind, *job), fmt::format("submit-leibniz-{}", kind));
  }
  say(kAdmin, submit(9, smallJob()), "submit-small");
  // Answer every token batch the core sends, as a node would, until the jobs end.
  for (int round = 0; round < 20; ++round) {
    std::vector<node::TaskResult> results;
    while (auto f = outbox.next(node_peer)) {
      if (f->root().which() != wire::Frame::TOKEN_BATCH) continue;
      for (auto t : f->root().getTokenBatch().getTokens()) {
        node::TaskResult r;
        r.id = t.getId();
        r.attempt = t.getAttempt();
        r.session = session;
        r.outcome = t.getArgs().size() > 0 ? fromWire(t.getArgs()[0]) : Value(int64_t{0});
        results.push_back(std::move(r));
      }
      // One-number tokens arrive as packed columns (the hello said packedTokens).
      for (auto blk : f->root().getTokenBatch().getPacked()) {
        // Each list read once: reading a list counts against the message's traversal limit.
        const bool f64 = blk.which() == wire::PackedTokens::F64S;
        auto ids = blk.getIds();
        auto attempts = blk.getAttempts();
        auto ops = blk.getOps();
        auto names = f->root().getTokenBatch().getOps();
        auto floats = f64 ? blk.getF64s() : capnp::List<double>::Reader();
        auto ints = f64 ? capnp::List<int64_t>::Reader() : blk.getI64s();
        for (unsigned i = 0; i < ids.size(); ++i) {
          node::TaskResult r;
          r.id = ids[i];
          r.attempt = attempts[i];
          r.session = session;
          if (f64)
            r.outcome = Value(floats[i]);
          else if (std::string_view(names[ops[i]].cStr()).ends_with("dec50"))
            r.outcome = Value(fromBigFloat(BigFloat(1) / (2 * ints[i] + 1)));  // a Dec50 term
          else
            r.outcome = Value(int64_t{ints[i]});
          results.push_back(std::move(r));
        }
      }
    }
    if (results.empty()) break;
    if (round == 0 && results.size() > 1) results[1].outcome = absl::UnavailableError("retry me");
    // Rounds after the first use the packed columns, Dec50 ones included (the welcome announced
    // packedResults and packedDecResults).
    say(kNodeA,
        node::resultBatchFrame(session, results, {}, nullptr, /*packed=*/round > 0,
                               /*packed_decs=*/round > 0),
        fmt::format("results-{}", round));
  }
  say(kViewer, u64Frame(2, 3), "stats-request");
  say(kViewer, jobRef(false, 4, 1), "watch");
  say(kOperator, jobRef(true, 5, 1), "cancel");
  for (int kind = 0; kind < 3; ++kind)  // viewer: the lists
    say(kViewer, admin(20 + kind, kind), fmt::format("admin-{}", kind));
  for (int kind = 3; kind < 10; ++kind) {  // operator and admin: the rest
    const std::string arg = kind >= 7 ? "node-a" : "hash";
    say(kind == 9 ? kAdmin : kOperator, admin(20 + kind, kind, arg), fmt::format("admin-{}", kind));
  }
  say(kNodeA, u64Frame(0, 11), "ping");
  say(kNodeA, node::resultBatchFrame(session, {}, std::vector<node::ReturnedTask>{{1, 1, 0}}),
      "returned");
  say(kNodeA, node::byeFrame(session, "shutdown"), "bye");
  write(out, "conversation", seq);

  // Frames each role may not send: refused by PeerAuth before the core.
  std::string refused;
  fuzz::appendRecord(refused, rec(kViewer), submit(1, smallJob()));
  fuzz::appendRecord(refused, rec(kViewer), admin(2, 3));
  fuzz::appendRecord(refused, rec(kOperator), admin(3, 9, "node-a"));
  fuzz::appendRecord(refused, rec(kNodeA), submit(4, smallJob()));
  fuzz::appendRecord(refused, rec(kAdmin), node::helloFrame(hello("admin-as-node")));
  fuzz::appendRecord(refused, rec(kNodeA), node::helloFrame(hello("node-a")));
  fuzz::appendRecord(refused, rec(kViewerOnNodeA), u64Frame(2, 5));
  fuzz::appendRecord(refused, rec(kNodeA), "not a frame");
  write(out, "roles-refused", refused);

  // One id, three keys or processes: the rogue key is refused, the restart replaces the session.
  std::string identity;
  fuzz::appendRecord(identity, rec(kNodeA), node::helloFrame(hello("node-a")));
  fuzz::appendRecord(identity, rec(kRogue), node::helloFrame(hello("node-a")));
  auto restarted = hello("node-a");
  restarted.incarnation = 3;
  fuzz::appendRecord(identity, rec(kNodeARestarted, 2), node::helloFrame(restarted));
  fuzz::appendRecord(identity, rec(kNodeA), node::helloFrame(hello("node-a")));
  fuzz::appendRecord(identity, rec(kNodeA) | kDisconnect, "");
  fuzz::appendRecord(identity, rec(kRogue, 15), node::helloFrame(hello("rogue")));
  write(out, "node-identity", identity);

  // A node that heartbeats but never answers: run timeouts (2 s in the target), then quarantine.
  std::string silent;
  fuzz::appendRecord(silent, rec(kNodeA), node::helloFrame(hello("node-a")));
  fuzz::appendRecord(silent, rec(kOperator),
                     submit(1, *makeLeibnizJob(60, Precision::kDouble, 10, 2)));
  for (int i = 0; i < 6; ++i)
    fuzz::appendRecord(
        silent, rec(kNodeA, 4),
        node::heartbeatFrame(session, {{Weight::kLight, 0, 0, 0, 0}}, {{0, 0}}, 1 << 20, false));
  fuzz::appendRecord(silent, rec(kAdmin), admin(1, 8, "node-a"));  // undrain lifts it
  write(out, "run-timeout", silent);

  // A second node and a client that disconnects mid-way.
  std::string two;
  fuzz::appendRecord(two, rec(kNodeA), node::helloFrame(hello("node-a")));
  fuzz::appendRecord(two, rec(kNodeB), node::helloFrame(hello("node-b")));
  fuzz::appendRecord(two, rec(kOperator),
                     submit(1, *makeLeibnizJob(1000, Precision::kDouble, 100, 10)));
  fuzz::appendRecord(two, rec(kNodeA) | kDisconnect, "");
  fuzz::appendRecord(two, rec(kViewer, 13), u64Frame(2, 1));  // clock +3.25 s: node-b is lost
  write(out, "two-nodes-disconnect", two);

  // SubmitJob.ackWithResult: held acks, one released by the clock, one for a client that left.
  // (decode_frame/submit-ack-with-result and job-done-with-request were written with
  // `capnp encode` from submit-small's text.)
  std::string acks;
  fuzz::appendRecord(acks, rec(kNodeA), node::helloFrame(hello("node-a")));
  fuzz::appendRecord(acks, rec(kOperator), submit(10, smallJob(), true));
  fuzz::appendRecord(acks, rec(kOperator, 1), submit(10, smallJob(), true));
  fuzz::appendRecord(acks, rec(kOperator) | kDisconnect, submit(10, smallJob(), true));
  fuzz::appendRecord(acks, rec(kViewer, 2), u64Frame(2, 1));
  write(out, "ack-with-result", acks);
}

std::string welcomeFrame(bool accepted, uint64_t session) {
  capnp::MallocMessageBuilder msg;
  auto w = frame(msg).initWelcome();
  w.setAccepted(accepted);
  w.setSession(session);
  w.setHeartbeatMs(500);
  w.setLossTimeoutMs(3000);
  w.setMaxFrameBytes(1 << 20);
  w.setPackedResults(accepted);  // the node's result frames use the columns, Dec50 ones too
  w.setPackedDecResults(accepted);
  if (!accepted)
    toWire(absl::FailedPreconditionError("unknown session: send hello"), w.initError());
  return encodeFrame(msg);
}

std::string tokenBatch(uint64_t session) {
  capnp::MallocMessageBuilder msg;
  auto b = frame(msg).initTokenBatch();
  b.setSession(session);
  auto ops = b.initOps(5);
  ops.set(0, "leibniz.term");
  ops.set(1, "leibniz.chunk");
  ops.set(2, "hash");
  ops.set(3, "echo");
  ops.set(4, "no.such.op");
  auto toks = b.initTokens(6);
  const std::vector<std::vector<Value>> args = {
      {int64_t{3}},
      {0.5, -0.25, 0.125},
      {Value(std::string("text")), Value(Bytes{"\x01\x02"}), Value(true), Value()},
      {Value(fromBigFloat(BigFloat(3.25)))},
      {int64_t{1}},
      {int64_t{9}}};
  for (unsigned i = 0; i < 6; ++i) {
    toks[i].setId(100 + i);
    toks[i].setAttempt(1);
    toks[i].setOp(static_cast<uint16_t>(i == 5 ? 9 : std::min(i, 4u)));
    toks[i].setWeight(i == 3 ? wire::Weight::UNSPECIFIED : wire::Weight::LIGHT);
    toks[i].setDeadlineMs(i == 1 ? 1000 : 0);
    auto al = toks[i].initArgs(static_cast<unsigned>(args[i].size()));
    for (unsigned j = 0; j < args[i].size(); ++j) toWire(args[i][j], al[j]);
  }
  // Packed columns (TokenBatch.packed): leibniz terms as ints, echoes of floats, one bad op.
  auto blocks = b.initPacked(2);
  for (unsigned k = 0; k < 2; ++k) {
    auto blk = blocks[k];
    auto ids = blk.initIds(3);
    auto bops = blk.initOps(3);
    auto weights = blk.initWeights(3);
    auto attempts = blk.initAttempts(3);
    auto ints = k == 0 ? blk.initI64s(3) : capnp::List<int64_t>::Builder();
    auto floats = k == 1 ? blk.initF64s(3) : capnp::List<double>::Builder();
    for (unsigned i = 0; i < 3; ++i) {
      ids.set(i, 200 + 3 * k + i);
      bops.set(i, static_cast<uint16_t>(i == 2 && k == 1 ? 9 : (k == 0 ? 0 : 3)));
      weights.set(i, wire::Weight::LIGHT);
      attempts.set(i, 1);
      if (k == 0)
        ints.set(i, 5 + i);
      else
        floats.set(i, 0.5 * i);
    }
  }
  return encodeFrame(msg);
}

std::string control(int kind) {
  capnp::MallocMessageBuilder msg;
  auto c = frame(msg).initControl();
  switch (kind) {
    case 0: {
      auto l = c.initCancelTokens(2);
      l.set(0, 100);
      l.set(1, 101);
      break;
    }
    case 1:
      c.setCancelOp("hash");
      break;
    case 2:
      c.setDrain();
      break;
    case 3:
      c.setUndrain();
      break;
    default:
      c.setShutdown();
  }
  return encodeFrame(msg);
}

std::string reject() {
  capnp::MallocMessageBuilder msg;
  toWire(absl::InvalidArgumentError("bad frame"), frame(msg).initReject().initError());
  return encodeFrame(msg);
}

void nodeSeeds(const fs::path& out, const fs::path& single) {
  std::string seq;
  auto say = [&](uint8_t clock_steps, const std::string& f, const std::string& name) {
    fuzz::appendRecord(seq, clock_steps, f);
    write(single, name, f);
  };
  say(0, welcomeFrame(true, 1), "welcome");
  say(0, tokenBatch(1), "token-batch");
  say(0, tokenBatch(2), "token-batch-other-session");
  for (int k = 0; k < 4; ++k) say(1, control(k), fmt::format("control-{}", k));
  say(0, u64Frame(0, 5), "ping");
  say(0, u64Frame(1, 5), "pong");
  say(0, reject(), "reject");
  say(0, welcomeFrame(false, 0), "welcome-unknown-session");
  say(0, welcomeFrame(true, 2), "welcome-2");
  say(40, control(4), "control-shutdown");
  write(out, "conversation", seq);
  std::string silent;
  fuzz::appendRecord(silent, 0, welcomeFrame(true, 1));
  fuzz::appendRecord(silent, 40, u64Frame(1, 1));  // 4 s of silence: give-up, reconnect
  fuzz::appendRecord(silent, 15, welcomeFrame(true, 3));
  write(out, "give-up", silent);
}

}  // namespace

// A journal (journal_replay_fuzz) with every quarantine record kind between jobs: convicted
// for run timeouts (CURVE off: no key), convicted by verification (with its key), lifted.
void journalSeeds(const fs::path& dir) {
  using coordinator::QuarantineNote;
  std::string file(journal::kMagic);
  journal::appendRecord(file, journal::encodeEpoch(3, 1'700'000'000'000'000'000));
  JobSpec spec;
  spec.name = "before";
  TokenSpec t;
  t.op = "echo";
  t.args.push_back(Arg::val(int64_t{1}));
  spec.add(t);
  const uint64_t job = coordinator::firstIdOf(3) + 1;
  journal::appendRecord(file, journal::encodeAdmit(job, 7, spec));
  QuarantineNote slow = QuarantineNote::convicted("node-a", "", "3 run timeouts in 60 s",
                                                  QuarantineNote::kRunTimeouts);
  slow.at_ns = 1'700'000'000'000'000'001;
  journal::appendRecord(file, journal::encodeQuarantine(slow));
  QuarantineNote liar =
      QuarantineNote::convicted("node-b", "rq:cg1y}8Ldnwzq5e=VlzY8#l%g9XQ7NDnQHkpKz",
                                "verify mismatch on token 12", QuarantineNote::kVerify);
  liar.at_ns = 1'700'000'000'000'000'002;
  journal::appendRecord(file, journal::encodeQuarantine(liar));
  control::JobStatus st;
  st.id = job;
  st.state = control::JobState::kSucceeded;
  st.total = st.done = 1;
  journal::appendRecord(file, journal::encodeFinish(st));
  QuarantineNote lift = QuarantineNote::liftOf("node-a");
  lift.at_ns = 1'700'000'000'000'000'003;
  journal::appendRecord(file, journal::encodeQuarantine(lift));
  write(dir, "quarantine-records", file);
}

int main(int argc, char** argv) {
  if (argc != 2) return fmt::print(stderr, "usage: {} CORPUS_DIR\n", argv[0]), 2;
  const fs::path root = argv[1];
  coordinatorSeeds(root / "coordinator_frames", root / "decode_frame");
  nodeSeeds(root / "node_frames", root / "decode_frame");
  journalSeeds(root / "journal_replay");
  fmt::print("seeds written under {}\n", root.string());
  return 0;
}
