"""Issue 18, a room spanning hosts: a subscriber whose transport is on node 2 receives a publisher whose transport
is on node 1, through a pipe between the nodes that carries SRTP.

Runs tests/e2e/xhost_netns.py: two ``mediarouter serve`` nodes in two network namespaces made by the test
(TEST-NET-2 addresses, one veth pair), a private redis-server on a unix socket, ``cluster.spread_nodes: always``,
the unmodified ``livekit`` SDK. Skipped with the reason when this host cannot create namespaces (not root) or has
no redis-server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))

import netns  # noqa: E402
import xhost_netns  # noqa: E402
from redis_server import REDIS_SERVER, SKIP_REASON  # noqa: E402

REMOTE_BASE = 1 << 20  # control/cluster/remote_pool.py: the owner numbers other nodes' workers from here


@pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)
def test_a_subscriber_on_node_2_receives_a_publisher_on_node_1_through_an_srtp_pipe() -> None:
    try:
        r = xhost_netns.run_xhost(timeout_s=40)
    except netns.NetnsUnavailable as exc:
        pytest.skip(str(exc))
    detail = json.dumps(r, default=str)[-12000:]
    assert r.get("ok"), detail
    assert r["frames"] >= 30, detail
    # Node 1 owns the room: alice on its own worker 0, bob on a worker of node 2.
    (room,) = r["health1"]["rooms"]
    assert room["participants"]["alice"] == 0 and room["participants"]["bob"] >= REMOTE_BASE, detail
    assert [p["dest"] for p in room["pipes"]] == [room["participants"]["bob"]], detail
    assert r["health2"]["rooms"] == [], detail  # node 2 holds no room: only a stub of node 1's media
    # The pipe between the hosts: one SRTP pipe transport at each end, media out of node 1 and into node 2.
    source, dest = r["health1"]["workers"][0]["pipes"], r["health2"]["workers"][0]["pipes"]
    assert source["pipe_srtp_transports"] == dest["pipe_srtp_transports"] == 1, detail
    assert source["pipe_tx_packets"] >= 30 and dest["pipe_rx_packets"] >= 30, detail
    assert dest["pipe_srtp_drops"] == 0, detail
    # bob left: his participant and the pipe toward node 2 are gone from the owner.
    (after,) = r["after_bob"]
    assert list(after["participants"]) == ["alice"] and after["pipes"] == [], detail
