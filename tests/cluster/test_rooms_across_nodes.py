"""A room spanning nodes, its bus messages against a real redis-server (control/cluster/media_bus.py,
remote_pool.py, media_host.py, pipe_keys.py): node A owns the room and places a participant on node B's worker,
whose requests and notifications travel over the bus; pipes between them get the pair's SRTP keys; each side
cleans up when the other's entry is gone. Node B's worker is a recording stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from conftest import client
from redis_server import RedisServer

from control.cluster.media_bus import MEDIA, BadMessage, MediaAnswer, MediaCall, MediaEvent, PlaceReply, pack, unpack
from control.cluster.node import ClusterNode
from control.cluster.pipe_keys import pair_srtp
from control.cluster.registry import NodeInfo
from control.cluster.remote_pool import REMOTE_BASE, ClusterPool, choose_node
from control.config import ClusterSettings, RedisSettings, Settings
from control.rtc.events import RoomEvents
from control.workers.placement import WorkerLoad
from control.workers.worker_client import WorkerError
from router.messages import CreateWebRtcTransportReply, IceCandidate
from router.protocol import Method

IPS = {"ND_a": "198.51.100.1", "ND_b": "198.51.100.2"}


class FakeWorker:
    """Node B's worker 0: records each request; closing an unknown consumer fails as the worker would."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    async def request(self, method: str, target: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        self.requests.append((method, target, body))
        if method == Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT:
            candidate = IceCandidate(ip=IPS["ND_b"], port=7882)
            return CreateWebRtcTransportReply(ice_ufrag="u", ice_pwd="p" * 22, fingerprints=[("sha-256", "AB")],
                                              candidate=candidate, candidates=[candidate]).to_wire()
        if method == Method.TRANSPORT_SEND_DATA:
            return {"sent": True}
        if method == Method.CONSUMER_CLOSE:
            raise WorkerError("NotFound", f"consumer {target!r} not found")
        return {}


class FakePool:
    def loads(self, rooms_per_worker: Any) -> list[WorkerLoad]:
        return [WorkerLoad(0, True)]

    def udp_port(self, worker_id: int) -> int:
        return 7882

    def media(self, worker_id: int) -> Any:
        return SimpleNamespace(local=worker_id)


def make_node(server: RedisServer, node_id: str) -> tuple[ClusterNode, SimpleNamespace, FakeWorker]:
    settings = Settings(workers=1, node_ip=IPS[node_id], rtc_port_base=7882, http_host="127.0.0.1", http_port=7880,
                        keys=MappingProxyType({"k": "s"}), dev_mode=False, log_level="info",
                        redis=RedisSettings(address=server.address),
                        cluster=ClusterSettings(ttl_s=3.0, spread_nodes="always"))
    notified: list[tuple[int, str, str, dict[str, Any]]] = []
    died: list[int] = []
    manager = SimpleNamespace(events=RoomEvents(), rooms={}, settings=SimpleNamespace(keys={"k": "s"}),
                              participant_count=lambda: 0, rooms_per_worker=dict,
                              on_notification=lambda *args: notified.append(args), on_worker_died=died.append,
                              notified=notified, died=died)
    manager.pool = ClusterPool(FakePool(), settings)  # type: ignore[arg-type]
    worker = FakeWorker()
    node = ClusterNode(settings, manager, SimpleNamespace(slots=[], client=lambda wid: worker),  # type: ignore
                       node_id)
    node.bind_pool(manager.pool)
    return node, manager, worker


@pytest.fixture
async def nodes(redis_server: RedisServer, redis_client: Any) -> AsyncIterator[list[Any]]:
    a, b = make_node(redis_server, "ND_a"), make_node(redis_server, "ND_b")
    await a[0].start()
    await b[0].start()
    try:
        yield [*a, *b]
    finally:
        for node in (a[0], b[0]):
            if node._beat is not None and not node._beat.done():
                await node.stop()


