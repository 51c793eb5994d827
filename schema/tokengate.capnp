# TokenGate wire contract. Every frame on the coordinator's ZeroMQ port is one
# `Frame` message (flat, unpacked Cap'n Proto). Rules for changing this file:
# only ever add fields with new ordinals; never renumber or retype; bump
# kProtocolVersion (common/wire.h) when a peer must refuse an older one.
@0xd6b3c1f2a4e5b7c9;

$import "/capnp/c++.capnp".namespace("tokengate::wire");

enum Weight {
  light @0;
  medium @1;
  heavy @2;
  unspecified @3;   # in specs: take the operation's default weight class
}

# Canonical status codes (same numbering as absl::StatusCode).
struct Error {
  code @0 :UInt8;
  message @1 :Text;
}

# A 50-significant-digit binary float (boost cpp_bin_float_50): 3 limbs of
# mantissa, little-endian limb order, and a binary exponent.
struct Dec {
  limb0 @0 :UInt64;
  limb1 @1 :UInt64;
  limb2 @2 :UInt64;
  exponent @3 :Int32;
  negative @4 :Bool;
  kind @5 :UInt8;   # 0 zero, 1 finite, 2 infinity, 3 nan
}

struct Value {
  union {
    null @0 :Void;
    int @1 :Int64;
    float @2 :Float64;
    text @3 :Text;
    data @4 :Data;
    dec @5 :Dec;
    bool @6 :Bool;
    # Added in protocol 1 without a version bump: a peer built before lists reads this
    # as an unknown union member (our decoders then see null). Elements are Values,
    # nested at most kMaxListDepth (common/value.h) deep.
    list @7 :List(Value);
    # Packed numeric arrays (added like list, protocol 1): one 8-byte word per element. At
    # most kMaxPackedElements (common/value.h) each.
    i64s @8 :List(Int64);
    f64s @9 :List(Float64);
  }
}

# ---------- job specs (client -> coordinator) ----------

struct Arg {
  union {
    value @0 :Value;
    ref @1 :UInt32;            # job-local token index whose result is passed here
    refRange :group {          # `count` consecutive refs starting at `start`
      start @2 :UInt32;
      count @3 :UInt32;
    }
  }
  # Added to an int value or to ref/refRange start for each repetition i of a
  # TokenSpec with repeat > 1 (instance i gets base + i * step).
  step @4 :Int64;
}

struct TokenSpec {
  op @0 :Text;
  weight @1 :Weight = unspecified;
  args @2 :List(Arg);
  idempotencyKey @3 :Text;     # with repeat > 1, instance i uses "<key>#<i>"
  deadlineMs @4 :UInt32;       # relative to admission; 0 = none
  maxAttempts @5 :UInt8;       # 0 = coordinator default
  repeat @6 :UInt32 = 1;       # compact range: expands to `repeat` tokens
  output @7 :Bool;             # keep and return this token's result with the job
  name @8 :Text;               # optional label shown in results
  runTimeoutMs @9 :UInt32;     # start-to-close per attempt; 0 = the op's limit, else the cluster's
}

struct JobSpec {
  name @0 :Text;
  tokens @1 :List(TokenSpec);
  verifyPct @2 :Float64;       # verified execution: % of tokens re-run on another node (0..100)
}

# ---------- node <-> coordinator ----------

struct LaneInfo {
  weight @0 :Weight;
  cores @1 :List(UInt32);     # OS core ids the lane's workers are pinned to
  workers @2 :UInt32;
}

struct OpInfo {
  name @0 :Text;
  weight @1 :Weight;
  deterministic @2 :Bool;     # same arguments => bitwise the same result: verify may sample it
}

struct NodeHello {
  protocolVersion @0 :UInt16;
  nodeId @1 :Text;
  incarnation @2 :UInt64;     # random per process start
  cores @3 :List(UInt32);
  lanes @4 :List(LaneInfo);
  operations @5 :List(OpInfo);
  pid @6 :UInt32;
  speedFactor @7 :Float64 = 1.0;   # >1 = deliberately slowed (benchmarks)
  # Added in protocol 1 without a version bump: this node reads TokenBatch.packed, so the
  # coordinator may send one-number-argument tokens there (an older node leaves it false).
  packedTokens @8 :Bool;
}

struct Welcome {
  accepted @0 :Bool;
  error @1 :Error;
  heartbeatMs @2 :UInt32;
  session @3 :UInt64;
  maxFrameBytes @4 :UInt64;   # the coordinator rejects larger frames: split result batches below it
  lossTimeoutMs @5 :UInt32;   # the coordinator declares a silent node lost after this; nodes give up later
  # Added in protocol 1 without a version bump: the coordinator reads ResultBatch.packed, so the
  # node may send plain numeric results there (an older coordinator leaves it false).
  packedResults @6 :Bool;
  # Added in protocol 1 without a version bump: the coordinator reads the `decs` columns of
  # ResultBatch.packed, so the node may send Dec50 results there (an older coordinator leaves it
  # false, and those results stay in `results`).
  packedDecResults @7 :Bool;
}

