"""A room that spans workers: where each participant of a room goes, and the pipes that carry the room's
producers to the workers of its subscribers.

A room keeps a *home* worker (placement's choice when it was created). :class:`SpreadPolicy` places each new
participant: ``never`` keeps everyone at home; ``always`` puts each one on the worker holding the fewest of the
room's participants (tests, and rooms known to be large); ``auto`` (the default) keeps participants at home until
the home worker carries more than ``spread_share`` of the host's load (and at least ``AUTO_MIN_SCORE``, so that small
rooms never spread), then spills them to the least-loaded worker.

:class:`RoomPipes` opens one pipe per (producer, destination worker) when the first subscriber there consumes it,
shares it among every subscriber there, and closes it with the last one or with the producer
(docs/FORWARDING.md, Pipe transports). The producer's worker is the pipe's source; the piped producer on the
destination keeps the producer's id, so a subscriber consumes it there exactly as at home. When a worker dies its
pipes are forgotten: those toward it are stopped at their source, those from it end with its publishers.

Each end of a pipe learns where the other is from :class:`PipeEnds`: on one host a UDP port; toward a worker of
another node (a room spanning hosts, control/cluster/remote_pool.py) also its address and the SRTP keys of the pair
of workers (docs/FORWARDING.md, Pipes between hosts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from control.rtc.negotiation import TrackPlan
from control.workers.placement import WorkerLoad
from router.messages import PipeSrtp

log = logging.getLogger("control.rtc.spread")

SpreadMode = Literal["auto", "always", "never"]
# auto: a home worker below this placement score (control/workers/placement.py: e.g. 100 transports and 200
# consumers) is never spilled from, so that small rooms stay on one worker whatever the share.
AUTO_MIN_SCORE = 200.0
SPREAD_MODES: tuple[str, ...] = ("auto", "always", "never")


@dataclass(frozen=True)
class SpreadPolicy:
    """Which worker a room's next participant uses."""

    mode: SpreadMode = "auto"
    share: float = 0.5  # auto: spill once the home worker carries more than this share of the host's load

    def place(self, home: int, members: Mapping[int, int], loads: Sequence[WorkerLoad]) -> int:
        """The worker for a new participant of a room at ``home`` with ``members`` (worker -> participants)."""
        available = [w for w in loads if w.available]
        if self.mode == "never" or len(available) < 2:
            return home
        if self.mode == "always":
            best = min(available, key=lambda w: (members.get(w.worker_id, 0), w.worker_id != home, w.worker_id))
            return best.worker_id
        total = sum(w.score for w in available)
        home_load = next((w for w in available if w.worker_id == home), None)
        if home_load is not None and (home_load.score < AUTO_MIN_SCORE or home_load.score / total <= self.share):
            return home
        return min(available, key=lambda w: (w.score, w.worker_id)).worker_id


class PipeMedia(Protocol):
    """The part of ``control.rtc.media.MediaClient`` pipes use."""

    async def pipe(self, producer_id: str, pipe_id: str, *, peer_port: int, ssrcs: list[tuple[int, int]],
                   track: TrackPlan, peer_ip: str = "", srtp: PipeSrtp | None = None) -> None: ...
    async def unpipe(self, producer_id: str, pipe_id: str) -> None: ...
    async def produce_pipe(self, router_id: str, producer_id: str, *, peer_port: int,
                           ssrcs: list[tuple[int, int]], track: TrackPlan, peer_ip: str = "",
                           srtp: PipeSrtp | None = None) -> None: ...
    async def close_producer(self, producer_id: str) -> None: ...


@dataclass(frozen=True)
class PipeEnd:
    """Where one end of a pipe sends: the other worker's UDP port, and off the host its address and this end's
    SRTP keys."""

    peer_port: int
    peer_ip: str = ""
    srtp: PipeSrtp | None = None

    def args(self) -> dict[str, Any]:
        """The keyword arguments of ``MediaClient.pipe``/``produce_pipe`` (none beyond the port on one host)."""
        if not self.peer_ip:
            return {"peer_port": self.peer_port}
        return {"peer_port": self.peer_port, "peer_ip": self.peer_ip, "srtp": self.srtp}


@dataclass(frozen=True)
class PipeEnds:
    """Both ends of a pipe from ``source`` to ``dest``: what each is told."""

    source: PipeEnd
    dest: PipeEnd


def local_ends(port: Callable[[int], int], source: int, dest: int) -> PipeEnds:
    """A pipe between two workers of this host."""
    return PipeEnds(PipeEnd(port(dest)), PipeEnd(port(source)))


@dataclass
class Pipe:
    """One producer piped from ``source`` to ``dest``, used by ``users`` (subscriber sids) there."""

    producer_id: str
    source: int
    dest: int
    ssrcs: list[tuple[int, int]]
    users: set[str] = field(default_factory=set)
    ready: asyncio.Future[None] | None = None

    @property
    def pipe_id(self) -> str:
        return f"{self.producer_id}>w{self.dest}"


