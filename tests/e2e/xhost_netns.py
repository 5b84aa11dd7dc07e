"""A room spanning two hosts: two ``mediarouter serve`` nodes on two hosts (tests/e2e/nodes_netns.py: two network
namespaces made by the test, TEST-NET-2 addresses, one Redis), the unmodified ``livekit`` SDK.

Both nodes run with ``cluster.spread_nodes: always`` (docs/CLUSTER.md, Rooms across nodes). The clients run on host
1: alice publishes through node 1 (the room's owner), bob joins through node 2 (his signaling is relayed to node 1);
node 1 places bob's transports on node 2's worker and pipes alice's tracks there with SRTP. The scenario records
what bob decoded, both nodes' ``/healthz`` (where node 1 says bob is on a remote worker, and each worker's pipe
counters), and node 1's pipes after bob leaves. The result comes back as one JSON line.

Outer use: ``run_xhost()`` -> dict, raising :class:`netns.NetnsUnavailable` (with the reason) when this host cannot.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nodes_netns  # noqa: E402
from nodes_netns import Nodes, Phase, token  # noqa: E402

ROOM = "xhost-room"


def run_xhost(timeout_s: float = 40.0) -> dict[str, Any]:
    """Runs the scenario in fresh namespaces; returns ``{"ok", "frames", "health1", "health2", ...}``."""
    return nodes_netns.run(Path(__file__).resolve(), "xhost", timeout_s)


async def clients(nodes: Nodes, result: dict[str, Any]) -> None:
    from common import Publisher, Receiver, connect, wait_for

    room_a = await connect(nodes.url(0), token("alice", ROOM))
    publisher = Publisher(room_a, 320, 240)
    await publisher.publish(audio=False)
    room_b = await connect(nodes.url(1), token("bob", ROOM))
    bob = Receiver(room_b).attach()
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 30, 15)
    result["frames"] = bob.frames("alice", 320, 240)
    await asyncio.sleep(1.2)  # a heartbeat of each worker after the media flowed (pipe counters)
    result["health1"], result["health2"] = nodes.health(0), nodes.health(1)
    await bob.stop()
    await room_b.disconnect()

    def bob_gone() -> bool:
        rooms = nodes.health(0).get("rooms", [])
        return bool(rooms) and "bob" not in rooms[0]["participants"] and not rooms[0]["pipes"]

    await wait_for(bob_gone, 10, 0.2)
    result["after_bob"] = nodes.health(0).get("rooms", [])
    await publisher.stop()
    await room_a.disconnect()


if __name__ == "__main__":
    sys.exit(nodes_netns.main({"xhost": Phase(clients, settings={"MEDIAROUTER_CLUSTER_SPREAD_NODES": "always"})}))
