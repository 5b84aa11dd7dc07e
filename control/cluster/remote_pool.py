"""The owner's side of a room spanning nodes: other nodes' workers as workers of this node's rooms.

:class:`ClusterPool` is the rooms' worker pool (control/rtc/rooms.py ``OffHostPool``) in a cluster: this node's own
workers as before, plus *remote workers*, each a worker of another node known here under a number from
``REMOTE_BASE`` up. A remote worker's MediaClient sends every request over the bus (:class:`BusWorker`, message
``media``); its notifications come back as ``media_event`` and go to the rooms as any worker's would. So a
participant placed there runs the same code as on a local worker: its transports, consumers and data channels live
on the other node's worker, its signaling stays here.

``cluster.spread_nodes`` decides when a room's new participant goes to another node (only for rooms whose
``room.spread`` is not ``never``): ``always`` puts it on the serving node holding the fewest of the room's
participants (ties stay here: the first participant of a room stays with its owner), ``auto`` on the least-loaded
other node once this node's workers use more than ``AUTO_CPU`` of its CPUs and that node at least ``AUTO_MARGIN``
less. The other node picks its worker (``media_place``). A pipe toward or from a worker of another node carries the
node's address and the pair's SRTP keys (control/cluster/pipe_keys.py). When a node's entry expires, its remote
workers die for the rooms here (their sessions reconnect).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from control.cluster.bus import Bus
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
from control.cluster.pipe_keys import pair_srtp
from control.cluster.registry import NodeInfo
from control.config import Settings
from control.rtc.media import MediaClient
from control.rtc.spread import PipeEnd, PipeEnds, local_ends
from control.workers.placement import WorkerLoad
from control.workers.worker_client import WorkerError

if TYPE_CHECKING:
    from control.cluster.node import ClusterNode
    from control.rtc.rooms import RoomManager, WorkerPool

log = logging.getLogger("control.cluster.remote_pool")

REMOTE_BASE = 1 << 20  # remote workers' numbers start here; local workers are numbered from 0
AUTO_CPU = 0.7
AUTO_MARGIN = 0.2


@dataclass(frozen=True)
class RemoteWorker:
    """A worker of another node: where its node's control listens, and where pipes reach it."""

    node: str
    worker: int
    ip: str
    port: int


class BusWorker:
    """``control.rtc.media.RequestSender`` for a remote worker: each request is a ``media`` call to its node."""

    def __init__(self, bus: Bus, owner: str, remote: RemoteWorker) -> None:
        self.bus = bus
        self.owner = owner
        self.remote = remote

    async def request(self, method: str, target_id: str, body: dict[str, Any], timeout: float = 5.0
                      ) -> dict[str, Any]:
        call = MediaCall(owner=self.owner, worker=self.remote.worker, method=method, target=target_id,
                         body=pack(body))
        answer = MediaAnswer.from_wire(await self.bus.call(self.remote.node, MEDIA, call.to_wire(), timeout))
        if answer.error:
            raise WorkerError(answer.error, answer.reason)
        return unpack(answer.body) if answer.body else {}


def choose_node(mode: str, this: str, nodes: list[NodeInfo], members: Mapping[str, int]) -> str:
    """The node for a room's new participant (``this`` = the owner; ``members`` = the room's participants per
    node)."""
    serving = [n for n in nodes if n.state == "serving" or n.id == this]
    if mode == "always":
        return min(serving, key=lambda n: (members.get(n.id, 0), n.id != this, n.id)).id if serving else this
    if mode == "auto":
        own = next((n for n in nodes if n.id == this), None)
        others = [n for n in serving if n.id != this]
        if own is not None and others and own.cpu > AUTO_CPU:
            best = min(others, key=lambda n: (n.cpu, n.id))
            if best.cpu <= own.cpu - AUTO_MARGIN:
                return best.id
    return this


