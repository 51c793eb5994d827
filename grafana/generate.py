#!/usr/bin/env python3
"""Generates TokenGate's Grafana dashboards (grafana/dashboards/*.json) and the copy the Helm
chart ships (helm/tokengate/dashboards/). Edit this file, not the JSON; run it with no
arguments to rewrite both, --check to fail when the committed JSON is stale (CI), --metrics to
print the metric families the dashboards may use.

Every query uses only metrics the coordinator exports (listed in METRICS below; the deploy
tests check each panel query against that list and against a real Prometheus).
"""
import json
import re
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIRS = [ROOT / "grafana" / "dashboards", ROOT / "helm" / "tokengate" / "dashboards"]

# Metric families the coordinator's /metrics exports (node metrics are re-exported with node=).
METRICS = [
    "tokengate_tokens_admitted_total", "tokengate_tokens_completed_total",
    "tokengate_tokens_failed_total", "tokengate_tokens_retried_total",
    "tokengate_token_run_seconds", "tokengate_token_queue_wait_seconds",
    "tokengate_queue_depth", "tokengate_in_flight", "tokengate_nodes", "tokengate_batch_size",
    "tokengate_admission_rejects_total", "tokengate_ws_clients",
    "tokengate_node_lane_utilization", "tokengate_node_core_tokens", "tokengate_jobs_total",
    "tokengate_model_prediction_error", "tokengate_model_version",
    "tokengate_model_retrains_total", "tokengate_model_reclassifications_total",
    "tokengate_journal_records_total", "tokengate_journal_errors_total",
    "tokengate_journal_sync_seconds", "tokengate_journal_bytes",
    "tokengate_journal_resumed_jobs", "tokengate_node_rss_bytes", "tokengate_node_cpu_seconds",
    "tokengate_malformed_frames_total", "tokengate_late_results_total",
    "tokengate_ws_unauthenticated_clients", "tokengate_gateway_refusals_total",
    "tokengate_gateway_http_requests_total", "tokengate_gateway_command_seconds",
    "tokengate_gateway_outbound_bytes", "tokengate_job_duration_seconds",
    "tokengate_process_cpu_seconds_total", "tokengate_process_resident_memory_bytes",
]

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
# Every query is narrowed to the namespace and coordinator picked in the dashboard's selectors
# (one coordinator = one TokenGate cluster). Both default to All (.*), which also matches
# series without the label (a Prometheus outside Kubernetes has no namespace label).
CLUSTER_SEL = 'namespace=~"$namespace",instance=~"$instance"'
METRIC_RE = re.compile(r"(tokengate_[a-z_]+)(\{([^}]*)\})?")


def scoped(expr):
    """expr with CLUSTER_SEL added to every tokengate_* selector."""
    def add(m):
        inner = m.group(3)
        return f"{m.group(1)}{{{CLUSTER_SEL}{',' + inner if inner else ''}}}"
    return METRIC_RE.sub(add, expr)


