#!/usr/bin/env bash
# Gateway end-to-end tests: Python websockets client, headless Chromium page
# test, Prometheus scrape, and the 500-watcher load test (its JSON figures go
# to build/artifacts/gateway-load.json).
#
#   tests/gateway/run.sh [ws|browser|prometheus|promtool|docs|attack|load|all]   (default: all)
#
# promtool: `promtool check metrics` on a live /metrics; docs: the examples of
# docs/protocol.md against the live gateway; attack: the lock-out and memory
# attacks of docs/protocol.md ("Limits"), figures to build/artifacts/gateway-attack.json.
#
# Each test gets a fresh gateway from cluster.py: the real coordinator + nodes
# when build/dev has them (TG_BUILD_DIR to change), else tokengate-gateway-fake;
# force with TG_GATEWAY_MODE=real|fake, or point at a running gateway with
# TG_GATEWAY_URL + TG_GATEWAY_TOKEN. Needs: python3-websockets, chromium,
# prometheus, node/npm (all from scripts/install-deps.sh). Screenshots and logs go
# to build/artifacts/. Exits non-zero if any test fails.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# Debian's python3 has python3-websockets; a pyenv python on PATH may not.
PY=${PYTHON:-/usr/bin/python3}
[[ -x $PY ]] || PY=python3

tests=("$@")
[[ ${#tests[@]} -eq 0 ]] && tests=(all)
[[ ${tests[0]} == all ]] && tests=(ws browser prometheus promtool docs attack load)

failed=()
for t in "${tests[@]}"; do
  echo "=== gateway test: $t"
  case $t in
    ws) $PY cluster.py -- $PY ws_client_test.py ;;
    browser)
      if [[ ! -d node_modules/playwright-core ]]; then
        npm ci --no-audit --no-fund >/dev/null || { failed+=("$t (npm ci)"); continue; }
      fi
      $PY cluster.py -- node browser_test.mjs ;;
    prometheus) $PY cluster.py -- $PY prometheus_test.py ;;
    promtool) $PY cluster.py -- ./promtool_check.sh ;;
    docs) $PY cluster.py -- $PY doc_examples_test.py ;;
    attack)
      mkdir -p ../../build/artifacts
      $PY cluster.py -- $PY attack_test.py | tee ../../build/artifacts/gateway-attack.json ;;
    load)
      mkdir -p ../../build/artifacts
      # 500 watchers share one source address: lift the per-address command rate (the
      # attack test covers it); every other limit stays at its default.
      # shellcheck disable=SC2086 # TG_LOAD_ARGS is a word list on purpose
      TG_GATEWAY_IP_COMMANDS_PER_S=0 $PY cluster.py -- $PY load_test.py ${TG_LOAD_ARGS:-} \
        | tee ../../build/artifacts/gateway-load.json ;;
    *) echo "unknown test '$t'"; false ;;
  esac
  rc=$?
  [[ $rc -ne 0 ]] && failed+=("$t")
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "gateway tests FAILED: ${failed[*]}"
  exit 1
fi
echo "gateway tests passed: ${tests[*]}"
