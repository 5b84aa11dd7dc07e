"""Issue 18 acceptance with two ``mediarouter serve`` nodes sharing a private redis-server on loopback (both
advertise 127.0.0.1, each its own HTTP and worker ports) and the unmodified ``livekit`` SDK and ``livekit-api``
(tests/cluster/cluster_clients.py runs them in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from redis_server import REDIS_SERVER, SKIP_REASON, RedisServer

from tests.conftest import ProcessReaper, free_tcp_port, free_udp_ports

ROOT = Path(__file__).resolve().parent.parent.parent
KEY, SECRET = "clusterkey", "cluster-secret-cluster-secret-0123"

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)


class Hooks:
    """A webhook receiver on loopback: the (event, participant identity) of every POST, from either node."""

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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Node:
    def __init__(self, reaper: ProcessReaper, redis: RedisServer, log_dir: Path, index: int, ttl_s: float,
                 hooks: Hooks) -> None:
        self.http_port = free_tcp_port()
        rtc_port = free_udp_ports(1)
        self.url = f"ws://127.0.0.1:{self.http_port}"
        self.log = log_dir / f"node{index}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
               "MEDIAROUTER_REDIS_ADDRESS": redis.address, "MEDIAROUTER_CLUSTER_TTL_S": str(ttl_s),
               "MEDIAROUTER_WEBHOOK_URLS": hooks.url}
        args = [sys.executable, "-m", "control", "serve", "--workers", "1", "--node-ip", "127.0.0.1",
                "--http-host", "127.0.0.1", "--http-port", str(self.http_port), "--rtc-port-base", str(rtc_port),
                "--keys", f"{KEY}:{SECRET}", "--no-ice-tcp"]
        with open(self.log, "wb") as out:
            self.process = reaper.spawn(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as resp:
                    if json.loads(resp.read()).get("status") == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"node not ready:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def cluster(reaper: ProcessReaper, tmp_path: Path, request: pytest.FixtureRequest
            ) -> Iterator[tuple[RedisServer, list[Node], Hooks]]:
    redis, hooks = RedisServer(), Hooks()
    try:
        nodes = [Node(reaper, redis, tmp_path, i, request.param, hooks) for i in (1, 2)]
        for node in nodes:
            node.wait_ready()
        time.sleep(0.3)  # both entries written
        yield redis, nodes, hooks
    finally:
        redis.stop()
        hooks.close()


def redis_client(server: RedisServer) -> Any:
    import redis

    return redis.Redis(unix_socket_path=server.socket)


def run_clients(cfg: dict[str, Any], nodes: list[Node]) -> dict[str, Any]:
    cfg = {**cfg, "urls": [n.url for n in nodes], "key": KEY, "secret": SECRET}
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("cluster_clients.py")), json.dumps(cfg)],
                         capture_output=True, timeout=90, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    logs = "\n".join(f"--- {n.log.name}\n{n.log.read_text()[-4000:]}" for n in nodes)
    lines = out.stdout.decode().strip().splitlines()
    assert lines, f"no result; stderr:\n{out.stderr.decode()[-3000:]}\n{logs}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok"), f"{result}\n{logs}"
    return result


@pytest.mark.parametrize("cluster", [5.0], indirect=True)
def test_publisher_on_node_1_subscriber_on_node_2(cluster: tuple[RedisServer, list[Node], Hooks]) -> None:
    _, nodes, hooks = cluster
    r = run_clients({"phase": "two_nodes"}, nodes)
    assert r["b_sees"] == ["alice"]
    assert r["b_video"].get("alice 320x240", 0) >= 30 and r["b_audio"].get("alice", 0) >= 50, r
    assert r["b_data"] == ["across nodes"]
    assert r["list_node1"] == ["cluster-room"] and r["list_node2"] == ["cluster-room"]
    relayed = nodes[1].log.read_text()
    assert "joined cluster-room" not in relayed  # bob's session lives on node 1, the room's owner
    assert "bob joined cluster-room" in nodes[0].log.read_text()
    wanted = [("room_started", ""), ("participant_joined", "alice"), ("participant_joined", "bob")]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(e in hooks.events for e in wanted):
        time.sleep(0.1)
    for event in wanted:  # once each, from the owner, though both nodes send webhooks
        assert hooks.events.count(event) == 1, hooks.events


@pytest.mark.parametrize("cluster", [2.0], indirect=True)
def test_owner_killed_clients_reconnect_through_the_other_node(cluster: tuple[RedisServer, list[Node], Hooks]
                                                               ) -> None:
    redis, nodes, _ = cluster
    r = run_clients({"phase": "failover", "kill_pgid": nodes[0].process.pid}, nodes)
    print("failover:", {k: r[k] for k in ("media_again_s", "events", "list_after")})
    assert r["before"].get("alice 320x240", 0) >= 30 and r["list_before"] == ["cluster-room"]
    assert r["media_again_s"] is not None and r["media_again_s"] <= 10, r
    assert r["list_after"] == ["cluster-room"]
    assert "room cluster-room" in nodes[1].log.read_text()  # placed on node 2 now
    store = redis_client(redis)
    entries = [json.loads(v) for v in store.mget(store.keys("mediarouter:node:*"))]
    assert [e["state"] for e in entries] == ["serving"]  # node 1's entry expired
    assert store.get("mediarouter:room:cluster-room").decode() == entries[0]["id"]  # node 2 owns the room now