struct LaneLoad {
  weight @0 :Weight;
  queued @1 :UInt32;
  running @2 :UInt32;
  busyNs @3 :UInt64;          # cumulative busy time of the lane's workers
  completed @4 :UInt64;
}

struct CoreCount {
  core @0 :UInt32;
  tokens @1 :UInt64;
}

struct Heartbeat {
  session @0 :UInt64;
  lanes @1 :List(LaneLoad);
  cores @2 :List(CoreCount);
  rssBytes @3 :UInt64;
  draining @4 :Bool;
  # CPU time (user + system) the node process has used since it started. Added in protocol 1
  # (0 from older nodes); the coordinator re-exports it as tokengate_node_cpu_seconds.
  cpuNs @5 :UInt64;
}

struct TokenTask {
  id @0 :UInt64;
  op @1 :UInt16;               # index into TokenBatch.ops
  weight @2 :Weight;
  attempt @3 :UInt32;
  deadlineMs @4 :UInt32;       # remaining budget when sent; 0 = none
  args @5 :List(Value);
}

struct TokenBatch {
  session @0 :UInt64;
  ops @1 :List(Text);
  tokens @2 :List(TokenTask);
  # Added in protocol 1 without a version bump, sent only to nodes whose hello set packedTokens:
  # tokens with exactly one int or float argument and no deadline, as columns (~24 bytes each
  # instead of ~64 in `tokens`).
  packed @3 :List(PackedTokens);
}

# Tokens as columns: entry i of every list is one token (all lists of a block have the same
# length; a block with unequal lengths is malformed). Each token has one argument, the value in
# f64s or i64s, and no deadline.
struct PackedTokens {
  ids @0 :List(UInt64);
  ops @1 :List(UInt16);          # index into TokenBatch.ops
  weights @2 :List(Weight);
  attempts @3 :List(UInt32);
  union {
    f64s @4 :List(Float64);
    i64s @5 :List(Int64);
  }
}

struct TokenResult {
  id @0 :UInt64;
  attempt @1 :UInt32;
  union {
    value @2 :Value;
    error @3 :Error;
  }
  runNs @4 :UInt64;
  queueNs @5 :UInt64;
  core @6 :UInt32;
  lane @7 :Weight;
}

struct Returned {
  id @0 :UInt64;
  attempt @1 :UInt32;
}

struct ResultBatch {
  session @0 :UInt64;
  results @1 :List(TokenResult);
  returned @2 :List(Returned);  # queued tokens handed back unrun (drain)
  # Added in protocol 1 without a version bump, sent only after Welcome.packedResults: successful
  # results with an int or float value as columns (~28 bytes each instead of ~72 in `results`).
  packed @3 :List(PackedResults);
}

# Successful results as columns: entry i of every list is one result (all lists of a block have
# the same length; a block with unequal lengths is malformed). Core and lane are not sent: the
# coordinator does not read them from results.
struct PackedResults {
  ids @0 :List(UInt64);
  attempts @1 :List(UInt32);
  runNs @2 :List(UInt32);      # results that ran or queued 2^32 ns or longer go in `results`
  queueNs @3 :List(UInt32);
  union {
    f64s @4 :List(Float64);    # the value of each result is a float
    i64s @5 :List(Int64);      # ... or an int
    # ... or a Dec50 (added in protocol 1 without a version bump, sent only after
    # Welcome.packedDecResults): the fields of `Dec` as columns, ~49 bytes per result with the
    # columns above instead of ~104 for a TokenResult with its Value and Dec structs.
    decs :group {
      limbs @6 :List(UInt64);    # 3 per result: limb0, limb1, limb2 of result i at 3i, 3i+1, 3i+2
      exponents @7 :List(Int32);
      flags @8 :List(UInt8);     # bit 0 negative, bits 1-2 kind (0 zero, 1 finite, 2 inf, 3 nan);
                                 # a set bit 3-7 makes the block malformed
    }
  }
}

struct Control {
  union {
    cancelTokens @0 :List(UInt64);   # cooperative cancel of running/queued tokens
    cancelOp @1 :Text;               # set the cancel flag for every token of an operation
    drain @2 :Void;                  # finish running work, hand back queued work
    undrain @3 :Void;
    shutdown @4 :Void;               # drain, then exit
  }
}

