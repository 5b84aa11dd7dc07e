"""MediaService's wake-ups (docs/PERFORMANCE.md, Wake-ups): with ``rx_hold_ms`` the UDP socket is left unwatched
for the hold after each wake-up and what arrived meanwhile is read by one later wake-up; without a transport the
tick sleeps long, and a new transport ends that sleep; with a quiet transport the tick sleeps until its next timer
(docs/FORWARDING.md, Timers), and requests that wake it early never make it run more often than every TICK_S."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from router import media_service
from router.media_service import MediaService
from router.protocol import Empty, Method
from tests.router.fakes import FakeWorker
from tests.router.test_media_service import call, create_transport


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


async def _with_service(hold_ms: int, body: Callable[[MediaService, FakeWorker], Awaitable[None]]) -> None:
    worker = FakeWorker(asyncio.get_running_loop())
    worker.rx_hold_ms = hold_ms
    media = MediaService(worker)  # type: ignore[arg-type]
    media.start()
    try:
        await body(media, worker)
    finally:
        if media._tick_task is not None:
            media._tick_task.cancel()
        for callback in worker.close_callbacks:
            callback()
        worker.loop.remove_reader(worker.sock.fileno())
        worker.sock.close()


async def test_a_hold_batches_what_arrives_during_it_into_one_wake_up() -> None:
    async def body(media: MediaService, worker: FakeWorker) -> None:
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            def counts() -> tuple[int, int]:
                snap = media.engine.snapshot_engine()
                return snap["wakeups"], snap["rx_datagrams"]

            peer.sendto(b"\xff" * 20, worker.sock.getsockname())  # not RTP: read and dropped by the Engine
            await _until(lambda: counts() == (1, 1))
            for _ in range(5):
                peer.sendto(b"\xff" * 20, worker.sock.getsockname())
            await asyncio.sleep(0.05)  # well inside the hold: nobody reads the socket
            assert counts() == (1, 1)
            await _until(lambda: counts()[0] >= 2)
            assert counts() == (2, 6)  # the five in one wake-up once the hold ended
        finally:
            peer.close()

    await _with_service(1000, body)


async def test_without_a_hold_every_datagram_is_read_at_once() -> None:
    async def body(media: MediaService, worker: FakeWorker) -> None:
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for n in range(1, 4):
                peer.sendto(b"\xff" * 20, worker.sock.getsockname())
                await _until(lambda n=n: media.engine.snapshot_engine()["rx_datagrams"] == n)
        finally:
            peer.close()

    await _with_service(0, body)


def _count_ticks(media: MediaService) -> list[float]:
    """The times of the tick's runs (the allocator is ticked once per run)."""
    ticks: list[float] = []
    tick = media.allocator.tick

    def counted(now: float) -> None:
        ticks.append(now)
        tick(now)

    media.allocator.tick = counted  # type: ignore[method-assign]
    return ticks


async def test_the_idle_tick_sleeps_until_a_transport_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_service, "IDLE_TICK_S", 60.0)  # only the kick can end the idle sleep in time

    async def body(media: MediaService, worker: FakeWorker) -> None:
        ticks = _count_ticks(media)
        await _until(lambda: media._tick_sleep is not None)  # no transport: the long sleep
        await asyncio.sleep(0.1)
        assert ticks == []
        await call(worker.channel, Method.MEDIA_ROUTER_CREATE, "r", Empty())
        await create_transport(worker.channel, "r", "t")
        await _until(lambda: len(ticks) >= 1)  # woken by the new transport, not after IDLE_TICK_S

    await _with_service(0, body)


async def test_a_quiet_transport_lets_the_tick_sleep_until_its_next_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_service, "MAX_TICK_S", 0.25)

    async def body(media: MediaService, worker: FakeWorker) -> None:
        ticks = _count_ticks(media)
        await call(worker.channel, Method.MEDIA_ROUTER_CREATE, "r", Empty())
        await create_transport(worker.channel, "r", "t")
        await asyncio.sleep(0.6)
        # A transport without ICE, DTLS or media has no Engine timer: the tick sleeps until the allocator's pass
        # (every 0.5 s), the consent check (1 s) or MAX_TICK_S, not every TICK_S (that would be 30 runs).
        assert 2 <= len(ticks) <= 8
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert max(gaps) > 0.2

    await _with_service(0, body)


async def test_a_burst_of_requests_ticks_no_faster_than_tick_s() -> None:
    async def body(media: MediaService, worker: FakeWorker) -> None:
        ticks = _count_ticks(media)
        await call(worker.channel, Method.MEDIA_ROUTER_CREATE, "r", Empty())
        start = time.monotonic()
        for i in range(40):
            await create_transport(worker.channel, "r", f"t{i}")
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
        # every request kicks the tick, yet runs are at least TICK_S apart (a few ms of timer slack aside)
        assert len(ticks) <= elapsed / media_service.TICK_S + 2
        assert all(b - a >= media_service.TICK_S - 0.005 for a, b in zip(ticks, ticks[1:], strict=False))

    await _with_service(0, body)


async def test_a_kick_while_the_sleep_ends_now_is_harmless() -> None:
    # uvloop's call_later with a delay <= 0 gives a plain Handle without ``when()``: a kick then (a request arriving
    # as the sleep ends) must leave that timer alone instead of failing the request with AttributeError.
    async def body(media: MediaService, worker: FakeWorker) -> None:
        await _until(lambda: media._tick_sleep is not None and not media._tick_sleep.done())
        sleep = media._tick_sleep
        media._tick_timer.cancel()  # type: ignore[union-attr]
        plain = worker.loop.call_soon(media._end_sleep)
        media._tick_timer = plain  # type: ignore[assignment]
        media._last_tick_at = worker.loop.time()
        media.kick_tick()
        assert media._tick_timer is plain
        await _until(sleep.done)  # the plain handle still ends the sleep

    await _with_service(0, body)
