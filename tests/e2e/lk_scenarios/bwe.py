"""Bandwidth estimation through the router: a libwebrtc publisher (the LiveKit SDK) sends a 640x480 noise video capped
at 2.5 Mbps; with the worker's transport-wide CC feedback its estimate climbs toward the cap (without feedback it
sinks to a few tens of kbps). Records the publisher's target bitrate and bytes sent once a second."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from common import Receiver, connect
from google.protobuf.json_format import MessageToDict
from livekit import rtc

ROOM = "e2e-bwe"
W, H = 640, 480
SECONDS = 10


def _video_outbound(stats: Any) -> dict[str, Any]:
    for s in stats.publisher_stats:
        m = MessageToDict(s)
        if "outboundRtp" in m and m["outboundRtp"].get("stream", {}).get("kind", "video") == "video":
            out = m["outboundRtp"]
            return {"target_bps": float(out.get("outbound", {}).get("targetBitrate", 0)),
                    "bytes_sent": int(out.get("sent", {}).get("bytesSent", 0))}
    return {}


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room = await connect(ctx.url, ctx.token("alice", ROOM))
    source = rtc.VideoSource(W, H)
    track = rtc.LocalVideoTrack.create_video_track("cam", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False,
                                      video_encoding=rtc.VideoEncoding(max_framerate=30, max_bitrate=2_500_000))
    await room.local_participant.publish_track(track, options)
    frames = [os.urandom(W * H * 4) for _ in range(6)]  # noise: the encoder needs every bit it is allowed

    async def feed() -> None:
        i = 0
        while True:
            source.capture_frame(rtc.VideoFrame(W, H, rtc.VideoBufferType.RGBA, frames[i % len(frames)]))
            i += 1
            await asyncio.sleep(1 / 30)

    feeder = asyncio.create_task(feed())
    room_b = await connect(ctx.url, ctx.token("bob", ROOM))
    bob = Receiver(room_b).attach()
    samples: list[dict[str, Any]] = []
    result["samples"] = samples
    for _ in range(SECONDS):
        await asyncio.sleep(1)
        samples.append(_video_outbound(await room.get_rtc_stats()))
    result["bob_video"] = dict(bob.video)
    feeder.cancel()
    await bob.stop()
    await room_b.disconnect()
    await room.disconnect()
