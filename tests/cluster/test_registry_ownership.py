"""The node registry and room ownership against a real redis-server (tests/cluster/redis_server.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import client
from redis_server import RedisServer

from control.cluster.ownership import RoomOwnership
from control.cluster.registry import NodeInfo, NodeRegistry


def node(node_id: str, **kw: Any) -> NodeInfo:
    return NodeInfo(id=node_id, ip="127.0.0.1", http_port=7880, rtc_port=7882, cpus=2, **kw)


async def test_registry_lists_live_nodes_and_forgets_expired_ones(redis_client: Any) -> None:
    registry = NodeRegistry(redis_client, ttl_s=1.0)
    await registry.write(node("ND_a", rooms=3, packets_per_s=120.5))
    await registry.write(node("ND_b", state="draining"))
    nodes = await registry.nodes()
    assert [n.id for n in nodes] == ["ND_a", "ND_b"]
    assert nodes[0].rooms == 3 and nodes[0].packets_per_s == 120.5 and nodes[1].state == "draining"
    assert await registry.alive("ND_a") and (await registry.get("ND_b")) == nodes[1]
    await registry.remove("ND_b")
    assert [n.id for n in await registry.nodes()] == ["ND_a"]
    await asyncio.sleep(1.3)  # no refresh within the TTL: dead to the cluster
    assert await registry.nodes() == [] and not await registry.alive("ND_a")


async def test_one_owner_refreshed_only_by_it_released_only_by_it(redis_client: Any) -> None:
    a = RoomOwnership(redis_client, "ND_a", ttl_s=1.0)
    b = RoomOwnership(redis_client, "ND_b", ttl_s=1.0)
    assert await a.claim("room") == "ND_a"
    assert await b.claim("room") == "ND_a" and await b.owner("room") == "ND_a"
    assert await b.refresh(["room"]) == 0 and not await b.release("room")
    for _ in range(3):  # the owner's refresh keeps the key past its TTL
        await asyncio.sleep(0.5)
        assert await a.refresh(["room"]) == 1
    assert await a.owner("room") == "ND_a"
    await asyncio.sleep(1.3)  # no refresh: the key is gone within the TTL
    assert await a.owner("room") is None
    assert await b.claim("room") == "ND_b"
    assert await b.release("room") and await a.owner("room") is None
    assert await a.claim("again") == "ND_a" and await b.release("again", owner="ND_a")


async def test_fifty_rooms_created_concurrently_by_two_nodes_have_one_owner_each(redis_server: RedisServer,
                                                                                  redis_client: Any) -> None:
    one, two = client(redis_server), client(redis_server)  # each node its own connections
    try:
        a = RoomOwnership(one, "ND_a", ttl_s=5.0)
        b = RoomOwnership(two, "ND_b", ttl_s=5.0)
        names = [f"room-{i}" for i in range(50)]
        results = await asyncio.gather(*(o.claim(n) for n in names for o in ((a, b) if len(n) % 2 else (b, a))))
        winners: dict[str, set[str]] = {}
        for index, owner in enumerate(results):
            winners.setdefault(names[index // 2], set()).add(owner)
        assert all(len(w) == 1 for w in winners.values()), winners  # both callers agree on one owner
        for name, owner in winners.items():
            assert await redis_client.get(f"mediarouter:room:{name}") == next(iter(owner)).encode()
    finally:
        await one.aclose()
        await two.aclose()
