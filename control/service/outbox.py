"""Outbox: the server's side of one signal WebSocket, what is queued for it and how fast it drains.

Frames (``control.rtc.frames``) are written in order. A keyed frame (one participant's state, the room's info)
replaces the bytes of an unsent frame with the same key where that one stands in the queue, so what a participant is
sent is coalesced by state: however fast others change, its queue holds at most one update per participant. Only a
reader whose own backlog passes ``max_queued`` frames is disconnected (it resumes or rejoins); nobody else's
behaviour can put it there (docs/PROTOCOL.md, Flow control).

With the connection's transport and protocol at hand (a real aiohttp WebSocket), the queue is written without a
coroutine per frame: the first frame queued puts the sink in its loop's list of sockets to write (one callback for
all of them, at most ``WRITE_BUDGET`` bytes per loop iteration, so that a broadcast to thousands of sockets does
not hold the loop), and its turn writes every queued frame in one ``transport.write``, each framed once for every
socket that takes the same form: :attr:`Frame.wire` (uncompressed) or, when the client negotiated
permessage-deflate (browsers do), :meth:`Frame.deflated` (a message that refers to no earlier one, compressed once;
control/rtc/frames.py). RFC 7692 (section 6) lets a sender leave any message uncompressed (RSV1 clear), as small
frames are, and an uncompressed message does not touch the compression context of the ones around it. aiohttp's
own per-socket compressor is never used for these frames. The writer task takes over only for what must wait: a
transport whose write buffer is full (it waits for the protocol to resume writing; meanwhile frames queue,
coalesce and count towards ``max_queued`` as before) and the close. Without a transport (a relayed connection's
socket) the task writes every frame with ``send_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Hashable
from typing import Any

from aiohttp import WSCloseCode, web
from livekit.protocol import rtc

from control.rtc.frames import Frame

log = logging.getLogger("control.service.outbox")

MAX_QUEUED_FRAMES = 2000  # a client this far behind is cut off (it resumes or rejoins)
CLOSE_TIMEOUT_S = 1.0  # a reader that does not take the close frame either loses its connection


WRITE_BUDGET = 512 * 1024  # bytes written to sockets per loop iteration before the others get their turn
WRITE_COST = 8 * 1024  # what one write costs besides its bytes (a system call; on loopback the receiver's side
# too), in bytes: at most 64 writes per loop iteration


def _deflate_window(negotiated: object) -> int:
    """The server window (bits) of a socket's negotiated permessage-deflate (aiohttp's ``compress``: 0 or False
    when not negotiated, else the window bits), within what zlib's raw DEFLATE supports (9-15)."""
    if negotiated is True:
        return 15
    if not isinstance(negotiated, int) or negotiated <= 0:
        return 0
    return min(15, max(9, negotiated))


