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


class FakeWorker:
    """The parts of router.worker.Worker that the media service uses."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.worker_id = 0
        self.core = 0
        self.node_ip = "127.0.0.1"
        self.rtc_port = self.sock.getsockname()[1]
        self.gso = True  # the worker's gso setting, which the Engine is built with
        self.congestion_control = True
        self.channel = FakeChannel()
        self.heartbeat_sources: list[Any] = []

    def add_heartbeat_source(self, source: Any) -> None:
        self.heartbeat_sources.append(source)
