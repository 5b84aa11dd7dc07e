"""The control <-> worker contract: envelopes, method and event names, message bodies.

This module owns the wire format of the ZeroMQ channel between the control process (ROUTER) and each worker
(DEALER), as fixed in docs/SEAMS.md §3. Frames are msgpack arrays (``use_bin_type=True``, ``raw=False``) whose
bodies are maps with string keys::

    [0, id, "entity.verb", target_id, body]                            request       control -> worker
    [1, id, true, body] | [1, id, false, {"error": e, "reason": r}]    response      worker -> control
    [2, "entity.event", target_id, body]                               notification  worker -> control

It validates every frame it decodes and raises :class:`ProtocolError` with an exact reason, so a malformed
frame is rejected (and counted by the channel) instead of crashing either process. It must not know about
sockets, rooms or media; the media bodies are added next to the ``worker.*`` ones by the media side. The
naming follows mediasoup's channel (``ENTITY_VERB`` requests, notifications addressed by handler id).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Self

import msgpack

# Bumped on every incompatible change of an envelope or body; workers announce it in worker.running and the
# control process refuses a worker speaking another version.
PROTOCOL_VERSION = 1

# A frame larger than this is rejected before it is unpacked (a body is a few hundred bytes in practice).
MAX_FRAME_BYTES = 4 * 1024 * 1024

_NAME_RE = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z_]*$")
_MAX_ID = 2**64 - 1


class ProtocolError(ValueError):
    """A frame or body that does not follow the contract; ``reason`` says exactly why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestError(Exception):
    """Raised by a request handler to answer ``[1, id, false, {"error": error, "reason": reason}]``."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(f"{error}: {reason}")
        self.error = error
        self.reason = reason


class Kind(IntEnum):
    """First element of every envelope."""

    REQUEST = 0
    RESPONSE = 1
    NOTIFICATION = 2


class Method(StrEnum):
    """Requests, control -> worker (docs/SEAMS.md §3)."""

    WORKER_DUMP = "worker.dump"
    WORKER_CLOSE = "worker.close"
    MEDIA_ROUTER_CREATE = "media_router.create"
    MEDIA_ROUTER_CLOSE = "media_router.close"
    MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT = "media_router.create_webrtc_transport"
    TRANSPORT_CONNECT = "transport.connect"
    TRANSPORT_RESTART_ICE = "transport.restart_ice"
    TRANSPORT_CLOSE = "transport.close"
    TRANSPORT_GET_STATS = "transport.get_stats"
    TRANSPORT_PRODUCE = "transport.produce"
    TRANSPORT_CONSUME = "transport.consume"
    TRANSPORT_PRODUCE_DATA = "transport.produce_data"
    TRANSPORT_CONSUME_DATA = "transport.consume_data"
    PRODUCER_PAUSE = "producer.pause"
    PRODUCER_RESUME = "producer.resume"
    PRODUCER_CLOSE = "producer.close"
    CONSUMER_PAUSE = "consumer.pause"
    CONSUMER_RESUME = "consumer.resume"
    CONSUMER_CLOSE = "consumer.close"
    CONSUMER_SET_PREFERRED_LAYERS = "consumer.set_preferred_layers"
    CONSUMER_REQUEST_KEY_FRAME = "consumer.request_key_frame"
    DATA_PRODUCER_CLOSE = "data_producer.close"
    DATA_CONSUMER_CLOSE = "data_consumer.close"


class Event(StrEnum):
    """Notifications, worker -> control (docs/SEAMS.md §3)."""

    WORKER_RUNNING = "worker.running"
    WORKER_HEARTBEAT = "worker.heartbeat"
    TRANSPORT_ICE_STATE = "transport.ice_state"
    TRANSPORT_DTLS_STATE = "transport.dtls_state"
    TRANSPORT_SCTP_STATE = "transport.sctp_state"
    TRANSPORT_TUPLE_CHANGED = "transport.tuple_changed"
    PRODUCER_SCORE = "producer.score"
    PRODUCER_STREAM_ADDED = "producer.stream_added"
    CONSUMER_LAYERS_CHANGED = "consumer.layers_changed"
    CONSUMER_SCORE = "consumer.score"
    CONSUMER_PRODUCER_CLOSED = "consumer.producer_closed"


# ----------------------------------------------------------------------------------------------- envelopes


@dataclass(frozen=True, slots=True)
class Request:
    """``[0, id, method, target_id, body]``: ``target_id`` is "" for worker-level methods."""

    id: int
    method: str
    target_id: str
    body: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> list[Any]:
        return [Kind.REQUEST.value, self.id, self.method, self.target_id, self.body]


@dataclass(frozen=True, slots=True)
class Response:
    """``[1, id, ok, body]``; a false response's body is ``{"error": name, "reason": text}``."""

    id: int
    ok: bool
    body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failure(cls, id: int, error: str, reason: str) -> Response:
        return cls(id, False, {"error": error, "reason": reason})

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.body["error"])

    @property
    def reason(self) -> str | None:
        return None if self.ok else str(self.body.get("reason", ""))

    def to_wire(self) -> list[Any]:
        return [Kind.RESPONSE.value, self.id, self.ok, self.body]


