"""Issue 3 acceptance, main flow: A publishes audio + video; B joins later, is auto-subscribed and receives video
frames of the published size and audio; A sends a reliable packet to B only and C does not get it; B hears the
connection quality of itself and of A (ConnectionQualityUpdate, EXCELLENT or GOOD on loopback); B leaves and A sees
participant_disconnected."""

from __future__ import annotations

import asyncio
from typing import Any

from common import Publisher, Receiver, connect, wait_for

WIDTH, HEIGHT = 320, 240
ROOM = "e2e-basic"


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_a = await connect(ctx.url, ctx.token("alice", ROOM))
    result["a_sid"] = room_a.local_participant.sid
    gone: list[str] = []
    room_a.on("participant_disconnected", lambda p: gone.append(p.identity))
    publisher = Publisher(room_a, WIDTH, HEIGHT)
    result["published"] = await publisher.publish()
    await asyncio.sleep(1.0)

    room_b = await connect(ctx.url, ctx.token("bob", ROOM))
    quality_events: list[list[str]] = []
    room_b.on("connection_quality_changed", lambda p, q: quality_events.append([p.identity, q.name]))
    bob = Receiver(room_b).attach()
    room_c = await connect(ctx.url, ctx.token("carol", ROOM))
    carol = Receiver(room_c).attach()
    result["b_sees"] = sorted(p.identity for p in room_b.remote_participants.values())
    await wait_for(lambda: bob.frames("alice", WIDTH, HEIGHT) >= 30 and bob.audio.get("alice", 0) >= 50, 20)
    result["b_subscribed"] = bob.subscribed
    result["b_video"] = dict(bob.video)
    result["b_audio"] = dict(bob.audio)
    result["c_video"] = dict(carol.video)

    await room_a.local_participant.publish_data(b"for bob only", reliable=True,
                                                destination_identities=["bob"], topic="secret")
    await wait_for(lambda: bool(bob.data), 10)
    await asyncio.sleep(1.0)  # time for a wrong delivery to carol to show up
    result["b_data"] = bob.data
    result["c_data"] = carol.data

    def qualities() -> dict[str, str]:
        alice = room_b.remote_participants.get("alice")
        return {"bob": room_b.local_participant.connection_quality.name,
                "alice": alice.connection_quality.name if alice is not None else "absent"}

    # rounds every 5 s (docs/PROTOCOL.md, Connection quality): bob hears of himself and of alice, whom he receives
    await wait_for(lambda: "QUALITY_UNKNOWN" not in qualities().values(), 15)
    result["b_quality"] = qualities()
    result["b_quality_events"] = list(quality_events)

    await room_b.disconnect()
    await wait_for(lambda: "bob" in gone, 10)
    result["a_saw_disconnected"] = list(gone)
    result["a_video_frames_sent"] = publisher.video_frames

    await bob.stop()
    await carol.stop()
    await publisher.stop()
    await room_c.disconnect()
    await room_a.disconnect()
