"""Graceful drain (control/service/drain.py) of a real ``mediarouter serve`` process with a signal-only LiveKit
session (a WebSocket join, no media): after SIGTERM new joins get 503 and ``/healthz`` says draining while the call
goes on (its signal connection still answers); the server exits once the participant leaves, or at
``drain_timeout`` after a LeaveRequest to it; a second SIGINT stops at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from livekit.protocol import models, rtc

from control.auth import create_token
from tests.conftest import ProcessReaper, free_tcp_port, free_udp_ports

ROOT = Path(__file__).resolve().parents[2]
KEY, SECRET = "k", "secret-secret-secret-secret-secret"
pytestmark = pytest.mark.timeout(60)


class Server:
    def __init__(self, process: subprocess.Popen[bytes], http_port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{http_port}"
        self.log = log

    def token(self, identity: str) -> str:
        return create_token(KEY, SECRET, identity=identity, room="call")

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                async with session.get(self.url + "/healthz") as resp:
                    body = await resp.json()
                    if body["status"] == "ok" and all(w["alive"] for w in body["workers"]):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"server not ready:\n{self.log.read_text()}")

    async def exited(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.process.poll()


@pytest.fixture
def start_server(reaper: ProcessReaper, runtime_root: str, tmp_path: Path) -> Callable[..., Server]:
    def start(drain_timeout: int) -> Server:
        http_port = free_tcp_port()
        log = tmp_path / "control.log"
        env = {**os.environ, "TMPDIR": runtime_root, "PYTHONPATH": str(ROOT)}
        with open(log, "wb") as out:
            process = reaper.spawn(
                [sys.executable, "-m", "control", "serve", "--workers", "1", "--http-host", "127.0.0.1",
                 "--http-port", str(http_port), "--rtc-port-base", str(free_udp_ports(1)), "--keys",
                 f"{KEY}:{SECRET}", "--drain-timeout", str(drain_timeout)],
                cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        return Server(process, http_port, log)

    return start


async def read_until(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout_s: float = 10) -> rtc.SignalResponse:
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        response = rtc.SignalResponse.FromString(msg.data)
        if response.WhichOneof("message") == kind:
            return response


async def join(session: aiohttp.ClientSession, server: Server, identity: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(server.url.replace("http", "ws") + "/rtc",
                                  params={"access_token": server.token(identity)})
    await read_until(ws, "join")
    return ws


async def start_draining(session: aiohttp.ClientSession, server: Server, ws: aiohttp.ClientWebSocketResponse,
                         sig: signal.Signals = signal.SIGTERM) -> None:
    """Signals the server, then checks it refuses new joins and says so, while the call still answers."""
    server.process.send_signal(sig)
    deadline = time.monotonic() + 10
    while True:
        async with session.get(server.url + "/healthz") as resp:
            if (await resp.json())["status"] == "draining":
                assert resp.status == 503
                break
        assert time.monotonic() < deadline, "no draining status"
        await asyncio.sleep(0.05)
    async with session.get(server.url + "/rtc/validate", params={"access_token": server.token("late")}) as resp:
        assert resp.status == 503
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(server.url.replace("http", "ws") + "/rtc",
                                 params={"access_token": server.token("late")})
    assert refused.value.status == 503
    await ws.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=42)).SerializeToString())
    assert (await read_until(ws, "pong_resp")).pong_resp.last_ping_timestamp == 42  # the call goes on
    assert server.process.poll() is None


async def test_sigterm_drains_until_the_last_participant_leaves(start_server: Callable[..., Server]) -> None:
    server = start_server(drain_timeout=60)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        ws = await join(session, server, "alice")
        await start_draining(session, server, ws)
        await asyncio.sleep(0.5)
        assert server.process.poll() is None  # still serving the call
        leave = rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED)
        await ws.send_bytes(rtc.SignalRequest(leave=leave).SerializeToString())
        while (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.BINARY:
            pass  # until the server closes the signal connection (the client answers its close)
        assert await server.exited(10) == 0, server.log.read_text()
        await ws.close()
    assert "every participant left" in server.log.read_text()


async def test_drain_timeout_sends_leave_request_then_exits(start_server: Callable[..., Server]) -> None:
    server = start_server(drain_timeout=2)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        ws = await join(session, server, "alice")
        await start_draining(session, server, ws)
        leave = (await read_until(ws, "leave", timeout_s=10)).leave
        assert leave.reason == models.DisconnectReason.SERVER_SHUTDOWN
        assert await server.exited(10) == 0, server.log.read_text()
        await ws.close()
    assert "telling them to leave" in server.log.read_text()


async def test_second_sigint_stops_at_once(start_server: Callable[..., Server]) -> None:
    server = start_server(drain_timeout=600)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        ws = await join(session, server, "alice")
        await start_draining(session, server, ws, signal.SIGINT)
        server.process.send_signal(signal.SIGINT)
        leave = (await read_until(ws, "leave", timeout_s=10)).leave
        assert leave.reason == models.DisconnectReason.SERVER_SHUTDOWN
        assert await server.exited(10) == 0, server.log.read_text()
        await ws.close()
    assert "stopping at once" in server.log.read_text()
