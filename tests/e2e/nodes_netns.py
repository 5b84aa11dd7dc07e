"""Two ``mediarouter serve`` nodes on two hosts and their Redis: the harness of the cluster scenarios that need real
addresses (tests/e2e/xhost_netns.py, tests/cluster/two_nodes_netns.py).

Two network namespaces, both made by the test: ``unshare --net`` gives the inner process a namespace of its own (host
1), and it makes host 2's with an ``unshare --net sleep`` holder, joined to host 1 by one veth pair. TEST-NET-2
addresses only (RFC 5737); each node its own address, HTTP port and worker port, and advertises its address:

    host 1  h1 198.51.100.1/24 ──────── h2 198.51.100.2/24  host 2
            node 1 (HTTP 7880, worker UDP 7882)          node 2 (HTTP 7980, worker UDP 7982)

A private ``redis-server`` listens on a unix socket in a temporary directory, which both namespaces reach (they
share the file system). The clients run in the inner process, on host 1, which reaches both nodes; so does the
webhook receiver a phase may ask for (on 198.51.100.1, every node sends it its webhooks).

A scenario script names its phases (:class:`Phase`: the clients' coroutine, the nodes' ``cluster.ttl_s`` and extra
settings) and calls :func:`main` with them. Outer use: ``run(script, phase)`` -> dict, the phase's result plus
``ok``, ``error``, both nodes' logs and the webhooks received; raises :class:`netns.NetnsUnavailable` (with the
reason) when this host cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import netns  # noqa: E402

HOST_IPS = ("198.51.100.1", "198.51.100.2")
HTTP_PORTS = (7880, 7980)
RTC_PORTS = (7882, 7982)
KEY, SECRET = "nodeskey", "nodes-secret-nodes-secret-0123456789"
RESULT_MARK = "NODES-RESULT "
LOG_CHARS = 60000  # of each node's log, back to the test


class Hooks:
    """A webhook receiver on host 1: the (event, participant identity) of every POST, from either node."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hooks.events.append((body["event"], body.get("participant", {}).get("identity", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST_IPS[0], 0), Handler)
        self.url = f"http://{HOST_IPS[0]}:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Nodes:
    """What a phase's clients get: the running nodes (index 0 and 1), their Redis and the webhooks received."""

    redis_socket: str
    ttl_s: float
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    hooks: Hooks | None = None

    def url(self, index: int) -> str:
        return f"ws://{HOST_IPS[index]}:{HTTP_PORTS[index]}"

    def http(self, index: int) -> str:
        return f"http://{HOST_IPS[index]}:{HTTP_PORTS[index]}"

    def health(self, index: int) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.http(index)}/healthz", timeout=2) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body

    def log(self, index: int) -> str:
        with open(self.logs[index], "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self, index: int) -> None:
        """SIGKILL to the node's process group: its control process and its workers, at once."""
        os.killpg(self.procs[index].pid, signal.SIGKILL)


@dataclass(frozen=True)
class Phase:
    """One scenario: ``clients(nodes, result)`` records what it observed in ``result`` as it goes."""

    clients: Callable[[Nodes, dict[str, Any]], Awaitable[None]]
    ttl_s: float = 2.0
    settings: dict[str, str] = field(default_factory=dict)  # MEDIAROUTER_* for both nodes
    webhooks: bool = False


def token(identity: str, room: str, **grants: bool) -> str:
    from livekit import api

    video = api.VideoGrants(room_join=True, room=room, **grants)
    return api.AccessToken(KEY, SECRET).with_identity(identity).with_grants(video).to_jwt()


# ------------------------------------------------------------------------------------------- outer


def run(script: Path, phase: str, timeout_s: float = 40.0) -> dict[str, Any]:
    """Runs ``phase`` of ``script`` in fresh namespaces; returns its result."""
    netns.check_available()
    return netns.run_inner([str(script), "--inner", phase, "--timeout", str(timeout_s)], f"{script.name} {phase}",
                           timeout_s + 30, mark=RESULT_MARK)


# ------------------------------------------------------------------------------------------- inner


def _run(*args: str, ns: int | None = None) -> None:
    prefix = ["nsenter", f"--net=/proc/{ns}/ns/net", "--"] if ns else []
    done = subprocess.run([*prefix, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def setup_hosts(holder: int) -> None:
    """This namespace is host 1, ``holder``'s is host 2: lo up in both, one veth pair between them."""
    _run("ip", "link", "set", "lo", "up")
    _run("ip", "link", "add", "h1", "type", "veth", "peer", "name", "h2", "netns", str(holder))
    _run("ip", "addr", "add", f"{HOST_IPS[0]}/24", "dev", "h1")
    _run("ip", "link", "set", "h1", "up")
    _run("ip", "link", "set", "lo", "up", ns=holder)
    _run("ip", "addr", "add", f"{HOST_IPS[1]}/24", "dev", "h2", ns=holder)
    _run("ip", "link", "set", "h2", "up", ns=holder)


def start_node(index: int, nodes: Nodes, settings: dict[str, str], ns: int | None) -> subprocess.Popen[bytes]:
    """``mediarouter serve`` for node ``index`` (in ``ns``'s namespace, else this one), in a session of its own."""
    ip = HOST_IPS[index]
    prefix = ["nsenter", f"--net=/proc/{ns}/ns/net", "--"] if ns else []  # nsenter execs: the pid is the node's
    cmd = [*prefix, sys.executable, "-m", "control", "serve", "--workers", "1", "--node-ip", ip, "--http-host", ip,
           "--http-port", str(HTTP_PORTS[index]), "--rtc-port-base", str(RTC_PORTS[index]),
           "--keys", f"{KEY}:{SECRET}", "--no-ice-tcp"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
           "MEDIAROUTER_REDIS_ADDRESS": nodes.redis_socket, "MEDIAROUTER_CLUSTER_TTL_S": str(nodes.ttl_s),
           **settings}
    if nodes.hooks is not None:
        env["MEDIAROUTER_WEBHOOK_URLS"] = nodes.hooks.url
    with open(nodes.logs[index], "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)


def wait_ready(nodes: Nodes, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = set(range(len(nodes.procs)))
    while waiting and time.monotonic() < deadline:
        for i in list(waiting):
            if nodes.procs[i].poll() is not None:
                raise RuntimeError(f"node {i + 1} exited with {nodes.procs[i].returncode}")
            with contextlib.suppress(OSError, ValueError):
                if nodes.health(i).get("status") == "ok":
                    waiting.discard(i)
        time.sleep(0.1)
    if waiting:
        raise RuntimeError(f"nodes {sorted(i + 1 for i in waiting)} not ready within {timeout_s:.0f} s")


def inner(phase: Phase, timeout_s: float) -> dict[str, Any]:
    from redis_server import RedisServer

    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", str(int(timeout_s) + 20)])
    redis: RedisServer | None = None
    log_dir = tempfile.mkdtemp(prefix="mr-nodes-")
    nodes = Nodes("", phase.ttl_s, logs=[os.path.join(log_dir, f"node{i + 1}.log") for i in range(2)])
    result: dict[str, Any] = {}
    try:
        setup_hosts(holder.pid)
        redis = RedisServer()
        nodes.redis_socket = redis.socket
        nodes.hooks = Hooks() if phase.webhooks else None
        nodes.procs.append(start_node(0, nodes, phase.settings, None))
        nodes.procs.append(start_node(1, nodes, phase.settings, holder.pid))
        wait_ready(nodes)
        time.sleep(0.3)  # both entries written
        asyncio.run(asyncio.wait_for(phase.clients(nodes, result), timeout_s))
        result["ok"] = True
    except BaseException:  # noqa: BLE001 - everything goes back to the test as data
        result["ok"] = False
        result["error"] = traceback.format_exc()
    finally:
        for proc in nodes.procs:
            netns.stop_server(proc)
        if nodes.hooks is not None:
            result["hooks"] = nodes.hooks.events
            nodes.hooks.close()
        if redis is not None:
            redis.stop()
        with contextlib.suppress(ProcessLookupError):
            holder.kill()
        holder.wait()
    for i in range(2):
        with contextlib.suppress(OSError):
            result[f"log{i + 1}"] = nodes.log(i)[-LOG_CHARS:]
    shutil.rmtree(log_dir, ignore_errors=True)
    return result


def main(phases: dict[str, Phase]) -> int:
    """The scenario script's entry point: ``--inner PHASE`` runs it here (already in host 1's namespace) and prints
    the result after :data:`RESULT_MARK`; ``PHASE`` alone runs it in fresh namespaces and prints it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", nargs="?", choices=sorted(phases))
    ap.add_argument("--inner", choices=sorted(phases))
    ap.add_argument("--timeout", type=float, default=40.0)
    args = ap.parse_args()
    if not args.inner:
        if not args.phase:
            ap.error("give a phase")
        print(json.dumps(run(Path(sys.argv[0]).resolve(), args.phase, args.timeout), indent=2, default=str))
        return 0
    sys.path.insert(0, str(ROOT / "tests" / "e2e" / "lk_scenarios"))
    try:
        result = inner(phases[args.inner], args.timeout)
    except Exception:
        result = {"ok": False, "error": traceback.format_exc()}
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
    os._exit(0)  # the SDK's threads do not hold the process
