"""Helpers shared by the LiveKit SDK scenarios: publishers with moving test patterns and counting receivers.

Everything here drives the real ``livekit`` Python SDK (libwebrtc inside its wheel); nothing is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc

SAMPLE_RATE = 48000
AUDIO_FRAME_MS = 10


def pattern(width: int, height: int, index: int) -> bytes:
    """An RGBA frame with a white vertical bar that moves 4 px per frame over a colour that changes slowly."""
    shade = bytes(((index * 3) % 256, 64, 255 - (index * 3) % 256, 255))
    row = bytearray(shade * width)
    x = (index * 4) % max(width - 8, 1)
    row[x * 4:(x + 8) * 4] = b"\xff" * 32
    return bytes(row) * height


@dataclass
class Publisher:
    """A connected room publishing a microphone (sine tone) and a camera (moving bar) until stopped."""

    room: rtc.Room
    width: int
    height: int
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    video_frames: int = 0
    audio_frames: int = 0

    async def publish(self, *, audio: bool = True, video: bool = True, simulcast: bool = False) -> list[str]:
        sids: list[str] = []
        if audio:
            source = rtc.AudioSource(SAMPLE_RATE, 1)
            track = rtc.LocalAudioTrack.create_audio_track("mic", source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            pub = await self.room.local_participant.publish_track(track, options)
            sids.append(pub.sid)
            self.tasks.append(asyncio.create_task(self._audio(source)))
        if video:
            vsource = rtc.VideoSource(self.width, self.height)
            vtrack = rtc.LocalVideoTrack.create_video_track("cam", vsource)
            voptions = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=simulcast)
            pub = await self.room.local_participant.publish_track(vtrack, voptions)
            sids.append(pub.sid)
            self.tasks.append(asyncio.create_task(self._video(vsource)))
        return sids

    async def _audio(self, source: rtc.AudioSource) -> None:
        samples = SAMPLE_RATE * AUDIO_FRAME_MS // 1000
        n = 0
        while True:
            frame = rtc.AudioFrame.create(SAMPLE_RATE, 1, samples)
            data = frame.data
            for i in range(samples):
                data[i] = int(8000 * math.sin(2 * math.pi * 440 * (n + i) / SAMPLE_RATE))
            n += samples
            await source.capture_frame(frame)
            self.audio_frames += 1

    async def _video(self, source: rtc.VideoSource) -> None:
        index = 0
        while True:
            frame = rtc.VideoFrame(self.width, self.height, rtc.VideoBufferType.RGBA,
                                   pattern(self.width, self.height, index))
            source.capture_frame(frame)
            self.video_frames += 1
            index += 1
            await asyncio.sleep(1 / 30)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@dataclass
class Receiver:
    """Counts the frames of every subscribed track of one room, by publisher identity and size."""

    room: rtc.Room
    video: dict[str, int] = field(default_factory=dict)  # "identity WxH" -> frames
    audio: dict[str, int] = field(default_factory=dict)  # identity -> frames
    data: list[dict[str, Any]] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def attach(self) -> Receiver:
        @self.room.on("track_subscribed")
        def on_track(track: rtc.Track, publication: rtc.RemoteTrackPublication,
                     participant: rtc.RemoteParticipant) -> None:
            self.subscribed.append(f"{participant.identity}/{publication.sid}/{track.kind}")
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                self.tasks.append(asyncio.create_task(self._count_video(track, participant.identity)))
            elif track.kind == rtc.TrackKind.KIND_AUDIO:
                self.tasks.append(asyncio.create_task(self._count_audio(track, participant.identity)))

        @self.room.on("data_received")
        def on_data(packet: rtc.DataPacket) -> None:
            self.data.append({
                "data": packet.data.decode(errors="replace"),
                "from": packet.participant.identity if packet.participant else None,
                "topic": packet.topic,
                "kind": int(packet.kind),
            })

        return self

    async def _count_video(self, track: rtc.Track, identity: str) -> None:
        stream = rtc.VideoStream(track)
        async for event in stream:
            key = f"{identity} {event.frame.width}x{event.frame.height}"
            self.video[key] = self.video.get(key, 0) + 1

    async def _count_audio(self, track: rtc.Track, identity: str) -> None:
        stream = rtc.AudioStream(track)
        async for _ in stream:
            self.audio[identity] = self.audio.get(identity, 0) + 1

    def frames(self, identity: str, width: int, height: int) -> int:
        return self.video.get(f"{identity} {width}x{height}", 0)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def wait_for(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    """Polls ``predicate()`` until true or ``timeout_s`` passed; returns its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return bool(predicate())


async def connect(url: str, token: str, *, auto_subscribe: bool = True) -> rtc.Room:
    room = rtc.Room()
    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=auto_subscribe, connect_timeout=10))
    return room


async def alice_to_bob(ctx: Any, room: str) -> tuple[rtc.Room, Publisher, rtc.Room, Receiver, list[str]]:
    """alice publishes 320x240 video, bob receives it; bob's reconnecting/reconnected/disconnected events are
    recorded in the returned list, in order."""
    room_a = await connect(ctx.url, ctx.token("alice", room))
    publisher = Publisher(room_a, 320, 240)
    await publisher.publish(audio=False)
    room_b = await connect(ctx.url, ctx.token("bob", room))
    bob = Receiver(room_b).attach()
    events: list[str] = []
    for name in ("reconnecting", "reconnected", "disconnected"):
        room_b.on(name, lambda *args, n=name: events.append(n))
    return room_a, publisher, room_b, bob, events