@dataclass(frozen=True, slots=True)
class Notification:
    """``[2, event, target_id, body]``."""

    event: str
    target_id: str
    body: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> list[Any]:
        return [Kind.NOTIFICATION.value, self.event, self.target_id, self.body]


Envelope = Request | Response | Notification


def encode(envelope: Envelope) -> bytes:
    """Validates and packs one envelope into a msgpack frame."""
    _validate(envelope.to_wire())
    return msgpack.packb(envelope.to_wire(), use_bin_type=True)


def decode(frame: bytes) -> Envelope:
    """Unpacks and validates one frame; raises :class:`ProtocolError` with the reason on any defect."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise ProtocolError(f"frame must be bytes, not {type(frame).__name__}")
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    if len(frame) == 0:
        raise ProtocolError("empty frame")
    try:
        wire = msgpack.unpackb(frame, use_list=True, raw=False, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise ProtocolError("trailing bytes after the envelope") from exc
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ProtocolError(f"not msgpack: {exc}") from exc
    return _validate(wire)


def _validate(wire: Any) -> Envelope:
    if not isinstance(wire, list):
        raise ProtocolError(f"envelope must be an array, not {type(wire).__name__}")
    if not wire:
        raise ProtocolError("envelope is empty")
    kind = wire[0]
    if kind is True or kind is False or not isinstance(kind, int) or kind not in (0, 1, 2):
        raise ProtocolError(f"unknown envelope kind {kind!r}")
    if kind == Kind.REQUEST:
        _arity(wire, 5, "request")
        return Request(_id(wire[1]), _name(wire[2], "method"), _target(wire[3]), _body(wire[4]))
    if kind == Kind.RESPONSE:
        _arity(wire, 4, "response")
        ok = wire[2]
        if not isinstance(ok, bool):
            raise ProtocolError(f"response ok flag must be a boolean, not {type(ok).__name__}")
        body = _body(wire[3])
        if not ok:
            if not isinstance(body.get("error"), str) or not body["error"]:
                raise ProtocolError("false response without an error name")
            if not isinstance(body.get("reason", ""), str):
                raise ProtocolError("false response reason must be a string")
        return Response(_id(wire[1]), ok, body)
    _arity(wire, 4, "notification")
    return Notification(_name(wire[1], "event"), _target(wire[2]), _body(wire[3]))


def _arity(wire: list[Any], n: int, what: str) -> None:
    if len(wire) != n:
        raise ProtocolError(f"{what} must have {n} elements, not {len(wire)}")


def _id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"id must be an integer, not {type(value).__name__}")
    if not 0 <= value <= _MAX_ID:
        raise ProtocolError(f"id {value} out of range")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        shape = "entity.verb" if what == "method" else "entity.event"
        raise ProtocolError(f"{what} must be an '{shape}' string, not {value!r}")
    return value


def _target(value: Any) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"target id must be a string, not {type(value).__name__}")
    return value


def _body(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"body must be a map, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise ProtocolError(f"body keys must be strings, not {type(key).__name__}")
    return value


# -------------------------------------------------------------------------------------------------- bodies


class Body:
    """Base of the body dataclasses: ``to_wire()`` gives the map, ``from_wire(map)`` checks and builds one.

    ``from_wire`` requires every field without a default, checks each value's type and ignores unknown keys
    (so that a newer peer may add optional fields).
    """

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_wire(cls, body: Any) -> Self:
        if not isinstance(body, dict):
            raise ProtocolError(f"{cls.__name__} body must be a map, not {type(body).__name__}")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in body:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ProtocolError(f"{cls.__name__}: missing field '{f.name}'")
                continue
            values[f.name] = _check_type(cls.__name__, f.name, hints[f.name], body[f.name])
        return cls(**values)


def _check_type(owner: str, name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint) or hint
    if origin is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif origin is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    else:
        ok = isinstance(value, origin)
    if not ok:
        raise ProtocolError(f"{owner}: field '{name}' must be {getattr(origin, '__name__', origin)}, "
                            f"not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Empty(Body):
    """A body without fields (``worker.close`` request and reply)."""


@dataclass(frozen=True, slots=True)
class WorkerRunning(Body):
    """``worker.running``: sent once, after the UDP socket is bound and the handlers are installed."""

    pid: int
    core: int
    udp_port: int
    protocol_version: int
    rcvbuf: int  # SO_RCVBUF as read back from the kernel (Linux reports twice the usable size)
    sndbuf: int


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat(Body):
    """``worker.heartbeat``: every second; ``counters`` merges the worker's own and its heartbeat sources'."""

    seq: int
    loop_lag_ms: float
    counters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerDump(Body):
    """Reply of ``worker.dump`` (the media side adds its own keys next to these)."""

    worker_id: int
    pid: int
    core: int
    udp_port: int
