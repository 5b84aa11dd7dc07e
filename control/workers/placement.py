"""Placement: which worker a new room's MediaRouter goes to.

Like LiveKit's node selector, but across the workers of one node: the least-loaded running worker wins. Load
is what control knows at once (rooms it placed there or is placing there now) plus what the worker last reported in its
heartbeat (transports and consumers), so that two rooms created in quick succession land on different workers
even before a heartbeat reflects the first one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROOM_WEIGHT = 10.0
TRANSPORT_WEIGHT = 1.0
CONSUMER_WEIGHT = 0.5


class NoWorkerAvailable(RuntimeError):
    """No worker is running; the join is refused (503)."""


@dataclass(frozen=True)
class WorkerLoad:
    """One worker as placement sees it."""

    worker_id: int
    available: bool
    rooms: int = 0
    transports: int = 0
    consumers: int = 0

    @property
    def score(self) -> float:
        return (ROOM_WEIGHT * self.rooms + TRANSPORT_WEIGHT * self.transports
                + CONSUMER_WEIGHT * self.consumers)


def choose_worker(loads: Sequence[WorkerLoad]) -> int:
    """The available worker with the lowest score (ties: fewer rooms, then the lower id)."""
    candidates = [w for w in loads if w.available]
    if not candidates:
        raise NoWorkerAvailable("no worker is running")
    best = min(candidates, key=lambda w: (w.score, w.rooms, w.worker_id))
    return best.worker_id


def _count(counters: Mapping[str, Any], key: str) -> int:
    value = counters.get(key, 0)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def loads_from_slots(slots: Iterable[Any], rooms_per_worker: Mapping[int, int]) -> list[WorkerLoad]:
    """WorkerLoads from the supervisor's slots (worker_id, running, client.available, heartbeat)."""
    loads: list[WorkerLoad] = []
    for slot in slots:
        heartbeat = slot.heartbeat if isinstance(slot.heartbeat, Mapping) else {}
        counters = heartbeat.get("counters", {})
        if not isinstance(counters, Mapping):
            counters = {}
        loads.append(
            WorkerLoad(
                worker_id=slot.worker_id,
                available=bool(slot.running and slot.client.available),
                rooms=rooms_per_worker.get(slot.worker_id, 0),
                transports=_count(counters, "transports"),
                consumers=_count(counters, "consumers"),
            )
        )
    return loads
