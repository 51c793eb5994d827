#!/usr/bin/env python3
"""Second, independent client of the gateway protocol (python3-websockets):
every command, auth refusal, origin refusal, bad input, oversize frame,
events, and the effect of op.pause / op.resume / op.drain on a running job.
Run through cluster.py (or with TG_GATEWAY_URL/TG_GATEWAY_TOKEN set)."""
import asyncio
import json
import sys
import time

import websockets

RATE = 50_000  # leibniz.term tokens/s while the steering test runs

from gwlib import (MODE, OPERATOR_TOKEN, TOKEN, URL, VIEWER_TOKEN, Client, CommandError, WS_URL, http_get,
                   leibniz_job, leibniz_token_count)

checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


async def op_status(c, name):
    ops = (await c.ok("op.list"))["ops"]
    return next(o for o in ops if o["op"] == name)


async def test_auth_and_roles():
    anon = await Client.connect()
    check(await anon.error("op.list") == "unauthenticated", "anonymous op.list refused")
    check(await anon.error("hello", token="not-the-token") == "unauthenticated", "bad token")
    hello = await anon.ok("hello", protocol=1)
    check(hello["protocol"] == 1 and hello["role"] == "none", f"hello without token: {hello}")
    await anon.close()
    if VIEWER_TOKEN:
        v = await Client.connect(VIEWER_TOKEN)
        check((await v.ok("whoami"))["role"] == "viewer", "viewer role")
        check("ops" in await v.ok("op.list"), "viewer can read")
        check(await v.error("op.pause", op="leibniz.term") == "permission_denied",
              "viewer cannot pause")
        check(await v.error("cluster.limits", admission_limit=1) == "permission_denied",
              "viewer cannot set limits")
        await v.close()
    if OPERATOR_TOKEN:
        o = await Client.connect(OPERATOR_TOKEN)
        check((await o.ok("whoami"))["role"] == "operator", "operator role")
        check((await o.ok("op.pause", op="leibniz.chunk"))["op"]["paused"], "operator can pause")
        check(not (await o.ok("op.resume", op="leibniz.chunk"))["op"]["paused"],
              "operator can resume")
        check(await o.error("cluster.limits", admission_limit=1) == "permission_denied",
              "operator cannot set cluster limits")
        check(await o.error("node.evict", node="nobody") == "permission_denied",
              "operator cannot evict nodes")
        await o.close()
    # Bad token on the upgrade itself.
    try:
        await websockets.connect(WS_URL + "?token=wrong")
        check(False, "upgrade with a bad token must be refused")
    except websockets.InvalidStatusCode as e:
        check(e.status_code == 401, f"bad token upgrade -> {e.status_code}")


async def test_origin():
    try:
        await websockets.connect(WS_URL, origin="http://evil.example")
        check(False, "foreign origin must be refused")
    except websockets.InvalidStatusCode as e:
        check(e.status_code == 403, f"foreign origin -> {e.status_code}")
    same = URL  # the page's own origin is accepted
    ws = await websockets.connect(WS_URL, origin=same)
    await ws.close()


