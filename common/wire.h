// Encoding and decoding of wire frames (schema/tokengate.capnp).
// decodeFrame() is the trust boundary: it bounds size, copies into a
// word-aligned buffer (capnp 0.9 needs alignment), sets traversal limits and
// walks the whole message once, so most malformed input is refused here. Typed reads of a
// decoded frame can still throw kj::Exception: a pointer of the wrong kind where the schema has
// a list (totalSize() walks pointers without the schema), or a frame built to be read many
// times crossing the traversal limit in a handler (fuzz_decode_frame and fuzz_node_frames
// findings). Every consumer catches kj::Exception around its handlers and treats the frame as
// malformed: CoordinatorCore::onBytes, PeerAuth, CoordinatorLink::handleFrame, Client::pump.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <algorithm>
#include <memory>
#include <string>

#include "common/job.h"
#include "common/status.h"
#include "common/value.h"
#include "tokengate.capnp.h"

namespace tokengate {

constexpr uint16_t kProtocolVersion = 1;
constexpr size_t kDefaultMaxFrameBytes = 64u << 20;

// How much decodeFrame checks up front. kFull walks every pointer once (totalSize()) so a
// malformed frame is refused before any handler reads it: for frames from peers that are not
// trusted to be well-formed (the coordinator's view of nodes and clients). kLazy skips the walk;
// the traversal and nesting limits still bound every read, and malformed parts throw
// kj::Exception when read. For a reader whose handlers apply nothing until they have read what
// they need (the node: a token batch is decoded whole before any token is queued) and whose
// only peer is the coordinator it connected to.
enum class FrameCheck { kFull, kLazy };

class DecodedFrame;
// decodeFrame and decodeFrameBorrowed (below); `borrow` reads aligned input in place.
StatusOr<std::unique_ptr<DecodedFrame>> decodeFrameImpl(const void* data, size_t size,
                                                        size_t max_bytes, FrameCheck check,
                                                        bool borrow);

class DecodedFrame {
 public:
  wire::Frame::Reader root() const { return root_; }
  size_t bytes() const { return size_; }

 private:
  friend StatusOr<std::unique_ptr<DecodedFrame>> decodeFrameImpl(const void*, size_t, size_t,
                                                                 FrameCheck, bool);
  kj::Array<capnp::word> words_;  // empty when the frame borrows the caller's bytes
  size_t size_ = 0;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  wire::Frame::Reader root_;
};

// Errors: InvalidArgument for malformed/truncated frames, wrong version or
// oversize input (ResourceExhausted). Never throws.
StatusOr<std::unique_ptr<DecodedFrame>> decodeFrame(const void* data, size_t size,
                                                    size_t max_bytes = kDefaultMaxFrameBytes,
                                                    FrameCheck check = FrameCheck::kFull);
// The same, but when `data` is word-aligned (ZeroMQ's heap messages are) the frame reads it in
// place instead of copying it first: the returned frame must not outlive `data`. For handlers
// that finish with the frame while the received message is alive (the coordinator's onBytes,
// the node's handleFrame).
StatusOr<std::unique_ptr<DecodedFrame>> decodeFrameBorrowed(
    const void* data, size_t size, size_t max_bytes = kDefaultMaxFrameBytes,
    FrameCheck check = FrameCheck::kFull);

// Serialises a built message (flat array, unpacked).
std::string encodeFrame(capnp::MessageBuilder& message);

// An outgoing frame under construction: the message and its root, version already set.
//   auto f = newFrame();
//   f.root.initWelcome().setAccepted(true);
//   send(f.encode());
// Neither copyable nor movable (the root points into the message); newFrame() returns it
// through guaranteed copy elision.
//
// FrameScratch: a zeroed first segment reused by the frames a hot loop builds one after another
// (dispatch batches, job acknowledgements and results). A fresh MallocMessageBuilder callocs and
// zeroes its first segment per frame (8 KiB by default, 64 KiB for batches); with the scratch the
// builder re-zeroes only the words it used and mallocs only when a frame outgrows it. Owned by
// one thread. A frame built while another holds the scratch falls back to a fresh segment.
// The scratch starts at the size a fresh builder would take and grows (up to `max_words`) to the
// largest frame built on it, so a process or test that never builds a big frame never allocates
// and zeroes a big segment (the frame fuzzer builds a core per input: 2 x 512 KiB of page
// faults per input were a quarter of its time).
struct NewFrame;
class FrameScratch {
 public:
  explicit FrameScratch(size_t max_words = 64 * 1024,
                        size_t initial_words = capnp::SUGGESTED_FIRST_SEGMENT_WORDS)
      : size_(std::min(initial_words, max_words)),
        max_(max_words),
        words_(new capnp::word[size_]()) {}
  FrameScratch(const FrameScratch&) = delete;
  FrameScratch& operator=(const FrameScratch&) = delete;
  size_t words() const { return size_; }  // current size of the first segment

