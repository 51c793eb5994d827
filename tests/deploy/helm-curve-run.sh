#!/usr/bin/env bash
# Runs the Helm chart's CURVE wiring with the real binaries (no Kubernetes needed): keys made as
# docs/deployment.md says (`tgctl keys init`, then the five Secret keys), passed to the chart with
# --set-file; the rendered Secret's data is written out as the pods' mounts would be (only the
# items each Deployment mounts) and the coordinator and a node run with the TG_CURVE_* env of
# their rendered containers. Passes when the node joins and an admin tgctl sees it, and a node
# without a listed key does not join. Needs TG_BUILD_DIR (default build/release) binaries.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
source tests/deploy/lib/common.sh
BIN=${TG_BUILD_DIR:-build/release}/bin
for b in tokengate-coordinator tokengate-node tgctl; do
  if [[ ! -x $BIN/$b ]]; then
    echo "SKIP helm CURVE run: $BIN/$b not built"
    TG_SKIPPED=$((TG_SKIPPED + 1))
    tg_summary
    exit 0
  fi
done
HELM=$(tg_helm)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN/tgctl" keys init --out "$work/keys" >/dev/null
printf 'admin %s\n' "$(grep -v '^#' "$work/keys/admin.pub")" >"$work/allow-clients"
"$HELM" template tg helm/tokengate --namespace tokengate --set gateway.token=t \
  --set-file curve.serverKey="$work/keys/server.key" \
  --set-file curve.serverPublicKey="$work/keys/server.pub" \
  --set-file curve.nodeKey="$work/keys/node.key" \
  --set-file curve.allowNodes="$work/keys/node.pub" \
  --set-file curve.allowClients="$work/allow-clients" >"$TG_OUT/render-curve-run.yaml"

# Per component: its mounted Secret items in $work/<component>/ and its TG_CURVE_* env with
# /etc/tokengate/curve replaced by that directory, one VAR=value per line.
python3 - "$TG_OUT/render-curve-run.yaml" "$work" <<'PY'
import base64, os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
work = sys.argv[2]
secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-curve"))
for d in docs:
    if d["kind"] != "Deployment":
        continue
    comp = d["metadata"]["labels"]["app.kubernetes.io/component"]
    spec = d["spec"]["template"]["spec"]
    out = os.path.join(work, comp)
    os.makedirs(out, exist_ok=True)
    vol = next(v for v in spec["volumes"] if v["name"] == "curve-keys")
    assert vol["secret"]["secretName"] == secret["metadata"]["name"]
    for item in vol["secret"]["items"]:
        with open(os.path.join(out, item["path"]), "wb") as f:
            f.write(base64.b64decode(secret["data"][item["key"]]))
    with open(os.path.join(work, comp + ".env"), "w") as f:
        for e in spec["containers"][0]["env"]:
            if e["name"].startswith("TG_CURVE_") or e["name"] == "TG_INSECURE":
                f.write("%s=%s\n" % (e["name"], e["value"].replace("/etc/tokengate/curve", out)))
PY
tg_check "rendered chart: coordinator and node mounts and env extracted (no server.key on nodes)" \
  test -s "$work/coordinator.env" -a -s "$work/node.env" -a ! -e "$work/node/server.key"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ep=tcp://127.0.0.1:$port
mapfile -t coordinator_env <"$work/coordinator.env"
mapfile -t node_env <"$work/node.env"
env -i PATH="$PATH" "${coordinator_env[@]}" "$BIN/tokengate-coordinator" --listen "$ep" \
  >"$TG_OUT/helm-curve-coordinator.log" 2>&1 &
pids+=($!)
env -i PATH="$PATH" "${node_env[@]}" "$BIN/tokengate-node" --coordinator "$ep" \
  --id helm-node-1 --no-pin >"$TG_OUT/helm-curve-node.log" 2>&1 &
pids+=($!)
"$BIN/tokengate-node" --coordinator "$ep" --id intruder --no-pin --insecure \
  >"$TG_OUT/helm-curve-intruder.log" 2>&1 &
pids+=($!)

tgctl_info() { "$BIN/tgctl" --curve-dir "$work/keys" --coordinator "$ep" info "$@"; }
node_joined() { tgctl_info --wait-nodes 1 && tgctl_info | grep -q helm-node-1; }
intruder_absent() {
  sleep 2
  ! tgctl_info | grep -q intruder
}
tg_check "chart keys: the node joins with CURVE and an admin tgctl sees it" node_joined
tg_check "chart keys: a plain-TCP node does not join" intruder_absent
tg_check "chart keys: the coordinator runs with CURVE (no insecure warning)" \
  sh -c "! grep -qi insecure '$TG_OUT/helm-curve-coordinator.log'"
tg_summary
