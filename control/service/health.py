"""``GET /healthz``: the workers' state and usage counters, read from the Supervisor."""

from __future__ import annotations

from aiohttp import web

from control.service.drain import is_draining
from control.service.keys import SUPERVISOR_KEY
from control.workers import procstat


async def healthz(request: web.Request) -> web.Response:
    """Health: ``{"status": "ok"|"degraded"|"draining", "workers": [{"id", "pid", "core", "udp_port", "alive",
    "restarts", ..., "usage": {"cpu_s", "run_s", "rss_bytes", "udp_drops", "udp_rx_queue_bytes"}}],
    "host": {"cpu_ticks", "steal_ticks"}}``: ``usage`` and ``host`` are cumulative kernel counters (``null`` for a
    worker that is not running), which ``python -m bench --url`` samples before and after a measurement. While the
    server drains (after SIGTERM) the status is ``draining`` and the HTTP status 503."""
    supervisor = request.app[SUPERVISOR_KEY]
    draining = is_draining(request.app)  # "draining" with 503 after SIGTERM (control/service/drain.py)
    return web.json_response({"status": "draining" if draining else supervisor.status,
                              "workers": supervisor.snapshot(), "host": procstat.host_usage()},
                             status=503 if draining else 200)
