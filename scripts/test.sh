#!/usr/bin/env bash
# The whole test suite, as CI runs it (README: "run the tests").
#   1. release build (warnings as errors) + every ctest test: unit, integration with real
#      processes, gateway end-to-end (Python websockets, headless Chromium, Prometheus),
#      and the deployment tests (Docker images, compose, Helm, Grafana);
#   2. AddressSanitizer + UBSan build running the unit and integration tests.
#   3. the libFuzzer targets (tests/fuzz), each run for TG_FUZZ_SECONDS (CMake cache, 60 s).
# TG_SKIP_ASAN=1 / TG_SKIP_DEPLOY=1 / TG_SKIP_FUZZ=1 skip parts for quick local runs (CI runs everything).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${TG_SKIP_DEPLOY:-0}" == 1 ]]; then
  scripts/install-deps.sh
else
  scripts/install-deps.sh --deploy
fi

jobs=${TG_JOBS:-$(nproc)}
# ccache hits across clones in different folders (CI uses a fresh clone each run).
export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
status=0

echo "== release build"
cmake --preset release -DTG_BUILD_TESTS=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build --preset release -j "$jobs"
excl=()
[[ "${TG_SKIP_DEPLOY:-0}" == 1 ]] && excl=(-LE deploy)
echo "== tests (release)"
ctest --preset release -j 1 "${excl[@]}" || status=1

if [[ "${TG_SKIP_ASAN:-0}" != 1 ]]; then
  echo "== asan+ubsan build"
  cmake --preset asan -DTG_BUILD_TESTS=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
  cmake --build --preset asan -j "$jobs"
  echo "== tests (asan+ubsan: unit and integration)"
  ctest --preset asan -j 1 -LE "e2e|deploy" || status=1
fi
if [[ "${TG_SKIP_FUZZ:-0}" != 1 ]]; then
  echo "== fuzz targets (clang-14 libFuzzer + ASan, bounded runs over the seed corpora)"
  cmake --preset fuzz -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
  cmake --build --preset fuzz -j "$jobs" --target tg_fuzzers
  ctest --preset fuzz -j 1 || status=1
fi
exit $status
