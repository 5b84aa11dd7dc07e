"""This node in a cluster: joins at start, heartbeats its entry and its rooms, routes joins, leaves at stop.

:class:`ClusterNode` composes the parts of the package: the registry entry (control/cluster/registry.py) and the
room keys (control/cluster/ownership.py) are refreshed every third of ``cluster.ttl_s``; a join for a room is
served here when this node owns the room or wins it (control/cluster/selector.py picks the node for a new room),
else relayed to its owner (control/cluster/relay.py); requests from other nodes arrive on the bus
(control/cluster/bus.py): ``connect`` (a relayed join) and ``room_service`` (a RoomService call for a room owned
here, served by ``room_service``), and for a room spanning nodes ``media_place``/``media`` (this node's workers
holding part of another node's room, control/cluster/media_host.py) and ``media_event`` (the notifications of the
other nodes' workers this node's rooms use, control/cluster/remote_pool.py). A room's key is released when the room
closes here; at drain the entry says ``draining`` (no new room comes here) and at stop it is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from livekit.protocol import models, rtc

from control.auth import AuthError, Claims, require_join, verify_token
from control.cluster.bus import Bus, Handler
from control.cluster.client import connect
from control.cluster.load import LoadSampler
from control.cluster.media_host import MediaHost
from control.cluster.ownership import RoomOwnership
from control.cluster.registry import NodeInfo, NodeRegistry
from control.cluster.relay import Frames, relay_client, serve_relayed
from control.cluster.remote_pool import ClusterPool
from control.cluster.selector import NoNodeAvailable, select_node
from control.config import Settings
from control.rtc import events as ev
from control.rtc import lk_messages as lk
from control.rtc.rooms import RoomManager
from control.service.outbox import WebSocketSink

log = logging.getLogger("control.cluster.node")

SessionRunner = Callable[[Claims, Mapping[str, str], WebSocketSink, Frames], Awaitable[None]]
Reason = models.DisconnectReason


def new_node_id() -> str:
    return "ND_" + uuid.uuid4().hex[:12]


class ClusterNode:
    """One node's membership: its entry, its rooms' keys, its bus; the routing decisions for joins and calls."""

    def __init__(self, settings: Settings, manager: RoomManager, supervisor: Any, node_id: str) -> None:
        assert settings.redis is not None
        self.settings = settings
        self.manager = manager
        self.id = node_id
        self.ttl_s = settings.cluster.ttl_s
        self.redis: Any = connect(settings.redis)
        self.registry = NodeRegistry(self.redis, self.ttl_s)
        self.ownership = RoomOwnership(self.redis, node_id, self.ttl_s)
        self.load = LoadSampler(supervisor)
        self.state = "serving"
        self.run_session: SessionRunner | None = None  # control/service/signaling.py, wired by control/app.py
        self.handlers: dict[str, Handler] = {"connect": self._on_connect}
        self.bus = Bus(self.redis, node_id, self.handlers)
        self.media_host = MediaHost(node_id, settings.node_ip, self.bus, self.registry, manager, supervisor)
        self.handlers.update(self.media_host.handlers())
        self.remote_pool: ClusterPool | None = None  # the rooms' pool, when it reaches other nodes (bind_pool)
        self._beat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        manager.events.subscribe(self._on_event)

    def bind_pool(self, pool: ClusterPool) -> None:
        """The rooms' pool reaches other nodes' workers through this node's bus."""
        self.remote_pool = pool
        pool.bind(self, self.manager)

    # ---------------------------------------------------------------------------------------- life cycle

    def info(self) -> NodeInfo:
        packets_per_s, cpu = self.load.sample()
        return NodeInfo(id=self.id, ip=self.settings.node_ip, http_port=self.settings.http_port,
                        rtc_port=self.settings.rtc_port_base, cpus=self.load.cpus, state=self.state,
                        packets_per_s=round(packets_per_s, 1), cpu=round(cpu, 3),
                        rooms=len(self.manager.rooms), participants=self.manager.participant_count())

    async def start(self) -> None:
        """Joins the cluster: the entry is written, the bus listens, the heartbeat runs."""
        await self.registry.write(self.info())
        await self.bus.start()
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat())
        log.info("node %s joined the cluster (%s, node_selector %s, ttl %.0f s)", self.id,
                 self.settings.node_ip, self.settings.cluster.node_selector, self.ttl_s)

    async def set_draining(self) -> None:
        self.state = "draining"
        await self._write_entry()

    async def stop(self) -> None:
        """Leaves the cluster: no more heartbeat, the rooms' keys released, the entry deleted."""
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        await self.bus.stop()
        await self.media_host.stop()
        try:
            for name in list(self.manager.rooms):
                await self.ownership.release(name)
            await self.registry.remove(self.id)
        except Exception as exc:
            log.warning("leaving the cluster: %r", exc)
        await self.redis.aclose()
        log.info("node %s left the cluster", self.id)

    async def _write_entry(self) -> None:
        try:
            await self.registry.write(self.info())
        except Exception as exc:
            log.warning("cluster heartbeat failed: %r", exc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            await self._write_entry()
            try:
                names = [name for name, room in self.manager.rooms.items() if not room.closed]
                for name in names:
                    if not await self.ownership.refresh([name]) and await self.ownership.claim(name) != self.id:
                        log.warning("room %s is owned by another node too", name)
            except Exception as exc:
                log.warning("cluster room refresh failed: %r", exc)
            try:
                await self.media_host.check_owners()
                if self.remote_pool is not None:
                    await self.remote_pool.check_nodes()
            except Exception as exc:
                log.warning("cluster media check failed: %r", exc)

    def _on_event(self, event: ev.RoomEvent) -> None:
        if event.event == ev.ROOM_STARTED:  # mostly claimed already (a join routed here); CreateRoom forwarded here
            self._spawn(self._claim(event.room.name))
        elif event.event == ev.ROOM_FINISHED:
            self._spawn(self._release(event.room.name))

    async def _claim(self, name: str) -> None:
        owner = await self.ownership.claim(name)
        if owner != self.id:
            log.warning("room %s started here but node %s owns it", name, owner)

    async def _release(self, name: str) -> None:
        if name not in self.manager.rooms:
            await self.ownership.release(name)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------------- routing

    async def owner(self, room: str) -> str | None:
        """The live node that owns ``room``; a key naming a dead node is removed."""
        owner = await self.ownership.owner(room)
        if owner is None or owner == self.id or await self.registry.alive(owner):
            return owner
        await self.ownership.release(room, owner)
        return None

    async def place(self, room: str) -> str:
        """The node that owns ``room`` or, for a new room, the node chosen for it (claimed when it is this one)."""
        owner = await self.owner(room)
        if owner is not None:
            return owner
        try:
            target = select_node(await self.registry.nodes(), self.settings.cluster.node_selector, self.id)
        except NoNodeAvailable:
            target = None
        if target is None or target.id == self.id:
            return await self.ownership.claim(room)
        return target.id

    async def nodes(self) -> list[NodeInfo]:
        return await self.registry.nodes()

    async def relay(self, owner: str, token: str, query: Mapping[str, str], ws: web.WebSocketResponse) -> None:
        """Serves a client WebSocket whose room lives on ``owner``."""
        request = {"token": token, "query": dict(query)}
        if not await relay_client(self.redis, self.bus, self.registry, owner, self.id, request, ws):
            log.warning("owner %s of a room did not take a relayed connection: the client reconnects", owner)
            await ws.send_bytes(lk.leave(Reason.STATE_MISMATCH, rtc.LeaveRequest.Action.RECONNECT)
                                .SerializeToString())
            await ws.close()

    async def _on_connect(self, body: dict[str, Any]) -> None:
        """A join relayed by another node: served here if this node owns (or now wins) the room."""

        async def session(sink: WebSocketSink, frames: Frames) -> None:
            try:
                claims = verify_token(body["token"], self.manager.settings.keys)
                require_join(claims)
            except AuthError as exc:
                log.warning("relayed join refused: %s", exc.reason)
                sink.send(lk.leave(Reason.JOIN_FAILURE))
                return
            if self.state != "serving" and claims.room not in self.manager.rooms:
                sink.send(lk.leave(Reason.STATE_MISMATCH, rtc.LeaveRequest.Action.RECONNECT))
                return
            if await self.ownership.claim(claims.room) != self.id:
                sink.send(lk.leave(Reason.STATE_MISMATCH, rtc.LeaveRequest.Action.RECONNECT))
                return
            assert self.run_session is not None
            await self.run_session(claims, body.get("query", {}), sink, frames)

        await serve_relayed(self.redis, self.registry, body["connection"], body["node"], session)


CLUSTER_KEY = web.AppKey("cluster", ClusterNode)
