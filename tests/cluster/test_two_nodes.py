"""Issue 18 acceptance with two ``mediarouter serve`` nodes on two hosts sharing a private redis-server: network
namespaces made by the test, each node with its own TEST-NET-2 address (advertised), HTTP port and worker port, and
the unmodified ``livekit`` SDK and ``livekit-api`` (tests/cluster/two_nodes_netns.py on the harness of
tests/e2e/nodes_netns.py). Skipped with the reason when this host cannot create namespaces (not root) or has no
redis-server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from redis_server import REDIS_SERVER, SKIP_REASON

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import netns  # noqa: E402
import two_nodes_netns  # noqa: E402

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)


def run(phase: str) -> dict[str, Any]:
    try:
        r = two_nodes_netns.run_phase(phase)
    except netns.NetnsUnavailable as exc:
        pytest.skip(str(exc))
    assert r.get("ok"), json.dumps(r, default=str)[-12000:]
    return r


def test_publisher_on_node_1_subscriber_on_node_2() -> None:
    r = run("two_nodes")
    detail = json.dumps({k: v for k, v in r.items() if not k.startswith("log")}, default=str)
    assert r["b_sees"] == ["alice"], detail
    assert r["b_video"].get("alice 320x240", 0) >= 30 and r["b_audio"].get("alice", 0) >= 50, detail
    assert r["b_data"] == ["across nodes"], detail
    assert r["list_node1"] == ["cluster-room"] and r["list_node2"] == ["cluster-room"], detail
    assert "joined cluster-room" not in r["log2"]  # bob's session lives on node 1, the room's owner
    assert "bob joined cluster-room" in r["log1"]
    events = [tuple(e) for e in r["hooks"]]
    for event in [("room_started", ""), ("participant_joined", "alice"), ("participant_joined", "bob")]:
        assert events.count(event) == 1, events  # once each, from the owner, though both nodes send webhooks


def test_owner_killed_clients_reconnect_through_the_other_node() -> None:
    r = run("failover")
    detail = json.dumps({k: v for k, v in r.items() if not k.startswith("log")}, default=str)
    print("failover:", {k: r[k] for k in ("media_again_s", "entry_gone_s", "key_moved_s", "events")})
    assert r["before"].get("alice 320x240", 0) >= 30 and r["list_before"] == ["cluster-room"], detail
    assert r["owner_before"] == "node1", detail  # made through node 1's RoomService: node 1 owns it
    ttl_s = two_nodes_netns.PHASES["failover"].ttl_s
    # Within the TTL of the kill (and the 50 ms of a reading): node 1's entry is gone, the key no longer names it.
    assert r["entry_gone_s"] is not None and r["entry_gone_s"] <= ttl_s + 0.25, detail
    assert r["key_moved_s"] is not None and r["key_moved_s"] <= ttl_s + 0.25, detail
    assert r["media_again_s"] is not None and r["media_again_s"] <= 10, detail
    assert "reconnected" in r["events"], detail  # bob's SDK reconnected by itself, through node 2
    assert r["list_after"] == ["cluster-room"], detail
    assert "room cluster-room" in r["log2"]  # placed on node 2 now
    assert r["states_after"] == {"198.51.100.2": "serving"}, detail  # node 1's entry expired
    assert r["owner_after"] == "node2", detail  # node 2 owns the room now
