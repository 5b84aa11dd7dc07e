"""The control <-> worker contract: envelopes, method and event names, message bodies.

This module owns the wire format of the ZeroMQ channel between the control process (ROUTER) and each worker
(DEALER), as fixed in docs/SEAMS.md §3. Frames are msgpack arrays (``use_bin_type=True``, ``raw=False``) whose
bodies are maps with string keys::

    [0, id, "entity.verb", target_id, body]                            request       control -> worker
    [1, id, true, body] | [1, id, false, {"error": e, "reason": r}]    response      worker -> control
    [2, "entity.event", target_id, body]                               notification  worker -> control

It validates every frame it decodes and raises :class:`ProtocolError` with an exact reason, so a malformed
frame is rejected (and counted by the channel) instead of crashing either process. It must not know about
sockets, rooms or media. Bodies are typed: :class:`Body` dataclasses whose ``from_wire`` checks every field
(nested maps, arrays of fixed-size tuples, optional values) and names the first bad one. The ``worker.*`` bodies
are here; the media bodies and the tables that say which body goes with which :class:`Method` and :class:`Event`
(``REQUESTS``, ``EVENTS``) are in router/messages.py. The naming follows mediasoup's channel (``ENTITY_VERB``
requests, notifications addressed by handler id).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import types
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
    """Requests, control -> worker (docs/SEAMS.md §3); each has a request and a reply body in ``REQUESTS``."""

    WORKER_DUMP = "worker.dump"
    WORKER_CLOSE = "worker.close"
    MEDIA_ROUTER_CREATE = "media_router.create"
    MEDIA_ROUTER_CLOSE = "media_router.close"
    MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT = "media_router.create_webrtc_transport"
    MEDIA_ROUTER_PRODUCE_PIPE = "media_router.produce_pipe"
    TRANSPORT_CONNECT = "transport.connect"
    TRANSPORT_RESTART_ICE = "transport.restart_ice"
    TRANSPORT_CLOSE = "transport.close"
    TRANSPORT_GET_STATS = "transport.get_stats"
    TRANSPORT_PRODUCE = "transport.produce"
    TRANSPORT_CONSUME = "transport.consume"
    TRANSPORT_PRODUCE_DATA = "transport.produce_data"
    TRANSPORT_CONSUME_DATA = "transport.consume_data"
    TRANSPORT_OPEN_DATA_CHANNEL = "transport.open_data_channel"
    TRANSPORT_SEND_DATA = "transport.send_data"
    PRODUCER_PAUSE = "producer.pause"
    PRODUCER_RESUME = "producer.resume"
    PRODUCER_CLOSE = "producer.close"
    PRODUCER_PIPE = "producer.pipe"
    PRODUCER_UNPIPE = "producer.unpipe"
    CONSUMER_PAUSE = "consumer.pause"
    CONSUMER_RESUME = "consumer.resume"
    CONSUMER_CLOSE = "consumer.close"
    CONSUMER_SET_PREFERRED_LAYERS = "consumer.set_preferred_layers"
    CONSUMER_REQUEST_KEY_FRAME = "consumer.request_key_frame"
    DATA_PRODUCER_CLOSE = "data_producer.close"
    DATA_CONSUMER_CLOSE = "data_consumer.close"


class Event(StrEnum):
    """Notifications, worker -> control (docs/SEAMS.md §3); each has a body in ``EVENTS``."""

    WORKER_RUNNING = "worker.running"
    WORKER_HEARTBEAT = "worker.heartbeat"
    TRANSPORT_ICE_STATE = "transport.ice_state"
    TRANSPORT_DTLS_STATE = "transport.dtls_state"
    TRANSPORT_SCTP_STATE = "transport.sctp_state"
    TRANSPORT_TUPLE_CHANGED = "transport.tuple_changed"
    TRANSPORT_SCORES = "transport.scores"
    PRODUCER_STREAM_ADDED = "producer.stream_added"
    CONSUMER_LAYERS_CHANGED = "consumer.layers_changed"
    CONSUMER_PRODUCER_CLOSED = "consumer.producer_closed"
    CONSUMER_STREAM_STATE = "consumer.stream_state"
    DATA_PRODUCER_MESSAGE = "data_producer.message"


_KNOWN_NAMES = frozenset(str(name) for name in (*Method, *Event))

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
    wire = envelope.to_wire()
    _validate(wire)
    return _packer().pack(wire)


# One msgpack Packer per thread, kept: ``msgpack.packb`` makes a Packer per call, and each allocates a 1 MiB
# buffer, which in a long-running process's heap cost the worker 20-35 us per notification (page faults) against
# well under 1 us for the packing itself. A Packer is not safe to share between threads, hence one per thread.
_PACKERS = threading.local()


def _packer() -> msgpack.Packer:
    packer: msgpack.Packer | None = getattr(_PACKERS, "packer", None)
    if packer is None:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
    return packer


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
    if type(value) is str and value in _KNOWN_NAMES:
        return value  # a Method or Event of this contract: the pattern is known to match
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

    ``from_wire`` requires every field without a default, checks each value against the field's annotation and
    ignores unknown keys (so that a newer peer may add optional fields). Annotations it checks: ``int`` (not
    bool), ``float`` (an int is accepted), ``bool``, ``str``, ``bytes``, ``Literal[...]``, unions such as
    ``int | None`` and ``bytes | str``, ``list[X]``, fixed-size ``tuple[X, Y]`` (an array on the wire),
    ``dict[str, X]`` and a nested Body (a map). A subclass states rules beyond the types in :meth:`problem`.
    A bad body raises :class:`ProtocolError` naming the body, the field (``encodings[0][1]``,
    ``extensions.id_map``) and what is wrong with it.
    """

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_wire(self) -> dict[str, Any]:
        names = _NAMES.get(type(self))
        if names is None:
            names = _NAMES[type(self)] = tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return {name: _to_wire(getattr(self, name)) for name in names}

    def problem(self) -> tuple[str, str] | None:
        """``(field, why)`` when the values break a rule the types cannot say (``("id_map", "must be 256
        bytes, not 3")``), else None."""
        return None

    @classmethod
    def from_wire(cls, body: Any) -> Self:
        if type(body) is CheckedMap and type(body.parsed) is cls:
            return body.parsed  # type: ignore[return-value]  # checked once already, by the receiver
        return cls._parse(body, cls.__name__, "")

    @classmethod
    def _parse(cls, body: Any, owner: str, prefix: str) -> Self:
        try:
            return _parse_fast(cls, body)
        except ProtocolError:
            pass  # the walk below finds the first bad field and says why
        if not isinstance(body, dict):
            if prefix:
                raise ProtocolError(f"{owner}: field '{prefix[:-1]}' must be a map, not {type(body).__name__}")
            raise ProtocolError(f"{owner} body must be a map, not {type(body).__name__}")
        values: dict[str, Any] = {}
        for name, hint, required in _fields(cls):
            if name not in body:
                if required:
                    raise ProtocolError(f"{owner}: missing field '{prefix}{name}'")
                continue
            values[name] = _check(owner, prefix + name, hint, body[name])
        parsed = cls(**values)
        problem = parsed.problem()
        if problem is not None:
            raise ProtocolError(f"{owner}: field '{prefix}{problem[0]}' {problem[1]}")
        return parsed


