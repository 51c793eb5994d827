#!/usr/bin/env python3
"""Denial-of-service checks against a real gateway (docs/protocol.md, "Limits").

  attack_test.py lockout   4,200 idle unauthenticated WebSocket upgrades (the
                           "lock the operators out" attack), twice, while an
                           admin connects and works.
  attack_test.py memory    1,000 never-reading clients sending ~1 MB pings
                           without a token, then 200 never-reading clients with
                           a viewer token doing the same: coordinator RSS is
                           sampled and an operator must still be served.
  attack_test.py guess     token guessing by reconnecting with a wrong token in the
                           upgrade request as fast as possible, from one address and
                           then from 50, for TG_GUESS_SECONDS (default 20) each:
                           counts the guesses the gateway actually checked (HTTP 401)
                           and the ones refused unchecked (429, back-off).
  attack_test.py all       all three (default).

Run through cluster.py (it sets TG_GATEWAY_URL, the tokens and
TG_COORDINATOR_PID). Prints one JSON line of figures per attack. With
TG_ATTACK_ASSERT=0 it only measures (how the "before" figures in
docs/protocol.md were taken with the previous build); otherwise it exits 1
when an expectation fails. Attackers bind source addresses 127.0.0.2-127.0.0.x
(all loopback on Linux) so per-address limits are exercised; the admin uses
127.0.0.1.
"""
import asyncio
import base64
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

import websockets

from gwlib import TOKEN, URL, VIEWER_TOKEN

OPERATOR = os.environ.get("TG_GATEWAY_OPERATOR_TOKEN") or TOKEN
PID = int(os.environ.get("TG_COORDINATOR_PID", "0"))
ASSERT = os.environ.get("TG_ATTACK_ASSERT", "1") != "0"
HOST, PORT = urllib.parse.urlparse(URL).hostname, urllib.parse.urlparse(URL).port
WS_URL = f"ws://{HOST}:{PORT}/ws"
failures = []
# ~1 MB pings: just under the default max_frame_bytes (1 MiB) with the JSON around the data.
PING = (1 << 20) - 64