async def until(predicate: Any, timeout_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


def test_messages_round_trip_and_malformed_ones_are_refused() -> None:
    call = MediaCall(owner="ND_a", worker=0, method="transport.send_data", target="PA_x.sub",
                     body=pack({"label": "_reliable", "data": b"\x00\xffbytes"}))
    assert MediaCall.from_wire(call.to_wire()) == call
    assert unpack(call.body) == {"label": "_reliable", "data": b"\x00\xffbytes"}
    assert MediaAnswer.from_wire({"error": "NotFound"}) == MediaAnswer(error="NotFound")
    with pytest.raises(BadMessage, match="worker must be int"):
        MediaCall.from_wire({**call.to_wire(), "worker": "0"})
    with pytest.raises(BadMessage, match="port missing"):
        PlaceReply.from_wire({"worker": 0, "ip": "198.51.100.2"})
    with pytest.raises(BadMessage):
        MediaEvent.from_wire([])
    with pytest.raises(BadMessage):
        unpack("bm90IG1zZ3BhY2s=!")


def test_always_spreads_to_the_node_with_fewest_of_the_room_and_auto_only_off_a_loaded_node() -> None:
    a, b = NodeInfo("ND_a", "", 0, 0, 1, cpu=0.9), NodeInfo("ND_b", "", 0, 0, 1, cpu=0.1)
    assert choose_node("always", "ND_a", [a, b], {}) == "ND_a"  # the first participant stays with the owner
    assert choose_node("always", "ND_a", [a, b], {"ND_a": 1}) == "ND_b"
    assert choose_node("always", "ND_a", [a, NodeInfo("ND_b", "", 0, 0, 1, state="draining")], {"ND_a": 1}) == "ND_a"
    assert choose_node("auto", "ND_a", [a, b], {}) == "ND_b"
    assert choose_node("auto", "ND_a", [NodeInfo("ND_a", "", 0, 0, 1, cpu=0.5), b], {}) == "ND_a"
    assert choose_node("never", "ND_a", [a, b], {"ND_a": 9}) == "ND_a"


async def test_a_participant_placed_on_another_node_and_its_worker_reached_over_the_bus(nodes: list[Any]) -> None:
    a, manager_a, _, b, _, worker_b = nodes
    pool: ClusterPool = manager_a.pool
    assert await pool.place_off_host("r", "RM_1", {}) is None  # the room's first participant stays here
    number = await pool.place_off_host("r", "RM_1", {0: 1})
    assert number is not None and number >= REMOTE_BASE
    assert await pool.place_off_host("r", "RM_1", {0: 1, number: 1}) is None  # one each: back here
    assert await pool.place_off_host("r", "RM_1", {0: 2, number: 1}) == number  # the room's worker there again

    media = pool.media(number)
    await media.create_router("RM_1")
    params = await media.create_transport("RM_1", "PA_x.sub")
    assert params.candidate_ip == IPS["ND_b"] and params.candidate_port == 7882  # the client goes to node B
    assert await media.send_data("PA_x.sub", "_reliable", b"\x00\x01")
    assert worker_b.requests == [
        (Method.MEDIA_ROUTER_CREATE, "RM_1", {}),
        (Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, "RM_1",
         {"transport_id": "PA_x.sub", "ice_ufrag": None, "ice_pwd": None, "data_producer": None, "data_channels": []}),
        (Method.TRANSPORT_SEND_DATA, "PA_x.sub", {"label": "_reliable", "data": b"\x00\x01"}),
    ]
    with pytest.raises(WorkerError) as failed:
        await media.close_consumer("PA_x.sub.TR_y")
    assert failed.value.error == "NotFound"
    refused = MediaAnswer.from_wire(await a.bus.call("ND_b", MEDIA, MediaCall(
        owner="ND_a", worker=0, method=Method.WORKER_CLOSE, target="", body=pack({})).to_wire()))
    assert refused.error == "Forbidden" and worker_b.requests[-1][0] != Method.WORKER_CLOSE

    # Node B's worker notifications about the owner's objects reach the owner's rooms, in order, as that worker's.
    b.media_host.on_notification(0, "transport.ice_state", "PA_x.sub", {"state": "connected"})
    b.media_host.on_notification(0, "transport.dtls_state", "PA_x.sub", {"state": "connected"})
    b.media_host.on_notification(0, "transport.ice_state", "PA_other.sub", {"state": "connected"})  # not A's
    await until(lambda: len(manager_a.notified) >= 2)
    await asyncio.sleep(0.1)
    assert manager_a.notified == [(number, "transport.ice_state", "PA_x.sub", {"state": "connected"}),
                                  (number, "transport.dtls_state", "PA_x.sub", {"state": "connected"})]

    # A pipe from A's worker to B's: each end told the other's address and the pair's keys, reversed.
    ends = await pool.pipe_ends(0, number)
    assert (ends.source.peer_ip, ends.source.peer_port) == (IPS["ND_b"], 7882)
    assert (ends.dest.peer_ip, ends.dest.peer_port) == (IPS["ND_a"], 7882)
    assert ends.source.srtp is not None and ends.dest.srtp == ends.source.srtp.reversed()
    back = await pool.pipe_ends(number, 0)  # the other way: the same pipe transport, the same keys
    assert back.source.srtp == ends.dest.srtp and back.dest.srtp == ends.source.srtp
    assert (await pool.pipe_ends(0, 0)).source.peer_ip == ""  # on one host: no address, no keys


async def test_the_hosting_node_closes_a_gone_owners_routers_and_the_owner_drops_a_gone_node(
        nodes: list[Any]) -> None:
    a, manager_a, _, b, _, worker_b = nodes
    pool: ClusterPool = manager_a.pool
    number = await pool.place_off_host("r", "RM_1", {0: 1})
    assert number is not None
    await pool.media(number).create_router("RM_1")
    await b.media_host.check_owners()
    assert worker_b.requests[-1][0] == Method.MEDIA_ROUTER_CREATE  # A lives: nothing closed
    await a.registry.remove("ND_a")  # as if A's entry expired
    await b.media_host.check_owners()
    assert worker_b.requests[-1] == (Method.MEDIA_ROUTER_CLOSE, "RM_1", {})
    assert not b.media_host.hosted.routers and not b.media_host.hosted.targets

    await pool.check_nodes()
    assert manager_a.died == []  # B lives
    await b.stop()  # B leaves: its entry is deleted
    await pool.check_nodes()
    assert manager_a.died == [number] and number not in pool.remote


async def test_both_nodes_asking_for_a_pair_of_workers_get_one_key_pair(redis_server: RedisServer,
                                                                        redis_client: Any) -> None:
    other = client(redis_server)
    try:
        x, y = "198.51.100.1:7882", "198.51.100.2:7882"
        keys = await asyncio.gather(*(pair_srtp(c, this, that) for c in (redis_client, other)
                                      for this, that in ((x, y), (y, x)) for _ in range(5)))
        from_x = [k for i, k in enumerate(keys) if (i // 5) % 2 == 0]
        from_y = [k for i, k in enumerate(keys) if (i // 5) % 2 == 1]
        assert len(set(from_x)) == len(set(from_y)) == 1
        assert from_y[0] == from_x[0].reversed() and from_x[0].local_key != from_x[0].remote_key
    finally:
        await other.aclose()


async def test_a_node_that_does_not_answer_leaves_the_participant_with_the_owner(nodes: list[Any]) -> None:
    a, manager_a, _, b, _, _ = nodes
    await b.bus.stop()  # B's entry is there, but nobody listens on its channel
    assert await manager_a.pool.place_off_host("r", "RM_1", {0: 1}) is None