class CheckedMap(dict[str, Any]):
    """A body map that its receiver has already checked (``parsed``, the :class:`Body` it gave): ``from_wire`` of
    that same body type returns ``parsed`` instead of checking the map again. Control's worker channel hands
    notifications on this way (control/workers/worker_client.py), so each is checked once, whoever handles it."""

    __slots__ = ("parsed",)

    def __init__(self, body: dict[str, Any], parsed: Body) -> None:
        super().__init__(body)
        self.parsed = parsed


_FIELDS: dict[type, list[tuple[str, Any, bool]]] = {}
_NAMES: dict[type, tuple[str, ...]] = {}  # to_wire: the field names of a body class, in order


def _fields(cls: type) -> list[tuple[str, Any, bool]]:
    """(name, resolved annotation, required) of a body class, resolved once."""
    fields = _FIELDS.get(cls)
    if fields is None:
        hints = typing.get_type_hints(cls)
        fields = _FIELDS[cls] = [
            (f.name, hints[f.name],
             f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)
        ]
    return fields


# --- the fast path of from_wire: a checker per field, built once per body class -------------------------------
#
# Each checker takes a wire value and returns what ``_check`` returns for it, or raises ProtocolError (without a
# useful reason) where ``_check`` would refuse it or where it does not decide; ``Body._parse`` then walks the body
# again with ``_check``, which names the field and the fault. So a good body is checked without building any
# path string or looking an annotation up (hashing a ``Literal`` annotation walks its values), and a bad one gets
# the same error as before.

