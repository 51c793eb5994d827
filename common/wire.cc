#include "common/wire.h"

#include <fmt/format.h>
#include <kj/exception.h>

#include <cstring>

namespace tokengate {

StatusOr<std::unique_ptr<DecodedFrame>> decodeFrameImpl(const void* data, size_t size,
                                                        size_t max_bytes, FrameCheck check,
                                                        bool borrow) {
  if (size > max_bytes)
    return absl::ResourceExhaustedError(
        fmt::format("frame of {} bytes exceeds the {} byte limit", size, max_bytes));
  if (size == 0 || size % sizeof(capnp::word) != 0)
    return absl::InvalidArgumentError(
        fmt::format("frame of {} bytes is not a whole number of words", size));
  auto frame = std::unique_ptr<DecodedFrame>(new DecodedFrame());
  kj::ArrayPtr<const capnp::word> words;
  if (borrow && reinterpret_cast<uintptr_t>(data) % alignof(capnp::word) == 0) {
    words = kj::arrayPtr(static_cast<const capnp::word*>(data), size / sizeof(capnp::word));
  } else {
    frame->words_ = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
    std::memcpy(frame->words_.begin(), data, size);
    words = frame->words_;
  }
  frame->size_ = size;
  try {
    capnp::ReaderOptions options;
    // Bounds read amplification (pointer loops, shared subtrees) at a small multiple of the
    // frame: totalSize() below reads everything once and handlers read lists and values
    // again (a result batch: its results, their values, the returned list). 2x was too tight:
    // a node's hand-back batch of dec50 results tripped it mid-way through onResults.
    options.traversalLimitInWords = size / sizeof(capnp::word) * 8 + 64;
    options.nestingLimit = 16 + 2 * kMaxListDepth;  // list values nest (common/value.h)
    frame->reader_ = std::make_unique<capnp::FlatArrayMessageReader>(words, options);
    auto root = frame->reader_->getRoot<wire::Frame>();
    if (check == FrameCheck::kFull)
      (void)root.totalSize();  // walks every pointer: malformed input throws here
    if (root.getVersion() != kProtocolVersion)
      return absl::InvalidArgumentError(
          fmt::format("protocol version {} not supported (this peer speaks {})", root.getVersion(),
                      kProtocolVersion));
    frame->root_ = root;
  } catch (const kj::Exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("malformed frame: {}", e.getDescription().cStr()));
  }
  return frame;
}

StatusOr<std::unique_ptr<DecodedFrame>> decodeFrame(const void* data, size_t size, size_t max_bytes,
                                                    FrameCheck check) {
  return decodeFrameImpl(data, size, max_bytes, check, false);
}

StatusOr<std::unique_ptr<DecodedFrame>> decodeFrameBorrowed(const void* data, size_t size,
                                                            size_t max_bytes, FrameCheck check) {
  return decodeFrameImpl(data, size, max_bytes, check, true);
}

NewFrame::NewFrame(unsigned first_segment_words)
    : message(first_segment_words), root(message.initRoot<wire::Frame>()) {
  root.setVersion(kProtocolVersion);
}

kj::ArrayPtr<capnp::word> FrameScratch::claim(NewFrame& frame) {
  if (in_use_) {  // a frame built while another holds the scratch: a fresh zeroed segment
    frame.own.reset(new capnp::word[capnp::SUGGESTED_FIRST_SEGMENT_WORDS]());
    return kj::arrayPtr(frame.own.get(), capnp::SUGGESTED_FIRST_SEGMENT_WORDS);
  }
  in_use_ = true;
  frame.scratch = this;
  if (want_ > size_ && size_ < max_) {  // a frame outgrew it: grow (not in use, nothing to keep)
    size_ = std::min(std::max(want_, 2 * size_), max_);
    words_.reset(new capnp::word[size_]());
  }
  return kj::arrayPtr(words_.get(), size_);
}

NewFrame::NewFrame(FrameScratch& s)
    : message(s.claim(*this)), root(message.initRoot<wire::Frame>()) {
  root.setVersion(kProtocolVersion);
}

// The message (a member) is destroyed after this body and re-zeroes the scratch words it used;
// the scratch is free again for the next frame of the same thread.
NewFrame::~NewFrame() {
  if (!scratch) return;
  if (auto segments = message.getSegmentsForOutput(); segments.size() > 1) {
    size_t words = 0;
    for (const auto& seg : segments) words += seg.size();
    scratch->want_ = std::max(scratch->want_, words);
  }
  scratch->in_use_ = false;
}

