"""Where a measurement reads the server's side of the load: the kernel's accounting of its worker processes.

Owns :class:`ServerSample` (per worker: cumulative CPU time, scheduler run time, RSS; over all workers: receive-queue
drops and backlog of their UDP sockets; the host's CPU and steal jiffies) and the two ways to take one:
:class:`ProcProbe` reads ``/proc`` for processes on this host (a server the benchmark started, the limit loop, the
aiortc relay); :class:`HealthzProbe` asks a running mediarouter (``--url``) for the same counters in its
``GET /healthz``, read by its control process on the server's host, so the server may run on another machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from control.workers import procstat


class ProbeError(RuntimeError):
    """The server's counters cannot be read (worker gone or restarted, server unreachable)."""


@dataclass(frozen=True)
class ServerSample:
    cpu_s: list[float]  # per worker, utime + stime since it started
    run_s: list[float]  # per worker, the scheduler's run time
    rss: list[int]  # per worker, bytes
    drops: int  # datagrams dropped at the workers' sockets since they were bound
    rx_queue: int  # bytes waiting in the workers' sockets now
    ticks: tuple[int, int]  # the server host's (all, steal) CPU jiffies


class Probe(Protocol):
    def sample(self) -> ServerSample: ...

    def rx_queue(self) -> int: ...


class ProcProbe:
    """Processes ``pids`` and UDP ``ports`` on this host."""

    def __init__(self, pids: Sequence[int], ports: Sequence[int]) -> None:
        self.pids = list(pids)
        self.ports = list(ports)

    def sample(self) -> ServerSample:
        try:
            return ServerSample(
                cpu_s=[procstat.cpu_seconds(p) for p in self.pids],
                run_s=[procstat.run_seconds(p) for p in self.pids],
                rss=[procstat.rss_bytes(p) for p in self.pids],
                drops=sum(procstat.udp_drops(p) for p in self.ports),
                rx_queue=self.rx_queue(),
                ticks=procstat.cpu_ticks(),
            )
        except (OSError, ValueError) as exc:
            raise ProbeError(f"cannot read the server's processes {self.pids}: {exc}") from None

    def rx_queue(self) -> int:
        return sum(procstat.udp_rx_queue(p) for p in self.ports)


class HealthzProbe:
    """The workers ``pids`` (by id -> pid, as first seen) of a server whose ``/healthz`` document ``healthz``
    returns. A worker that is not running any more, or runs as another process, fails the sample: its counters
    started again from zero."""

    def __init__(self, healthz: Callable[[], dict[str, Any]], pids: dict[int, int]) -> None:
        self._healthz = healthz
        self.pids = dict(pids)

    def _workers(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        by_id = {int(w["id"]): w for w in state.get("workers", [])}
        chosen = []
        for worker_id, pid in self.pids.items():
            w = by_id.get(worker_id)
            if w is None or not w.get("alive") or w.get("pid") != pid or not w.get("usage"):
                raise ProbeError(f"worker {worker_id} (pid {pid}) is not running any more: it restarted or died "
                                 "during the measurement")
            chosen.append(w)
        return chosen

    def sample(self) -> ServerSample:
        state = self._healthz()
        if "host" not in state:
            raise ProbeError("the server's /healthz reports no usage counters (a mediarouter older than this "
                             "benchmark?)")
        usage = [w["usage"] for w in self._workers(state)]
        return ServerSample(
            cpu_s=[float(u["cpu_s"]) for u in usage],
            run_s=[float(u["run_s"]) for u in usage],
            rss=[int(u["rss_bytes"]) for u in usage],
            drops=sum(int(u["udp_drops"]) for u in usage),
            rx_queue=sum(int(u["udp_rx_queue_bytes"]) for u in usage),
            ticks=(int(state["host"]["cpu_ticks"]), int(state["host"]["steal_ticks"])),
        )

    def rx_queue(self) -> int:
        return self.sample().rx_queue
