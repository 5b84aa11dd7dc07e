"""A subscriber in a process of its own, for the impaired-link scenarios (run in a client host, see
tests/e2e/netns.py): the unmodified ``livekit`` SDK joins with the token it is given, subscribes to everything and
prints one JSON line per second until ``--seconds`` passed:

``{"sample": {"at": monotonic s, "frames": n, "widths": {"1280": n}, "gap_s": longest gap between video frames that
ends in this second (or the open gap when none came), "decoder": libwebrtc's cumulative receive counters,
"audio_frames": audio frames received in this second, "quality": the ConnectionQuality the server last sent about
this participant (0 POOR, 1 GOOD, 2 EXCELLENT, 3 LOST; null before the first)}}``;
first ``{"event": "connected"}``, last ``{"event": "done", "frames": n, "inbound": {...}}`` with the video
inbound-rtp statistics of libwebrtc (packets lost, NACKs sent, frames decoded, freezes). The clock is
CLOCK_MONOTONIC, shared with the scenario's process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from google.protobuf.json_format import MessageToDict
from livekit import rtc

# libwebrtc's cumulative receive counters in each sample: frames that arrive and are not assembled or decoded show
# up as packetsReceived moving while framesReceived/framesDecoded do not.
DECODER_COUNTERS = ("packetsReceived", "packetsLost", "framesReceived", "framesDecoded", "keyFramesDecoded",
                    "pliCount", "nackCount")


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def video_inbound(stats: Any) -> dict[str, Any]:
    for s in [*stats.subscriber_stats, *stats.publisher_stats]:
        m = MessageToDict(s)
        inbound = m.get("inboundRtp")
        if inbound and "frameWidth" in inbound.get("inbound", {}):
            flat: dict[str, Any] = {}
            for part in ("stream", "received", "inbound"):
                flat.update({k: v for k, v in inbound.get(part, {}).items() if not isinstance(v, (dict, list))})
            return flat
    return {}


async def run(url: str, token: str, seconds: float) -> None:
    room = rtc.Room()
    frames: list[tuple[float, int]] = []
    tasks: list[asyncio.Task[None]] = []

    audio_frames = [0]
    quality: list[int | None] = [None]  # this participant's ConnectionQuality, as the server last sent it

    async def count(track: rtc.Track) -> None:
        async for event in rtc.VideoStream(track):
            frames.append((time.monotonic(), event.frame.width))

    async def count_audio(track: rtc.Track) -> None:
        async for _ in rtc.AudioStream(track):
            audio_frames[0] += 1

    @room.on("track_subscribed")
    def on_track(track: rtc.Track, publication: rtc.RemoteTrackPublication,
                 participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.create_task(count(track)))
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.append(asyncio.create_task(count_audio(track)))

    @room.on("connection_quality_changed")
    def on_quality(participant: rtc.Participant, value: int) -> None:
        if participant.identity == room.local_participant.identity:
            quality[0] = int(value)

    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=True, connect_timeout=10))
    emit({"event": "connected"})
    start = time.monotonic()
    seen = 0
    audio_seen = 0
    last: float | None = None
    second = 0
    while time.monotonic() - start < seconds:
        second += 1
        await asyncio.sleep(max(0.0, start + second - time.monotonic()))
        now = time.monotonic()
        new = frames[seen:]
        seen += len(new)
        widths: dict[str, int] = {}
        gap = 0.0
        for at, width in new:
            widths[str(width)] = widths.get(str(width), 0) + 1
            if last is not None:
                gap = max(gap, at - last)
            last = at
        if not new and last is not None:
            gap = now - last
        inbound = video_inbound(await room.get_rtc_stats())
        decoder = {k: int(inbound.get(k, 0)) for k in DECODER_COUNTERS}
        emit({"sample": {"at": round(now, 3), "frames": len(new), "widths": widths, "gap_s": round(gap, 3),
                         "decoder": decoder, "audio_frames": audio_frames[0] - audio_seen, "quality": quality[0]}})
        audio_seen = audio_frames[0]
    inbound = video_inbound(await room.get_rtc_stats())
    emit({"event": "done", "frames": len(frames), "inbound": inbound})
    for task in tasks:
        task.cancel()
    await room.disconnect()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    asyncio.run(asyncio.wait_for(run(args.url, args.token, args.seconds), args.seconds + 30))
    return 0


if __name__ == "__main__":
    sys.exit(main())
