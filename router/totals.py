"""A worker's media totals for its heartbeat: forwarded packets and bytes, drops by reason, NACKs, retransmissions,
PLIs and key frames, read once per heartbeat (nothing is added per packet, nothing is built per object).

The Engine sums them in C (``Engine.totals()``): over every live transport, producer layer and consumer, plus what
removed ones counted, folded into a retired base at their removal, so that the totals only grow and include an
object's traffic up to its removal; Engine-wide drops (datagrams no transport owns) are added in. One heartbeat
costs one call and two small dicts however many consumers the worker carries (docs/PERFORMANCE.md, Wake-ups). The
heartbeat carries ``{"totals": {name: n}, "drops": {reason: n}}``; control turns them into Prometheus counters
(control/service/metrics.py).
"""

from __future__ import annotations

from typing import Protocol

TOTAL_NAMES = ("rx_packets", "rx_bytes", "keyframes_rx", "keyframe_requests_tx", "nacks_tx", "rtx_rx",
               "tx_packets", "tx_bytes", "retransmits", "nacks_rx", "plis_rx")


class Totals(Protocol):
    """The Engine's totals call (fastpath.Engine)."""

    def totals(self) -> dict[str, dict[str, int]]: ...


class MediaTotals:
    """Monotonic totals over a worker's transports, producers and consumers (see the module docstring)."""

    def __init__(self, engine: Totals) -> None:
        self.engine = engine

    def collect(self) -> dict[str, dict[str, int]]:
        """``{"totals": {...}, "drops": {reason: n}}`` as of now; every name of TOTAL_NAMES is present."""
        summed = self.engine.totals()
        totals = summed["totals"]
        return {"totals": {name: int(totals.get(name, 0)) for name in TOTAL_NAMES},
                "drops": {reason: int(n) for reason, n in summed["drops"].items()}}
