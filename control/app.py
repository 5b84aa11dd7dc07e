"""Composition root of the control process: settings -> Supervisor + aiohttp application, run until a signal.

This module only wires parts together: the :class:`~control.supervisor.Supervisor` (reachable as
``app["supervisor"]`` so that signaling code can reach the workers), ``app["settings"]``, ``GET /healthz``, and
LiveKit's signaling and Twirp RoomService (control/signaling.py), all on the same port. SIGINT/SIGTERM stop the
HTTP server, then the workers, then remove the runtime directory.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import warnings

from aiohttp import web

from control import procstat
from control.config import Settings
from control.signaling import setup_signaling
from control.supervisor import Supervisor

log = logging.getLogger("control.app")

SUPERVISOR_KEY = web.AppKey("supervisor", Supervisor)
SETTINGS_KEY = web.AppKey("settings", Settings)


def build_app(settings: Settings, supervisor: Supervisor) -> web.Application:
    """The aiohttp application: health, LiveKit signaling (``/rtc``, validate) and the Twirp RoomService; the
    supervisor's lifetime is managed by the caller."""
    app = web.Application()
    app[SUPERVISOR_KEY] = supervisor
    app[SETTINGS_KEY] = settings
    # NOTE: plain string keys too, for code that reads app["supervisor"]; aiohttp prefers AppKey and warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["supervisor"] = supervisor
        app["settings"] = settings
    app.router.add_get("/healthz", healthz)
    setup_signaling(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Health: ``{"status": "ok"|"degraded", "workers": [{"id", "pid", "core", "udp_port", "alive",
    "restarts", ..., "usage": {"cpu_s", "run_s", "rss_bytes", "udp_drops", "udp_rx_queue_bytes"}}],
    "host": {"cpu_ticks", "steal_ticks"}}``: ``usage`` and ``host`` are cumulative kernel counters (``null`` for a
    worker that is not running), which ``python -m bench --url`` samples before and after a measurement."""
    supervisor = request.app[SUPERVISOR_KEY]
    return web.json_response({"status": supervisor.status, "workers": supervisor.snapshot(),
                              "host": procstat.host_usage()})


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    """Runs the control process until ``stop`` is set or SIGINT/SIGTERM arrives; returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervisor = Supervisor(workers=settings.workers, node_ip=settings.node_ip,
                            rtc_port_base=settings.rtc_port_base, log_level=settings.log_level,
                            gso=settings.gso, hmac_batch=settings.hmac_batch, srtp_crypto=settings.srtp_crypto)
    runner = web.AppRunner(build_app(settings, supervisor), handle_signals=False, access_log=None)
    await runner.setup()
    code = 0
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on http://%s:%d: %s", settings.http_host, settings.http_port,
                      exc.strerror)
            return 1
        log.info("listening on http://%s:%d", settings.http_host, settings.http_port)
        await supervisor.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        await supervisor.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code


def run(settings: Settings) -> int:
    """Process entry point: serve on uvloop."""
    import uvloop

    return uvloop.run(serve(settings))
