"""A Room over two workers (control/rtc/rooms.py with control/rtc/spread.py), against recording fake workers:
``room.spread: always`` puts alice on the home worker and bob on the other, bob's subscription to alice's track pipes
it (the destination end first), the pipe closes when bob leaves, and a dead worker costs only its own sessions."""

from __future__ import annotations

import dataclasses
from typing import Any

from control.config import RoomSettings
from control.rtc.codecs import Codec
from control.rtc.negotiation import TrackPlan
from control.rtc.participant import PublisherAnswer
from control.rtc.rooms import RoomManager
from tests.control.test_rooms import FakeMedia, FakeNegotiator, FakePool, joined, publish, settle


class SpreadMedia(FakeMedia):
    async def pipe(self, producer_id: str, pipe_id: str, *, peer_port: int, ssrcs: list[tuple[int, int]],
                   track: Any) -> None:
        self.calls.append(("pipe", producer_id, pipe_id, peer_port, len(ssrcs)))

    async def unpipe(self, producer_id: str, pipe_id: str) -> None:
        self.calls.append(("unpipe", producer_id, pipe_id))

    async def produce_pipe(self, router_id: str, producer_id: str, *, peer_port: int,
                           ssrcs: list[tuple[int, int]], track: Any) -> None:
        self.calls.append(("produce_pipe", router_id, producer_id, peer_port, len(ssrcs)))


class PlanNegotiator(FakeNegotiator):
    """The rooms tests' negotiator with real track plans (a pipe reads kind, encodings and RTX from them)."""

    def answer(self, offer_sdp: str, local: Any) -> PublisherAnswer:
        answer = super().answer(offer_sdp, local)
        media = [dataclasses.replace(m, plan=TrackPlan(
            mid=m.mid, kind=m.kind, codecs=[Codec("opus", 111, 48000)], rtx_apt={}, encodings=[("", 0, 0)],
            extensions={}, msid=None, cname=None, id_map=bytes(256), mid_id=1)) for m in answer.media]
        return dataclasses.replace(answer, media=media)


class SpreadPool(FakePool):
    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.workers = [SpreadMedia(i) for i in range(workers)]

    def udp_port(self, worker_id: int) -> int:
        return 7882 + worker_id


def manager(spread: str = "always") -> tuple[RoomManager, SpreadPool]:
    pool = SpreadPool(2)
    return RoomManager(pool, PlanNegotiator(), RoomSettings(keys={"devkey": "secret"}, spread=spread)), pool


async def test_a_subscriber_on_the_other_worker_gets_the_track_through_a_pipe() -> None:
    rooms, pool = manager()
    room, alice, _ = await joined(rooms, "alice")
    _, bob, _ = await joined(rooms, "bob")
    assert (room.worker_of[alice.sid], room.worker_of[bob.sid]) == (0, 1)
    assert pool.workers[1].find("create_router") == [("create_router", room.router_id)]
    track = await publish(room, alice, "mic")
    home, other = pool.workers
    assert other.find("produce_pipe") == [("produce_pipe", room.router_id, track, 7882, 1)]
    assert home.find("pipe") == [("pipe", track, f"{track}>w1", 7883, 1)]
    names = other.names()
    assert names.index("produce_pipe") < names.index("consume")  # the piped producer exists before its consumer
    assert [c[3] for c in other.find("consume")] == [track]
    assert room.workers() == [0, 1] and len(room.pipes.pipes) == 1

    await room.remove(bob, 0)
    await settle()
    assert home.find("unpipe") == [("unpipe", track, f"{track}>w1")]
    assert ("close_producer", track) in other.calls
    assert room.pipes.pipes == {}


async def test_never_keeps_the_room_on_its_home_worker() -> None:
    rooms, pool = manager("never")
    room, alice, _ = await joined(rooms, "alice")
    _, bob, _ = await joined(rooms, "bob")
    await publish(room, alice, "mic")
    assert set(room.worker_of.values()) == {0}
    assert pool.workers[1].calls == [] and pool.workers[0].find("pipe") == []


async def test_a_dead_worker_costs_only_its_own_sessions_and_pipes() -> None:
    rooms, pool = manager()
    room, alice, alice_client = await joined(rooms, "alice")
    _, bob, bob_client = await joined(rooms, "bob")
    track = await publish(room, alice, "mic")
    rooms.on_worker_died(1)
    await settle()
    assert rooms.rooms.get("r1") is room and not room.closed
    assert list(room.participants) == ["alice"] and bob.closed
    assert bob_client.of("leave")[-1].action == 2  # RECONNECT (LeaveRequest.Action)
    assert not alice_client.of("leave")
    assert pool.workers[0].find("unpipe") == [("unpipe", track, f"{track}>w1")]
    assert room.pipes.pipes == {} and room.workers() == [0]

    rooms.on_worker_died(0)  # the home goes too: nobody is left, the room goes
    await settle()
    assert "r1" not in rooms.rooms
