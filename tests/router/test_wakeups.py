"""MediaService's wake-ups (docs/PERFORMANCE.md, Wake-ups): with ``rx_hold_ms`` the UDP socket is left unwatched
for the hold after each wake-up and what arrived meanwhile is read by one later wake-up; without a transport the
tick sleeps long, and a new transport ends that sleep."""

from __future__ import annotations

import asyncio
import socket
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


async def test_the_idle_tick_sleeps_until_a_transport_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_service, "IDLE_TICK_S", 60.0)  # only the kick can end the idle sleep in time

    async def body(media: MediaService, worker: FakeWorker) -> None:
        await _until(lambda: media._idle_sleep is not None)  # no transport: the long sleep
        await call(worker.channel, Method.MEDIA_ROUTER_CREATE, "r", Empty())
        await create_transport(worker.channel, "r", "t")
        await _until(lambda: media._idle_sleep is None)  # woken by the new transport, not after IDLE_TICK_S
        await asyncio.sleep(0.1)
        assert media._idle_sleep is None  # and ticking every TICK_S while the transport lives

    await _with_service(0, body)
