"""The two-node scenarios of tests/cluster/test_two_nodes.py: two ``mediarouter serve`` nodes on two hosts
(tests/e2e/nodes_netns.py: network namespaces made by the test, 198.51.100.1 and .2, each node its own address,
HTTP and worker ports, one Redis on a unix socket), no ``cluster.spread_nodes`` (a room stays on its owner). The
clients, the unmodified ``livekit`` SDK and ``livekit-api``, run on host 1, which reaches both nodes.

- ``two_nodes``: alice publishes through node 1, bob joins through node 2 and receives her media and a data packet;
  ListRooms through either node; every node sends its webhooks to one receiver.
- ``failover``: the room made through node 1's RoomService, both clients through node 2, node 1 SIGKILLed; a thread
  watches Redis for node 1's entry and the room's key, bob for alice's video.

``python two_nodes_netns.py PHASE`` runs one and prints what it observed as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import nodes_netns  # noqa: E402
from nodes_netns import Nodes, Phase  # noqa: E402

ROOM = "cluster-room"
ROOM_KEY = f"mediarouter:room:{ROOM}"  # control/cluster/keys.py


def run_phase(phase: str, timeout_s: float = 40.0) -> dict[str, Any]:
    return nodes_netns.run(Path(__file__).resolve(), phase, timeout_s)


def token(identity: str) -> str:
    return nodes_netns.token(identity, ROOM, room_list=True, room_create=True, room_admin=True)


def lk_api(nodes: Nodes, index: int) -> Any:
    from livekit import api

    return api.LiveKitAPI(nodes.http(index), nodes_netns.KEY, nodes_netns.SECRET)


async def list_rooms(nodes: Nodes, index: int) -> list[str]:
    from livekit import api

    async with lk_api(nodes, index) as lk:
        answer = await lk.room.list_rooms(api.ListRoomsRequest())
        return [room.name for room in answer.rooms]


def node_entries(store: Any) -> dict[str, dict[str, Any]]:
    """The live nodes' entries in Redis, by advertised address."""
    entries = [json.loads(v) for v in store.mget(store.keys("mediarouter:node:*")) if v is not None]
    return {e["ip"]: e for e in entries}


async def two_nodes(nodes: Nodes, result: dict[str, Any]) -> None:
    """alice publishes through node 1, bob joins through node 2, receives media and data; ListRooms on both."""
    from common import Publisher, Receiver, connect, wait_for

    room_a = await connect(nodes.url(0), token("alice"))
    publisher = Publisher(room_a, 320, 240)
    result["published"] = await publisher.publish()
    room_b = await connect(nodes.url(1), token("bob"))
    bob = Receiver(room_b).attach()
    result["b_sees"] = sorted(p.identity for p in room_b.remote_participants.values())
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 30 and bob.audio.get("alice", 0) >= 50, 15)
    result["b_video"], result["b_audio"] = dict(bob.video), dict(bob.audio)
    await room_a.local_participant.publish_data(b"across nodes", reliable=True, destination_identities=["bob"])
    await wait_for(lambda: bool(bob.data), 10)
    result["b_data"] = [d["data"] for d in bob.data]
    result["list_node1"] = await list_rooms(nodes, 0)
    result["list_node2"] = await list_rooms(nodes, 1)
    wanted = [["room_started", ""], ["participant_joined", "alice"], ["participant_joined", "bob"]]
    hooks = nodes.hooks
    assert hooks is not None
    await wait_for(lambda: all(tuple(e) in hooks.events for e in wanted), 5)
    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()


class Watch(threading.Thread):
    """From the kill on, when node ``dead``'s entry is gone from Redis and when the room's key stops naming it
    (seconds after the kill); a thread of its own, so the clients' work does not delay the readings."""

    def __init__(self, socket: str, dead: str, killed: float, bound_s: float) -> None:
        super().__init__(daemon=True)
        import redis

        self.store = redis.Redis(unix_socket_path=socket)
        self.dead, self.start_time, self.bound_s = dead, killed, bound_s
        self.entry_gone_s: float | None = None
        self.key_moved_s: float | None = None

    def run(self) -> None:
        while time.monotonic() - self.start_time < self.bound_s:
            now = round(time.monotonic() - self.start_time, 2)
            if self.entry_gone_s is None and not self.store.exists(f"mediarouter:node:{self.dead}"):
                self.entry_gone_s = now
            if self.key_moved_s is None and self.store.get(ROOM_KEY) != self.dead.encode():
                self.key_moved_s = now
            if self.entry_gone_s is not None and self.key_moved_s is not None:
                return
            time.sleep(0.05)


async def failover(nodes: Nodes, result: dict[str, Any]) -> None:
    """The room is made on node 1; both clients come in through node 2; node 1 is SIGKILLed: they reconnect
    through node 2, where the room is made again, and bob receives alice again."""
    import redis
    from common import Publisher, Receiver, connect, wait_for
    from livekit import api

    store = redis.Redis(unix_socket_path=nodes.redis_socket)
    async with lk_api(nodes, 0) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=ROOM))
    room_a = await connect(nodes.url(1), token("alice"))
    publisher = Publisher(room_a, 320, 240)
    await publisher.publish(audio=False)
    room_b = await connect(nodes.url(1), token("bob"))
    bob = Receiver(room_b).attach()
    events: list[str] = []
    for name in ("reconnecting", "reconnected", "disconnected"):
        room_b.on(name, lambda *_, name=name: events.append(name))
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 30, 15)
    result["before"] = dict(bob.video)
    result["list_before"] = await list_rooms(nodes, 1)
    entries = node_entries(store)
    node1, node2 = (entries[ip]["id"] for ip in nodes_netns.HOST_IPS)
    result["owner_before"] = "node1" if store.get(ROOM_KEY) == node1.encode() else store.get(ROOM_KEY)
    killed = time.monotonic()
    nodes.kill(0)
    watch = Watch(nodes.redis_socket, node1, killed, 3 * nodes.ttl_s + 2)
    watch.start()
    bob.video.clear()
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 10, 20)
    result["media_again_s"] = round(time.monotonic() - killed, 1) if bob.frames("alice", 320, 240) >= 10 else None
    result["after"] = dict(bob.video)
    result["events"] = events
    result["list_after"] = await list_rooms(nodes, 1)
    watch.join(max(0.0, watch.bound_s - (time.monotonic() - killed)))
    result["entry_gone_s"], result["key_moved_s"] = watch.entry_gone_s, watch.key_moved_s
    entries = node_entries(store)
    result["states_after"] = {ip: e["state"] for ip, e in entries.items()}
    result["owner_after"] = "node2" if store.get(ROOM_KEY) == node2.encode() else store.get(ROOM_KEY)
    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()


PHASES = {"two_nodes": Phase(two_nodes, ttl_s=5.0, webhooks=True), "failover": Phase(failover, ttl_s=2.0)}

if __name__ == "__main__":
    sys.exit(nodes_netns.main(PHASES))
