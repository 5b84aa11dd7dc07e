"""``python -m bench fanout --tcp``: the subscribers over ICE-TCP through bench/tcp_bridge.py, against UDP in the same
run.

The end-to-end test runs a tiny fan-out (3 subscribers, about a second per half) and asserts that both halves
forwarded every packet, that the TCP half's packets came through one bridge connection per subscriber, and that the
comparison carries both CPU figures; never a timing. The bridge test checks the framing in both directions against a
plain TCP listener, without a server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import combine_runs
from bench.scenarios import Options
from bench.tcp_bridge import TcpBridge

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
def test_fanout_over_ice_tcp_is_compared_with_udp(tmp_path: Path) -> None:
    out = tmp_path / "tcp.json"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "fanout", "--tcp", "--subscribers", "3", "--seconds", "1",
                             "--rate", "200", "--no-limit", "--json", str(out)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(out.read_text())
    point = result["points"][-1]
    assert point["received"] > 0 and point["auth_failed"] == 0, point
    bridge = point["tcp_bridge"]
    assert bridge["connections"] == 3, bridge  # one ICE-TCP connection per subscriber, none for the publisher
    # Every packet the subscribers counted reached them through the bridge: they have no UDP path to the worker.
    assert bridge["frames_down"] >= point["received"], (bridge, point["received"])
    assert bridge["frames_up"] > 0 and bridge["dropped_down"] == 0, bridge
    (row,) = result["tcp_vs_udp"]
    assert row["load"] == 3 and row["udp_forwarded_pps"] > 0 and row["tcp_forwarded_pps"] > 0, row
    assert row["udp_cpu_us_per_packet"] > 0 and row["tcp_cpu_us_per_packet"] > 0, row
    assert row["tcp_extra_us_per_packet"] == pytest.approx(
        row["tcp_cpu_us_per_packet"] - row["udp_cpu_us_per_packet"], abs=0.002), row
    assert "over ICE-TCP" in stdout, stdout


def test_bridge_frames_both_ways_from_the_clients_address() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the subscriber, on its own loopback address
        client.bind(("127.77.9.9", 0))
        client.setblocking(False)
        bridge = TcpBridge()
        await bridge.start()
        try:
            opening = asyncio.create_task(bridge.open("127.77.9.9", "127.0.0.1", listener.getsockname()[1],
                                                      client.getsockname()[1]))
            conn, peer = await loop.sock_accept(listener)
            face = await opening
            assert peer[0] == "127.77.9.9"  # the TCP connection comes from the subscriber's address
            await loop.sock_sendto(client, b"first", face)
            await loop.sock_sendto(client, b"second!", face)
            got = b""
            while len(got) < 2 + 5 + 2 + 7:
                got += await loop.sock_recv(conn, 100)
            assert got == struct.pack("!H", 5) + b"first" + struct.pack("!H", 7) + b"second!"  # RFC 4571
            # Two frames cut in the middle of the second one's length: two datagrams from the face.
            stream = struct.pack("!H", 3) + b"abc" + struct.pack("!H", 4) + b"wxyz"
            await loop.sock_sendall(conn, stream[:6])
            await asyncio.sleep(0.05)
            await loop.sock_sendall(conn, stream[6:])
            datagrams = [await asyncio.wait_for(loop.sock_recvfrom(client, 100), 5) for _ in range(2)]
            assert [d for d, _ in datagrams] == [b"abc", b"wxyz"]
            assert all(addr == face for _, addr in datagrams)
            stats = await bridge.stats()
            assert (stats["connections"], stats["frames_up"], stats["frames_down"]) == (1, 2, 2), stats
            conn.close()
        finally:
            await bridge.close()
            client.close()
            listener.close()

    asyncio.run(asyncio.wait_for(run(), 30))


@pytest.mark.parametrize("kwargs", [{"scenario": "conference"}, {"scenario": "fanout", "url": "ws://127.0.0.1:7880"},
                                    {"scenario": "fanout", "find_capacity": True}])
def test_tcp_refuses_what_it_cannot_measure(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="--tcp"):
        Options(**{**kwargs, "tcp": True})


def test_repeated_tcp_runs_give_the_median_of_each_side() -> None:
    def run(udp: float, tcp: float, pps: float) -> dict:
        row = {"load": 10, "udp_cpu_us_per_packet": udp, "tcp_cpu_us_per_packet": tcp, "udp_loss_pct": 0.0,
               "tcp_loss_pct": 0.0, "generator_bound": False, "tcp_extra_us_per_packet": tcp - udp}
        return {"forwarded_pps": pps, "cpu_us_per_packet": tcp, "generator_bound": False,
                "generator_bound_reason": "", "tcp_vs_udp": [row]}

    combined = combine_runs([run(8.0, 20.0, 1000), run(10.0, 30.0, 1001), run(9.0, 40.0, 999)])
    (row,) = combined["tcp_vs_udp"]
    assert (row["udp_cpu_us_per_packet"], row["tcp_cpu_us_per_packet"]) == (9.0, 30.0)
    assert row["tcp_extra_us_per_packet"] == 21.0 and row["median_of"] == 3