class Board:
    """Lays panels out left to right on Grafana's 24-column grid."""

    def __init__(self, uid, title, description, tags, variables=()):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.variables = list(variables)
        self.panels = []
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def _place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "id": self.next_id, "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.next_id += 1
        self.y += 1

    def _targets(self, queries):
        out = []
        for i, q in enumerate(queries):
            expr, legend = q if isinstance(q, tuple) else (q, "")
            out.append({"refId": chr(ord("A") + i), "datasource": DS, "expr": scoped(expr),
                        "legendFormat": legend or "__auto", "range": True, "instant": False})
        return out

    def stat(self, title, expr, unit="short", w=4, h=4, description="", thresholds=None):
        steps = thresholds or [{"color": "green", "value": None}]
        self.panels.append({
            "type": "stat", "id": self.next_id, "title": title, "description": description,
            "datasource": DS, "gridPos": self._place(w, h),
            "targets": self._targets([expr]),
            "fieldConfig": {"defaults": {"unit": unit, "color": {"mode": "thresholds"},
                                         "thresholds": {"mode": "absolute", "steps": steps}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                        "orientation": "auto", "textMode": "auto", "wideLayout": True,
                        "showPercentChange": False, "percentChangeColorMode": "standard"},
        })
        self.next_id += 1

    def ts(self, title, queries, unit="short", w=12, h=8, description="", stack=False,
           max_=None):
        defaults = {"unit": unit, "color": {"mode": "palette-classic"},
                    "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                               "showPoints": "never", "spanNulls": False,
                               "stacking": {"mode": "normal" if stack else "none",
                                            "group": "A"}}}
        if max_ is not None:
            defaults["min"], defaults["max"] = 0, max_
        self.panels.append({
            "type": "timeseries", "id": self.next_id, "title": title,
            "description": description, "datasource": DS, "gridPos": self._place(w, h),
            "targets": self._targets(queries),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True, "calcs": []},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
        })
        self.next_id += 1

    def table(self, title, queries, w=12, h=8, description=""):
        targets = self._targets(queries)
        for t in targets:
            t.update({"instant": True, "range": False, "format": "table"})
        self.panels.append({
            "type": "table", "id": self.next_id, "title": title, "description": description,
            "datasource": DS, "gridPos": self._place(w, h), "targets": targets,
            "fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []},
            "options": {"showHeader": True, "cellHeight": "sm", "frameIndex": 0},
            "transformations": [{"id": "organize", "options": {
                "excludeByName": {"Time": True, "__name__": True, "job": True,
                                  "instance": True}}}],
        })
        self.next_id += 1

    def json(self):
        templating = [{
            "type": "datasource", "name": "datasource", "label": "Data source",
            "query": "prometheus", "hide": 0, "refresh": 1, "regex": "",
            "options": [], "includeAll": False, "multi": False, "skipUrlSync": False,
        }, query_var("namespace", "Namespace", "tokengate_nodes", "namespace"),
            query_var("instance", "Cluster (coordinator)", "tokengate_nodes", "instance"),
        ] + self.variables
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["tokengate"] + self.tags, "timezone": "browser", "editable": True,
            "graphTooltip": 1, "schemaVersion": 39, "version": 1, "refresh": "10s",
            "time": {"from": "now-30m", "to": "now"}, "fiscalYearStartMonth": 0,
            "liveNow": False, "weekStart": "",
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{"type": "dashboards", "tags": ["tokengate"], "asDropdown": True,
                       "title": "TokenGate", "includeVars": False, "keepTime": True,
                       "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
            "templating": {"list": templating},
            "panels": self.panels,
        }


def query_var(name, label, metric, label_name):
    return {
        "type": "query", "name": name, "label": label, "datasource": DS,
        "query": {"query": f"label_values({metric}, {label_name})", "refId": f"{name}-var"},
        "hide": 0, "includeAll": True, "multi": True, "allValue": ".*",
        "refresh": 2, "regex": "", "sort": 1, "options": [], "skipUrlSync": False,
    }


def quantiles(metric, by="", sel="", qs=(0.5, 0.9, 0.99)):
    grp = f"le{', ' + by if by else ''}"
    legend_by = "".join(f"{{{{{b.strip()}}}}} " for b in by.split(",") if b.strip())
    return [(f"histogram_quantile({q}, sum by ({grp}) (rate({metric}_bucket{sel}[{RATE}])))",
             f"{legend_by}p{int(q * 100)}") for q in qs]


