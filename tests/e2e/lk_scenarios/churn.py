"""Renegotiation churn: a publisher publishes and unpublishes a camera three times while a subscriber stays (the
subscriber offer recycles m-lines), and a third participant joins and leaves each round; every round's new track
reaches the subscriber."""

from __future__ import annotations

from typing import Any

from common import Publisher, Receiver, connect, wait_for

ROOM = "e2e-churn"
SIZES = [(320, 240), (160, 120), (240, 180)]


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_a = await connect(ctx.url, ctx.token("alice", ROOM))
    room_b = await connect(ctx.url, ctx.token("bob", ROOM))
    bob = Receiver(room_b).attach()
    unpublished: list[str] = []
    room_b.on("track_unpublished", lambda pub, p: unpublished.append(pub.sid))
    rounds: list[dict[str, Any]] = []
    result["rounds"] = rounds
    for index, (width, height) in enumerate(SIZES):
        publisher = Publisher(room_a, width, height)
        sids = await publisher.publish(audio=index == 0)
        room_c = await connect(ctx.url, ctx.token(f"carol{index}", ROOM))
        got = await wait_for(lambda w=width, h=height: bob.frames("alice", w, h) >= 20, 20)
        video_sid = sids[-1]
        await publisher.stop()
        await room_a.local_participant.unpublish_track(video_sid)
        gone = await wait_for(lambda s=video_sid: s in unpublished, 10)
        await room_c.disconnect()
        rounds.append({"size": f"{width}x{height}", "frames": bob.frames("alice", width, height), "got": got,
                       "unpublished_seen": gone, "b_video": dict(bob.video)})
    result["b_subscribed"] = list(bob.subscribed)
    await bob.stop()
    await room_b.disconnect()
    await room_a.disconnect()
