"""Connection hygiene of the HTTP/WebSocket port: deadlines, caps on unauthenticated connections, an fd reserve.

A TCP connection is *pending* from the moment it is accepted until it is *admitted*: its ``/rtc`` request passed
the token check and was upgraded to a WebSocket (the ``101`` goes out through ``on_response_prepare``, where
:func:`mark_admitted` moves it out of the pending counts). Everything else (a silent connection, a slow request
line, ``/healthz``, Twirp, an idle keep-alive connection) stays pending while it is open. The guard enforces:

- **a header deadline** (``header_timeout_s``): a connection that has not delivered complete request headers
  within the deadline after it was accepted, or after its previous response, is closed. This is aiohttp's own
  keep-alive timer (``RequestHandler(keepalive_timeout=...)``), which aiohttp arms when the connection is made and
  which closes the connection only while no request is being handled; the upgrade follows the headers at once
  (``rtc_handler`` checks the token and upgrades without waiting for the client), and after the upgrade the
  client has ``room.join_timeout_s`` to connect its peer connection;
- **caps on pending connections**, per source address (``max_pending_per_address``) and in all
  (``max_pending_connections``);
- **a reserve of file descriptors**: at start the process raises its ``RLIMIT_NOFILE`` soft limit to the hard
  limit (:func:`raise_fd_limit`), and no new connection is accepted once the open connections plus the fds open
  at start would leave fewer than ``fd_reserve`` free, so that ``/healthz`` (which reads ``/proc``), the worker
  channels and admitted participants never fail for lack of one;
- **a clean refusal**: a connection over a cap gets ``503 Service Unavailable`` (``Retry-After: 1``, ``Connection:
  close``, the reason as text) written at once, before any of its bytes are read, and is closed.

Why a request-handler subclass: aiohttp offers the header deadline (the keep-alive timer) but no per-address or
total connection cap and no hook between ``accept()`` and request parsing; its ``Server`` calls the handler's
``connection_made``/``connection_lost``, so :class:`GuardedRequestHandler` overrides those two and nothing of the
HTTP parsing or writing, and :class:`GuardedSite` (a ``BaseSite`` like aiohttp's ``TCPSite``) listens with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

log = logging.getLogger("control.service.connections")

REFUSAL_TEMPLATE = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: {length}\r\nRetry-After: 1\r\nConnection: close\r\n"
                    "Access-Control-Allow-Origin: *\r\n\r\n{body}")
# Refusals are logged at most this often (an attack makes thousands).
_LOG_INTERVAL_S = 10.0


def raise_fd_limit() -> int:
    """Raises the RLIMIT_NOFILE soft limit to the hard limit (or to the kernel's nr_open when the hard limit is
    infinite); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft if soft != resource.RLIM_INFINITY else target)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
        return int(soft)
    return int(target)


