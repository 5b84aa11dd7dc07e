"""Control's end of the worker channels: one ZeroMQ ROUTER shared by a :class:`WorkerClient` per worker.

:class:`ControlSocket` owns the ROUTER bound on ``ipc://<runtime dir>/control.sock`` and routes every frame by
the sender's routing id (``b"w<i>"``, docs/SEAMS.md §3) to that worker's client. :class:`WorkerClient` turns
requests into futures keyed by request id (asynchronous, never REQ/REP lock-step): ``await request(...)``
returns the reply body, raises :class:`WorkerError` on a false response, :class:`WorkerDied` when the worker
dies (every pending request fails at once, as mediasoup's Channel does on close) and ``TimeoutError`` on
timeout. Notifications are checked against their body type (router/messages.py ``EVENTS``) and go to callbacks
registered with ``on_notification``, the map as a ``CheckedMap`` (its handlers' ``from_wire`` returns the body
checked here instead of checking it again); a malformed frame, an unknown event or a bad body is logged and
counted, never passed on. Events control only logs (:data:`LOGGED_EVENTS`) are logged here at debug level. This module
does not spawn or watch processes; control/workers/supervisor.py does and calls ``fail_all``.

The ROUTER is a plain (blocking-API) ZeroMQ socket read from the event loop's reader callback on its file
descriptor: each wake-up drains every frame already queued (``NOBLOCK`` until ``EAGAIN``) and sends never wait.
The requests made in one loop iteration go to each worker as one message, a request per part: every message wakes
ZeroMQ's I/O thread, which on a busy host was a tenth of control's samples during a burst of joins. A worker sends
its frames the same way; each part is read as a frame of its own.
pyzmq's asyncio socket costs a Future and several callbacks per frame in each direction, which was a fifth of
control's CPU during a burst of joins (docs/PERFORMANCE.md, "Large rooms: joins"). ZeroMQ's descriptor is
edge-triggered: it signals a change of the socket's event state, so after every drain and every send the socket's
``EVENTS`` is read again and a drain is scheduled when frames wait (as zmq/_future.py does).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import zmq

from router.channel import routing_id
from router.messages import EVENTS
from router.protocol import Body, CheckedMap, Event, Notification, ProtocolError, Request, Response, decode, encode

log = logging.getLogger("control.workers.worker_client")

_ZMQ_EVENTS = int(zmq.EVENTS)  # plain ints: ``getsockopt(...) & zmq.POLLIN`` went through ``enum.Flag`` per drain
_ZMQ_POLLIN = int(zmq.POLLIN)

NotificationCallback = Callable[[str, str, dict[str, Any]], None]

# Events control takes no action on: it keeps its own record of producers and consumers (it closes them itself),
# and the layers in use are in transport.get_stats. They are logged at debug level.
LOGGED_EVENTS = frozenset({
    Event.PRODUCER_STREAM_ADDED,
    Event.CONSUMER_LAYERS_CHANGED,
    Event.CONSUMER_PRODUCER_CLOSED,
})

# Events control ignores: a participant's state follows its primary transport's DTLS state alone.
IGNORED_EVENTS = frozenset({Event.TRANSPORT_ICE_STATE, Event.TRANSPORT_SCTP_STATE})


def quiet_events(log_level: str) -> frozenset[str]:
    """The events workers are told not to send (``python -m router --quiet-events``): those control ignores, and
    unless it logs at debug level, those it only logs. Under ``bench join`` they were half of a join's
    notifications, each encoded and sent by the worker and decoded and checked by control."""
    quiet = IGNORED_EVENTS if log_level == "debug" else IGNORED_EVENTS | LOGGED_EVENTS
    return frozenset(str(event) for event in quiet)


class WorkerDied(Exception):
    """The worker died (or is not running) while a request was pending or about to be sent."""

    def __init__(self, worker_id: int, reason: str) -> None:
        super().__init__(f"worker {worker_id}: {reason}")
        self.worker_id = worker_id
        self.reason = reason


class WorkerError(Exception):
    """The worker answered a request with ``[1, id, false, {"error": error, "reason": reason}]``."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(f"{error}: {reason}")
        self.error = error
        self.reason = reason


