"""Graceful drain: after SIGTERM the server admits no new join but keeps serving the calls it has.

While draining, ``/rtc`` and ``/rtc/validate`` answer 503 to new joins (a resume, ``reconnect=1``, of a live
session is still served, so a call whose signal connection blips goes on) and ``/healthz`` says ``draining`` with
HTTP 503, so that a load balancer sends new rooms elsewhere. :func:`drain_rooms` waits until no participant is left
or ``drain_timeout`` passes (or a second signal asks to stop at once); control/app.py then closes the rooms, which
sends each remaining participant a LeaveRequest (SERVER_SHUTDOWN), and stops the workers (docs/RELIABILITY.md,
O4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from control.rtc.rooms import RoomManager
from control.service.metrics import join_failed

log = logging.getLogger("control.service.drain")

JOIN_PATHS = ("/rtc", "/rtc/validate")
POLL_S = 0.1


class Drain:
    """Whether the server is draining (set once, never cleared)."""

    def __init__(self) -> None:
        self.draining = False
        self.started_at = 0.0

    def start(self) -> None:
        if not self.draining:
            self.draining = True
            self.started_at = time.monotonic()


DRAIN_KEY = web.AppKey("drain", Drain)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def refuse_joins_while_draining(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503 to a new join while draining; everything else (resumes, the Twirp API, metrics) goes through."""
    drain = request.app[DRAIN_KEY]
    if drain.draining and request.path in JOIN_PATHS and request.query.get("reconnect") not in ("1", "true"):
        join_failed("draining")
        return web.Response(status=503, text="server is draining", headers={"Access-Control-Allow-Origin": "*"})
    return await handler(request)


def add_drain(app: web.Application) -> Drain:
    """The application's :class:`Drain` and the middleware that refuses joins while it drains."""
    drain = Drain()
    app[DRAIN_KEY] = drain
    app.middlewares.append(refuse_joins_while_draining)
    return drain


def is_draining(app: web.Application) -> bool:
    drain = app.get(DRAIN_KEY)
    return drain is not None and drain.draining


async def drain_rooms(drain: Drain, manager: RoomManager, timeout_s: float, stop_now: asyncio.Event) -> bool:
    """Starts draining and waits until no participant is left (True), or ``timeout_s`` passed or ``stop_now`` was
    set (False)."""
    drain.start()
    count = manager.participant_count()
    log.info("draining: no new joins; waiting up to %.0f s for %d participant(s) to leave", timeout_s, count)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while manager.participant_count() > 0:
        if stop_now.is_set():
            log.info("draining: stopping at once (second signal)")
            return False
        if loop.time() >= deadline:
            log.info("draining: %.0f s passed with %d participant(s) left; telling them to leave", timeout_s,
                     manager.participant_count())
            return False
        try:
            await asyncio.wait_for(stop_now.wait(), timeout=min(POLL_S, max(0.0, deadline - loop.time())))
        except TimeoutError:
            pass
    log.info("draining: every participant left")
    return True
