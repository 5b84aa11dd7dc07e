"""The load generator's one UDP socket: every synthetic participant sends from its own loopback address.

Owns the socket that all synthetic participants share (bound to the wildcard address so that datagrams for any
127.x.y.z arrive on it; ``IP_PKTINFO`` picks each participant's source address per datagram and reports the
destination address of each received one), the address plan (participant i sends from 127.77.x.y with
x.y = i + 1, see :func:`participant_address`) and, during set-up, the dispatch of received datagrams to the
participant that owns the destination address. After set-up the Cython hot loop (``bench._loadgen``) reads the
same socket. Only datagrams from 127.0.0.0/8 are ever handed on. Linux only (``IP_PKTINFO``, ``SO_RCVBUFFORCE``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_PKTINFO = struct.Struct("=i4s4s")
ADDRESS_PREFIX = (127, 77)
MAX_PARTICIPANTS = 65000

Datagram = Callable[[bytes, tuple[str, int]], None]


def participant_address(index: int) -> str:
    """The loopback address participant ``index`` sends from (127.77.0.1, 127.77.0.2, ...)."""
    if not 0 <= index < MAX_PARTICIPANTS:
        raise ValueError(f"participant index must be in 0..{MAX_PARTICIPANTS - 1}, got {index}")
    n = index + 1
    return f"{ADDRESS_PREFIX[0]}.{ADDRESS_PREFIX[1]}.{n >> 8}.{n & 0xFF}"


class GeneratorSocket:
    """The shared socket; ``register(address, callback)`` routes set-up datagrams sent to ``address``."""

    def __init__(self, buffer_bytes: int = 64 << 20) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, plain, buffer_bytes)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._routes: dict[str, Datagram] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped_unrouted = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def register(self, address: str, callback: Datagram) -> None:
        self._routes[address] = callback

    def unregister(self, address: str) -> None:
        self._routes.pop(address, None)

    def send_from(self, source: str, data: bytes, destination: tuple[str, int]) -> None:
        info = _PKTINFO.pack(0, socket.inet_aton(source), b"\0\0\0\0")
        try:
            self.sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, destination)
        except BlockingIOError:
            pass  # a full send buffer drops the datagram, as the network would; set-up retransmits

    def start_dispatch(self) -> None:
        """Route datagrams to registered participants from the running event loop (set-up phase)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def stop_dispatch(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None

    def _on_readable(self) -> None:
        for _ in range(256):
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            if not addr[0].startswith("127."):
                continue
            destination = None
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    destination = socket.inet_ntoa(_PKTINFO.unpack(value[: _PKTINFO.size])[2])
            callback = self._routes.get(destination or "")
            if callback is None:
                self.dropped_unrouted += 1
                continue
            callback(data, addr)

    def close(self) -> None:
        self.stop_dispatch()
        self.sock.close()