class ClusterPool:
    """This node's workers and the remote workers its rooms use (``control.rtc.rooms.OffHostPool``)."""

    def __init__(self, local: WorkerPool, settings: Settings) -> None:
        self.local = local
        self.mode = settings.cluster.spread_nodes
        self.node_ip = settings.node_ip
        self.node: ClusterNode | None = None  # bound by ClusterNode
        self.manager: RoomManager | None = None
        self.remote: dict[int, RemoteWorker] = {}
        self._numbers: dict[tuple[str, int], int] = {}
        self._next = REMOTE_BASE

    def bind(self, node: ClusterNode, manager: RoomManager) -> None:
        self.node = node
        self.manager = manager
        node.handlers[EVENT] = self.on_event

    # ------------------------------------------------------------------------------------ WorkerPool

    def loads(self, rooms_per_worker: Mapping[int, int]) -> list[WorkerLoad]:
        return self.local.loads(rooms_per_worker)

    def media(self, worker_id: int) -> Any:
        remote = self.remote.get(worker_id)
        if remote is None:
            return self.local.media(worker_id)
        assert self.node is not None
        return MediaClient(BusWorker(self.node.bus, self.node.id, remote))

    def udp_port(self, worker_id: int) -> int:
        remote = self.remote.get(worker_id)
        return remote.port if remote is not None else self.local.udp_port(worker_id)

    # ---------------------------------------------------------------------------------- OffHostPool

    def number(self, node: str, worker: int, ip: str, port: int) -> int:
        """The number of a remote worker here (the same for the same worker)."""
        number = self._numbers.get((node, worker))
        if number is None:
            number = self._numbers[(node, worker)] = self._next
            self._next += 1
        self.remote[number] = RemoteWorker(node, worker, ip, port)
        return number

    async def place_off_host(self, room: str, router_id: str, members: Mapping[int, int]) -> int | None:
        """A worker of another node for a new participant of ``room``, or None to place it here (also when the
        chosen node does not answer)."""
        if self.mode == "never" or self.node is None:
            return None
        per_node: dict[str, int] = {}
        for worker, count in members.items():
            node = self.remote[worker].node if worker in self.remote else self.node.id
            per_node[node] = per_node.get(node, 0) + count
        target = choose_node(self.mode, self.node.id, await self.node.registry.nodes(), per_node)
        if target == self.node.id:
            return None
        for worker in members:  # the room already has a worker there
            if worker in self.remote and self.remote[worker].node == target:
                return worker
        request = PlaceRequest(owner=self.node.id, room=room, router_id=router_id)
        try:
            answer = await self.node.bus.call(target, PLACE, request.to_wire())
            reply = PlaceReply.from_wire(answer)
        except Exception as exc:  # NodeUnavailable, or the node had no worker: the participant stays here
            log.warning("room %s: node %s took no participant (%r); placed here", room, target, exc)
            return None
        number = self.number(target, reply.worker, reply.ip, reply.port)
        log.info("room %s: a participant on node %s worker %d (%s:%d)", room, target, reply.worker, reply.ip,
                 reply.port)
        return number

    def _address(self, worker_id: int) -> tuple[str, str, int]:
        """(node, ip, port) of a worker."""
        remote = self.remote.get(worker_id)
        if remote is not None:
            return remote.node, remote.ip, remote.port
        assert self.node is not None
        return self.node.id, self.node_ip, self.local.udp_port(worker_id)

    async def pipe_ends(self, source: int, dest: int) -> PipeEnds:
        """Both ends of a pipe; between two nodes with their addresses and the pair's SRTP keys."""
        source_node, source_ip, source_port = self._address(source)
        dest_node, dest_ip, dest_port = self._address(dest)
        if source_node == dest_node:
            return local_ends(self.udp_port, source, dest)
        assert self.node is not None
        srtp = await pair_srtp(self.node.redis, f"{source_ip}:{source_port}", f"{dest_ip}:{dest_port}")
        return PipeEnds(PipeEnd(dest_port, dest_ip, srtp), PipeEnd(source_port, source_ip, srtp.reversed()))

    # ----------------------------------------------------------------------------------- from the bus

    async def on_event(self, body: dict[str, Any]) -> None:
        """A remote worker's notification (``media_event``), handed to the rooms as a local worker's."""
        event = MediaEvent.from_wire(body)
        number = self._numbers.get((event.node, event.worker))
        if number is not None and self.manager is not None:
            self.manager.on_notification(number, event.event, event.target, unpack(event.body))

    async def check_nodes(self) -> None:
        """Remote workers of nodes whose entry expired die for the rooms here."""
        if self.node is None or self.manager is None:
            return
        for node in sorted({r.node for r in self.remote.values()}):
            if await self.node.registry.alive(node):
                continue
            for number in [n for n, r in self.remote.items() if r.node == node]:
                log.warning("node %s is gone: its worker %d leaves the rooms here", node, self.remote[number].worker)
                del self.remote[number]
                self.manager.on_worker_died(number)
            for key in [k for k in self._numbers if k[0] == node]:
                del self._numbers[key]