def expect(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


def rss_mb():
    if not PID:
        return 0.0
    try:
        with open(f"/proc/{PID}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class RssSampler:
    """Peak RSS of the coordinator while running (every 20 ms)."""

    def __init__(self):
        self.peak = rss_mb()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.02)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join()


def upgrade(src, token=None, rcvbuf=None, timeout=5.0):
    """Raw WebSocket upgrade from source address `src`: (socket or None, HTTP status)."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect((HOST, PORT))
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET /ws HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if token:
            req += f"Authorization: Bearer {token}\r\n"
        s.sendall((req + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    except OSError:
        s.close()
        return None, 0
    if status != 101:
        s.close()
        return None, status
    return s, status


def frame(payload):
    """A masked text frame (mask key 0: the payload bytes stay as they are)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def src_ip(i, spread):
    return f"127.0.0.{2 + i % spread}"


async def admin_session(label, token=TOKEN, timeout=10.0):
    """Connects with the token in the upgrade request, reads stats, submits a
    small job and waits for it. Returns (ok, seconds, error)."""
    t0 = time.time()
    try:
        async with websockets.connect(WS_URL, extra_headers={"Authorization": f"Bearer {token}"},
                                      open_timeout=timeout, max_size=None) as ws:
            async def call(req):
                await ws.send(json.dumps(req))
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                    if m.get("id") == req["id"]:
                        return m

            r = await call({"id": 1, "cmd": "cluster.stats"})
            if not r.get("ok"):
                return False, time.time() - t0, str(r)
            job = {"name": f"attack-{label}", "tokens": [
                {"op": "echo", "args": [1], "output": True, "name": "one"}]}
            r = await call({"id": 2, "cmd": "submit", "job": job})
            if not r.get("ok"):
                return False, time.time() - t0, str(r)
            job_id = r["result"]["job_id"]
            end = time.time() + timeout
            while time.time() < end:
                r = await call({"id": 3, "cmd": "job.status", "job_id": job_id})
                if r.get("ok") and r["result"]["state"] != "running":
                    return r["result"]["state"] == "succeeded", time.time() - t0, r["result"]["state"]
                await asyncio.sleep(0.05)
            return False, time.time() - t0, "job did not finish"
    except Exception as e:  # noqa: BLE001 - any failure is the measurement
        return False, time.time() - t0, f"{type(e).__name__}: {e}"


def lockout(n=4200, spread=8):
    figures = {"attack": "lockout", "sockets": n, "source_addresses": spread}
    for round_ in (1, 2):
        socks, statuses = [], {}
        t0 = time.time()
        for i in range(n):
            s, st = upgrade(src_ip(i, spread))
            statuses[st] = statuses.get(st, 0) + 1
            if s:
                socks.append(s)
        figures[f"round{round_}_open_s"] = round(time.time() - t0, 2)
        figures[f"round{round_}_accepted"] = len(socks)
        figures[f"round{round_}_statuses"] = {str(k): v for k, v in statuses.items()}
        ok, secs, err = asyncio.run(admin_session(f"lockout{round_}"))
        figures[f"round{round_}_admin_ok"] = ok
        figures[f"round{round_}_admin_s"] = round(secs, 3)
        if not ok:
            figures[f"round{round_}_admin_error"] = err[:200]
        expect(ok, f"round {round_}: the admin was not served during the lock-out attack ({err})")
        # How many of the idle sockets the gateway has closed 6 s later (auth timeout 5 s).
        time.sleep(6)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                data = s.recv(65536)
                # A close frame (opcode 8) or EOF: the gateway closed it.
                if not data or data[0] & 0x0F == 8:
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            s.close()
        figures[f"round{round_}_closed_after_6s"] = closed
        if ASSERT:
            expect(closed == len(socks), f"round {round_}: {len(socks) - closed} idle "
                   "unauthenticated sockets still open after 6 s")
    print(json.dumps(figures))


def flood(n, token, pings, size, spread, tag):
    """n never-reading clients (tiny receive buffers), each sending `pings`
    ping frames of ~`size` bytes. Returns figures."""
    payload = json.dumps({"cmd": "ping", "data": "x" * size}).encode()
    data = frame(payload) * pings
    socks, refused, send_errors = [], 0, 0
    with RssSampler() as rss:
        t0 = time.time()
        for i in range(n):
            s, st = upgrade(src_ip(i, spread), token=token, rcvbuf=4096)
            if not s:
                refused += 1
                continue
            socks.append(s)
            s.settimeout(0.5)
            try:
                s.sendall(data)
            except OSError:
                send_errors += 1
        sent_s = time.time() - t0
        # The operator is served while the abusers hold their sockets.
        ok, secs, err = asyncio.run(admin_session(tag, token=OPERATOR, timeout=20))
        time.sleep(1)
    for s in socks:
        s.close()
    return {
        "clients": n, "pings_per_client": pings, "ping_bytes": len(payload),
        "upgrades_refused": refused, "send_errors": send_errors,
        "send_s": round(sent_s, 2), "rss_peak_mb": round(rss.peak, 1),
        "operator_ok": ok, "operator_s": round(secs, 3),
        **({"operator_error": err[:200]} if not ok else {}),
    }


def metric(name):
    import urllib.request
    with urllib.request.urlopen(URL + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def memory():
    base = rss_mb()
    figures = {"attack": "memory", "rss_start_mb": round(base, 1)}
    unauth = flood(int(os.environ.get("TG_FLOOD_CLIENTS", "1000")), None, 2, PING, 50,
                   "unauth")
    figures["unauthenticated"] = unauth
    figures["rss_after_unauth_mb"] = round(rss_mb(), 1)
    expect(unauth["operator_ok"], f"operator not served under the unauthenticated flood: {unauth}")
    if ASSERT:
        # Bound: unauthenticated frames are at most 16 KiB and at most 256 such
        # sessions exist, so the flood cannot add more than a few tens of MB.
        expect(unauth["rss_peak_mb"] < base + 100,
               f"RSS peak {unauth['rss_peak_mb']} MB > start {base:.0f} + 100 MB (unauthenticated)")
    if VIEWER_TOKEN:
        auth = flood(int(os.environ.get("TG_FLOOD_AUTH_CLIENTS", "200")), VIEWER_TOKEN, 3, PING,
                     50, "viewers")
        auth["budget_closed"] = metric(
            'tokengate_gateway_refusals_total{reason="outbound_budget_closed"}')
        figures["authenticated"] = auth
        expect(auth["operator_ok"], f"operator not served under the viewer flood: {auth}")
        if ASSERT:
            # Bound: start + 64 MiB outbound budget + one 1 MiB read buffer and
            # one in-flight reply per client (200 x 2 MiB) + slack.
            bound = base + 64 + 2 * auth["clients"] + 100
            auth["rss_bound_mb"] = round(bound, 1)
            expect(auth["rss_peak_mb"] < bound,
                   f"RSS peak {auth['rss_peak_mb']} MB > {bound:.0f} MB (viewers)")
    figures["rss_end_mb"] = round(rss_mb(), 1)
    print(json.dumps(figures))


def guess_round(spread, seconds):
    """Reconnects with wrong tokens from `spread` addresses (one thread each) for `seconds`."""
    counts = {"checked": 0, "refused_unchecked": 0, "other": 0}
    lock = threading.Lock()
    end = time.time() + seconds

    def worker(i):
        n = 0
        while time.time() < end:
            n += 1
            _, status = upgrade(src_ip(i, spread), token=f"guess-{i}-{n}-{os.urandom(4).hex()}")
            key = ("checked" if status in (401, 403) else
                   "refused_unchecked" if status == 429 else "other")
            with lock:
                counts[key] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(spread)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - t0
    return {"addresses": spread, "seconds": round(took, 1), **counts,
            "checked_per_s": round(counts["checked"] / took, 2),
            "attempts_per_s": round(sum(counts.values()) / took, 1)}


def guess():
    seconds = float(os.environ.get("TG_GUESS_SECONDS", "20"))
    one = guess_round(1, seconds)
    many = guess_round(50, seconds)
    figures = {"attack": "token_guessing", "one_address": one, "fifty_addresses": many}
    print(json.dumps(figures))
    if ASSERT:
        # 5 free failures, then back-off 1, 2, 4, 8, ... s: within 20 s at most 5 + 4 more
        # checked guesses per address (+2: a period ending at the edge, scheduling noise).
        per_addr = 5 + sum(1 for k in range(20) if (2 ** (k + 1) - 1) <= seconds) + 2
        expect(one["checked"] <= per_addr,
               f"{one['checked']} guesses checked from one address in {seconds} s (> {per_addr})")
        expect(many["checked"] <= 50 * per_addr,
               f"{many['checked']} guesses checked from 50 addresses (> {50 * per_addr})")
        expect(one["other"] == 0 and many["other"] == 0, f"unexpected statuses: {figures}")


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("lockout", "all"):
        lockout(int(os.environ.get("TG_LOCKOUT_SOCKETS", "4200")))
    if which in ("memory", "all"):
        memory()
    # Last: it leaves its attacker addresses blocked (back-off) for up to a minute.
    if which in ("guess", "all"):
        guess()
    if failures:
        print(f"attack_test: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
