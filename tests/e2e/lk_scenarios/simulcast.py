"""Simulcast with the LiveKit SDK: a 960x540 camera published with simulcast (rids q 320x180, h 640x360, f 960x540:
the Rust SDK adds the 180p layer only from 960 pixels up; below that its q is also full size); a subscriber gets the
highest layer on a single-SSRC m-line, then asks for LOW quality (UpdateTrackSettings) and gets 320x180."""

from __future__ import annotations

from typing import Any

from common import Publisher, Receiver, connect, wait_for
from livekit import rtc

ROOM = "e2e-simulcast"
WIDTH, HEIGHT = 960, 540


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_a = await connect(ctx.url, ctx.token("alice", ROOM))
    publisher = Publisher(room_a, WIDTH, HEIGHT)
    result["published"] = await publisher.publish(audio=False, simulcast=True)
    room_b = await connect(ctx.url, ctx.token("bob", ROOM))
    bob = Receiver(room_b).attach()
    await wait_for(lambda: sum(bob.video.values()) >= 60, 25)
    result["b_video"] = dict(bob.video)
    info = next(p for p in room_b.remote_participants.values() if p.identity == "alice")
    pub = next(iter(info.track_publications.values()))
    result["simulcasted"] = bool(pub.simulcasted)
    pub.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_LOW)
    await wait_for(lambda: bob.frames("alice", WIDTH // 3, HEIGHT // 3) >= 30, 25)
    result["b_video_after_low"] = dict(bob.video)
    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()
