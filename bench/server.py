"""The server under test, started inside the benchmark process: control's Supervisor with its workers.

Owns core placement (workers on the cores the generator does not use, when there are cores to spare; the generator
and this control process on the remaining core), the in-process :class:`control.workers.supervisor.Supervisor` (its
worker processes run exactly as under ``mediarouter serve``), one :class:`control.rtc.media.MediaClient` per
worker, and the worker pids and UDP ports that the measurements read. No SDP and no LiveKit signaling: set-up goes
straight through MediaClient requests (see ``bench.session``); ``--url`` replaces all of this with ``bench.remote``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from bench.ports import free_port_base
from bench.probe import ProcProbe
from control.rtc.media import MediaClient
from control.workers.supervisor import Supervisor

# An overloaded worker with a large fan-out can spend seconds in one Engine.pump() call (its budget counts received
# batches, not forwarded packets), starving its heartbeat; the benchmark wants to measure that overload, not have
# the supervisor kill the worker (3 s by default), so it waits longer.
HEARTBEAT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CorePlan:
    generator: int
    workers: list[int]
    shared: bool  # True when a worker shares the generator's core (not enough cores)


def plan_cores(workers: int) -> CorePlan:
    """Generator on the lowest allowed core, workers on the others (round robin); shared if there are too few."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) == 1:
        return CorePlan(cores[0], [cores[0]] * workers, True)
    generator, rest = cores[0], cores[1:]
    if workers <= len(rest):
        return CorePlan(generator, rest[:workers], False)
    return CorePlan(generator, [cores[(i + 1) % len(cores)] for i in range(workers)], True)


class BenchServer:
    """``await start()`` spawns the workers pinned per :func:`plan_cores`; ``await stop()`` ends them."""

    def __init__(self, workers: int, *, gso: bool = True, hmac_batch: bool = True,
                 srtp_crypto: str = "mediarouter", ice_tcp: bool = False, rx_hold_ms: int = 0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.plan = plan_cores(workers)
        self.workers = workers
        self.switches = {"gso": gso, "hmac_batch": hmac_batch, "srtp_crypto": srtp_crypto,  # for every worker
                         "rx_hold_ms": rx_hold_ms}
        self.ice_tcp = ice_tcp  # the workers also listen on ICE-TCP at their UDP port's number (fanout --tcp)
        self.supervisor: Supervisor | None = None
        self._root = tempfile.mkdtemp(prefix="mrb-", dir="/tmp")
        self._original_affinity: set[int] | None = None

    async def start(self) -> None:
        # The Supervisor places worker i on sorted(affinity)[i % n] when it is built, and each worker checks at
        # start that its core is in the CPU set it inherited: build it with exactly the worker cores, spawn with
        # the original set, then move this process (control + generator) to the generator core.
        original = self._original_affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, set(self.plan.workers))
        try:
            # MEDIAROUTER_BIND_IP=127.0.0.1 binds the workers to loopback only (no IP_PKTINFO), as before issue 16.
            self.supervisor = Supervisor(workers=self.workers, node_ip="127.0.0.1",
                                         bind_ip=os.environ.get("MEDIAROUTER_BIND_IP", ""),
                                         rtc_port_base=free_port_base(self.workers, tcp=self.ice_tcp),
                                         runtime_root=self._root, ice_tcp=self.ice_tcp,
                                         heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, **self.switches)
        finally:
            os.sched_setaffinity(0, original)
        for slot, core in zip(self.supervisor.slots, self.plan.workers, strict=True):
            slot.core = core
        await self.supervisor.start()
        if not self.plan.shared:
            os.sched_setaffinity(0, {self.plan.generator})
        down = [s.worker_id for s in self.supervisor.slots if not s.running]
        if down:
            await self.stop()
            raise RuntimeError(f"workers {down} did not start")

    def media(self, worker: int) -> MediaClient:
        assert self.supervisor is not None
        return MediaClient(self.supervisor.client(worker))

    def worker_pids(self) -> list[int]:
        assert self.supervisor is not None
        return [int(s.pid) for s in self.supervisor.slots if s.pid is not None]

    def worker_restarts(self) -> int:
        """Worker deaths so far (each was respawned): a run with any is not a valid measurement."""
        assert self.supervisor is not None
        return sum(s.restarts for s in self.supervisor.slots) + sum(
            1 for s in self.supervisor.slots if s.last_exit is not None and not s.running)

    def worker_ports(self) -> list[int]:
        assert self.supervisor is not None
        return [s.udp_port for s in self.supervisor.slots]

    def probe(self) -> ProcProbe:
        """The workers' processes and sockets as a measurement reads them (``/proc``, this host)."""
        return ProcProbe(self.worker_pids(), self.worker_ports())

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
            self.supervisor = None
        if self._original_affinity is not None:
            os.sched_setaffinity(0, self._original_affinity)
            self._original_affinity = None
        try:
            os.rmdir(self._root)
        except OSError:
            pass
