"""The load generator's one UDP socket: every synthetic participant sends from its own address.

Owns the socket that all synthetic participants share (bound to the wildcard address so that datagrams for any of
their addresses arrive on it; ``IP_PKTINFO`` picks each participant's source address per datagram and reports the
destination address of each received one), the address plan (participant i sends from the (i + 1)-th address of
the source network, 127.77.0.0/16 by default: 127.77.0.1, 127.77.0.2, ...; see :func:`participant_address`) and,
during set-up, the dispatch of received datagrams to the participant that owns the destination address
(``bench._dispatch`` reads in batches and drops, in C, what no registered participant waits for: e.g. the media
of participants that finished their set-up). After set-up the Cython hot loop (``bench._loadgen``) reads the same
socket.

Only datagrams from the server are handed on: from 127.0.0.0/8 when the participants are on loopback, otherwise
from the addresses given to :meth:`GeneratorSocket.accept_from` (the server's ICE candidates). A source network
off loopback must be local on this host and routed back to it from the server, e.g. ``ip route add local
10.77.0.0/16 dev lo`` here and ``ip route add 10.77.0.0/16 via <this host>`` on the server. Linux only
(``IP_PKTINFO``, ``SO_RCVBUFFORCE``).

The socket asks for UDP_GRO (udp(7), Linux 5.0+) unless ``gro=False`` (``python -m bench --no-gro``, whose default
is the environment's ``MEDIAROUTER_GRO``): a train of datagrams the server sent as one UDP_SEGMENT message then
arrives as one buffer plus its segment length, and both receive paths split it back into the datagrams. On
loopback this matters for what is measured: the kernel delivers into this socket in the sender's context, so
without GRO each worker would also pay for splitting its trains and queueing every datagram here, work that lands
on the receiving host, not on the server, in a deployment.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Callable

from bench._dispatch import SetupReader
from router.ports import IP_MTU_DISCOVER, IP_PMTUDISC_PROBE

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
_PKTINFO = struct.Struct("=i4s4s")
DEFAULT_SOURCE_NET = ipaddress.IPv4Network("127.77.0.0/16")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")

Datagram = Callable[[bytes, tuple[str, int]], None]


def split_segments(data: bytes, segment: int) -> list[bytes]:
    """The datagrams of a UDP_GRO buffer: ``segment`` bytes each, the last one may be shorter."""
    if segment <= 0 or segment >= len(data):
        return [data]
    return [data[i:i + segment] for i in range(0, len(data), segment)]


def source_network(text: str) -> ipaddress.IPv4Network:
    """``--source-net``: an IPv4 network with room for at least 254 participants (a /24 or larger)."""
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"source network {text!r} is not an IPv4 network: {exc}") from None
    if net.prefixlen > 24:
        raise ValueError(f"source network {net} is too small: give a /24 or larger")
    return net


def participant_address(index: int, net: ipaddress.IPv4Network = DEFAULT_SOURCE_NET) -> str:
    """The address participant ``index`` sends from: the (index + 1)-th of ``net`` (127.77.0.1, 127.77.0.2, ...)."""
    room = net.num_addresses - 2  # neither the network nor the broadcast address
    if not 0 <= index < room:
        raise ValueError(f"participant index must be in 0..{room - 1} for source network {net}, got {index}")
    return str(net.network_address + index + 1)


class GeneratorSocket:
    """The shared socket; ``register(address, callback)`` routes set-up datagrams sent to ``address``."""

    def __init__(self, buffer_bytes: int = 64 << 20,
                 source_net: ipaddress.IPv4Network = DEFAULT_SOURCE_NET, gro: bool = True) -> None:
        self.source_net = source_net
        # What the receive paths accept: all of loopback for loopback participants, else only the server.
        self._accepted: list[ipaddress.IPv4Network] = [LOOPBACK] if source_net.subnet_of(LOOPBACK) else []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, plain, buffer_bytes)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        # DF with IP ID 0, as the worker sends (router.ports): no per-packet ID from the kernel's shared table.
        self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        #: whether the kernel delivers UDP_SEGMENT trains as one buffer (``LoadGen`` reads this from the socket)
        self.gro = False
        if gro:
            try:
                self.sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass  # a kernel before 5.0: every datagram arrives on its own
        self.sock.bind(("0.0.0.0", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._routes: dict[str, Datagram] = {}
        # Reads in batches and keeps only datagrams for a routed address (bench/_dispatch.pyx).
        self._reader = SetupReader(self.sock.fileno(), self.gro)
        self._accepted_hosts: dict[str, bool] = {}  # is_accepted's answers by source host (a handful of servers)
        self._loop: asyncio.AbstractEventLoop | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def address(self, index: int) -> str:
        """The source address of participant ``index`` (see :func:`participant_address`)."""
        return participant_address(index, self.source_net)

    @property
    def accepted(self) -> list[str]:
        """The source networks datagrams are handed on from (for ``LoadGen.accept_from``)."""
        return [str(n) for n in self._accepted]

    def accept_from(self, host: str) -> None:
        """Hand on datagrams from ``host`` (a server address the participants talk to) from now on."""
        if not self.is_accepted(host):
            self._accepted.append(ipaddress.IPv4Network(host))
            self._accepted_hosts.clear()

    def is_accepted(self, host: str) -> bool:
        known = self._accepted_hosts.get(host)
        if known is None:
            address = ipaddress.IPv4Address(host)
            known = self._accepted_hosts[host] = any(address in n for n in self._accepted)
        return known

    @property
    def dropped_unrouted(self) -> int:
        """Datagrams the set-up dispatch read for an address no participant had registered."""
        return self._reader.dropped

    def register(self, address: str, callback: Datagram) -> None:
        self._routes[address] = callback
        self._reader.route(address)

    def unregister(self, address: str) -> None:
        if self._routes.pop(address, None) is not None:
            self._reader.unroute(address)

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
        for destination, data, addr, segment in self._reader.read(256):
            callback = self._routes.get(destination)
            if callback is None or not self.is_accepted(addr[0]):
                continue  # unregistered by a callback of this same batch, or not from a server
            for datagram in split_segments(data, segment):
                callback(datagram, addr)

    def close(self) -> None:
        self.stop_dispatch()
        self.sock.close()
