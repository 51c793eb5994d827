#!/usr/bin/env bash
# Static checks of the deployment files: Compose, Prometheus config, Grafana dashboards, Helm
# chart (lint, render with default and non-default values, validate against Kubernetes
# schemas), shell scripts. Needs: docker-compose, promtool, node + tests/deploy/node_modules.
set -uo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$TG_ROOT" || exit 1

# --- Compose --------------------------------------------------------------------------------
for profile in "" observability; do
  args=(-f docker/compose.yaml)
  [[ -n $profile ]] && args+=(--profile "$profile")
  tg_check "docker-compose config (compose v1${profile:+, profile $profile})" \
    docker-compose "${args[@]}" config -q
  tg_check "docker-compose config with docker/.env.example${profile:+ (profile $profile)}" \
    docker-compose --env-file docker/.env.example "${args[@]}" config -q
done
tg_check "compose: node service defaults to 3 replicas" \
  sh -c 'docker-compose -f docker/compose.yaml config | grep -Eq "^    scale: 3$"'
if docker compose version >/dev/null 2>&1; then
  tg_check "docker compose config (compose v2, profile observability)" \
    docker compose -f docker/compose.yaml --profile observability config -q
else
  echo "note: compose v2 (docker compose) not installed here; only v1 was checked"
fi

# --- Prometheus -----------------------------------------------------------------------------
tg_check "promtool check config docker/prometheus.yml" promtool check config docker/prometheus.yml

# --- Grafana --------------------------------------------------------------------------------
tg_check "grafana/generate.py --check (committed dashboards are up to date)" \
  python3 grafana/generate.py --check
tg_check "helm chart ships the same dashboards as grafana/" \
  diff -r grafana/dashboards helm/tokengate/dashboards
tg_check "grafana provisioning YAML parses" node -e '
  const YAML = require(process.argv[1]); const fs = require("fs");
  for (const f of process.argv.slice(2)) {
    const y = YAML.parse(fs.readFileSync(f, "utf8"));
    if (y.apiVersion !== 1) throw new Error(f + ": apiVersion must be 1");
  }' "$TG_DEPLOY/node_modules/yaml/dist/index.js" \
  grafana/provisioning/datasources/prometheus.yaml grafana/provisioning/dashboards/tokengate.yaml
tg_run_node "$TG_DEPLOY/check-dashboards.mjs" grafana/dashboards

# --- Helm -----------------------------------------------------------------------------------
HELM=$(tg_helm)
CHART=helm/tokengate
NONDEFAULT=$CHART/ci/nondefault-values.yaml
tg_check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
tg_check "helm lint --strict (ci/nondefault-values.yaml)" "$HELM" lint --strict "$CHART" -f "$NONDEFAULT"
render() { # NAME ARGS...
  local name=$1; shift
  "$HELM" template tg "$CHART" --namespace tokengate "$@" >"$TG_OUT/render-$name.yaml"
}
tg_check "helm template (default values)" render default
tg_check "helm template (ci/nondefault-values.yaml)" render nondefault -f "$NONDEFAULT"
tg_check "helm template (minimal: no NetworkPolicy, PDB, dashboards, ServiceAccount)" render minimal \
  --set networkPolicy.enabled=false --set node.pdb.enabled=false --set dashboards.enabled=false \
  --set serviceAccount.create=false --set node.replicas=0 --set gateway.token=fixed-token \
  --set coordinator.journal.enabled=false
tg_check "rendered default chart has every kind the issue asks for" sh -c "
  for k in 'Deployment' 'Service' 'Secret' 'ConfigMap' 'PodDisruptionBudget' 'NetworkPolicy' 'PersistentVolumeClaim'; do
    grep -q \"^kind: \$k\$\" '$TG_OUT/render-default.yaml' || { echo missing \$k; exit 1; }; done
  grep -q '^kind: ServiceMonitor$' '$TG_OUT/render-nondefault.yaml' || { echo no ServiceMonitor; exit 1; }
  grep -q 'grafana_dashboard: \"1\"' '$TG_OUT/render-default.yaml' || { echo no dashboard label; exit 1; }"
tg_check "nondefault: node groups render (GPU resources, own affinity and nodeSelector, operations, digest image, HPA, KEDA scale-to-zero)" sh -c "
  f='$TG_OUT/render-nondefault.yaml'
  grep -q '^kind: HorizontalPodAutoscaler\$' \$f && grep -q '^kind: ScaledObject\$' \$f &&
  grep -q 'nvidia.com/gpu: 1' \$f && grep -q 'custom-node@sha256:0123' \$f &&
  grep -q 'minReplicaCount: 0' \$f && grep -q -- '- tokengate-custom-node' \$f &&
  grep -q 'terminationGracePeriodSeconds: 120' \$f && grep -q -- '- --ready-min-nodes' \$f && grep -q -- '- --allow-unknown-ops' \$f &&
  grep -q 'key: nvidia.com/gpu.product' \$f && grep -q 'tokengate.io/operations: \"words.count,words.total,stats.summary\"' \$f &&
  grep -q 'accelerator: nvidia' \$f"