def cluster():
    b = Board("tokengate-cluster", "TokenGate / Cluster overview",
              "Throughput, latency, queue depth, failures and retries of the whole cluster.",
              ["cluster"])
    b.row("Now")
    b.stat("Ready nodes", 'sum(tokengate_nodes{state="ready"})',
           thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}])
    b.stat("Dead nodes", 'sum(tokengate_nodes{state="dead"})',
           thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])
    b.stat("Completed tokens/s", f"sum(rate(tokengate_tokens_completed_total[{RATE}]))",
           unit="ops")
    b.stat("Queue depth", "sum(tokengate_queue_depth)")
    b.stat("In flight", "sum(tokengate_in_flight)")
    b.stat("WebSocket clients", "sum(tokengate_ws_clients)")
    b.row("Throughput and latency")
    b.ts("Token throughput", [
        (f"sum(rate(tokengate_tokens_admitted_total[{RATE}]))", "admitted"),
        (f"sum(rate(tokengate_tokens_completed_total[{RATE}]))", "completed"),
        (f"sum(rate(tokengate_tokens_failed_total[{RATE}]))", "failed"),
        (f"sum(rate(tokengate_tokens_retried_total[{RATE}]))", "retried"),
    ], unit="ops")
    b.ts("Token run time percentiles", quantiles("tokengate_token_run_seconds"), unit="s")
    b.ts("Queue wait percentiles", quantiles("tokengate_token_queue_wait_seconds"), unit="s")
    b.ts("Batch size percentiles", quantiles("tokengate_batch_size"), unit="short")
    b.row("Queues, failures and retries")
    b.ts("Queue depth by operation", [("sum by (op) (tokengate_queue_depth)", "{{op}}")])
    b.ts("Failures by code", [
        (f"sum by (code) (rate(tokengate_tokens_failed_total[{RATE}]))", "{{code}}")],
        unit="ops", stack=True)
    b.ts("Retries by operation", [
        (f"sum by (op) (rate(tokengate_tokens_retried_total[{RATE}]))", "{{op}}")], unit="ops")
    b.ts("Admission rejects", [
        (f"sum(rate(tokengate_admission_rejects_total[{RATE}]))", "rejects")], unit="ops")
    b.row("Cluster")
    b.ts("Nodes by state", [("sum by (state) (tokengate_nodes)", "{{state}}")])
    b.ts("Jobs by state", [
        (f"sum by (state) (increase(tokengate_jobs_total[{RATE}]))", "{{state}}")],
        description="Jobs that reached each state per rate interval.")
    b.ts("Job duration percentiles", quantiles("tokengate_job_duration_seconds"), unit="s",
         description="Wall time from admission to the final state, over jobs that finished.")
    b.ts("Job duration percentiles by final state",
         quantiles("tokengate_job_duration_seconds", "state", qs=(0.5, 0.99)), unit="s")
    b.row("Coordinator process")
    b.stat("Coordinator CPU", f"sum(rate(tokengate_process_cpu_seconds_total[{RATE}]))",
           unit="percentunit", w=6, description="Cores busy (1 = one full core).")
    b.stat("Coordinator memory", "max(tokengate_process_resident_memory_bytes)", unit="bytes",
           w=6)
    b.stat("Malformed frames/s", f"sum(rate(tokengate_malformed_frames_total[{RATE}]))",
           unit="ops", w=6,
           thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.01}],
           description="Wire frames refused at the decode boundary (garbage, wrong version, "
                       "oversize): a misbehaving or hostile peer on the wire port.")
    b.stat("Late results/s", f"sum(rate(tokengate_late_results_total[{RATE}]))", unit="ops",
           w=6, description="Results discarded: stale attempt, dead node or finished token.")
    b.ts("Coordinator CPU (cores)", [
        (f"sum by (instance) (rate(tokengate_process_cpu_seconds_total[{RATE}]))",
         "{{instance}}")], unit="percentunit")
    b.ts("Coordinator resident memory", [
        ("max by (instance) (tokengate_process_resident_memory_bytes)", "{{instance}}")],
        unit="bytes")
    b.row("Gateway (HTTP, WebSocket)")
    b.ts("WebSocket sessions", [
        ("sum(tokengate_ws_clients)", "authenticated + pending"),
        ("sum(tokengate_ws_unauthenticated_clients)", "not yet authenticated")])
    b.ts("Gateway refusals by reason", [
        (f"sum by (reason) (rate(tokengate_gateway_refusals_total[{RATE}]))", "{{reason}}")],
        unit="ops", stack=True,
        description="Connections or commands refused: auth failures and back-off, rate "
                    "limits, origin, connection caps, slow readers, oversize replies.")
    b.ts("HTTP requests by path", [
        (f"sum by (path) (rate(tokengate_gateway_http_requests_total[{RATE}]))", "{{path}}")],
        unit="reqps")
    b.ts("Malformed wire frames", [
        (f"sum(rate(tokengate_malformed_frames_total[{RATE}]))", "malformed")], unit="ops")
    b.row("Job journal (--journal)")
    b.stat("Journal size", "max(tokengate_journal_bytes)", unit="bytes", w=6,
           description="Size of the coordinator's job journal file (compacted at start and "
                       "every 64 MiB of growth).")
    b.stat("Jobs resumed at start", "max(tokengate_journal_resumed_jobs)", w=6,
           description="Unfinished jobs the coordinator found in its journal when it started.")
    b.stat("Journal errors", "sum(tokengate_journal_errors_total)", w=6,
           thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
           description="Failed journal writes: refused admissions or lost finish records.")
    b.stat("Records/s", f"sum(rate(tokengate_journal_records_total[{RATE}]))", unit="ops", w=6)
    b.ts("Journal records by kind", [
        (f"sum by (kind) (rate(tokengate_journal_records_total[{RATE}]))", "{{kind}}")],
        unit="ops")
    b.ts("Admission fsync latency", quantiles("tokengate_journal_sync_seconds"), unit="s",
         description="fdatasync time each admitted job waits for before it is acknowledged.")
    return b


