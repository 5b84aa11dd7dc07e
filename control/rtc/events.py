"""Room events as LiveKit's webhooks name them, told to whoever listens (webhooks, metrics).

:class:`RoomEvents` is the one hook ``control.rtc.rooms`` calls: ``room_started``, ``room_finished``,
``participant_joined``, ``participant_left``, ``track_published`` and ``track_unpublished``, each with the protobuf
state at that moment (the room's ``livekit.Room`` with its current ``num_participants``, the participant's
``ParticipantInfo``, the track's ``TrackInfo``). Listeners are called synchronously on the event loop and must not
block: the webhook sender only queues (control/service/webhooks.py). A listener that raises is logged and the
others still hear the event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from livekit.protocol import models

log = logging.getLogger("control.rtc.events")

ROOM_STARTED = "room_started"
ROOM_FINISHED = "room_finished"
PARTICIPANT_JOINED = "participant_joined"
PARTICIPANT_LEFT = "participant_left"
TRACK_PUBLISHED = "track_published"
TRACK_UNPUBLISHED = "track_unpublished"
EVENTS = (ROOM_STARTED, ROOM_FINISHED, PARTICIPANT_JOINED, PARTICIPANT_LEFT, TRACK_PUBLISHED, TRACK_UNPUBLISHED)


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One event: its name, the room's state and, where the event has them, the participant and the track."""

    event: str
    room: models.Room
    participant: models.ParticipantInfo | None = None
    track: models.TrackInfo | None = None


Listener = Callable[[RoomEvent], None]


class RoomEvents:
    """The listeners of one RoomManager (none by default: events cost nothing without them)."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, event: str, room: models.Room, participant: models.ParticipantInfo | None = None,
             track: models.TrackInfo | None = None) -> None:
        if not self.listeners:
            return
        item = RoomEvent(event, room, participant, track)
        for listener in self.listeners:
            try:
                listener(item)
            except Exception:
                log.exception("room event listener failed on %s", event)