struct Bye {
  session @0 :UInt64;
  reason @1 :Text;
}

# ---------- client <-> coordinator ----------

struct SubmitJob {
  requestId @0 :UInt64;
  job @1 :JobSpec;
  watch @2 :Bool = true;         # stream JobProgress / JobDone to this peer
  # Added in protocol 1 without a version bump (an older coordinator ignores it and always
  # sends SubmitReply). With watch: the coordinator may hold the SubmitReply of an admitted job
  # for up to its --ack-hold-us; a job that finishes within it gets no SubmitReply, only a
  # JobDone carrying this requestId (ack and result in one frame). A refusal is still an
  # immediate SubmitReply; a job still running at the deadline gets its SubmitReply then.
  ackWithResult @3 :Bool = false;
}

struct SubmitReply {
  requestId @0 :UInt64;
  union {
    jobId @1 :UInt64;
    error @2 :Error;
  }
  incarnation @3 :UInt64;        # the admitting coordinator's incarnation (send it back in JobRef)
}

struct JobRef {
  requestId @0 :UInt64;
  jobId @1 :UInt64;
  incarnation @2 :UInt64;        # from SubmitReply; 0 = unknown. A coordinator whose job of that
                                 # id has another incarnation answers NOT_FOUND (docs/journal.md)
}

struct JobProgress {
  jobId @0 :UInt64;
  total @1 :UInt64;
  done @2 :UInt64;
  failed @3 :UInt64;
  running @4 :UInt64;
  # Output tokens that finished since the previous progress frame to this watcher (streamed
  # results); JobDone still carries the job's outputs in full.
  outputs @5 :List(Output);
}

struct Output {
  index @0 :UInt32;              # job-local token index
  name @1 :Text;
  union {
    value @2 :Value;
    error @3 :Error;
  }
}

struct JobDone {
  jobId @0 :UInt64;
  state @1 :JobState;
  progress @2 :JobProgress;
  outputs @3 :List(Output);
  wallNs @4 :UInt64;
  # Added in protocol 1 without a version bump: nonzero on the JobDone that stands in for a
  # held SubmitReply (SubmitJob.ackWithResult): the submission's requestId and the admitting
  # coordinator's incarnation (as SubmitReply would have carried). 0 on every other JobDone.
  requestId @5 :UInt64;
  incarnation @6 :UInt64;
}

enum JobState {
  running @0;
  succeeded @1;
  failed @2;        # at least one token failed (others may have completed)
  cancelled @3;
  unknown @4;
}

struct Reject {
  error @0 :Error;               # the coordinator could not accept a frame
  requestId @1 :UInt64;          # of the refused request, when it had one (watchJob)
}

struct StatsReply {
  requestId @0 :UInt64;
  nodesReady @1 :UInt32;
  nodesDraining @2 :UInt32;
  jobsRunning @3 :UInt32;
  tokensLive @4 :UInt64;
  tokensCompleted @5 :UInt64;
  tokensFailed @6 :UInt64;
  queued @7 :UInt64;
  inFlight @8 :UInt64;
  nodes @9 :List(NodeSummary);
  nodesLost @10 :UInt64;         # node registrations ended (missed heartbeats, disconnect, bye, evict)
  nodesDisconnected @11 :UInt64; # of which the connection was seen to close
  tokensRequeued @12 :UInt64;    # in-flight tokens re-queued because their node was lost or left
  tokensReturned @13 :UInt64;    # queued tokens handed back unrun by draining nodes
  nodesQuarantined @14 :UInt32;  # registered nodes given no work: they withheld results
  runTimeouts @15 :UInt64;       # token attempts ended by their run timeout
  verifyReruns @16 :UInt64;      # verification runs (a sampled token's second and third runs)
  verifyMatched @17 :UInt64;     # sampled tokens two nodes agreed on
  verifyMismatched @18 :UInt64;  # sampled tokens whose results differed between nodes
  verifyUnverifiable @19 :UInt64; # sampled tokens accepted unverified: no other node in time
  tokensReopened @20 :UInt64;    # finished tokens run again: a lying node's, or fed by one
}

struct NodeSummary {
  id @0 :Text;
  state @1 :Text;           # ready | draining | quarantined | dead
  completed @2 :UInt64;     # tokens this registration completed
  inFlight @3 :UInt64;
  session @4 :UInt64;
}