async def test_bad_input():
    c = await Client.connect(TOKEN)
    for text, code in [("{oops", "invalid_argument"), ("[]", "invalid_argument"),
                       ('{"cmd": 5}', "invalid_argument"), ('{"cmd": "no.such"}', "unimplemented")]:
        r = await c.raw(text)
        check(not r["ok"] and r["error"]["code"] == code, f"{text!r} -> {r}")
    check(await c.error("job.status", job_id="one") == "invalid_argument", "wrong type")
    check(await c.error("job.status") == "invalid_argument", "missing field")
    check(await c.error("op.pause", op=3) == "invalid_argument", "op must be a string")
    check(await c.error("subscribe", topics=["nope"]) == "invalid_argument", "unknown topic")
    check(await c.error("submit", job={"tokens": "x"}) == "invalid_argument", "bad job")
    check(await c.error("job.status", job_id=987654321) == "not_found", "unknown job")
    check(await c.error("op.pause", op="no.such.op") == "not_found", "unknown op")
    if MODE == "real":  # a job naming an op no node offers is refused, not left waiting
        err = await c.call("submit", job={"tokens": [{"op": "leibniz.trem", "args": [1]}]})
        check(not err["ok"] and err["error"]["code"] == "not_found"
              and "leibniz.trem" in err["error"]["message"], f"unknown op in a job: {err}")
    check((await c.ok("ping"))["pong"], "connection survives bad input")
    # Oversize frame: the gateway closes with 1009 (message too big).
    hello = await c.ok("hello")
    limit = hello["limits"]["max_frame_bytes"]
    try:
        await c.ws.send(json.dumps({"id": 1, "cmd": "ping", "data": "x" * (limit + 10)}))
    except websockets.exceptions.ConnectionClosed:
        pass  # the gateway closed (1009) before our write finished
    try:
        await asyncio.wait_for(c.ws.wait_closed(), 10)
    except asyncio.TimeoutError:
        check(False, "oversize frame did not close the connection")
    check(c.ws.close_code == 1009, f"oversize close code {c.ws.close_code}")


