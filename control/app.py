"""Composition root of the control process: settings -> Supervisor + aiohttp application, run until a signal.

This module only wires parts together: the :class:`~control.workers.supervisor.Supervisor`, the
:class:`~control.rtc.rooms.RoomManager` over it (its room settings with the API keys, the SDP layer of
``control.rtc.negotiation``, the workers' notifications), the typed application keys of ``control.service.keys``, and
the routes: ``GET /healthz`` (control/service/health.py), LiveKit's signaling (control/service/signaling.py) and
Twirp RoomService (control/service/twirp.py), ``GET /metrics`` (control/service/metrics.py), the page to try it at
``GET /`` with ``/dev/token`` in development mode (control/service/demo.py) and, when configured, the webhook sender
(control/service/webhooks.py), all on the same port, behind the connection guard (control/service/connections.py:
header deadline, caps on unauthenticated connections, fd reserve). SIGTERM or SIGINT drains
(control/service/drain.py): no new join, the calls go on until their participants leave or ``drain_timeout``
passes, then whoever is left gets a LeaveRequest; a second signal stops at once. With ``redis`` set the node joins
a cluster (control/cluster/node.py) once its workers run, says ``draining`` when the drain starts and leaves
after the rooms are closed. Then the HTTP server stops, then
the workers, then the runtime directory is removed. While it serves, the garbage collector is paced
(router/collector.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import signal

from aiohttp import web

from control.cluster.node import CLUSTER_KEY, ClusterNode, new_node_id
from control.config import Settings
from control.rtc.participant import LiveKitNegotiator
from control.rtc.rooms import RoomManager, WorkerPool
from control.rtc.worker_pool import SupervisorPool, attach_supervisor
from control.service import signaling, twirp
from control.service.connections import ConnectionGuard, GuardedSite, mark_admitted, raise_fd_limit
from control.service.demo import add_demo
from control.service.drain import DRAIN_KEY, add_drain, drain_rooms
from control.service.health import healthz
from control.service.keys import GUARD_KEY, MANAGER_KEY, SETTINGS_KEY, SUPERVISOR_KEY
from control.service.metrics import add_metrics
from control.service.webhooks import add_webhooks
from control.workers.supervisor import Supervisor
from control.workers.worker_client import quiet_events
from router.collector import paced_collector

log = logging.getLogger("control.app")


def build_app(settings: Settings, supervisor: Supervisor) -> web.Application:
    """The aiohttp application: health, LiveKit signaling (``/rtc``, validate) and the Twirp RoomService; the
    supervisor's lifetime is managed by the caller."""
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app[SUPERVISOR_KEY] = supervisor
    guard = ConnectionGuard(header_timeout_s=settings.header_timeout_s,
                            max_pending_connections=settings.max_pending_connections,
                            max_pending_per_address=settings.max_pending_per_address,
                            fd_reserve=settings.fd_reserve)
    app[GUARD_KEY] = guard
    app.on_response_prepare.append(functools.partial(_admit, guard))
    app.router.add_get("/healthz", healthz)
    room_settings = dataclasses.replace(settings.room, keys=dict(settings.keys),
                                        turn_servers=settings.turn_servers)
    node_id = new_node_id() if settings.redis is not None else room_settings.node_id
    room_settings = dataclasses.replace(room_settings, node_id=node_id)
    pool: WorkerPool = SupervisorPool(supervisor)
    if settings.redis is not None:  # other nodes' workers too (a room spanning nodes, control/cluster/remote_pool.py)
        from control.cluster.remote_pool import ClusterPool

        pool = ClusterPool(pool, settings)
    manager = RoomManager(pool, LiveKitNegotiator(), room_settings)
    attach_supervisor(manager, supervisor)
    add_livekit(app, manager)
    if settings.redis is not None:
        add_cluster(app, settings, manager, supervisor, node_id)
    add_drain(app)
    add_metrics(app, supervisor, manager)
    add_demo(app, settings.livekit_client_url)
    if settings.webhook.urls:
        add_webhooks(app, manager.events, settings.webhook.urls, settings.webhook.api_key, settings.webhook.api_secret)
    return app


