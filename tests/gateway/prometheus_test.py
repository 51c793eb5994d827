#!/usr/bin/env python3
"""A real Prometheus server (Debian package `prometheus`) scrapes the
gateway's /metrics; after a job completes, a PromQL query for completed
tokens returns the job's token count. Run through cluster.py on a fresh
cluster (the count is compared with everything completed so far)."""
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from gwlib import MODE, TOKEN, URL, Client, leibniz_job, leibniz_token_count

PROMETHEUS = os.environ.get("PROMETHEUS", shutil.which("prometheus") or "/usr/bin/prometheus")
TERMS = int(os.environ.get("TG_PROM_TERMS", "100000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(prom, expr):
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{prom}/api/v1/query?{q}", timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body}")
    return body["data"]["result"]


async def run_job():
    c = await Client.connect(TOKEN)
    before = (await c.ok("cluster.stats"))["tokens_completed"]
    job_id = (await c.ok("submit", job=leibniz_job(TERMS)))["job_id"]
    deadline = time.time() + 300
    while True:
        st = await c.ok("job.status", job_id=job_id)
        if st["state"] != "running":
            break
        if time.time() > deadline:
            raise RuntimeError(f"job {job_id} still running: {st}")
        await asyncio.sleep(0.2)
    if st["state"] != "succeeded":
        raise RuntimeError(f"job ended {st['state']}: {st}")
    after = (await c.ok("cluster.stats"))["tokens_completed"]
    await c.close()
    return job_id, st, before, after


def main():
    if not os.access(PROMETHEUS, os.X_OK):
        print(f"FAIL: prometheus binary not found ({PROMETHEUS}); install Debian 'prometheus'",
              file=sys.stderr)
        return 1
    target = urllib.parse.urlparse(URL).netloc
    tmp = tempfile.mkdtemp(prefix="tg-prom-")
    port = free_port()
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tokengate
    metrics_path: /metrics
    static_configs:
      - targets: ['{target}']
""")
    log = open(os.path.join(tmp, "prometheus.log"), "w")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp}/prometheus.yml",
                             f"--storage.tsdb.path={tmp}/data",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 30
        while True:
            try:
                if query(base, "up{job='tokengate'}"):
                    break
            except OSError:
                pass
            if prom.poll() is not None or time.time() > end:
                raise RuntimeError(f"prometheus did not start; see {tmp}/prometheus.log")
            time.sleep(0.3)

        job_id, st, before, after = asyncio.run(run_job())
        expected = leibniz_token_count(TERMS)
        print(f"job {job_id} {st['state']}: {st['done']}/{st['total']} tokens; "
              f"cluster completed {before} -> {after}")
        if st["total"] != expected:
            raise RuntimeError(f"job total {st['total']} != {expected}")

        expr = "sum(tokengate_tokens_completed_total)"
        end = time.time() + 30
        value = None
        while time.time() < end:
            up = query(base, "up{job='tokengate'}")
            res = query(base, expr)
            if res:
                value = float(res[0]["value"][1])
                if value >= after:
                    break
            time.sleep(0.5)
        print(f"prometheus: up={up[0]['value'][1] if up else '?'}; {expr} = {value}")
        if value is None:
            raise RuntimeError("no tokengate_tokens_completed_total series scraped")
        if round(value) - before != expected:
            raise RuntimeError(f"Prometheus says {value} completed ({before} before the job); "
                               f"the job had {expected}")
        print(f"prometheus_test: ok ({MODE}): Prometheus reports the job's {expected} tokens")
        return 0
    finally:
        prom.terminate()
        try:
            prom.wait(10)
        except subprocess.TimeoutExpired:
            prom.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - report any failure as a test failure
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
