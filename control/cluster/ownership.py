"""Room ownership: the key ``mediarouter:room:<name>`` holds the id of the node that hosts the room.

A node claims a room with one ``SET NX PX`` (of two nodes claiming at once, one wins and the other reads the
winner), keeps it alive by refreshing the TTL while it hosts the room, and releases it when the room closes. The
refresh and the release touch the key only while it still names this node (a compare-and-set in a Lua script), so
a node that lost a key to expiry cannot extend or delete its successor's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from control.cluster.keys import room_key

_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RoomOwnership:
    """Claims, refreshes, releases and looks up room owners in ``redis``."""

    def __init__(self, redis: Any, node_id: str, ttl_s: float) -> None:
        self.redis = redis
        self.node_id = node_id
        self.ttl_ms = int(ttl_s * 1000)
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)

    async def owner(self, room: str) -> str | None:
        value = await self.redis.get(room_key(room))
        return value.decode() if value is not None else None

    async def claim(self, room: str) -> str:
        """Makes this node the owner unless another is; returns the owner (this node's id when it won)."""
        key = room_key(room)
        while True:
            if await self.redis.set(key, self.node_id, nx=True, px=self.ttl_ms):
                return self.node_id
            owner = await self.owner(room)
            if owner is not None:
                if owner == self.node_id:
                    await self.refresh([room])
                return owner  # else it expired between the two calls: try again

    async def refresh(self, rooms: Iterable[str]) -> int:
        """Extends this node's rooms; returns how many were still its own."""
        kept = 0
        for room in rooms:
            kept += int(await self._refresh(keys=[room_key(room)], args=[self.node_id, self.ttl_ms]))
        return kept

    async def release(self, room: str, owner: str | None = None) -> bool:
        """Deletes the room's key if it names ``owner`` (default: this node)."""
        return bool(await self._release(keys=[room_key(room)], args=[owner or self.node_id]))
