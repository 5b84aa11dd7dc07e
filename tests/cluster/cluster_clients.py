"""The SDK side of the two-node tests (tests/cluster/test_two_nodes.py), run as a subprocess: the unmodified
``livekit`` SDK for the clients and ``livekit-api`` for the RoomService; prints what it observed as JSON.

``python cluster_clients.py '<json>'`` with ``{"phase": "two_nodes" | "failover", "urls": [node1, node2], "key",
"secret", "kill_pgid"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e" / "lk_scenarios"))

from common import Publisher, Receiver, connect, wait_for  # noqa: E402
from livekit import api  # noqa: E402

ROOM = "cluster-room"


def token(cfg: dict[str, Any], identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=ROOM, room_list=True, room_create=True, room_admin=True)
    return api.AccessToken(cfg["key"], cfg["secret"]).with_identity(identity).with_grants(grants).to_jwt()


async def list_rooms(cfg: dict[str, Any], url: str) -> list[str]:
    async with api.LiveKitAPI(url.replace("ws://", "http://"), cfg["key"], cfg["secret"]) as lk:
        answer = await lk.room.list_rooms(api.ListRoomsRequest())
        return [room.name for room in answer.rooms]


async def two_nodes(cfg: dict[str, Any], result: dict[str, Any]) -> None:
    """alice publishes through node 1, bob joins through node 2, receives media and data; ListRooms on both."""
    node1, node2 = cfg["urls"]
    room_a = await connect(node1, token(cfg, "alice"))
    publisher = Publisher(room_a, 320, 240)
    result["published"] = await publisher.publish()
    room_b = await connect(node2, token(cfg, "bob"))
    bob = Receiver(room_b).attach()
    result["b_sees"] = sorted(p.identity for p in room_b.remote_participants.values())
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 30 and bob.audio.get("alice", 0) >= 50, 15)
    result["b_video"], result["b_audio"] = dict(bob.video), dict(bob.audio)
    await room_a.local_participant.publish_data(b"across nodes", reliable=True, destination_identities=["bob"])
    await wait_for(lambda: bool(bob.data), 10)
    result["b_data"] = [d["data"] for d in bob.data]
    result["list_node1"] = await list_rooms(cfg, node1)
    result["list_node2"] = await list_rooms(cfg, node2)
    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()


async def failover(cfg: dict[str, Any], result: dict[str, Any]) -> None:
    """The room is made on node 1; both clients come in through node 2; node 1 is SIGKILLed: they reconnect
    through node 2, where the room is made again, and bob receives alice again."""
    node1, node2 = cfg["urls"]
    async with api.LiveKitAPI(node1.replace("ws://", "http://"), cfg["key"], cfg["secret"]) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=ROOM))
    room_a = await connect(node2, token(cfg, "alice"))
    publisher = Publisher(room_a, 320, 240)
    await publisher.publish(audio=False)
    room_b = await connect(node2, token(cfg, "bob"))
    bob = Receiver(room_b).attach()
    events: list[str] = []
    for name in ("reconnecting", "reconnected", "disconnected"):
        room_b.on(name, lambda *_, name=name: events.append(name))
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 30, 15)
    result["before"] = dict(bob.video)
    result["list_before"] = await list_rooms(cfg, node2)
    os.killpg(cfg["kill_pgid"], signal.SIGKILL)
    killed = time.monotonic()
    bob.video.clear()
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 10, 20)
    result["media_again_s"] = round(time.monotonic() - killed, 1) if bob.frames("alice", 320, 240) >= 10 else None
    result["after"] = dict(bob.video)
    result["events"] = events
    result["list_after"] = await list_rooms(cfg, node2)
    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()


async def main(cfg: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        await asyncio.wait_for((two_nodes if cfg["phase"] == "two_nodes" else failover)(cfg, result), 45)
        result["ok"] = True
    except BaseException as exc:  # reported, with what was seen so far
        result["error"] = repr(exc)
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
    os._exit(0)  # the SDK's threads do not hold the process
