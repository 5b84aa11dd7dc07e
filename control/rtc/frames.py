"""Frames: a SignalResponse encoded once, whatever the number of sockets it goes to.

A room's broadcast builds one :class:`Frame` and hands it to every participant; the WebSocket writer
(``control.service.outbox``) writes its bytes, encoded on first use. A frame that carries a state (one
participant's full ParticipantInfo, the room's info) has a ``key``: a writer that still holds an unsent frame with
the same key replaces its bytes in place instead of queueing another, so a chatty participant cannot fill anyone's
queue (docs/PROTOCOL.md, Flow control).
"""

from __future__ import annotations

from collections.abc import Hashable

from livekit.protocol import rtc


class Frame:
    """One SignalResponse, its oneof case (``kind``), its coalescing ``key`` (None: never coalesced) and its
    bytes, encoded once."""

    __slots__ = ("_data", "key", "kind", "message")

    def __init__(self, message: rtc.SignalResponse, key: Hashable | None = None) -> None:
        self.message = message
        self.kind = str(message.WhichOneof("message"))
        self.key = key
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self.message.SerializeToString()
        return self._data


def participant_key(sid: str) -> tuple[str, str]:
    """The key of a ParticipantUpdate that carries exactly one participant's state."""
    return ("update", sid)


ROOM_KEY = ("room_update",)
