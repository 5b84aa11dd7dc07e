"""The hosting side of a room spanning nodes: this node's workers hold part of a room owned by another node.

The owner asks for a worker (``media_place``: this node picks its least-loaded one) and then sends that worker's
requests (``media``), which go to the worker unchanged; this node only keeps a stub of the room's media: which
MediaRouters it holds for which owner, and which of their objects (transports, consumers, data producers) the owner
made, so that the worker's notifications about them go back to the owner (``media_event``, in order, one sender per
owner). A MediaRouter closed by its owner is forgotten; when the owner's entry expires, every MediaRouter it had
here is closed (its transports and piped producers go with it). Messages: control/cluster/media_bus.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from control.cluster.bus import Bus, Handler
from control.cluster.media_bus import (
    EVENT,
    MEDIA,
    PLACE,
    MediaAnswer,
    MediaCall,
    MediaEvent,
    PlaceReply,
    PlaceRequest,
    pack,
    unpack,
)
from control.cluster.registry import NodeRegistry
from control.workers.placement import choose_worker
from control.workers.worker_client import WorkerDied, WorkerError
from router.protocol import Method

log = logging.getLogger("control.cluster.media_host")

# The requests an owner may send: everything about media, nothing about the worker process itself.
ALLOWED = frozenset(m.value for m in Method) - {Method.WORKER_DUMP.value, Method.WORKER_CLOSE.value}
# Request body fields naming an object whose notifications go to the owner.
NOTIFIED_IDS = ("transport_id", "consumer_id", "data_producer_id")
CLOSES = frozenset({Method.TRANSPORT_CLOSE.value, Method.CONSUMER_CLOSE.value, Method.DATA_PRODUCER_CLOSE.value})


@dataclass(frozen=True)
class Stub:
    """A MediaRouter of an owner's room on one of this node's workers."""

    owner: str
    worker: int
    router_id: str


@dataclass
class Hosted:
    """What this node holds for other nodes' rooms."""

    routers: set[Stub] = field(default_factory=set)
    targets: dict[str, Stub] = field(default_factory=dict)  # object id -> its router


class MediaHost:
    """Serves ``media_place`` and ``media`` for other nodes; forwards their objects' notifications."""

    def __init__(self, node_id: str, node_ip: str, bus: Bus, registry: NodeRegistry, manager: Any,
                 supervisor: Any) -> None:
        self.node_id = node_id
        self.node_ip = node_ip
        self.bus = bus
        self.registry = registry
        self.manager = manager  # control.rtc.rooms.RoomManager: its pool's loads() and udp_port()
        self.supervisor = supervisor  # control.workers.supervisor.Supervisor: client(worker id)
        self.hosted = Hosted()
        self._queues: dict[str, asyncio.Queue[MediaEvent]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}

    def handlers(self) -> dict[str, Handler]:
        return {PLACE: self.place, MEDIA: self.call}

    async def place(self, body: dict[str, Any]) -> dict[str, Any]:
        request = PlaceRequest.from_wire(body)
        pool = self.manager.pool
        worker = choose_worker(pool.loads(self.manager.rooms_per_worker()))
        log.info("room %s of node %s: a participant on worker %d", request.room, request.owner, worker)
        return PlaceReply(worker=worker, ip=self.node_ip, port=pool.udp_port(worker)).to_wire()

    def worker(self, worker_id: int) -> Any:
        return self.supervisor.client(worker_id)

    async def call(self, body: dict[str, Any]) -> dict[str, Any]:
        call = MediaCall.from_wire(body)
        if call.method not in ALLOWED:
            return MediaAnswer(error="Forbidden", reason=f"{call.method} is not a media request").to_wire()
        request = unpack(call.body)
        try:
            reply = await self.worker(call.worker).request(call.method, call.target, request)
        except WorkerError as exc:
            return MediaAnswer(error=exc.error, reason=exc.reason).to_wire()
        except (WorkerDied, TimeoutError, ValueError) as exc:
            return MediaAnswer(error=type(exc).__name__, reason=str(exc)).to_wire()
        self._record(call, request)
        return MediaAnswer(body=pack(reply)).to_wire()

    def _record(self, call: MediaCall, request: dict[str, Any]) -> None:
        if call.method == Method.MEDIA_ROUTER_CREATE:
            self.hosted.routers.add(Stub(call.owner, call.worker, call.target))
        elif call.method == Method.MEDIA_ROUTER_CLOSE:
            self._forget(Stub(call.owner, call.worker, call.target))
        elif call.method in CLOSES:
            self.hosted.targets.pop(call.target, None)
        else:
            stub = self._router_of(call)
            if stub is not None:
                for name in NOTIFIED_IDS:
                    if isinstance(request.get(name), str):
                        self.hosted.targets[request[name]] = stub

    def _router_of(self, call: MediaCall) -> Stub | None:
        """The owner's router a request is about: the target itself or the router of the targeted object."""
        stub = Stub(call.owner, call.worker, call.target)
        return stub if stub in self.hosted.routers else self.hosted.targets.get(call.target)

    def _forget(self, stub: Stub) -> None:
        self.hosted.routers.discard(stub)
        for target in [t for t, s in self.hosted.targets.items() if s == stub]:
            del self.hosted.targets[target]

    # --------------------------------------------------------------------------------- notifications

    def on_notification(self, worker: int, event: str, target: str, body: dict[str, Any]) -> None:
        stub = self.hosted.targets.get(target)
        if stub is None or stub.worker != worker:
            return
        queue = self._queues.get(stub.owner)
        if queue is None:
            queue = self._queues[stub.owner] = asyncio.Queue()
            self._senders[stub.owner] = asyncio.get_running_loop().create_task(self._send(stub.owner, queue))
        queue.put_nowait(MediaEvent(node=self.node_id, worker=worker, event=event, target=target, body=pack(body)))

    async def _send(self, owner: str, queue: asyncio.Queue[MediaEvent]) -> None:
        while True:
            event = await queue.get()
            try:
                await self.bus.send(owner, EVENT, event.to_wire())
            except Exception as exc:  # the owner is gone: check_owners cleans up
                log.debug("media event to %s: %r", owner, exc)

    # ----------------------------------------------------------------------------------------- owners

    async def check_owners(self) -> None:
        """Closes the MediaRouters of owners whose entry expired."""
        for owner in sorted({s.owner for s in self.hosted.routers}):
            if await self.registry.alive(owner):
                continue
            for stub in [s for s in self.hosted.routers if s.owner == owner]:
                log.warning("node %s is gone: closing its MediaRouter %s on worker %d", owner, stub.router_id,
                            stub.worker)
                self._forget(stub)
                try:
                    await self.worker(stub.worker).request(Method.MEDIA_ROUTER_CLOSE, stub.router_id, {})
                except Exception as exc:
                    log.debug("close %s: %r", stub.router_id, exc)
            sender = self._senders.pop(owner, None)
            if sender is not None:
                sender.cancel()
            self._queues.pop(owner, None)

    async def stop(self) -> None:
        for sender in self._senders.values():
            sender.cancel()
        await asyncio.gather(*self._senders.values(), return_exceptions=True)
        self._senders.clear()
