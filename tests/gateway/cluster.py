#!/usr/bin/env python3
"""Starts a gateway to test against, runs a command with TG_GATEWAY_* set,
then stops everything. Exits with the command's status.

  cluster.py [--mode auto|real|fake] [--nodes N] -- COMMAND...

Modes:
  external  TG_GATEWAY_URL is already set: run the command as is.
  real      build/<preset>/coordinator/tokengate-coordinator with --gateway,
            plus N tokengate-node processes (TG_BUILD_DIR, default build/dev).
  fake      tokengate-gateway-fake: the real Gateway over FakeClusterControl.
  auto      (default) real if the coordinator and node binaries exist, else fake.
"""
import argparse
import os
import secrets
import signal
import socket
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, procs, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited with {p.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}/readyz not ready after {timeout}s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default=os.environ.get("TG_GATEWAY_MODE", "auto"))
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command")

    env = dict(os.environ)
    if env.get("TG_GATEWAY_URL"):
        env.setdefault("TG_GATEWAY_MODE", "external")
        return subprocess.call(cmd, env=env)

    build = os.environ.get("TG_BUILD_DIR", os.path.join(ROOT, "build", "dev"))
    def find(name, *subdirs):
        for d in ("bin",) + subdirs:
            p = os.path.join(build, d, name)
            if os.access(p, os.X_OK):
                return p
        return os.path.join(build, "bin", name)

    coord = find("tokengate-coordinator", "coordinator")
    node = find("tokengate-node", "node")
    fake = find("tokengate-gateway-fake", os.path.join("tests", "unit", "gateway"))
    mode = a.mode
    if mode == "auto":
        mode = "real" if os.access(coord, os.X_OK) and os.access(node, os.X_OK) else "fake"

    token, viewer = "adm-" + secrets.token_hex(8), "view-" + secrets.token_hex(8)
    operator = "op-" + secrets.token_hex(8)
    procs = []
    logdir = os.path.join(ROOT, "build", "artifacts", "gateway-logs")
    os.makedirs(logdir, exist_ok=True)

    def spawn(args, name):
        log = open(os.path.join(logdir, name + ".log"), "w")
        p = subprocess.Popen(args, stdout=subprocess.PIPE if name == "fake" else log,
                             stderr=log, text=True, start_new_session=True)
        procs.append(p)
        return p

    try:
        if mode == "real":
            wire = free_port()
            ready_file = os.path.join(logdir, f"coordinator-ready-{os.getpid()}")
            if os.path.exists(ready_file):
                os.unlink(ready_file)
            # CURVE on the wire port, as deployed (docs/security.md): throw-away keys.
            keys = os.path.join(logdir, f"keys-{os.getpid()}")
            shutil.rmtree(keys, ignore_errors=True)
            subprocess.check_call([find("tgctl", "cli"), "keys", "init", "--out", keys],
                                  stdout=subprocess.DEVNULL)
            coordp = spawn([coord, "--listen", f"tcp://127.0.0.1:{wire}", "--gateway",
                            "127.0.0.1:0", "--gateway-token", token, "--gateway-viewer-token",
                            viewer, "--gateway-operator-token", operator,
                            "--ready-file", ready_file, "--curve-dir", keys], "coordinator")
            env.update(TG_GATEWAY_OPERATOR_TOKEN=operator)
            gw, end = None, time.time() + 30
            while gw is None:
                if coordp.poll() is not None:
                    raise RuntimeError(f"coordinator exited with {coordp.returncode}")
                if time.time() > end:
                    raise RuntimeError("coordinator wrote no ready file")
                try:
                    with open(ready_file) as f:
                        for line in f:
                            if line.startswith("gateway "):
                                gw = int(line.split()[1])
                except FileNotFoundError:
                    pass
                time.sleep(0.1)
            for i in range(a.nodes):
                spawn([node, "--coordinator", f"tcp://127.0.0.1:{wire}", "--enable-test-ops",
                       "--curve-dir", keys], f"node-{i}")
            url = f"http://127.0.0.1:{gw}"
        elif mode == "fake":
            p = spawn([fake, "--port", "0", "--token", token, "--viewer-token", viewer,
                       "--step-ms", "100"], "fake")
            line = p.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"tokengate-gateway-fake said {line!r}")
            url = f"http://127.0.0.1:{int(line.split()[1])}"
        else:
            raise SystemExit(f"unknown mode {mode}")
        wait_ready(url, procs)
        env.update(TG_GATEWAY_URL=url, TG_GATEWAY_TOKEN=token, TG_GATEWAY_VIEWER_TOKEN=viewer,
                   TG_GATEWAY_MODE=mode, TG_COORDINATOR_PID=str(procs[0].pid))
        print(f"cluster.py: {mode} gateway at {url}", file=sys.stderr)
        return subprocess.call(cmd, env=env)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    sys.exit(main())
