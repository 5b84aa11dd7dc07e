"""The worker's end of the control channel: a ZeroMQ DEALER speaking router/protocol.py envelopes.

It owns the DEALER socket (routing id ``b"w<i>"``), the request handler table, the response path and
notifications. Requests are served concurrently (never REQ/REP lock-step): each one runs its async handler
``(target_id, body) -> dict`` in a task and is answered ``[1, id, true, reply]``. Handlers registered with
:meth:`Channel.handle` work on typed bodies instead (router/messages.py ``REQUESTS``): the request body is parsed
before the handler runs (a bad body is answered ``TypeError`` with the parser's reason) and the reply must be the
method's reply body; :meth:`Channel.emit` sends a notification whose body type matches ``EVENTS``. A
:class:`RequestError` becomes ``{"error": e.error, "reason": e.reason}``; any other exception ``{"error": type
name, "reason": str(exc)}``; a method without a handler ``{"error": "UnknownMethod"}``. A message from control
carries one request per part (docs/SEAMS.md §3), and the responses and notifications of one loop iteration go to
control as one message, one per part. A malformed frame is logged and counted, never fatal.

Sending never blocks the event loop: frames go out with NOBLOCK; when the socket is full, responses and
ordinary notifications wait in an ordered backlog that a task flushes, while droppable ones (heartbeats) are
dropped and counted. A socket monitor records when the control peer disconnects so that the worker can exit
when control is gone. The channel knows nothing about media.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from router.messages import EVENTS, REQUESTS
from router.protocol import (
    Body,
    Envelope,
    Event,
    Method,
    Notification,
    ProtocolError,
    Request,
    RequestError,
    Response,
    decode,
    encode,
)

log = logging.getLogger("router.channel")

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]
# (target_id, parsed request body) -> reply body; the body types are the method's pair in REQUESTS.
BodyHandler = Callable[[str, Any], Awaitable[Body]]


def body_handler(method: Method, handler: BodyHandler) -> Handler:
    """Wraps ``handler`` so that it receives the parsed request body and its reply is checked and serialised."""
    request_type, reply_type = REQUESTS[method]

    async def run(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            parsed = request_type.from_wire(body)
        except ProtocolError as exc:
            raise RequestError("TypeError", exc.reason) from None
        reply = await handler(target_id, parsed)
        if type(reply) is not reply_type:
            raise RequestError("InvalidReply", f"handler of {method} returned {type(reply).__name__}, "
                                               f"not {reply_type.__name__}")
        return reply.to_wire()

    return run


def routing_id(worker_id: int) -> bytes:
    """The DEALER routing id of worker ``worker_id`` (docs/SEAMS.md §3)."""
    if worker_id < 0:
        raise ValueError(f"worker id {worker_id} must be non-negative")
    return b"w%d" % worker_id


def send_now(sock: zmq.asyncio.Socket, frames: list[bytes]) -> bool:
    """Sends without waiting; False when the socket is full (EAGAIN); other ZeroMQ errors are raised.

    NOTE: an asyncio socket's send always returns a Future; with NOBLOCK and no other send in flight it is
    already resolved, with the result or the error (zmq/_future.py ``_add_send_event``).
    """
    future = sock.send_multipart(frames, zmq.NOBLOCK)
    if not future.done():
        # Queued behind an awaited send; it completes (or fails with EAGAIN) later, so consume its outcome.
        future.add_done_callback(_consume_outcome)
        return True
    error = future.exception()
    if error is None:
        return True
    if isinstance(error, zmq.Again):
        return False
    raise error


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("queued send failed: %s", future.exception())


@dataclass(slots=True)
class ChannelCounters:
    """Running totals reported in heartbeats."""

    requests: int = 0
    failed_requests: int = 0
    unknown_methods: int = 0
    malformed: int = 0
    notifications: int = 0
    notifications_dropped: int = 0
    notifications_quiet: int = 0  # events control asked not to hear (``Channel.quiet``), never encoded
    backlog_max: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Channel:
    """DEALER side of the control channel.

    Lifecycle: ``Channel(...)`` → ``register()`` handlers → ``start()`` (connects, starts the receive loop) →
    ``close()``. A closed channel is not reused.
    """

    def __init__(self, endpoint: str, worker_id: int, *, context: zmq.asyncio.Context | None = None,
                 sndhwm: int = 10000) -> None:
        self.endpoint = endpoint
        self.worker_id = worker_id
        self.counters = ChannelCounters()
        self._context = context or zmq.asyncio.Context.instance()
        self._sndhwm = sndhwm
        self._handlers: dict[str, Handler] = {}
        self._sock: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backlog: collections.deque[bytes] = collections.deque()
        self._batch: list[bytes] = []  # reliable frames of this loop iteration, sent as one message after it
        self._flusher: asyncio.Task[None] | None = None
        self._connected = False
        self._disconnected_since = time.monotonic()
        self._closed = False
        # Events control does not act on (the supervisor's ``--quiet-events``): not sent, only counted. A burst of
        # joins sent four such notifications per subscriber (ICE and SCTP states, the consumer's first layer).
        self.quiet: frozenset[str] = frozenset()

    # ------------------------------------------------------------------------------------------- set-up

    def register(self, method: str, handler: Handler) -> None:
        """Routes requests named ``method`` to ``handler``; one handler per method."""
        if method in self._handlers:
            raise ValueError(f"a handler for {method!r} is already registered")
        self._handlers[method] = handler

    def handle(self, method: Method, handler: BodyHandler) -> None:
        """Routes requests named ``method`` to a handler of typed bodies (:func:`body_handler`)."""
        self.register(method, body_handler(method, handler))

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(self._handlers)

    async def start(self) -> None:
        if self._sock is not None:
            raise RuntimeError("channel already started")
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, routing_id(self.worker_id))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._sndhwm)
        sock.setsockopt(zmq.RCVHWM, 0)
        self._monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sock.connect(self.endpoint)
        self._sock = sock
        self._spawn(self._receive_loop())
        self._spawn(self._monitor_loop())
        self._start_flusher()

    async def close(self, linger_ms: int = 200) -> None:
        """Stops the loops, tries once more to flush pending frames, and closes the socket.

        ``linger_ms`` bounds how long ZeroMQ keeps trying to deliver frames already queued (a last reply).
        """
        if self._closed:
            return
        self._closed = True
        self._backlog.extend(self._batch)  # queued in this loop iteration: flushed with the backlog below
        self._batch = []
        for task in list(self._tasks):
            task.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
        tasks = [*self._tasks, *([self._flusher] if self._flusher else [])]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None:
            while self._backlog:
                try:
                    if not send_now(self._sock, [self._backlog.popleft()]):
                        break
                except zmq.ZMQError:
                    break
            if self._monitor is not None:
                self._sock.disable_monitor()
                self._monitor.close(linger=0)
            self._sock.close(linger=linger_ms)

    # ---------------------------------------------------------------------------------------- liveness

    @property
    def connected(self) -> bool:
        return self._connected

    def disconnected_for(self) -> float:
        """Seconds since the control peer went away (0 while connected)."""
        return 0.0 if self._connected else time.monotonic() - self._disconnected_since

    # ------------------------------------------------------------------------------------------ output

    def notify(self, event: str, target_id: str = "", body: dict[str, Any] | None = None, *,
               droppable: bool = False) -> bool:
        """Queues ``[2, event, target_id, body]`` without blocking; returns False when it was dropped.

        Only ``droppable`` notifications (heartbeats) are ever dropped: when the socket is full or a backlog
        exists. The others keep their order behind the backlog.
        """
        frame = encode(Notification(event, target_id, body or {}))
        if droppable and self._batch:
            self._send_batch()  # what was queued before it goes first
        if droppable and (self._backlog or not self._try_send(frame)):
            self.counters.notifications_dropped += 1
            return False
        if not droppable:
            self._send_reliable(frame)
        self.counters.notifications += 1
        return True

    def emit(self, event: Event, target_id: str, body: Body, *, droppable: bool = False) -> bool:
        """:meth:`notify` with the typed body of ``event``; a body of another type is a TypeError."""
        if type(body) is not EVENTS[event]:
            raise TypeError(f"{event} takes {EVENTS[event].__name__}, not {type(body).__name__}")
        if event in self.quiet:
            self.counters.notifications_quiet += 1
            return True
        return self.notify(event, target_id, body.to_wire(), droppable=droppable)

    def _send_reliable(self, frame: bytes) -> None:
        """Queues ``frame`` for the one message that carries this loop iteration's frames (a frame per part, in
        order): a message wakes ZeroMQ's I/O thread, which cost the worker 7 % of its samples as one per frame
        during a burst of joins (docs/PERFORMANCE.md, "Large rooms: joins"); control reads each part as a frame."""
        if self._closed:
            log.warning("frame dropped: channel closed")
            return
        if not self._batch:
            try:
                asyncio.get_running_loop().call_soon(self._send_batch)
            except RuntimeError:  # no loop running (a caller outside one): as one message now
                self._batch.append(frame)
                self._send_batch()
                return
        self._batch.append(frame)

    def _send_batch(self) -> None:
        frames, self._batch = self._batch, []
        if not frames:
            return
        if self._closed:
            log.warning("%d frame(s) dropped: channel closed", len(frames))
            return
        if not self._backlog and self._sock is not None and send_now(self._sock, frames):
            return
        self._backlog.extend(frames)
        self.counters.backlog_max = max(self.counters.backlog_max, len(self._backlog))
        self._start_flusher()

    def _start_flusher(self) -> None:
        # Frames queued before start() wait for the socket; start() calls this again.
        if self._sock is not None and self._backlog and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _try_send(self, frame: bytes) -> bool:
        if self._sock is None:
            return False
        return send_now(self._sock, [frame])

    async def _flush(self) -> None:
        assert self._sock is not None
        while self._backlog:
            # NOTE: an awaited send parks this task (not the loop) until the socket is writable again.
            await self._sock.send(self._backlog[0])
            self._backlog.popleft()

    # ------------------------------------------------------------------------------------------- input

    async def _receive_loop(self) -> None:
        assert self._sock is not None
        while True:
            # Control sends the requests of one of its loop iterations as one message, a request per part.
            for frame in await self._sock.recv_multipart(copy=True):
                try:
                    envelope: Envelope = decode(frame)
                except ProtocolError as exc:
                    self._malformed(exc.reason)
                    continue
                if not isinstance(envelope, Request):
                    self._malformed(f"unexpected {type(envelope).__name__.lower()} from control")
                    continue
                self.counters.requests += 1
                self._spawn(self._serve(envelope))

    def _malformed(self, reason: str) -> None:
        self.counters.malformed += 1
        log.warning("malformed frame from control dropped: %s", reason)

    async def _serve(self, request: Request) -> None:
        handler = self._handlers.get(request.method)
        if handler is None:
            self.counters.unknown_methods += 1
            response = Response.failure(request.id, "UnknownMethod", f"no handler for {request.method!r}")
        else:
            response = await self._call(handler, request)
        if not response.ok:
            self.counters.failed_requests += 1
        try:
            frame = encode(response)
        except (ProtocolError, TypeError, ValueError, OverflowError) as exc:
            # NOTE: msgpack refuses some Python values (sets, objects); the caller still gets an answer.
            frame = encode(Response.failure(request.id, "InvalidReply", f"reply not encodable: {exc}"))
        self._send_reliable(frame)

    async def _call(self, handler: Handler, request: Request) -> Response:
        try:
            reply = await handler(request.target_id, request.body)
        except RequestError as exc:
            return Response.failure(request.id, exc.error, exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("handler of %s failed", request.method)
            return Response.failure(request.id, type(exc).__name__, str(exc))
        if reply is None:
            reply = {}
        if not isinstance(reply, dict):
            return Response.failure(request.id, "InvalidReply",
                                    f"handler of {request.method} returned {type(reply).__name__}, not a map")
        return Response(request.id, True, reply)

    async def _monitor_loop(self) -> None:
        assert self._monitor is not None
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            if event["event"] == zmq.EVENT_CONNECTED:
                self._connected = True
                log.debug("connected to control at %s", self.endpoint)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connected = False
                self._disconnected_since = time.monotonic()
                log.warning("control channel disconnected")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("channel task failed", exc_info=task.exception())
