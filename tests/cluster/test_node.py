"""ClusterNode against a real redis-server, with stand-in rooms: placement, draining, concurrent creation, leaving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from redis_server import RedisServer

from control.cluster.node import ClusterNode
from control.config import ClusterSettings, RedisSettings, Settings
from control.rtc.events import RoomEvents


def make_node(server: RedisServer, node_id: str) -> ClusterNode:
    settings = Settings(workers=1, node_ip="127.0.0.1", rtc_port_base=7882, http_host="127.0.0.1", http_port=7880,
                        keys=MappingProxyType({"k": "s"}), dev_mode=False, log_level="info",
                        redis=RedisSettings(address=server.address), cluster=ClusterSettings(ttl_s=3.0))
    manager = SimpleNamespace(events=RoomEvents(), rooms={}, settings=SimpleNamespace(keys={"k": "s"}),
                              participant_count=lambda: 0)
    return ClusterNode(settings, manager, SimpleNamespace(slots=[]), node_id)  # type: ignore[arg-type]


@pytest.fixture
async def nodes(redis_server: RedisServer, redis_client: Any) -> AsyncIterator[tuple[ClusterNode, ClusterNode]]:
    a, b = make_node(redis_server, "ND_a"), make_node(redis_server, "ND_b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        for node in (a, b):
            if node._beat is not None and not node._beat.done():
                await node.stop()


async def test_a_new_room_stays_where_it_was_asked_for_and_the_other_node_relays(
        nodes: tuple[ClusterNode, ClusterNode]) -> None:
    a, b = nodes
    assert await a.place("r1") == "ND_a"  # equal load: the asking node
    assert await b.place("r1") == "ND_a" and await b.owner("r1") == "ND_a"


async def test_fifty_concurrent_creations_from_two_nodes_end_with_one_owner(
        nodes: tuple[ClusterNode, ClusterNode]) -> None:
    a, b = nodes
    names = [f"room-{i}" for i in range(50)]
    answers = await asyncio.gather(*(node.place(name) for name in names for node in (a, b)))
    for i, name in enumerate(names):
        assert answers[2 * i] == answers[2 * i + 1] == await a.ownership.owner(name), name


async def test_a_draining_node_takes_no_new_room(nodes: tuple[ClusterNode, ClusterNode]) -> None:
    a, b = nodes
    await a.set_draining()
    assert (await a.registry.get("ND_a")).state == "draining"  # type: ignore[union-attr]
    assert await a.place("new") == "ND_b"  # b claims it when the relayed join reaches it
    assert await a.ownership.owner("new") is None


async def test_leaving_deletes_the_entry_and_releases_the_rooms(nodes: tuple[ClusterNode, ClusterNode]) -> None:
    a, b = nodes
    assert await a.place("kept") == "ND_a"
    a.manager.rooms["kept"] = SimpleNamespace(closed=False)
    await a.stop()
    assert [n.id for n in await b.nodes()] == ["ND_b"]
    assert await b.owner("kept") is None and await b.place("kept") == "ND_b"


async def test_a_dead_owner_key_is_cleared_and_the_room_placed_again(nodes: tuple[ClusterNode, ClusterNode]) -> None:
    a, b = nodes
    assert await a.place("orphan") == "ND_a"
    await a.registry.remove("ND_a")  # as if a's entry expired: its room key no longer counts
    assert await b.owner("orphan") is None
    assert await b.place("orphan") == "ND_b"
