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

For sockets that negotiated permessage-deflate (RFC 7692; browsers do), a frame of at least
:data:`DEFLATE_MIN_BYTES` is also compressed once (:meth:`Frame.deflated`) into a message that refers to nothing
before it: compressed at level 1 (as LiveKit's server does) and ended with a full flush, which resets the
compressor, so the same bytes are valid on every socket whatever that socket's client has received before
(section 7.2.1 lets a sender choose not to use earlier messages). A sender that compressed each socket's messages
in a context of its own would keep one compressor per socket (a quarter of a megabyte each) and compress a
broadcast once per recipient. A frame may bring its compressed form in pieces (a JoinResponse: its own fields,
then blocks of other participants' entries compressed once, control/rtc/listing.py): pieces that each end with a
full flush concatenate into one valid message.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Hashable

from livekit.protocol import rtc

_FIN_BINARY = 0x82  # FIN, no RSV bit (not compressed, RFC 7692 section 6), opcode 2 (binary)
_FIN_BINARY_DEFLATED = 0xC2  # FIN, RSV1 (compressed, RFC 7692 section 6), opcode 2 (binary)
_FLUSH_TAIL = b"\x00\x00\xff\xff"  # what a flush ends with; RFC 7692 section 7.2.1 leaves it off the message
DEFLATE_MIN_BYTES = 1024  # smaller frames go uncompressed: a few hundred bytes gain little
_compressors: dict[int, zlib._Compress] = {}  # window bits -> a compressor that every use leaves reset


def deflate_piece(data: bytes, wbits: int = 15) -> bytes:
    """``data`` as raw DEFLATE blocks (RFC 1951) that refer to nothing before them and end on a full flush (byte
    aligned, compressor reset): such pieces may be concatenated, and followed by others, in one message."""
    compressor = _compressors.get(wbits)
    if compressor is None:
        compressor = _compressors[wbits] = zlib.compressobj(1, zlib.DEFLATED, -wbits)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


def deflated_message(pieces: bytes) -> bytes:
    """The payload of a compressed message made of :func:`deflate_piece` outputs: the last flush's tail removed."""
    return pieces[:-4] if pieces.endswith(_FLUSH_TAIL) else pieces


class Frame:
    """One SignalResponse, its oneof case (``kind``), its coalescing ``key`` (None: never coalesced) and its
    bytes, encoded once; ``shared``: a broadcast, written to every socket uncompressed from :attr:`wire`."""

    __slots__ = ("_data", "_deflate", "_deflated", "_message", "_wire", "key", "kind", "shared")

    def __init__(self, message: rtc.SignalResponse, key: Hashable | None = None, *, shared: bool = True) -> None:
        self._message: rtc.SignalResponse | None = message
        self.kind = str(message.WhichOneof("message"))
        self.key = key
        self.shared = shared
        self._data: bytes | None = None
        self._wire: bytes | None = None
        self._deflate: Callable[[int], bytes] | None = None
        self._deflated: tuple[int, bytes] | None = None

    @classmethod
    def encoded(cls, kind: str, data: bytes, key: Hashable | None = None, *, shared: bool = False,
                deflate: Callable[[int], bytes] | None = None) -> Frame:
        """A frame whose bytes are already encoded (a SignalResponse whose oneof case is ``kind``); by default one
        socket's (a JoinResponse). ``deflate(wbits)``, if given, returns ``data`` as :func:`deflate_piece`
        outputs (built from pieces compressed once elsewhere) for :meth:`deflated`."""
        frame = cls.__new__(cls)
        frame._message = None
        frame.kind = kind
        frame.key = key
        frame.shared = shared
        frame._data = data
        frame._wire = None
        frame._deflate = deflate
        frame._deflated = None
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

    def deflated(self, wbits: int) -> bytes:
        """The whole message for a socket with permessage-deflate (server window of ``wbits``): compressed once
        (and kept for the next socket with the same window) if the frame has at least :data:`DEFLATE_MIN_BYTES`,
        else :attr:`wire`."""
        if len(self.data) < DEFLATE_MIN_BYTES:
            return self.wire
        done = self._deflated
        if done is not None and done[0] == wbits:
            return done[1]
        pieces = self._deflate(wbits) if self._deflate is not None else deflate_piece(self.data, wbits)
        wire = websocket_frame(deflated_message(pieces), compressed=True)
        self._deflated = (wbits, wire)
        return wire


def websocket_frame(payload: bytes, *, compressed: bool = False) -> bytes:
    """``payload`` as one final, unmasked binary frame (RFC 6455 section 5.2); ``compressed``: RSV1 set, the
    payload being a permessage-deflate message (RFC 7692 section 6)."""
    first = _FIN_BINARY_DEFLATED if compressed else _FIN_BINARY
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def participant_key(sid: str) -> tuple[str, str]:
    """The key of a ParticipantUpdate that carries exactly one participant's state."""
    return ("update", sid)


ROOM_KEY = ("room_update",)
