"""Outbox: the server's side of one signal WebSocket, what is queued for it and how fast it drains.

Frames (``control.rtc.frames``) are written in order by one task. A keyed frame (one participant's state, the
room's info) replaces the bytes of an unsent frame with the same key where that one stands in the queue, so what a
participant is sent is coalesced by state: however fast others change, its queue holds at most one update per
participant. Only a reader whose own backlog passes ``max_queued`` frames is disconnected (it resumes or rejoins);
nobody else's behaviour can put it there (docs/PROTOCOL.md, Flow control).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Hashable

from aiohttp import WSCloseCode, web
from livekit.protocol import rtc

from control.rtc.frames import Frame

log = logging.getLogger("control.service.outbox")

MAX_QUEUED_FRAMES = 2000  # a client this far behind is cut off (it resumes or rejoins)
CLOSE_TIMEOUT_S = 1.0  # a reader that does not take the close frame either loses its connection


class WebSocketSink:
    """Serialises SignalResponses onto one WebSocket in order, from synchronous callers; coalesces keyed frames."""

    def __init__(self, ws: web.WebSocketResponse, *, max_queued: int = MAX_QUEUED_FRAMES,
                 transport: asyncio.BaseTransport | None = None) -> None:
        self.ws = ws
        self.transport = transport  # aborted when a reader does not even take the close frame
        self.max_queued = max_queued
        self._queue: deque[list[object]] = deque()  # [key, bytes]
        self._keyed: dict[Hashable, list[object]] = {}  # key -> its unsent slot
        self._wake = asyncio.Event()
        self.closed = False
        self.coalesced = 0  # frames that replaced an unsent one instead of being queued
        self.overflowed = False
        self.task = asyncio.get_running_loop().create_task(self._write())

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, message: rtc.SignalResponse) -> None:
        self.send_frame(Frame(message))

    def send_frame(self, frame: Frame) -> None:
        if self.closed:
            return
        key = frame.key
        if key is not None:
            slot = self._keyed.get(key)
            if slot is not None:
                slot[1] = frame.data
                self.coalesced += 1
                return
        if len(self._queue) >= self.max_queued:
            self._overflow()
            return
        slot = [key, frame.data]
        self._queue.append(slot)
        if key is not None:
            self._keyed[key] = slot
        self._wake.set()

    def _overflow(self) -> None:
        """This reader's own backlog is too long: drop it and close the connection (the client resumes)."""
        log.warning("signal connection does not keep up (%d frames queued); closing it", len(self._queue))
        self.overflowed = True
        self.closed = True
        self._queue.clear()
        self._keyed.clear()
        self.task.cancel()
        asyncio.get_running_loop().create_task(self._shut())

    async def _shut(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"backlog"),
                                   CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        if not self.ws.closed and isinstance(self.transport, asyncio.Transport):
            self.transport.abort()

    def close(self) -> None:
        """No more frames; what is queued is still written, then the socket is closed."""
        if not self.closed:
            self.closed = True
            self._wake.set()

    async def _write(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self.closed:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                slot = self._queue.popleft()
                key, data = slot
                if key is not None and self._keyed.get(key) is slot:
                    del self._keyed[key]
                await self.ws.send_bytes(data)  # type: ignore[arg-type]
        except (ConnectionError, RuntimeError) as exc:
            log.debug("signal write failed: %r", exc)
        finally:
            self.closed = True
            if not self.overflowed and not self.ws.closed:
                await self.ws.close(code=1000)

    async def drain(self) -> None:
        """Closes after everything queued is written."""
        self.close()
        try:
            await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if not self.task.cancelled():
                raise