std::string encodeFrame(capnp::MessageBuilder& message) {
  // capnp's standard framing (capnp::writeMessage): a table of (segment count - 1, each
  // segment's size in words) padded to whole words, then the segments. Appended into reserved
  // space rather than resize()+write, which zero-filled every frame before overwriting it.
  auto segments = message.getSegmentsForOutput();
  const size_t count = segments.size();
  const size_t table_words = count / 2 + 1;
  size_t words = table_words;
  for (const auto& seg : segments) words += seg.size();
  std::string out;
  out.reserve(words * sizeof(capnp::word));
  uint32_t table[2 * 16];  // a frame of more segments takes the general path below
  if (count <= 2 * 16 - 1) {
    table[0] = static_cast<uint32_t>(count - 1);
    for (size_t i = 0; i < count; ++i) table[i + 1] = static_cast<uint32_t>(segments[i].size());
    if (count % 2 == 0) table[count + 1] = 0;
    out.append(reinterpret_cast<const char*>(table), table_words * sizeof(capnp::word));
    for (const auto& seg : segments)
      out.append(reinterpret_cast<const char*>(seg.begin()), seg.size() * sizeof(capnp::word));
    return out;
  }
  out.resize(words * sizeof(capnp::word));
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(out.data()), out.size()));
  capnp::writeMessage(stream, segments);
  return out;
}

void toWire(const Value& v, wire::Value::Builder out) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Null>) {
          out.setNull();
        } else if constexpr (std::is_same_v<T, int64_t>) {
          out.setInt(x);
        } else if constexpr (std::is_same_v<T, double>) {
          out.setFloat(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          out.setText(x);
        } else if constexpr (std::is_same_v<T, Bytes>) {
          out.setData(
              kj::arrayPtr(reinterpret_cast<const kj::byte*>(x.data.data()), x.data.size()));
        } else if constexpr (std::is_same_v<T, bool>) {
          out.setBool(x);
        } else if constexpr (std::is_same_v<T, List>) {
          auto items = out.initList(static_cast<unsigned>(x.items.size()));
          for (unsigned i = 0; i < x.items.size(); ++i) toWire(x.items[i], items[i]);
        } else if constexpr (std::is_same_v<T, I64s>) {
          out.setI64s(kj::arrayPtr(x.items.data(), x.items.size()));
        } else if constexpr (std::is_same_v<T, F64s>) {
          out.setF64s(kj::arrayPtr(x.items.data(), x.items.size()));
        } else {
          auto d = out.initDec();
          d.setLimb0(x.limbs[0]);
          d.setLimb1(x.limbs[1]);
          d.setLimb2(x.limbs[2]);
          d.setExponent(x.exponent);
          d.setNegative(x.negative);
          d.setKind(x.kind);
        }
      },
      v.variant());
}

StatusOr<size_t> packedResultCount(wire::PackedResults::Reader blk) {
  const size_t n = blk.getIds().size();
  size_t values = 0;
  switch (blk.which()) {
    case wire::PackedResults::F64S:
      values = blk.getF64s().size();
      break;
    case wire::PackedResults::I64S:
      values = blk.getI64s().size();
      break;
    case wire::PackedResults::DECS: {
      auto decs = blk.getDecs();
      const auto flags = decs.getFlags();
      if (decs.getLimbs().size() != 3 * n || decs.getExponents().size() != n || flags.size() != n)
        return absl::InvalidArgumentError(fmt::format(
            "packed Dec50 result block: {} ids but {} limbs (want 3 each), {} exponents, {} flags",
            n, decs.getLimbs().size(), decs.getExponents().size(), flags.size()));
      for (unsigned i = 0; i < n; ++i)
        if ((flags[i] & ~uint8_t{7}) != 0)
          return absl::InvalidArgumentError(
              fmt::format("packed Dec50 result block: flags {:#x} of result {} has unknown bits",
                          static_cast<unsigned>(flags[i]), i));
      values = n;
      break;
    }
    default:
      return absl::InvalidArgumentError(fmt::format("packed result block of unknown value kind {}",
                                                    static_cast<unsigned>(blk.which())));
  }
  if (blk.getAttempts().size() != n || blk.getRunNs().size() != n || blk.getQueueNs().size() != n ||
      values != n)
    return absl::InvalidArgumentError(fmt::format(
        "packed result block with columns of unequal lengths: {} ids, {} attempts, {} runNs, {} "
        "queueNs, {} values",
        n, blk.getAttempts().size(), blk.getRunNs().size(), blk.getQueueNs().size(), values));
  return n;
}

