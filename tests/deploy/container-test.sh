#!/usr/bin/env bash
# The real container test: build the images from docker/Dockerfile on a local bookworm base,
# bring up the coordinator and 3 nodes with docker/compose.yaml (observability profile off:
# its images cannot be pulled here), run the Leibniz job through the gateway from the host
# while `docker kill`ing a node, check the exact result, run a second job over the wire port
# with tgctl, evaluate the Grafana dashboards against a Prometheus scraping this cluster,
# then `docker-compose down -v` and check nothing is left behind.
#
# Env: TG_TERMS (default 1000000) job size; TG_KEEP=1 leaves the cluster up for debugging.
set -uo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/docker.sh"
cd "$TG_ROOT" || exit 1

DOCKER=$(tg_docker)
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
export TG_TAG=ci TG_IMAGE_PREFIX=tokengate
# Non-default host ports: proves the .env plumbing and keeps clear of a developer's cluster.
export TG_WIRE_PORT=${TG_WIRE_PORT:-15555} TG_GATEWAY_PORT=${TG_GATEWAY_PORT:-18080}
TG_GATEWAY_TOKEN="ci-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TG_GATEWAY_TOKEN
PROJECT=tgci
COMPOSE=(docker-compose -p "$PROJECT" -f docker/compose.yaml)
# The live dashboard checks run `spin` tokens: a test operation, off on production nodes.
export TG_NODE_ARGS="${TG_NODE_ARGS:-} --enable-test-ops"
TERMS=${TG_TERMS:-1000000}
GW="http://127.0.0.1:$TG_GATEWAY_PORT"

teardown() {
  [[ "${TG_KEEP:-0}" == 1 ]] && { echo "TG_KEEP=1: leaving $PROJECT up"; return; }
  "${COMPOSE[@]}" logs --no-color >"$TG_OUT/compose.log" 2>&1 || true
  "${COMPOSE[@]}" down -v --remove-orphans --timeout 10 >"$TG_OUT/compose-down.log" 2>&1
}

metric() { # NAME{labels} -> summed value from the coordinator's /metrics, or empty
  curl -fsS -H "Authorization: Bearer $TG_GATEWAY_TOKEN" "$GW/metrics" 2>/dev/null |
    awk -v m="$1" 'index($0, m) == 1 { s += $NF; n++ } END { if (n) print s }'
}

wait_for() { # SECONDS CMD...: retries CMD every second
  local t=$1
  shift
  for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}

# --- Engine and base image ------------------------------------------------------------------
tg_check "docker engine is running (dockerd started if needed)" tg_ensure_dockerd
tg_check "local debian:bookworm-slim base (debootstrap + docker import, cached)" \
  env DOCKER="$DOCKER" "$TG_DEPLOY/make-base-image.sh"

# --- Images ---------------------------------------------------------------------------------
# Both targets build from one snapshot of the tree, so the second build reuses the first's
# layers and edits made meanwhile cannot split them. The snapshot is the committed HEAD (what
# CI's fresh clone has); TG_CONTEXT=worktree takes tracked + untracked, not ignored files.
# tar -m: files get the snapshot's time, not the commit's, so ninja in the image's cached build
# tree never takes objects built later from another tree as up to date (ccache serves the rest).
snapshot() {
  rm -rf "$TG_OUT/context" && mkdir -p "$TG_OUT/context" || return 1
  if [[ "${TG_CONTEXT:-head}" == worktree ]]; then
    git ls-files -z --cached --others --exclude-standard | grep -zv '^tests/deploy/node_modules/' |
      xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
      tar --null -T - -cf - | tar -C "$TG_OUT/context" -xmf -
  else
    git archive --format=tar HEAD | tar -C "$TG_OUT/context" -xmf -
  fi
}
tg_check "snapshot of the source tree for the build context" snapshot
t0=$(date +%s)
tg_check "docker build --target coordinator (host network for apt)" \
  "$DOCKER" build --network host --build-arg "TG_BUILD_JOBS=${TG_BUILD_JOBS:-2}" -f "$TG_OUT/context/docker/Dockerfile" --target coordinator \
  -t "tokengate/coordinator:$TG_TAG" "$TG_OUT/context"
