"""control/service/connections.py on loopback: the header deadline closes silent connections, the caps on
connections waiting to authenticate answer 503 (per address, in all, and at the fd reserve), a WebSocket upgrade
admits its connection, and the rest of the port keeps answering meanwhile.

Everything runs in this process against aiohttp on 127.0.0.1 (the flood from 127.0.0.2), on asyncio's loop and on
uvloop; the flood of 2,000
connections with a real SDK join is tests/e2e/test_connection_flood.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from control.service.connections import (
    ConnectionGuard,
    GuardedSite,
    mark_admitted,
    open_fds,
    raise_fd_limit,
)

Runner = Callable[[Coroutine[Any, Any, None]], None]
LOOPS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run_on(request: pytest.FixtureRequest) -> Runner:
    """Each test on asyncio's loop and on uvloop (control's): their transports differ."""
    return LOOPS[request.param]


@dataclass
class Served:
    guard: ConnectionGuard
    port: int


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws


async def _admit(guard: ConnectionGuard, request: web.Request, response: web.StreamResponse) -> None:
    mark_admitted(guard, request, response)


@contextlib.asynccontextmanager
async def serve(guard: ConnectionGuard) -> AsyncIterator[Served]:
    app = web.Application()
    app.router.add_get("/healthz", _ok)
    app.router.add_get("/rtc", _ws)
    app.on_response_prepare.append(functools.partial(_admit, guard))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard, access_log=None)
    try:
        await site.start()
        yield Served(guard, site.port)
    finally:
        await runner.cleanup()


async def silent(port: int, source: str = "127.0.0.2") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that never sends a byte."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the server sent before closing, or None if it is still open after ``timeout``."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


async def get(port: int, path: str = "/healthz") -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as reply:
        return reply.status, await reply.text()


async def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())  # type: ignore[operator]


def test_silent_connections_are_closed_by_the_header_deadline_while_the_port_answers(run_on: Runner) -> None:
    run_on(_silent_connections_are_closed_by_the_header_deadline_while_the_port_answers())


async def _silent_connections_are_closed_by_the_header_deadline_while_the_port_answers() -> None:
    async with serve(ConnectionGuard(header_timeout_s=1.0)) as s:
        flood = [await silent(s.port) for _ in range(50)]
        assert await wait_for(lambda: s.guard.snapshot()["pending"] == 50, 5.0)
        assert await get(s.port) == (200, "ok")  # the port answers during the flood
        # A connection that sends half its headers is as good as silent.
        reader, writer = await silent(s.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        results = await asyncio.gather(*(closed_within(r, 10.0) for r, _ in [*flood, (reader, None)]))
        assert all(r == b"" for r in results), "a silent connection was not closed by the deadline"
        assert await wait_for(lambda: s.guard.snapshot()["pending"] == 0, 2.0)
        for _, w in flood:
            w.close()
        writer.close()


def test_caps_answer_503_per_address_and_in_all(run_on: Runner) -> None:
    run_on(_caps_answer_503_per_address_and_in_all())


async def _caps_answer_503_per_address_and_in_all() -> None:
    guard = ConnectionGuard(header_timeout_s=30.0, max_pending_per_address=3, max_pending_connections=5)
    async with serve(guard) as s:
        held = [await silent(s.port, "127.0.0.2") for _ in range(3)]
        assert await wait_for(lambda: guard.snapshot()["pending"] == 3, 5.0)
        reader, _ = await silent(s.port, "127.0.0.2")
        answer = await closed_within(reader, 5.0)
        assert answer is not None and answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert answer.endswith(b"server busy: too many connections from your address waiting to authenticate")
        assert b"Retry-After: 1\r\n" in answer and b"Connection: close\r\n" in answer
        # Another address still gets in, up to the cap over all addresses.
        held += [await silent(s.port, "127.0.0.3") for _ in range(2)]
        assert await wait_for(lambda: guard.snapshot()["pending"] == 5, 5.0)
        reader, _ = await silent(s.port, "127.0.0.4")
        answer = await closed_within(reader, 5.0)
        assert answer is not None and answer.endswith(b"server busy: too many connections waiting to authenticate")
        assert guard.snapshot()["refused"] == {"pending": 1, "address": 1, "fds": 0}
        for _, w in held:
            w.close()
        assert await wait_for(lambda: guard.snapshot()["open"] == 0, 5.0)
        assert await get(s.port) == (200, "ok")  # room again once they left


def test_the_fd_reserve_is_never_handed_to_a_connection(run_on: Runner) -> None:
    run_on(_the_fd_reserve_is_never_handed_to_a_connection())


async def _the_fd_reserve_is_never_handed_to_a_connection() -> None:
    baseline = open_fds()
    guard = ConnectionGuard(header_timeout_s=30.0, fd_reserve=16, fd_limit=baseline + 16 + 2, fd_baseline=baseline)
    assert guard.connection_budget == 2
    async with serve(guard) as s:
        held = [await silent(s.port) for _ in range(2)]
        assert await wait_for(lambda: guard.snapshot()["open"] == 2, 5.0)
        reader, _ = await silent(s.port)
        answer = await closed_within(reader, 5.0)
        assert answer is not None and answer.endswith(b"server busy: no file descriptor to spare")
        assert guard.snapshot()["refused"]["fds"] == 1
        for _, w in held:
            w.close()


def test_an_upgraded_websocket_is_admitted_and_leaves_the_pending_count(run_on: Runner) -> None:
    run_on(_an_upgraded_websocket_is_admitted_and_leaves_the_pending_count())


async def _an_upgraded_websocket_is_admitted_and_leaves_the_pending_count() -> None:
    guard = ConnectionGuard(header_timeout_s=0.5, max_pending_per_address=1)
    async with serve(guard) as s, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{s.port}/rtc")
        assert await wait_for(lambda: guard.snapshot()["admitted"] == 1, 5.0)
        assert guard.snapshot()["pending"] == 0
        # The one pending slot of 127.0.0.1 is free for the next connection, and the admitted WebSocket outlives
        # the header deadline.
        assert await get(s.port) == (200, "ok")
        await asyncio.sleep(1.0)
        await ws.send_str("still here")
        assert not ws.closed
        await ws.close()
        assert await wait_for(lambda: guard.snapshot()["open"] == 0, 5.0)
        assert guard.snapshot()["admitted_total"] == 1


def test_raise_fd_limit_reaches_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
        limit = raise_fd_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == limit
        assert hard == resource.RLIM_INFINITY or limit == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(autouse=True)
def _second_loopback_address() -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.2", 0))
        except OSError as exc:
            pytest.skip(f"cannot send from 127.0.0.2 here: {exc}")
