"""A worker's media totals for its heartbeat: forwarded packets and bytes, drops by reason, NACKs, retransmissions,
PLIs and key frames, summed over the Engine's snapshots once per heartbeat (nothing is added per packet).

The Engine counts per transport, per producer stream and per consumer; an object's counters go with it when it is
removed. :class:`MediaTotals` keeps, for every object seen, its last snapshot, and adds an object's last values to
a retired base when it is gone (or when an object under the same id counts less: a new one), so that the totals
only grow (what an object counted between its last heartbeat and its removal, at most one heartbeat interval of
its traffic, is not included). Engine-wide drops (datagrams no transport owns) come from ``snapshot_engine`` and
are already monotonic. The heartbeat carries ``{"totals": {name: n}, "drops": {reason: n}}``; control turns them
into Prometheus counters (control/service/metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

# producer (inbound) fields -> total names; a producer's per-layer fields are summed over its layers
PRODUCER_FIELDS = {"packets": "rx_packets", "bytes": "rx_bytes"}
PRODUCER_LAYER_FIELDS = {"keyframes": "keyframes_rx", "kf_requests": "keyframe_requests_tx",
                         "nack_requested": "nacks_tx", "rtx_packets": "rtx_rx"}
CONSUMER_FIELDS = {"packets": "tx_packets", "bytes": "tx_bytes", "retransmits": "retransmits",
                   "nack_rx": "nacks_rx", "pli_rx": "plis_rx"}
TOTAL_NAMES = (*PRODUCER_FIELDS.values(), *PRODUCER_LAYER_FIELDS.values(), *CONSUMER_FIELDS.values())
DROP_PREFIX = "drop_"


class Snapshots(Protocol):
    """The Engine's snapshot calls (fastpath.Engine)."""

    def snapshot_engine(self) -> dict[str, Any]: ...
    def snapshot_transport(self, t: int) -> dict[str, Any]: ...
    def snapshot_producer(self, p: int) -> dict[str, Any]: ...
    def snapshot_consumer(self, c: int) -> dict[str, Any]: ...


Handles = Callable[[], Iterable[tuple[str, int]]]  # (object id, Engine handle) of every live object


def _drops(snapshot: dict[str, Any], into: dict[str, int]) -> None:
    for key, value in snapshot.items():
        if key.startswith(DROP_PREFIX):
            reason = key[len(DROP_PREFIX):]
            into[reason] = into.get(reason, 0) + int(value)


def _producer_counts(snap: dict[str, Any]) -> dict[str, int]:
    counts = {name: int(snap.get(key, 0)) for key, name in PRODUCER_FIELDS.items()}
    drops: dict[str, int] = {}
    for layer in snap.get("layers", ()):
        for key, name in PRODUCER_LAYER_FIELDS.items():
            counts[name] = counts.get(name, 0) + int(layer.get(key, 0))
        _drops(layer, drops)
    counts.update({DROP_PREFIX + r: n for r, n in drops.items()})
    return counts


def _consumer_counts(snap: dict[str, Any]) -> dict[str, int]:
    counts = {name: int(snap.get(key, 0)) for key, name in CONSUMER_FIELDS.items()}
    counts.update({k: int(v) for k, v in snap.items() if k.startswith(DROP_PREFIX)})
    return counts


def _transport_counts(snap: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in snap.items() if k.startswith(DROP_PREFIX)}


class MediaTotals:
    """Monotonic totals over a worker's transports, producers and consumers (see the module docstring)."""

    def __init__(self, engine: Snapshots, transports: Handles, producers: Handles, consumers: Handles) -> None:
        self.engine = engine
        self._sources: tuple[tuple[str, Handles, Callable[[int], dict[str, Any]],
                                   Callable[[dict[str, Any]], dict[str, int]]], ...] = (
            ("t", transports, engine.snapshot_transport, _transport_counts),
            ("p", producers, engine.snapshot_producer, _producer_counts),
            ("c", consumers, engine.snapshot_consumer, _consumer_counts),
        )
        self._last: dict[tuple[str, str], dict[str, int]] = {}
        self._retired: dict[str, int] = {}

    def collect(self) -> dict[str, dict[str, int]]:
        """``{"totals": {...}, "drops": {reason: n}}`` as of now."""
        live: dict[tuple[str, str], dict[str, int]] = {}
        for kind, handles, snapshot, counts in self._sources:
            for object_id, handle in handles():
                try:
                    live[(kind, object_id)] = counts(snapshot(handle))
                except (KeyError, IndexError, ValueError):
                    continue  # removed from the Engine a moment ago
        for key, counts_ in self._last.items():
            now = live.get(key)
            # gone, or replaced by a new object under the same id since the last heartbeat (its counters restarted)
            if now is None or any(now.get(name, 0) < value for name, value in counts_.items()):
                for name, value in counts_.items():
                    self._retired[name] = self._retired.get(name, 0) + value
        self._last = live
        summed = dict(self._retired)
        for counts_ in live.values():
            for name, value in counts_.items():
                summed[name] = summed.get(name, 0) + value
        totals = {name: summed.get(name, 0) for name in TOTAL_NAMES}
        drops: dict[str, int] = {}
        _drops(self.engine.snapshot_engine(), drops)
        for name, value in summed.items():
            if name.startswith(DROP_PREFIX):
                reason = name[len(DROP_PREFIX):]
                drops[reason] = drops.get(reason, 0) + value
        return {"totals": totals, "drops": drops}
