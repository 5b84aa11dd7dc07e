"""Issue 3 acceptance, placement: two rooms at once with two workers land on different workers (the subscriber
PCs connect to different worker UDP ports) and do not see each other's participants or media."""

from __future__ import annotations

from typing import Any

from common import Publisher, Receiver, connect, wait_for
from livekit import rtc

SIZES = {"one": (320, 240), "two": (160, 120)}


async def remote_ports(room: rtc.Room) -> list[int]:
    """The server ports of the room's ICE candidate pairs (one per worker UDP socket)."""
    stats = await room.get_rtc_stats()
    ports = set()
    for entry in list(stats.subscriber_stats) + list(stats.publisher_stats):
        if entry.HasField("remote_candidate"):
            ports.add(entry.remote_candidate.candidate.port)
    return sorted(ports)


async def run(ctx: Any, result: dict[str, Any]) -> None:
    rooms: dict[str, tuple[rtc.Room, Publisher, rtc.Room, Receiver]] = {}
    for name, (width, height) in SIZES.items():
        pub_room = await connect(ctx.url, ctx.token(f"pub-{name}", f"e2e-{name}"))
        publisher = Publisher(pub_room, width, height)
        await publisher.publish(audio=False)
        sub_room = await connect(ctx.url, ctx.token(f"sub-{name}", f"e2e-{name}"))
        rooms[name] = (pub_room, publisher, sub_room, Receiver(sub_room).attach())
    for name, (width, height) in SIZES.items():
        receiver = rooms[name][3]
        await wait_for(lambda r=receiver, n=name, w=width, h=height: r.frames(f"pub-{n}", w, h) >= 30, 20)
    for name, (pub_room, _publisher, sub_room, receiver) in rooms.items():
        result[name] = {
            "video": dict(receiver.video),
            "sub_sees": sorted(p.identity for p in sub_room.remote_participants.values()),
            "pub_sees": sorted(p.identity for p in pub_room.remote_participants.values()),
            "ports": await remote_ports(sub_room),
        }
    for pub_room, publisher, sub_room, receiver in rooms.values():
        await receiver.stop()
        await publisher.stop()
        await sub_room.disconnect()
        await pub_room.disconnect()
