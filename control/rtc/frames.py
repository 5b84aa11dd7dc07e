"""Frames: a SignalResponse encoded once, whatever the number of sockets it goes to.

A room's broadcast builds one :class:`Frame` and hands it to every participant; the WebSocket writer
(``control.service.outbox``) writes its bytes, encoded on first use. A frame that carries a state (one
participant's full ParticipantInfo, the room's info) has a ``key``: a writer that still holds an unsent frame with
the same key replaces its bytes in place instead of queueing another, so a chatty participant cannot fill anyone's
queue (docs/PROTOCOL.md, Flow control). A frame can also start from its bytes (:meth:`Frame.encoded`, a
JoinResponse assembled from each participant's cached encoding): its message is then parsed only if a sink without
``send_frame`` (a test's list) asks for it. A ``shared`` frame (a broadcast: the same bytes to many sockets) is
also framed once as an uncompressed WebSocket message (:attr:`Frame.wire`, RFC 6455 section 5.2), which every
socket's writer writes as is (docs/PROTOCOL.md, Flow control).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable

from livekit.protocol import rtc

_FIN_BINARY = 0x82  # FIN, no RSV bit (not compressed, RFC 7692 section 6), opcode 2 (binary)


class Frame:
    """One SignalResponse, its oneof case (``kind``), its coalescing ``key`` (None: never coalesced) and its
    bytes, encoded once; ``shared``: a broadcast, written to every socket uncompressed from :attr:`wire`."""

    __slots__ = ("_data", "_message", "_wire", "key", "kind", "shared")

    def __init__(self, message: rtc.SignalResponse, key: Hashable | None = None, *, shared: bool = True) -> None:
        self._message: rtc.SignalResponse | None = message
        self.kind = str(message.WhichOneof("message"))
        self.key = key
        self.shared = shared
        self._data: bytes | None = None
        self._wire: bytes | None = None

    @classmethod
    def encoded(cls, kind: str, data: bytes, key: Hashable | None = None, *, shared: bool = False) -> Frame:
        """A frame whose bytes are already encoded (a SignalResponse whose oneof case is ``kind``); by default one
        socket's (a JoinResponse), which that socket may compress."""
        frame = cls.__new__(cls)
        frame._message = None
        frame.kind = kind
        frame.key = key
        frame.shared = shared
        frame._data = data
        frame._wire = None
        return frame

    @property
    def message(self) -> rtc.SignalResponse:
        if self._message is None:
            self._message = rtc.SignalResponse.FromString(self.data)
        return self._message

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self._message is not None
            self._data = self._message.SerializeToString()
        return self._data

    @property
    def wire(self) -> bytes:
        """The whole WebSocket message from server to client: one unmasked binary frame, built once."""
        if self._wire is None:
            self._wire = websocket_frame(self.data)
        return self._wire


def websocket_frame(payload: bytes) -> bytes:
    """``payload`` as one final, unmasked, uncompressed binary frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", _FIN_BINARY, n)
    elif n < 65536:
        header = struct.pack("!BBH", _FIN_BINARY, 126, n)
    else:
        header = struct.pack("!BBQ", _FIN_BINARY, 127, n)
    return header + payload


def participant_key(sid: str) -> tuple[str, str]:
    """The key of a ParticipantUpdate that carries exactly one participant's state."""
    return ("update", sid)


ROOM_KEY = ("room_update",)
