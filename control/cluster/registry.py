"""The node registry: each node's entry in Redis (id, address, ports, CPUs, load, state), refreshed with a TTL.

A node writes its entry when it starts and then every third of the TTL; an entry that expires is a dead node. The
state is ``serving`` or ``draining`` (a draining node takes no new room, control/cluster/selector.py). Leaving
deletes the entry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from control.cluster.keys import NODE_PATTERN, node_key


@dataclass(frozen=True)
class NodeInfo:
    """One node as the cluster sees it."""

    id: str
    ip: str
    http_port: int
    rtc_port: int
    cpus: int
    state: str = "serving"  # or "draining"
    packets_per_s: float = 0.0  # forwarded by its workers
    cpu: float = 0.0  # its workers' CPU use, 0-1 of the node's CPUs
    rooms: int = 0
    participants: int = 0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeInfo:
        fields: dict[str, Any] = json.loads(data)
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


class NodeRegistry:
    """Reads and writes the entries of the nodes sharing ``redis``."""

    def __init__(self, redis: Any, ttl_s: float) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl_s * 1000)

    async def write(self, node: NodeInfo) -> None:
        await self.redis.set(node_key(node.id), node.to_json(), px=self.ttl_ms)

    async def remove(self, node_id: str) -> None:
        await self.redis.delete(node_key(node_id))

    async def get(self, node_id: str) -> NodeInfo | None:
        data = await self.redis.get(node_key(node_id))
        return NodeInfo.from_json(data) if data is not None else None

    async def alive(self, node_id: str) -> bool:
        return bool(await self.redis.exists(node_key(node_id)))

    async def nodes(self) -> list[NodeInfo]:
        """Every live node, by id."""
        keys = [key async for key in self.redis.scan_iter(match=NODE_PATTERN, count=500)]
        values = await self.redis.mget(keys) if keys else []
        return sorted((NodeInfo.from_json(v) for v in values if v is not None), key=lambda n: n.id)
