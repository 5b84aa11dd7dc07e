"""A room over several workers (control/rtc/spread.py): where participants go under each ``spread`` mode, and the
life of the room's pipes: one per (producer, destination worker), opened once for concurrent first subscribers,
closed with the last one, with the producer, or toward and from a dead worker."""

from __future__ import annotations

import asyncio
from typing import Any

from control.rtc.codecs import Codec
from control.rtc.negotiation import TrackPlan
from control.rtc.spread import PipeEnds, RoomPipes, SpreadPolicy, local_ends
from control.workers.placement import WorkerLoad

TRACK = TrackPlan(mid="1", kind="video", codecs=[Codec("VP8", 96, 90000)], rtx_apt={97: 96},
                  encodings=[("q", 0, 0), ("h", 0, 0), ("f", 0, 0)], extensions={}, msid=None, cname=None,
                  id_map=bytes(256), mid_id=1)


def loads(*scores: tuple[int, int]) -> list[WorkerLoad]:
    """(transports, consumers) per worker, every worker available."""
    return [WorkerLoad(i, True, transports=t, consumers=c) for i, (t, c) in enumerate(scores)]


def test_never_keeps_everyone_at_home() -> None:
    assert SpreadPolicy("never").place(0, {0: 50}, loads((100, 1000), (0, 0))) == 0


def test_always_alternates_over_the_workers_starting_at_home() -> None:
    policy = SpreadPolicy("always")
    members: dict[int, int] = {}
    placed = []
    for _ in range(4):
        worker = policy.place(1, members, loads((0, 0), (0, 0)))
        members[worker] = members.get(worker, 0) + 1
        placed.append(worker)
    assert placed == [1, 0, 1, 0]


def test_auto_spills_once_home_carries_more_than_its_share() -> None:
    policy = SpreadPolicy("auto", share=0.6)
    assert policy.place(0, {0: 100}, loads((200, 400), (100, 0))) == 1  # 400 of 500: 0.8 > 0.6 -> spill
    assert policy.place(0, {0: 100}, loads((200, 400), (100, 0), (20, 0))) == 2  # the least-loaded worker
    assert policy.place(0, {0: 100}, loads((300, 0), (200, 0))) == 0  # 300 of 500: 0.6 is not more than the share


def test_auto_keeps_a_small_room_at_home_whatever_the_share() -> None:
    assert SpreadPolicy("auto", share=0.5).place(0, {0: 3}, loads((6, 4), (0, 0))) == 0  # 8 of 8, below the floor


def test_a_single_or_unavailable_worker_keeps_the_home() -> None:
    policy = SpreadPolicy("always")
    assert policy.place(0, {0: 3}, loads((0, 0))) == 0
    assert policy.place(0, {0: 3}, [WorkerLoad(0, True), WorkerLoad(1, False)]) == 0


class FakeMedia:
    """Records every pipe request of every worker; ``dead`` workers fail theirs."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.dead: set[int] = set()
        self.gate: asyncio.Event | None = None

    def of(self, worker: int) -> WorkerMedia:
        return WorkerMedia(self, worker)


class WorkerMedia:
    def __init__(self, log: FakeMedia, worker: int) -> None:
        self.log = log
        self.worker = worker

    async def _record(self, *call: Any) -> None:
        if self.log.gate is not None:
            await self.log.gate.wait()
        if self.worker in self.log.dead:
            raise ConnectionError("worker is dead")
        self.log.calls.append((self.worker, *call))

    async def pipe(self, producer_id: str, pipe_id: str, *, peer_port: int, ssrcs: list[tuple[int, int]],
                   track: TrackPlan) -> None:
        await self._record("pipe", producer_id, pipe_id, peer_port, len(ssrcs))

    async def unpipe(self, producer_id: str, pipe_id: str) -> None:
        await self._record("unpipe", producer_id, pipe_id)

    async def produce_pipe(self, router_id: str, producer_id: str, *, peer_port: int,
                           ssrcs: list[tuple[int, int]], track: TrackPlan) -> None:
        await self._record("produce_pipe", router_id, producer_id, peer_port, len(ssrcs))

    async def close_producer(self, producer_id: str) -> None:
        await self._record("close_producer", producer_id)


def pipes(media: FakeMedia) -> RoomPipes:
    ssrcs = iter(range(1000, 2000))

    async def ends(source: int, dest: int) -> PipeEnds:
        return local_ends(lambda w: 7882 + w, source, dest)

    return RoomPipes("RM_1", media.of, ends, lambda: next(ssrcs))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_pipe_per_producer_and_worker_shared_and_closed_with_the_last_user() -> None:
    media = FakeMedia()
    room = pipes(media)
    media.gate = asyncio.Event()
    first = asyncio.ensure_future(room.ensure("TR_v", TRACK, 0, 1, "PA_a"))
    second = asyncio.ensure_future(room.ensure("TR_v", TRACK, 0, 1, "PA_b"))
    await settle()
    media.gate.set()
    await asyncio.gather(first, second)
    await room.ensure("TR_v", TRACK, 0, 0, "PA_c")  # a subscriber on the producer's own worker: no pipe
    assert media.calls == [(1, "produce_pipe", "RM_1", "TR_v", 7882, 3), (0, "pipe", "TR_v", "TR_v>w1", 7883, 3)]
    room.release("TR_v", 1, "PA_a")
    await settle()
    assert len(media.calls) == 2
    room.release("TR_v", 1, "PA_b")
    await settle()
    assert media.calls[2:] == [(0, "unpipe", "TR_v", "TR_v>w1"), (1, "close_producer", "TR_v")]
    assert room.pipes == {}


async def test_a_pipe_closes_with_its_producer_and_reopens_after_the_close() -> None:
    media = FakeMedia()
    room = pipes(media)
    await room.ensure("TR_v", TRACK, 0, 1, "PA_a")
    room.producer_gone("TR_v")
    await room.ensure("TR_v", TRACK, 0, 1, "PA_a")  # waits for the close before opening again
    kinds = [call[1] for call in media.calls]
    assert kinds == ["produce_pipe", "pipe", "unpipe", "close_producer", "produce_pipe", "pipe"]


async def test_a_dead_worker_loses_its_pipes_and_the_others_keep_theirs() -> None:
    media = FakeMedia()
    room = pipes(media)
    await room.ensure("TR_from0", TRACK, 0, 1, "PA_b")  # toward the worker that dies
    await room.ensure("TR_from1", TRACK, 1, 0, "PA_a")  # from it
    await room.ensure("TR_from0", TRACK, 0, 2, "PA_c")  # neither
    media.calls.clear()
    media.dead.add(1)
    room.worker_died(1)
    await settle()
    assert sorted(media.calls) == [(0, "close_producer", "TR_from1"), (0, "unpipe", "TR_from0", "TR_from0>w1")]
    assert list(room.pipes) == [("TR_from0", 2)]
    media.dead.clear()
    await room.ensure("TR_from0", TRACK, 0, 1, "PA_b2")  # toward the respawned worker
    assert media.calls[-2:] == [(1, "produce_pipe", "RM_1", "TR_from0", 7882, 3),
                                (0, "pipe", "TR_from0", "TR_from0>w1", 7883, 3)]


async def test_a_failed_open_leaves_no_pipe() -> None:
    media = FakeMedia()
    media.dead.add(1)
    room = pipes(media)
    try:
        await room.ensure("TR_v", TRACK, 0, 1, "PA_a")
    except ConnectionError:
        pass
    else:
        raise AssertionError("the open should fail")
    assert room.pipes == {}
