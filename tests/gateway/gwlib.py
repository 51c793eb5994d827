"""Shared helpers for the gateway tests: where the gateway is, a small
asyncio WebSocket client (python3-websockets), and the Leibniz job in the
job JSON the CLI uses (docs/protocol.md, "Job JSON").

The gateway under test comes from the environment (cluster.py sets it):
  TG_GATEWAY_URL          http://127.0.0.1:PORT
  TG_GATEWAY_TOKEN        admin token
  TG_GATEWAY_VIEWER_TOKEN viewer token (optional)
  TG_GATEWAY_OPERATOR_TOKEN operator token (optional; the real coordinator only)
  TG_GATEWAY_MODE         fake | real | external
"""
import asyncio
import itertools
import json
import os
import sys
import urllib.error
import urllib.request

import websockets

URL = os.environ.get("TG_GATEWAY_URL", "http://127.0.0.1:8080").rstrip("/")
WS_URL = URL.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
TOKEN = os.environ.get("TG_GATEWAY_TOKEN", "")
VIEWER_TOKEN = os.environ.get("TG_GATEWAY_VIEWER_TOKEN", "")
OPERATOR_TOKEN = os.environ.get("TG_GATEWAY_OPERATOR_TOKEN", "")
MODE = os.environ.get("TG_GATEWAY_MODE", "external")


def leibniz_job(terms, chunk=1000, partials=10):
    """Mirror of makeLeibnizJob (common/job.cc), double precision."""
    assert terms % chunk == 0 and (terms // chunk) % partials == 0
    chunks = terms // chunk
    per = chunks // partials
    return {
        "name": f"leibniz-{terms}-double",
        "tokens": [
            {"op": "leibniz.term", "repeat": terms, "args": [{"value": 0, "step": 1}]},
            {"op": "leibniz.chunk", "repeat": chunks, "args": [{"refs": [0, chunk], "step": chunk}]},
            {"op": "leibniz.partial", "repeat": partials,
             "args": [{"refs": [terms, per], "step": per}]},
            {"op": "leibniz.final", "args": [{"refs": [terms + chunks, partials]}],
             "output": True, "name": "pi"},
        ],
    }


def leibniz_token_count(terms, chunk=1000, partials=10):
    return terms + terms // chunk + partials + 1


def http_get(path, timeout=5):
    """(status, body text) for GET URL+path; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(URL + path, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class CommandError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Client:
    """One WebSocket session. Replies are matched by id; events are queued."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending = {}
        self.events = asyncio.Queue()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, token=None, **kw):
        kw.setdefault("max_size", 16 << 20)
        ws = await websockets.connect(WS_URL, **kw)
        c = cls(ws)
        if token is not None:
            await c.ok("hello", token=token, protocol=1)
        return c

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "event" in msg:
                    self.events.put_nowait(msg)
                    continue
                fut = self.pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))

    async def call(self, cmd, timeout=30, **args):
        """The raw reply object."""
        rid = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.ws.send(json.dumps({"id": rid, "cmd": cmd, **args}))
        return await asyncio.wait_for(fut, timeout)

    async def ok(self, cmd, **args):
        r = await self.call(cmd, **args)
        if not r["ok"]:
            raise CommandError(r["error"]["code"], r["error"]["message"])
        return r["result"]

    async def error(self, cmd, **args):
        r = await self.call(cmd, **args)
        if r["ok"]:
            raise AssertionError(f"{cmd} {args} unexpectedly succeeded: {r}")
        return r["error"]["code"]

    async def raw(self, text, expect_id=None):
        """Sends text as is; returns the reply with expect_id (null for unparseable input)."""
        fut = asyncio.get_running_loop().create_future()
        self.pending[expect_id] = fut
        await self.ws.send(text)
        return await asyncio.wait_for(fut, 10)

    async def close(self):
        await self.ws.close()
        self.reader.cancel()


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)
