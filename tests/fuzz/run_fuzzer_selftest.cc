// run_fuzzer.sh's own test (tests/fuzz/CMakeLists.txt, ctest run_fuzzer_reports_findings): a
// target that aborts 60 calls deep on inputs starting with "crash", so the console form must
// show the report with a shortened stack and the finding in base64.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {
volatile int sink = 0;
__attribute__((noinline)) int deep(int n) {
  if (n == 0) std::abort();
  sink = n;
  return deep(n - 1) + sink;  // not a tail call: every level stays on the stack
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= 5 && std::memcmp(data, "crash", 5) == 0) return deep(60);
  return 0;
}