 private:
  friend struct NewFrame;
  kj::ArrayPtr<capnp::word> claim(NewFrame& frame);
  size_t size_;
  size_t max_;
  size_t want_ = 0;  // words of the largest frame that outgrew the scratch (grown at claim)
  std::unique_ptr<capnp::word[]> words_;
  bool in_use_ = false;
};

struct NewFrame {
  explicit NewFrame(unsigned first_segment_words);
  explicit NewFrame(FrameScratch& scratch);
  ~NewFrame();
  NewFrame(const NewFrame&) = delete;
  NewFrame& operator=(const NewFrame&) = delete;

  std::string encode() { return encodeFrame(message); }

  FrameScratch* scratch = nullptr;     // released when this frame is destroyed
  std::unique_ptr<capnp::word[]> own;  // first segment when the scratch was busy
  capnp::MallocMessageBuilder message;
  wire::Frame::Builder root;
};
// `first_segment_words` sizes the first segment (big batches want more than the default).
inline NewFrame newFrame(unsigned first_segment_words = capnp::SUGGESTED_FIRST_SEGMENT_WORDS) {
  return NewFrame(first_segment_words);
}
// The first segment is `scratch` (see FrameScratch).
inline NewFrame newFrame(FrameScratch& scratch) { return NewFrame(scratch); }

// Value and spec conversions.
void toWire(const Value& v, wire::Value::Builder out);
Value fromWire(wire::Value::Reader in);

// Packed result blocks (ResultBatch.packed, docs/wire-protocol.md "Packed results").
// The flags byte of a Dec50 in the `decs` columns: bit 0 negative, bits 1-2 kind.
inline uint8_t packedDecFlags(const Dec50& d) {
  return static_cast<uint8_t>((d.negative ? 1 : 0) | ((d.kind & 3) << 1));
}
// The columns of a `decs` group, each read once: every get of a list pointer counts the whole
// list against the frame's traversal limit, so a per-value getLimbs() would make reading a
// block quadratic (and trip the limit past a few dozen values).
struct PackedDecColumns {
  explicit PackedDecColumns(wire::PackedResults::Decs::Reader decs)
      : limbs(decs.getLimbs()), exponents(decs.getExponents()), flags(decs.getFlags()) {}
  explicit PackedDecColumns(wire::PackedResults::Decs::Builder decs)
      : PackedDecColumns(decs.asReader()) {}
  capnp::List<uint64_t>::Reader limbs;
  capnp::List<int32_t>::Reader exponents;
  capnp::List<uint8_t>::Reader flags;
  // The Dec50 at entry `i` of a group that packedResultCount() accepted.
  Dec50 at(unsigned i) const {
    Dec50 x;
    x.limbs[0] = limbs[3 * i];
    x.limbs[1] = limbs[3 * i + 1];
    x.limbs[2] = limbs[3 * i + 2];
    x.exponent = exponents[i];
    x.negative = (flags[i] & 1) != 0;
    x.kind = static_cast<uint8_t>((flags[i] >> 1) & 3);
    return x;
  }
};
// Writes `d` as entry `i` of a `decs` group's columns (each holding at least i + 1 values).
struct PackedDecWriter {
  explicit PackedDecWriter(wire::PackedResults::Decs::Builder decs)
      : limbs(decs.getLimbs()), exponents(decs.getExponents()), flags(decs.getFlags()) {}
  capnp::List<uint64_t>::Builder limbs;
  capnp::List<int32_t>::Builder exponents;
  capnp::List<uint8_t>::Builder flags;
  void set(unsigned i, const Dec50& d) {
    limbs.set(3 * i, d.limbs[0]);
    limbs.set(3 * i + 1, d.limbs[1]);
    limbs.set(3 * i + 2, d.limbs[2]);
    exponents.set(i, d.exponent);
    flags.set(i, packedDecFlags(d));
  }
};
// The number of results in a packed result block, or InvalidArgument naming what is wrong: an
// unknown value kind, columns of unequal lengths (`decs.limbs` holds 3 per result), or a Dec
// flags byte with a bit above bit 2 set. Reads each column's length once and the flags column
// (one byte per result) once.
StatusOr<size_t> packedResultCount(wire::PackedResults::Reader blk);
void toWire(const JobSpec& job, wire::JobSpec::Builder out);
StatusOr<JobSpec> fromWire(wire::JobSpec::Reader in);
// A whole SubmitJob frame (tests, benchmarks and tools that speak the wire directly); `watch`
// asks for progress and the result on this connection (true, as the schema's default);
// `ack_with_result` sets SubmitJob.ackWithResult (a watched job that finishes within the
// coordinator's ack hold gets only its JobDone, carrying `request_id`).
std::string submitJobFrame(const JobSpec& job, uint64_t request_id, bool watch = true,
                           bool ack_with_result = false);
void toWire(const Status& s, wire::Error::Builder out);
Status fromWire(wire::Error::Reader in);

inline wire::Weight toWire(Weight w) { return static_cast<wire::Weight>(w); }
inline Weight fromWire(wire::Weight w) {
  auto raw = static_cast<uint16_t>(w);
  return raw <= 3 ? static_cast<Weight>(raw) : Weight::kUnspecified;
}

}  // namespace tokengate
