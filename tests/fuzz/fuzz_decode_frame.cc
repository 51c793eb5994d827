// libFuzzer target: the decode boundary every peer's frame crosses
// (common/wire decodeFrame) and the shared codecs behind it: job specs
// (SubmitJob), values and errors (results, welcome, reject). Input: one frame.
#include <kj/exception.h>

#include <cstddef>
#include <cstdint>

#include "common/wire.h"

using namespace tokengate;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = decodeFrame(data, size, 1 << 20);
  if (!decoded.ok()) return 0;
  // Typed reads may still throw (common/wire.h): every consumer catches kj::Exception around its
  // handlers, so this target does too; anything else (a crash, a sanitizer report, another
  // exception) is a finding.
  try {
    auto f = (*decoded)->root();
    switch (f.which()) {
      case wire::Frame::SUBMIT_JOB: {
        auto spec = fromWire(f.getSubmitJob().getJob());
        if (spec.ok()) (void)spec->validate(1 << 20, 1 << 20);
        break;
      }
      case wire::Frame::RESULT_BATCH:
        for (auto r : f.getResultBatch().getResults()) {
          if (r.isValue())
            (void)fromWire(r.getValue()).byteSize();
          else if (r.isError())
            (void)fromWire(r.getError());
        }
        break;
      case wire::Frame::TOKEN_BATCH:
        for (auto t : f.getTokenBatch().getTokens())
          for (auto a : t.getArgs()) (void)fromWire(a);
        break;
      case wire::Frame::WELCOME:
        if (f.getWelcome().hasError()) (void)fromWire(f.getWelcome().getError());
        break;
      case wire::Frame::REJECT:
        (void)fromWire(f.getReject().getError());
        break;
      default:
        break;
    }
  } catch (const kj::Exception&) {
  }
  return 0;
}
