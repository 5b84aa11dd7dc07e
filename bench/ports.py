"""Free port bases for the servers the benchmarks and the tests start on loopback.

A worker binds its RTC port over UDP and, with ICE over TCP (the default), over TCP too. A base taken from the
kernel's ephemeral range (``net.ipv4.ip_local_port_range``, 32768-60999 by default) can be held at any moment by the
local end of some client's TCP connection, or by one in TIME_WAIT after a run: the worker's TCP bind then fails
with EADDRINUSE and the supervisor respawns it in a loop. So bases come from below that range and are checked free
over UDP and TCP.
"""

from __future__ import annotations

import random
import socket

LOWEST = 20000


def ephemeral_start(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int, kind: socket.SocketKind, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_base(count: int, *, tcp: bool = True, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports free over UDP (and TCP with ``tcp``), below the ephemeral range."""
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
    top = max(LOWEST + count + 1, ephemeral_start())
    for _ in range(200):
        base = random.randrange(LOWEST, top - count)
        if all(port_is_free(port, kind, host) for port in range(base, base + count) for kind in kinds):
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {LOWEST}-{top}")