tg_check "docker build --target node" \
  "$DOCKER" build --network host --build-arg "TG_BUILD_JOBS=${TG_BUILD_JOBS:-2}" -f "$TG_OUT/context/docker/Dockerfile" --target node \
  -t "tokengate/node:$TG_TAG" "$TG_OUT/context"
echo "image builds took $(($(date +%s) - t0))s"
if [[ $TG_FAILED -gt 0 ]]; then
  tg_fail "cluster test not run: the images did not build"
  tg_summary
  exit 1
fi
tg_check "images run as the non-root user 10001" sh -c "
  [ \"\$($DOCKER image inspect -f '{{.Config.User}}' tokengate/coordinator:$TG_TAG)\" = 10001:10001 ] &&
  [ \"\$($DOCKER image inspect -f '{{.Config.User}}' tokengate/node:$TG_TAG)\" = 10001:10001 ]"
tg_check "coordinator image has a HEALTHCHECK on /healthz" sh -c \
  "$DOCKER image inspect -f '{{json .Config.Healthcheck}}' tokengate/coordinator:$TG_TAG | grep -q healthz"
tg_check "node image has a HEALTHCHECK on its health file" sh -c \
  "$DOCKER image inspect -f '{{json .Config.Healthcheck}}' tokengate/node:$TG_TAG | grep -q check-health"
tg_check "every installed binary starts in the runtime image (--help)" \
  "$DOCKER" run --rm --entrypoint sh "tokengate/node:$TG_TAG" -c \
  'for b in /opt/tokengate/bin/*; do "$b" --help >/dev/null 2>&1 || { echo "$b --help failed"; "$b" --help; exit 1; }; done'

# --- Cluster up -----------------------------------------------------------------------------
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
trap teardown EXIT
tg_check "docker-compose up -d --scale node=3 (no build, observability profile off)" \
  "${COMPOSE[@]}" up -d --no-build --scale node=3
coordinator_id=$("${COMPOSE[@]}" ps -q coordinator)
tg_check "coordinator container becomes healthy (HEALTHCHECK /healthz)" wait_for 60 sh -c \
  "[ \"\$($DOCKER inspect -f '{{.State.Health.Status}}' $coordinator_id)\" = healthy ]"
tg_check "3 nodes register as ready" wait_for 60 sh -c \
  "[ \"\$(curl -fsS -H 'Authorization: Bearer $TG_GATEWAY_TOKEN' $GW/metrics | awk '/^tokengate_nodes\\{.*state=\"ready\"/ {s+=\$NF} END {print s+0}')\" = 3 ]"
tg_check "all 3 node containers become healthy (HEALTHCHECK: link alive, session held)" wait_for 60 sh -c \
  "[ \"\$(for c in \$(${COMPOSE[*]} ps -q node); do $DOCKER inspect -f '{{.State.Health.Status}}' \$c; done | grep -c '^healthy\$')\" = 3 ]"
tg_check "gateway /readyz answers 200 on the published port" curl -fsS "$GW/readyz"
tg_check "control page is served at / on host port $TG_GATEWAY_PORT" sh -c \
  "curl -fsS '$GW/' | grep -qi '<html'"
tg_check "gateway refuses a WebSocket upgrade with a wrong bearer token (401)" sh -c \
  "code=\$(curl -s -o /dev/null -w '%{http_code}' -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
     -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
     -H 'Authorization: Bearer wrong' '$GW/ws'); [ \"\$code\" = 401 ]"

# --- Leibniz through the gateway, killing a node mid-job ------------------------------------
victim=$("${COMPOSE[@]}" ps -q node | head -n1)
t0=$(date +%s.%N)
node "$TG_DEPLOY/ws-job.mjs" --url "ws://127.0.0.1:$TG_GATEWAY_PORT/ws" --token "$TG_GATEWAY_TOKEN" \
  --terms "$TERMS" --precision double --at 0.3 --run "$DOCKER kill $victim" --timeout 300 \
  >"$TG_OUT/ws-job.json" 2>"$TG_OUT/ws-job.log"
rc=$?
echo "leibniz $TERMS terms through the gateway: rc=$rc, $(awk "BEGIN {print $(date +%s.%N) - $t0}")s"
cat "$TG_OUT/ws-job.log" "$TG_OUT/ws-job.json" | sed 's/^/     /'
tg_check "Leibniz job ($TERMS terms) via WebSocket gateway succeeds with a node killed mid-job" \
  sh -c "[ $rc = 0 ] && grep -q '\"hook_ran\":true' '$TG_OUT/ws-job.json'"
tg_check "result is bit-identical to the reference pyramid sum" node -e "
  const r = JSON.parse(require('fs').readFileSync('$TG_OUT/ws-job.json', 'utf8'));
  import('$TG_DEPLOY/lib/leibniz.mjs').then(({ leibnizDouble }) => {
    const want = leibnizDouble($TERMS);
    const got = typeof r.value === 'number' ? r.value : Number(r.value?.float ?? r.value);
    console.log('got', got, 'want', want);
    process.exit(Object.is(got, want) ? 0 : 1);
  });"
# restart: unless-stopped may bring it back; either way it must have died (SIGKILL: 137).
tg_check "killed node container really died (exit 137, or restarted by its policy)" sh -c \
  "$DOCKER inspect -f '{{.State.Running}} {{.State.ExitCode}} {{.RestartCount}}' $victim |
   grep -Eq '^(false 137 [0-9]+|true [0-9]+ [1-9][0-9]*)$'"
tg_check "coordinator saw the node die and retried its tokens" wait_for 30 sh -c \
  "[ \"\$(curl -fsS -H 'Authorization: Bearer $TG_GATEWAY_TOKEN' $GW/metrics | awk '/^tokengate_tokens_retried_total/ {s+=\$NF} END {print (s>0)}')\" = 1 ]"

# --- the coordinator itself crashes mid-job: its journal (TG_JOURNAL on the coordinator-data
# volume) brings the job back under the same id; the client reconnects to the gateway --------
coord=$("${COMPOSE[@]}" ps -q coordinator)
ready_before=$(curl -fsS -H "Authorization: Bearer $TG_GATEWAY_TOKEN" "$GW/metrics" |
  awk '/^tokengate_nodes\{.*state="ready"/ {s+=$NF} END {print s+0}')
node "$TG_DEPLOY/ws-job.mjs" --url "ws://127.0.0.1:$TG_GATEWAY_PORT/ws" --token "$TG_GATEWAY_TOKEN" \
  --terms "$TERMS" --precision double --at 0.3 --run "$DOCKER restart -t 0 $coord" --timeout 300 \
  >"$TG_OUT/ws-job-restart.json" 2>"$TG_OUT/ws-job-restart.log"
rc=$?
cat "$TG_OUT/ws-job-restart.log" "$TG_OUT/ws-job-restart.json" | sed 's/^/     /'
tg_check "Leibniz job survives a coordinator container restart mid-job (journal)" \
  sh -c "[ $rc = 0 ] && grep -q '\"hook_ran\":true' '$TG_OUT/ws-job-restart.json' &&
         ! grep -q '\"reconnects\":0' '$TG_OUT/ws-job-restart.json'"
tg_check "resumed job's result is bit-identical to the reference pyramid sum" node -e "
  const r = JSON.parse(require('fs').readFileSync('$TG_OUT/ws-job-restart.json', 'utf8'));
  import('$TG_DEPLOY/lib/leibniz.mjs').then(({ leibnizDouble }) => {
    const got = typeof r.value === 'number' ? r.value : Number(r.value?.float ?? r.value);
    process.exit(Object.is(got, leibnizDouble($TERMS)) ? 0 : 1);
  });"
tg_check "the nodes that were ready before the restart have re-registered" wait_for 60 sh -c \
  "[ \"\$(curl -fsS -H 'Authorization: Bearer $TG_GATEWAY_TOKEN' $GW/metrics | awk '/^tokengate_nodes\\{.*state=\"ready\"/ {s+=\$NF} END {print s+0}')\" -ge $ready_before ]"

# --- Leibniz over the wire port with tgctl (from the host network) --------------------------
DEC_TERMS=20000
# CURVE is on (the keys service generated the keys on first `up`): fetch the admin key pair and
# the coordinator's public key the way docker/compose.yaml documents it.
mkdir -p "$TG_OUT/keys-admin"
tg_check "admin CURVE keys fetched from the keys volume" sh -c \
  "$(printf '%q ' "${COMPOSE[@]}") run --rm --no-deps --entrypoint tar keys -C /keys/admin -c . | tar -x -C '$TG_OUT/keys-admin' && test -s '$TG_OUT/keys-admin/admin.key'"
if [[ -x "${TG_BUILD_DIR:-build/release}/bin/tgctl" ]]; then
  TGCTL_BARE=("${TG_BUILD_DIR:-build/release}/bin/tgctl")
  TGCTL=("${TGCTL_BARE[@]}" --curve-dir "$TG_OUT/keys-admin")
else # the image's tgctl on the host network: same path a host client takes
  TGCTL_BARE=("$DOCKER" run --rm -i --network host "tokengate/node:$TG_TAG" tgctl)
  TGCTL=("$DOCKER" run --rm -i --network host -v "$TG_OUT/keys-admin:/keys:ro" \
    "tokengate/node:$TG_TAG" tgctl --curve-dir /keys)
fi
tg_check "the wire port refuses a client without CURVE keys" sh -c \
  "! $(printf '%q ' "${TGCTL_BARE[@]}") --insecure --coordinator tcp://127.0.0.1:$TG_WIRE_PORT --timeout 5 info >/dev/null 2>&1"
tg_check "tgctl leibniz --precision dec50 over the published wire port" sh -c \
  "$(printf '%q ' "${TGCTL[@]}") --coordinator tcp://127.0.0.1:$TG_WIRE_PORT leibniz --terms $DEC_TERMS --precision dec50 >'$TG_OUT/tgctl.out' 2>&1"
tg_check "tgctl dec50 result matches an exact big-integer reference to 40 digits" node -e "
  const out = require('fs').readFileSync('$TG_OUT/tgctl.out', 'utf8');
  const nums = out.match(/3\.14[0-9]{30,}/g) ?? [];
  import('$TG_DEPLOY/lib/leibniz.mjs').then(({ leibnizDecimal, significantDigits }) => {
    const want = leibnizDecimal($DEC_TERMS, 40);
    const got = nums.length ? significantDigits(nums[nums.length - 1], 40) : '';
    console.log('got', got, 'want', want);
    process.exit(got === want ? 0 : 1);
  });"

# --- A custom node image (examples/custom_node/Dockerfile, FROM the sdk and node stages) ------
# joins this compose cluster and runs a job that only its operations can run.
tg_check "docker build --target sdk (build stage + installed SDK)" \
  "$DOCKER" build --network host --build-arg "TG_BUILD_JOBS=${TG_BUILD_JOBS:-2}" -f "$TG_OUT/context/docker/Dockerfile" --target sdk \
  -t "tokengate/sdk:$TG_TAG" "$TG_OUT/context"
tg_check "docker build examples/custom_node (FROM tokengate/sdk + tokengate/node)" \
  "$DOCKER" build --network host --build-arg "TG_SDK_IMAGE=tokengate/sdk:$TG_TAG" \
  --build-arg "TG_NODE_IMAGE=tokengate/node:$TG_TAG" -t "tokengate/custom-node:$TG_TAG" \
  "$TG_OUT/context/examples/custom_node"
tg_check "runtime images carry no SDK headers or static libraries" \
  "$DOCKER" run --rm --entrypoint sh "tokengate/node:$TG_TAG" -c '! ls /opt/tokengate/lib /opt/tokengate/include 2>/dev/null | grep -q .'
custom=${PROJECT}-custom-node
"$DOCKER" rm -f "$custom" >/dev/null 2>&1 || true
tg_check "custom node container joins the compose network" \
  "$DOCKER" run -d --name "$custom" --network "${PROJECT}_default" --read-only --tmpfs /tmp \
  -v "${PROJECT}_keys-node:/etc/tokengate/keys:ro" -e TG_CURVE_DIR=/etc/tokengate/keys \
  -e TG_COORDINATOR=tcp://coordinator:5555 "tokengate/custom-node:$TG_TAG" node
tg_check "custom node container becomes healthy (stock HEALTHCHECK, session held)" wait_for 60 sh -c \
  "[ \"\$($DOCKER inspect -f '{{.State.Health.Status}}' $custom)\" = healthy ]"
tg_check "the coordinator offers the custom node's operations (words.count, matrix.mul)" wait_for 30 sh -c \
  "$(printf '%q ' "${TGCTL[@]}") --coordinator tcp://127.0.0.1:$TG_WIRE_PORT --timeout 10 op list >'$TG_OUT/custom-node-ops.txt' 2>&1 &&
   grep -q 'words.count' '$TG_OUT/custom-node-ops.txt' && grep -q 'matrix.mul' '$TG_OUT/custom-node-ops.txt'"
# Only the custom node offers words.*, stats.* and matrix.mul: the job succeeding means it ran
# there. matrix.mul runs twice: rows as lists, rows as packed f64s arrays.
tg_check "a job with the custom node's operations (words.*, stats.*, matrix.mul) succeeds" sh -c \
  "$(printf '%q ' "${TGCTL[@]}") --coordinator tcp://127.0.0.1:$TG_WIRE_PORT --timeout 60 --json submit - \
     <examples/custom_node/job.json >'$TG_OUT/custom-node-job.json' 2>&1 &&
   grep -q '\"state\":\"succeeded\"' '$TG_OUT/custom-node-job.json'"
sed 's/^/     /' "$TG_OUT/custom-node-job.json"
tg_check "custom node results: words.total = 12, matrix.mul over lists and packed f64s rows" sh -c \
  "grep -q '\"name\":\"total\",\"value\":12' '$TG_OUT/custom-node-job.json' &&
   grep -q '\"name\":\"product\",\"value\":\\[\\[19,22\\],\\[43,50\\]\\]' '$TG_OUT/custom-node-job.json' &&
   grep -q '\"name\":\"packed_product\",\"value\":\\[{\"f64s\":\\[2.15E1,2.5E1\\]},{\"f64s\":\\[4.3E1,5E1\\]}\\]' '$TG_OUT/custom-node-job.json'"
tg_check "custom node drains and exits 0 on docker stop" sh -c \
  "$DOCKER stop -t 45 $custom >/dev/null && [ \"\$($DOCKER inspect -f '{{.State.ExitCode}}' $custom)\" = 0 ]"
"$DOCKER" rm -f "$custom" >/dev/null 2>&1 || true

# --- Dashboards against a real Prometheus scraping this cluster -----------------------------
"$TG_DEPLOY/dashboards-live.sh" --target "127.0.0.1:$TG_GATEWAY_PORT" --token "$TG_GATEWAY_TOKEN" \
  --ws "ws://127.0.0.1:$TG_GATEWAY_PORT/ws" >"$TG_OUT/dashboards-live.out" 2>&1
grep -E '^(PASS|FAIL|SKIP|     )' "$TG_OUT/dashboards-live.out"
TG_PASSED=$((TG_PASSED + $(grep -c '^PASS ' "$TG_OUT/dashboards-live.out")))
TG_FAILED=$((TG_FAILED + $(grep -c '^FAIL ' "$TG_OUT/dashboards-live.out")))
TG_SKIPPED=$((TG_SKIPPED + $(grep -c '^SKIP ' "$TG_OUT/dashboards-live.out")))

# --- Down, nothing left behind --------------------------------------------------------------
trap - EXIT
if [[ "${TG_KEEP:-0}" != 1 ]]; then
  tg_check "docker-compose down -v" teardown
  tg_check "nothing left behind (containers, networks, volumes of project $PROJECT)" sh -c "
    left=\$($DOCKER ps -aq --filter label=com.docker.compose.project=$PROJECT;
            $DOCKER network ls -q --filter label=com.docker.compose.project=$PROJECT;
            $DOCKER volume ls -q --filter label=com.docker.compose.project=$PROJECT)
    [ -z \"\$left\" ] || { echo \"left: \$left\"; exit 1; }"
fi

tg_summary
