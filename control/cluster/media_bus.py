"""The bus messages of a room spanning nodes: the owner places a participant on another node's worker, sends that
worker media requests through the node's control, and hears the worker's notifications back (docs/CLUSTER.md,
Rooms across nodes).

Every message is a frozen dataclass with ``to_wire`` (a JSON-able dict, the ``body`` of a bus request,
control/cluster/bus.py) and ``from_wire`` (which raises :class:`BadMessage` on a missing or mistyped field). A worker
request's body and reply travel as the worker protocol has them (router/messages.py), packed with msgpack and
base64-encoded, since they hold bytes (key material, data-channel payloads) that JSON cannot.

| kind | from | body | answer |
|---|---|---|---|
| ``media_place`` | the owner | :class:`PlaceRequest` | :class:`PlaceReply` (the worker chosen there) |
| ``media`` | the owner | :class:`MediaCall` (one worker request) | :class:`MediaAnswer` (its reply or error) |
| ``media_event`` (one way) | the hosting node | :class:`MediaEvent` (one worker notification) | none |
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

PLACE = "media_place"
MEDIA = "media"
EVENT = "media_event"

T = TypeVar("T")


class BadMessage(ValueError):
    """A bus body that is not the message it claims to be."""


def pack(body: dict[str, Any]) -> str:
    """A worker body (router/messages.py wire form) as text."""
    return base64.b64encode(msgpack.packb(body, use_bin_type=True)).decode()


def unpack(text: str) -> dict[str, Any]:
    try:
        body = msgpack.unpackb(base64.b64decode(text), raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadMessage(f"not a packed body: {exc}") from exc
    if not isinstance(body, dict):
        raise BadMessage("a packed body must be a map")
    return body


def _from_wire(cls: type[T], wire: Any) -> T:
    if not isinstance(wire, dict):
        raise BadMessage(f"{cls.__name__}: not a map")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in wire:
            if f.default is dataclasses.MISSING:
                raise BadMessage(f"{cls.__name__}: {f.name} missing")
            continue
        value = wire[f.name]
        kind = {"str": str, "int": int}[str(f.type)]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadMessage(f"{cls.__name__}: {f.name} must be {f.type}")
        values[f.name] = value
    return cls(**values)


class _Message:
    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]

    @classmethod
    def from_wire(cls: type[T], wire: Any) -> T:
        return _from_wire(cls, wire)


@dataclass(frozen=True)
class PlaceRequest(_Message):
    """The owner asks a node for a worker to hold part of ``room`` (MediaRouter ``router_id``)."""

    owner: str  # the owner's node id
    room: str
    router_id: str


@dataclass(frozen=True)
class PlaceReply(_Message):
    """The worker the node chose, and where pipes reach it: ``ip`` (the node's address) and ``port``."""

    worker: int
    ip: str
    port: int


@dataclass(frozen=True)
class MediaCall(_Message):
    """One worker request (router/protocol.py ``Method``) for ``worker`` of the node, from the room's owner."""

    owner: str
    worker: int
    method: str
    target: str
    body: str  # pack()ed request body


@dataclass(frozen=True)
class MediaAnswer(_Message):
    """The worker's reply body (pack()ed), or its error and reason."""

    body: str = ""
    error: str = ""
    reason: str = ""


@dataclass(frozen=True)
class MediaEvent(_Message):
    """A notification of ``worker`` of node ``node`` about an object the owner made there."""

    node: str
    worker: int
    event: str
    target: str
    body: str  # pack()ed notification body
