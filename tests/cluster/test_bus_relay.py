"""Requests between nodes and the signaling relay against a real redis-server: a WebSocket client on node B,
its session on node A, frames both ways in order; the client is told to reconnect when A's entry expires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import client
from livekit.protocol import rtc
from redis_server import RedisServer

from control.cluster.bus import Bus, NodeUnavailable
from control.cluster.registry import NodeInfo, NodeRegistry
from control.cluster.relay import Frames, relay_client, serve_relayed
from control.service.outbox import WebSocketSink
from tests.conftest import free_tcp_port


async def test_call_reaches_the_node_and_a_missing_node_is_unavailable(redis_server: RedisServer,
                                                                       redis_client: Any) -> None:
    async def double(body: dict[str, Any]) -> dict[str, Any]:
        return {"twice": body["n"] * 2}

    async def broken(body: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no")

    served = Bus(client(redis_server), "ND_a", {"double": double, "broken": broken})
    caller = Bus(redis_client, "ND_b", {})
    await served.start()
    try:
        assert await caller.call("ND_a", "double", {"n": 21}) == {"twice": 42}
        assert (await caller.call("ND_a", "broken", {}))["error"] == "ValueError: no"
        with pytest.raises(NodeUnavailable):
            await caller.call("ND_gone", "double", {"n": 1})
        with pytest.raises(NodeUnavailable):
            await caller.send("ND_gone", "connect", {})
    finally:
        await served.stop()
        await served.redis.aclose()


class Owner:
    """Node A: serves relayed connections with a session that answers each frame with a pong carrying its size,
    and ends after the frame ``b"bye"``."""

    def __init__(self, redis: Any, registry: NodeRegistry) -> None:
        self.frames: list[bytes | str] = []
        self.redis, self.registry = redis, registry
        self.bus = Bus(redis, "ND_a", {"connect": self.connect})
        self.requests: list[dict[str, Any]] = []

    async def connect(self, body: dict[str, Any]) -> None:
        self.requests.append(body)
        await serve_relayed(self.redis, self.registry, body["connection"], body["node"], self.session)

    async def session(self, sink: WebSocketSink, frames: Frames) -> None:
        async for frame in frames:
            self.frames.append(frame)
            sink.send(rtc.SignalResponse(pong=len(frame)))
            if frame == b"bye":
                return


async def entry_node(redis: Any, registry: NodeRegistry) -> tuple[web.AppRunner, int]:
    bus = Bus(redis, "ND_b", {})

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert await relay_client(redis, bus, registry, "ND_a", "ND_b", {"token": "t", "query": {"q": "1"}}, ws)
        return ws

    app = web.Application()
    app.router.add_get("/rtc", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def pongs(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[int]:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            response = rtc.SignalResponse()
            response.ParseFromString(msg.data)
            yield response.pong if response.WhichOneof("message") == "pong" else -response.leave.action


@pytest.fixture
async def relay_pair(redis_server: RedisServer, redis_client: Any) -> AsyncIterator[tuple[Owner, int, NodeRegistry]]:
    registry = NodeRegistry(redis_client, ttl_s=30)
    for node_id in ("ND_a", "ND_b"):
        await registry.write(NodeInfo(id=node_id, ip="127.0.0.1", http_port=1, rtc_port=2, cpus=1))
    owner_redis = client(redis_server)
    owner = Owner(owner_redis, NodeRegistry(owner_redis, ttl_s=30))
    await owner.bus.start()
    runner, port = await entry_node(redis_client, registry)
    try:
        yield owner, port, registry
    finally:
        await runner.cleanup()
        await owner.bus.stop()
        await owner_redis.aclose()


async def test_frames_go_both_ways_in_order_and_the_owner_ending_closes_the_client(
        relay_pair: tuple[Owner, int, NodeRegistry]) -> None:
    owner, port, _ = relay_pair
    async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/rtc") as ws:
        frames = [b"x" * n for n in range(1, 40)]
        for frame in frames:
            await ws.send_bytes(frame)
        await ws.send_str("text")
        await ws.send_bytes(b"bye")
        async with asyncio.timeout(10):
            got = [n async for n in pongs(ws)]  # until the relay closes the socket
    assert got == [len(f) for f in frames] + [4, 3]
    assert owner.frames == [*frames, "text", b"bye"]
    assert owner.requests[0]["token"] == "t" and owner.requests[0]["query"] == {"q": "1"}
    assert owner.requests[0]["node"] == "ND_b"


async def test_the_client_is_told_to_reconnect_when_the_owner_node_expires(
        relay_pair: tuple[Owner, int, NodeRegistry]) -> None:
    owner, port, registry = relay_pair
    async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/rtc") as ws:
        await ws.send_bytes(b"hello")
        await registry.remove("ND_a")  # as if its entry expired
        async with asyncio.timeout(10):
            got = [n async for n in pongs(ws)]
    assert got == [5, -rtc.LeaveRequest.Action.RECONNECT]