struct Frame {
  version @0 :UInt16;
  union {
    hello @1 :NodeHello;
    welcome @2 :Welcome;
    heartbeat @3 :Heartbeat;
    tokenBatch @4 :TokenBatch;
    resultBatch @5 :ResultBatch;
    control @6 :Control;
    bye @7 :Bye;
    submitJob @8 :SubmitJob;
    submitReply @9 :SubmitReply;
    watchJob @10 :JobRef;
    cancelJob @11 :JobRef;
    jobProgress @12 :JobProgress;
    jobDone @13 :JobDone;
    reject @14 :Reject;
    ping @15 :UInt64;
    pong @16 :UInt64;
    statsRequest @17 :UInt64;    # request id; answered with statsReply
    statsReply @18 :StatsReply;
    adminRequest @19 :AdminRequest;  # client -> coordinator: operator calls (tgctl jobs/op/node)
    adminReply @20 :AdminReply;
  }
}

# ---------- operator calls over the wire port (tgctl), same effects as the gateway's ----------

struct OpLimitsRequest {
  op @0 :Text;
  maxInFlight @1 :UInt32;      # 0 = unlimited
  maxRatePerS @2 :Float64;     # 0 = unlimited
  runTimeoutMs @3 :UInt32;     # start-to-close of each token of the op; 0 = cluster default
  verifyPct @4 :Float64;       # verify this % of the op's tokens in every job (0 = the job's)
}

struct AdminRequest {
  requestId @0 :UInt64;
  union {
    listJobs @1 :Void;
    listOps @2 :Void;
    pauseOp @3 :Text;
    resumeOp @4 :Text;
    drainOp @5 :Text;          # queued tokens of the op fail as Cancelled
    setOpLimits @6 :OpLimitsRequest;
    drainNode @7 :Text;
    undrainNode @8 :Text;
    evictNode @9 :Text;
    listNodes @10 :Void;
  }
}

struct AdminReply {
  requestId @0 :UInt64;
  union {
    error @1 :Error;
    json @2 :Text;             # the result as JSON (fields as in docs/protocol.md's replies)
  }
}

# ---------- coordinator journal (--journal; never on the wire) ----------
# An append-only file of self-delimiting, checksummed records (coordinator/journal/format.h);
# each payload is one Cap'n Proto message in flat-array form; see docs/journal.md.

struct JournalAdmit {
  jobId @0 :UInt64;
  job @1 :JobSpec;
  incarnation @2 :UInt64;        # of the coordinator that admitted it (kept across restarts)
}

struct JournalFinish {
  done @0 :JobDone;              # what watchers were told (progress.failed = failed + cancelled)
  name @1 :Text;
  cancelled @2 :UInt64;
  incarnation @3 :UInt64;
}

struct JournalEpoch {
  epoch @0 :UInt32;              # job ids of this epoch are handed out from here on
  startedNs @1 :Int64;           # wall clock (for humans: tgctl journal check)
}

# Results of finished tokens of a live job (resume, don't re-run): written in batches with the
# group commit, not synced; a restart marks these tokens done instead of running them again.
struct JournalCheckpoint {
  jobId @0 :UInt64;
  incarnation @1 :UInt64;        # of the job (a checkpoint of another incarnation is ignored)
  tokens @2 :List(UInt32);       # job-local token indices
  values @3 :List(Value);        # their results, in the same order
}

# The result of an idempotency key's original token (the first token admitted with the key), so
# that a restarted coordinator still answers later tokens with the same key with this value
# instead of running them. Written with the group commit when the token finishes (before any
# client can see the value), not synced for itself: the next admission's sync covers it.
struct JournalKey {
  key @0 :Text;                  # as claimed (with repeat > 1: "<key>#<i>")
  tokenId @1 :UInt64;            # the original token (job id << 32 | index)
  incarnation @2 :UInt64;        # of the original's job
  value @3 :Value;
}

# A node quarantined (convicted) or its quarantine lifted (`tgctl node undrain`), so that a
# restarted coordinator keeps a caught node off work. The newest record of a node id wins;
# compaction keeps the live (not lifted) ones. Journals written before this record existed
# simply have none; a coordinator older than it skips the record (counted as damage).
struct JournalQuarantine {
  nodeId @0 :Text;
  key @1 :Text;                  # the node's CURVE public key (Z85) when caught; "" insecure
  reason @2 :Text;               # what it was caught at (verify mismatch, run timeouts)
  atNs @3 :Int64;                # wall clock (unix ns) of the conviction or the lift
  lifted @4 :Bool;               # true: an operator lifted it (undrain)
  cause @5 :UInt8;               # 0 run timeouts, 1 verify (wrong results)
}

struct JournalRecord {
  union {
    admitted @0 :JournalAdmit;
    finished @1 :JournalFinish;
    epoch @2 :JournalEpoch;      # the first record of every file (its header), and at rollover
    checkpoint @3 :JournalCheckpoint;
    key @4 :JournalKey;
    quarantine @5 :JournalQuarantine;
  }
}
