"""``GET /healthz``: the workers' state and usage counters, read from the Supervisor, and the participants by path."""

from __future__ import annotations

from aiohttp import web

from control.service.keys import MANAGER_KEY, SUPERVISOR_KEY
from control.workers import procstat


async def healthz(request: web.Request) -> web.Response:
    """Health: ``{"status": "ok"|"degraded", "workers": [{"id", "pid", "core", "udp_port", "alive",
    "restarts", ..., "usage": {"cpu_s", "run_s", "rss_bytes", "udp_drops", "udp_rx_queue_bytes"}}],
    "host": {"cpu_ticks", "steal_ticks"}, "participants": {"udp", "tcp", "relay", "connecting"}}``: ``usage`` and
    ``host`` are cumulative kernel counters (``null`` for a worker that is not running), which ``python -m bench
    --url`` samples before and after a measurement; ``participants`` counts the sessions by the path their primary
    transport took (UDP, ICE-TCP, through TURN; control/rtc/participant.py ``path``)."""
    supervisor = request.app[SUPERVISOR_KEY]
    body = {"status": supervisor.status, "workers": supervisor.snapshot(), "host": procstat.host_usage()}
    manager = request.app.get(MANAGER_KEY)
    if manager is not None:
        body["participants"] = manager.paths()
    return web.json_response(body)
