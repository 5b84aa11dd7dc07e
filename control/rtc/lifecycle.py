"""How long an empty room lives, as LiveKit has it (docs/PROTOCOL.md, Room lifecycle).

A room nobody has joined yet lives ``empty_timeout`` seconds (a room made by CreateRoom; one that a failed join
created closes at once); a room whose last participant left lives ``departure_timeout`` seconds, keeping its
metadata and ``max_participants`` for a returning participant; a room being closed (DeleteRoom, shutdown) goes at
once. Both timeouts come from the room settings and can be set per room by CreateRoom. :class:`RoomTimers` keeps
one pending close per room: a join cancels it, the room's next emptiness starts a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class EmptyRoom(Protocol):
    """What the timers read of a room (control.rtc.rooms.Room)."""

    sid: str
    closing: bool
    ever_joined: bool
    created_by_api: bool
    empty_timeout: int
    departure_timeout: int


def close_delay(room: EmptyRoom) -> float:
    """Seconds an empty room still lives: 0 closes it now."""
    if room.closing:
        return 0.0
    if room.ever_joined:
        return float(room.departure_timeout)
    if room.created_by_api:
        return float(room.empty_timeout)
    return 0.0


class RoomTimers:
    """The pending close of each empty room (by room sid)."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def pending(self, room: EmptyRoom) -> bool:
        return room.sid in self._pending

    def schedule(self, room: EmptyRoom, delay_s: float, close: Callable[[], None]) -> None:
        """Runs ``close`` after ``delay_s`` unless :meth:`cancel` comes first; a pending close is kept."""
        if room.sid in self._pending:
            return

        def fire() -> None:
            self._pending.pop(room.sid, None)
            close()

        self._pending[room.sid] = asyncio.get_running_loop().call_later(delay_s, fire)

    def cancel(self, room: EmptyRoom) -> None:
        timer = self._pending.pop(room.sid, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
