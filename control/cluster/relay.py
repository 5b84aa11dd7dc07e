"""Signaling relayed over Redis: a client's ``/rtc`` WebSocket on one node, its session on the room's owner.

The entry node subscribes to the connection's ``down`` channel, asks the owner (control/cluster/bus.py, kind
``connect``) to serve the connection, and waits for the owner's READY, sent once it listens on ``up``. Then the
client's frames go up and the owner's go down, in order (one publisher per channel), each tagged: ``F`` a binary
frame, ``T`` a text frame, ``C`` the end. The owner's side is a :class:`~control.service.outbox.WebSocketSink`
over a :class:`ChannelSocket`, so its queueing and coalescing are those of a direct connection. Each side checks
every second that the other's node is still registered; when the owner's entry expires the entry node tells the
client to reconnect from scratch (``LeaveRequest`` RECONNECT), which brings it back to a live node.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from livekit.protocol import models, rtc

from control.cluster.bus import Bus, NodeUnavailable
from control.cluster.keys import signal_channels
from control.cluster.registry import NodeRegistry
from control.rtc import lk_messages as lk
from control.service.outbox import WebSocketSink

log = logging.getLogger("control.cluster.relay")

FRAME, TEXT, READY, CLOSE = b"F", b"T", b"R", b"C"
WATCH_S = 1.0  # how often each side checks that the other's node lives
READY_TIMEOUT_S = 5.0

Frames = AsyncIterator[bytes | str]
Session = Callable[[WebSocketSink, Frames], Awaitable[None]]


class ChannelSocket:
    """The three things WebSocketSink uses of a WebSocket, over a Redis channel."""

    def __init__(self, redis: Any, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self.closed = False

    async def send_bytes(self, data: bytes) -> None:
        await self.redis.publish(self.channel, FRAME + data)

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        if not self.closed:
            self.closed = True
            await self.redis.publish(self.channel, CLOSE)


async def incoming(pubsub: Any, alive: Callable[[], Awaitable[bool]]) -> Frames:
    """The other side's frames until it closes or its node is no longer registered."""
    loop = asyncio.get_running_loop()
    next_check = loop.time() + WATCH_S
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=WATCH_S)
        if message is not None and message.get("type") == "message":
            data: bytes = message["data"]
            tag, payload = data[:1], data[1:]
            if tag == FRAME:
                yield payload
            elif tag == TEXT:
                yield payload.decode()
            elif tag == CLOSE:
                return
        if loop.time() >= next_check:
            next_check = loop.time() + WATCH_S
            if not await alive():
                return


async def serve_relayed(redis: Any, registry: NodeRegistry, connection_id: str, entry_node: str,
                        session: Session) -> None:
    """The owner's side of one relayed connection: ``session`` gets a sink and the client's frames."""
    up, down = signal_channels(connection_id)
    pubsub = redis.pubsub()
    socket = ChannelSocket(redis, down)
    try:
        await pubsub.subscribe(up)
        await redis.publish(down, READY)
        sink = WebSocketSink(socket)  # type: ignore[arg-type]  # duck-typed: send_bytes, close, closed
        try:
            await session(sink, incoming(pubsub, lambda: registry.alive(entry_node)))
        finally:
            sink.close()
            await asyncio.wait([sink.task], timeout=READY_TIMEOUT_S)
    finally:
        await socket.close()
        await pubsub.aclose()


async def _pump_up(redis: Any, channel: str, ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            await redis.publish(channel, FRAME + msg.data)
        elif msg.type == WSMsgType.TEXT:
            await redis.publish(channel, TEXT + msg.data.encode())
        elif msg.type == WSMsgType.ERROR:
            break


async def _pump_down(frames: Frames, ws: web.WebSocketResponse) -> None:
    async for frame in frames:
        if isinstance(frame, str):
            await ws.send_str(frame)
        else:
            await ws.send_bytes(frame)


async def _ready(pubsub: Any) -> bool:
    """Waits for the owner's READY (None answers from get_message are subscription confirmations or timeouts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while (left := deadline - loop.time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None and message.get("type") == "message":
            return bool(message["data"] == READY)
    return False


async def relay_client(redis: Any, bus: Bus, registry: NodeRegistry, owner: str, local_id: str,
                       request: dict[str, Any], ws: web.WebSocketResponse) -> bool:
    """The entry node's side: relays ``ws`` to ``owner`` until either end closes. False when the owner could not
    be reached (nothing was relayed; the caller tells the client)."""
    connection_id = uuid.uuid4().hex
    up, down = signal_channels(connection_id)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(down)
        try:
            await bus.send(owner, "connect", {**request, "connection": connection_id, "node": local_id})
        except NodeUnavailable:
            return False
        if not await _ready(pubsub):
            return False
        loop = asyncio.get_running_loop()
        down_task = loop.create_task(_pump_down(incoming(pubsub, lambda: registry.alive(owner)), ws))
        up_task = loop.create_task(_pump_up(redis, up, ws))
        try:
            await asyncio.wait([down_task, up_task], return_when=asyncio.FIRST_COMPLETED)
            if down_task.done() and not ws.closed and not await registry.alive(owner):
                log.info("owner %s of a relayed connection is gone: the client reconnects", owner)
                await ws.send_bytes(lk.leave(models.DisconnectReason.STATE_MISMATCH,
                                             rtc.LeaveRequest.Action.RECONNECT).SerializeToString())
        finally:
            for task in (down_task, up_task):
                task.cancel()
            await asyncio.gather(down_task, up_task, return_exceptions=True)
            try:
                await redis.publish(up, CLOSE)
            except Exception as exc:  # Redis is gone too: the owner's watch ends its side
                log.debug("relay close: %r", exc)
            await ws.close()
        return True
    finally:
        await pubsub.aclose()
