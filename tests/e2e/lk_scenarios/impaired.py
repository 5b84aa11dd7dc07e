"""Helpers of the impaired-link scenarios (cap.py, loss.py): a 720p simulcast publisher whose encoder needs every bit
it is allowed, subscribers in client hosts behind the impairment relay, and the worker's consumer counters.

The publisher (``SimulcastPublisher``) sends 1280x720 frames with simulcast on: the SDK's three layers (rids q 320 px,
h 640 px, f 1280 px) with their default ceilings (measured about 150, 450 and 3,100 kbit/s). A band of fresh noise
across the middle sixteenth of each frame keeps every layer at its ceiling, while the static rest keeps the encoder's
and the decoders' CPU affordable on a small shared machine: full-frame noise held the clean link at 3 fps there, a
quarter of the frame held the 1280 px layer at 12-13 fps, a sixteenth lets it reach 30 fps at the same layer rates.
``RemoteSubscriber`` starts tests/e2e/lk_scenarios/remote_subscriber.py in a host and collects its samples;
``cap_and_lift`` caps a host's downlink for a while and samples the worker's view of it every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livekit import rtc
from netimpair import Rule

W, H = 1280, 720
HERE = Path(__file__).resolve().parent


class SimulcastPublisher:
    """A room publishing one 720p simulcast camera track of noise at 30 fps until stopped."""

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.source = rtc.VideoSource(W, H)
        grey = b"\x80\x80\x80\xff" * (W * H * 15 // 32)
        self.frames = [rtc.VideoFrame(W, H, rtc.VideoBufferType.RGBA, grey + os.urandom(W * H // 4) + grey)
                       for _ in range(8)]
        self.task: asyncio.Task[None] | None = None
        self.tone: Any = None  # common.Publisher sending the microphone, when published with audio
        self.sid = ""

    async def publish(self, *, audio: bool = False, screen_share: bool = False) -> str:
        """Publish the camera (and, with ``audio``, a microphone with a tone); returns the camera's sid. With
        ``screen_share`` the track's source is a screen share (same frames, same simulcast layers)."""
        if audio:
            from common import Publisher

            self.tone = Publisher(self.room, W, H)
            await self.tone.publish(audio=True, video=False)
        track = rtc.LocalVideoTrack.create_video_track("cam", self.source)
        source = rtc.TrackSource.SOURCE_SCREENSHARE if screen_share else rtc.TrackSource.SOURCE_CAMERA
        options = rtc.TrackPublishOptions(source=source, simulcast=True)
        self.sid = (await self.room.local_participant.publish_track(track, options)).sid
        self.task = asyncio.create_task(self._feed())
        return self.sid

    async def _feed(self) -> None:
        loop = asyncio.get_running_loop()
        start, i = loop.time(), 0
        while True:
            self.source.capture_frame(self.frames[i % len(self.frames)])
            i += 1
            await asyncio.sleep(max(0.0, start + i / 30 - loop.time()))

    async def stop(self) -> None:
        if self.tone is not None:
            await self.tone.stop()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class RemoteSubscriber:
    """remote_subscriber.py in a client host: its per-second samples and its final report, as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.samples: list[dict[str, Any]] = []
        self.done: dict[str, Any] = {}
        self.connected = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, ctx: Any, host: Any, room: str, identity: str, seconds: float) -> RemoteSubscriber:
        proc = await host.spawn([sys.executable, str(HERE / "remote_subscriber.py"), "--url", ctx.url, "--token",
                                 ctx.token(identity, room, can_publish=False), "--seconds", str(seconds)])
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            msg = json.loads(line)
            if "sample" in msg:
                self.samples.append(msg["sample"])
            elif msg.get("event") == "connected":
                self.connected.set()
            elif msg.get("event") == "done":
                self.done = msg

    def width(self, sample: dict[str, Any]) -> int:
        widths = sample["widths"]
        return int(max(widths, key=widths.get)) if widths else 0

    def recent_width(self, n: int = 1) -> int:
        return min((self.width(s) for s in self.samples[-n:]), default=0) if len(self.samples) >= n else 0

    async def finish(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.reader, timeout_s)


async def until_video(subscriber: RemoteSubscriber) -> None:
    """Wait until the subscriber decodes video (at most 20 s), then 2 s more."""
    for _ in range(40):
        await asyncio.sleep(0.5)
        if subscriber.recent_width(2) > 0:
            break
    await asyncio.sleep(2)


Row = tuple[float, dict[str, Any], dict[str, Any]]


async def cap_and_lift(ctx: Any, host: Any, room: str, identity: str, cap: Rule, cap_s: float, after_s: float,
                       view: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[list[Row], float, float]:
    """Cap the host's downlink for cap_s, then lift it for after_s, sampling every second: (the time, the host's
    link counters, ``view`` of the worker's stats of ``identity``). Returns the rows (the first one before the cap)
    and when the cap went on and off."""
    rows: list[Row] = []

    async def sample(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(1)
            rows.append((time.monotonic(), (await host.stats())["down"], view(await ctx.worker_stats(room, identity))))

    rows.append((time.monotonic(), (await host.stats())["down"], {}))
    cap_on = time.monotonic()
    await host.set(downlink=cap)
    await sample(cap_s)
    cap_off = time.monotonic()
    await host.set(downlink=Rule())
    await sample(after_s)
    return rows, cap_on, cap_off


def window(samples: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    """The samples whose second ended in (start, end]."""
    return [s for s in samples if start < s["at"] <= end]


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """fps, longest gap and the widths seen over a run of per-second samples."""
    if not samples:
        return {"seconds": 0, "fps": 0.0, "longest_freeze_s": None, "widths": {}}
    widths: dict[str, int] = {}
    for s in samples:
        for w, n in s["widths"].items():
            widths[w] = widths.get(w, 0) + n
    return {"seconds": len(samples), "fps": round(sum(s["frames"] for s in samples) / len(samples), 1),
            "longest_freeze_s": round(max(s["gap_s"] for s in samples), 2), "widths": widths}


def consumer_counters(stats: dict[str, Any]) -> dict[str, int]:
    """The sums of the worker's counters over the consumers of a participant's subscriber transport: packets and
    bytes sent, retransmissions (``rtx_packets`` of them on the RTX stream), NACKs and PLIs received, layer switches,
    the NACKed packets not resent because they were resent less than an RTT ago, too often or too late, and the
    packets that carried a playout delay (router/playout.py)."""
    out = {"packets": 0, "bytes": 0, "retransmits": 0, "nack_rx": 0, "pli_rx": 0, "layer_switches": 0,
           "rtx_packets": 0, "drop_nack_too_soon": 0, "drop_nack_limit": 0, "drop_nack_too_old": 0,
           "playout_stamped": 0}
    for consumer in stats.get("sub", {}).get("consumers", {}).values():
        for key in out:
            out[key] += int(consumer.get(key, 0))
    return out


def sender_view(stats: dict[str, Any]) -> dict[str, Any]:
    """A subscriber's estimate (kbit/s and the delay detector's verdict) and its consumers' current layers (-1: none
    yet; "p": paused), from the worker's stats of its transports."""
    sub = stats.get("sub", {})
    media = sub.get("media", {})
    layers = [("p" if c.get("paused") else c.get("current_layer")) for c in sub.get("consumers", {}).values()
              if "current_layer" in c]
    return {"bwe_kbps": round(media.get("bwe_bps", 0) / 1000), "bwe_state": media.get("bwe_state"),
            "bwe_loss": round(float(media.get("bwe_loss", 0.0)), 3), "layers": layers,
            "probes": [media.get("bwe_probe_results", 0), media.get("bwe_probe_raises", 0),
                       round(media.get("bwe_probe_bps", 0) / 1000)]}