async def test_every_command():
    c = await Client.connect(TOKEN)
    hello = await c.ok("hello")
    check(hello["role"] == "admin", f"admin role: {hello['role']}")
    for cmd in ["submit", "job.status", "job.list", "job.cancel", "token.cancel", "op.pause",
                "op.resume", "op.drain", "op.cancel_running", "op.limits", "op.list",
                "node.list", "node.drain", "node.undrain", "node.evict", "cluster.stats",
                "cluster.limits", "subscribe", "unsubscribe"]:
        check(cmd in hello["commands"], f"{cmd} listed in hello")

    stats = await c.ok("cluster.stats")
    check(stats["nodes_ready"] >= 1, f"a ready node: {stats}")
    nodes = (await c.ok("node.list"))["nodes"]
    check(len(nodes) >= 1 and nodes[0]["lanes"], "nodes with lanes")
    await c.ok("subscribe", topics=["job", "ops", "nodes", "failures"])

    # A job large enough to still be running while we steer it.
    terms = 500_000 if MODE == "real" else 200_000
    # A release cluster runs 500k terms in well under a second: cap the rate so the job is
    # still running while we steer it (the limit itself is part of what is tested).
    await c.ok("op.limits", op="leibniz.term", max_in_flight=0, max_rate_per_s=RATE)
    job_id = (await c.ok("submit", job=leibniz_job(terms)))["job_id"]
    st = await c.ok("job.status", job_id=job_id)
    check(st["total"] == leibniz_token_count(terms), f"job total {st}")
    check(any(j["job_id"] == job_id for j in (await c.ok("job.list"))["jobs"]), "job listed")

    # Pause: after the ack (and the in-flight tokens finishing) nothing of the
    # op completes any more.
    paused = (await c.ok("op.pause", op="leibniz.term"))["op"]
    check(paused["paused"] and paused["state"] == "paused", f"paused: {paused}")
    # The ack carries the op's counters at the moment the loop paused it: at
    # most the tokens already running then may still complete.
    await asyncio.sleep(0.5)
    before = (await op_status(c, "leibniz.term"))["completed"]
    check(before <= paused["completed"] + paused["running"],
          f"tokens dispatched after the pause ack: completed {paused['completed']} + running "
          f"{paused['running']} at ack, {before} later")
    await asyncio.sleep(1.0)
    after = (await op_status(c, "leibniz.term"))["completed"]
    check(after == before, f"paused op still completed tokens: {before} -> {after}")
    print(f"    pause: completed {paused['completed']} (+{paused['running']} running) at ack, "
          f"{after} 1.5 s later")
    resumed = (await c.ok("op.resume", op="leibniz.term"))["op"]
    check(not resumed["paused"], "resumed")
    await asyncio.sleep(0.5)
    check((await op_status(c, "leibniz.term"))["completed"] > after, "progress after resume")

    lim = (await c.ok("op.limits", op="leibniz.term", max_in_flight=64,
                      max_rate_per_s=0))["op"]
    check(lim["limits"]["max_in_flight"] == 64, f"limits: {lim}")
    await c.ok("op.limits", op="leibniz.term", max_in_flight=0, max_rate_per_s=RATE)

    # Events arrived for the job and the ops.
    seen = set()
    deadline = time.time() + 5
    while {"job", "ops"} - seen and time.time() < deadline:
        try:
            ev = await asyncio.wait_for(c.events.get(), 1)
            seen.add(ev["event"])
        except asyncio.TimeoutError:
            pass
    check({"job", "ops"} <= seen, f"events seen: {seen}")

    # Drain drops queued tokens of the op; the job ends cancelled/failed.
    await c.ok("op.pause", op="leibniz.term")
    dr = await c.ok("op.drain", op="leibniz.term")
    check(dr["dropped"] > 0, f"drain dropped queued tokens: {dr}")
    left = await op_status(c, "leibniz.term")
    check(left["queued"] == 0, f"queue empty after drain: {left}")
    print(f"    drain: dropped {dr['dropped']}, queued now {left['queued']}")
    await c.ok("op.resume", op="leibniz.term")
    # The dropped tokens never run: after the resume at most those running at the drain finish.
    await asyncio.sleep(0.5)
    later = await op_status(c, "leibniz.term")
    check(later["completed"] <= left["completed"] + left["running"],
          f"drained tokens ran: {left} -> {later}")
    check(later["cancelled"] - left["cancelled"] >= 0 and left["cancelled"] >= dr["dropped"],
          f"drained tokens counted cancelled: {left}")
    # A finished token (run or drained): nothing to cancel. While its job lives the reply
    # is cancelled:false; the drain cancelled every chunk's input, so the job has ended
    # and the token is no longer known: not_found.
    js = await c.ok("job.status", job_id=job_id)
    # Token ids: job_id * 2^32 + index, sent as a string (64-bit).
    tc = await c.call("token.cancel", token_id=str((int(job_id) << 32) | 1))
    if js["state"] == "running":
        check(tc["ok"] and tc["result"]["cancelled"] is False, f"token.cancel finished: {tc}")
    else:
        check(not tc["ok"] and tc["error"]["code"] == "not_found", f"token.cancel gone: {tc}")
    jc = await c.ok("job.cancel", job_id=job_id)
    check(jc["job_id"] == job_id and jc["cancelled"] >= 0, f"job.cancel: {jc}")
    deadline = time.time() + 30
    while (st := await c.ok("job.status", job_id=job_id))["state"] == "running":
        check(time.time() < deadline, "job still running after cancel")
        await asyncio.sleep(0.1)
    check(st["state"] in ("cancelled", "failed"), f"job after cancel: {st}")
    check(st["done"] + st["failed"] + st["cancelled"] == st["total"],
          f"every token accounted for after cancel: {st}")
    print(f"    cancel: {st['state']}, done {st['done']}, cancelled {st['cancelled']} of {st['total']}")

    # Admission limit (admin): a job bigger than the limit is refused.
    original = (await c.ok("cluster.stats"))["admission_limit"]
    lim = await c.ok("cluster.limits", admission_limit=100)
    check(lim["admission_limit"] == 100, f"admission limit: {lim}")
    check(await c.error("submit", job=leibniz_job(10_000)) == "resource_exhausted",
          "admission reject")
    check((await c.ok("cluster.limits", admission_limit=original))["admission_limit"] == original,
          "admission limit restored")

    # Nodes: drain / undrain / evict (evict last: it removes a node).
    node = nodes[-1]["node"]
    check((await c.ok("node.drain", node=node))["node"]["state"] == "draining", "node drained")
    check((await c.ok("node.undrain", node=node))["node"]["state"] == "ready", "node undrained")
    if len(nodes) > 1:
        ev = await c.ok("node.evict", node=node)
        check(ev["node"] == node and ev["requeued"] >= 0, f"evict: {ev}")
    check(await c.error("node.drain", node="no-such-node") == "not_found", "unknown node")

    check((await c.ok("unsubscribe"))["topics"] == [], "unsubscribed")
    await c.close()


