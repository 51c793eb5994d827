#!/usr/bin/env bash
# Every dashboard panel query, evaluated by a real Prometheus (Debian's package) scraping a
# running TokenGate cluster, returns data.
#   --target HOST:PORT --token T --ws URL   scrape an existing cluster (the container test's)
#   (no --target)                           start coordinator + 3 nodes from $TG_BUILD_DIR
#                                           (default build/release) on loopback and use those
# Drives a workload first so every family has samples: a Leibniz job with a node killed
# mid-way (retries, dead node), a job that fails (failure codes), and more jobs for the cost
# model. Prometheus scrapes every second; its data lives in a temp dir removed at exit.
set -uo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$TG_ROOT" || exit 1

TARGET="" TOKEN="${TG_GATEWAY_TOKEN:-}" WS=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --target) TARGET=$2; shift 2 ;;
    --token) TOKEN=$2; shift 2 ;;
    --ws) WS=$2; shift 2 ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done

work=$(mktemp -d /tmp/tg-dash.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

node_pids=()
if [[ -z $TARGET ]]; then
  BIN=${TG_BUILD_DIR:-build/release}
  for b in bin/tokengate-coordinator bin/tokengate-node; do
    [[ -x $BIN/$b ]] || { tg_fail "built binaries present in $BIN ($b)"; tg_summary; exit 1; }
  done
  wire=$(free_port) gw=$(free_port)
  TOKEN=${TOKEN:-live-$RANDOM$RANDOM}
  # CURVE on, as deployed: throw-away keys in the `tgctl keys init` layout.
  "$BIN/bin/tgctl" keys init --out "$work/keys" >/dev/null
  TG_GATEWAY_TOKEN=$TOKEN "$BIN/bin/tokengate-coordinator" --listen "tcp://127.0.0.1:$wire" \
    --gateway "127.0.0.1:$gw" --scheduler xgboost --journal "$work/jobs.journal" \
    --curve-dir "$work/keys" \
    >"$TG_OUT/live-coordinator.log" 2>&1 &
  pids+=($!)
  for i in 1 2 3; do
    "$BIN/bin/tokengate-node" --coordinator "tcp://127.0.0.1:$wire" --id "live-$i" --enable-test-ops \
      --curve-dir "$work/keys" \
      >"$TG_OUT/live-node-$i.log" 2>&1 &
    pids+=($!) node_pids+=($!)
  done
  TARGET=127.0.0.1:$gw WS=ws://127.0.0.1:$gw/ws
  for _ in $(seq 30); do curl -fsS "http://$TARGET/readyz" >/dev/null 2>&1 && break; sleep 1; done
fi

# --- Prometheus -------------------------------------------------------------------------------
prom_port=$(free_port)
cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: tokengate
    authorization: {credentials: "$TOKEN"}
    static_configs: [{targets: ["$TARGET"]}]
YAML
tg_check "promtool check config (live scrape config)" promtool check config "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$TG_OUT/prometheus.log" 2>&1 &
pids+=($!)
PROM=http://127.0.0.1:$prom_port
up_query() { curl -fsS "$PROM/api/v1/query?query=up" 2>/dev/null | grep -q '"value":\[[0-9.]*,"1"\]'; }
ok=0
for _ in $(seq 30); do up_query && { ok=1; break; }; sleep 1; done
if [[ $ok == 1 ]]; then tg_pass "Prometheus scrapes the coordinator's /metrics (up == 1)"
else tg_fail "Prometheus scrapes the coordinator's /metrics (up == 1)"; tail -5 "$TG_OUT/prometheus.log"; fi

# --- Workload -----------------------------------------------------------------------------------
ws_job() { node "$TG_DEPLOY/ws-job.mjs" --url "$WS" --token "$TOKEN" --timeout 120 "$@"; }
if [[ ${#node_pids[@]} -gt 0 ]]; then # host cluster: kill a node mid-job for retries
  tg_check "workload: Leibniz job with a node killed mid-job" \
    ws_job --terms 2000000 --at 0.2 --run "kill -9 ${node_pids[0]}"  # ~1 s: polls every 0.2 s
fi
tg_check "workload: Leibniz double and dec50 jobs" sh -c \
  "$(declare -f ws_job); WS='$WS' TOKEN='$TOKEN' TG_DEPLOY='$TG_DEPLOY';
   ws_job --terms 100000 --precision double && ws_job --terms 10000 --precision dec50"
# A job whose token fails (wrong argument type), for tokengate_tokens_failed_total{code}.
tg_check "workload: a failing job is reported as failed" sh -c \
  "node '$TG_DEPLOY/ws-job.mjs' --url '$WS' --token '$TOKEN' --fail --timeout 30; [ \$? = 1 ]"
# Cost model: an op declared light whose tokens cost 200 us or 4 ms depending on their argument.
# Spin jobs run until the cost model (retrained from their telemetry, at most every 5 s) is
# published -- only a model that beats the per-op running mean on held-out samples is, which
# needs a cost the mean cannot know, hence two costs -- and moves the 4 ms `spin` tokens to
# another lane, which shows as tokengate_model_reclassifications_total{op="spin"}: checked here
# end to end, not only its dashboard panel.
reclassified() {
  curl -fsS -H "Authorization: Bearer $TOKEN" "http://$TARGET/metrics" |
    grep -q '^tokengate_model_reclassifications_total{.*op="spin"'
}
spin_until_reclassified() {
  ws_job --terms 200000 >/dev/null || return 1
  local deadline=$((SECONDS + 90))
  while ((SECONDS < deadline)); do
    ws_job --spin 300:200,4000 >/dev/null || return 1
    reclassified && return 0
  done
  return 1
}
tg_check "workload: the cost model reclassifies the light-declared \`spin\` op's 4 ms tokens" \
  spin_until_reclassified
sleep 6 # a few more scrapes after the last job

tg_run_node "$TG_DEPLOY/eval-dashboards.mjs" "$PROM" "$TG_ROOT/grafana/dashboards" 180
tg_summary
