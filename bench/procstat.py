"""What the kernel says about the processes and sockets of a benchmark run (Linux ``/proc``).

Owns reading CPU time (``/proc/<pid>/stat`` utime + stime of the whole process, all threads; and the scheduler's
nanosecond run time from ``/proc/<pid>/task/*/schedstat`` as a finer cross-check), resident memory
(``/proc/<pid>/status`` VmRSS), per-socket receive-queue drops (``/proc/net/udp``, by local port), the host-wide UDP
counters (``/proc/net/snmp``: RcvbufErrors, SndbufErrors, InErrors) and the machine description for reports.
"""

from __future__ import annotations

import os
import platform
import subprocess

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


def machine() -> str:
    """CPU model, vCPU count and kernel, e.g. "AMD EPYC 7B13, 2 vCPU, Linux 6.1"."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} vCPU, Linux {platform.release()}"


def commit() -> str:
    """The git commit of the checkout the benchmark runs from ("unknown" outside git), "+dirty" if modified."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