async def wait_job_end(c, job_id, within_s):
    """job.status once the job has left `running`, or an assertion after within_s."""
    deadline = time.time() + within_s
    while (st := await c.ok("job.status", job_id=job_id))["state"] == "running":
        check(time.time() < deadline, f"job {job_id} still running after {within_s}s: {st}")
        await asyncio.sleep(0.05)
    return st


async def test_cancel_running():
    """op.cancel_running ends every running token of the op: the ones a node
    had queued come back cancelled before starting, the ones running see the
    cooperative flag and return the operation's own message. The jobs end
    within seconds with no job.cancel, and no token is left 'running'."""
    if MODE != "real":
        print("    (skipped: needs real nodes)")
        return
    c = await Client.connect(TOKEN)
    slow = {"wait_cancel": 6, "sleep": 4}  # both observe the flag; 60 s each otherwise
    before = {op: await op_status(c, op) for op in slow}
    jobs = {}
    for op, n in slow.items():
        jobs[op] = (await c.ok("submit", job={"name": f"cancel-running-{op}", "tokens": [
            {"op": op, "repeat": n, "args": [60_000]}]}))["job_id"]
    # Wait until the coordinator has dispatched them all (credits are ample).
    deadline = time.time() + 10
    for op, n in slow.items():
        while (await op_status(c, op))["running"] - before[op]["running"] < n:
            check(time.time() < deadline, f"{op} tokens never all dispatched")
            await asyncio.sleep(0.05)
    t0 = time.time()
    for op, n in slow.items():
        cr = await c.ok("op.cancel_running", op=op)
        check(cr["op"] == op and cr["cancelled"] == n, f"cancel_running {op}: {cr} (want {n})")
    for op, n in slow.items():
        st = await wait_job_end(c, jobs[op], 5)
        check(st["state"] == "cancelled" and st["cancelled"] == n and st["done"] == 0
              and st["failed"] == 0 and st["running"] == 0, f"{op} job after cancel_running: {st}")
        outs = st["outputs"]
        check(len(outs) == n and all(not o["ok"] and o["error"]["code"] == "cancelled" for o in outs),
              f"{op} outputs all cancelled: {outs}")
        own = [o for o in outs if o["error"]["message"] == f"{op} cancelled"]
        unstarted = [o for o in outs if "before the token started" in o["error"]["message"]]
        # At least one token was running (its op saw the flag); the rest never started.
        check(own and len(own) + len(unstarted) == n, f"{op} cancel messages: {outs}")
        after = await op_status(c, op)
        check(after["running"] == before[op]["running"], f"{op} nothing left running: {after}")
        check(after["cancelled"] - before[op]["cancelled"] == n
              and after["retried"] == before[op]["retried"], f"{op} cancelled, not retried: {after}")
        print(f"    cancel_running {op}: {len(own)} saw the flag, {len(unstarted)} never started, "
              f"job {st['state']} {time.time() - t0:.2f}s after the command")
    # The lanes are free again: a new token of the op runs to completion.
    jid = (await c.ok("submit", job={"tokens": [{"op": "wait_cancel", "args": [10]}]}))["job_id"]
    st = await wait_job_end(c, jid, 10)
    check(st["state"] == "succeeded", f"wait_cancel after cancel_running: {st}")
    await c.close()


