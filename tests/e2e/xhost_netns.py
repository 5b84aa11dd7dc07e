"""A room spanning two hosts: two ``mediarouter serve`` nodes in two network namespaces, one Redis, the unmodified
``livekit`` SDK.

Two namespaces, both made by the test: ``unshare --net`` gives the inner process a namespace of its own (host 1),
and it makes host 2's with an ``unshare --net sleep`` holder, joined to host 1 by one veth pair. TEST-NET-2
addresses only (RFC 5737):

    host 1  h1 198.51.100.1/24 ──────── h2 198.51.100.2/24  host 2
            node 1 (HTTP 7880, worker UDP 7882)          node 2 (HTTP 7880, worker UDP 7882)

A private ``redis-server`` listens on a unix socket in a temporary directory, which both namespaces reach (they
share the file system). Both nodes run with ``cluster.spread_nodes: always`` (docs/CLUSTER.md, Rooms across nodes).
The clients run in this process, on host 1: alice publishes through node 1 (the room's owner), bob joins through
node 2 (his signaling is relayed to node 1); node 1 places bob's transports on node 2's worker and pipes alice's
tracks there with SRTP. The scenario records what bob decoded, both nodes' ``/healthz`` (where node 1 says bob is on
a remote worker, and each worker's pipe counters), and node 1's pipes after bob leaves. The result comes back as
one JSON line.

Outer use: ``run_xhost()`` -> dict, raising :class:`netns.NetnsUnavailable` (with the reason) when this host cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import netns  # noqa: E402

HOST_IPS = ("198.51.100.1", "198.51.100.2")
HTTP_PORT = 7880
RTC_PORT = 7882
KEY, SECRET = "xhostkey", "xhost-secret-xhost-secret-0123456789"
ROOM = "xhost-room"
RESULT_MARK = "XHOST-RESULT "


def run_xhost(timeout_s: float = 40.0) -> dict[str, Any]:
    """Runs the scenario in fresh namespaces; returns ``{"ok", "frames", "health1", "health2", ...}``."""
    netns.check_available()
    return netns.run_inner([str(Path(__file__).resolve()), "--inner", "--timeout", str(timeout_s)], "xhost",
                           timeout_s + 20, mark=RESULT_MARK)


def _run(*args: str, ns: int | None = None) -> None:
    prefix = ["nsenter", f"--net=/proc/{ns}/ns/net", "--"] if ns else []
    done = subprocess.run([*prefix, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def start_node(index: int, redis: str, log_path: str, ns: int | None) -> subprocess.Popen[bytes]:
    ip = HOST_IPS[index]
    prefix = ["nsenter", f"--net=/proc/{ns}/ns/net", "--"] if ns else []
    cmd = [*prefix, sys.executable, "-m", "control", "serve", "--workers", "1", "--node-ip", ip, "--http-host", ip,
           "--http-port", str(HTTP_PORT), "--rtc-port-base", str(RTC_PORT), "--keys", f"{KEY}:{SECRET}",
           "--no-ice-tcp"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MEDIAROUTER_REDIS_ADDRESS": redis,
           "MEDIAROUTER_CLUSTER_TTL_S": "2", "MEDIAROUTER_CLUSTER_SPREAD_NODES": "always"}
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)


def health(index: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{HOST_IPS[index]}:{HTTP_PORT}/healthz", timeout=2) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def wait_ready(procs: list[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = set(range(len(procs)))
    while waiting and time.monotonic() < deadline:
        for i in list(waiting):
            if procs[i].poll() is not None:
                raise RuntimeError(f"node {i + 1} exited with {procs[i].returncode}")
            with contextlib.suppress(OSError, ValueError):
                if health(i).get("status") == "ok":
                    waiting.discard(i)
        time.sleep(0.1)
    if waiting:
        raise RuntimeError(f"nodes {sorted(i + 1 for i in waiting)} not ready within {timeout_s:.0f} s")


def token(identity: str) -> str:
    from livekit import api

    grants = api.VideoGrants(room_join=True, room=ROOM)
    return api.AccessToken(KEY, SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def clients(result: dict[str, Any]) -> None:
    from common import Publisher, Receiver, connect, wait_for

    room_a = await connect(f"ws://{HOST_IPS[0]}:{HTTP_PORT}", token("alice"))
    publisher = Publisher(room_a, 320, 240)
    await publisher.publish(audio=False)
    room_b = await connect(f"ws://{HOST_IPS[1]}:{HTTP_PORT}", token("bob"))
    bob = Receiver(room_b).attach()
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 30, 15)
    result["frames"] = bob.frames("alice", 320, 240)
    await asyncio.sleep(1.2)  # a heartbeat of each worker after the media flowed (pipe counters)
    result["health1"], result["health2"] = health(0), health(1)
    await bob.stop()
    await room_b.disconnect()

    def bob_gone() -> bool:
        rooms = health(0).get("rooms", [])
        return bool(rooms) and "bob" not in rooms[0]["participants"] and not rooms[0]["pipes"]

    await wait_for(bob_gone, 10, 0.2)
    result["after_bob"] = health(0).get("rooms", [])
    await publisher.stop()
    await room_a.disconnect()


def inner(timeout_s: float) -> dict[str, Any]:
    from redis_server import RedisServer

    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", str(int(timeout_s) + 10)])
    nodes: list[subprocess.Popen[bytes]] = []
    redis: RedisServer | None = None
    log_dir = tempfile.mkdtemp(prefix="mr-xhost-")
    logs = [os.path.join(log_dir, f"node{i + 1}.log") for i in range(2)]
    result: dict[str, Any] = {}
    try:
        _run("ip", "link", "set", "lo", "up")
        _run("ip", "link", "add", "h1", "type", "veth", "peer", "name", "h2", "netns", str(holder.pid))
        _run("ip", "addr", "add", f"{HOST_IPS[0]}/24", "dev", "h1")
        _run("ip", "link", "set", "h1", "up")
        _run("ip", "link", "set", "lo", "up", ns=holder.pid)
        _run("ip", "addr", "add", f"{HOST_IPS[1]}/24", "dev", "h2", ns=holder.pid)
        _run("ip", "link", "set", "h2", "up", ns=holder.pid)
        redis = RedisServer()
        nodes = [start_node(0, redis.address, logs[0], None), start_node(1, redis.address, logs[1], holder.pid)]
        wait_ready(nodes)
        time.sleep(0.3)  # both entries written
        asyncio.run(asyncio.wait_for(clients(result), timeout_s))
        result["ok"] = True
    except BaseException:  # noqa: BLE001 - everything goes back to the test as data
        result["ok"] = False
        result["error"] = traceback.format_exc()
    finally:
        for proc in nodes:
            netns.stop_server(proc)
        if redis is not None:
            redis.stop()
        with contextlib.suppress(ProcessLookupError):
            holder.kill()
        holder.wait()
    for i, path in enumerate(logs):
        with open(path, "rb") as f:
            result[f"log{i + 1}"] = f.read().decode(errors="replace")[-6000:]
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inner", action="store_true")
    ap.add_argument("--timeout", type=float, default=40.0)
    args = ap.parse_args()
    if not args.inner:
        print(json.dumps(run_xhost(args.timeout), indent=2, default=str))
        return 0
    sys.path.insert(0, str(ROOT / "tests" / "e2e" / "lk_scenarios"))
    try:
        result = inner(args.timeout)
    except Exception:
        result = {"ok": False, "error": traceback.format_exc()}
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
    os._exit(0)  # the SDK's threads do not hold the process


if __name__ == "__main__":
    sys.exit(main())
