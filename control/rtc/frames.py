"""Frames: a SignalResponse encoded once, whatever the number of sockets it goes to.

A room's broadcast builds one :class:`Frame` and hands it to every participant; the WebSocket writer
(``control.service.outbox``) writes its bytes, encoded on first use. A frame that carries a state (one
participant's full ParticipantInfo, the room's info) has a ``key``: a writer that still holds an unsent frame with
the same key replaces its bytes in place instead of queueing another, so a chatty participant cannot fill anyone's
queue (docs/PROTOCOL.md, Flow control). A frame can also start from its bytes (:meth:`Frame.encoded`, a
JoinResponse assembled from each participant's cached encoding): its message is then parsed only if a sink without
``send_frame`` (a test's list) asks for it.
"""

from __future__ import annotations

from collections.abc import Hashable

from livekit.protocol import rtc


class Frame:
    """One SignalResponse, its oneof case (``kind``), its coalescing ``key`` (None: never coalesced) and its
    bytes, encoded once."""

    __slots__ = ("_data", "_message", "key", "kind")

    def __init__(self, message: rtc.SignalResponse, key: Hashable | None = None) -> None:
        self._message: rtc.SignalResponse | None = message
        self.kind = str(message.WhichOneof("message"))
        self.key = key
        self._data: bytes | None = None

    @classmethod
    def encoded(cls, kind: str, data: bytes, key: Hashable | None = None) -> Frame:
        """A frame whose bytes are already encoded (a SignalResponse whose oneof case is ``kind``)."""
        frame = cls.__new__(cls)
        frame._message = None
        frame.kind = kind
        frame.key = key
        frame._data = data
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


def participant_key(sid: str) -> tuple[str, str]:
    """The key of a ParticipantUpdate that carries exactly one participant's state."""
    return ("update", sid)


ROOM_KEY = ("room_update",)
