"""A worker's passive ICE-TCP port (RFC 6544, RFC 4571 framing), relayed into its UDP port.

Each accepted TCP connection carries RFC 4571 frames (a 2-byte length, then one STUN, DTLS, RTP or RTCP packet). The
first frame must be a STUN Binding request with a USERNAME (RFC 6544 §7.1: the passive side learns nothing else);
anything else closes the connection. From then on the connection is relayed, frame for datagram, through a UDP socket
of its own connected to the worker's UDP port on a loopback (or the bound) address. So the Engine sees an ordinary
UDP tuple per TCP connection: the transport is found by the ICE ufrag of that first request exactly as for UDP
(router/media_service.py), the check binds the relay's tuple, and media goes through the same Engine forwarding with
no change in the fast path. The cost is one Python ``bytes`` and one extra syscall per packet in each direction
(docs/FORWARDING.md, ICE over TCP, has the measurement); TCP is a fallback for clients whose UDP is blocked.

:meth:`IceTcpServer.peer_of` maps a relay tuple back to the client's TCP address, which the ICE-lite responder puts
in its XOR-MAPPED-ADDRESS (the client must see its own address, not the relay's).

Backpressure: datagrams toward a client whose TCP connection already holds ``WRITE_LIMIT_BYTES`` unsent are dropped
and counted (``dropped_out``): a slow reader loses media, it never blocks the worker nor grows memory. Toward the
worker, a datagram the relay socket cannot take at once is dropped and counted (``dropped_in``). A connection with no
valid first frame within ``FIRST_FRAME_TIMEOUT_S``, or idle for ``IDLE_TIMEOUT_S`` (longer than ICE consent's 30 s),
is closed; at most ``MAX_CONNECTIONS`` are open at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, cast

from router.ice import username_fragment

log = logging.getLogger("router.ice_tcp")

Address = tuple[str, int]

WRITE_LIMIT_BYTES = 256 * 1024
FIRST_FRAME_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 40.0
MAX_CONNECTIONS = 4096
RELAY_BUFFER_BYTES = 1024 * 1024
_LENGTH = struct.Struct("!H")  # RFC 4571 framing
_RECV_BYTES = 65535


@dataclass
class IceTcpCounters:
    """Totals over every connection of the port (heartbeat counters ``ice_tcp_*``)."""

    accepted: int = 0
    refused: int = 0  # first frame not a Binding request with a USERNAME, or too many connections
    frames_in: int = 0
    frames_out: int = 0
    dropped_in: int = 0  # client -> worker datagrams the relay socket could not take
    dropped_out: int = 0  # worker -> client datagrams dropped because the client reads too slowly
    timed_out: int = 0

    def as_dict(self, open_connections: int) -> dict[str, int]:
        out = {f"ice_tcp_{name}": value for name, value in vars(self).items()}
        out["ice_tcp_connections"] = open_connections
        return out


class IceTcpConnection(asyncio.Protocol):
    """One client's TCP connection and its relay socket toward the worker's UDP port."""

    def __init__(self, server: IceTcpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None
        self.relay: socket.socket | None = None
        self.relay_addr: Address | None = None
        self._buffer = bytearray()
        self._last_rx = time.monotonic()
        self._closed = False

    # ---- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is no asyncio.Transport subclass
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # No asyncio write-buffer pausing: we drop instead (see write_datagrams).
        self.transport.set_write_buffer_limits(high=WRITE_LIMIT_BYTES * 4)
        self.server.opened(self)

    def data_received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        if self._buffer:  # the rest of a frame cut by the last read: one copy per read, not one per frame
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        view = memoryview(data)
        pos = 0
        end = len(data)
        while end - pos >= 2:
            length = (data[pos] << 8) | data[pos + 1]
            if end - pos - 2 < length:
                break
            if not self._frame(view[pos + 2 : pos + 2 + length]):
                return
            pos += 2 + length
        if pos < end:
            self._buffer += view[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    # ---- relay ---------------------------------------------------------------------------------------
    def _frame(self, frame: memoryview) -> bool:
        """One frame from the client; False when the connection was closed because of it."""
        counters = self.server.counters
        if self.relay is None:
            if username_fragment(bytes(frame)) is None:
                counters.refused += 1
                self.close()
                return False
            try:
                self._open_relay()
            except OSError as exc:
                log.warning("ICE-TCP relay socket for %s failed: %s", self.peer, exc)
                self.close()
                return False
        assert self.relay is not None
        counters.frames_in += 1
        try:
            self.relay.send(frame)
        except (BlockingIOError, InterruptedError):
            counters.dropped_in += 1
        except OSError:
            counters.dropped_in += 1
        return True

    def _open_relay(self) -> None:
        target = self.server.udp_target
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RELAY_BUFFER_BYTES)
            sock.bind((self.server.relay_host, 0))
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        name = sock.getsockname()
        self.relay = sock
        self.relay_addr = (name[0], name[1])
        self.server.relayed(self)
        self.server.loop.add_reader(sock.fileno(), self._from_worker)

    def _from_worker(self) -> None:
        """Every datagram the worker sent to this relay, framed and written in one go (or dropped)."""
        relay, transport = self.relay, self.transport
        if relay is None or transport is None:
            return
        frames: list[bytes] = []
        dropped = 0
        room = WRITE_LIMIT_BYTES - transport.get_write_buffer_size()
        while True:
            try:
                datagram = relay.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # ECONNREFUSED from an earlier send: nothing to read
            if len(datagram) + 2 > room:
                dropped += 1
                continue
            room -= len(datagram) + 2
            frames.append(_LENGTH.pack(len(datagram)))
            frames.append(datagram)
        counters = self.server.counters
        counters.dropped_out += dropped
        if frames:
            counters.frames_out += len(frames) // 2
            transport.write(b"".join(frames))

    # ---- lifecycle -----------------------------------------------------------------------------------
    def idle_for(self, now: float) -> float:
        return now - self._last_rx

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.relay is not None:
            self.server.loop.remove_reader(self.relay.fileno())
            self.relay.close()
        self.server.closed(self)


class IceTcpServer:
    """The worker's listening TCP socket and its connections.

    Lifecycle: ``IceTcpServer(loop, sock, udp_target)`` with a bound, listening socket (and ``more`` listening
    sockets on the same port number, e.g. IPv6 beside IPv4: their connections are relayed to the same UDP target)
    → ``await start()`` → connections come and go → ``close()``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, udp_target: Address,
                 more: tuple[socket.socket, ...] = ()) -> None:
        self.loop = loop
        self.sock = sock
        self.socks = (sock, *more)
        self.udp_target = udp_target
        # The relay sockets sit on the address the UDP port listens on (or loopback when that is every interface).
        self.relay_host = udp_target[0]
        self.counters = IceTcpCounters()
        self.connections: set[IceTcpConnection] = set()
        self._by_relay: dict[Address, IceTcpConnection] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def start(self) -> None:
        for sock in self.socks:
            self._servers.append(await self.loop.create_server(lambda: IceTcpConnection(self), sock=sock))
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.close()

    def peer_of(self, relay_addr: Address) -> Address | None:
        """The client's TCP address behind a relay tuple the worker saw; None for a UDP tuple."""
        connection = self._by_relay.get(relay_addr)
        return connection.peer if connection is not None else None

    def stats(self) -> dict[str, Any]:
        return self.counters.as_dict(len(self.connections))

    # ---- bookkeeping (called by the connections) -------------------------------------------------------
    def opened(self, connection: IceTcpConnection) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:
            self.counters.refused += 1
            if connection.transport is not None:
                connection.transport.abort()
            return
        self.counters.accepted += 1
        self.connections.add(connection)

    def relayed(self, connection: IceTcpConnection) -> None:
        assert connection.relay_addr is not None
        self._by_relay[connection.relay_addr] = connection

    def closed(self, connection: IceTcpConnection) -> None:
        self.connections.discard(connection)
        if connection.relay_addr is not None:
            self._by_relay.pop(connection.relay_addr, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            limit = IDLE_TIMEOUT_S if connection.relay is not None else FIRST_FRAME_TIMEOUT_S
            if connection.idle_for(now) > limit:
                self.counters.timed_out += 1
                connection.close()
        self._sweeper = self.loop.call_later(1.0, self._sweep)
