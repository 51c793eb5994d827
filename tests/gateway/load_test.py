#!/usr/bin/env python3
"""Gateway under load: W concurrent watching clients (default 500, each
subscribed to every topic) while T-term Leibniz jobs run back to back
(default 100k terms, for at least --min-seconds).
A probe connection measures command round trips (cluster.stats, job.status,
op.list in turn) the whole time. The job must complete. Prints one JSON
object with the figures (client-side latency p50/p90/p99/max, the gateway's
own command-latency histogram, events delivered, gaps, clients seen by
/metrics). Fails unless every job succeeds, every watcher's subscribe reply
is ok and every watcher receives at least one event.

  cluster.py -- python3 load_test.py [--watchers 500] [--terms 100000]
"""
import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time

import websockets

from gwlib import MODE, TOKEN, URL, VIEWER_TOKEN, WS_URL, Client, http_get, leibniz_job


def watchers_main(n, token, ready, stop, out):
    async def one(i, stats):
        try:
            # The token in the upgrade request: hundreds of watchers from one address would
            # otherwise queue for the small unauthenticated pool (docs/protocol.md, Limits).
            ws = await websockets.connect(WS_URL, max_size=16 << 20, open_timeout=60,
                                          extra_headers={"Authorization": f"Bearer {token}"})
        except Exception as e:  # noqa: BLE001 - counted, reported
            stats["connect_errors"] += 1
            stats["last_error"] = repr(e)
            return
        await ws.send(json.dumps({"id": 1, "cmd": "hello", "token": token}))
        await ws.send(json.dumps({"id": 2, "cmd": "subscribe",
                                  "topics": ["job", "failures", "nodes", "ops"]}))
        events = 0
        stats["connected"] += 1
        try:
            async for raw in ws:
                if raw.startswith('{"event"'):
                    stats["events"] += 1
                    events += 1
                    if events == 1:
                        stats["with_events"] += 1
                    if raw.startswith('{"event":"gap"'):
                        stats["gaps"] += 1
                    continue
                # Replies are few: parse them. The subscribe reply must be ok.
                msg = json.loads(raw)
                if msg.get("id") == 2:
                    if msg.get("ok"):
                        stats["subscribed"] += 1
                    else:
                        stats["subscribe_errors"] += 1
                        stats["last_error"] = raw[:200]
                elif msg.get("id") == 1 and not msg.get("ok"):
                    stats["hello_errors"] += 1
                    stats["last_error"] = raw[:200]
        except websockets.ConnectionClosed:
            stats["closed_by_server"] += 1

    async def main():
        stats = dict(connected=0, subscribed=0, subscribe_errors=0, hello_errors=0, events=0,
                     with_events=0, gaps=0, connect_errors=0, closed_by_server=0)
        tasks = []
        for i in range(n):  # ramp up in small bursts
            tasks.append(asyncio.create_task(one(i, stats)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        t0 = time.time()
        while (stats["subscribed"] + stats["subscribe_errors"] + stats["connect_errors"] < n
               and time.time() - t0 < 60):
            await asyncio.sleep(0.1)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        out.put(dict(stats))
        for t in tasks:
            t.cancel()

    asyncio.run(main())


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, round(p / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


PROBE_CMDS = ("cluster.stats", "job.status", "op.list", "ping")


def histogram_quantiles(metrics_text):
    """Bucket bounds holding p50/p99 of the probe's commands, from the gateway's
    own tokengate_gateway_command_seconds histogram (receipt to reply queued)."""
    buckets = {}
    for line in metrics_text.splitlines():
        if line.startswith("tokengate_gateway_command_seconds_bucket{") and any(
                f'cmd="{c}"' in line for c in PROBE_CMDS):
            le = line.split('le="')[1].split('"')[0]
            v = float(line.rsplit(" ", 1)[1])
            buckets[le] = buckets.get(le, 0) + v
    if not buckets:
        return None
    items = sorted(((float("inf") if k == "+Inf" else float(k)), v) for k, v in buckets.items())
    total = items[-1][1]
    res = {"count": int(total)}
    for q in (0.5, 0.99):
        for le, v in items:
            if v >= q * total:
                res[f"p{int(q * 100)}_le_ms"] = le * 1000
                break
    return res


async def probe(terms, min_s, rate):
    """Keeps T-term jobs running back to back for at least min_s seconds (one
    100k-term job alone finishes in well under a second on a real cluster),
    sampling command latency the whole time; every job must succeed."""
    c = await Client.connect(TOKEN)
    lat, jobs = [], []
    t_start = time.time()

    async def submit():
        jid = (await c.ok("submit", job=leibniz_job(terms)))["job_id"]
        jobs.append({"job_id": jid, "submitted": time.time(), "state": "running"})
        return jid

    job_id = await submit()
    i, errors = 0, 0
    while True:
        # ping never leaves the gateway: it separates gateway overhead from the
        # coordinator loop's queueing in the other three.
        cmds = [("cluster.stats", {}), ("job.status", {"job_id": job_id}), ("op.list", {}),
                ("ping", {})]
        name, args = cmds[i % len(cmds)]
        i += 1
        t0 = time.perf_counter()
        r = await c.call(name, **args)
        lat.append((name, (time.perf_counter() - t0) * 1000))
        if not r["ok"]:
            errors += 1
        elif name == "job.status" and r["result"]["state"] != "running":
            j = jobs[-1]
            j.update(state=r["result"]["state"], total=r["result"]["total"],
                     done=r["result"]["done"], wall_s=time.time() - j["submitted"])
            if time.time() - t_start < min_s and j["state"] == "succeeded":
                job_id = await submit()
            else:
                break
        if time.time() - t_start > 600:
            break
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))
    await c.close()
    return dict(jobs=jobs, latencies=lat, errors=errors, seconds=time.time() - t_start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--watchers", type=int, default=500)
    ap.add_argument("--terms", type=int, default=100_000)
    ap.add_argument("--min-seconds", type=float, default=15)
    ap.add_argument("--rate", type=float, default=30, help="probe commands per second")
    a = ap.parse_args()

    ready, stop, out = mp.Event(), mp.Event(), mp.Queue()
    w = mp.Process(target=watchers_main,
                   args=(a.watchers, VIEWER_TOKEN or TOKEN, ready, stop, out), daemon=True)
    t0 = time.time()
    w.start()
    ready.wait(120)
    connect_s = time.time() - t0
    _, m0 = http_get("/metrics")
    gauge = next((float(l.split()[-1]) for l in m0.splitlines()
                  if l.startswith("tokengate_ws_clients")), None)
    res = asyncio.run(probe(a.terms, a.min_seconds, a.rate))
    stop.set()
    wstats = out.get(timeout=30)
    w.join(10)
    _, m1 = http_get("/metrics")
    samples = res.pop("latencies")
    lat = sorted(v for _, v in samples)
    by_cmd = {}
    for name in sorted({n for n, _ in samples}):
        v = sorted(x for n, x in samples if n == name)
        by_cmd[name] = {"n": len(v), "p50_ms": round(pct(v, 50), 3), "p99_ms": round(pct(v, 99), 3)}
    jobs = res["jobs"]
    walls = sorted(j["wall_s"] for j in jobs if "wall_s" in j)
    report = {
        "mode": MODE, "gateway": URL, "watchers": a.watchers, "terms": a.terms,
        "watchers_connected": wstats["connected"], "watchers_subscribed": wstats["subscribed"],
        "watchers_subscribe_errors": wstats["subscribe_errors"] + wstats["hello_errors"],
        "watchers_with_events": wstats["with_events"],
        "watcher_last_error": wstats.get("last_error"),
        "connect_s": round(connect_s, 2), "ws_clients_gauge": gauge,
        "jobs": {"count": len(jobs), "succeeded": sum(j["state"] == "succeeded" for j in jobs),
                 "tokens_each": jobs[0].get("total"),
                 "wall_s_min": round(walls[0], 3) if walls else None,
                 "wall_s_median": round(walls[len(walls) // 2], 3) if walls else None,
                 "wall_s_max": round(walls[-1], 3) if walls else None,
                 "seconds_under_load": round(res["seconds"], 1)},
        "loadavg_1m": os.getloadavg()[0],
        # Gateway command latency under load, client side (send to reply).
        "command_latency_ms": {"p50": round(pct(lat, 50), 3), "p99": round(pct(lat, 99), 3)},
        "probe": {"commands": len(lat), "errors": res["errors"], "rate_per_s": a.rate,
                  "p50_ms": round(pct(lat, 50), 3), "p90_ms": round(pct(lat, 90), 3),
                  "p99_ms": round(pct(lat, 99), 3), "max_ms": round(lat[-1], 3),
                  "by_command": by_cmd},
        "gateway_histogram": histogram_quantiles(m1),
        "events_delivered": wstats["events"], "gap_notices": wstats["gaps"],
        "connect_errors": wstats["connect_errors"], "closed_by_server": wstats["closed_by_server"],
    }
    print(json.dumps(report, indent=2))
    problems = []
    if not jobs or not all(j["state"] == "succeeded" for j in jobs):
        problems.append("a job did not succeed")
    if wstats["subscribed"] != a.watchers or wstats["subscribe_errors"] or wstats["hello_errors"]:
        problems.append(f"{wstats['subscribed']} of {a.watchers} watchers got an ok subscribe "
                        f"reply ({wstats['subscribe_errors']} errors; {wstats.get('last_error')})")
    if wstats["with_events"] != a.watchers:
        problems.append(f"only {wstats['with_events']} of {a.watchers} watchers received an event")
    if res["errors"]:
        problems.append(f"{res['errors']} probe commands failed")
    if wstats["closed_by_server"]:
        problems.append(f"the server closed {wstats['closed_by_server']} watchers")
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    print(f"gateway command latency under load: p50 {report['command_latency_ms']['p50']} ms, "
          f"p99 {report['command_latency_ms']['p99']} ms", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