class _Writes:
    """The sinks of one event loop that have frames to write, flushed in the order they got them, those with a
    frame of their own (a JoinResponse, an offer) before those with broadcasts only: at most :data:`WRITE_BUDGET`
    per loop iteration, so a broadcast to thousands of sockets (a ParticipantUpdate batch is kilobytes) is spread
    over iterations, timers and reads run in between, and a join's own messages do not wait behind it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.urgent: deque[WebSocketSink] = deque()
        self.pending: deque[WebSocketSink] = deque()
        self.scheduled = False

    def add(self, sink: WebSocketSink, *, urgent: bool = False) -> None:
        (self.urgent if urgent else self.pending).append(sink)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        self.scheduled = False
        budget = WRITE_BUDGET
        urgent, pending = self.urgent, self.pending
        while urgent and budget > 0:
            sink = urgent.popleft()
            sink._urgent = False
            budget -= _flush(sink) + WRITE_COST
        while pending and budget > 0:
            sink = pending.popleft()
            sink._flush_scheduled = False
            budget -= _flush(sink) + WRITE_COST
        if urgent or pending:
            self.scheduled = True
            self.loop.call_soon(self.run)


def _flush(sink: WebSocketSink) -> int:
    """One sink's turn; a failed write ends that sink (its task closes it), never the others' turns."""
    try:
        return sink._flush()
    except Exception as exc:  # e.g. the transport's write on a connection that went away meanwhile
        log.debug("signal write failed: %r", exc)
        sink._hand_over()
        return 0


_WRITES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writes] = weakref.WeakKeyDictionary()


def _writes_of(loop: asyncio.AbstractEventLoop) -> _Writes:
    writes = _WRITES.get(loop)
    if writes is None:
        writes = _WRITES[loop] = _Writes(loop)
    return writes


class WebSocketSink:
    """Serialises SignalResponses onto one WebSocket in order, from synchronous callers; coalesces keyed frames.

    ``transport`` and ``protocol`` (aiohttp's ``request.transport`` and ``request.protocol``): frames that need no
    compression of their own are written synchronously, once per loop iteration; without them (a relayed
    connection's duck-typed socket) every frame goes through ``ws.send_bytes``."""

    def __init__(self, ws: web.WebSocketResponse, *, max_queued: int = MAX_QUEUED_FRAMES,
                 transport: asyncio.BaseTransport | None = None, protocol: Any = None) -> None:
        self.ws = ws
        self.transport = transport  # aborted when a reader does not even take the close frame
        self.max_queued = max_queued
        self._queue: deque[list[Any]] = deque()  # [key, Frame]
        self._keyed: dict[Hashable, list[Any]] = {}  # key -> its unsent slot
        self._wake = asyncio.Event()
        self.closed = False
        self.coalesced = 0  # frames that replaced an unsent one instead of being queued
        self.overflowed = False
        self._loop = asyncio.get_running_loop()
        # The synchronous path: a real transport whose protocol says when writing is paused.
        # (uvloop's transports are not asyncio.Transport subclasses: duck-typed)
        self._direct = hasattr(transport, "write") and hasattr(protocol, "writing_paused")
        self._protocol = protocol
        self._wbits = _deflate_window(getattr(ws, "compress", 0))  # permessage-deflate's window here, or 0
        self._flush_scheduled = False  # in its loop's list of sockets to write
        self._urgent = False  # in that list's front part (it has a frame of its own)
        self._busy = False  # the writer task owns the queue (a full buffer, the close)
        self.task = self._loop.create_task(self._write())

    @property
    def direct(self) -> bool:
        """Whether frames are written to the transport synchronously (else one ``send_bytes`` each)."""
        return self._direct

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, message: rtc.SignalResponse) -> None:
        self.send_frame(Frame(message, shared=False))

    def send_frame(self, frame: Frame) -> None:
        if self.closed:
            return
        key = frame.key
        if key is not None:
            slot = self._keyed.get(key)
            if slot is not None:
                slot[1] = frame
                self.coalesced += 1
                return
        if len(self._queue) >= self.max_queued:
            self._overflow()
            return
        slot = [key, frame]
        self._queue.append(slot)
        if key is not None:
            self._keyed[key] = slot
        if not self._direct:
            self._wake.set()
        elif not self._busy:
            if not frame.shared and not self._urgent:
                self._urgent = True  # this socket's own frame (a JoinResponse, an offer) waits for no broadcast
                _writes_of(self._loop).add(self, urgent=True)
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                _writes_of(self._loop).add(self)

    def _pop(self) -> Frame:
        slot = self._queue.popleft()
        key = slot[0]
        if key is not None and self._keyed.get(key) is slot:
            del self._keyed[key]
        frame: Frame = slot[1]
        return frame

    def _take_all(self) -> bytes:
        """Takes the queued frames; their bytes, framed (compressed where this socket negotiated it)."""
        wbits = self._wbits
        out: list[bytes] = []
        while self._queue:
            frame = self._pop()
            out.append(frame.deflated(wbits) if wbits else frame.wire)
        return out[0] if len(out) == 1 else b"".join(out)

    def _flush(self) -> int:
        """The synchronous write of what is queued (at most once per loop iteration); hands over to the task when
        the transport's buffer is full or the connection is closing. Returns the bytes written."""
        if self._busy or self.overflowed:
            return 0
        transport: Any = self.transport
        written = 0
        if self._queue and not (self.ws.closed or transport.is_closing() or self._protocol.writing_paused):
            data = self._take_all()
            transport.write(data)
            written = len(data)
        if self._queue or self.closed:
            self._hand_over()
        return written

    def _hand_over(self) -> None:
        self._busy = True
        self._wake.set()

    def _overflow(self) -> None:
        """This reader's own backlog is too long: drop it and close the connection (the client resumes)."""
        log.warning("signal connection does not keep up (%d frames queued); closing it", len(self._queue))
        self.overflowed = True
        self.closed = True
        self._queue.clear()
        self._keyed.clear()
        self.task.cancel()
        self._loop.create_task(self._shut())

    async def _shut(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"backlog"),
                                   CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        if not self.ws.closed and hasattr(self.transport, "abort"):
            self.transport.abort()  # type: ignore[union-attr]

    def close(self) -> None:
        """No more frames; what is queued is still written, then the socket is closed."""
        if not self.closed:
            self.closed = True
            self._wake.set()

    async def _write(self) -> None:
        try:
            if self._direct:
                await self._write_direct()
            else:
                await self._write_each()
        except (ConnectionError, RuntimeError) as exc:
            log.debug("signal write failed: %r", exc)
        finally:
            self.closed = True
            if not self.overflowed and not self.ws.closed:
                await self.ws.close(code=1000)

    async def _write_each(self) -> None:
        """Without a transport: one ``send_bytes`` per frame, in order."""
        while True:
            if not self._queue:
                if self.closed:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.ws.send_bytes(self._pop().data)

    async def _write_direct(self) -> None:
        """Sleeps while :meth:`_flush` keeps up; writes what it handed over (or what is left at the close)."""
        transport: Any = self.transport
        while True:
            if not self._busy:
                if self.closed and not (self._flush_scheduled or self._urgent):
                    self._busy = True  # the close: whatever is still queued is written here
                    if not self._queue:
                        break
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._queue:
                if self.closed:
                    break
                self._busy = False
                continue
            if self.ws.closed or transport.is_closing():
                raise ConnectionResetError("signal connection closed")
            if self._protocol.writing_paused:
                await self._protocol._drain_helper()  # aiohttp's wait for resume_writing
                continue
            transport.write(self._take_all())

    async def drain(self) -> None:
        """Closes after everything queued is written."""
        self.close()
        try:
            await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if not self.task.cancelled():
                raise