def add_livekit(app: web.Application, manager: RoomManager) -> None:
    """LiveKit's surface over ``manager``: ``/rtc`` and its companions, the Twirp RoomService, and every room
    closed on shutdown."""
    app[MANAGER_KEY] = manager
    signaling.add_routes(app)
    twirp.add_routes(app)
    app.on_shutdown.append(_close_rooms)


def add_cluster(app: web.Application, settings: Settings, manager: RoomManager, supervisor: Supervisor,
                node_id: str) -> ClusterNode:
    """This node's membership in the cluster of ``settings.redis`` (control/cluster/): joins relayed to room owners,
    the RoomService answering for the whole cluster, rooms spanning nodes. Started and stopped by :func:`serve`."""
    from control.cluster.remote_pool import ClusterPool
    from control.service.twirp_cluster import make_router

    cluster = ClusterNode(settings, manager, supervisor, node_id)
    if isinstance(manager.pool, ClusterPool):
        cluster.bind_pool(manager.pool)
    for client in supervisor.clients:  # notifications about objects made for other nodes' rooms go back to them
        client.on_notification(lambda event, target, body, wid=client.worker_id:
                               cluster.media_host.on_notification(wid, event, target, body))
    cluster.run_session = functools.partial(signaling.run_session, manager)
    app[CLUSTER_KEY] = cluster
    app[twirp.ROUTER_KEY] = make_router(cluster, manager)
    return cluster


async def _admit(guard: ConnectionGuard, request: web.Request, response: web.StreamResponse) -> None:
    mark_admitted(guard, request, response)


async def _close_rooms(app: web.Application) -> None:
    await app[MANAGER_KEY].close()


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    """Runs the control process until ``stop`` is set or SIGINT/SIGTERM arrives, then drains (a second signal
    stops at once); returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    stop_now = asyncio.Event()

    def on_signal() -> None:
        (stop_now if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    fd_limit = raise_fd_limit()
    log.info("open-file limit %d (%d kept in reserve)", fd_limit, settings.fd_reserve)
    supervisor = Supervisor(workers=settings.workers, node_ip=",".join(settings.node_ips), bind_ip=settings.bind_ip,
                            ice_tcp=settings.ice_tcp,
                            rtc_port_base=settings.rtc_port_base, log_level=settings.log_level,
                            gso=settings.gso, hmac_batch=settings.hmac_batch, srtp_crypto=settings.srtp_crypto,
                            congestion_control=settings.congestion_control, rx_hold_ms=settings.rx_hold_ms,
                            quiet_events=quiet_events(settings.log_level))
    app = build_app(settings, supervisor)
    cluster = app.get(CLUSTER_KEY)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    code = 0
    try:
        site = GuardedSite(runner, settings.http_host, settings.http_port, app[GUARD_KEY], access_log=None)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on http://%s:%d: %s", settings.http_host, settings.http_port,
                      exc.strerror)
            return 1
        log.info("listening on http://%s:%d", settings.http_host, settings.http_port)
        await supervisor.start()
        if cluster is not None:
            try:
                await cluster.start()
            except Exception as exc:  # redis.exceptions.ConnectionError and kin
                log.error("cannot join the cluster: %s", exc)
                return 1
        with paced_collector():  # router/collector.py: what is alive now is never walked again
            await stop.wait()
        app = runner.app
        if cluster is not None:
            await cluster.set_draining()
        await drain_rooms(app[DRAIN_KEY], app[MANAGER_KEY], settings.drain_timeout, stop_now)
        log.info("shutting down")
        await app[MANAGER_KEY].close()  # a LeaveRequest to each participant still there
    finally:
        if cluster is not None:
            await cluster.stop()
        await runner.cleanup()
        await supervisor.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code


def run(settings: Settings) -> int:
    """Process entry point: serve on uvloop."""
    import uvloop

    return uvloop.run(serve(settings))
