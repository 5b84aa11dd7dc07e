"""What the kernel says about this host's processes and UDP sockets (Linux ``/proc``).

The control process reports its workers' usage from here in ``GET /healthz`` (:func:`worker_usage`,
:func:`host_usage`: so that a benchmark on another host can read them), and the benchmark reads the same for the
servers it starts itself. Owns reading CPU time (``/proc/<pid>/stat`` utime + stime of the whole process, all
threads; and the scheduler's nanosecond run time from ``/proc/<pid>/task/*/schedstat`` as a finer cross-check),
resident memory (``/proc/<pid>/status`` VmRSS), per-socket receive-queue drops (``/proc/net/udp``, by local port),
the host-wide UDP counters (``/proc/net/snmp``: RcvbufErrors, SndbufErrors, InErrors) and the host's CPU and steal
time (``/proc/stat``).
"""

from __future__ import annotations

import os
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) from /proc/<pid>/stat, in seconds (clock-tick
    resolution, 10 ms)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def run_seconds(pid: int) -> float:
    """The scheduler's run time of process ``pid``'s live threads (``/proc/<pid>/task/*/schedstat``, nanosecond
    resolution), in seconds; a cross-check of :func:`cpu_seconds` for short or light measurements."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"process {pid} has no VmRSS (kernel thread or gone)")


def _udp_sockets(port: int) -> list[list[str]]:
    """The /proc/net/udp rows of the IPv4 UDP socket(s) bound to local ``port``."""
    with open("/proc/net/udp") as f:
        next(f)
        return [parts for parts in (line.split() for line in f) if int(parts[1].split(":")[1], 16) == port]


def udp_drops(port: int) -> int:
    """Datagrams dropped at the receive queue of the IPv4 UDP socket(s) bound to local ``port``."""
    return sum(int(parts[-1]) for parts in _udp_sockets(port))


def udp_rx_queue(port: int) -> int:
    """Bytes waiting in the receive queue(s) of the IPv4 UDP socket(s) bound to local ``port``."""
    return sum(int(parts[4].split(":")[1], 16) for parts in _udp_sockets(port))


def udp_snmp() -> dict[str, int]:
    """The host-wide ``Udp:`` counters of /proc/net/snmp."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}


def cpu_ticks() -> tuple[int, int]:
    """(all, steal) jiffies of the host's CPUs from ``/proc/stat``: on a shared VM the hypervisor's steal time says
    how much of the measured window the vCPUs did not get at all."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields), fields[7] if len(fields) > 7 else 0


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[0] - before[0]
    return round(100.0 * (after[1] - before[1]) / total, 1) if total > 0 else 0.0


def worker_usage(pid: int, port: int) -> dict[str, Any]:
    """What ``/healthz`` reports about one live worker process and its UDP socket: ``cpu_s`` (utime + stime),
    ``run_s`` (scheduler run time), ``rss_bytes``, ``udp_drops`` and ``udp_rx_queue_bytes`` (cumulative counters
    and current levels; a reader takes differences)."""
    return {"cpu_s": cpu_seconds(pid), "run_s": run_seconds(pid), "rss_bytes": rss_bytes(pid),
            "udp_drops": udp_drops(port), "udp_rx_queue_bytes": udp_rx_queue(port)}


def host_usage() -> dict[str, int]:
    """The host's CPU jiffies since boot, all and stolen by the hypervisor (see :func:`cpu_ticks`)."""
    total, steal = cpu_ticks()
    return {"cpu_ticks": total, "steal_ticks": steal}