class RoomPipes:
    """The pipes of one room."""

    def __init__(self, router_id: str, media: Callable[[int], PipeMedia],
                 ends: Callable[[int, int], Awaitable[PipeEnds]], new_ssrc: Callable[[], int]) -> None:
        self.router_id = router_id
        self.media = media
        self.ends = ends
        self.new_ssrc = new_ssrc
        self.pipes: dict[tuple[str, int], Pipe] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: dict[tuple[str, int], asyncio.Task[None]] = {}  # a pipe reopened waits for its close
        self.opened = 0
        self.closed = 0

    def workers(self) -> set[int]:
        return {w for pipe in self.pipes.values() for w in (pipe.source, pipe.dest)}

    async def ensure(self, producer_id: str, track: TrackPlan, source: int, dest: int, user: str) -> None:
        """The producer is available on ``dest`` for ``user`` (opens the pipe if it is the first user there)."""
        if source == dest:
            return
        key = (producer_id, dest)
        closing = self._closing.get(key)
        if closing is not None:
            await asyncio.shield(closing)
        pipe = self.pipes.get(key)
        if pipe is None:
            rtx = track.kind == "video" and bool(track.rtx_apt)
            ssrcs = [(self.new_ssrc(), self.new_ssrc() if rtx else 0) for _ in track.encodings]
            pipe = self.pipes[key] = Pipe(producer_id, source, dest, ssrcs)
            pipe.ready = asyncio.get_running_loop().create_future()
            try:
                ends = await self.ends(source, dest)
                # The destination first, so that the first packets find their producer.
                await self.media(dest).produce_pipe(self.router_id, producer_id, ssrcs=ssrcs, track=track,
                                                    **ends.dest.args())
                await self.media(source).pipe(producer_id, pipe.pipe_id, ssrcs=ssrcs, track=track,
                                              **ends.source.args())
            except BaseException as exc:
                if self.pipes.get(key) is pipe:
                    del self.pipes[key]
                pipe.ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                pipe.ready.exception()  # retrieved: a waiter re-raises it, nobody else needs to
                self._spawn(self._close(pipe), key)
                raise
            pipe.ready.set_result(None)
            self.opened += 1
            log.info("pipe %s: worker %d -> worker %d", pipe.pipe_id, source, dest)
        elif pipe.ready is not None and not pipe.ready.done():
            await asyncio.shield(pipe.ready)
        pipe.users.add(user)

    def release(self, producer_id: str, dest: int, user: str) -> None:
        """``user`` no longer consumes the producer on ``dest``; the last user closes the pipe."""
        pipe = self.pipes.get((producer_id, dest))
        if pipe is None:
            return
        pipe.users.discard(user)
        if not pipe.users and (pipe.ready is None or pipe.ready.done()):
            del self.pipes[(producer_id, dest)]
            self._spawn(self._close(pipe), (producer_id, dest))

    def producer_gone(self, producer_id: str) -> None:
        """The producer was closed: every pipe of it closes."""
        for key in [k for k in self.pipes if k[0] == producer_id]:
            self._spawn(self._close(self.pipes.pop(key)), key)

    def worker_died(self, worker_id: int) -> None:
        """Pipes toward the dead worker are stopped at their source; pipes from it are forgotten (their
        destination ends close with the publisher's tracks)."""
        for key, pipe in list(self.pipes.items()):
            if pipe.dest == worker_id:
                del self.pipes[key]
                self._spawn(self._unpipe(pipe))
            elif pipe.source == worker_id:
                del self.pipes[key]
                self._spawn(self._close_dest(pipe))

    async def _close(self, pipe: Pipe) -> None:
        await self._unpipe(pipe)
        await self._close_dest(pipe)

    async def _unpipe(self, pipe: Pipe) -> None:
        try:
            await self.media(pipe.source).unpipe(pipe.producer_id, pipe.pipe_id)
        except Exception as exc:  # a dead worker has nothing left to stop
            log.debug("unpipe %s: %r", pipe.pipe_id, exc)
        self.closed += 1

    async def _close_dest(self, pipe: Pipe) -> None:
        try:
            await self.media(pipe.dest).close_producer(pipe.producer_id)
        except Exception as exc:
            log.debug("close piped producer %s on worker %d: %r", pipe.producer_id, pipe.dest, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None], key: tuple[str, int] | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if key is not None:
            self._closing[key] = task
            task.add_done_callback(lambda t: self._closing.pop(key, None) if self._closing.get(key) is t else None)

    def snapshot(self) -> list[dict[str, object]]:
        return [{"producer": p.producer_id, "source": p.source, "dest": p.dest, "users": len(p.users)}
                for p in self.pipes.values()]
