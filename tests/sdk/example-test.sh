#!/usr/bin/env bash
# The SDK end to end (issue 15 items 1-2): `cmake --install --strip` of this build tree into a
# temporary prefix; checks of what is installed (headers, static libraries, CMake package with
# version file, pkg-config files, stripped binaries); examples/custom_node configured and built
# as its own project with find_package(TokenGate) against that prefix (and once more with
# pkg-config alone); then a job using the example's operations on a local coordinator + the
# example node, the node's health file (standard main), and its SIGTERM drain (exit 0).
#
# Env: TG_BUILD_DIR (set by ctest): the built TokenGate tree to install.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${TG_BUILD_DIR:?TG_BUILD_DIR must name a built TokenGate tree}
work=$(mktemp -d /tmp/tg-sdk-test.XXXXXX)
prefix=$work/prefix
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ "${TG_KEEP:-0}" == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT
failed=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failed=1; }
check() { local name=$1; shift; if "$@" >"$work/check.log" 2>&1; then pass "$name"; else fail "$name"; tail -20 "$work/check.log"; fi; }

# --- install ----------------------------------------------------------------------------------
cmake --install "$build" --prefix "$prefix" --strip >"$work/install.log"
for f in include/tokengate/node/registry/registry.h include/tokengate/node/app/node_main.h \
         include/tokengate/client/client.h include/tokengate/common/value.h \
         include/tokengate/tokengate.capnp.h share/tokengate/tokengate.capnp \
         lib/libtg_node_link.a lib/libtg_node_main.a lib/libtg_client.a \
         lib/cmake/TokenGate/TokenGateConfig.cmake lib/cmake/TokenGate/TokenGateConfigVersion.cmake \
         lib/cmake/TokenGate/TokenGateTargets.cmake lib/cmake/TokenGate/TokenGateNode.cmake \
         lib/pkgconfig/tokengate-node.pc lib/pkgconfig/tokengate-client.pc; do
  check "installed $f" test -s "$prefix/$f"
done
not_debug() { ! readelf -S "$1" | grep -Eq '\.(symtab|debug_info)'; }
for b in tokengate-coordinator tokengate-node tgctl; do
  check "bin/$b is stripped (no .symtab/.debug_info)" not_debug "$prefix/bin/$b"
done
check "pkg-config files name the install prefix" grep -qx "prefix=$prefix" "$prefix/lib/pkgconfig/tokengate-node.pc"
# The node SDK must not drag in the coordinator's dependencies.
no_heavy_deps() { ! grep -Eiq 'xgboost|prometheus|OpenSSL|Boost::beast|tg_coordinator' "$prefix"/lib/cmake/TokenGate/TokenGateTargets.cmake; }
check "exported targets need no xgboost/prometheus/OpenSSL/Beast" no_heavy_deps

# --- the example as its own project -----------------------------------------------------------
check "example configures with find_package(TokenGate) against the prefix" \
  cmake -S "$src/examples/custom_node" -B "$work/example" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_INSTALL_PREFIX="$work/example-prefix"
check "example builds" cmake --build "$work/example"
check "example installs (stripped)" cmake --install "$work/example" --strip
check "a request for an incompatible version fails" sh -c "
  mkdir -p '$work/v2' && printf 'cmake_minimum_required(VERSION 3.25)\nproject(v LANGUAGES C CXX)\nfind_package(TokenGate 1.0 REQUIRED)\n' >'$work/v2/CMakeLists.txt' &&
  ! cmake -S '$work/v2' -B '$work/v2/b' -DCMAKE_PREFIX_PATH='$prefix'"
check "example links with pkg-config alone" sh -c "
  PKG_CONFIG_PATH='$prefix/lib/pkgconfig' g++ -O1 -o '$work/pc-node' \
    '$src/examples/custom_node/word_ops.cc' '$src/examples/custom_node/stats_ops.cc' '$src/examples/custom_node/matrix_ops.cc' \
    \$(PKG_CONFIG_PATH='$prefix/lib/pkgconfig' pkg-config --cflags --libs tokengate-node)"
node_bin=$work/example-prefix/bin/tokengate-custom-node
check "example node --help shows the standard flags" sh -c "'$node_bin' --help | grep -q -- --health-file"

# --- a job on a local coordinator + the example node -------------------------------------------
# With CURVE, as by default (docs/security.md): throw-away keys, found via TG_CURVE_DIR.
"$prefix/bin/tgctl" keys init --out "$work/keys" >/dev/null || { echo "FAIL tgctl keys init"; exit 1; }
export TG_CURVE_DIR=$work/keys
"$prefix/bin/tokengate-coordinator" --listen tcp://127.0.0.1:0 --ready-file "$work/ready" \
  --log-level warn >"$work/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/ready ]] && break; sleep 0.1; done
endpoint=$(awk '$1 == "wire" { print $2 }' "$work/ready" 2>/dev/null || true)
check "coordinator is up (ready file)" test -n "$endpoint"
TG_COORDINATOR=$endpoint "$node_bin" --id example-1 --health-file "$work/health" \
  --log-level warn >"$work/node.log" 2>&1 &
node_pid=$!
pids+=($node_pid)
tgctl=("$prefix/bin/tgctl" -c "$endpoint" --timeout 60)
check "example node joins" "${tgctl[@]}" info --wait-nodes 1
"${tgctl[@]}" --json submit "$src/examples/custom_node/job.json" >"$work/result.json" 2>"$work/submit.err" || true
check "job with the example's operations succeeds" grep -q '"state":"succeeded"' "$work/result.json"
check "words.total = 4 + 5 + 3" grep -q '"name":"total","value":12' "$work/result.json"
check "stats.summary over the counts" grep -q 'n=3 min=3 max=5 mean=4 ' "$work/result.json"
check "matrix.mul over list values" grep -q '"name":"product","value":\[\[19,22\],\[43,50\]\]' "$work/result.json"
check "matrix.mul over packed f64s rows" grep -q '"name":"packed_product","value":\[{"f64s":\[2.15E1,2.5E1\]},{"f64s":\[4.3E1,5E1\]}\]' "$work/result.json"
check "the standard main writes the health file (ready)" \
  "$node_bin" --check-health "$work/health" --max-age-s 15 --ready
kill -TERM "$node_pid"
rc=0
wait "$node_pid" || rc=$?
check "SIGTERM: the example node drains and exits 0" test "$rc" -eq 0
[[ $failed == 0 ]] || { cat "$work/result.json" "$work/submit.err" "$work/node.log" 2>/dev/null | tail -30; }
echo "example-test: $([[ $failed == 0 ]] && echo passed || echo FAILED)"
exit $failed
