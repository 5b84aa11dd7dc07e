"""A node's load for its registry entry: forwarded packets per second and CPU use of its workers, rooms, participants.

Rates are deltas between two samples of the workers' heartbeat counters (``tx_packets``) and of their CPU seconds
(control/workers/procstat.py), so the first sample reads zero.
"""

from __future__ import annotations

import os
import time
from typing import Any


class LoadSampler:
    """Turns the supervisor's per-worker totals into rates."""

    def __init__(self, supervisor: Any) -> None:
        self.supervisor = supervisor
        self.cpus = os.cpu_count() or 1
        self._last: tuple[float, int, float] | None = None

    def _totals(self) -> tuple[int, float]:
        packets, cpu_s = 0, 0.0
        for slot in getattr(self.supervisor, "slots", []):
            beat: dict[str, Any] = slot.heartbeat if slot.running else {}
            packets += int(beat.get("counters", {}).get("totals", {}).get("tx_packets", 0))
            usage = slot.usage()
            if usage is not None:
                cpu_s += float(usage.get("cpu_s", 0.0))
        return packets, cpu_s

    def sample(self) -> tuple[float, float]:
        """(forwarded packets per second, CPU use as a share of the node's CPUs) since the previous sample."""
        now = time.monotonic()
        packets, cpu_s = self._totals()
        last, self._last = self._last, (now, packets, cpu_s)
        if last is None or now <= last[0]:
            return 0.0, 0.0
        elapsed = now - last[0]
        return max(0, packets - last[1]) / elapsed, max(0.0, cpu_s - last[2]) / elapsed / self.cpus
