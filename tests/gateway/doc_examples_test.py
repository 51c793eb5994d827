#!/usr/bin/env python3
"""Checks the examples in docs/protocol.md against a live gateway, so the
document cannot drift from what the gateway says.

Every example marked `<!-- doc-check -->` in the document is a ```json block
with one request followed by a ```json block with the documented `result`
(or, for an error, {"error": {"code": ...}}). The test sends the request on an
admin connection (after the requests of the examples before it, in document
order: the Leibniz `submit` is waited for before `job.status`) and compares:

- every key the document shows must be in the live result, with a value of
  the same JSON type (objects and arrays recursively; an object containing
  "..." may have more keys, an array ending in "..." more items);
- values must be equal, except keys in VOLATILE (timings, rates, counters
  that depend on what else ran) where only the type is compared;
- "job_id" placeholders: a documented job id matches the id the preceding
  submit returned (ids are strings).

Run through cluster.py with the real coordinator and nodes.
"""
import asyncio
import json
import os
import re
import sys
import time

from gwlib import TOKEN, Client

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "protocol.md")
VOLATILE = {
    "wall_ms", "wall_s", "rate_per_s", "mean_run_us", "throughput_per_s", "heartbeat_age_ms",
    "utilization", "rss_bytes", "pid", "session", "completed", "queued", "running", "in_flight",
    "jobs_running", "jobs_total", "tokens_admitted", "tokens_completed", "tokens_failed",
    "tokens_retried", "tokens_live", "admission_rejects", "nodes_lost", "nodes_disconnected",
    "tokens_requeued", "tokens_returned", "node", "cores", "workers", "speed_factor", "ops",
    "nodes_ready", "nodes_draining", "nodes_dead", "job_id", "token_id", "id", "cancelled",
    "dropped", "requeued", "commands", "lanes", "op", "weight", "effective_weight",
    "nodes_quarantined", "run_timeouts",
}


def examples(text):
    """(line, request, expected) for every doc-check example."""
    out = []
    for m in re.finditer(r"<!-- doc-check -->\s*```json\n(.*?)```\s*```json\n(.*?)```", text, re.S):
        line = text[:m.start()].count("\n") + 1
        out.append((line, json.loads(m.group(1)), json.loads(m.group(2))))
    return out


def compare(doc, live, path, errors, key=None):
    if isinstance(doc, dict):
        if not isinstance(live, dict):
            errors.append(f"{path}: documented an object, got {json.dumps(live)[:80]}")
            return
        open_ = "..." in doc
        for k, v in doc.items():
            if k == "...":
                continue
            if k not in live:
                errors.append(f"{path}.{k}: documented, missing in the live reply")
                continue
            compare(v, live[k], f"{path}.{k}", errors, k)
        if not open_:
            extra = set(live) - set(doc)
            if extra:
                errors.append(f"{path}: live reply has undocumented keys {sorted(extra)}")
        return
    if isinstance(doc, list):
        if not isinstance(live, list):
            errors.append(f"{path}: documented an array, got {json.dumps(live)[:80]}")
            return
        open_ = bool(doc) and doc[-1] == "..."
        items = doc[:-1] if open_ else doc
        if key in VOLATILE:
            items = items[:1]
            open_ = True
        if not open_ and len(items) != len(live):
            errors.append(f"{path}: {len(items)} items documented, {len(live)} live")
        for i, (d, l) in enumerate(zip(items, live)):
            compare(d, l, f"{path}[{i}]", errors, key)
        return
    if doc == "...":
        return
    same_type = (type(doc) is type(live)) or (
        isinstance(doc, (int, float)) and isinstance(live, (int, float))
        and not isinstance(doc, bool) and not isinstance(live, bool))
    if not same_type:
        errors.append(f"{path}: documented {json.dumps(doc)}, live {json.dumps(live)} (type)")
        return
    if key in VOLATILE:
        return
    if doc != live:
        errors.append(f"{path}: documented {json.dumps(doc)}, live {json.dumps(live)}")


async def main():
    with open(DOC) as f:
        exs = examples(f.read())
    if len(exs) < 10:
        print(f"only {len(exs)} doc-check examples found", file=sys.stderr)
        return 1
    c = await Client.connect(TOKEN)
    errors = []
    last_job = None
    for line, req, expected in exs:
        req = dict(req)
        req.pop("id", None)
        cmd = req.pop("cmd")
        if "token" in req:
            req["token"] = TOKEN  # the document's "s3cret" is the admin token here
        if last_job is not None:
            for k in ("job_id",):
                if k in req:
                    req[k] = last_job
        reply = await c.call(cmd, **req)
        if cmd == "submit" and reply.get("ok"):
            last_job = reply["result"]["job_id"]
            # Let the job finish so job.status shows its outputs.
            end = time.time() + 120
            while time.time() < end:
                st = await c.ok("job.status", job_id=last_job)
                if st["state"] != "running":
                    break
                await asyncio.sleep(0.1)
        live = reply.get("result") if reply.get("ok") else {"error": reply.get("error")}
        before = len(errors)
        compare(expected, live, f"line {line} {cmd}", errors)
        status = "ok" if len(errors) == before else "MISMATCH"
        print(f"{status}: line {line}: {cmd} -> {json.dumps(live)[:160]}")
    for e in errors:
        print("DOC DRIFT:", e, file=sys.stderr)
    print(f"doc examples: {len(exs)} checked, {len(errors)} mismatch(es)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