def producer_layer_bytes(stats: dict[str, Any]) -> list[int]:
    """The worker's cumulative received bytes per spatial layer of the participant's (first) video producer."""
    for producer in stats.get("pub", {}).get("producers", {}).values():
        layers = producer.get("layers", [])
        if len(layers) > 1:
            return [int(layer.get("bytes", 0)) for layer in layers]
    return []


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


async def publisher_layers(room: rtc.Room) -> dict[str, dict[str, Any]]:
    """The publisher's outbound video per rid: frames encoded, frame width, frames per second, target bitrate."""
    from google.protobuf.json_format import MessageToDict

    layers: dict[str, dict[str, Any]] = {}
    for s in (await room.get_rtc_stats()).publisher_stats:
        out = MessageToDict(s).get("outboundRtp")
        if not out or "frameWidth" not in out.get("outbound", {}):
            continue
        o = out["outbound"]
        layers[o.get("rid", "")] = {"frames_encoded": int(o.get("framesEncoded", 0)),
                                    "width": int(o.get("frameWidth", 0)), "fps": o.get("framesPerSecond"),
                                    "target_bps": o.get("targetBitrate"), "scalability": o.get("scalabilityMode"),
                                    "bytes_sent": int(out.get("sent", {}).get("bytesSent", 0))}
    return layers