@dataclass(slots=True)
class SocketCounters:
    frames_in: int = 0
    malformed: int = 0
    unknown_peers: int = 0
    stale_responses: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ControlSocket:
    """The ROUTER socket all workers connect to.

    Lifecycle: ``ControlSocket(endpoint)`` → ``attach(client)`` per worker → ``start()`` (binds, receive loop)
    → ``close()``.
    """

    # Frames handled per reader wake-up before yielding to the loop (a flood cannot starve signaling).
    DRAIN_BATCH = 64

    def __init__(self, endpoint: str, *, context: zmq.Context[Any] | None = None) -> None:
        self.endpoint = endpoint
        self.counters = SocketCounters()
        self._context = context or zmq.Context.instance()
        self._sock: zmq.Socket[Any] | None = None
        self._clients: dict[bytes, WorkerClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._drain_scheduled = False
        self._out: dict[int, list[tuple[bytes, asyncio.Future[dict[str, Any]] | None]]] = {}
        self._send_scheduled = False

    def attach(self, client: WorkerClient) -> None:
        rid = routing_id(client.worker_id)
        if rid in self._clients:
            raise ValueError(f"worker {client.worker_id} already has a client")
        self._clients[rid] = client

    async def start(self) -> None:
        if self._sock is not None:
            raise RuntimeError("control socket already started")
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # Sending to a worker that is not connected raises EHOSTUNREACH instead of dropping silently.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A respawned worker reuses its routing id; it takes the identity over from the dead connection.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # NOTE: no high-water mark: a request is never dropped; a hung worker is killed by the supervisor.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(self.endpoint)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._fd = sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._drain)
        self._schedule_drain()

    async def close(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def send(self, worker_id: int, frame: bytes, future: asyncio.Future[dict[str, Any]] | None = None) -> None:
        """Queues one request frame to a worker; the frames queued in one loop iteration go out together, one
        ZeroMQ message per worker with a frame per part (docs/SEAMS.md §3). Raises :class:`WorkerDied` when the
        socket is closed; a worker that is not connected fails ``future`` with it when the message goes out."""
        if self._sock is None or self._loop is None:
            raise WorkerDied(worker_id, "control socket is closed")
        out = self._out.get(worker_id)
        if out is None:
            out = self._out[worker_id] = []
        out.append((frame, future))
        if not self._send_scheduled:
            self._send_scheduled = True
            self._loop.call_soon(self._send_all)

    def _send_all(self) -> None:
        """One message per worker with every frame queued for it since the last call."""
        self._send_scheduled = False
        out, self._out = self._out, {}
        for worker_id, items in out.items():
            try:
                self._send_parts(worker_id, [frame for frame, _ in items])
            except WorkerDied as died:
                for _, future in items:
                    if future is not None and not future.done():
                        future.set_exception(WorkerDied(worker_id, died.reason))
        # A send may consume the descriptor's edge while frames wait to be read.
        self._schedule_drain()

    def _send_parts(self, worker_id: int, frames: list[bytes]) -> None:
        if self._sock is None:
            raise WorkerDied(worker_id, "control socket is closed")
        try:
            self._sock.send_multipart([routing_id(worker_id), *frames], zmq.NOBLOCK)
        except zmq.Again as exc:
            # Cannot happen with SNDHWM 0, but a silent drop would hang the caller until its timeout.
            raise WorkerDied(worker_id, "send queue to the worker is full") from exc
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                raise WorkerDied(worker_id, "worker is not connected") from exc
            raise WorkerDied(worker_id, f"send failed: {exc}") from exc

    def _schedule_drain(self) -> None:
        if self._drain_scheduled or self._sock is None or self._loop is None:
            return
        if self._sock.getsockopt(_ZMQ_EVENTS) & _ZMQ_POLLIN:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Reader callback: handles up to :attr:`DRAIN_BATCH` queued frames, then re-arms."""
        self._drain_scheduled = False
        sock = self._sock
        if sock is None:
            return
        for _ in range(self.DRAIN_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            try:
                self._on_frames(frames)
            except Exception:
                log.exception("frame handling failed")
        self._schedule_drain()

    def _on_frames(self, frames: list[bytes]) -> None:
        self.counters.frames_in += 1
        if len(frames) < 2:
            self._malformed(f"{len(frames)}-part message")
            return
        rid = frames[0]
        client = self._clients.get(rid)
        if client is None:
            self.counters.unknown_peers += 1
            log.warning("frame from unknown peer %r dropped", rid)
            return
        self.counters.frames_in += len(frames) - 2
        for payload in frames[1:]:  # the worker's frames of one loop iteration, in order, each handled alone
            try:
                self._on_payload(client, payload)
            except Exception:  # a failing frame does not take the others of its message with it
                log.exception("frame handling failed")

    def _on_payload(self, client: WorkerClient, payload: bytes) -> None:
        try:
            envelope = decode(payload)
        except ProtocolError as exc:
            self._malformed(f"from worker {client.worker_id}: {exc.reason}")
            return
        if isinstance(envelope, Response):
            if not client._on_response(envelope):
                self.counters.stale_responses += 1
        elif isinstance(envelope, Notification):
            checked = _checked_notification(envelope)
            if isinstance(checked, str):
                self._malformed(f"from worker {client.worker_id}: {checked}")
                return
            client._on_notification(checked)
        else:
            self._malformed(f"request from worker {client.worker_id}")

    def _malformed(self, reason: str) -> None:
        self.counters.malformed += 1
        log.warning("malformed frame dropped: %s", reason)


def _expire(future: asyncio.Future[dict[str, Any]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


# Each event's body type by its name on the wire: one dict lookup per notification, not an ``Event(...)`` call
# (the enum's constructor was 1.4 % of control's samples under ``bench join``).
_BODY_OF_EVENT: dict[str, type[Body]] = {event.value: body for event, body in EVENTS.items()}


def _checked_notification(notification: Notification) -> Notification | str:
    """The notification with its body checked against router/messages.py ``EVENTS`` (a :class:`CheckedMap`, so
    that its handlers' ``from_wire`` does not check it again), or why it does not follow them."""
    body_type = _BODY_OF_EVENT.get(notification.event)
    if body_type is None:
        return f"unknown event {notification.event!r}"
    try:
        parsed = body_type.from_wire(notification.body)
    except ProtocolError as exc:
        return f"{notification.event}: {exc.reason}"
    return Notification(notification.event, notification.target_id, CheckedMap(notification.body, parsed))


class WorkerClient:
    """Requests to and notifications from one worker slot, across its restarts.

    The client is *available* between the worker's ``worker.running`` (``mark_running``) and its death
    (``fail_all``); requests made while it is unavailable fail at once with :class:`WorkerDied`. Request
    ids are never reused, so a late reply from a dead incarnation cannot resolve a new request.
    """

    def __init__(self, worker_id: int, socket: ControlSocket) -> None:
        self.worker_id = worker_id
        self._socket = socket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._callbacks: list[NotificationCallback] = []
        self._available = False
        socket.attach(self)

    @property
    def available(self) -> bool:
        return self._available

    @property
    def pending(self) -> int:
        return len(self._pending)

    def mark_running(self) -> None:
        self._available = True

    def fail_all(self, reason: str) -> None:
        """Marks the worker unavailable and fails every pending request with :class:`WorkerDied`."""
        self._available = False
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerDied(self.worker_id, reason))

    async def request(self, method: str, target_id: str = "", body: dict[str, Any] | None = None,
                      timeout: float = 5.0) -> dict[str, Any]:
        """Sends ``[0, id, method, target_id, body]`` and awaits the reply body."""
        if not self._available:
            raise WorkerDied(self.worker_id, "worker is not running")
        request_id = next(self._ids)
        frame = encode(Request(request_id, str(method), target_id, body or {}))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = future
        # A timer instead of asyncio.wait_for: no extra task per request.
        timer = loop.call_later(timeout, _expire, future)
        try:
            self._socket.send(self.worker_id, frame, future)
            return await future
        finally:
            timer.cancel()
            self._pending.pop(request_id, None)

    def on_notification(self, callback: NotificationCallback) -> Callable[[], None]:
        """``callback(event, target_id, body)`` for every notification; returns an unsubscribe function."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def _on_response(self, response: Response) -> bool:
        future = self._pending.pop(response.id, None)
        if future is None or future.done():
            return False
        if response.ok:
            future.set_result(response.body)
        else:
            future.set_exception(WorkerError(response.error or "", response.reason or ""))
        return True

    def _on_notification(self, notification: Notification) -> None:
        if notification.event in LOGGED_EVENTS and log.isEnabledFor(logging.DEBUG):
            log.debug("worker %d: %s %s %r", self.worker_id, notification.event, notification.target_id,
                      EVENTS[Event(notification.event)].from_wire(notification.body))
        for callback in list(self._callbacks):
            try:
                callback(notification.event, notification.target_id, notification.body)
            except Exception:
                log.exception("notification callback for %s failed", notification.event)
