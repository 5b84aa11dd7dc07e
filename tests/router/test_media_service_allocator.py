"""The stream allocator wired into MediaService: a real Engine (behind a recording wrapper), fixed estimates.

What the allocator decides must reach the Engine (``set_consumer_layer``, ``pause_consumer``, ``resume_consumer``)
and control (``consumer.stream_state``), and control's own requests (pause/resume, preferred layer) must not undo
the allocation, nor the allocation control's pause.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.allocator import ALLOCATE_INTERVAL_S, EngineEstimates, Estimate, FixedEstimates, NoEstimates
from router.media_service import MediaService
from router.messages import ConsumeRequest, SetPreferredLayersRequest
from router.protocol import Empty, Event, Method
from tests.router.fakes import FakeChannel, FakeWorker
from tests.router.test_media_service import VIDEO, call, create_transport

SIMULCAST = dataclasses.replace(VIDEO, encodings=[("q", 1111, 0), ("h", 1112, 0), ("f", 1113, 0)])
RATES = [150_000, 450_000, 1_700_000]


class RecordingEngine:
    """Passes every call to the real Engine; records the consumer layer and pause calls."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[tuple[str, int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def snapshot_producer(self, p: int) -> dict[str, Any]:
        return dict(self.engine.snapshot_producer(p))

    def set_consumer_layer(self, c: int, spatial: int) -> None:
        self.calls.append(("layer", c, spatial))
        self.engine.set_consumer_layer(c, spatial)

    def lower_consumer_layer(self, c: int, spatial: int) -> None:
        self.calls.append(("layer", c, spatial))  # a lowering: the same layer change, the current layer held back
        self.engine.lower_consumer_layer(c, spatial)

    def pause_consumer(self, c: int) -> None:
        self.calls.append(("pause", c, 0))
        self.engine.pause_consumer(c)

    def resume_consumer(self, c: int) -> None:
        self.calls.append(("resume", c, 0))
        self.engine.resume_consumer(c)


@pytest.fixture
async def service() -> AsyncIterator[tuple[MediaService, FakeChannel, FixedEstimates]]:
    worker = FakeWorker(asyncio.get_running_loop())
    estimates = FixedEstimates()
    media = MediaService(worker, estimates=estimates)  # type: ignore[arg-type]
    media.start()
    assert media._tick_task is not None
    media._tick_task.cancel()  # the test drives the allocator with its own clock
    try:
        yield media, worker.channel, estimates
    finally:
        worker.loop.remove_reader(worker.sock.fileno())
        worker.sock.close()


class Clock:
    """Runs allocation passes with the producer's layers "receiving" at RATES."""

    def __init__(self, media: MediaService) -> None:
        self.media = media
        self.now = 1000.0
        self.bytes = [0.0, 0.0, 0.0]
        media.allocator.layer_bytes = lambda handle: [int(b) for b in self.bytes]  # type: ignore[method-assign]

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / ALLOCATE_INTERVAL_S)):
            self.now += ALLOCATE_INTERVAL_S
            self.bytes = [b + r / 8 * ALLOCATE_INTERVAL_S for b, r in zip(self.bytes, RATES, strict=True)]
            self.media.allocator.tick(self.now)


def stream_states(channel: FakeChannel) -> list[tuple[str, str]]:
    return [(target, body["state"]) for event, target, body in channel.notifications
            if event == Event.CONSUMER_STREAM_STATE]


async def test_allocation_reaches_the_engine_and_control(
    service: tuple[MediaService, FakeChannel, FixedEstimates],
) -> None:
    media, ch, estimates = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    await create_transport(ch, "r", "pub")
    await create_transport(ch, "r", "sub")
    await call(ch, Method.TRANSPORT_PRODUCE, "pub", SIMULCAST)
    await call(ch, Method.TRANSPORT_CONSUME, "sub",
               ConsumeRequest(consumer_id="c", producer_id="p-video", out_ssrc=9, pt_map=[(96, 96)]))
    engine = RecordingEngine(media.engine)
    media.engine = media.allocator.engine = engine  # type: ignore[assignment]
    h = media.consumers.handle("c")
    clock = Clock(media)
    sub = media.transports.get("sub").handle

    clock.run(2.0)  # no estimate: today's behaviour
    assert engine.calls == [] and stream_states(ch) == []

    estimates.estimates[sub] = Estimate(1_000_000)
    clock.run(1.0)  # layers are measured only while some transport has an estimate: two samples first
    assert engine.calls == [("layer", h, 1)]
    # Control prefers the top layer: the Engine still gets the allocator's lower limit.
    await call(ch, Method.CONSUMER_SET_PREFERRED_LAYERS, "c", SetPreferredLayersRequest(spatial=2))
    assert engine.calls[-1] == ("layer", h, 1)

    estimates.estimates[sub] = Estimate(100_000)
    clock.run(0.5)
    assert engine.calls[-1] == ("pause", h, 0) and media.engine.snapshot_consumer(h)["paused"] == 1
    assert stream_states(ch) == [("c", "paused")]
    # Control's resume (e.g. the subscriber answered) does not undo the allocator's pause.
    await call(ch, Method.CONSUMER_RESUME, "c", Empty())
    assert media.engine.snapshot_consumer(h)["paused"] == 1

    estimates.estimates[sub] = Estimate(5_000_000)
    clock.run(5.0)
    assert ("resume", h, 0) in engine.calls and media.engine.snapshot_consumer(h)["paused"] == 0
    assert stream_states(ch) == [("c", "paused"), ("c", "active")]

    # Control's pause is kept while the allocator resumes: a paused-by-control consumer stays paused.
    await call(ch, Method.CONSUMER_PAUSE, "c", Empty())
    estimates.estimates[sub] = Estimate(100_000)
    clock.run(0.5)
    estimates.estimates[sub] = Estimate(5_000_000)
    clock.run(10.0)
    assert media.engine.snapshot_consumer(h)["paused"] == 1


@pytest.mark.parametrize("congestion_control", [True, False])
async def test_congestion_control_off_gives_the_allocator_no_estimates(congestion_control: bool) -> None:
    worker = FakeWorker(asyncio.get_running_loop())
    worker.congestion_control = congestion_control
    media = MediaService(worker)  # type: ignore[arg-type]
    try:
        assert isinstance(media.allocator.estimates, EngineEstimates if congestion_control else NoEstimates)
        assert NoEstimates().estimate(0) is None
    finally:
        worker.sock.close()