async def test_token_cancel_limits_drain():
    """Effects proven on real nodes: token.cancel of a token still queued (its op
    paused) ends it cancelled while its siblings run; max_in_flight and
    max_rate_per_s hold when sampled; op.drain's dropped tokens never run."""
    if MODE != "real":
        print("    (skipped: needs real nodes)")
        return
    c = await Client.connect(TOKEN)
    # token.cancel on a queued token.
    await c.ok("op.pause", op="sleep")
    jid = (await c.ok("submit", job={"tokens": [{"op": "sleep", "repeat": 3, "args": [10]}]}))["job_id"]
    check((await op_status(c, "sleep"))["queued"] == 3, "three sleep tokens queued while paused")
    tc = await c.ok("token.cancel", token_id=str((int(jid) << 32) | 1))
    check(tc["cancelled"] is True, f"token.cancel of a queued token: {tc}")
    await c.ok("op.resume", op="sleep")
    st = await wait_job_end(c, jid, 10)
    check(st["state"] == "cancelled" and st["done"] == 2 and st["cancelled"] == 1,
          f"job after token.cancel: {st}")
    out = st["outputs"][1]
    check(not out["ok"] and out["error"]["code"] == "cancelled", f"cancelled token output: {out}")
    check(all(o["ok"] for i, o in enumerate(st["outputs"]) if i != 1), f"others ran: {st}")

    # max_in_flight: sampled running never exceeds it, and reaches it.
    lim = (await c.ok("op.limits", op="sleep", max_in_flight=3))["op"]
    check(lim["limits"]["max_in_flight"] == 3, f"limits: {lim}")
    jid = (await c.ok("submit", job={"tokens": [{"op": "sleep", "repeat": 40, "args": [50]}]}))["job_id"]
    peak, samples = 0, 0
    while (await c.ok("job.status", job_id=jid))["state"] == "running" and samples < 1000:
        peak = max(peak, (await op_status(c, "sleep"))["running"])
        samples += 1
        await asyncio.sleep(0.05)
    check(peak == 3, f"max_in_flight 3: peak running sampled {peak} over {samples} samples")
    check((await c.ok("job.status", job_id=jid))["state"] == "succeeded", "limited job succeeded")
    await c.ok("op.limits", op="sleep")
    print(f"    max_in_flight 3: peak {peak} over {samples} samples")

    # max_rate_per_s: 200/s on echo (burst 20).
    await c.ok("op.limits", op="echo", max_rate_per_s=200)
    before = (await op_status(c, "echo"))["completed"]
    jid = (await c.ok("submit", job={"tokens": [{"op": "echo", "repeat": 2000, "args": [1]}]}))["job_id"]
    t0 = time.time()
    await asyncio.sleep(2)
    ran = (await op_status(c, "echo"))["completed"] - before
    secs = time.time() - t0
    check(100 * secs <= ran <= 200 * secs + 60, f"max_rate_per_s 200: {ran} tokens in {secs:.2f}s")
    print(f"    max_rate_per_s 200: {ran} tokens in {secs:.2f}s")
    await c.ok("op.limits", op="echo")
    check((await wait_job_end(c, jid, 10))["state"] == "succeeded", "rate-limited job succeeded")

    # op.drain: every queued token dropped, none of them ever runs.
    await c.ok("op.pause", op="echo")
    before = await op_status(c, "echo")
    jid = (await c.ok("submit", job={"tokens": [{"op": "echo", "repeat": 500, "args": [1]}]}))["job_id"]
    dr = await c.ok("op.drain", op="echo")
    check(dr["dropped"] == 500, f"drain dropped every queued token: {dr}")
    await c.ok("op.resume", op="echo")
    st = await wait_job_end(c, jid, 5)
    check(st["state"] == "cancelled" and st["cancelled"] == 500 and st["done"] == 0,
          f"job after drain: {st}")
    await asyncio.sleep(0.3)
    after = await op_status(c, "echo")
    check(after["completed"] == before["completed"], f"drained tokens ran: {before} -> {after}")
    check(after["cancelled"] - before["cancelled"] == 500, f"drained counted cancelled: {after}")
    await c.close()