def open_fds() -> int:
    """File descriptors this process has open now (``/proc/self/fd``)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


@dataclass(slots=True)
class _Connection:
    address: str
    admitted: bool = False


@dataclass
class ConnectionGuard:
    """The counts and the admission rule; :class:`GuardedRequestHandler` reports every connection to it."""

    header_timeout_s: float = 10.0
    max_pending_connections: int = 4096
    max_pending_per_address: int = 256
    fd_reserve: int = 512
    fd_limit: int = 0  # the RLIMIT_NOFILE soft limit; 0: read it
    fd_baseline: int = 0  # fds open before the first connection; 0: read them
    refused: dict[str, int] = field(default_factory=lambda: {"pending": 0, "address": 0, "fds": 0})
    _connections: dict[RequestHandler, _Connection] = field(default_factory=dict)
    _pending_by_address: dict[str, int] = field(default_factory=dict)
    _pending: int = 0
    _admitted_total: int = 0
    _last_log: float = float("-inf")

    def __post_init__(self) -> None:
        if not self.fd_limit:
            self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if not self.fd_baseline:
            self.fd_baseline = open_fds()

    @property
    def connection_budget(self) -> int:
        """Connections that may be open at once (pending or admitted) with ``fd_reserve`` fds left free."""
        return max(0, self.fd_limit - self.fd_baseline - self.fd_reserve)

    def opened(self, handler: RequestHandler, address: str) -> str | None:
        """Counts a new connection from ``address``; returns why it is refused (then it is not counted)."""
        reason = None
        if len(self._connections) >= self.connection_budget:
            reason, kind = "server busy: no file descriptor to spare", "fds"
        elif self._pending >= self.max_pending_connections:
            reason, kind = "server busy: too many connections waiting to authenticate", "pending"
        elif self._pending_by_address.get(address, 0) >= self.max_pending_per_address:
            reason, kind = "server busy: too many connections from your address waiting to authenticate", "address"
        if reason is not None:
            self.refused[kind] += 1
            self._log_refusal(kind, address)
            return reason
        self._connections[handler] = _Connection(address)
        self._pending += 1
        self._pending_by_address[address] = self._pending_by_address.get(address, 0) + 1
        return None

    def admitted(self, handler: RequestHandler) -> None:
        """The connection's request was authorized and upgraded: it no longer counts as pending."""
        conn = self._connections.get(handler)
        if conn is None or conn.admitted:
            return
        conn.admitted = True
        self._admitted_total += 1
        self._unpend(conn.address)

    def closed(self, handler: RequestHandler) -> None:
        conn = self._connections.pop(handler, None)
        if conn is not None and not conn.admitted:
            self._unpend(conn.address)

    def _unpend(self, address: str) -> None:
        self._pending -= 1
        left = self._pending_by_address[address] - 1
        if left:
            self._pending_by_address[address] = left
        else:
            del self._pending_by_address[address]

    def _log_refusal(self, kind: str, address: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_log >= _LOG_INTERVAL_S:
            self._last_log = now
            log.warning("refusing connections (503): %s cap reached (latest from %s; refused so far: %s)",
                        kind, address, self.refused)

    def snapshot(self) -> dict[str, Any]:
        """Counts for ``/healthz``: open, pending, admitted (open and since start), refusals by cause, limits."""
        return {"open": len(self._connections), "pending": self._pending,
                "admitted": len(self._connections) - self._pending, "admitted_total": self._admitted_total,
                "pending_addresses": len(self._pending_by_address), "refused": dict(self.refused),
                "header_timeout_s": self.header_timeout_s, "max_pending": self.max_pending_connections,
                "max_pending_per_address": self.max_pending_per_address, "fd_limit": self.fd_limit,
                "fd_reserve": self.fd_reserve, "connection_budget": self.connection_budget}


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP protocol with the guard's admission check on ``connection_made``."""

    __slots__ = ("_guard",)

    def __init__(self, guard: ConnectionGuard, manager: Server, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=guard.header_timeout_s, **kwargs)
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        reason = self._guard.opened(self, address)
        if reason is not None:
            body = reason.encode()
            head = REFUSAL_TEMPLATE.format(length=len(body), body="").encode("ascii")
            cast(asyncio.Transport, transport).write(head + body)  # uvloop's transports are no asyncio subclass
            self.force_close()  # closes once the 503 is flushed; the request task ends without reading

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.closed(self)
        super().connection_lost(exc)


def mark_admitted(guard: ConnectionGuard, request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: a WebSocket upgrade (status 101) admits its connection."""
    if isinstance(response, web.WebSocketResponse) and response.status == 101:
        protocol = request.protocol
        if isinstance(protocol, RequestHandler):
            guard.admitted(protocol)


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections are :class:`GuardedRequestHandler` s (aiohttp's ``TCPSite`` otherwise)."""

    __slots__ = ("_guard", "_host", "_port", "_handler_kwargs")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, *,
                 backlog: int = 1024, **handler_kwargs: Any) -> None:
        super().__init__(runner, backlog=backlog)
        self._guard = guard
        self._host = host
        self._port = port
        self._handler_kwargs = handler_kwargs

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard, kwargs = self._guard, self._handler_kwargs

        def protocol() -> GuardedRequestHandler:
            return GuardedRequestHandler(guard, server, loop=loop, **kwargs)

        self._server = await loop.create_server(protocol, self._host, self._port, backlog=self._backlog,
                                                reuse_address=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
