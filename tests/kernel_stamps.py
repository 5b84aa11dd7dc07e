"""Waiting for the kernel's receive timestamps (SO_TIMESTAMPNS) to be live, for the tests that read them.

Linux turns receive timestamping on for the whole host from a deferred work item when the first socket asks for it
(net_enable_timestamp), not within setsockopt: until that ran, a datagram queued meanwhile is stamped when it is
read. A test that checks arrival times waits with :func:`wait_for_kernel_stamping` while a socket of its own keeps
timestamping asked for.
"""

from __future__ import annotations

import socket
import struct
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's (and SCM_TIMESTAMPNS); not always in socket


def wait_for_kernel_stamping(timeout_s: float = 5.0) -> None:
    """Wait until a datagram that sat 20 ms in a socket carries its arrival time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        probe.bind(("127.0.0.1", 0))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            probe.sendto(b"x", probe.getsockname())
            time.sleep(0.02)
            _, ancdata, _, _ = probe.recvmsg(16, 64)
            read_at = time.time()
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", data[:16])
                    if read_at - (sec + nsec / 1e9) >= 0.015:
                        return
        raise AssertionError("the kernel never stamped a packet at its arrival")
