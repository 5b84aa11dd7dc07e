"""The worker's sockets: one shared UDP port (kernel buffers sized, Don't Fragment set) and its ICE-TCP listener.

Every transport on a worker shares this one socket (docs/FORWARDING.md, Demultiplexing; like mediasoup's
WebRtcServer); demultiplexing by ICE ufrag and 5-tuple is done later by the media side. This module only binds
the socket non-blocking on (bind_ip, port) (every interface by default; the announced node_ip may be on none, as
behind 1:1 NAT) and asks the kernel for large receive/send buffers, reading back
what it granted. Linux doubles the requested value for bookkeeping (socket(7)) and clamps it to
net.core.rmem_max/wmem_max unless SO_RCVBUFFORCE/SO_SNDBUFFORCE (CAP_NET_ADMIN) is allowed; a clamp is logged
as a warning.

A socket bound to every IPv4 address has IP_PKTINFO on: on a host with several addresses, a reply must leave from
the address the peer sent to (the peer's ICE pairs the server's address it checked), which the kernel's route-based
source selection does not guarantee; the Engine learns each check's local address and sends from it.

IPv4 sockets send with DF set and the path-MTU cache ignored (``IP_PMTUDISC_PROBE``, ip(7)). The default mode
(``IP_PMTUDISC_WANT``) sets DF too but still marks the packet fragmentable, so the kernel takes an IP ID for it
from its shared hash table of counters (``__ip_select_ident``): one cache miss and one atomic per packet per
destination host. With 1,000 subscribers on a worker that was 7.7 % of the worker's CPU samples under ``perf``; with
DF enforced the ID is 0 (RFC 6864 allows any ID on atomic datagrams) and the cost is gone. WebRTC media fits the
path MTU by construction (senders packetize to about 1,200 bytes; DTLS records are packed to the MTU we set), so a
datagram that would need fragmenting is lost instead, as QUIC's are. IPv6 has no such ID on unfragmented packets.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass

log = logging.getLogger("router.ports")

DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024

# Not exported by the socket module on every Python build (values from <asm-generic/socket.h>).
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
# Not in the socket module at all (values from <linux/in.h>).
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


class PortBindError(OSError):
    """The UDP port could not be bound; ``errno`` is the kernel's (EADDRINUSE, EADDRNOTAVAIL, EACCES...)."""


@dataclass(frozen=True, slots=True)
class BoundSocket:
    """A bound UDP socket and the buffer sizes the kernel reported back (SO_RCVBUF/SO_SNDBUF)."""

    sock: socket.socket
    rcvbuf: int
    sndbuf: int


def bind_udp(host: str, port: int, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> BoundSocket:
    """Binds a non-blocking UDP socket on (host, port) with buffers of ``buffer_bytes`` requested (and, over
    IPv4, Don't Fragment enforced).

    Raises ValueError for a bad address or port and :class:`PortBindError` when the kernel refuses the bind.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"invalid IP address {host!r}") from exc
    if not 1 <= port <= 65535:
        raise ValueError(f"UDP port {port} out of range 1-65535")
    if buffer_bytes <= 0:
        raise ValueError(f"buffer size {buffer_bytes} must be positive")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        rcvbuf = _size_buffer(sock, socket.SO_RCVBUF, _SO_RCVBUFFORCE, buffer_bytes, "SO_RCVBUF")
        sndbuf = _size_buffer(sock, socket.SO_SNDBUF, _SO_SNDBUFFORCE, buffer_bytes, "SO_SNDBUF")
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
            if address.is_unspecified:
                # Bound to every address: each datagram carries the local address it came to, and the Engine
                # answers from it (fastpath.Engine: pump(local=True), bind_tuple/send with local; ip(7)).
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise PortBindError(exc.errno, f"cannot bind UDP {host}:{port}: {reason}") from exc
    except BaseException:
        sock.close()
        raise
    return BoundSocket(sock, rcvbuf, sndbuf)


def _size_buffer(sock: socket.socket, option: int, force_option: int, wanted: int, name: str) -> int:
    sock.setsockopt(socket.SOL_SOCKET, option, wanted)
    granted = sock.getsockopt(socket.SOL_SOCKET, option)
    if granted < wanted:
        # NOTE: the *FORCE variants bypass the sysctl limit but need CAP_NET_ADMIN; without it they fail
        # (EPERM).
        try:
            sock.setsockopt(socket.SOL_SOCKET, force_option, wanted)
        except OSError:
            pass
        granted = sock.getsockopt(socket.SOL_SOCKET, option)
    if granted < wanted:
        log.warning("%s clamped by the kernel: asked %d bytes, got %d (raise net.core.%s)", name, wanted,
                    granted, "rmem_max" if option == socket.SO_RCVBUF else "wmem_max")
    return granted


def wildcard(node_ip: str) -> str:
    """The every-interface address of ``node_ip``'s family: 0.0.0.0 or ::."""
    return "::" if ipaddress.ip_address(node_ip).version == 6 else "0.0.0.0"


def ipv6_over_tcp(bind_ip: str, node_ips: list[str] | tuple[str, ...]) -> bool:
    """Whether IPv6 addresses are announced beside an IPv4 UDP port: then they are offered over ICE-TCP only, on
    an IPv6 listener of their own (the Engine's tuples are IPv4; docs/FORWARDING.md, ICE over TCP)."""
    return (ipaddress.ip_address(bind_ip).version == 4
            and any(ipaddress.ip_address(ip).version == 6 for ip in node_ips))


def loopback_for(bind_ip: str) -> str:
    """Where a local process reaches a port bound on ``bind_ip``: the address itself, or loopback for a wildcard."""
    address = ipaddress.ip_address(bind_ip)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return bind_ip


def bind_tcp(host: str, port: int, backlog: int = 1024, v6only: bool = False) -> socket.socket:
    """A non-blocking listening TCP socket on (host, port) with SO_REUSEADDR (the ICE-TCP port, RFC 6544);
    ``v6only`` (IPv6 only): IPV6_V6ONLY, so that it shares the port number with an IPv4 listener.

    Raises :class:`PortBindError` when the kernel refuses the bind."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and v6only:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise PortBindError(exc.errno, f"cannot bind TCP {host}:{port}: {reason}") from exc
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
