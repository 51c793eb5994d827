#!/usr/bin/env bash
# Deployment tests (issue 5), called from .ci/run: static checks of docker/, helm/, grafana/;
# then the real container test (Debian docker.io + docker-compose, local bookworm base image,
# compose cluster, Leibniz job with a node killed, dashboards against a live Prometheus).
# Prints PASS/FAIL lines and ends with "N passed, M failed"; exits non-zero on any failure.
#
# Env: TG_DEPLOY_STATIC_ONLY=1 skips the container test (for quick local runs only; CI runs
# everything). TG_BUILD_DIR: a host build tree whose tgctl is used if present.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
source tests/deploy/lib/common.sh
start=$(date +%s)

# --- Tools (Debian packages from scripts/install-deps.sh --deploy; npm packages pinned by
# tests/deploy/package-lock.json). A failed install shows here; the checks needing it then FAIL.
bash scripts/install-deps.sh --deploy >"$TG_OUT/apt.log" 2>&1 || tail -20 "$TG_OUT/apt.log"
# Debian's prometheus package starts a service on :9090 we do not use.
systemctl disable --now prometheus >/dev/null 2>&1 || true
tg_check "npm ci (tests/deploy)" tg_npm_ci

run_part() { # SCRIPT: run it, show its lines, add its counts
  local out t0=$SECONDS
  out=$TG_OUT/$(basename "$1" .sh).out
  "$@" >"$out" 2>&1
  grep -vE ' passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$out"
  TG_PASSED=$((TG_PASSED + $(grep -c '^PASS ' "$out")))
  TG_FAILED=$((TG_FAILED + $(grep -c '^FAIL ' "$out")))
  TG_SKIPPED=$((TG_SKIPPED + $(grep -c '^SKIP ' "$out")))
  echo "--- $(basename "$1") took $((SECONDS - t0))s"
}

run_part tests/deploy/static-checks.sh
run_part tests/deploy/helm-curve-run.sh
if [[ "${TG_DEPLOY_STATIC_ONLY:-0}" == 1 && "${CI:-}" != true ]]; then
  echo "note: TG_DEPLOY_STATIC_ONLY=1: container test not run"
else
  run_part tests/deploy/container-test.sh
fi

echo "deploy-tests: $(($(date +%s) - start))s in all"
tg_summary
