"""``GET /healthz``: the workers' state and usage counters, read from the Supervisor, and the participants by path."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from control.service.drain import is_draining
from control.service.keys import GUARD_KEY, MANAGER_KEY, SUPERVISOR_KEY
from control.workers import procstat


async def healthz(request: web.Request) -> web.Response:
    """Health: ``{"status": "ok"|"degraded"|"draining", "workers": [{"id", "pid", "core", "udp_port", "alive",
    "restarts", ..., "usage": {"cpu_s", "run_s", "rss_bytes", "udp_drops", "udp_rx_queue_bytes"}}],
    "host": {"cpu_ticks", "steal_ticks"}, "participants": {"udp", "tcp", "relay", "connecting"},
    "rooms": [{"name", "sid", "home_worker", "workers", "participants": {identity: worker}, "pipes": [{"producer",
    "source", "dest", "users"}]}], "control": {"pid", "loop_lag": {"p99_ms", "max_ms", "samples", "window_s",
    "stalled_s"}, "usage": {"cpu_s", "rss_bytes"}, "connections": {...}}}``.

    ``control.loop_lag`` is control's own event-loop lag over the last minute, next to each worker's
    ``loop_lag_ms``; ``control.connections`` the HTTP connection guard's counts (control/service/connections.py,
    absent when the application runs without it). ``usage`` and ``host`` are cumulative kernel counters (``null``
    for a worker that is not running), which ``python -m bench --url`` samples before and after a measurement;
    ``participants`` counts the sessions by the path their primary transport took (UDP, ICE-TCP, through TURN;
    control/rtc/participant.py ``path``); ``rooms`` says which workers each room and each participant use
    (control/rtc/spread.py). While the server drains (after SIGTERM) the status is ``draining`` and the HTTP status
    503."""
    supervisor = request.app[SUPERVISOR_KEY]
    pid = os.getpid()
    own: dict[str, Any] = {"pid": pid, "loop_lag": supervisor.loop_lag(),
                           "usage": {"cpu_s": procstat.cpu_seconds(pid), "rss_bytes": procstat.rss_bytes(pid)}}
    guard = request.app.get(GUARD_KEY)
    if guard is not None:
        own["connections"] = guard.snapshot()
    draining = is_draining(request.app)  # "draining" with 503 after SIGTERM (control/service/drain.py)
    body: dict[str, Any] = {"status": "draining" if draining else supervisor.status,
                            "workers": supervisor.snapshot(), "host": procstat.host_usage(), "control": own}
    manager = request.app.get(MANAGER_KEY)
    if manager is not None:
        body["participants"] = manager.paths()
        body["rooms"] = [
            {"name": room.name, "sid": room.sid, "home_worker": room.worker_id, "workers": room.workers(),
             "participants": {p.identity: room.worker_of.get(p.sid, room.worker_id)
                              for p in room.participants.values()},
             "pipes": room.pipes.snapshot()}
            for room in manager.rooms.values() if not room.closed]
    return web.json_response(body, status=503 if draining else 200)