def operations():
    op = '{op=~"$op"}'
    b = Board("tokengate-operations", "TokenGate / Per operation",
              "Throughput, latency, queueing and failures for each operation.", ["operations"],
              [query_var("op", "Operation", "tokengate_tokens_admitted_total", "op")])
    b.row("Throughput")
    b.ts("Completed tokens/s by operation", [
        (f"sum by (op) (rate(tokengate_tokens_completed_total{op}[{RATE}]))", "{{op}}")],
        unit="ops")
    b.ts("Admitted tokens/s by operation and weight", [
        (f"sum by (op, weight) (rate(tokengate_tokens_admitted_total{op}[{RATE}]))",
         "{{op}} / {{weight}}")], unit="ops")
    b.row("Latency")
    b.ts("Run time p50 / p99 by operation",
         quantiles("tokengate_token_run_seconds", "op", op, (0.5, 0.99)), unit="s")
    b.ts("Queue wait p50 / p99 by operation",
         quantiles("tokengate_token_queue_wait_seconds", "op", op, (0.5, 0.99)), unit="s")
    b.ts("Mean run time by operation", [(
        f"sum by (op) (rate(tokengate_token_run_seconds_sum{op}[{RATE}]))"
        f" / sum by (op) (rate(tokengate_token_run_seconds_count{op}[{RATE}]))", "{{op}}")],
        unit="s")
    b.ts("Queue depth by operation", [(f"sum by (op) (tokengate_queue_depth{op})", "{{op}}")])
    b.row("Failures and retries")
    b.ts("Failures by operation and code", [
        (f"sum by (op, code) (rate(tokengate_tokens_failed_total{op}[{RATE}]))",
         "{{op}} {{code}}")], unit="ops", stack=True)
    b.ts("Retries by operation", [
        (f"sum by (op) (rate(tokengate_tokens_retried_total{op}[{RATE}]))", "{{op}}")],
        unit="ops")
    return b


