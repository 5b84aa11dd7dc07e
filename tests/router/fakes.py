"""Stand-ins for the worker's process shell, for driving router/media_service.py in-process.

:class:`FakeChannel` wraps handlers exactly as ``router.channel.Channel.handle`` does (the request body parsed by
its type in router/messages.py ``REQUESTS``, the reply checked and serialised) and records notifications as
``Channel.emit`` would send them; :class:`FakeWorker` has the attributes ``MediaService`` uses, on a loopback socket.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from router.channel import BodyHandler, Handler, body_handler
from router.messages import EVENTS
from router.protocol import Body, Event, Method


def estimate_of(snapshot: dict[str, Any]) -> tuple[int, str, float, int, int, int, int] | None:
    """``Engine.transport_estimate`` of a transport whose ``snapshot_transport`` is ``snapshot`` (the same values,
    None without an estimator: the snapshot has no ``bwe_bps``)."""
    if "bwe_bps" not in snapshot:
        return None
    return (snapshot["bwe_bps"], snapshot.get("bwe_state", "normal"), snapshot.get("bwe_loss", 0.0),
            snapshot.get("bwe_probe_pending", 0), snapshot.get("rtx_bytes", 0),
            snapshot.get("twcc_feedback_packets", 0), snapshot.get("remb_packets", 0))


class FakeChannel:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.notifications: list[tuple[str, str, dict[str, Any]]] = []

    def register(self, method: str, handler: Handler) -> None:
        if method in self.handlers:
            raise ValueError(f"a handler for {method!r} is already registered")
        self.handlers[method] = handler

    def handle(self, method: Method, handler: BodyHandler) -> None:
        self.register(method, body_handler(method, handler))

    def emit(self, event: Event, target_id: str, body: Body, *, droppable: bool = False) -> bool:
        if type(body) is not EVENTS[event]:
            raise TypeError(f"{event} takes {EVENTS[event].__name__}, not {type(body).__name__}")
        self.notifications.append((event, target_id, body.to_wire()))
        return True


def _bind_ports(ice_tcp: bool) -> tuple[socket.socket, socket.socket | None]:
    """A UDP socket on a free loopback port and, with ``ice_tcp``, the TCP listener on the same port number (as
    router.ports.bind_tcp makes it). The kernel picks the UDP port; its number may be taken for TCP (another
    test's connection), so a few ports are tried."""
    from router.ports import bind_tcp

    for _ in range(50):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        if not ice_tcp:
            return sock, None
        try:
            return sock, bind_tcp("127.0.0.1", sock.getsockname()[1])
        except OSError:
            sock.close()
    raise RuntimeError("no loopback port free for both UDP and TCP in 50 tries")


class FakeWorker:
    """The parts of router.worker.Worker that the media service uses."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, ice_tcp: bool = False,
                 node_ips: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.loop = loop
        self.sock, self.tcp_sock = _bind_ports(ice_tcp)
        self.worker_id = 0
        self.core = 0
        self.node_ips = list(node_ips)
        self.node_ip = node_ips[0]
        self.bind_ip = "127.0.0.1"
        self.rtc_port = self.sock.getsockname()[1]
        self.tcp6_sock: socket.socket | None = None
        self.close_callbacks: list[Any] = []
        self.gso = True  # the worker's gso setting, which the Engine is built with
        self.congestion_control = True
        self.rx_hold_ms = 0  # the worker's rx_hold_ms setting: 0 = every wake-up reads at once
        self.channel = FakeChannel()
        self.heartbeat_sources: list[Any] = []

    def add_heartbeat_source(self, source: Any) -> None:
        self.heartbeat_sources.append(source)

    def add_close_callback(self, callback: Any) -> None:
        self.close_callbacks.append(callback)