# CurveZMQ (docs/deployment.md "CurveZMQ keys"): on by default, keys from a Secret, never generated.
curve_default() {
  local f=$TG_OUT/render-default.yaml
  ! grep -q TG_INSECURE "$f" && grep -q 'secretName: tg-tokengate-curve' "$f" &&
    grep -q 'value: /etc/tokengate/curve/server.key' "$f" &&
    grep -q 'value: /etc/tokengate/curve/node.key' "$f" && grep -q 'name: TG_CURVE_SERVER_KEY' "$f"
}
no_server_key_in_nodes() { # FILE: no node Deployment mounts server.key
  awk '/^---/{node=0} /app.kubernetes.io\/component: node/{node=1}
       node && /key: server.key/{bad=1} END{exit bad}' "$1"
}
CURVE_VALUES=(--set curve.serverKey=test-server-secret --set curve.serverPublicKey=test-server-public
  --set curve.nodeKey=test-node-secret --set curve.allowNodes=test-node-public
  --set 'curve.allowClients=admin test-admin-public' --set gateway.token=fixed-token)
curve_from_values() {
  render curve-1 "${CURVE_VALUES[@]}" && render curve-2 "${CURVE_VALUES[@]}" &&
    cmp -s "$TG_OUT/render-curve-1.yaml" "$TG_OUT/render-curve-2.yaml" &&
    grep -q "server.key: \"$(printf test-server-secret | base64)\"" "$TG_OUT/render-curve-1.yaml" &&
    grep -q 'name: tg-tokengate-curve' "$TG_OUT/render-curve-1.yaml"
}
existing_secret_wins() {
  render curve-existing "${CURVE_VALUES[@]}" --set curve.existingSecret=mine &&
    ! grep -q 'name: tg-tokengate-curve' "$TG_OUT/render-curve-existing.yaml" &&
    grep -q 'secretName: mine' "$TG_OUT/render-curve-existing.yaml"
}
insecure_opt_out() {
  render insecure --set insecure=true &&
    [ "$(grep -c 'name: TG_INSECURE' "$TG_OUT/render-insecure.yaml")" -eq 2 ] &&
    ! grep -q curve-keys "$TG_OUT/render-insecure.yaml"
}
tg_check "default: CURVE on (no TG_INSECURE; coordinator and nodes mount the curve Secret)" curve_default
tg_check "default and node groups: node pods never mount the coordinator's secret key" sh -c "
  $(declare -f no_server_key_in_nodes); no_server_key_in_nodes '$TG_OUT/render-default.yaml' &&
  no_server_key_in_nodes '$TG_OUT/render-nondefault.yaml'"
tg_check "curve keys in values: the chart writes the Secret, identically on every render" curve_from_values
tg_check_fails "curve keys in values: a partial set is refused" "$HELM" template tg "$CHART" \
  --set curve.serverKey=only-this
tg_check "curve.existingSecret: mounted, and the chart writes no curve Secret of its own" existing_secret_wins
tg_check "insecure: true is the explicit opt-out (TG_INSECURE=1, no key mounts)" insecure_opt_out
tg_check "default: node terminationGracePeriodSeconds (45) exceeds the 30 s drain" \
  grep -q 'terminationGracePeriodSeconds: 45' "$TG_OUT/render-default.yaml"
tg_check "compose: node stop_grace_period exceeds the 30 s drain" \
  sh -c 'docker-compose -f docker/compose.yaml config | grep -A40 "^  node:" | grep -Eq "stop_grace_period: (4[0-9]|[5-9][0-9])s"'
tg_check_fails "values.schema.json rejects node grace <= the drain (30)" "$HELM" template tg "$CHART" --set node.terminationGracePeriodSeconds=30
tg_check_fails "values.schema.json rejects a node group without a name" "$HELM" template tg "$CHART" --set 'nodeGroups[0].replicas=1'
tg_check_fails "values.schema.json rejects a malformed image digest" "$HELM" template tg "$CHART" \
  --set 'nodeGroups[0].name=a' --set 'nodeGroups[0].image.digest=latest'
tg_check_fails "values.schema.json rejects HPA and KEDA on one group" "$HELM" template tg "$CHART" \
  --set 'nodeGroups[0].name=a' --set 'nodeGroups[0].autoscaling.enabled=true' --set 'nodeGroups[0].autoscaling.maxReplicas=2' \
  --set 'nodeGroups[0].keda.enabled=true' --set 'nodeGroups[0].keda.maxReplicaCount=2' --set 'nodeGroups[0].keda.prometheusServerAddress=http://p:9090'
tg_check_fails "values.schema.json rejects KEDA without a Prometheus address" "$HELM" template tg "$CHART" \
  --set 'nodeGroups[0].name=a' --set 'nodeGroups[0].keda.enabled=true' --set 'nodeGroups[0].keda.maxReplicaCount=2'
tg_check "values.schema.json accepts global and any resource name" "$HELM" template tg "$CHART" \
  --set global.foo=1 --set 'node.resources.limits.example\.com/fpga=1'
