"""Limits of the LiveKit surface: the token bucket behind every rate, and the names refusals are counted under.

Rooms and participants apply the limits of ``control.config.RoomSettings`` (tracks, pending AddTracks,
subscriptions, participants, rooms, data packets); signaling applies request rates (``control.service.flow``). Each
refusal adds one to a ``Counter`` under one of the names below (``RoomManager.refusals``), for the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

TRACKS = "tracks_per_participant"
PENDING_TRACKS = "pending_tracks"
SUBSCRIPTIONS = "subscriptions_per_participant"
ROOM_PARTICIPANTS = "participants_per_room"
NODE_PARTICIPANTS = "participants_per_node"
NODE_ROOMS = "rooms_per_node"
DATA_SIZE = "data_packet_bytes"
DATA_RATE = "data_packets_per_s"


@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; :meth:`take` spends one if there is one."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
