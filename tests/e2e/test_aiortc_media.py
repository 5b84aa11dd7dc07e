"""End to end over loopback with real aiortc peers: control (in-process supervisor) -> worker -> fast path.

Peer A publishes Opus audio and VP8 video and opens a data channel; peer B subscribes. The SDP both peers use
comes from control's negotiation layer; every packet crosses a real worker process (ICE-lite, DTLS, SRTP in the
Cython Engine, SCTP). aiortc is an independent WebRTC stack, so this is the foundation's proof that a real peer
can publish and receive through mediarouter. aiortc only offers loopback candidates when its host-address lookup
is patched, which these tests do.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aioice.ice
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame, VideoFrame

from control.rtc.codecs import router_codec
from control.rtc.media import MediaClient
from control.rtc.negotiation import (
    PublishPlan,
    SubscribedTrack,
    TrackPlan,
    answer_offer,
    consumer_pt_map,
    parse_answer,
    subscriber_offer,
)
from control.workers.supervisor import Supervisor
from control.workers.worker_client import WorkerError
from tests.conftest import free_udp_ports, pinned_cpus

pytestmark = pytest.mark.timeout(90)

WIDTH, HEIGHT = 320, 240


class MovingPatternTrack(MediaStreamTrack):
    """VP8 source: a bar that moves one column per frame, 30 fps."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._n = 0
        self._start = time.monotonic()

    async def recv(self) -> VideoFrame:
        pts = self._n * 3000
        wait = self._start + self._n / 30 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        img = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        x = (self._n * 4) % WIDTH
        img[:, x : x + 16] = (255, 255, 255)
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


class SineTrack(MediaStreamTrack):
    """Opus source: a 440 Hz tone in 20 ms frames."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._n = 0
        self._start = time.monotonic()

    async def recv(self) -> AudioFrame:
        samples = 960
        wait = self._start + self._n * 0.02 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(samples) + self._n * samples) / 48000
        pcm = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._n * samples
        frame.time_base = fractions.Fraction(1, 48000)
        self._n += 1
        return frame


@pytest.fixture
def loopback_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
async def supervisor(runtime_root: str) -> AsyncIterator[Supervisor]:
    sup = Supervisor(workers=2, node_ip="127.0.0.1", rtc_port_base=free_udp_ports(2), runtime_root=runtime_root)
    await sup.start()
    try:
        yield sup
    finally:
        await sup.stop()


@dataclass
class Received:
    video_frames: list[tuple[int, int]] = field(default_factory=list)
    audio_frames: int = 0
    messages: list[str] = field(default_factory=list)
    channel_labels: list[str] = field(default_factory=list)


async def _publish(media: MediaClient, router_id: str, transport_id: str, pc: RTCPeerConnection) -> PublishPlan:
    """Offer from the client, answer from control's negotiation layer, worker objects from the plan."""
    await pc.setLocalDescription(await pc.createOffer())
    params = await media.create_transport(router_id, transport_id)
    answer, plan = answer_offer(pc.localDescription.sdp, params)
    await media.connect(
        transport_id,
        role="server" if plan.remote_dtls_role == "client" else "client",
        fingerprints=plan.fingerprints,
        sctp_port=plan.sctp.port if plan.sctp else None,
        max_message_size=plan.sctp.max_message_size if plan.sctp else 262144,
    )
    for track in plan.tracks:
        await media.produce(transport_id, f"{transport_id}-p{track.mid}", track)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return plan


async def _subscribe(
    media: MediaClient,
    router_id: str,
    transport_id: str,
    pc: RTCPeerConnection,
    producers: list[tuple[str, TrackPlan]],
    *,
    data_channel: bool,
) -> dict[str, int]:
    """Server offer from the negotiation layer, client answer, consumers with the negotiated payload types."""
    params = await media.create_transport(router_id, transport_id)
    subscribed: list[tuple[str, TrackPlan, SubscribedTrack]] = []
    for i, (producer_id, track) in enumerate(producers):
        codec = router_codec(track.codecs[0], track.kind)
        sub = SubscribedTrack(
            mid=str(i),
            kind=track.kind,
            codec=codec,
            out_ssrc=0x1000_0000 + i,
            stream_id="stream-a",
            track_id=f"track-{i}",
            cname="peer-a",
        )
        subscribed.append((producer_id, track, sub))
    offer = subscriber_offer(params, [s for _, _, s in subscribed], data_channel=data_channel, session_version=1)
    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    remote = parse_answer(pc.localDescription.sdp)
    await media.connect(
        transport_id,
        role="server" if remote.remote_dtls_role == "client" else "client",
        fingerprints=remote.fingerprints,
        sctp_port=remote.sctp.port if remote.sctp else None,
    )
    out_ssrcs = {}
    for producer_id, track, sub in subscribed:
        consumer_id = f"{transport_id}-c{sub.mid}"
        await media.consume(
            transport_id, consumer_id, producer_id, out_ssrc=sub.out_ssrc, pt_map=consumer_pt_map(track, sub)
        )
        out_ssrcs[track.kind] = sub.out_ssrc
    return out_ssrcs


def _collect(pc: RTCPeerConnection, received: Received) -> list[asyncio.Task[None]]:
    tasks: list[asyncio.Task[None]] = []

    async def drain(track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()
            if track.kind == "video":
                received.video_frames.append((frame.width, frame.height))
            else:
                received.audio_frames += 1

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(drain(track)))

    @pc.on("datachannel")
    def on_datachannel(channel: object) -> None:
        received.channel_labels.append(channel.label)  # type: ignore[attr-defined]

        @channel.on("message")  # type: ignore[attr-defined]
        def on_message(message: str) -> None:
            received.messages.append(message)

    return tasks