tg_check_fails "values.schema.json rejects an unknown key" "$HELM" template tg "$CHART" --set bogus=1
tg_check_fails "values.schema.json rejects replicas: -1" "$HELM" template tg "$CHART" --set node.replicas=-1
tg_check_fails "values.schema.json rejects a bad pullPolicy" "$HELM" template tg "$CHART" --set image.pullPolicy=Sometimes
# Extension points (issue 15 item 4): gateway TLS, Ingress, extra volumes/containers, common
# labels/annotations, PrometheusRule (its alerts unit-tested with promtool test rules).
EXTRAS=$CHART/ci/extras-values.yaml
tg_check "helm lint --strict (ci/extras-values.yaml)" "$HELM" lint --strict "$CHART" -f "$EXTRAS"
tg_check "helm template (ci/extras-values.yaml)" render extras -f "$EXTRAS"
tg_check "extras: gateway TLS (flags, Secret mount, HTTPS probes), Ingress TLS, PrometheusRule" sh -c "
  f='$TG_OUT/render-extras.yaml'
  grep -q -- '- --tls-cert' \$f && grep -q '/etc/tokengate/tls/tls.key' \$f &&
  grep -q 'secretName: tokengate-gateway-tls' \$f && [ \$(grep -c 'scheme: HTTPS' \$f) -eq 3 ] &&
  grep -q '^kind: Ingress\$' \$f && grep -q 'secretName: tokengate-ingress-tls' \$f &&
  grep -q '^kind: PrometheusRule\$' \$f && grep -q 'scheme: https' \$f && grep -q 'curl -fsS -k https' \$f"
tg_check "extras: sidecars, init containers, extra volumes/mounts/env on coordinator, node and groups" sh -c "
  f='$TG_OUT/render-extras.yaml'
  grep -q 'name: log-shipper' \$f && grep -q 'name: wait-for-dns' \$f && grep -q 'mountPath: /scratch' \$f &&
  grep -q 'TG_EXTRA_SETTING' \$f && [ \$(grep -c 'name: metrics-agent' \$f) -eq 3 ] &&
  [ \$(grep -c 'mountPath: /models' \$f) -eq 2 ] && grep -q 'claimName: datasets' \$f && grep -q 'name: fetch' \$f"
tg_check "extras: commonLabels and commonAnnotations on every object" python3 -c "
import sys, yaml
docs = [d for d in yaml.safe_load_all(open('$TG_OUT/render-extras.yaml')) if d]
bad = [d['kind'] + '/' + d['metadata']['name'] for d in docs
       if d['metadata'].get('labels', {}).get('example.invalid/cost-centre') != 'research'
       or d['kind'] != 'Pod' and d['metadata'].get('annotations', {}).get('example.invalid/owner') != 'data-platform']
sys.exit('missing on: ' + ', '.join(bad) if bad else 0)"
tg_check "extras: image digests pin the coordinator, the node and node groups without an image" sh -c "
  f='$TG_OUT/render-extras.yaml'
  [ \$(grep -c 'image: \"tokengate/coordinator@sha256:1111' \$f) -eq 2 ] &&
  [ \$(grep -c 'image: \"tokengate/node@sha256:2222' \$f) -eq 3 ] && ! grep -q 'image: \"tokengate/[a-z]*:' \$f"
tg_check "nondefault: no digests: images by tag (registry/repo:tag)" \
  grep -q 'image: "registry.example.invalid/team/tokengate/coordinator:1.2.3"' "$TG_OUT/render-nondefault.yaml"
tg_check_fails "values.schema.json rejects a malformed image.nodeDigest" "$HELM" template tg "$CHART" \
  --set image.nodeDigest=sha256:abc
tg_check_fails "values.schema.json rejects gateway.tls without a secretName" "$HELM" template tg "$CHART" --set gateway.tls.enabled=true
tg_check_fails "values.schema.json rejects an Ingress path without a leading /" "$HELM" template tg "$CHART" \
  --set ingress.enabled=true --set 'ingress.hosts[0].paths[0].path=api'
tg_check_fails "values.schema.json rejects a sidecar without a name" "$HELM" template tg "$CHART" \
  --set 'coordinator.sidecars[0].image=x'
tg_run_node "$TG_DEPLOY/check-alert-rules.mjs" "$TG_OUT/render-extras.yaml" "$TG_OUT/alerts"
tg_run_node "$TG_DEPLOY/validate-manifests.mjs" \
  "$TG_OUT/render-default.yaml" "$TG_OUT/render-nondefault.yaml" "$TG_OUT/render-minimal.yaml" \
  "$TG_OUT/render-curve-1.yaml" "$TG_OUT/render-insecure.yaml" \
  "$TG_OUT/render-extras.yaml"

# --- Shell ----------------------------------------------------------------------------------
if command -v shellcheck >/dev/null; then
  tg_check "shellcheck docker/*.sh tests/deploy/*.sh .ci/deploy-tests.sh" \
    shellcheck -x -S warning docker/*.sh tests/deploy/*.sh tests/deploy/lib/*.sh .ci/deploy-tests.sh
fi

tg_summary
