"""``GET /healthz``: the workers' state and usage counters, read from the Supervisor."""

from __future__ import annotations

from aiohttp import web

from control.service.keys import MANAGER_KEY, SUPERVISOR_KEY
from control.workers import procstat


async def healthz(request: web.Request) -> web.Response:
    """Health: ``{"status": "ok"|"degraded", "workers": [{"id", "pid", "core", "udp_port", "alive",
    "restarts", ..., "usage": {"cpu_s", "run_s", "rss_bytes", "udp_drops", "udp_rx_queue_bytes"}}],
    "host": {"cpu_ticks", "steal_ticks"}, "rooms": [{"name", "sid", "home_worker", "workers", "participants":
    {identity: worker}, "pipes": [{"producer", "source", "dest", "users"}]}]}``: ``usage`` and ``host`` are cumulative
    kernel counters (``null`` for a worker that is not running), which ``python -m bench --url`` samples before and
    after a measurement; ``rooms`` says which workers each room and each participant use (control/rtc/spread.py)."""
    supervisor = request.app[SUPERVISOR_KEY]
    manager = request.app.get(MANAGER_KEY)
    rooms = [] if manager is None else [
        {"name": room.name, "sid": room.sid, "home_worker": room.worker_id, "workers": room.workers(),
         "participants": {p.identity: room.worker_of.get(p.sid, room.worker_id) for p in room.participants.values()},
         "pipes": room.pipes.snapshot()}
        for room in manager.rooms.values() if not room.closed]
    return web.json_response({"status": supervisor.status, "workers": supervisor.snapshot(),
                              "host": procstat.host_usage(), "rooms": rooms})