_Checker = typing.Callable[[Any], Any]
_PLANS: dict[type, list[tuple[str, _Checker, bool]]] = {}
_MISSING = object()


class _NotDecided(ProtocolError):
    """The fast path leaves this body to the field-by-field walk (raised afresh each time: a raised instance keeps
    the traceback of every raise)."""

    def __init__(self) -> None:
        super().__init__("not decided on the fast path")


def _parse_fast(cls: type[Body], body: Any) -> Any:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = [(name, _checker(hint), required) for name, hint, required in _fields(cls)]
    if not isinstance(body, dict):
        raise _NotDecided
    values: dict[str, Any] = {}
    for name, check, required in plan:
        value = body.get(name, _MISSING)
        if value is _MISSING:
            if required:
                raise _NotDecided
            continue
        values[name] = check(value)
    parsed = cls(**values)
    if parsed.problem() is not None:
        raise _NotDecided
    return parsed


def _checker(hint: Any) -> _Checker:
    """The fast checker of one annotation (see above); annotations it has no shortcut for go to ``_check``."""
    if hint is Any:
        return _same
    if hint in _EXACT:
        def exact(value: Any) -> Any:
            return value if type(value) is hint else _decided_by_check(hint, value)
        return exact
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        allowed = _literal_values(hint, args)

        def literal(value: Any) -> Any:
            if type(value) in _LITERAL_TYPES and (type(value), value) in allowed:
                return value
            raise _NotDecided
        return literal
    if isinstance(hint, type) and issubclass(hint, Body):
        return lambda value: _parse_fast(hint, value)
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        arm = next(arg for arg in args if arg is not type(None))
        if arm not in _SCALARS:
            inner = _checker(arm)
            return lambda value: None if value is None else inner(value)
    if origin is list and args:
        item = args[0]
        if item in _EXACT:
            def exact_items(value: Any) -> Any:
                if type(value) is list and all(type(v) is item for v in value):
                    return list(value)
                return _decided_by_check(hint, value)
            return exact_items
        check_item = _checker(item)

        def items(value: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise _NotDecided
            return [check_item(v) for v in value]
        return items
    if origin is tuple and args and Ellipsis not in args:
        checks = tuple(_checker(arg) for arg in args)

        def fixed(value: Any) -> Any:
            if not isinstance(value, list | tuple) or len(value) != len(checks):
                raise _NotDecided
            return tuple(check(v) for check, v in zip(checks, value, strict=True))
        return fixed
    return lambda value: _decided_by_check(hint, value)


def _same(value: Any) -> Any:
    return value


def _decided_by_check(hint: Any, value: Any) -> Any:
    return _check("", "", hint, value)


def _to_wire(value: Any) -> Any:
    if isinstance(value, Body):
        return value.to_wire()
    if isinstance(value, list | tuple):
        return [_to_wire(v) for v in value]
    return value


_SCALARS = (int, float, bool, str, bytes, type(None))
# Values of exactly these types pass _check unchanged when the annotation is that same type (int excludes bool
# and float takes an int there, which an exact type match leaves out): checked by one comparison.
_EXACT = frozenset({int, float, bool, str, bytes})

_SHAPES: dict[Any, tuple[Any, tuple[Any, ...]]] = {}


def _shape(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """``typing.get_origin`` and ``typing.get_args`` of a field's annotation, worked out once per annotation."""
    shape = _SHAPES.get(hint)
    if shape is None:
        shape = _SHAPES[hint] = (typing.get_origin(hint), typing.get_args(hint))
    return shape


# A Literal's values as (type, value) pairs, worked out once per annotation: a value matches only one of the same
# type (True is not 1, 1.0 is not 1), and only hashable scalars can match.
_LITERALS: dict[Any, frozenset[tuple[type, Any]]] = {}
_LITERAL_TYPES = frozenset({str, int, bool, bytes, type(None)})


def _literal_values(hint: Any, args: tuple[Any, ...]) -> frozenset[tuple[type, Any]]:
    values = _LITERALS.get(hint)
    if values is None:
        values = _LITERALS[hint] = frozenset((type(arg), arg) for arg in args)
    return values


def _scalar(hint: Any, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` is of the scalar type ``hint`` (int excludes bool; float takes an int), and the value."""
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if hint is type(None):
        return value is None, value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(hint))
    if origin is tuple:
        return f"an array of {len(typing.get_args(hint))}"
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and issubclass(hint, Body):
        return "a map"
    return getattr(origin or hint, "__name__", str(hint))


def _check(owner: str, path: str, hint: Any, value: Any) -> Any:
    """``value`` checked against ``hint`` (and converted: arrays to tuples, ints to floats, maps to Bodies)."""
    if hint is Any:
        return value
    if type(value) is hint and hint in _EXACT:
        return value  # what _scalar accepts and returns unchanged, without the walk below
    origin, args = _shape(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [arg for arg in args if arg is not type(None)]
        if len(arms) == 1 and arms[0] not in _SCALARS:
            return _check(owner, path, arms[0], value)  # Body | None, list[X] | None: the precise reason
        for arm in arms:
            ok, converted = _scalar(arm, value)
            if ok:
                return converted
    elif origin is typing.Literal:
        if type(value) in _LITERAL_TYPES and (type(value), value) in _literal_values(hint, args):
            return value
        raise ProtocolError(f"{owner}: field '{path}' must be {_describe(hint)}, not {value!r}")
    elif isinstance(hint, type) and issubclass(hint, Body):
        return hint._parse(value, owner, path + ".")
    elif origin is list:
        if isinstance(value, list | tuple):
            item = args[0]
            if item in _EXACT and all(type(v) is item for v in value):
                return list(value)
            return [_check(owner, f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    elif origin is tuple:
        if isinstance(value, list | tuple):
            if len(value) != len(args):
                raise ProtocolError(f"{owner}: field '{path}' must be {_describe(hint)}, not an array of {len(value)}")
            if all(type(v) is arg and arg in _EXACT for arg, v in zip(args, value, strict=True)):
                return tuple(value)
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_check(owner, f"{path}[{i}]", arg, v) for i, (arg, v) in pairs)
    elif origin is dict:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ProtocolError(f"{owner}: field '{path}' keys must be str, not {type(key).__name__}")
                if args and args[1] is not Any:
                    _check(owner, f"{path}.{key}", args[1], item)
            return value
    else:
        ok, converted = _scalar(hint, value)
        if ok:
            return converted
    raise ProtocolError(f"{owner}: field '{path}' must be {_describe(hint)}, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Empty(Body):
    """A body without fields (the request and reply of most methods that only name their target)."""


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
    """Reply of ``worker.dump``: the worker's identity and, in ``media``, the media side's heartbeat counts."""

    worker_id: int
    pid: int
    core: int
    udp_port: int
    media: dict[str, Any] = field(default_factory=dict)