async def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.usefixtures("loopback_candidates")
async def test_publish_subscribe_media_and_data(supervisor: Supervisor) -> None:
    media = MediaClient(supervisor.client(0))
    await media.create_router("room-1")
    pc_a, pc_b = RTCPeerConnection(), RTCPeerConnection()
    received = Received()
    tasks: list[asyncio.Task[None]] = []
    try:
        pc_a.addTrack(SineTrack())
        pc_a.addTrack(MovingPatternTrack())
        chat = pc_a.createDataChannel("chat")
        plan = await _publish(media, "room-1", "ta", pc_a)
        assert sorted(t.kind for t in plan.tracks) == ["audio", "video"]
        await media.produce_data("ta", "dp-chat", "chat")

        tasks = _collect(pc_b, received)
        producers = [(f"ta-p{t.mid}", t) for t in plan.tracks]
        out_ssrcs = await _subscribe(media, "room-1", "tb", pc_b, producers, data_channel=True)
        await media.consume_data("tb", "dc-chat", "dp-chat", "chat")

        await _wait_for(lambda: chat.readyState == "open", 15, "A's data channel to open")
        await _wait_for(lambda: "chat" in received.channel_labels, 15, "B to get the server's data channel")
        chat.send("hello from A")
        await _wait_for(lambda: "hello from A" in received.messages, 10, "the message to reach B")
        await _wait_for(lambda: len(received.video_frames) >= 30, 30, "30 decoded video frames at B")
        await _wait_for(lambda: received.audio_frames >= 25, 10, "decoded audio frames at B")
        assert set(received.video_frames) == {(WIDTH, HEIGHT)}

        stats = await media.get_stats("tb")
        consumers = stats["consumers"]
        assert consumers["tb-c0"]["packets"] > 0 and consumers["tb-c1"]["packets"] > 0
        assert set(out_ssrcs) == {"audio", "video"}

        # Closing releases everything: the Python objects and the Engine's tables.
        await media.close_transport("tb")
        await media.close_transport("ta")
        await media.close_router("room-1")
        dump = (await supervisor.client(0).request("worker.dump", "", {}))["media"]
        # lifetime traffic counters
        totals = {"rx_datagrams", "rx_wakeups", "tx_datagrams", "tx_messages", "totals", "drops"}
        assert {k: v for k, v in dump.items() if k not in totals} == dict.fromkeys(dump.keys() - totals, 0)
        with pytest.raises(WorkerError, match="not found"):
            await media.get_stats("ta")
    finally:
        for task in tasks:
            task.cancel()
        await pc_a.close()
        await pc_b.close()


async def _inbound_packets_lost(pc: RTCPeerConnection, kind: str) -> tuple[int, int]:
    report = await pc.getStats()
    for stat in report.values():
        if stat.type == "inbound-rtp" and stat.kind == kind:
            return stat.packetsReceived, stat.packetsLost
    raise AssertionError(f"no inbound-rtp stats for {kind}")


@pytest.mark.usefixtures("loopback_candidates")
async def test_media_keeps_flowing_while_the_other_worker_is_killed(supervisor: Supervisor) -> None:
    """Worker 0 is SIGKILLed while B receives through worker 1: worker 0 is back within 2 s on the same core and
    port, and B's video on worker 1 sees no lost packet and no stall."""
    slots = supervisor.slots
    assert len({pinned_cpus(s.pid) for s in slots if s.pid}) == 2, "each worker pinned to its own core"
    for slot in slots:
        assert pinned_cpus(slot.pid) == str(slot.core)  # type: ignore[arg-type]

    media = MediaClient(supervisor.client(1))
    await media.create_router("room-2")
    pc_a, pc_b = RTCPeerConnection(), RTCPeerConnection()
    received = Received()
    arrivals: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        pc_a.addTrack(MovingPatternTrack())
        plan = await _publish(media, "room-2", "ta", pc_a)

        @pc_b.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            async def drain() -> None:
                while True:
                    frame = await track.recv()
                    received.video_frames.append((frame.width, frame.height))
                    arrivals.append(time.monotonic())

            tasks.append(asyncio.ensure_future(drain()))

        await _subscribe(media, "room-2", "tb", pc_b, [(f"ta-p{t.mid}", t) for t in plan.tracks], data_channel=False)
        await _wait_for(lambda: len(received.video_frames) >= 30, 30, "video at B before the kill")
        _, lost_before = await _inbound_packets_lost(pc_b, "video")

        victim = slots[0]
        old_pid, core, port = victim.pid, victim.core, victim.udp_port
        assert old_pid is not None
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        await _wait_for(lambda: victim.running and victim.pid != old_pid, 2.0, "worker 0 respawned")
        respawn_s = time.monotonic() - killed_at
        assert victim.core == core and victim.udp_port == port and victim.restarts == 1
        assert pinned_cpus(victim.pid) == str(core)  # type: ignore[arg-type]
        await asyncio.sleep(max(0.0, 2.0 - respawn_s))

        window = [t for t in arrivals if t >= killed_at - 0.5]
        gaps = [b - a for a, b in zip(window, window[1:], strict=False)]
        assert len(window) >= 30, f"only {len(window)} frames around the kill"
        assert max(gaps) < 0.3, f"video stalled for {max(gaps):.3f} s while worker 0 restarted"
        received_after, lost_after = await _inbound_packets_lost(pc_b, "video")
        assert lost_after == lost_before, "packets lost on worker 1 while worker 0 was killed"
        assert slots[1].restarts == 0
    finally:
        for task in tasks:
            task.cancel()
        await pc_a.close()
        await pc_b.close()