Value fromWire(wire::Value::Reader in) {
  switch (in.which()) {
    case wire::Value::INT:
      return Value(static_cast<int64_t>(in.getInt()));
    case wire::Value::FLOAT:
      return Value(in.getFloat());
    case wire::Value::TEXT: {
      auto t = in.getText();
      return Value(std::string(t.begin(), t.size()));
    }
    case wire::Value::DATA: {
      auto d = in.getData();
      return Value(Bytes{std::string(reinterpret_cast<const char*>(d.begin()), d.size())});
    }
    case wire::Value::DEC: {
      auto d = in.getDec();
      Dec50 x;
      x.limbs[0] = d.getLimb0();
      x.limbs[1] = d.getLimb1();
      x.limbs[2] = d.getLimb2();
      x.exponent = d.getExponent();
      x.negative = d.getNegative();
      x.kind = d.getKind() > 3 ? 3 : d.getKind();
      return Value(x);
    }
    case wire::Value::BOOL:
      return Value(in.getBool());
    case wire::Value::LIST: {
      // Depth is bounded by decodeFrame's nesting limit (every decoded frame) and by
      // valueFromJson / checkValue before anything is sent.
      auto items = in.getList();
      List out;
      out.items.reserve(items.size());
      for (auto item : items) out.items.push_back(fromWire(item));
      return Value(std::move(out));
    }
    case wire::Value::I64S: {
      auto items = in.getI64s();
      I64s out;
      out.items.reserve(items.size());
      for (int64_t x : items) out.items.push_back(x);
      return Value(std::move(out));
    }
    case wire::Value::F64S: {
      auto items = in.getF64s();
      F64s out;
      out.items.reserve(items.size());
      for (double x : items) out.items.push_back(x);
      return Value(std::move(out));
    }
    case wire::Value::NULL_:
    default:
      return Value();
  }
}

void toWire(const JobSpec& job, wire::JobSpec::Builder out) {
  out.setName(job.name);
  out.setVerifyPct(job.verify_pct);
  auto tokens = out.initTokens(static_cast<unsigned>(job.tokens.size()));
  for (size_t i = 0; i < job.tokens.size(); ++i) {
    const auto& t = job.tokens[i];
    auto b = tokens[static_cast<unsigned>(i)];
    b.setOp(t.op);
    b.setWeight(toWire(t.weight));
    b.setIdempotencyKey(t.idempotency_key);
    b.setDeadlineMs(t.deadline_ms);
    b.setRunTimeoutMs(t.run_timeout_ms);
    b.setMaxAttempts(t.max_attempts);
    b.setRepeat(t.repeat);
    b.setOutput(t.output);
    b.setName(t.name);
    auto args = b.initArgs(static_cast<unsigned>(t.args.size()));
    for (size_t a = 0; a < t.args.size(); ++a) {
      const auto& arg = t.args[a];
      auto ab = args[static_cast<unsigned>(a)];
      ab.setStep(arg.step);
      switch (arg.kind) {
        case Arg::Kind::kValue:
          toWire(arg.value, ab.initValue());
          break;
        case Arg::Kind::kRef:
          ab.setRef(arg.start);
          break;
        case Arg::Kind::kRefRange: {
          auto r = ab.initRefRange();
          r.setStart(arg.start);
          r.setCount(arg.count);
          break;
        }
      }
    }
  }
}

std::string submitJobFrame(const JobSpec& job, uint64_t request_id, bool watch,
                           bool ack_with_result) {
  auto msg = newFrame();
  auto s = msg.root.initSubmitJob();
  s.setRequestId(request_id);
  s.setWatch(watch);
  s.setAckWithResult(ack_with_result);
  toWire(job, s.initJob());
  return msg.encode();
}

StatusOr<JobSpec> fromWire(wire::JobSpec::Reader in) {
  JobSpec job;
  job.name = in.getName().cStr();
  job.verify_pct = in.getVerifyPct();
  for (auto t : in.getTokens()) {
    TokenSpec s;
    s.op = t.getOp().cStr();
    s.weight = fromWire(t.getWeight());
    s.idempotency_key = t.getIdempotencyKey().cStr();
    s.deadline_ms = t.getDeadlineMs();
    s.run_timeout_ms = t.getRunTimeoutMs();
    s.max_attempts = t.getMaxAttempts();
    s.repeat = t.getRepeat();
    s.output = t.getOutput();
    s.name = t.getName().cStr();
    for (auto a : t.getArgs()) {
      Arg arg;
      arg.step = a.getStep();
      switch (a.which()) {
        case wire::Arg::VALUE:
          arg.value = fromWire(a.getValue());
          break;
        case wire::Arg::REF:
          arg.kind = Arg::Kind::kRef;
          arg.start = a.getRef();
          break;
        case wire::Arg::REF_RANGE:
          arg.kind = Arg::Kind::kRefRange;
          arg.start = a.getRefRange().getStart();
          arg.count = a.getRefRange().getCount();
          break;
        default:
          return absl::InvalidArgumentError("unknown argument kind");
      }
      s.args.push_back(std::move(arg));
    }
    job.tokens.push_back(std::move(s));
  }
  return job;
}

void toWire(const Status& s, wire::Error::Builder out) {
  out.setCode(static_cast<uint8_t>(s.code()));
  out.setMessage(std::string(s.message()));
}

Status fromWire(wire::Error::Reader in) {
  auto code = in.getCode() > 16 ? StatusCode::kUnknown : static_cast<StatusCode>(in.getCode());
  if (code == StatusCode::kOk) code = StatusCode::kUnknown;
  return Status(code, in.getMessage().cStr());
}

}  // namespace tokengate