async def test_paging_and_numbers():
    """A 100k-output job read page by page (no reply over max_reply_bytes);
    non-finite doubles round-trip; ids are strings; the integer rule."""
    if MODE != "real":
        return
    c = await Client.connect(TOKEN)
    limits = (await c.ok("hello", token=TOKEN))["limits"]
    max_reply = limits["max_reply_bytes"]
    n = 100_000
    jid = (await c.ok("submit", job={"name": "many", "tokens": [
        {"op": "echo", "repeat": n, "args": [{"value": 0, "step": 1}], "output": True,
         "name": "e"}]}))["job_id"]
    check(isinstance(jid, str), f"job_id is a string: {jid!r}")
    await wait_job_end(c, jid, 120)
    seen, offset, pages, biggest = 0, 0, 0, 0
    while offset is not None:
        r = await c.call("job.status", job_id=jid, offset=offset, limit=1000)
        biggest = max(biggest, len(json.dumps(r)))
        check(r["ok"], f"page at {offset}: {r}")
        res = r["result"]
        check(res["outputs_total"] == n, f"outputs_total {res['outputs_total']}")
        for o in res["outputs"]:
            check(o["value"] == o["index"], f"output value {o}")
        seen += len(res["outputs"])
        offset = res["next"]
        pages += 1
    check(seen == n, f"paged {seen} of {n} outputs")
    check(biggest <= max_reply, f"largest page {biggest} > max_reply_bytes {max_reply}")
    print(f"    paged {n} outputs in {pages} pages, largest reply {biggest} bytes")
    # Non-finite doubles: in and out as {"double": ...}.
    jid = (await c.ok("submit", job={"tokens": [
        {"op": "echo", "args": [{"double": "inf"}], "output": True, "name": "a"},
        {"op": "echo", "args": [{"double": "-inf"}], "output": True, "name": "b"},
        {"op": "echo", "args": [{"double": "nan"}], "output": True, "name": "c"}]}))["job_id"]
    st = await wait_job_end(c, jid, 10)
    vals = {o["name"]: o["value"] for o in (await c.ok("job.status", job_id=jid))["outputs"]}
    check(vals == {"a": {"double": "inf"}, "b": {"double": "-inf"}, "c": {"double": "nan"}},
          f"non-finite round trip: {vals} ({st})")
    # One integer rule.
    r = await c.raw('{"id":"big","cmd":"job.status","job_id":18446744073709551616}', "big")
    check(r["error"]["code"] == "invalid_argument", f"2^64: {r}")
    bad = {"tokens": [{"op": "echo", "repeat": 3,
                       "args": [{"value": 9223372036854775806, "step": 1}]}]}
    check(await c.error("submit", job=bad) == "invalid_argument", "value+step overflow")
    await c.close()


async def test_http():
    status, body = http_get("/metrics")
    check(status == 200 and "tokengate_ws_clients" in body, "metrics")
    check("tokengate_gateway_command_seconds_bucket" in body, "command latency histogram")
    check(http_get("/healthz")[0] == 200, "healthz")
    check(http_get("/readyz")[0] == 200, "readyz")
    status, page = http_get("/")
    check(status == 200 and "TokenGate" in page, "control page")


async def test_pipelined_submits():
    """One session sends many submits before reading any reply (docs/protocol.md, "Pipelining"):
    the gateway answers each, matched by id, with distinct job ids."""
    c = await Client.connect(TOKEN)
    n = 60  # under the per-connection burst (100)
    t0 = time.time()
    replies = await asyncio.gather(*[c.call("submit", job=leibniz_job(10_000)) for _ in range(n)])
    dt = time.time() - t0
    check(all(r["ok"] for r in replies), f"pipelined submits: {[r for r in replies if not r['ok']][:3]}")
    ids = {r["result"]["job_id"] for r in replies}
    check(len(ids) == n, f"{n} pipelined submits got {len(ids)} distinct job ids")
    print(f"    {n} pipelined submits acknowledged in {dt * 1000:.1f} ms")
    await c.close()


async def main():
    for t in [test_http, test_auth_and_roles, test_origin, test_bad_input, test_cancel_running,
              test_token_cancel_limits_drain, test_every_command, test_paging_and_numbers,
              test_pipelined_submits]:
        t0 = time.time()
        await t()
        print(f"ok  {t.__name__} ({time.time() - t0:.2f}s)")
    print(f"ws_client_test: {checks} checks passed against {MODE} gateway {URL}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (AssertionError, CommandError) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
