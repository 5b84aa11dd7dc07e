"""Dynacast with the LiveKit SDK: alice publishes a 960x540 simulcast camera (rids q 320x180, h 640x360, f 960x540)
with ``RoomOptions(dynacast=True)``; bob, the only subscriber, asks for LOW, then for HIGH again. The server's
SubscribedQualityUpdate makes alice's libwebrtc stop and restart encodings; what each rid sends is read from alice's
own outbound-rtp stats (bytes sent per rid, sampled every 0.25 s).

Records: the per-rid send rates while HIGH is wanted, how long after asking for LOW the f layer stopped (no byte
for a whole second), the rates then, how long after asking for HIGH the f layer sent again, and bob's frames."""

from __future__ import annotations

import asyncio
from typing import Any

from common import Publisher, Receiver, connect, wait_for
from livekit import rtc

ROOM = "e2e-dynacast"
W, H = 960, 540
STEP_S = 0.25


async def layer_bytes(room: rtc.Room) -> dict[str, int]:
    """Bytes sent so far per simulcast rid of the room's outbound video."""
    out: dict[str, int] = {}
    for stats in (await room.get_rtc_stats()).publisher_stats:
        if stats.WhichOneof("stats") == "outbound_rtp" and stats.outbound_rtp.outbound.rid:
            rid = stats.outbound_rtp.outbound.rid
            out[rid] = out.get(rid, 0) + int(stats.outbound_rtp.sent.bytes_sent)
    return out


async def rates(room: rtc.Room, seconds: float = 1.0) -> dict[str, int]:
    """Bits per second per rid over ``seconds``."""
    before = await layer_bytes(room)
    await asyncio.sleep(seconds)
    after = await layer_bytes(room)
    return {rid: int((after[rid] - before.get(rid, 0)) * 8 / seconds) for rid in after}


async def until_stopped(room: rtc.Room, rid: str, timeout_s: float) -> float | None:
    """Seconds until ``rid`` last sent a byte, once it has sent none for a whole second; None on timeout."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    last_bytes, last_change = -1, start
    while loop.time() - start < timeout_s:
        now_bytes = (await layer_bytes(room)).get(rid, 0)
        now = loop.time()
        if now_bytes != last_bytes:
            last_bytes, last_change = now_bytes, now
        elif now - last_change >= 1.0:
            return round(last_change - start, 2)
        await asyncio.sleep(STEP_S)
    return None


async def until_sending(room: rtc.Room, rid: str, timeout_s: float) -> float | None:
    """Seconds until ``rid`` sends again; None on timeout."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = (await layer_bytes(room)).get(rid, 0)
    while loop.time() - start < timeout_s:
        await asyncio.sleep(STEP_S)
        if (await layer_bytes(room)).get(rid, 0) > first:
            return round(loop.time() - start, 2)
    return None


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_a = rtc.Room()
    await room_a.connect(ctx.url, ctx.token("alice", ROOM), rtc.RoomOptions(dynacast=True, connect_timeout=10))
    publisher = Publisher(room_a, W, H)
    await publisher.publish(audio=False, simulcast=True)
    room_b = await connect(ctx.url, ctx.token("bob", ROOM))
    bob = Receiver(room_b).attach()
    result["b_high"] = await wait_for(lambda: bob.frames("alice", W, H) >= 30, 20)
    result["rates_high"] = await rates(room_a)
    pub = next(p for p in room_b.remote_participants.values() if p.identity == "alice")
    video = next(iter(pub.track_publications.values()))

    video.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_LOW)
    result["f_stopped_after_s"] = await until_stopped(room_a, "f", 12)
    result["rates_low"] = await rates(room_a)
    low_before = bob.frames("alice", W // 3, H // 3)
    result["b_low"] = await wait_for(lambda: bob.frames("alice", W // 3, H // 3) >= low_before + 10, 5)

    high_before = bob.frames("alice", W, H)
    video.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_HIGH)
    result["f_sending_after_s"] = await until_sending(room_a, "f", 5)
    # Bob's own link decides when he sees the high layer again: the stream allocator probes before it raises him
    # (his estimate only grew to what the low layer needed), as after a lifted cap (docs/FORWARDING.md, Probing).
    result["b_high_again"] = await wait_for(lambda: bob.frames("alice", W, H) >= high_before + 10, 15)
    result["rates_high_again"] = await rates(room_a)
    result["b_video"] = dict(bob.video)
    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()