def nodes():
    node = '{node=~"$node"}'
    b = Board("tokengate-nodes", "TokenGate / Nodes and lanes",
              "Lane utilisation, in-flight tokens and per-core work of each node.", ["nodes"],
              [query_var("node", "Node", "tokengate_node_lane_utilization", "node")])
    b.row("Nodes")
    b.stat("Ready", 'sum(tokengate_nodes{state="ready"})', w=8)
    b.stat("Draining", 'sum(tokengate_nodes{state="draining"})', w=8)
    b.stat("Dead", 'sum(tokengate_nodes{state="dead"})', w=8,
           thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])
    b.row("Lanes")
    b.ts("Lane utilisation", [
        (f"tokengate_node_lane_utilization{node}", "{{node}} / {{lane}}")],
        unit="percentunit", max_=1)
    b.ts("Mean lane utilisation by node", [
        (f"avg by (node) (tokengate_node_lane_utilization{node})", "{{node}}")],
        unit="percentunit", max_=1)
    b.ts("In flight by node and lane", [
        (f"sum by (node, lane) (tokengate_in_flight{node})", "{{node}} / {{lane}}")],
        stack=True)
    b.table("Lane utilisation now", [
        (f"tokengate_node_lane_utilization{node}", "")])
    b.row("CPU and memory")
    b.ts("Node CPU (cores)", [
        (f"sum by (node) (rate(tokengate_node_cpu_seconds{node}[{RATE}]))", "{{node}}")],
        unit="short",
        description="CPU time (user + system) each node process uses per second, from its "
                    "heartbeats: 1 = one core busy.")
    b.ts("Node resident memory", [
        (f"max by (node) (tokengate_node_rss_bytes{node})", "{{node}}")], unit="bytes",
        description="RSS of each node process, from its heartbeats.")
    b.row("Cores")
    b.ts("Tokens/s by node and core", [
        (f"sum by (node, core) (rate(tokengate_node_core_tokens{node}[{RATE}]))",
         "{{node}} core {{core}}")], unit="ops", w=24)
    return b


def cost_model():
    b = Board("tokengate-cost-model", "TokenGate / Cost model",
              "How well the cost model predicts token run time, and how it adapts.",
              ["cost-model"])
    b.row("Model")
    b.stat("Model version", "max(tokengate_model_version)", w=6)
    b.stat("Retrains", "sum(tokengate_model_retrains_total)", w=6)
    b.stat("Median |log(pred/actual)|", "histogram_quantile(0.5, sum by (le) "
           f"(rate(tokengate_model_prediction_error_bucket[{RATE}])))", w=6, unit="none")
    b.stat("Reclassifications/s",
           f"sum(rate(tokengate_model_reclassifications_total[{RATE}]))", w=6, unit="ops")
    b.row("Prediction error")
    b.ts("Prediction error percentiles |log(pred/actual)|",
         quantiles("tokengate_model_prediction_error"), unit="none")
    b.ts("Mean prediction error", [(
        f"sum(rate(tokengate_model_prediction_error_sum[{RATE}]))"
        f" / sum(rate(tokengate_model_prediction_error_count[{RATE}]))", "mean")], unit="none")
    b.row("Adaptation")
    b.ts("Reclassifications by operation", [(
        f"sum by (op, from, to) (rate(tokengate_model_reclassifications_total[{RATE}]))",
        "{{op}}: {{from}} → {{to}}")], unit="ops")
    b.ts("Model version and retrains", [
        ("max(tokengate_model_version)", "version"),
        (f"sum(increase(tokengate_model_retrains_total[{RATE}]))", "retrains")])
    return b


BOARDS = {"tokengate-cluster.json": cluster, "tokengate-operations.json": operations,
          "tokengate-nodes.json": nodes, "tokengate-cost-model.json": cost_model}


def main():
    if "--metrics" in sys.argv[1:]:
        print("\n".join(METRICS))
        return 0
    check = "--check" in sys.argv[1:]
    stale = []
    for name, fn in BOARDS.items():
        text = json.dumps(fn().json(), indent=2, ensure_ascii=False) + "\n"
        for d in OUT_DIRS:
            path = d / name
            if check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path.relative_to(ROOT)))
            else:
                d.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale:
        print("stale dashboards (run grafana/generate.py):", " ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
